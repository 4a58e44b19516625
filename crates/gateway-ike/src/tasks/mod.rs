//! One task per exchange, as in libcharon: each task contributes payloads
//! to a request (`build_i`), handles the response (`process_i`), and on
//! the responder side reads a request (`process_r`) and contributes to the
//! response (`build_r`). An exchange is a list of tasks (IKE_AUTH carries
//! `ike_auth` and `child_create`); `ike_natd` is a helper of `ike_init`.

pub mod child_create;
pub mod child_delete;
pub mod child_rekey;
pub mod ike_auth;
pub mod ike_delete;
pub mod ike_dpd;
pub mod ike_init;
pub mod ike_natd;
pub mod ike_rekey;

use crate::action::DownReason;
use crate::ike_sa::IkeSa;
use crate::message::{exchange, Message};
use crate::payload::{NotifyPayload, Payload};

pub(crate) enum TaskError {
    /// Fatal for the IKE SA; as responder, answer with `notify`.
    Fatal {
        notify: Option<NotifyPayload>,
        reason: DownReason,
        log: String,
    },
    /// Initiator: re-send the exchange (INVALID_KE_PAYLOAD, COOKIE).
    Retry,
    /// Initiator: the exchange is moot (e.g. the CHILD SA to rekey is
    /// gone); drop it without sending.
    Abort,
    /// Diffie-Hellman work was asked for (`IkeSa::dh_*`): the exchange
    /// runs again from the start when it is done. A task asks before it
    /// changes anything, and only single-task exchanges need DH.
    NeedDh,
}

/// Nonce lengths (RFC 7296 §2.10, §3.9): 16 to 256 bytes, checked on
/// every exchange that carries a nonce (strongSwan's bounds too).
pub(crate) fn nonce_ok(n: &[u8]) -> bool {
    (16..=256).contains(&n.len())
}

impl TaskError {
    pub(crate) fn fatal(notify: Option<u16>, reason: DownReason, log: impl Into<String>) -> Self {
        Self::Fatal {
            notify: notify.map(|n| NotifyPayload::new(n, Vec::new())),
            reason,
            log: log.into(),
        }
    }
}

pub(crate) enum Task {
    IkeInit(ike_init::IkeInit),
    IkeAuth(ike_auth::IkeAuth),
    ChildCreate(child_create::ChildCreate),
    IkeDpd,
    IkeDelete,
    ChildDelete(child_delete::ChildDelete),
    ChildRekey(child_rekey::ChildRekey),
    IkeRekey(ike_rekey::IkeRekey),
}

impl Task {
    pub(crate) fn exchange(&self) -> u8 {
        match self {
            Self::IkeInit(_) => exchange::IKE_SA_INIT,
            Self::IkeAuth(_) => exchange::IKE_AUTH,
            Self::ChildCreate(_) | Self::ChildRekey(_) | Self::IkeRekey(_) => {
                exchange::CREATE_CHILD_SA
            }
            Self::IkeDpd | Self::IkeDelete | Self::ChildDelete(_) => exchange::INFORMATIONAL,
        }
    }

    pub(crate) fn build_i(
        &mut self,
        sa: &mut IkeSa,
        out: &mut Vec<Payload>,
    ) -> Result<(), TaskError> {
        match self {
            Self::IkeInit(t) => t.build_i(sa, out),
            Self::IkeAuth(t) => t.build_i(sa, out),
            Self::ChildCreate(t) => t.build_i(sa, out),
            Self::IkeDpd => Ok(()),
            Self::IkeDelete => ike_delete::build_i(sa, out),
            Self::ChildDelete(t) => t.build_i(sa, out),
            Self::ChildRekey(t) => t.build_i(sa, out),
            Self::IkeRekey(t) => t.build_i(sa, out),
        }
    }

    pub(crate) fn process_i(&mut self, sa: &mut IkeSa, msg: &Message) -> Result<(), TaskError> {
        match self {
            Self::IkeInit(t) => t.process_i(sa, msg),
            Self::IkeAuth(t) => t.process_i(sa, msg),
            Self::ChildCreate(t) => t.process_i(sa, msg),
            Self::IkeDpd => Ok(()),
            Self::IkeDelete => ike_delete::process_i(sa),
            Self::ChildDelete(t) => t.process_i(sa, msg),
            Self::ChildRekey(t) => t.process_i(sa, msg),
            Self::IkeRekey(t) => t.process_i(sa, msg),
        }
    }

    pub(crate) fn process_r(&mut self, sa: &mut IkeSa, msg: &Message) -> Result<(), TaskError> {
        match self {
            Self::IkeInit(t) => t.process_r(sa, msg),
            Self::IkeAuth(t) => t.process_r(sa, msg),
            Self::ChildCreate(t) => t.process_r(sa, msg),
            Self::IkeDpd | Self::IkeDelete => Ok(()),
            Self::ChildDelete(t) => t.process_r(sa, msg),
            Self::ChildRekey(t) => t.process_r(sa, msg),
            Self::IkeRekey(t) => t.process_r(sa, msg),
        }
    }

    pub(crate) fn build_r(
        &mut self,
        sa: &mut IkeSa,
        out: &mut Vec<Payload>,
    ) -> Result<(), TaskError> {
        match self {
            Self::IkeInit(t) => t.build_r(sa, out),
            Self::IkeAuth(t) => t.build_r(sa, out),
            Self::ChildCreate(t) => t.build_r(sa, out),
            Self::IkeDpd => Ok(()),
            Self::IkeDelete => ike_delete::build_r(sa),
            Self::ChildDelete(t) => t.build_r(sa, out),
            Self::ChildRekey(t) => t.build_r(sa, out),
            Self::IkeRekey(t) => t.build_r(sa, out),
        }
    }
}

/// Responder: the tasks that handle a request, chosen from its exchange
/// type and payloads (strongSwan's task_manager_v2 process_request).
pub(crate) fn responder_tasks(msg: &Message) -> Vec<Task> {
    match msg.exchange {
        exchange::IKE_SA_INIT => vec![Task::IkeInit(ike_init::IkeInit::default())],
        exchange::IKE_AUTH => vec![
            Task::IkeAuth(ike_auth::IkeAuth),
            Task::ChildCreate(child_create::ChildCreate::default()),
        ],
        exchange::INFORMATIONAL => {
            let mut tasks = Vec::new();
            for p in &msg.payloads {
                if let Payload::Delete(d) = p {
                    if d.protocol == crate::payload::proto::IKE {
                        return vec![Task::IkeDelete];
                    }
                    tasks.push(Task::ChildDelete(child_delete::ChildDelete::default()));
                    break;
                }
            }
            if tasks.is_empty() {
                tasks.push(Task::IkeDpd);
            }
            tasks
        }
        exchange::CREATE_CHILD_SA => {
            if ike_rekey::is_ike_rekey(msg) {
                vec![Task::IkeRekey(ike_rekey::IkeRekey::default())]
            } else {
                vec![Task::ChildRekey(child_rekey::ChildRekey::default())]
            }
        }
        _ => Vec::new(),
    }
}

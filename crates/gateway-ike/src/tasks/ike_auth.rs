//! IKE_AUTH with a pre-shared key (RFC 7296 §2.15): identities (ID_IPV4/
//! IPV6_ADDR of the gateways by default, FQDN if configured), the AUTH
//! payload over the IKE_SA_INIT octets, INITIAL_CONTACT. A mismatch yields
//! AUTHENTICATION_FAILED and a log line naming the reason, never the key.

use subtle::ConstantTimeEq;

use crate::action::{DownReason, LogLevel};
use crate::crypto::psk_auth;
use crate::ike_sa::{IkeSa, IkeSaState};
use crate::message::Message;
use crate::payload::{notify, AuthPayload, IdPayload, NotifyPayload, Payload, AUTH_SHARED_KEY_MIC};

use super::TaskError;

pub(crate) struct IkeAuth;

fn find_id(msg: &Message, initiator: bool) -> Option<&IdPayload> {
    msg.payloads.iter().find_map(|p| match (p, initiator) {
        (Payload::IdI(i), true) | (Payload::IdR(i), false) => Some(i),
        _ => None,
    })
}

fn find_auth(msg: &Message) -> Option<&AuthPayload> {
    msg.payloads.iter().find_map(|p| match p {
        Payload::Auth(a) => Some(a),
        _ => None,
    })
}

/// AUTH for the side that sent `id`: the octets are that side's
/// IKE_SA_INIT message and the other side's nonce.
fn auth_value(sa: &IkeSa, of_initiator: bool, id: &IdPayload) -> Option<Vec<u8>> {
    let c = sa.cipher?;
    let k = sa.keys.as_ref()?;
    let (msg, nonce, sk_p) = if of_initiator {
        (&sa.init_req, &sa.nr, &k.sk_pi)
    } else {
        (&sa.init_resp, &sa.ni, &k.sk_pr)
    };
    Some(psk_auth(c.prf, sa.conn.psk.expose(), msg, nonce, sk_p, &id.body()).to_vec())
}

fn verify(sa: &mut IkeSa, msg: &Message, of_initiator: bool) -> Result<(), String> {
    let id = find_id(msg, of_initiator).ok_or("no ID payload")?;
    if !sa.conn.remote_id.matches(id) {
        return Err(format!(
            "peer identity (type {}) does not match the configured {}",
            id.id_type, sa.conn.remote_id
        ));
    }
    let auth = find_auth(msg).ok_or("no AUTH payload")?;
    if auth.method != AUTH_SHARED_KEY_MIC {
        return Err(format!("unsupported AUTH method {}", auth.method));
    }
    let expect = auth_value(sa, of_initiator, id).ok_or("no IKE SA keys")?;
    if !bool::from(expect.as_slice().ct_eq(&auth.data)) {
        return Err("AUTH payload does not verify (pre-shared key mismatch?)".into());
    }
    Ok(())
}

/// The peer is authenticated (IKE_AUTH verified it, or `rekey_of` names
/// the authenticated IKE SA this one rekeys): from here on, and only from
/// here on, CHILD SAs may be created.
pub(crate) fn established(sa: &mut IkeSa, rekey_of: Option<crate::action::IkeSaId>) {
    sa.state = IkeSaState::Established;
    sa.authenticated = true;
    if sa.nat_local {
        sa.keepalive_at = Some(sa.last_rx + sa.conn.keepalive_interval);
    }
    sa.rekey_at = sa
        .conn
        .ike_rekey_time
        .map(|t| crate::child_sa::jittered(sa.last_rx, t));
    sa.log(
        LogLevel::Info,
        format!(
            "IKE SA {:016x}_i {:016x}_r established between {} and {}",
            sa.spi_i, sa.spi_r, sa.local, sa.remote
        ),
    );
    let up = sa.up_action(rekey_of, false);
    sa.out.push(up);
}

impl IkeAuth {
    pub(crate) fn build_i(
        &mut self,
        sa: &mut IkeSa,
        out: &mut Vec<Payload>,
    ) -> Result<(), TaskError> {
        let id = sa.conn.local_id.to_payload();
        let auth = auth_value(sa, true, &id).ok_or_else(|| {
            TaskError::fatal(None, DownReason::Protocol(0), "IKE_AUTH without keys")
        })?;
        out.push(Payload::IdI(id));
        out.push(Payload::Notify(NotifyPayload::new(
            notify::INITIAL_CONTACT,
            Vec::new(),
        )));
        out.push(Payload::Auth(AuthPayload {
            method: AUTH_SHARED_KEY_MIC,
            data: auth,
        }));
        Ok(())
    }

    pub(crate) fn process_r(&mut self, sa: &mut IkeSa, msg: &Message) -> Result<(), TaskError> {
        verify(sa, msg, true).map_err(|why| {
            TaskError::fatal(
                Some(notify::AUTHENTICATION_FAILED),
                DownReason::AuthenticationFailed,
                format!("authentication of peer failed: {why}"),
            )
        })?;
        sa.peer_initial_contact = msg.notify(notify::INITIAL_CONTACT).is_some();
        Ok(())
    }

    pub(crate) fn build_r(
        &mut self,
        sa: &mut IkeSa,
        out: &mut Vec<Payload>,
    ) -> Result<(), TaskError> {
        let id = sa.conn.local_id.to_payload();
        let auth = auth_value(sa, false, &id).ok_or_else(|| {
            TaskError::fatal(None, DownReason::Protocol(0), "IKE_AUTH without keys")
        })?;
        out.push(Payload::IdR(id));
        out.push(Payload::Auth(AuthPayload {
            method: AUTH_SHARED_KEY_MIC,
            data: auth,
        }));
        established(sa, None);
        Ok(())
    }

    pub(crate) fn process_i(&mut self, sa: &mut IkeSa, msg: &Message) -> Result<(), TaskError> {
        if msg.notify(notify::AUTHENTICATION_FAILED).is_some() {
            return Err(TaskError::fatal(
                None,
                DownReason::PeerAuthenticationFailed,
                "peer answered AUTHENTICATION_FAILED (pre-shared key or identity mismatch)",
            ));
        }
        if let Some(n) = msg
            .notifies()
            .find(|n| n.is_error() && find_auth(msg).is_none())
        {
            return Err(TaskError::fatal(
                None,
                DownReason::Protocol(n.ntype),
                format!("IKE_AUTH refused with notify {}", n.ntype),
            ));
        }
        verify(sa, msg, false).map_err(|why| {
            TaskError::fatal(
                None,
                DownReason::AuthenticationFailed,
                format!("authentication of peer failed: {why}"),
            )
        })?;
        established(sa, None);
        Ok(())
    }
}

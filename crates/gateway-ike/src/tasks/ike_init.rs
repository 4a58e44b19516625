//! IKE_SA_INIT (RFC 7296 §1.2): proposals, KE, nonces and NAT detection;
//! derives SKEYSEED and the IKE SA keys. Handles INVALID_KE_PAYLOAD (retry
//! with the group the responder asks for, or ask for ours) and COOKIE
//! (§2.6, echo it), and NO_PROPOSAL_CHOSEN both ways.

use crate::action::DownReason;
use crate::config::{
    chosen_proposal, ike_chosen, ike_cipher_transforms, ike_proposals, select_ike,
};
use crate::crypto::{derive_ike_keys, random_bytes, skeyseed, DhGroup, DhPrivate};
use crate::ike_sa::IkeSa;
use crate::message::Message;
use crate::payload::{notify, proto, KePayload, NotifyPayload, Payload};
use crate::tasks::nonce_ok;

use super::{ike_natd, TaskError};

/// Nonce length: 32 bytes covers half the key size of every PRF offered.
const NONCE_LEN: usize = 32;

#[derive(Default)]
pub(crate) struct IkeInit {
    dh: Option<DhPrivate>,
    /// Group to use on the next build (after INVALID_KE_PAYLOAD).
    group: Option<DhGroup>,
    cookie: Option<Vec<u8>>,
    retries: u32,
    /// Responder: the number of the peer's proposal we chose.
    number: u8,
}

fn find_ke(msg: &Message) -> Option<&KePayload> {
    msg.payloads.iter().find_map(|p| match p {
        Payload::Ke(k) => Some(k),
        _ => None,
    })
}

fn find_nonce(msg: &Message) -> Option<&Vec<u8>> {
    msg.payloads.iter().find_map(|p| match p {
        Payload::Nonce(n) => Some(n),
        _ => None,
    })
}

fn find_sa(msg: &Message) -> Option<&Vec<crate::payload::Proposal>> {
    msg.payloads.iter().find_map(|p| match p {
        Payload::Sa(s) => Some(s),
        _ => None,
    })
}

fn derive(sa: &mut IkeSa, gir: &[u8]) {
    let Some(c) = sa.cipher else { return };
    let Some(sk) = sa.sk() else { return };
    let seed = skeyseed(c.prf, &sa.ni, &sa.nr, gir);
    sa.keys = Some(derive_ike_keys(
        c.prf, sk, &seed, &sa.ni, &sa.nr, sa.spi_i, sa.spi_r,
    ));
}

impl IkeInit {
    pub(crate) fn build_i(
        &mut self,
        sa: &mut IkeSa,
        out: &mut Vec<Payload>,
    ) -> Result<(), TaskError> {
        let group = match self.group {
            Some(g) => g,
            None => sa.conn.ike_ciphers.first().map(|c| c.dh).ok_or_else(|| {
                TaskError::fatal(
                    None,
                    DownReason::NoProposalChosen,
                    "no IKE proposals configured",
                )
            })?,
        };
        // A COOKIE retry must repeat KE and Ni unchanged (§2.6); a new
        // group (INVALID_KE_PAYLOAD) needs fresh ones.
        let dh = match self.dh.take() {
            Some(d) if d.group == group && !sa.ni.is_empty() => d,
            _ => {
                let d = sa.dh_generate(group)?;
                sa.ni = random_bytes(NONCE_LEN);
                d
            }
        };
        if let Some(c) = &self.cookie {
            out.push(Payload::Notify(NotifyPayload::new(
                notify::COOKIE,
                c.clone(),
            )));
        }
        out.push(Payload::Sa(ike_proposals(&sa.conn.ike_ciphers, &[])));
        out.push(Payload::Ke(KePayload {
            group: group.id(),
            data: dh.public_value(),
        }));
        out.push(Payload::Nonce(sa.ni.clone()));
        ike_natd::build(sa, sa.spi_i, 0, out);
        self.dh = Some(dh);
        Ok(())
    }

    pub(crate) fn process_i(&mut self, sa: &mut IkeSa, msg: &Message) -> Result<(), TaskError> {
        if let Some(n) = msg.notify(notify::COOKIE) {
            if self.retries >= 3 || n.data.is_empty() || n.data.len() > 64 {
                return Err(TaskError::fatal(
                    None,
                    DownReason::Protocol(notify::COOKIE),
                    "bad COOKIE",
                ));
            }
            self.retries += 1;
            self.cookie = Some(n.data.clone());
            return Err(TaskError::Retry);
        }
        if let Some(n) = msg.notify(notify::INVALID_KE_PAYLOAD) {
            let wanted = n
                .data
                .get(..2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .and_then(DhGroup::from_id);
            let ok = wanted.filter(|g| {
                sa.conn.ike_ciphers.iter().any(|c| c.dh == *g) && Some(*g) != self.group
            });
            return match ok {
                Some(g) if self.retries < 3 => {
                    self.retries += 1;
                    sa.log(
                        crate::action::LogLevel::Info,
                        format!("peer wants DH group {}, retrying", g.api_name()),
                    );
                    self.group = Some(g);
                    Err(TaskError::Retry)
                }
                _ => Err(TaskError::fatal(
                    None,
                    DownReason::Protocol(notify::INVALID_KE_PAYLOAD),
                    "INVALID_KE_PAYLOAD for a group we do not offer",
                )),
            };
        }
        if let Some(n) = msg.notifies().find(|n| n.is_error()) {
            let reason = if n.ntype == notify::NO_PROPOSAL_CHOSEN {
                DownReason::NoProposalChosen
            } else {
                DownReason::Protocol(n.ntype)
            };
            return Err(TaskError::fatal(
                None,
                reason,
                format!("IKE_SA_INIT refused with notify {}", n.ntype),
            ));
        }
        let bad = |what: &str| {
            TaskError::fatal(
                None,
                DownReason::Protocol(notify::INVALID_SYNTAX),
                what.to_string(),
            )
        };
        let props = find_sa(msg).ok_or_else(|| bad("IKE_SA_INIT response without SA"))?;
        let cipher = ike_chosen(&sa.conn.ike_ciphers, props).ok_or_else(|| {
            TaskError::fatal(
                None,
                DownReason::NoProposalChosen,
                "responder chose a proposal we did not offer",
            )
        })?;
        let ke = find_ke(msg).ok_or_else(|| bad("IKE_SA_INIT response without KE"))?;
        let dh = self.dh.as_ref().ok_or_else(|| bad("no DH state"))?;
        if ke.group != cipher.dh.id() || dh.group != cipher.dh {
            return Err(bad("KE group does not match the chosen proposal"));
        }
        let nr = find_nonce(msg).ok_or_else(|| bad("IKE_SA_INIT response without nonce"))?;
        if !nonce_ok(nr) {
            return Err(bad("bad nonce length"));
        }
        let gir = sa.dh_shared(dh, &ke.data)?.map_err(|e| {
            TaskError::fatal(
                None,
                DownReason::Protocol(notify::INVALID_SYNTAX),
                format!("KE: {e}"),
            )
        })?;
        self.dh = None;
        sa.nr = nr.clone();
        sa.spi_r = msg.spi_r;
        sa.cipher = Some(cipher);
        derive(sa, &gir);
        ike_natd::process(sa, msg);
        if sa.encap {
            // §2.23: the initiator floats to port 4500 after IKE_SA_INIT.
            sa.local.set_port(sa.conn.natt_port);
            sa.remote.set_port(sa.conn.natt_port);
        }
        Ok(())
    }

    pub(crate) fn process_r(&mut self, sa: &mut IkeSa, msg: &Message) -> Result<(), TaskError> {
        let bad = |what: &str| {
            TaskError::fatal(
                Some(notify::INVALID_SYNTAX),
                DownReason::Protocol(notify::INVALID_SYNTAX),
                what.to_string(),
            )
        };
        let props = find_sa(msg).ok_or_else(|| bad("IKE_SA_INIT without SA"))?;
        let Some((number, cipher)) = select_ike(&sa.conn.ike_ciphers, props) else {
            return Err(TaskError::fatal(
                Some(notify::NO_PROPOSAL_CHOSEN),
                DownReason::NoProposalChosen,
                "no acceptable IKE proposal from peer",
            ));
        };
        let ke = find_ke(msg).ok_or_else(|| bad("IKE_SA_INIT without KE"))?;
        if ke.group != cipher.dh.id() {
            return Err(TaskError::Fatal {
                notify: Some(NotifyPayload::new(
                    notify::INVALID_KE_PAYLOAD,
                    cipher.dh.id().to_be_bytes().to_vec(),
                )),
                reason: DownReason::Protocol(notify::INVALID_KE_PAYLOAD),
                log: format!(
                    "peer sent KE for group {}, asking for {}",
                    ke.group,
                    cipher.dh.api_name()
                ),
            });
        }
        let ni = find_nonce(msg).ok_or_else(|| bad("IKE_SA_INIT without nonce"))?;
        if !nonce_ok(ni) {
            return Err(bad("bad nonce length"));
        }
        let (dh, gir) = sa.dh_respond(cipher.dh, &ke.data)?;
        let gir = gir.map_err(|e| {
            TaskError::fatal(
                Some(notify::INVALID_SYNTAX),
                DownReason::Protocol(notify::INVALID_SYNTAX),
                format!("KE: {e}"),
            )
        })?;
        sa.ni = ni.clone();
        sa.nr = random_bytes(NONCE_LEN);
        sa.cipher = Some(cipher);
        derive(sa, &gir);
        ike_natd::process(sa, msg);
        self.dh = Some(dh);
        self.group = Some(cipher.dh);
        self.number = number;
        Ok(())
    }

    pub(crate) fn build_r(
        &mut self,
        sa: &mut IkeSa,
        out: &mut Vec<Payload>,
    ) -> Result<(), TaskError> {
        let (Some(c), Some(dh)) = (sa.cipher, self.dh.as_ref()) else {
            return Err(TaskError::fatal(
                None,
                DownReason::Protocol(0),
                "IKE_SA_INIT state missing",
            ));
        };
        out.push(Payload::Sa(chosen_proposal(
            self.number,
            proto::IKE,
            Vec::new(),
            ike_cipher_transforms(&c),
        )));
        out.push(Payload::Ke(KePayload {
            group: c.dh.id(),
            data: dh.public_value(),
        }));
        out.push(Payload::Nonce(sa.nr.clone()));
        ike_natd::build(sa, sa.spi_i, sa.spi_r, out);
        Ok(())
    }
}

//! Rekeying the IKE SA with CREATE_CHILD_SA (RFC 7296 §1.3.2, §2.18): new
//! SPIs, nonces and a fresh DH exchange; SKEYSEED = prf(SK_d(old),
//! g^ir(new) | Ni | Nr). The CHILD SAs move to the new IKE SA, the rekey
//! initiator deletes the old one. Simultaneous IKE rekeys are not resolved
//! yet (§2.8.2): the second one is refused with TEMPORARY_FAILURE.

use std::sync::Arc;

use crate::action::LogLevel;
use crate::config::{
    chosen_proposal, ike_chosen, ike_cipher_transforms, ike_proposals, select_ike, IkeCipher,
};
use crate::crypto::{
    derive_ike_keys, random_bytes, random_u64, skeyseed_rekey, DhPrivate, SkCrypto,
};
use crate::ike_sa::{IkeSa, IkeSaState};
use crate::message::Message;
use crate::payload::{notify, proto, KePayload, NotifyPayload, Payload};

use super::{nonce_ok, Task, TaskError};

const NONCE_LEN: usize = 32;

#[derive(Default)]
pub(crate) struct IkeRekey {
    new_spi: u64,
    peer_spi: u64,
    ni: Vec<u8>,
    nr: Vec<u8>,
    dh: Option<DhPrivate>,
    chosen: Option<(u8, IkeCipher)>,
    ke: Option<KePayload>,
    gir: Option<crate::crypto::Secret>,
    failure: Option<u16>,
}

fn find_props(msg: &Message) -> Option<&Vec<crate::payload::Proposal>> {
    msg.payloads.iter().find_map(|p| match p {
        Payload::Sa(s) => Some(s),
        _ => None,
    })
}

/// Whether a CREATE_CHILD_SA request rekeys the IKE SA.
pub(crate) fn is_ike_rekey(msg: &Message) -> bool {
    find_props(msg).is_some_and(|p| p.iter().any(|p| p.protocol == proto::IKE))
}

/// Builds the new IKE SA and moves the CHILD SAs into it.
#[expect(clippy::too_many_arguments, reason = "the inputs of §2.18, named")]
fn spawn(
    sa: &mut IkeSa,
    cipher: IkeCipher,
    we_initiated: bool,
    spi_i: u64,
    spi_r: u64,
    ni: &[u8],
    nr: &[u8],
    gir: &[u8],
) {
    let (Some(old_cipher), Some(old_keys)) = (sa.cipher, sa.keys.as_ref()) else {
        return;
    };
    let seed = skeyseed_rekey(old_cipher.prf, &old_keys.sk_d, gir, ni, nr);
    let sk = SkCrypto {
        encr: cipher.encr,
        integ: cipher.integ,
    };
    let keys = derive_ike_keys(cipher.prf, sk, &seed, ni, nr, spi_i, spi_r);
    let mut new = IkeSa::new(
        Arc::clone(&sa.conn),
        we_initiated,
        spi_i,
        spi_r,
        sa.local,
        sa.remote,
        sa.last_rx,
        Arc::clone(&sa.spis),
        sa.dh.offload,
    );
    new.cipher = Some(cipher);
    new.keys = Some(keys);
    new.encap = sa.encap;
    new.nat_local = sa.nat_local;
    new.nat_remote = sa.nat_remote;
    new.peer_frag = sa.peer_frag;
    new.ni = ni.to_vec();
    new.nr = nr.to_vec();
    new.children = std::mem::take(&mut sa.children);
    new.retired = std::mem::take(&mut sa.retired);
    // The peer authenticated in the SA being rekeyed, and the new keys
    // derive from its SK_d.
    super::ike_auth::established(&mut new, Some(sa.id()));
    new.log(
        LogLevel::Info,
        format!(
            "rekeyed IKE SA {:016x}_i {:016x}_r into {spi_i:016x}_i {spi_r:016x}_r",
            sa.spi_i, sa.spi_r
        ),
    );
    sa.rekeyed = true;
    sa.rekey_at = None;
    sa.rekeyed_into = Some(Box::new(new));
}

impl IkeRekey {
    pub(crate) fn build_i(
        &mut self,
        sa: &mut IkeSa,
        out: &mut Vec<Payload>,
    ) -> Result<(), TaskError> {
        if sa.rekeyed || sa.state != IkeSaState::Established {
            return Err(TaskError::Abort);
        }
        let Some(cur) = sa.cipher else {
            return Err(TaskError::Abort);
        };
        // The key pair first: asking for it may end this build.
        let dh = sa.dh_generate(cur.dh)?;
        self.new_spi = random_u64();
        self.ni = random_bytes(NONCE_LEN);
        // Our current suite first, so the KE we send matches it.
        let mut ciphers = vec![cur];
        ciphers.extend(sa.conn.ike_ciphers.iter().filter(|c| **c != cur));
        out.push(Payload::Sa(ike_proposals(
            &ciphers,
            &self.new_spi.to_be_bytes(),
        )));
        out.push(Payload::Nonce(self.ni.clone()));
        out.push(Payload::Ke(KePayload {
            group: cur.dh.id(),
            data: dh.public_value(),
        }));
        self.dh = Some(dh);
        Ok(())
    }

    pub(crate) fn process_i(&mut self, sa: &mut IkeSa, msg: &Message) -> Result<(), TaskError> {
        if let Some(n) = msg.notifies().find(|n| n.is_error()) {
            sa.log(
                LogLevel::Warn,
                format!("IKE rekey refused with notify {}", n.ntype),
            );
            sa.rekey_at = Some(crate::child_sa::retry_at(sa.last_rx));
            return Ok(());
        }
        let ok = (|| {
            let props = find_props(msg)?;
            let cipher = ike_chosen(&sa.conn.ike_ciphers, props)?;
            let spi = u64::from_be_bytes(props.first()?.spi.as_slice().try_into().ok()?);
            let nr = msg
                .payloads
                .iter()
                .find_map(|p| match p {
                    Payload::Nonce(n) => Some(n.clone()),
                    _ => None,
                })
                .filter(|n| nonce_ok(n))?;
            let ke = msg.payloads.iter().find_map(|p| match p {
                Payload::Ke(k) => Some(k),
                _ => None,
            })?;
            let usable = self
                .dh
                .as_ref()
                .is_some_and(|d| d.group == cipher.dh && ke.group == cipher.dh.id());
            usable.then(|| (cipher, spi, nr, ke.data.clone()))
        })();
        let unusable = |sa: &mut IkeSa| {
            sa.log(LogLevel::Warn, "IKE rekey response unusable".into());
            sa.rekey_at = Some(crate::child_sa::retry_at(sa.last_rx));
        };
        let (Some((cipher, spi_r, nr, ke)), Some(dh)) = (ok, self.dh.as_ref()) else {
            unusable(sa);
            return Ok(());
        };
        let Ok(gir) = sa.dh_shared(dh, &ke)? else {
            unusable(sa);
            return Ok(());
        };
        spawn(sa, cipher, true, self.new_spi, spi_r, &self.ni, &nr, &gir);
        sa.queue.push_back(vec![Task::IkeDelete]);
        Ok(())
    }

    pub(crate) fn process_r(&mut self, sa: &mut IkeSa, msg: &Message) -> Result<(), TaskError> {
        let colliding = sa
            .outstanding
            .as_ref()
            .is_some_and(|o| o.tasks.iter().any(|t| matches!(t, Task::IkeRekey(_))));
        if colliding || sa.rekeyed {
            self.failure = Some(notify::TEMPORARY_FAILURE);
            return Ok(());
        }
        let Some(props) = find_props(msg) else {
            self.failure = Some(notify::INVALID_SYNTAX);
            return Ok(());
        };
        let Some((number, cipher)) = select_ike(&sa.conn.ike_ciphers, props) else {
            self.failure = Some(notify::NO_PROPOSAL_CHOSEN);
            return Ok(());
        };
        let peer_spi = props
            .iter()
            .find(|p| p.number == number)
            .and_then(|p| <[u8; 8]>::try_from(p.spi.as_slice()).ok())
            .map(u64::from_be_bytes);
        let ni = msg.payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        });
        let ke = msg.payloads.iter().find_map(|p| match p {
            Payload::Ke(k) => Some(k),
            _ => None,
        });
        let (Some(peer_spi), Some(ni), Some(ke)) = (peer_spi, ni.filter(|n| nonce_ok(n)), ke)
        else {
            self.failure = Some(notify::INVALID_SYNTAX);
            return Ok(());
        };
        if ke.group != cipher.dh.id() {
            self.failure = Some(notify::INVALID_KE_PAYLOAD);
            self.chosen = Some((number, cipher));
            return Ok(());
        }
        let (dh, gir) = sa.dh_respond(cipher.dh, &ke.data)?;
        let Ok(gir) = gir else {
            self.failure = Some(notify::INVALID_SYNTAX);
            return Ok(());
        };
        self.peer_spi = peer_spi;
        self.new_spi = random_u64();
        self.ni = ni;
        self.nr = random_bytes(NONCE_LEN);
        self.ke = Some(KePayload {
            group: cipher.dh.id(),
            data: dh.public_value(),
        });
        self.gir = Some(gir);
        self.chosen = Some((number, cipher));
        Ok(())
    }

    pub(crate) fn build_r(
        &mut self,
        sa: &mut IkeSa,
        out: &mut Vec<Payload>,
    ) -> Result<(), TaskError> {
        if let Some(n) = self.failure.take() {
            let data = match (n, self.chosen) {
                (notify::INVALID_KE_PAYLOAD, Some((_, c))) => c.dh.id().to_be_bytes().to_vec(),
                _ => Vec::new(),
            };
            out.push(Payload::Notify(NotifyPayload::new(n, data)));
            return Ok(());
        }
        let (Some((number, cipher)), Some(ke), Some(gir)) =
            (self.chosen, self.ke.take(), self.gir.take())
        else {
            return Ok(());
        };
        out.push(Payload::Sa(chosen_proposal(
            number,
            proto::IKE,
            self.new_spi.to_be_bytes().to_vec(),
            ike_cipher_transforms(&cipher),
        )));
        out.push(Payload::Nonce(self.nr.clone()));
        out.push(Payload::Ke(ke));
        let (ni, nr) = (self.ni.clone(), self.nr.clone());
        spawn(
            sa,
            cipher,
            false,
            self.peer_spi,
            self.new_spi,
            &ni,
            &nr,
            &gir,
        );
        Ok(())
    }
}

//! CREATE_CHILD_SA for CHILD SAs (RFC 7296 §1.3.1, §1.3.3): rekeying a
//! CHILD SA (REKEY_SA notify) or creating an additional one, with PFS when
//! the ESP cipher has a DH group. Make-before-break: the new SA is
//! installed (`replaces_spi_in`) before the initiator deletes the old one.
//! Simultaneous rekeys of the same CHILD SA are resolved per §2.8.1: the
//! exchange with the lowest nonce made the redundant SA, which its
//! initiator deletes; the other initiator deletes the old SA.

use crate::action::LogLevel;
use crate::child_sa::ChildSaState;
use crate::config::{chosen_proposal, esp_chosen, esp_proposals, select_esp, EspChosen};
use crate::crypto::{random_bytes, DhGroup, DhPrivate, Secret};
use crate::ike_sa::IkeSa;
use crate::message::Message;
use crate::payload::{notify, proto, KePayload, NotifyPayload, Payload, TrafficSelector};

use super::child_create::{find_sa, find_ts, install, narrow, KeySource};
use super::child_delete::ChildDelete;
use super::{nonce_ok, Task, TaskError};
use crate::spi::SpiLease;

const NONCE_LEN: usize = 32;

struct Responded {
    number: u8,
    spi_out: u32,
    chosen: EspChosen,
    tsi: Vec<TrafficSelector>,
    tsr: Vec<TrafficSelector>,
    gir: Option<Secret>,
    ke: Option<KePayload>,
}

#[derive(Default)]
pub(crate) struct ChildRekey {
    /// The CHILD SA being rekeyed (our inbound SPI); `None` creates a new one.
    pub(crate) old_spi_in: Option<u32>,
    spi_in: Option<SpiLease>,
    ni: Vec<u8>,
    nr: Vec<u8>,
    dh: Option<DhPrivate>,
    group: Option<DhGroup>,
    responded: Option<Responded>,
    failure: Option<NotifyPayload>,
}

fn find<'a, T>(msg: &'a Message, f: impl Fn(&'a Payload) -> Option<T>) -> Option<T> {
    msg.payloads.iter().find_map(f)
}

pub(crate) fn smaller<'a>(a: &'a [u8], b: &'a [u8]) -> &'a [u8] {
    if a <= b {
        a
    } else {
        b
    }
}

impl ChildRekey {
    pub(crate) fn rekey(old_spi_in: u32) -> Self {
        Self {
            old_spi_in: Some(old_spi_in),
            ..Self::default()
        }
    }

    pub(crate) fn build_i(
        &mut self,
        sa: &mut IkeSa,
        out: &mut Vec<Payload>,
    ) -> Result<(), TaskError> {
        let installed = |sa: &IkeSa, old: u32| {
            sa.children
                .iter()
                .any(|c| c.spi_in == old && c.state == ChildSaState::Installed)
        };
        if self.old_spi_in.is_some_and(|old| !installed(sa, old)) {
            return Err(TaskError::Abort);
        }
        // The key pair first: asking for it may end this build, which must
        // then have changed nothing.
        let group = self
            .group
            .or_else(|| sa.conn.esp_ciphers.first().and_then(|c| c.dh));
        let dh = group.map(|g| sa.dh_generate(g)).transpose()?;
        let lease = sa.new_spi_in().ok_or(TaskError::Abort)?;
        let (local_ts, remote_ts) = match self.old_spi_in {
            Some(old) => {
                let Some(c) = sa.children.iter_mut().find(|c| c.spi_in == old) else {
                    return Err(TaskError::Abort);
                };
                c.state = ChildSaState::Rekeying;
                out.push(Payload::Notify(NotifyPayload {
                    protocol: proto::ESP,
                    spi: old.to_be_bytes().to_vec(),
                    ntype: notify::REKEY_SA,
                    data: Vec::new(),
                }));
                (c.local_ts.clone(), c.remote_ts.clone())
            }
            None => (sa.conn.local_ts.clone(), sa.conn.remote_ts.clone()),
        };
        self.ni = random_bytes(NONCE_LEN);
        out.push(Payload::Sa(esp_proposals(
            &sa.conn.esp_ciphers,
            lease.spi(),
            sa.conn.esn,
            true,
        )));
        self.spi_in = Some(lease);
        out.push(Payload::Nonce(self.ni.clone()));
        if let Some(dh) = dh {
            out.push(Payload::Ke(KePayload {
                group: dh.group.id(),
                data: dh.public_value(),
            }));
            self.dh = Some(dh);
        }
        out.push(Payload::TsI(local_ts));
        out.push(Payload::TsR(remote_ts));
        Ok(())
    }

    fn restore_old(&self, sa: &mut IkeSa) {
        if let Some(c) = sa
            .children
            .iter_mut()
            .find(|c| Some(c.spi_in) == self.old_spi_in)
        {
            if c.state != ChildSaState::Rekeying {
                // Replaced meanwhile (the peer's rekey of it won).
                return;
            }
            c.state = ChildSaState::Installed;
            // Try again later (e.g. after TEMPORARY_FAILURE from a collision).
            c.rekey_at = Some(crate::child_sa::retry_at(sa.last_rx));
        }
    }

    pub(crate) fn process_i(&mut self, sa: &mut IkeSa, msg: &Message) -> Result<(), TaskError> {
        if let Some(n) = msg.notifies().find(|n| n.is_error()) {
            self.restore_old(sa);
            if n.ntype == notify::INVALID_KE_PAYLOAD {
                let g = n
                    .data
                    .get(..2)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]))
                    .and_then(DhGroup::from_id);
                if let Some(g) = g.filter(|g| self.group != Some(*g)) {
                    self.group = Some(g);
                    return Err(TaskError::Retry);
                }
            }
            sa.log(
                LogLevel::Warn,
                format!("CREATE_CHILD_SA refused with notify {}", n.ntype),
            );
            return Ok(());
        }
        let ok = (|| {
            let props = find_sa(msg)?;
            let (spi_out, chosen) = esp_chosen(&sa.conn.esp_ciphers, props, true, sa.conn.esn)?;
            let nr = find(msg, |p| match p {
                Payload::Nonce(n) => Some(n.clone()),
                _ => None,
            })
            .filter(|n| nonce_ok(n))?;
            let ke = match (chosen.dh, &self.dh) {
                (Some(g), Some(dh)) if dh.group == g => Some(find(msg, |p| match p {
                    Payload::Ke(k) => Some(k.data.clone()),
                    _ => None,
                })?),
                (None, _) => None,
                _ => return None,
            };
            let tsi = find_ts(msg, true)?.clone();
            let tsr = find_ts(msg, false)?.clone();
            Some((spi_out, chosen, nr, ke, tsi, tsr))
        })();
        let Some((spi_out, chosen, nr, ke, tsi, tsr)) = ok else {
            self.restore_old(sa);
            sa.log(LogLevel::Warn, "CREATE_CHILD_SA response unusable".into());
            return Ok(());
        };
        let gir = match (&self.dh, ke) {
            (Some(dh), Some(ke)) => match sa.dh_shared(dh, &ke)? {
                Ok(s) => Some(s),
                Err(e) => {
                    self.restore_old(sa);
                    sa.log(LogLevel::Warn, format!("CREATE_CHILD_SA response: KE: {e}"));
                    return Ok(());
                }
            },
            _ => None,
        };
        let Some(lease) = self.spi_in.take() else {
            return Ok(());
        };
        let spi_in = lease.spi();
        self.nr = nr;
        let (ni, nr) = (self.ni.clone(), self.nr.clone());
        let src = KeySource {
            gir: gir.as_deref().map(|v| v.as_slice()),
            ni: &ni,
            nr: &nr,
            exchange_initiator: true,
        };
        if !install(sa, lease, spi_out, chosen, tsi, tsr, src, self.old_spi_in) {
            self.restore_old(sa);
            return Ok(());
        }
        let Some(old) = self.old_spi_in else {
            return Ok(());
        };
        let to_delete = match sa.child_collisions.remove(&old) {
            Some(theirs) if smaller(&ni, &nr) < theirs.as_slice() => {
                sa.log(
                    LogLevel::Info,
                    format!("CHILD rekey collision: our SA {spi_in:08x}_i is redundant"),
                );
                spi_in
            }
            Some(_) => {
                sa.log(LogLevel::Info, "CHILD rekey collision: our SA wins".into());
                old
            }
            None => old,
        };
        sa.queue.push_back(vec![Task::ChildDelete(ChildDelete {
            spis_in: vec![to_delete],
        })]);
        Ok(())
    }

    pub(crate) fn process_r(&mut self, sa: &mut IkeSa, msg: &Message) -> Result<(), TaskError> {
        if let Some(n) = msg.notify(notify::REKEY_SA) {
            let spi = <[u8; 4]>::try_from(n.spi.as_slice())
                .map(u32::from_be_bytes)
                .ok();
            let Some(old) = spi.and_then(|s| sa.children.iter().find(|c| c.spi_out == s)) else {
                self.failure = Some(NotifyPayload {
                    protocol: proto::ESP,
                    spi: n.spi.clone(),
                    ntype: notify::CHILD_SA_NOT_FOUND,
                    data: Vec::new(),
                });
                return Ok(());
            };
            self.old_spi_in = Some(old.spi_in);
        }
        let Some((number, spi_out, chosen)) =
            find_sa(msg).and_then(|p| select_esp(&sa.conn.esp_ciphers, p, true, sa.conn.esn))
        else {
            self.failure = Some(NotifyPayload::new(notify::NO_PROPOSAL_CHOSEN, Vec::new()));
            return Ok(());
        };
        let Some(ni) = find(msg, |p| match p {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        })
        .filter(|n| nonce_ok(n)) else {
            self.failure = Some(NotifyPayload::new(notify::INVALID_SYNTAX, Vec::new()));
            return Ok(());
        };
        let ke = find(msg, |p| match p {
            Payload::Ke(k) => Some(k.clone()),
            _ => None,
        });
        let (gir, our_ke) = match chosen.dh {
            Some(g) => match ke.filter(|k| k.group == g.id()) {
                Some(k) => {
                    let (dh, s) = sa.dh_respond(g, &k.data)?;
                    let Ok(s) = s else {
                        self.failure = Some(NotifyPayload::new(notify::INVALID_SYNTAX, Vec::new()));
                        return Ok(());
                    };
                    (
                        Some(s),
                        Some(KePayload {
                            group: g.id(),
                            data: dh.public_value(),
                        }),
                    )
                }
                None => {
                    self.failure = Some(NotifyPayload::new(
                        notify::INVALID_KE_PAYLOAD,
                        g.id().to_be_bytes().to_vec(),
                    ));
                    return Ok(());
                }
            },
            None => (None, None),
        };
        let (Some(tsi), Some(tsr)) = (find_ts(msg, true), find_ts(msg, false)) else {
            self.failure = Some(NotifyPayload::new(notify::TS_UNACCEPTABLE, Vec::new()));
            return Ok(());
        };
        let tsi = narrow(tsi, &sa.conn.remote_ts);
        let tsr = narrow(tsr, &sa.conn.local_ts);
        if tsi.is_empty() || tsr.is_empty() {
            self.failure = Some(NotifyPayload::new(notify::TS_UNACCEPTABLE, Vec::new()));
            return Ok(());
        }
        let Some(lease) = sa.new_spi_in() else {
            self.failure = Some(NotifyPayload::new(notify::NO_ADDITIONAL_SAS, Vec::new()));
            return Ok(());
        };
        self.spi_in = Some(lease);
        self.ni = ni;
        self.nr = random_bytes(NONCE_LEN);
        // §2.8.1: are we rekeying the same CHILD SA right now?
        if let Some(old) = self.old_spi_in {
            let colliding = sa.outstanding.as_ref().is_some_and(|o| {
                o.tasks
                    .iter()
                    .any(|t| matches!(t, Task::ChildRekey(r) if r.old_spi_in == Some(old)))
            });
            if colliding {
                let theirs = smaller(&self.ni, &self.nr).to_vec();
                sa.child_collisions.insert(old, theirs);
            }
        }
        self.responded = Some(Responded {
            number,
            spi_out,
            chosen,
            tsi,
            tsr,
            gir,
            ke: our_ke,
        });
        Ok(())
    }

    pub(crate) fn build_r(
        &mut self,
        sa: &mut IkeSa,
        out: &mut Vec<Payload>,
    ) -> Result<(), TaskError> {
        if let Some(n) = self.failure.take() {
            out.push(Payload::Notify(n));
            return Ok(());
        }
        let (Some(r), Some(lease)) = (self.responded.take(), self.spi_in.take()) else {
            return Ok(());
        };
        out.push(Payload::Sa(chosen_proposal(
            r.number,
            proto::ESP,
            lease.spi().to_be_bytes().to_vec(),
            r.chosen.transforms(),
        )));
        out.push(Payload::Nonce(self.nr.clone()));
        if let Some(k) = r.ke {
            out.push(Payload::Ke(k));
        }
        out.push(Payload::TsI(r.tsi.clone()));
        out.push(Payload::TsR(r.tsr.clone()));
        let (ni, nr) = (self.ni.clone(), self.nr.clone());
        let src = KeySource {
            gir: r.gir.as_deref().map(|v| v.as_slice()),
            ni: &ni,
            nr: &nr,
            exchange_initiator: false,
        };
        install(
            sa,
            lease,
            r.spi_out,
            r.chosen,
            r.tsr,
            r.tsi,
            src,
            self.old_spi_in,
        );
        Ok(())
    }
}

//! Deleting CHILD SAs (RFC 7296 §1.4.1): Delete payloads for ESP carry the
//! sender's inbound SPIs; the responder answers with its own inbound SPIs
//! of the same pairs and both remove the SAs from the data plane (a
//! rekeyed pair's inbound SA after a grace period, `IkeSa::retire`).

use crate::action::LogLevel;
use crate::ike_sa::IkeSa;
use crate::message::Message;
use crate::payload::{proto, DeletePayload, Payload};

use super::TaskError;

#[derive(Default)]
pub(crate) struct ChildDelete {
    /// Initiator: our inbound SPIs to delete. Responder: ours answered.
    pub(crate) spis_in: Vec<u32>,
}

/// The DELETE exchange for the pair is done: a successor that waited for
/// it sends from now on, and the pair leaves the data plane (after the
/// rekey grace when a rekey replaced it).
fn remove(sa: &mut IkeSa, spi_in: u32) {
    if let Some(pos) = sa.children.iter().position(|c| c.spi_in == spi_in) {
        let c = sa.children.remove(pos);
        sa.log(
            LogLevel::Info,
            format!("CHILD SA {:08x}_i {:08x}_o deleted", c.spi_in, c.spi_out),
        );
        sa.activate_successors(c.spi_in);
        sa.retire(c);
    }
}

fn delete_payload(spis: &[u32]) -> Payload {
    Payload::Delete(DeletePayload {
        protocol: proto::ESP,
        spi_size: 4,
        spis: spis.iter().map(|s| s.to_be_bytes().to_vec()).collect(),
    })
}

impl ChildDelete {
    pub(crate) fn build_i(
        &mut self,
        _sa: &mut IkeSa,
        out: &mut Vec<Payload>,
    ) -> Result<(), TaskError> {
        out.push(delete_payload(&self.spis_in));
        Ok(())
    }

    pub(crate) fn process_i(&mut self, sa: &mut IkeSa, _msg: &Message) -> Result<(), TaskError> {
        for s in std::mem::take(&mut self.spis_in) {
            remove(sa, s);
        }
        Ok(())
    }

    pub(crate) fn process_r(&mut self, sa: &mut IkeSa, msg: &Message) -> Result<(), TaskError> {
        for p in &msg.payloads {
            let Payload::Delete(d) = p else { continue };
            if d.protocol != proto::ESP || d.spi_size != 4 {
                continue;
            }
            for s in &d.spis {
                let Ok(b) = <[u8; 4]>::try_from(s.as_slice()) else {
                    continue;
                };
                let spi_out = u32::from_be_bytes(b);
                if let Some(c) = sa.children.iter().find(|c| c.spi_out == spi_out) {
                    self.spis_in.push(c.spi_in);
                }
            }
        }
        Ok(())
    }

    pub(crate) fn build_r(
        &mut self,
        sa: &mut IkeSa,
        out: &mut Vec<Payload>,
    ) -> Result<(), TaskError> {
        if !self.spis_in.is_empty() {
            out.push(delete_payload(&self.spis_in));
        }
        for s in std::mem::take(&mut self.spis_in) {
            remove(sa, s);
        }
        Ok(())
    }
}

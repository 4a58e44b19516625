//! Deleting the IKE SA (RFC 7296 §1.4.1): an INFORMATIONAL with a Delete
//! payload for protocol IKE; both sides then drop the IKE SA and all its
//! CHILD SAs.

use crate::action::DownReason;
use crate::ike_sa::{IkeSa, IkeSaState};
use crate::payload::{proto, DeletePayload, Payload};

use super::TaskError;

pub(crate) fn build_i(sa: &mut IkeSa, out: &mut Vec<Payload>) -> Result<(), TaskError> {
    sa.state = IkeSaState::Deleting;
    out.push(Payload::Delete(DeletePayload {
        protocol: proto::IKE,
        spi_size: 0,
        spis: Vec::new(),
    }));
    Ok(())
}

pub(crate) fn process_i(sa: &mut IkeSa) -> Result<(), TaskError> {
    let reason = sa.down_reason.clone().unwrap_or(DownReason::Deleted);
    sa.destroy(reason);
    Ok(())
}

/// Responder: the response is empty; the SA goes once it is sent
/// (`task_manager` destroys a `Deleting` responder after sending).
pub(crate) fn build_r(sa: &mut IkeSa) -> Result<(), TaskError> {
    sa.state = IkeSaState::Deleting;
    Ok(())
}

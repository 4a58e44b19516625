//! NAT detection (RFC 7296 §2.23) inside IKE_SA_INIT: builds the
//! NAT_DETECTION_SOURCE_IP/DESTINATION_IP notifies and decides whether the
//! IKE SA floats to the NAT-T port and uses UDP-encapsulated ESP. With
//! `force_encap` our source hash is random, so the peer believes we are
//! behind a NAT and encapsulates (what strongSwan's `encap = yes` does).
//! The RFC 7383 IKEV2_FRAGMENTATION_SUPPORTED announcement rides along
//! with the NATD notifies.

use crate::crypto::{natd_hash, random_bytes};
use crate::ike_sa::IkeSa;
use crate::message::Message;
use crate::payload::{notify, NotifyPayload, Payload};

pub(crate) fn build(sa: &IkeSa, spi_i: u64, spi_r: u64, out: &mut Vec<Payload>) {
    if sa.conn.fragmentation {
        // RFC 7383 §2.3 support announcement rides along in IKE_SA_INIT.
        out.push(Payload::Notify(NotifyPayload::new(
            notify::IKEV2_FRAGMENTATION_SUPPORTED,
            Vec::new(),
        )));
    }
    let src = if sa.conn.force_encap {
        random_bytes(20)
    } else {
        natd_hash(spi_i, spi_r, sa.local.ip(), sa.local.port())
    };
    out.push(Payload::Notify(NotifyPayload::new(
        notify::NAT_DETECTION_SOURCE_IP,
        src,
    )));
    out.push(Payload::Notify(NotifyPayload::new(
        notify::NAT_DETECTION_DESTINATION_IP,
        natd_hash(spi_i, spi_r, sa.remote.ip(), sa.remote.port()),
    )));
}

/// Sets `sa.encap` from the peer's NATD notifies in `msg`.
pub(crate) fn process(sa: &mut IkeSa, msg: &Message) {
    sa.peer_frag =
        sa.conn.fragmentation && msg.notify(notify::IKEV2_FRAGMENTATION_SUPPORTED).is_some();
    let srcs: Vec<&NotifyPayload> = msg
        .notifies()
        .filter(|n| n.ntype == notify::NAT_DETECTION_SOURCE_IP)
        .collect();
    let dst = msg.notify(notify::NAT_DETECTION_DESTINATION_IP);
    let Some(dst) = dst else {
        // The peer does not support NAT-T: plain ESP only.
        sa.encap = false;
        sa.nat_remote = false;
        return;
    };
    let remote_hash = natd_hash(msg.spi_i, msg.spi_r, sa.remote.ip(), sa.remote.port());
    let local_hash = natd_hash(msg.spi_i, msg.spi_r, sa.local.ip(), sa.local.port());
    let peer_behind_nat = !srcs.iter().any(|n| n.data == remote_hash);
    let we_behind_nat = dst.data != local_hash;
    sa.encap = sa.conn.force_encap || peer_behind_nat || we_behind_nat;
    sa.nat_local = sa.encap && (we_behind_nat || sa.conn.force_encap);
    sa.nat_remote = sa.encap && peer_behind_nat;
    sa.log(
        crate::action::LogLevel::Debug,
        format!("NAT detection: peer behind NAT {peer_behind_nat}, we behind NAT {we_behind_nat}, UDP encapsulation {}", sa.encap),
    );
}

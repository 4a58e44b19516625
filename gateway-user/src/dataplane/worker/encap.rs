//! LAN → encap → WAN: a LAN frame the XDP program matched to a tunnel is
//! encrypted in place (outer headers in the headroom, ICV in the
//! tailroom) and framed toward the peer's next hop.

use super::*;

impl<R: Resolver, S: SlowSink> Pipeline<R, S> {
    /// A frame received on LAN, steered because its destination is routed
    /// into the tunnel named by `meta`.
    pub fn outbound(
        &self,
        chunk: &mut [u8],
        frame: Range<usize>,
        meta: Option<XdpMeta>,
    ) -> Verdict {
        let c = &self.counters;
        WorkerCounters::add(&c.lan_rx, 1);
        let Some(m) =
            meta.filter(|m| m.magic == XDP_META_MAGIC && m.direction == Direction::Outbound as u32)
        else {
            c.drop_frame(WorkerDrop::BadMetadata);
            return Verdict::Consumed;
        };
        let Some(l3) = l3_start(chunk, &frame) else {
            c.drop_frame(WorkerDrop::NotIp);
            return Verdict::Consumed;
        };
        // The IP length, not the frame's: Ethernet pads short frames.
        let Some(len) = ip_len(&chunk[l3..frame.end]) else {
            c.drop_frame(WorkerDrop::NotIp);
            return Verdict::Consumed;
        };
        let inner = l3..l3 + len;
        if ttl(&chunk[inner.clone()]).is_none_or(|t| t <= 1) {
            c.drop_frame(WorkerDrop::TtlExpired);
            return Verdict::Consumed;
        }
        // Before any crypto work: what exceeds the rate costs nothing more.
        if !self.params.police().admit(m.tunnel_id, Way::Out, len) {
            c.drop_frame(WorkerDrop::Bandwidth);
            return Verdict::Consumed;
        }
        decrement_ttl(&mut chunk[inner.clone()]);
        if complete_partial_checksum(&mut chunk[inner.clone()]) {
            WorkerCounters::add(&c.checksums_completed, 1);
        }
        // After the checksum is complete: the clamp updates it incrementally.
        self.params.clamp(m.tunnel_id, &mut chunk[inner.clone()]);
        self.capture(m.tunnel_id, &chunk[inner.clone()]);
        let enc = match self.table.encap(m.tunnel_id, chunk, inner) {
            Ok(e) => e,
            Err(_) => {
                c.drop_frame(WorkerDrop::Encap);
                return Verdict::Consumed;
            }
        };
        let outer = enc.packet;
        self.capture(m.tunnel_id, &chunk[outer.clone()]);
        if outer.len() > self.wan_mtu {
            c.drop_frame(WorkerDrop::TooBig);
            return Verdict::Consumed;
        }
        let Some(dst) = ip_dst(&chunk[outer.clone()]) else {
            c.drop_frame(WorkerDrop::Encap);
            return Verdict::Consumed;
        };
        let hop = self
            .resolver
            .next_hop(dst)
            .filter(|h| h.ifindex == self.wan_ifindex);
        match hop {
            Some(h) if outer.start >= ETH_HLEN => {
                let start = outer.start - ETH_HLEN;
                write_eth(&mut chunk[start..outer.start], &h, dst.is_ipv6());
                WorkerCounters::add(&c.wan_tx, 1);
                Verdict::Forward(start..outer.end)
            }
            _ => {
                match self.slow.send_outer(&chunk[outer]) {
                    Ok(()) => WorkerCounters::add(&c.to_raw, 1),
                    Err(_) => c.drop_frame(WorkerDrop::SlowPath),
                }
                Verdict::Consumed
            }
        }
    }
}

//! WAN → decap → LAN: an inbound ESP frame the XDP program steered to
//! the worker is decrypted in place, its inner packet routed (TTL, MSS,
//! too-big answers) and framed toward the LAN next hop.

use super::*;

impl<R: Resolver, S: SlowSink> Pipeline<R, S> {
    /// A frame received on WAN: `chunk[frame]` is the Ethernet frame, `meta`
    /// the XDP metadata in front of it.
    pub fn inbound(&self, chunk: &mut [u8], frame: Range<usize>, meta: Option<XdpMeta>) -> Verdict {
        let c = &self.counters;
        WorkerCounters::add(&c.wan_rx, 1);
        if !meta
            .is_some_and(|m| m.magic == XDP_META_MAGIC && m.direction == Direction::Inbound as u32)
        {
            c.drop_frame(WorkerDrop::BadMetadata);
            return Verdict::Consumed;
        }
        let Some(l3) = l3_start(chunk, &frame) else {
            c.drop_frame(WorkerDrop::NotIp);
            return Verdict::Consumed;
        };
        if let Some(m) = meta {
            self.capture(m.tunnel_id, &chunk[l3..frame.end]);
        }
        let rx = match self.table.decap(chunk, l3..frame.end) {
            Ok(rx) => rx,
            Err(_) => {
                c.drop_frame(WorkerDrop::Decap);
                return Verdict::Consumed;
            }
        };
        let inner = rx.decap.inner;
        let Some(dst) = ip_dst(&chunk[inner.clone()]) else {
            c.drop_frame(WorkerDrop::NotIp);
            return Verdict::Consumed;
        };
        if !self.params.police().admit(rx.tunnel, Way::In, inner.len()) {
            c.drop_frame(WorkerDrop::Bandwidth);
            return Verdict::Consumed;
        }
        self.params.clamp(rx.tunnel, &mut chunk[inner.clone()]);
        self.capture(rx.tunnel, &chunk[inner.clone()]);
        match too_big(&chunk[inner.clone()], self.lan_mtu) {
            // DF (or IPv6): the sender learns the MTU from us.
            Some(true) => {
                if self.send_too_big(rx.tunnel, &chunk[inner]) {
                    WorkerCounters::add(&c.icmp_too_big, 1);
                } else {
                    c.drop_frame(WorkerDrop::TooBigNoReply);
                }
                return Verdict::Consumed;
            }
            // The kernel fragments it from the TUN to the LAN.
            Some(false) => {
                match self.slow.deliver_inner(rx.tunnel, &chunk[inner]) {
                    Ok(()) => WorkerCounters::add(&c.to_tun, 1),
                    Err(_) => c.drop_frame(WorkerDrop::SlowPath),
                }
                return Verdict::Consumed;
            }
            None => {}
        }
        let hop = self
            .resolver
            .next_hop(dst)
            .filter(|h| h.ifindex == self.lan_ifindex);
        // TTL 1 must expire here: the kernel sends the ICMP error.
        let ttl_ok = ttl(&chunk[inner.clone()]).is_some_and(|t| t > 1);
        match hop {
            Some(h) if ttl_ok && inner.start >= ETH_HLEN => {
                decrement_ttl(&mut chunk[inner.clone()]);
                let start = inner.start - ETH_HLEN;
                write_eth(&mut chunk[start..inner.start], &h, dst.is_ipv6());
                WorkerCounters::add(&c.lan_tx, 1);
                Verdict::Forward(start..inner.end)
            }
            _ => {
                match self.slow.deliver_inner(rx.tunnel, &chunk[inner]) {
                    Ok(()) => WorkerCounters::add(&c.to_tun, 1),
                    Err(_) => c.drop_frame(WorkerDrop::SlowPath),
                }
                Verdict::Consumed
            }
        }
    }
}

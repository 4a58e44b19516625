//! The bandwidth of a VPN gateway's type, enforced on its tunnels' traffic
//! in both directions, on the fast path (the workers) and the slow path
//! alike: one rate per VPN gateway, shared by all its tunnels, checked on
//! the inner packets (after decryption on the way in: forged ESP never
//! spends a customer's bandwidth; before encryption on the way out: what
//! exceeds the rate costs no crypto).
//!
//! Each direction of a gateway is a GCRA policer (the "virtual scheduling"
//! form of a token bucket, RFC 2698's single-rate equivalent): one atomic
//! theoretical arrival time per direction, advanced by each admitted
//! packet's transmission time at the rate; a packet that would push it
//! more than [`BURST`] ahead of now is dropped. Several workers share a
//! gateway's policer without a lock (a compare-and-swap per packet).
//! Packets are dropped, not queued: TCP sees the loss and backs off; the
//! burst tolerance is what lets it fill the rate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

/// How far ahead of the rate a gateway may run in one direction: a burst
/// of this much time's worth of bytes at its rate passes at once.
pub const BURST: Duration = Duration::from_millis(20);

/// Which way a packet goes through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Decrypted, from the customer toward the VPC.
    In = 0,
    /// From the VPC, to be encrypted toward the customer.
    Out = 1,
}

/// One VPN gateway's rate and the state of its two directions.
#[derive(Debug, Default)]
struct Bucket {
    /// Bits per second; 0: unlimited.
    rate: AtomicU64,
    /// Per direction, the theoretical arrival time (ns on [`now_ns`]'s
    /// clock) of the next packet that conforms with no burst.
    tat: [AtomicU64; 2],
}

impl Bucket {
    fn admit(&self, way: Way, bytes: usize, now: u64) -> bool {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 {
            return true;
        }
        // Transmission time of the packet at the rate (bytes ≤ 64 KiB:
        // no overflow), and the tolerance, never below three full-size
        // packets so that a slow rate still passes a packet at a time.
        let cost = (bytes as u64 * 8 * 1_000_000_000) / rate;
        let burst = (BURST.as_nanos() as u64).max(3 * 1500 * 8 * 1_000_000_000 / rate);
        let tat = &self.tat[way as usize];
        let mut cur = tat.load(Ordering::Relaxed);
        loop {
            let start = cur.max(now);
            if start - now > burst {
                return false;
            }
            match tat.compare_exchange_weak(cur, start + cost, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
    }
}

/// Packets dropped by the policers, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicedDrops {
    pub inbound: u64,
    pub outbound: u64,
}

/// Every VPN gateway's policer, and which tunnel belongs to which.
#[derive(Debug, Default)]
pub struct Policers {
    /// Read per packet: the policer of each policed tunnel.
    tunnels: ArcSwap<HashMap<u32, Arc<Bucket>>>,
    /// The control plane's view: each gateway's policer while a tunnel
    /// uses it.
    gateways: Mutex<HashMap<String, Weak<Bucket>>>,
    /// Packets dropped, per direction.
    dropped: [AtomicU64; 2],
}

impl Policers {
    /// Puts `tunnel` under the policer of `gateway` and sets that
    /// gateway's rate (bits per second, 0: unlimited) for all its tunnels.
    /// A rate change takes effect at once and drops nothing by itself.
    /// An unlimited tunnel is left out of the per-packet map altogether.
    pub fn set(&self, tunnel: u32, gateway: &str, bits_per_s: u64) {
        let mut gateways = self.gateways.lock().unwrap_or_else(|p| p.into_inner());
        if bits_per_s == 0 {
            if let Some(b) = gateways.get(gateway).and_then(Weak::upgrade) {
                b.rate.store(0, Ordering::Relaxed);
            }
            drop(gateways);
            self.remove(tunnel);
            return;
        }
        let bucket = match gateways.get(gateway).and_then(Weak::upgrade) {
            Some(b) => b,
            None => {
                let b = Arc::new(Bucket::default());
                gateways.insert(gateway.to_owned(), Arc::downgrade(&b));
                b
            }
        };
        bucket.rate.store(bits_per_s, Ordering::Relaxed);
        let cur = self.tunnels.load();
        if !cur.get(&tunnel).is_some_and(|b| Arc::ptr_eq(b, &bucket)) {
            let mut next = HashMap::clone(&cur);
            next.insert(tunnel, bucket);
            self.tunnels.store(Arc::new(next));
        }
        gateways.retain(|_, w| w.strong_count() > 0);
    }

    /// Takes `tunnel` out of its policer (the tunnel is gone).
    pub fn remove(&self, tunnel: u32) {
        // Writers take the lock: no update is lost between load and store.
        let _gateways = self.gateways.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.tunnels.load();
        if cur.contains_key(&tunnel) {
            let mut next = HashMap::clone(&cur);
            next.remove(&tunnel);
            self.tunnels.store(Arc::new(next));
        }
    }

    /// Whether a packet of `bytes` (the inner IP packet) of `tunnel` may
    /// pass `way` now; a tunnel without a policer always may.
    pub fn admit(&self, tunnel: u32, way: Way, bytes: usize) -> bool {
        self.admit_at(tunnel, way, bytes, now_ns())
    }

    fn admit_at(&self, tunnel: u32, way: Way, bytes: usize, now: u64) -> bool {
        let map = self.tunnels.load();
        let ok = map.get(&tunnel).is_none_or(|b| b.admit(way, bytes, now));
        if !ok {
            self.dropped[way as usize].fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Drops so far, all gateways.
    pub fn dropped(&self) -> PolicedDrops {
        PolicedDrops {
            inbound: self.dropped[0].load(Ordering::Relaxed),
            outbound: self.dropped[1].load(Ordering::Relaxed),
        }
    }

    /// The rate a tunnel is policed at (bits per second), if any.
    pub fn rate(&self, tunnel: u32) -> Option<u64> {
        self.tunnels
            .load()
            .get(&tunnel)
            .map(|b| b.rate.load(Ordering::Relaxed))
            .filter(|r| *r > 0)
    }
}

/// Monotonic nanoseconds since the first call.
fn now_ns() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    u64::try_from(
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_nanos(),
    )
    .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes a bucket admits when offered `offered` packets of `size`
    /// spread evenly over `span` of simulated time.
    fn admitted(b: &Bucket, way: Way, size: usize, offered: u64, span: Duration) -> u64 {
        let step = span.as_nanos() as u64 / offered;
        (0..offered)
            .filter(|i| b.admit(way, size, 1_000_000_000 + i * step))
            .count() as u64
            * size as u64
    }

    #[test]
    fn a_gateway_gets_its_rate_and_a_bounded_burst_per_direction() {
        let b = Bucket::default();
        b.rate.store(100_000_000, Ordering::Relaxed);
        // Offered 4x the rate (400 Mbit/s of 1250-byte packets) for 1 s.
        let bytes = admitted(&b, Way::In, 1250, 40_000, Duration::from_secs(1));
        let rate = 100_000_000 / 8;
        let burst = rate * BURST.as_millis() as u64 / 1000;
        assert!(bytes <= rate + burst + 1250, "{bytes} > rate + burst");
        assert!(bytes >= rate - 1250, "{bytes}: less than the rate");
        // The other direction has its own allowance.
        assert!(b.admit(Way::Out, 1250, 1_000_000_000));
        // Below the rate nothing is dropped.
        let c = Bucket::default();
        c.rate.store(100_000_000, Ordering::Relaxed);
        let half = admitted(&c, Way::Out, 1250, 5_000, Duration::from_secs(1));
        assert_eq!(half, 5_000 * 1250);
    }

    #[test]
    fn tunnels_of_one_gateway_share_its_rate_and_a_change_applies_to_all() {
        let p = Policers::default();
        p.set(1, "gw-a", 8_000_000);
        p.set(2, "gw-a", 8_000_000);
        p.set(3, "gw-b", 8_000_000);
        // 1 MB/s: a burst of 20 ms is 20 kB; the shared bucket lets the
        // two tunnels of gw-a pass about that together, gw-b as much alone.
        let now = 5_000_000_000;
        let count = |t: u32| {
            (0..100)
                .filter(|_| p.admit_at(t, Way::In, 1000, now))
                .count()
        };
        let (a1, a2, b) = (count(1), count(2), count(3));
        assert_eq!(a1 + a2, b, "gw-a's two tunnels got {a1} + {a2}, gw-b {b}");
        assert_eq!(b, 21, "gw-b: the first packet and 20 ms at 1 MB/s");
        // A new rate for gw-a reaches both its tunnels.
        p.set(1, "gw-a", 0);
        assert_eq!(p.rate(2), None, "unlimited");
        assert!((0..1000).all(|_| p.admit_at(2, Way::In, 1500, now)));
        // Drops are counted per direction, and kept when a tunnel goes.
        let before = p.dropped();
        assert_eq!(before.inbound as usize, 300 - a1 - a2 - b);
        assert_eq!(before.outbound, 0);
        p.remove(3);
        assert_eq!(p.dropped(), before);
        assert!(
            p.admit_at(3, Way::In, 60_000, now),
            "no policer left on tunnel 3"
        );
        // An unknown tunnel is not policed.
        assert!(p.admit(99, Way::Out, 1500));
    }
}

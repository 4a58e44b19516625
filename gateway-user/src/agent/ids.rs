//! Tunnel ids: small integers that index the XDP `TUNNELS` and `STATS`
//! arrays, so they must be reused or the arrays run out after as many
//! tunnel creations (every PSK or proposal change recreates tunnels). A
//! freed id waits in quarantine before it is handed out again, so that
//! nothing still in flight under the old tunnel (frames in AF_XDP rings,
//! an old inbound SA kept for a rekey's grace period) can be counted or
//! routed as the new tunnel's. Pure: the caller passes `now`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use gateway_esp::table::TunnelId;

/// How long a freed id stays out of use: far longer than any frame can sit
/// in an AF_XDP ring or a TUN queue (the runtime removes every SA of a
/// tunnel, including rekeyed ones in their grace period, before it frees
/// the id).
pub const QUARANTINE: Duration = Duration::from_secs(5);

/// Every id of `1..limit` is in use or in quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("all {} tunnel ids are in use (or freed less than {QUARANTINE:?} ago)", .0 - 1)]
pub struct IdsExhausted(pub TunnelId);

/// Allocates tunnel ids in `1..limit` (0 is never used: an empty
/// `TUNNELS` slot).
#[derive(Debug)]
pub struct IdPool {
    limit: TunnelId,
    next: TunnelId,
    freed: VecDeque<(TunnelId, Instant)>,
}

impl IdPool {
    /// A pool of the ids `1..limit`.
    pub fn new(limit: TunnelId) -> Self {
        Self {
            limit,
            next: 1,
            freed: VecDeque::new(),
        }
    }

    /// The oldest id out of quarantine, else a never used one.
    pub fn allocate(&mut self, now: Instant) -> Result<TunnelId, IdsExhausted> {
        if let Some(&(id, at)) = self.freed.front() {
            if now.saturating_duration_since(at) >= QUARANTINE {
                self.freed.pop_front();
                return Ok(id);
            }
        }
        if self.next < self.limit {
            let id = self.next;
            self.next += 1;
            return Ok(id);
        }
        Err(IdsExhausted(self.limit))
    }

    /// Returns an id; it is handed out again after [`QUARANTINE`].
    pub fn release(&mut self, id: TunnelId, now: Instant) {
        debug_assert!(id != 0 && id < self.next && !self.freed.iter().any(|(f, _)| *f == id));
        self.freed.push_back((id, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_reused_after_quarantine_and_never_run_out_by_churn() {
        let t0 = Instant::now();
        let mut pool = IdPool::new(4);
        let a = pool.allocate(t0).unwrap();
        let b = pool.allocate(t0).unwrap();
        let c = pool.allocate(t0).unwrap();
        assert_eq!((a, b, c), (1, 2, 3));
        assert_eq!(pool.allocate(t0), Err(IdsExhausted(4)));
        pool.release(b, t0);
        // Not before the quarantine ends.
        assert!(pool.allocate(t0 + QUARANTINE / 2).is_err());
        assert_eq!(pool.allocate(t0 + QUARANTINE), Ok(b));
        // Oldest freed first.
        pool.release(c, t0 + QUARANTINE);
        pool.release(a, t0 + QUARANTINE * 2);
        assert_eq!(pool.allocate(t0 + QUARANTINE * 3), Ok(c));
        assert_eq!(pool.allocate(t0 + QUARANTINE * 3), Ok(a));
        // Churn: far more creations than ids, spread over time.
        let mut pool = IdPool::new(64);
        let mut live = VecDeque::new();
        let mut now = t0;
        for _ in 0..3000 {
            now += Duration::from_secs(1);
            let id = pool.allocate(now).expect("ids recycle");
            assert!(id > 0 && id < 64 && !live.contains(&id));
            live.push_back(id);
            if live.len() > 8 {
                pool.release(live.pop_front().unwrap(), now);
            }
        }
    }
}

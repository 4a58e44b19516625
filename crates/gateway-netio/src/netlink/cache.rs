//! A neighbour cache for the data-path workers: destination IP → (output
//! interface, our MAC, next hop's MAC), i.e. everything needed to write the
//! Ethernet header of a packet that leaves through AF_XDP.
//!
//! Workers read an immutable snapshot through `arc-swap` (lock-free, no
//! allocation, never blocks); a miss is reported through a bounded channel with
//! `try_send` (dropped if full). One refresher thread owns a [`Netlink`] socket,
//! resolves every wanted destination (route lookup → next hop → neighbour
//! entry, triggering resolution when missing) and publishes a new snapshot. The
//! set of wanted destinations is bounded by `capacity`; destinations the kernel
//! has no route for are forgotten.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::{Netlink, NetlinkError};

/// How to reach one destination on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    pub ifindex: u32,
    /// Our interface's MAC (Ethernet source).
    pub src_mac: [u8; 6],
    /// The next hop's MAC (Ethernet destination).
    pub dst_mac: [u8; 6],
}

type Snapshot = HashMap<IpAddr, NextHop>;

/// The reader side, cheap to clone into every worker.
#[derive(Clone)]
pub struct NeighbourCache {
    snapshot: Arc<ArcSwap<Snapshot>>,
    misses: SyncSender<IpAddr>,
}

impl NeighbourCache {
    /// A cache tracking at most `capacity` destinations, and its refresher.
    pub fn new(capacity: usize) -> (Self, NeighbourRefresher) {
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::new()));
        let (tx, rx) = mpsc::sync_channel(256);
        (
            Self {
                snapshot: Arc::clone(&snapshot),
                misses: tx,
            },
            NeighbourRefresher {
                snapshot,
                misses: rx,
                wanted: HashSet::new(),
                capacity,
                link_macs: HashMap::new(),
            },
        )
    }

    /// The next hop for `dst`, or `None` (and the miss is queued for the refresher).
    /// Never blocks and never allocates.
    pub fn lookup(&self, dst: IpAddr) -> Option<NextHop> {
        let hit = self.snapshot.load().get(&dst).copied();
        if hit.is_none() {
            // Full channel: the refresher is behind and will see this miss again.
            let _ = self.misses.try_send(dst);
        }
        hit
    }

    /// Number of resolved destinations in the current snapshot.
    pub fn len(&self) -> usize {
        self.snapshot.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one refresh pass found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefreshStats {
    pub resolved: usize,
    /// Destinations whose neighbour entry is not usable yet; resolution was triggered.
    pub pending: usize,
    /// Destinations dropped because the kernel has no route to them.
    pub unroutable: usize,
}

/// The writer side: owns the set of wanted destinations.
pub struct NeighbourRefresher {
    snapshot: Arc<ArcSwap<Snapshot>>,
    misses: Receiver<IpAddr>,
    wanted: HashSet<IpAddr>,
    capacity: usize,
    link_macs: HashMap<u32, Option<[u8; 6]>>,
}

impl NeighbourRefresher {
    /// Track `dst` from now on (e.g. a peer's public address known in advance).
    pub fn want(&mut self, dst: IpAddr) {
        if self.wanted.len() < self.capacity {
            self.wanted.insert(dst);
        }
    }

    /// Drain reported misses, resolve every wanted destination and publish a new
    /// snapshot. A netlink failure other than "no route" aborts the pass and
    /// leaves the previous snapshot in place.
    pub fn refresh(&mut self, nl: &mut Netlink) -> Result<RefreshStats, NetlinkError> {
        while let Ok(dst) = self.misses.try_recv() {
            self.want(dst);
        }
        // Interface MACs rarely change but are cheap to re-read once per pass.
        self.link_macs.clear();
        let mut stats = RefreshStats::default();
        let mut next = Snapshot::with_capacity(self.wanted.len());
        let mut gone = Vec::new();
        for &dst in &self.wanted {
            let route = match nl.route_get(dst) {
                Ok(r) => r,
                Err(e) if e.errno().is_some() => {
                    gone.push(dst);
                    stats.unroutable += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let src_mac = match self.link_macs.get(&route.oif) {
                Some(m) => *m,
                None => {
                    let m = nl.link_by_index(route.oif)?.mac;
                    self.link_macs.insert(route.oif, m);
                    m
                }
            };
            // No Ethernet address (TUN, loopback-like): not reachable through AF_XDP.
            let Some(src_mac) = src_mac else {
                gone.push(dst);
                stats.unroutable += 1;
                continue;
            };
            let hop = route.next_hop(dst);
            match nl
                .neighbour_get(route.oif, hop)?
                .and_then(|n| n.usable_mac())
            {
                Some(dst_mac) => {
                    next.insert(
                        dst,
                        NextHop {
                            ifindex: route.oif,
                            src_mac,
                            dst_mac,
                        },
                    );
                    stats.resolved += 1;
                }
                None => {
                    nl.neighbour_resolve(route.oif, hop)?;
                    stats.pending += 1;
                }
            }
        }
        for d in gone {
            self.wanted.remove(&d);
        }
        self.snapshot.store(Arc::new(next));
        Ok(stats)
    }

    /// Refresh every `interval`, sooner after a miss or while resolutions are
    /// pending, until `stop` is set. Errors are returned to the caller (which
    /// decides whether to log and restart).
    pub fn run(
        mut self,
        nl: &mut Netlink,
        interval: Duration,
        stop: &AtomicBool,
    ) -> Result<(), NetlinkError> {
        const PENDING_RETRY: Duration = Duration::from_millis(50);
        const MIN_GAP: Duration = Duration::from_millis(10);
        let mut last: Option<Instant> = None;
        let (mut pending, mut missed) = (false, false);
        while !stop.load(Ordering::Relaxed) {
            let since = last.map_or(Duration::MAX, |l| l.elapsed());
            let due = since >= interval
                || (missed && since >= MIN_GAP)
                || (pending && since >= PENDING_RETRY);
            if due {
                let stats = self.refresh(nl)?;
                last = Some(Instant::now());
                pending = stats.pending > 0;
                missed = false;
            }
            // Bounded wait so `stop` is honoured within 100 ms.
            match self
                .misses
                .recv_timeout(interval.min(Duration::from_millis(100)))
            {
                Ok(dst) => {
                    self.want(dst);
                    missed = true;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
        Ok(())
    }
}

//! Per-tunnel counters: one cache line per writer (worker), summed on read.

use super::*;

/// A point-in-time copy of a tunnel's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelCountersSnapshot {
    /// Packets encapsulated.
    pub tx_packets: u64,
    /// Inner bytes encapsulated.
    pub tx_bytes: u64,
    /// Packets that failed to encapsulate.
    pub tx_errors: u64,
    /// Packets decapsulated.
    pub rx_packets: u64,
    /// Inner bytes decapsulated.
    pub rx_bytes: u64,
    /// Packets with a known SPI dropped on decapsulation.
    pub rx_drops: u64,
    /// Of `rx_drops`: authentic packets whose inner source the connection
    /// may not send (the SA's selectors or the tunnel's source filter).
    pub rx_source_refused: u64,
    /// Of `rx_drops`: refused by the anti-replay window (a duplicate, or
    /// older than the window).
    pub rx_replay: u64,
    /// Of `rx_drops`: the integrity check failed (wrong keys, corruption,
    /// forgery).
    pub rx_auth_failed: u64,
}

/// Readers (workers) that get a counter slot of their own; later readers
/// and the table's own methods share one extra slot.
pub const COUNTER_SLOTS: usize = 16;

/// One writer's counters, on its own cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(super) struct CounterSlot {
    pub(super) tx_packets: AtomicU64,
    pub(super) tx_bytes: AtomicU64,
    pub(super) tx_errors: AtomicU64,
    pub(super) rx_packets: AtomicU64,
    pub(super) rx_bytes: AtomicU64,
    pub(super) rx_drops: AtomicU64,
    pub(super) rx_source_refused: AtomicU64,
    pub(super) rx_replay: AtomicU64,
    pub(super) rx_auth_failed: AtomicU64,
}

/// Which counter slot a writer uses: its own (single writer: a plain load
/// and store, no locked instruction, no shared cache line) or the shared
/// one (`fetch_add`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot(pub(super) Option<usize>);

impl Slot {
    pub(super) fn index(self) -> usize {
        self.0.unwrap_or(COUNTER_SLOTS)
    }

    pub(super) fn add(self, c: &AtomicU64, n: u64) {
        if self.0.is_some() {
            c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        } else {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Live counters of a tunnel, shared by the SAs of the tunnel across
/// rekeys, sharded per worker (like per-CPU counters) and summed on read.
#[derive(Debug, Default)]
pub struct TunnelCounters {
    pub(super) slots: [CounterSlot; COUNTER_SLOTS + 1],
}

impl TunnelCounters {
    /// Sums the counters of every slot.
    pub fn snapshot(&self) -> TunnelCountersSnapshot {
        let mut t = TunnelCountersSnapshot::default();
        for s in &self.slots {
            t.tx_packets += s.tx_packets.load(Ordering::Relaxed);
            t.tx_bytes += s.tx_bytes.load(Ordering::Relaxed);
            t.tx_errors += s.tx_errors.load(Ordering::Relaxed);
            t.rx_packets += s.rx_packets.load(Ordering::Relaxed);
            t.rx_bytes += s.rx_bytes.load(Ordering::Relaxed);
            t.rx_drops += s.rx_drops.load(Ordering::Relaxed);
            t.rx_source_refused += s.rx_source_refused.load(Ordering::Relaxed);
            t.rx_replay += s.rx_replay.load(Ordering::Relaxed);
            t.rx_auth_failed += s.rx_auth_failed.load(Ordering::Relaxed);
        }
        t
    }
}

//! The writer of `SA_SLOTS`, the inbound SAs as `wan_ingress` finds them
//! first: one slot per low bits of the SPI (`gateway_common::sa_slots`),
//! written in place through `mmap` while the data path reads it. A slot's
//! fields are written before its SPI and its SPI is cleared before them;
//! a cleared slot waits [`SLOT_GRACE`] before another SPI takes it, so a
//! lookup that matched an SPI reads that SA's fields. An SA whose slot is
//! held by another SPI (or waiting) goes to the `SA_IN` hash instead: the
//! caller's business ([`Placement::Spill`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use gateway_common::{sa_slots, SaInValue, SaSlot};

use super::routes::{Cells, Words};

/// How long a cleared slot stays unused: far longer than any lookup.
pub const SLOT_GRACE: Duration = Duration::from_secs(1);

/// Where an inbound SA went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Its slot (new, or updated in place).
    Slot,
    /// Not in a slot: the caller puts it in `SA_IN`.
    Spill,
    /// Its slot holds it with other fixed fields (tunnel, SA index,
    /// window, flags): the caller puts it in `SA_IN`, then calls
    /// [`SaSlots::remove`], so that a lookup finds it all along.
    Move,
}

/// The slots and the grace of the cleared ones.
pub struct SaSlots<C> {
    cells: C,
    cleared: HashMap<u32, Instant>,
    grace: Duration,
}

impl<C: Cells + Words> SaSlots<C> {
    /// Over zeroed storage of `sa_slots::ENTRIES` slots.
    pub fn new(cells: C) -> Self {
        Self {
            cells,
            cleared: HashMap::new(),
            grace: SLOT_GRACE,
        }
    }

    fn base(spi: u32) -> usize {
        sa_slots::slot(spi) as usize * SaSlot::WORDS
    }

    /// Installs or updates the SA of `spi` in its slot if it can.
    pub fn install(&mut self, spi: u32, v: &SaInValue) -> Placement {
        if spi == 0 {
            return Placement::Spill;
        }
        let k = Self::base(spi);
        let edge = k / 2 + SaSlot::EDGE_DWORD;
        let fixed = [
            (SaSlot::TUNNEL_ID_WORD, v.tunnel_id),
            (SaSlot::SA_INDEX_WORD, v.sa_index),
            (SaSlot::FLAGS_WORD, v.flags),
            (SaSlot::REPLAY_WINDOW_WORD, v.replay_window),
        ];
        match self.cells.get(k + SaSlot::SPI_WORD) {
            owner if owner == spi => {
                if fixed.iter().all(|&(w, x)| self.cells.get(k + w) == x) {
                    self.cells.set_word(edge, v.replay_right_edge);
                    Placement::Slot
                } else {
                    Placement::Move
                }
            }
            0 if self
                .cleared
                .get(&sa_slots::slot(spi))
                .is_none_or(|at| at.elapsed() >= self.grace) =>
            {
                self.cleared.remove(&sa_slots::slot(spi));
                for (w, x) in fixed {
                    self.cells.set(k + w, x);
                }
                self.cells.set_word(edge, v.replay_right_edge);
                self.cells.set(k + SaSlot::SPI_WORD, spi);
                Placement::Slot
            }
            _ => Placement::Spill,
        }
    }

    /// Clears the slot of `spi` if it holds it; returns whether it did.
    pub fn remove(&mut self, spi: u32) -> bool {
        let k = Self::base(spi);
        if spi == 0 || self.cells.get(k + SaSlot::SPI_WORD) != spi {
            return false;
        }
        self.cells.set(k + SaSlot::SPI_WORD, 0);
        for w in 1..SaSlot::WORDS {
            self.cells.set(k + w, 0);
        }
        self.cleared.insert(sa_slots::slot(spi), Instant::now());
        true
    }

    /// The SA of `spi` if its slot holds it.
    pub fn get(&self, spi: u32) -> Option<SaInValue> {
        let k = Self::base(spi);
        if spi == 0 || self.cells.get(k + SaSlot::SPI_WORD) != spi {
            return None;
        }
        Some(SaInValue {
            tunnel_id: self.cells.get(k + SaSlot::TUNNEL_ID_WORD),
            sa_index: self.cells.get(k + SaSlot::SA_INDEX_WORD),
            replay_right_edge: self.cells.word(k / 2 + SaSlot::EDGE_DWORD),
            replay_window: self.cells.get(k + SaSlot::REPLAY_WINDOW_WORD),
            flags: self.cells.get(k + SaSlot::FLAGS_WORD),
        })
    }

    /// Whether the slot `spi` would take is held by an SA or waiting: the
    /// IKE SPI allocator avoids such SPIs.
    pub fn slot_taken(&self, spi: u32) -> bool {
        self.cells.get(Self::base(spi) + SaSlot::SPI_WORD) != 0
            || self
                .cleared
                .get(&sa_slots::slot(spi))
                .is_some_and(|at| at.elapsed() < self.grace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 4-byte cells; 8-byte words are two cells, low half first.
    struct Mem(Vec<u32>);
    impl Cells for Mem {
        fn get(&self, i: usize) -> u32 {
            self.0[i]
        }
        fn set(&mut self, i: usize, v: u32) {
            self.0[i] = v;
        }
    }
    impl Words for Mem {
        fn word(&self, i: usize) -> u64 {
            u64::from(self.0[2 * i]) | u64::from(self.0[2 * i + 1]) << 32
        }
        fn set_word(&mut self, i: usize, v: u64) {
            self.0[2 * i] = v as u32;
            self.0[2 * i + 1] = (v >> 32) as u32;
        }
    }

    fn slots() -> SaSlots<Mem> {
        SaSlots::new(Mem(vec![0; sa_slots::ENTRIES as usize * SaSlot::WORDS]))
    }

    fn sa(tunnel_id: u32, edge: u64) -> SaInValue {
        SaInValue {
            tunnel_id,
            sa_index: tunnel_id * 10,
            replay_right_edge: edge,
            replay_window: 1024,
            flags: 0,
        }
    }

    #[test]
    fn an_sa_takes_its_slot_and_a_colliding_spi_spills() {
        let mut s = slots();
        let (a, b) = (0x1234_0001, 0x5678_0001);
        assert_eq!(sa_slots::slot(a), sa_slots::slot(b));
        assert_eq!(s.install(a, &sa(1, 0)), Placement::Slot);
        assert_eq!(s.get(a), Some(sa(1, 0)));
        assert_eq!(s.get(b), None);
        assert!(s.slot_taken(b));
        assert_eq!(s.install(b, &sa(2, 0)), Placement::Spill);
        // The edge moves in place; other fields changing is a move.
        assert_eq!(s.install(a, &sa(1, 77)), Placement::Slot);
        assert_eq!(s.get(a).map(|v| v.replay_right_edge), Some(77));
        assert_eq!(s.install(a, &sa(3, 77)), Placement::Move);
        assert_eq!(s.get(a), Some(sa(1, 77)));
        // The layout the XDP program reads.
        let k = sa_slots::slot(a) as usize * SaSlot::WORDS;
        assert_eq!(s.cells.0[k..k + 8], [a, 1, 10, 0, 1024, 0, 77, 0]);
        assert_eq!(
            s.install(0, &sa(1, 0)),
            Placement::Spill,
            "SPI 0 marks a free slot"
        );
    }

    #[test]
    fn a_cleared_slot_waits_its_grace_before_another_spi_takes_it() {
        let mut s = slots();
        let (a, b) = (0x1234_0002, 0x5678_0002);
        s.install(a, &sa(1, 5));
        assert!(!s.remove(b), "not b's slot");
        assert!(s.remove(a));
        assert!(!s.remove(a));
        assert_eq!(s.get(a), None);
        let k = sa_slots::slot(a) as usize * SaSlot::WORDS;
        assert!(s.cells.0[k..k + 8].iter().all(|&w| w == 0));
        assert!(s.slot_taken(b), "still in its grace");
        assert_eq!(s.install(b, &sa(2, 0)), Placement::Spill);
        s.grace = Duration::ZERO;
        assert!(!s.slot_taken(b));
        assert_eq!(s.install(b, &sa(2, 0)), Placement::Slot);
        assert_eq!(s.get(b), Some(sa(2, 0)));
    }
}

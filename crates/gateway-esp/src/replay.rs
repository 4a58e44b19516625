//! The anti-replay window of an inbound SA (RFC 4303 §3.4.3) and the
//! inference of the ESN high-order bits (RFC 4303 Appendix A2).
//!
//! The bitmap is a ring of 64-bit blocks at least one block larger than the
//! window, as in RFC 6479, so sliding clears whole blocks instead of
//! shifting bits; its block count is a power of two so that indexing is a
//! mask (a 64-bit division per lookup cost more than the rest of the check).
//! Storage is a fixed array sized for the largest window: no allocation.
//! The caller checks before decrypting and marks only after the ICV verified.
//!
//! Workers share one window per SA. The check before decryption is
//! lock-free (relaxed atomic loads, plain loads on x86); marking takes a
//! short spin lock (a handful of loads and stores; one locked instruction,
//! unlock is a plain release store) and checks again, so a racing duplicate is still refused
//! exactly once. A check that races a slide can at worst let a duplicate
//! through to decryption (refused at the mark) or report `Replayed` for a
//! packet that the slide just made too old: never accept twice.

use std::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

use thiserror::Error;

/// Default window size in packets.
pub const DEFAULT_WINDOW: u32 = 1024;
/// Largest window size in packets.
pub const MAX_WINDOW: u32 = 4096;

const MAX_BLOCKS: usize = ((MAX_WINDOW as usize) / 64 + 1).next_power_of_two();

/// Why a sequence number was refused by the window.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// Already received (duplicate).
    #[error("sequence number {seq} already received")]
    Replayed {
        /// Full (64-bit) sequence number.
        seq: u64,
    },
    /// Left of the window.
    #[error("sequence number {seq} is left of the replay window")]
    TooOld {
        /// Full (64-bit) sequence number as inferred.
        seq: u64,
    },
    /// Sequence number zero is never sent (RFC 4303 §3.3.3 starts at 1).
    #[error("sequence number zero")]
    Zero,
}

/// A window size outside 64..=4096 or not a multiple of 64.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("replay window size {0} is not a multiple of 64 in 64..=4096")]
pub struct BadWindowSize(pub u32);

/// Anti-replay state of one inbound SA, shared by the workers.
pub struct ReplayWindow {
    /// Highest authenticated sequence number (the right edge), 0 if none.
    top: AtomicU64,
    /// Window size W in packets.
    size: u64,
    blocks: usize,
    bitmap: [AtomicU64; MAX_BLOCKS],
    esn: bool,
    /// Serializes `mark`; `check` does not take it.
    marking: AtomicBool,
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("top", &self.right_edge())
            .field("size", &self.size)
            .field("esn", &self.esn)
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    /// A fresh window of `size` packets (multiple of 64, 64..=4096).
    pub fn new(size: u32, esn: bool) -> Result<Self, BadWindowSize> {
        if !(64..=MAX_WINDOW).contains(&size) || size % 64 != 0 {
            return Err(BadWindowSize(size));
        }
        Ok(Self {
            top: AtomicU64::new(0),
            size: u64::from(size),
            blocks: (size as usize / 64 + 1).next_power_of_two(),
            bitmap: [const { AtomicU64::new(0) }; MAX_BLOCKS],
            esn,
            marking: AtomicBool::new(false),
        })
    }

    /// The right edge: highest authenticated sequence number (0 if none).
    pub fn right_edge(&self) -> u64 {
        self.top.load(Relaxed)
    }

    /// Continues a persisted window: `right_edge` becomes the right edge
    /// and every number in the window counts as seen (what was received
    /// there before is unknown). Only before the window is shared.
    pub fn resume_at(&self, right_edge: u64) {
        let _g = MarkLock::acquire(&self.marking);
        self.top.store(right_edge, Relaxed);
        // The ring holds the edge's block and the ones below it: those are
        // seen whole, the edge's block up to the edge (what comes later in
        // it, reordered, is still accepted).
        let (edge_block, edge_bit) = self.pos(right_edge);
        for (i, b) in self.bitmap[..self.blocks].iter().enumerate() {
            let word = if i == edge_block {
                edge_bit | (edge_bit - 1)
            } else {
                u64::MAX
            };
            b.store(word, Relaxed);
        }
    }

    /// Window size in packets.
    pub fn size(&self) -> u32 {
        self.size as u32
    }

    /// Infers the full sequence number from the 32 low-order bits on the wire
    /// (RFC 4303 Appendix A2.2 with ESN; the bits themselves without).
    /// Returns `None` when the inference falls before sequence number 0.
    pub fn infer(&self, seq_lo: u32) -> Option<u64> {
        if !self.esn {
            return Some(u64::from(seq_lo));
        }
        let w = self.size;
        let top = self.top.load(Relaxed);
        let tl = top & 0xffff_ffff;
        let th = top >> 32;
        let s = u64::from(seq_lo);
        let seqh = if tl >= w - 1 {
            // Case A: the window lies within one 2^32 block.
            if s >= tl + 1 - w {
                th
            } else {
                th + 1
            }
        } else {
            // Case B: the window spans two blocks.
            let low_edge = (tl + (1 << 32) - w + 1) & 0xffff_ffff;
            if s >= low_edge {
                th.checked_sub(1)?
            } else {
                th
            }
        };
        Some((seqh << 32) | s)
    }

    /// Checks a sequence number before decryption: infers the full number
    /// and refuses duplicates and numbers left of the window.
    pub fn check(&self, seq_lo: u32) -> Result<u64, ReplayError> {
        let seq = self.infer(seq_lo).ok_or(ReplayError::TooOld {
            seq: u64::from(seq_lo),
        })?;
        self.check_full(seq)?;
        Ok(seq)
    }

    fn check_full(&self, seq: u64) -> Result<(), ReplayError> {
        if seq == 0 {
            return Err(ReplayError::Zero);
        }
        let top = self.top.load(Relaxed);
        if seq > top {
            return Ok(());
        }
        if top - seq >= self.size {
            return Err(ReplayError::TooOld { seq });
        }
        let (block, bit) = self.pos(seq);
        if self.bitmap[block].load(Relaxed) & bit != 0 {
            return Err(ReplayError::Replayed { seq });
        }
        Ok(())
    }

    fn pos(&self, seq: u64) -> (usize, u64) {
        (
            ((seq >> 6) & (self.blocks as u64 - 1)) as usize,
            1u64 << (seq & 63),
        )
    }

    /// Marks an authenticated sequence number (after the ICV verified),
    /// sliding the window right if needed. Checks again, since another
    /// worker may have marked the same number in between.
    pub fn mark(&self, seq: u64) -> Result<(), ReplayError> {
        let _g = MarkLock::acquire(&self.marking);
        self.check_full(seq)?;
        let top = self.top.load(Relaxed);
        if seq > top {
            let old_block = top >> 6;
            let new_block = seq >> 6;
            // Clear the blocks entering the window; at most all of them.
            let n = (new_block - old_block).min(self.blocks as u64);
            for i in 1..=n {
                let b = ((old_block + i) & (self.blocks as u64 - 1)) as usize;
                self.bitmap[b].store(0, Relaxed);
            }
            self.top.store(seq, Relaxed);
        }
        let (block, bit) = self.pos(seq);
        // Only the lock holder writes, so no read-modify-write is needed.
        let word = &self.bitmap[block];
        word.store(word.load(Relaxed) | bit, Relaxed);
        Ok(())
    }
}

/// The marking spin lock. The critical section is a few loads and stores
/// with no call that can block or panic, so spinning is cheaper than a
/// futex mutex (whose unlock is a second locked instruction); a holder
/// preempted by the scheduler is waited out with `yield_now`.
struct MarkLock<'a>(&'a AtomicBool);

impl<'a> MarkLock<'a> {
    fn acquire(flag: &'a AtomicBool) -> Self {
        let mut spins = 0u32;
        while flag
            .compare_exchange_weak(false, true, Acquire, Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 100 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        MarkLock(flag)
    }
}

impl Drop for MarkLock<'_> {
    fn drop(&mut self) {
        self.0.store(false, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_sizes() {
        assert!(ReplayWindow::new(1024, false).is_ok());
        assert!(ReplayWindow::new(4096, false).is_ok());
        assert!(ReplayWindow::new(64, false).is_ok());
        assert_eq!(ReplayWindow::new(0, false).unwrap_err(), BadWindowSize(0));
        assert_eq!(
            ReplayWindow::new(100, false).unwrap_err(),
            BadWindowSize(100)
        );
        assert_eq!(
            ReplayWindow::new(4160, false).unwrap_err(),
            BadWindowSize(4160)
        );
    }

    #[test]
    fn a_resumed_window_refuses_everything_up_to_its_edge() {
        for edge in [1u64, 63, 64, 1000, 5000, (1 << 32) + 70] {
            let esn = edge > u64::from(u32::MAX);
            let w = ReplayWindow::new(1024, esn).unwrap();
            w.resume_at(edge);
            assert_eq!(w.right_edge(), edge);
            // Nothing at or below the edge, in the window or left of it.
            for back in [0u64, 1, 2, 63, 64, 500, 1023, 1024, 3000] {
                if let Some(seq) = edge.checked_sub(back).filter(|s| *s > 0) {
                    assert!(w.check_full(seq).is_err(), "edge {edge}, seq {seq}");
                }
            }
            // Above it: accepted, also out of order within the edge's block.
            let full = w.check((edge + 3) as u32).unwrap();
            assert_eq!(full, edge + 3);
            w.mark(full).unwrap();
            let late = w.check((edge + 1) as u32).unwrap();
            w.mark(late).unwrap();
            assert!(w.check((edge + 1) as u32).is_err(), "marked once");
            for seq in edge + 4..edge + 200 {
                let f = w.check(seq as u32).unwrap();
                w.mark(f).unwrap();
            }
            assert!(w.check_full(edge).is_err());
        }
    }

    #[test]
    fn duplicate_and_old() {
        let w = ReplayWindow::new(64, false).unwrap();
        assert_eq!(w.check(0), Err(ReplayError::Zero));
        for s in 1..=10u32 {
            let full = w.check(s).unwrap();
            w.mark(full).unwrap();
        }
        assert_eq!(w.right_edge(), 10);
        assert_eq!(w.check(5), Err(ReplayError::Replayed { seq: 5 }));
        // Out of order but inside the window.
        w.mark(100).unwrap();
        assert_eq!(w.check(37), Ok(37));
        assert_eq!(w.check(36), Err(ReplayError::TooOld { seq: 36 }));
        w.mark(37).unwrap();
        assert_eq!(w.mark(37), Err(ReplayError::Replayed { seq: 37 }));
        assert_eq!(w.check(99), Ok(99));
        assert_eq!(w.check(100), Err(ReplayError::Replayed { seq: 100 }));
    }

    #[test]
    fn slide_clears_stale_bits() {
        // After sliding far right, old bits must not alias into new positions.
        let w = ReplayWindow::new(128, false).unwrap();
        for s in 1..=200u64 {
            w.mark(s).unwrap();
        }
        w.mark(200 + 192).unwrap();
        for s in (200 + 192 - 127)..(200 + 192) {
            assert_eq!(w.check(s as u32), Ok(s), "seq {s} must be fresh");
        }
        // A huge jump clears everything.
        w.mark(1_000_000).unwrap();
        for s in (1_000_000 - 127)..1_000_000u64 {
            assert_eq!(w.check(s as u32), Ok(s));
        }
        assert_eq!(
            w.check(1_000_000 - 128),
            Err(ReplayError::TooOld {
                seq: 1_000_000 - 128
            })
        );
    }

    #[test]
    fn every_position_of_a_large_window() {
        let w = ReplayWindow::new(4096, false).unwrap();
        w.mark(10_000).unwrap();
        for s in (10_000 - 4095)..10_000u64 {
            if s % 3 == 0 {
                w.mark(s).unwrap();
            }
        }
        for s in (10_000 - 4095)..10_000u64 {
            let r = w.check(s as u32);
            if s % 3 == 0 {
                assert_eq!(r, Err(ReplayError::Replayed { seq: s }));
            } else {
                assert_eq!(r, Ok(s));
            }
        }
    }

    #[test]
    fn esn_inference_across_2_pow_32() {
        let w = ReplayWindow::new(1024, true).unwrap();
        let base = (1u64 << 32) - 10;
        w.mark(base).unwrap();
        // Case A: right of the window in the next block.
        assert_eq!(w.check(5), Ok((1 << 32) | 5));
        w.mark((1 << 32) | 5).unwrap();
        // Case B now (Tl = 5 < W - 1): a number just below 2^32 is in the
        // previous block, inside the window.
        assert_eq!(w.check(0xffff_fff0), Ok(0xffff_fff0));
        assert_eq!(
            w.check(0xffff_fff6),
            Err(ReplayError::Replayed { seq: base })
        );
        assert_eq!(w.check(6), Ok((1 << 32) | 6));
        // Far left of the window in the previous block: interpreted as the
        // current block (a future number), per Appendix A2.2 case B.
        assert_eq!(w.check(0x8000_0000), Ok((1 << 32) | 0x8000_0000));
        // Early in the life of the SA, numbers that would need a negative
        // high half are refused as too old.
        let w0 = ReplayWindow::new(1024, true).unwrap();
        assert_eq!(
            w0.check(0xffff_ff00),
            Err(ReplayError::TooOld { seq: 0xffff_ff00 })
        );
    }

    #[test]
    fn esn_inference_at_the_case_boundary() {
        // Tl == W - 1: the first right edge where case A applies.
        let w = ReplayWindow::new(1024, true).unwrap();
        w.mark(1023).unwrap();
        assert_eq!(w.check(0), Err(ReplayError::Zero));
        assert_eq!(w.check(1), Ok(1));
        assert_eq!(w.check(1024), Ok(1024));
        let w = ReplayWindow::new(1024, true).unwrap();
        w.mark(1022).unwrap();
        assert_eq!(w.check(1), Ok(1));
        assert_eq!(
            w.check(0xffff_ffff),
            Err(ReplayError::TooOld { seq: 0xffff_ffff })
        );
    }

    #[test]
    fn no_esn_is_literal() {
        let w = ReplayWindow::new(1024, false).unwrap();
        assert_eq!(w.infer(0xffff_ffff), Some(0xffff_ffff));
    }
}

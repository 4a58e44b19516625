//! Inbound SPIs of CHILD SAs (RFC 4303 §2.1): we choose them, so two of
//! ours must never be equal, or the data plane would decrypt one tunnel's
//! packets with another's keys (or refuse the install) until the next
//! rekey. A new SPI is random, outside the reserved 0-255, not held by any
//! CHILD SA of this manager (installed, or offered in an exchange in
//! flight: a [`SpiLease`] holds it until the CHILD SA that owns it is
//! dropped), and not in use in the data plane as the agent reports it
//! through an injectable predicate (old inbound SAs kept for a grace
//! period after a rekey, SAs the agent installed on its own). No I/O here:
//! the predicate is the agent's business.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

/// Tells whether an inbound SPI is in use outside the IKE manager
/// (typically: present in the data plane's SA table).
pub type SpiInUse = Arc<dyn Fn(u32) -> bool + Send + Sync>;

/// Random draws before giving up: with a sane table, the first one wins.
const MAX_TRIES: usize = 1024;

#[derive(Default)]
pub(crate) struct SpiPool {
    taken: Mutex<HashSet<u32>>,
    external: Mutex<Option<SpiInUse>>,
}

/// An inbound SPI reserved for one CHILD SA; released when dropped.
pub(crate) struct SpiLease {
    pool: Arc<SpiPool>,
    spi: u32,
}

impl std::fmt::Debug for SpiLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SpiLease({:08x})", self.spi)
    }
}

impl SpiLease {
    pub(crate) fn spi(&self) -> u32 {
        self.spi
    }
}

impl Drop for SpiLease {
    fn drop(&mut self) {
        self.pool
            .taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.spi);
    }
}

impl SpiPool {
    pub(crate) fn set_external(&self, f: Option<SpiInUse>) {
        *self.external.lock().unwrap_or_else(PoisonError::into_inner) = f;
    }

    /// A fresh inbound SPI, or `None` if none was found free.
    pub(crate) fn allocate(self: &Arc<Self>) -> Option<SpiLease> {
        self.allocate_from(crate::crypto::random_u32)
    }

    fn allocate_from(self: &Arc<Self>, mut draw: impl FnMut() -> u32) -> Option<SpiLease> {
        let external = self
            .external
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for _ in 0..MAX_TRIES {
            let spi = draw();
            if spi <= 255 {
                continue;
            }
            // The predicate may take the data plane's locks: not under ours.
            if external.as_ref().is_some_and(|f| f(spi)) {
                continue;
            }
            let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
            if taken.insert(spi) {
                return Some(SpiLease {
                    pool: Arc::clone(self),
                    spi,
                });
            }
        }
        None
    }

    /// Reserves a given SPI (a CHILD SA resumed from a snapshot), unless
    /// it is reserved (0-255), held already or in use elsewhere.
    pub(crate) fn claim(self: &Arc<Self>, spi: u32) -> Option<SpiLease> {
        if spi <= 255 {
            return None;
        }
        let external = self
            .external
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if external.as_ref().is_some_and(|f| f(spi)) {
            return None;
        }
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        taken.insert(spi).then(|| SpiLease {
            pool: Arc::clone(self),
            spi,
        })
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_reserved_taken_or_in_use_elsewhere() {
        let pool = Arc::new(SpiPool::default());
        pool.set_external(Some(Arc::new(|spi| spi == 0x1000)));
        // The draws repeat: the reserved range, the data plane's SPI and
        // the one this pool already leased are all skipped.
        let mut draws = [7u32, 0x1000, 0x2000, 0x2000, 0x1000, 0x3000].into_iter();
        let mut next = || draws.next().unwrap_or(0);
        let a = pool.allocate_from(&mut next).unwrap();
        assert_eq!(a.spi(), 0x2000);
        let b = pool.allocate_from(&mut next).unwrap();
        assert_eq!(b.spi(), 0x3000);
        assert_eq!(pool.held(), 2);
        // Released when the CHILD SA (its lease) goes.
        drop(a);
        assert_eq!(pool.held(), 1);
        let mut again = [0x2000u32].into_iter();
        let c = pool.allocate_from(|| again.next().unwrap_or(0)).unwrap();
        assert_eq!(c.spi(), 0x2000);
        // A resumed CHILD SA claims its own SPI, once.
        let d = pool.claim(0x4000).unwrap();
        assert!(pool.claim(0x4000).is_none());
        assert!(pool.claim(0x1000).is_none(), "in use elsewhere");
        assert!(pool.claim(200).is_none(), "reserved");
        drop(d);
        assert!(pool.claim(0x4000).is_some());
        // Everything in use: gives up instead of looping forever.
        pool.set_external(Some(Arc::new(|_| true)));
        assert!(pool.allocate().is_none());
    }
}

//! Zero allocations per packet in steady state: a counting global allocator
//! (this test binary only) watches encap and decap through the SA table and
//! the SAs directly, for every suite, after a warm-up.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use gateway_esp::table::{InboundSaConfig, OutboundSaConfig, SaKeys, SaTable};
use gateway_esp::{TrafficSelectors, DEFAULT_WINDOW};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // Count only on the measuring thread: the test harness allocates on
    // its own threads.
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ARMED.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = ALLOCS.load(Ordering::Relaxed);
    ARMED.with(|a| a.set(true));
    let r = f();
    ARMED.with(|a| a.set(false));
    (r, ALLOCS.load(Ordering::Relaxed) - before)
}

#[test]
fn encap_and_decap_do_not_allocate() {
    // The counter itself must work, or the test proves nothing.
    let (_, n) = counted(|| std::hint::black_box(vec![1u8; 10]));
    assert!(n >= 1, "counting allocator is not counting");

    for (i, suite) in all_suites().into_iter().enumerate() {
        for (outer_v6, udp) in [(false, false), (false, true), (true, false), (true, true)] {
            let tunnel = 1;
            let spi = 0x100 + i as u32;
            let (e, a) = keys(suite, 9);
            let sa_keys = SaKeys::new(suite, &e, &a).unwrap();
            let (tx, rx) = (SaTable::new(), SaTable::new());
            tx.install_outbound(&OutboundSaConfig {
                tunnel,
                spi,
                keys: sa_keys.clone(),
                esn: true,
                outer: outer(outer_v6, udp),
                lifetime: gateway_esp::Lifetime::NONE,
            })
            .unwrap();
            rx.install_inbound(&InboundSaConfig {
                tunnel,
                spi,
                keys: sa_keys,
                esn: true,
                replay_window: DEFAULT_WINDOW,
                selectors: TrafficSelectors::any(),
            })
            .unwrap();
            let (out, inb) = pair(suite, false, outer_v6, udp);
            // Buffers prepared outside the measured section, as a worker's
            // UMEM frames would be.
            let pkt = inner(i % 2 == 0, 1000);
            let (template, range) = framed(&pkt);
            let mut buf = template.clone();
            let (mut txr, mut rxr) = (tx.reader(), rx.reader());
            let mut run = |buf: &mut Vec<u8>| {
                buf.copy_from_slice(&template);
                let e = tx.encap(tunnel, buf, range.clone()).unwrap();
                let r = rx.decap(buf, e.packet).unwrap();
                assert_eq!(r.decap.inner.len(), pkt.len());
                buf.copy_from_slice(&template);
                let e = txr.encap(tunnel, buf, range.clone()).unwrap();
                let r = rxr.decap(buf, e.packet).unwrap();
                assert_eq!(r.decap.inner.len(), pkt.len());
                buf.copy_from_slice(&template);
                let e = out.encap(buf, range.clone()).unwrap();
                inb.decap(buf, e.packet).unwrap();
                buf.copy_from_slice(&template);
                let e = out.encap_esp(buf, range.clone()).unwrap();
                inb.decap_esp(buf, e.packet).unwrap();
            };
            for _ in 0..4 {
                run(&mut buf);
            }
            let ((), n) = counted(|| {
                for _ in 0..50 {
                    run(&mut buf);
                }
            });
            assert_eq!(
                n, 0,
                "{suite:?} outer_v6={outer_v6} udp={udp}: {n} allocations in 50 x (encap + decap)"
            );
        }
    }
}

//! Bounded deterministic random-input tests: no input may panic the parser,
//! the decapsulation (before or after the ICV) or the replay window. The
//! cargo-fuzz target in `fuzz/` explores the same entry points without bound.

mod common;

use common::*;
use gateway_esp::table::{InboundSaConfig, SaKeys, SaTable};
use gateway_esp::{parse_outer, ReplayWindow, SaCipher, TrafficSelectors, DEFAULT_WINDOW};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let suites = all_suites();
    let table = SaTable::new();
    let mut inbound = Vec::new();
    for (i, s) in suites.iter().enumerate() {
        let (e, a) = keys(*s, 7);
        let spi = SPI.wrapping_add(i as u32);
        table
            .install_inbound(&InboundSaConfig {
                tunnel: 1,
                spi,
                keys: SaKeys::new(*s, &e, &a).unwrap(),
                esn: i % 2 == 0,
                replay_window: DEFAULT_WINDOW,
                selectors: TrafficSelectors::any(),
            })
            .unwrap();
        inbound.push(pair(*s, i % 2 == 0, false, true));
    }
    let mut accepted = 0;
    for round in 0..20_000 {
        let len = rng.below(160);
        let mut buf = rng.bytes(len);
        // Bias toward plausible headers so the parser goes deeper.
        if len > 0 && round % 2 == 0 {
            buf[0] = if round % 4 == 0 { 0x45 } else { 0x60 };
        }
        if len > 29 && round % 3 == 0 {
            buf[9] = if round % 6 == 0 { 50 } else { 17 };
            buf[6] = 0x40;
        }
        let start = if len > 0 { rng.below(len + 1) } else { 0 };
        let end = start + rng.below(len - start + 2); // may exceed the buffer
        let _ = parse_outer(&buf, start..end);
        let _ = table.decap(&mut buf.clone(), start..end);
        let _ = table.decap_esp(&mut buf.clone(), start..end);
        let (_, inb) = &inbound[round % inbound.len()];
        let _ = inb.decap(&mut buf.clone(), start..end);
        if inb.decap_esp(&mut buf, start..end).is_ok() {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 0, "random bytes must never authenticate");
}

#[test]
fn mutated_valid_packets_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for (i, suite) in all_suites().into_iter().enumerate() {
        let (out, inb) = pair(suite, i % 2 == 1, i % 3 == 0, i % 2 == 0);
        for round in 0..1_500 {
            let pkt = inner(round % 2 == 0, 48 + rng.below(200));
            let (mut buf, range) = framed(&pkt);
            let e = out.encap(&mut buf, range).unwrap();
            let mut p = buf[e.packet.clone()].to_vec();
            match round % 4 {
                0 => {
                    let n = rng.below(p.len());
                    p.truncate(n);
                }
                1 => {
                    for _ in 0..=rng.below(4) {
                        let j = rng.below(p.len());
                        p[j] = rng.next() as u8;
                    }
                }
                2 => {
                    let n = rng.below(40);
                    p.extend(rng.bytes(n));
                }
                _ => {
                    // Corrupt the outer length fields only.
                    let j = rng.below(8);
                    p[j] = rng.next() as u8;
                }
            }
            let n = p.len();
            let _ = parse_outer(&p, 0..n);
            let _ = inb.decap(&mut p, 0..n);
        }
    }
}

/// Properly sealed packets whose plaintext (trailer and inner packet) is
/// random: exercises every check after the ICV.
#[test]
fn authenticated_garbage_never_panics() {
    let mut rng = XorShift(0xdead_beef_cafe_f00d);
    for suite in all_suites() {
        let (e, a) = keys(suite, 7);
        let c = SaCipher::new(suite, &e, &a).unwrap();
        let inb = gateway_esp::InboundSa::new(
            SPI,
            SaCipher::new(suite, &e, &a).unwrap(),
            false,
            4096,
            TrafficSelectors::any(),
        )
        .unwrap();
        for seq in 1..=1_500u64 {
            let blocks = 1 + rng.below(20);
            let mut pt = rng.bytes(blocks * suite.pad_align());
            if seq % 3 == 0 {
                // Plausible trailer: small pad length, IP next header.
                let l = pt.len();
                pt[l - 2] = rng.below(l.min(20)) as u8;
                pt[l - 1] = if seq % 2 == 0 { 4 } else { 41 };
                pt[0] = if seq % 2 == 0 { 0x45 } else { 0x60 };
            }
            let mut esp = SPI.to_be_bytes().to_vec();
            esp.extend_from_slice(&(seq as u32).to_be_bytes());
            esp.extend_from_slice(&vec![0; suite.iv_len()]);
            esp.extend_from_slice(&pt);
            esp.extend_from_slice(&vec![0; suite.icv_len()]);
            c.seal(seq, false, &mut esp).unwrap();
            let n = esp.len();
            if let Ok(d) = inb.decap_esp(&mut esp, 0..n) {
                assert!(d.inner.end <= n);
            }
        }
    }
}

#[test]
fn replay_window_random_operations() {
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    for size in [64u32, 128, 1024, 4096] {
        for esn in [false, true] {
            let w = ReplayWindow::new(size, esn).unwrap();
            let mut model = std::collections::BTreeSet::new();
            let mut top = 0u64;
            for _ in 0..5_000 {
                let seq_lo = match rng.below(4) {
                    0 => rng.next() as u32,
                    1 => (top as u32).wrapping_add(rng.below(100) as u32),
                    _ => (top as u32).wrapping_sub(rng.below(size as usize + 100) as u32),
                };
                if let Ok(full) = w.check(seq_lo) {
                    assert_eq!(full as u32, seq_lo);
                    assert!(!model.contains(&full), "window accepted a duplicate");
                    w.mark(full).unwrap();
                    model.insert(full);
                    top = top.max(full);
                    assert_eq!(w.right_edge(), top);
                }
            }
        }
    }
}

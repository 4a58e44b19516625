//! Fuzzes decapsulation: the outer parser, the table lookup and an inbound
//! SA's checks, on raw input (first byte picks the suite), and the checks
//! after the ICV on properly sealed random plaintexts (so the fuzzer reaches
//! padding, next header, inner length and selector code).
//! Run: `cargo +nightly fuzz run decap` in `crates/gateway-esp/fuzz`.

#![no_main]

use std::sync::OnceLock;

use gateway_esp::table::{InboundSaConfig, SaKeys, SaTable};
use gateway_esp::{Encryption, InboundSa, Integrity, SaCipher, Suite, TrafficSelectors};
use libfuzzer_sys::fuzz_target;

const SPI: u32 = 0x0102_0304;

struct Fixture {
    suites: Vec<(SaCipher, Suite)>,
    table: SaTable,
}

fn suites() -> Vec<Suite> {
    let mut v = Vec::new();
    for e in Encryption::ALL {
        if e.is_aead() {
            v.push(Suite::new(e, None).unwrap());
        } else {
            for i in Integrity::ALL {
                v.push(Suite::new(e, Some(i)).unwrap());
            }
        }
    }
    v
}

fn key(suite: Suite) -> (Vec<u8>, Vec<u8>) {
    ((0..suite.encr_keymat_len() as u8).collect(), (0..suite.integ_keymat_len() as u8).collect())
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let table = SaTable::new();
        let mut v = Vec::new();
        for (i, s) in suites().into_iter().enumerate() {
            let (e, a) = key(s);
            v.push((SaCipher::new(s, &e, &a).unwrap(), s));
            table
                .install_inbound(&InboundSaConfig {
                    tunnel: 1,
                    spi: SPI + i as u32,
                    keys: SaKeys::new(s, &e, &a).unwrap(),
                    esn: i % 2 == 0,
                    replay_window: 64,
                    selectors: TrafficSelectors::any(),
                })
                .unwrap();
        }
        Fixture { suites: v, table }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let f = fixture();
    let buf = rest.to_vec();
    let n = buf.len();
    let _ = gateway_esp::parse_outer(&buf, 0..n);
    let _ = f.table.decap(&mut buf.clone(), 0..n);
    let _ = f.table.decap_esp(&mut buf.clone(), 0..n);
    let (cipher, suite) = &f.suites[usize::from(sel) % f.suites.len()];
    let (e, a) = key(*suite);
    // A fresh SA per input keeps runs independent of each other.
    let inb = InboundSa::new(SPI, SaCipher::new(*suite, &e, &a).unwrap(), false, 64, TrafficSelectors::any()).unwrap();
    let _ = inb.decap(&mut buf.clone(), 0..n);
    // Seal the input as plaintext (aligned) and decapsulate: reaches every
    // check after the ICV.
    let align = suite.pad_align();
    if sel & 0x80 != 0 && n >= align {
        let pt = &rest[..n - n % align];
        let mut esp = SPI.to_be_bytes().to_vec();
        esp.extend_from_slice(&1u32.to_be_bytes());
        esp.extend_from_slice(&vec![0; suite.iv_len()]);
        esp.extend_from_slice(pt);
        esp.extend_from_slice(&vec![0; suite.icv_len()]);
        cipher.seal(1, false, &mut esp).unwrap();
        let m = esp.len();
        if let Ok(d) = inb.decap_esp(&mut esp, 0..m) {
            assert!(d.inner.end <= m);
        }
    }
});

//! ESP benchmark: per-packet seal and open at 64, 512, 1400 and 8192 bytes
//! for every suite, our full tunnel-mode encap/decap through a worker's
//! reader of the shared SA table (lookup, sequence number, outer IPv4 + UDP-4500 header, padding,
//! replay window, trailer and inner checks) against the bare AEAD call on
//! the same plaintext length in the same run: ring for the suites it has,
//! RustCrypto otherwise (AES-CBC: CBC encryption + HMAC, both RustCrypto).
//!
//! Rounds of the four measurements are interleaved so that drift from other
//! load on the machine hits them alike; the median of the rounds is kept.
//! Prints a table and writes `target/bench/esp.json`.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;

use gateway_esp::raw_crypto::{aes, aes_gcm, cbc, ccm, hmac, sha2};
use gateway_esp::table::{InboundSaConfig, OutboundSaConfig, SaKeys, SaTable};
use gateway_esp::{
    Encryption, Integrity, OuterHeader, Suite, TrafficSelectors, UdpEncap, MAX_HEADROOM,
    MAX_TAILROOM,
};
use ring::aead;
use serde::Serialize;

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, InnerIvInit};
use aes_gcm::aead::consts::{U11, U12, U16};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use hmac::Mac;

const SIZES: [usize; 4] = [64, 512, 1400, 8192];
const ROUNDS: usize = 11;

#[derive(Serialize)]
struct Row {
    name: String,
    bytes: usize,
    ns_per_packet: f64,
    ratio_to_raw: f64,
}

#[derive(Serialize)]
struct Report {
    results: Vec<Row>,
}

/// The bare primitive of a suite, keyed once.
#[expect(
    clippy::large_enum_variant,
    reason = "ring's key inline, as in gateway-esp's own cipher"
)]
enum Raw {
    Ring(aead::LessSafeKey),
    Gcm192(Box<aes_gcm::AesGcm<aes::Aes192, U12>>),
    Ccm128(Box<ccm::Ccm<aes::Aes128, U16, U11>>),
    Ccm256(Box<ccm::Ccm<aes::Aes256, U16, U11>>),
    /// Keyed once like ours; the per-call clone of the key schedule and
    /// HMAC state is the same work our SA does.
    Cbc {
        aes: Box<CbcKey>,
        mac: Box<MacKey>,
    },
}

enum CbcKey {
    A128(aes::Aes128),
    A192(aes::Aes192),
    A256(aes::Aes256),
}

enum MacKey {
    S256(hmac::Hmac<sha2::Sha256>),
    S384(hmac::Hmac<sha2::Sha384>),
    S512(hmac::Hmac<sha2::Sha512>),
}

impl MacKey {
    fn icv_len(&self) -> usize {
        match self {
            MacKey::S256(_) => 16,
            MacKey::S384(_) => 24,
            MacKey::S512(_) => 32,
        }
    }

    fn compute(&self, aad: &[u8], data: &[u8], out: &mut [u8; 32]) {
        macro_rules! run {
            ($m:expr) => {{
                let mut m = $m.clone();
                m.update(aad);
                m.update(data);
                let d = m.finalize().into_bytes();
                let n = self.icv_len();
                out[..n].copy_from_slice(&d[..n]);
            }};
        }
        match self {
            MacKey::S256(m) => run!(m),
            MacKey::S384(m) => run!(m),
            MacKey::S512(m) => run!(m),
        }
    }
}

impl Raw {
    fn new(suite: Suite, encr: &[u8], integ: &[u8]) -> Self {
        let key = &encr[..suite.encryption().key_len()];
        match suite.encryption() {
            Encryption::Aes128Gcm => Raw::Ring(aead::LessSafeKey::new(
                aead::UnboundKey::new(&aead::AES_128_GCM, key).unwrap(),
            )),
            Encryption::Aes256Gcm => Raw::Ring(aead::LessSafeKey::new(
                aead::UnboundKey::new(&aead::AES_256_GCM, key).unwrap(),
            )),
            Encryption::ChaCha20Poly1305 => Raw::Ring(aead::LessSafeKey::new(
                aead::UnboundKey::new(&aead::CHACHA20_POLY1305, key).unwrap(),
            )),
            Encryption::Aes192Gcm => {
                Raw::Gcm192(Box::new(aes_gcm::AesGcm::new_from_slice(key).unwrap()))
            }
            Encryption::Aes128Ccm => Raw::Ccm128(Box::new(ccm::Ccm::new_from_slice(key).unwrap())),
            Encryption::Aes256Ccm => Raw::Ccm256(Box::new(ccm::Ccm::new_from_slice(key).unwrap())),
            Encryption::Aes128 | Encryption::Aes192 | Encryption::Aes256 => {
                let aes = match key.len() {
                    16 => CbcKey::A128(aes::Aes128::new_from_slice(key).unwrap()),
                    24 => CbcKey::A192(aes::Aes192::new_from_slice(key).unwrap()),
                    _ => CbcKey::A256(aes::Aes256::new_from_slice(key).unwrap()),
                };
                let mac = match suite.integrity().unwrap() {
                    Integrity::Sha256 => MacKey::S256(
                        <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(integ).unwrap(),
                    ),
                    Integrity::Sha384 => MacKey::S384(
                        <hmac::Hmac<sha2::Sha384> as Mac>::new_from_slice(integ).unwrap(),
                    ),
                    Integrity::Sha512 => MacKey::S512(
                        <hmac::Hmac<sha2::Sha512> as Mac>::new_from_slice(integ).unwrap(),
                    ),
                };
                Raw::Cbc {
                    aes: Box::new(aes),
                    mac: Box::new(mac),
                }
            }
        }
    }

    /// Seals `buf` (plaintext) in place; returns the 16..32-byte tag.
    fn seal(&self, nonce: u64, aad: &[u8; 8], buf: &mut [u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut n12 = [0u8; 12];
        n12[4..].copy_from_slice(&nonce.to_be_bytes());
        match self {
            Raw::Ring(k) => {
                let t = k
                    .seal_in_place_separate_tag(
                        aead::Nonce::assume_unique_for_key(n12),
                        aead::Aad::from(aad),
                        buf,
                    )
                    .unwrap();
                out[..16].copy_from_slice(t.as_ref());
            }
            Raw::Gcm192(k) => out[..16].copy_from_slice(
                &k.encrypt_in_place_detached((&n12).into(), aad, buf)
                    .unwrap(),
            ),
            Raw::Ccm128(k) => out[..16].copy_from_slice(
                &k.encrypt_in_place_detached(n12[1..].into(), aad, buf)
                    .unwrap(),
            ),
            Raw::Ccm256(k) => out[..16].copy_from_slice(
                &k.encrypt_in_place_detached(n12[1..].into(), aad, buf)
                    .unwrap(),
            ),
            Raw::Cbc { aes, mac } => {
                let iv = [7u8; 16];
                let n = buf.len();
                match &**aes {
                    CbcKey::A128(k) => {
                        cbc::Encryptor::<aes::Aes128>::inner_iv_init(k.clone(), (&iv).into())
                            .encrypt_padded_mut::<NoPadding>(buf, n)
                    }
                    CbcKey::A192(k) => {
                        cbc::Encryptor::<aes::Aes192>::inner_iv_init(k.clone(), (&iv).into())
                            .encrypt_padded_mut::<NoPadding>(buf, n)
                    }
                    CbcKey::A256(k) => {
                        cbc::Encryptor::<aes::Aes256>::inner_iv_init(k.clone(), (&iv).into())
                            .encrypt_padded_mut::<NoPadding>(buf, n)
                    }
                }
                .unwrap();
                mac.compute(aad, buf, &mut out);
            }
        }
        out
    }

    /// Opens `buf` (ciphertext) in place against `tag`; panics on failure
    /// (the benchmark only opens what it sealed).
    fn open(&self, nonce: u64, aad: &[u8; 8], buf: &mut [u8], tag: &[u8; 32]) {
        let mut n12 = [0u8; 12];
        n12[4..].copy_from_slice(&nonce.to_be_bytes());
        let mut t16 = [0u8; 16];
        t16.copy_from_slice(&tag[..16]);
        match self {
            Raw::Ring(k) => {
                k.open_in_place_separate_tag(
                    aead::Nonce::assume_unique_for_key(n12),
                    aead::Aad::from(aad),
                    aead::Tag::from(t16),
                    buf,
                    0..,
                )
                .unwrap();
            }
            Raw::Gcm192(k) => k
                .decrypt_in_place_detached((&n12).into(), aad, buf, (&t16).into())
                .unwrap(),
            Raw::Ccm128(k) => k
                .decrypt_in_place_detached(n12[1..].into(), aad, buf, (&t16).into())
                .unwrap(),
            Raw::Ccm256(k) => k
                .decrypt_in_place_detached(n12[1..].into(), aad, buf, (&t16).into())
                .unwrap(),
            Raw::Cbc { aes, mac } => {
                let mut check = [0u8; 32];
                mac.compute(aad, buf, &mut check);
                assert_eq!(check[..mac.icv_len()], tag[..mac.icv_len()]);
                let iv = [7u8; 16];
                match &**aes {
                    CbcKey::A128(k) => {
                        cbc::Decryptor::<aes::Aes128>::inner_iv_init(k.clone(), (&iv).into())
                            .decrypt_padded_mut::<NoPadding>(buf)
                    }
                    CbcKey::A192(k) => {
                        cbc::Decryptor::<aes::Aes192>::inner_iv_init(k.clone(), (&iv).into())
                            .decrypt_padded_mut::<NoPadding>(buf)
                    }
                    CbcKey::A256(k) => {
                        cbc::Decryptor::<aes::Aes256>::inner_iv_init(k.clone(), (&iv).into())
                            .decrypt_padded_mut::<NoPadding>(buf)
                    }
                }
                .unwrap();
            }
        }
    }
}

fn suites() -> Vec<(String, Suite)> {
    let mut v = Vec::new();
    for e in Encryption::ALL {
        if e.is_aead() {
            v.push((e.api_name().to_string(), Suite::new(e, None).unwrap()));
        } else {
            for i in Integrity::ALL {
                v.push((
                    format!("{}-{}", e.api_name(), i.api_name()),
                    Suite::new(e, Some(i)).unwrap(),
                ));
            }
        }
    }
    v
}

fn inner_packet(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[198, 51, 100, 1]);
    p[16..20].copy_from_slice(&[192, 0, 2, 1]);
    for (i, b) in p[20..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn per_packet(start: Instant, n: usize) -> f64 {
    start.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let only: Option<String> = std::env::args().nth(1);
    let mut rows = Vec::new();
    println!(
        "{:<22} {:>6} {:>11} {:>11} {:>7} {:>11} {:>11} {:>7}",
        "suite", "bytes", "seal raw", "encap", "ratio", "open raw", "decap", "ratio"
    );
    for (name, suite) in suites() {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let encr: Vec<u8> = (0..suite.encr_keymat_len() as u8).collect();
        let integ: Vec<u8> = (0..suite.integ_keymat_len() as u8)
            .map(|b| b ^ 0x5c)
            .collect();
        let keys = SaKeys::new(suite, &encr, &integ).unwrap();
        let raw = Raw::new(suite, &encr, &integ);
        for &bytes in &SIZES {
            // A fresh table per size keeps sequence numbers and the replay
            // window in step between the encap and decap sides.
            let (tx, rx) = (SaTable::new(), SaTable::new());
            let src: IpAddr = "203.0.113.1".parse().unwrap();
            let dst: IpAddr = "203.0.113.2".parse().unwrap();
            tx.install_outbound(&OutboundSaConfig {
                tunnel: 1,
                spi: 0x1000,
                keys: keys.clone(),
                esn: false,
                outer: OuterHeader {
                    src,
                    dst,
                    udp: Some(UdpEncap::default()),
                    ttl: 64,
                },
                lifetime: gateway_esp::Lifetime::NONE,
            })
            .unwrap();
            rx.install_inbound(&InboundSaConfig {
                tunnel: 1,
                spi: 0x1000,
                keys: keys.clone(),
                esn: false,
                replay_window: 4096,
                selectors: TrafficSelectors::any(),
            })
            .unwrap();
            // Each worker holds a reader (cached map snapshots).
            let (mut txr, mut rxr) = (tx.reader(), rx.reader());
            // Fewer packets per round for large sizes keeps rounds short.
            let n = (2_000_000 / (bytes + 200)).clamp(200, 4000);
            let inner = inner_packet(bytes);
            let mut frame = vec![0u8; MAX_HEADROOM + bytes + MAX_TAILROOM];
            frame[MAX_HEADROOM..MAX_HEADROOM + bytes].copy_from_slice(&inner);
            let range = MAX_HEADROOM..MAX_HEADROOM + bytes;
            // The bare primitive encrypts what ESP encrypts: the inner
            // packet plus padding and the 2-byte trailer.
            let align = suite.pad_align();
            let pt_len = (bytes + 2).div_ceil(align) * align;
            let aad = [0x10, 0, 0, 0, 0, 0, 0, 1];
            let (mut seal_raw, mut encap, mut open_raw, mut decap) =
                (vec![], vec![], vec![], vec![]);
            let mut frames: Vec<Vec<u8>> = vec![frame.clone(); n];
            let mut plains: Vec<Vec<u8>> = vec![vec![0xa5u8; pt_len]; n];
            let mut tags = vec![[0u8; 32]; n];
            for round in 0..ROUNDS + 1 {
                // Raw seal over n distinct buffers.
                let t = Instant::now();
                for (i, p) in plains.iter_mut().enumerate() {
                    tags[i] = raw.seal(i as u64, &aad, black_box(p));
                }
                let raw_seal_ns = per_packet(t, n);
                // Raw open of what was just sealed.
                let t = Instant::now();
                for (i, p) in plains.iter_mut().enumerate() {
                    raw.open(i as u64, &aad, black_box(p), &tags[i]);
                }
                let raw_open_ns = per_packet(t, n);
                // Our encap over n distinct frames (fresh copies, untimed).
                for f in frames.iter_mut() {
                    f.copy_from_slice(&frame);
                }
                let mut outs = Vec::with_capacity(n);
                let t = Instant::now();
                for f in frames.iter_mut() {
                    outs.push(txr.encap(1, black_box(f), range.clone()).unwrap().packet);
                }
                let encap_ns = per_packet(t, n);
                // Our decap of those packets, in order.
                let t = Instant::now();
                for (f, r) in frames.iter_mut().zip(outs.iter()) {
                    let got = rxr.decap(black_box(f), r.clone()).unwrap();
                    black_box(got);
                }
                let decap_ns = per_packet(t, n);
                if round > 0 {
                    // Round 0 warms caches and the CPU clock.
                    seal_raw.push(raw_seal_ns);
                    open_raw.push(raw_open_ns);
                    encap.push(encap_ns);
                    decap.push(decap_ns);
                }
            }
            let (sr, e, or, d) = (
                median(seal_raw),
                median(encap),
                median(open_raw),
                median(decap),
            );
            println!(
                "{:<22} {:>6} {:>9.0}ns {:>9.0}ns {:>6.2}x {:>9.0}ns {:>9.0}ns {:>6.2}x",
                name,
                bytes,
                sr,
                e,
                sr / e,
                or,
                d,
                or / d
            );
            let raw_name = if matches!(raw, Raw::Ring(_)) {
                "ring"
            } else {
                "rustcrypto"
            };
            rows.push(Row {
                name: format!("{name}/seal_raw_{raw_name}"),
                bytes,
                ns_per_packet: sr,
                ratio_to_raw: 1.0,
            });
            rows.push(Row {
                name: format!("{name}/encap"),
                bytes,
                ns_per_packet: e,
                ratio_to_raw: sr / e,
            });
            rows.push(Row {
                name: format!("{name}/open_raw_{raw_name}"),
                bytes,
                ns_per_packet: or,
                ratio_to_raw: 1.0,
            });
            rows.push(Row {
                name: format!("{name}/decap"),
                bytes,
                ns_per_packet: d,
                ratio_to_raw: or / d,
            });
        }
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).expect("create target/bench");
    let path = dir.join("esp.json");
    let json = serde_json::to_string_pretty(&Report { results: rows }).expect("serialize");
    std::fs::write(&path, json).expect("write esp.json");
    println!(
        "ratio = raw ns / ours ns (throughput relative to the bare primitive); wrote {}",
        path.display()
    );
}

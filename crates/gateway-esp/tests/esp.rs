//! Tunnel-mode encap/decap through the public API: every suite, all four
//! inner/outer family combinations, with and without UDP encapsulation;
//! outer header fields; tamper, replay, window, ESN rollover, exhaustion,
//! selectors, padding and next-header refusals.

mod common;

use std::net::IpAddr;

use common::*;
use gateway_esp::{
    parse_outer, DecapError, EncapError, InboundSa, InnerFamily, OutboundSa, ReplayError, SaCipher,
    Suite, TrafficSelectors, DEFAULT_WINDOW, MAX_HEADROOM, NAT_T_PORT,
};

fn check_outer(buf: &[u8], out: &std::ops::Range<usize>, outer_v6: bool, udp: bool, inner_tos: u8) {
    let p = &buf[out.clone()];
    let o = outer(outer_v6, udp);
    let l4 = if outer_v6 {
        assert_eq!(p[0] >> 4, 6);
        assert_eq!(
            ((p[0] & 0x0f) << 4) | (p[1] >> 4),
            inner_tos,
            "traffic class copied"
        );
        assert_eq!(
            usize::from(u16::from_be_bytes([p[4], p[5]])),
            p.len() - 40,
            "payload length"
        );
        assert_eq!(p[6], if udp { 17 } else { 50 });
        assert_eq!(p[7], 64);
        assert_eq!(
            IpAddr::from(<[u8; 16]>::try_from(&p[8..24]).unwrap()),
            o.src
        );
        assert_eq!(
            IpAddr::from(<[u8; 16]>::try_from(&p[24..40]).unwrap()),
            o.dst
        );
        40
    } else {
        assert_eq!(p[0], 0x45);
        assert_eq!(p[1], inner_tos, "TOS copied");
        assert_eq!(
            usize::from(u16::from_be_bytes([p[2], p[3]])),
            p.len(),
            "total length"
        );
        assert_eq!(p[8], 64);
        assert_eq!(p[9], if udp { 17 } else { 50 });
        assert!(csum_ok(&p[..20], &[]), "IPv4 header checksum");
        assert_eq!(
            IpAddr::from(<[u8; 4]>::try_from(&p[12..16]).unwrap()),
            o.src
        );
        assert_eq!(
            IpAddr::from(<[u8; 4]>::try_from(&p[16..20]).unwrap()),
            o.dst
        );
        20
    };
    if udp {
        let u = &p[l4..];
        assert_eq!(u16::from_be_bytes([u[0], u[1]]), NAT_T_PORT);
        assert_eq!(u16::from_be_bytes([u[2], u[3]]), NAT_T_PORT);
        assert_eq!(usize::from(u16::from_be_bytes([u[4], u[5]])), u.len());
        let ck = u16::from_be_bytes([u[6], u[7]]);
        if outer_v6 {
            let mut pseudo = p[8..40].to_vec();
            pseudo.extend_from_slice(&(u.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 17]);
            assert_ne!(ck, 0, "IPv6 UDP checksum is mandatory");
            assert!(csum_ok(u, &pseudo), "UDP/IPv6 checksum");
        } else {
            assert_eq!(ck, 0, "RFC 3948: zero UDP checksum over IPv4");
        }
        assert_eq!(u32::from_be_bytes([u[8], u[9], u[10], u[11]]), SPI);
    } else {
        assert_eq!(
            u32::from_be_bytes([p[l4], p[l4 + 1], p[l4 + 2], p[l4 + 3]]),
            SPI
        );
    }
}

#[test]
fn round_trip_every_suite_family_and_encapsulation() {
    let mut n = 0;
    for suite in all_suites() {
        for outer_v6 in [false, true] {
            for inner_is_v6 in [false, true] {
                for udp in [false, true] {
                    for esn in [false, true] {
                        let (out, inb) = pair(suite, esn, outer_v6, udp);
                        for len in [48usize, 49, 50, 51, 64, 1400] {
                            let pkt = inner(inner_is_v6, len);
                            let (mut buf, range) = framed(&pkt);
                            let e = out.encap(&mut buf, range).unwrap();
                            // Both inner builders carry DSCP 46 (EF), TOS/TC 0xb8.
                            let tos = 0xb8;
                            check_outer(&buf, &e.packet, outer_v6, udp, tos);
                            // Ciphertext differs from the plaintext.
                            assert!(!buf[e.packet.clone()].windows(16).any(|w| w == &pkt[32..48]));
                            let parsed = parse_outer(&buf, e.packet.clone()).unwrap();
                            assert_eq!(parsed.spi, SPI);
                            assert_eq!(parsed.udp.is_some(), udp);
                            let d = inb.decap(&mut buf, e.packet.clone()).unwrap();
                            assert_eq!(
                                &buf[d.inner.clone()],
                                &pkt[..],
                                "{suite:?} v6out={outer_v6} v6in={inner_is_v6} udp={udp} len={len}"
                            );
                            assert_eq!(
                                d.family,
                                if inner_is_v6 {
                                    InnerFamily::Ipv6
                                } else {
                                    InnerFamily::Ipv4
                                }
                            );
                            assert_eq!(d.seq, e.seq);
                            n += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(n, 15 * 2 * 2 * 2 * 2 * 6);
}

#[test]
fn esp_only_round_trip() {
    for suite in all_suites() {
        let (out, inb) = pair(suite, true, false, true);
        let pkt = inner(false, 100);
        let (mut buf, range) = framed(&pkt);
        let e = out.encap_esp(&mut buf, range.clone()).unwrap();
        assert_eq!(e.packet.start, range.start - out.esp_headroom());
        assert_eq!(
            u32::from_be_bytes(buf[e.packet.start..e.packet.start + 4].try_into().unwrap()),
            SPI
        );
        let d = inb.decap_esp(&mut buf, e.packet).unwrap();
        assert_eq!(&buf[d.inner], &pkt[..]);
    }
}

#[test]
fn padding_aligns_and_counts() {
    for suite in all_suites() {
        let (out, _) = pair(suite, false, false, false);
        for len in 40..80usize {
            let pkt = inner(false, len);
            let (mut buf, range) = framed(&pkt);
            let e = out.encap(&mut buf, range).unwrap();
            let esp_len = e.packet.len() - 20;
            let ct = esp_len - 8 - suite.iv_len() - suite.icv_len();
            assert_eq!(ct % suite.pad_align(), 0);
            assert!(ct >= len + 2 && ct < len + 2 + suite.pad_align());
        }
    }
}

fn dec(inb: &InboundSa, p: &[u8]) -> Result<gateway_esp::Decapsulated, DecapError> {
    let mut b = p.to_vec();
    let n = b.len();
    inb.decap(&mut b, 0..n)
}

fn one(out: &OutboundSa, v6: bool) -> Vec<u8> {
    let (mut buf, range) = framed(&inner(v6, 80));
    let e = out.encap(&mut buf, range).unwrap();
    buf[e.packet].to_vec()
}

#[test]
fn tamper_fails_icv_and_does_not_advance_window() {
    for suite in all_suites() {
        let (out, inb) = pair(suite, false, false, true);
        let good = one(&out, false);
        // Flip one bit in every byte after the UDP header (SPI excluded:
        // that changes the SA, sequence excluded: covered below).
        for i in (28 + 8)..good.len() {
            let mut p = good.clone();
            p[i] ^= 0x01;
            let r = inb.decap(&mut p, 0..good.len());
            assert!(
                matches!(r, Err(DecapError::IcvMismatch { seq: 1, .. })),
                "{suite:?} byte {i}: {r:?}"
            );
        }
        // Sequence number tampering: authenticated too.
        let mut p = good.clone();
        p[28 + 7] ^= 0x02;
        assert!(matches!(
            inb.decap(&mut p, 0..good.len()),
            Err(DecapError::IcvMismatch { seq: 3, .. })
        ));
        assert_eq!(inb.right_edge(), 0, "nothing marked before an ICV verified");
        let mut p = good.clone();
        inb.decap(&mut p, 0..good.len()).unwrap();
        assert_eq!(inb.right_edge(), 1);
    }
}

#[test]
fn replay_is_dropped_with_a_typed_reason() {
    let suite = Suite::from_api_names("aes256gcm", None).unwrap();
    let (out, inb) = pair(suite, false, true, false);
    let p1 = one(&out, true);
    let mut a = p1.clone();
    inb.decap(&mut a, 0..p1.len()).unwrap();
    let mut b = p1.clone();
    assert_eq!(
        inb.decap(&mut b, 0..p1.len()),
        Err(DecapError::Replay(ReplayError::Replayed { seq: 1 }))
    );
    assert_eq!(
        DecapError::Replay(ReplayError::Replayed { seq: 1 }).reason(),
        "replayed"
    );
}

#[test]
fn window_slides_and_drops_too_old() {
    let suite = Suite::from_api_names("chacha20poly1305", None).unwrap();
    let (e, a) = keys(suite, 7);
    let out = OutboundSa::new(
        SPI,
        SaCipher::new(suite, &e, &a).unwrap(),
        false,
        outer(false, false),
    )
    .unwrap();
    let inb = InboundSa::new(
        SPI,
        SaCipher::new(suite, &e, &a).unwrap(),
        false,
        64,
        TrafficSelectors::any(),
    )
    .unwrap();
    let pkts: Vec<Vec<u8>> = (0..200).map(|_| one(&out, false)).collect();
    // Deliver out of order: 100 first, then 36 (too old), 37..=100 in window.
    dec(&inb, &pkts[99]).unwrap();
    assert_eq!(inb.right_edge(), 100);
    assert_eq!(
        dec(&inb, &pkts[35]).unwrap_err(),
        DecapError::Replay(ReplayError::TooOld { seq: 36 })
    );
    for s in 37..100 {
        dec(&inb, &pkts[s - 1]).unwrap();
    }
    for s in 101..=200 {
        dec(&inb, &pkts[s - 1]).unwrap();
    }
    assert_eq!(inb.right_edge(), 200);
    assert_eq!(
        dec(&inb, &pkts[136]).unwrap_err(),
        DecapError::Replay(ReplayError::Replayed { seq: 137 })
    );
    assert_eq!(
        dec(&inb, &pkts[199]).unwrap_err(),
        DecapError::Replay(ReplayError::Replayed { seq: 200 })
    );
}

#[test]
fn esn_rolls_over_2_pow_32_and_32_bit_does_not() {
    for suite in [
        Suite::from_api_names("aes128gcm", None).unwrap(),
        Suite::from_api_names("aes256", Some("sha512")).unwrap(),
    ] {
        let (out, inb) = pair(suite, true, false, true);
        let start = (1u64 << 32) - 3;
        // A receiver with no history infers block 0 and refuses numbers
        // just below 2^32 (RFC 4303 A2.2 case B), as a real peer would
        // have received everything before: give it some history first.
        out.set_last_seq((1 << 32) - 2001);
        let (mut buf, range) = framed(&inner(false, 64));
        let e = out.encap(&mut buf, range).unwrap();
        assert_eq!(inb.decap(&mut buf, e.packet).unwrap().seq, (1 << 32) - 2000);
        out.set_last_seq(start - 1);
        let mut seen = Vec::new();
        for _ in 0..6 {
            let (mut buf, range) = framed(&inner(false, 64));
            let e = out.encap(&mut buf, range).unwrap();
            seen.push(e.seq);
            let lo = u32::from_be_bytes(
                buf[e.packet.start + 32..e.packet.start + 36]
                    .try_into()
                    .unwrap(),
            );
            assert_eq!(
                u64::from(lo),
                e.seq & 0xffff_ffff,
                "only the low half is on the wire"
            );
            let d = inb.decap(&mut buf, e.packet).unwrap();
            assert_eq!(d.seq, e.seq);
        }
        assert_eq!(seen, (start..start + 6).collect::<Vec<_>>());
        assert!(seen.contains(&(1 << 32)), "crossed 2^32");
        assert_eq!(inb.right_edge(), start + 5);
    }
    // 32-bit: exhaustion at 2^32 - 1, no wrap.
    let suite = Suite::from_api_names("aes256gcm", None).unwrap();
    let (out, inb) = pair(suite, false, false, false);
    out.set_last_seq(u64::from(u32::MAX) - 2);
    for expect in [u64::from(u32::MAX) - 1, u64::from(u32::MAX)] {
        let (mut buf, range) = framed(&inner(false, 64));
        let e = out.encap(&mut buf, range).unwrap();
        assert_eq!(e.seq, expect);
        assert!(e.soft_limit_reached);
        inb.decap(&mut buf, e.packet).unwrap();
    }
    for _ in 0..3 {
        let (mut buf, range) = framed(&inner(false, 64));
        assert_eq!(
            out.encap(&mut buf, range),
            Err(EncapError::SequenceExhausted { spi: SPI })
        );
    }
    assert!(out.exhausted());
    assert_eq!(out.last_seq(), u64::from(u32::MAX));
}

#[test]
fn esn_exhaustion_and_soft_limit() {
    let suite = Suite::from_api_names("aes256gcm", None).unwrap();
    let (e, a) = keys(suite, 1);
    let out = OutboundSa::new(
        SPI,
        SaCipher::new(suite, &e, &a).unwrap(),
        true,
        outer(false, true),
    )
    .unwrap()
    .with_soft_limit(10);
    for s in 1..=11u64 {
        let (mut buf, range) = framed(&inner(false, 64));
        let r = out.encap(&mut buf, range).unwrap();
        assert_eq!(r.soft_limit_reached, s >= 10);
    }
    assert!(out.soft_limit_reached() && !out.exhausted());
    out.set_last_seq(out.hard_limit() - 1);
    let (mut buf, range) = framed(&inner(false, 64));
    assert_eq!(out.encap(&mut buf, range).unwrap().seq, out.hard_limit());
    let (mut buf, range) = framed(&inner(false, 64));
    assert_eq!(
        out.encap(&mut buf, range),
        Err(EncapError::SequenceExhausted { spi: SPI })
    );
    assert!(out.exhausted());
}

#[test]
fn selectors_refuse_foreign_inner_addresses() {
    let suite = Suite::from_api_names("aes128ccm", None).unwrap();
    let (e, a) = keys(suite, 3);
    let out = OutboundSa::new(
        SPI,
        SaCipher::new(suite, &e, &a).unwrap(),
        false,
        outer(false, true),
    )
    .unwrap();
    let ts = TrafficSelectors {
        local: vec!["192.0.2.0/24".parse().unwrap()],
        remote: vec!["198.51.100.0/24".parse().unwrap()],
    };
    let inb = InboundSa::new(
        SPI,
        SaCipher::new(suite, &e, &a).unwrap(),
        false,
        DEFAULT_WINDOW,
        ts,
    )
    .unwrap();
    let ok = inner_v4(64, "198.51.100.7", "192.0.2.9");
    let (mut buf, r) = framed(&ok);
    let e1 = out.encap(&mut buf, r).unwrap();
    assert!(inb.decap(&mut buf, e1.packet).is_ok());
    for (src, dst) in [
        ("203.0.113.7", "192.0.2.9"),
        ("198.51.100.7", "203.0.113.9"),
    ] {
        let (mut buf, r) = framed(&inner_v4(64, src, dst));
        let e = out.encap(&mut buf, r).unwrap();
        assert_eq!(
            inb.decap(&mut buf, e.packet),
            Err(DecapError::SelectorRefused {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap()
            })
        );
    }
    // IPv6 inner on a v4-only selector set.
    let (mut buf, r) = framed(&inner(true, 80));
    let e = out.encap(&mut buf, r).unwrap();
    assert!(matches!(
        inb.decap(&mut buf, e.packet),
        Err(DecapError::SelectorRefused { .. })
    ));
}

/// Builds an ESP packet with an arbitrary (possibly invalid) plaintext
/// trailer, sealed properly so only the post-ICV checks can refuse it.
fn sealed_esp(suite: Suite, seq: u64, plaintext: &[u8]) -> Vec<u8> {
    let (e, a) = keys(suite, 7);
    let c = SaCipher::new(suite, &e, &a).unwrap();
    let mut esp = SPI.to_be_bytes().to_vec();
    esp.extend_from_slice(&(seq as u32).to_be_bytes());
    esp.extend_from_slice(&vec![0; suite.iv_len()]);
    esp.extend_from_slice(plaintext);
    esp.extend_from_slice(&vec![0; suite.icv_len()]);
    c.seal(seq, false, &mut esp).unwrap();
    esp
}

fn with_trailer(payload: &[u8], padding: &[u8], pad_len: u8, nh: u8, align: usize) -> Vec<u8> {
    let mut v = payload.to_vec();
    v.extend_from_slice(padding);
    v.push(pad_len);
    v.push(nh);
    assert_eq!(v.len() % align, 0, "test plaintext must be aligned");
    v
}

#[test]
fn post_icv_checks_padding_next_header_inner_length() {
    for suite in [
        Suite::from_api_names("aes256gcm", None).unwrap(),
        Suite::from_api_names("aes128", Some("sha256")).unwrap(),
    ] {
        let (_, inb) = pair(suite, false, false, false);
        let al = suite.pad_align();
        let pkt = inner(false, 60);
        let pad = |n: usize| (1..=n as u8).collect::<Vec<u8>>();
        let fit = |extra: usize| (al - (pkt.len() + 2 + extra) % al) % al + extra;
        let mut seq = 0u64;
        let mut run = |pt: Vec<u8>| {
            seq += 1;
            let mut esp = sealed_esp(suite, seq, &pt);
            let n = esp.len();
            inb.decap_esp(&mut esp, 0..n).map(|d| d.inner.len())
        };
        // Valid, with extra padding beyond alignment (allowed up to 255).
        let n = fit(al);
        assert_eq!(run(with_trailer(&pkt, &pad(n), n as u8, 4, al)), Ok(60));
        // Non-monotonic padding.
        let mut bad = pad(n);
        bad[1] = 9;
        assert_eq!(
            run(with_trailer(&pkt, &bad, n as u8, 4, al)),
            Err(DecapError::BadPadding)
        );
        // Pad length pointing before the payload.
        let n0 = fit(0);
        let mut pt = with_trailer(&pkt, &pad(n0), n0 as u8, 4, al);
        let l = pt.len();
        pt[l - 2] = 255;
        assert!(matches!(
            run(pt),
            Err(DecapError::BadPadding | DecapError::BadPadLength { .. })
        ));
        let tiny = with_trailer(&[0u8; 0], &pad(al - 2), 200, 4, al);
        assert_eq!(run(tiny), Err(DecapError::BadPadLength { pad_len: 200 }));
        // Dummy packet: dropped silently with its own reason.
        let r = run(with_trailer(&pkt, &pad(n0), n0 as u8, 59, al));
        assert_eq!(r, Err(DecapError::DummyPacket));
        assert!(DecapError::DummyPacket.is_silent());
        // Unsupported next header (transport-mode TCP).
        assert_eq!(
            run(with_trailer(&pkt, &pad(n0), n0 as u8, 6, al)),
            Err(DecapError::UnsupportedNextHeader { next_header: 6 })
        );
        // Next header says IPv6 but the packet is IPv4.
        assert!(matches!(
            run(with_trailer(&pkt, &pad(n0), n0 as u8, 41, al)),
            Err(DecapError::InnerVersionMismatch { .. })
        ));
        // Inner total length larger than what was decrypted.
        let mut long = pkt.clone();
        long[2..4].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(
            run(with_trailer(&long, &pad(n0), n0 as u8, 4, al)),
            Err(DecapError::InnerLengthMismatch {
                claimed: 200,
                available: 60
            })
        );
        // TFC padding after the inner packet (RFC 4303 §2.7) is trimmed.
        let mut short = pkt.clone();
        short[2..4].copy_from_slice(&50u16.to_be_bytes());
        assert_eq!(run(with_trailer(&short, &pad(n0), n0 as u8, 4, al)), Ok(50));
    }
}

#[test]
fn encap_refuses_bad_input() {
    let suite = Suite::from_api_names("aes256gcm", None).unwrap();
    let (out, _) = pair(suite, false, true, true);
    let pkt = inner(false, 100);
    let (mut buf, range) = framed(&pkt);
    assert!(matches!(
        out.encap(&mut buf, 10..range.end),
        Err(EncapError::InnerNotIp) | Err(EncapError::NoHeadroom { .. })
    ));
    let mut low = vec![0u8; 20 + 100 + 64];
    low[20..120].copy_from_slice(&pkt);
    assert_eq!(
        out.encap(&mut low, 20..120),
        Err(EncapError::NoHeadroom {
            needed: out.headroom(),
            available: 20
        })
    );
    let l = buf.len();
    assert!(matches!(
        out.encap(&mut buf, range.start..l),
        Err(EncapError::InnerNotIp | EncapError::NoTailroom { .. })
    ));
    assert_eq!(
        out.encap(&mut buf, range.start..l + 1),
        Err(EncapError::RangeOutOfBounds {
            start: range.start,
            end: l + 1,
            len: l
        })
    );
    let mut junk = vec![0u8; MAX_HEADROOM + 100];
    assert_eq!(
        out.encap(&mut junk, MAX_HEADROOM..MAX_HEADROOM + 10),
        Err(EncapError::InnerNotIp)
    );
    // What the peer's decap refuses is not sent: an IPv4 IHL under 5, an
    // IPv4 total length or an IPv6 payload length beyond the packet.
    for (v6, at, value) in [(false, 0, 0x42), (false, 2, 0xff), (true, 4, 0xff)] {
        let mut bad = inner(v6, 100);
        bad[at] = value;
        let (mut buf, range) = framed(&bad);
        assert_eq!(
            out.encap(&mut buf, range),
            Err(EncapError::InnerNotIp),
            "v6 {v6}, byte {at} = {value:#x}"
        );
    }
    // Exact tailroom works, one byte less does not.
    // 100 bytes + 2 trailer bytes pad to 104 (2 padding), then a 16-byte ICV.
    let need = 100 + 2 + 2 + 16;
    let mut tight = vec![0u8; MAX_HEADROOM + need];
    tight[MAX_HEADROOM..MAX_HEADROOM + 100].copy_from_slice(&pkt);
    assert!(out
        .encap(&mut tight, MAX_HEADROOM..MAX_HEADROOM + 100)
        .is_ok());
    let mut tight = vec![0u8; MAX_HEADROOM + need - 1];
    tight[MAX_HEADROOM..MAX_HEADROOM + 100].copy_from_slice(&pkt);
    assert!(matches!(
        out.encap(&mut tight, MAX_HEADROOM..MAX_HEADROOM + 100),
        Err(EncapError::NoTailroom { .. })
    ));
    // Failed attempts did not consume sequence numbers.
    assert_eq!(out.last_seq(), 1);
}

#[test]
fn parse_outer_classifies_non_esp() {
    let suite = Suite::from_api_names("aes256gcm", None).unwrap();
    let (out, _) = pair(suite, false, false, true);
    let good = one(&out, false);
    // IKE: non-ESP marker.
    let mut ike = good.clone();
    ike[28..32].copy_from_slice(&[0, 0, 0, 0]);
    assert_eq!(parse_outer(&ike, 0..ike.len()), Err(DecapError::IkeMessage));
    // NAT keepalive: one 0xff byte.
    let mut ka = good[..29].to_vec();
    ka[28] = 0xff;
    ka[2..4].copy_from_slice(&29u16.to_be_bytes());
    ka[24..26].copy_from_slice(&9u16.to_be_bytes());
    assert_eq!(parse_outer(&ka, 0..ka.len()), Err(DecapError::NatKeepalive));
    // Another UDP port.
    let mut other = good.clone();
    other[22..24].copy_from_slice(&53u16.to_be_bytes());
    assert_eq!(
        parse_outer(&other, 0..other.len()),
        Err(DecapError::NotEspPort { port: 53 })
    );
    // A fragment.
    let mut frag = good.clone();
    frag[6] = 0x20;
    assert_eq!(
        parse_outer(&frag, 0..frag.len()),
        Err(DecapError::OuterFragment)
    );
    // Truncated outer length.
    assert_eq!(
        parse_outer(&good, 0..good.len() - 1),
        Err(DecapError::OuterTruncated)
    );
    // Trailing bytes after the IP packet (Ethernet padding) are ignored.
    let mut padded = good.clone();
    padded.extend_from_slice(&[0; 6]);
    assert_eq!(
        parse_outer(&padded, 0..padded.len()).unwrap().esp.end,
        good.len()
    );
}

#[test]
fn decap_refuses_wrong_spi_and_short_packets() {
    let suite = Suite::from_api_names("aes256gcm", None).unwrap();
    let (out, inb) = pair(suite, false, false, false);
    let mut p = one(&out, false);
    p[20..24].copy_from_slice(&1u32.to_be_bytes());
    let l = p.len();
    assert_eq!(
        inb.decap(&mut p, 0..l),
        Err(DecapError::SpiMismatch {
            expected: SPI,
            got: 1
        })
    );
    let mut short = vec![0u8; 30];
    short[..8].copy_from_slice(&SPI.to_be_bytes().repeat(2));
    assert_eq!(
        inb.decap_esp(&mut short, 0..30),
        Err(DecapError::EspTruncated { len: 30 })
    );
    let mut mis = vec![0u8; 8 + 8 + 6 + 16];
    assert_eq!(
        inb.decap_esp(&mut mis, 0..38),
        Err(DecapError::BadCiphertextLength { len: 6 })
    );
}

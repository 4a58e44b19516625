//! The seed corpus of the `pipeline` fuzz target (fuzz/corpus/pipeline):
//! each seed is a script for `testing::PipelineHarness` built here from
//! the frames of `dataplane::packet`, so that fuzzing starts from traffic
//! that reaches deep (decrypted packets to the LAN and to the TUN, both
//! outer and inner families, UDP encapsulation, TCP SYNs, spoofed inner
//! sources, replays, tampering, the slow path's ESP entry). This test
//! checks that the committed seeds are the ones built here and that each
//! reaches what it is for; `S2S_WRITE_SEEDS=1` writes them after a format
//! change.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use gateway_user::dataplane::packet::{
    self, ethernet, Ipv4, Ipv6, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP, IPPROTO_UDP,
};
use gateway_user::dataplane::testing::{
    record, PipelineHarness, Reached, ALT, BAD_META, BY_ROUTE, ELSEWHERE, LAN_RAW, LAN_UNRESOLVED,
    PEER_A, REPLAY, SLOW_SEALED, SPI_IN_A, TUNNEL_A, TUNNEL_B, UNKNOWN, WAN_RAW, WAN_SEALED,
    WAN_V4,
};
use gateway_user::dataplane::worker::WorkerDrop;

const A_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const B_HOST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const LAN_HOST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 130);
const A_HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 10);
const B_HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xb, 0, 0, 0, 0, 10);
const LAN_HOST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0x20);

fn udp4(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    Ipv4::new(src, dst, IPPROTO_UDP).build(&packet::udp(40000, 53, &[0x5a; 32]))
}

fn udp6(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    Ipv6::new(src, dst, IPPROTO_UDP).build(&packet::udp(40000, 53, &[0x5a; 32]))
}

/// A TCP SYN with an MSS option of 1460 (checksum left zero: the
/// pipeline does not verify it).
fn tcp_syn() -> Vec<u8> {
    let mut t = Vec::with_capacity(24);
    t.extend_from_slice(&40000u16.to_be_bytes());
    t.extend_from_slice(&443u16.to_be_bytes());
    t.extend_from_slice(&1u32.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[6 << 4, 0x02]);
    t.extend_from_slice(&65535u16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(&[2, 4]);
    t.extend_from_slice(&1460u16.to_be_bytes());
    t
}

fn lan4(ip: &[u8]) -> Vec<u8> {
    ethernet(ETH_P_IP, None, ip)
}

fn lan6(ip: &[u8]) -> Vec<u8> {
    ethernet(ETH_P_IPV6, None, ip)
}

fn ttl1(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut ip = Ipv4::new(src, dst, IPPROTO_UDP);
    ip.ttl = 1;
    ip.build(&packet::udp(40000, 53, &[0; 8]))
}

fn bad_ihl(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut ip = udp4(src, dst);
    ip[0] = 0x42;
    ip
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let esp_v4_udp = record(WAN_SEALED | TUNNEL_A, None, &udp4(A_HOST, LAN_HOST));
    let esp_v6 = record(WAN_SEALED | TUNNEL_B, None, &udp6(B_HOST6, LAN_HOST6));
    vec![
        // Tunnel A: UDP-encapsulated ESP over IPv4, inner IPv4 and IPv6.
        (
            "esp_udp_v4_inner_v4_v6",
            [
                esp_v4_udp.clone(),
                record(WAN_SEALED | TUNNEL_A, None, &udp6(A_HOST6, LAN_HOST6)),
            ]
            .concat(),
        ),
        // Tunnel B: plain ESP over IPv6 (CBC + HMAC, ESN), both families.
        (
            "esp_v6_inner_v6_v4",
            [
                esp_v6.clone(),
                record(WAN_SEALED | TUNNEL_B, None, &udp4(B_HOST, LAN_HOST)),
            ]
            .concat(),
        ),
        // Authentic packets from sources their tunnel may not use: outside
        // A's selectors, inside A's selectors but outside its filter, and
        // tunnel A's prefix arriving through tunnel B.
        (
            "spoofed_sources",
            [
                record(
                    WAN_SEALED | TUNNEL_A,
                    None,
                    &udp4(Ipv4Addr::new(203, 0, 113, 5), LAN_HOST),
                ),
                record(
                    WAN_SEALED | TUNNEL_A,
                    None,
                    &udp4(Ipv4Addr::new(198, 51, 100, 200), LAN_HOST),
                ),
                record(WAN_SEALED | TUNNEL_B, None, &udp6(A_HOST6, LAN_HOST6)),
            ]
            .concat(),
        ),
        // What the worker hands to the TUN: unresolved next hop, the
        // gateway's own address, TTL expiring here.
        (
            "to_tun",
            [
                record(WAN_SEALED | TUNNEL_A, None, &udp4(A_HOST, LAN_UNRESOLVED)),
                record(WAN_SEALED | TUNNEL_A, None, &udp4(A_HOST, ELSEWHERE)),
                record(WAN_SEALED | TUNNEL_B, None, &ttl1(B_HOST, LAN_HOST)),
            ]
            .concat(),
        ),
        // Replayed, tampered, 802.1Q-tagged, unknown SPI, bad metadata.
        (
            "replay_tamper_vlan",
            [
                esp_v4_udp.clone(),
                record(
                    WAN_SEALED | TUNNEL_A | REPLAY,
                    None,
                    &udp4(A_HOST, LAN_HOST),
                ),
                record(WAN_SEALED | TUNNEL_B, Some(70), &udp6(B_HOST6, LAN_HOST6)),
                record(WAN_SEALED | TUNNEL_A | ALT, None, &udp4(A_HOST, LAN_HOST)),
                record(WAN_SEALED | UNKNOWN, None, &udp4(A_HOST, LAN_HOST)),
                record(
                    WAN_SEALED | TUNNEL_A | BAD_META,
                    None,
                    &udp4(A_HOST, LAN_HOST),
                ),
            ]
            .concat(),
        ),
        // The slow path's ESP entry (ESP from the IKE socket).
        (
            "slow_path_esp",
            [
                record(SLOW_SEALED | TUNNEL_A, None, &udp4(A_HOST, LAN_HOST)),
                record(SLOW_SEALED | TUNNEL_B, None, &udp6(B_HOST6, LAN_HOST6)),
                record(
                    SLOW_SEALED | TUNNEL_B,
                    None,
                    &udp4(Ipv4Addr::new(203, 0, 113, 100), LAN_HOST),
                ),
            ]
            .concat(),
        ),
        // LAN frames routed into each tunnel, both families.
        (
            "lan_v4_v6",
            [
                record(LAN_RAW | BY_ROUTE, None, &lan4(&udp4(LAN_HOST, A_HOST))),
                record(LAN_RAW | BY_ROUTE, None, &lan6(&udp6(LAN_HOST6, B_HOST6))),
                record(LAN_RAW | TUNNEL_B, None, &lan4(&udp4(LAN_HOST, B_HOST))),
                record(LAN_RAW | TUNNEL_A, None, &lan6(&udp6(LAN_HOST6, A_HOST6))),
                record(LAN_RAW | UNKNOWN, None, &lan4(&udp4(LAN_HOST, A_HOST))),
                record(LAN_RAW | BY_ROUTE, None, &lan4(&ttl1(LAN_HOST, A_HOST))),
                // IHL 2: the peer would refuse it after decryption, so it
                // is not encrypted (found by this fuzz target).
                record(LAN_RAW | BY_ROUTE, None, &lan4(&bad_ihl(LAN_HOST, A_HOST))),
            ]
            .concat(),
        ),
        // TCP SYNs both ways (what MSS clamping rewrites).
        (
            "tcp_syn",
            [
                record(
                    LAN_RAW | BY_ROUTE,
                    None,
                    &lan4(&Ipv4::new(LAN_HOST, A_HOST, IPPROTO_TCP).build(&tcp_syn())),
                ),
                record(
                    LAN_RAW | BY_ROUTE,
                    None,
                    &lan6(&Ipv6::new(LAN_HOST6, B_HOST6, IPPROTO_TCP).build(&tcp_syn())),
                ),
                record(
                    WAN_SEALED | TUNNEL_A,
                    None,
                    &Ipv4::new(A_HOST, LAN_HOST, IPPROTO_TCP).build(&tcp_syn()),
                ),
                record(
                    WAN_SEALED | TUNNEL_B,
                    None,
                    &Ipv6::new(B_HOST6, LAN_HOST6, IPPROTO_TCP).build(&tcp_syn()),
                ),
            ]
            .concat(),
        ),
        // Raw WAN frames: ESP-looking traffic for our SPI that is not
        // authentic, plain ESP, and a frame without headroom.
        (
            "raw_wan",
            [
                record(
                    WAN_RAW,
                    None,
                    &packet::udp_esp_v4(PEER_A, WAN_V4, SPI_IN_A, 1),
                ),
                record(WAN_RAW, None, &packet::esp_v4(PEER_A, WAN_V4, SPI_IN_A, 2)),
                record(
                    WAN_RAW | ALT,
                    None,
                    &packet::udp_esp_v4(PEER_A, WAN_V4, SPI_IN_A, 3),
                ),
            ]
            .concat(),
        ),
    ]
}

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/pipeline")
}

#[test]
fn committed_seeds_are_current() {
    let write = std::env::var_os("S2S_WRITE_SEEDS").is_some();
    for (name, bytes) in seeds() {
        let path = corpus().join(name);
        if write {
            std::fs::create_dir_all(corpus()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (S2S_WRITE_SEEDS=1 writes it)", path.display()));
        assert_eq!(
            committed, bytes,
            "{name} differs from what this test builds"
        );
    }
}

fn run(name: &str) -> Reached {
    let (_, script) = seeds().into_iter().find(|(n, _)| *n == name).unwrap();
    let mut h = PipelineHarness::new();
    h.run(&script);
    h.reached()
}

#[test]
fn each_seed_reaches_what_it_is_for() {
    let r = run("esp_udp_v4_inner_v4_v6");
    assert_eq!((r.to_lan, r.to_tun, r.source_refused), (2, 0, 0), "{r:?}");

    let r = run("esp_v6_inner_v6_v4");
    assert_eq!((r.to_lan, r.to_tun, r.source_refused), (2, 0, 0), "{r:?}");

    let r = run("spoofed_sources");
    assert_eq!((r.to_lan, r.to_tun), (0, 0), "{r:?}");
    assert_eq!(r.source_refused, 3, "{r:?}");
    assert_eq!(r.dropped(WorkerDrop::Decap), 3, "{r:?}");

    let r = run("to_tun");
    assert_eq!((r.to_lan, r.to_tun), (0, 3), "{r:?}");

    let r = run("replay_tamper_vlan");
    // The first, the fresh one after the replay and the tagged one pass;
    // the replay, the tampered one and the unknown SPI fail to
    // decapsulate; the bad metadata never gets that far.
    assert_eq!(r.to_lan, 3, "{r:?}");
    assert_eq!(r.dropped(WorkerDrop::Decap), 3, "{r:?}");
    assert_eq!(r.dropped(WorkerDrop::BadMetadata), 1, "{r:?}");

    let r = run("slow_path_esp");
    // The third comes from outside tunnel B's filter.
    assert_eq!((r.slow_decap, r.source_refused), (2, 1), "{r:?}");

    let r = run("lan_v4_v6");
    assert_eq!(r.to_wan, 4, "{r:?}");
    assert_eq!(r.dropped(WorkerDrop::Encap), 2, "{r:?}");
    assert_eq!(r.dropped(WorkerDrop::TtlExpired), 1, "{r:?}");

    let r = run("tcp_syn");
    assert_eq!((r.to_wan, r.to_lan), (2, 2), "{r:?}");

    let r = run("raw_wan");
    assert_eq!(r.dropped(WorkerDrop::Decap), 3, "{r:?}");
    assert_eq!(r.unsealable, 0, "{r:?}");
}

/// A short deterministic pass of what the fuzzer does: mutated seeds.
#[test]
fn mutated_seeds_keep_the_invariants() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let seeds = seeds();
    for i in 0..300 {
        let (_, base) = &seeds[i % seeds.len()];
        let mut s = base.clone();
        for _ in 0..1 + rnd() % 4 {
            let pos = (rnd() as usize) % s.len();
            s[pos] ^= 1 << (rnd() % 8);
        }
        // The harness asserts the invariants itself.
        PipelineHarness::new().run(&s);
    }
}

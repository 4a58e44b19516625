//! Table-driven BPF_PROG_TEST_RUN tests of `wan_ingress` and `lan_ingress`:
//! each row is a description, an input frame, the expected XDP action and
//! the expected side effect (metadata + tunnel counters, or one drop
//! counter). XSKS stays empty, so a frame selected for the fast path comes
//! back as XDP_PASS with our metadata in front of it and is counted in
//! `TunnelStats::no_socket`; the real redirect into an AF_XDP socket is
//! covered by `xdp_netns.rs`. Packets too big for their tunnel come back
//! as XDP_TX with the ICMP error in place of the frame; those replies are
//! checked field by field (addresses, MACs, MTU, quote, checksums) by
//! `too_big_replies`, and their rate limit by `too_big_rate_limit`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use gateway_common::{
    Direction, DropReason, LanConfig, SaInValue, TunnelValue, FAMILY_V4, FAMILY_V6,
    ICMP4_QUOTE_LEN, ICMP6_QUOTE_LEN, LAN_HAS_V4, LAN_HAS_V6, LAN_REPLY_REDIRECT, SA_FLAG_ESN,
    SA_INDEX_NONE, TUNNEL_DOWN, TUNNEL_INNER_MTU, TUNNEL_UP,
};
use gateway_user::dataplane::{
    packet::*,
    test_run::{action, run_xdp, TestRun},
    xdp::XdpDataplane,
};

const LOCAL4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const PEER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const OTHER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);
const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const OTHER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);
const VPC4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const VPC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
/// The gateway's LAN addresses (sources of its ICMP errors).
const GW_LAN4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const GW_LAN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
/// The inner MTU set on the IPv6 tunnel (2); the IPv4 one keeps the default.
const V6_TUNNEL_MTU: u32 = 1420;

/// SPIs installed in SA_IN.
const SPI_V4: u32 = 0x1001;
const SPI_V6: u32 = 0x2002;
const SPI_ESN: u32 = 0x3003;
const SPI_UNKNOWN: u32 = 0xdead;
/// An SA of tunnel 6, whose TUNNELS slot is never set.
const SPI_NO_TUNNEL: u32 = 0x4004;
const RIGHT_EDGE: u64 = 1000;
const WINDOW: u32 = 64;

const WAN: &str = "wan_ingress";
const LAN: &str = "lan_ingress";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Passed, nothing counted, no metadata.
    Pass,
    /// Selected for the fast path: metadata, tunnel counters (no socket).
    Steer {
        tunnel_id: u32,
        sa_index: u32,
        direction: Direction,
    },
    /// Dropped with this reason counted once.
    Drop(DropReason),
}

struct Case {
    desc: String,
    prog: &'static str,
    frame: Vec<u8>,
    expect: Expect,
}

fn case(desc: impl Into<String>, prog: &'static str, frame: Vec<u8>, expect: Expect) -> Case {
    Case {
        desc: desc.into(),
        prog,
        frame,
        expect,
    }
}

fn steer_in(tunnel_id: u32, sa_index: u32) -> Expect {
    Expect::Steer {
        tunnel_id,
        sa_index,
        direction: Direction::Inbound,
    }
}

fn steer_out(tunnel_id: u32) -> Expect {
    Expect::Steer {
        tunnel_id,
        sa_index: SA_INDEX_NONE,
        direction: Direction::Outbound,
    }
}

fn load() -> XdpDataplane {
    XdpDataplane::load_unattached().unwrap_or_else(|e| {
        if let gateway_user::dataplane::xdp::XdpError::Verifier { log, .. } = &e {
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("{}", lines[lines.len().saturating_sub(60)..].join("\n"));
        }
        panic!("loading the XDP programs: {e}")
    })
}

fn v4_tunnel(state: u32) -> TunnelValue {
    let mut local = [0; 16];
    local[..4].copy_from_slice(&LOCAL4.octets());
    let mut remote = [0; 16];
    remote[..4].copy_from_slice(&PEER4.octets());
    TunnelValue {
        state,
        family: FAMILY_V4,
        local,
        remote,
        ..TunnelValue::default()
    }
}

fn v6_tunnel(state: u32) -> TunnelValue {
    TunnelValue {
        state,
        family: FAMILY_V6,
        local: LOCAL6.octets(),
        remote: PEER6.octets(),
        inner_mtu: V6_TUNNEL_MTU,
        ..TunnelValue::default()
    }
}

/// LAN addresses and an ICMP limit of `per_second` with bursts of `burst`.
fn lan_config(per_second: u64, burst: u64) -> LanConfig {
    let interval = 1_000_000_000 / per_second;
    LanConfig {
        flags: LAN_HAS_V4 | LAN_HAS_V6,
        addr_v4: GW_LAN4.octets(),
        addr_v6: GW_LAN6.octets(),
        icmp_interval_ns: interval,
        icmp_burst_ns: interval * burst,
    }
}

/// SA_IN / LOCAL_ADDRS / TUNNELS / ROUTES as the agent would set them.
fn program_maps(dp: &mut XdpDataplane) {
    dp.set_local_addrs(&[IpAddr::V4(LOCAL4), IpAddr::V6(LOCAL6)])
        .expect("LOCAL_ADDRS");
    let sa = |tunnel_id, sa_index, flags| SaInValue {
        tunnel_id,
        sa_index,
        replay_right_edge: RIGHT_EDGE,
        replay_window: WINDOW,
        flags,
    };
    dp.install_sa_in(SPI_V4, sa(1, 10, 0)).expect("SA_IN");
    dp.install_sa_in(SPI_V6, sa(2, 20, 0)).expect("SA_IN");
    dp.install_sa_in(SPI_NO_TUNNEL, sa(6, 60, 0))
        .expect("SA_IN");
    dp.install_sa_in(SPI_ESN, sa(3, 30, SA_FLAG_ESN))
        .expect("SA_IN");
    dp.set_tunnel(1, v4_tunnel(TUNNEL_UP)).expect("TUNNELS");
    dp.set_tunnel(2, v6_tunnel(TUNNEL_UP)).expect("TUNNELS");
    dp.set_tunnel(3, v4_tunnel(TUNNEL_DOWN)).expect("TUNNELS");
    dp.add_route_v4(Ipv4Addr::new(203, 0, 113, 0), 24, 1)
        .expect("ROUTES_V4");
    // More specific, into a tunnel that is down.
    dp.add_route_v4(Ipv4Addr::new(203, 0, 113, 128), 25, 3)
        .expect("ROUTES_V4");
    // Into a tunnel id whose TUNNELS slot was never set.
    dp.add_route_v4(Ipv4Addr::new(192, 0, 2, 128), 25, 5)
        .expect("ROUTES_V4");
    dp.add_route_v6(Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 0), 48, 2)
        .expect("ROUTES_V6");
    // Generous: the table's too-big rows never hit the limit.
    dp.set_lan_config(lan_config(1_000_000, 1_000_000))
        .expect("LAN_CONFIG");
}

fn stats_snapshot(dp: &XdpDataplane) -> Vec<[u64; 3]> {
    let mut v = Vec::new();
    for t in 0..8 {
        for d in [Direction::Inbound, Direction::Outbound] {
            let s = dp.tunnel_stats(t, d).expect("STATS");
            v.push([s.packets, s.bytes, s.no_socket]);
        }
    }
    v
}

fn drops_snapshot(dp: &XdpDataplane) -> Vec<u64> {
    dp.drops()
        .expect("DROPS")
        .into_iter()
        .map(|(_, n)| n)
        .collect()
}

fn run_cases(dp: &XdpDataplane, cases: &[Case]) {
    let mut failures = Vec::new();
    for c in cases {
        if let Err(msg) = run_case(dp, c) {
            failures.push(format!("{} [{}]: {msg}", c.desc, c.prog));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn run_case(dp: &XdpDataplane, c: &Case) -> Result<(), String> {
    let stats_before = stats_snapshot(dp);
    let drops_before = drops_snapshot(dp);
    let fd = dp.program_fd(c.prog).map_err(|e| e.to_string())?;
    let out = run_xdp(fd, &TestRun::new(&c.frame)).map_err(|e| e.to_string())?;
    let stats_after = stats_snapshot(dp);
    let drops_after = drops_snapshot(dp);
    let expected_action = match c.expect {
        Expect::Drop(_) => action::XDP_DROP,
        // No AF_XDP socket in XSKS: the fast path falls back to the kernel.
        Expect::Pass | Expect::Steer { .. } => action::XDP_PASS,
    };
    if out.action != expected_action {
        return Err(format!(
            "action {} (expected {}), drops {:?}",
            action::name(out.action),
            action::name(expected_action),
            diff(&drops_before, &drops_after)
        ));
    }
    if out.data != c.frame {
        return Err("the frame bytes were modified".into());
    }
    match c.expect {
        Expect::Pass => {
            if !out.meta.is_empty() {
                return Err(format!("unexpected metadata {:?}", out.meta));
            }
            if stats_after != stats_before || drops_after != drops_before {
                return Err("counters changed on a plain pass".into());
            }
        }
        Expect::Drop(reason) => {
            let mut expected = drops_before.clone();
            expected[reason as usize] += 1;
            if drops_after != expected {
                return Err(format!(
                    "drops changed by {:?}, expected +1 {}",
                    diff(&drops_before, &drops_after),
                    reason.name()
                ));
            }
            if stats_after != stats_before {
                return Err("tunnel counters changed on a drop".into());
            }
        }
        // Steered, found no socket: the 16 bytes of metadata put in front
        // of the frame came off again (the frame is unchanged, checked
        // above) and the frame counts for its tunnel and direction, as
        // passed for want of a socket. What a socket receives (metadata
        // included) is `xdp_netns.rs`'s to check.
        Expect::Steer {
            tunnel_id,
            sa_index: _,
            direction,
        } => {
            if !out.meta.is_empty() {
                return Err(format!("the XDP metadata area was used: {:?}", out.meta));
            }
            let mut expected = stats_before.clone();
            let slot = &mut expected[(tunnel_id * 2 + direction as u32) as usize];
            slot[0] += 1;
            slot[1] += c.frame.len() as u64;
            slot[2] += 1;
            if stats_after != expected {
                return Err(format!(
                    "tunnel counters {:?}, expected {:?}",
                    stats_after, expected
                ));
            }
            if drops_after != drops_before {
                return Err("drop counters changed on a steer".into());
            }
        }
    }
    Ok(())
}

fn diff(before: &[u64], after: &[u64]) -> Vec<(&'static str, u64)> {
    before
        .iter()
        .zip(after)
        .enumerate()
        .filter(|(_, (b, a))| a != b)
        .map(|(i, (b, a))| {
            let name = DropReason::from_u32(i as u32).map_or("?", |r| r.name());
            (name, a - b)
        })
        .collect()
}

fn v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    ethernet(ETH_P_IP, None, &Ipv4::new(src, dst, proto).build(payload))
}

fn v6(src: Ipv6Addr, dst: Ipv6Addr, nh: u8, payload: &[u8]) -> Vec<u8> {
    ethernet(ETH_P_IPV6, None, &Ipv6::new(src, dst, nh).build(payload))
}

fn esp_payload(spi: u32, seq: u32) -> Vec<u8> {
    esp(spi, seq, &esp_body(48))
}

/// Replaces bytes of a frame at `off`.
fn patch(mut f: Vec<u8>, off: usize, bytes: &[u8]) -> Vec<u8> {
    f[off..off + bytes.len()].copy_from_slice(bytes);
    f
}

fn wan_cases() -> Vec<Case> {
    let esp4 = |spi, seq| esp_v4(PEER4, LOCAL4, spi, seq);
    let left_edge = (RIGHT_EDGE - WINDOW as u64 + 1) as u32;
    let mut frag_mf = Ipv4::new(PEER4, LOCAL4, IPPROTO_ESP);
    frag_mf.flags_fragment = 0x2000;
    let mut frag_off = Ipv4::new(PEER4, LOCAL4, IPPROTO_ESP);
    frag_off.flags_fragment = 0x0010;
    let mut with_opts = Ipv4::new(PEER4, LOCAL4, IPPROTO_ESP);
    with_opts.options = vec![1, 1, 1, 1, 1, 1, 1, 0]; // NOPs + EOL
    let udp_esp = |spi, seq| udp(4500, 4500, &esp_payload(spi, seq));
    let hbh = |rest: &[u8], nh| ipv6_ext(nh, 0, rest);
    let vlan_v4 = ethernet(
        ETH_P_IP,
        Some(42),
        &Ipv4::new(PEER4, LOCAL4, IPPROTO_ESP).build(&esp_payload(SPI_V4, 1000)),
    );
    let vlan_v6 = ethernet(
        ETH_P_IPV6,
        Some(43),
        &Ipv6::new(PEER6, LOCAL6, IPPROTO_ESP).build(&esp_payload(SPI_V6, 1000)),
    );
    // 802.1ad-in-802.1Q: the inner EtherType is another tag, not IP.
    let qinq = ethernet(
        ETH_P_8021Q,
        Some(10),
        &[
            &[0x00, 0x14, 0x08, 0x00][..],
            &Ipv4::new(PEER4, LOCAL4, 50).build(&esp_payload(SPI_V4, 1000)),
        ]
        .concat(),
    );
    let five_ext = {
        // Five Destination Options headers; the innermost carries ESP.
        let mut chain = esp_payload(SPI_V6, 1000);
        for i in 0..5 {
            let nh = if i == 0 { IPPROTO_ESP } else { NEXTHDR_DEST };
            chain = ipv6_ext(nh, 0, &chain);
        }
        v6(PEER6, LOCAL6, NEXTHDR_DEST, &chain)
    };

    vec![
        // ESP over IPv4.
        case(
            "v4 ESP, known SPI, seq = right edge",
            WAN,
            esp4(SPI_V4, 1000),
            steer_in(1, 10),
        ),
        case(
            "v4 ESP, seq right of window",
            WAN,
            esp4(SPI_V4, 5000),
            steer_in(1, 10),
        ),
        case(
            "v4 ESP, seq at left edge of window",
            WAN,
            esp4(SPI_V4, left_edge),
            steer_in(1, 10),
        ),
        case(
            "v4 ESP, seq just left of window",
            WAN,
            esp4(SPI_V4, left_edge - 1),
            Expect::Drop(DropReason::ReplayLeftOfWindow),
        ),
        case(
            "v4 ESP, seq 1 (far left)",
            WAN,
            esp4(SPI_V4, 1),
            Expect::Drop(DropReason::ReplayLeftOfWindow),
        ),
        case(
            "v4 ESP, ESN SA, low seq is not provably left",
            WAN,
            esp4(SPI_ESN, 1),
            steer_in(3, 30),
        ),
        case(
            "v4 ESP, unknown SPI",
            WAN,
            esp4(SPI_UNKNOWN, 1),
            Expect::Drop(DropReason::UnknownSpi),
        ),
        case(
            "v4 ESP, not to a local address",
            WAN,
            esp_v4(PEER4, OTHER4, SPI_V4, 1000),
            Expect::Pass,
        ),
        case(
            "v4 ESP, unknown SPI, not to a local address",
            WAN,
            esp_v4(PEER4, OTHER4, SPI_UNKNOWN, 1),
            Expect::Pass,
        ),
        case(
            "v4 ESP with IP options",
            WAN,
            ethernet(ETH_P_IP, None, &with_opts.build(&esp_payload(SPI_V4, 1000))),
            steer_in(1, 10),
        ),
        case(
            "v4 ESP, minimal, padded to 60 bytes",
            WAN,
            pad_to_min(v4(PEER4, LOCAL4, IPPROTO_ESP, &esp(SPI_V4, 1000, &[]))),
            steer_in(1, 10),
        ),
        case(
            "v4 ESP header truncated (4 bytes)",
            WAN,
            v4(PEER4, LOCAL4, IPPROTO_ESP, &[0, 0, 0x10, 0x01]),
            Expect::Drop(DropReason::EspHeaderTruncated),
        ),
        case(
            "v4 ESP header truncated, padded frame",
            WAN,
            pad_to_min(v4(PEER4, LOCAL4, IPPROTO_ESP, &[0, 0, 0x10, 0x01])),
            Expect::Drop(DropReason::EspHeaderTruncated),
        ),
        case(
            "v4 ESP, SA of a tunnel without TUNNELS slot, to a local address",
            WAN,
            esp4(SPI_NO_TUNNEL, 1000),
            steer_in(6, 60),
        ),
        case(
            "v4 ESP, SA of a tunnel without TUNNELS slot, not to us",
            WAN,
            esp_v4(PEER4, OTHER4, SPI_NO_TUNNEL, 1000),
            Expect::Pass,
        ),
        case(
            "v4 ESP of the v4 tunnel's SA to our v6 address",
            WAN,
            esp_v6(PEER6, LOCAL6, SPI_V4, 1000),
            steer_in(1, 10),
        ),
        case(
            "v4 ESP header truncated, not to us",
            WAN,
            v4(PEER4, OTHER4, IPPROTO_ESP, &[0, 0, 0x10, 0x01]),
            Expect::Pass,
        ),
        case(
            "v4 UDP header truncated, not to us",
            WAN,
            v4(PEER4, OTHER4, IPPROTO_UDP, &[0x11, 0x94, 0x11, 0x94]),
            Expect::Pass,
        ),
        case(
            "v4 UDP 4500 bad length, not to us",
            WAN,
            patch(
                v4(PEER4, OTHER4, IPPROTO_UDP, &udp_esp(SPI_V4, 1000)),
                14 + 20 + 4,
                &[0x04, 0x00],
            ),
            Expect::Pass,
        ),
        // ESP over IPv6.
        case(
            "v6 ESP, known SPI",
            WAN,
            esp_v6(PEER6, LOCAL6, SPI_V6, 1000),
            steer_in(2, 20),
        ),
        case(
            "v6 ESP, unknown SPI",
            WAN,
            esp_v6(PEER6, LOCAL6, SPI_UNKNOWN, 1),
            Expect::Drop(DropReason::UnknownSpi),
        ),
        case(
            "v6 ESP, replay",
            WAN,
            esp_v6(PEER6, LOCAL6, SPI_V6, 3),
            Expect::Drop(DropReason::ReplayLeftOfWindow),
        ),
        case(
            "v6 ESP, not to a local address",
            WAN,
            esp_v6(PEER6, OTHER6, SPI_V6, 1000),
            Expect::Pass,
        ),
        // UDP encapsulation (RFC 3948) and IKE.
        case(
            "v4 UDP 4500 ESP",
            WAN,
            v4(PEER4, LOCAL4, IPPROTO_UDP, &udp_esp(SPI_V4, 1000)),
            steer_in(1, 10),
        ),
        case(
            "v4 UDP 4500 ESP, unknown SPI",
            WAN,
            v4(PEER4, LOCAL4, IPPROTO_UDP, &udp_esp(SPI_UNKNOWN, 1)),
            Expect::Drop(DropReason::UnknownSpi),
        ),
        case(
            "v4 UDP 4500 ESP, replay",
            WAN,
            v4(PEER4, LOCAL4, IPPROTO_UDP, &udp_esp(SPI_V4, 2)),
            Expect::Drop(DropReason::ReplayLeftOfWindow),
        ),
        case(
            "v4 UDP 4500 ESP, not to a local address",
            WAN,
            v4(PEER4, OTHER4, IPPROTO_UDP, &udp_esp(SPI_V4, 1000)),
            Expect::Pass,
        ),
        case(
            "v4 UDP 4500 IKE (zero non-ESP marker)",
            WAN,
            udp_v4(PEER4, LOCAL4, 4500, 4500, &ike_on_4500()),
            Expect::Pass,
        ),
        case(
            "v4 UDP 4500 NAT-keepalive (one byte 0xff)",
            WAN,
            udp_v4(PEER4, LOCAL4, 4500, 4500, &[0xff]),
            Expect::Pass,
        ),
        case(
            "v4 UDP 4500, 3-byte payload",
            WAN,
            udp_v4(PEER4, LOCAL4, 4500, 4500, &[1, 2, 3]),
            Expect::Pass,
        ),
        case(
            "v4 UDP 4500, non-zero marker but only 6 bytes",
            WAN,
            udp_v4(PEER4, LOCAL4, 4500, 4500, &[0, 0, 0x10, 1, 0, 0]),
            Expect::Drop(DropReason::EspHeaderTruncated),
        ),
        case(
            "v4 UDP 500 IKE",
            WAN,
            udp_v4(PEER4, LOCAL4, 500, 500, &[0x11; 28]),
            Expect::Pass,
        ),
        case(
            "v4 UDP 500 carrying ESP-looking bytes",
            WAN,
            udp_v4(PEER4, LOCAL4, 500, 500, &esp_payload(SPI_V4, 1000)),
            Expect::Pass,
        ),
        case(
            "v4 UDP to another port",
            WAN,
            udp_v4(PEER4, LOCAL4, 1234, 53, &esp_payload(SPI_V4, 1000)),
            Expect::Pass,
        ),
        case(
            "v4 UDP 4500, UDP length beyond IP payload",
            WAN,
            patch(
                v4(PEER4, LOCAL4, IPPROTO_UDP, &udp_esp(SPI_V4, 1000)),
                14 + 20 + 4,
                &[0x04, 0x00],
            ),
            Expect::Drop(DropReason::UdpBadLength),
        ),
        case(
            "v4 UDP 4500, UDP length below 8",
            WAN,
            patch(
                v4(PEER4, LOCAL4, IPPROTO_UDP, &udp_esp(SPI_V4, 1000)),
                14 + 20 + 4,
                &[0, 7],
            ),
            Expect::Drop(DropReason::UdpBadLength),
        ),
        case(
            "v4 UDP header truncated (IP payload 4 bytes)",
            WAN,
            v4(PEER4, LOCAL4, IPPROTO_UDP, &[0x11, 0x94, 0x11, 0x94]),
            Expect::Drop(DropReason::UdpHeaderTruncated),
        ),
        case(
            "v6 UDP 4500 ESP",
            WAN,
            udp_v6(PEER6, LOCAL6, 4500, 4500, &esp_payload(SPI_V6, 1000)),
            steer_in(2, 20),
        ),
        case(
            "v6 UDP 4500 IKE",
            WAN,
            udp_v6(PEER6, LOCAL6, 4500, 4500, &ike_on_4500()),
            Expect::Pass,
        ),
        case(
            "v6 UDP 500 IKE",
            WAN,
            udp_v6(PEER6, LOCAL6, 500, 500, &[0x11; 28]),
            Expect::Pass,
        ),
        case(
            "v4 TCP to a local address",
            WAN,
            v4(PEER4, LOCAL4, IPPROTO_TCP, &[0; 20]),
            Expect::Pass,
        ),
        // Layer 2.
        case("VLAN-tagged v4 ESP", WAN, vlan_v4, steer_in(1, 10)),
        case("VLAN-tagged v6 ESP", WAN, vlan_v6, steer_in(2, 20)),
        case("two VLAN tags (not parsed)", WAN, qinq, Expect::Pass),
        case(
            "ARP request",
            WAN,
            ethernet(ETH_P_ARP, None, &arp_request(PEER4, LOCAL4)),
            Expect::Pass,
        ),
        case(
            "VLAN-tagged ARP",
            WAN,
            ethernet(ETH_P_ARP, Some(7), &arp_request(PEER4, LOCAL4)),
            Expect::Pass,
        ),
        case(
            "bare Ethernet header",
            WAN,
            ethernet(ETH_P_IP, None, &[]),
            Expect::Drop(DropReason::Ipv4HeaderTruncated),
        ),
        case(
            "VLAN tag cut short",
            WAN,
            ethernet(ETH_P_8021Q, None, &[0x00, 0x2a]),
            Expect::Pass,
        ),
        // Fragments.
        case(
            "v4 fragment with MF (ESP first fragment)",
            WAN,
            ethernet(ETH_P_IP, None, &frag_mf.build(&esp_payload(SPI_V4, 1000))),
            Expect::Pass,
        ),
        case(
            "v4 fragment with offset, unknown SPI bytes",
            WAN,
            ethernet(
                ETH_P_IP,
                None,
                &frag_off.build(&esp_payload(SPI_UNKNOWN, 1)),
            ),
            Expect::Pass,
        ),
        case(
            "v6 Fragment header",
            WAN,
            v6(
                PEER6,
                LOCAL6,
                NEXTHDR_FRAGMENT,
                &ipv6_fragment(IPPROTO_ESP, 0, true, &esp_payload(SPI_V6, 1000)),
            ),
            Expect::Pass,
        ),
        // IPv6 extension headers.
        case(
            "v6 Hop-by-Hop then ESP",
            WAN,
            v6(
                PEER6,
                LOCAL6,
                NEXTHDR_HOP,
                &hbh(&esp_payload(SPI_V6, 1000), IPPROTO_ESP),
            ),
            steer_in(2, 20),
        ),
        case(
            "v6 HbH + 2 x DestOpts (24 bytes) then UDP 4500 ESP",
            WAN,
            v6(
                PEER6,
                LOCAL6,
                NEXTHDR_HOP,
                &hbh(
                    &ipv6_ext(
                        NEXTHDR_DEST,
                        0,
                        &ipv6_ext(IPPROTO_UDP, 2, &udp(4500, 4500, &esp_payload(SPI_V6, 1000))),
                    ),
                    NEXTHDR_DEST,
                ),
            ),
            steer_in(2, 20),
        ),
        case(
            "v6 Hop-by-Hop then unknown SPI",
            WAN,
            v6(
                PEER6,
                LOCAL6,
                NEXTHDR_HOP,
                &hbh(&esp_payload(SPI_UNKNOWN, 1), IPPROTO_ESP),
            ),
            Expect::Drop(DropReason::UnknownSpi),
        ),
        case(
            "v6 five extension headers (walk limit 4)",
            WAN,
            five_ext,
            Expect::Pass,
        ),
        case(
            "v6 Routing header",
            WAN,
            v6(
                PEER6,
                LOCAL6,
                NEXTHDR_ROUTING,
                &ipv6_ext(IPPROTO_ESP, 0, &esp_payload(SPI_V6, 1000)),
            ),
            Expect::Pass,
        ),
        case(
            "v6 extension header longer than the payload",
            WAN,
            v6(
                PEER6,
                LOCAL6,
                NEXTHDR_HOP,
                &patch(hbh(&esp_payload(SPI_V6, 1000), IPPROTO_ESP), 1, &[20]),
            ),
            Expect::Drop(DropReason::Ipv6ExtHeaderTruncated),
        ),
        case(
            "v6 extension header cut (payload 4 bytes)",
            WAN,
            v6(PEER6, LOCAL6, NEXTHDR_DEST, &[IPPROTO_ESP, 0, 1, 0]),
            Expect::Drop(DropReason::Ipv6ExtHeaderTruncated),
        ),
        // Malformed IP headers.
        case(
            "v4 IHL 4",
            WAN,
            patch(esp4(SPI_V4, 1000), 14, &[0x44]),
            Expect::Drop(DropReason::Ipv4BadIhl),
        ),
        case(
            "v4 IHL 0",
            WAN,
            patch(esp4(SPI_V4, 1000), 14, &[0x40]),
            Expect::Drop(DropReason::Ipv4BadIhl),
        ),
        case(
            "v4 IHL 15 beyond the total length",
            WAN,
            patch(v4(PEER4, LOCAL4, IPPROTO_ESP, &[0; 8]), 14, &[0x4f]),
            Expect::Drop(DropReason::Ipv4BadTotalLength),
        ),
        case(
            "v4 version 6 under EtherType IPv4",
            WAN,
            patch(esp4(SPI_V4, 1000), 14, &[0x65]),
            Expect::Drop(DropReason::Ipv4BadVersion),
        ),
        case(
            "v4 total length beyond the frame",
            WAN,
            patch(esp4(SPI_V4, 1000), 16, &[0x05, 0xdc]),
            Expect::Drop(DropReason::Ipv4BadTotalLength),
        ),
        case(
            "v4 total length below the header",
            WAN,
            patch(esp4(SPI_V4, 1000), 16, &[0, 19]),
            Expect::Drop(DropReason::Ipv4BadTotalLength),
        ),
        case(
            "v6 payload length beyond the frame",
            WAN,
            patch(esp_v6(PEER6, LOCAL6, SPI_V6, 1000), 18, &[0x05, 0xdc]),
            Expect::Drop(DropReason::Ipv6BadPayloadLength),
        ),
        case(
            "v6 version 4 under EtherType IPv6",
            WAN,
            patch(esp_v6(PEER6, LOCAL6, SPI_V6, 1000), 14, &[0x40]),
            Expect::Drop(DropReason::Ipv6BadVersion),
        ),
    ]
}

fn lan_cases() -> Vec<Case> {
    let to4 = |dst: Ipv4Addr, ttl: u8| {
        let mut ip = Ipv4::new(VPC4, dst, IPPROTO_UDP);
        ip.ttl = ttl;
        ethernet(ETH_P_IP, None, &ip.build(&udp(1000, 2000, &[7; 32])))
    };
    let to6 = |dst: Ipv6Addr, hop: u8, vlan| {
        let mut ip = Ipv6::new(VPC6, dst, IPPROTO_UDP);
        ip.hop_limit = hop;
        ethernet(ETH_P_IPV6, vlan, &ip.build(&udp(1000, 2000, &[7; 32])))
    };
    let remote6 = Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 0x10);
    let mut frag = Ipv4::new(VPC4, Ipv4Addr::new(203, 0, 113, 10), IPPROTO_UDP);
    frag.flags_fragment = 0x2000;
    vec![
        case(
            "v4 route hit, tunnel up",
            LAN,
            to4(Ipv4Addr::new(203, 0, 113, 10), 64),
            steer_out(1),
        ),
        case(
            "v4 route hit, TTL 2",
            LAN,
            to4(Ipv4Addr::new(203, 0, 113, 10), 2),
            steer_out(1),
        ),
        case(
            "v4 route hit, TTL 1",
            LAN,
            to4(Ipv4Addr::new(203, 0, 113, 10), 1),
            Expect::Pass,
        ),
        case(
            "v4 route hit, TTL 0",
            LAN,
            to4(Ipv4Addr::new(203, 0, 113, 10), 0),
            Expect::Pass,
        ),
        case(
            "v4 longest prefix wins: /25 into a tunnel that is down",
            LAN,
            to4(Ipv4Addr::new(203, 0, 113, 200), 64),
            Expect::Pass,
        ),
        case(
            "v4 route into a tunnel never set",
            LAN,
            to4(Ipv4Addr::new(192, 0, 2, 200), 64),
            Expect::Pass,
        ),
        case(
            "v4 route miss",
            LAN,
            to4(Ipv4Addr::new(198, 51, 100, 20), 64),
            Expect::Pass,
        ),
        case(
            "v4 fragment to a routed destination (tunnels carry fragments)",
            LAN,
            ethernet(ETH_P_IP, None, &frag.build(&[0; 16])),
            steer_out(1),
        ),
        case(
            "VLAN-tagged v4 route hit",
            LAN,
            ethernet(
                ETH_P_IP,
                Some(5),
                &Ipv4::new(VPC4, Ipv4Addr::new(203, 0, 113, 77), IPPROTO_TCP).build(&[0; 20]),
            ),
            steer_out(1),
        ),
        case("v6 route hit", LAN, to6(remote6, 64, None), steer_out(2)),
        case(
            "VLAN-tagged v6 route hit",
            LAN,
            to6(remote6, 64, Some(9)),
            steer_out(2),
        ),
        case("v6 hop limit 1", LAN, to6(remote6, 1, None), Expect::Pass),
        case(
            "v6 route miss",
            LAN,
            to6(Ipv6Addr::new(0x2001, 0xdb8, 0x300, 0, 0, 0, 0, 1), 64, None),
            Expect::Pass,
        ),
        case(
            "ARP",
            LAN,
            ethernet(
                ETH_P_ARP,
                None,
                &arp_request(VPC4, Ipv4Addr::new(198, 51, 100, 1)),
            ),
            Expect::Pass,
        ),
        case(
            "v4 IHL 3",
            LAN,
            patch(to4(Ipv4Addr::new(203, 0, 113, 10), 64), 14, &[0x43]),
            Expect::Drop(DropReason::Ipv4BadIhl),
        ),
        case(
            "v4 total length beyond the frame",
            LAN,
            patch(to4(Ipv4Addr::new(203, 0, 113, 10), 64), 16, &[0x10, 0]),
            Expect::Drop(DropReason::Ipv4BadTotalLength),
        ),
        case(
            "v6 payload length beyond the frame",
            LAN,
            patch(to6(remote6, 64, None), 18, &[0x10, 0]),
            Expect::Drop(DropReason::Ipv6BadPayloadLength),
        ),
        case(
            "v6 truncated header",
            LAN,
            ethernet(ETH_P_IPV6, None, &[0x60, 0, 0, 0, 0, 8, 17, 64]),
            Expect::Drop(DropReason::Ipv6HeaderTruncated),
        ),
        case(
            "v4 at the tunnel's inner MTU",
            LAN,
            big4(VPC4, TUNNEL_INNER_MTU, true, None),
            steer_out(1),
        ),
        case(
            "v4 one byte over, no DF: the kernel fragments",
            LAN,
            big4(VPC4, TUNNEL_INNER_MTU + 1, false, None),
            Expect::Pass,
        ),
        case(
            "v4 over, DF, VLAN-tagged: the kernel answers",
            LAN,
            big4(VPC4, 1500, true, Some(3)),
            Expect::Pass,
        ),
        case(
            "v4 over, DF, into a tunnel that is down: the kernel answers",
            LAN,
            ethernet(
                ETH_P_IP,
                None,
                &Ipv4::new(VPC4, Ipv4Addr::new(203, 0, 113, 200), IPPROTO_UDP)
                    .build(&udp(1, 2, &[0; 1472])),
            ),
            Expect::Pass,
        ),
        case(
            "v4 over, DF, from a multicast source: no error",
            LAN,
            big4(Ipv4Addr::new(224, 0, 0, 5), 1500, true, None),
            Expect::Drop(DropReason::PacketTooBigNoReply),
        ),
        case(
            "v4 over, DF, an ICMP error itself: no error",
            LAN,
            ethernet(
                ETH_P_IP,
                None,
                &Ipv4::new(VPC4, Ipv4Addr::new(203, 0, 113, 10), 1).build(&{
                    let mut b = vec![0u8; 1480];
                    b[0] = 11;
                    b
                }),
            ),
            Expect::Drop(DropReason::PacketTooBigNoReply),
        ),
        case(
            "v6 at the tunnel's own inner MTU (not the default)",
            LAN,
            big6(VPC6, V6_TUNNEL_MTU as usize),
            steer_out(2),
        ),
        case(
            "v6 from the unspecified address, too big: no error",
            LAN,
            big6(Ipv6Addr::UNSPECIFIED, 1500),
            Expect::Drop(DropReason::PacketTooBigNoReply),
        ),
    ]
}

/// An IPv4 UDP packet of `len` bytes from `src` to the far site.
fn big4(src: Ipv4Addr, len: usize, df: bool, vlan: Option<u16>) -> Vec<u8> {
    let mut ip = Ipv4::new(src, Ipv4Addr::new(203, 0, 113, 10), IPPROTO_UDP);
    ip.flags_fragment = if df { 0x4000 } else { 0 };
    let body: Vec<u8> = (0..len - 28).map(|i| i as u8).collect();
    ethernet(ETH_P_IP, vlan, &ip.build(&udp(40000, 5201, &body)))
}

/// An IPv6 UDP packet of `len` bytes from `src` to the far site.
fn big6(src: Ipv6Addr, len: usize) -> Vec<u8> {
    let ip = Ipv6::new(
        src,
        Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 0x10),
        IPPROTO_UDP,
    );
    let body: Vec<u8> = (0..len - 48).map(|i| (i * 7) as u8).collect();
    ethernet(ETH_P_IPV6, None, &ip.build(&udp(40000, 5201, &body)))
}

/// The one's complement sum check: a correct checksum sums to 0xffff.
fn sums_to_ffff(words: &[u8], pseudo: u32) -> bool {
    let mut s = pseudo;
    for c in words.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s == 0xffff
}

/// Checks an XDP_TX reply to `orig` (an Ethernet frame) as the ICMP error
/// a router would send; returns a description of the first mismatch.
fn check_icmp_reply(orig: &[u8], out: &[u8], mtu: usize) -> Result<(), String> {
    if out.get(0..6) != Some(&orig[6..12]) || out.get(6..12) != Some(&orig[0..6]) {
        return Err("MACs not swapped".into());
    }
    let ip = &out[14..];
    let o = &orig[14..];
    match o[0] >> 4 {
        4 => {
            if out.len() != 14 + 576 || out[12..14] != [0x08, 0x00] {
                return Err(format!("v4 error of {} bytes", out.len()));
            }
            if !sums_to_ffff(&ip[..20], 0) {
                return Err("IPv4 header checksum".into());
            }
            if ip[0] != 0x45 || u16::from_be_bytes([ip[2], ip[3]]) != 576 || ip[9] != 1 {
                return Err(format!("IPv4 header {:?}", &ip[..20]));
            }
            if ip[12..16] != GW_LAN4.octets() || ip[16..20] != o[12..16] {
                return Err("IPv4 addresses".into());
            }
            let icmp = &ip[20..];
            if !sums_to_ffff(icmp, 0) {
                return Err("ICMP checksum".into());
            }
            if (icmp[0], icmp[1]) != (3, 4)
                || u16::from_be_bytes([icmp[6], icmp[7]]) as usize != mtu
            {
                return Err(format!("ICMP header {:?}", &icmp[..8]));
            }
            if icmp[8..] != o[..ICMP4_QUOTE_LEN] {
                return Err("quote is not the first 548 bytes of the packet".into());
            }
        }
        6 => {
            if out.len() != 14 + 1280 || out[12..14] != [0x86, 0xdd] {
                return Err(format!("v6 error of {} bytes", out.len()));
            }
            let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
            if ip[0] >> 4 != 6 || plen != 1240 || ip[6] != 58 {
                return Err(format!("IPv6 header {:?}", &ip[..8]));
            }
            if ip[8..24] != GW_LAN6.octets() || ip[24..40] != o[8..24] {
                return Err("IPv6 addresses".into());
            }
            let mut pseudo = 0u32;
            for c in ip[8..40].chunks(2) {
                pseudo += u32::from(u16::from_be_bytes([c[0], c[1]]));
            }
            pseudo += plen as u32 + 58;
            let icmp = &ip[40..];
            if !sums_to_ffff(icmp, pseudo) {
                return Err("ICMPv6 checksum".into());
            }
            let m = u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]) as usize;
            if (icmp[0], icmp[1]) != (2, 0) || m != mtu {
                return Err(format!("ICMPv6 header {:?}", &icmp[..8]));
            }
            if icmp[8..] != o[..ICMP6_QUOTE_LEN] {
                return Err("quote is not the first 1232 bytes of the packet".into());
            }
        }
        _ => return Err("not IP".into()),
    }
    Ok(())
}

/// Packets too big for their tunnel are answered in place with XDP_TX:
/// every size past the MTU, both families, counted as PacketTooBig.
#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn too_big_replies() {
    too_big_replies_leave_with(0, action::XDP_TX);
}

/// With LAN_REPLY_REDIRECT (a veth LAN) the same replies leave by a
/// redirect to the interface they came in on.
#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn too_big_replies_redirected() {
    too_big_replies_leave_with(LAN_REPLY_REDIRECT, action::XDP_REDIRECT);
}

fn too_big_replies_leave_with(extra_flags: u32, want: u32) {
    let mut dp = load();
    program_maps(&mut dp);
    let mut cfg = lan_config(1_000_000, 1_000_000);
    cfg.flags |= extra_flags;
    dp.set_lan_config(cfg).unwrap();
    let fd = dp.program_fd(LAN).unwrap();
    let mut failures = Vec::new();
    let mut answered = 0u64;
    let rows: Vec<(String, Vec<u8>, usize)> = [TUNNEL_INNER_MTU + 1, 1400, 1499, 1500, 3000]
        .iter()
        .map(|&n| {
            (
                format!("v4 {n} bytes, DF"),
                big4(VPC4, n, true, None),
                TUNNEL_INNER_MTU,
            )
        })
        .chain(
            [V6_TUNNEL_MTU as usize + 1, 1500, 1501, 3000]
                .iter()
                .map(|&n| {
                    (
                        format!("v6 {n} bytes"),
                        big6(VPC6, n),
                        V6_TUNNEL_MTU as usize,
                    )
                }),
        )
        .collect();
    for (desc, frame, mtu) in &rows {
        let before = dp.drop_count(DropReason::PacketTooBig).unwrap();
        let out = run_xdp(fd, &TestRun::new(frame)).unwrap();
        if out.action != want {
            failures.push(format!("{desc}: {}", action::name(out.action)));
            continue;
        }
        if let Err(e) = check_icmp_reply(frame, &out.data, *mtu) {
            failures.push(format!("{desc}: {e}"));
        }
        if dp.drop_count(DropReason::PacketTooBig).unwrap() != before + 1 {
            failures.push(format!("{desc}: not counted"));
        }
        answered += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(answered, rows.len() as u64);
}

/// One source gets its burst of errors, then is dropped (counted) until the
/// bucket refills; another source is answered meanwhile.
#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn too_big_rate_limit() {
    let mut dp = load();
    program_maps(&mut dp);
    // One error a minute per source, bursts of 3: nothing refills during
    // the test, whatever the machine's speed.
    dp.set_lan_config(LanConfig {
        icmp_interval_ns: 60_000_000_000,
        icmp_burst_ns: 180_000_000_000,
        ..lan_config(1, 1)
    })
    .unwrap();
    let fd = dp.program_fd(LAN).unwrap();
    let a = big4(VPC4, 1500, true, None);
    let b = big4(Ipv4Addr::new(198, 51, 100, 11), 1500, true, None);
    let run = |f: &[u8]| run_xdp(fd, &TestRun::new(f)).map(|o| o.action).unwrap();
    let limited = |dp: &XdpDataplane| dp.drop_count(DropReason::PacketTooBigRateLimited).unwrap();
    // A single CPU runs them all (BPF_PROG_TEST_RUN runs on the caller's
    // CPU, and the bucket is per CPU): pin this thread.
    // SAFETY: plain syscall on the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
    let l0 = limited(&dp);
    for i in 0..3 {
        assert_eq!(run(&a), action::XDP_TX, "error {i} of the burst");
    }
    for i in 0..5 {
        assert_eq!(run(&a), action::XDP_DROP, "over the limit, packet {i}");
    }
    assert_eq!(limited(&dp), l0 + 5);
    assert_eq!(run(&b), action::XDP_TX, "another source has its own bucket");
    // IPv6 sources have buckets of their own too.
    assert_eq!(run(&big6(VPC6, 1500)), action::XDP_TX);
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn wan_ingress_table() {
    let mut dp = load();
    program_maps(&mut dp);
    run_cases(&dp, &wan_cases());
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn lan_ingress_table() {
    let mut dp = load();
    program_maps(&mut dp);
    run_cases(&dp, &lan_cases());
}

/// Every prefix of well-formed frames, cut at each byte from the end of the
/// Ethernet header on: the IP length fields then promise more than the
/// frame holds, which the rule turns into a counted drop (or a pass while
/// the frame is not yet recognisable as IP).
#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn truncated_at_every_byte() {
    let mut dp = load();
    program_maps(&mut dp);
    let frames: Vec<(&str, &'static str, Vec<u8>, usize, bool)> = vec![
        // (name, program, frame, L3 offset, is IPv6)
        (
            "v4 ESP",
            WAN,
            esp_v4(PEER4, LOCAL4, SPI_V4, 1000),
            14,
            false,
        ),
        (
            "v4 UDP-ESP",
            WAN,
            v4(
                PEER4,
                LOCAL4,
                IPPROTO_UDP,
                &udp(4500, 4500, &esp_payload(SPI_V4, 1000)),
            ),
            14,
            false,
        ),
        (
            "VLAN v4 ESP",
            WAN,
            ethernet(
                ETH_P_IP,
                Some(3),
                &Ipv4::new(PEER4, LOCAL4, IPPROTO_ESP).build(&esp_payload(SPI_V4, 1000)),
            ),
            18,
            false,
        ),
        (
            "v6 HbH ESP",
            WAN,
            v6(
                PEER6,
                LOCAL6,
                NEXTHDR_HOP,
                &ipv6_ext(IPPROTO_ESP, 0, &esp_payload(SPI_V6, 1000)),
            ),
            14,
            true,
        ),
        (
            "VLAN v6 UDP-ESP",
            WAN,
            ethernet(
                ETH_P_IPV6,
                Some(3),
                &Ipv6::new(PEER6, LOCAL6, IPPROTO_UDP).build(&udp(
                    4500,
                    4500,
                    &esp_payload(SPI_V6, 1000),
                )),
            ),
            18,
            true,
        ),
        (
            "v4 LAN",
            LAN,
            v4(
                VPC4,
                Ipv4Addr::new(203, 0, 113, 10),
                IPPROTO_UDP,
                &udp(1, 2, &[0; 8]),
            ),
            14,
            false,
        ),
        (
            "v6 LAN",
            LAN,
            v6(
                VPC6,
                Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 1),
                IPPROTO_UDP,
                &udp(1, 2, &[0; 8]),
            ),
            14,
            true,
        ),
    ];
    let mut cases = Vec::new();
    for (name, prog, frame, l3, is_v6) in frames {
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.
        for cut in 14..frame.len() {
            let expect = if cut < l3 {
                // The VLAN tag itself is cut: not recognisable as IP.
                Expect::Pass
            } else if is_v6 {
                if cut < l3 + 40 {
                    Expect::Drop(DropReason::Ipv6HeaderTruncated)
                } else {
                    Expect::Drop(DropReason::Ipv6BadPayloadLength)
                }
            } else if cut < l3 + 20 {
                Expect::Drop(DropReason::Ipv4HeaderTruncated)
            } else {
                Expect::Drop(DropReason::Ipv4BadTotalLength)
            };
            cases.push(case(
                format!("{name} cut at {cut}"),
                prog,
                frame[..cut].to_vec(),
                expect,
            ));
        }
    }
    run_cases(&dp, &cases);
}

/// Hostile input: 20,000 frames of random bytes behind a valid-looking
/// Ethernet + IP start never make a program abort, and every drop is counted.
#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn random_frames_never_abort() {
    let mut dp = load();
    program_maps(&mut dp);
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut drops = 0u64;
    for i in 0..20_000u32 {
        let len = 14 + (next() % 200) as usize;
        let mut f: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Bias towards the interesting paths: IP EtherTypes, our address,
        // ESP/UDP 4500, known SPIs.
        let v6 = i % 2 == 0;
        f[12..14].copy_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
        if i % 3 != 0 && len > 60 {
            if v6 {
                f[14] = 0x60;
                f[20] = if i % 4 == 0 { IPPROTO_ESP } else { IPPROTO_UDP };
                f[38..54].copy_from_slice(&LOCAL6.octets());
            } else {
                f[14] = 0x45;
                f[23] = if i % 4 == 0 { IPPROTO_ESP } else { IPPROTO_UDP };
                f[30..34].copy_from_slice(&LOCAL4.octets());
                f[20] = 0;
                f[21] = 0;
            }
        }
        for prog in [WAN, LAN] {
            let out = run_xdp(dp.program_fd(prog).expect("fd"), &TestRun::new(&f))
                .expect("BPF_PROG_TEST_RUN");
            assert!(
                out.action == action::XDP_PASS || out.action == action::XDP_DROP,
                "{prog}: action {} on frame {f:02x?}",
                action::name(out.action)
            );
            drops += (out.action == action::XDP_DROP) as u64;
        }
    }
    let counted: u64 = dp.drops().expect("DROPS").iter().map(|(_, n)| n).sum();
    assert_eq!(counted, drops, "every XDP_DROP is counted exactly once");
    assert!(drops > 0, "the random frames should hit some drop paths");
}

/// The LAN LPM lookup with 1,000,000 routes installed.
#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn lan_route_table_of_one_million() {
    let mut dp = load();
    program_maps(&mut dp);
    // Host routes spread over 10.0.0.0/8 (map data only, nothing is sent),
    // alternating between tunnels 1 and 2 so a lookup proves it hit the
    // right entry; plus the /24 and /25 of program_maps.
    let n = 1_000_000u32;
    let inserted = dp
        .add_routes_v4((0..n).map(|i| {
            let a = 0x0a00_0000 + i * 13 % (1 << 24);
            (Ipv4Addr::from(a), 32, 1 + (a & 1))
        }))
        .expect("inserting 1,000,000 routes");
    assert_eq!(inserted, n as usize);
    let to = |dst: Ipv4Addr| {
        ethernet(
            ETH_P_IP,
            None,
            &Ipv4::new(VPC4, dst, IPPROTO_UDP).build(&udp(1, 2, &[0; 16])),
        )
    };
    let probe = |i: u32| Ipv4Addr::from(0x0a00_0000 + i * 13 % (1 << 24));
    let mut cases = vec![
        case(
            "203.0.113.10 (the /24) among 1M routes",
            LAN,
            to(Ipv4Addr::new(203, 0, 113, 10)),
            steer_out(1),
        ),
        case(
            "203.0.113.200 (the /25, tunnel down) among 1M routes",
            LAN,
            to(Ipv4Addr::new(203, 0, 113, 200)),
            Expect::Pass,
        ),
        case(
            "miss among 1M routes",
            LAN,
            to(Ipv4Addr::new(198, 51, 100, 77)),
            Expect::Pass,
        ),
    ];
    for i in [0, 1, 12_345, 499_999, 999_999] {
        let a = probe(i);
        let t = 1 + (u32::from(a) & 1);
        cases.push(case(
            format!("host route #{i} {a}"),
            LAN,
            to(a),
            steer_out(t),
        ));
    }
    // 10.0.0.0/8 addresses that are not among the host routes.
    cases.push(case(
        "10.255.255.255 not installed",
        LAN,
        to(Ipv4Addr::new(10, 255, 255, 255)),
        Expect::Pass,
    ));
    run_cases(&dp, &cases);
}

/// The IPv4 table under changes: random prefixes of /8 to /32 around a few
/// /24s (so that both levels and their interplay are exercised) added and
/// removed; after each burst `lan_ingress` steers every probe to the
/// tunnel the writer's own lookup names (the writer is checked against a
/// reference longest-prefix match in its unit tests), and a removed
/// route's addresses fall back or pass.
#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn lan_route_table_follows_adds_and_removes() {
    let mut dp = load();
    program_maps(&mut dp);
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15u64);
    let mut rnd = move || rng.u64(..);
    // Map data only, nothing is sent.
    let addr = |r: u64| Ipv4Addr::from(0x0a0a_0000 | (r as u32 & 0x03ff));
    let mut live: Vec<(Ipv4Addr, u8)> = Vec::new();
    for burst in 0..8 {
        for _ in 0..40 {
            let r = rnd();
            if live.is_empty() || r % 3 != 0 {
                let len = [8u8, 16, 23, 24, 25, 27, 30, 32][(r >> 32) as usize % 8];
                let a = addr(rnd());
                // Tunnels 1 and 2 are up.
                dp.add_route_v4(a, len, 1 + (r >> 40) as u32 % 2)
                    .expect("route");
                live.push((a, len));
            } else {
                let (a, len) = live.swap_remove((r >> 8) as usize % live.len());
                dp.remove_route_v4(a, len).expect("remove");
            }
        }
        let cases: Vec<_> = (0..64)
            .map(|_| {
                let a = addr(rnd());
                let want = match dp.route_v4(a) {
                    Some((t, _)) => steer_out(t),
                    None => Expect::Pass,
                };
                let frame = ethernet(
                    ETH_P_IP,
                    None,
                    &Ipv4::new(VPC4, a, IPPROTO_UDP).build(&udp(1, 2, &[0; 16])),
                );
                case(format!("burst {burst}: {a}"), LAN, frame, want)
            })
            .collect();
        run_cases(&dp, &cases);
    }
    for (a, len) in live {
        dp.remove_route_v4(a, len).expect("remove");
    }
    assert_eq!(dp.route_v4(Ipv4Addr::new(10, 10, 1, 1)), None);
    assert_eq!(dp.routes_v4_len(), 3, "the routes of program_maps remain");
}

/// Two SPIs with the same slot of `SA_SLOTS`: the first takes the slot,
/// the second goes to the `SA_IN` hash, and `wan_ingress` steers both to
/// their own SA; a third SPI of that slot is unknown; removing either
/// leaves the other served; with the hash empty again, lookups stop there.
#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn colliding_spis_are_served_by_the_slot_and_the_hash() {
    let mut dp = load();
    program_maps(&mut dp);
    assert_eq!(
        dp.sa_in_spilled(),
        0,
        "program_maps' SPIs have slots of their own"
    );
    let twin = SPI_V4 + 0x1_0000;
    let value = SaInValue {
        tunnel_id: 1,
        sa_index: 11,
        replay_right_edge: RIGHT_EDGE,
        replay_window: WINDOW,
        flags: 0,
    };
    dp.install_sa_in(twin, value).expect("SA_IN");
    assert_eq!(dp.sa_in_spilled(), 1);
    assert_eq!(dp.sa_in(twin).expect("read"), Some(value));
    let esp = |spi| esp_v4(PEER4, LOCAL4, spi, 1000);
    let third = SPI_V4 + 0x2_0000;
    run_cases(
        &dp,
        &[
            case("the slot's SPI", WAN, esp(SPI_V4), steer_in(1, 10)),
            case("the hash's SPI", WAN, esp(twin), steer_in(1, 11)),
            case(
                "a third SPI of the slot",
                WAN,
                esp(third),
                Expect::Drop(DropReason::UnknownSpi),
            ),
        ],
    );
    dp.remove_sa_in(SPI_V4).expect("remove");
    run_cases(
        &dp,
        &[
            case(
                "the slot's SPI removed",
                WAN,
                esp(SPI_V4),
                Expect::Drop(DropReason::UnknownSpi),
            ),
            case("the hash's SPI still", WAN, esp(twin), steer_in(1, 11)),
        ],
    );
    dp.remove_sa_in(twin).expect("remove");
    assert_eq!(dp.sa_in_spilled(), 0);
    assert_eq!(dp.sa_in(twin).expect("read"), None);
    run_cases(
        &dp,
        &[case(
            "the hash's SPI removed",
            WAN,
            esp(twin),
            Expect::Drop(DropReason::UnknownSpi),
        )],
    );
}

/// A table sized for two groups (`datapath.route_groups_v4 = 2`): a third
/// /24 with a longer prefix has no group, so `lan_ingress` leaves that
/// whole /24 to the kernel (never steering by a route the longer prefix
/// overrides), while the other /24s keep their fast path; once a group is
/// freed and its grace has passed, the next change gives the /24 its group
/// back, built from the routes.
#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn a_small_route_table_leaves_a_24_to_the_kernel_until_a_group_frees() {
    let mut dp = XdpDataplane::load_unattached_with_groups(2).expect("load");
    program_maps(&mut dp);
    // program_maps holds two /25s in two /24s: both groups in use.
    assert_eq!(dp.route_table_usage().v4_groups_used, 2);
    assert_eq!(dp.route_table_usage().v4_groups_limit, 2);
    dp.add_route_v4(Ipv4Addr::new(198, 51, 100, 0), 24, 2)
        .expect("a /24 needs no group");
    dp.add_route_v4(Ipv4Addr::new(198, 51, 100, 7), 32, 1)
        .expect("a third group: the /24 goes to the kernel");
    assert_eq!(dp.route_table_usage().v4_punted, 1);
    let to = |dst: Ipv4Addr| {
        ethernet(
            ETH_P_IP,
            None,
            &Ipv4::new(VPC4, dst, IPPROTO_UDP).build(&udp(1, 2, &[0; 16])),
        )
    };
    let (host, other) = (
        Ipv4Addr::new(198, 51, 100, 7),
        Ipv4Addr::new(198, 51, 100, 9),
    );
    run_cases(
        &dp,
        &[
            case(
                "the /24 of program_maps",
                LAN,
                to(Ipv4Addr::new(203, 0, 113, 10)),
                steer_out(1),
            ),
            case("the /32 without a group", LAN, to(host), Expect::Pass),
            case("its /24 without a group", LAN, to(other), Expect::Pass),
        ],
    );
    dp.remove_route_v4(Ipv4Addr::new(192, 0, 2, 128), 25)
        .expect("remove");
    std::thread::sleep(gateway_user::dataplane::routes::GROUP_GRACE);
    dp.add_route_v4(Ipv4Addr::new(192, 0, 2, 0), 24, 1)
        .expect("a change");
    assert_eq!(dp.route_table_usage().v4_punted, 0);
    run_cases(
        &dp,
        &[
            case("the /32 with its group", LAN, to(host), steer_out(1)),
            case("its /24 with its group", LAN, to(other), steer_out(2)),
        ],
    );
}

/// The IPv6 table under changes: random prefixes from /0 to /128 around
/// one /64 added, replaced and removed; after each burst `lan_ingress`
/// steers every probe to the tunnel of the longest installed prefix that
/// holds it (a reference computed here), or passes it.
#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn lan_route_table_v6_follows_adds_and_removes() {
    let mut dp = load();
    program_maps(&mut dp);
    let mut rng = fastrand::Rng::with_seed(0x2545_f491_4f6c_dd1du64);
    let mut rnd = move || rng.u64(..);
    // 2001:db8:7::/64 and the addresses near it (map data only).
    let base = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 0));
    let addr = |r: u64| Ipv6Addr::from(base | (r as u128 & 0xff) | ((r as u128 >> 8 & 3) << 64));
    let masked = |a: Ipv6Addr, len: u8| {
        let a = u128::from(a);
        if len == 0 {
            0
        } else {
            a & (u128::MAX << (128 - len))
        }
    };
    let mut live: std::collections::HashMap<(u128, u8), u32> = Default::default();
    for burst in 0..8 {
        for _ in 0..30 {
            let r = rnd();
            if live.is_empty() || r % 3 != 0 {
                let len = [0u8, 32, 48, 63, 64, 65, 100, 120, 127, 128][(r >> 32) as usize % 10];
                let a = addr(rnd());
                let t = 1 + (r >> 40) as u32 % 2;
                dp.add_route_v6(a, len, t).expect("route");
                live.insert((masked(a, len), len), t);
            } else {
                let keys: Vec<_> = live.keys().copied().collect();
                let (p, len) = keys[(r >> 8) as usize % keys.len()];
                dp.remove_route_v6(Ipv6Addr::from(p), len).expect("remove");
                live.remove(&(p, len));
            }
        }
        let cases: Vec<_> = (0..64)
            .map(|_| {
                let a = addr(rnd());
                let best = (0..=128u8).rev().find_map(|l| live.get(&(masked(a, l), l)));
                let want = match best {
                    Some(&t) => steer_out(t),
                    // 2001:db8:200::/48 of program_maps is elsewhere.
                    None => Expect::Pass,
                };
                let frame = ethernet(
                    ETH_P_IPV6,
                    None,
                    &Ipv6::new(VPC6, a, IPPROTO_UDP).build(&udp(1, 2, &[0; 16])),
                );
                case(format!("burst {burst}: {a}"), LAN, frame, want)
            })
            .collect();
        run_cases(&dp, &cases);
    }
    assert_eq!(
        dp.routes_v6_len(),
        live.len() + 1,
        "with the /48 of program_maps"
    );
    for (p, len) in live.into_keys() {
        dp.remove_route_v6(Ipv6Addr::from(p), len).expect("remove");
    }
    assert_eq!(dp.routes_v6_len(), 1);
}

/// The records aya-log delivers: level and text.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<(log::Level, String)>>>);

impl log::Log for Captured {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((r.level(), r.args().to_string()));
    }
    fn flush(&self) {}
}

/// XDP drop events (aya-log): none while off, then each drop at its level
/// and the levels above it only, with the reason and the side; a frame
/// steered to the fast path sends nothing.
#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn drop_events_reach_the_log_at_their_level_only() {
    use gateway_config::DropEvents;
    let mut dp = load();
    program_maps(&mut dp);
    let seen = Captured::default();
    let mut logger = dp.drop_event_logger(seen.clone()).unwrap();
    let mut run =
        |dp: &XdpDataplane, prog: &'static str, frame: &[u8]| -> Vec<(log::Level, String)> {
            let fd = dp.program_fd(prog).unwrap();
            // lo: every namespace has it, as index 1.
            let input = TestRun {
                ingress_ifindex: 1,
                ..TestRun::new(frame)
            };
            run_xdp(fd, &input).unwrap();
            logger.flush();
            std::mem::take(&mut *seen.0.lock().unwrap())
        };
    let esp4 = |spi, seq| esp_v4(PEER4, LOCAL4, spi, seq);
    let malformed = patch(esp4(SPI_V4, 1000), 14, &[0x65]);
    let unknown_spi = esp4(SPI_UNKNOWN, 1);
    let bad_version = DropReason::Ipv4BadVersion as u32;
    let unknown = DropReason::UnknownSpi as u32;

    dp.set_drop_events(DropEvents::Off).unwrap();
    assert_eq!(run(&dp, WAN, &malformed), []);
    assert_eq!(run(&dp, WAN, &unknown_spi), []);

    dp.set_drop_events(DropEvents::Warn).unwrap();
    assert_eq!(
        run(&dp, WAN, &malformed),
        [(
            log::Level::Warn,
            format!("xdp drop reason={bad_version} side=0 ifindex=1")
        )]
    );
    assert_eq!(run(&dp, WAN, &unknown_spi), [], "unknown SPIs are info");

    dp.set_drop_events(DropEvents::Info).unwrap();
    assert_eq!(
        run(&dp, WAN, &unknown_spi),
        [(
            log::Level::Info,
            format!("xdp drop reason={unknown} side=0 ifindex=1")
        )]
    );
    assert_eq!(run(&dp, WAN, &malformed).len(), 1, "warn is above info");
    // Steered to the fast path: no event.
    assert_eq!(run(&dp, WAN, &esp4(SPI_V4, 1000)), []);

    dp.set_drop_events(DropEvents::Off).unwrap();
    assert_eq!(run(&dp, WAN, &malformed), []);
}

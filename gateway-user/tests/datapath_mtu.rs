//! Packet sizes in the worker, without sockets or privileges: TCP MSS
//! clamping before encryption (LAN → tunnel) and after decryption (tunnel
//! → LAN), and decrypted packets larger than the LAN's MTU: answered with
//! an ICMP error that goes back into the tunnel, encrypted (DF, IPv6), or
//! handed to the TUN for the kernel to fragment (IPv4 without DF), with a
//! per-source rate limit. The pipeline's own table decrypts what it sent,
//! as the peer would.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use gateway_common::{Direction, XdpMeta, SA_INDEX_NONE, XDP_META_MAGIC};
use gateway_esp::checksum::{add, fold};
use gateway_esp::table::{InboundSaConfig, OutboundSaConfig, SaKeys, SaTable, TunnelId};
use gateway_esp::{Encryption, OuterHeader, Suite, TrafficSelectors, UdpEncap};
use gateway_netio::netlink::NextHop;
use gateway_user::dataplane::mtu::TunnelParams;
use gateway_user::dataplane::slowpath::SlowPathError;
use gateway_user::dataplane::worker::{Pipeline, Resolver, SlowSink, Verdict, WorkerDrop};

const TUNNEL: TunnelId = 4;
const SPI: u32 = 0x4400_0004;
const LAN_IF: u32 = 2;
const WAN_IF: u32 = 3;
const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const GW_LAN4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const GW_LAN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
const LAN_MTU: u32 = 1400;
const START: usize = 384;

struct Fixed;

impl Resolver for Fixed {
    fn next_hop(&self, dst: IpAddr) -> Option<NextHop> {
        Some(NextHop {
            ifindex: if dst == IpAddr::V4(PEER) {
                WAN_IF
            } else {
                LAN_IF
            },
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
        })
    }
}

#[derive(Default)]
struct Sink {
    inner: Mutex<Vec<Vec<u8>>>,
    outer: Mutex<Vec<Vec<u8>>>,
}

struct SinkRef(Arc<Sink>);

impl SlowSink for SinkRef {
    fn deliver_inner(&self, _t: TunnelId, p: &[u8]) -> Result<(), SlowPathError> {
        self.0.inner.lock().unwrap().push(p.to_vec());
        Ok(())
    }
    fn send_outer(&self, p: &[u8]) -> Result<(), SlowPathError> {
        self.0.outer.lock().unwrap().push(p.to_vec());
        Ok(())
    }
}

struct Setup {
    p: Pipeline<Fixed, SinkRef>,
    table: Arc<SaTable>,
    params: Arc<TunnelParams>,
    sink: Arc<Sink>,
}

fn setup(rate: (u32, u32)) -> Setup {
    let suite = Suite::new(Encryption::Aes256Gcm, None).unwrap();
    let keys = SaKeys::new(suite, &[0x33; 36], &[]).unwrap();
    let table = Arc::new(SaTable::new());
    table
        .install_inbound(&InboundSaConfig {
            tunnel: TUNNEL,
            spi: SPI,
            keys: keys.clone(),
            esn: false,
            replay_window: 1024,
            selectors: TrafficSelectors::any(),
        })
        .unwrap();
    table
        .install_outbound(&OutboundSaConfig {
            tunnel: TUNNEL,
            spi: SPI,
            keys,
            esn: false,
            outer: OuterHeader {
                src: Ipv4Addr::new(192, 0, 2, 1).into(),
                dst: PEER.into(),
                udp: Some(UdpEncap::default()),
                ttl: 64,
            },
            lifetime: gateway_esp::Lifetime::NONE,
        })
        .unwrap();
    let params = Arc::new(TunnelParams::default());
    params.set_inner_mtu(TUNNEL, 1438);
    let sink = Arc::new(Sink::default());
    let p = Pipeline::new(
        Arc::clone(&table),
        Fixed,
        SinkRef(sink.clone()),
        LAN_IF,
        WAN_IF,
    )
    .with_lan(LAN_MTU, Some(GW_LAN4), Some(GW_LAN6), rate)
    .with_tunnel_params(Arc::clone(&params));
    Setup {
        p,
        table,
        params,
        sink,
    }
}

fn meta(direction: Direction) -> Option<XdpMeta> {
    Some(XdpMeta {
        magic: XDP_META_MAGIC,
        tunnel_id: TUNNEL,
        sa_index: SA_INDEX_NONE,
        direction: direction as u32,
    })
}

fn tcp_checksum_ok(ip: &[u8]) -> bool {
    let len = (ip.len() - 20) as u64;
    fold(add(add(0, &ip[12..20]) + 6 + len, &ip[20..])) == 0xffff
}

/// Ethernet + IPv4 TCP segment with `flags` and an MSS option of `mss`.
fn tcp_frame(flags: u8, mss: u16) -> Vec<u8> {
    let mut ip = vec![0u8; 20 + 24];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&44u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[198, 51, 100, 10]);
    ip[16..20].copy_from_slice(&[203, 0, 113, 10]);
    let c = !fold(add(0, &ip[..20]));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let t = &mut ip[20..];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&5201u16.to_be_bytes());
    t[12] = 6 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t[20..24].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
    let c = !fold(add(add(0, &ip[12..20]) + 6 + 24, &ip[20..]));
    ip[36..38].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0u8; 14];
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&ip);
    f
}

fn mss(ip: &[u8]) -> u16 {
    u16::from_be_bytes([ip[42], ip[43]])
}

/// Encrypts `frame` with the pipeline (clamping off, as a peer that does
/// not clamp) and returns the WAN frame's range in `chunk`.
fn as_peer_sends(s: &Setup, frame: &[u8], chunk: &mut [u8]) -> std::ops::Range<usize> {
    let clamp = s.params.mss_clamp(TUNNEL);
    s.params.set_mss_clamp(TUNNEL, false);
    chunk[START..START + frame.len()].copy_from_slice(frame);
    let v =
        s.p.outbound(chunk, START..START + frame.len(), meta(Direction::Outbound));
    s.params.set_mss_clamp(TUNNEL, clamp);
    match v {
        Verdict::Forward(r) => r,
        Verdict::Consumed => panic!("could not build the ESP frame"),
    }
}

#[test]
fn outbound_syn_is_clamped_before_encryption() {
    let s = setup((100, 10));
    for (flags, offered, want) in [(0x02, 1460, 1398), (0x12, 1460, 1398), (0x02, 1200, 1200)] {
        let f = tcp_frame(flags, offered);
        let mut chunk = vec![0u8; 4096];
        chunk[START..START + f.len()].copy_from_slice(&f);
        let Verdict::Forward(r) = s.p.outbound(
            &mut chunk,
            START..START + f.len(),
            meta(Direction::Outbound),
        ) else {
            panic!("not forwarded");
        };
        // What the peer decrypts.
        let rx = s.table.decap(&mut chunk, r.start + 14..r.end).unwrap();
        let inner = &chunk[rx.decap.inner];
        assert_eq!(mss(inner), want, "flags {flags:#x}, offered {offered}");
        assert!(tcp_checksum_ok(inner), "flags {flags:#x}");
    }
    // SYN and SYN-ACK lowered, the small one left alone.
    assert_eq!(s.params.clamped_syns(), 2);
    // Off for the tunnel (config): left alone.
    s.params.set_mss_clamp(TUNNEL, false);
    let f = tcp_frame(0x02, 1460);
    let mut chunk = vec![0u8; 4096];
    chunk[START..START + f.len()].copy_from_slice(&f);
    let Verdict::Forward(r) = s.p.outbound(
        &mut chunk,
        START..START + f.len(),
        meta(Direction::Outbound),
    ) else {
        panic!("not forwarded");
    };
    let rx = s.table.decap(&mut chunk, r.start + 14..r.end).unwrap();
    assert_eq!(mss(&chunk[rx.decap.inner]), 1460);
}

#[test]
fn inbound_syn_ack_is_clamped_after_decryption() {
    let s = setup((100, 10));
    let mut chunk = vec![0u8; 4096];
    let r = as_peer_sends(&s, &tcp_frame(0x12, 1460), &mut chunk);
    let Verdict::Forward(out) = s.p.inbound(&mut chunk, r, meta(Direction::Inbound)) else {
        panic!("not forwarded to the LAN");
    };
    let ip = &chunk[out.start + 14..out.end];
    assert_eq!(mss(ip), 1398);
    assert!(tcp_checksum_ok(ip));
    assert_eq!(s.params.clamped_syns(), 1);
}

/// Ethernet + IPv4 UDP packet of `len` bytes from the far site to the LAN.
fn big_v4(len: usize, df: bool, src: Ipv4Addr) -> Vec<u8> {
    let mut ip = vec![0x5au8; len];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    ip[6] = if df { 0x40 } else { 0 };
    ip[7] = 0;
    ip[8] = 64;
    ip[9] = 17;
    ip[10] = 0;
    ip[11] = 0;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&[198, 51, 100, 10]);
    let c = !fold(add(0, &ip[..20]));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0u8; 14];
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&ip);
    f
}

fn big_v6(len: usize) -> Vec<u8> {
    let mut ip = vec![0x5au8; len];
    ip[0] = 0x60;
    ip[1..4].fill(0);
    ip[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    ip[6] = 17;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&"2001:db8:200::10".parse::<Ipv6Addr>().unwrap().octets());
    ip[24..40].copy_from_slice(&"2001:db8:100::10".parse::<Ipv6Addr>().unwrap().octets());
    let mut f = vec![0u8; 14];
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&ip);
    f
}

/// Decrypts the outer packets the pipeline sent through the slow path.
fn sent_back(s: &Setup) -> Vec<Vec<u8>> {
    let outers = std::mem::take(&mut *s.sink.outer.lock().unwrap());
    outers
        .into_iter()
        .map(|mut o| {
            let n = o.len();
            let rx = s.table.decap(&mut o, 0..n).expect("our own ESP");
            assert_eq!(rx.tunnel, TUNNEL);
            o[rx.decap.inner].to_vec()
        })
        .collect()
}

#[test]
fn decrypted_packet_too_big_for_the_lan_gets_icmp_through_the_tunnel() {
    let s = setup((100, 10));
    let c0 = s.p.counters().snapshot();
    // At the LAN MTU: forwarded.
    let mut chunk = vec![0u8; 4096];
    let r = as_peer_sends(
        &s,
        &big_v4(LAN_MTU as usize, true, Ipv4Addr::new(203, 0, 113, 10)),
        &mut chunk,
    );
    assert!(matches!(
        s.p.inbound(&mut chunk, r, meta(Direction::Inbound)),
        Verdict::Forward(_)
    ));
    // One byte over, DF: an ICMP error back into the tunnel.
    let orig = big_v4(LAN_MTU as usize + 1, true, Ipv4Addr::new(203, 0, 113, 10));
    let r = as_peer_sends(&s, &orig, &mut chunk);
    assert_eq!(
        s.p.inbound(&mut chunk, r, meta(Direction::Inbound)),
        Verdict::Consumed
    );
    let back = sent_back(&s);
    assert_eq!(back.len(), 1);
    let e = &back[0];
    assert_eq!(e.len(), 576);
    assert_eq!(fold(add(0, &e[..20])), 0xffff);
    assert_eq!(fold(add(0, &e[20..])), 0xffff);
    assert_eq!(&e[12..16], &GW_LAN4.octets());
    assert_eq!(&e[16..20], &[203, 0, 113, 10]);
    assert_eq!((e[20], e[21]), (3, 4));
    assert_eq!(u16::from_be_bytes([e[26], e[27]]), LAN_MTU as u16);
    // The quote is the packet as it arrived: the peer (as a router)
    // decremented its TTL, the rest is the original.
    assert_eq!(e[28 + 8], orig[14 + 8] - 1);
    assert_eq!(&e[28 + 12..], &orig[14 + 12..14 + 548]);
    // IPv6: packet too big.
    let r = as_peer_sends(&s, &big_v6(1500), &mut chunk);
    assert_eq!(
        s.p.inbound(&mut chunk, r, meta(Direction::Inbound)),
        Verdict::Consumed
    );
    let back = sent_back(&s);
    assert_eq!(back.len(), 1);
    let e = &back[0];
    assert_eq!(e.len(), 1280);
    assert_eq!((e[6], e[40]), (58, 2));
    assert_eq!(&e[8..24], &GW_LAN6.octets());
    let pseudo = add(0, &e[8..40]) + 1240 + 58;
    assert_eq!(fold(add(pseudo, &e[40..])), 0xffff);
    assert_eq!(u32::from_be_bytes([e[44], e[45], e[46], e[47]]), LAN_MTU);
    // Without DF: to the TUN, for the kernel to fragment.
    let r = as_peer_sends(
        &s,
        &big_v4(1500, false, Ipv4Addr::new(203, 0, 113, 10)),
        &mut chunk,
    );
    assert_eq!(
        s.p.inbound(&mut chunk, r, meta(Direction::Inbound)),
        Verdict::Consumed
    );
    assert_eq!(s.sink.inner.lock().unwrap().len(), 1);
    assert_eq!(s.sink.inner.lock().unwrap()[0].len(), 1500);
    let c1 = s.p.counters().snapshot();
    assert_eq!(c1.icmp_too_big - c0.icmp_too_big, 2);
    assert_eq!(c1.lan_tx - c0.lan_tx, 1);
    assert_eq!(c1.to_tun - c0.to_tun, 1);
    assert_eq!(c1.dropped(WorkerDrop::TooBigNoReply), 0);
}

#[test]
fn icmp_errors_into_the_tunnel_are_rate_limited_per_source() {
    // One a second, bursts of two: nothing refills during the test.
    let s = setup((1, 2));
    let mut chunk = vec![0u8; 4096];
    let a = Ipv4Addr::new(203, 0, 113, 10);
    let b = Ipv4Addr::new(203, 0, 113, 11);
    for src in [a, a, a, a, b] {
        let r = as_peer_sends(&s, &big_v4(1500, true, src), &mut chunk);
        s.p.inbound(&mut chunk, r, meta(Direction::Inbound));
    }
    let back = sent_back(&s);
    let to = |x: Ipv4Addr| back.iter().filter(|e| e[16..20] == x.octets()).count();
    assert_eq!((to(a), to(b)), (2, 1));
    assert_eq!(
        s.p.counters().snapshot().dropped(WorkerDrop::TooBigNoReply),
        2
    );
}

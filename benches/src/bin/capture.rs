//! What packet capture costs a worker while no capture runs: a worker's
//! `Pipeline` encrypting LAN frames into a tunnel (TTL, checksum, MSS
//! clamp, ESP encap, next hop, Ethernet header), built without a capture
//! hook (the baseline) and with one that is off (what the daemon runs),
//! measured in the same run. Rounds alternate between the two so drift
//! hits both alike; the median of the rounds is kept, with the spread of
//! the per-round ratios. Prints a table and writes
//! `target/bench/capture.json`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use gateway_common::eth::ETH_P_IP;
use gateway_common::{Direction, XdpMeta, SA_INDEX_NONE, XDP_META_MAGIC};
use gateway_esp::table::{OutboundSaConfig, SaKeys, SaTable, TunnelId};
use gateway_esp::{Lifetime, OuterHeader, Suite, UdpEncap};
use gateway_netio::netlink::NextHop;
use gateway_user::capture::Capture;
use gateway_user::dataplane::slowpath::SlowPathError;
use gateway_user::dataplane::worker::{Pipeline, Resolver, SlowSink, Verdict};
use serde::Serialize;

const SIZES: [usize; 2] = [64, 1400];
const ROUNDS: usize = 21;
const PACKETS: usize = 20_000;
const WAN_IF: u32 = 3;
const LAN_IF: u32 = 2;
/// Where a received frame starts in an AF_XDP chunk.
const START: usize = 384;
const CHUNK: usize = 4096;
const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

/// Every destination resolves to the peer on WAN.
struct Wan;

impl Resolver for Wan {
    fn next_hop(&self, _dst: IpAddr) -> Option<NextHop> {
        Some(NextHop {
            ifindex: WAN_IF,
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
        })
    }
}

/// Never used on this path (everything is forwarded).
struct NoSlow;

impl SlowSink for NoSlow {
    fn deliver_inner(&self, _tunnel: TunnelId, _packet: &[u8]) -> Result<(), SlowPathError> {
        Ok(())
    }
    fn send_outer(&self, _packet: &[u8]) -> Result<(), SlowPathError> {
        Ok(())
    }
}

#[derive(Serialize)]
struct Row {
    name: String,
    bytes: usize,
    ns_per_packet: f64,
    ratio_to_raw: f64,
    /// Lowest and highest per-round ratio.
    ratio_spread: (f64, f64),
}

#[derive(Serialize)]
struct Report {
    results: Vec<Row>,
}

/// An Ethernet frame with an IPv4/UDP packet of `bytes` from the VPC.
fn lan_frame(bytes: usize) -> Vec<u8> {
    let mut f = vec![0u8; 14 + bytes];
    f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(bytes as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[198, 51, 100, 10]);
    ip[16..20].copy_from_slice(&[203, 0, 113, 10]);
    let c = gateway_esp::checksum::checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip[20..22].copy_from_slice(&40000u16.to_be_bytes());
    ip[22..24].copy_from_slice(&9000u16.to_be_bytes());
    ip[24..26].copy_from_slice(&((bytes - 20) as u16).to_be_bytes());
    f
}

/// Nanoseconds per packet of `pipeline` over `PACKETS` frames.
fn run<R: Resolver, S: SlowSink>(pipeline: &Pipeline<R, S>, frame: &[u8], chunk: &mut [u8]) -> f64 {
    let meta = XdpMeta {
        magic: XDP_META_MAGIC,
        tunnel_id: 1,
        sa_index: SA_INDEX_NONE,
        direction: Direction::Outbound as u32,
    };
    let range = START..START + frame.len();
    let t = Instant::now();
    for _ in 0..PACKETS {
        chunk[range.clone()].copy_from_slice(frame);
        let v = pipeline.outbound(black_box(chunk), range.clone(), Some(meta));
        assert!(matches!(v, Verdict::Forward(_)), "not forwarded");
    }
    t.elapsed().as_nanos() as f64 / PACKETS as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let table = Arc::new(SaTable::new());
    let suite = Suite::from_api_names("aes256gcm", None).expect("suite");
    let encr: Vec<u8> = (0..suite.encr_keymat_len() as u8).collect();
    table
        .install_outbound(&OutboundSaConfig {
            tunnel: 1,
            spi: 0x1000,
            keys: SaKeys::new(suite, &encr, &[]).expect("keys"),
            // 64-bit sequence numbers: no exhaustion however long it runs.
            esn: true,
            outer: OuterHeader {
                src: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                dst: IpAddr::V4(PEER),
                udp: Some(UdpEncap::default()),
                ttl: 64,
            },
            lifetime: Lifetime::NONE,
        })
        .expect("SA");
    let bare = Pipeline::new(Arc::clone(&table), Wan, NoSlow, LAN_IF, WAN_IF);
    let hooked = Pipeline::new(Arc::clone(&table), Wan, NoSlow, LAN_IF, WAN_IF)
        .with_capture(Arc::new(Capture::default()));
    let mut chunk = vec![0u8; CHUNK];
    let mut rows = Vec::new();
    println!(
        "{:<28} {:>6} {:>10} {:>8} {:>16}",
        "pipeline (LAN → encap → WAN)", "bytes", "ns/packet", "ratio", "ratio spread"
    );
    for bytes in SIZES {
        let frame = lan_frame(bytes);
        let (mut base, mut off, mut ratios) = (vec![], vec![], vec![]);
        for round in 0..=ROUNDS {
            // Alternate which goes first.
            let (b, o) = if round % 2 == 0 {
                let b = run(&bare, &frame, &mut chunk);
                (b, run(&hooked, &frame, &mut chunk))
            } else {
                let o = run(&hooked, &frame, &mut chunk);
                (run(&bare, &frame, &mut chunk), o)
            };
            // Round 0 warms caches and the CPU clock.
            if round > 0 {
                base.push(b);
                off.push(o);
                ratios.push(b / o);
            }
        }
        let spread = (
            ratios.iter().copied().fold(f64::MAX, f64::min),
            ratios.iter().copied().fold(f64::MIN, f64::max),
        );
        let (b, o, r) = (median(base), median(off), median(ratios));
        println!(
            "{:<28} {:>6} {:>8.1}ns {:>7.3}x",
            "no capture hook", bytes, b, 1.0
        );
        println!(
            "{:<28} {:>6} {:>8.1}ns {:>7.3}x {:>7.3}-{:.3}x",
            "capture hook, off", bytes, o, r, spread.0, spread.1
        );
        rows.push(Row {
            name: "no_capture_hook".into(),
            bytes,
            ns_per_packet: b,
            ratio_to_raw: 1.0,
            ratio_spread: (1.0, 1.0),
        });
        rows.push(Row {
            name: "capture_off".into(),
            bytes,
            ns_per_packet: o,
            ratio_to_raw: r,
            ratio_spread: spread,
        });
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("capture.json");
    match serde_json::to_string_pretty(&Report { results: rows }) {
        Ok(json) => {
            if let Err(e) = std::fs::write(&path, json) {
                eprintln!("cannot write {}: {e}", path.display());
            }
        }
        Err(e) => eprintln!("cannot encode the report: {e}"),
    }
    println!("wrote {}", path.display());
}

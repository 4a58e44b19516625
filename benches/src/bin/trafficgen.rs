//! A UDP traffic generator and sink for measuring the gateway.
//!
//! `trafficgen send` transmits UDP over IPv4 or IPv6 through an AF_XDP socket
//! (copy mode, which works on veth) at a chosen Ethernet frame size, packet
//! rate, duration, count and number of flows. The frame is built once with
//! correct IP and UDP checksums; per packet only the UDP source port (= the
//! flow), the payload's flow id and sequence number, and the UDP checksum
//! (incrementally, from a precomputed sum) change. Pacing is a token bucket.
//! The kernel has no pktgen here and xdp-tools does not load, hence our own.
//!
//! `trafficgen sink` counts what arrives on a plain UDP socket (`recvmmsg`
//! batches) and accounts per flow for received, lost (sequence gaps never
//! filled), reordered (late arrivals that fill a gap) and duplicate packets.
//!
//! Both print one JSON object on stdout. Payload layout (after the UDP
//! header): magic `"TGEN"`, flow id (u32 BE), sequence number (u64 BE), then
//! zeros up to the requested size. Flow `k` uses UDP source port
//! `--sport + k`; sequence numbers start at 0 in each flow.
//!
//! ```text
//! trafficgen send --iface IF --dst-mac MAC [--src-mac MAC] --src IP --dst IP
//!                 [--dport 9000] [--sport 10000] [--size 64] [--rate PPS|0]
//!                 [--duration S] [--count N] [--flows K] [--queue 0]
//! trafficgen sink --addr IP:PORT [--duration S] [--idle S] [--rcvbuf BYTES]
//! ```
//! `--size` is the Ethernet frame length without FCS (at least the headers
//! plus 16 bytes of payload: 58 for IPv4, 78 for IPv6; default 64 / 78);
//! `--rate 0` (the default) means as fast as possible.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use gateway_esp::checksum::{add, checksum, fold};
use gateway_netio::afxdp::{Batch, BindMode, Umem, UmemConfig, XskConfig, XskSocket};

const MAGIC: [u8; 4] = *b"TGEN";
const PAYLOAD_MIN: usize = 16;
use gateway_common::eth::{ETH_HLEN as ETH_LEN, ETH_P_IP, ETH_P_IPV6};
const UDP_LEN: usize = 8;

// ---------------------------------------------------------------------------
// Frame building

/// One-time built frame plus what is needed to rewrite it per packet.
#[derive(Debug, Clone)]
struct Template {
    frame: Vec<u8>,
    /// Offset of the UDP header.
    udp: usize,
    /// One's-complement sum (unfolded) of the UDP pseudo-header, header and
    /// payload with source port, flow id, sequence number and checksum zero.
    base_sum: u64,
}

/// The final checksum field value from a sum (UDP: 0 is sent as 0xffff).
fn finish_udp(s: u64) -> u16 {
    match !fold(s) {
        0 => 0xffff,
        c => c,
    }
}

#[derive(Debug)]
enum BuildError {
    SizeTooSmall(usize),
    SizeTooLarge(usize),
    FamilyMismatch,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SizeTooSmall(m) => write!(f, "--size must be at least {m}"),
            Self::SizeTooLarge(m) => write!(f, "--size must be at most {m}"),
            Self::FamilyMismatch => write!(f, "--src and --dst must be the same family"),
        }
    }
}

fn headers_len(v6: bool) -> usize {
    ETH_LEN + if v6 { 40 } else { 20 } + UDP_LEN
}

impl Template {
    fn build(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: IpAddr,
        dst: IpAddr,
        dport: u16,
        size: usize,
    ) -> Result<Self, BuildError> {
        let v6 = match (src, dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => false,
            (IpAddr::V6(_), IpAddr::V6(_)) => true,
            _ => return Err(BuildError::FamilyMismatch),
        };
        let min = headers_len(v6) + PAYLOAD_MIN;
        if size < min {
            return Err(BuildError::SizeTooSmall(min));
        }
        // Fits a 2048-byte UMEM chunk after its headroom, and the u16 lengths.
        const MAX: usize = 1514;
        if size > MAX {
            return Err(BuildError::SizeTooLarge(MAX));
        }
        let mut f = vec![0u8; size];
        f[0..6].copy_from_slice(&dst_mac);
        f[6..12].copy_from_slice(&src_mac);
        let udp_len = size - ETH_LEN - if v6 { 40 } else { 20 };
        let udp_len16 = u16::try_from(udp_len).map_err(|_| BuildError::SizeTooLarge(MAX))?;
        let pseudo: u64;
        let udp = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
                let ip = &mut f[ETH_LEN..ETH_LEN + 20];
                ip[0] = 0x45;
                ip[2..4].copy_from_slice(&(udp_len16 + 20).to_be_bytes());
                ip[6] = 0x40; // DF: the generator never wants fragments
                ip[8] = 64;
                ip[9] = 17;
                ip[12..16].copy_from_slice(&s.octets());
                ip[16..20].copy_from_slice(&d.octets());
                let c = checksum(ip);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                pseudo = add(add(17 + u64::from(udp_len16), &s.octets()), &d.octets());
                ETH_LEN + 20
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
                let ip = &mut f[ETH_LEN..ETH_LEN + 40];
                ip[0] = 0x60;
                ip[4..6].copy_from_slice(&udp_len16.to_be_bytes());
                ip[6] = 17;
                ip[7] = 64;
                ip[8..24].copy_from_slice(&s.octets());
                ip[24..40].copy_from_slice(&d.octets());
                pseudo = add(add(17 + u64::from(udp_len16), &s.octets()), &d.octets());
                ETH_LEN + 40
            }
            _ => return Err(BuildError::FamilyMismatch),
        };
        f[udp + 2..udp + 4].copy_from_slice(&dport.to_be_bytes());
        f[udp + 4..udp + 6].copy_from_slice(&udp_len16.to_be_bytes());
        f[udp + 8..udp + 12].copy_from_slice(&MAGIC);
        let base_sum = add(pseudo, &f[udp..]);
        Ok(Self {
            frame: f,
            udp,
            base_sum,
        })
    }

    /// Rewrite a copy of the template in `pkt` for packet `seq` of flow `flow`
    /// (source port `sport`): ports, payload fields and the UDP checksum.
    fn rewrite(&self, pkt: &mut [u8], flow: u32, sport: u16, seq: u64) {
        let u = self.udp;
        pkt[u..u + 2].copy_from_slice(&sport.to_be_bytes());
        pkt[u + 12..u + 16].copy_from_slice(&flow.to_be_bytes());
        pkt[u + 16..u + 24].copy_from_slice(&seq.to_be_bytes());
        let s = add(self.base_sum + u64::from(sport), &flow.to_be_bytes());
        let s = add(s, &seq.to_be_bytes());
        pkt[u + 6..u + 8].copy_from_slice(&finish_udp(s).to_be_bytes());
    }
}

/// Parse the generator's payload from a UDP payload: (flow, seq).
fn parse_payload(p: &[u8]) -> Option<(u32, u64)> {
    if p.get(0..4)? != MAGIC {
        return None;
    }
    let flow = u32::from_be_bytes(p.get(4..8)?.try_into().ok()?);
    let seq = u64::from_be_bytes(p.get(8..16)?.try_into().ok()?);
    Some((flow, seq))
}

// ---------------------------------------------------------------------------
// Loss / reorder accounting

/// How far behind the highest sequence number a late packet can still be told
/// apart from a duplicate.
const WINDOW: u64 = 1 << 16;

/// Per-flow sequence accounting. `next` is one past the highest sequence seen;
/// `seen` is a bitmap of the last [`WINDOW`] numbers below `next`.
#[derive(Debug, Clone)]
struct FlowStats {
    next: u64,
    unique: u64,
    received: u64,
    reordered: u64,
    duplicates: u64,
    /// Late packets further back than the window (not classified).
    stale: u64,
    seen: Vec<u64>,
}

impl Default for FlowStats {
    fn default() -> Self {
        Self {
            next: 0,
            unique: 0,
            received: 0,
            reordered: 0,
            duplicates: 0,
            stale: 0,
            seen: vec![0; (WINDOW / 64) as usize],
        }
    }
}

impl FlowStats {
    fn bit(&mut self, seq: u64) -> (&mut u64, u64) {
        let i = seq % WINDOW;
        (&mut self.seen[(i / 64) as usize], 1 << (i % 64))
    }

    fn record(&mut self, seq: u64) {
        self.received += 1;
        if seq >= self.next {
            // Clear the bits of numbers skipped (and of the new one) so they
            // no longer read as seen from a previous lap of the window.
            let from = self.next.max(seq.saturating_sub(WINDOW - 1));
            for s in from..=seq {
                let (w, m) = self.bit(s);
                *w &= !m;
            }
            let (w, m) = self.bit(seq);
            *w |= m;
            self.next = seq + 1;
            self.unique += 1;
        } else if self.next - seq > WINDOW {
            self.stale += 1;
        } else {
            let (w, m) = self.bit(seq);
            if *w & m != 0 {
                self.duplicates += 1;
            } else {
                *w |= m;
                self.unique += 1;
                self.reordered += 1;
            }
        }
    }

    /// Numbers below the highest seen that never arrived (tail loss after the
    /// last received packet is invisible here: compare with the sender's count).
    fn lost(&self) -> u64 {
        self.next.saturating_sub(self.unique + self.stale)
    }
}

// ---------------------------------------------------------------------------
// Command line

struct Args(Vec<String>);

impl Args {
    fn get(&self, name: &str) -> Option<&str> {
        let i = self.0.iter().position(|a| a == name)?;
        self.0.get(i + 1).map(String::as_str)
    }
    fn parse<T: std::str::FromStr>(&self, name: &str, default: Option<T>) -> Result<T, String> {
        match self.get(name) {
            Some(v) => v.parse().map_err(|_| format!("bad value for {name}: {v}")),
            None => default.ok_or_else(|| format!("missing {name}")),
        }
    }
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut m = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut m {
        let p = parts.next().ok_or_else(|| format!("bad MAC {s}"))?;
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC {s}"))?;
    }
    if parts.next().is_some() {
        return Err(format!("bad MAC {s}"));
    }
    Ok(m)
}

// ---------------------------------------------------------------------------
// Sender

fn send(a: &Args) -> Result<serde_json::Value, String> {
    let iface = a.get("--iface").ok_or("missing --iface")?.to_owned();
    let src_mac = match a.get("--src-mac") {
        Some(m) => parse_mac(m)?,
        None => parse_mac(
            &std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
                .map_err(|e| format!("reading {iface}'s MAC: {e}"))?,
        )?,
    };
    let dst_mac = parse_mac(a.get("--dst-mac").ok_or("missing --dst-mac")?)?;
    let src: IpAddr = a.parse("--src", None)?;
    let dst: IpAddr = a.parse("--dst", None)?;
    let dport: u16 = a.parse("--dport", Some(9000))?;
    let sport: u16 = a.parse("--sport", Some(10000))?;
    let size: usize = a.parse(
        "--size",
        Some(64.max(headers_len(dst.is_ipv6()) + PAYLOAD_MIN)),
    )?;
    let rate: f64 = a.parse("--rate", Some(0.0))?;
    let duration: f64 = a.parse("--duration", Some(5.0))?;
    let count: u64 = a.parse("--count", Some(u64::MAX))?;
    let flows: u32 = a.parse("--flows", Some(1))?;
    let queue: u32 = a.parse("--queue", Some(0))?;
    if flows == 0 || u32::from(sport) + flows > 65536 {
        return Err("--flows must be >= 1 and --sport + --flows <= 65536".into());
    }
    if !(rate >= 0.0 && rate.is_finite() && duration > 0.0 && duration.is_finite()) {
        return Err("bad --rate or --duration".into());
    }
    let t = Template::build(src_mac, dst_mac, src, dst, dport, size).map_err(|e| e.to_string())?;

    let mut umem = Umem::new(UmemConfig {
        frame_count: 4096,
        frame_size: 2048,
        headroom: 0,
        fill_size: 64,
        comp_size: 2048,
    })
    .map_err(|e| format!("UMEM: {e:#?}"))?;
    let mut sock = XskSocket::bind(
        &mut umem,
        &iface,
        queue,
        &XskConfig {
            rx_size: 64,
            tx_size: 2048,
            mode: BindMode::Copy,
            ..XskConfig::default()
        },
    )
    .map_err(|e| format!("AF_XDP bind {iface}: {e:?}"))?;

    const BATCH: usize = 64;
    // After being descheduled (a shared 2-core box) the bucket lets the
    // sender catch up for up to 10 ms worth of packets, no more, so bursts
    // stay bounded (and within the TX ring).
    let burst = (rate / 100.0).clamp(BATCH as f64, 2048.0);
    let mut batch = Batch::with_capacity(BATCH);
    let mut seqs = vec![0u64; flows as usize];
    let (mut flow, mut built, mut sent) = (0u32, 0u64, 0u64);
    let mut tokens = 0.0f64;
    let mut stalls = 0u64;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(duration);
    let mut last = start;
    loop {
        let now = Instant::now();
        if now >= end || sent >= count {
            break;
        }
        let mut want = BATCH - batch.len();
        if rate > 0.0 {
            tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(burst);
            last = now;
            // Frames already built but not yet queued consume tokens too.
            want = want.min((tokens as usize).saturating_sub(batch.len()));
        }
        want = want.min(usize::try_from(count - built).unwrap_or(usize::MAX));
        for _ in 0..want {
            let Some(mut f) = umem.alloc() else { break };
            let (chunk, r) = umem.chunk_mut(&f);
            let range = r.start..r.start + t.frame.len();
            let Some(pkt) = chunk.get_mut(range.clone()) else {
                umem.release(f);
                break;
            };
            pkt.copy_from_slice(&t.frame);
            let fi = flow as usize;
            t.rewrite(pkt, flow, sport + flow as u16, seqs[fi]);
            seqs[fi] += 1;
            flow = (flow + 1) % flows;
            if umem.set_packet(&mut f, range).is_err() {
                umem.release(f);
                break;
            }
            if let Err(f) = batch.push(f) {
                umem.release(f);
                break;
            }
            built += 1;
        }
        if batch.is_empty() {
            sock.flush(&mut umem);
            if rate > 0.0 {
                // Sleep only when the next token is far away; the scheduler's
                // granularity (~60 us) would otherwise cap the rate.
                let wait = (1.0 - tokens) / rate;
                if wait > 200e-6 {
                    std::thread::sleep(Duration::from_secs_f64(wait - 100e-6));
                } else {
                    std::hint::spin_loop();
                }
            }
            continue;
        }
        let n = sock.send(&mut umem, &mut batch);
        if n == 0 {
            stalls += 1;
        }
        sent += n as u64;
        if rate > 0.0 {
            tokens -= n as f64;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Unqueued leftovers were never sent: the sink must not expect them.
    let unsent = batch.len() as u64;
    for f in batch.drain() {
        umem.release(f);
    }
    let drain_until = Instant::now() + Duration::from_secs(1);
    while sock.tx_in_flight() > 0 && Instant::now() < drain_until {
        sock.flush(&mut umem);
        std::thread::sleep(Duration::from_micros(100));
    }
    let stats = sock.stats().map_err(|e| format!("{e:?}"))?;
    let per_flow: Vec<u64> = seqs.clone();
    Ok(serde_json::json!({
        "mode": "send",
        "iface": iface,
        "family": if src.is_ipv6() { "ipv6" } else { "ipv4" },
        "frame_size": size,
        "flows": flows,
        "target_pps": rate,
        "sent": sent,
        "built_not_sent": unsent,
        "sent_per_flow_upper_bound": per_flow,
        "elapsed_s": elapsed,
        "pps": sent as f64 / elapsed,
        "mbps_l2": sent as f64 * size as f64 * 8.0 / elapsed / 1e6,
        "tx_ring_full_rounds": stalls,
        "tx_in_flight_at_exit": sock.tx_in_flight(),
        "tx_invalid_descs": stats.tx_invalid_descs,
    }))
}

// ---------------------------------------------------------------------------
// Sink

fn sink(a: &Args) -> Result<serde_json::Value, String> {
    let addr: SocketAddr = a.parse("--addr", None)?;
    let duration: f64 = a.parse("--duration", Some(10.0))?;
    let idle: f64 = a.parse("--idle", Some(2.0))?;
    if !(duration > 0.0 && duration.is_finite() && idle > 0.0 && idle.is_finite()) {
        return Err("bad --duration or --idle".into());
    }
    let sock = UdpSocket::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let fd = sock.as_raw_fd();
    // Large by default so the sink's socket is not where packets get lost.
    let rcvbuf: libc::c_int = a.parse("--rcvbuf", Some(32 << 20))?;
    // SAFETY: setsockopt with a valid fd and a pointer to a live c_int.
    unsafe {
        // RCVBUFFORCE (root) ignores rmem_max; fall back to RCVBUF silently.
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            let p = (&raw const rcvbuf).cast();
            if libc::setsockopt(fd, libc::SOL_SOCKET, opt, p, 4) == 0 {
                break;
            }
        }
    }
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;

    const N: usize = 64;
    const BUF: usize = 2048;
    let mut bufs = vec![[0u8; BUF]; N];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: BUF,
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all-zero is a valid value.
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; N];
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }

    let mut flows: BTreeMap<u32, FlowStats> = BTreeMap::new();
    let (mut total, mut foreign, mut bytes) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(duration);
    let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
    while Instant::now() < end {
        if let Some(l) = last {
            if l.elapsed().as_secs_f64() > idle {
                break;
            }
        }
        // SAFETY: `msgs` holds N headers whose iovecs point into `bufs`, all
        // alive and unaliased for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                N as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue; // timeout (EAGAIN) or EINTR
        }
        let now = Instant::now();
        first.get_or_insert(now);
        last = Some(now);
        for i in 0..n as usize {
            let len = (msgs[i].msg_len as usize).min(BUF);
            bytes += len as u64;
            match parse_payload(&bufs[i][..len]) {
                Some((flow, seq)) => {
                    total += 1;
                    flows.entry(flow).or_default().record(seq);
                }
                None => foreign += 1,
            }
        }
    }
    let span = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    let per_flow: Vec<_> = flows
        .iter()
        .map(|(id, f)| {
            serde_json::json!({
                "flow": id, "received": f.received, "highest_seq": f.next.checked_sub(1),
                "lost": f.lost(), "reordered": f.reordered, "duplicates": f.duplicates,
                "stale": f.stale,
            })
        })
        .collect();
    let sum = |g: fn(&FlowStats) -> u64| flows.values().map(g).sum::<u64>();
    Ok(serde_json::json!({
        "mode": "sink",
        "addr": addr.to_string(),
        "received": total,
        "foreign": foreign,
        "udp_payload_bytes": bytes,
        "lost": sum(FlowStats::lost),
        "reordered": sum(|f| f.reordered),
        "duplicates": sum(|f| f.duplicates),
        "first_to_last_s": span,
        "pps": if span > 0.0 { total as f64 / span } else { 0.0 },
        "flows": per_flow,
    }))
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = Args(argv.clone());
    let r = match argv.first().map(String::as_str) {
        Some("send") => send(&a),
        Some("sink") => sink(&a),
        _ => Err(
            "usage: trafficgen send --iface IF --dst-mac MAC --src IP --dst IP \
                  [--size N] [--rate PPS] [--duration S] [--count N] [--flows K] \
                  | trafficgen sink --addr IP:PORT [--duration S] [--idle S] [--rcvbuf BYTES]"
                .into(),
        ),
    };
    match r {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("trafficgen: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Full checksum verification of a frame, independent of the builder's
    /// incremental path: IPv4 header sum and UDP sum over pseudo-header.
    fn verify(f: &[u8]) -> bool {
        let v6 = f[12..14] == [0x86, 0xdd];
        let (udp, pseudo) = if v6 {
            let ip = &f[ETH_LEN..ETH_LEN + 40];
            (ETH_LEN + 40, add(0, &ip[8..40]))
        } else {
            let ip = &f[ETH_LEN..ETH_LEN + 20];
            if fold(add(0, ip)) != 0xffff {
                return false;
            }
            (ETH_LEN + 20, add(0, &ip[12..20]))
        };
        let len = (f.len() - udp) as u64;
        assert_eq!(u64::from(u16::from_be_bytes([f[udp + 4], f[udp + 5]])), len);
        fold(add(pseudo + 17 + len, &f[udp..])) == 0xffff
    }

    fn templates() -> Vec<Template> {
        let (a, b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut v = Vec::new();
        for size in [58, 59, 64, 65, 128, 999, 1514] {
            v.push(
                Template::build(
                    a,
                    b,
                    "198.51.100.1".parse().unwrap(),
                    "198.51.100.2".parse().unwrap(),
                    9000,
                    size,
                )
                .unwrap(),
            );
        }
        for size in [78, 79, 128, 1514] {
            v.push(
                Template::build(
                    a,
                    b,
                    "2001:db8::1".parse().unwrap(),
                    "2001:db8::2".parse().unwrap(),
                    9000,
                    size,
                )
                .unwrap(),
            );
        }
        v
    }

    #[test]
    fn frames_have_valid_checksums_after_rewrite() {
        for t in templates() {
            let mut pkt = t.frame.clone();
            // Edge values: all-zero and all-ones fields, carries in every word.
            for (flow, seq) in [
                (0, 0),
                (1, 1),
                (u32::MAX, u64::MAX),
                (7, 0xffff_0000_ffff),
                (3, 1 << 40),
            ] {
                let sport = 10000u16.wrapping_add(flow as u16);
                t.rewrite(&mut pkt, flow, sport, seq);
                assert!(verify(&pkt), "size {} flow {flow} seq {seq}", pkt.len());
                let u = t.udp;
                assert_eq!(u16::from_be_bytes([pkt[u], pkt[u + 1]]), sport);
                assert_eq!(parse_payload(&pkt[u + 8..]), Some((flow, seq)));
                // Only the rewritten fields differ from the template.
                for (i, (x, y)) in pkt.iter().zip(&t.frame).enumerate() {
                    if x != y {
                        assert!(
                            i < u + 2
                                || (u + 6..u + 8).contains(&i)
                                || (u + 12..u + 24).contains(&i),
                            "byte {i}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn builder_rejects_bad_sizes_and_mixed_families() {
        let m = [0; 6];
        let v4: IpAddr = "198.51.100.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(matches!(
            Template::build(m, m, v4, v4, 1, 57),
            Err(BuildError::SizeTooSmall(58))
        ));
        assert!(matches!(
            Template::build(m, m, v6, v6, 1, 77),
            Err(BuildError::SizeTooSmall(78))
        ));
        assert!(matches!(
            Template::build(m, m, v4, v4, 1, 1515),
            Err(BuildError::SizeTooLarge(_))
        ));
        assert!(matches!(
            Template::build(m, m, v4, v6, 1, 100),
            Err(BuildError::FamilyMismatch)
        ));
    }

    #[test]
    fn payload_parser_rejects_foreign_data() {
        assert_eq!(parse_payload(b"TGEN"), None);
        assert_eq!(parse_payload(&[0u8; 16]), None);
        let mut p = *b"TGEN\0\0\0\x05\0\0\0\0\0\0\x01\x00";
        assert_eq!(parse_payload(&p), Some((5, 256)));
        p[0] = b'X';
        assert_eq!(parse_payload(&p), None);
    }

    fn run(seqs: &[u64]) -> FlowStats {
        let mut f = FlowStats::default();
        for &s in seqs {
            f.record(s);
        }
        f
    }

    #[test]
    fn in_order_stream_has_no_loss() {
        let f = run(&(0..1000).collect::<Vec<_>>());
        assert_eq!(
            (f.received, f.lost(), f.reordered, f.duplicates),
            (1000, 0, 0, 0)
        );
    }

    #[test]
    fn gaps_are_lost_until_filled_by_late_packets() {
        let f = run(&[0, 1, 4, 5]);
        assert_eq!((f.lost(), f.reordered), (2, 0));
        let f = run(&[0, 1, 4, 5, 3]);
        assert_eq!((f.lost(), f.reordered, f.duplicates), (1, 1, 0));
        let f = run(&[0, 1, 4, 5, 3, 2]);
        assert_eq!((f.lost(), f.reordered, f.duplicates), (0, 2, 0));
        // The sink started late: the first numbers count as lost.
        assert_eq!(run(&[10, 11]).lost(), 10);
    }

    #[test]
    fn duplicates_are_not_reorders() {
        let f = run(&[0, 1, 1, 2, 0, 5, 3, 3, 5]);
        assert_eq!(f.received, 9);
        assert_eq!((f.duplicates, f.reordered, f.lost()), (4, 1, 1));
    }

    #[test]
    fn window_wraps_without_false_duplicates() {
        // Skip far ahead (over a whole window), then fill late numbers whose
        // bitmap slots were used on the previous lap: they are reorders.
        let f = run(&[0, 1, 2, WINDOW + 10, 11, 12]);
        assert_eq!((f.duplicates, f.reordered), (0, 2));
        assert_eq!(f.lost(), WINDOW + 10 + 1 - 6);
        // Older than the window: counted apart, not as loss fillers or dups.
        let f = run(&[0, 3 * WINDOW, 5]);
        assert_eq!((f.stale, f.duplicates, f.reordered), (1, 0, 0));
    }
}

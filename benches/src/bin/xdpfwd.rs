//! The no-crypto baseline of the tunnel benchmark: a forwarder on
//! the same AF_XDP path as our gateway's workers, without ESP.
//!
//! It attaches a six-instruction XDP program to `--in` (native mode) that
//! redirects every frame to an `XSKMAP` slot for its receive queue, binds one
//! AF_XDP socket on `--in` and one on `--out` (same queue, one shared UMEM,
//! default bind mode like the gateway's workers), rewrites the Ethernet
//! addresses in place (`--dst-mac` = next hop, source = `--out`'s MAC) and
//! transmits the frame on `--out`. Nothing else: no TTL decrement, no
//! checksum, no lookup, so it is the ceiling of this AF_XDP path on this
//! host. The program is built from raw instructions (no object file, no
//! gateway-ebpf change) and attached through a BPF link, so the kernel
//! detaches it when the process exits, however it exits.
//!
//! ```text
//! xdpfwd --in IF --out IF --dst-mac MAC [--queue 0] [--duration S]
//! ```
//! Runs `--duration` seconds (default 10, at most 600) or until SIGTERM /
//! SIGINT, then prints one JSON object (frames forwarded, dropped, socket
//! statistics) on stdout.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gateway_netio::afxdp::{xskmap, Batch, Umem, UmemConfig, XskConfig, XskSocket};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;
const QUEUES: u32 = 64;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// `union bpf_attr`, large enough for the three commands used here.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Self([0; 128])
    }
    fn u32_at(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn u64_at(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a zero-initialised bpf_attr of the size we pass.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            attr.0.len() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(rc).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: these commands return a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One `struct bpf_insn`.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (dst & 0xf) | (src << 4);
    b[2..4].copy_from_slice(&off.to_ne_bytes());
    b[4..8].copy_from_slice(&imm.to_ne_bytes());
    b
}

/// `return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);`
fn redirect_program(map: i32) -> Vec<u8> {
    [
        insn(0x61, 2, 1, 16, 0),       // r2 = *(u32 *)(r1 + rx_queue_index)
        insn(0x18, 1, 1, 0, map),      // r1 = map (BPF_PSEUDO_MAP_FD) ...
        insn(0, 0, 0, 0, 0),           // ... upper half of the 64-bit load
        insn(0xb7, 3, 0, 0, XDP_PASS), // r3 = XDP_PASS (action on a miss)
        insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        insn(0x95, 0, 0, 0, 0), // exit
    ]
    .concat()
}

/// The map, the program and the link that keeps it attached.
struct Attached {
    map: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
}

fn attach(ifindex: u32) -> io::Result<Attached> {
    let mut a = Attr::new();
    a.u32_at(0, BPF_MAP_TYPE_XSKMAP);
    a.u32_at(4, 4); // key_size
    a.u32_at(8, 4); // value_size
    a.u32_at(12, QUEUES); // max_entries
    let map = bpf(BPF_MAP_CREATE, &mut a)?;
    let code = redirect_program(map.as_raw_fd());
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut a = Attr::new();
    a.u32_at(0, BPF_PROG_TYPE_XDP);
    a.u32_at(4, u32::try_from(code.len() / 8).unwrap_or(0));
    a.u64_at(8, code.as_ptr() as u64);
    a.u64_at(16, license.as_ptr() as u64);
    a.u32_at(24, 1); // log_level
    a.u32_at(28, u32::try_from(log.len()).unwrap_or(0));
    a.u64_at(32, log.as_mut_ptr() as u64);
    let prog = bpf(BPF_PROG_LOAD, &mut a).map_err(|e| {
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        io::Error::new(
            e.kind(),
            format!(
                "BPF_PROG_LOAD: {e}; verifier: {}",
                String::from_utf8_lossy(&log[..end])
            ),
        )
    })?;
    let mut a = Attr::new();
    a.u32_at(0, u32::try_from(prog.as_raw_fd()).unwrap_or(0));
    a.u32_at(4, ifindex);
    a.u32_at(8, BPF_XDP);
    a.u32_at(12, XDP_FLAGS_DRV_MODE);
    let link = bpf(BPF_LINK_CREATE, &mut a)?;
    Ok(Attached {
        map,
        _prog: prog,
        _link: link,
    })
}

fn mac_of(iface: &str) -> Result<[u8; 6], String> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
        .map_err(|e| format!("reading {iface}'s MAC: {e}"))?;
    parse_mac(s.trim())
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("bad MAC {s:?}"));
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC {s:?}"))?;
    }
    Ok(mac)
}

struct Args {
    input: String,
    output: String,
    dst_mac: [u8; 6],
    queue: u32,
    duration: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut input, mut output, mut dst_mac) = (None, None, None);
    let (mut queue, mut duration) = (0u32, 10.0f64);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--in" => input = Some(val()?),
            "--out" => output = Some(val()?),
            "--dst-mac" => dst_mac = Some(parse_mac(&val()?)?),
            "--queue" => queue = val()?.parse().map_err(|_| "bad --queue")?,
            "--duration" => duration = val()?.parse().map_err(|_| "bad --duration")?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !(duration > 0.0 && duration <= 600.0) {
        return Err("--duration must be in (0, 600]".into());
    }
    Ok(Args {
        input: input.ok_or("--in is required")?,
        output: output.ok_or("--out is required")?,
        dst_mac: dst_mac.ok_or("--dst-mac is required")?,
        queue,
        duration,
    })
}

fn ifindex(name: &str) -> Result<u32, String> {
    let c = std::ffi::CString::new(name).map_err(|_| "interface name contains NUL")?;
    // SAFETY: a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(format!("interface {name:?} not found"));
    }
    Ok(i)
}

fn run(args: &Args) -> Result<serde_json::Value, String> {
    let src_mac = mac_of(&args.output)?;
    let attached = attach(ifindex(&args.input)?).map_err(|e| format!("XDP attach: {e}"))?;
    let mut umem = Umem::new(UmemConfig::default()).map_err(|e| format!("UMEM: {e:?}"))?;
    let cfg = XskConfig::default();
    let mut rx = XskSocket::bind(&mut umem, &args.input, args.queue, &cfg)
        .map_err(|e| format!("bind {}: {e:?}", args.input))?;
    let mut tx = XskSocket::bind(&mut umem, &args.output, args.queue, &cfg)
        .map_err(|e| format!("bind {}: {e:?}", args.output))?;
    xskmap::update(attached.map.as_fd(), args.queue, rx.fd())
        .map_err(|e| format!("XSKMAP update: {e}"))?;
    // SAFETY: plain async-signal-safe handler that stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    eprintln!("xdpfwd: {} -> {} ready", args.input, args.output);
    let (mut inb, mut outb) = (Batch::with_capacity(64), Batch::with_capacity(64));
    let (mut forwarded, mut dropped, mut bytes) = (0u64, 0u64, 0u64);
    let end = Instant::now() + Duration::from_secs_f64(args.duration);
    let mut idle_rounds = 0u32;
    while !STOP.load(Ordering::Relaxed) {
        let n = rx.recv(&mut umem, &mut inb);
        if n == 0 {
            tx.flush(&mut umem);
            idle_rounds += 1;
            // Check the clock only now and then, and sleep in poll(2) when
            // idle so the baseline does not steal a core it does not need.
            if idle_rounds.is_multiple_of(64) {
                if Instant::now() >= end {
                    break;
                }
                let _ = rx.wait_readable(Duration::from_millis(1));
            }
            continue;
        }
        idle_rounds = 0;
        for f in inb.drain() {
            let data = umem.data_mut(&f);
            if data.len() < 14 {
                dropped += 1;
                umem.release(f);
                continue;
            }
            data[0..6].copy_from_slice(&args.dst_mac);
            data[6..12].copy_from_slice(&src_mac);
            bytes += data.len() as u64;
            if let Err(f) = outb.push(f) {
                dropped += 1;
                umem.release(f);
            }
        }
        let sent = tx.send(&mut umem, &mut outb);
        forwarded += sent as u64;
        // The TX ring is full: drop the rest rather than stall the receive
        // side (what a forwarder under overload does).
        for f in outb.drain() {
            dropped += 1;
            umem.release(f);
        }
        if Instant::now() >= end {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while tx.tx_in_flight() > 0 && Instant::now() < deadline {
        tx.flush(&mut umem);
        std::thread::sleep(Duration::from_micros(100));
    }
    let rs = rx.stats().map_err(|e| format!("{e:?}"))?;
    let ts = tx.stats().map_err(|e| format!("{e:?}"))?;
    Ok(serde_json::json!({
        "mode": "xdpfwd",
        "in": args.input,
        "out": args.output,
        "forwarded": forwarded,
        "forwarded_bytes": bytes,
        "dropped": dropped,
        "rx_dropped": rs.rx_dropped,
        "rx_ring_full": rs.rx_ring_full,
        "rx_fill_ring_empty_descs": rs.rx_fill_ring_empty_descs,
        "tx_invalid_descs": ts.tx_invalid_descs,
    }))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("xdpfwd: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xdpfwd: {e}");
            ExitCode::FAILURE
        }
    }
}

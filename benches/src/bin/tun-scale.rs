//! `cargo xtask bench tun-scale [-- --tunnels N --step N]`: what the agent's
//! design of one TUN device per tunnel costs the host as tunnels accumulate,
//! against the alternative of one interface that carries every tunnel's
//! interconnection addresses.
//!
//! In a namespace of its own (`s2stun-host`) the bench does per tunnel what
//! the agent does when it installs one (`agent::runtime`): create the TUN
//! and keep its descriptor open, make it persistent, apply the tunnel's
//! kernel settings (`sysctl::prepare_tunnel`), set its MTU, add its two
//! interconnection addresses (169.254.0.0/16 /30 and fd53:3273:7670::/127),
//! bring it up, and add one route into it (a customer's prefix, a ULA
//! /48). Every `--step` tunnels it records the step's per-tunnel create time
//! (p50, p99), the kernel memory taken so far (MemAvailable, Slab and
//! Percpu from /proc/meminfo, host-wide: run it on a quiet host), and what
//! other tools pay: a netlink link dump (ours), `ip -br link`, `ip -br
//! addr`, reading /proc/net/dev (what node_exporter reads; the measuring thread's) and walking
//! /proc/sys/net (what `sysctl -a` walks). Then it deletes them all (timed)
//! and does the same for the alternative: one TUN, every tunnel's two
//! addresses and its route on it. Writes `target/bench/tun-scale.json`.
//!
//! The devices live in the bench's namespace, so the host's udev and
//! network managers see none of them; on a host where the gateway runs in
//! the initial namespace each device is also a uevent for them.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use benches::quantile_ms;
use gateway_netio::netlink::{Address, Netlink, Route};
use gateway_netio::tun::Tun;
use labkit::Ns;
use serde_json::{json, Value};

const PREFIX: &str = "s2stun-";
const HOST: Ns = Ns::new(PREFIX, "host");
/// The agent's inner MTU at the default WAN MTU.
const MTU: u32 = gateway_common::TUNNEL_INNER_MTU as u32;
/// 169.254.0.0/16 holds 16,384 /30s.
const MAX_TUNNELS: usize = 16_384;

struct Args {
    tunnels: usize,
    step: usize,
}

fn usage() -> &'static str {
    "usage: tun-scale [--tunnels N (at most 16384)] [--step N]"
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        tunnels: 10_000,
        step: 1_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| anyhow!("{k} needs a value; {}", usage()))?;
        match k.as_str() {
            "--tunnels" => a.tunnels = v.parse().context("--tunnels")?,
            "--step" => a.step = v.parse().context("--step")?,
            _ => bail!("unknown argument {k:?}; {}", usage()),
        }
    }
    if a.tunnels == 0 || a.step == 0 || a.tunnels > MAX_TUNNELS {
        bail!("--tunnels must be 1..={MAX_TUNNELS} and --step at least 1");
    }
    Ok(a)
}

/// Tunnel `i`'s interconnection addresses (ours: the first of each pair)
/// and the customer prefix routed into it.
fn tunnel_addresses(i: usize, ifindex: u32) -> ([Address; 2], Route) {
    let base = u32::try_from(i * 4).unwrap_or(0);
    let v4 = Ipv4Addr::from(u32::from(Ipv4Addr::new(169, 254, 0, 0)) + base + 1);
    let v6 = Ipv6Addr::from(
        u128::from(Ipv6Addr::new(0xfd53, 0x3273, 0x7670, 0, 0, 0, 0, 0)) + (i as u128) * 2,
    );
    let dst = Ipv6Addr::new(0xfd53, 1, u16::try_from(i).unwrap_or(0), 0, 0, 0, 0, 0);
    let mut route = Route::new(IpAddr::V6(dst), 48);
    route.oif = Some(ifindex);
    (
        [
            Address {
                ifindex,
                addr: IpAddr::V4(v4),
                prefix_len: 30,
            },
            Address {
                ifindex,
                addr: IpAddr::V6(v6),
                prefix_len: 127,
            },
        ],
        route,
    )
}

/// MemAvailable, Slab and Percpu from /proc/meminfo, in KiB.
fn meminfo() -> anyhow::Result<[u64; 3]> {
    let text = fs::read_to_string("/proc/meminfo")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| anyhow!("/proc/meminfo has no {name}"))
    };
    Ok([field("MemAvailable")?, field("Slab")?, field("Percpu")?])
}

/// Kernel memory taken since `before`, in MiB: MemAvailable's drop, and
/// the growth of Slab and Percpu.
fn memory_since(before: [u64; 3]) -> anyhow::Result<Value> {
    let now = meminfo()?;
    let mib = |kib: i64| kib as f64 / 1024.0;
    let delta = |i: usize| now[i] as i64 - before[i] as i64;
    Ok(json!({
        "mem_available_drop_mib": mib(-delta(0)),
        "slab_growth_mib": mib(delta(1)),
        "percpu_growth_mib": mib(delta(2)),
    }))
}

fn timed_ms(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// Files under `dir`, recursively (what `sysctl -a` reads, without the
/// reading).
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}

/// What the tools of the host pay with the devices as they are now.
fn tools(nl: &mut Netlink) -> anyhow::Result<Value> {
    let mut links = 0;
    let dump = timed_ms(|| {
        links = nl.list_links()?.len();
        Ok(())
    })?;
    let ip = |args: &[&str]| {
        timed_ms(|| {
            let out = Command::new("ip").args(args).output()?;
            if !out.status.success() {
                bail!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        })
    };
    let mut net_dev_lines = 0;
    let proc_net_dev = timed_ms(|| {
        net_dev_lines = fs::read_to_string("/proc/thread-self/net/dev")?
            .lines()
            .count();
        Ok(())
    })?;
    let mut sysctl_files = 0;
    let sysctl_walk = timed_ms(|| {
        sysctl_files = count_files(Path::new("/proc/sys/net"));
        Ok(())
    })?;
    Ok(json!({
        "links": links,
        "netlink_link_dump_ms": dump,
        "ip_br_link_ms": ip(&["-br", "link"])?,
        "ip_br_addr_ms": ip(&["-br", "addr"])?,
        "proc_net_dev_ms": proc_net_dev,
        "proc_net_dev_lines": net_dev_lines,
        "proc_sys_net_walk_ms": sysctl_walk,
        "proc_sys_net_files": sysctl_files,
    }))
}

/// One TUN per tunnel, as the agent installs them.
fn per_tunnel(args: &Args, nl: &mut Netlink) -> anyhow::Result<Value> {
    let start = meminfo()?;
    let mut tuns = Vec::with_capacity(args.tunnels);
    let mut steps = Vec::new();
    let mut lat = Vec::with_capacity(args.step);
    let began = Instant::now();
    for i in 0..args.tunnels {
        let t = Instant::now();
        let tun = Tun::create(&format!("s2st{i}"), false)?;
        tun.set_persist(true)?;
        gateway_user::sysctl::prepare_tunnel(tun.name())?;
        let (addrs, mut route) = tunnel_addresses(i, 0);
        route.oif = Some(tun.configure(nl, MTU, &addrs)?);
        nl.add_route(&route)?;
        lat.push(t.elapsed());
        tuns.push(tun);
        if (i + 1) % args.step == 0 || i + 1 == args.tunnels {
            let mut step = json!({
                "tunnels": i + 1,
                "create_p50_ms": quantile_ms(&mut lat, 0.5),
                "create_p99_ms": quantile_ms(&mut lat, 0.99),
                "elapsed_s": began.elapsed().as_secs_f64(),
                "memory": memory_since(start)?,
                "tools": tools(nl)?,
            });
            step["kib_per_tunnel"] = json!(
                step["memory"]["mem_available_drop_mib"]
                    .as_f64()
                    .unwrap_or(0.0)
                    * 1024.0
                    / (i + 1) as f64
            );
            eprintln!("tun-scale: one TUN per tunnel: {step}");
            steps.push(step);
            lat.clear();
        }
    }
    // Deleting them: persistence off, then the last descriptor closes.
    let deleting = timed_ms(|| {
        for tun in tuns.drain(..) {
            tun.set_persist(false)?;
        }
        Ok(())
    })?;
    Ok(json!({ "steps": steps, "delete_all_s": deleting / 1000.0 }))
}

/// One TUN carrying every tunnel's addresses and routes.
fn shared(args: &Args, nl: &mut Netlink) -> anyhow::Result<Value> {
    let start = meminfo()?;
    let tun = Tun::create("s2stall", false)?;
    let index = tun.configure(nl, MTU, &[])?;
    let mut steps = Vec::new();
    let mut lat = Vec::with_capacity(args.step);
    let began = Instant::now();
    for i in 0..args.tunnels {
        let t = Instant::now();
        let (addrs, route) = tunnel_addresses(i, index);
        for a in &addrs {
            nl.add_address(a)?;
        }
        nl.add_route(&route)?;
        lat.push(t.elapsed());
        if (i + 1) % args.step == 0 || i + 1 == args.tunnels {
            let step = json!({
                "tunnels": i + 1,
                "create_p50_ms": quantile_ms(&mut lat, 0.5),
                "create_p99_ms": quantile_ms(&mut lat, 0.99),
                "elapsed_s": began.elapsed().as_secs_f64(),
                "memory": memory_since(start)?,
                "tools": tools(nl)?,
            });
            eprintln!("tun-scale: one shared TUN: {step}");
            steps.push(step);
            lat.clear();
        }
    }
    let deleting = timed_ms(|| {
        drop(tun);
        Ok(())
    })?;
    Ok(json!({ "steps": steps, "delete_all_s": deleting / 1000.0 }))
}

fn run(args: Args) -> anyhow::Result<Value> {
    labkit::teardown(PREFIX);
    HOST.create()?;
    // A thread of its own enters the namespace, so that the main thread
    // stays out of it and can delete it (teardown kills what is inside).
    std::thread::spawn(move || measure(&args))
        .join()
        .map_err(|_| anyhow!("the measuring thread panicked"))?
}

fn measure(args: &Args) -> anyhow::Result<Value> {
    // Everything below, and the `ip` commands it spawns, in the namespace.
    labkit::enter_netns(&HOST.name())?;
    let mut nl = Netlink::open()?;
    let before = tools(&mut nl)?;
    let per = per_tunnel(args, &mut nl)?;
    // Let the kernel finish freeing the devices (RCU) before measuring
    // the alternative from a settled baseline.
    std::thread::sleep(Duration::from_secs(3));
    let one = shared(args, &mut nl)?;
    Ok(json!({
        "tunnels": args.tunnels,
        "kernel": fs::read_to_string("/proc/sys/kernel/osrelease")?.trim(),
        "empty_namespace": before,
        "tun_per_tunnel": per,
        "one_shared_tun": one,
    }))
}

fn main() -> ExitCode {
    let _ = ctrlc::set_handler(|| {
        labkit::teardown(PREFIX);
        std::process::exit(130);
    });
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tun-scale: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = run(args).and_then(|r| {
        let out = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(|p| p.join("target/bench"))
            .unwrap_or_default();
        fs::create_dir_all(&out)?;
        let path = out.join("tun-scale.json");
        fs::write(&path, serde_json::to_string_pretty(&r)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("tun-scale: wrote {}", path.display());
        Ok(())
    });
    // The namespace, and with it every device left, goes in all cases.
    labkit::teardown(PREFIX);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tun-scale: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! The data path end to end between two instances of our gateway, each in
//! its own network namespace, with a host behind each:
//!
//! ```text
//!  hA 198.51.100.10 ── lan1 [g1] wan1 192.0.2.1 ── 192.0.2.2 wan2 [g2] lan2 ── hB 203.0.113.10
//!                          tun 169.254.0.0/31  ESP-in-UDP  tun 169.254.0.1/31
//! ```
//!
//! A pair of hand-installed AES-256-GCM SAs (static keys, UDP encapsulation)
//! joins g1 and g2. UDP datagrams from hA to an echo server on hB and back
//! go through (a) the fast path: XDP steering to AF_XDP workers (XDP
//! counters and worker counters must move), and (b) the slow path only: TUN,
//! kernel routes and the raw socket out, ESP on a UDP 4500 socket handed to
//! `SlowPath::inbound_esp` in (as the IKE driver does). The gateways'
//! namespaces keep the kernel's defaults (`ip_forward = 0`, IPv6
//! forwarding off): the kernel settings come from `gateway_user::sysctl`,
//! as in the daemon. A TCP transfer of 20 MB each way and both families
//! checks full-size segments through the tunnel. Everything runs in
//! threads of this process that `setns` into the namespaces; namespaces are
//! removed on drop, even on panic.

use std::fs::File;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gateway_common::{Direction, XSKS_LAN_BASE};
use gateway_config::XdpMode;
use gateway_esp::table::{DataPlane, InboundSaConfig, OutboundSaConfig, SaKeys, SaTable, TunnelId};
use gateway_esp::{Encryption, IpPrefix, OuterHeader, Suite, TrafficSelectors, UdpEncap};
use gateway_netio::netlink::{Address, NeighbourCache, Netlink};
use gateway_netio::tun::Tun;
use gateway_user::dataplane::backend::GatewayDataPlane;
use gateway_user::dataplane::mtu::{lan_config, LanReply};
use gateway_user::dataplane::slowpath::SlowPath;
use gateway_user::dataplane::worker::{
    lan_addresses, SkipLocal, Worker, WorkerConfig, WorkerCountersSnapshot, WorkerDrop, XskSlot,
};
use gateway_user::dataplane::xdp::{self, XdpDataplane};

const TUNNEL: TunnelId = 7;
const SPI_1_TO_2: u32 = 0x0000_1001;
const SPI_2_TO_1: u32 = 0x0000_2002;
const HOST_A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const HOST_B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const G1_WAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const G2_WAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const ECHO_PORT: u16 = 9000;
const HOST_A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
const HOST_B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 0x10);

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The four namespaces, deleted on drop.
struct Lab {
    ha: String,
    g1: String,
    g2: String,
    hb: String,
}

impl Lab {
    fn new(tag: &str) -> Self {
        Self::with_queues(tag, 1)
    }

    /// The lab with `queues` receive and transmit queues on every veth.
    fn with_queues(tag: &str, queues: u32) -> Self {
        let q = queues.to_string();
        let p = format!("s2s-dp-{}-{tag}", std::process::id());
        let lab = Lab {
            ha: format!("{p}-ha"),
            g1: format!("{p}-g1"),
            g2: format!("{p}-g2"),
            hb: format!("{p}-hb"),
        };
        for ns in lab.all() {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // veth pairs with `queues` queues each (one AF_XDP socket serves
        // each queue).
        let pair = |a: &str, ns_a: &str, b: &str, ns_b: &str| {
            run(&[
                "ip",
                "link",
                "add",
                a,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "netns",
                ns_a,
                "type",
                "veth",
                "peer",
                "name",
                b,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "netns",
                ns_b,
            ]);
        };
        pair("ha0", &lab.ha, "lan1", &lab.g1);
        pair("wan1", &lab.g1, "wan2", &lab.g2);
        pair("lan2", &lab.g2, "hb0", &lab.hb);
        let addr = |ns: &str, dev: &str, a: &str| {
            run(&["ip", "-n", ns, "addr", "add", a, "dev", dev]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        };
        addr(&lab.ha, "ha0", "198.51.100.10/24");
        addr(&lab.g1, "lan1", "198.51.100.1/24");
        addr(&lab.g1, "wan1", "192.0.2.1/24");
        addr(&lab.g2, "wan2", "192.0.2.2/24");
        addr(&lab.g2, "lan2", "203.0.113.1/24");
        addr(&lab.hb, "hb0", "203.0.113.10/24");
        for (ns, dev, a) in [
            (&lab.ha, "ha0", "2001:db8:100::10/64"),
            (&lab.g1, "lan1", "2001:db8:100::1/64"),
            (&lab.g2, "lan2", "2001:db8:200::1/64"),
            (&lab.hb, "hb0", "2001:db8:200::10/64"),
        ] {
            run(&["ip", "-n", ns, "addr", "add", a, "dev", dev, "nodad"]);
        }
        let r6 = |ns: &str, via: &str| {
            run(&["ip", "-n", ns, "-6", "route", "add", "default", "via", via])
        };
        r6(&lab.ha, "2001:db8:100::1");
        r6(&lab.hb, "2001:db8:200::1");
        run(&[
            "ip",
            "-n",
            &lab.ha,
            "route",
            "add",
            "default",
            "via",
            "198.51.100.1",
        ]);
        run(&[
            "ip",
            "-n",
            &lab.hb,
            "route",
            "add",
            "default",
            "via",
            "203.0.113.1",
        ]);
        // The gateways stay on the kernel's defaults (forwarding off): what
        // they need, the data path sets on its own interfaces.
        lab
    }

    fn all(&self) -> [&str; 4] {
        [&self.ha, &self.g1, &self.g2, &self.hb]
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.all() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn enter(ns: &str) {
    let f = File::open(format!("/var/run/netns/{ns}")).expect("netns file");
    // SAFETY: setns on a valid namespace fd, for the calling thread only.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// Runs `f` on a thread inside `ns` (threads it spawns stay there).
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        enter(&ns);
        f()
    })
    .join()
    .expect("thread in namespace panicked")
}

fn keys(b: u8) -> SaKeys {
    let suite = Suite::new(Encryption::Aes256Gcm, None).unwrap();
    SaKeys::new(suite, &[b; 36], &[]).unwrap()
}

/// Installs this side's pair of SAs and the route to the far host.
fn install_sas(
    dp: &dyn DataPlane,
    local: Ipv4Addr,
    remote: Ipv4Addr,
    spi_in: u32,
    spi_out: u32,
    far: &[&str],
    udp: bool,
) {
    dp.install_inbound_sa(InboundSaConfig {
        tunnel: TUNNEL,
        spi: spi_in,
        keys: keys(spi_in as u8),
        esn: false,
        replay_window: 1024,
        selectors: TrafficSelectors::any(),
    })
    .unwrap();
    dp.install_outbound_sa(OutboundSaConfig {
        tunnel: TUNNEL,
        spi: spi_out,
        keys: keys(spi_out as u8),
        esn: false,
        outer: OuterHeader {
            src: local.into(),
            dst: remote.into(),
            udp: udp.then(UdpEncap::default),
            ttl: 64,
        },
        lifetime: gateway_esp::Lifetime::NONE,
    })
    .unwrap();
    for f in far {
        dp.install_route(f.parse::<IpPrefix>().unwrap(), TUNNEL)
            .unwrap();
    }
}

/// One gateway: backend, slow path, optionally XDP + a worker per queue.
/// Stops everything in order on drop (workers first so XSKS is emptied).
struct Gateway {
    workers: Vec<Worker>,
    xdp: Vec<Arc<Mutex<XdpDataplane>>>,
    dp: Arc<GatewayDataPlane>,
    slow: Arc<Mutex<SlowPath>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.stop();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        lock(&self.slow).shutdown();
        self.xdp.clear();
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct GwSpec {
    wan: &'static str,
    lan: &'static str,
    local: Ipv4Addr,
    remote: Ipv4Addr,
    tun_addr: Ipv4Addr,
    spi_in: u32,
    spi_out: u32,
    far: &'static [&'static str],
    /// UDP encapsulation (RFC 3948) or plain ESP.
    udp: bool,
    /// Workers: one per queue, 0..queues.
    queues: u32,
}

fn start_gateway(ns: &str, spec: GwSpec, fast: bool) -> Gateway {
    in_ns(ns, move || {
        gateway_user::sysctl::prepare_lan(spec.lan).expect("LAN kernel settings");
        let table = Arc::new(SaTable::new());
        let mut dp = GatewayDataPlane::new(Arc::clone(&table));
        let mut xdp = Vec::new();
        if fast {
            // One loaded object per interface: both programs redirect to
            // XSKS[rx queue], and each interface has a queue 0.
            for (prog, iface) in [("wan_ingress", spec.wan), ("lan_ingress", spec.lan)] {
                let mut x = XdpDataplane::load_unattached().expect("load XDP");
                x.attach(prog, iface, XdpMode::Native).expect("attach");
                if prog == "wan_ingress" {
                    x.set_local_addrs(&[spec.local.into()]).unwrap();
                }
                let x = Arc::new(Mutex::new(x));
                dp.add_maps(x.clone());
                xdp.push(x);
            }
        }
        let mut nl = Netlink::open().unwrap();
        let lan_index = nl.link_by_name(spec.lan).unwrap().index;
        let (lan_v4, lan_v6) = lan_addresses(&mut nl, lan_index).unwrap();
        if fast {
            lock(&xdp[1])
                .set_lan_config(lan_config(
                    lan_v4,
                    lan_v6,
                    100,
                    20,
                    LanReply::for_driver(&xdp::driver_name(spec.lan).unwrap()),
                ))
                .unwrap();
        }
        let tun = Tun::create("s2stun0", false).unwrap();
        gateway_user::sysctl::prepare_tunnel("s2stun0").expect("TUN kernel settings");
        let tun_if = tun
            .configure(
                &mut nl,
                1400,
                &[Address {
                    ifindex: 0,
                    addr: spec.tun_addr.into(),
                    prefix_len: 31,
                }],
            )
            .unwrap();
        dp.set_netlink(nl);
        dp.set_tunnel_interface(TUNNEL, tun_if);
        let dp = Arc::new(dp);
        install_sas(
            &*dp,
            spec.local,
            spec.remote,
            spec.spi_in,
            spec.spi_out,
            spec.far,
            spec.udp,
        );
        let mut slow =
            SlowPath::with_tunnel_params(Arc::clone(&table), Arc::clone(dp.tunnel_params()))
                .unwrap();
        slow.add_tunnel(TUNNEL, tun).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut workers = Vec::new();
        if fast {
            let (cache, mut refresher) = NeighbourCache::new(256);
            refresher.want(spec.remote.into());
            let s = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || {
                let mut nl = Netlink::open().unwrap();
                refresher
                    .run(&mut nl, Duration::from_millis(200), &s)
                    .expect("neighbour refresher");
            }));
            // Our own TUN address never goes to the neighbour cache.
            let (resolver, local) = SkipLocal::new(cache);
            local.set(vec![spec.tun_addr.into()]);
            for queue in 0..spec.queues {
                let mut cfg = WorkerConfig::new(spec.wan, spec.lan, queue);
                cfg.tunnel_params = Some(Arc::clone(dp.tunnel_params()));
                workers.push(
                    Worker::spawn(
                        &cfg,
                        Arc::clone(&table),
                        resolver.clone(),
                        slow.handle(),
                        Some(XskSlot {
                            maps: xdp[0].clone(),
                            key: queue,
                        }),
                        Some(XskSlot {
                            maps: xdp[1].clone(),
                            key: XSKS_LAN_BASE + queue,
                        }),
                        Arc::clone(&stop),
                    )
                    .expect("worker"),
                );
            }
            let d = Arc::clone(&dp);
            let s = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    d.sync_replay_edges().expect("replay sync");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }));
        }
        Gateway {
            workers,
            xdp,
            dp,
            slow: Arc::new(Mutex::new(slow)),
            stop,
            threads,
        }
    })
}

/// What the IKE driver does with ESP on its 4500 socket when XDP does not
/// steer it: hand it to the slow path.
fn spawn_nat_t_listener(ns: &str, gw: &Gateway, local: Ipv4Addr) -> JoinHandle<()> {
    let (ns, slow, stop) = (ns.to_owned(), Arc::clone(&gw.slow), Arc::clone(&gw.stop));
    std::thread::spawn(move || {
        enter(&ns);
        let sock = UdpSocket::bind((local, 4500)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let dst = SocketAddr::from((local, 4500));
        let mut buf = vec![0u8; 65535];
        while !stop.load(Ordering::Relaxed) {
            let (n, src) = match sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue
                }
                Err(e) => panic!("recv on 4500: {e}"),
            };
            if n >= 4 && buf[..4] != [0, 0, 0, 0] {
                let _ = lock(&slow).inbound_esp(&buf[..n], src, dst);
            }
        }
    })
}

/// UDP echo server on host B until `stop`; counts datagrams.
fn spawn_echo(
    ns: &str,
    bind: SocketAddr,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> JoinHandle<()> {
    let ns = ns.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        enter(&ns);
        let sock = UdpSocket::bind(bind).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            match sock.recv_from(&mut buf) {
                Ok((n, src)) => {
                    count.fetch_add(1, Ordering::Relaxed);
                    // Bulk datagrams (first byte 0xbb) are only counted.
                    if buf[0] != 0xbb {
                        let _ = sock.send_to(&buf[..n], src);
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("echo recv: {e}"),
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("echo server up");
    h
}

/// From host A: waits (bounded) for a first echo, then requires `n` echoes
/// in a row, each within 2 s. Returns the number of warm-up attempts.
fn ping_pong(ns: &str, n: usize) -> usize {
    ping_pong_to(ns, HOST_A.into(), (HOST_B, ECHO_PORT).into(), n)
}

/// [`ping_pong`] between any pair of addresses.
fn ping_pong_to(ns: &str, src: IpAddr, dst: SocketAddr, n: usize) -> usize {
    in_ns(ns, move || {
        let sock = UdpSocket::bind((src, 0)).unwrap();
        sock.connect(dst).unwrap();
        let mut buf = [0u8; 2048];
        let mut warmup = 0;
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        loop {
            warmup += 1;
            assert!(warmup <= 50, "no echo from {dst} after 50 attempts");
            sock.send(b"warm-up").unwrap();
            if sock.recv(&mut buf).is_ok() {
                break;
            }
        }
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for i in 0..n {
            let msg = format!("datagram {i} through the tunnel");
            sock.send(msg.as_bytes()).unwrap();
            loop {
                let got = sock
                    .recv(&mut buf)
                    .unwrap_or_else(|e| panic!("echo {i}: {e}"));
                // A late warm-up echo may still arrive first.
                if &buf[..got] == b"warm-up" {
                    continue;
                }
                assert_eq!(&buf[..got], msg.as_bytes());
                break;
            }
        }
        warmup
    })
}

/// Sends `n` small datagrams from A to B as fast as the socket goes and
/// returns (seconds taken to send, datagrams the echo server counted after
/// a settle time). Informational only.
fn burst(ns: &str, n: u64, received: &AtomicU64) -> (f64, u64) {
    let before = received.load(Ordering::Relaxed);
    let secs = in_ns(ns, move || {
        let sock = UdpSocket::bind((HOST_A, 0)).unwrap();
        sock.connect((HOST_B, ECHO_PORT)).unwrap();
        let msg = [0xbbu8; 64];
        let t = Instant::now();
        for _ in 0..n {
            let _ = sock.send(&msg);
        }
        t.elapsed().as_secs_f64()
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = received.load(Ordering::Relaxed);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let now = received.load(Ordering::Relaxed);
        if now == last && now > before {
            break;
        }
        last = now;
    }
    (secs, received.load(Ordering::Relaxed) - before)
}

fn g1_spec() -> GwSpec {
    GwSpec {
        wan: "wan1",
        lan: "lan1",
        local: G1_WAN,
        remote: G2_WAN,
        tun_addr: Ipv4Addr::new(169, 254, 0, 0),
        spi_in: SPI_2_TO_1,
        spi_out: SPI_1_TO_2,
        far: &["203.0.113.0/24", "2001:db8:200::/64"],
        udp: true,
        queues: 1,
    }
}

fn g2_spec() -> GwSpec {
    GwSpec {
        wan: "wan2",
        lan: "lan2",
        local: G2_WAN,
        remote: G1_WAN,
        tun_addr: Ipv4Addr::new(169, 254, 0, 1),
        spi_in: SPI_1_TO_2,
        spi_out: SPI_2_TO_1,
        far: &["198.51.100.0/24", "2001:db8:100::/64"],
        udp: true,
        queues: 1,
    }
}

fn worker_counters(g: &Gateway) -> WorkerCountersSnapshot {
    g.workers[0].counters()
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn fast_path_carries_udp_between_hosts_through_two_gateways() {
    fast_path("fast", true);
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn fast_path_carries_plain_esp_between_two_gateways() {
    fast_path("fastesp", false);
}

/// The fast-path scenario with UDP-encapsulated or plain ESP.
fn fast_path(tag: &str, udp: bool) {
    let lab = Lab::new(tag);
    let g1 = start_gateway(&lab.g1, GwSpec { udp, ..g1_spec() }, true);
    let g2 = start_gateway(&lab.g2, GwSpec { udp, ..g2_spec() }, true);
    // g1's TUN may already have tunnelled IPv6 link-local chatter (router
    // solicitations, MLD) while g2 had no SA yet: those count as UnknownSpi
    // at g2. Only drops after both gateways are up matter.
    let xdp_drops = |g: &Gateway| -> Vec<(gateway_common::DropReason, u64)> {
        lock(&g.xdp[0]).drops().unwrap()
    };
    let (drops1, drops2) = (xdp_drops(&g1), xdp_drops(&g2));
    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicU64::new(0));
    let echo = spawn_echo(
        &lab.hb,
        (Ipv4Addr::UNSPECIFIED, ECHO_PORT).into(),
        Arc::clone(&stop),
        Arc::clone(&echoed),
    );
    let echo6 = spawn_echo(
        &lab.hb,
        (HOST_B6, ECHO_PORT).into(),
        Arc::clone(&stop),
        Arc::new(AtomicU64::new(0)),
    );

    // The first datagrams may take the slow path while neighbours resolve;
    // then the fast path must carry everything both ways.
    // Bounded by count: up to 50 exchanges 100 ms apart until one crossed
    // both workers in both directions.
    let mut established = false;
    for _ in 0..50 {
        let (a, b) = (worker_counters(&g1), worker_counters(&g2));
        ping_pong(&lab.ha, 1);
        let (c, d) = (worker_counters(&g1), worker_counters(&g2));
        if c.wan_tx > a.wan_tx && c.lan_tx > a.lan_tx && d.wan_tx > b.wan_tx && d.lan_tx > b.lan_tx
        {
            established = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        established,
        "fast path never carried an exchange end to end"
    );
    let w1_before = worker_counters(&g1);
    let w2_before = worker_counters(&g2);
    ping_pong(&lab.ha, 20);
    let (w1, w2) = (worker_counters(&g1), worker_counters(&g2));
    eprintln!("g1 worker {w1:?}\ng2 worker {w2:?}");
    // g1: hA's datagrams encrypted out of WAN, hB's answers decrypted to LAN.
    assert!(w1.wan_tx - w1_before.wan_tx >= 20, "{w1:?}");
    assert!(w1.lan_tx - w1_before.lan_tx >= 20, "{w1:?}");
    assert!(w2.wan_tx - w2_before.wan_tx >= 20, "{w2:?}");
    assert!(w2.lan_tx - w2_before.lan_tx >= 20, "{w2:?}");
    // hA's stack leaves UDP checksums partial on veth: the worker completes them.
    assert!(w1.checksums_completed >= 20, "{w1:?}");
    for w in [&w1, &w2] {
        assert!(w.drops.iter().all(|d| *d == 0), "drops {w:?}");
    }
    // XDP steered them: STATS of the tunnel moved in both directions.
    for (g, before) in [(&g1, &drops1), (&g2, &drops2)] {
        {
            let wan = lock(&g.xdp[0]);
            let lan = lock(&g.xdp[1]);
            let inb = wan.tunnel_stats(TUNNEL, Direction::Inbound).unwrap();
            let out = lan.tunnel_stats(TUNNEL, Direction::Outbound).unwrap();
            assert!(inb.packets >= 20 && inb.no_socket == 0, "{inb:?}");
            assert!(out.packets >= 20 && out.no_socket == 0, "{out:?}");
        }
        assert_eq!(
            &xdp_drops(g),
            before,
            "XDP dropped packets of the exchanges"
        );
    }
    // The tunnel counters of the shared table saw the same packets.
    let c1 = g1.dp.tunnel_counters(TUNNEL).unwrap();
    assert!(c1.tx_packets >= 20 && c1.rx_packets >= 20, "{c1:?}");
    assert_eq!(c1.rx_drops, 0);
    // The replay right edge reached SA_IN.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let v = lock(&g1.xdp[0]).sa_in(SPI_2_TO_1).unwrap().unwrap();
        if v.replay_right_edge >= 20 {
            assert_eq!(v.tunnel_id, TUNNEL);
            break;
        }
        assert!(Instant::now() < deadline, "right edge not synced: {v:?}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Traffic to the gateway itself (BGP-like: g2's TUN address to g1's)
    // crosses the tunnel and is delivered locally through g1's TUN.
    let got = in_ns(&lab.g1, || {
        let s = UdpSocket::bind((Ipv4Addr::new(169, 254, 0, 0), 1790)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s
    });
    let mut ok = false;
    for _ in 0..25 {
        in_ns(&lab.g2, || {
            let s = UdpSocket::bind((Ipv4Addr::new(169, 254, 0, 1), 0)).unwrap();
            s.send_to(b"open", (Ipv4Addr::new(169, 254, 0, 0), 1790))
                .unwrap();
        });
        let mut b = [0u8; 16];
        if let Ok((n, src)) = got.recv_from(&mut b) {
            assert_eq!(&b[..n], b"open");
            assert_eq!(src.ip(), IpAddr::V4(Ipv4Addr::new(169, 254, 0, 1)));
            ok = true;
            break;
        }
    }
    assert!(ok, "local delivery through the tunnel failed");
    // The worker counts after its TUN write returns, which can be after the
    // socket above woke up: wait for it (bounded).
    let deadline = Instant::now() + Duration::from_secs(2);
    while worker_counters(&g1).to_tun <= w1.to_tun {
        assert!(
            Instant::now() < deadline,
            "local delivery not via the worker's TUN hand-off"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // And the host traffic still flows afterwards.
    ping_pong(&lab.ha, 3);

    // Inner IPv6 through the same (IPv4-outer) tunnel, steered by ROUTES_V6.
    let ping6 = |n| ping_pong_to(&lab.ha, HOST_A6.into(), (HOST_B6, ECHO_PORT).into(), n);
    let mut established = false;
    for _ in 0..50 {
        let (a, b) = (worker_counters(&g1), worker_counters(&g2));
        ping6(1);
        let (c, d) = (worker_counters(&g1), worker_counters(&g2));
        if c.wan_tx > a.wan_tx && c.lan_tx > a.lan_tx && d.wan_tx > b.wan_tx && d.lan_tx > b.lan_tx
        {
            established = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(established, "fast path never carried an IPv6 exchange");
    let (a, b) = (worker_counters(&g1), worker_counters(&g2));
    ping6(10);
    let (c, d) = (worker_counters(&g1), worker_counters(&g2));
    assert!(
        c.wan_tx - a.wan_tx >= 10 && c.lan_tx - a.lan_tx >= 10,
        "{c:?}"
    );
    assert!(
        d.wan_tx - b.wan_tx >= 10 && d.lan_tx - b.lan_tx >= 10,
        "{d:?}"
    );
    assert!(c.checksums_completed - a.checksums_completed >= 10, "{c:?}");
    for w in [&c, &d] {
        assert!(w.drops.iter().all(|d| *d == 0), "drops {w:?}");
    }

    let (secs, rcvd) = burst(&lab.ha, 100_000, &echoed);
    eprintln!(
        "fast path burst: 100000 x 64 B sent in {secs:.3} s ({:.0} pps offered), {rcvd} received at hB",
        100_000.0 / secs
    );
    eprintln!(
        "after the burst: g1 {:?}\n                 g2 {:?}",
        worker_counters(&g1),
        worker_counters(&g2)
    );

    // The replay window's right edge reached g2's SA_IN, so XDP itself now
    // drops a packet far left of the window: forge one with sequence
    // number 1 from the known keys and send it from g1's namespace.
    let edge_deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let v = lock(&g2.xdp[0]).sa_in(SPI_1_TO_2).unwrap().unwrap();
        if v.replay_right_edge > 2048 {
            break;
        }
        assert!(
            Instant::now() < edge_deadline,
            "right edge {v:?} after the burst"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let replayed_before = lock(&g2.xdp[0])
        .drop_count(gateway_common::DropReason::ReplayLeftOfWindow)
        .unwrap();
    let decap_before = worker_counters(&g2).dropped(WorkerDrop::Decap);
    in_ns(&lab.g1, move || {
        let forge = Arc::new(SaTable::new());
        forge
            .install_outbound(&OutboundSaConfig {
                tunnel: TUNNEL,
                spi: SPI_1_TO_2,
                keys: keys(SPI_1_TO_2 as u8),
                esn: false,
                outer: OuterHeader {
                    src: G1_WAN.into(),
                    dst: G2_WAN.into(),
                    udp: udp.then(UdpEncap::default),
                    ttl: 64,
                },
                lifetime: gateway_esp::Lifetime::NONE,
            })
            .unwrap();
        let mut buf = vec![0u8; 512];
        let inner = 128..128 + 28;
        buf[128] = 0x45;
        buf[130..132].copy_from_slice(&28u16.to_be_bytes());
        buf[136] = 64;
        buf[137] = 17;
        buf[140..144].copy_from_slice(&HOST_A.octets());
        buf[144..148].copy_from_slice(&HOST_B.octets());
        let e = forge.encap(TUNNEL, &mut buf, inner).unwrap();
        assert_eq!(e.seq, 1);
        let sender = SlowPath::new(forge).unwrap();
        sender.handle().send_outer(&buf[e.packet]).unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(2);
    while lock(&g2.xdp[0])
        .drop_count(gateway_common::DropReason::ReplayLeftOfWindow)
        .unwrap()
        == replayed_before
    {
        assert!(
            Instant::now() < deadline,
            "XDP did not drop the replayed packet"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Dropped in XDP: the worker never saw it.
    assert_eq!(
        worker_counters(&g2).dropped(WorkerDrop::Decap),
        decap_before
    );

    stop.store(true, Ordering::Relaxed);
    echo.join().unwrap();
    echo6.join().unwrap();
    drop(g1);
    drop(g2);
    drop(lab);
}

/// Two queues on every veth and a worker per queue on g1: the flows from
/// hA spread over both LAN queues, so both workers encrypt for the one
/// outbound SA at once. g2 runs no gateway here: a UDP socket on its port
/// 4500 takes the ESP-in-UDP as it arrives. Every sequence number arrives
/// exactly once (the SA's shared counter never gives one number to two
/// packets), every packet decrypts (here, with the SA's key and a replay
/// window), and each flow arrives whole and in order: a flow stays on one
/// queue and one worker, only different flows interleave.
#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn two_workers_encrypt_for_one_sa_without_reusing_sequence_numbers() {
    const FLOWS: u16 = 16;
    const PER_FLOW: u32 = 200;
    const MARK: &[u8; 4] = b"2wk1";
    let lab = Lab::with_queues("mq", 2);
    // NAPI on g2's WAN keeps each queue's packets in order (without XDP or
    // GRO, veth hands them to the backlog of whichever CPU sent them).
    run(&[
        "ip", "netns", "exec", &lab.g2, "ethtool", "-K", "wan2", "gro", "on",
    ]);
    let g1 = start_gateway(
        &lab.g1,
        GwSpec {
            queues: 2,
            ..g1_spec()
        },
        true,
    );
    assert_eq!(g1.workers.len(), 2);
    let stop = Arc::new(AtomicBool::new(false));
    let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let reader = {
        let (stop, got, ns) = (Arc::clone(&stop), Arc::clone(&got), lab.g2.clone());
        std::thread::spawn(move || {
            enter(&ns);
            let sock = UdpSocket::bind((G2_WAN, 4500)).unwrap();
            // Room for the whole run: this thread must not be what loses packets.
            let size: libc::c_int = 8 << 20;
            // SAFETY: a live c_int and its size, on our own socket.
            let rc = unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    std::ptr::from_ref(&size).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "SO_RCVBUFFORCE");
            sock.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    lock(&got).push(buf[..n].to_vec());
                }
            }
        })
    };
    let socks = in_ns(&lab.ha, || {
        (0..FLOWS)
            .map(|_| {
                let s = UdpSocket::bind((HOST_A, 0)).unwrap();
                s.connect((HOST_B, ECHO_PORT)).unwrap();
                s
            })
            .collect::<Vec<_>>()
    });
    // Warm up until both workers have encrypted (neighbours resolved, the
    // flows hashed onto both queues): bounded, 50 rounds 100 ms apart.
    let mut both = false;
    for _ in 0..50 {
        for s in &socks {
            let _ = s.send(b"warm-up");
        }
        std::thread::sleep(Duration::from_millis(100));
        if g1.workers.iter().all(|w| w.counters().wan_tx > 0) {
            both = true;
            break;
        }
    }
    assert!(
        both,
        "the flows never reached both workers: {:?}",
        g1.workers.iter().map(Worker::counters).collect::<Vec<_>>()
    );
    std::thread::sleep(Duration::from_millis(300));
    lock(&got).clear();
    let before: Vec<u64> = g1.workers.iter().map(|w| w.counters().wan_tx).collect();
    for n in 0..PER_FLOW {
        for (flow, s) in socks.iter().enumerate() {
            let mut payload = MARK.to_vec();
            payload.extend_from_slice(&(flow as u16).to_be_bytes());
            payload.extend_from_slice(&n.to_be_bytes());
            s.send(&payload).unwrap();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let total = usize::from(FLOWS) * PER_FLOW as usize;
    let deadline = Instant::now() + Duration::from_secs(10);
    while lock(&got).len() < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Stragglers of the warm-up, or duplicates, would show up here.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let per_worker: Vec<u64> = g1
        .workers
        .iter()
        .zip(&before)
        .map(|(w, b)| w.counters().wan_tx - b)
        .collect();
    eprintln!("packets encrypted per worker: {per_worker:?}");
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "one worker carried every flow: {per_worker:?}"
    );

    let table = SaTable::new();
    table
        .install_inbound(&InboundSaConfig {
            tunnel: TUNNEL,
            spi: SPI_1_TO_2,
            keys: keys(SPI_1_TO_2 as u8),
            esn: false,
            replay_window: 4096,
            selectors: TrafficSelectors::any(),
        })
        .unwrap();
    let mut seqs = std::collections::HashSet::new();
    let mut next = vec![0u32; usize::from(FLOWS)];
    let mut out_of_order = 0;
    let mut ours = 0;
    for mut d in std::mem::take(&mut *lock(&got)) {
        assert!(d.len() > 8, "a datagram too short for ESP: {d:?}");
        assert_eq!(d[..4], SPI_1_TO_2.to_be_bytes(), "another SPI");
        let seq = u32::from_be_bytes(d[4..8].try_into().unwrap());
        assert!(seqs.insert(seq), "sequence number {seq} sent twice");
        let len = d.len();
        let r = table
            .decap_esp(&mut d, 0..len)
            .unwrap_or_else(|e| panic!("ESP with sequence {seq} does not decrypt: {e:?}"));
        let inner = &d[r.decap.inner];
        // IPv4 (no options) + UDP: the payload from byte 28.
        let Some(payload) = inner.get(28..) else {
            continue;
        };
        if !payload.starts_with(MARK) || payload.len() < 10 {
            continue;
        }
        ours += 1;
        let flow = usize::from(u16::from_be_bytes([payload[4], payload[5]]));
        let n = u32::from_be_bytes(payload[6..10].try_into().unwrap());
        if n != next[flow] {
            out_of_order += 1;
        }
        next[flow] = next[flow].max(n + 1);
    }
    assert_eq!(ours, total, "flows' packets received (of {total})");
    assert!(
        next.iter().all(|&n| n == PER_FLOW),
        "a flow lost packets: {next:?}"
    );
    assert_eq!(out_of_order, 0, "packets of one flow reordered");
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn slow_path_carries_udp_between_hosts_without_xdp() {
    let lab = Lab::new("slow");
    let g1 = start_gateway(&lab.g1, g1_spec(), false);
    let g2 = start_gateway(&lab.g2, g2_spec(), false);
    let l1 = spawn_nat_t_listener(&lab.g1, &g1, G1_WAN);
    let l2 = spawn_nat_t_listener(&lab.g2, &g2, G2_WAN);
    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicU64::new(0));
    let echo = spawn_echo(
        &lab.hb,
        (Ipv4Addr::UNSPECIFIED, ECHO_PORT).into(),
        Arc::clone(&stop),
        Arc::clone(&echoed),
    );
    let echo6 = spawn_echo(
        &lab.hb,
        (HOST_B6, ECHO_PORT).into(),
        Arc::clone(&stop),
        Arc::new(AtomicU64::new(0)),
    );

    ping_pong(&lab.ha, 20);
    ping_pong_to(&lab.ha, HOST_A6.into(), (HOST_B6, ECHO_PORT).into(), 10);
    for g in [&g1, &g2] {
        let s = lock(&g.slow).counters();
        eprintln!("slow path {s:?}");
        assert!(s.tun_rx >= 30 && s.raw_tx >= 30 && s.tun_tx >= 30, "{s:?}");
        assert_eq!(
            s.raw_tx_errors + s.encap_errors + s.tun_tx_errors + s.inbound_drops,
            0
        );
        let c = g.dp.tunnel_counters(TUNNEL).unwrap();
        assert!(c.tx_packets >= 30 && c.rx_packets >= 30, "{c:?}");
    }
    // The kernel route into the TUN is the backend's (protocol 196; FRR's
    // rt_protos.d names that number "static", so filter by number).
    let routes = Command::new("ip")
        .args([
            "-n",
            &lab.g1,
            "route",
            "show",
            "203.0.113.0/24",
            "proto",
            "196",
        ])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(routes.contains("s2stun0"), "{routes}");
    let (secs, rcvd) = burst(&lab.ha, 20_000, &echoed);
    eprintln!("slow path burst: 20000 x 64 B sent in {secs:.3} s, {rcvd} received at hB");
    // Withdrawing the route removes it (and traffic stops being tunnelled).
    g1.dp
        .withdraw_route("203.0.113.0/24".parse().unwrap(), TUNNEL)
        .unwrap();
    let routes = Command::new("ip")
        .args([
            "-n",
            &lab.g1,
            "route",
            "show",
            "203.0.113.0/24",
            "proto",
            "196",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&routes.stdout).trim().is_empty());

    let (secs, rcvd) = burst(&lab.ha, 20_000, &echoed);
    eprintln!(
        "slow path burst after withdraw: 20000 sent in {secs:.3} s, {rcvd} received (expect 0)"
    );
    assert_eq!(rcvd, 0);
    stop.store(true, Ordering::Relaxed);
    echo.join().unwrap();
    echo6.join().unwrap();
    drop(g1);
    drop(g2);
    l1.join().unwrap();
    l2.join().unwrap();
    drop(lab);
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn slow_path_carries_plain_esp_without_xdp() {
    let lab = Lab::new("esp");
    let plain = |s: GwSpec| GwSpec { udp: false, ..s };
    let g1 = start_gateway(&lab.g1, plain(g1_spec()), false);
    let g2 = start_gateway(&lab.g2, plain(g2_spec()), false);
    // The raw ESP sockets must be opened inside each gateway's namespace.
    for (ns, g) in [(&lab.g1, &g1), (&lab.g2, &g2)] {
        let slow = Arc::clone(&g.slow);
        in_ns(ns, move || lock(&slow).spawn_esp_receiver().unwrap());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let echo = spawn_echo(
        &lab.hb,
        (Ipv4Addr::UNSPECIFIED, ECHO_PORT).into(),
        Arc::clone(&stop),
        Arc::new(AtomicU64::new(0)),
    );
    let echo6 = spawn_echo(
        &lab.hb,
        (HOST_B6, ECHO_PORT).into(),
        Arc::clone(&stop),
        Arc::new(AtomicU64::new(0)),
    );
    ping_pong(&lab.ha, 10);
    ping_pong_to(&lab.ha, HOST_A6.into(), (HOST_B6, ECHO_PORT).into(), 5);
    for g in [&g1, &g2] {
        let s = lock(&g.slow).counters();
        eprintln!("slow path (plain ESP) {s:?}");
        assert!(s.raw_tx >= 15 && s.tun_tx >= 15, "{s:?}");
        assert_eq!(
            s.raw_tx_errors + s.encap_errors + s.tun_tx_errors,
            0,
            "{s:?}"
        );
        let c = g.dp.tunnel_counters(TUNNEL).unwrap();
        assert!(c.tx_packets >= 15 && c.rx_packets >= 15, "{c:?}");
        assert_eq!(c.rx_drops, 0);
    }
    stop.store(true, Ordering::Relaxed);
    echo.join().unwrap();
    echo6.join().unwrap();
    drop(g1);
    drop(g2);
    drop(lab);
}

/// Reads a namespace's sysctl (through /proc/sys of a thread inside it).
fn sysctl_in(ns: &str, path: &'static str) -> String {
    in_ns(ns, move || {
        std::fs::read_to_string(format!("/proc/sys/{path}"))
            .unwrap()
            .trim()
            .to_owned()
    })
}

/// Sends `len` bytes over TCP from `client_ns` to a server at `addr` in
/// `server_ns`; returns the bytes the server received and their sum. A
/// stall fails through the socket timeouts (bounded), not by hanging.
fn tcp_transfer(server_ns: &str, client_ns: &str, addr: SocketAddr, len: usize) -> (usize, u64) {
    use std::io::{Read, Write};
    let (tx, rx) = std::sync::mpsc::channel();
    let sns = server_ns.to_owned();
    let server = std::thread::spawn(move || {
        enter(&sns);
        let l = std::net::TcpListener::bind(addr).unwrap();
        tx.send(()).unwrap();
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = vec![0u8; 65536];
        let (mut n, mut sum) = (0usize, 0u64);
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => {
                    sum += buf[..k].iter().map(|b| u64::from(*b)).sum::<u64>();
                    n += k;
                }
                Err(e) => panic!("server read after {n} bytes: {e}"),
            }
        }
        (n, sum)
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("server up");
    in_ns(client_ns, move || {
        let mut c = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        c.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let chunk: Vec<u8> = (0..65536u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut left = len;
        while left > 0 {
            let k = left.min(chunk.len());
            c.write_all(&chunk[..k])
                .unwrap_or_else(|e| panic!("client write with {left} bytes left: {e}"));
            left -= k;
        }
        c.shutdown(std::net::Shutdown::Write).unwrap();
        // Wait for the server to close (it read everything).
        let mut b = [0u8; 1];
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = c.read(&mut b);
    });
    server.join().expect("server thread")
}

/// TCP with full-size segments through the fast path, 20 MB each way and
/// both families, on gateways whose namespaces keep forwarding off: MSS
/// clamping keeps the segments within the tunnel's inner MTU.
#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn tcp_20_mb_each_way_with_forwarding_off() {
    const LEN: usize = 20 * 1024 * 1024;
    let lab = Lab::new("tcp");
    for g in [&lab.g1, &lab.g2] {
        assert_eq!(sysctl_in(g, "net/ipv4/ip_forward"), "0");
        assert_eq!(sysctl_in(g, "net/ipv6/conf/all/forwarding"), "0");
    }
    let g1 = start_gateway(&lab.g1, g1_spec(), true);
    let g2 = start_gateway(&lab.g2, g2_spec(), true);
    // Neighbours resolve first (bounded warm-up inside ping_pong).
    let stop = Arc::new(AtomicBool::new(false));
    let echo = spawn_echo(
        &lab.hb,
        (Ipv4Addr::UNSPECIFIED, ECHO_PORT).into(),
        Arc::clone(&stop),
        Arc::new(AtomicU64::new(0)),
    );
    ping_pong(&lab.ha, 1);
    stop.store(true, Ordering::Relaxed);
    echo.join().unwrap();

    let chunk_sum: u64 = (0..65536u32).map(|i| u64::from((i * 31 % 251) as u8)).sum();
    let want_sum = chunk_sum * (LEN / 65536) as u64;
    let mut port = 5201;
    for (a, b) in [
        (IpAddr::V4(HOST_A), IpAddr::V4(HOST_B)),
        (IpAddr::V6(HOST_A6), IpAddr::V6(HOST_B6)),
    ] {
        for (server_ns, client_ns, server) in [(&lab.hb, &lab.ha, b), (&lab.ha, &lab.hb, a)] {
            let t = Instant::now();
            let (n, sum) = tcp_transfer(server_ns, client_ns, SocketAddr::new(server, port), LEN);
            port += 1;
            eprintln!(
                "TCP to {server}: {n} bytes in {:.2} s",
                t.elapsed().as_secs_f64()
            );
            assert_eq!(n, LEN, "TCP to {server}");
            assert_eq!(sum, want_sum, "TCP to {server}: content");
        }
    }
    // The SYNs were clamped (both gateways see SYN and SYN-ACK, one way each).
    let (c1, c2) = (
        g1.dp.tunnel_params().clamped_syns(),
        g2.dp.tunnel_params().clamped_syns(),
    );
    assert!(c1 >= 4 && c2 >= 4, "clamped SYNs g1 {c1} g2 {c2}");
    // The tunnel's inner MTU came from the suite (AES-GCM, IPv4, NAT-T).
    assert_eq!(g1.dp.tunnel_inner_mtu(TUNNEL), Some(1438));
    let (w1, w2) = (worker_counters(&g1), worker_counters(&g2));
    eprintln!("g1 worker {w1:?}\ng2 worker {w2:?}");
    for w in [&w1, &w2] {
        assert_eq!(w.dropped(WorkerDrop::TooBig), 0, "{w:?}");
    }
    // Still on the defaults: nothing global was turned on.
    for g in [&lab.g1, &lab.g2] {
        assert_eq!(sysctl_in(g, "net/ipv4/ip_forward"), "0");
        assert_eq!(sysctl_in(g, "net/ipv6/conf/all/forwarding"), "0");
    }
}

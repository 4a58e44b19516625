//! Red-team tests against the running daemon: `s2s-gateway run` in a
//! namespace, driven through its HTTP API, with a customer gateway that is
//! our own IKE and ESP engines (`s2s-loadgen`) and so can send whatever a
//! hostile customer would: spoofed inner sources, traffic across volume
//! rekeys, thousands of connections created and deleted.
//!
//! Topology (namespaces `s2shp<pid><tag>-*`, removed even on panic):
//! `vpc` (198.51.100.10) — lan0 `gw` wan0 (192.0.2.1) — `cgw` (192.0.2.2).

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use gateway_user::dataplane::packet::{checksum, udp, Ipv4, IPPROTO_UDP};
use labkit::gateway::{metric, Api, Daemon, NsThread};
use labkit::Ns;
use s2s_loadgen::{Customer, PeerSpec};
use serde_json::{json, Value};

const TOKEN: &str = "hostile-peers-test-token";
const PRIVATE_NETWORK: &str = "11111111-2222-4333-8444-555555555555";
const IPAM_V4: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const GW_WAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CGW_WAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const VPC_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The customer's network, the only `prefix_filter_in` of the policy.
const REMOTE_HOST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const PROBE_PORT: u16 = 9000;
const METRICS: &str = "http://127.0.0.1:9108/metrics";

/// Removes the namespaces, the pinned maps and the state of one test.
struct Cleanup {
    prefix: &'static str,
    pin_dir: PathBuf,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        labkit::teardown(self.prefix);
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The three namespaces with the daemon running in `gw`. Field order is
/// drop order: the daemon stops before its namespaces go.
struct Site {
    api: Api,
    daemon: Daemon,
    vpc: Ns,
    gw: Ns,
    cgw: Ns,
    _cleanup: Cleanup,
}

impl Site {
    /// `extra` is appended to the daemon's config (e.g. a `[child_sa]`).
    fn start(tag: &str, extra: &str) -> anyhow::Result<Self> {
        let prefix: &'static str =
            Box::leak(format!("s2shp{}{tag}-", std::process::id()).into_boxed_str());
        let dir = std::env::temp_dir().join(prefix.trim_end_matches('-'));
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{}", prefix.trim_end_matches('-')));
        labkit::teardown(prefix);
        let cleanup = Cleanup {
            prefix,
            pin_dir: pin_dir.clone(),
            dir: dir.clone(),
        };
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let (vpc, gw, cgw) = (
            Ns::new(prefix, "vpc"),
            Ns::new(prefix, "gw"),
            Ns::new(prefix, "cgw"),
        );
        for ns in [vpc, gw, cgw] {
            ns.create()?;
        }
        labkit::veth(vpc, "eth0", gw, "lan0")?;
        labkit::veth(gw, "wan0", cgw, "wan0")?;
        for (ns, dev, addr) in [
            (vpc, "eth0", "198.51.100.10/24"),
            (gw, "lan0", "198.51.100.1/24"),
            (gw, "wan0", "192.0.2.1/24"),
            (cgw, "wan0", "192.0.2.2/24"),
        ] {
            ns.exec(&["ip", "addr", "add", addr, "dev", dev])?;
            ns.exec(&["ip", "link", "set", dev, "up"])?;
        }
        vpc.exec(&["ip", "route", "add", "default", "via", "198.51.100.1"])?;
        let config = dir.join("gateway.toml");
        std::fs::write(&config, config_text(&dir, &pin_dir, extra))?;
        let mut daemon = Daemon::start(
            Path::new(env!("CARGO_BIN_EXE_s2s-gateway")),
            &gw.name(),
            &config,
            &dir.join("gateway.log"),
        )?;
        let api = Api::new(&gw.name(), "http://127.0.0.1:8080", TOKEN)?;
        daemon.wait_ready(&api, Duration::from_secs(30))?;
        // The decrypted packets leave on the LAN with the kernel's
        // neighbour entry of their destination: have it resolved.
        gw.out(&["ping", "-q", "-c", "1", "-W", "2", "198.51.100.10"])?;
        Ok(Self {
            api,
            daemon,
            vpc,
            gw,
            cgw,
            _cleanup: cleanup,
        })
    }

    /// Stops the daemon as `systemctl restart` does (SIGTERM), or kills it
    /// (`crash`: SIGKILL), runs `between` while it is down, and starts it
    /// again on the same config and state directory (its log in
    /// `gateway-restarted.log`).
    fn restart(
        &mut self,
        crash: bool,
        between: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        if crash {
            self.daemon.kill();
        } else {
            self.daemon.stop();
        }
        between()?;
        let dir = &self._cleanup.dir;
        self.daemon = Daemon::start(
            Path::new(env!("CARGO_BIN_EXE_s2s-gateway")),
            &self.gw.name(),
            &dir.join("gateway.toml"),
            &dir.join("gateway-restarted.log"),
        )?;
        self.daemon.wait_ready(&self.api, Duration::from_secs(30))
    }

    /// Waits until the store reports the connection's tunnel up.
    fn wait_tunnel_up(&mut self, id: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let c = self.api.ok("GET", &format!("connections/{id}"), None)?;
            if c["tunnel_status"] == "up" {
                return Ok(());
            }
            self.daemon.check()?;
            if Instant::now() > deadline {
                bail!("tunnel_status still {} after 30 s", c["tunnel_status"]);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn metrics(&self) -> anyhow::Result<String> {
        self.api.get_text(METRICS)
    }

    fn tunnels_created(&self) -> anyhow::Result<f64> {
        metric(&self.metrics()?, "s2s_tunnels_created_total")
            .ok_or_else(|| anyhow!("no s2s_tunnels_created_total in /metrics"))
    }

    /// A VPN gateway (waited for until active), a customer gateway at
    /// 192.0.2.2 and an IPv4 routing policy accepting 203.0.113.0/24.
    /// Returns their ids.
    fn resources(&mut self) -> anyhow::Result<(String, String, String)> {
        self.resources_of_type("VGW-S")
    }

    /// [`Site::resources`] with a VPN gateway of `gateway_type`.
    fn resources_of_type(
        &mut self,
        gateway_type: &str,
    ) -> anyhow::Result<(String, String, String)> {
        let vgw = self.api.ok(
            "POST",
            "vpn-gateways",
            Some(json!({
                "name": "vgw",
                "gateway_type": gateway_type,
                "private_network_id": PRIVATE_NETWORK,
                "public_config": {"ipam_ipv4_id": IPAM_V4},
            })),
        )?;
        let vgw_id = id(&vgw)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.daemon.check()?;
            let g = self
                .api
                .ok("GET", &format!("vpn-gateways/{vgw_id}"), None)?;
            if g["status"] == "running" || g["status"] == "active" {
                break;
            }
            if Instant::now() > deadline {
                bail!("the VPN gateway did not become active: {g}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let cgw = self.api.ok(
            "POST",
            "customer-gateways",
            Some(json!({"name": "cgw", "asn": 65010, "ipv4_public": CGW_WAN.to_string()})),
        )?;
        let rp = self.api.ok(
            "POST",
            "routing-policies",
            Some(json!({
                "name": "rp",
                "is_ipv6": false,
                "prefix_filter_in": ["203.0.113.0/24"],
                "prefix_filter_out": ["198.51.100.0/24"],
            })),
        )?;
        Ok((vgw_id, id(&cgw)?, id(&rp)?))
    }

    /// A connection the customer initiates; returns the connection object.
    fn connection(&self, name: &str, ids: &(String, String, String)) -> anyhow::Result<Value> {
        let created = self.api.ok(
            "POST",
            "connections",
            Some(json!({
                "name": name,
                "vpn_gateway_id": ids.0,
                "customer_gateway_id": ids.1,
                "initiation_policy": "customer_gateway",
                "ikev2_ciphers": [{"encryption": "aes256gcm", "integrity": "sha256", "dh_group": "curve25519"}],
                "esp_ciphers": [{"encryption": "aes256gcm"}],
                "bgp_config_ipv4": {"routing_policy_id": ids.2},
            })),
        )?;
        Ok(created["connection"].clone())
    }

    /// Our customer for `conn`, started and waited for until its CHILD SA
    /// is up.
    fn customer(&self, conn: &Value) -> anyhow::Result<Customer> {
        self.customer_at(conn, "c", CGW_WAN, GW_WAN)
    }

    /// [`Site::customer`] as peer `name`, from `local` to our `remote`.
    fn customer_at(
        &self,
        conn: &Value,
        name: &str,
        local: Ipv4Addr,
        remote: Ipv4Addr,
    ) -> anyhow::Result<Customer> {
        let psk = self.api.psk(conn)?;
        let c = Customer::start(
            Some(&self.cgw.name()),
            vec![PeerSpec {
                name: name.into(),
                local: IpAddr::V4(local),
                remote: IpAddr::V4(remote),
                psk,
                ike: (
                    "aes256gcm".into(),
                    Some("sha256".into()),
                    "curve25519".into(),
                ),
                esp: ("aes256gcm".into(), None),
                initiate: true,
            }],
        )?;
        c.wait_established(name, Duration::from_secs(30))
            .with_context(|| self.daemon.log_tail(30))?;
        Ok(c)
    }

    /// A UDP socket bound in the VPC host, once a packet from the
    /// customer's network has reached it through the tunnel (the gateway
    /// answers IKE_AUTH before its data path has the SA: a customer's
    /// very first packets can race it).
    fn vpc_socket(&self, customer: &Customer) -> anyhow::Result<UdpSocket> {
        let ns = NsThread::new(&self.vpc.name())?;
        let s = ns.run(|| UdpSocket::bind((VPC_HOST, PROBE_PORT)))??;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut buf = [0u8; 64];
        for _ in 0..50 {
            customer.send_inner("c", &probe(REMOTE_HOST, b"warm-up"))?;
            if s.recv(&mut buf).is_ok() {
                // Any other warm-up probe still in flight.
                while s.recv(&mut buf).is_ok() {}
                return Ok(s);
            }
        }
        bail!("nothing from the customer's network reached the VPC host")
    }
}

fn config_text(dir: &Path, pin_dir: &Path, extra: &str) -> String {
    format!(
        r#"[gateway]
asn = 12876
region = "fr-par"
state_dir = {state:?}
bpf_pin_dir = {pin:?}

[interfaces]
wan = "wan0"
lan = "lan0"
xdp_mode = "native"

[api]
listen = "127.0.0.1:8080"
tokens = ["{TOKEN}"]
metrics_listen = "127.0.0.1:9108"

[[gateway_types]]
name = "VGW-S"
bandwidth = 100000000
allowed_connections = 100

[[private_networks]]
id = "{PRIVATE_NETWORK}"
interface = "lan0"
ipv4_subnet = "198.51.100.0/24"

[[public_ips]]
id = "{IPAM_V4}"
address = "192.0.2.1"

{extra}
"#,
        state = dir.join("state"),
        pin = pin_dir,
    )
}

fn id(v: &Value) -> anyhow::Result<String> {
    v["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("response without id: {v}"))
}

/// The customer's interconnection address (`peer_private_ip` without its
/// prefix length).
fn peer_interco(conn: &Value) -> anyhow::Result<Ipv4Addr> {
    let s = conn["bgp_session_ipv4"]["peer_private_ip"]
        .as_str()
        .ok_or_else(|| anyhow!("connection without bgp_session_ipv4: {conn}"))?;
    Ok(s.split('/').next().unwrap_or(s).parse()?)
}

fn our_interco(conn: &Value) -> anyhow::Result<Ipv4Addr> {
    let s = conn["bgp_session_ipv4"]["private_ip"]
        .as_str()
        .ok_or_else(|| anyhow!("connection without bgp_session_ipv4: {conn}"))?;
    Ok(s.split('/').next().unwrap_or(s).parse()?)
}

fn probe(src: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    Ipv4::new(src, VPC_HOST, IPPROTO_UDP).build(&udp(40000, PROBE_PORT, payload))
}

/// Sum of a counter over every line whose series contains all of `parts`.
fn sum_series(text: &str, name: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A customer that sends ESP whose inner sources it may not use (a VPC
/// address, another network, a link-local address outside its
/// interconnection subnet) next to legitimate traffic: the VPC host gets
/// the legitimate packets only, and the drop counter shows every spoofed
/// one.
#[test]
#[ignore = "needs root: network namespaces, XDP, the daemon"]
fn spoofed_inner_sources_never_reach_the_vpc() -> anyhow::Result<()> {
    let mut site = Site::start("s", "")?;
    let ids = site.resources()?;
    let conn = site.connection("spoof", &ids)?;
    let customer = site.customer(&conn)?;
    let sock = site.vpc_socket(&customer)?;
    let allowed = [REMOTE_HOST, peer_interco(&conn)?];
    let spoofed = [
        Ipv4Addr::new(198, 51, 100, 77),
        Ipv4Addr::new(192, 0, 2, 200),
        Ipv4Addr::new(169, 254, 255, 254),
    ];
    const EACH: usize = 20;
    for i in 0..EACH {
        for src in allowed {
            customer.send_inner("c", &probe(src, format!("ok {i}").as_bytes()))?;
        }
        for src in spoofed {
            customer.send_inner("c", &probe(src, format!("spoof {i}").as_bytes()))?;
        }
    }
    let mut ok = 0;
    let mut got_spoofed = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(10);
    // Collect until every legitimate packet arrived, then a little more
    // so that a spoofed straggler would be seen.
    let mut quiet_until: Option<Instant> = None;
    while Instant::now() < deadline && quiet_until.is_none_or(|q| Instant::now() < q) {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                if buf[..n].starts_with(b"ok ") {
                    ok += 1;
                } else {
                    got_spoofed.push(from);
                }
                if ok == allowed.len() * EACH && quiet_until.is_none() {
                    quiet_until = Some(Instant::now() + Duration::from_secs(1));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    assert!(
        got_spoofed.is_empty(),
        "spoofed inner sources reached the VPC: {got_spoofed:?}"
    );
    assert_eq!(
        ok,
        allowed.len() * EACH,
        "legitimate packets lost; gateway log:\n{}",
        site.daemon.log_tail(30)
    );
    let dropped = sum_series(
        &site.metrics()?,
        "s2s_tunnel_drops_total{",
        &["reason=\"inner_source\""],
    );
    assert_eq!(dropped, (spoofed.len() * EACH) as f64);
    customer.stop()?;
    Ok(())
}

/// SIGHUP takes the config file again: a new API token and gateway type
/// work at once, the old token stops working, and the tunnel (same CHILD
/// SA, same tunnel) carries traffic throughout. A file that changes a key
/// needing a restart, or that does not parse, is refused whole and logged,
/// and the running configuration stays.
#[test]
#[ignore = "needs root: network namespaces, XDP, the daemon"]
fn sighup_reloads_tokens_and_types_and_keeps_the_tunnels() -> anyhow::Result<()> {
    const NEW_TOKEN: &str = "reloaded-test-token-0001";
    let mut site = Site::start("hup", "")?;
    let ids = site.resources()?;
    let conn = site.connection("hup", &ids)?;
    let id = conn["id"].as_str().context("connection id")?.to_owned();
    let customer = site.customer(&conn)?;
    site.wait_tunnel_up(&id)?;
    let replies = ping_through(&customer, &conn, 20, 10, Duration::from_secs(5))?;
    assert_eq!(replies.len(), 20, "before the reload: {replies:?}");
    let before = customer.state("c").context("peer state")?;
    let metrics = site.metrics()?;
    let created = sum_series(&metrics, "s2s_tunnels_created_total", &[]);
    let installs = sum_series(&metrics, "s2s_child_sa_installs_total{", &[]);

    let dir = site._cleanup.dir.clone();
    let pin_dir = PathBuf::from(format!(
        "/sys/fs/bpf/{}",
        dir.file_name().unwrap().to_string_lossy()
    ));
    let config = dir.join("gateway.toml");
    let original = std::fs::read_to_string(&config)?;
    let reloaded = config_text(
        &dir,
        &pin_dir,
        "[[gateway_types]]\nname = \"VGW-XL\"\nbandwidth = 10000000000\nallowed_connections = 10\n\
         [datapath]\ndrop_events = \"info\"\n",
    )
    .replace(
        &format!("tokens = [\"{TOKEN}\"]"),
        &format!("tokens = [\"{NEW_TOKEN}\"]"),
    );
    anyhow::ensure!(reloaded != original && reloaded.contains(NEW_TOKEN));
    std::fs::write(&config, &reloaded)?;
    site.daemon.signal("HUP")?;
    site.daemon
        .wait_log("SIGHUP: configuration reloaded", 1, Duration::from_secs(10))?;
    let new_api = Api::new(&site.gw.name(), "http://127.0.0.1:8080", NEW_TOKEN)?;
    let types = new_api.ok("GET", "vpn-gateway-types", None)?;
    let names: Vec<&str> = types["gateway_types"]
        .as_array()
        .context("gateway_types")?
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"VGW-XL") && names.contains(&"VGW-S"),
        "{types}"
    );
    let old = site.api.call("GET", "vpn-gateway-types", None)?;
    assert_eq!(
        old.status, 401,
        "the removed token still works: {}",
        old.body
    );
    // The agent's pass after the reload (it was woken) left the tunnel alone.
    std::thread::sleep(Duration::from_secs(1));
    let replies = ping_through(&customer, &conn, 20, 10, Duration::from_secs(5))?;
    assert_eq!(replies.len(), 20, "after the reload: {replies:?}");
    let after = customer.state("c").context("peer state")?;
    assert!(
        after.ike_up && after.child == before.child,
        "{after:?} (before: {before:?})"
    );
    let metrics = new_api.get_text(METRICS)?;
    assert_eq!(
        sum_series(&metrics, "s2s_tunnels_created_total", &[]),
        created
    );
    assert_eq!(
        sum_series(&metrics, "s2s_child_sa_installs_total{", &[]),
        installs
    );

    // Drop events came on with the reload: ESP with an SPI we never gave
    // out, sent to our WAN address, is dropped by XDP and logged (info).
    site.daemon.wait_log(
        "XDP drop events (datapath.drop_events)",
        1,
        Duration::from_secs(10),
    )?;
    let ns = NsThread::new(&site.cgw.name())?;
    ns.run(|| -> std::io::Result<()> {
        let s = UdpSocket::bind((CGW_WAN, 0))?;
        let mut esp = vec![0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1];
        esp.extend_from_slice(&[0u8; 48]);
        s.send_to(&esp, ("192.0.2.1", 4500))?;
        Ok(())
    })??;
    site.daemon
        .wait_log("unknown_spi", 1, Duration::from_secs(10))?;
    let tail = site.daemon.log_tail(50);
    let line = tail
        .lines()
        .find(|l| l.contains("unknown_spi"))
        .context("no drop event line")?;
    eprintln!("drop event: {line}");
    assert!(
        line.contains("XDP drop") && line.contains("wan") && line.contains("xdp"),
        "{line}"
    );

    // A key that needs a restart: the whole file is refused.
    std::fs::write(
        &config,
        reloaded
            .replace("wan = \"wan0\"", "wan = \"eth9\"")
            .replace(NEW_TOKEN, "a-third-token-00000001"),
    )?;
    site.daemon.signal("HUP")?;
    site.daemon.wait_log(
        "interfaces.wan cannot change while the daemon runs",
        1,
        Duration::from_secs(10),
    )?;
    // And a file that does not parse.
    std::fs::write(&config, "[interfaces\n")?;
    site.daemon.signal("HUP")?;
    site.daemon.wait_log(
        "SIGHUP: configuration not reloaded",
        2,
        Duration::from_secs(10),
    )?;
    new_api.ok("GET", "vpn-gateway-types", None)?;
    let replies = ping_through(&customer, &conn, 10, 10, Duration::from_secs(5))?;
    assert_eq!(replies.len(), 10, "after the refused reloads: {replies:?}");
    site.daemon.check()?;
    std::fs::write(&config, original)?;
    customer.stop()?;
    Ok(())
}

/// `s2s-gateway capture` records what the workers handle, which tcpdump
/// cannot see: the customer's ESP as received and the decrypted packets,
/// for the tunnel asked for, into a pcap file that tshark reads.
#[test]
#[ignore = "needs root: network namespaces, XDP, the daemon, tshark"]
fn capture_writes_the_fast_paths_packets_as_pcap() -> anyhow::Result<()> {
    let mut site = Site::start("cap", "")?;
    let ids = site.resources()?;
    let conn = site.connection("cap", &ids)?;
    let id = conn["id"].as_str().context("connection id")?.to_owned();
    let customer = site.customer(&conn)?;
    site.wait_tunnel_up(&id)?;
    let sock = site.vpc_socket(&customer)?;
    let metrics = site.metrics()?;
    let tunnel = metrics
        .lines()
        .filter(|l| l.starts_with("s2s_tunnel_up{") && l.contains(&format!("connection=\"{id}\"")))
        .find_map(|l| l.split("tunnel=\"").nth(1)?.split('"').next())
        .context("no s2s_tunnel_up for the connection")?
        .to_owned();
    let dir = site._cleanup.dir.clone();
    let file = dir.join("capture.pcap");
    const PROBES: usize = 10;
    let mut capture = std::process::Command::new(env!("CARGO_BIN_EXE_s2s-gateway"))
        .arg("capture")
        .arg("--config")
        .arg(dir.join("gateway.toml"))
        .args([
            "--tunnel",
            &tunnel,
            "--count",
            &(2 * PROBES).to_string(),
            "--seconds",
            "20",
            "-w",
        ])
        .arg(&file)
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    // Probes until the capture has its count (those sent before it
    // started are not in it).
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut received = 0;
    while capture.try_wait()?.is_none() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the capture did not end within 20 s"
        );
        customer.send_inner("c", &probe(REMOTE_HOST, b"captured"))?;
        if sock.recv(&mut buf).is_ok() {
            received += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = capture.wait_with_output()?;
    let said = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "capture failed: {said}");
    anyhow::ensure!(
        said.contains(&format!("{} packets captured", 2 * PROBES)),
        "{said}"
    );
    anyhow::ensure!(received > 0, "no probe reached the VPC host");
    // tshark reads it: ESP as received, and the decrypted probes.
    let fields = labkit::output(
        std::process::Command::new("tshark")
            .arg("-r")
            .arg(&file)
            .args([
                "-T",
                "fields",
                "-e",
                "esp.spi",
                "-e",
                "ip.src",
                "-e",
                "udp.dstport",
            ]),
    )?;
    let lines: Vec<&str> = fields.lines().collect();
    assert_eq!(lines.len(), 2 * PROBES, "{fields}");
    let esp = lines
        .iter()
        .filter(|l| !l.split('\t').next().unwrap_or("").is_empty())
        .count();
    let inner = lines
        .iter()
        .filter(|l| l.contains(&REMOTE_HOST.to_string()) && l.ends_with(&PROBE_PORT.to_string()))
        .count();
    assert!(
        esp >= PROBES - 1 && inner >= PROBES - 1,
        "esp {esp}, inner {inner}:\n{fields}"
    );
    // The daemon saw the client through.
    let log = site.daemon.log_tail(200);
    assert!(log.contains("capture ended"), "{log}");
    customer.stop()?;
    Ok(())
}

/// An ICMP echo request from the customer's interconnection address to
/// ours: the gateway's kernel answers through the tunnel, so each reply
/// is one packet on the gateway's outbound SA.
fn echo(src: Ipv4Addr, dst: Ipv4Addr, seq: u16) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x53, 0x32];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(b"volume-rekey-probe");
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Ipv4::new(src, dst, 1).build(&icmp)
}

/// Sequence numbers of the echo replies among `packets`.
fn echo_replies(packets: &[Vec<u8>]) -> Vec<u16> {
    packets
        .iter()
        .filter_map(|p| {
            let ihl = usize::from(*p.first()? & 0x0f) * 4;
            let icmp = p.get(ihl..)?;
            (p.get(9) == Some(&1)
                && icmp.first() == Some(&0)
                && icmp.get(4..6) == Some(&[0x53, 0x32]))
            .then(|| u16::from_be_bytes([icmp[6], icmp[7]]))
        })
        .collect()
}

/// Sends `count` echo requests in bursts of `burst`, waiting for each
/// burst's replies (up to `limit` per burst); returns the replies seen.
fn ping_through(
    customer: &Customer,
    conn: &Value,
    count: u16,
    burst: u16,
    limit: Duration,
) -> anyhow::Result<Vec<u16>> {
    let (src, dst) = (peer_interco(conn)?, our_interco(conn)?);
    let mut replies = Vec::new();
    let mut seq = 0u16;
    while seq < count {
        let end = (seq + burst).min(count);
        for s in seq..end {
            customer.send_inner("c", &echo(src, dst, s))?;
        }
        let deadline = Instant::now() + limit;
        loop {
            replies.extend(echo_replies(&customer.take_received("c")));
            if replies.iter().filter(|&&r| r >= seq && r < end).count() >= usize::from(end - seq)
                || Instant::now() > deadline
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        seq = end;
    }
    Ok(replies)
}

/// With a packet soft limit of 400 on every outbound SA, 3000 packets
/// through the gateway's outbound SA make it rekey the CHILD SA several
/// times (make-before-break, from the agent): every reply arrives, none
/// twice, and the customer's replay check never refuses one (a sequence
/// restart on a live key would be refused as a replay).
#[test]
#[ignore = "needs root: network namespaces, XDP, the daemon"]
fn packet_soft_limit_rekeys_without_loss() -> anyhow::Result<()> {
    let site = Site::start("r", "[child_sa]\nsoft_packets = 400\n")?;
    let mut site = site;
    let ids = site.resources()?;
    let conn = site.connection("rekey", &ids)?;
    let customer = site.customer(&conn)?;
    const COUNT: u16 = 3000;
    let mut replies = ping_through(&customer, &conn, COUNT, 25, Duration::from_secs(5))?;
    let state = customer.state("c").context("peer state")?;
    replies.sort_unstable();
    let n = replies.len();
    replies.dedup();
    assert_eq!(n, replies.len(), "duplicate replies");
    let missing: Vec<u16> = (0..COUNT)
        .filter(|s| replies.binary_search(s).is_err())
        .collect();
    if !missing.is_empty() {
        // Where they went: the gateway's drop counters, the customer's.
        let metrics = site.metrics().unwrap_or_default();
        let drops: Vec<&str> = metrics
            .lines()
            .filter(|l| !l.starts_with('#') && (l.contains("drop") || l.contains("error")))
            .filter(|l| !l.ends_with(" 0"))
            .collect();
        panic!(
            "{} echo replies lost across rekeys (first {:?}); CHILD SAs installed: {}; customer: {} ESP datagrams not decrypted; gateway counters:\n{}\ngateway log:\n{}",
            missing.len(),
            &missing[..missing.len().min(10)],
            state.child_installs,
            state.decap_errors,
            drops.join("\n"),
            site.daemon.log_tail(30)
        );
    }
    assert_eq!(state.decap_errors, 0, "ESP the customer could not decrypt");
    eprintln!(
        "{COUNT} echo replies through {} CHILD SAs",
        state.child_installs
    );
    // 3000 outbound packets with a soft limit of 400: at least 3000/400 - 1
    // rekeys beyond the first CHILD SA, with slack for the BGP packets the
    // gateway also sends.
    assert!(
        state.child_installs > 6, // the first SA plus at least six rekeys
        "only {} CHILD SAs installed: the soft limit did not rekey",
        state.child_installs
    );
    customer.stop()?;
    Ok(())
}

/// 3000 connections created and deleted through the API, in batches the
/// agent configures (each takes a tunnel id, three times the id space),
/// then a new connection whose tunnel carries traffic.
#[test]
#[ignore = "needs root: network namespaces, XDP, the daemon"]
fn tunnel_ids_are_recycled_after_thousands_of_connections() -> anyhow::Result<()> {
    let mut site = Site::start("c", "")?;
    let ids = site.resources()?;
    const CYCLES: usize = 3000;
    const BATCH: usize = 100;
    let before = site.tunnels_created()?;
    let started = Instant::now();
    for b in 0..CYCLES / BATCH {
        let mut conns = Vec::with_capacity(BATCH);
        for i in 0..BATCH {
            conns.push(id(&site.connection(&format!("cycle-{b}-{i}"), &ids)?)?);
        }
        // The agent must have configured the whole batch (else a create and
        // a delete could cancel out before it looked).
        let want = before + ((b + 1) * BATCH) as f64;
        let deadline = Instant::now() + Duration::from_secs(60);
        while site.tunnels_created()? < want {
            site.daemon.check()?;
            if Instant::now() > deadline {
                bail!(
                    "batch {b}: the agent configured {} of {want} tunnels; log:\n{}",
                    site.tunnels_created()?,
                    site.daemon.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for c in conns {
            site.api.ok("DELETE", &format!("connections/{c}"), None)?;
        }
        eprintln!(
            "{} connections created and deleted ({:.0?})",
            (b + 1) * BATCH,
            started.elapsed()
        );
    }
    let created = site.tunnels_created()? - before;
    assert!(
        created >= CYCLES as f64,
        "only {created} tunnels configured for {CYCLES} connections"
    );
    // Every deleted tunnel gone before the last connection comes (the
    // customer gateway's address is the same for all of them).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = site
            .metrics()?
            .lines()
            .filter(|l| l.starts_with("s2s_tunnel_up{"))
            .count();
        if left == 0 {
            break;
        }
        site.daemon.check()?;
        if Instant::now() > deadline {
            bail!("{left} deleted tunnels still configured");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let conn = site.connection("after-cycles", &ids)?;
    let customer = site.customer(&conn)?;
    let replies = ping_through(&customer, &conn, 50, 10, Duration::from_secs(5))?;
    assert_eq!(
        replies.len(),
        50,
        "the new tunnel did not carry traffic; log:\n{}",
        site.daemon.log_tail(30)
    );
    let sock = site.vpc_socket(&customer)?;
    customer.send_inner("c", &probe(REMOTE_HOST, b"ok after cycles"))?;
    let mut buf = [0u8; 256];
    let (n, _) = sock.recv_from(&mut buf).or_else(|_| {
        std::thread::sleep(Duration::from_secs(1));
        sock.recv_from(&mut buf)
    })?;
    assert_eq!(&buf[..n], b"ok after cycles");
    customer.stop()?;
    Ok(())
}

/// A restart (SIGTERM, what `systemctl restart` sends) deletes nothing
/// toward the customer: its IKE and CHILD SAs outlive our daemon (a
/// customer whose charon takes our DELETE as final never came back). The
/// restarted daemon resumes them from its state file: no handshake, the
/// same CHILD SA, sequence numbers that the customer's replay window
/// accepts, traffic both ways as soon as the data path runs.
#[test]
#[ignore = "needs root: network namespaces, XDP, the daemon"]
fn a_restart_resumes_the_sas_without_a_handshake() -> anyhow::Result<()> {
    restart_case("s", Stop::Term)
}

/// The same after a crash (SIGKILL: nothing cleaned up, no status or state
/// written on the way down): what the state file held while the daemon
/// ran is enough.
#[test]
#[ignore = "needs root: network namespaces, XDP, the daemon"]
fn a_crash_resumes_the_sas_without_a_handshake() -> anyhow::Result<()> {
    restart_case("k", Stop::Kill)
}

/// A crash that also lost the state file (or a file that cannot be used):
/// the customer-initiated connection is initiated by us once, with
/// INITIAL_CONTACT, so the customer's stale SAs give way to one handshake
/// and nobody on the customer's side has to act.
#[test]
#[ignore = "needs root: network namespaces, XDP, the daemon"]
fn a_lost_state_file_costs_one_handshake() -> anyhow::Result<()> {
    restart_case("l", Stop::KillAndLoseState)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Term,
    Kill,
    KillAndLoseState,
}

fn restart_case(tag: &str, stop: Stop) -> anyhow::Result<()> {
    let mut site = Site::start(tag, "")?;
    let ids = site.resources()?;
    let conn = site.connection("restart", &ids)?;
    let id = conn["id"].as_str().context("connection id")?.to_owned();
    let customer = site.customer(&conn)?;
    site.wait_tunnel_up(&id)?;
    // Enough packets that a reused sequence number would be noticed.
    let replies = ping_through(&customer, &conn, 50, 10, Duration::from_secs(5))?;
    assert_eq!(replies.len(), 50, "before the restart: {replies:?}");
    let before = customer.state("c").context("peer state")?;
    // The connection's events say what happened (written with the statuses).
    let kinds = |site: &Site| -> anyhow::Result<Vec<String>> {
        let v = site
            .api
            .ok("GET", &format!("connections/{id}/events"), None)?;
        Ok(v["events"]
            .as_array()
            .context("events")?
            .iter()
            .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
            .collect())
    };
    let first = kinds(&site)?;
    for k in ["ike_sa_up", "child_sa_installed"] {
        anyhow::ensure!(first.iter().any(|f| f == k), "no {k} event: {first:?}");
    }
    let state_file = site._cleanup.dir.join("state/sa-state.sealed");
    // Written within a tick of the SAs' last change.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !state_file.exists() {
        anyhow::ensure!(Instant::now() < deadline, "no SA state file while running");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A crash right after the last change would lose it: let it be written.
    std::thread::sleep(Duration::from_millis(300));
    let gw = site.gw;
    let interco = our_interco(&conn)?;
    let tun_of = || -> anyhow::Result<Option<String>> {
        let links = gw.out(&["ip", "-o", "link", "show"])?;
        Ok(links
            .lines()
            .find(|l| l.contains(": s2s") && l.contains("v4"))
            .map(|l| l.split(':').take(2).collect::<Vec<_>>().join(":")))
    };
    let tun_before = tun_of()?.context("no TUN while running")?;
    site.restart(stop != Stop::Term, || {
        // Time for a DELETE to arrive, had one been sent.
        std::thread::sleep(Duration::from_millis(500));
        // The TUN stays while we are down (the VPC's packets to the
        // customer are dropped into it, not routed elsewhere in clear).
        anyhow::ensure!(
            tun_of()?.as_deref() == Some(tun_before.as_str()),
            "the TUN did not outlive the daemon: {}",
            gw.out(&["ip", "-o", "link", "show"])?
        );
        let addrs = gw.out(&["ip", "-o", "-4", "addr", "show"])?;
        anyhow::ensure!(
            addrs
                .lines()
                .any(|l| l.contains(": s2s") && l.contains(&format!(" {interco}/"))),
            "the TUN lost its interconnection address while we were down: {addrs}"
        );
        let now = customer.state("c").context("peer state")?;
        anyhow::ensure!(
            now.ike_up && now.child.is_some() && now.child == before.child,
            "the customer's SAs did not outlive our stop: {now:?} (before: {before:?})"
        );
        if stop == Stop::KillAndLoseState {
            std::fs::remove_file(&state_file)?;
        }
        if stop == Stop::Kill {
            // A TUN of a connection deleted while we were down (a
            // persistent one, as ours are): the restart deletes it.
            gw.exec(&["ip", "tuntap", "add", "dev", ORPHAN_TUN, "mode", "tun"])?;
        }
        Ok(())
    })?;
    // The old daemon's last write is behind us: a later one is the new
    // daemon's.
    let down_since = std::time::SystemTime::now() - Duration::from_millis(10);
    let resumed = stop != Stop::KillAndLoseState;
    let deadline = Instant::now() + Duration::from_secs(30);
    if resumed {
        // The agent says it resumed the IKE SA (after it put the CHILD SA
        // back in the data plane): from then on nothing may be lost.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !kinds(&site)?
            .iter()
            .skip(first.len())
            .any(|k| k == "ike_sa_resumed")
        {
            site.daemon.check()?;
            anyhow::ensure!(
                Instant::now() < deadline,
                "no ike_sa_resumed event 10 s after the restart; log:\n{}",
                site.daemon.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // A resumed outbound SA sends only sequence numbers the state file
        // has reserved (never one twice, even after a crash): it starts
        // once the new daemon has written the file, right after the
        // resume. Until then our replies would be refused, by design.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::metadata(&state_file)
            .and_then(|m| m.modified())
            .map_or(true, |t| t <= down_since)
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the SA state file was not written within 5 s of the resume"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The reservation follows the write.
        std::thread::sleep(Duration::from_millis(50));
        // Traffic both ways on the customer's same CHILD SA: our resumed
        // SAs decrypt what it sends, and what we send passes its replay
        // window (sequence numbers continue above what we used).
        let mut replies = ping_through(&customer, &conn, 50, 10, Duration::from_secs(10))?;
        replies.sort_unstable();
        replies.dedup();
        let now = customer.state("c").context("peer state")?;
        assert_eq!(
            replies.len(),
            50,
            "after the restart: {replies:?}; customer {now:?}; log:\n{}",
            site.daemon.log_tail(30)
        );
        assert_eq!(now.child, before.child, "the customer's CHILD SA changed");
        assert_eq!(now.child_installs, before.child_installs, "a new CHILD SA");
        assert_eq!(
            now.decap_errors, before.decap_errors,
            "the customer refused our ESP"
        );
    } else {
        // Our initiation replaces the customer's stale SAs with new ones.
        loop {
            let now = customer.state("c").context("peer state")?;
            if now.ike_up && now.child_installs > before.child_installs && now.child.is_some() {
                anyhow::ensure!(now.child != before.child, "same CHILD SA: {now:?}");
                break;
            }
            site.daemon.check()?;
            if Instant::now() > deadline {
                bail!(
                    "no new CHILD SA at the customer 30 s after the restart: {now:?}; log:\n{}",
                    site.daemon.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The same interface (same index), attached to again.
    assert_eq!(tun_of()?, Some(tun_before), "the TUN was replaced");
    if stop == Stop::Kill {
        let links = gw.out(&["ip", "-o", "link", "show"])?;
        anyhow::ensure!(
            !links.contains(ORPHAN_TUN),
            "the TUN of a connection that is no longer configured is still there: {links}"
        );
    }
    // The restarted daemon serves, and says it is ready once the agent
    // has configured the connection again.
    let health = site.api.get_text("http://127.0.0.1:9108/healthz")?;
    assert_eq!(health.trim(), "ok");
    let deadline = Instant::now() + Duration::from_secs(30);
    while site.api.get_text("http://127.0.0.1:9108/readyz").is_err() {
        site.daemon.check()?;
        anyhow::ensure!(Instant::now() < deadline, "/readyz not 200 within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The events outlived the restart, and say what happened.
    let want = if resumed {
        "ike_sa_resumed"
    } else {
        "ike_sa_up"
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = kinds(&site)?;
        if now.len() > first.len() && now.starts_with(&first) {
            let new = &now[first.len()..];
            if new.iter().any(|k| k == want) {
                anyhow::ensure!(
                    !resumed || !new.iter().any(|k| k == "ike_sa_up"),
                    "a handshake after resuming: {new:?}"
                );
                break;
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "events after the restart: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = site.daemon.log_tail(200);
    if resumed {
        assert!(
            log.contains("resumed from the SA state")
                && !log.contains("initiating once with INITIAL_CONTACT"),
            "the restarted daemon did not resume: {log}"
        );
    } else {
        assert!(
            log.contains("initiating once with INITIAL_CONTACT"),
            "the restarted daemon did not initiate: {log}"
        );
    }
    let mut replies = ping_through(&customer, &conn, 20, 10, Duration::from_secs(5))?;
    replies.sort_unstable();
    replies.dedup();
    assert_eq!(
        replies.len(),
        20,
        "after the restart: {replies:?}; log:\n{}",
        site.daemon.log_tail(30)
    );
    if stop == Stop::Term {
        // Deleted through the API: the persistent TUN goes with it.
        site.api.ok("DELETE", &format!("connections/{id}"), None)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tun_of()?.is_some() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the deleted connection's TUN is still there 10 s later"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    customer.stop()?;
    Ok(())
}

/// The shape of our TUN names, for a connection that no longer exists.
const ORPHAN_TUN: &str = "s2s0000beefv4";

/// A VPN gateway created while the daemon runs, on a public address that
/// no gateway used when it started: IKE starts listening there (it used
/// to bind its sockets once, at the first pass, and such a gateway's
/// tunnels never came up), and the first gateway's tunnel is untouched.
#[test]
#[ignore = "needs root: network namespaces, XDP, the daemon"]
fn a_gateway_created_while_running_on_a_new_public_address_comes_up() -> anyhow::Result<()> {
    const IPAM_V4_B: &str = "aaaaaaaa-0000-4000-8000-000000000002";
    const GW_WAN_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
    const CGW_WAN_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 4);
    let extra = format!("[[public_ips]]\nid = \"{IPAM_V4_B}\"\naddress = \"{GW_WAN_B}\"\n");
    let mut site = Site::start("n", &extra)?;
    site.gw.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{GW_WAN_B}/24"),
        "dev",
        "wan0",
    ])?;
    site.cgw.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{CGW_WAN_B}/24"),
        "dev",
        "wan0",
    ])?;
    let ids = site.resources()?;
    let conn = site.connection("first", &ids)?;
    let first = site.customer(&conn)?;
    site.wait_tunnel_up(&id(&conn)?)?;

    // The second VPN gateway, its customer gateway and connection, all
    // created now.
    let vgw_b = site.api.ok(
        "POST",
        "vpn-gateways",
        Some(json!({
            "name": "vgw-b",
            "gateway_type": "VGW-S",
            "private_network_id": PRIVATE_NETWORK,
            "public_config": {"ipam_ipv4_id": IPAM_V4_B},
        })),
    )?;
    let cgw_b = site.api.ok(
        "POST",
        "customer-gateways",
        Some(json!({"name": "cgw-b", "asn": 65011, "ipv4_public": CGW_WAN_B.to_string()})),
    )?;
    let ids_b = (id(&vgw_b)?, id(&cgw_b)?, ids.2.clone());
    let conn_b = site.connection("second", &ids_b)?;
    let second = site.customer_at(&conn_b, "b", CGW_WAN_B, GW_WAN_B)?;
    site.wait_tunnel_up(&id(&conn_b)?)?;
    // The first tunnel was never touched: still its first (and only) one.
    assert_eq!(
        site.api
            .ok("GET", &format!("connections/{}", id(&conn)?), None)?["tunnel_status"],
        "up"
    );
    assert_eq!(
        site.tunnels_created()?,
        2.0,
        "one tunnel each, none rebuilt"
    );
    second.stop()?;
    first.stop()?;
    Ok(())
}

/// The bandwidth of a VPN gateway's type, enforced both ways: the customer
/// sends far more than the rate into the tunnel (fast path: XDP and a
/// worker), the VPC far more toward the customer (slow path: the kernel
/// routes the interconnection address into the TUN); what gets through is
/// never more than the rate over the time it took plus the policer's
/// burst, and the excess is counted as bandwidth drops. Upper bounds only:
/// a slow machine delivers less, never more.
#[test]
#[ignore = "needs root: network namespaces, XDP, the daemon"]
fn a_gateway_types_bandwidth_is_enforced_both_ways() -> anyhow::Result<()> {
    // 4 Mbit/s: 500 kB/s, a 20 ms burst of 10 kB.
    const RATE: f64 = 4_000_000.0 / 8.0;
    const BURST: f64 = RATE * 0.020 + 1500.0;
    const SENT: usize = 2000;
    const PAYLOAD: usize = 1000;
    let mut site = Site::start(
        "bw",
        "[[gateway_types]]\nname = \"VGW-T\"\nbandwidth = 4000000\nallowed_connections = 10\n",
    )?;
    let ids = site.resources_of_type("VGW-T")?;
    let conn = site.connection("bw", &ids)?;
    let customer = site.customer(&conn)?;
    let sock = site.vpc_socket(&customer)?;
    let m = site.metrics()?;
    assert_eq!(
        sum_series(&m, "s2s_tunnel_bandwidth_bits_per_second{", &[]),
        4_000_000.0,
        "the tunnel's rate in /metrics"
    );
    let drops = |m: &str, way: &str| {
        sum_series(
            m,
            "s2s_bandwidth_drops_total{",
            &[&format!("direction=\"{way}\"")],
        )
    };
    let in_before = drops(&m, "inbound");

    // Customer → VPC, as fast as the customer can encrypt; the VPC host
    // reads all along (its socket buffer must not be the limit).
    let start = Instant::now();
    let reader = std::thread::spawn(move || {
        let (mut got, mut last) = (0usize, Instant::now());
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline && quiet_since.elapsed() < Duration::from_secs(1) {
            if let Ok(n) = sock.recv(&mut buf) {
                got += n + 28;
                last = Instant::now();
                quiet_since = last;
            }
        }
        (got, last)
    });
    for i in 0..SENT {
        let mut payload = vec![0x5a; PAYLOAD];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        customer.send_inner("c", &probe(REMOTE_HOST, &payload))?;
    }
    let offered = start.elapsed();
    let (got, last) = reader
        .join()
        .map_err(|_| anyhow!("the VPC reader panicked"))?;
    let window = last.duration_since(start).as_secs_f64();
    let bound = RATE * window + BURST;
    eprintln!("inbound: {got} bytes in {window:.2} s (bound {bound:.0}), offered in {offered:?}");
    assert!(
        (got as f64) <= bound,
        "inbound: {got} bytes in {window:.2} s, more than the rate allows ({bound:.0})"
    );
    assert!(got > 0, "nothing got through");
    let m = site.metrics()?;
    let dropped = drops(&m, "inbound") - in_before;
    // Offered at well above the rate (the customer encrypts far faster
    // than 4 Mbit/s): the policer must have dropped the excess.
    if offered.as_secs_f64() < (SENT * (PAYLOAD + 28)) as f64 / RATE / 2.0 {
        assert!(dropped > 0.0, "offered in {offered:?}, nothing dropped");
    }

    // VPC → customer through the slow path (the TUN).
    let ns = NsThread::new(&site.vpc.name())?;
    let to = std::net::SocketAddr::from((peer_interco(&conn)?, PROBE_PORT));
    let out_before = drops(&m, "outbound");
    let _ = customer.take_received("c");
    let start = Instant::now();
    let sent = ns.run(move || -> std::io::Result<usize> {
        let s = UdpSocket::bind((VPC_HOST, 0))?;
        let payload = vec![0xa5; PAYLOAD];
        let mut ok = 0;
        for _ in 0..SENT {
            if s.send_to(&payload, to).is_ok() {
                ok += 1;
            }
        }
        Ok(ok)
    })??;
    anyhow::ensure!(sent > SENT / 2, "the VPC host could send only {sent}");
    let mut got = 0usize;
    let mut last = start;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline && quiet_since.elapsed() < Duration::from_secs(1) {
        let batch = customer.take_received("c");
        if batch.is_empty() {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        got += batch.iter().map(Vec::len).sum::<usize>();
        last = Instant::now();
        quiet_since = last;
    }
    let window = last.duration_since(start).as_secs_f64();
    let bound = RATE * window + BURST;
    eprintln!("outbound: {got} bytes of {sent} datagrams in {window:.2} s (bound {bound:.0})");
    assert!(
        (got as f64) <= bound,
        "outbound: {got} bytes in {window:.2} s, more than the rate allows ({bound:.0})"
    );
    assert!(got > 0, "nothing reached the customer");
    let dropped = drops(&site.metrics()?, "outbound") - out_before;
    assert!(
        dropped > 0.0 || (got as f64) >= (sent * (PAYLOAD + 28)) as f64,
        "outbound: {got} of {sent} datagrams' bytes arrived and nothing was dropped by the policer"
    );

    // Another type through the API: the new rate, the same tunnel.
    let created = site.tunnels_created()?;
    site.api.ok(
        "PATCH",
        &format!("vpn-gateways/{}", ids.0),
        Some(json!({"gateway_type": "VGW-S"})),
    )?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = site.metrics()?;
        if sum_series(&m, "s2s_tunnel_bandwidth_bits_per_second{", &[]) == 100_000_000.0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the new type's rate never reached the tunnel:\n{}",
            site.daemon.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(site.tunnels_created()?, created, "the tunnel was rebuilt");
    let replies = ping_through(&customer, &conn, 5, 5, Duration::from_secs(5))?;
    assert_eq!(replies.len(), 5, "traffic after the change: {replies:?}");
    customer.stop()?;
    Ok(())
}

//! Scenario 11: many connections on the lab's gateway next to the lab's
//! own, and a hundred of them brought up at once by `s2s-loadgen`, so that
//! CI keeps the paths that scale honest: creates one by one, lists paged
//! and filtered by the store, the agent's passes with hundreds of tunnels,
//! statuses batched, deletes cleaned up, the lab's connection untouched.
//!
//! The load generator runs in a namespace of its own (`load`) behind
//! `cgw`, as customers behind an upstream router: its peers' addresses
//! (2001:db8:c::N) are routed by `gw` to `cgw` and by `cgw` to `load`.

use std::collections::BTreeSet;

use labkit::gateway::Api;
use serde_json::json;

use super::*;

const LOAD: Ns = Ns::new(PREFIX, "load");
/// Connections created next to the lab's.
const EXTRA: usize = 200;
/// Of them, brought up by the load generator.
const PEERS: usize = 100;

pub(super) fn many_connections(
    lab: &mut Lab,
    stop: &AtomicBool,
    conn_id: &str,
) -> anyhow::Result<()> {
    let api = Api::new(&GW.name(), "http://127.0.0.1:8080", TOKEN)?;
    let lab_conn = api.ok("GET", &format!("connections/{conn_id}"), None)?;
    let vgw_id = field(&lab_conn, "vpn_gateway_id")?.to_owned();
    let tuns_before = tun_count()?;
    let rp = api.ok(
        "POST",
        "routing-policies",
        Some(json!({"name": "scale", "is_ipv6": false,
                    "prefix_filter_in": ["203.0.113.0/24"],
                    "prefix_filter_out": ["198.51.100.0/24"]})),
    )?;
    let rp_id = field(&rp, "id")?.to_owned();
    let t = Instant::now();
    let mut created: Vec<(String, Value)> = Vec::with_capacity(EXTRA);
    for i in 0..EXTRA {
        let cgw = api.ok(
            "POST",
            "customer-gateways",
            Some(json!({"name": format!("scale-{i}"), "asn": 65100,
                        "ipv6_public": format!("2001:db8:c::{:x}", i + 1)})),
        )?;
        let conn = api.ok(
            "POST",
            "connections",
            Some(json!({
                "name": format!("scale-{i}"),
                "vpn_gateway_id": vgw_id,
                "customer_gateway_id": field(&cgw, "id")?,
                "is_ipv6": true,
                "initiation_policy": "customer_gateway",
                "ikev2_ciphers": [{"encryption": "aes256gcm", "integrity": "sha256", "dh_group": "curve25519"}],
                "esp_ciphers": [{"encryption": "aes256gcm"}],
                "bgp_config_ipv4": {"routing_policy_id": rp_id},
                "tags": [if i % 2 == 0 { "even" } else { "odd" }],
            })),
        )?;
        created.push((field(&cgw, "id")?.to_owned(), conn["connection"].clone()));
    }
    println!(
        "  {EXTRA} connections created in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Listed exactly once each across pages of an odd size; filters.
    let mut seen = BTreeSet::new();
    for page in 1.. {
        let v = api.ok(
            "GET",
            &format!("connections?page={page}&page_size=37"),
            None,
        )?;
        let items = v["connections"].as_array().cloned().unwrap_or_default();
        for c in &items {
            if !seen.insert(field(c, "id")?.to_owned()) {
                bail!("connection {} listed twice", c["id"]);
            }
        }
        if items.len() < 37 {
            break;
        }
    }
    if seen.len() != EXTRA + 1 {
        bail!("{} connections listed, {} exist", seen.len(), EXTRA + 1);
    }
    let odd = api.ok(
        "GET",
        &format!("connections?tags=odd&vpn_gateway_ids={vgw_id}&page_size=1"),
        None,
    )?;
    if odd["total_count"] != EXTRA / 2 {
        bail!("tags=odd counts {}, not {}", odd["total_count"], EXTRA / 2);
    }

    // The load generator's namespace behind cgw, and the routes to it.
    LOAD.create()?;
    veth(CGW, "load0", LOAD, "wan0")?;
    CGW.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd00:5c::1/64",
        "dev",
        "load0",
        "nodad",
    ])?;
    CGW.exec(&["ip", "link", "set", "load0", "up"])?;
    LOAD.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd00:5c::2/64",
        "dev",
        "wan0",
        "nodad",
    ])?;
    LOAD.exec(&["ip", "link", "set", "wan0", "up"])?;
    LOAD.exec(&["ip", "-6", "route", "add", "default", "via", "fd00:5c::1"])?;
    CGW.exec(&[
        "ip",
        "-6",
        "route",
        "add",
        "2001:db8:c::/64",
        "via",
        "fd00:5c::2",
    ])?;
    GW.exec(&[
        "ip",
        "-6",
        "route",
        "add",
        "2001:db8:c::/64",
        "via",
        "2001:db8::2",
        "dev",
        "wan0",
    ])?;
    let mut batch = String::new();
    let mut peers = String::new();
    for (i, (_, conn)) in created.iter().take(PEERS).enumerate() {
        let local = format!("2001:db8:c::{:x}", i + 1);
        batch.push_str(&format!("addr add {local}/128 dev wan0 nodad\n"));
        let psk = api.psk(conn)?;
        peers.push_str(&format!(
            "{}\n",
            json!({"name": format!("scale-{i}"), "local": local, "remote": "2001:db8::1",
                   "psk_hex": psk.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                   "ike": ["aes256gcm", "sha256", "curve25519"], "esp": ["aes256gcm", null]})
        ));
    }
    let batch_file = lab.dir.join("load-addresses.batch");
    fs::write(&batch_file, batch)?;
    LOAD.exec(&["ip", "-batch", &batch_file.display().to_string()])?;
    let peers_file = lab.dir.join("load-peers.jsonl");
    fs::write(&peers_file, peers)?;
    let log = fs::File::create(lab.dir.join("s2s-loadgen.log"))?;
    let bin = workspace_root().join("target/release/s2s-loadgen");
    let t = Instant::now();
    let loadgen = Command::new(&bin)
        .args([
            "--netns",
            &LOAD.name(),
            "--peers",
            &peers_file.display().to_string(),
        ])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    lab.daemons.push(("s2s-loadgen", loadgen));
    lab.logs
        .push(("s2s-loadgen", lab.dir.join("s2s-loadgen.log")));
    let ids: BTreeSet<String> = created
        .iter()
        .take(PEERS)
        .map(|(_, c)| field(c, "id").map(str::to_owned))
        .collect::<anyhow::Result<_>>()?;
    wait_for(
        lab,
        stop,
        &format!("the {PEERS} load-generator tunnels to be up"),
        Duration::from_secs(120),
        || {
            let mut up = 0;
            for page in 1.. {
                let v = api.ok(
                    "GET",
                    &format!("connections?page={page}&page_size=100"),
                    None,
                )?;
                let items = v["connections"].as_array().cloned().unwrap_or_default();
                up += items
                    .iter()
                    .filter(|c| {
                        c["tunnel_status_ipv6"] == "up"
                            && c["id"].as_str().is_some_and(|i| ids.contains(i))
                    })
                    .count();
                if items.len() < 100 {
                    break;
                }
            }
            Ok((up == PEERS).then_some(()))
        },
    )?;
    println!(
        "  {PEERS} tunnels from s2s-loadgen up in {:.1} s (as the API reports them)",
        t.elapsed().as_secs_f64()
    );
    check_lab_connection(lab, stop, &api, conn_id)?;

    // The load generator goes (like a crash), then every scale connection.
    if let Some(pos) = lab.daemons.iter().position(|(n, _)| *n == "s2s-loadgen") {
        let (_, mut child) = lab.daemons.remove(pos);
        labkit::terminate(&mut child, "lab: s2s-loadgen", Duration::from_secs(5));
    }
    let t = Instant::now();
    for (cgw_id, conn) in &created {
        api.ok(
            "DELETE",
            &format!("connections/{}", field(conn, "id")?),
            None,
        )?;
        api.ok("DELETE", &format!("customer-gateways/{cgw_id}"), None)?;
    }
    api.ok("DELETE", &format!("routing-policies/{rp_id}"), None)?;
    wait_for(
        lab,
        stop,
        "the scale connections' TUN interfaces to go",
        Duration::from_secs(60),
        || Ok((tun_count()? == tuns_before).then_some(())),
    )?;
    println!(
        "  {EXTRA} connections deleted and their interfaces gone in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    GW.exec(&["ip", "-6", "route", "del", "2001:db8:c::/64"])?;
    CGW.exec(&["ip", "-6", "route", "del", "2001:db8:c::/64"])?;
    check_lab_connection(lab, stop, &api, conn_id)
}

/// TUN interfaces in gw.
fn tun_count() -> anyhow::Result<usize> {
    Ok(GW
        .out(&["ip", "-o", "link", "show", "type", "tun"])?
        .lines()
        .count())
}

/// The lab's own connection stays active through it all.
fn check_lab_connection(
    lab: &mut Lab,
    stop: &AtomicBool,
    api: &Api,
    conn_id: &str,
) -> anyhow::Result<()> {
    wait_for(
        lab,
        stop,
        "the lab's connection to be active",
        Duration::from_secs(60),
        || {
            let c = api.ok("GET", &format!("connections/{conn_id}"), None)?;
            Ok((c["status"] == "active").then_some(()))
        },
    )
}

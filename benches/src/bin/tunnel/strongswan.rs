//! strongSwan (kernel-libipsec) peers: charon started in a namespace,
//! its packet counters, the config of a strongSwan pair.

use crate::*;

/// Starts charon (kernel-libipsec) in `ns` with `swanctl` as its config,
/// in `dir` (its own /run), and loads it.
pub(crate) fn start_charon(
    env: &mut Env,
    stop: &AtomicBool,
    ns: Ns,
    swanctl: &str,
) -> anyhow::Result<PathBuf> {
    let dir = env.dir.join(format!("charon-{}", ns.short()));
    fs::create_dir_all(dir.join("run"))?;
    fs::write(
        dir.join("strongswan.conf"),
        charon::strongswan_conf(&dir, ""),
    )?;
    fs::write(dir.join("swanctl.conf"), swanctl)?;
    env.spawn(
        &format!("charon-{}", ns.short()),
        ns,
        &charon::command(&dir),
    )?;
    let vici = dir.join("charon.vici");
    env.wait_for(
        stop,
        "charon's vici socket",
        Duration::from_secs(15),
        || Ok(vici.exists().then_some(())),
    )?;
    charon::load(ns, &dir)?;
    Ok(dir)
}

/// Packets of the CHILD SAs of charon in `dir` (in + out).
pub(crate) fn charon_packets(ns: Ns, dir: &Path) -> anyhow::Result<u64> {
    let out = ns.out(&["swanctl", "--list-sas", "--uri", &charon::vici_uri(dir)])?;
    let mut total = 0;
    for l in out.lines() {
        let t = l.trim_start();
        if let Some(rest) = t.strip_prefix("in ").or_else(|| t.strip_prefix("out ")) {
            total += rest
                .split(',')
                .find(|f| f.trim_end().ends_with("packets"))
                .and_then(|f| f.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

pub(crate) fn swan_pair_conf(
    me: &str,
    peer: &str,
    local_ts: &str,
    remote_ts: &str,
    psk: &str,
    start: bool,
) -> String {
    format!(
        r#"connections {{
  bench {{
    version = 2
    local_addrs = {me}
    remote_addrs = {peer}
    proposals = aes256gcm16-prfsha256-x25519
    encap = yes
    local {{
      auth = psk
      id = {me}
    }}
    remote {{
      auth = psk
      id = {peer}
    }}
    children {{
      bench-net {{
        local_ts = {local_ts}
        remote_ts = {remote_ts}
        esp_proposals = aes256gcm16
        start_action = {}
      }}
    }}
  }}
}}
secrets {{
  ike-bench {{
    id-a = {me}
    id-b = {peer}
    secret = "{psk}"
  }}
}}
"#,
        if start { "start" } else { "none" }
    )
}

//! Reading the lab: BIRD's sessions and routes, our `/metrics`, the
//! customer's CHILD SA counters, the daemons' logs.

use super::*;

pub(super) fn birdc(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let ctl = format!("{}/bird.ctl", dir.display());
    let mut all = vec!["birdc", "-s", &ctl];
    all.extend_from_slice(args);
    CGW.out(&all)
}

/// For each of BIRD's two BGP sessions: its BGP state, last error and
/// the start delay it is waiting out after errors, if any (`show
/// protocols all`, one line each). Empty where birdc does not answer.
pub(super) fn bird_bgp_detail(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for proto in ["s2s_v4", "s2s_v6"] {
        let Ok(r) = birdc(dir, &["show", "protocols", "all", proto]) else {
            continue;
        };
        let keep: Vec<&str> = r
            .lines()
            .map(str::trim)
            .filter(|l| {
                ["BGP state:", "Last error:", "Start delay:", "Error wait:"]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .collect();
        out.push(format!("{proto}: {}", keep.join("; ")));
    }
    out
}

/// BIRD's BGP sessions: name → (state, since, info).
pub(super) fn bird_sessions(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let out = birdc(dir, &["show", "protocols"])?;
    Ok(out
        .lines()
        .filter(|l| l.starts_with("s2s_"))
        .map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            (t[0].to_owned(), t[1..].join(" "))
        })
        .collect())
}

/// Whether two `show protocols` readings show the same sessions: same
/// names and columns, and since-times within a second of each other. BIRD
/// keeps the since-time on its monotonic clock and converts it to wall
/// time when it prints, so one unchanged session may read `…27.384` then
/// `…27.383`; a session that went down and up again during a step that
/// lasts several seconds moves by more than that.
pub(super) fn same_sessions(a: &[(String, String)], b: &[(String, String)]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((na, la), (nb, lb))| {
            let (ta, tb): (Vec<&str>, Vec<&str>) = (
                la.split_whitespace().collect(),
                lb.split_whitespace().collect(),
            );
            na == nb
                && ta.len() == tb.len()
                && ta
                    .iter()
                    .zip(&tb)
                    .all(|(x, y)| match (clock_ms(x), clock_ms(y)) {
                        (Some(x), Some(y)) => x.abs_diff(y) <= 1000,
                        _ => x == y,
                    })
        })
}

/// `HH:MM:SS` or `HH:MM:SS.mmm` as milliseconds since midnight.
pub(super) fn clock_ms(t: &str) -> Option<u64> {
    let (hms, frac) = t.split_once('.').unwrap_or((t, "0"));
    let mut parts = hms.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || frac.len() > 3 {
        return None;
    }
    let n = |x: &str| x.parse::<u64>().ok();
    let ms = n(frac)? * 10u64.pow(3 - frac.len() as u32);
    Some(((n(h)? * 60 + n(m)?) * 60 + n(s)?) * 1000 + ms)
}

/// What BIRD learned from us (the VPC prefixes), both sessions.
pub(super) fn bird_learned(dir: &Path) -> anyhow::Result<String> {
    Ok(format!(
        "{}{}",
        birdc(dir, &["show", "route", "protocol", "s2s_v4"])?,
        birdc(dir, &["show", "route", "protocol", "s2s_v6"])?
    ))
}

/// GET /metrics from inside gw, with bash's /dev/tcp (no HTTP client
/// needed in the namespace).
pub(super) fn metrics() -> anyhow::Result<String> {
    GW.out(&[
        "bash",
        "-c",
        "exec 3<>/dev/tcp/127.0.0.1/9108 && \
         printf 'GET /metrics HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n' >&3 && cat <&3",
    ])
}

/// Sum of a counter's samples for one tunnel (both directions).
pub(super) fn metric_sum(text: &str, name: &str, tunnel: &str) -> anyhow::Result<u64> {
    let label = format!("tunnel=\"{tunnel}\"");
    let mut sum = 0u64;
    let mut seen = false;
    for l in text.lines() {
        if l.starts_with(&format!("{name}{{")) && l.contains(&label) {
            let v = l
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .with_context(|| format!("bad sample: {l}"))?;
            sum += v;
            seen = true;
        }
    }
    if !seen {
        bail!("/metrics has no {name} for tunnel {tunnel}");
    }
    Ok(sum)
}

/// (XDP packets, ESP packets) per tunnel.
pub(super) fn tunnel_counters(conn_id: &str) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let text = metrics()?;
    ["v4", "v6"]
        .iter()
        .map(|f| {
            let t = format!("{conn_id}/{f}");
            Ok((
                t.clone(),
                metric_sum(&text, "s2s_xdp_packets_total", &t)?,
                metric_sum(&text, "s2s_esp_packets_total", &t)?,
            ))
        })
        .collect()
}

/// The customer's CHILD SAs and the packets each has sent.
pub(super) fn cgw_child_out_packets(dir: &Path) -> anyhow::Result<Vec<(String, u64)>> {
    let uri = charon::vici_uri(dir);
    let out = CGW.out(&["swanctl", "--list-sas", "--uri", &uri])?;
    let mut v = Vec::new();
    let mut child = None;
    for l in out.lines() {
        let t = l.trim_start();
        if let Some((name, _)) = t.split_once(": #") {
            if name.ends_with("-net") {
                child = Some(name.to_owned());
            }
        } else if let (Some(name), Some(rest)) = (&child, t.strip_prefix("out ")) {
            // "out c0ffee00,    840 bytes,    10 packets, ..."
            let packets = rest
                .split(',')
                .find(|f| f.trim_end().ends_with("packets"))
                .and_then(|f| f.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            v.push((name.clone(), packets));
        }
    }
    Ok(v)
}

pub(super) fn count_in_log(path: &Path, needle: &str) -> usize {
    fs::read_to_string(path)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

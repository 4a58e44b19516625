//! Output: the SVG chart and the perf profile summary.

use crate::*;

/// A two-panel horizontal bar chart: per case, the rate received at
/// saturation (dark) and the highest rate with at most 1 % loss (light).
pub(crate) fn svg(rows: &[(String, [f64; 2], [f64; 2])]) -> String {
    let bar_h = 13.0;
    let row_h = 2.0 * bar_h + 10.0;
    let label_w = 170.0;
    let panel_w = 340.0;
    let top = 78.0;
    let h = top + rows.len() as f64 * row_h + 40.0;
    let w = label_w + 2.0 * panel_w + 60.0;
    let max_of = |i: usize, floor: f64| {
        rows.iter()
            .flat_map(|r| [r.1[i], r.2[i]])
            .fold(floor, f64::max)
    };
    let max = [max_of(0, 1.0), max_of(1, 0.001)];
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">Tunnel throughput: src → A → B → dst over veth, 2 cores ({})</text>"#,
        xml(&pinning())
    );
    let _ = writeln!(
        s,
        r##"<rect x="10" y="32" width="12" height="10" fill="#24527a"/><text x="26" y="41">received at saturation (offered: generator maximum)</text><rect x="420" y="32" width="12" height="10" fill="#8fb3d9"/><text x="436" y="41">highest paced rate with ≤ 1 % loss</text>"##
    );
    let xs = [label_w, label_w + panel_w + 30.0];
    let _ = writeln!(
        s,
        r#"<text x="{}" y="64" font-weight="bold">Mpps, 64-byte frames</text><text x="{}" y="64" font-weight="bold">Gbit/s, {LARGE}-byte frames</text>"#,
        xs[0], xs[1]
    );
    for (i, (name, sat, bounded)) in rows.iter().enumerate() {
        let y = top + i as f64 * row_h;
        let _ = writeln!(
            s,
            r#"<text x="10" y="{}">{}</text>"#,
            y + bar_h * 1.3,
            xml(name)
        );
        for k in 0..2 {
            let scale = |v: f64| (v / max[k]) * (panel_w - 70.0);
            let shown = |v: f64| if k == 0 { v / 1e6 } else { v };
            for (j, (v, color)) in [(sat[k], "#24527a"), (bounded[k], "#8fb3d9")]
                .into_iter()
                .enumerate()
            {
                let yy = y + j as f64 * bar_h;
                let wv = scale(v);
                let _ = writeln!(
                    s,
                    r#"<rect x="{}" y="{yy}" width="{wv:.1}" height="{}" fill="{color}"/><text x="{}" y="{}" font-size="11">{:.3}</text>"#,
                    xs[k],
                    bar_h - 1.0,
                    xs[k] + wv + 4.0,
                    yy + bar_h * 0.8,
                    shown(v)
                );
            }
        }
    }
    let _ = writeln!(
        s,
        r##"<text x="10" y="{}" fill="#555">Failed or missing cases are drawn as zero. See target/bench/tunnel.json and report.md.</text>"##,
        h - 12.0
    );
    s.push_str("</svg>\n");
    s
}

pub(crate) fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The buckets of the worker's self time: a stable key (`tunnel.json`'s
/// `profile_shares`, read by `cargo xtask bench`'s per-stage table) and
/// the label the profile summary prints.
pub(crate) const CATEGORIES: [(&str, &str); 5] = [
    ("crypto", "crypto (AES-GCM seal: ring)"),
    ("scheduling", "scheduling, poll(2), syscalls"),
    ("kernel_tx", "kernel AF_XDP copy-mode TX / veth / skb"),
    ("kernel_other", "other kernel"),
    (
        "worker",
        "our worker (steering, SA lookup, ESP framing, rings, neighbours)",
    ),
];

/// Buckets of self time, by symbol and object: what a reader of the
/// profile wants first. Returns a key of [`CATEGORIES`].
pub(crate) fn category(dso: &str, sym: &str) -> &'static str {
    let l = sym.to_ascii_lowercase();
    let crypto = [
        "aes", "gcm", "ghash", "aead", "seal", "open", "chacha", "poly1305",
    ];
    let sched = [
        "finish_task_switch",
        "schedule",
        "poll",
        "syscall",
        "irqentry",
        "entry_",
        "hrtimer",
        "pick_next",
        "enqueue",
        "dequeue",
        "try_to_wake",
    ];
    let xmit = [
        "xsk", "veth", "skb", "alloc", "slab", "kmem", "kmalloc", "memcpy", "dev_", "netif",
        "napi", "page", "xmit", "eth_type", "spin", "rcu", "bh_",
    ];
    if crypto.iter().any(|k| l.contains(k)) {
        "crypto"
    } else if dso.contains("kernel") && sched.iter().any(|k| l.contains(k)) {
        "scheduling"
    } else if dso.contains("kernel") && xmit.iter().any(|k| l.contains(k)) {
        "kernel_tx"
    } else if dso.contains("kernel") {
        "kernel_other"
    } else {
        "worker"
    }
}

fn label(key: &str) -> &'static str {
    CATEGORIES
        .iter()
        .find(|(k, _)| *k == key)
        .map_or("?", |(_, l)| l)
}

/// What the profile summary found: the text it printed and the worker's
/// self time per [`CATEGORIES`] key, in percent, largest first.
pub(crate) struct Profile {
    pub(crate) summary: String,
    pub(crate) shares: Vec<(&'static str, f64)>,
    /// CPU time of the daemon's `xdp-worker-*` threads over the recording,
    /// in ns (perf's cpu-clock event count is nanoseconds).
    pub(crate) worker_cpu_ns: Option<f64>,
}

/// The `xdp-worker-*` threads' part of a `perf report --sort comm` output:
/// the event count times their summed overhead.
fn worker_cpu_ns(by_comm: &str) -> Option<f64> {
    let total: f64 = by_comm
        .lines()
        .find_map(|l| l.split_once("Event count (approx.):"))
        .and_then(|(_, n)| n.trim().parse().ok())?;
    let pct: f64 = by_comm
        .lines()
        .filter(|l| l.contains("xdp-worker"))
        .filter_map(|l| l.split('%').next()?.trim().parse::<f64>().ok())
        .sum();
    (pct > 0.0).then_some(total * pct / 100.0)
}

pub(crate) fn perf_report(data: &str, args: &[&str]) -> String {
    let out = Command::new("perf")
        .args(["report", "-i", data, "--stdio", "--no-children"])
        .args(args)
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

pub(crate) fn profile_summary(env_dir: &Path, out: &Path) -> anyhow::Result<Profile> {
    let data = env_dir.join("perf.data");
    if !data.exists() {
        bail!("no perf.data");
    }
    let d = data.display().to_string();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# Profile of the 64-byte ours-fastpath run at saturation.\n\
         # 1. perf record -g -p <s2s-gateway in A>: where the encrypting worker's time goes.\n\
         # 2. perf record -a -C <CPU of the system under test>: who uses that CPU.\n"
    );
    // Categories of the worker's self time.
    let flat = perf_report(
        &d,
        &["--sort", "dso,sym", "-g", "none", "--percent-limit", "0"],
    );
    let mut buckets: Vec<(&str, f64)> = Vec::new();
    for l in flat.lines() {
        let t = l.trim_start();
        let Some((pct, rest)) = t.split_once('%') else {
            continue;
        };
        let Ok(pct) = pct.trim().parse::<f64>() else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let dso = f.next().unwrap_or("");
        let sym = f.skip(1).collect::<Vec<_>>().join(" ");
        let c = category(dso, &sym);
        match buckets.iter_mut().find(|b| b.0 == c) {
            Some(b) => b.1 += pct,
            None => buckets.push((c, pct)),
        }
    }
    buckets.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut summary = String::new();
    let _ = writeln!(summary, "######## A's worker, self time by category\n");
    for (c, p) in &buckets {
        let _ = writeln!(summary, "{p:6.1}%  {}", label(c));
    }
    text.push_str(&summary);
    let cpu_data = env_dir.join("perf-cpu.data");
    let mut sections: Vec<(String, String, Vec<&str>)> = vec![
        (
            "A's daemon by thread".into(),
            d.clone(),
            vec!["--sort", "comm", "-g", "none"],
        ),
        (
            "A's worker by symbol (self time, >= 0.5 %)".into(),
            d.clone(),
            vec![
                "--sort",
                "comm,dso,sym",
                "-g",
                "none",
                "--percent-limit",
                "0.5",
            ],
        ),
        (
            "A's worker call graphs (caller, >= 3 %)".into(),
            d.clone(),
            vec![
                "--sort",
                "sym",
                "-g",
                "caller,0.5,3",
                "--percent-limit",
                "3",
            ],
        ),
    ];
    if cpu_data.exists() {
        let c = cpu_data.display().to_string();
        sections.insert(
            0,
            (
                "the whole CPU of the system under test, by thread (pid:comm)".into(),
                c.clone(),
                vec!["--sort", "pid", "-g", "none", "--percent-limit", "0.3"],
            ),
        );
        sections.insert(
            1,
            (
                "the whole CPU of the system under test, by symbol (>= 1 %)".into(),
                c,
                vec!["--sort", "comm,sym", "-g", "none", "--percent-limit", "1"],
            ),
        );
    }
    for (title, file, args) in sections {
        let _ = writeln!(text, "\n######## {title}\n");
        for l in perf_report(&file, &args)
            .lines()
            .filter(|l| {
                !l.trim().is_empty() && !l.starts_with("# To display") && !l.contains("Tip:")
            })
            .take(200)
        {
            let _ = writeln!(text, "{l}");
        }
    }
    fs::write(out, text)?;
    Ok(Profile {
        summary,
        shares: buckets,
        worker_cpu_ns: worker_cpu_ns(&perf_report(&d, &["--sort", "comm", "-g", "none"])),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_cpu_time_is_its_share_of_the_event_count() {
        let out = "# Samples: 3K of event 'cpu-clock:ppp'\n\
                   # Event count (approx.): 875250000\n\
                   #\n\
                   # Children      Self  Command\n\
                       90.00%    90.00%  xdp-worker-0\n\
                        8.00%     8.00%  xdp-worker-1\n\
                        2.00%     2.00%  tokio-rt-worker\n";
        let ns = worker_cpu_ns(out).unwrap();
        assert!((ns - 857_745_000.0).abs() < 1.0, "{ns}");
        assert_eq!(
            worker_cpu_ns("# Event count (approx.): 10\n 100.00% 100.00% perf\n"),
            None
        );
        assert_eq!(worker_cpu_ns(""), None);
    }
}

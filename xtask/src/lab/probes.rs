//! Probes across the tunnel: one don't-fragment ping of a given size,
//! repeated when unanswered, and the sweep over sizes.

use super::*;

/// What one DF ping of a size got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Probe {
    /// The echo reply came back.
    Answered,
    /// An ICMP fragmentation needed / packet too big arrived (with its
    /// MTU), or the host already knew the path MTU from one.
    TooBig(u32),
    /// Neither: the black hole this sweep is for.
    Lost,
}

/// A DF ping of `size` bytes; a probe without an answer is repeated up to
/// twice: the reply may itself have met a smaller MTU on the way back (the
/// customer side's, strongSwan's TUN is 1400) and the remote host learns it
/// from that router's ICMP error, as path MTU discovery does.
pub(super) fn probe(target: &str, v6: bool, size: usize) -> anyhow::Result<Probe> {
    // Forget what earlier probes taught the host: each size on its own.
    VPC.exec(&[
        "ip",
        if v6 { "-6" } else { "-4" },
        "route",
        "flush",
        "cache",
    ])?;
    for _ in 0..3 {
        let p = probe_once(target, v6, size)?;
        if p != Probe::Lost {
            return Ok(p);
        }
    }
    Ok(Probe::Lost)
}

pub(super) fn probe_once(target: &str, v6: bool, size: usize) -> anyhow::Result<Probe> {
    let payload = (size - if v6 { 48 } else { 28 }).to_string();
    let fam = if v6 { "-6" } else { "-4" };
    let out = VPC
        .cmd("ping")
        .args([
            fam, "-M", "do", "-c", "1", "-W", "2", "-s", &payload, target,
        ])
        .output()?;
    if out.status.success() {
        return Ok(Probe::Answered);
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // "Frag needed and DF set (mtu = 1438)", "Packet too big: mtu=1418",
    // "local error: message too long, mtu=1438".
    let mtu = text
        .split("mtu")
        .nth(1)
        .map(|r| r.trim_start_matches([' ', '=']))
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse().ok());
    Ok(mtu.map_or(Probe::Lost, Probe::TooBig))
}

/// DF pings from vpc to remote of every size from 1200 to 1500 bytes (IP
/// packet, step 10), both families: each must be answered or answered with
/// the ICMP error carrying the MTU; none may be silently lost. Prints one
/// summary line per family.
pub(super) fn df_ping_sweep() -> anyhow::Result<()> {
    step("lab: DF ping sweep vpc → remote, 1200..1500 bytes (IPv4, IPv6)");
    let mut lost_total = Vec::new();
    for (target, v6) in [("203.0.113.10", false), ("2001:db8:200::10", true)] {
        let mut answered = (0, usize::MAX, 0usize);
        let mut too_big: Vec<(usize, u32)> = Vec::new();
        let mut lost = Vec::new();
        for size in (1200..=1500).step_by(10) {
            match probe(target, v6, size)? {
                Probe::Answered => {
                    answered.0 += 1;
                    answered.1 = answered.1.min(size);
                    answered.2 = answered.2.max(size);
                }
                Probe::TooBig(m) => too_big.push((size, m)),
                Probe::Lost => lost.push(size),
            }
        }
        let mut mtus: Vec<u32> = too_big.iter().map(|(_, m)| *m).collect();
        mtus.sort_unstable();
        mtus.dedup();
        println!(
            "  {target}: {} answered ({}..={} bytes), {} answered with too-big (mtu {:?}), {} silently lost {:?}",
            answered.0,
            if answered.0 > 0 { answered.1 } else { 0 },
            answered.2,
            too_big.len(),
            mtus,
            lost.len(),
            lost
        );
        // A size that got an error must be above the MTU it names, and an
        // answered size must not be.
        for (size, m) in &too_big {
            if *size <= *m as usize {
                bail!("{target}: {size} bytes got too-big with mtu {m}");
            }
        }
        lost_total.extend(lost.iter().map(|s| format!("{target}/{s}")));
    }
    if !lost_total.is_empty() {
        bail!("DF pings silently lost: {}", lost_total.join(", "));
    }
    Ok(())
}

//! The kernel settings the daemon relies on, checked and set at start (LAN)
//! and when a tunnel's TUN is created, on the daemon's own interfaces only:
//! a stock host (`net.ipv4.ip_forward = 0`, `net.ipv6.conf.all.forwarding =
//! 0`) must work without the operator knowing about them, and a global
//! switch is never turned. Each change is logged; a setting that cannot be
//! made right refuses the start (or the tunnel) with an error naming it.
//!
//! | setting | on | why |
//! | --- | --- | --- |
//! | `net.ipv4.conf.<if>.forwarding = 1` | LAN, each TUN | the slow path: the kernel forwards LAN → TUN (route misses of the fast path, tunnels that are down, `--no-xdp`, IPv4 without DF to fragment) and TUN → LAN (decrypted packets the workers hand over); the kernel checks it on the input interface, and only then sends ICMP errors for what it forwards |
//! | `net.ipv6.conf.<if>.force_forwarding = 1` | LAN, each TUN | the same for IPv6 (Linux ≥ 6.17); on older kernels `net.ipv6.conf.all.forwarding = 1` is required instead (refused otherwise, unless IPv6 is disabled on the interface) |
//! | `net.ipv4.conf.<tun>.rp_filter` = 0 (2 if `all` is 1) | each TUN | decrypted packets arrive on the TUN of the tunnel that carried them while the route back may point at the connection's other tunnel (failover): strict reverse-path filtering would drop them; the kernel uses the larger of `all` and the interface's value |
//! | `net.ipv6.conf.<tun>.addr_gen_mode = 1` | each TUN | no link-local address, so no router solicitations or MLD reports sent into the tunnel |
//!
//! Not relied on: `accept_local` (no packet the kernel receives from a TUN
//! or the LAN carries one of our addresses as its source: our own ICMP
//! errors leave through XDP_TX or the raw socket), and the global
//! `ip_forward` / `all.forwarding` (left as they are).

use std::io;
use std::path::{Path, PathBuf};

/// Why a setting could not be made right.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// Reading or writing `/proc/sys` failed.
    #[error("kernel setting {setting} (wanted {want}): {source}")]
    Io {
        setting: String,
        want: String,
        #[source]
        source: io::Error,
    },
    /// The kernel lacks a per-interface switch and the global one is off.
    #[error("kernel setting {setting} must be {want} ({why})")]
    Required {
        setting: String,
        want: String,
        why: &'static str,
    },
}

/// A setting the daemon changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Dotted sysctl name.
    pub setting: String,
    /// Value before.
    pub from: String,
    /// Value now.
    pub to: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} -> {}", self.setting, self.from, self.to)
    }
}

fn path_of(setting: &str) -> PathBuf {
    // Interface names may contain dots; only the known prefix is split.
    let mut p = PathBuf::from("/proc/sys");
    let mut rest = setting;
    for prefix in ["net.ipv4.conf.", "net.ipv6.conf."] {
        if let Some(tail) = setting.strip_prefix(prefix) {
            p.push(prefix.trim_end_matches('.').replace('.', "/"));
            // `<if>.<key>`: the key never contains a dot.
            if let Some((iface, key)) = tail.rsplit_once('.') {
                p.push(iface);
                p.push(key);
                return p;
            }
            rest = tail;
        }
    }
    p.push(rest.replace('.', "/"));
    p
}

fn read(setting: &str) -> io::Result<String> {
    std::fs::read_to_string(path_of(setting)).map(|s| s.trim().to_owned())
}

fn exists(setting: &str) -> bool {
    Path::new(&path_of(setting)).exists()
}

/// Sets `setting` to `want` unless it already is; returns the change.
pub fn ensure(setting: &str, want: &str) -> Result<Option<Change>, SysctlError> {
    let err = |source| SysctlError::Io {
        setting: setting.to_owned(),
        want: want.to_owned(),
        source,
    };
    let from = read(setting).map_err(err)?;
    if from == want {
        return Ok(None);
    }
    std::fs::write(path_of(setting), want).map_err(err)?;
    let now = read(setting).map_err(err)?;
    if now != want {
        return Err(err(io::Error::other(format!("still {now} after writing"))));
    }
    let c = Change {
        setting: setting.to_owned(),
        from,
        to: want.to_owned(),
    };
    tracing::info!(setting = %c.setting, from = %c.from, to = %c.to, "kernel setting changed");
    Ok(Some(c))
}

/// IPv4 and IPv6 forwarding for packets entering through `iface`.
fn forwarding(iface: &str, out: &mut Vec<Change>) -> Result<(), SysctlError> {
    out.extend(ensure(&format!("net.ipv4.conf.{iface}.forwarding"), "1")?);
    if read(&format!("net.ipv6.conf.{iface}.disable_ipv6")).is_ok_and(|v| v == "1")
        || !exists(&format!("net.ipv6.conf.{iface}"))
    {
        return Ok(());
    }
    let force = format!("net.ipv6.conf.{iface}.force_forwarding");
    if exists(&force) {
        out.extend(ensure(&force, "1")?);
        return Ok(());
    }
    if read("net.ipv6.conf.all.forwarding").is_ok_and(|v| v == "1") {
        return Ok(());
    }
    Err(SysctlError::Required {
        setting: "net.ipv6.conf.all.forwarding".into(),
        want: "1".into(),
        why: "this kernel has no per-interface force_forwarding (Linux < 6.17) and the slow path forwards IPv6",
    })
}

/// What the LAN interface needs; call once at start.
pub fn prepare_lan(lan: &str) -> Result<Vec<Change>, SysctlError> {
    let mut out = Vec::new();
    forwarding(lan, &mut out)?;
    Ok(out)
}

/// What a tunnel's TUN needs; call after creating it, before it is up.
pub fn prepare_tunnel(tun: &str) -> Result<Vec<Change>, SysctlError> {
    let mut out = Vec::new();
    if exists(&format!("net.ipv6.conf.{tun}")) {
        out.extend(ensure(&format!("net.ipv6.conf.{tun}.addr_gen_mode"), "1")?);
    }
    forwarding(tun, &mut out)?;
    let strict = read("net.ipv4.conf.all.rp_filter").is_ok_and(|v| v == "1");
    let want = if strict { "2" } else { "0" };
    out.extend(ensure(&format!("net.ipv4.conf.{tun}.rp_filter"), want)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_names_map_to_proc_paths() {
        assert_eq!(
            path_of("net.ipv4.conf.lan0.forwarding"),
            PathBuf::from("/proc/sys/net/ipv4/conf/lan0/forwarding")
        );
        assert_eq!(
            path_of("net.ipv6.conf.eth0.100.force_forwarding"),
            PathBuf::from("/proc/sys/net/ipv6/conf/eth0.100/force_forwarding")
        );
        assert_eq!(
            path_of("net.ipv6.conf.all.forwarding"),
            PathBuf::from("/proc/sys/net/ipv6/conf/all/forwarding")
        );
        assert_eq!(
            path_of("net.ipv4.ip_forward"),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
    }

    #[test]
    fn a_missing_setting_is_an_error_naming_it() {
        let e = ensure("net.ipv4.conf.no-such-if0.forwarding", "1").unwrap_err();
        assert!(
            e.to_string()
                .contains("net.ipv4.conf.no-such-if0.forwarding"),
            "{e}"
        );
    }
}

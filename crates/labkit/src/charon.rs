//! strongSwan's charon as a peer in a namespace, the way the lab and the
//! tunnel benchmark run it: kernel-libipsec (this kernel has no ESP), every
//! file in one directory (its own `/run` bind-mounted there, so several
//! charons can run at once), its vici socket in that directory.

use std::path::Path;

use crate::Ns;

/// strongswan.conf for a charon whose files live in `dir`; `settings` are
/// extra `charon { ... }` lines (e.g. retransmission timers), inserted as
/// they are.
pub fn strongswan_conf(dir: &Path, settings: &str) -> String {
    let d = dir.display();
    format!(
        r#"charon {{
{settings}  load_modular = no
  load = random nonce openssl pem pkcs1 x509 revocation constraints pubkey curve25519 aes sha1 sha2 hmac gcm chapoly ccm kdf kernel-libipsec kernel-netlink socket-default vici updown
  plugins {{
    vici {{
      socket = unix://{d}/charon.vici
    }}
  }}
  filelog {{
    charon {{
      path = {d}/charon-detail.log
      default = 1
      ike = 2
      append = no
      flush_line = yes
    }}
  }}
}}
"#
    )
}

/// The shell command that runs charon with `dir/strongswan.conf` and
/// `dir/run` as its `/run` (run it inside the namespace, in the
/// background: it does not return).
pub fn command(dir: &Path) -> String {
    let d = dir.display();
    format!("mount --bind {d}/run /run && exec env STRONGSWAN_CONF={d}/strongswan.conf /usr/lib/ipsec/charon")
}

/// Where swanctl reaches the charon of `dir`.
pub fn vici_uri(dir: &Path) -> String {
    format!("unix://{}/charon.vici", dir.display())
}

/// `swanctl --load-all` of `dir/swanctl.conf` into the charon of `dir`;
/// returns swanctl's output.
pub fn load(ns: Ns, dir: &Path) -> anyhow::Result<String> {
    // swanctl wants its command first, then the options.
    ns.out(&[
        "swanctl",
        "--load-all",
        "--file",
        &dir.join("swanctl.conf").display().to_string(),
        "--uri",
        &vici_uri(dir),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_point_into_the_directory() {
        let dir = Path::new("/tmp/x");
        let conf = strongswan_conf(dir, "  retransmit_tries = 3\n");
        assert!(conf.starts_with("charon {\n  retransmit_tries = 3\n  load_modular = no\n"));
        assert!(conf.contains("socket = unix:///tmp/x/charon.vici"));
        assert!(conf.contains("path = /tmp/x/charon-detail.log"));
        assert_eq!(vici_uri(dir), "unix:///tmp/x/charon.vici");
        assert!(command(dir).starts_with("mount --bind /tmp/x/run /run && "));
    }
}

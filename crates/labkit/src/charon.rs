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

/// Key material from charon's level-4 dump in `log` following `label`
/// (the last occurrence): "<label> => N bytes @ 0x..." then lines
/// "  0: 01 02 ...  ascii". For interop tests that check the keys both
/// sides derived; `None` when the dump is absent or cut short.
pub fn dumped_key(log: &str, label: &str) -> Option<Vec<u8>> {
    let start = log.rfind(&format!("{label} =>"))?;
    let mut lines = log[start..].lines();
    let n: usize = lines
        .next()?
        .split("=>")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let mut out = Vec::new();
    for l in lines {
        if out.len() >= n {
            break;
        }
        let Some(pos) = l.find(": ") else { break };
        if l[..pos]
            .split_whitespace()
            .last()?
            .parse::<usize>()
            .is_err()
        {
            break;
        }
        for tok in l[pos + 2..].split_whitespace() {
            if out.len() >= n || tok.len() != 2 {
                break;
            }
            match u8::from_str_radix(tok, 16) {
                Ok(b) => out.push(b),
                Err(_) => break,
            }
        }
    }
    (out.len() == n).then_some(out)
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

    #[test]
    fn dumped_keys_are_read_whole_or_not_at_all() {
        let log = "07[IKE] encryption initiator key => 20 bytes @ 0x7f00\n\
                   07[IKE]    0: 00 01 02 03 04 05 06 07 08 09 0A 0B 0C 0D 0E 0F  ................\n\
                   07[IKE]   16: 10 11 12 13                                      ....\n";
        let key = super::dumped_key(log, "encryption initiator key").unwrap();
        assert_eq!(key, (0u8..20).collect::<Vec<_>>());
        let cut = &log[..log.rfind("   16:").unwrap()];
        assert_eq!(super::dumped_key(cut, "encryption initiator key"), None);
        assert_eq!(super::dumped_key(log, "integrity initiator key"), None);
    }
}

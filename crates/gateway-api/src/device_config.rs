//! Configuration for the customer gateway device of a connection: what the
//! seed says Scaleway cannot offer. Renders a complete `swanctl.conf`
//! (strongSwan), a BIRD 2 config and an FRR config from the connection, its
//! gateways, interconnection subnets, routing policies and PSK.
//!
//! Design of the customer side (run in the lab against strongSwan 5.9.8
//! with kernel-libipsec and BIRD 2.0.12): the CHILD SA's traffic selectors
//! are the interconnection addresses plus the routing policies' prefixes
//! (our gateway accepts the narrowing), so strongSwan's own routes (table
//! 220) send exactly that into its tunnel and never the IKE/ESP packets
//! themselves: with 0.0.0.0/0 selectors kernel-libipsec installs a default
//! route into its tunnel that swallows IKE to the gateway. The
//! interconnection address sits on the tunnel interface and BGP runs over
//! it. Pure functions: no I/O.
//!
//! Nothing a caller chose can break out of its place in a generated file:
//! the PSK follows the API's rule (no quote, backslash or space), and is
//! still written defensively ([`swanctl_secret`]: a quoted string with
//! strongSwan's escapes, or hex when it has bytes a quoted string cannot
//! carry or starts like strongSwan's `0x`/`0s` encodings); names only
//! appear in comments, with anything that could end the comment line
//! replaced ([`comment_text`]); addresses, prefixes and ASNs are typed.

use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::ApiError;
use crate::model::{
    Connection, ConnectionCipher, CustomerGateway, DhGroup, Encryption, Family, InitiationPolicy,
    Integrity, RoutingPolicy,
};
use crate::store::Tx;
use crate::Psk;
use gateway_config::Config;

/// The customer device software a config is rendered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    StrongSwan,
    Bird,
    Frr,
}

impl Vendor {
    pub fn parse(s: &str) -> Option<Vendor> {
        match s {
            "strongswan" => Some(Vendor::StrongSwan),
            "bird" => Some(Vendor::Bird),
            "frr" => Some(Vendor::Frr),
            _ => None,
        }
    }
    pub const NAMES: &'static str = "strongswan, bird, frr";
}

/// One BGP session of the connection as the customer device sees it.
#[derive(Debug, Clone)]
pub struct DeviceSession {
    pub family: Family,
    /// The customer's interconnection address with its prefix.
    pub local: IpNet,
    /// Ours.
    pub peer: IpNet,
    pub policy: RoutingPolicy,
}

/// One tunnel (outer family) of the connection.
#[derive(Debug, Clone, Copy)]
pub struct DeviceTunnel {
    pub family: Family,
    /// Our public address (the device's remote).
    pub vpn_gateway: IpAddr,
    /// The device's public address.
    pub customer_gateway: IpAddr,
}

/// Everything a device config needs.
pub struct DeviceParams<'a> {
    pub connection: &'a Connection,
    pub customer_gateway: &'a CustomerGateway,
    pub our_asn: u32,
    pub tunnels: Vec<DeviceTunnel>,
    pub sessions: Vec<DeviceSession>,
    pub psk: &'a Psk,
}

/// Renders the config for `vendor`.
pub fn render(vendor: Vendor, p: &DeviceParams<'_>) -> String {
    match vendor {
        Vendor::StrongSwan => swanctl(p),
        Vendor::Bird => bird(p),
        Vendor::Frr => frr(p),
    }
}

fn enc_name(e: Encryption) -> &'static str {
    match e {
        Encryption::Aes128 => "aes128",
        Encryption::Aes192 => "aes192",
        Encryption::Aes256 => "aes256",
        Encryption::Aes128gcm => "aes128gcm16",
        Encryption::Aes192gcm => "aes192gcm16",
        Encryption::Aes256gcm => "aes256gcm16",
        Encryption::Aes128ccm => "aes128ccm16",
        Encryption::Aes256ccm => "aes256ccm16",
        Encryption::Chacha20poly1305 | Encryption::UnknownEncryption => "chacha20poly1305",
    }
}

fn hash_name(i: Integrity) -> &'static str {
    match i {
        Integrity::Sha384 => "sha384",
        Integrity::Sha512 => "sha512",
        Integrity::Sha256 | Integrity::UnknownIntegrity => "sha256",
    }
}

fn dh_name(d: DhGroup) -> &'static str {
    match d {
        DhGroup::Modp2048 => "modp2048",
        DhGroup::Modp3072 => "modp3072",
        DhGroup::Modp4096 => "modp4096",
        DhGroup::Ecp256 => "ecp256",
        DhGroup::Ecp384 => "ecp384",
        DhGroup::Ecp521 => "ecp521",
        DhGroup::Curve25519 | DhGroup::UnknownDhgroup => "curve25519",
    }
}

/// strongSwan proposal keyword of one IKE cipher: for AEADs the integrity
/// names the PRF; defaults (sha256, curve25519) as our IKE applies them.
pub fn ike_proposal(c: &ConnectionCipher) -> String {
    let hash = hash_name(c.integrity.unwrap_or(Integrity::Sha256));
    let dh = dh_name(c.dh_group.unwrap_or(DhGroup::Curve25519));
    if c.encryption.is_aead() {
        format!("{}-prf{hash}-{dh}", enc_name(c.encryption))
    } else {
        format!("{}-{hash}-{dh}", enc_name(c.encryption))
    }
}

/// strongSwan ESP proposal keyword; a DH group means PFS on rekeys.
pub fn esp_proposal(c: &ConnectionCipher) -> String {
    let mut s = enc_name(c.encryption).to_owned();
    if !c.encryption.is_aead() {
        s.push('-');
        s.push_str(hash_name(c.integrity.unwrap_or(Integrity::Sha256)));
    }
    if let Some(d) = c.dh_group {
        s.push('-');
        s.push_str(dh_name(d));
    }
    s
}

fn family_tag(f: Family) -> &'static str {
    match f {
        Family::V4 => "v4",
        Family::V6 => "v6",
    }
}

fn swanctl(p: &DeviceParams<'_>) -> String {
    let c = p.connection;
    let ike: Vec<String> = if c.ikev2_ciphers.is_empty() {
        vec!["aes256gcm16-prfsha256-curve25519".into()]
    } else {
        c.ikev2_ciphers.iter().map(ike_proposal).collect()
    };
    let esp: Vec<String> = if c.esp_ciphers.is_empty() {
        vec!["aes256gcm16".into()]
    } else {
        c.esp_ciphers.iter().map(esp_proposal).collect()
    };
    // The customer starts the tunnels when the connection says so; else it
    // waits for our gateway.
    let start = if c.initiation_policy == InitiationPolicy::CustomerGateway {
        "start"
    } else {
        "none"
    };
    // Traffic selectors: BGP between the interconnection addresses, and the
    // prefixes each side may announce.
    let mut local_ts: Vec<String> = Vec::new();
    let mut remote_ts: Vec<String> = Vec::new();
    for sess in &p.sessions {
        local_ts.push(IpNet::from(sess.local.addr()).to_string());
        remote_ts.push(IpNet::from(sess.peer.addr()).to_string());
        local_ts.extend(sess.policy.prefix_filter_in.iter().cloned());
        remote_ts.extend(sess.policy.prefix_filter_out.iter().cloned());
    }
    if local_ts.is_empty() {
        // No routing policy yet: nothing may flow (the seed's default); the
        // IKE SA still needs a selector pair, keep it harmless.
        local_ts = vec!["0.0.0.0/32".into()];
        remote_ts = vec!["0.0.0.0/32".into()];
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# swanctl.conf for the customer gateway of connection {} ({})",
        c.id,
        comment_text(&c.name)
    );
    let _ = writeln!(
        s,
        "# strongSwan routes the traffic selectors below into its tunnel;"
    );
    let _ = writeln!(
        s,
        "# put the interconnection address(es) on the tunnel interface"
    );
    for sess in &p.sessions {
        let _ = writeln!(
            s,
            "#   ip addr add {} dev ipsec0   (BGP {} session, peer {})",
            sess.local,
            family_tag(sess.family),
            sess.peer.addr()
        );
    }
    let _ = writeln!(s, "# and let BGP (see the bird/frr configs) route into it.");
    let _ = writeln!(s, "#");
    mtu_advice(&mut s, p);
    let _ = writeln!(s, "#");
    let _ = writeln!(
        s,
        "# Both tunnels' children carry the same selectors: when one tunnel's"
    );
    let _ = writeln!(
        s,
        "# path dies, DPD removes it and traffic and BGP continue through the"
    );
    let _ = writeln!(
        s,
        "# other. For that to happen inside the BGP hold time (30 s), make"
    );
    let _ = writeln!(
        s,
        "# charon give up on an unanswered DPD within ~8 s, in strongswan.conf:"
    );
    let _ = writeln!(
        s,
        "#   charon {{ retransmit_timeout = 1  retransmit_base = 1.5  retransmit_tries = 3 }}"
    );
    let _ = writeln!(s, "connections {{");
    for t in &p.tunnels {
        let name = format!("s2s-{}", family_tag(t.family));
        let _ = writeln!(s, "  {name} {{");
        let _ = writeln!(s, "    version = 2");
        let _ = writeln!(s, "    local_addrs = {}", t.customer_gateway);
        let _ = writeln!(s, "    remote_addrs = {}", t.vpn_gateway);
        let _ = writeln!(s, "    proposals = {}", ike.join(","));
        let _ = writeln!(s, "    encap = yes");
        let _ = writeln!(s, "    dpd_delay = 3s");
        // Retry forever: a tunnel we delete (a drain) or that DPD ends
        // comes back without the customer acting (close_action and
        // dpd_action below start it again).
        let _ = writeln!(s, "    keyingtries = 0");
        let _ = writeln!(s, "    rekey_time = 4h");
        let _ = writeln!(s, "    local {{");
        let _ = writeln!(s, "      auth = psk");
        let _ = writeln!(s, "      id = {}", t.customer_gateway);
        let _ = writeln!(s, "    }}");
        let _ = writeln!(s, "    remote {{");
        let _ = writeln!(s, "      auth = psk");
        let _ = writeln!(s, "      id = {}", t.vpn_gateway);
        let _ = writeln!(s, "    }}");
        let _ = writeln!(s, "    children {{");
        let _ = writeln!(s, "      {name}-net {{");
        let _ = writeln!(s, "        local_ts = {}", local_ts.join(","));
        let _ = writeln!(s, "        remote_ts = {}", remote_ts.join(","));
        let _ = writeln!(s, "        esp_proposals = {}", esp.join(","));
        let _ = writeln!(s, "        rekey_time = 1h");
        let _ = writeln!(s, "        dpd_action = restart");
        let _ = writeln!(s, "        close_action = start");
        let _ = writeln!(s, "        start_action = {start}");
        let _ = writeln!(s, "      }}");
        let _ = writeln!(s, "    }}");
        let _ = writeln!(s, "  }}");
    }
    let _ = writeln!(s, "}}");
    let _ = writeln!(s, "secrets {{");
    for t in &p.tunnels {
        let _ = writeln!(s, "  ike-s2s-{} {{", family_tag(t.family));
        let _ = writeln!(s, "    id-vpn-gateway = {}", t.vpn_gateway);
        let _ = writeln!(s, "    id-customer-gateway = {}", t.customer_gateway);
        // The PSK alphabet is base64-like: no quote or backslash to escape.
        let _ = writeln!(s, "    secret = {}", swanctl_secret(p.psk.expose()));
        let _ = writeln!(s, "  }}");
    }
    let _ = writeln!(s, "}}");
    s
}

/// Comment lines advising the device's tunnel MTU and TCP MSS from what
/// our gateway reports per tunnel (`tunnel_mtu_ipv4/ipv6`, known once the
/// tunnel's CHILD SA is up).
fn mtu_advice(s: &mut String, p: &DeviceParams<'_>) {
    let _ = writeln!(
        s,
        "# Packet sizes: a tunnel's inner MTU follows the WAN MTU, the ESP suite"
    );
    let _ = writeln!(
        s,
        "# and the outer family; the connection's tunnel_mtu_ipv4/ipv6 (s2sctl"
    );
    let _ = writeln!(
        s,
        "# connection get) report it with the TCP MSS that fits, once up. Set the"
    );
    let _ = writeln!(
        s,
        "# tunnel interface's MTU to the smallest (ipsec0 carries every tunnel):"
    );
    let mut smallest: Option<u32> = None;
    for t in &p.tunnels {
        let tag = family_tag(t.family);
        match p.connection.tunnel_mtu(t.family) {
            Some(m) => {
                smallest = Some(smallest.map_or(m.inner_mtu, |x| x.min(m.inner_mtu)));
                let _ = writeln!(
                    s,
                    "#   {tag} tunnel: inner MTU {}, TCP MSS {} (IPv4) / {} (IPv6), {}",
                    m.inner_mtu,
                    m.tcp_mss_ipv4,
                    m.tcp_mss_ipv6,
                    if m.mss_clamp {
                        "clamped by our gateway"
                    } else {
                        "not clamped by our gateway: clamp it on your side"
                    }
                );
            }
            None => {
                let _ = writeln!(s, "#   {tag} tunnel: not reported yet (no CHILD SA up)");
            }
        }
    }
    if let Some(mtu) = smallest {
        let _ = writeln!(s, "#   ip link set ipsec0 mtu {mtu}");
    }
}

/// The value of a swanctl.conf `secret`, decoding to exactly `psk`.
///
/// strongSwan's settings lexer (libstrongswan `settings_lexer.l`): inside
/// double quotes `\"` and `\\` stand for themselves, `\n`, `\r`, `\t` for
/// control characters, a raw `\r` is dropped and a backslash-newline joins
/// lines; `#`, `{`, `}` and `=` are plain characters there. swanctl then
/// reads a value starting with `0x` as hex and `0s` as base64 (either
/// case). So printable ASCII is quoted with `"` and `\` escaped, unless it
/// starts like an encoding; anything else is written in hex.
pub fn swanctl_secret(psk: &[u8]) -> String {
    let printable = psk.iter().all(|c| (0x20..0x7f).contains(c));
    let encoded_prefix =
        psk.len() >= 2 && psk[0] == b'0' && matches!(psk[1].to_ascii_lowercase(), b'x' | b's');
    if printable && !encoded_prefix {
        let mut s = String::with_capacity(psk.len() + 2);
        s.push('"');
        for &c in psk {
            if c == b'"' || c == b'\\' {
                s.push('\\');
            }
            s.push(char::from(c));
        }
        s.push('"');
        s
    } else {
        let mut s = String::with_capacity(2 + 2 * psk.len());
        s.push_str("0x");
        for c in psk {
            let _ = write!(s, "{c:02x}");
        }
        s
    }
}

/// A caller's text (a connection name) made safe for a one-line comment in
/// any of the generated files: nothing that a config parser could take as
/// the end of the line.
fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{85}') {
                '?'
            } else {
                c
            }
        })
        .collect()
}

fn router_id(p: &DeviceParams<'_>) -> String {
    // BIRD and FRR need an IPv4 router id even on IPv6-only devices.
    p.tunnels
        .iter()
        .find_map(|t| match t.customer_gateway {
            IpAddr::V4(a) => Some(a.to_string()),
            IpAddr::V6(_) => None,
        })
        .or_else(|| {
            p.sessions.iter().find_map(|s| match s.local.addr() {
                IpAddr::V4(a) => Some(a.to_string()),
                IpAddr::V6(_) => None,
            })
        })
        .unwrap_or_else(|| "192.0.2.254".into())
}

fn bird(p: &DeviceParams<'_>) -> String {
    let asn = p.customer_gateway.asn;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# BIRD 2 config for the customer gateway of connection {} ({})",
        p.connection.id,
        comment_text(&p.connection.name)
    );
    let _ = writeln!(
        s,
        "# Our ASN {}; yours {asn}. Communities 12876:42050/42100/42200 on your",
        p.our_asn
    );
    let _ = writeln!(s, "# routes set our local preference low/medium/high.");
    let _ = writeln!(s, "router id {};", router_id(p));
    let _ = writeln!(s, "protocol device {{ scan time 5; }}");
    for sess in &p.sessions {
        let fam = match sess.family {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        };
        let tag = family_tag(sess.family);
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "# Routes learned from the VPN gateway go into the kernel (through the tunnel)."
        );
        let _ = writeln!(s, "protocol kernel kernel_{tag} {{");
        let _ = writeln!(
            s,
            "  {fam} {{ import none; export where source = RTS_BGP; }};"
        );
        let _ = writeln!(s, "}}");
        let _ = writeln!(
            s,
            "# Your prefixes to announce (the routing policy's prefix_filter_in);"
        );
        let _ = writeln!(
            s,
            "# replace the blackholes with your real routes if you have them in BIRD."
        );
        let _ = writeln!(s, "protocol static announce_{tag} {{");
        let _ = writeln!(s, "  {fam};");
        for prefix in &sess.policy.prefix_filter_in {
            let _ = writeln!(s, "  route {prefix} blackhole;");
        }
        let _ = writeln!(s, "}}");
        let _ = writeln!(s, "protocol bgp s2s_{tag} {{");
        let _ = writeln!(s, "  local {} as {asn};", sess.local.addr());
        let _ = writeln!(s, "  neighbor {} as {};", sess.peer.addr(), p.our_asn);
        let _ = writeln!(s, "  hold time 30;");
        // RFC 4724 both ways: our restarts keep your routes to the VPC
        // (helper), and yours keep ours.
        let _ = writeln!(s, "  graceful restart on;");
        // BIRD waits 60 s after a session error before it starts again and
        // doubles it up to 300 s while errors come less than 5 min apart;
        // it waits that long before every later start of the session, even
        // after a clean close, and takes no connection of ours meanwhile.
        // After an outage that cost a hold-timer expiry or two, a restart
        // of our daemon would then keep BGP down past the 120 s our
        // Graceful Restart asks you to keep our routes. 5 s up to 60 s.
        let _ = writeln!(s, "  error wait time 5, 60;");
        let _ = writeln!(s, "  {fam} {{");
        let _ = writeln!(s, "    import filter {{");
        let _ = writeln!(
            s,
            "      if net ~ [ {} ] then accept;",
            bird_set(&sess.policy.prefix_filter_out)
        );
        let _ = writeln!(s, "      reject;");
        let _ = writeln!(s, "    }};");
        let _ = writeln!(s, "    export where proto = \"announce_{tag}\";");
        let _ = writeln!(s, "  }};");
        let _ = writeln!(s, "}}");
    }
    s
}

/// A BIRD prefix set matching each prefix and everything more specific.
fn bird_set(prefixes: &[String]) -> String {
    if prefixes.is_empty() {
        // An empty set is a syntax error; this matches nothing usable.
        return "0.0.0.0/32{32,32}".into();
    }
    prefixes
        .iter()
        .map(|p| format!("{p}+"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn frr(p: &DeviceParams<'_>) -> String {
    let asn = p.customer_gateway.asn;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "! FRR config for the customer gateway of connection {} ({})",
        p.connection.id,
        comment_text(&p.connection.name)
    );
    let _ = writeln!(s, "router bgp {asn}");
    let _ = writeln!(s, " bgp router-id {}", router_id(p));
    let _ = writeln!(s, " no bgp ebgp-requires-policy");
    // Announce the policy's prefixes even when the device's table only has
    // more specific routes for them (as BIRD's config does with blackholes).
    let _ = writeln!(s, " no bgp network import-check");
    let _ = writeln!(s, " no bgp default ipv4-unicast");
    // RFC 4724: keep the VPC's routes while our gateway restarts, and ask
    // us to keep yours while yours does.
    let _ = writeln!(s, " bgp graceful-restart");
    for sess in &p.sessions {
        let _ = writeln!(s, " neighbor {} remote-as {}", sess.peer.addr(), p.our_asn);
        let _ = writeln!(
            s,
            " neighbor {} update-source {}",
            sess.peer.addr(),
            sess.local.addr()
        );
        let _ = writeln!(s, " neighbor {} timers 10 30", sess.peer.addr());
    }
    for sess in &p.sessions {
        let (af, tag) = match sess.family {
            Family::V4 => ("ipv4", "v4"),
            Family::V6 => ("ipv6", "v6"),
        };
        let _ = writeln!(s, " address-family {af} unicast");
        for prefix in &sess.policy.prefix_filter_in {
            let _ = writeln!(s, "  network {prefix}");
        }
        let _ = writeln!(s, "  neighbor {} activate", sess.peer.addr());
        let _ = writeln!(
            s,
            "  neighbor {} prefix-list s2s-in-{tag} in",
            sess.peer.addr()
        );
        let _ = writeln!(
            s,
            "  neighbor {} prefix-list s2s-out-{tag} out",
            sess.peer.addr()
        );
        let _ = writeln!(s, " exit-address-family");
    }
    let _ = writeln!(s, "exit");
    for sess in &p.sessions {
        let (kw, tag, max) = match sess.family {
            Family::V4 => ("ip", "v4", 32),
            Family::V6 => ("ipv6", "v6", 128),
        };
        for (i, prefix) in sess.policy.prefix_filter_out.iter().enumerate() {
            let _ = writeln!(
                s,
                "{kw} prefix-list s2s-in-{tag} seq {} permit {prefix} le {max}",
                (i + 1) * 5
            );
        }
        if sess.policy.prefix_filter_out.is_empty() {
            let _ = writeln!(s, "{kw} prefix-list s2s-in-{tag} seq 5 deny any");
        }
        for (i, prefix) in sess.policy.prefix_filter_in.iter().enumerate() {
            let _ = writeln!(
                s,
                "{kw} prefix-list s2s-out-{tag} seq {} permit {prefix}",
                (i + 1) * 5
            );
        }
        if sess.policy.prefix_filter_in.is_empty() {
            let _ = writeln!(s, "{kw} prefix-list s2s-out-{tag} seq 5 deny any");
        }
    }
    s
}

/// The device config of connection `id` for `vendor` (`strongswan`,
/// `bird`, `frr`), from the store: the API endpoint and `s2sctl connection
/// device-config` serve this.
pub fn for_connection(
    tx: &Tx<'_>,
    config: &Config,
    id: &str,
    vendor: &str,
) -> Result<String, ApiError> {
    let vendor = Vendor::parse(vendor).ok_or_else(|| {
        ApiError::unknown(
            "vendor",
            format!(
                "unknown vendor {vendor:?}, expected one of: {}",
                Vendor::NAMES
            ),
        )
    })?;
    let row = tx
        .connection(id)?
        .ok_or_else(|| ApiError::not_found("connection", id))?;
    let conn = &row.conn;
    let vgw = tx
        .vpn_gateway(&conn.vpn_gateway_id)?
        .ok_or_else(|| ApiError::not_found("vpn_gateway", &conn.vpn_gateway_id))?;
    let cgw = tx
        .customer_gateway(&conn.customer_gateway_id)?
        .ok_or_else(|| ApiError::not_found("customer_gateway", &conn.customer_gateway_id))?;
    let (v4, v6) = crate::ops::vpn_gateway_addresses(config, &vgw);
    let c4: Option<IpAddr> = cgw.public_ipv4.as_deref().and_then(|a| a.parse().ok());
    let c6: Option<IpAddr> = cgw.public_ipv6.as_deref().and_then(|a| a.parse().ok());
    let tunnels: Vec<DeviceTunnel> = [(Family::V4, v4, c4), (Family::V6, v6, c6)]
        .into_iter()
        .filter_map(|(family, ours, theirs)| {
            Some(DeviceTunnel {
                family,
                vpn_gateway: ours?,
                customer_gateway: theirs?,
            })
        })
        .collect();
    let mut sessions = Vec::new();
    for (family, session, interco) in [
        (Family::V4, &conn.bgp_session_ipv4, row.interco.v4),
        (Family::V6, &conn.bgp_session_ipv6, row.interco.v6),
    ] {
        let (Some(session), Some(interco)) = (session, interco) else {
            continue;
        };
        let policy = tx
            .routing_policy(&session.routing_policy_id)?
            .ok_or_else(|| ApiError::not_found("routing_policy", &session.routing_policy_id))?;
        sessions.push(DeviceSession {
            family,
            local: interco.peer,
            peer: interco.local,
            policy,
        });
    }
    let psk = tx
        .secret(&conn.secret_id, conn.secret_revision)?
        .ok_or_else(|| ApiError::not_found("secret", &conn.secret_id))?;
    Ok(render(
        vendor,
        &DeviceParams {
            connection: conn,
            customer_gateway: &cgw,
            our_asn: if vgw.asn != 0 {
                vgw.asn
            } else {
                config.gateway.asn
            },
            tunnels,
            sessions,
            psk: &psk,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(e: Encryption, i: Option<Integrity>, d: Option<DhGroup>) -> ConnectionCipher {
        ConnectionCipher {
            encryption: e,
            integrity: i,
            dh_group: d,
        }
    }

    #[test]
    fn proposals_use_strongswan_keywords() {
        assert_eq!(
            ike_proposal(&cipher(
                Encryption::Aes256gcm,
                Some(Integrity::Sha384),
                Some(DhGroup::Ecp384)
            )),
            "aes256gcm16-prfsha384-ecp384"
        );
        assert_eq!(
            ike_proposal(&cipher(
                Encryption::Aes256,
                Some(Integrity::Sha256),
                Some(DhGroup::Ecp256)
            )),
            "aes256-sha256-ecp256"
        );
        assert_eq!(
            ike_proposal(&cipher(Encryption::Chacha20poly1305, None, None)),
            "chacha20poly1305-prfsha256-curve25519"
        );
        assert_eq!(
            esp_proposal(&cipher(
                Encryption::Aes128ccm,
                None,
                Some(DhGroup::Modp2048)
            )),
            "aes128ccm16-modp2048"
        );
        assert_eq!(
            esp_proposal(&cipher(Encryption::Aes192, Some(Integrity::Sha512), None)),
            "aes192-sha512"
        );
    }

    #[test]
    fn bird_sets_match_more_specifics() {
        assert_eq!(
            bird_set(&["198.51.100.0/24".into(), "10.0.0.0/8".into()]),
            "198.51.100.0/24+, 10.0.0.0/8+"
        );
    }

    /// strongSwan's reading of a `secret` value, as its lexer and swanctl
    /// do it (see [`swanctl_secret`]): only what the generator emits
    /// (a quoted string or `0x` hex) is modelled.
    fn strongswan_reads(value: &str) -> Vec<u8> {
        if let Some(hex) = value.strip_prefix("0x") {
            return (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
        }
        let inner = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .expect("quoted");
        let b = inner.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'\\' => {
                    let next = b[i + 1];
                    out.push(match next {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        other => other,
                    });
                    i += 2;
                }
                b'"' => panic!("unescaped quote ends the string early: {value}"),
                b'\r' => i += 1,
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        assert!(
            !out.starts_with(b"0x") && !out.starts_with(b"0s") && !out.starts_with(b"0X"),
            "swanctl would decode {value} again"
        );
        out
    }

    #[test]
    fn swanctl_secret_round_trips_hostile_psks() {
        let hostile: [&[u8]; 10] = [
            b"plain-alnum-psk-0123456789",
            b"with \"quotes\" and \\backslashes\\",
            b"ends with a backslash\\",
            b"x\"\n}\nsecrets {\n  ike-evil {\n    secret = \"owned",
            b"# not a comment } { = ",
            b"0x00112233445566778899",
            b"0sAAAAAAAAAAAAAAAAAAAA",
            b"0Xdeadbeefdeadbeef",
            b"tab\tcr\rnul\0",
            b"\xff\xfe non-UTF-8 \xc3",
        ];
        for psk in hostile {
            let v = swanctl_secret(psk);
            assert!(!v.contains('\n') && !v.contains('\r'), "{v}");
            assert_eq!(strongswan_reads(&v), psk, "{v}");
        }
        // What the API's rule lets through stays readable.
        assert_eq!(
            swanctl_secret(b"operator-chosen-psk-0123456789"),
            "\"operator-chosen-psk-0123456789\""
        );
    }

    #[test]
    fn comments_cannot_be_ended_by_a_name() {
        assert_eq!(
            comment_text("a\nsecrets {\u{2028}b\u{85}c\r"),
            "a?secrets {?b?c?"
        );
        assert_eq!(comment_text("Paris DC #2 (prod)"), "Paris DC #2 (prod)");
    }
}

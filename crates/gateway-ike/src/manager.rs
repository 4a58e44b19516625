//! The IKE SA manager (libcharon's ike_sa_manager): the connections the
//! agent configured, the IKE SAs keyed by our SPI, dispatch of received
//! datagrams (stripping the non-ESP marker on the NAT-T port, matching a
//! new IKE_SA_INIT to a connection by addresses) and of timers, and the
//! public, sans-I/O API: inputs are bytes, addresses and `now`; outputs
//! are `Action`s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::action::{Action, DownReason, LogLevel, TimerId};
use crate::config::ConnectionConfig;
use crate::crypto::random_u64;
use crate::ike_sa::{IkeSa, IkeSaState};
use crate::message::{exchange, Header, Message, MessageError, FLAG_RESPONSE, HEADER_LEN};
use crate::payload::{notify, DecodeError, NotifyPayload, Payload};
use crate::task_manager::NON_ESP_MARKER;
use crate::tasks::child_rekey::ChildRekey;
use crate::tasks::ike_rekey::IkeRekey;
use crate::tasks::{
    child_create::ChildCreate, child_delete::ChildDelete, ike_auth::IkeAuth, ike_init::IkeInit,
    Task,
};

/// Cap on IKE SAs (half-open included) so a flood of IKE_SA_INIT cannot
/// grow memory without bound.
pub const MAX_IKE_SAS: usize = 4096;

#[derive(Default)]
pub struct IkeManager {
    conns: HashMap<String, Arc<ConnectionConfig>>,
    sas: HashMap<u64, IkeSa>,
    /// (initiator SPI, peer address) → our SPI, to recognise retransmitted
    /// IKE_SA_INIT requests.
    half_open: HashMap<(u64, SocketAddr), u64>,
    /// The NAT-T port datagrams arrive on with the non-ESP marker.
    natt_port: u16,
    /// With this many half-open IKE SAs or more, new IKE_SA_INIT requests
    /// must return a COOKIE first (§2.6).
    cookie_threshold: usize,
    /// Secret for stateless cookies; never leaves this process.
    cookie_secret: crate::crypto::Secret,
}

impl IkeManager {
    pub fn new() -> Self {
        Self {
            natt_port: 4500,
            cookie_threshold: 64,
            cookie_secret: zeroize::Zeroizing::new(crate::crypto::random_bytes(32)),
            ..Self::default()
        }
    }

    /// Sets how many half-open IKE SAs trigger COOKIE challenges (0: always).
    pub fn set_cookie_threshold(&mut self, n: usize) {
        self.cookie_threshold = n;
    }

    /// COOKIE = version 0 | HMAC-SHA256(secret, Ni | IPi | SPIi)[..16] (§2.6).
    fn cookie(&self, ni: &[u8], from: SocketAddr, spi_i: u64) -> Vec<u8> {
        let ip = match from.ip() {
            std::net::IpAddr::V4(a) => a.octets().to_vec(),
            std::net::IpAddr::V6(a) => a.octets().to_vec(),
        };
        let data = [ni, &ip, &spi_i.to_be_bytes()].concat();
        let mac = crate::crypto::Prf::HmacSha256.prf(&self.cookie_secret, &data);
        let mut c = vec![0u8];
        c.extend_from_slice(&mac[..16]);
        c
    }

    /// Under half-open load, a new IKE_SA_INIT without a valid COOKIE gets
    /// one back and creates no state. Returns the challenge to send.
    fn cookie_challenge(&self, msg: &Message, from: SocketAddr, to: SocketAddr) -> Option<Action> {
        if self.half_open.len() < self.cookie_threshold {
            return None;
        }
        let ni = msg.payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.as_slice()),
            _ => None,
        })?;
        let expect = self.cookie(ni, from, msg.spi_i);
        let valid = match msg.payloads.first() {
            Some(Payload::Notify(n)) if n.ntype == notify::COOKIE => bool::from(
                subtle::ConstantTimeEq::ct_eq(n.data.as_slice(), expect.as_slice()),
            ),
            _ => false,
        };
        if valid {
            return None;
        }
        let mut r = Message::new(msg.spi_i, 0, exchange::IKE_SA_INIT, FLAG_RESPONSE, 0);
        r.payloads
            .push(Payload::Notify(NotifyPayload::new(notify::COOKIE, expect)));
        Some(Action::Send {
            bytes: with_marker(r.encode_plain(), to.port() == self.natt_port),
            from: to,
            to: from,
        })
    }

    /// Adds (or replaces) a connection; starts an IKE SA if it initiates.
    pub fn add_connection(&mut self, cfg: ConnectionConfig, now: Instant) -> Vec<Action> {
        let name = cfg.name.clone();
        let initiate = cfg.initiate;
        self.conns.insert(name.clone(), Arc::new(cfg));
        if initiate {
            self.initiate(&name, now)
        } else {
            Vec::new()
        }
    }

    /// Starts a new IKE SA (and its first CHILD SA) for a connection.
    pub fn initiate(&mut self, name: &str, now: Instant) -> Vec<Action> {
        let Some(conn) = self.conns.get(name).cloned() else {
            return Vec::new();
        };
        let spi_i = self.new_spi();
        let local = SocketAddr::new(conn.local_addr, conn.ike_port);
        let remote = SocketAddr::new(conn.remote_addr, conn.remote_port);
        let mut sa = IkeSa::new(conn, true, spi_i, 0, local, remote, now);
        sa.log(
            LogLevel::Info,
            format!("initiating IKE SA {spi_i:016x}_i to {remote}"),
        );
        sa.queue.push_back(vec![Task::IkeInit(IkeInit::default())]);
        sa.queue_exchange(
            vec![
                Task::IkeAuth(IkeAuth),
                Task::ChildCreate(ChildCreate::default()),
            ],
            now,
        );
        self.sas.insert(spi_i, sa);
        self.collect(spi_i, now)
    }

    /// Removes a connection: a DELETE is sent (best effort, not waited
    /// for) and its SAs are removed at once.
    pub fn remove_connection(&mut self, name: &str, now: Instant) -> Vec<Action> {
        self.conns.remove(name);
        let spis: Vec<u64> = self
            .sas
            .iter()
            .filter(|(_, sa)| sa.conn.name == name)
            .map(|(s, _)| *s)
            .collect();
        let mut out = Vec::new();
        for spi in spis {
            if let Some(sa) = self.sas.get_mut(&spi) {
                if sa.state == IkeSaState::Established && sa.outstanding.is_none() {
                    sa.queue_exchange(vec![Task::IkeDelete], now);
                }
                sa.destroy(DownReason::Removed);
            }
            out.extend(self.collect(spi, now));
        }
        out
    }

    /// Deletes a connection's IKE SAs gracefully (DELETE, then wait for
    /// the response); the connection stays configured.
    pub fn delete_ike_sa(&mut self, name: &str, now: Instant) -> Vec<Action> {
        let spis: Vec<u64> = self
            .sas
            .iter()
            .filter(|(_, sa)| sa.conn.name == name && sa.state == IkeSaState::Established)
            .map(|(s, _)| *s)
            .collect();
        let mut out = Vec::new();
        for spi in spis {
            if let Some(sa) = self.sas.get_mut(&spi) {
                sa.queue_exchange(vec![Task::IkeDelete], now);
            }
            out.extend(self.collect(spi, now));
        }
        out
    }

    /// Deletes one CHILD SA (by our inbound SPI) with an INFORMATIONAL.
    pub fn delete_child_sa(&mut self, name: &str, spi_in: u32, now: Instant) -> Vec<Action> {
        let Some(spi) = self.find_child_owner(name, spi_in) else {
            return Vec::new();
        };
        if let Some(sa) = self.sas.get_mut(&spi) {
            sa.queue_exchange(
                vec![Task::ChildDelete(ChildDelete {
                    spis_in: vec![spi_in],
                })],
                now,
            );
        }
        self.collect(spi, now)
    }

    /// Rekeys one CHILD SA (by our inbound SPI) now.
    pub fn rekey_child_sa(&mut self, name: &str, spi_in: u32, now: Instant) -> Vec<Action> {
        let Some(spi) = self.find_child_owner(name, spi_in) else {
            return Vec::new();
        };
        if let Some(sa) = self.sas.get_mut(&spi) {
            sa.queue_exchange(vec![Task::ChildRekey(ChildRekey::rekey(spi_in))], now);
        }
        self.collect(spi, now)
    }

    /// Rekeys the connection's IKE SA now.
    pub fn rekey_ike_sa(&mut self, name: &str, now: Instant) -> Vec<Action> {
        let spi = self
            .sas
            .iter()
            .find(|(_, sa)| {
                sa.conn.name == name && sa.state == IkeSaState::Established && !sa.rekeyed
            })
            .map(|(s, _)| *s);
        let Some(spi) = spi else { return Vec::new() };
        if let Some(sa) = self.sas.get_mut(&spi) {
            sa.queue_exchange(vec![Task::IkeRekey(IkeRekey::default())], now);
        }
        self.collect(spi, now)
    }

    fn find_child_owner(&self, name: &str, spi_in: u32) -> Option<u64> {
        self.sas
            .iter()
            .find(|(_, sa)| sa.conn.name == name && sa.children.iter().any(|c| c.spi_in == spi_in))
            .map(|(s, _)| *s)
    }

    /// The IKE SAs, for status reporting.
    pub fn ike_sas(&self) -> impl Iterator<Item = &IkeSa> {
        self.sas.values()
    }

    /// A received UDP datagram (payload only) with its source and the
    /// local address it arrived on.
    pub fn handle_datagram(
        &mut self,
        data: &[u8],
        from: SocketAddr,
        to: SocketAddr,
        now: Instant,
    ) -> Vec<Action> {
        let data = if to.port() == self.natt_port {
            match data {
                // NAT keepalive (RFC 3948 §2.3).
                [0xff] => return Vec::new(),
                [0, 0, 0, 0, rest @ ..] => rest,
                // ESP: not ours.
                _ => return Vec::new(),
            }
        } else {
            data
        };
        let Ok(h) = Header::decode(data) else {
            return Vec::new();
        };
        if data.len() < HEADER_LEN {
            return Vec::new();
        }
        let msg = match Message::decode(data) {
            Ok(m) => m,
            Err(MessageError::Decode(DecodeError::UnsupportedCritical(t)))
                if h.exchange == exchange::IKE_SA_INIT && !h.is_response() =>
            {
                let mut r = Message::new(h.spi_i, 0, h.exchange, FLAG_RESPONSE, h.message_id);
                r.payloads.push(Payload::Notify(NotifyPayload::new(
                    notify::UNSUPPORTED_CRITICAL_PAYLOAD,
                    vec![t],
                )));
                return vec![Action::Send {
                    bytes: with_marker(r.encode_plain(), to.port() == self.natt_port),
                    from: to,
                    to: from,
                }];
            }
            Err(_) => return Vec::new(),
        };
        let spi = if h.spi_r == 0 && h.exchange == exchange::IKE_SA_INIT && !h.is_response() {
            match self.half_open.get(&(h.spi_i, from)) {
                Some(s) => *s,
                None if !self.knows_peer(from, to) => return Vec::new(),
                None => match self.cookie_challenge(&msg, from, to) {
                    Some(challenge) => return vec![challenge],
                    None => match self.new_responder(&h, from, to, now) {
                        Some(s) => s,
                        None => return Vec::new(),
                    },
                },
            }
        } else if h.from_initiator() {
            h.spi_r
        } else {
            h.spi_i
        };
        let Some(sa) = self.sas.get_mut(&spi) else {
            return Vec::new();
        };
        let was_established = sa.state == IkeSaState::Established;
        sa.process_message(data, msg, from, to, now);
        let now_established = sa.state == IkeSaState::Established;
        let replace = (!was_established && now_established && sa.peer_initial_contact)
            .then(|| sa.conn.name.clone());
        let mut out = self.collect(spi, now);
        if let Some(name) = replace {
            out.extend(self.replace_older(&name, spi, now));
        }
        out
    }

    /// A timer armed by `Action::ArmTimer` fired (spurious calls are harmless).
    pub fn handle_timer(&mut self, id: TimerId, now: Instant) -> Vec<Action> {
        let Some(sa) = self.sas.get_mut(&id.0) else {
            return Vec::new();
        };
        sa.on_timer(now);
        self.collect(id.0, now)
    }

    fn new_spi(&self) -> u64 {
        loop {
            let s = random_u64();
            if s != 0 && !self.sas.contains_key(&s) {
                return s;
            }
        }
    }

    fn knows_peer(&self, from: SocketAddr, to: SocketAddr) -> bool {
        self.conns
            .values()
            .any(|c| c.remote_addr == from.ip() && c.local_addr == to.ip())
    }

    fn new_responder(
        &mut self,
        h: &Header,
        from: SocketAddr,
        to: SocketAddr,
        now: Instant,
    ) -> Option<u64> {
        if self.sas.len() >= MAX_IKE_SAS {
            return None;
        }
        let conn = self
            .conns
            .values()
            .find(|c| c.remote_addr == from.ip() && c.local_addr == to.ip())?
            .clone();
        let spi_r = self.new_spi();
        let sa = IkeSa::new(conn, false, h.spi_i, spi_r, to, from, now);
        self.sas.insert(spi_r, sa);
        self.half_open.insert((h.spi_i, from), spi_r);
        Some(spi_r)
    }

    /// INITIAL_CONTACT (§3.10.1): the peer has no other IKE SA with us, so
    /// older ones of the same connection are stale.
    fn replace_older(&mut self, name: &str, keep: u64, now: Instant) -> Vec<Action> {
        let old: Vec<u64> = self
            .sas
            .iter()
            .filter(|(s, sa)| {
                **s != keep && sa.conn.name == name && sa.state == IkeSaState::Established
            })
            .map(|(s, _)| *s)
            .collect();
        let mut out = Vec::new();
        for s in old {
            if let Some(sa) = self.sas.get_mut(&s) {
                sa.destroy(DownReason::Replaced);
            }
            out.extend(self.collect(s, now));
        }
        out
    }

    /// Drains an SA's actions, arms its timer, drops it when dead and
    /// applies the DPD action.
    fn collect(&mut self, spi: u64, now: Instant) -> Vec<Action> {
        let Some(sa) = self.sas.get_mut(&spi) else {
            return Vec::new();
        };
        let mut out = std::mem::take(&mut sa.out);
        let adopted = sa.rekeyed_into.take();
        if let Some(at) = sa.next_deadline() {
            out.push(Action::ArmTimer {
                id: TimerId(spi),
                at,
            });
        }
        if sa.state == IkeSaState::Dead {
            let restart = sa.down_reason == Some(DownReason::PeerUnreachable)
                && sa.conn.dpd_action == crate::config::DpdAction::Restart
                && sa.conn.dpd_interval.is_some();
            let name = sa.conn.name.clone();
            let key = (sa.spi_i, sa.remote);
            self.sas.remove(&spi);
            self.half_open.retain(|k, v| *v != spi && *k != key);
            if restart && self.conns.contains_key(&name) {
                out.extend(self.initiate(&name, now));
            }
        } else if sa.state == IkeSaState::Established {
            self.half_open.retain(|_, v| *v != spi);
        }
        if let Some(new) = adopted {
            let new_spi = new.my_spi();
            self.sas.insert(new_spi, *new);
            out.extend(self.collect(new_spi, now));
        }
        out
    }
}

fn with_marker(bytes: Vec<u8>, marker: bool) -> Vec<u8> {
    if !marker {
        return bytes;
    }
    let mut v = NON_ESP_MARKER.to_vec();
    v.extend_from_slice(&bytes);
    v
}

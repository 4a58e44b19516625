//! The IKE SA manager (libcharon's ike_sa_manager): the connections the
//! agent configured, the IKE SAs keyed by our SPI, dispatch of received
//! datagrams (stripping the non-ESP marker on the NAT-T port, matching a
//! new IKE_SA_INIT to a connection by addresses), of timers and of
//! Diffie-Hellman results, and the public, sans-I/O API: inputs are bytes,
//! addresses, results and `now`; outputs are `Action`s.
//!
//! It also bounds what unauthenticated peers cost ([`Limits`]): IKE SAs
//! in all, half-open IKE SAs per remote address (COOKIE challenges from a
//! low count on, RFC 7296 §2.6, with a secret that rotates and stays
//! valid for one more period; then a hard cap), and established IKE SAs
//! per connection (the oldest beyond the cap is deleted, as a new SA of
//! the same peer replaces it). Inbound SPIs come from one pool (`spi`)
//! that also asks the data plane through an injectable predicate.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::action::{Action, DownReason, LogLevel, TimerId};
use crate::config::ConnectionConfig;
use crate::crypto::{random_u64, Secret};
use crate::dh::{DhOutcome, DhResult};
use crate::ike_sa::{IkeSa, IkeSaState};
use crate::message::{exchange, Header, Message, MessageError, FLAG_RESPONSE, HEADER_LEN};
use crate::payload::{notify, DecodeError, NotifyPayload, Payload};
use crate::spi::{SpiInUse, SpiPool};
use crate::task_manager::NON_ESP_MARKER;
use crate::tasks::child_rekey::ChildRekey;
use crate::tasks::ike_rekey::IkeRekey;
use crate::tasks::{
    child_create::ChildCreate, child_delete::ChildDelete, ike_auth::IkeAuth, ike_init::IkeInit,
    Task,
};

/// Default cap on IKE SAs (half-open included) so a flood of IKE_SA_INIT
/// cannot grow memory without bound.
pub const MAX_IKE_SAS: usize = 4096;

/// What peers can make the manager keep. The defaults suit a gateway with
/// a few thousand tunnels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// IKE SAs in all, half-open included: beyond, IKE_SA_INIT is dropped.
    pub max_ike_sas: usize,
    /// With this many half-open IKE SAs in all, every new IKE_SA_INIT must
    /// return a COOKIE first (§2.6; 0: always).
    pub cookie_threshold: usize,
    /// The same, counting the half-open IKE SAs of the sender's address
    /// only: a spoofer who cannot receive there stays below it, the real
    /// peer returns the COOKIE and gets through.
    pub cookie_threshold_per_addr: usize,
    /// Half-open IKE SAs a remote address may have: beyond, its
    /// IKE_SA_INIT is dropped (and counted), COOKIE or not.
    pub max_half_open_per_addr: usize,
    /// Established IKE SAs per connection: the one that carries it, plus
    /// one taking over (a peer's reauthentication, both sides initiating
    /// at once; a rekey's old SA is not counted). When one more is
    /// authenticated, the oldest is deleted.
    pub max_established_per_connection: usize,
    /// How long a COOKIE secret is used; the previous one stays valid for
    /// one more period, so a COOKIE handed out just before a rotation
    /// still works.
    pub cookie_rotation: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_ike_sas: MAX_IKE_SAS,
            cookie_threshold: 64,
            cookie_threshold_per_addr: 2,
            max_half_open_per_addr: 4,
            max_established_per_connection: 2,
            cookie_rotation: Duration::from_secs(120),
        }
    }
}

/// What the limits refused, since the manager was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// IKE_SA_INIT dropped: its address had `max_half_open_per_addr`.
    pub half_open_per_addr_dropped: u64,
    /// IKE_SA_INIT dropped: the manager held `max_ike_sas`.
    pub ike_sa_limit_dropped: u64,
    /// COOKIE challenges sent (no state kept for them).
    pub cookies_sent: u64,
    /// Diffie-Hellman jobs the driver refused (overload): a half-open SA
    /// the peer started is dropped for it, other work is asked again.
    pub dh_refused: u64,
    /// Established IKE SAs deleted for `max_established_per_connection`.
    pub replaced_over_limit: u64,
}

/// How many IKE and CHILD SAs the manager holds, by state (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// IKE_SA_INIT / IKE_AUTH in progress (ours and the peers').
    pub ike_connecting: u64,
    pub ike_established: u64,
    /// A DELETE of the IKE SA is outstanding.
    pub ike_deleting: u64,
    pub child_installed: u64,
    pub child_rekeying: u64,
    /// Replaced by a rekey, waiting for its DELETE or its grace period.
    pub child_rekeyed: u64,
    pub child_deleting: u64,
}

impl Census {
    /// `(state, count)` of the IKE SAs, every state once.
    pub fn ike(&self) -> [(&'static str, u64); 3] {
        [
            ("connecting", self.ike_connecting),
            ("established", self.ike_established),
            ("deleting", self.ike_deleting),
        ]
    }
    /// `(state, count)` of the CHILD SAs, every state once.
    pub fn child(&self) -> [(&'static str, u64); 4] {
        [
            ("installed", self.child_installed),
            ("rekeying", self.child_rekeying),
            ("rekeyed", self.child_rekeyed),
            ("deleting", self.child_deleting),
        ]
    }
}

/// Stateless COOKIE secrets (§2.6): the current one and the previous one,
/// each named by a version byte that leads the COOKIE.
struct CookieSecrets {
    current: Secret,
    previous: Option<Secret>,
    version: u8,
    rotate_at: Option<Instant>,
}

impl CookieSecrets {
    fn new() -> Self {
        Self {
            current: zeroize::Zeroizing::new(crate::crypto::random_bytes(32)),
            previous: None,
            version: 0,
            rotate_at: None,
        }
    }

    fn rotate(&mut self, now: Instant, period: Duration) {
        match self.rotate_at {
            None => self.rotate_at = Some(now + period),
            Some(at) if now >= at => {
                let fresh = zeroize::Zeroizing::new(crate::crypto::random_bytes(32));
                let old = std::mem::replace(&mut self.current, fresh);
                // After a long quiet spell the old one is stale too.
                self.previous = (now < at + period).then_some(old);
                self.version = self.version.wrapping_add(1);
                self.rotate_at = Some(now + period);
            }
            Some(_) => {}
        }
    }

    /// COOKIE = version | HMAC-SHA256(secret, Ni | IPi | SPIi)[..16].
    fn make(&self, version: u8, ni: &[u8], from: IpAddr, spi_i: u64) -> Option<Vec<u8>> {
        let secret = if version == self.version {
            &self.current
        } else if version == self.version.wrapping_sub(1) {
            self.previous.as_ref()?
        } else {
            return None;
        };
        let ip = match from {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let data = [ni, &ip, &spi_i.to_be_bytes()].concat();
        let mac = crate::crypto::Prf::HmacSha256.prf(secret, &data);
        let mut c = vec![version];
        c.extend_from_slice(&mac[..16]);
        Some(c)
    }

    fn valid(&self, cookie: &[u8], ni: &[u8], from: IpAddr, spi_i: u64) -> bool {
        let Some(&version) = cookie.first() else {
            return false;
        };
        self.make(version, ni, from, spi_i).is_some_and(|expect| {
            bool::from(subtle::ConstantTimeEq::ct_eq(cookie, expect.as_slice()))
        })
    }
}

pub struct IkeManager {
    conns: HashMap<String, Arc<ConnectionConfig>>,
    sas: HashMap<u64, IkeSa>,
    /// (initiator SPI, peer address) → our SPI, to recognise retransmitted
    /// IKE_SA_INIT requests; also what counts as half-open per address.
    half_open: HashMap<(u64, SocketAddr), u64>,
    /// The NAT-T port datagrams arrive on with the non-ESP marker.
    natt_port: u16,
    limits: Limits,
    counters: Counters,
    /// Secrets for stateless cookies; never leave this process.
    cookies: CookieSecrets,
    spis: Arc<SpiPool>,
    /// New IKE SAs hand their Diffie-Hellman work to the driver.
    dh_offload: bool,
}

impl Default for IkeManager {
    fn default() -> Self {
        Self::new()
    }
}

impl IkeManager {
    pub fn new() -> Self {
        Self {
            conns: HashMap::new(),
            sas: HashMap::new(),
            half_open: HashMap::new(),
            natt_port: 4500,
            limits: Limits::default(),
            counters: Counters::default(),
            cookies: CookieSecrets::new(),
            spis: Arc::new(SpiPool::default()),
            dh_offload: false,
        }
    }

    /// Sets how many half-open IKE SAs trigger COOKIE challenges (0: always).
    pub fn set_cookie_threshold(&mut self, n: usize) {
        self.limits.cookie_threshold = n;
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Counts the IKE and CHILD SAs by state (one pass over them: call it
    /// when asked, not per event).
    pub fn census(&self) -> Census {
        use crate::child_sa::ChildSaState;
        let mut c = Census::default();
        for sa in self.sas.values() {
            match sa.state() {
                IkeSaState::Connecting => c.ike_connecting += 1,
                IkeSaState::Established => c.ike_established += 1,
                IkeSaState::Deleting => c.ike_deleting += 1,
                IkeSaState::Dead => {}
            }
            for child in sa.children() {
                match child.state {
                    ChildSaState::Installed => c.child_installed += 1,
                    ChildSaState::Rekeying => c.child_rekeying += 1,
                    ChildSaState::Rekeyed => c.child_rekeyed += 1,
                    ChildSaState::Deleting => c.child_deleting += 1,
                }
            }
        }
        c
    }

    /// Tells the manager which inbound SPIs are in use outside it (the
    /// data plane's SA table); new CHILD SAs never get one of them.
    pub fn set_spi_in_use(&mut self, in_use: SpiInUse) {
        self.spis.set_external(Some(in_use));
    }

    /// With `true`, IKE SAs created from now on emit their Diffie-Hellman
    /// work as [`Action::ComputeDh`] and wait for
    /// [`IkeManager::handle_dh_result`] instead of computing inline.
    pub fn set_dh_offload(&mut self, on: bool) {
        self.dh_offload = on;
    }

    fn half_open_from(&self, ip: IpAddr) -> usize {
        self.half_open.keys().filter(|(_, a)| a.ip() == ip).count()
    }

    /// Under half-open load (in all, or from this address), a new
    /// IKE_SA_INIT without a valid COOKIE gets one back and creates no
    /// state. Returns the challenge to send.
    fn cookie_challenge(
        &mut self,
        msg: &Message,
        from: SocketAddr,
        to: SocketAddr,
        now: Instant,
    ) -> Option<Action> {
        if self.half_open.len() < self.limits.cookie_threshold
            && self.half_open_from(from.ip()) < self.limits.cookie_threshold_per_addr
        {
            return None;
        }
        self.cookies.rotate(now, self.limits.cookie_rotation);
        let ni = msg.payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.as_slice()),
            _ => None,
        })?;
        let valid = match msg.payloads.first() {
            Some(Payload::Notify(n)) if n.ntype == notify::COOKIE => {
                self.cookies.valid(&n.data, ni, from.ip(), msg.spi_i)
            }
            _ => false,
        };
        if valid {
            return None;
        }
        let expect = self
            .cookies
            .make(self.cookies.version, ni, from.ip(), msg.spi_i)?;
        self.counters.cookies_sent += 1;
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
        let mut sa = IkeSa::new(
            conn,
            true,
            spi_i,
            0,
            local,
            remote,
            now,
            Arc::clone(&self.spis),
            self.dh_offload,
        );
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

    /// Adds (or replaces) a connection and resumes its IKE SAs from
    /// snapshots taken `elapsed` ago (a restart, see [`IkeManager::restore`]);
    /// an initiating connection initiates only if none was resumed.
    /// Returns the actions and, per snapshot, whether it was resumed.
    pub fn add_connection_resuming(
        &mut self,
        cfg: ConnectionConfig,
        snapshots: &[crate::snapshot::IkeSaSnapshot],
        elapsed: std::time::Duration,
        now: Instant,
    ) -> (Vec<Action>, Vec<Result<(), crate::snapshot::RestoreError>>) {
        let name = cfg.name.clone();
        let initiate = cfg.initiate;
        self.conns.insert(name.clone(), Arc::new(cfg));
        let mut out = Vec::new();
        let mut results = Vec::with_capacity(snapshots.len());
        for snap in snapshots {
            let r = if snap.conn == name {
                self.restore(snap, elapsed, now)
            } else {
                Err(crate::snapshot::RestoreError::UnknownConnection(
                    snap.conn.clone(),
                ))
            };
            results.push(r.map(|acts| out.extend(acts)));
        }
        if initiate && !results.iter().any(Result::is_ok) {
            out.extend(self.initiate(&name, now));
        }
        (out, results)
    }

    /// Resumes an IKE SA from a snapshot taken `elapsed` ago (a restart):
    /// established at once, no exchange with the peer, its CHILD SAs
    /// installed again (`InstallChildSa` with `resume` set) and its timers
    /// (DPD, rekeys) running. The connection must be configured with the
    /// snapshot's addresses; a snapshot that does not fit is refused and
    /// changes nothing (initiate instead).
    pub fn restore(
        &mut self,
        snap: &crate::snapshot::IkeSaSnapshot,
        elapsed: std::time::Duration,
        now: Instant,
    ) -> Result<Vec<Action>, crate::snapshot::RestoreError> {
        use crate::snapshot::RestoreError;
        let conn = self
            .conns
            .get(&snap.conn)
            .cloned()
            .ok_or_else(|| RestoreError::UnknownConnection(snap.conn.clone()))?;
        if conn.local_addr != snap.local.ip() || conn.remote_addr != snap.remote.ip() {
            return Err(RestoreError::AddressesChanged);
        }
        let spi = snap.my_spi();
        if self.sas.contains_key(&spi) {
            return Err(RestoreError::Exists(spi));
        }
        let sa = IkeSa::from_snapshot(
            conn,
            snap,
            elapsed,
            now,
            Arc::clone(&self.spis),
            self.dh_offload,
        )?;
        self.sas.insert(spi, sa);
        Ok(self.collect(spi, now))
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
                None if self.half_open_from(from.ip()) >= self.limits.max_half_open_per_addr => {
                    // No log line: one per datagram of a flood.
                    self.counters.half_open_per_addr_dropped += 1;
                    return Vec::new();
                }
                None => match self.cookie_challenge(&msg, from, to, now) {
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
        let was_authenticated = sa.authenticated;
        sa.process_message(data, msg, from, to, now);
        self.after(spi, was_authenticated, now)
    }

    /// The result of an [`Action::ComputeDh`] job (a stale one is ignored).
    pub fn handle_dh_result(&mut self, result: DhResult, now: Instant) -> Vec<Action> {
        let spi = result.id.ike;
        let Some(sa) = self.sas.get_mut(&spi) else {
            return Vec::new();
        };
        if matches!(result.outcome, DhOutcome::Refused) {
            self.counters.dh_refused += 1;
        }
        let was_authenticated = sa.authenticated;
        sa.dh_done(result, now);
        self.after(spi, was_authenticated, now)
    }

    /// After an SA processed something: when it just got authenticated,
    /// older SAs of its connection give way (INITIAL_CONTACT, or the
    /// per-connection cap); then its actions are collected.
    fn after(&mut self, spi: u64, was_authenticated: bool, now: Instant) -> Vec<Action> {
        let replace = self
            .sas
            .get(&spi)
            .filter(|sa| !was_authenticated && sa.authenticated && sa.state != IkeSaState::Dead)
            .map(|sa| (sa.conn.name.clone(), sa.peer_initial_contact));
        let mut out = self.collect(spi, now);
        match replace {
            Some((name, true)) => out.extend(self.replace_older(&name, spi, now)),
            Some((name, false)) => out.extend(self.enforce_connection_cap(&name, spi, now)),
            None => {}
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
        if self.sas.len() >= self.limits.max_ike_sas {
            self.counters.ike_sa_limit_dropped += 1;
            return None;
        }
        let conn = self
            .conns
            .values()
            .find(|c| c.remote_addr == from.ip() && c.local_addr == to.ip())?
            .clone();
        let spi_r = self.new_spi();
        let sa = IkeSa::new(
            conn,
            false,
            h.spi_i,
            spi_r,
            to,
            from,
            now,
            Arc::clone(&self.spis),
            self.dh_offload,
        );
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

    /// Keeps at most `max_established_per_connection` established IKE SAs
    /// for a connection (`keep` just got authenticated): the oldest others
    /// are deleted, as strongSwan's unique IDs replace an old IKE SA of the
    /// same peer. Only an authenticated peer gets here.
    fn enforce_connection_cap(&mut self, name: &str, keep: u64, now: Instant) -> Vec<Action> {
        let mut others: Vec<(Instant, u64)> = self
            .sas
            .iter()
            .filter(|(s, sa)| {
                **s != keep
                    && sa.conn.name == name
                    && sa.authenticated
                    && !sa.rekeyed
                    && sa.state != IkeSaState::Dead
            })
            .map(|(s, sa)| (sa.created, *s))
            .collect();
        let allowed = self.limits.max_established_per_connection.saturating_sub(1);
        if others.len() <= allowed {
            return Vec::new();
        }
        others.sort_unstable();
        let excess = others.len() - allowed;
        let mut out = Vec::new();
        for (_, s) in others.into_iter().take(excess) {
            self.counters.replaced_over_limit += 1;
            if let Some(sa) = self.sas.get_mut(&s) {
                sa.log(
                    LogLevel::Info,
                    format!(
                        "IKE SA {:016x}_i {:016x}_r replaced: more than {} for the connection",
                        sa.spi_i, sa.spi_r, self.limits.max_established_per_connection
                    ),
                );
                if sa.state == IkeSaState::Established && sa.outstanding.is_none() {
                    sa.queue_exchange(vec![Task::IkeDelete], now);
                }
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
        // What a resume needs changed: a new snapshot, or none any more.
        // First: whoever persists it knows the SA by the time its CHILD SAs
        // are installed.
        let key = sa.persist_key();
        if key != sa.persisted {
            out.insert(
                0,
                Action::SaState {
                    conn: sa.conn.name.clone(),
                    ike: sa.id(),
                    snapshot: key.and_then(|_| sa.snapshot(now)).map(Box::new),
                },
            );
            sa.persisted = key;
        }
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

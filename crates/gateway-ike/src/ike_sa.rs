//! One IKE SA (RFC 7296 §1): its SPIs, endpoints, negotiated algorithms
//! and keys, nonces, the IKE_SA_INIT octets kept for AUTH, whether the
//! peer is authenticated yet, its CHILD SAs, and the bookkeeping the task
//! manager (`task_manager`) needs: message IDs, the outstanding request,
//! the cached last response, Diffie-Hellman work in flight (`dh`). Actions
//! the SA produces accumulate in `out` and are drained by the `IkeManager`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use zeroize::Zeroizing;

use crate::action::{Action, DownReason, IkeSaId, LogLevel};
use crate::child_sa::{ChildSa, ChildSaState, Retired};
use crate::config::{ConnectionConfig, IkeCipher};
use crate::crypto::{CryptoError, DhGroup, DhPrivate, IkeKeys, Secret, SkCrypto, SkDirKeys};
use crate::dh::{DhJob, DhJobId, DhKey, DhOutcome, DhReady, DhResult};
use crate::message::Message;
use crate::spi::{SpiLease, SpiPool};
use crate::tasks::{Task, TaskError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IkeSaState {
    /// IKE_SA_INIT / IKE_AUTH in progress.
    Connecting,
    Established,
    /// A DELETE for this IKE SA is outstanding.
    Deleting,
    /// Finished; the manager drops it.
    Dead,
}

/// The request we sent and are waiting a response for (window size 1).
pub(crate) struct Outstanding {
    pub message_id: u32,
    pub exchange: u8,
    pub packets: Vec<Vec<u8>>,
    pub tries: u32,
    pub next: Instant,
    pub tasks: Vec<Task>,
    /// The (authentic, decrypted) response, kept while its tasks wait for
    /// Diffie-Hellman work; no retransmission meanwhile.
    pub awaiting_dh: Option<Message>,
}

/// A request whose tasks wait for Diffie-Hellman work (decrypted and
/// checked already; not answered yet, so a retransmission is dropped).
pub(crate) struct PendingRequest {
    pub msg: Message,
    pub critical: Option<u8>,
}

/// Diffie-Hellman work of this SA: asked, and answered but not used yet.
#[derive(Default)]
pub(crate) struct DhState {
    /// Emit jobs instead of computing inline.
    pub offload: bool,
    next_seq: u64,
    pending: Vec<(u64, DhKey)>,
    ready: Vec<(DhKey, DhReady)>,
}

pub struct IkeSa {
    pub(crate) conn: Arc<ConnectionConfig>,
    /// We are the original initiator.
    pub(crate) initiator: bool,
    pub(crate) spi_i: u64,
    pub(crate) spi_r: u64,
    pub(crate) state: IkeSaState,
    /// The peer proved knowledge of the PSK (IKE_AUTH), or the SA came
    /// from rekeying one where it did. Until then only IKE_SA_INIT and
    /// IKE_AUTH are processed, and no CHILD SA is ever created.
    pub(crate) authenticated: bool,
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
    /// UDP-encapsulated ESP and IKE on the NAT-T port.
    pub(crate) encap: bool,
    pub(crate) cipher: Option<IkeCipher>,
    pub(crate) keys: Option<IkeKeys>,
    pub(crate) ni: Vec<u8>,
    pub(crate) nr: Vec<u8>,
    pub(crate) init_req: Vec<u8>,
    pub(crate) init_resp: Vec<u8>,
    pub(crate) children: Vec<ChildSa>,
    /// Deleted rekeyed CHILD SAs whose inbound SA lingers (`rekey_grace`).
    pub(crate) retired: Vec<Retired>,
    pub(crate) my_msg_id: u32,
    pub(crate) peer_msg_id: u32,
    pub(crate) outstanding: Option<Outstanding>,
    pub(crate) queue: VecDeque<Vec<Task>>,
    /// Message ID, exchange type and datagrams of our last response.
    pub(crate) cached_response: Option<(u32, u8, Vec<Vec<u8>>)>,
    pub(crate) pending_request: Option<PendingRequest>,
    pub(crate) dh: DhState,
    /// Where inbound SPIs of new CHILD SAs come from (shared by the manager).
    pub(crate) spis: Arc<SpiPool>,
    pub(crate) last_rx: Instant,
    pub(crate) created: Instant,
    pub(crate) peer_initial_contact: bool,
    pub(crate) down_reason: Option<DownReason>,
    pub(crate) out: Vec<Action>,
    /// When we start rekeying the IKE SA.
    pub(crate) rekey_at: Option<Instant>,
    /// Set once a rekey moved everything to a new IKE SA: deleting this
    /// one is then not an outage.
    pub(crate) rekeyed: bool,
    /// The IKE SA a completed rekey produced, for the manager to adopt.
    pub(crate) rekeyed_into: Option<Box<IkeSa>>,
    /// CHILD rekey collisions (§2.8.1): old inbound SPI → the smallest
    /// nonce of the peer's rekey exchange for it.
    pub(crate) child_collisions: std::collections::HashMap<u32, Vec<u8>>,
    /// The peer sent IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383).
    pub(crate) peer_frag: bool,
    /// NAT detection says we are behind a NAT (or we pretend, `force_encap`).
    pub(crate) nat_local: bool,
    /// NAT detection says the peer is behind a NAT (its NAT_DETECTION_
    /// SOURCE_IP did not match the address we see; a peer with `encap =
    /// yes` looks the same). Only then do we follow its port (§2.23).
    pub(crate) nat_remote: bool,
    /// Next NAT keepalive (RFC 3948 §2.3), when we are behind a NAT.
    pub(crate) keepalive_at: Option<Instant>,
    pub(crate) frag: Option<crate::task_manager::FragBuf>,
    /// What the last [`Action::SaState`] reported (`persist_key`), or
    /// `None` if nothing resumable was reported.
    pub(crate) persisted: Option<u64>,
}

impl IkeSa {
    #[expect(
        clippy::too_many_arguments,
        reason = "what every IKE SA starts from, named"
    )]
    pub(crate) fn new(
        conn: Arc<ConnectionConfig>,
        initiator: bool,
        spi_i: u64,
        spi_r: u64,
        local: SocketAddr,
        remote: SocketAddr,
        now: Instant,
        spis: Arc<SpiPool>,
        dh_offload: bool,
    ) -> Self {
        Self {
            conn,
            initiator,
            spi_i,
            spi_r,
            state: IkeSaState::Connecting,
            authenticated: false,
            local,
            remote,
            encap: false,
            cipher: None,
            keys: None,
            ni: Vec::new(),
            nr: Vec::new(),
            init_req: Vec::new(),
            init_resp: Vec::new(),
            children: Vec::new(),
            retired: Vec::new(),
            my_msg_id: 0,
            peer_msg_id: 0,
            outstanding: None,
            queue: VecDeque::new(),
            cached_response: None,
            pending_request: None,
            dh: DhState {
                offload: dh_offload,
                ..DhState::default()
            },
            spis,
            last_rx: now,
            created: now,
            peer_initial_contact: false,
            down_reason: None,
            out: Vec::new(),
            rekey_at: None,
            rekeyed: false,
            rekeyed_into: None,
            child_collisions: std::collections::HashMap::new(),
            peer_frag: false,
            nat_local: false,
            nat_remote: false,
            keepalive_at: None,
            frag: None,
            persisted: None,
        }
    }

    /// Our SPI, which keys the manager's table.
    pub fn my_spi(&self) -> u64 {
        if self.initiator {
            self.spi_i
        } else {
            self.spi_r
        }
    }

    /// How events name this IKE SA.
    pub fn id(&self) -> IkeSaId {
        IkeSaId(self.my_spi())
    }

    /// The `IkeSaUp` event of this SA.
    pub(crate) fn up_action(&self, rekey_of: Option<IkeSaId>, resumed: bool) -> Action {
        Action::IkeSaUp {
            conn: self.conn.name.clone(),
            ike: self.id(),
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            local: self.local,
            remote: self.remote,
            rekey_of,
            resumed,
        }
    }

    pub fn state(&self) -> IkeSaState {
        self.state
    }

    /// Whether the peer has authenticated (IKE_AUTH completed).
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    pub fn conn_name(&self) -> &str {
        &self.conn.name
    }

    pub fn children(&self) -> &[ChildSa] {
        &self.children
    }

    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    pub fn uses_encap(&self) -> bool {
        self.encap
    }

    /// Whether NAT detection found the peer behind a NAT.
    pub fn peer_behind_nat(&self) -> bool {
        self.nat_remote
    }

    /// Our address and port of this IKE SA.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Where this IKE SA sends to: the peer's address and port, which
    /// follows a NAT'd peer's mapping changes (see [`IkeSa::follow_peer`]).
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// RFC 7296 §2.23: when the peer is behind a NAT, the endpoint of the
    /// IKE SA follows the source of the latest *authenticated* message
    /// that advanced a message-ID window (a new request, or the response
    /// to our outstanding request): callers invoke this only after the
    /// message was integrity-checked, never for a retransmission, a
    /// replayed old message ID or an unauthenticated datagram, so a
    /// forged or replayed packet cannot move the SA.
    ///
    /// Only a change of PORT is followed: the customer gateway's IP is
    /// fixed by the API (the connection's `remote_addr`), so a message
    /// from another IP (which can only reach this SA with its SPIs and
    /// keys) is processed but does not move the SA; it is logged. A peer
    /// that is not behind a NAT (or only we are behind one, where §2.23
    /// says not to update, for DoS reasons) keeps its endpoint too.
    ///
    /// On a change, everything later (responses, requests, DPD, rekeys,
    /// retransmissions, keepalives, CHILD SAs installed later) uses the
    /// new port, and `Action::PeerEndpointChanged` tells the agent to move
    /// the UDP-encapsulated ESP of the installed CHILD SAs.
    pub(crate) fn follow_peer(&mut self, from: SocketAddr) {
        if from == self.remote {
            return;
        }
        if !self.nat_remote {
            self.log(
                LogLevel::Debug,
                format!(
                    "authenticated message from {from}, peer not behind a NAT: staying with {}",
                    self.remote
                ),
            );
            return;
        }
        if from.ip() != self.remote.ip() {
            self.log(
                LogLevel::Warn,
                format!(
                    "authenticated message from {from}: address changes are not followed, staying with {}",
                    self.remote
                ),
            );
            return;
        }
        let old = self.remote;
        self.remote = from;
        let spis_out: Vec<u32> = self.children.iter().map(|c| c.spi_out).collect();
        self.log(
            LogLevel::Info,
            format!(
                "peer's NAT mapping changed: IKE SA {:016x}_i {:016x}_r now sends to {from} (was {old}), {} CHILD SA(s) follow",
                self.spi_i,
                self.spi_r,
                spis_out.len()
            ),
        );
        self.out.push(Action::PeerEndpointChanged {
            conn: self.conn.name.clone(),
            ike: self.id(),
            old,
            new: from,
            spis_out,
        });
    }

    pub(crate) fn sk(&self) -> Option<SkCrypto> {
        self.cipher.map(|c| SkCrypto {
            encr: c.encr,
            integ: c.integ,
        })
    }

    /// Keys for messages we send (`outbound`) or receive.
    pub(crate) fn dir_keys(&self, outbound: bool) -> Option<SkDirKeys> {
        let k = self.keys.as_ref()?;
        let initiator_side = outbound == self.initiator;
        let (e, a) = if initiator_side {
            (&k.sk_ei, &k.sk_ai)
        } else {
            (&k.sk_er, &k.sk_ar)
        };
        Some(SkDirKeys {
            encr_key: Zeroizing::new(e.to_vec()),
            integ_key: Zeroizing::new(a.to_vec()),
        })
    }

    pub(crate) fn log(&mut self, level: LogLevel, message: String) {
        self.out.push(Action::Log {
            conn: self.conn.name.clone(),
            level,
            message,
        });
    }

    /// Removes all CHILD SAs from the data plane and reports the IKE SA
    /// down (established) or failed (never established).
    pub(crate) fn destroy(&mut self, reason: DownReason) {
        if self.state == IkeSaState::Dead {
            return;
        }
        let children = std::mem::take(&mut self.children);
        let retired = std::mem::take(&mut self.retired);
        let pairs = children.iter().map(|c| (c.spi_in, c.spi_out));
        for (spi_in, spi_out) in pairs.chain(retired.iter().map(|r| (r.spi_in, r.spi_out))) {
            self.remove_from_data_plane(spi_in, spi_out);
        }
        if !self.authenticated {
            // Anyone who can send from the peer's address makes half-open
            // SAs fail: that must never read as the tunnel going down.
            if reason != DownReason::Overload {
                self.log(
                    LogLevel::Info,
                    format!(
                        "IKE SA {:016x}_i {:016x}_r not established: {reason:?}",
                        self.spi_i, self.spi_r
                    ),
                );
            }
            self.out.push(Action::IkeSaFailed {
                conn: self.conn.name.clone(),
                ike: self.id(),
                initiator: self.initiator,
                reason: reason.clone(),
            });
        } else if self.rekeyed {
            self.log(
                LogLevel::Info,
                format!(
                    "rekeyed IKE SA {:016x}_i {:016x}_r deleted",
                    self.spi_i, self.spi_r
                ),
            );
        } else {
            self.log(
                LogLevel::Info,
                format!(
                    "IKE SA {:016x}_i {:016x}_r down: {reason:?}",
                    self.spi_i, self.spi_r
                ),
            );
            self.out.push(Action::IkeSaDown {
                conn: self.conn.name.clone(),
                ike: self.id(),
                reason: reason.clone(),
            });
        }
        self.down_reason = Some(reason);
        self.state = IkeSaState::Dead;
        self.outstanding = None;
        self.pending_request = None;
        self.queue.clear();
    }

    fn remove_from_data_plane(&mut self, spi_in: u32, spi_out: u32) {
        self.out.push(Action::RemoveChildSa {
            conn: self.conn.name.clone(),
            ike: self.id(),
            spi_in,
            spi_out,
        });
    }

    /// A deleted CHILD SA leaves the data plane: at once, or, when a rekey
    /// replaced it, after `rekey_grace` (its inbound SA decrypts what the
    /// peer sealed with it before it switched and is still in flight; our
    /// outbound moved to the successor already).
    pub(crate) fn retire(&mut self, c: ChildSa) {
        let grace = self.conn.rekey_grace;
        if c.state != ChildSaState::Rekeyed || grace.is_zero() {
            self.remove_from_data_plane(c.spi_in, c.spi_out);
            return;
        }
        self.retired.push(Retired {
            spi_in: c.spi_in,
            spi_out: c.spi_out,
            _lease: c._lease,
            until: self.last_rx + grace,
        });
    }

    /// The successors of `old` whose outbound SA waited for it to go send
    /// from now on.
    pub(crate) fn activate_successors(&mut self, old: u32) {
        let mut ready = Vec::new();
        for c in &mut self.children {
            if c.replaces == Some(old) && c.outbound_deferred_until.take().is_some() {
                ready.push((c.spi_in, c.spi_out));
            }
        }
        for (spi_in, spi_out) in ready {
            self.activate(spi_in, spi_out);
        }
    }

    fn activate(&mut self, spi_in: u32, spi_out: u32) {
        self.out.push(Action::ActivateOutbound {
            conn: self.conn.name.clone(),
            ike: self.id(),
            spi_in,
            spi_out,
        });
    }

    /// Grace periods that ended: retired inbound SAs go, deferred
    /// outbound SAs whose predecessor the peer never deleted send.
    pub(crate) fn rekey_grace_timers(&mut self, now: Instant) {
        let (due, keep): (Vec<Retired>, Vec<Retired>) = std::mem::take(&mut self.retired)
            .into_iter()
            .partition(|r| now >= r.until);
        self.retired = keep;
        for r in due {
            self.remove_from_data_plane(r.spi_in, r.spi_out);
        }
        let mut late = Vec::new();
        for c in &mut self.children {
            if c.outbound_deferred_until.is_some_and(|at| now >= at) {
                c.outbound_deferred_until = None;
                late.push((c.spi_in, c.spi_out));
            }
        }
        for (spi_in, spi_out) in late {
            self.log(
                LogLevel::Warn,
                format!(
                    "the peer did not delete the SA that CHILD SA {spi_in:08x}_i replaces: sending on the new one anyway"
                ),
            );
            self.activate(spi_in, spi_out);
        }
    }

    /// The earliest instant `rekey_grace_timers` has something to do.
    pub(crate) fn rekey_grace_deadline(&self) -> Option<Instant> {
        let retired = self.retired.iter().map(|r| r.until);
        let deferred = self
            .children
            .iter()
            .filter_map(|c| c.outbound_deferred_until);
        retired.chain(deferred).min()
    }

    /// A new inbound SPI for a CHILD SA of this IKE SA.
    pub(crate) fn new_spi_in(&self) -> Option<SpiLease> {
        self.spis.allocate()
    }

    fn dh_job_id(&mut self) -> DhJobId {
        self.dh.next_seq += 1;
        DhJobId {
            ike: self.my_spi(),
            seq: self.dh.next_seq,
        }
    }

    /// Jobs of a half-open SA the peer started may be refused under load.
    fn dh_unauthenticated(&self) -> bool {
        !self.authenticated && !self.initiator
    }

    /// Looks up (and takes) the answer to `key`; else asks for it, once.
    fn dh_ask(
        &mut self,
        key: DhKey,
        make: impl FnOnce(&mut Self, DhJobId) -> DhJob,
    ) -> Result<DhReady, TaskError> {
        if let Some(pos) = self.dh.ready.iter().position(|(k, _)| *k == key) {
            return Ok(self.dh.ready.swap_remove(pos).1);
        }
        if !self.dh.pending.iter().any(|(_, k)| *k == key) {
            let id = self.dh_job_id();
            let job = make(self, id);
            self.dh.pending.push((id.seq, key));
            self.out.push(Action::ComputeDh(job));
        }
        Err(TaskError::NeedDh)
    }

    /// A new key pair for a request we build. `Err(NeedDh)`: asked for.
    pub(crate) fn dh_generate(&mut self, group: DhGroup) -> Result<DhPrivate, TaskError> {
        if !self.dh.offload {
            return Ok(DhPrivate::generate(group));
        }
        match self.dh_ask(DhKey::Generate(group), |sa, id| {
            DhJob::generate(id, sa.remote.ip(), sa.dh_unauthenticated(), group)
        })? {
            DhReady::Generated(d) => Ok(d),
            _ => Err(TaskError::NeedDh),
        }
    }

    /// A new key pair and its secret with the peer's KE (as responder).
    pub(crate) fn dh_respond(
        &mut self,
        group: DhGroup,
        ke: &[u8],
    ) -> Result<(DhPrivate, Result<Secret, CryptoError>), TaskError> {
        if !self.dh.offload {
            let dh = DhPrivate::generate(group);
            let s = dh.shared_secret(ke);
            return Ok((dh, s));
        }
        match self.dh_ask(DhKey::Respond(group, ke.to_vec()), |sa, id| {
            DhJob::respond(id, sa.remote.ip(), sa.dh_unauthenticated(), group, ke)
        })? {
            DhReady::Responded(d, s) => Ok((d, s)),
            _ => Err(TaskError::NeedDh),
        }
    }

    /// The secret of our key pair with the peer's KE (as initiator).
    pub(crate) fn dh_shared(
        &mut self,
        dh: &DhPrivate,
        ke: &[u8],
    ) -> Result<Result<Secret, CryptoError>, TaskError> {
        if !self.dh.offload {
            return Ok(dh.shared_secret(ke));
        }
        match self.dh_ask(DhKey::Shared(dh.public_value(), ke.to_vec()), |sa, id| {
            DhJob::shared(
                id,
                sa.remote.ip(),
                sa.dh_unauthenticated(),
                dh.duplicate(),
                ke,
            )
        })? {
            DhReady::Shared(s) => Ok(s),
            _ => Err(TaskError::NeedDh),
        }
    }

    /// The driver's answer to one of our jobs: kept for the exchange that
    /// asked, which runs again. A refused job ends a half-open SA.
    pub(crate) fn dh_done(&mut self, result: DhResult, now: Instant) {
        let Some(pos) = self
            .dh
            .pending
            .iter()
            .position(|(seq, _)| *seq == result.id.seq)
        else {
            return;
        };
        self.dh.pending.swap_remove(pos);
        match result.outcome {
            DhOutcome::Done(key, ready) => {
                self.dh.ready.push((key, ready));
                self.resume(now);
            }
            DhOutcome::Refused if self.dh_unauthenticated() => {
                self.destroy(DownReason::Overload);
            }
            // Only a half-open SA's work may be refused; anything else is
            // asked for again.
            DhOutcome::Refused => self.resume(now),
        }
    }
}

/// Snapshots and resumes (`snapshot`).
impl IkeSa {
    /// CHILD SAs a snapshot carries: the ones that send and receive (a
    /// rekey in flight is not resumed: its old SA is, and the peer's DELETE
    /// or our next rekey sorts it out).
    fn resumable_children(&self) -> impl Iterator<Item = &ChildSa> {
        self.children.iter().filter(|c| {
            matches!(c.state, ChildSaState::Installed | ChildSaState::Rekeying)
                && c.outbound_deferred_until.is_none()
        })
    }

    /// A digest of what a resume depends on, when the SA is resumable:
    /// established, authenticated, not rekeyed away, with keys.
    pub(crate) fn persist_key(&self) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        if self.state != IkeSaState::Established
            || !self.authenticated
            || self.rekeyed
            || self.keys.is_none()
            || self.cipher.is_none()
        {
            return None;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.my_msg_id, self.peer_msg_id, self.remote, self.encap).hash(&mut h);
        for c in self.resumable_children() {
            (c.spi_in, c.spi_out, c.encap).hash(&mut h);
        }
        Some(h.finish())
    }

    /// The resumable state of this IKE SA, if it is resumable.
    pub(crate) fn snapshot(&self, now: Instant) -> Option<crate::snapshot::IkeSaSnapshot> {
        use crate::snapshot::{ms, ChildSaSnapshot, IkeSaSnapshot, TsSnapshot, SNAPSHOT_VERSION};
        self.persist_key()?;
        let (cipher, keys) = (self.cipher?, self.keys.as_ref()?);
        let left = |at: Option<Instant>| at.map(|t| ms(t.saturating_duration_since(now)));
        let children = self
            .resumable_children()
            .map(|c| ChildSaSnapshot {
                spi_in: c.spi_in,
                spi_out: c.spi_out,
                encr: c.chosen.encr.id(),
                encr_key_bits: c.chosen.encr.key_length_attr(),
                integ: c.chosen.integ.map(|i| i.id()),
                dh: c.chosen.dh.map(|d| d.id()),
                esn: c.chosen.esn,
                encap: c.encap,
                local_ts: c.local_ts.iter().map(TsSnapshot::from).collect(),
                remote_ts: c.remote_ts.iter().map(TsSnapshot::from).collect(),
                age_ms: ms(now.saturating_duration_since(c.installed_at)),
                rekey_in_ms: left(c.rekey_at),
                expire_in_ms: left(c.expire_at),
                keys_in: (&c.keys.inbound).into(),
                keys_out: (&c.keys.outbound).into(),
                seq_out: 0,
                replay_right_edge: 0,
            })
            .collect();
        Some(IkeSaSnapshot {
            version: SNAPSHOT_VERSION,
            conn: self.conn.name.clone(),
            initiator: self.initiator,
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            local: self.local,
            remote: self.remote,
            encap: self.encap,
            nat_local: self.nat_local,
            nat_remote: self.nat_remote,
            peer_frag: self.peer_frag,
            encr: cipher.encr.id(),
            encr_key_bits: cipher.encr.key_length_attr(),
            prf: cipher.prf.id(),
            integ: cipher.integ.map(|i| i.id()),
            dh: cipher.dh.id(),
            keys: keys.into(),
            my_msg_id: self.my_msg_id,
            peer_msg_id: self.peer_msg_id,
            age_ms: ms(now.saturating_duration_since(self.created)),
            rekey_in_ms: left(self.rekey_at),
            children,
        })
    }

    /// Rebuilds an established IKE SA from a snapshot taken `elapsed` ago
    /// (checked by the manager against the connection), with its CHILD SAs
    /// and the actions that put them back in the data plane.
    pub(crate) fn from_snapshot(
        conn: Arc<ConnectionConfig>,
        snap: &crate::snapshot::IkeSaSnapshot,
        elapsed: std::time::Duration,
        now: Instant,
        spis: Arc<SpiPool>,
        dh_offload: bool,
    ) -> Result<IkeSa, crate::snapshot::RestoreError> {
        use crate::snapshot::{child_parts, ike_cipher, ike_keys, RestoreError};
        use std::time::Duration;
        snap.check()?;
        let cipher = ike_cipher(snap)?;
        let keys = ike_keys(snap, &cipher)?;
        let mut sa = IkeSa::new(
            conn,
            snap.initiator,
            snap.spi_i,
            snap.spi_r,
            snap.local,
            snap.remote,
            now,
            spis,
            dh_offload,
        );
        sa.state = IkeSaState::Established;
        sa.authenticated = true;
        sa.encap = snap.encap;
        sa.nat_local = snap.nat_local;
        sa.nat_remote = snap.nat_remote;
        sa.peer_frag = snap.peer_frag;
        sa.cipher = Some(cipher);
        sa.keys = Some(keys);
        sa.my_msg_id = snap.my_msg_id;
        sa.peer_msg_id = snap.peer_msg_id;
        let since = |age_ms: u64| {
            now.checked_sub(Duration::from_millis(age_ms).saturating_add(elapsed))
                .unwrap_or(now)
        };
        // A deadline that passed while we were down is due at once.
        let due = |in_ms: Option<u64>| {
            in_ms.map(|m| now + Duration::from_millis(m).saturating_sub(elapsed))
        };
        sa.created = since(snap.age_ms);
        sa.rekey_at = due(snap.rekey_in_ms);
        if sa.nat_local {
            sa.keepalive_at = Some(now);
        }
        let mut installs = Vec::new();
        for c in &snap.children {
            let (chosen, local_ts, remote_ts) = child_parts(c)?;
            let lease = sa
                .spis
                .claim(c.spi_in)
                .ok_or(RestoreError::SpiInUse(c.spi_in))?;
            let keys = crate::child_sa::ChildKeys {
                inbound: c.keys_in.to_keys(),
                outbound: c.keys_out.to_keys(),
            };
            installs.push(Action::InstallChildSa(crate::action::ChildSaInstall {
                conn: sa.conn.name.clone(),
                ike: sa.id(),
                spi_in: c.spi_in,
                spi_out: c.spi_out,
                encryption: chosen.encr.api_name(),
                integrity: chosen.integ.map(|i| i.api_name()),
                keys_in: keys.inbound.clone(),
                keys_out: keys.outbound.clone(),
                esn: chosen.esn,
                udp_encap: c.encap.then_some(crate::action::UdpEncap {
                    local_port: sa.local.port(),
                    remote_port: sa.remote.port(),
                }),
                local_addr: sa.local.ip(),
                remote_addr: sa.remote.ip(),
                local_ts: local_ts.clone(),
                remote_ts: remote_ts.clone(),
                replaces_spi_in: None,
                outbound_deferred: false,
                volume: sa.conn.child_volume,
                resume: Some(crate::action::SeqResume {
                    seq_out: c.seq_out,
                    replay_right_edge: c.replay_right_edge,
                }),
            }));
            sa.children.push(ChildSa {
                _lease: lease,
                spi_in: c.spi_in,
                spi_out: c.spi_out,
                chosen,
                encap: c.encap,
                local_ts,
                remote_ts,
                state: ChildSaState::Installed,
                installed_at: since(c.age_ms),
                rekey_at: due(c.rekey_in_ms),
                expire_at: due(c.expire_in_ms),
                replaces: None,
                outbound_deferred_until: None,
                keys,
            });
        }
        sa.log(
            LogLevel::Info,
            format!(
                "IKE SA {:016x}_i {:016x}_r resumed between {} and {} with {} CHILD SA(s), message IDs {}/{}",
                sa.spi_i,
                sa.spi_r,
                sa.local,
                sa.remote,
                sa.children.len(),
                sa.my_msg_id,
                sa.peer_msg_id
            ),
        );
        let up = sa.up_action(None, true);
        sa.out.push(up);
        sa.out.extend(installs);
        Ok(sa)
    }
}

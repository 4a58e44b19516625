//! The task manager of an IKE SA (libcharon's task_manager_v2): queues
//! exchanges we initiate and runs one at a time (window size 1, §2.3),
//! retransmits with exponential backoff (§2.1), answers peer requests in
//! message-ID order and replays the cached response to a retransmitted
//! request, and schedules DPD and the half-open timeout.
//!
//! It also gates exchanges by state (RFC 7296 §1.2, §2.2): until the peer
//! has authenticated, a responder processes only IKE_SA_INIT (message ID
//! 0) and IKE_AUTH (message ID 1), an initiator no request at all, and a
//! response only if it answers the exchange we sent; once authenticated,
//! IKE_AUTH is refused. An exchange whose tasks wait for Diffie-Hellman
//! work (`dh`) is parked with its decrypted message and run again when the
//! result arrives (`resume`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::action::{Action, DownReason, LogLevel};
use crate::child_sa::ChildSaState;
use crate::ike_sa::{IkeSa, IkeSaState, Outstanding, PendingRequest};
use crate::message::{exchange, Message, MessageError, FLAG_INITIATOR, FLAG_RESPONSE};
use crate::payload::{notify, DecodeError, NotifyPayload, Payload};
use crate::tasks::child_delete::ChildDelete;
use crate::tasks::child_rekey::ChildRekey;
use crate::tasks::ike_rekey::IkeRekey;
use crate::tasks::{responder_tasks, Task, TaskError};

/// Reassembly bounds (RFC 7383 §2.6): fragments per message and bytes.
const MAX_FRAGMENTS: usize = 64;
const MAX_REASSEMBLED: usize = 64 * 1024;

/// Fragments of one message being reassembled.
pub(crate) struct FragBuf {
    message_id: u32,
    response: bool,
    total: u16,
    first: u8,
    parts: std::collections::BTreeMap<u16, Vec<u8>>,
    bytes: usize,
}

/// The non-ESP marker prefixing IKE on the NAT-T port (RFC 3948 §2.2).
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];

impl IkeSa {
    fn flags(&self, response: bool) -> u8 {
        let mut f = if self.initiator { FLAG_INITIATOR } else { 0 };
        if response {
            f |= FLAG_RESPONSE;
        }
        f
    }

    fn encode(&self, msg: &Message) -> Result<Vec<Vec<u8>>, MessageError> {
        if msg.exchange == exchange::IKE_SA_INIT {
            return Ok(vec![msg.encode_plain()]);
        }
        let (Some(sk), Some(keys)) = (self.sk(), self.dir_keys(true)) else {
            return Err(MessageError::NotProtected);
        };
        let single = msg.encode_protected(&sk, &keys)?;
        // RFC 7383: fragment_size bounds the whole IP datagram.
        let overhead = if self.remote.is_ipv4() { 28 } else { 48 } + 4;
        if self.peer_frag && single.len() + overhead > self.conn.fragment_size {
            return msg.encode_fragments(
                &sk,
                &keys,
                self.conn.fragment_size.saturating_sub(overhead),
            );
        }
        Ok(vec![single])
    }

    fn send(&mut self, packets: &[Vec<u8>]) {
        self.send_to(packets, self.remote);
    }

    fn send_to(&mut self, packets: &[Vec<u8>], to: SocketAddr) {
        for p in packets {
            let mut bytes = Vec::with_capacity(p.len() + 4);
            if self.local.port() == self.conn.natt_port {
                bytes.extend_from_slice(&NON_ESP_MARKER);
            }
            bytes.extend_from_slice(p);
            self.out.push(Action::Send {
                bytes,
                from: self.local,
                to,
            });
        }
    }

    fn retransmit_delay(&self, tries: u32) -> Duration {
        let exp = i32::try_from(tries).unwrap_or(i32::MAX);
        self.conn
            .retransmit_timeout
            .mul_f64(self.conn.retransmit_base.powi(exp).min(1e6))
    }

    fn fatal(&mut self, e: TaskError) {
        if let TaskError::Fatal { reason, log, .. } = e {
            self.log(LogLevel::Warn, log);
            self.destroy(reason);
        }
    }

    /// Queues an exchange we initiate and starts it if the window is free.
    pub(crate) fn queue_exchange(&mut self, tasks: Vec<Task>, now: Instant) {
        if !tasks.is_empty() {
            self.queue.push_back(tasks);
        }
        self.initiate_next(now);
    }

    pub(crate) fn initiate_next(&mut self, now: Instant) {
        if self.outstanding.is_some() || self.state == IkeSaState::Dead {
            return;
        }
        // Each round consumes one queued exchange, so this ends.
        let mut picked = None;
        while let Some(mut tasks) = self.queue.pop_front() {
            let Some(ex) = tasks.first().map(Task::exchange) else {
                continue;
            };
            let spi_r = if ex == exchange::IKE_SA_INIT {
                0
            } else {
                self.spi_r
            };
            let mut msg = Message::new(self.spi_i, spi_r, ex, self.flags(false), self.my_msg_id);
            let mut result = Ok(());
            for t in &mut tasks {
                result = t.build_i(self, &mut msg.payloads);
                if result.is_err() {
                    break;
                }
            }
            match result {
                Ok(()) => {
                    picked = Some((tasks, msg, ex));
                    break;
                }
                Err(TaskError::Abort) => continue,
                Err(TaskError::NeedDh) => {
                    // Built again, from scratch, once the key pair is here.
                    self.queue.push_front(tasks);
                    return;
                }
                Err(e) => {
                    self.fatal(e);
                    return;
                }
            }
        }
        let Some((tasks, msg, ex)) = picked else {
            return;
        };
        let packets = match self.encode(&msg) {
            Ok(p) => p,
            Err(e) => {
                self.log(LogLevel::Warn, format!("cannot encode request: {e}"));
                self.destroy(DownReason::Protocol(0));
                return;
            }
        };
        if ex == exchange::IKE_SA_INIT {
            self.init_req = packets.first().cloned().unwrap_or_default();
        }
        self.send(&packets);
        self.outstanding = Some(Outstanding {
            message_id: self.my_msg_id,
            exchange: ex,
            packets,
            tries: 0,
            next: now + self.retransmit_delay(0),
            tasks,
            awaiting_dh: None,
        });
    }

    /// Handles a decoded message addressed to this IKE SA.
    pub(crate) fn process_message(
        &mut self,
        raw: &[u8],
        msg: Message,
        from: SocketAddr,
        to: SocketAddr,
        now: Instant,
    ) {
        if self.state == IkeSaState::Dead {
            return;
        }
        if msg.is_response() {
            self.process_response(raw, msg, from, now);
        } else {
            self.process_request(raw, msg, from, to, now);
        }
    }

    /// Opens an SK message, or collects an SKF fragment (RFC 7383 §2.6);
    /// `Ok(false)` means more fragments are needed.
    fn decrypt(&mut self, raw: &[u8], msg: &mut Message) -> Result<bool, MessageError> {
        let (Some(sk), Some(keys)) = (self.sk(), self.dir_keys(false)) else {
            return Err(MessageError::NotProtected);
        };
        if !matches!(msg.sealed(), Some(Payload::Skf { .. })) {
            msg.decrypt(raw, &sk, &keys)?;
            return Ok(true);
        }
        // Each fragment is authenticated on its own before it is kept.
        let (number, total, first, plain) = msg.decrypt_fragment(raw, &sk, &keys)?;
        let key = (msg.message_id, msg.is_response());
        let fresh = self
            .frag
            .as_ref()
            .is_none_or(|f| (f.message_id, f.response, f.total) != (key.0, key.1, total));
        if fresh {
            if usize::from(total) > MAX_FRAGMENTS {
                return Err(MessageError::Decode(DecodeError::TooMany("fragments")));
            }
            self.frag = Some(FragBuf {
                message_id: key.0,
                response: key.1,
                total,
                first: 0,
                parts: std::collections::BTreeMap::new(),
                bytes: 0,
            });
        }
        let Some(f) = self.frag.as_mut() else {
            return Ok(false);
        };
        if number == 1 {
            f.first = first;
        }
        if !f.parts.contains_key(&number) {
            f.bytes += plain.len();
            if f.bytes > MAX_REASSEMBLED {
                self.frag = None;
                return Err(MessageError::Decode(DecodeError::TooMany("fragment bytes")));
            }
            f.parts.insert(number, plain);
        }
        if f.parts.len() < usize::from(f.total) {
            return Ok(false);
        }
        let Some(f) = self.frag.take() else {
            return Ok(false);
        };
        let whole: Vec<u8> = f.parts.into_values().flatten().collect();
        msg.payloads = crate::payload::decode_chain(f.first, &whole)?;
        Ok(true)
    }

    fn process_response(&mut self, raw: &[u8], mut msg: Message, from: SocketAddr, now: Instant) {
        let Some(o) = &self.outstanding else { return };
        // Only the answer to the exchange we sent: same message ID and
        // exchange type (before authentication the queue holds nothing
        // but IKE_SA_INIT and IKE_AUTH, so the state is checked too).
        if msg.message_id != o.message_id || msg.exchange != o.exchange {
            return;
        }
        if o.awaiting_dh.is_some() {
            // Its answer is being worked on already.
            return;
        }
        if !self.authenticated
            && !matches!(msg.exchange, exchange::IKE_SA_INIT | exchange::IKE_AUTH)
        {
            return;
        }
        if msg.exchange == exchange::IKE_SA_INIT {
            self.init_resp = raw.to_vec();
        } else {
            match self.decrypt(raw, &mut msg) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    // Not authentic: as if never received (§2.21.2).
                    self.log(LogLevel::Debug, format!("dropping response: {e}"));
                    return;
                }
            }
            // Authentic, and the response to our outstanding request: a
            // NAT'd peer's new port counts from here (§2.23), before the
            // tasks run, so a CHILD SA this exchange installs uses it.
            self.follow_peer(from);
        }
        self.last_rx = now;
        self.run_response(msg, now);
    }

    /// Runs our outstanding exchange's tasks on its (authentic) response.
    fn run_response(&mut self, msg: Message, now: Instant) {
        let Some(mut o) = self.outstanding.take() else {
            return;
        };
        let mut result = Ok(());
        for t in &mut o.tasks {
            if let Err(e) = t.process_i(self, &msg) {
                result = Err(e);
                break;
            }
        }
        match result {
            Ok(()) => {
                self.my_msg_id = self.my_msg_id.wrapping_add(1);
                self.initiate_next(now);
            }
            Err(TaskError::Retry) => {
                self.queue.push_front(o.tasks);
                self.initiate_next(now);
            }
            Err(TaskError::NeedDh) => {
                o.awaiting_dh = Some(msg);
                self.outstanding = Some(o);
            }
            Err(e) => self.fatal(e),
        }
    }

    /// Diffie-Hellman work arrived: whatever waited for it runs again
    /// (what still waits for other work asks no twice).
    pub(crate) fn resume(&mut self, now: Instant) {
        if self.state == IkeSaState::Dead {
            return;
        }
        if let Some(p) = self.pending_request.take() {
            self.run_request(p.msg, p.critical);
        }
        let awaiting = self.outstanding.as_mut().and_then(|o| o.awaiting_dh.take());
        if let Some(msg) = awaiting {
            self.run_response(msg, now);
        }
        self.initiate_next(now);
    }

    /// Whether a request of this exchange and message ID may be processed
    /// in our state (RFC 7296 §1.2, §2.2).
    fn request_allowed(&self, msg: &Message) -> bool {
        if self.authenticated {
            // IKE_SA_INIT is never valid again; IKE_AUTH is answered with
            // an error (see `run_request`) so the window stays in step.
            return msg.exchange != exchange::IKE_SA_INIT;
        }
        // Before IKE_AUTH completed, the initiator gets no requests at all
        // (the responder may only answer), and the responder nothing but
        // IKE_SA_INIT and then IKE_AUTH. Anything else, even sealed with
        // the SK keys, comes from someone who has not shown the PSK.
        !self.initiator
            && self.state == IkeSaState::Connecting
            && matches!(
                (msg.exchange, msg.message_id),
                (exchange::IKE_SA_INIT, 0) | (exchange::IKE_AUTH, 1)
            )
    }

    /// Replays the cached response to a retransmitted request. A
    /// retransmission is not authenticated (we do not decrypt it again),
    /// so it never moves the IKE SA (§2.23); but when a NAT'd peer's
    /// mapping changed between its request and the retransmission, our
    /// first response went to the dead mapping: the replay goes to where
    /// the retransmission came from if that is the peer's IP (like
    /// strongSwan; same size as the request, so no amplification, and
    /// only ever to the configured peer's IP).
    fn resend_cached(&mut self, id: u32, exch: u8, from: SocketAddr) -> bool {
        let Some((cid, cexch, packets)) = self.cached_response.clone() else {
            return false;
        };
        if cid != id || cexch != exch {
            return false;
        }
        let to = if self.nat_remote && from.ip() == self.remote.ip() {
            from
        } else {
            self.remote
        };
        self.send_to(&packets, to);
        true
    }

    fn process_request(
        &mut self,
        raw: &[u8],
        mut msg: Message,
        from: SocketAddr,
        to: SocketAddr,
        now: Instant,
    ) {
        let later_fragment =
            matches!(msg.sealed(), Some(Payload::Skf { number, .. }) if *number > 1);
        if self.peer_msg_id > 0 && msg.message_id == self.peer_msg_id - 1 {
            if later_fragment {
                return;
            }
            // A retransmission: replay our response without reprocessing.
            self.resend_cached(msg.message_id, msg.exchange, from);
            return;
        }
        if msg.message_id != self.peer_msg_id || self.pending_request.is_some() {
            // Out of the window, or the request is being worked on.
            return;
        }
        if !self.request_allowed(&msg) {
            self.log(
                LogLevel::Debug,
                format!(
                    "dropping exchange {} message ID {}: not allowed {} authentication",
                    msg.exchange,
                    msg.message_id,
                    if self.authenticated {
                        "after"
                    } else {
                        "before"
                    }
                ),
            );
            return;
        }
        let mut critical = None;
        if msg.exchange != exchange::IKE_SA_INIT {
            match self.decrypt(raw, &mut msg) {
                Ok(true) => {}
                Ok(false) => return,
                Err(MessageError::Decode(DecodeError::UnsupportedCritical(t))) => {
                    critical = Some(t)
                }
                Err(e) => {
                    self.log(LogLevel::Debug, format!("dropping request: {e}"));
                    return;
                }
            }
        } else if self.state != IkeSaState::Connecting || self.initiator {
            return;
        } else {
            self.init_req = raw.to_vec();
        }
        if self.state == IkeSaState::Connecting {
            // The responder follows the initiator while the SA is set up
            // (its float to port 4500, §2.23).
            self.local = to;
            self.remote = from;
        } else {
            // Authenticated and the next message ID: a NAT'd peer's new
            // port counts from here (§2.23), before the tasks run, so a
            // CHILD SA this exchange installs uses it.
            self.follow_peer(from);
        }
        self.last_rx = now;
        self.run_request(msg, critical);
    }

    /// Runs the tasks of a (checked, decrypted) request and answers it.
    fn run_request(&mut self, msg: Message, critical: Option<u8>) {
        let spi_r = if msg.exchange == exchange::IKE_SA_INIT && self.keys.is_none() {
            0
        } else {
            self.spi_r
        };
        let mut resp = Message::new(
            self.spi_i,
            spi_r,
            msg.exchange,
            self.flags(true),
            msg.message_id,
        );
        let mut tasks = responder_tasks(&msg);
        let mut failure = None;
        if let Some(t) = critical {
            resp.payloads.push(Payload::Notify(NotifyPayload::new(
                notify::UNSUPPORTED_CRITICAL_PAYLOAD,
                vec![t],
            )));
            tasks.clear();
        } else if self.authenticated && msg.exchange == exchange::IKE_AUTH {
            // Authentic, but IKE_AUTH happens once: doing it again would
            // derive the first CHILD SA's keys again from the same nonces
            // and restart its sequence numbers (AEAD nonce reuse).
            self.log(
                LogLevel::Warn,
                "peer sent IKE_AUTH on an established IKE SA: refused".into(),
            );
            resp.payloads.push(Payload::Notify(NotifyPayload::new(
                notify::INVALID_SYNTAX,
                Vec::new(),
            )));
            tasks.clear();
        } else if tasks.is_empty() {
            // An exchange type we do not know: nothing sensible to answer.
            return;
        }
        for t in &mut tasks {
            if let Err(e) = t.process_r(self, &msg) {
                failure = Some(e);
                break;
            }
        }
        if matches!(failure, Some(TaskError::NeedDh)) {
            // Not answered yet: the same request runs again with the result.
            self.pending_request = Some(PendingRequest { msg, critical });
            return;
        }
        if failure.is_none() {
            for t in &mut tasks {
                if let Err(e) = t.build_r(self, &mut resp.payloads) {
                    failure = Some(e);
                    break;
                }
            }
        }
        let mut fatal = None;
        if let Some(TaskError::Fatal {
            notify,
            reason,
            log,
        }) = failure
        {
            resp.payloads = notify.into_iter().map(Payload::Notify).collect();
            if msg.exchange == exchange::IKE_SA_INIT {
                // The error response to IKE_SA_INIT creates no state (§1.3).
                resp.spi_r = 0;
            }
            fatal = Some((reason, log));
        } else if msg.exchange == exchange::IKE_SA_INIT {
            resp.spi_r = self.spi_r;
        }
        let packets = match self.encode(&resp) {
            Ok(p) => p,
            Err(e) => {
                self.log(LogLevel::Warn, format!("cannot encode response: {e}"));
                return;
            }
        };
        if msg.exchange == exchange::IKE_SA_INIT && fatal.is_none() {
            self.init_resp = packets.first().cloned().unwrap_or_default();
        }
        self.send(&packets);
        self.cached_response = Some((msg.message_id, msg.exchange, packets));
        self.peer_msg_id = self.peer_msg_id.wrapping_add(1);
        if let Some((reason, log)) = fatal {
            if reason == DownReason::Protocol(notify::INVALID_KE_PAYLOAD) {
                // Part of normal negotiation: the initiator retries with
                // the group we asked for, in a new half-open SA.
                self.log(LogLevel::Info, log);
                self.state = IkeSaState::Dead;
            } else {
                self.log(LogLevel::Warn, log);
                self.destroy(reason);
            }
        } else if self.state == IkeSaState::Deleting && !self.initiator_of_delete() {
            self.destroy(DownReason::Deleted);
        }
    }

    /// Whether the DELETE in progress is ours (then we wait for the response).
    fn initiator_of_delete(&self) -> bool {
        self.outstanding
            .as_ref()
            .is_some_and(|o| o.tasks.iter().any(|t| matches!(t, Task::IkeDelete)))
    }

    /// Timer expiry: retransmit, give up, DPD, half-open timeout.
    pub(crate) fn on_timer(&mut self, now: Instant) {
        if self.state == IkeSaState::Dead {
            return;
        }
        self.rekey_grace_timers(now);
        let due = self
            .outstanding
            .as_ref()
            .filter(|o| now >= o.next && o.awaiting_dh.is_none())
            .map(|o| (o.tries, o.packets.clone()));
        if let Some((tries, packets)) = due {
            if tries >= self.conn.retransmit_tries {
                self.log(
                    LogLevel::Warn,
                    format!(
                        "giving up after {} retransmissions: peer unreachable",
                        tries
                    ),
                );
                self.destroy(DownReason::PeerUnreachable);
                return;
            }
            let next = now + self.retransmit_delay(tries + 1);
            if let Some(o) = &mut self.outstanding {
                o.tries += 1;
                o.next = next;
            }
            self.log(
                LogLevel::Debug,
                format!("retransmit {} of request", tries + 1),
            );
            self.send(&packets);
        }
        if self.state == IkeSaState::Connecting
            && !self.initiator
            && now >= self.created + self.conn.half_open_timeout
        {
            self.destroy(DownReason::HalfOpenTimeout);
            return;
        }
        if let Some(d) = self.dpd_due() {
            if now >= d {
                self.queue_exchange(vec![Task::IkeDpd], now);
            }
        }
        self.keepalive(now);
        self.expire_children(now);
        if self.idle() {
            if self.rekey_at.is_some_and(|at| now >= at) {
                self.rekey_at = None;
                self.queue_exchange(vec![Task::IkeRekey(IkeRekey::default())], now);
            } else if let Some(c) = self.children.iter_mut().find(|c| {
                c.state == ChildSaState::Installed && c.rekey_at.is_some_and(|at| now >= at)
            }) {
                c.rekey_at = None;
                let old = c.spi_in;
                self.queue_exchange(vec![Task::ChildRekey(ChildRekey::rekey(old))], now);
            }
        }
    }

    /// Keeps the NAT mapping for UDP-encapsulated ESP open (RFC 3948 §2.3):
    /// a single 0xFF byte, without the non-ESP marker.
    fn keepalive(&mut self, now: Instant) {
        if !(self.nat_local && self.state == IkeSaState::Established) {
            self.keepalive_at = None;
            return;
        }
        match self.keepalive_at {
            Some(at) if now >= at => {
                self.out.push(Action::Send {
                    bytes: vec![0xff],
                    from: self.local,
                    to: self.remote,
                });
                self.keepalive_at = Some(now + self.conn.keepalive_interval);
            }
            Some(_) => {}
            None => self.keepalive_at = Some(now + self.conn.keepalive_interval),
        }
    }

    /// Hard lifetime: a CHILD SA not rekeyed in time is deleted.
    fn expire_children(&mut self, now: Instant) {
        if self.state != IkeSaState::Established {
            return;
        }
        let expired: Vec<u32> = self
            .children
            .iter_mut()
            .filter(|c| c.expire_at.is_some_and(|at| now >= at))
            .map(|c| {
                c.expire_at = None;
                c.state = ChildSaState::Deleting;
                c.spi_in
            })
            .collect();
        for spi in expired {
            self.log(
                LogLevel::Info,
                format!("CHILD SA {spi:08x}_i reached its hard lifetime"),
            );
            self.queue_exchange(
                vec![Task::ChildDelete(ChildDelete { spis_in: vec![spi] })],
                now,
            );
        }
    }

    fn idle(&self) -> bool {
        self.state == IkeSaState::Established
            && !self.rekeyed
            && self.outstanding.is_none()
            && self.queue.is_empty()
    }

    /// Earliest soft-lifetime deadline of the IKE SA or a CHILD SA.
    fn rekey_due(&self) -> Option<Instant> {
        if !self.idle() {
            return None;
        }
        self.children
            .iter()
            .filter(|c| c.state == ChildSaState::Installed)
            .filter_map(|c| c.rekey_at)
            .chain(self.rekey_at)
            .min()
    }

    fn dpd_due(&self) -> Option<Instant> {
        let iv = self.conn.dpd_interval?;
        (self.state == IkeSaState::Established
            && self.outstanding.is_none()
            && self.queue.is_empty())
        .then_some(self.last_rx + iv)
    }

    /// The earliest instant `on_timer` has something to do.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if self.state == IkeSaState::Dead {
            return None;
        }
        let mut d = self
            .outstanding
            .as_ref()
            .filter(|o| o.awaiting_dh.is_none())
            .map(|o| o.next);
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                d = Some(d.map_or(x, |cur: Instant| cur.min(x)));
            }
        };
        consider(self.dpd_due());
        consider(self.keepalive_at);
        consider(self.children.iter().filter_map(|c| c.expire_at).min());
        consider(self.rekey_due());
        consider(self.rekey_grace_deadline());
        if self.state == IkeSaState::Connecting && !self.initiator {
            consider(Some(self.created + self.conn.half_open_timeout));
        }
        d
    }
}

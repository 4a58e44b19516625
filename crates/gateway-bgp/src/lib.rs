//! BGP speaker of the gateway: eBGP sessions with customer gateways over the
//! tunnels' interconnection subnets, routing-policy import/export, and the
//! Loc-RIB whose changes program the data plane and the kernel.
//!
//! Layout: [`message`] and [`attribute`] are the codec; [`neighbor`] is one
//! session's FSM with its Adj-RIB-In/Out; [`rib`] is the Loc-RIB and best-path
//! selection; [`policy`] holds the routing policy and the community to
//! local-preference mapping; [`Speaker`] ties sessions and Loc-RIB together,
//! sans-I/O; [`driver`] runs a `Speaker` on tokio sockets and timers.

pub mod attribute;
pub mod driver;
pub mod message;
pub mod neighbor;
pub mod policy;
mod reader;
pub mod rib;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use ipnet::IpNet;

pub use neighbor::{ConnId, Direction, Input, SessionConfig, SessionPolicy, State, Timer};
pub use policy::{InvalidPrefix, RoutingPolicy};
pub use rib::{Route, RouteChange};

/// The NOTIFICATION that ended an established session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownCause {
    /// We sent it (hold timer expired, an error in what the peer sent, a
    /// Cease of ours).
    Sent(message::Notification),
    /// The peer sent it.
    Received(message::Notification),
}

impl std::fmt::Display for DownCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownCause::Sent(n) => write!(f, "we sent {n} ({})", n.describe()),
            DownCause::Received(n) => write!(f, "the peer sent {n} ({})", n.describe()),
        }
    }
}

/// Scaleway's ASN, our side of every session unless configured otherwise.
pub const DEFAULT_ASN: u32 = 12876;

/// Chosen by the caller (the agent): one per BGP session of a connection.
pub type SessionId = u64;

/// What the driver (or a test) must do after feeding the [`Speaker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection from `local` to `peer`:`port`, then report
    /// [`Input::TcpConnected`] or [`Input::TcpConnectFailed`].
    Connect {
        session: SessionId,
        local: IpAddr,
        peer: IpAddr,
        port: u16,
    },
    Send {
        session: SessionId,
        conn: ConnId,
        bytes: Vec<u8>,
    },
    /// Close after the bytes already queued are sent.
    Close {
        session: SessionId,
        conn: ConnId,
    },
    /// Report [`Input::TimerExpired`] at or after `deadline` (replaces an
    /// earlier deadline of the same timer).
    ArmTimer {
        session: SessionId,
        timer: Timer,
        deadline: Instant,
    },
    StopTimer {
        session: SessionId,
        timer: Timer,
    },
    /// The session reached Established.
    SessionUp {
        session: SessionId,
    },
    /// The session left Established; its routes are already withdrawn.
    SessionDown {
        session: SessionId,
        /// The NOTIFICATION that ended it, if one did.
        cause: Option<DownCause>,
    },
    /// The peer sent End-of-RIB for the session's family (RFC 4724 §2):
    /// its initial routes are all in. Routes kept from before a restart
    /// that it did not send again are stale and may go.
    EndOfRib {
        session: SessionId,
    },
    /// The Loc-RIB changed: program the data plane and the kernel.
    Route(RouteChange),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpeakerError {
    #[error("session {0} already exists")]
    DuplicateSession(SessionId),
    #[error("no session {0}")]
    UnknownSession(SessionId),
}

/// All sessions of this gateway and the Loc-RIB they feed.
#[derive(Debug, Default)]
pub struct Speaker {
    sessions: BTreeMap<SessionId, neighbor::Session>,
    loc_rib: rib::LocRib,
}

impl Speaker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a session and starts it (ManualStart). Without a routing policy
    /// nothing is accepted or announced; `policy.exported` are the VPC
    /// prefixes to announce, filtered by `prefix_filter_out` and the
    /// session's family.
    pub fn add_session(
        &mut self,
        id: SessionId,
        config: SessionConfig,
        policy: SessionPolicy,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> Result<(), SpeakerError> {
        if self.sessions.contains_key(&id) {
            return Err(SpeakerError::DuplicateSession(id));
        }
        self.sessions
            .insert(id, neighbor::Session::new(id, config, policy));
        self.handle(id, Input::ManualStart, now, actions)
    }

    /// Stops a session (Cease/administrative shutdown), withdraws its
    /// routes and forgets it.
    pub fn remove_session(
        &mut self,
        id: SessionId,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> Result<(), SpeakerError> {
        self.handle(id, Input::ManualStop, now, actions)?;
        self.sessions.remove(&id);
        Ok(())
    }

    /// Feeds one input to a session.
    pub fn handle(
        &mut self,
        id: SessionId,
        input: Input<'_>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> Result<(), SpeakerError> {
        let session = self
            .sessions
            .get_mut(&id)
            .ok_or(SpeakerError::UnknownSession(id))?;
        let mut out = neighbor::Out::default();
        session.input(input, now, &mut out);
        self.finish(id, out, actions);
        Ok(())
    }

    pub fn set_routing_policy(
        &mut self,
        id: SessionId,
        policy: Option<RoutingPolicy>,
        actions: &mut Vec<Action>,
    ) -> Result<(), SpeakerError> {
        self.reconfigure(id, Some(policy), None, None, actions)
    }

    /// Route propagation off withdraws our announcements and removes the
    /// session's routes from the Loc-RIB; on brings both back. The session
    /// stays up either way.
    pub fn set_route_propagation(
        &mut self,
        id: SessionId,
        enabled: bool,
        actions: &mut Vec<Action>,
    ) -> Result<(), SpeakerError> {
        self.reconfigure(id, None, Some(enabled), None, actions)
    }

    pub fn set_exported_prefixes(
        &mut self,
        id: SessionId,
        exported: Vec<IpNet>,
        actions: &mut Vec<Action>,
    ) -> Result<(), SpeakerError> {
        self.reconfigure(id, None, None, Some(exported), actions)
    }

    fn reconfigure(
        &mut self,
        id: SessionId,
        policy: Option<Option<RoutingPolicy>>,
        propagation: Option<bool>,
        exported: Option<Vec<IpNet>>,
        actions: &mut Vec<Action>,
    ) -> Result<(), SpeakerError> {
        let session = self
            .sessions
            .get_mut(&id)
            .ok_or(SpeakerError::UnknownSession(id))?;
        let mut out = neighbor::Out::default();
        session.reconfigure(policy, propagation, exported, &mut out);
        self.finish(id, out, actions);
        Ok(())
    }

    fn finish(&mut self, id: SessionId, out: neighbor::Out, actions: &mut Vec<Action>) {
        // Route changes first, so a SessionDown is seen after the
        // withdrawals it caused.
        for change in out.rib {
            if let Some(c) = self.loc_rib.update(id, change.prefix, change.path) {
                actions.push(Action::Route(c));
            }
        }
        actions.extend(out.actions);
    }

    /// The session a TCP connection from `peer` to our `local` address belongs to.
    pub fn session_for(&self, local: IpAddr, peer: IpAddr) -> Option<SessionId> {
        self.sessions
            .values()
            .find(|s| s.config().local_addr == local && s.config().peer_addr == peer)
            .map(|s| s.id())
    }

    pub fn session(&self, id: SessionId) -> Option<&neighbor::Session> {
        self.sessions.get(&id)
    }

    pub fn sessions(&self) -> impl Iterator<Item = &neighbor::Session> {
        self.sessions.values()
    }

    pub fn loc_rib(&self) -> &rib::LocRib {
        &self.loc_rib
    }
}

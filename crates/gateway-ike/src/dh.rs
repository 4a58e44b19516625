//! Diffie-Hellman work as data, so that it runs off the IKE event loop: a
//! modp4096 exchange costs milliseconds, and a flood of IKE_SA_INIT must
//! not delay DPD and rekeys of other connections. A task that needs a key
//! pair or a shared secret asks its IKE SA (`IkeSa::dh_generate`,
//! `dh_respond`, `dh_shared`); with offloading on, the SA emits
//! [`Action::ComputeDh`](crate::Action::ComputeDh) and the exchange
//! stops until the driver feeds the [`DhResult`] back
//! (`IkeManager::handle_dh_result`), which re-runs the exchange with the
//! result at hand. Tasks ask before they change anything, so the re-run is
//! the first run that completes. With offloading off (the default of a
//! bare `IkeManager`), the work is done inline.

use std::net::IpAddr;

use crate::crypto::{CryptoError, DhGroup, DhPrivate, Secret};

/// Names a job: the IKE SA (our SPI) and a sequence number within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DhJobId {
    pub(crate) ike: u64,
    pub(crate) seq: u64,
}

/// What was asked; the key under which the answer waits in the IKE SA.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum DhKey {
    /// A new key pair of the group (our KE in a request we build).
    Generate(DhGroup),
    /// A new key pair and its secret with the peer's KE (a responder).
    Respond(DhGroup, Vec<u8>),
    /// The secret of our key pair (named by its public value) with the
    /// peer's KE (an initiator reading the response).
    Shared(Vec<u8>, Vec<u8>),
}

enum Work {
    Generate(DhGroup),
    Respond(DhGroup, Vec<u8>),
    Shared(DhPrivate, Vec<u8>),
}

/// One piece of Diffie-Hellman work for the driver to run.
pub struct DhJob {
    pub id: DhJobId,
    /// The peer the IKE SA talks to (for per-address limits).
    pub peer: IpAddr,
    /// The job belongs to a half-open IKE SA that the peer started: an
    /// unauthenticated IKE_SA_INIT, what floods are made of. The driver
    /// may refuse such jobs ([`DhJob::refuse`]); never the others (ours,
    /// or of authenticated IKE SAs).
    pub unauthenticated: bool,
    pub group: DhGroup,
    key: DhKey,
    work: Work,
}

impl std::fmt::Debug for DhJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhJob")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("unauthenticated", &self.unauthenticated)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

pub(crate) enum DhReady {
    Generated(DhPrivate),
    Responded(DhPrivate, Result<Secret, CryptoError>),
    Shared(Result<Secret, CryptoError>),
}

pub(crate) enum DhOutcome {
    Done(DhKey, DhReady),
    Refused,
}

/// The outcome of a [`DhJob`], for `IkeManager::handle_dh_result`.
pub struct DhResult {
    pub(crate) id: DhJobId,
    pub(crate) outcome: DhOutcome,
}

impl std::fmt::Debug for DhResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhResult")
            .field("id", &self.id)
            .field("refused", &matches!(self.outcome, DhOutcome::Refused))
            .finish_non_exhaustive()
    }
}

impl DhJob {
    pub(crate) fn generate(id: DhJobId, peer: IpAddr, unauthenticated: bool, g: DhGroup) -> Self {
        Self {
            id,
            peer,
            unauthenticated,
            group: g,
            key: DhKey::Generate(g),
            work: Work::Generate(g),
        }
    }

    pub(crate) fn respond(
        id: DhJobId,
        peer: IpAddr,
        unauthenticated: bool,
        g: DhGroup,
        ke: &[u8],
    ) -> Self {
        Self {
            id,
            peer,
            unauthenticated,
            group: g,
            key: DhKey::Respond(g, ke.to_vec()),
            work: Work::Respond(g, ke.to_vec()),
        }
    }

    pub(crate) fn shared(
        id: DhJobId,
        peer: IpAddr,
        unauthenticated: bool,
        private: DhPrivate,
        ke: &[u8],
    ) -> Self {
        Self {
            id,
            peer,
            unauthenticated,
            group: private.group,
            key: DhKey::Shared(private.public_value(), ke.to_vec()),
            work: Work::Shared(private, ke.to_vec()),
        }
    }

    /// Does the work (blocking: milliseconds for the MODP groups).
    pub fn run(self) -> DhResult {
        let ready = match self.work {
            Work::Generate(g) => DhReady::Generated(DhPrivate::generate(g)),
            Work::Respond(g, ke) => {
                let dh = DhPrivate::generate(g);
                let s = dh.shared_secret(&ke);
                DhReady::Responded(dh, s)
            }
            Work::Shared(dh, ke) => DhReady::Shared(dh.shared_secret(&ke)),
        };
        DhResult {
            id: self.id,
            outcome: DhOutcome::Done(self.key, ready),
        }
    }

    /// The result of a job the driver would not run (overload): the
    /// half-open IKE SA it belongs to is dropped.
    pub fn refuse(self) -> DhResult {
        DhResult {
            id: self.id,
            outcome: DhOutcome::Refused,
        }
    }
}

//! What the IKE core asks of its driver and of the agent: datagrams to
//! send, timers to arm, Diffie-Hellman work to run off the event loop,
//! CHILD SAs to install or remove in the ESP data plane, IKE SA
//! up/down/failed events and log lines. Every event about an IKE SA names
//! it ([`IkeSaId`]): a connection can have several at once (a half-open
//! one next to the established one, the two sides of a rekey), and only
//! the loss of the one that carries a tunnel may take the tunnel down. Key
//! material travels only inside `ChildSaInstall`, in zeroizing buffers,
//! and is never logged.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::crypto::Secret;
pub use crate::dh::{DhJob, DhJobId, DhResult};
use crate::payload::TrafficSelector;

/// Identifies one IKE SA's timer: our IKE SPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(pub u64);

/// Identifies one IKE SA in the events: our IKE SPI of it, unique among
/// the manager's IKE SAs while it lives (a rekey makes a new one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IkeSaId(pub u64);

impl std::fmt::Display for IkeSaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Volume lifetimes of a CHILD SA (RFC 4301 §4.4.2.1): after the soft
/// limit of packets or bytes (either direction) the SA is rekeyed, at the
/// hard limit it must no longer be used. The data plane counts; `None`
/// means no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VolumeLifetimes {
    pub soft_packets: Option<u64>,
    pub hard_packets: Option<u64>,
    pub soft_bytes: Option<u64>,
    pub hard_bytes: Option<u64>,
}

/// Keys for one direction of an ESP SA. For AEAD the salt is appended to
/// the encryption key (GCM/ChaCha20-Poly1305: 4 bytes, CCM: 3 bytes) and
/// the integrity key is empty; for CBC the HMAC key is separate.
#[derive(Clone)]
pub struct EspKeys {
    pub encryption_key: Secret,
    pub integrity_key: Secret,
}

impl std::fmt::Debug for EspKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EspKeys({} + {} bytes, redacted)",
            self.encryption_key.len(),
            self.integrity_key.len()
        )
    }
}

/// UDP encapsulation of ESP (RFC 3948) for a CHILD SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpEncap {
    pub local_port: u16,
    pub remote_port: u16,
}

/// A CHILD SA pair to install in the data plane.
#[derive(Debug)]
pub struct ChildSaInstall {
    pub conn: String,
    /// The (established) IKE SA the CHILD SA belongs to.
    pub ike: IkeSaId,
    /// SPI of the inbound SA (we chose it; the peer sends with it).
    pub spi_in: u32,
    /// SPI of the outbound SA (the peer chose it).
    pub spi_out: u32,
    /// API name: aes128|aes192|aes256|aes128gcm|...|chacha20poly1305.
    pub encryption: &'static str,
    /// API name sha256|sha384|sha512, only for CBC encryption.
    pub integrity: Option<&'static str>,
    pub keys_in: EspKeys,
    pub keys_out: EspKeys,
    pub esn: bool,
    pub udp_encap: Option<UdpEncap>,
    pub local_addr: IpAddr,
    pub remote_addr: IpAddr,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    /// Set on a rekey: the inbound SPI of the CHILD SA this one replaces
    /// (install the new one, switch outbound, then remove the old).
    pub replaces_spi_in: Option<u32>,
    /// Install the inbound SA now but keep sending on the old outbound SA
    /// until [`Action::ActivateOutbound`] names this one. Set when we
    /// answered the peer's rekey: the peer installs the new SA only once
    /// our answer (and its Diffie-Hellman work) is through, so ESP sealed
    /// with the new keys right away would reach it before it can open it
    /// (strongSwan's responders wait for the DELETE of the old SA too).
    pub outbound_deferred: bool,
    /// The connection's volume lifetimes, for the data plane to count
    /// against (at the soft limit, ask the driver to rekey this CHILD SA:
    /// `driver::Command::RekeyChildSa` with `spi_in`).
    pub volume: VolumeLifetimes,
    /// Set when the CHILD SA is resumed from a snapshot
    /// ([`crate::IkeManager::restore`]): where its sequence numbers stand.
    pub resume: Option<SeqResume>,
}

/// Where a resumed CHILD SA's sequence numbers stand (the snapshot's
/// [`crate::snapshot::ChildSaSnapshot::seq_out`] and
/// [`replay_right_edge`](crate::snapshot::ChildSaSnapshot::replay_right_edge)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqResume {
    /// The outbound SA sends from `seq_out + 1`.
    pub seq_out: u64,
    /// The inbound SA accepts only sequence numbers above this one.
    pub replay_right_edge: u64,
}

/// Why an IKE SA ended ([`Action::IkeSaDown`]) or never got established
/// ([`Action::IkeSaFailed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// The peer (or we) deleted the IKE SA with a DELETE.
    Deleted,
    /// The connection was removed by the agent.
    Removed,
    /// Retransmissions exhausted, or DPD found the peer dead.
    PeerUnreachable,
    /// The peer's AUTH did not verify (wrong PSK or identity).
    AuthenticationFailed,
    /// The peer refused our AUTH.
    PeerAuthenticationFailed,
    NoProposalChosen,
    /// The responder never completed the exchange.
    HalfOpenTimeout,
    /// Superseded by a new IKE SA (INITIAL_CONTACT or rekey).
    Replaced,
    /// Any other error notify or protocol failure, with its notify type.
    Protocol(u16),
    /// Resource limits: the Diffie-Hellman work of a half-open IKE SA was
    /// refused by the driver (too much in flight from that address).
    Overload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
}

#[derive(Debug)]
pub enum Action {
    /// Send `bytes` as one UDP datagram (the non-ESP marker is included
    /// when `from` is the NAT-T port).
    Send {
        bytes: Vec<u8>,
        from: SocketAddr,
        to: SocketAddr,
    },
    /// Call `handle_timer(id, ..)` at `at` (replaces an earlier arming of `id`).
    ArmTimer { id: TimerId, at: Instant },
    /// Run this Diffie-Hellman work (off the event loop) and hand the
    /// result to `IkeManager::handle_dh_result`.
    ComputeDh(DhJob),
    /// Only ever for an established (authenticated) IKE SA.
    InstallChildSa(ChildSaInstall),
    /// Remove both SAs of the pair. After a rekey this comes a grace
    /// period after the DELETE exchange (`ConnectionConfig::rekey_grace`),
    /// so that what the peer sealed with the old keys and was still in
    /// flight is decrypted; the outbound half was replaced before.
    RemoveChildSa {
        conn: String,
        ike: IkeSaId,
        spi_in: u32,
        spi_out: u32,
    },
    /// Send on the outbound SA of this CHILD SA from now on (it was
    /// installed with `outbound_deferred`): the peer deleted the SA it
    /// replaces, or did not within `rekey_grace`.
    ActivateOutbound {
        conn: String,
        ike: IkeSaId,
        spi_in: u32,
        spi_out: u32,
    },
    /// An IKE SA was authenticated (IKE_AUTH), or a rekey made it
    /// (`rekey_of` names the IKE SA it replaces: its CHILD SAs now belong
    /// to this one, and the old one goes without an `IkeSaDown`).
    IkeSaUp {
        conn: String,
        ike: IkeSaId,
        spi_i: u64,
        spi_r: u64,
        local: SocketAddr,
        remote: SocketAddr,
        rekey_of: Option<IkeSaId>,
        /// Resumed from a snapshot after a restart (no exchange happened).
        resumed: bool,
    },
    /// An established IKE SA is gone (its CHILD SAs were removed first).
    IkeSaDown {
        conn: String,
        ike: IkeSaId,
        reason: DownReason,
    },
    /// An IKE SA that never got established is gone: a refused or
    /// expired half-open SA (`initiator` false: anyone can cause that,
    /// it says nothing about the tunnel), or our own attempt that failed
    /// (`initiator` true: try again later).
    IkeSaFailed {
        conn: String,
        ike: IkeSaId,
        initiator: bool,
        reason: DownReason,
    },
    /// The peer is behind a NAT whose mapping changed (RFC 7296 §2.23,
    /// RFC 3948): its authenticated IKE traffic now comes from `new`
    /// (same IP, another port). The IKE SA already sends there; the
    /// outbound ESP of the CHILD SAs listed in `spis_out` (all installed
    /// under this IKE SA) must now be UDP-encapsulated to `new.port()`,
    /// keeping their keys and sequence numbers. CHILD SAs installed after
    /// this carry the new port in `udp_encap.remote_port` already.
    PeerEndpointChanged {
        conn: String,
        ike: IkeSaId,
        old: SocketAddr,
        new: SocketAddr,
        spis_out: Vec<u32>,
    },
    Log {
        conn: String,
        level: LogLevel,
        message: String,
    },
    /// What a resume of this IKE SA needs changed (message IDs, endpoint,
    /// CHILD SAs): persist `snapshot` in place of the last one, or forget
    /// the IKE SA (`None`: gone, or no longer resumable). Holds keys.
    SaState {
        conn: String,
        ike: IkeSaId,
        snapshot: Option<Box<crate::snapshot::IkeSaSnapshot>>,
    },
}

//! IKEv2 (RFC 7296) for the gateway, shaped like strongSwan's libcharon
//! but sans-I/O: a codec (`payload`, `message`), `crypto`, IKE SA and CHILD
//! SA state (`ike_sa`, `child_sa`), a task manager running one task per
//! exchange (`task_manager`, `tasks::*`), Diffie-Hellman work as data
//! (`dh`), inbound SPI allocation (`spi`), and an [`IkeManager`] that
//! dispatches datagrams, timers and DH results to IKE SAs and returns
//! [`Action`]s. The only I/O is in `driver` (tokio UDP sockets on
//! 500/4500, timers, a blocking pool for DH). This crate never touches ESP
//! packets: it hands derived CHILD SA keys to the agent in
//! [`Action::InstallChildSa`], only ever for an authenticated IKE SA.
//! `testing` (feature `testing`) holds a scripted peer for tests and
//! fuzzing.
//!
//! # Using it
//!
//! ```
//! use std::time::Instant;
//! use gateway_ike::{Action, ConnectionConfig, EspCipher, IkeCipher, IkeManager, Psk};
//!
//! let mut mgr = IkeManager::new();
//! // One connection (tunnel): our public IP, the customer gateway's, the PSK.
//! let mut conn = ConnectionConfig::new(
//!     "conn-1/v4",
//!     "192.0.2.1".parse().unwrap(),
//!     "192.0.2.2".parse().unwrap(),
//!     Psk::new(b"from the secret manager".to_vec()),
//! );
//! conn.ike_ciphers = vec![IkeCipher::from_api("aes256gcm", Some("sha384"), Some("ecp384")).unwrap()];
//! conn.esp_ciphers = vec![EspCipher::from_api("aes256gcm", None, None).unwrap()];
//! conn.initiate = true; // initiation_policy == vpn_gateway
//! conn.force_encap = true; // UDP-encapsulated ESP even without NAT
//! for action in mgr.add_connection(conn, Instant::now()) {
//!     match action {
//!         Action::Send { bytes, from, to } => { /* UDP send from `from` to `to` */ }
//!         Action::ArmTimer { id, at } => { /* later: mgr.handle_timer(id, now) */ }
//!         Action::ComputeDh(job) => {
//!             /* off the event loop: mgr.handle_dh_result(job.run(), now) */
//!         }
//!         Action::InstallChildSa(sa) => { /* program the ESP data plane */ }
//!         Action::RemoveChildSa { .. } => { /* remove both SPIs */ }
//!         Action::ActivateOutbound { .. } => {
//!             /* send on this pair's outbound SA (installed deferred) */
//!         }
//!         Action::IkeSaUp { ike, .. } | Action::IkeSaDown { ike, .. } => {
//!             /* tunnel status: only the IKE SA `ike` that carries it counts */
//!         }
//!         Action::IkeSaFailed { initiator, .. } => {
//!             /* never established: ours (initiator) may be retried later */
//!         }
//!         Action::PeerEndpointChanged { new, spis_out, .. } => {
//!             /* the NAT'd peer's port changed: UDP-encap ESP of spis_out to new.port() */
//!         }
//!         Action::SaState { ike, snapshot, .. } => {
//!             /* persist (sealed): a restart resumes it with
//!                mgr.add_connection_resuming(conn, &snapshots, elapsed, now) */
//!         }
//!         Action::Log { .. } => {}
//!     }
//! }
//! // Every received UDP payload on 500/4500 (marker included):
//! // mgr.handle_datagram(&bytes, peer_addr, local_addr, Instant::now());
//! ```
//!
//! A bare `IkeManager` computes Diffie-Hellman inline and emits no
//! `ComputeDh`; `driver::UdpDriver` turns offloading on, does the socket,
//! timer and DH-pool part and forwards the other actions on a bounded
//! channel. Rekeys keep the tunnel up: a rekeyed CHILD SA arrives as
//! `InstallChildSa` with `replaces_spi_in` set, then the old pair as
//! `RemoveChildSa` once the grace after its DELETE has passed
//! (`ConnectionConfig::rekey_grace`: what was in flight still decrypts).
//! When the peer started the rekey the new pair comes with
//! `outbound_deferred`, and `ActivateOutbound` says when to send on it
//! (the peer deleted the old pair). A rekeyed IKE SA emits a new `IkeSaUp` (new SPIs,
//! `rekey_of` naming the old one) and no `IkeSaDown`.

pub mod action;
pub mod child_sa;
pub mod config;
pub mod crypto;
pub mod dh;
pub mod driver;
pub mod ike_sa;
pub mod manager;
pub mod message;
pub mod payload;
pub mod snapshot;
pub mod spi;
pub mod task_manager;
pub mod tasks;
#[cfg(feature = "testing")]
pub mod testing;

pub use action::{
    Action, ChildSaInstall, DownReason, EspKeys, IkeSaId, LogLevel, SeqResume, TimerId, UdpEncap,
    VolumeLifetimes,
};
pub use config::{ConnectionConfig, DpdAction, EspCipher, Identity, IkeCipher, Psk};
pub use dh::{DhJob, DhResult};
pub use manager::{Census, Counters, IkeManager, Limits};
pub use spi::SpiInUse;

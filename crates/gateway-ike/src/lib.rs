//! IKEv2 (RFC 7296) for the gateway, shaped like strongSwan's libcharon
//! but sans-I/O: a codec (`payload`, `message`), `crypto`, IKE SA and CHILD
//! SA state (`ike_sa`, `child_sa`), a task manager running one task per
//! exchange (`tasks`), and an `IkeManager` that dispatches datagrams and
//! timers to IKE SAs and returns `Action`s. The only I/O is in `driver`
//! (tokio UDP sockets on 500/4500 and timers). This crate never touches ESP
//! packets: it hands derived CHILD SA keys to the agent in
//! `Action::InstallChildSa`.

pub mod action;
pub mod child_sa;
pub mod config;
pub mod crypto;
pub mod driver;
pub mod ike_sa;
pub mod manager;
pub mod message;
pub mod payload;
pub mod task_manager;
pub mod tasks;

pub use action::{Action, ChildSaInstall, DownReason, EspKeys, LogLevel, TimerId, UdpEncap};
pub use config::{ConnectionConfig, DpdAction, EspCipher, Identity, IkeCipher, Psk};
pub use manager::IkeManager;

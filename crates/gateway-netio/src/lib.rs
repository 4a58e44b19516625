//! Packet and kernel I/O for the gateway's data path: rtnetlink (links,
//! addresses, routes, neighbours), TUN devices for the slow path and AF_XDP
//! sockets for the fast path. It knows nothing about ESP, SAs or the XDP
//! programs' maps beyond "a frame with metadata in front of it" and "an XSKMAP
//! fd", so the data-plane workers glue it to the ESP engine.
#![cfg(target_os = "linux")]

pub mod afxdp;
pub mod netlink;
pub mod raw;
pub mod tun;

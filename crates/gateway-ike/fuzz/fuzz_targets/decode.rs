#![no_main]
//! Feeds arbitrary datagrams to the IKE message and payload decoders and
//! to an `IkeManager` with one responder connection: anything may be
//! rejected, nothing may panic.

use std::net::SocketAddr;
use std::time::Instant;

use gateway_ike::{ConnectionConfig, IkeManager, Psk};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gateway_ike::message::Message::decode(data);
    if let Some((&first, rest)) = data.split_first() {
        let _ = gateway_ike::payload::decode_chain(first, rest);
    }
    let now = Instant::now();
    let mut mgr = IkeManager::new();
    let mut cfg = ConnectionConfig::new(
        "fuzz",
        "192.0.2.2".parse().unwrap(),
        "192.0.2.1".parse().unwrap(),
        Psk::new(b"fuzz".to_vec()),
    );
    cfg.initiate = false;
    let _ = mgr.add_connection(cfg, now);
    let from: SocketAddr = "192.0.2.1:500".parse().unwrap();
    for port in [500u16, 4500] {
        let to = SocketAddr::new("192.0.2.2".parse().unwrap(), port);
        let _ = mgr.handle_datagram(data, from, to, now);
    }
});

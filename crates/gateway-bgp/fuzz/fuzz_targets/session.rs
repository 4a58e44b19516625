//! A whole session fed arbitrary bytes after OPEN/KEEPALIVE: the FSM, the
//! Adj-RIB-In and the Loc-RIB must never panic.
#![no_main]

use std::net::Ipv4Addr;
use std::time::Instant;

use gateway_bgp::attribute::AfiSafi;
use gateway_bgp::message::{Codec, Message, Open};
use gateway_bgp::{Direction, Input, RoutingPolicy, SessionConfig, SessionPolicy, Speaker};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut speaker = Speaker::new();
    let mut actions = Vec::new();
    let config = SessionConfig::new(
        "169.254.0.1".parse().unwrap(),
        "169.254.0.2".parse().unwrap(),
        65001,
    );
    let policy = SessionPolicy {
        routing_policy: Some(RoutingPolicy {
            prefix_filter_in: vec!["0.0.0.0/0".parse().unwrap()],
            prefix_filter_out: vec![],
        }),
        route_propagation: true,
        exported: vec![],
    };
    speaker
        .add_session(1, config, policy, now, &mut actions)
        .unwrap();
    let open = Message::Open(Open::new(
        65001,
        90,
        Ipv4Addr::new(10, 0, 0, 2),
        &[AfiSafi::Ipv4Unicast],
    ))
    .encode(Codec::default());
    let ka = Message::Keepalive.encode(Codec::default());
    for input in [
        Input::TcpConnected {
            conn: 1,
            direction: Direction::Outgoing,
        },
        Input::Received {
            conn: 1,
            bytes: &open,
        },
        Input::Received {
            conn: 1,
            bytes: &ka,
        },
        Input::Received {
            conn: 1,
            bytes: data,
        },
    ] {
        let _ = speaker.handle(1, input, now, &mut actions);
    }
});

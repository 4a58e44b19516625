//! The tokio driver over loopback: two speakers of ours on 127.0.0.1 and
//! 127.0.0.2 (unprivileged port), both opening actively, exchange routes,
//! toggle route propagation without dropping the session, then shut down.

use std::time::Duration;

use gateway_bgp::driver::{self, BgpEvent, BgpHandle};
use gateway_bgp::{Route, RouteChange, RoutingPolicy, SessionConfig, SessionPolicy, State};
use ipnet::IpNet;
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

async fn next_event(rx: &mut Receiver<BgpEvent>) -> BgpEvent {
    let e = timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no BGP event within 10 s")
        .expect("driver stopped");
    eprintln!("event {e:?}");
    e
}

async fn expect_event(rx: &mut Receiver<BgpEvent>, want: BgpEvent) {
    assert_eq!(next_event(rx).await, want);
}

async fn start(
    local: &str,
    peer: &str,
    local_asn: u32,
    peer_asn: u32,
    port: u16,
    filter_in: &str,
    export: &str,
) -> (BgpHandle, Receiver<BgpEvent>) {
    let (handle, events) = driver::spawn();
    let mut config = SessionConfig::new(local.parse().unwrap(), peer.parse().unwrap(), peer_asn);
    config.local_asn = local_asn;
    config.port = port;
    config.hold_time = 6;
    config.connect_retry = Duration::from_millis(500);
    handle
        .add_session(
            1,
            config,
            SessionPolicy {
                routing_policy: Some(RoutingPolicy {
                    prefix_filter_in: vec![net(filter_in)],
                    prefix_filter_out: vec![net(export)],
                }),
                route_propagation: true,
                exported: vec![net(export)],
            },
        )
        .await
        .unwrap();
    (handle, events)
}

#[tokio::test(flavor = "current_thread")]
async fn two_drivers_over_loopback() {
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let (a, mut ea) = start(
        "127.0.0.1",
        "127.0.0.2",
        12876,
        65001,
        port,
        "203.0.113.0/24",
        "198.51.100.0/24",
    )
    .await;
    let (b, mut eb) = start(
        "127.0.0.2",
        "127.0.0.1",
        65001,
        12876,
        port,
        "198.51.100.0/24",
        "203.0.113.0/24",
    )
    .await;

    expect_event(&mut ea, BgpEvent::SessionUp(1)).await;
    expect_event(&mut eb, BgpEvent::SessionUp(1)).await;
    let from_b = Route {
        prefix: net("203.0.113.0/24"),
        next_hop: "127.0.0.2".parse().unwrap(),
        session: 1,
    };
    expect_event(
        &mut ea,
        BgpEvent::Route(RouteChange::Install(from_b.clone())),
    )
    .await;
    expect_event(
        &mut eb,
        BgpEvent::Route(RouteChange::Install(Route {
            prefix: net("198.51.100.0/24"),
            next_hop: "127.0.0.1".parse().unwrap(),
            session: 1,
        })),
    )
    .await;
    assert_eq!(a.loc_rib().await.unwrap(), vec![from_b.clone()]);

    // Propagation off on A: A drops B's route, B loses A's announcement.
    a.set_route_propagation(1, false).await.unwrap();
    expect_event(
        &mut ea,
        BgpEvent::Route(RouteChange::Withdraw {
            prefix: net("203.0.113.0/24"),
        }),
    )
    .await;
    expect_event(
        &mut eb,
        BgpEvent::Route(RouteChange::Withdraw {
            prefix: net("198.51.100.0/24"),
        }),
    )
    .await;
    a.set_route_propagation(1, true).await.unwrap();
    expect_event(&mut ea, BgpEvent::Route(RouteChange::Install(from_b))).await;
    assert!(matches!(
        next_event(&mut eb).await,
        BgpEvent::Route(RouteChange::Install(_))
    ));
    for h in [&a, &b] {
        let status = h.session_status(1).await.unwrap().unwrap();
        assert_eq!(status.state, State::Established);
        assert_eq!((status.adj_rib_in, status.adj_rib_out), (1, 1));
        assert_eq!(status.accepted, 1);
        let counts = h.prefix_counts().await.unwrap();
        assert_eq!(counts.len(), 1);
        assert_eq!(
            (counts[0].session, counts[0].received, counts[0].accepted),
            (1, 1, 1)
        );
    }

    // A goes away: B sees the session drop (Cease) and the route withdrawn.
    a.remove_session(1).await.unwrap();
    expect_event(
        &mut ea,
        BgpEvent::Route(RouteChange::Withdraw {
            prefix: net("203.0.113.0/24"),
        }),
    )
    .await;
    let cease = gateway_bgp::message::Notification::new(6, 2);
    expect_event(
        &mut ea,
        BgpEvent::SessionDown(1, Some(gateway_bgp::DownCause::Sent(cease.clone()))),
    )
    .await;
    expect_event(
        &mut eb,
        BgpEvent::Route(RouteChange::Withdraw {
            prefix: net("198.51.100.0/24"),
        }),
    )
    .await;
    expect_event(
        &mut eb,
        BgpEvent::SessionDown(1, Some(gateway_bgp::DownCause::Received(cease))),
    )
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn missing_local_address_is_waited_for() {
    // 192.0.2.1 is on no interface here: the session is created anyway and
    // keeps trying (binding fails locally, nothing is sent).
    let (h, _events) = driver::spawn();
    let mut config = SessionConfig::new(
        "192.0.2.1".parse().unwrap(),
        "192.0.2.2".parse().unwrap(),
        65001,
    );
    config.port = 20_000 + (std::process::id() % 20_000) as u16;
    h.add_session(7, config, SessionPolicy::default())
        .await
        .unwrap();
    let status = h.session_status(7).await.unwrap().unwrap();
    assert!(
        matches!(status.state, State::Connect | State::Active),
        "{status:?}"
    );
    assert_eq!(h.session_status(8).await.unwrap(), None);
    h.remove_session(7).await.unwrap();
    assert_eq!(h.session_status(7).await.unwrap(), None);
}

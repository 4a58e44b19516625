//! The tokio driver over loopback: two speakers of ours on 127.0.0.1 and
//! 127.0.0.2 (unprivileged port), both opening actively, exchange routes,
//! toggle route propagation without dropping the session, then shut down.

use std::time::Duration;

use gateway_bgp::attribute::AfiSafi;
use gateway_bgp::driver::{self, BgpEvent, BgpHandle};
use gateway_bgp::message::{Codec, Message, Open};
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
    start_with_hold(local, peer, local_asn, peer_asn, port, filter_in, export, 6).await
}

#[expect(clippy::too_many_arguments, reason = "a test's session, spelled out")]
async fn start_with_hold(
    local: &str,
    peer: &str,
    local_asn: u32,
    peer_asn: u32,
    port: u16,
    filter_in: &str,
    export: &str,
    hold_time: u16,
) -> (BgpHandle, Receiver<BgpEvent>) {
    let (handle, events) = driver::spawn();
    let mut config = SessionConfig::new(local.parse().unwrap(), peer.parse().unwrap(), peer_asn);
    config.local_asn = local_asn;
    config.port = port;
    config.hold_time = hold_time;
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

/// Reads one BGP message off `r`.
async fn read_message(r: &mut tokio::net::tcp::OwnedReadHalf) -> Option<Message> {
    use tokio::io::AsyncReadExt as _;
    let mut frame = vec![0u8; 19];
    r.read_exact(&mut frame).await.ok()?;
    let len = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    frame.resize(len.max(19), 0);
    r.read_exact(&mut frame[19..]).await.ok()?;
    Message::decode(&frame, Codec::default()).ok()
}

/// The timers fire and re-arm, against a peer played here: with a hold
/// time of 3 s we send a KEEPALIVE every second (the keepalive timer fires
/// and is armed again) and restart the hold timer on each one the peer
/// sends, so the session outlives two hold times of the peer's
/// KEEPALIVEs; when the peer falls silent without closing, the hold timer
/// expires and we close with NOTIFICATION 4 (Hold Timer Expired).
#[tokio::test(flavor = "current_thread")]
async fn the_hold_timer_is_restarted_by_keepalives_and_expires_on_silence() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt as _;

    let port = 20_000 + ((std::process::id() + 7_919) % 20_000) as u16;
    let listener = tokio::net::TcpListener::bind(("127.0.0.4", port))
        .await
        .unwrap();
    let (h, mut events) = driver::spawn();
    let mut config = SessionConfig::new(
        "127.0.0.1".parse().unwrap(),
        "127.0.0.4".parse().unwrap(),
        65001,
    );
    config.port = port;
    config.hold_time = 3;
    config.connect_retry = Duration::from_millis(500);
    h.add_session(1, config, SessionPolicy::default())
        .await
        .unwrap();
    let (stream, _) = timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("no connection from the speaker")
        .unwrap();
    let (mut r, mut w) = stream.into_split();
    assert!(matches!(read_message(&mut r).await, Some(Message::Open(_))));
    let open = Message::Open(Open::new(
        65001,
        3,
        "127.0.0.4".parse().unwrap(),
        &[AfiSafi::Ipv4Unicast],
    ));
    w.write_all(&open.encode(Codec::default())).await.unwrap();
    w.write_all(&Message::Keepalive.encode(Codec::default()))
        .await
        .unwrap();
    // What the speaker sends from now on, counted.
    let keepalives = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&keepalives);
    let reader = tokio::spawn(async move {
        let mut last = None;
        while let Some(m) = read_message(&mut r).await {
            match m {
                Message::Keepalive => {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
                other => last = Some(other),
            }
        }
        last
    });
    expect_event(&mut events, BgpEvent::SessionUp(1)).await;

    // Two hold times of KEEPALIVEs from the peer: the session stays.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        w.write_all(&Message::Keepalive.encode(Codec::default()))
            .await
            .unwrap();
    }
    while let Ok(e) = events.try_recv() {
        assert!(
            !matches!(e, BgpEvent::SessionDown(..)),
            "{e:?} while the peer sent KEEPALIVEs"
        );
    }
    assert_eq!(
        h.session_status(1).await.unwrap().unwrap().state,
        State::Established
    );
    let sent = keepalives.load(Ordering::Relaxed);
    assert!(sent >= 4, "{sent} KEEPALIVEs in 6 s with a 3 s hold time");

    // Silence (the connection stays open): the hold timer expires.
    let hold_expired = gateway_bgp::message::Notification::new(4, 0);
    loop {
        match next_event(&mut events).await {
            BgpEvent::SessionDown(1, cause) => {
                assert_eq!(
                    cause,
                    Some(gateway_bgp::DownCause::Sent(hold_expired.clone()))
                );
                break;
            }
            e => assert!(matches!(e, BgpEvent::Route(_)), "{e:?}"),
        }
    }
    let last = timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last, Some(Message::Notification(hold_expired)));
    drop(w);
}

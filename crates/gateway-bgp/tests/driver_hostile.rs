//! A hostile BGP peer against the tokio driver over loopback (no root): it
//! completes OPEN/KEEPALIVE, then stops reading its socket and streams
//! ROUTE-REFRESH while we hold a big Adj-RIB-Out. Every refresh answer is
//! the whole Adj-RIB-Out; the peer never takes it. The session must end
//! with a Cease NOTIFICATION (RFC 4486 "Out of Resources") and the bytes
//! the driver holds for it must stay under its bound and be released.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use gateway_bgp::attribute::AfiSafi;
use gateway_bgp::driver::{self, DriverLimits};
use gateway_bgp::message::{cease, code, frame_len, Codec, Message, Open, RouteRefresh};
use gateway_bgp::{RoutingPolicy, SessionConfig, SessionPolicy, State};
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep, timeout};

const PEER_ASN: u32 = 65001;
/// The driver's bound on one connection's output queue in this test.
const QUEUE_LIMIT: usize = 2 * 1024 * 1024;
/// Refreshes the peer sends at most (bounded load).
const MAX_REFRESHES: usize = 20_000;

/// Reads whole BGP messages until `pred` holds for one of them.
async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, pred: impl Fn(&Message) -> bool) {
    let mut chunk = [0u8; 4096];
    loop {
        while let Ok(Some(len)) = frame_len(buf) {
            let msg = Message::decode(&buf[..len], Codec::default()).unwrap();
            buf.drain(..len);
            if pred(&msg) {
                return;
            }
        }
        let n = timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("peer: nothing from the speaker within 10 s")
            .unwrap();
        assert!(n > 0, "speaker closed before the session came up");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_reading_peer_streaming_route_refresh_is_closed_with_cease() {
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let ours: SocketAddr = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 1), port));
    let theirs = Ipv4Addr::new(127, 0, 0, 3);

    let (bgp, _events) = driver::spawn_with(DriverLimits {
        out_queue_bytes: QUEUE_LIMIT,
        ..DriverLimits::default()
    });
    let mut config = SessionConfig::new(ours.ip(), theirs.into(), PEER_ASN);
    config.port = port;
    config.passive = true;
    // Short enough that the stream of refreshes is answered many times.
    config.route_refresh_interval = Duration::from_millis(10);
    // A big Adj-RIB-Out: 65536 host routes of the link-local range, about
    // 330 KB of UPDATEs per full announcement.
    let exported: Vec<IpNet> = (0..=u16::MAX)
        .map(|i| {
            let [a, b] = i.to_be_bytes();
            IpNet::from(std::net::IpAddr::from(Ipv4Addr::new(169, 254, a, b)))
        })
        .collect();
    bgp.add_session(
        1,
        config,
        SessionPolicy {
            routing_policy: Some(RoutingPolicy {
                prefix_filter_in: vec![],
                prefix_filter_out: vec!["169.254.0.0/16".parse().unwrap()],
            }),
            route_propagation: true,
            exported,
        },
    )
    .await
    .unwrap();

    // The peer: a tiny receive buffer, so the kernel holds little for it.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind(SocketAddr::from((theirs, 0))).unwrap();
    let mut stream = timeout(Duration::from_secs(10), async {
        loop {
            // The listener may not be bound yet.
            let s = TcpSocket::new_v4().unwrap();
            s.set_recv_buffer_size(4096).unwrap();
            s.bind(SocketAddr::from((theirs, 0))).unwrap();
            if let Ok(c) = s.connect(ours).await {
                return c;
            }
            sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("cannot connect to the speaker");
    drop(socket);
    let open = Open::new(
        PEER_ASN,
        0,
        Ipv4Addr::new(192, 0, 2, 3),
        &[AfiSafi::Ipv4Unicast],
    );
    stream
        .write_all(&Message::Open(open).encode(Codec::default()))
        .await
        .unwrap();
    stream
        .write_all(&Message::Keepalive.encode(Codec::default()))
        .await
        .unwrap();
    let mut buf = Vec::new();
    read_until(&mut stream, &mut buf, |m| matches!(m, Message::Keepalive)).await;
    timeout(Duration::from_secs(10), async {
        while bgp.session_status(1).await.unwrap().map(|s| s.state) != Some(State::Established) {
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("session not Established within 10 s");

    // From here on the peer never reads: only ROUTE-REFRESH, bounded in
    // count and time, until the speaker gives up on the session.
    let rr = Message::RouteRefresh(RouteRefresh { afi: 1, safi: 1 }).encode(Codec::default());
    let mut closed = None;
    let mut sent = 0;
    let mut peak_seen = 0;
    let stream_deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while sent < MAX_REFRESHES && tokio::time::Instant::now() < stream_deadline {
        if timeout(Duration::from_millis(200), stream.write_all(&rr))
            .await
            .is_err()
        {
            // Our send buffer is full: the speaker stopped reading too.
            break;
        }
        sent += 1;
        sleep(Duration::from_millis(2)).await;
        let status = bgp.session_status(1).await.unwrap().unwrap();
        peak_seen = peak_seen.max(status.out_queue_bytes);
        if status.state != State::Established {
            closed = Some(status);
            break;
        }
    }
    let status = match closed {
        Some(s) => s,
        None => bgp.session_status(1).await.unwrap().unwrap(),
    };
    eprintln!(
        "refreshes sent {sent}, status {status:?}, stats {:?}",
        bgp.queue_stats()
    );
    let err = status
        .last_error
        .expect("the session is still up: no NOTIFICATION after the refresh stream");
    assert_eq!(
        (err.code, err.subcode),
        (code::CEASE, cease::OUT_OF_RESOURCES),
        "{err}"
    );
    assert_ne!(status.state, State::Established);

    let stats = bgp.queue_stats();
    assert_eq!(stats.overflows, 1, "{stats:?}");
    // The queue really filled up to its bound, and never beyond.
    assert!(stats.peak_bytes <= QUEUE_LIMIT, "{stats:?}");
    assert!(peak_seen <= QUEUE_LIMIT, "{peak_seen}");
    assert!(
        stats.peak_bytes > QUEUE_LIMIT - gateway_bgp::message::MAX_MESSAGE_LEN,
        "{stats:?}"
    );
    // Nothing is kept for the closed connection. The session reports the
    // Cease as soon as it decides it; the connection task drops its queue
    // on its next turn, which a loaded host may delay a little.
    let mut stats = stats;
    let wait = tokio::time::Instant::now() + Duration::from_secs(10);
    while stats.queued_bytes != 0 && tokio::time::Instant::now() < wait {
        sleep(Duration::from_millis(10)).await;
        stats = bgp.queue_stats();
    }
    assert_eq!(stats.queued_bytes, 0, "{stats:?}");

    // The peer now reads what is left: what the kernel held, then at most
    // the rest of one UPDATE, then the NOTIFICATION, then the end.
    let mut last = None;
    let mut chunk = vec![0u8; 64 * 1024];
    let drained = timeout(Duration::from_secs(60), async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            while let Ok(Some(len)) = frame_len(&buf) {
                last = Message::decode(&buf[..len], Codec::default()).ok();
                buf.drain(..len);
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the speaker never closed the connection");
    match last {
        Some(Message::Notification(n)) => {
            assert_eq!((n.code, n.subcode), (code::CEASE, cease::OUT_OF_RESOURCES));
        }
        other => panic!("last message before the close: {other:?}"),
    }
}

//! Session FSM, policy and Loc-RIB tests, asserting on the actions the
//! sans-I/O [`Speaker`] returns: a scripted peer feeds it bytes, and two
//! speakers wired back to back exercise collision detection end to end.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use gateway_bgp::attribute::{
    AfiSafi, AsPath, Community, MpNextHop, MpReachNlri, MpUnreachNlri, Origin, PathAttribute,
};
use gateway_bgp::message::{
    frame_len, Capability, Codec, GracefulRestart, Message, Notification, Open, RouteRefresh,
    Update,
};
use gateway_bgp::policy::{COMMUNITY_HIGH, COMMUNITY_LOW};
use gateway_bgp::{
    Action, Direction, Input, Route, RouteChange, RoutingPolicy, SessionConfig, SessionPolicy,
    Speaker, State, Timer,
};
use ipnet::IpNet;

const PEER_ASN: u32 = 65001;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn config(local: &str, peer: &str) -> SessionConfig {
    let mut c = SessionConfig::new(ip(local), ip(peer), PEER_ASN);
    c.hold_time = 9;
    c.connect_retry = Duration::from_secs(5);
    c
}

fn policy(filter_in: &[&str], filter_out: &[&str], exported: &[&str]) -> SessionPolicy {
    SessionPolicy {
        routing_policy: Some(RoutingPolicy {
            prefix_filter_in: filter_in.iter().map(|s| net(s)).collect(),
            prefix_filter_out: filter_out.iter().map(|s| net(s)).collect(),
        }),
        route_propagation: true,
        exported: exported.iter().map(|s| net(s)).collect(),
    }
}

fn peer_open(asn: u32, hold: u16, family: AfiSafi) -> Vec<u8> {
    Message::Open(Open::new(
        asn,
        hold,
        Ipv4Addr::new(10, 255, 0, 2),
        &[family],
    ))
    .encode(Codec::default())
}

fn keepalive() -> Vec<u8> {
    Message::Keepalive.encode(Codec::default())
}

/// Messages the speaker sent on `conn`, decoded.
fn sent(actions: &[Action], conn: u64) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { conn: c, bytes, .. } if *c == conn => {
                assert_eq!(frame_len(bytes), Ok(Some(bytes.len())));
                Some(Message::decode(bytes, Codec::default()).unwrap())
            }
            _ => None,
        })
        .collect()
}

fn routes(actions: &[Action]) -> Vec<RouteChange> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Route(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn install(prefix: &str, nh: &str, session: u64) -> RouteChange {
    RouteChange::Install(Route {
        prefix: net(prefix),
        next_hop: ip(nh),
        session,
    })
}

fn withdraw(prefix: &str) -> RouteChange {
    RouteChange::Withdraw {
        prefix: net(prefix),
    }
}

fn closed(actions: &[Action], conn: u64) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Close { conn: c, .. } if *c == conn))
}

fn notification(actions: &[Action], conn: u64) -> Option<Notification> {
    sent(actions, conn).into_iter().find_map(|m| match m {
        Message::Notification(n) => Some(n),
        _ => None,
    })
}

fn deadline(actions: &[Action], timer: Timer) -> Option<Instant> {
    actions.iter().rev().find_map(|a| match a {
        Action::ArmTimer {
            timer: t, deadline, ..
        } if *t == timer => Some(*deadline),
        _ => None,
    })
}

/// An UPDATE from the peer announcing IPv4 prefixes.
fn announce(prefixes: &[&str], as_path: Vec<u32>, communities: Vec<Community>) -> Vec<u8> {
    let mut attrs = vec![
        PathAttribute::Origin(Origin::Igp),
        PathAttribute::AsPath(AsPath::sequence(as_path)),
        PathAttribute::NextHop(Ipv4Addr::new(169, 254, 0, 2)),
    ];
    if !communities.is_empty() {
        attrs.push(PathAttribute::Communities(communities));
    }
    Message::Update(Update {
        path_attributes: attrs,
        nlri: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
        ..Update::default()
    })
    .encode(Codec::default())
}

fn withdraw_msg(prefixes: &[&str]) -> Vec<u8> {
    Message::Update(Update {
        withdrawn_routes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
        ..Update::default()
    })
    .encode(Codec::default())
}

struct Harness {
    speaker: Speaker,
    now: Instant,
}

impl Harness {
    fn new() -> Self {
        Self {
            speaker: Speaker::new(),
            now: Instant::now(),
        }
    }

    fn add(&mut self, id: u64, config: SessionConfig, policy: SessionPolicy) -> Vec<Action> {
        let mut a = Vec::new();
        self.speaker
            .add_session(id, config, policy, self.now, &mut a)
            .unwrap();
        a
    }

    fn input(&mut self, id: u64, input: Input<'_>) -> Vec<Action> {
        let mut a = Vec::new();
        self.speaker.handle(id, input, self.now, &mut a).unwrap();
        a
    }

    fn recv(&mut self, id: u64, conn: u64, bytes: &[u8]) -> Vec<Action> {
        self.input(id, Input::Received { conn, bytes })
    }

    fn state(&self, id: u64) -> State {
        self.speaker.session(id).unwrap().state()
    }

    /// Active open on `conn` through to Established; returns all actions.
    fn establish(&mut self, id: u64, conn: u64, open: &[u8]) -> Vec<Action> {
        let mut all = self.input(
            id,
            Input::TcpConnected {
                conn,
                direction: Direction::Outgoing,
            },
        );
        all.extend(self.recv(id, conn, open));
        all.extend(self.recv(id, conn, &keepalive()));
        assert_eq!(self.state(id), State::Established);
        all
    }
}

#[test]
fn active_open_reaches_established() {
    let mut h = Harness::new();
    let a = h.add(
        1,
        config("169.254.0.1", "169.254.0.2"),
        SessionPolicy::default(),
    );
    assert!(a.contains(&Action::Connect {
        session: 1,
        local: ip("169.254.0.1"),
        peer: ip("169.254.0.2"),
        port: 179
    }));
    assert_eq!(
        deadline(&a, Timer::ConnectRetry),
        Some(h.now + Duration::from_secs(5))
    );
    assert_eq!(h.state(1), State::Connect);

    let a = h.input(
        1,
        Input::TcpConnected {
            conn: 7,
            direction: Direction::Outgoing,
        },
    );
    let Message::Open(open) = &sent(&a, 7)[0] else {
        panic!("OPEN expected")
    };
    assert_eq!(open.asn(), 12876);
    assert_eq!(open.my_as, 12876);
    assert_eq!(open.hold_time, 9);
    assert_eq!(open.bgp_identifier, Ipv4Addr::new(169, 254, 0, 1));
    assert_eq!(open.families(), vec![AfiSafi::Ipv4Unicast]);
    assert!(open.route_refresh());
    assert_eq!(h.state(1), State::OpenSent);

    let a = h.recv(1, 7, &peer_open(PEER_ASN, 30, AfiSafi::Ipv4Unicast));
    assert_eq!(sent(&a, 7), vec![Message::Keepalive]);
    assert_eq!(h.state(1), State::OpenConfirm);
    // Negotiated hold time is the smaller one; keepalives every third of it.
    assert_eq!(
        deadline(&a, Timer::Hold),
        Some(h.now + Duration::from_secs(9))
    );
    assert_eq!(
        deadline(&a, Timer::Keepalive),
        Some(h.now + Duration::from_secs(3))
    );

    let a = h.recv(1, 7, &keepalive());
    assert!(a.contains(&Action::SessionUp { session: 1 }));
    assert_eq!(h.state(1), State::Established);
    // RFC 8212: no policy, nothing announced.
    assert!(sent(&a, 7).is_empty());
}

#[test]
fn passive_session_waits_for_the_peer() {
    let mut h = Harness::new();
    let mut c = config("169.254.0.1", "169.254.0.2");
    c.passive = true;
    let a = h.add(1, c, SessionPolicy::default());
    assert!(!a.iter().any(|x| matches!(x, Action::Connect { .. })));
    assert_eq!(h.state(1), State::Active);
    let a = h.input(
        1,
        Input::TcpConnected {
            conn: 3,
            direction: Direction::Incoming,
        },
    );
    assert!(matches!(sent(&a, 3)[..], [Message::Open(_)]));
    assert_eq!(h.state(1), State::OpenSent);
}

#[test]
fn connect_failure_then_retry() {
    let mut h = Harness::new();
    let a = h.add(
        1,
        config("169.254.0.1", "169.254.0.2"),
        SessionPolicy::default(),
    );
    let retry = deadline(&a, Timer::ConnectRetry).unwrap();
    h.input(1, Input::TcpConnectFailed);
    assert_eq!(h.state(1), State::Active);
    // An early timer event is stale and ignored.
    assert!(h
        .input(1, Input::TimerExpired(Timer::ConnectRetry))
        .is_empty());
    h.now = retry;
    let a = h.input(1, Input::TimerExpired(Timer::ConnectRetry));
    assert!(a.iter().any(|x| matches!(x, Action::Connect { .. })));
    assert_eq!(h.state(1), State::Connect);
}

/// A session whose peer cannot be reached (its tunnel is down) stops
/// connecting after the attempt under way and arms nothing more; it
/// connects at once when the peer is reachable again, and still accepts
/// the peer's connection meanwhile.
#[test]
fn an_unreachable_peer_is_not_dialled_until_it_is_reachable() {
    let mut h = Harness::new();
    let a = h.add(
        1,
        config("169.254.0.1", "169.254.0.2"),
        SessionPolicy::default(),
    );
    let retry = deadline(&a, Timer::ConnectRetry).unwrap();
    assert!(h.input(1, Input::Reachable(false)).is_empty());
    h.input(1, Input::TcpConnectFailed);
    assert_eq!(h.state(1), State::Active);
    h.now = retry;
    let a = h.input(1, Input::TimerExpired(Timer::ConnectRetry));
    assert!(
        a.is_empty(),
        "no connect and no timer while unreachable: {a:?}"
    );
    assert_eq!(h.state(1), State::Active);
    // Reachable again: a connect at once, with its retry timer.
    let a = h.input(1, Input::Reachable(true));
    assert!(a.iter().any(|x| matches!(x, Action::Connect { .. })));
    assert_eq!(
        deadline(&a, Timer::ConnectRetry),
        Some(h.now + Duration::from_secs(5))
    );
    assert_eq!(h.state(1), State::Connect);
    // Told twice: nothing more.
    assert!(h.input(1, Input::Reachable(true)).is_empty());
    // Unreachable while waiting: the peer may still connect to us.
    h.input(1, Input::Reachable(false));
    h.input(1, Input::TcpConnectFailed);
    let a = h.input(
        1,
        Input::TcpConnected {
            conn: 4,
            direction: Direction::Incoming,
        },
    );
    assert!(matches!(sent(&a, 4)[..], [Message::Open(_)]));
    assert_eq!(h.state(1), State::OpenSent);
}

/// A session added while its peer is unreachable dials nothing after an
/// error sends it back to Idle.
#[test]
fn an_unreachable_peer_is_not_dialled_after_an_error() {
    let mut h = Harness::new();
    h.add(
        1,
        config("169.254.0.1", "169.254.0.2"),
        SessionPolicy::default(),
    );
    h.input(1, Input::Reachable(false));
    h.input(
        1,
        Input::TcpConnected {
            conn: 1,
            direction: Direction::Outgoing,
        },
    );
    let a = h.recv(1, 1, &peer_open(65002, 90, AfiSafi::Ipv4Unicast));
    assert_eq!(h.state(1), State::Idle);
    let retry = deadline(&a, Timer::ConnectRetry).expect("restart armed");
    h.now = retry;
    let a = h.input(1, Input::TimerExpired(Timer::ConnectRetry));
    assert!(!a.iter().any(|x| matches!(x, Action::Connect { .. })));
    assert_eq!(h.state(1), State::Active);
}

#[test]
fn open_errors_send_the_right_notification() {
    for (open, code, subcode) in [
        (peer_open(65002, 90, AfiSafi::Ipv4Unicast), 2, 2),
        (peer_open(PEER_ASN, 2, AfiSafi::Ipv4Unicast), 2, 6),
        (
            Message::Open(Open::new(PEER_ASN, 90, Ipv4Addr::UNSPECIFIED, &[]))
                .encode(Codec::default()),
            2,
            3,
        ),
    ] {
        let mut h = Harness::new();
        h.add(
            1,
            config("169.254.0.1", "169.254.0.2"),
            SessionPolicy::default(),
        );
        h.input(
            1,
            Input::TcpConnected {
                conn: 1,
                direction: Direction::Outgoing,
            },
        );
        let a = h.recv(1, 1, &open);
        let n = notification(&a, 1).expect("NOTIFICATION");
        assert_eq!((n.code, n.subcode), (code, subcode));
        assert!(closed(&a, 1));
        assert_eq!(h.state(1), State::Idle);
        // Automatic restart after connect-retry.
        let retry = deadline(&a, Timer::ConnectRetry).expect("restart armed");
        h.now = retry;
        let a = h.input(1, Input::TimerExpired(Timer::ConnectRetry));
        assert!(a.iter().any(|x| matches!(x, Action::Connect { .. })));
    }
}

#[test]
fn four_octet_peer_asn() {
    let mut h = Harness::new();
    let mut c = config("169.254.0.1", "169.254.0.2");
    c.peer_asn = 4_200_000_001;
    h.add(1, c, policy(&["203.0.113.0/24"], &[], &[]));
    let open = peer_open(4_200_000_001, 90, AfiSafi::Ipv4Unicast);
    // The peer's 2-octet field holds AS_TRANS.
    assert_eq!(&open[20..22], &23456u16.to_be_bytes());
    h.establish(1, 1, &open);
    let a = h.recv(
        1,
        1,
        &announce(&["203.0.113.0/24"], vec![4_200_000_001, 65010], vec![]),
    );
    assert_eq!(
        routes(&a),
        vec![install("203.0.113.0/24", "169.254.0.2", 1)]
    );
}

#[test]
fn import_filter_and_no_policy() {
    let mut h = Harness::new();
    let no_policy = SessionPolicy {
        route_propagation: true,
        ..SessionPolicy::default()
    };
    h.add(1, config("169.254.0.1", "169.254.0.2"), no_policy);
    h.establish(1, 1, &peer_open(PEER_ASN, 90, AfiSafi::Ipv4Unicast));
    let update = announce(
        &[
            "203.0.113.0/24",
            "203.0.113.64/26",
            "198.51.100.0/24",
            "0.0.0.0/0",
        ],
        vec![PEER_ASN],
        vec![],
    );
    // RFC 8212: without a policy nothing reaches the Loc-RIB.
    assert!(routes(&h.recv(1, 1, &update)).is_empty());
    assert_eq!(h.speaker.session(1).unwrap().adj_rib_in_len(), 4);
    assert_eq!(h.speaker.session(1).unwrap().adj_rib_in_accepted(), 0);
    // Attaching a policy re-evaluates the Adj-RIB-In: only what is within
    // prefix_filter_in, equal or more specific.
    let mut a = Vec::new();
    h.speaker
        .set_routing_policy(
            1,
            Some(RoutingPolicy {
                prefix_filter_in: vec![net("203.0.113.0/24")],
                prefix_filter_out: vec![],
            }),
            &mut a,
        )
        .unwrap();
    let mut r = routes(&a);
    r.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(
        r,
        vec![
            install("203.0.113.0/24", "169.254.0.2", 1),
            install("203.0.113.64/26", "169.254.0.2", 1)
        ]
    );
    assert_eq!(h.speaker.loc_rib().len(), 2);
    assert_eq!(h.speaker.session(1).unwrap().adj_rib_in_accepted(), 2);
    // Announced again (same prefixes): counted once.
    h.recv(1, 1, &update);
    assert_eq!(h.speaker.session(1).unwrap().adj_rib_in_accepted(), 2);
    // Withdrawal by the peer.
    let a = h.recv(1, 1, &withdraw_msg(&["203.0.113.64/26", "198.51.100.0/24"]));
    assert_eq!(routes(&a), vec![withdraw("203.0.113.64/26")]);
    let s = h.speaker.session(1).unwrap();
    assert_eq!((s.adj_rib_in_len(), s.adj_rib_in_accepted()), (2, 1));
    // Detaching the policy removes everything, the session stays.
    let mut a = Vec::new();
    h.speaker.set_routing_policy(1, None, &mut a).unwrap();
    assert_eq!(routes(&a), vec![withdraw("203.0.113.0/24")]);
    assert_eq!(h.state(1), State::Established);
    assert_eq!(h.speaker.session(1).unwrap().adj_rib_in_accepted(), 0);
}

#[test]
fn export_filtered_by_prefix_filter_out() {
    let mut h = Harness::new();
    h.add(
        1,
        config("169.254.0.1", "169.254.0.2"),
        policy(
            &[],
            &["198.51.100.0/24"],
            &[
                "198.51.100.0/24",
                "198.51.100.128/25",
                "192.0.2.0/24",
                "2001:db8:100::/64",
            ],
        ),
    );
    let a = h.establish(1, 1, &peer_open(PEER_ASN, 90, AfiSafi::Ipv4Unicast));
    let updates: Vec<Update> = sent(&a, 1)
        .into_iter()
        .filter_map(|m| match m {
            Message::Update(u) => Some(u),
            _ => None,
        })
        .collect();
    assert_eq!(updates.len(), 1);
    assert_eq!(
        updates[0].nlri,
        vec![
            "198.51.100.0/24".parse().unwrap(),
            "198.51.100.128/25".parse().unwrap()
        ]
    );
    assert_eq!(
        updates[0].path_attributes,
        vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::sequence(vec![12876])),
            PathAttribute::NextHop(Ipv4Addr::new(169, 254, 0, 1)),
        ]
    );
    // The agent changes the VPC prefixes: one withdrawn, one added.
    let mut a = Vec::new();
    h.speaker
        .set_exported_prefixes(
            1,
            vec![net("198.51.100.0/24"), net("198.51.100.16/28")],
            &mut a,
        )
        .unwrap();
    let msgs = sent(&a, 1);
    assert_eq!(msgs.len(), 2);
    let Message::Update(w) = &msgs[0] else {
        panic!()
    };
    assert_eq!(
        w.withdrawn_routes,
        vec!["198.51.100.128/25".parse().unwrap()]
    );
    let Message::Update(n) = &msgs[1] else {
        panic!()
    };
    assert_eq!(n.nlri, vec!["198.51.100.16/28".parse().unwrap()]);
    // ROUTE-REFRESH from the peer: everything announced again.
    let rr = Message::RouteRefresh(RouteRefresh { afi: 1, safi: 1 }).encode(Codec::default());
    let msgs = sent(&h.recv(1, 1, &rr), 1);
    let Message::Update(u) = &msgs[0] else {
        panic!()
    };
    assert_eq!(u.nlri.len(), 2);
}

#[test]
fn route_propagation_toggle_keeps_the_session() {
    let mut h = Harness::new();
    h.add(
        1,
        config("169.254.0.1", "169.254.0.2"),
        policy(
            &["203.0.113.0/24"],
            &["198.51.100.0/24"],
            &["198.51.100.0/24"],
        ),
    );
    h.establish(1, 1, &peer_open(PEER_ASN, 90, AfiSafi::Ipv4Unicast));
    let a = h.recv(1, 1, &announce(&["203.0.113.0/24"], vec![PEER_ASN], vec![]));
    assert_eq!(
        routes(&a),
        vec![install("203.0.113.0/24", "169.254.0.2", 1)]
    );

    let mut a = Vec::new();
    h.speaker.set_route_propagation(1, false, &mut a).unwrap();
    assert_eq!(routes(&a), vec![withdraw("203.0.113.0/24")]);
    let Message::Update(u) = &sent(&a, 1)[0] else {
        panic!()
    };
    assert_eq!(u.withdrawn_routes, vec!["198.51.100.0/24".parse().unwrap()]);
    assert!(!closed(&a, 1));
    assert_eq!(h.state(1), State::Established);
    // While off, new routes are kept in Adj-RIB-In but not installed.
    let a = h.recv(
        1,
        1,
        &announce(&["203.0.113.128/25"], vec![PEER_ASN], vec![]),
    );
    assert!(routes(&a).is_empty());

    let mut a = Vec::new();
    h.speaker.set_route_propagation(1, true, &mut a).unwrap();
    let mut r = routes(&a);
    r.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(
        r,
        vec![
            install("203.0.113.0/24", "169.254.0.2", 1),
            install("203.0.113.128/25", "169.254.0.2", 1)
        ]
    );
    let Message::Update(u) = &sent(&a, 1)[0] else {
        panic!()
    };
    assert_eq!(u.nlri, vec!["198.51.100.0/24".parse().unwrap()]);
}

#[test]
fn communities_choose_the_path_across_sessions() {
    let mut h = Harness::new();
    let p = policy(&["203.0.113.0/24"], &[], &[]);
    h.add(1, config("169.254.0.1", "169.254.0.2"), p.clone());
    h.add(2, config("169.254.0.5", "169.254.0.6"), p);
    h.establish(1, 1, &peer_open(PEER_ASN, 90, AfiSafi::Ipv4Unicast));
    h.establish(2, 2, &peer_open(PEER_ASN, 90, AfiSafi::Ipv4Unicast));
    let a = h.recv(1, 1, &announce(&["203.0.113.0/24"], vec![PEER_ASN], vec![]));
    assert_eq!(
        routes(&a),
        vec![install("203.0.113.0/24", "169.254.0.2", 1)]
    );
    // Session 2 tags the route high (200 > 100) although its path is longer.
    let a = h.recv(
        2,
        2,
        &announce(
            &["203.0.113.0/24"],
            vec![PEER_ASN, 65010],
            vec![COMMUNITY_HIGH],
        ),
    );
    assert_eq!(
        routes(&a),
        vec![install("203.0.113.0/24", "169.254.0.2", 2)]
    );
    // Then low (50 < 100): back to session 1.
    let a = h.recv(
        2,
        2,
        &announce(&["203.0.113.0/24"], vec![PEER_ASN], vec![COMMUNITY_LOW]),
    );
    assert_eq!(
        routes(&a),
        vec![install("203.0.113.0/24", "169.254.0.2", 1)]
    );
    // Session 1 goes away: session 2's path is all that is left.
    let mut a = Vec::new();
    h.speaker.remove_session(1, h.now, &mut a).unwrap();
    assert_eq!(notification(&a, 1), Some(Notification::new(6, 2)));
    assert_eq!(
        routes(&a),
        vec![install("203.0.113.0/24", "169.254.0.2", 2)]
    );
}

#[test]
fn hold_timer_expiry_and_keepalives() {
    let mut h = Harness::new();
    h.add(
        1,
        config("169.254.0.1", "169.254.0.2"),
        policy(&["203.0.113.0/24"], &[], &[]),
    );
    let a = h.establish(1, 1, &peer_open(PEER_ASN, 90, AfiSafi::Ipv4Unicast));
    let ka = deadline(&a, Timer::Keepalive).unwrap();
    h.recv(1, 1, &announce(&["203.0.113.0/24"], vec![PEER_ASN], vec![]));
    h.now = ka;
    let a = h.input(1, Input::TimerExpired(Timer::Keepalive));
    assert_eq!(sent(&a, 1), vec![Message::Keepalive]);
    h.now += Duration::from_secs(9);
    let a = h.input(1, Input::TimerExpired(Timer::Hold));
    assert_eq!(notification(&a, 1), Some(Notification::new(4, 0)));
    assert!(closed(&a, 1));
    assert!(a.contains(&Action::SessionDown {
        session: 1,
        cause: Some(gateway_bgp::DownCause::Sent(Notification::new(4, 0)))
    }));
    assert_eq!(routes(&a), vec![withdraw("203.0.113.0/24")]);
    assert_eq!(h.state(1), State::Idle);
}

#[test]
fn peer_closing_withdraws_everything() {
    let mut h = Harness::new();
    h.add(
        1,
        config("169.254.0.1", "169.254.0.2"),
        policy(&["203.0.113.0/24"], &[], &[]),
    );
    h.establish(1, 1, &peer_open(PEER_ASN, 90, AfiSafi::Ipv4Unicast));
    h.recv(1, 1, &announce(&["203.0.113.0/24"], vec![PEER_ASN], vec![]));
    let a = h.recv(
        1,
        1,
        &Message::Notification(Notification::new(6, 2)).encode(Codec::default()),
    );
    assert_eq!(routes(&a), vec![withdraw("203.0.113.0/24")]);
    assert!(a.contains(&Action::SessionDown {
        session: 1,
        cause: Some(gateway_bgp::DownCause::Received(Notification::new(6, 2)))
    }));
    assert_eq!(
        h.speaker.session(1).unwrap().last_error(),
        Some(&Notification::new(6, 2))
    );
}

#[test]
fn maximum_prefix_ends_the_session() {
    let mut h = Harness::new();
    let mut c = config("169.254.0.1", "169.254.0.2");
    c.max_prefixes = Some(2);
    h.add(1, c, policy(&["0.0.0.0/0"], &[], &[]));
    h.establish(1, 1, &peer_open(PEER_ASN, 90, AfiSafi::Ipv4Unicast));
    let a = h.recv(
        1,
        1,
        &announce(
            &["203.0.113.0/25", "203.0.113.128/25"],
            vec![PEER_ASN],
            vec![],
        ),
    );
    assert_eq!(routes(&a).len(), 2);
    let a = h.recv(1, 1, &announce(&["203.0.113.0/24"], vec![PEER_ASN], vec![]));
    assert_eq!(
        notification(&a, 1),
        Some(Notification::with_data(6, 1, vec![0, 1, 1, 0, 0, 0, 2]))
    );
    assert!(closed(&a, 1));
    assert!(h.speaker.loc_rib().is_empty());
    assert_eq!(h.state(1), State::Idle);
}

#[test]
fn bad_routes_are_withdrawn_not_fatal() {
    let mut h = Harness::new();
    h.add(
        1,
        config("169.254.0.1", "169.254.0.2"),
        policy(&["203.0.113.0/24"], &[], &[]),
    );
    h.establish(1, 1, &peer_open(PEER_ASN, 90, AfiSafi::Ipv4Unicast));
    h.recv(1, 1, &announce(&["203.0.113.0/24"], vec![PEER_ASN], vec![]));
    // Our own ASN in the path: a loop, the route goes away.
    let a = h.recv(
        1,
        1,
        &announce(&["203.0.113.0/24"], vec![PEER_ASN, 12876], vec![]),
    );
    assert_eq!(routes(&a), vec![withdraw("203.0.113.0/24")]);
    h.recv(1, 1, &announce(&["203.0.113.0/24"], vec![PEER_ASN], vec![]));
    // First AS not the peer's.
    let a = h.recv(1, 1, &announce(&["203.0.113.0/24"], vec![65099], vec![]));
    assert_eq!(routes(&a), vec![withdraw("203.0.113.0/24")]);
    h.recv(1, 1, &announce(&["203.0.113.0/24"], vec![PEER_ASN], vec![]));
    // RFC 7606: an invalid ORIGIN means treat-as-withdraw, the session stays.
    let mut bad = announce(&["203.0.113.0/24"], vec![PEER_ASN], vec![]);
    // Header 19, withdrawn len 2, attr len 2, then ORIGIN flags/type/len/value.
    assert_eq!(&bad[23..27], &[0x40, 1, 1, 0]);
    bad[26] = 7;
    let a = h.recv(1, 1, &bad);
    assert_eq!(routes(&a), vec![withdraw("203.0.113.0/24")]);
    assert!(!closed(&a, 1));
    assert_eq!(h.state(1), State::Established);
}

#[test]
fn malformed_message_resets_with_notification() {
    let mut h = Harness::new();
    h.add(
        1,
        config("169.254.0.1", "169.254.0.2"),
        policy(&["203.0.113.0/24"], &[], &[]),
    );
    h.establish(1, 1, &peer_open(PEER_ASN, 90, AfiSafi::Ipv4Unicast));
    h.recv(1, 1, &announce(&["203.0.113.0/24"], vec![PEER_ASN], vec![]));
    // An NLRI prefix of length 40: Invalid Network Field.
    let mut bad = withdraw_msg(&[]);
    bad.extend_from_slice(&[40, 1, 2, 3, 4, 5]);
    let len = bad.len() as u16;
    bad[16..18].copy_from_slice(&len.to_be_bytes());
    let a = h.recv(1, 1, &bad);
    assert_eq!(notification(&a, 1), Some(Notification::new(3, 10)));
    assert!(closed(&a, 1));
    assert_eq!(routes(&a), vec![withdraw("203.0.113.0/24")]);
    // An OPEN in Established is an FSM error.
    let mut h = Harness::new();
    h.add(
        1,
        config("169.254.0.1", "169.254.0.2"),
        SessionPolicy::default(),
    );
    h.establish(1, 1, &peer_open(PEER_ASN, 90, AfiSafi::Ipv4Unicast));
    let a = h.recv(1, 1, &peer_open(PEER_ASN, 90, AfiSafi::Ipv4Unicast));
    assert_eq!(notification(&a, 1), Some(Notification::new(5, 3)));
}

#[test]
fn messages_split_across_reads() {
    let mut h = Harness::new();
    h.add(
        1,
        config("169.254.0.1", "169.254.0.2"),
        policy(&["203.0.113.0/24"], &[], &[]),
    );
    h.input(
        1,
        Input::TcpConnected {
            conn: 1,
            direction: Direction::Outgoing,
        },
    );
    let mut stream = peer_open(PEER_ASN, 90, AfiSafi::Ipv4Unicast);
    stream.extend(keepalive());
    stream.extend(announce(&["203.0.113.0/24"], vec![PEER_ASN], vec![]));
    let mut all = Vec::new();
    for byte in &stream {
        all.extend(h.recv(1, 1, std::slice::from_ref(byte)));
    }
    assert_eq!(h.state(1), State::Established);
    assert_eq!(
        routes(&all),
        vec![install("203.0.113.0/24", "169.254.0.2", 1)]
    );
}

#[test]
fn ipv6_session_uses_mp_reach() {
    let mut h = Harness::new();
    h.add(
        1,
        config("fd00::", "fd00::1"),
        policy(
            &["2001:db8:200::/48"],
            &["2001:db8:100::/48"],
            &["2001:db8:100::/64", "198.51.100.0/24"],
        ),
    );
    let a = h.establish(1, 1, &peer_open(PEER_ASN, 90, AfiSafi::Ipv6Unicast));
    let Message::Open(ours) = &sent(&a, 1)[0] else {
        panic!()
    };
    assert_eq!(ours.families(), vec![AfiSafi::Ipv6Unicast]);
    let Message::Update(u) = &sent(&a, 1)[2] else {
        panic!()
    };
    assert_eq!(
        u.path_attributes[0],
        PathAttribute::MpReachNlri(MpReachNlri {
            afi_safi: AfiSafi::Ipv6Unicast,
            next_hop: MpNextHop::Ipv6 {
                global: "fd00::".parse().unwrap(),
                link_local: None
            },
            nlri: vec![net("2001:db8:100::/64")],
        })
    );
    let update = Message::Update(Update {
        path_attributes: vec![
            PathAttribute::MpReachNlri(MpReachNlri {
                afi_safi: AfiSafi::Ipv6Unicast,
                next_hop: MpNextHop::Ipv6 {
                    global: "fd00::1".parse().unwrap(),
                    link_local: Some("fe80::1".parse().unwrap()),
                },
                nlri: vec![net("2001:db8:200::/48"), net("2001:db8:300::/48")],
            }),
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::sequence(vec![PEER_ASN])),
        ],
        ..Update::default()
    })
    .encode(Codec::default());
    let a = h.recv(1, 1, &update);
    assert_eq!(routes(&a), vec![install("2001:db8:200::/48", "fd00::1", 1)]);
}

#[test]
fn collision_keeps_the_connection_of_the_higher_identifier() {
    // Our identifier 169.254.0.1 is above the peer's 10.255.0.2, so the
    // connection we initiated survives (RFC 4271 §6.8).
    let mut h = Harness::new();
    h.add(
        1,
        config("169.254.0.1", "169.254.0.2"),
        SessionPolicy::default(),
    );
    h.input(
        1,
        Input::TcpConnected {
            conn: 1,
            direction: Direction::Outgoing,
        },
    );
    let a = h.input(
        1,
        Input::TcpConnected {
            conn: 2,
            direction: Direction::Incoming,
        },
    );
    assert!(matches!(sent(&a, 2)[..], [Message::Open(_)]));
    let a = h.recv(1, 2, &peer_open(PEER_ASN, 90, AfiSafi::Ipv4Unicast));
    assert_eq!(notification(&a, 2), Some(Notification::new(6, 7)));
    assert!(closed(&a, 2));
    assert_eq!(h.state(1), State::OpenSent);
    h.recv(1, 1, &peer_open(PEER_ASN, 90, AfiSafi::Ipv4Unicast));
    h.recv(1, 1, &keepalive());
    assert_eq!(h.state(1), State::Established);

    // With a peer identifier above ours, the peer's connection wins.
    let mut h = Harness::new();
    h.add(
        1,
        config("169.254.0.1", "169.254.0.2"),
        SessionPolicy::default(),
    );
    h.input(
        1,
        Input::TcpConnected {
            conn: 1,
            direction: Direction::Outgoing,
        },
    );
    h.input(
        1,
        Input::TcpConnected {
            conn: 2,
            direction: Direction::Incoming,
        },
    );
    let high = Message::Open(Open::new(
        PEER_ASN,
        90,
        Ipv4Addr::new(203, 0, 113, 1),
        &[AfiSafi::Ipv4Unicast],
    ))
    .encode(Codec::default());
    let a = h.recv(1, 2, &high);
    assert_eq!(notification(&a, 1), Some(Notification::new(6, 7)));
    assert!(closed(&a, 1));
    assert_eq!(sent(&a, 2), vec![Message::Keepalive]);
    assert_eq!(h.state(1), State::OpenConfirm);
    h.recv(1, 2, &keepalive());
    assert_eq!(h.state(1), State::Established);
    // A third connection while Established is refused.
    let a = h.input(
        1,
        Input::TcpConnected {
            conn: 3,
            direction: Direction::Incoming,
        },
    );
    assert!(closed(&a, 3));
}

/// Two speakers wired back to back over in-memory "connections".
#[test]
fn two_speakers_collide_then_exchange_routes() {
    let t0 = Instant::now();
    let mut now = t0;
    let mut sp = [Speaker::new(), Speaker::new()];
    let mut ca = SessionConfig::new(ip("169.254.0.1"), ip("169.254.0.2"), 65001);
    let mut cb = SessionConfig::new(ip("169.254.0.2"), ip("169.254.0.1"), 12876);
    cb.local_asn = 65001;
    ca.hold_time = 9;
    cb.hold_time = 9;
    let pa = policy(
        &["203.0.113.0/24"],
        &["198.51.100.0/24"],
        &["198.51.100.0/24"],
    );
    let pb = policy(
        &["198.51.100.0/24"],
        &["203.0.113.0/24"],
        &["203.0.113.0/24"],
    );
    let mut queue: VecDeque<(usize, Action)> = VecDeque::new();
    let mut a = Vec::new();
    sp[0].add_session(1, ca, pa, now, &mut a).unwrap();
    queue.extend(a.drain(..).map(|x| (0, x)));
    sp[1].add_session(1, cb, pb, now, &mut a).unwrap();
    queue.extend(a.drain(..).map(|x| (1, x)));

    // conn id -> (side, conn id on the other side)
    let mut wires: HashMap<(usize, u64), (usize, u64)> = HashMap::new();
    let mut timers: HashMap<(usize, Timer), Instant> = HashMap::new();
    let mut next_conn = 100;
    let mut installed: [Vec<RouteChange>; 2] = [vec![], vec![]];
    let mut ups = [0, 0];
    for _round in 0..200 {
        while let Some((side, action)) = queue.pop_front() {
            let other = 1 - side;
            let mut out = Vec::new();
            match action {
                Action::Connect { .. } => {
                    let (c_here, c_there) = (next_conn, next_conn + 1);
                    next_conn += 2;
                    wires.insert((side, c_here), (other, c_there));
                    wires.insert((other, c_there), (side, c_here));
                    sp[other]
                        .handle(
                            1,
                            Input::TcpConnected {
                                conn: c_there,
                                direction: Direction::Incoming,
                            },
                            now,
                            &mut out,
                        )
                        .unwrap();
                    queue.extend(out.drain(..).map(|x| (other, x)));
                    sp[side]
                        .handle(
                            1,
                            Input::TcpConnected {
                                conn: c_here,
                                direction: Direction::Outgoing,
                            },
                            now,
                            &mut out,
                        )
                        .unwrap();
                    queue.extend(out.drain(..).map(|x| (side, x)));
                }
                Action::Send { conn, bytes, .. } => {
                    if let Some(&(s, c)) = wires.get(&(side, conn)) {
                        sp[s]
                            .handle(
                                1,
                                Input::Received {
                                    conn: c,
                                    bytes: &bytes,
                                },
                                now,
                                &mut out,
                            )
                            .unwrap();
                        queue.extend(out.drain(..).map(|x| (s, x)));
                    }
                }
                Action::Close { conn, .. } => {
                    if let Some((s, c)) = wires.remove(&(side, conn)) {
                        wires.remove(&(s, c));
                        sp[s]
                            .handle(1, Input::TcpClosed { conn: c }, now, &mut out)
                            .unwrap();
                        queue.extend(out.drain(..).map(|x| (s, x)));
                    }
                }
                Action::ArmTimer {
                    timer, deadline, ..
                } => {
                    timers.insert((side, timer), deadline);
                }
                Action::StopTimer { timer, .. } => {
                    timers.remove(&(side, timer));
                }
                Action::SessionUp { .. } => ups[side] += 1,
                Action::SessionDown { .. } | Action::EndOfRib { .. } => {}
                Action::Route(r) => installed[side].push(r),
            }
        }
        if installed[0].len() == 1 && installed[1].len() == 1 {
            break;
        }
        // Advance to the next timer.
        let Some((&(side, timer), &d)) = timers.iter().min_by_key(|(_, d)| **d) else {
            break;
        };
        timers.remove(&(side, timer));
        now = now.max(d);
        let mut out = Vec::new();
        sp[side]
            .handle(1, Input::TimerExpired(timer), now, &mut out)
            .unwrap();
        queue.extend(out.drain(..).map(|x| (side, x)));
    }
    assert_eq!(sp[0].session(1).unwrap().state(), State::Established);
    assert_eq!(sp[1].session(1).unwrap().state(), State::Established);
    assert_eq!(ups, [1, 1]);
    // Only one TCP connection pair survived the collision.
    assert_eq!(wires.len(), 2);
    assert_eq!(
        installed[0],
        vec![install("203.0.113.0/24", "169.254.0.2", 1)]
    );
    assert_eq!(
        installed[1],
        vec![install("198.51.100.0/24", "169.254.0.1", 1)]
    );
    assert!(now < t0 + Duration::from_secs(60));
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_bytes_into_an_established_session_never_panic() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let valid = announce(&["203.0.113.0/24"], vec![PEER_ASN], vec![COMMUNITY_HIGH]);
    let mut h = Harness::new();
    let mut conn = 0;
    for i in 0..20_000u32 {
        if h.speaker
            .session(1)
            .is_none_or(|s| s.state() != State::Established)
        {
            h = Harness::new();
            h.add(
                1,
                config("169.254.0.1", "169.254.0.2"),
                policy(&["0.0.0.0/0"], &[], &[]),
            );
            conn += 1;
            h.establish(1, conn, &peer_open(PEER_ASN, 90, AfiSafi::Ipv4Unicast));
        }
        let bytes: Vec<u8> = if i % 2 == 0 {
            (0..rng.next() % 120).map(|_| rng.next() as u8).collect()
        } else {
            let mut v = valid.clone();
            let at = 18 + rng.next() as usize % (v.len() - 18);
            v[at] = rng.next() as u8;
            v
        };
        h.recv(1, conn, &bytes);
    }
}

#[test]
fn config_from_the_api_strings() {
    let c =
        SessionConfig::from_interconnect("169.254.0.1/30", "169.254.0.2/30", 12876, 4_200_000_001)
            .unwrap();
    assert_eq!(
        (c.local_addr, c.peer_addr),
        (ip("169.254.0.1"), ip("169.254.0.2"))
    );
    assert_eq!(
        (c.local_asn, c.peer_asn, c.port),
        (12876, 4_200_000_001, 179)
    );
    assert_eq!(c.router_id, Ipv4Addr::new(169, 254, 0, 1));
    let c = SessionConfig::from_interconnect("fd00::a/127", "fd00::b", 65000, 65001).unwrap();
    assert_eq!(c.family(), AfiSafi::Ipv6Unicast);
    assert_eq!(c.router_id, Ipv4Addr::new(0, 0, 0, 10));
    assert!(SessionConfig::from_interconnect("nope", "fd00::b", 1, 2).is_err());
}

#[test]
fn failed_connection_hands_over_to_the_other_one() {
    let mut h = Harness::new();
    h.add(
        1,
        config("169.254.0.1", "169.254.0.2"),
        SessionPolicy::default(),
    );
    h.input(
        1,
        Input::TcpConnected {
            conn: 1,
            direction: Direction::Outgoing,
        },
    );
    h.input(
        1,
        Input::TcpConnected {
            conn: 2,
            direction: Direction::Incoming,
        },
    );
    // The first connection dies before any OPEN: the second carries on.
    let a = h.input(1, Input::TcpClosed { conn: 1 });
    assert!(!closed(&a, 2));
    assert_eq!(h.state(1), State::OpenSent);
    h.recv(1, 2, &peer_open(PEER_ASN, 90, AfiSafi::Ipv4Unicast));
    let a = h.recv(1, 2, &keepalive());
    assert!(a.contains(&Action::SessionUp { session: 1 }));
    // Bytes on the dead connection are ignored.
    assert!(h.recv(1, 1, &keepalive()).is_empty());
}

/// UPDATE messages sent on `conn`.
fn updates(actions: &[Action], conn: u64) -> usize {
    sent(actions, conn)
        .iter()
        .filter(|m| matches!(m, Message::Update(_)))
        .count()
}

#[test]
fn route_refresh_stream_is_coalesced() {
    let mut h = Harness::new();
    let mut c = config("169.254.0.1", "169.254.0.2");
    c.route_refresh_interval = Duration::from_secs(5);
    h.add(
        1,
        c,
        policy(
            &["203.0.113.0/24"],
            &["198.51.100.0/24"],
            &["198.51.100.0/24"],
        ),
    );
    h.establish(1, 1, &peer_open(PEER_ASN, 90, AfiSafi::Ipv4Unicast));
    let rr = Message::RouteRefresh(RouteRefresh { afi: 1, safi: 1 }).encode(Codec::default());
    // The first refresh is answered at once.
    assert_eq!(updates(&h.recv(1, 1, &rr), 1), 1);
    // A stream of refreshes inside the interval: nothing sent, one answer
    // remembered for when the interval ends.
    let mut stream = Vec::new();
    for _ in 0..1000 {
        stream.extend_from_slice(&rr);
    }
    let a = h.recv(1, 1, &stream);
    assert_eq!(updates(&a, 1), 0);
    let due = deadline(&a, Timer::RouteRefresh).expect("refresh deferred to a timer");
    assert_eq!(due, h.now + Duration::from_secs(5));
    assert_eq!(
        a.iter()
            .filter(|x| matches!(
                x,
                Action::ArmTimer {
                    timer: Timer::RouteRefresh,
                    ..
                }
            ))
            .count(),
        1
    );
    // An early (stale) timer event does nothing.
    assert_eq!(
        updates(&h.input(1, Input::TimerExpired(Timer::RouteRefresh)), 1),
        0
    );
    // When it fires: one full answer, and nothing pending after it.
    h.now = due;
    let a = h.input(1, Input::TimerExpired(Timer::RouteRefresh));
    assert_eq!(updates(&a, 1), 1);
    h.now += Duration::from_secs(60);
    assert!(h
        .input(1, Input::TimerExpired(Timer::RouteRefresh))
        .is_empty());
    // After the interval a refresh is answered at once again.
    assert_eq!(updates(&h.recv(1, 1, &rr), 1), 1);
    assert_eq!(h.state(1), State::Established);
}

#[test]
fn full_send_queue_closes_with_cease_out_of_resources() {
    let mut h = Harness::new();
    h.add(
        1,
        config("169.254.0.1", "169.254.0.2"),
        policy(
            &["203.0.113.0/24"],
            &["198.51.100.0/24"],
            &["198.51.100.0/24"],
        ),
    );
    h.establish(1, 1, &peer_open(PEER_ASN, 90, AfiSafi::Ipv4Unicast));
    h.recv(1, 1, &announce(&["203.0.113.0/24"], vec![PEER_ASN], vec![]));
    let a = h.input(1, Input::SendQueueFull { conn: 1 });
    assert_eq!(
        notification(&a, 1),
        Some(Notification::new(6, 8)),
        "Cease / Out of Resources (RFC 4486)"
    );
    assert!(closed(&a, 1));
    assert_eq!(routes(&a), vec![withdraw("203.0.113.0/24")]);
    assert!(a.contains(&Action::SessionDown {
        session: 1,
        cause: Some(gateway_bgp::DownCause::Sent(Notification::new(6, 8)))
    }));
    assert_ne!(h.state(1), State::Established);
    // A stale report for a connection already let go of changes nothing.
    assert!(h.input(1, Input::SendQueueFull { conn: 1 }).is_empty());
}

fn peer_open_with_gr(family: AfiSafi) -> Vec<u8> {
    let mut open = Open::new(PEER_ASN, 30, Ipv4Addr::new(10, 255, 0, 2), &[family]);
    open.capabilities
        .push(Capability::GracefulRestart(GracefulRestart {
            restarting: false,
            restart_time: 120,
            families: vec![(family.afi(), family.safi(), false)],
        }));
    Message::Open(open).encode(Codec::default())
}

/// Graceful Restart (RFC 4724) as the restarting speaker: our OPEN
/// announces it (Restart State set when configured as just restarted,
/// forwarding preserved for our family), our initial routes end with an
/// End-of-RIB when the peer announced it too (an empty UPDATE for IPv4, an
/// empty MP_UNREACH_NLRI for IPv6), the session reports it negotiated, and
/// a later session of the same speaker no longer claims a restart.
#[test]
fn graceful_restart_is_announced_and_initial_routes_end_with_end_of_rib() {
    for (local, peer, family, exported) in [
        (
            "169.254.0.1",
            "169.254.0.2",
            AfiSafi::Ipv4Unicast,
            "198.51.100.0/24",
        ),
        (
            "fd00::a",
            "fd00::b",
            AfiSafi::Ipv6Unicast,
            "2001:db8:100::/48",
        ),
    ] {
        let mut h = Harness::new();
        let mut c = config(local, peer);
        c.graceful_restart = Some(120);
        c.restarting = true;
        h.add(1, c, policy(&[], &[exported], &[exported]));
        let a = h.input(
            1,
            Input::TcpConnected {
                conn: 7,
                direction: Direction::Outgoing,
            },
        );
        let Message::Open(open) = &sent(&a, 7)[0] else {
            panic!("OPEN expected")
        };
        assert_eq!(
            open.graceful_restart(),
            Some(&GracefulRestart {
                restarting: true,
                restart_time: 120,
                families: vec![(family.afi(), family.safi(), true)],
            })
        );
        let mut a = h.recv(1, 7, &peer_open_with_gr(family));
        a.extend(h.recv(1, 7, &keepalive()));
        assert_eq!(h.state(1), State::Established);
        assert!(h.speaker.session(1).unwrap().graceful_restart());
        let updates: Vec<Update> = sent(&a, 7)
            .into_iter()
            .filter_map(|m| match m {
                Message::Update(u) => Some(u),
                _ => None,
            })
            .collect();
        assert_eq!(updates.len(), 2, "{updates:?}");
        let eor = match family {
            AfiSafi::Ipv4Unicast => Update::default(),
            _ => Update {
                path_attributes: vec![PathAttribute::MpUnreachNlri(MpUnreachNlri {
                    afi_safi: family,
                    withdrawn: Vec::new(),
                })],
                ..Update::default()
            },
        };
        assert_eq!(updates[1], eor, "End-of-RIB last");
        // The peer's End-of-RIB is reported (stale routes kept across our
        // restart may go), and changes nothing else.
        let a = h.recv(1, 7, &Message::Update(eor.clone()).encode(Codec::default()));
        assert!(routes(&a).is_empty());
        assert!(
            a.iter()
                .any(|x| matches!(x, Action::EndOfRib { session: 1 })),
            "{a:?}"
        );
        assert_eq!(h.state(1), State::Established);
        // An UPDATE that withdraws something is not End-of-RIB.
        let not_eor = match family {
            AfiSafi::Ipv4Unicast => Update {
                withdrawn_routes: vec!["203.0.113.0/24".parse().unwrap()],
                ..Update::default()
            },
            _ => Update {
                path_attributes: vec![PathAttribute::MpUnreachNlri(MpUnreachNlri {
                    afi_safi: family,
                    withdrawn: vec!["2001:db8:200::/48".parse().unwrap()],
                })],
                ..Update::default()
            },
        };
        let a = h.recv(1, 7, &Message::Update(not_eor).encode(Codec::default()));
        assert!(!a.iter().any(|x| matches!(x, Action::EndOfRib { .. })));

        // The session drops and comes back: no restart claimed any more.
        h.input(1, Input::TcpClosed { conn: 7 });
        let a = h.input(
            1,
            Input::TcpConnected {
                conn: 8,
                direction: Direction::Incoming,
            },
        );
        let Message::Open(open) = &sent(&a, 8)[0] else {
            panic!("OPEN expected")
        };
        assert!(!open.graceful_restart().unwrap().restarting);
    }

    // A peer without the capability gets no End-of-RIB.
    let mut h = Harness::new();
    let mut c = config("169.254.0.1", "169.254.0.2");
    c.graceful_restart = Some(120);
    h.add(
        1,
        c,
        policy(&[], &["198.51.100.0/24"], &["198.51.100.0/24"]),
    );
    let a = h.establish(1, 7, &peer_open(PEER_ASN, 30, AfiSafi::Ipv4Unicast));
    assert!(!h.speaker.session(1).unwrap().graceful_restart());
    let updates = sent(&a, 7)
        .into_iter()
        .filter(|m| matches!(m, Message::Update(_)))
        .count();
    assert_eq!(updates, 1);
}

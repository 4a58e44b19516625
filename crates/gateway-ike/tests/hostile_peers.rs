//! Hostile peers against our IKE manager, in memory: a scripted peer
//! (`gateway_ike::testing`) completes IKE_SA_INIT with the crate's own
//! crypto, so it holds the IKE SA's SK keys, and then sends what an
//! attacker would. Without the PSK it must never get a CHILD SA, in
//! either role; with it (an authenticated but misbehaving peer) it must
//! not get one through a repeated IKE_AUTH or a malformed exchange; and a
//! half-open IKE SA, refused or expired, must never touch an established
//! one.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use gateway_ike::message::{exchange, Message};
use gateway_ike::payload::{notify, proto, DeletePayload, IdPayload, Payload, TrafficSelector};
use gateway_ike::testing::{
    child_sa_payloads, ike_auth_payloads, ike_rekey_payloads, ike_sa_init_request, sent_to,
    without_esn, ScriptedPeer,
};
use gateway_ike::{
    Action, ConnectionConfig, DownReason, EspCipher, Identity, IkeCipher, IkeManager, IkeSaId, Psk,
};

const US: &str = "192.0.2.1";
const THEM: &str = "192.0.2.2";
const PSK: &[u8] = b"the customer's pre-shared key";

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

fn ike() -> IkeCipher {
    IkeCipher::from_api("aes256gcm", Some("sha256"), Some("curve25519")).unwrap()
}

fn esp() -> Vec<EspCipher> {
    vec![EspCipher::from_api("aes256gcm", None, None).unwrap()]
}

fn any() -> Vec<TrafficSelector> {
    vec![TrafficSelector::any_v4(), TrafficSelector::any_v6()]
}

fn conn(initiate: bool) -> ConnectionConfig {
    let mut c = ConnectionConfig::new(
        "tun",
        US.parse().unwrap(),
        THEM.parse().unwrap(),
        Psk::new(PSK.to_vec()),
    );
    c.initiate = initiate;
    c.ike_ciphers = vec![ike()];
    c.esp_ciphers = esp();
    c
}

fn their_id() -> IdPayload {
    Identity::Addr(THEM.parse::<IpAddr>().unwrap()).to_payload()
}

fn installs(acts: &[Action]) -> usize {
    acts.iter()
        .filter(|a| matches!(a, Action::InstallChildSa(_)))
        .count()
}

fn downs(acts: &[Action]) -> usize {
    acts.iter()
        .filter(|a| matches!(a, Action::IkeSaDown { .. }))
        .count()
}

fn children(mgr: &IkeManager) -> usize {
    mgr.ike_sas().map(|s| s.children().len()).sum()
}

/// Our responder and what it emitted so far.
struct Responder {
    mgr: IkeManager,
    now: Instant,
    log: Vec<Action>,
}

impl Responder {
    fn new() -> Self {
        let now = Instant::now();
        let mut mgr = IkeManager::new();
        let log = mgr.add_connection(conn(false), now);
        Self { mgr, now, log }
    }

    /// Feeds a datagram from the customer gateway's address; returns what
    /// we sent back.
    fn feed(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let acts = self
            .mgr
            .handle_datagram(bytes, sock(THEM, 500), sock(US, 500), self.now);
        let out = sent_to(&acts, sock(THEM, 500));
        self.log.extend(acts);
        out
    }

    /// A scripted initiator that completed IKE_SA_INIT with us.
    fn half_open(&mut self, spi_i: u64) -> ScriptedPeer {
        let (mut peer, init) = ScriptedPeer::initiate(ike(), spi_i);
        let resp = self.feed(&init);
        peer.complete_init(&resp[0]).expect("IKE_SA_INIT response");
        peer
    }

    /// A scripted initiator that knows the PSK and is established.
    fn established(&mut self, spi_i: u64) -> ScriptedPeer {
        self.established_with(spi_i, true, |p| p)
    }

    /// The same, with or without INITIAL_CONTACT, and `edit` applied to
    /// the IKE_AUTH payloads.
    fn established_with(
        &mut self,
        spi_i: u64,
        initial_contact: bool,
        edit: impl Fn(Payload) -> Payload,
    ) -> ScriptedPeer {
        let installs_before = installs(&self.log);
        let peer = self.half_open(spi_i);
        let payloads =
            ike_auth_payloads(&peer, PSK, their_id(), &esp(), 0x1111_1111, initial_contact)
                .into_iter()
                .map(edit)
                .collect();
        let auth = peer.seal(exchange::IKE_AUTH, false, 1, payloads);
        let resp = self.feed(&auth);
        let m = peer.open(&resp[0]).expect("IKE_AUTH response");
        assert!(
            m.payloads.iter().any(|p| matches!(p, Payload::Auth(_))),
            "{m:?}"
        );
        assert_eq!(installs(&self.log), installs_before + 1);
        peer
    }
}

fn create_child(peer: &ScriptedPeer, msg_id: u32, nonce_len: usize) -> Vec<u8> {
    peer.seal(
        exchange::CREATE_CHILD_SA,
        false,
        msg_id,
        child_sa_payloads(&esp(), 0x2222_2222, Some(vec![7; nonce_len]), any(), any()),
    )
}

fn delete_ike(peer: &ScriptedPeer, msg_id: u32, response: bool) -> Vec<u8> {
    peer.seal(
        exchange::INFORMATIONAL,
        response,
        msg_id,
        vec![Payload::Delete(DeletePayload {
            protocol: proto::IKE,
            spi_size: 0,
            spis: Vec::new(),
        })],
    )
}

#[test]
fn initiator_without_the_psk_gets_no_child_sa_from_our_responder() {
    let mut r = Responder::new();
    let peer = r.half_open(0xbad0_0001);
    // Everything but IKE_AUTH at message ID 1, before IKE_AUTH: ignored,
    // unanswered, the half-open SA untouched.
    for (what, bytes) in [
        ("CREATE_CHILD_SA", create_child(&peer, 1, 32)),
        ("INFORMATIONAL with a Delete", delete_ike(&peer, 1, false)),
        (
            "INFORMATIONAL (DPD)",
            peer.seal(exchange::INFORMATIONAL, false, 1, Vec::new()),
        ),
        (
            "CREATE_CHILD_SA at message ID 2",
            create_child(&peer, 2, 32),
        ),
    ] {
        let sent = r.feed(&bytes);
        assert!(sent.is_empty(), "{what} answered before IKE_AUTH");
        assert_eq!(installs(&r.log), 0, "{what} installed a CHILD SA");
        assert_eq!(children(&r.mgr), 0, "{what}");
        assert_eq!(
            r.mgr.ike_sas().count(),
            1,
            "{what} removed the half-open SA"
        );
    }
    // A tampered IKE_AUTH (even with the right PSK) is not authentic.
    let auth = peer.seal(
        exchange::IKE_AUTH,
        false,
        1,
        ike_auth_payloads(&peer, PSK, their_id(), &esp(), 0x1111_1111, true),
    );
    let mut tampered = auth.clone();
    let n = tampered.len();
    tampered[n - 3] ^= 0x40;
    assert!(r.feed(&tampered).is_empty());
    assert_eq!(installs(&r.log), 0);
    // IKE_AUTH with a guessed PSK: AUTHENTICATION_FAILED, nothing installed.
    let guess = peer.seal(
        exchange::IKE_AUTH,
        false,
        1,
        ike_auth_payloads(&peer, b"a guess", their_id(), &esp(), 0x1111_1111, true),
    );
    let resp = r.feed(&guess);
    let m = peer.open(&resp[0]).expect("IKE_AUTH response");
    assert!(m.notify(notify::AUTHENTICATION_FAILED).is_some(), "{m:?}");
    assert_eq!(installs(&r.log), 0);
    assert!(!r.log.iter().any(|a| matches!(a, Action::IkeSaUp { .. })));
    assert_eq!(r.mgr.ike_sas().count(), 0);
}

#[test]
fn a_second_ike_auth_after_establishment_is_refused() {
    let mut r = Responder::new();
    let peer = r.established(0xbad0_0002);
    let ups = |log: &[Action]| {
        log.iter()
            .filter(|a| matches!(a, Action::IkeSaUp { .. }))
            .count()
    };
    assert_eq!(ups(&r.log), 1);
    // The same IKE_AUTH again with the next message ID: it would derive the
    // same CHILD keys from the same nonces (AEAD nonce reuse).
    let again = peer.seal(
        exchange::IKE_AUTH,
        false,
        2,
        ike_auth_payloads(&peer, PSK, their_id(), &esp(), 0x3333_3333, true),
    );
    let resp = r.feed(&again);
    assert_eq!(
        installs(&r.log),
        1,
        "a second IKE_AUTH installed a CHILD SA"
    );
    assert_eq!(ups(&r.log), 1);
    assert_eq!(downs(&r.log), 0);
    assert_eq!(children(&r.mgr), 1);
    // Authentic but out of place: refused with an error notify, and the
    // message-ID window moves on (the next request is served).
    let m = peer.open(&resp[0]).expect("a response");
    assert!(m.notifies().any(|n| n.is_error()), "{m:?}");
    let dpd = peer.seal(exchange::INFORMATIONAL, false, 3, Vec::new());
    assert_eq!(r.feed(&dpd).len(), 1);
}

#[test]
fn tampered_and_replayed_messages_create_nothing() {
    let mut r = Responder::new();
    let peer = r.established(0xbad0_0003);
    let auth_again = peer.seal(
        exchange::IKE_AUTH,
        false,
        1,
        ike_auth_payloads(&peer, PSK, their_id(), &esp(), 0x1111_1111, true),
    );
    // A replayed IKE_AUTH (message ID 1, already answered): the cached
    // response at most, nothing processed again.
    r.feed(&auth_again);
    assert_eq!(installs(&r.log), 1);
    let req = create_child(&peer, 2, 32);
    for pos in [20, 30, req.len() / 2, req.len() - 1] {
        let mut bad = req.clone();
        bad[pos] ^= 0x01;
        assert!(r.feed(&bad).is_empty(), "tampered at {pos} answered");
    }
    assert_eq!(installs(&r.log), 1);
    assert_eq!(r.feed(&req).len(), 1);
    assert_eq!(installs(&r.log), 2, "the authentic request is served");
    // Replays of it: the cached response, no second CHILD SA.
    for _ in 0..3 {
        assert_eq!(r.feed(&req).len(), 1);
    }
    assert_eq!(installs(&r.log), 2);
    assert_eq!(children(&r.mgr), 2);
    assert_eq!(downs(&r.log), 0);
}

#[test]
fn create_child_sa_nonces_outside_16_to_256_bytes_are_refused() {
    let mut r = Responder::new();
    let peer = r.established(0xbad0_0004);
    for (id, len) in [(2u32, 8usize), (3, 15), (4, 257), (5, 1000)] {
        let resp = r.feed(&create_child(&peer, id, len));
        let m = peer.open(&resp[0]).expect("a response");
        assert!(
            m.notify(notify::INVALID_SYNTAX).is_some(),
            "nonce of {len} bytes: {m:?}"
        );
        assert_eq!(installs(&r.log), 1, "nonce of {len} bytes accepted");
    }
    for (id, len) in [(6u32, 16usize), (7, 256)] {
        r.feed(&create_child(&peer, id, len));
    }
    assert_eq!(installs(&r.log), 3, "16 and 256 bytes are valid");
    // The same for an IKE rekey: no new IKE SA from a short nonce.
    let rekey = peer.seal(
        exchange::CREATE_CHILD_SA,
        false,
        8,
        ike_rekey_payloads(ike(), 0x5555_5555_5555_5555, vec![1; 8]),
    );
    let m = peer.open(&r.feed(&rekey)[0]).expect("a response");
    assert!(m.notify(notify::INVALID_SYNTAX).is_some(), "{m:?}");
    let ups = r
        .log
        .iter()
        .filter(|a| matches!(a, Action::IkeSaUp { .. }))
        .count();
    assert_eq!(ups, 1, "a rekey with an 8-byte nonce was accepted");
    let rekey = peer.seal(
        exchange::CREATE_CHILD_SA,
        false,
        9,
        ike_rekey_payloads(ike(), 0x5555_5555_5555_5555, vec![1; 32]),
    );
    r.feed(&rekey);
    assert!(
        r.log.iter().any(|a| matches!(
            a,
            Action::IkeSaUp {
                rekey_of: Some(_),
                ..
            }
        )),
        "a valid IKE rekey is accepted"
    );
}

/// Our initiator against a man in the middle that answers IKE_SA_INIT
/// itself (so it has the SK keys) but does not know the PSK.
#[test]
fn responder_without_the_psk_gets_no_child_sa_from_our_initiator() {
    let now = Instant::now();
    let mut mgr = IkeManager::new();
    let mut log = mgr.add_connection(conn(true), now);
    let init = sent_to(&log, sock(THEM, 500));
    let (mitm, resp) = ScriptedPeer::respond(ike(), &init[0], 0x0abc_def0).unwrap();
    let acts = mgr.handle_datagram(&resp, sock(THEM, 500), sock(US, 500), now);
    let auth_req = sent_to(&acts, sock(THEM, 500));
    log.extend(acts);
    let m = mitm.open(&auth_req[0]).expect("our IKE_AUTH request");
    assert_eq!(m.exchange, exchange::IKE_AUTH);
    let mut feed = |bytes: &[u8], now: Instant, log: &mut Vec<Action>| {
        let acts = mgr.handle_datagram(bytes, sock(THEM, 500), sock(US, 500), now);
        let n = sent_to(&acts, sock(THEM, 500))
            .iter()
            .filter(|b| b[18] != exchange::IKE_AUTH)
            .count();
        log.extend(acts);
        n
    };
    // Requests from the responder before IKE_AUTH completed: ignored.
    let requests = [
        (
            "CREATE_CHILD_SA",
            mitm.seal(
                exchange::CREATE_CHILD_SA,
                false,
                0,
                child_sa_payloads(&esp(), 0x4444_4444, Some(vec![9; 32]), any(), any()),
            ),
        ),
        ("INFORMATIONAL with a Delete", delete_ike(&mitm, 0, false)),
    ];
    for (what, bytes) in &requests {
        assert_eq!(feed(bytes, now, &mut log), 0, "{what} answered");
        assert_eq!(installs(&log), 0, "{what} installed a CHILD SA");
        assert_eq!(downs(&log), 0, "{what}");
    }
    // A response of another exchange type with IKE_AUTH's message ID.
    let wrong_type = mitm.seal(
        exchange::CREATE_CHILD_SA,
        true,
        1,
        child_sa_payloads(&esp(), 0x4444_4444, Some(vec![9; 32]), any(), any()),
    );
    feed(&wrong_type, now, &mut log);
    assert_eq!(installs(&log), 0);
    // An IKE_AUTH response with a CHILD SA but an AUTH made up without
    // the PSK: refused, nothing installed, never up.
    let id = Identity::Addr(THEM.parse::<IpAddr>().unwrap()).to_payload();
    let mut payloads = vec![
        Payload::IdR(id.clone()),
        Payload::Auth(mitm.auth(b"not the psk", &id)),
    ];
    payloads.push(Payload::Sa(
        child_sa_payloads(&esp(), 0x4444_4444, None, any(), any())
            .into_iter()
            .next()
            .map(|p| match p {
                Payload::Sa(mut props) => {
                    props.truncate(1);
                    props
                }
                _ => unreachable!(),
            })
            .unwrap(),
    ));
    payloads.push(Payload::TsI(any()));
    payloads.push(Payload::TsR(any()));
    feed(
        &mitm.seal(exchange::IKE_AUTH, true, 1, payloads),
        now,
        &mut log,
    );
    assert_eq!(installs(&log), 0);
    assert!(!log.iter().any(|a| matches!(a, Action::IkeSaUp { .. })));
    // Our own attempt failed: reported as such (the agent tries again
    // later), never as an established IKE SA going down.
    assert_eq!(downs(&log), 0);
    assert!(
        log.iter().any(|a| matches!(
            a,
            Action::IkeSaFailed {
                initiator: true,
                reason: DownReason::AuthenticationFailed,
                ..
            }
        )),
        "{log:?}"
    );
}

/// With a tunnel up, an IKE_SA_INIT from the customer gateway's address
/// (spoofable: no reply is needed) that we refuse, and one that is left
/// half-open until it expires, must leave the established IKE SA and its
/// CHILD SA alone and report nothing as down.
#[test]
fn refused_or_expired_half_open_sas_leave_the_tunnel_alone() {
    let mut r = Responder::new();
    let _peer = r.established(0xbad0_0005);
    let tunnel: IkeSaId = r.mgr.ike_sas().next().unwrap().id();
    let before = r.log.len();
    // A proposal we do not accept: NO_PROPOSAL_CHOSEN.
    let other = IkeCipher::from_api("aes128", Some("sha256"), Some("modp2048")).unwrap();
    let (_, init) = ScriptedPeer::initiate(other, 0xbad0_0006);
    let resp = r.feed(&init);
    let m = Message::decode(&resp[0]).unwrap();
    assert!(m.notify(notify::NO_PROPOSAL_CHOSEN).is_some(), "{m:?}");
    // One we accept, then silence until the half-open timeout.
    let (_, init) = ScriptedPeer::initiate(ike(), 0xbad0_0007);
    assert_eq!(r.feed(&init).len(), 1);
    assert_eq!(r.mgr.ike_sas().count(), 2);
    r.now += Duration::from_secs(31);
    for sa in r.mgr.ike_sas().map(|s| s.my_spi()).collect::<Vec<_>>() {
        let acts = r.mgr.handle_timer(gateway_ike::TimerId(sa), r.now);
        r.log.extend(acts);
    }
    assert_eq!(r.mgr.ike_sas().count(), 1, "the half-open SA expired");
    let after = &r.log[before..];
    assert_eq!(
        downs(after),
        0,
        "a half-open failure reported as down: {after:?}"
    );
    assert!(
        !after
            .iter()
            .any(|a| matches!(a, Action::RemoveChildSa { .. })),
        "{after:?}"
    );
    assert_eq!(children(&r.mgr), 1);
    // Both are reported as failures of half-open SAs the peer started,
    // each naming its own IKE SA, never the tunnel's.
    let failed: Vec<IkeSaId> = after
        .iter()
        .filter_map(|a| match a {
            Action::IkeSaFailed {
                ike,
                initiator: false,
                ..
            } => Some(*ike),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 2, "{after:?}");
    assert!(!failed.contains(&tunnel));
    assert_eq!(r.mgr.ike_sas().next().unwrap().id(), tunnel);
}

fn last_install(log: &[Action]) -> &gateway_ike::ChildSaInstall {
    log.iter()
        .rev()
        .find_map(|a| match a {
            Action::InstallChildSa(c) => Some(c),
            _ => None,
        })
        .expect("an install")
}

#[test]
fn a_peer_without_esn_is_accepted_without_it() {
    let mut r = Responder::new();
    r.established_with(0x0e5e_0001, true, without_esn);
    assert!(!last_install(&r.log).esn);
    // The same peer offering both (what we propose ourselves): ESN.
    r.established_with(0x0e5e_0002, true, |p| p);
    assert!(last_install(&r.log).esn);
}

#[test]
fn half_open_sas_per_address_need_a_cookie_then_stop() {
    let mut r = Responder::new();
    let mut other = ConnectionConfig::new(
        "other",
        US.parse().unwrap(),
        "192.0.2.3".parse().unwrap(),
        Psk::new(PSK.to_vec()),
    );
    other.initiate = false;
    other.ike_ciphers = vec![ike()];
    let acts = r.mgr.add_connection(other, r.now);
    r.log.extend(acts);
    let limits = r.mgr.limits().clone();
    assert_eq!(
        (
            limits.cookie_threshold_per_addr,
            limits.max_half_open_per_addr
        ),
        (2, 4)
    );
    let req = |spi: u64| ike_sa_init_request(ike(), spi, vec![9; 32], vec![spi as u8; 32]);
    let with_cookie = |spi: u64, cookie: &[u8]| {
        let mut m = Message::decode(&req(spi)).unwrap();
        m.payloads.insert(
            0,
            Payload::Notify(gateway_ike::payload::NotifyPayload::new(
                notify::COOKIE,
                cookie.to_vec(),
            )),
        );
        m.encode_plain()
    };
    let cookie_of = |resp: &[u8]| {
        let m = Message::decode(resp).unwrap();
        m.notify(notify::COOKIE).map(|n| n.data.clone())
    };
    // Two from the customer gateway's address: plain half-open SAs.
    for spi in [1u64, 2] {
        let resp = r.feed(&req(spi));
        assert!(cookie_of(&resp[0]).is_none());
    }
    assert_eq!(r.mgr.ike_sas().count(), 2);
    // The third must return a COOKIE: no state until it does.
    let resp = r.feed(&req(3));
    let cookie = cookie_of(&resp[0]).expect("a COOKIE challenge");
    assert_eq!(r.mgr.ike_sas().count(), 2);
    let resp = r.feed(&with_cookie(3, &cookie));
    assert!(cookie_of(&resp[0]).is_none(), "the COOKIE was accepted");
    assert_eq!(r.mgr.ike_sas().count(), 3);
    // A wrong COOKIE is challenged again.
    let resp = r.feed(&with_cookie(4, &cookie));
    let c4 = cookie_of(&resp[0]).expect("challenged again");
    r.feed(&with_cookie(4, &c4));
    assert_eq!(r.mgr.ike_sas().count(), 4);
    // At the cap, even a valid COOKIE gets nothing, and it is counted.
    let resp = r.feed(&req(5));
    assert!(resp.is_empty());
    assert_eq!(r.mgr.ike_sas().count(), 4);
    assert_eq!(r.mgr.counters().half_open_per_addr_dropped, 1);
    // Another address is not affected.
    let acts = r
        .mgr
        .handle_datagram(&req(6), sock("192.0.2.3", 500), sock(US, 500), r.now);
    let resp = sent_to(&acts, sock("192.0.2.3", 500));
    assert!(cookie_of(&resp[0]).is_none());
    assert_eq!(r.mgr.ike_sas().count(), 5);
    assert!(r.mgr.counters().cookies_sent >= 2);
    // The half-open SAs expire and the address is free again.
    r.now += Duration::from_secs(31);
    for sa in r.mgr.ike_sas().map(|s| s.my_spi()).collect::<Vec<_>>() {
        let acts = r.mgr.handle_timer(gateway_ike::TimerId(sa), r.now);
        r.log.extend(acts);
    }
    assert_eq!(r.mgr.ike_sas().count(), 0);
    assert!(cookie_of(&r.feed(&req(7))[0]).is_none());
}

#[test]
fn the_cookie_secret_rotates_and_the_previous_one_stays_valid() {
    let mut r = Responder::new();
    let mut limits = r.mgr.limits().clone();
    limits.cookie_threshold = 0;
    limits.cookie_rotation = Duration::from_secs(60);
    r.mgr.set_limits(limits);
    let req = |spi: u64| ike_sa_init_request(ike(), spi, vec![9; 32], vec![spi as u8; 32]);
    let with_cookie = |spi: u64, cookie: &[u8]| {
        let mut m = Message::decode(&req(spi)).unwrap();
        m.payloads.insert(
            0,
            Payload::Notify(gateway_ike::payload::NotifyPayload::new(
                notify::COOKIE,
                cookie.to_vec(),
            )),
        );
        m.encode_plain()
    };
    let cookie_of = |resp: &[u8]| {
        Message::decode(resp)
            .unwrap()
            .notify(notify::COOKIE)
            .map(|n| n.data.clone())
    };
    let c1 = cookie_of(&r.feed(&req(1))[0]).expect("challenge");
    let c2 = cookie_of(&r.feed(&req(2))[0]).expect("challenge");
    // One rotation later, a COOKIE of the previous secret still works...
    r.now += Duration::from_secs(61);
    let c3 = cookie_of(&r.feed(&req(3))[0]).expect("challenge");
    assert_ne!(c3[0], c1[0], "a new secret, with a new version");
    assert!(cookie_of(&r.feed(&with_cookie(1, &c1))[0]).is_none());
    assert_eq!(r.mgr.ike_sas().count(), 1);
    // ...two rotations later it does not: challenged anew.
    r.now += Duration::from_secs(61);
    assert!(cookie_of(&r.feed(&with_cookie(2, &c2))[0]).is_some());
    assert_eq!(r.mgr.ike_sas().count(), 1);
    // The one handed out after the first rotation is still good.
    assert!(cookie_of(&r.feed(&with_cookie(3, &c3))[0]).is_none());
    assert_eq!(r.mgr.ike_sas().count(), 2);
}

#[test]
fn established_sas_per_connection_are_capped() {
    let mut r = Responder::new();
    let mut first = None;
    for spi in [0x0c0c_0001u64, 0x0c0c_0002, 0x0c0c_0003] {
        // Without INITIAL_CONTACT: a peer that keeps adding IKE SAs.
        r.established_with(spi, false, |p| p);
        first = first.or_else(|| r.mgr.ike_sas().next().map(|s| s.id()));
        r.now += Duration::from_secs(1);
    }
    assert_eq!(r.mgr.ike_sas().count(), 2, "two at most per connection");
    assert_eq!(r.mgr.counters().replaced_over_limit, 1);
    // The oldest went, its CHILD SA with it, as an IKE SA down (it was
    // established) replaced by a newer one.
    assert!(r.mgr.ike_sas().all(|s| s.children().len() == 1));
    assert!(r.mgr.ike_sas().all(|s| Some(s.id()) != first));
    let down: Vec<&Action> = r
        .log
        .iter()
        .filter(|a| matches!(a, Action::IkeSaDown { .. }))
        .collect();
    assert_eq!(down.len(), 1, "{down:?}");
    assert!(matches!(
        down[0],
        Action::IkeSaDown {
            ike,
            reason: DownReason::Replaced,
            ..
        } if Some(*ike) == first
    ));
    assert_eq!(
        r.log
            .iter()
            .filter(|a| matches!(a, Action::RemoveChildSa { .. }))
            .count(),
        1
    );
}

#[test]
fn the_ike_sa_cap_drops_new_initiations() {
    let mut r = Responder::new();
    let mut limits = r.mgr.limits().clone();
    limits.max_ike_sas = 1;
    r.mgr.set_limits(limits);
    r.half_open(0x0d0d_0001);
    let (_, init) = ScriptedPeer::initiate(ike(), 0x0d0d_0002);
    assert!(r.feed(&init).is_empty());
    assert_eq!(r.mgr.counters().ike_sa_limit_dropped, 1);
}

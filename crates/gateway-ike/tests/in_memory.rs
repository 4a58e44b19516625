//! Two in-memory peers (our initiator and our responder) exchanging
//! datagrams through a simulated network with a simulated clock, asserting
//! on the actions (strongSwan's tests/suites style).

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use gateway_ike::payload::TrafficSelector;
use gateway_ike::{
    Action, ChildSaInstall, ConnectionConfig, DownReason, DpdAction, EspCipher, IkeCipher,
    IkeManager, Psk, TimerId,
};

const A: &str = "192.0.2.1";
const B: &str = "192.0.2.2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Peer {
    mgr: IkeManager,
    addr: IpAddr,
    timers: BTreeMap<TimerId, Instant>,
    installs: Vec<ChildSaInstall>,
    removes: Vec<(u32, u32)>,
    ups: usize,
    downs: Vec<DownReason>,
    logs: Vec<String>,
}

impl Peer {
    fn new(addr: &str) -> Self {
        Self {
            mgr: IkeManager::new(),
            addr: ip(addr),
            timers: BTreeMap::new(),
            installs: Vec::new(),
            removes: Vec::new(),
            ups: 0,
            downs: Vec::new(),
            logs: Vec::new(),
        }
    }
}

struct Datagram {
    bytes: Vec<u8>,
    from: SocketAddr,
    to: SocketAddr,
}

/// Decides the fate of the n-th datagram sent: deliver (true) or drop.
type Filter = Box<dyn FnMut(usize, &Datagram) -> bool>;

struct Net {
    peers: [Peer; 2],
    now: Instant,
    wire: VecDeque<Datagram>,
    sent: Vec<Datagram>,
    filter: Filter,
    duplicate: bool,
}

impl Net {
    fn new() -> Self {
        Self {
            peers: [Peer::new(A), Peer::new(B)],
            now: Instant::now(),
            wire: VecDeque::new(),
            sent: Vec::new(),
            filter: Box::new(|_, _| true),
            duplicate: false,
        }
    }

    fn absorb(&mut self, who: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { bytes, from, to } => {
                    assert_eq!(from.ip(), self.peers[who].addr);
                    let d = Datagram { bytes, from, to };
                    let n = self.sent.len();
                    self.sent.push(Datagram {
                        bytes: d.bytes.clone(),
                        from,
                        to,
                    });
                    if (self.filter)(n, &d) {
                        if self.duplicate {
                            self.wire.push_back(Datagram {
                                bytes: d.bytes.clone(),
                                from,
                                to,
                            });
                        }
                        self.wire.push_back(d);
                    }
                }
                Action::ArmTimer { id, at } => {
                    self.peers[who].timers.insert(id, at);
                }
                Action::InstallChildSa(c) => self.peers[who].installs.push(c),
                Action::RemoveChildSa {
                    spi_in, spi_out, ..
                } => self.peers[who].removes.push((spi_in, spi_out)),
                Action::IkeSaUp { .. } => self.peers[who].ups += 1,
                Action::IkeSaDown { reason, .. } => self.peers[who].downs.push(reason),
                Action::Log { message, .. } => self.peers[who].logs.push(message),
            }
        }
    }

    /// Delivers datagrams until the wire is empty (bounded).
    fn run(&mut self) {
        for _ in 0..1000 {
            let Some(d) = self.wire.pop_front() else {
                return;
            };
            let who = if d.to.ip() == self.peers[0].addr {
                0
            } else {
                1
            };
            let acts = self.peers[who]
                .mgr
                .handle_datagram(&d.bytes, d.from, d.to, self.now);
            self.absorb(who, acts);
        }
        panic!("message storm");
    }

    /// Advances the clock step by step, firing due timers.
    fn advance(&mut self, total: Duration) {
        let end = self.now + total;
        for _ in 0..10_000 {
            let next = self
                .peers
                .iter()
                .enumerate()
                .flat_map(|(i, p)| p.timers.iter().map(move |(id, at)| (*at, i, *id)))
                .filter(|(at, _, _)| *at <= end)
                .min();
            let Some((at, who, id)) = next else {
                self.now = end;
                return;
            };
            self.now = self.now.max(at);
            self.peers[who].timers.remove(&id);
            let acts = self.peers[who].mgr.handle_timer(id, self.now);
            self.absorb(who, acts);
            self.run();
        }
        panic!("timer storm");
    }

    fn start(&mut self, a: ConnectionConfig, b: ConnectionConfig) {
        let acts = self.peers[1].mgr.add_connection(b, self.now);
        self.absorb(1, acts);
        let acts = self.peers[0].mgr.add_connection(a, self.now);
        self.absorb(0, acts);
        self.run();
    }
}

fn cfgs(psk_a: &[u8], psk_b: &[u8]) -> (ConnectionConfig, ConnectionConfig) {
    let mut a = ConnectionConfig::new("tun-a", ip(A), ip(B), Psk::new(psk_a.to_vec()));
    let mut b = ConnectionConfig::new("tun-b", ip(B), ip(A), Psk::new(psk_b.to_vec()));
    b.initiate = false;
    a.initiate = true;
    (a, b)
}

fn suite(encr: &str, integ: &str, dh: &str) -> (Vec<IkeCipher>, Vec<EspCipher>) {
    let ike = IkeCipher::from_api(encr, Some(integ), Some(dh)).unwrap();
    let esp = if encr.contains("gcm") || encr.starts_with("chacha") {
        EspCipher::from_api(encr, None, None).unwrap()
    } else {
        EspCipher::from_api(encr, Some(integ), None).unwrap()
    };
    (vec![ike], vec![esp])
}

fn assert_pair(a: &ChildSaInstall, b: &ChildSaInstall) {
    assert_eq!(a.spi_in, b.spi_out);
    assert_eq!(a.spi_out, b.spi_in);
    assert_eq!(a.encryption, b.encryption);
    assert_eq!(a.integrity, b.integrity);
    assert_eq!(*a.keys_in.encryption_key, *b.keys_out.encryption_key);
    assert_eq!(*a.keys_out.encryption_key, *b.keys_in.encryption_key);
    assert_eq!(*a.keys_in.integrity_key, *b.keys_out.integrity_key);
    assert_ne!(*a.keys_in.encryption_key, *a.keys_out.encryption_key);
}

#[test]
fn all_suites_establish_in_both_roles() {
    let suites = [
        ("aes256gcm", "sha384", "ecp384", 36, 0),
        ("aes128gcm", "sha256", "modp2048", 20, 0),
        ("aes256gcm", "sha256", "curve25519", 36, 0),
        ("aes256", "sha256", "ecp256", 32, 32),
        ("chacha20poly1305", "sha256", "curve25519", 36, 0),
        ("aes128ccm", "sha512", "ecp521", 19, 0),
    ];
    for (encr, integ, dh, ek, ik) in suites {
        for b_initiates in [false, true] {
            let mut net = Net::new();
            let (mut a, mut b) = cfgs(b"secret", b"secret");
            (a.ike_ciphers, a.esp_ciphers) = suite(encr, integ, dh);
            (b.ike_ciphers, b.esp_ciphers) = suite(encr, integ, dh);
            if b_initiates {
                a.initiate = false;
                b.initiate = true;
            }
            net.start(a, b);
            let [pa, pb] = &net.peers;
            assert_eq!(
                (pa.ups, pb.ups),
                (1, 1),
                "{encr}-{integ}-{dh}: {:?} {:?}",
                pa.logs,
                pb.logs
            );
            assert_eq!((pa.installs.len(), pb.installs.len()), (1, 1));
            let (ia, ib) = (&pa.installs[0], &pb.installs[0]);
            assert_pair(ia, ib);
            assert_eq!(ia.encryption, encr);
            assert_eq!(ia.keys_in.encryption_key.len(), ek, "{encr}");
            assert_eq!(ia.keys_in.integrity_key.len(), ik, "{encr}");
            assert_eq!(
                ia.local_ts,
                vec![TrafficSelector::any_v4(), TrafficSelector::any_v6()]
            );
            // No NAT and no forced encapsulation: plain ESP, port 500 throughout.
            assert!(ia.udp_encap.is_none());
            assert!(net
                .sent
                .iter()
                .all(|d| d.from.port() == 500 && d.to.port() == 500));
        }
    }
}

#[test]
fn forced_encapsulation_floats_to_4500() {
    let mut net = Net::new();
    let (mut a, b) = cfgs(b"k", b"k");
    a.force_encap = true;
    net.start(a, b);
    let [pa, pb] = &net.peers;
    assert_eq!((pa.ups, pb.ups), (1, 1));
    for p in [pa, pb] {
        let e = p.installs[0].udp_encap.expect("UDP encapsulation");
        assert_eq!((e.local_port, e.remote_port), (4500, 4500));
    }
    // IKE_SA_INIT on 500, then IKE_AUTH on 4500 with the non-ESP marker.
    assert_eq!(net.sent[0].to.port(), 500);
    let auth = &net.sent[2];
    assert_eq!((auth.from.port(), auth.to.port()), (4500, 4500));
    assert_eq!(&auth.bytes[..4], &[0, 0, 0, 0]);
    // A pretends to be behind a NAT, so it keeps the mapping open.
    let before = net.sent.len();
    net.advance(Duration::from_secs(21));
    let ka: Vec<&Datagram> = net.sent[before..]
        .iter()
        .filter(|d| d.bytes == [0xff])
        .collect();
    assert_eq!(ka.len(), 1);
    assert_eq!(
        (ka[0].from.ip(), ka[0].from.port(), ka[0].to.port()),
        (ip(A), 4500, 4500)
    );
    assert!(net.peers[1].downs.is_empty());
}

#[test]
fn wrong_psk_fails_cleanly_on_both_sides() {
    let mut net = Net::new();
    let (a, b) = cfgs(b"correct horse", b"battery staple");
    net.start(a, b);
    let [pa, pb] = &net.peers;
    assert_eq!((pa.ups, pb.ups), (0, 0));
    assert!(pa.installs.is_empty() && pb.installs.is_empty());
    assert_eq!(pa.downs, vec![DownReason::PeerAuthenticationFailed]);
    assert_eq!(pb.downs, vec![DownReason::AuthenticationFailed]);
    assert!(pb
        .logs
        .iter()
        .any(|l| l.contains("pre-shared key mismatch")));
    for l in pa.logs.iter().chain(&pb.logs) {
        assert!(
            !l.contains("horse") && !l.contains("staple"),
            "secret in log: {l}"
        );
    }
    assert_eq!(pa.mgr.ike_sas().count() + pb.mgr.ike_sas().count(), 0);
}

#[test]
fn no_proposal_chosen_both_ways() {
    // IKE proposals disjoint.
    let mut net = Net::new();
    let (mut a, mut b) = cfgs(b"k", b"k");
    a.ike_ciphers = suite("aes256", "sha256", "ecp256").0;
    b.ike_ciphers = suite("aes256gcm", "sha384", "ecp384").0;
    net.start(a, b);
    assert_eq!(net.peers[0].downs, vec![DownReason::NoProposalChosen]);
    assert_eq!(net.peers[1].downs, vec![DownReason::NoProposalChosen]);

    // ESP proposals disjoint: the IKE SA comes up, no CHILD SA.
    let mut net = Net::new();
    let (mut a, mut b) = cfgs(b"k", b"k");
    a.esp_ciphers = vec![EspCipher::from_api("aes128gcm", None, None).unwrap()];
    b.esp_ciphers = vec![EspCipher::from_api("chacha20poly1305", None, None).unwrap()];
    net.start(a, b);
    let [pa, pb] = &net.peers;
    assert_eq!((pa.ups, pb.ups), (1, 1));
    assert!(pa.installs.is_empty() && pb.installs.is_empty());
    assert!(
        pa.logs.iter().any(|l| l.contains("notify 14")),
        "{:?}",
        pa.logs
    );
}

#[test]
fn invalid_ke_payload_retries_with_requested_group() {
    let mut net = Net::new();
    let (mut a, mut b) = cfgs(b"k", b"k");
    a.ike_ciphers = vec![
        IkeCipher::from_api("aes256gcm", Some("sha256"), Some("curve25519")).unwrap(),
        IkeCipher::from_api("aes256gcm", Some("sha384"), Some("ecp384")).unwrap(),
    ];
    b.ike_ciphers = vec![IkeCipher::from_api("aes256gcm", Some("sha384"), Some("ecp384")).unwrap()];
    net.start(a, b);
    let [pa, pb] = &net.peers;
    assert_eq!((pa.ups, pb.ups), (1, 1), "{:?}", pa.logs);
    assert!(pa
        .logs
        .iter()
        .any(|l| l.contains("peer wants DH group ecp384")));
    // Asking for another group is negotiation, not an outage.
    assert!(
        pa.downs.is_empty() && pb.downs.is_empty(),
        "{:?} {:?}",
        pa.downs,
        pb.downs
    );
    // Two IKE_SA_INIT requests from A (the first refused with INVALID_KE_PAYLOAD).
    let inits = net
        .sent
        .iter()
        .filter(|d| d.from.ip() == ip(A) && d.bytes.len() > 18 && d.bytes[18] == 34)
        .count();
    assert_eq!(inits, 2);
    assert_pair(&pa.installs[0], &pb.installs[0]);
}

#[test]
fn lost_request_and_lost_response_are_retransmitted() {
    for drop_index in [0usize, 1, 2, 3] {
        let mut net = Net::new();
        net.filter = Box::new(move |n, _| n != drop_index);
        let (a, b) = cfgs(b"k", b"k");
        net.start(a, b);
        assert_eq!(net.peers[0].ups, 0);
        net.advance(Duration::from_secs(3));
        let [pa, pb] = &net.peers;
        assert_eq!((pa.ups, pb.ups), (1, 1), "drop {drop_index}");
        assert_eq!((pa.installs.len(), pb.installs.len()), (1, 1));
        assert_pair(&pa.installs[0], &pb.installs[0]);
    }
}

#[test]
fn duplicated_messages_are_harmless() {
    let mut net = Net::new();
    net.duplicate = true;
    let (a, b) = cfgs(b"k", b"k");
    net.start(a, b);
    let [pa, pb] = &net.peers;
    assert_eq!((pa.ups, pb.ups), (1, 1));
    assert_eq!((pa.installs.len(), pb.installs.len()), (1, 1));
    assert_pair(&pa.installs[0], &pb.installs[0]);
}

#[test]
fn dpd_keeps_alive_then_detects_dead_peer_and_restarts() {
    let mut net = Net::new();
    let (mut a, b) = cfgs(b"k", b"k");
    a.dpd_interval = Some(Duration::from_secs(30));
    a.dpd_action = DpdAction::Restart;
    net.start(a, b);
    assert_eq!(net.peers[0].ups, 1);
    let before = net.sent.len();
    net.advance(Duration::from_secs(31));
    // One DPD request and its response.
    assert_eq!(net.sent.len(), before + 2);
    assert!(net.peers[0].downs.is_empty());
    // The peer dies.
    net.filter = Box::new(|_, d| d.from.ip() != ip(B));
    net.advance(Duration::from_secs(200));
    let pa = &net.peers[0];
    assert_eq!(pa.downs.first(), Some(&DownReason::PeerUnreachable));
    assert_eq!(pa.removes.len(), 1);
    // Restart: a new IKE_SA_INIT went out after the down.
    assert!(net
        .sent
        .iter()
        .rev()
        .any(|d| d.from.ip() == ip(A) && d.bytes[18] == 34 && d.bytes[8..16] == [0; 8]));
}

#[test]
fn delete_ike_sa_and_child_sa() {
    let mut net = Net::new();
    let (a, b) = cfgs(b"k", b"k");
    net.start(a, b);
    let spi = net.peers[0].installs[0].spi_in;
    let now = net.now;
    let acts = net.peers[0].mgr.delete_child_sa("tun-a", spi, now);
    net.absorb(0, acts);
    net.run();
    assert_eq!(net.peers[0].removes.len(), 1);
    assert_eq!(net.peers[1].removes.len(), 1);
    assert_eq!(
        net.peers[0].removes[0],
        (net.peers[1].removes[0].1, net.peers[1].removes[0].0)
    );

    let acts = net.peers[0].mgr.delete_ike_sa("tun-a", now);
    net.absorb(0, acts);
    net.run();
    assert_eq!(net.peers[0].downs, vec![DownReason::Deleted]);
    assert_eq!(net.peers[1].downs, vec![DownReason::Deleted]);
    assert_eq!(
        net.peers[0].mgr.ike_sas().count() + net.peers[1].mgr.ike_sas().count(),
        0
    );
}

#[test]
fn responder_narrows_traffic_selectors() {
    let mut net = Net::new();
    let (a, mut b) = cfgs(b"k", b"k");
    let narrow = TrafficSelector {
        ip_protocol: 0,
        start_port: 0,
        end_port: 65535,
        start_addr: ip("203.0.113.0"),
        end_addr: ip("203.0.113.255"),
    };
    b.local_ts = vec![narrow];
    net.start(a, b);
    let [pa, pb] = &net.peers;
    assert_eq!(pa.installs[0].remote_ts, vec![narrow]);
    assert_eq!(pb.installs[0].local_ts, vec![narrow]);
    assert_eq!(
        pa.installs[0].local_ts,
        vec![TrafficSelector::any_v4(), TrafficSelector::any_v6()]
    );
}

#[test]
fn unknown_peer_and_garbage_are_ignored() {
    let mut net = Net::new();
    let (a, b) = cfgs(b"k", b"k");
    net.start(a, b);
    let from: SocketAddr = "198.51.100.7:500".parse().unwrap();
    let to: SocketAddr = format!("{B}:500").parse().unwrap();
    // A valid-looking IKE_SA_INIT from an unconfigured address.
    let first = net.sent[0].bytes.clone();
    let now = net.now;
    assert!(net.peers[1]
        .mgr
        .handle_datagram(&first, from, to, now)
        .is_empty());
    assert!(net.peers[1]
        .mgr
        .handle_datagram(&[1, 2, 3], from, to, now)
        .is_empty());
}

fn children(p: &Peer) -> Vec<(u32, u32)> {
    let mut v: Vec<(u32, u32)> = p
        .mgr
        .ike_sas()
        .flat_map(|sa| sa.children().iter().map(|c| (c.spi_in, c.spi_out)))
        .collect();
    v.sort_unstable();
    v
}

fn assert_consistent(net: &Net) {
    let a = children(&net.peers[0]);
    let mut b: Vec<(u32, u32)> = children(&net.peers[1])
        .into_iter()
        .map(|(i, o)| (o, i))
        .collect();
    b.sort_unstable();
    assert_eq!(a, b, "CHILD SA pairs differ between peers");
}

#[test]
fn child_rekey_both_directions_with_and_without_pfs() {
    for pfs in [None, Some("ecp256")] {
        for who in [0usize, 1] {
            let mut net = Net::new();
            let (mut a, mut b) = cfgs(b"k", b"k");
            a.esp_ciphers = vec![EspCipher::from_api("aes256gcm", None, pfs).unwrap()];
            b.esp_ciphers = a.esp_ciphers.clone();
            net.start(a, b);
            let old = net.peers[who].installs[0].spi_in;
            let name = if who == 0 { "tun-a" } else { "tun-b" };
            let now = net.now;
            let acts = net.peers[who].mgr.rekey_child_sa(name, old, now);
            net.absorb(who, acts);
            net.run();
            let [pa, pb] = &net.peers;
            assert_eq!(
                (pa.installs.len(), pb.installs.len()),
                (2, 2),
                "pfs {pfs:?} who {who}"
            );
            assert_pair(&pa.installs[1], &pb.installs[1]);
            assert_eq!(net.peers[who].installs[1].replaces_spi_in, Some(old));
            assert_ne!(
                *pa.installs[1].keys_in.encryption_key,
                *pa.installs[0].keys_in.encryption_key
            );
            // Make-before-break: the old pair is removed after the new one is in.
            assert_eq!((pa.removes.len(), pb.removes.len()), (1, 1));
            assert_eq!(pa.removes[0].0, pa.installs[0].spi_in);
            assert_eq!(children(pa).len(), 1);
            assert_consistent(&net);
            assert!(pa.downs.is_empty() && pb.downs.is_empty());
        }
    }
}

#[test]
fn child_rekey_collision_leaves_one_pair() {
    for _ in 0..8 {
        let mut net = Net::new();
        let (a, b) = cfgs(b"k", b"k");
        net.start(a, b);
        let (ai, bi) = (
            net.peers[0].installs[0].spi_in,
            net.peers[1].installs[0].spi_in,
        );
        let now = net.now;
        // Both start rekeying the same CHILD SA before either hears the other.
        let acts_a = net.peers[0].mgr.rekey_child_sa("tun-a", ai, now);
        let acts_b = net.peers[1].mgr.rekey_child_sa("tun-b", bi, now);
        net.absorb(0, acts_a);
        net.absorb(1, acts_b);
        net.run();
        assert_eq!(children(&net.peers[0]).len(), 1, "{:?}", net.peers[0].logs);
        assert_eq!(children(&net.peers[1]).len(), 1);
        assert_consistent(&net);
        // Three SAs existed per side (old + two new); two were removed.
        assert_eq!(
            (net.peers[0].removes.len(), net.peers[1].removes.len()),
            (2, 2)
        );
        assert!(net.peers[0].logs.iter().any(|l| l.contains("collision")));
    }
}

#[test]
fn ike_rekey_keeps_children_and_new_sa_works() {
    for who in [0usize, 1] {
        let mut net = Net::new();
        let (a, b) = cfgs(b"k", b"k");
        net.start(a, b);
        let before: Vec<u64> = net.peers[0].mgr.ike_sas().map(|s| s.my_spi()).collect();
        let name = if who == 0 { "tun-a" } else { "tun-b" };
        let now = net.now;
        let acts = net.peers[who].mgr.rekey_ike_sa(name, now);
        net.absorb(who, acts);
        net.run();
        for p in &net.peers {
            assert_eq!(p.mgr.ike_sas().count(), 1, "{:?}", p.logs);
            assert!(p.downs.is_empty(), "{:?} {:#?}", p.downs, p.logs);
            assert!(p.removes.is_empty());
            assert_eq!(children(p).len(), 1);
        }
        let after: Vec<u64> = net.peers[0].mgr.ike_sas().map(|s| s.my_spi()).collect();
        assert_ne!(before, after);
        // The new IKE SA carries a CHILD rekey, so its keys agree on both sides.
        let spi = net.peers[0].installs[0].spi_in;
        let acts = net.peers[0].mgr.rekey_child_sa("tun-a", spi, now);
        net.absorb(0, acts);
        net.run();
        assert_eq!(net.peers[0].installs.len(), 2);
        assert_pair(&net.peers[0].installs[1], &net.peers[1].installs[1]);
        assert_consistent(&net);
    }
}

#[test]
fn soft_lifetimes_trigger_rekeys() {
    let mut net = Net::new();
    let (mut a, mut b) = cfgs(b"k", b"k");
    a.child_rekey_time = Some(Duration::from_secs(100));
    a.ike_rekey_time = Some(Duration::from_secs(300));
    b.child_rekey_time = None;
    b.ike_rekey_time = None;
    net.start(a, b);
    net.advance(Duration::from_secs(101));
    assert_eq!(net.peers[0].installs.len(), 2);
    assert_eq!(
        net.peers[0].installs[1].replaces_spi_in,
        Some(net.peers[0].installs[0].spi_in)
    );
    let spi_before: Vec<u64> = net.peers[1].mgr.ike_sas().map(|s| s.my_spi()).collect();
    net.advance(Duration::from_secs(200));
    let spi_after: Vec<u64> = net.peers[1].mgr.ike_sas().map(|s| s.my_spi()).collect();
    assert_ne!(spi_before, spi_after);
    assert_eq!(spi_after.len(), 1);
    assert_consistent(&net);
    assert!(net.peers[0].downs.is_empty() && net.peers[1].downs.is_empty());
}

#[test]
fn cookie_challenge_under_load() {
    let mut net = Net::new();
    net.peers[1].mgr.set_cookie_threshold(0);
    let (a, b) = cfgs(b"k", b"k");
    net.start(a, b);
    let [pa, pb] = &net.peers;
    assert_eq!((pa.ups, pb.ups), (1, 1), "{:?}", pa.logs);
    // The first IKE_SA_INIT got only a COOKIE back; the retry carried it first.
    let resp = &net.sent[1];
    assert_eq!(resp.from.ip(), ip(B));
    assert_eq!(resp.bytes[8..16], [0; 8], "no responder SPI: no state");
    assert_eq!(resp.bytes[16], 41, "a lone Notify");
    let retry = &net.sent[2];
    assert_eq!(retry.bytes[16], 41, "COOKIE first in the retry");
    // KE and Ni repeated unchanged: the retry differs only by the cookie.
    let first_len = net.sent[0].bytes.len();
    assert_eq!(retry.bytes.len(), first_len + 4 + 4 + 17);
    assert_pair(&pa.installs[0], &pb.installs[0]);
}

#[test]
fn ike_rekey_collision_resolves() {
    let mut net = Net::new();
    let (a, b) = cfgs(b"k", b"k");
    net.start(a, b);
    let now = net.now;
    let acts_a = net.peers[0].mgr.rekey_ike_sa("tun-a", now);
    let acts_b = net.peers[1].mgr.rekey_ike_sa("tun-b", now);
    net.absorb(0, acts_a);
    net.absorb(1, acts_b);
    net.run();
    // Both refused each other (TEMPORARY_FAILURE) and retry at random times.
    net.advance(Duration::from_secs(25));
    for p in &net.peers {
        assert_eq!(p.mgr.ike_sas().count(), 1, "{:?}", p.logs);
        assert!(p.downs.is_empty());
        assert_eq!(children(p).len(), 1);
    }
    assert!(net
        .peers
        .iter()
        .any(|p| p.logs.iter().any(|l| l.contains("rekeyed IKE SA"))));
    assert_consistent(&net);
}

#[test]
fn fragmented_ike_auth_and_rekeys() {
    let mut net = Net::new();
    let (mut a, mut b) = cfgs(b"k", b"k");
    // Small enough that IKE_AUTH and CREATE_CHILD_SA are fragmented.
    a.fragment_size = 200;
    b.fragment_size = 200;
    a.esp_ciphers = vec![EspCipher::from_api("aes256gcm", None, Some("modp2048")).unwrap()];
    b.esp_ciphers = a.esp_ciphers.clone();
    net.start(a, b);
    let [pa, pb] = &net.peers;
    assert_eq!((pa.ups, pb.ups), (1, 1), "{:?} {:?}", pa.logs, pb.logs);
    assert_pair(&pa.installs[0], &pb.installs[0]);
    let skf = net
        .sent
        .iter()
        .filter(|d| d.bytes.len() > 16 && d.bytes[16] == 53)
        .count();
    assert!(skf >= 4, "expected fragments, saw {skf}");
    assert!(net
        .sent
        .iter()
        .all(|d| d.bytes.len() + 28 <= 200 || d.bytes[18] == 34));
    // A PFS rekey with a 256-byte KE, fragmented, with one fragment lost.
    let sent_before = net.sent.len();
    net.filter = Box::new(move |n, _| n != sent_before + 1);
    let spi = net.peers[0].installs[0].spi_in;
    let now = net.now;
    let acts = net.peers[0].mgr.rekey_child_sa("tun-a", spi, now);
    net.absorb(0, acts);
    net.run();
    net.advance(Duration::from_secs(3));
    assert_eq!(net.peers[0].installs.len(), 2, "{:?}", net.peers[0].logs);
    assert_pair(&net.peers[0].installs[1], &net.peers[1].installs[1]);
    assert_consistent(&net);
}

#[test]
fn unknown_critical_payload_gets_unsupported_critical_payload() {
    let mut net = Net::new();
    let (_, b) = cfgs(b"k", b"k");
    let acts = net.peers[1].mgr.add_connection(b, net.now);
    net.absorb(1, acts);
    // IKE_SA_INIT request whose only payload is type 200 with the critical bit.
    let mut m = vec![0u8; 28];
    m[..8].copy_from_slice(&7u64.to_be_bytes());
    m[16] = 200;
    m[17] = 0x20;
    m[18] = 34;
    m[19] = 0x08;
    m[24..28].copy_from_slice(&32u32.to_be_bytes());
    m.extend_from_slice(&[0, 0x80, 0, 4]);
    let from: SocketAddr = format!("{A}:500").parse().unwrap();
    let to: SocketAddr = format!("{B}:500").parse().unwrap();
    let acts = net.peers[1].mgr.handle_datagram(&m, from, to, net.now);
    let [Action::Send { bytes, to: dst, .. }] = acts.as_slice() else {
        panic!("expected one reply, got {acts:?}");
    };
    assert_eq!(*dst, from);
    let reply = gateway_ike::message::Message::decode(bytes).unwrap();
    let n = reply
        .notify(gateway_ike::payload::notify::UNSUPPORTED_CRITICAL_PAYLOAD)
        .unwrap();
    assert_eq!(n.data, vec![200]);
    assert!(reply.is_response());
    assert_eq!(net.peers[1].mgr.ike_sas().count(), 0);
}

#[test]
fn mutated_real_messages_never_panic() {
    // Capture a real exchange, then feed bit-flipped / truncated copies to
    // fresh peers in both roles.
    let mut net = Net::new();
    let (a, b) = cfgs(b"k", b"k");
    net.start(a.clone(), b.clone());
    let captured: Vec<Datagram> = net.sent.drain(..).collect();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut fresh_b = IkeManager::new();
    let _ = fresh_b.add_connection(b, net.now);
    for i in 0..3000 {
        let d = &captured[i % captured.len()];
        let mut bytes = d.bytes.clone();
        match rnd() % 3 {
            0 => {
                let pos = (rnd() as usize) % bytes.len();
                bytes[pos] ^= 1 << (rnd() % 8);
            }
            1 => bytes.truncate((rnd() as usize) % bytes.len()),
            _ => {
                let pos = (rnd() as usize) % bytes.len();
                bytes[pos] = rnd() as u8;
            }
        }
        let who = if d.to.ip() == ip(A) { 0 } else { 1 };
        let now = net.now;
        let _ = net.peers[who]
            .mgr
            .handle_datagram(&bytes, d.from, d.to, now);
        let _ = fresh_b.handle_datagram(&bytes, d.from, d.to, now);
    }
    // The established pair survived the garbage (nothing authentic was hit).
    assert_eq!(net.peers[0].mgr.ike_sas().count(), 1);
    assert_eq!(children(&net.peers[0]).len(), 1);
}

#[test]
fn hard_lifetime_deletes_unrekeyed_child() {
    let mut net = Net::new();
    let (mut a, mut b) = cfgs(b"k", b"k");
    for c in [&mut a, &mut b] {
        c.child_rekey_time = None;
    }
    a.child_lifetime = Some(Duration::from_secs(50));
    b.child_lifetime = None;
    net.start(a, b);
    net.advance(Duration::from_secs(49));
    assert!(net.peers[0].removes.is_empty());
    net.advance(Duration::from_secs(2));
    assert_eq!(
        (net.peers[0].removes.len(), net.peers[1].removes.len()),
        (1, 1)
    );
    assert!(children(&net.peers[0]).is_empty() && children(&net.peers[1]).is_empty());
    assert!(net.peers[0].downs.is_empty());
}

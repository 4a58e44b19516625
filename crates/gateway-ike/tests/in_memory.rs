//! Two in-memory peers (our initiator and our responder) exchanging
//! datagrams through a simulated network with a simulated clock, asserting
//! on the actions (strongSwan's tests/suites style). Diffie-Hellman work is
//! offloaded as in the driver: the jobs run as they come (or later, when a
//! test holds them back), through `handle_dh_result`.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use gateway_ike::payload::TrafficSelector;
use gateway_ike::snapshot::{IkeSaSnapshot, RestoreError};
use gateway_ike::{
    Action, ChildSaInstall, ConnectionConfig, DownReason, DpdAction, EspCipher, IkeCipher,
    IkeManager, IkeSaId, Psk, TimerId,
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
    /// Established IKE SAs that went down.
    downs: Vec<DownReason>,
    /// IKE SAs that never got established: (we initiated, reason).
    failed: Vec<(bool, DownReason)>,
    logs: Vec<String>,
    /// `PeerEndpointChanged` reports: (old, new, spis_out).
    moves: Vec<(SocketAddr, SocketAddr, Vec<u32>)>,
    /// Installs and removals in order: (true: install, inbound SPI).
    order: Vec<(bool, u32)>,
    /// `ActivateOutbound` reports: (inbound SPI, when).
    activations: Vec<(u32, Instant)>,
    /// The latest `SaState` of each IKE SA (`None`: forget it).
    states: BTreeMap<IkeSaId, Option<Box<IkeSaSnapshot>>>,
}

impl Peer {
    fn new(addr: &str) -> Self {
        let mut mgr = IkeManager::new();
        mgr.set_dh_offload(true);
        Self {
            mgr,
            addr: ip(addr),
            timers: BTreeMap::new(),
            installs: Vec::new(),
            removes: Vec::new(),
            ups: 0,
            downs: Vec::new(),
            failed: Vec::new(),
            logs: Vec::new(),
            moves: Vec::new(),
            order: Vec::new(),
            activations: Vec::new(),
            states: BTreeMap::new(),
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

/// A NAT in front of peer 0 (A) that keeps A's IP and translates its
/// ports (inside → outside). Applied on delivery; a datagram to an outside
/// port without a mapping is dropped, as a real NAT does once it lost the
/// mapping (reboot, timeout).
struct Nat {
    map: Vec<(u16, u16)>,
}

impl Nat {
    fn new(map: &[(u16, u16)]) -> Self {
        Self { map: map.to_vec() }
    }

    /// The datagram as it leaves the NAT, or `None` if dropped.
    fn translate(&self, mut d: Datagram) -> Option<Datagram> {
        if d.from.ip() == ip(A) {
            let (_, out) = self.map.iter().find(|(i, _)| *i == d.from.port())?;
            d.from.set_port(*out);
        }
        if d.to.ip() == ip(A) {
            let (inside, _) = self.map.iter().find(|(_, o)| *o == d.to.port())?;
            d.to.set_port(*inside);
        }
        Some(d)
    }
}

struct Net {
    peers: [Peer; 2],
    /// NAT in front of A, if any.
    nat: Option<Nat>,
    now: Instant,
    wire: VecDeque<Datagram>,
    sent: Vec<Datagram>,
    filter: Filter,
    duplicate: bool,
    /// Diffie-Hellman jobs held back (run by `run_jobs`) instead of run
    /// at once.
    hold_jobs: bool,
    jobs: Vec<(usize, gateway_ike::DhJob)>,
}

impl Net {
    fn new() -> Self {
        Self {
            peers: [Peer::new(A), Peer::new(B)],
            nat: None,
            now: Instant::now(),
            wire: VecDeque::new(),
            sent: Vec::new(),
            filter: Box::new(|_, _| true),
            duplicate: false,
            hold_jobs: false,
            jobs: Vec::new(),
        }
    }

    /// Runs the held Diffie-Hellman jobs and feeds their results back.
    fn run_jobs(&mut self) {
        for (who, job) in std::mem::take(&mut self.jobs) {
            let r = job.run();
            let acts = self.peers[who].mgr.handle_dh_result(r, self.now);
            self.absorb(who, acts);
        }
    }

    fn absorb(&mut self, who: usize, actions: Vec<Action>) {
        self.absorb_batch(who, actions);
        if !self.hold_jobs {
            self.run_jobs();
        }
    }

    fn absorb_batch(&mut self, who: usize, actions: Vec<Action>) {
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
                Action::InstallChildSa(c) => {
                    self.peers[who].order.push((true, c.spi_in));
                    self.peers[who].installs.push(c);
                }
                Action::RemoveChildSa {
                    spi_in, spi_out, ..
                } => {
                    self.peers[who].order.push((false, spi_in));
                    self.peers[who].removes.push((spi_in, spi_out));
                }
                Action::ActivateOutbound { spi_in, .. } => {
                    self.peers[who].activations.push((spi_in, self.now))
                }
                Action::IkeSaUp { .. } => self.peers[who].ups += 1,
                Action::IkeSaDown { reason, .. } => self.peers[who].downs.push(reason),
                Action::IkeSaFailed {
                    initiator, reason, ..
                } => self.peers[who].failed.push((initiator, reason)),
                // Run after this batch, as a driver would: its timers
                // come first, the job's own actions later.
                Action::ComputeDh(job) => self.jobs.push((who, job)),
                Action::Log { message, .. } => self.peers[who].logs.push(message),
                Action::PeerEndpointChanged {
                    old, new, spis_out, ..
                } => self.peers[who].moves.push((old, new, spis_out)),
                Action::SaState { ike, snapshot, .. } => {
                    self.peers[who].states.insert(ike, snapshot);
                }
            }
        }
    }

    /// Delivers datagrams until the wire is empty (bounded).
    fn run(&mut self) {
        for _ in 0..1000 {
            if !self.step() {
                return;
            }
        }
        panic!("message storm");
    }

    /// Delivers one datagram (through the NAT, if any); false if the wire
    /// was empty.
    fn step(&mut self) -> bool {
        let Some(d) = self.wire.pop_front() else {
            return false;
        };
        let d = match &self.nat {
            Some(nat) => nat.translate(d),
            None => Some(d),
        };
        if let Some(d) = d {
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
        true
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
    // Never established: failures, not outages.
    assert!(pa.downs.is_empty() && pb.downs.is_empty());
    assert_eq!(
        pa.failed,
        vec![(true, DownReason::PeerAuthenticationFailed)]
    );
    assert_eq!(pb.failed, vec![(false, DownReason::AuthenticationFailed)]);
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
    assert_eq!(
        net.peers[0].failed,
        vec![(true, DownReason::NoProposalChosen)]
    );
    assert_eq!(
        net.peers[1].failed,
        vec![(false, DownReason::NoProposalChosen)]
    );

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
        pa.downs.is_empty() && pb.downs.is_empty() && pa.failed.is_empty() && pb.failed.is_empty(),
        "{:?} {:?} {:?} {:?}",
        pa.downs,
        pb.downs,
        pa.failed,
        pb.failed
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
fn census_counts_sas_by_state() {
    let mut net = Net::new();
    let (a, b) = cfgs(b"k", b"k");
    assert_eq!(net.peers[0].mgr.census(), gateway_ike::Census::default());
    net.start(a, b);
    for p in &net.peers {
        let c = p.mgr.census();
        assert_eq!((c.ike_established, c.child_installed), (1, 1), "{c:?}");
        assert_eq!(c.ike_connecting + c.ike_deleting, 0, "{c:?}");
        assert_eq!(
            c.child_rekeying + c.child_rekeyed + c.child_deleting,
            0,
            "{c:?}"
        );
    }
    let spi = net.peers[0].installs[0].spi_in;
    let now = net.now;
    let acts = net.peers[0].mgr.delete_child_sa("tun-a", spi, now);
    net.absorb(0, acts);
    net.run();
    for p in &net.peers {
        let c = p.mgr.census();
        assert_eq!(c.child_installed + c.child_deleting, 0, "{c:?}");
        assert_eq!(c.ike_established, 1, "{c:?}");
    }
    // A DELETE of the IKE SA sent and not answered yet.
    let acts = net.peers[0].mgr.delete_ike_sa("tun-a", now);
    assert_eq!(net.peers[0].mgr.census().ike_deleting, 1);
    assert_eq!(net.peers[0].mgr.census().ike_established, 0);
    net.absorb(0, acts);
    net.run();
    assert_eq!(net.peers[0].mgr.census(), gateway_ike::Census::default());
    assert_eq!(net.peers[1].mgr.census(), gateway_ike::Census::default());
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
            // The initiator sends on the new pair at once; the responder
            // once the initiator deleted the old one (before that, the
            // initiator could not open it yet).
            let responder = &net.peers[1 - who];
            assert!(!net.peers[who].installs[1].outbound_deferred);
            assert!(responder.installs[1].outbound_deferred);
            let activated: Vec<u32> = responder.activations.iter().map(|a| a.0).collect();
            assert_eq!(activated, [responder.installs[1].spi_in]);
            assert!(net.peers[who].activations.is_empty());
            // Make-before-break: the old pair's inbound SA still decrypts
            // what was in flight for the rekey grace (5 s), then goes.
            assert_eq!((pa.removes.len(), pb.removes.len()), (0, 0));
            net.advance(Duration::from_secs(4));
            assert_eq!(
                (net.peers[0].removes.len(), net.peers[1].removes.len()),
                (0, 0)
            );
            net.advance(Duration::from_secs(2));
            let [pa, pb] = &net.peers;
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
        // Three SAs existed per side (old + two new); two are removed:
        // the redundant new one at once, the old one after the grace.
        assert_eq!(
            (net.peers[0].removes.len(), net.peers[1].removes.len()),
            (1, 1)
        );
        net.advance(Duration::from_secs(6));
        assert_eq!(
            (net.peers[0].removes.len(), net.peers[1].removes.len()),
            (2, 2)
        );
        // Both were initiators: neither held its outbound back.
        assert!(net.peers.iter().all(|p| p.activations.is_empty()));
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
    assert_eq!(
        net.peers[0].installs.len(),
        2,
        "{:?} {:?}",
        net.peers[0].logs,
        net.peers[1].logs
    );
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

fn sock(addr: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(addr), port)
}

/// A behind a NAT (500 → 40500, 4500 → 44500) with DPD, established.
fn natted() -> Net {
    let mut net = Net::new();
    net.nat = Some(Nat::new(&[(500, 40500), (4500, 44500)]));
    let (mut a, b) = cfgs(b"k", b"k");
    a.dpd_interval = Some(Duration::from_secs(30));
    net.start(a, b);
    let [pa, pb] = &net.peers;
    assert_eq!((pa.ups, pb.ups), (1, 1), "{:?} {:?}", pa.logs, pb.logs);
    // NAT detection: B sees A behind a NAT, A does not see B behind one;
    // B encapsulates ESP to A's mapped NAT-T port.
    let sa_b = pb.mgr.ike_sas().next().expect("B's IKE SA");
    assert!(sa_b.peer_behind_nat());
    assert_eq!(sa_b.remote(), sock(A, 44500));
    let encap = pb.installs[0].udp_encap.expect("UDP encapsulation");
    assert_eq!((encap.local_port, encap.remote_port), (4500, 44500));
    let sa_a = pa.mgr.ike_sas().next().expect("A's IKE SA");
    assert!(!sa_a.peer_behind_nat());
    assert!(pa.moves.is_empty() && pb.moves.is_empty());
    net
}

fn b_remote(net: &Net) -> SocketAddr {
    net.peers[1]
        .mgr
        .ike_sas()
        .next()
        .expect("B's IKE SA")
        .remote()
}

/// Lets A's DPD request (t = 30 s) leave A but not reach B; returns it as
/// A sent it (from A:4500, with the non-ESP marker).
fn capture_a_dpd(net: &mut Net) -> (Vec<u8>, SocketAddr) {
    net.filter = Box::new(|_, d| !(d.from.ip() == ip(A) && d.bytes != [0xff]));
    let before = net.sent.len();
    net.advance(Duration::from_secs(31));
    net.filter = Box::new(|_, _| true);
    let reqs: Vec<&Datagram> = net.sent[before..]
        .iter()
        .filter(|d| d.from.ip() == ip(A) && d.bytes != [0xff])
        .collect();
    assert_eq!(reqs.len(), 1, "one DPD request, no retransmission yet");
    (reqs[0].bytes.clone(), reqs[0].to)
}

/// Destinations of the datagrams in `acts`.
fn sends(acts: &[Action]) -> Vec<SocketAddr> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Send { to, .. } => Some(*to),
            _ => None,
        })
        .collect()
}

fn has_move(acts: &[Action]) -> bool {
    acts.iter()
        .any(|a| matches!(a, Action::PeerEndpointChanged { .. }))
}

#[test]
fn nat_mapping_change_moves_ike_and_esp_to_the_new_port() {
    let mut net = natted();
    let b_out = net.peers[1].installs[0].spi_out;
    // The NAT reboots: A's traffic now leaves from other ports and the old
    // mapping is gone (datagrams to 44500 are dropped).
    net.nat = Some(Nat::new(&[(500, 40501), (4500, 44501)]));
    let before = net.sent.len();
    net.advance(Duration::from_secs(31));
    // A's DPD request (authenticated, next message ID) came from 44501.
    let pb = &net.peers[1];
    assert_eq!(
        pb.moves,
        vec![(sock(A, 44500), sock(A, 44501), vec![b_out])],
        "{:?}",
        pb.logs
    );
    assert!(pb.logs.iter().any(|l| l.contains("NAT mapping changed")));
    assert_eq!(b_remote(&net), sock(A, 44501));
    // B's response went to the new port and reached A: A sent exactly one
    // request (no retransmission) and nothing of B's went to the old port.
    let after = &net.sent[before..];
    let from_b: Vec<&Datagram> = after.iter().filter(|d| d.from.ip() == ip(B)).collect();
    assert_eq!(from_b.len(), 1);
    assert_eq!(from_b[0].to, sock(A, 44501));
    let a_reqs = after
        .iter()
        .filter(|d| d.from.ip() == ip(A) && d.bytes != [0xff])
        .count();
    assert_eq!(a_reqs, 1);
    assert!(net.peers[0].downs.is_empty() && net.peers[1].downs.is_empty());
    // A later request of B (a CHILD rekey) goes to the new port, and the
    // new CHILD SA is encapsulated to it.
    let before = net.sent.len();
    let bi = net.peers[1].installs[0].spi_in;
    let now = net.now;
    let acts = net.peers[1].mgr.rekey_child_sa("tun-b", bi, now);
    net.absorb(1, acts);
    net.run();
    assert!(net.sent[before..]
        .iter()
        .filter(|d| d.from.ip() == ip(B))
        .all(|d| d.to == sock(A, 44501)));
    let pb = &net.peers[1];
    assert_eq!(pb.installs.len(), 2, "{:?}", pb.logs);
    let e = pb.installs[1].udp_encap.expect("UDP encapsulation");
    assert_eq!(e.remote_port, 44501);
    assert_pair(&net.peers[0].installs[1], &pb.installs[1]);
    assert_consistent(&net);
    assert_eq!(pb.moves.len(), 1, "no further change");
}

#[test]
fn nat_mapping_change_seen_in_a_response_and_retransmissions_follow() {
    let mut net = natted();
    let b_out = net.peers[1].installs[0].spi_out;
    let bi = net.peers[1].installs[0].spi_in;
    // B starts a CHILD rekey; A gets the request through the old mapping,
    // then the NAT remaps before A's response leaves.
    let now = net.now;
    let acts = net.peers[1].mgr.rekey_child_sa("tun-b", bi, now);
    net.absorb(1, acts);
    assert!(net.step(), "B's request delivered to A");
    net.nat = Some(Nat::new(&[(500, 40501), (4500, 44501)]));
    net.run();
    let pb = &net.peers[1];
    assert_eq!(
        pb.moves,
        vec![(sock(A, 44500), sock(A, 44501), vec![b_out])],
        "{:?}",
        pb.logs
    );
    // The CHILD SA this very response created already uses the new port.
    assert_eq!(pb.installs.len(), 2);
    assert_eq!(pb.installs[1].udp_encap.map(|e| e.remote_port), Some(44501));
    assert_pair(&net.peers[0].installs[1], &pb.installs[1]);
    // Retransmissions follow too: B's next request is lost once, its
    // retransmission goes to the new port.
    let mut dropped = false;
    net.filter = Box::new(move |_, d| {
        let drop = !dropped && d.from.ip() == ip(B);
        dropped |= drop;
        !drop
    });
    let before = net.sent.len();
    let spi = net.peers[1].installs[1].spi_in;
    let now = net.now;
    let acts = net.peers[1].mgr.delete_child_sa("tun-b", spi, now);
    net.absorb(1, acts);
    net.run();
    net.advance(Duration::from_secs(3));
    let from_b: Vec<&Datagram> = net.sent[before..]
        .iter()
        .filter(|d| d.from.ip() == ip(B))
        .collect();
    assert_eq!(from_b.len(), 2, "request and its retransmission");
    assert!(from_b.iter().all(|d| d.to == sock(A, 44501)));
    assert!(children(&net.peers[1]).is_empty());
    assert!(children(&net.peers[0]).is_empty());
}

#[test]
fn peer_not_behind_nat_keeps_its_endpoint() {
    let mut net = Net::new();
    let (mut a, b) = cfgs(b"k", b"k");
    a.dpd_interval = Some(Duration::from_secs(30));
    net.start(a, b);
    assert!(!net.peers[1]
        .mgr
        .ike_sas()
        .next()
        .expect("B's IKE SA")
        .peer_behind_nat());
    let (req, to) = capture_a_dpd(&mut net);
    // The (authentic, new) request arrives from another port of A's IP.
    let now = net.now;
    let acts = net.peers[1]
        .mgr
        .handle_datagram(&req, sock(A, 40000), to, now);
    assert!(!has_move(&acts));
    assert_eq!(sends(&acts), vec![sock(A, 500)], "answered where the SA is");
    net.absorb(1, acts);
    net.run();
    assert_eq!(b_remote(&net), sock(A, 500));
    assert!(net.peers[1].moves.is_empty());
    assert!(net.peers[1]
        .logs
        .iter()
        .any(|l| l.contains("not behind a NAT")));
    assert!(net.peers[0].downs.is_empty(), "A got its DPD response");
}

#[test]
fn unauthenticated_datagrams_from_a_new_port_change_nothing() {
    let mut net = natted();
    let (req, to) = capture_a_dpd(&mut net);
    let new = sock(A, 44999);
    let now = net.now;
    // The real request with one bit flipped (in the ciphertext, and in the
    // ICV): the next message ID, but it does not verify.
    for at in [req.len() / 2, req.len() - 1] {
        let mut forged = req.clone();
        forged[at] ^= 0x01;
        let acts = net.peers[1].mgr.handle_datagram(&forged, new, to, now);
        assert!(!has_move(&acts) && sends(&acts).is_empty(), "{acts:?}");
    }
    // Garbage behind the non-ESP marker, and a NAT keepalive.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in [0usize, 10, 28, 29, 100, 400] {
        let mut junk = vec![0u8; 4];
        junk.extend((0..len).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        }));
        let acts = net.peers[1].mgr.handle_datagram(&junk, new, to, now);
        assert!(!has_move(&acts) && sends(&acts).is_empty());
    }
    assert!(net.peers[1]
        .mgr
        .handle_datagram(&[0xff], new, to, now)
        .is_empty());
    assert_eq!(b_remote(&net), sock(A, 44500));
    // The authentic request from another IP is answered, but does not
    // move the SA: only port changes of the configured peer are followed.
    let acts = net.peers[1]
        .mgr
        .handle_datagram(&req, sock("192.0.2.99", 44501), to, now);
    assert!(!has_move(&acts));
    assert_eq!(sends(&acts), vec![sock(A, 44500)]);
    assert_eq!(b_remote(&net), sock(A, 44500));
    assert!(net.peers[1]
        .logs
        .iter()
        .all(|l| !l.contains("NAT mapping changed")));
    net.absorb(1, acts);
    net.run();
    assert!(net.peers[1].moves.is_empty());
}

#[test]
fn retransmitted_request_from_a_new_port_does_not_move_the_sa() {
    let mut net = natted();
    let (req, to) = capture_a_dpd(&mut net);
    let now = net.now;
    // First copy through the (unchanged) mapping: processed and answered.
    let acts = net.peers[1]
        .mgr
        .handle_datagram(&req, sock(A, 44500), to, now);
    assert_eq!(sends(&acts), vec![sock(A, 44500)]);
    let response = acts
        .iter()
        .find_map(|a| match a {
            Action::Send { bytes, .. } => Some(bytes.clone()),
            _ => None,
        })
        .expect("response");
    // The same request again (a retransmission: old message ID, not
    // re-authenticated) from a new port: the SA stays, the cached response
    // is replayed to where the retransmission came from (the peer's IP).
    let new = sock(A, 44501);
    let acts = net.peers[1].mgr.handle_datagram(&req, new, to, now);
    assert!(!has_move(&acts));
    let replay: Vec<(SocketAddr, &Vec<u8>)> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Send { bytes, to, .. } => Some((*to, bytes)),
            _ => None,
        })
        .collect();
    assert_eq!(replay, vec![(new, &response)]);
    assert_eq!(b_remote(&net), sock(A, 44500));
    // From another IP, the replay goes to the SA's endpoint.
    let acts = net.peers[1]
        .mgr
        .handle_datagram(&req, sock("192.0.2.99", 44501), to, now);
    assert_eq!(sends(&acts), vec![sock(A, 44500)]);
    assert!(net.peers[1].moves.is_empty());
}

#[test]
fn ike_rekeys_carry_the_new_port() {
    let mut net = natted();
    let b_out = net.peers[1].installs[0].spi_out;
    // The NAT remaps, then A (behind it) rekeys the IKE SA: B follows on
    // the rekey request itself and the new IKE SA starts at the new port.
    net.nat = Some(Nat::new(&[(500, 40501), (4500, 44501)]));
    let now = net.now;
    let acts = net.peers[0].mgr.rekey_ike_sa("tun-a", now);
    net.absorb(0, acts);
    net.run();
    let pb = &net.peers[1];
    assert_eq!(
        pb.moves,
        vec![(sock(A, 44500), sock(A, 44501), vec![b_out])],
        "{:?}",
        pb.logs
    );
    assert_eq!(pb.mgr.ike_sas().count(), 1, "old IKE SA deleted");
    assert_eq!(b_remote(&net), sock(A, 44501));
    assert!(pb.mgr.ike_sas().all(|sa| sa.peer_behind_nat()));
    // B rekeys the IKE SA; its request reaches A, then the NAT remaps
    // before A's response leaves: the response moves the SA again.
    let now = net.now;
    let acts = net.peers[1].mgr.rekey_ike_sa("tun-b", now);
    net.absorb(1, acts);
    assert!(net.step(), "B's request delivered to A");
    net.nat = Some(Nat::new(&[(500, 40502), (4500, 44502)]));
    net.run();
    assert!(net.peers[0].downs.is_empty() && net.peers[1].downs.is_empty());
    assert_eq!(net.peers[1].mgr.ike_sas().count(), 1);
    assert_eq!(b_remote(&net), sock(A, 44502));
    let moves = &net.peers[1].moves;
    assert_eq!(moves.len(), 2, "{moves:?}");
    assert_eq!(
        moves[1],
        (sock(A, 44501), sock(A, 44502), vec![b_out]),
        "the CHILD SA moved into the new IKE SA follows"
    );
    // The rekeyed SAs still work: a CHILD rekey on the new IKE SA.
    let spi = net.peers[0].installs[0].spi_in;
    let now = net.now;
    let acts = net.peers[0].mgr.rekey_child_sa("tun-a", spi, now);
    net.absorb(0, acts);
    net.run();
    assert_eq!(
        net.peers[1]
            .installs
            .last()
            .and_then(|i| i.udp_encap)
            .map(|e| e.remote_port),
        Some(44502)
    );
    assert_consistent(&net);
}

#[test]
fn esn_is_preferred_and_a_peer_that_prefers_32_bit_gets_it() {
    for (b_esn, expect) in [(true, true), (false, false)] {
        let mut net = Net::new();
        let (a, mut b) = cfgs(b"k", b"k");
        b.esn = b_esn;
        net.start(a, b);
        let [pa, pb] = &net.peers;
        assert_eq!((pa.installs[0].esn, pb.installs[0].esn), (expect, expect));
        // Rekeys (with and without PFS) negotiate it the same way.
        let spi = pa.installs[0].spi_in;
        let now = net.now;
        let acts = net.peers[0].mgr.rekey_child_sa("tun-a", spi, now);
        net.absorb(0, acts);
        net.run();
        let [pa, pb] = &net.peers;
        assert_eq!((pa.installs[1].esn, pb.installs[1].esn), (expect, expect));
        assert_pair(&pa.installs[1], &pb.installs[1]);
    }
}

#[test]
fn inbound_spis_avoid_what_the_data_plane_holds() {
    let mut net = Net::new();
    // A's data plane holds every even SPI, B's every SPI with the top bit
    // set (old SAs in their grace period, other connections' SAs).
    net.peers[0]
        .mgr
        .set_spi_in_use(std::sync::Arc::new(|spi| spi % 2 == 0));
    net.peers[1]
        .mgr
        .set_spi_in_use(std::sync::Arc::new(|spi| spi & 0x8000_0000 != 0));
    let (mut a, mut b) = cfgs(b"k", b"k");
    a.esp_ciphers = vec![EspCipher::from_api("aes256gcm", None, Some("ecp256")).unwrap()];
    b.esp_ciphers = a.esp_ciphers.clone();
    net.start(a, b);
    for round in 0..6 {
        let who = round % 2;
        let name = if who == 0 { "tun-a" } else { "tun-b" };
        let spi = net.peers[who].installs.last().unwrap().spi_in;
        let now = net.now;
        let acts = net.peers[who].mgr.rekey_child_sa(name, spi, now);
        net.absorb(who, acts);
        net.run();
    }
    let [pa, pb] = &net.peers;
    assert_eq!((pa.installs.len(), pb.installs.len()), (7, 7));
    assert!(pa.installs.iter().all(|i| i.spi_in % 2 == 1), "A's SPIs");
    assert!(
        pb.installs.iter().all(|i| i.spi_in & 0x8000_0000 == 0),
        "B's SPIs"
    );
    let mut spis: Vec<u32> = pa.installs.iter().map(|i| i.spi_in).collect();
    spis.sort_unstable();
    spis.dedup();
    assert_eq!(spis.len(), 7);
    assert_consistent(&net);
}

#[test]
fn volume_lifetimes_travel_with_every_install() {
    let mut net = Net::new();
    let (mut a, mut b) = cfgs(b"k", b"k");
    let va = gateway_ike::VolumeLifetimes {
        soft_packets: Some(1_000_000),
        hard_packets: Some(1_100_000),
        soft_bytes: Some(1 << 30),
        hard_bytes: None,
    };
    a.child_volume = va;
    b.child_volume = gateway_ike::VolumeLifetimes {
        soft_packets: Some(5),
        ..Default::default()
    };
    net.start(a, b);
    let spi = net.peers[1].installs[0].spi_in;
    let now = net.now;
    let acts = net.peers[1].mgr.rekey_child_sa("tun-b", spi, now);
    net.absorb(1, acts);
    net.run();
    let [pa, pb] = &net.peers;
    assert_eq!(pa.installs.len(), 2);
    assert!(pa.installs.iter().all(|i| i.volume == va));
    assert!(pb.installs.iter().all(|i| i.volume.soft_packets == Some(5)));
}

/// What the data plane's soft limit will do: ask for a rekey, perhaps
/// more than once before it happens, perhaps while one is under way.
#[test]
fn requested_rekeys_are_make_before_break_and_repeats_are_harmless() {
    let mut net = Net::new();
    let (a, b) = cfgs(b"k", b"k");
    net.start(a, b);
    let old = net.peers[0].installs[0].spi_in;
    let now = net.now;
    for _ in 0..3 {
        let acts = net.peers[0].mgr.rekey_child_sa("tun-a", old, now);
        net.absorb(0, acts);
    }
    // One more once the exchange is on the wire.
    assert!(net.step());
    let acts = net.peers[0].mgr.rekey_child_sa("tun-a", old, now);
    net.absorb(0, acts);
    net.run();
    // And one for the SA that is gone by now.
    let acts = net.peers[0].mgr.rekey_child_sa("tun-a", old, now);
    assert!(acts.is_empty(), "{acts:?}");
    let [pa, pb] = &net.peers;
    assert_eq!(
        (pa.installs.len(), pb.installs.len()),
        (2, 2),
        "{:?}",
        pa.logs
    );
    let new = pa.installs[1].spi_in;
    assert_eq!(pa.installs[1].replaces_spi_in, Some(old));
    // Install the new pair first, then remove the old one (after the
    // rekey grace).
    assert_eq!(pa.order, vec![(true, old), (true, new)]);
    net.advance(Duration::from_secs(6));
    let [pa, pb] = &net.peers;
    assert_eq!(pa.order, vec![(true, old), (true, new), (false, old)]);
    assert_eq!(pb.removes.len(), 1);
    assert_eq!(children(pa).len(), 1);
    assert_consistent(&net);
    assert!(pa.downs.is_empty() && pb.downs.is_empty());
}

/// The responder of a rekey whose DELETE of the old pair is lost does not
/// hold its outbound back forever: after the rekey grace it sends on the
/// new pair (saying so), and the retransmitted DELETE later removes the
/// old pair without a second switch.
#[test]
fn a_late_delete_does_not_hold_the_responders_outbound_back() {
    let mut net = Net::new();
    let (a, mut b) = cfgs(b"k", b"k");
    b.rekey_grace = Duration::from_secs(1);
    net.start(a, b);
    let old = net.peers[0].installs[0].spi_in;
    // The rekey's request, its response, then A's DELETE: lost once.
    let delete = net.sent.len() + 2;
    net.filter = Box::new(move |n, _| n != delete);
    let now = net.now;
    let acts = net.peers[0].mgr.rekey_child_sa("tun-a", old, now);
    net.absorb(0, acts);
    net.run();
    let new_b = net.peers[1].installs[1].spi_in;
    assert!(net.peers[1].installs[1].outbound_deferred);
    assert!(net.peers[1].activations.is_empty());
    net.advance(Duration::from_millis(1500));
    let start = now;
    let b = &net.peers[1];
    assert_eq!(b.activations.len(), 1);
    assert_eq!(b.activations[0].0, new_b);
    assert!(b.activations[0].1 - start >= Duration::from_secs(1));
    assert!(b.removes.is_empty(), "the old pair stays until deleted");
    assert!(
        b.logs.iter().any(|l| l.contains("did not delete")),
        "{:?}",
        b.logs
    );
    // A retransmits its DELETE; B removes the old pair after its grace.
    net.advance(Duration::from_secs(10));
    let b = &net.peers[1];
    assert_eq!(b.activations.len(), 1, "switched once");
    assert_eq!(b.removes.len(), 1);
    assert_eq!(net.peers[0].removes.len(), 1);
    assert_consistent(&net);
    assert!(net.peers.iter().all(|p| p.downs.is_empty()));
}

/// Rekeyed pairs still in their grace go with their IKE SA: moved along
/// by an IKE rekey, removed at once when the IKE SA is deleted.
#[test]
fn lingering_inbound_sas_follow_their_ike_sa() {
    let mut net = Net::new();
    let (a, b) = cfgs(b"k", b"k");
    net.start(a, b);
    let old = net.peers[0].installs[0].spi_in;
    let now = net.now;
    let acts = net.peers[0].mgr.rekey_child_sa("tun-a", old, now);
    net.absorb(0, acts);
    net.run();
    assert!(net.peers[0].removes.is_empty());
    // An IKE rekey within the grace: the lingering pair moves along and
    // still goes when its grace ends.
    let now = net.now;
    let acts = net.peers[1].mgr.rekey_ike_sa("tun-b", now);
    net.absorb(1, acts);
    net.run();
    assert!(net.peers.iter().all(|p| p.removes.is_empty()));
    net.advance(Duration::from_secs(6));
    assert_eq!(
        net.peers[0].removes,
        [(old, net.peers[0].installs[0].spi_out)]
    );
    assert_eq!(net.peers[1].removes.len(), 1);
    // Another rekey, then the connection goes within the grace: nothing
    // of it stays in the data plane.
    let cur = net.peers[0].installs[1].spi_in;
    let now = net.now;
    let acts = net.peers[0].mgr.rekey_child_sa("tun-a", cur, now);
    net.absorb(0, acts);
    net.run();
    assert_eq!(net.peers[0].removes.len(), 1);
    let now = net.now;
    let acts = net.peers[0].mgr.remove_connection("tun-a", now);
    net.absorb(0, acts);
    net.run();
    let mut removed: Vec<u32> = net.peers[0].removes.iter().map(|r| r.0).collect();
    removed.sort_unstable();
    let mut installed: Vec<u32> = net.peers[0].installs.iter().map(|i| i.spi_in).collect();
    installed.sort_unstable();
    assert_eq!(removed, installed, "every pair removed once");
}

/// Diffie-Hellman work held back, as a slow pool would: nothing of the
/// exchange goes out before it is done, retransmissions do not ask for it
/// again, and our request is not retransmitted while we work on its
/// response.
#[test]
fn exchanges_wait_for_their_dh_work_and_ask_once() {
    let mut net = Net::new();
    net.hold_jobs = true;
    let (mut a, mut b) = cfgs(b"k", b"k");
    for c in [&mut a, &mut b] {
        c.ike_ciphers =
            vec![IkeCipher::from_api("aes128gcm", Some("sha256"), Some("modp2048")).unwrap()];
    }
    net.start(a, b);
    assert!(net.sent.is_empty(), "IKE_SA_INIT needs A's key pair first");
    assert_eq!(net.jobs.len(), 1);
    net.run_jobs();
    net.run();
    // A's IKE_SA_INIT reached B, whose answer waits for its DH work.
    assert_eq!(net.sent.len(), 1);
    assert_eq!(net.jobs.len(), 1);
    assert!(
        net.jobs[0].1.unauthenticated,
        "B's work for a peer's half-open SA"
    );
    // A retransmits meanwhile: B drops it, asks nothing more.
    net.advance(Duration::from_secs(3));
    assert_eq!(net.sent.len(), 2, "one retransmission");
    assert_eq!(net.jobs.len(), 1);
    net.run_jobs();
    net.run();
    // B answered; A works on the shared secret and does not retransmit.
    assert_eq!(net.sent.len(), 3);
    assert_eq!(net.jobs.len(), 1);
    assert!(!net.jobs[0].1.unauthenticated, "our own work");
    net.advance(Duration::from_secs(20));
    assert_eq!(
        net.sent.len(),
        3,
        "no retransmission while the response is worked on"
    );
    net.run_jobs();
    net.run();
    let [pa, pb] = &net.peers;
    assert_eq!((pa.ups, pb.ups), (1, 1), "{:?} {:?}", pa.logs, pb.logs);
    assert_pair(&pa.installs[0], &pb.installs[0]);
    // A PFS CHILD rekey and an IKE rekey wait the same way.
    let spi = net.peers[0].installs[0].spi_in;
    let now = net.now;
    let acts = net.peers[0].mgr.rekey_ike_sa("tun-a", now);
    net.absorb(0, acts);
    for _ in 0..4 {
        net.run_jobs();
        net.run();
    }
    let acts = net.peers[1]
        .mgr
        .rekey_child_sa("tun-b", net.peers[1].installs[0].spi_in, now);
    net.absorb(1, acts);
    for _ in 0..4 {
        net.run_jobs();
        net.run();
    }
    let [pa, pb] = &net.peers;
    assert_eq!(pa.ups, 2, "IKE rekey: {:?}", pa.logs);
    assert_eq!((pa.installs.len(), pb.installs.len()), (2, 2));
    assert_eq!(pa.installs[1].replaces_spi_in, Some(spi));
    assert!(pa.downs.is_empty() && pb.downs.is_empty());
    assert_consistent(&net);
}

/// The driver refuses the DH work of half-open SAs under load: the SA is
/// dropped without a word; refusing other work only delays it.
#[test]
fn refused_dh_work_drops_only_half_open_sas() {
    let mut net = Net::new();
    net.hold_jobs = true;
    let (mut a, mut b) = cfgs(b"k", b"k");
    a.esp_ciphers = vec![EspCipher::from_api("aes256gcm", None, Some("ecp256")).unwrap()];
    b.esp_ciphers = a.esp_ciphers.clone();
    net.start(a, b);
    net.run_jobs();
    net.run();
    let (who, job) = net.jobs.pop().expect("B's job");
    assert_eq!(who, 1);
    let now = net.now;
    let acts = net.peers[1].mgr.handle_dh_result(job.refuse(), now);
    net.absorb(1, acts);
    assert_eq!(net.sent.len(), 1, "no answer to the IKE_SA_INIT");
    assert_eq!(net.peers[1].mgr.ike_sas().count(), 0);
    assert_eq!(net.peers[1].failed, vec![(false, DownReason::Overload)]);
    assert_eq!(net.peers[1].mgr.counters().dh_refused, 1);
    // A retries and gets through; then B's own work for a rekey is
    // refused: asked again, and the rekey completes.
    net.advance(Duration::from_secs(3));
    for _ in 0..4 {
        net.run_jobs();
        net.run();
    }
    assert_eq!((net.peers[0].ups, net.peers[1].ups), (1, 1));
    let spi = net.peers[1].installs[0].spi_in;
    let acts = net.peers[1].mgr.rekey_child_sa("tun-b", spi, net.now);
    net.absorb(1, acts);
    let (who, job) = net.jobs.pop().expect("B's key pair for PFS");
    assert!(!job.unauthenticated);
    let acts = net.peers[who].mgr.handle_dh_result(job.refuse(), net.now);
    net.absorb(who, acts);
    assert_eq!(net.jobs.len(), 1, "asked again");
    for _ in 0..4 {
        net.run_jobs();
        net.run();
    }
    assert_eq!(net.peers[1].installs.len(), 2, "{:?}", net.peers[1].logs);
    assert!(net.peers[1].downs.is_empty());
    assert_eq!(net.peers[1].mgr.counters().dh_refused, 2);
}

/// Peer `who`'s resumable IKE SAs as its owner would have persisted them.
fn persisted(p: &Peer) -> Vec<IkeSaSnapshot> {
    p.states
        .values()
        .filter_map(|s| s.as_deref().cloned())
        .collect()
}

/// Peer `who` restarts: a new manager with the same connection, its IKE
/// SAs resumed from their snapshots (taken `elapsed` ago). Returns the
/// resumed installs.
fn restart_from_snapshots(
    net: &mut Net,
    who: usize,
    cfg: ConnectionConfig,
    elapsed: Duration,
) -> Vec<ChildSaInstall> {
    let snaps = persisted(&net.peers[who]);
    let addr = if who == 0 { A } else { B };
    net.peers[who] = Peer::new(addr);
    let now = net.now;
    // Through the file format, as the daemon does.
    let back: Vec<IkeSaSnapshot> = snaps
        .iter()
        .map(|snap| {
            let text = serde_json::to_string(snap).unwrap();
            serde_json::from_str(&text).unwrap()
        })
        .collect();
    assert!(back == snaps);
    // An initiating connection does not initiate when it resumes.
    let (acts, results) = net.peers[who]
        .mgr
        .add_connection_resuming(cfg, &back, elapsed, now);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    net.absorb(who, acts);
    net.peers[who].installs.drain(..).collect()
}

#[test]
fn a_resumed_ike_sa_goes_on_without_a_handshake() {
    for restarted in [0usize, 1] {
        let mut net = Net::new();
        let (mut a, mut b) = cfgs(b"k", b"k");
        a.dpd_interval = Some(Duration::from_secs(10));
        b.dpd_interval = Some(Duration::from_secs(10));
        let cfg = if restarted == 0 { a.clone() } else { b.clone() };
        net.start(a, b);
        // Some DPD exchanges move the message IDs first.
        net.advance(Duration::from_secs(25));
        let before = net.peers[restarted].installs[0].spi_in;
        let original = net.peers[restarted].installs.remove(0);
        let snaps = persisted(&net.peers[restarted]);
        assert_eq!(snaps.len(), 1, "one resumable IKE SA");
        assert!(
            snaps[0].my_msg_id + snaps[0].peer_msg_id > 2,
            "{:?}",
            snaps[0]
        );
        let sent = net.sent.len();

        let resumed = restart_from_snapshots(&mut net, restarted, cfg, Duration::from_secs(1));
        // Nothing was sent to resume, and the CHILD SA is back with the
        // same SPIs and keys, marked as resumed.
        assert_eq!(net.sent.len(), sent);
        assert_eq!(resumed.len(), 1);
        let r = &resumed[0];
        assert_eq!((r.spi_in, r.spi_out), (before, original.spi_out));
        assert_eq!(*r.keys_in.encryption_key, *original.keys_in.encryption_key);
        assert_eq!(
            *r.keys_out.encryption_key,
            *original.keys_out.encryption_key
        );
        assert!(r.resume.is_some() && original.resume.is_none());
        assert_eq!(net.peers[restarted].ups, 1);

        // DPD both ways keeps working on the resumed message IDs.
        net.advance(Duration::from_secs(35));
        let other = 1 - restarted;
        assert!(
            net.peers[0].downs.is_empty() && net.peers[1].downs.is_empty(),
            "{:?} {:?}",
            net.peers[restarted].logs,
            net.peers[other].logs
        );
        assert_eq!(net.peers[other].ups, 1, "no new IKE SA");

        // A CHILD rekey started by the peer, and an IKE rekey started by
        // the resumed side, both succeed with the resumed keys.
        let name = |w: usize| if w == 0 { "tun-a" } else { "tun-b" };
        let spi = net.peers[other].installs[0].spi_in;
        let now = net.now;
        let acts = net.peers[other].mgr.rekey_child_sa(name(other), spi, now);
        net.absorb(other, acts);
        net.run();
        assert_eq!(net.peers[restarted].installs.len(), 1);
        assert_pair(
            net.peers[other].installs.last().unwrap(),
            &net.peers[restarted].installs[0],
        );
        let acts = net.peers[restarted].mgr.rekey_ike_sa(name(restarted), now);
        net.absorb(restarted, acts);
        net.run();
        net.advance(Duration::from_secs(30));
        assert!(
            net.peers[0].downs.is_empty() && net.peers[1].downs.is_empty(),
            "{:?}",
            net.peers[restarted].logs
        );
        assert_eq!(net.peers[restarted].mgr.ike_sas().count(), 1);
        assert_eq!(net.peers[other].mgr.ike_sas().count(), 1);
        assert_consistent(&net);
        // The rekeyed IKE SA is what is persisted now; the old one is gone.
        let snaps = persisted(&net.peers[restarted]);
        assert_eq!(snaps.len(), 1);
        assert_eq!(
            snaps[0].my_spi(),
            net.peers[restarted].mgr.ike_sas().next().unwrap().my_spi()
        );
    }
}

#[test]
fn a_deleted_ike_sa_is_no_longer_persisted() {
    let mut net = Net::new();
    let (a, b) = cfgs(b"k", b"k");
    net.start(a, b);
    assert_eq!(persisted(&net.peers[0]).len(), 1);
    assert_eq!(persisted(&net.peers[1]).len(), 1);
    let now = net.now;
    let acts = net.peers[0].mgr.delete_ike_sa("tun-a", now);
    net.absorb(0, acts);
    net.run();
    assert!(persisted(&net.peers[0]).is_empty());
    assert!(persisted(&net.peers[1]).is_empty());
}

#[test]
fn snapshots_that_do_not_fit_are_refused() {
    let mut net = Net::new();
    let (a, b) = cfgs(b"k", b"k");
    net.start(a.clone(), b);
    let snap = persisted(&net.peers[0]).remove(0);
    let now = net.now;
    let restore = |snap: &IkeSaSnapshot, cfg: Option<ConnectionConfig>| {
        let mut mgr = IkeManager::new();
        if let Some(cfg) = cfg {
            mgr.add_connection(cfg, now);
        }
        mgr.restore(snap, Duration::ZERO, now)
    };
    let mut passive = a.clone();
    passive.initiate = false;
    assert!(restore(&snap, Some(passive.clone())).is_ok());
    assert!(matches!(
        restore(&snap, None),
        Err(RestoreError::UnknownConnection(_))
    ));
    let mut moved = passive.clone();
    moved.remote_addr = ip("192.0.2.9");
    assert_eq!(
        restore(&snap, Some(moved)).err(),
        Some(RestoreError::AddressesChanged)
    );
    let mut bad = snap.clone();
    bad.version += 1;
    assert!(matches!(
        restore(&bad, Some(passive.clone())),
        Err(RestoreError::Version(_))
    ));
    let mut bad = snap.clone();
    bad.keys.sk_ei.pop();
    assert!(matches!(
        restore(&bad, Some(passive.clone())),
        Err(RestoreError::Invalid(_))
    ));
    let mut bad = snap.clone();
    bad.children[0].keys_out.encryption_key.push(0);
    assert!(matches!(
        restore(&bad, Some(passive.clone())),
        Err(RestoreError::Invalid(_))
    ));
    let mut bad = snap.clone();
    bad.encr = 9999;
    assert!(matches!(
        restore(&bad, Some(passive.clone())),
        Err(RestoreError::Invalid(_))
    ));
    let mut bad = snap.clone();
    bad.children[0].spi_in = 7;
    assert!(matches!(
        restore(&bad, Some(passive.clone())),
        Err(RestoreError::Invalid(_))
    ));
    // Resumed twice in one manager: refused, nothing changes.
    let mut mgr = IkeManager::new();
    mgr.add_connection(passive, now);
    assert!(mgr.restore(&snap, Duration::ZERO, now).is_ok());
    assert_eq!(
        mgr.restore(&snap, Duration::ZERO, now).err(),
        Some(RestoreError::Exists(snap.my_spi()))
    );
    assert_eq!(mgr.ike_sas().count(), 1);
}

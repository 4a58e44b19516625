//! The real `UdpDriver` on loopback (no root: high ports on 127.0.0.0/8):
//! two drivers with one connection between them, then a flood of
//! IKE_SA_INIT with modp4096 from the peer's own address while DPD keeps
//! running, CHILD rekeys asked through the command channel, and an agent
//! that does not read its events for a while. Assertions are on events,
//! never on timings; every wait is bounded.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_ike::driver::{Command, DhPool, UdpDriver};
use gateway_ike::testing::ike_sa_init_request;
use gateway_ike::{Action, ConnectionConfig, EspCipher, IkeCipher, Limits, Psk};
use tokio::sync::mpsc;

const PSK: &[u8] = b"loopback pre-shared key 0123456789";

fn x25519() -> IkeCipher {
    IkeCipher::from_api("aes256gcm", Some("sha256"), Some("curve25519")).unwrap()
}

fn modp4096() -> IkeCipher {
    IkeCipher::from_api("aes256gcm", Some("sha256"), Some("modp4096")).unwrap()
}

/// A port free on both addresses, and the next one (IKE and NAT-T).
fn free_port(a: IpAddr, b: IpAddr) -> u16 {
    for _ in 0..100 {
        let probe = UdpSocket::bind(SocketAddr::new(a, 0)).unwrap();
        let p = probe.local_addr().unwrap().port();
        drop(probe);
        if p >= 65_000 {
            continue;
        }
        let all = [a, b]
            .iter()
            .flat_map(|ip| [p, p + 1].map(|port| UdpSocket::bind(SocketAddr::new(*ip, port))))
            .collect::<Vec<_>>();
        if all.iter().all(Result::is_ok) {
            return p;
        }
    }
    panic!("no free port pair on loopback");
}

fn conn(name: &str, local: IpAddr, remote: IpAddr, port: u16, initiate: bool) -> ConnectionConfig {
    let mut c = ConnectionConfig::new(name, local, remote, Psk::new(PSK.to_vec()));
    c.initiate = initiate;
    c.ike_port = port;
    c.remote_port = port;
    c.natt_port = port + 1;
    c.ike_ciphers = vec![x25519(), modp4096()];
    c.esp_ciphers = vec![EspCipher::from_api("aes256gcm", None, None).unwrap()];
    // DPD after 1 s of silence, dead after 3 unanswered retransmissions
    // (1 s, 1.5 s, 2.25 s): a peer that stops answering is declared dead
    // within about 6 s.
    c.dpd_interval = Some(Duration::from_secs(1));
    c.retransmit_timeout = Duration::from_secs(1);
    c.retransmit_base = 1.5;
    c.retransmit_tries = 3;
    c
}

/// One driver and everything it reported.
struct Side {
    cmd: mpsc::Sender<Command>,
    events: Arc<Mutex<Vec<Action>>>,
    stats: Arc<gateway_ike::driver::Stats>,
}

impl Side {
    async fn start(addr: IpAddr, port: u16, setup: impl FnOnce(&mut UdpDriver)) -> Self {
        Self::start_listening(&[addr], port, setup).await
    }

    async fn start_listening(
        addrs: &[IpAddr],
        port: u16,
        setup: impl FnOnce(&mut UdpDriver),
    ) -> Self {
        let mut d = UdpDriver::bind(addrs, port, port + 1).await.expect("bind");
        setup(&mut d);
        let stats = d.stats();
        let (cmd, cmd_rx) = mpsc::channel(16);
        let (ev_tx, mut ev_rx) = mpsc::channel(64);
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        tokio::spawn(async move {
            while let Some(a) = ev_rx.recv().await {
                sink.lock().unwrap().push(a);
            }
        });
        tokio::spawn(d.run(cmd_rx, ev_tx));
        Self { cmd, events, stats }
    }

    /// Asks the running driver to listen on exactly `addrs`; the ones it
    /// could not bind.
    async fn listen(&self, addrs: &[IpAddr]) -> Vec<IpAddr> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.cmd
            .send(Command::Listen {
                addrs: addrs.to_vec(),
                reply,
            })
            .await
            .unwrap();
        answer.await.unwrap().into_iter().map(|(a, _)| a).collect()
    }

    fn count(&self, f: impl Fn(&Action) -> bool) -> usize {
        self.events.lock().unwrap().iter().filter(|a| f(a)).count()
    }

    /// Waits (bounded) until `f` holds for the events.
    async fn wait(&self, secs: u64, what: &str, f: impl Fn(&[Action]) -> bool) {
        for _ in 0..secs * 20 {
            if f(&self.events.lock().unwrap()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{what}: not within {secs} s: {:?}",
            self.events.lock().unwrap()
        );
    }

    fn lost_an_sa(&self) -> usize {
        self.count(|a| {
            matches!(
                a,
                Action::IkeSaDown { .. }
                    | Action::IkeSaFailed {
                        initiator: true,
                        ..
                    }
            )
        })
    }

    fn installs(&self) -> Vec<(u32, Option<u32>)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|a| match a {
                Action::InstallChildSa(c) => Some((c.spi_in, c.replaces_spi_in)),
                _ => None,
            })
            .collect()
    }
}

/// Connection "a" on A (initiating) and "b" on B (responding) to each
/// other.
async fn connect(a: &Side, a_ip: IpAddr, b: &Side, b_ip: IpAddr, port: u16) {
    b.cmd
        .send(Command::AddConnection(Box::new(conn(
            "b", b_ip, a_ip, port, false,
        ))))
        .await
        .unwrap();
    a.cmd
        .send(Command::AddConnection(Box::new(conn(
            "a", a_ip, b_ip, port, true,
        ))))
        .await
        .unwrap();
}

fn is_install(a: &Action) -> bool {
    matches!(a, Action::InstallChildSa(_))
}

/// An IKE_SA_INIT flood with modp4096 from the customer gateway's own
/// address (another port: nothing stops a spoofer from doing the same)
/// while the established IKE SA between the two drivers runs DPD every
/// second. The responder's limits are lifted so that every request asks
/// for Diffie-Hellman work: only the driver's pool stands between the
/// flood and the event loop. The established SA must stay up on both
/// sides (a missed DPD answer would bring it down within ~6 s, and the
/// flood lasts longer than that), and answer a CHILD rekey afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ike_sa_init_flood_does_not_starve_dpd() {
    let a_ip: IpAddr = "127.0.3.1".parse().unwrap();
    let b_ip: IpAddr = "127.0.3.2".parse().unwrap();
    let port = free_port(a_ip, b_ip);
    let b = Side::start(b_ip, port, |d| {
        d.manager_mut().set_limits(Limits {
            cookie_threshold: usize::MAX,
            cookie_threshold_per_addr: usize::MAX,
            max_half_open_per_addr: usize::MAX,
            ..Limits::default()
        });
        d.set_dh_pool(DhPool {
            workers: 1,
            ..DhPool::default()
        });
    })
    .await;
    let a = Side::start(a_ip, port, |_| {}).await;
    connect(&a, a_ip, &b, b_ip, port).await;
    a.wait(10, "A's CHILD SA", |e| e.iter().any(is_install))
        .await;
    b.wait(10, "B's CHILD SA", |e| e.iter().any(is_install))
        .await;

    // 2000 requests from A's address, each a new half-open SA with a
    // modp4096 KE (a valid public value needs no work from the sender).
    let target = SocketAddr::new(b_ip, port);
    let flood = std::thread::spawn(move || {
        let sock = UdpSocket::bind(SocketAddr::new(a_ip, 0)).unwrap();
        let mut ke = vec![0x5a; 512];
        ke[0] = 0x7f;
        for i in 0..2000u64 {
            let msg = ike_sa_init_request(modp4096(), 0xf100_0000 + i, ke.clone(), vec![7; 32]);
            let _ = sock.send_to(&msg, target);
            if i % 100 == 99 {
                // About 8 s in all: longer than DPD needs to give up.
                std::thread::sleep(Duration::from_millis(400));
            }
        }
    });
    tokio::task::spawn_blocking(move || flood.join().unwrap())
        .await
        .unwrap();
    // A few more DPD rounds after the last request.
    tokio::time::sleep(Duration::from_secs(3)).await;

    assert_eq!(a.lost_an_sa(), 0, "A lost its IKE SA");
    assert_eq!(b.lost_an_sa(), 0, "B lost its IKE SA");
    assert!(
        b.stats.dh_jobs_refused() > 0,
        "the per-address cap refused work: {} run",
        b.stats.dh_jobs_run()
    );
    assert!(b.stats.dh_jobs_run() > 0);
    // And the SA still works: a rekey asked twice through the commands.
    let (old, _) = a.installs()[0];
    for _ in 0..2 {
        a.cmd
            .send(Command::RekeyChildSa {
                conn: "a".into(),
                spi_in: old,
            })
            .await
            .unwrap();
    }
    a.wait(10, "the rekeyed CHILD SA", |e| {
        e.iter()
            .any(|x| matches!(x, Action::RemoveChildSa { spi_in, .. } if *spi_in == old))
    })
    .await;
    let installs = a.installs();
    assert_eq!(installs.len(), 2, "one rekey, not two");
    assert_eq!(installs[1].1, Some(old));
    assert_eq!(a.lost_an_sa(), 0);
}

/// An agent that does not read its events: the driver keeps the protocol
/// running (the handshake completes, DPD is answered) and hands over
/// every state change, in order, once the agent reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_agent_loses_no_sa_event_and_stalls_nothing() {
    let a_ip: IpAddr = "127.0.4.1".parse().unwrap();
    let b_ip: IpAddr = "127.0.4.2".parse().unwrap();
    let port = free_port(a_ip, b_ip);
    let b = Side::start(b_ip, port, |_| {}).await;
    // A's agent: a channel of one event, not read for now.
    let mut d = UdpDriver::bind(&[a_ip], port, port + 1).await.unwrap();
    let stats = d.stats();
    let _ = &mut d;
    let (cmd, cmd_rx) = mpsc::channel(16);
    let (ev_tx, mut ev_rx) = mpsc::channel(1);
    tokio::spawn(d.run(cmd_rx, ev_tx));
    b.cmd
        .send(Command::AddConnection(Box::new(conn(
            "b", b_ip, a_ip, port, false,
        ))))
        .await
        .unwrap();
    cmd.send(Command::AddConnection(Box::new(conn(
        "a", a_ip, b_ip, port, true,
    ))))
    .await
    .unwrap();
    b.wait(10, "B's CHILD SA", |e| e.iter().any(is_install))
        .await;
    // Long enough for B to declare A dead if A's loop were stuck.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(b.lost_an_sa(), 0, "A stopped answering DPD");
    // A rekey while A's agent is still not reading.
    let (b_spi, _) = b.installs()[0];
    b.cmd
        .send(Command::RekeyChildSa {
            conn: "b".into(),
            spi_in: b_spi,
        })
        .await
        .unwrap();
    b.wait(10, "B's rekey", |e| {
        e.iter().filter(|a| is_install(a)).count() == 2
    })
    .await;
    // Now A's agent reads: every state change is there, in order (the
    // old pair's removal after the rekey grace).
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !got
        .iter()
        .any(|a| matches!(a, Action::RemoveChildSa { .. }))
        && std::time::Instant::now() < deadline
    {
        if let Ok(Some(a)) = tokio::time::timeout(Duration::from_secs(1), ev_rx.recv()).await {
            got.push(a);
        }
    }
    let kinds: Vec<&str> = got
        .iter()
        .filter_map(|a| match a {
            Action::IkeSaUp { .. } => Some("up"),
            Action::InstallChildSa(_) => Some("install"),
            Action::RemoveChildSa { .. } => Some("remove"),
            Action::ActivateOutbound { .. } => Some("activate"),
            Action::IkeSaDown { .. } | Action::IkeSaFailed { .. } => Some("down"),
            _ => None,
        })
        .collect();
    // A answered B's rekey: it sends on the new pair once B deleted the old.
    assert_eq!(
        kinds,
        ["up", "install", "install", "activate", "remove"],
        "{got:?}"
    );
    let _ = stats.events_dropped();
}

/// With `hold_sends_until_applied`, the responder's IKE_AUTH response (the
/// datagram that lets the initiator send ESP on the new CHILD SA) leaves
/// only once the responder's agent acknowledged the install: until then
/// the initiator has no CHILD SA; the acknowledgement releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_learns_of_a_child_sa_only_once_it_is_applied() {
    let a_ip: IpAddr = "127.0.5.1".parse().unwrap();
    let b_ip: IpAddr = "127.0.5.2".parse().unwrap();
    let port = free_port(a_ip, b_ip);
    // B's agent never acknowledges by itself; the hold would end after a
    // minute.
    let b = Side::start(b_ip, port, |d| {
        d.hold_sends_until_applied(Duration::from_secs(60))
    })
    .await;
    let a = Side::start(a_ip, port, |_| {}).await;
    connect(&a, a_ip, &b, b_ip, port).await;
    b.wait(10, "B's CHILD SA", |e| e.iter().any(is_install))
        .await;
    // B installed; its response is held: A has nothing (several of its
    // retransmissions later, too).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        a.count(is_install),
        0,
        "A learnt of the SA before B applied it"
    );
    let (spi_in, _) = b.installs()[0];
    b.cmd
        .send(Command::ChildSaApplied { spi_in })
        .await
        .unwrap();
    a.wait(10, "A's CHILD SA after B applied its own", |e| {
        e.iter().any(is_install)
    })
    .await;
    assert_eq!(b.stats.sends_released_unapplied(), 0);
    assert_eq!(a.lost_an_sa() + b.lost_an_sa(), 0);
}

/// A VPN gateway created while the daemon runs: the responder's driver
/// starts listening nowhere, and its connection on a public address it
/// does not listen on yet gets no answer; once told to listen there
/// (`Command::Listen`), the initiator's retransmissions bring the SA up.
/// Told to listen nowhere again, the driver closes the sockets (the
/// address's ports can be bound by someone else).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_are_listened_on_as_gateways_come_and_go() {
    let a_ip: IpAddr = "127.0.6.1".parse().unwrap();
    let b_ip: IpAddr = "127.0.6.2".parse().unwrap();
    let port = free_port(a_ip, b_ip);
    let b = Side::start_listening(&[], port, |_| {}).await;
    let a = Side::start(a_ip, port, |_| {}).await;
    connect(&a, a_ip, &b, b_ip, port).await;
    // The first request and a retransmission (after 1 s) go unanswered.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(b.count(is_install), 0, "B answered on an unbound address");
    assert!(b.listen(&[b_ip]).await.is_empty(), "bind {b_ip}");
    a.wait(10, "A's CHILD SA", |e| e.iter().any(is_install))
        .await;
    b.wait(10, "B's CHILD SA", |e| e.iter().any(is_install))
        .await;
    // An address that is not on this host cannot be bound: reported, and
    // the others stay.
    let elsewhere: IpAddr = "192.0.2.77".parse().unwrap();
    let failed = b.listen(&[b_ip, elsewhere]).await;
    assert_eq!(failed, vec![elsewhere], "only the foreign address fails");
    assert!(b.listen(&[]).await.is_empty());
    // The driver's sockets are closed: the ports are free again (the
    // aborted receive loops drop theirs shortly after).
    let mut free = false;
    for _ in 0..50 {
        if [port, port + 1]
            .iter()
            .all(|p| UdpSocket::bind(SocketAddr::new(b_ip, *p)).is_ok())
        {
            free = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(free, "the released address's ports are still bound");
}

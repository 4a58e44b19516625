use super::routing::*;
use super::status::*;
use super::*;

fn update(v4: BgpSessionStatus, v6: BgpSessionStatus) -> ConnectionStatusUpdate {
    ConnectionStatusUpdate {
        bgp_status_ipv4: v4,
        bgp_status_ipv6: v6,
        ..down_update()
    }
}

#[test]
fn failover_picks_a_usable_tunnel_of_the_same_connection() {
    let t = |connection, id, usable| TunnelState {
        connection,
        id,
        usable,
    };
    let all = [
        t("a", 1, false),
        t("b", 2, true),
        t("a", 3, true),
        t("a", 4, false),
    ];
    // Its own tunnel while usable.
    assert_eq!(pick_carrier(all[2], all), 3);
    // Down: the connection's usable tunnel, never another connection's.
    assert_eq!(pick_carrier(all[0], all), 3);
    assert_eq!(pick_carrier(all[3], all), 3);
    // Nothing usable in the connection: stays where it was planned.
    let none = [t("a", 1, false), t("b", 2, true), t("a", 4, false)];
    assert_eq!(pick_carrier(none[0], none), 1);
    assert_eq!(pick_carrier(none[2], none), 4);
}

#[test]
fn connection_status_follows_the_bgp_sessions() {
    use BgpSessionStatus::*;
    assert_eq!(connection_status(&update(Up, Up)), ConnectionStatus::Active);
    assert_eq!(
        connection_status(&update(Up, Disabled)),
        ConnectionStatus::Active
    );
    assert_eq!(
        connection_status(&update(Up, Down)),
        ConnectionStatus::LimitedConnectivity
    );
    assert_eq!(
        connection_status(&update(Down, Down)),
        ConnectionStatus::Down
    );
    assert_eq!(
        connection_status(&update(Disabled, Disabled)),
        ConnectionStatus::Down
    );
}

#[test]
fn only_the_carrier_or_the_last_established_ike_sa_concerns_the_tunnel() {
    let (a, b, c, half_open) = (IkeSaId(1), IkeSaId(2), IkeSaId(3), IkeSaId(9));
    let mut t = IkeTrack::default();
    // A half-open SA that never came up: nothing to do with the tunnel.
    assert_eq!(t.down(half_open), IkeLoss::NotEstablished);
    t.up(a, None);
    t.installed(a);
    assert_eq!(t.down(half_open), IkeLoss::NotEstablished);
    // A rekey: the new IKE SA carries the CHILD SA it adopted.
    t.up(b, Some(a));
    assert!(!t.is_up(a) && t.is_up(b));
    assert_eq!(t.carrier, Some(b));
    assert_eq!(t.down(a), IkeLoss::NotEstablished);
    // INITIAL_CONTACT: the new SA is up and installed first, then the
    // old one goes without touching the tunnel.
    t.up(c, None);
    t.installed(c);
    assert_eq!(t.down(b), IkeLoss::Other);
    // The carrier goes: the tunnel loses its CHILD SA and its IKE SA.
    assert_eq!(t.down(c), IkeLoss::Carrier { still_up: false });
    assert!(t.up.is_empty() && t.carrier.is_none());
    // The carrier goes while another SA is up: the CHILD SA is lost,
    // the IKE SA is not.
    t.up(a, None);
    t.up(b, None);
    t.installed(b);
    assert_eq!(t.down(b), IkeLoss::Carrier { still_up: true });
    // The last one without a CHILD SA: still the end of the tunnel's IKE.
    assert_eq!(t.down(a), IkeLoss::Carrier { still_up: false });
}

#[test]
fn a_usable_tunnel_reports_the_inner_mtu_of_its_suite_and_wan_mtu() {
    use gateway_esp::table::SaTable;

    let dp = GatewayDataPlane::new(Arc::new(SaTable::new()));
    dp.set_wan_mtu(1500);
    let (local, remote): (IpAddr, IpAddr) =
        ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
    let suite = Suite::from_api_names("aes256gcm", None).unwrap();
    dp.install_outbound_sa(OutboundSaConfig {
        tunnel: 1,
        spi: 0x1100,
        keys: SaKeys::new(suite, &[7; 36], &[]).unwrap(),
        esn: true,
        outer: OuterHeader {
            src: local,
            dst: remote,
            udp: Some(UdpEncap {
                src_port: 4500,
                dst_port: 4500,
            }),
            ttl: 64,
        },
        lifetime: Lifetime::NONE,
    })
    .unwrap();
    let mut t = RunningTunnel {
        plan: TunnelPlan {
            name: "conn/v4".into(),
            connection: "conn".into(),
            family: Family::V4,
            local,
            remote,
            tun: "s2stest0".into(),
            interco: Vec::new(),
            initiate: true,
            ikev2_ciphers: Vec::new(),
            esp_ciphers: Vec::new(),
            ike_fingerprint: String::new(),
            allowed_sources: Vec::new(),
            mss_clamp: true,
            vpn_gateway: "vgw".into(),
            bandwidth: 0,
        },
        id: 1,
        ike_up: true,
        ike: IkeTrack::default(),
        child: Some((0x100, 0x1100)),
        child_since: None,
        child_installs: 1,
        reinitiate_at: None,
        inbound: BTreeSet::new(),
        pending_out: Vec::new(),
    };
    // AES-256-GCM over IPv4 with NAT-T on a 1500-byte WAN: 20 (IPv4) +
    // 8 (UDP) + 8 (SPI, sequence) + 8 (IV) + 16 (ICV) = 60 bytes, 1440
    // left (a multiple of GCM's 4-byte alignment), less the 2-byte ESP
    // trailer: 1438. TCP MSS: 1438 - 40 over IPv4, 1438 - 60 over IPv6.
    let mut e = down_update();
    report_tunnel(&mut e, &t, &dp);
    assert_eq!(e.tunnel_status_ipv4, TunnelStatus::Up);
    assert_eq!(
        e.tunnel_mtu_ipv4,
        Some(TunnelMtu {
            inner_mtu: 1438,
            tcp_mss_ipv4: 1398,
            tcp_mss_ipv6: 1378,
            mss_clamp: true,
        })
    );
    assert_eq!(e.tunnel_mtu_ipv6, None, "no IPv6 tunnel");
    // Clamping off for the gateway type: the sizes stay, advisory.
    t.plan.mss_clamp = false;
    let mut e = down_update();
    report_tunnel(&mut e, &t, &dp);
    assert_eq!(
        e.tunnel_mtu_ipv4.map(|m| (m.inner_mtu, m.mss_clamp)),
        Some((1438, false))
    );
    // Not usable (IKE SA down): down, and no sizes.
    t.ike_up = false;
    let mut e = down_update();
    report_tunnel(&mut e, &t, &dp);
    assert_eq!(e.tunnel_status_ipv4, TunnelStatus::Down);
    assert_eq!(e.tunnel_mtu_ipv4, None);
    // Its outbound SA gone: nothing to report either.
    t.ike_up = true;
    dp.remove_outbound_sa(1, 0x1100).unwrap();
    let mut e = down_update();
    report_tunnel(&mut e, &t, &dp);
    assert_eq!(e.tunnel_mtu_ipv4, None);
}

/// A runtime over a real SA table, its store in a temporary directory
/// (removed on drop), with one tunnel `conn/v4` (id 1) from 192.0.2.1
/// to 192.0.2.2; the drivers' channels stay open while it lives.
struct Harness {
    rt: Runtime,
    table: Arc<gateway_esp::table::SaTable>,
    store: Store,
    dir: std::path::PathBuf,
    _ike: mpsc::Receiver<IkeCommand>,
    _bgp: mpsc::Receiver<BgpEvent>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const LOCAL: &str = "192.0.2.1";
const REMOTE: &str = "192.0.2.2";

fn harness(tag: &str) -> Harness {
    use crate::dataplane::slowpath::SlowPath;
    use gateway_esp::table::SaTable;

    let dir = std::env::temp_dir().join(format!("s2s-agent-{tag}-{}", std::process::id()));
    let store = Store::open(&dir).unwrap();
    let table = Arc::new(SaTable::new());
    let datapath = DataPathHandle {
        dataplane: Arc::new(GatewayDataPlane::new(Arc::clone(&table))),
        slow: Arc::new(std::sync::Mutex::new(
            SlowPath::new(Arc::clone(&table)).unwrap(),
        )),
        local: None,
    };
    let (ike_tx, ike_rx) = mpsc::channel(16);
    let (bgp, bgp_events) = gateway_bgp::driver::spawn();
    let mut rt = Runtime::new(
        store.clone(),
        datapath,
        ike_tx,
        bgp,
        SharedSnapshot::default(),
        Lifetime::NONE,
    );
    let name = "conn/v4".to_string();
    rt.tunnels.insert(
        name.clone(),
        RunningTunnel {
            plan: TunnelPlan {
                name,
                connection: "conn".into(),
                family: Family::V4,
                local: LOCAL.parse().unwrap(),
                remote: REMOTE.parse().unwrap(),
                tun: format!("s2stest{tag}"),
                interco: Vec::new(),
                initiate: true,
                ikev2_ciphers: Vec::new(),
                esp_ciphers: Vec::new(),
                ike_fingerprint: "fp".into(),
                allowed_sources: Vec::new(),
                mss_clamp: true,
                vpn_gateway: "vgw".into(),
                bandwidth: 0,
            },
            id: 1,
            ike_up: false,
            ike: IkeTrack::default(),
            child: None,
            child_since: None,
            child_installs: 0,
            reinitiate_at: None,
            inbound: BTreeSet::new(),
            pending_out: Vec::new(),
        },
    );
    Harness {
        rt,
        table,
        store,
        dir,
        _ike: ike_rx,
        _bgp: bgp_events,
    }
}

/// The CHILD SA pair `spi_in` / `spi_in + 0x1000` of IKE SA `ike` on
/// `conn/v4`; `replaces`: the peer's rekey of that CHILD SA, which we
/// answered.
fn child_install(ike: u64, spi_in: u32, replaces: Option<u32>) -> IkeAction {
    use gateway_ike::crypto::Secret;
    use gateway_ike::EspKeys;
    let key = |b: u8| EspKeys {
        encryption_key: Secret::new(vec![b; 36]),
        integrity_key: Secret::new(Vec::new()),
    };
    IkeAction::InstallChildSa(ChildSaInstall {
        conn: "conn/v4".into(),
        ike: IkeSaId(ike),
        spi_in,
        spi_out: spi_in + 0x1000,
        encryption: "aes256gcm",
        integrity: None,
        keys_in: key(1),
        keys_out: key(2),
        esn: true,
        udp_encap: None,
        local_addr: LOCAL.parse().unwrap(),
        remote_addr: REMOTE.parse().unwrap(),
        local_ts: Vec::new(),
        remote_ts: Vec::new(),
        replaces_spi_in: replaces,
        outbound_deferred: replaces.is_some(),
        volume: gateway_ike::VolumeLifetimes::default(),
        resume: None,
    })
}

/// IKE SA `ike` of `conn/v4` up (a rekey of `rekey_of`).
fn ike_up(ike: u64, rekey_of: Option<u64>) -> IkeAction {
    IkeAction::IkeSaUp {
        conn: "conn/v4".into(),
        ike: IkeSaId(ike),
        spi_i: ike,
        spi_r: ike + 1,
        local: std::net::SocketAddr::new(LOCAL.parse().unwrap(), 500),
        remote: std::net::SocketAddr::new(REMOTE.parse().unwrap(), 500),
        rekey_of: rekey_of.map(IkeSaId),
        resumed: false,
    }
}

/// The runtime itself, fed IKE events as the driver reports them, with
/// the real SA table behind it.
#[tokio::test]
#[ignore = "needs root: the slow path opens raw sockets"]
async fn a_half_open_failure_never_removes_the_tunnels_child_sa() {
    let mut h = harness("ike");
    let table = Arc::clone(&h.table);
    let rt = &mut h.rt;
    let rekey = child_install;
    let install = |ike: u64, spi_in: u32| rekey(ike, spi_in, None);
    let activate = |ike: u64, spi_in: u32| IkeAction::ActivateOutbound {
        conn: "conn/v4".into(),
        ike: IkeSaId(ike),
        spi_in,
        spi_out: spi_in + 0x1000,
    };
    let up = ike_up;
    let down = |ike: u64, reason: DownReason| IkeAction::IkeSaDown {
        conn: "conn/v4".into(),
        ike: IkeSaId(ike),
        reason,
    };
    let failed = |ike: u64, initiator: bool, reason: DownReason| IkeAction::IkeSaFailed {
        conn: "conn/v4".into(),
        ike: IkeSaId(ike),
        initiator,
        reason,
    };
    let remove = |ike: u64, spi_in: u32| IkeAction::RemoveChildSa {
        conn: "conn/v4".into(),
        ike: IkeSaId(ike),
        spi_in,
        spi_out: spi_in + 0x1000,
    };
    let usable = |rt: &Runtime| rt.tunnels["conn/v4"].usable();

    // Keys from an IKE SA that is not up never reach the data plane.
    rt.on_ike(install(7, 0x700));
    assert!(table.inbound(0x700).is_none());
    // The tunnel's IKE SA and its CHILD SA.
    rt.on_ike(up(1, None));
    rt.on_ike(install(1, 0x100));
    assert!(table.inbound(0x100).is_some() && usable(rt));
    // Half-open SAs refused or expired (the peer's, and ours): the
    // tunnel and its SAs stay, and nothing is re-initiated.
    rt.on_ike(failed(9, false, DownReason::NoProposalChosen));
    rt.on_ike(failed(10, false, DownReason::HalfOpenTimeout));
    rt.on_ike(failed(11, true, DownReason::AuthenticationFailed));
    rt.on_ike(down(9, DownReason::HalfOpenTimeout));
    assert!(table.inbound(0x100).is_some() && usable(rt));
    assert_eq!(table.outbound(1).map(|o| o.sa.spi()), Some(0x1100));
    assert!(rt.tunnels["conn/v4"].reinitiate_at.is_none());
    // An IKE rekey: the new SA carries the tunnel; the old one's end
    // (never reported, but if it were) changes nothing.
    rt.on_ike(up(2, Some(1)));
    rt.on_ike(down(1, DownReason::Deleted));
    assert!(usable(rt));
    // INITIAL_CONTACT: the new SA and its CHILD SA first, then the old.
    rt.on_ike(up(3, None));
    rt.on_ike(install(3, 0x300));
    rt.on_ike(remove(2, 0x100));
    rt.on_ike(down(2, DownReason::Replaced));
    assert!(usable(rt) && table.inbound(0x300).is_some());
    assert_eq!(table.outbound(1).map(|o| o.sa.spi()), Some(0x1300));
    // The peer rekeys the CHILD SA: the new pair decrypts at once, but
    // we send on the old one until the peer deleted it.
    rt.on_ike(rekey(3, 0x301, Some(0x300)));
    assert!(table.inbound(0x301).is_some() && table.inbound(0x300).is_some());
    assert_eq!(table.outbound(1).map(|o| o.sa.spi()), Some(0x1300));
    assert!(usable(rt));
    rt.on_ike(activate(3, 0x301));
    assert_eq!(table.outbound(1).map(|o| o.sa.spi()), Some(0x1301));
    assert_eq!(rt.tunnels["conn/v4"].child, Some((0x301, 0x1301)));
    // One IKE SA rekey and one CHILD SA rekey so far (INITIAL_CONTACT
    // is not a rekey): `s2s_rekeys_total`.
    assert_eq!(rt.rekeys, (1, 1));
    // The old pair goes after its grace: the new one keeps sending.
    rt.on_ike(remove(3, 0x300));
    assert!(table.inbound(0x300).is_none() && table.inbound(0x301).is_some());
    assert_eq!(table.outbound(1).map(|o| o.sa.spi()), Some(0x1301));
    assert!(usable(rt));
    // The carrier goes: the tunnel is down and its CHILD SA removed.
    rt.on_ike(remove(3, 0x301));
    rt.on_ike(down(3, DownReason::PeerUnreachable));
    assert!(!usable(rt) && !rt.tunnels["conn/v4"].ike_up);
    assert!(table.inbound(0x301).is_none());
    assert!(rt.tunnels["conn/v4"].inbound.is_empty());
    // Our own next attempt fails: try again later.
    rt.on_ike(failed(12, true, DownReason::AuthenticationFailed));
    assert!(rt.tunnels["conn/v4"].reinitiate_at.is_some());
}

/// The agent's half of the sequence-number rule: an outbound SA sends
/// only what the state file has reserved, and the agent writes a new
/// mark (then raises the SA's limit) before it runs out.
#[tokio::test]
#[ignore = "needs root: the slow path opens raw sockets"]
async fn the_state_file_reserves_sequence_numbers_before_they_are_sent() {
    let mut h = harness("sa");
    let (table, store, dir) = (Arc::clone(&h.table), h.store.clone(), h.dir.clone());
    let rt = &mut h.rt;
    rt.enable_sa_state(&dir);
    let name = "conn/v4".to_string();
    rt.on_ike(IkeAction::SaState {
        conn: name.clone(),
        ike: IkeSaId(1),
        snapshot: Some(Box::new(sa_state::sample_snapshot(
            &name,
            Some((0x100, 0x1100)),
        ))),
    });
    rt.on_ike(ike_up(1, None));
    rt.on_ike(child_install(1, 0x100, None));
    let out = table.outbound(1).unwrap();
    // A new SA: its first block without a mark.
    assert_eq!(out.sa.reserved(), sa_state::SEQ_BLOCK);
    rt.persist_sa_state(false).await;
    let written = |dir: &std::path::Path| {
        let loaded = sa_state::load(&store, dir).unwrap();
        let c = &loaded.entries[&name][0].snapshot.children[0];
        (c.seq_out, c.replay_right_edge)
    };
    assert_eq!(written(&dir), (sa_state::SEQ_BLOCK, 0));
    // Half the block used: a mark a block ahead is written, then the
    // SA may use it.
    out.sa.set_last_seq(sa_state::SEQ_BLOCK / 2 + 1);
    rt.persist_sa_state(false).await;
    let mark = sa_state::SEQ_BLOCK / 2 + 1 + sa_state::SEQ_BLOCK;
    assert_eq!(written(&dir).0, mark);
    assert_eq!(out.sa.reserved(), mark);
    // Nothing changed: nothing written (a write would seal with a new
    // nonce, so the bytes would differ).
    let file = dir.join(sa_state::FILE);
    let before = std::fs::read(&file).unwrap();
    rt.persist_sa_state(false).await;
    assert_eq!(std::fs::read(&file).unwrap(), before, "written again");
    // The SA gone: it leaves the file.
    rt.on_ike(IkeAction::SaState {
        conn: name.clone(),
        ike: IkeSaId(1),
        snapshot: None,
    });
    rt.persist_sa_state(false).await;
    assert!(sa_state::load(&store, &dir).unwrap().entries.is_empty());
    // Its outbound SA still in the table, its reservation used up:
    // nothing vouches for more, so it is tracked as starved (logged
    // after STARVED_WARN_AFTER), and no longer once it has numbers. The
    // tunnels are looked at once per STARVED_SCAN_EVERY, not every tick:
    // `starved_scan = None` stands for that time having passed.
    assert_eq!(out.sa.spi(), 0x1100);
    out.sa.set_last_seq(out.sa.reserved());
    rt.sa.as_mut().unwrap().starved_scan = None;
    rt.persist_sa_state(false).await;
    assert!(rt.sa.as_ref().unwrap().starved.contains_key(&0x1100));
    out.sa.reserve_through(out.sa.last_seq() + 10);
    rt.persist_sa_state(false).await;
    assert!(
        rt.sa.as_ref().unwrap().starved.contains_key(&0x1100),
        "looked at again before STARVED_SCAN_EVERY"
    );
    rt.sa.as_mut().unwrap().starved_scan = None;
    rt.persist_sa_state(false).await;
    assert!(rt.sa.as_ref().unwrap().starved.is_empty());
}

/// What an API change of a routing policy's `prefix_filter_in` or of a
/// VPN gateway's type changes in a tunnel (the inner sources allowed, the
/// bandwidth, MSS clamping) is applied in place: the tunnel, its id and
/// its SAs stay (they used to be torn down and rebuilt, which cut the
/// customer's traffic for a handshake).
#[tokio::test]
#[ignore = "needs root: the slow path opens raw sockets"]
async fn policy_and_gateway_type_changes_apply_in_place() {
    let mut h = harness("inplace");
    let rt = &mut h.rt;
    let mut t = rt.tunnels["conn/v4"].plan.clone();
    t.allowed_sources = vec!["203.0.113.0/24".parse().unwrap()];
    t.bandwidth = 100_000_000;
    t.mss_clamp = false;
    let plan = Plan {
        tunnels: [(t.name.clone(), t.clone())].into_iter().collect(),
        ..Plan::default()
    };
    rt.apply(&plan).await.unwrap();
    let running = &rt.tunnels["conn/v4"];
    assert_eq!(running.id, 1, "the tunnel was rebuilt");
    assert_eq!(rt.tunnels_created, 0, "a tunnel was created");
    assert_eq!(running.plan, t);
    let params = rt.dataplane.tunnel_params();
    assert_eq!(params.police().rate(1), Some(100_000_000));
    assert!(!params.mss_clamp(1));
    // Another gateway type: the new rate, still the same tunnel.
    let mut faster = t.clone();
    faster.bandwidth = 1_000_000_000;
    let plan = Plan {
        tunnels: [(t.name.clone(), faster)].into_iter().collect(),
        ..Plan::default()
    };
    rt.apply(&plan).await.unwrap();
    assert_eq!(rt.tunnels["conn/v4"].id, 1);
    assert_eq!(
        rt.dataplane.tunnel_params().police().rate(1),
        Some(1_000_000_000)
    );
}

//! Customer gateways played by the project's own protocol crates: IKEv2
//! from `gateway-ike` (its UDP driver, as the gateway runs it) and ESP from
//! `gateway-esp` (an SA table of its own), so a test controls every byte a
//! "customer" sends: well-behaved tunnels to carry test traffic, or crafted
//! ESP (spoofed inner sources) from a peer that did authenticate. Nothing is
//! installed in the kernel: decrypted packets are handed to the caller, and
//! packets the caller gives are encrypted and sent through a raw socket.
//!
//! A [`Customer`] runs its peers on a thread of its own (optionally inside
//! a network namespace); the caller talks to it through a synchronous
//! handle.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use gateway_esp::table::{InboundSaConfig, OutboundSaConfig, SaKeys, SaTable, TunnelId};
use gateway_esp::{Lifetime, OuterHeader, Suite, TrafficSelectors, UdpEncap, DEFAULT_WINDOW};
use gateway_ike::driver::{Command, EspDatagram, UdpDriver};
use gateway_ike::{Action, ChildSaInstall, ConnectionConfig, EspCipher, IkeCipher, IkeSaId, Psk};
use gateway_netio::raw::RawSender;
use tokio::sync::mpsc;

/// Decrypted packets kept per peer until the caller takes them.
const RECEIVED_CAP: usize = 65_536;

/// One customer gateway: its public address, the gateway's, the PSK and
/// the proposals (API names, e.g. `aes256gcm`, `sha256`, `curve25519`).
#[derive(Debug, Clone)]
pub struct PeerSpec {
    /// Unique name (the IKE connection name).
    pub name: String,
    /// The customer gateway's public address (bound here).
    pub local: IpAddr,
    /// The VPN gateway's public address.
    pub remote: IpAddr,
    pub psk: Vec<u8>,
    /// IKE proposal: encryption, integrity (CBC only), DH group.
    pub ike: (String, Option<String>, String),
    /// ESP proposal: encryption, integrity (CBC only).
    pub esp: (String, Option<String>),
    /// Starts IKE itself (the connection's `initiation_policy` is
    /// `customer_gateway`) or waits for the gateway to.
    pub initiate: bool,
}

/// What a peer looks like from outside.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerState {
    pub ike_up: bool,
    /// Installed CHILD SA: (inbound SPI, outbound SPI).
    pub child: Option<(u32, u32)>,
    /// CHILD SAs installed so far.
    pub child_installs: u64,
    /// Packets decrypted for this peer and not yet taken.
    pub received: Vec<Vec<u8>>,
    /// ESP datagrams that did not decrypt.
    pub decap_errors: u64,
}

#[derive(Default)]
struct Shared {
    peers: Mutex<HashMap<String, PeerState>>,
    changed: Condvar,
}

enum Request {
    /// Encrypt and send an inner packet through the peer's CHILD SA.
    Send {
        peer: String,
        packet: Vec<u8>,
        reply: std::sync::mpsc::Sender<anyhow::Result<()>>,
    },
    Stop,
}

/// Running customer gateways.
pub struct Customer {
    shared: Arc<Shared>,
    requests: mpsc::UnboundedSender<Request>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Customer {
    /// Starts `peers` on a new thread, inside network namespace `netns`
    /// when given (their addresses must be configured there).
    pub fn start(netns: Option<&str>, peers: Vec<PeerSpec>) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let netns = netns.map(str::to_owned);
        let sh = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("customer".into())
            .spawn(move || {
                if let Some(ns) = &netns {
                    labkit::enter_netns(ns)?;
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("tokio runtime")?;
                rt.block_on(run(peers, sh, rx, ready_tx))
            })
            .context("spawning the customer thread")?;
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("customer failed to start: {e}"),
            Err(_) => {
                let r = thread.join();
                bail!("customer thread ended before it was ready: {r:?}");
            }
        }
        Ok(Self {
            shared,
            requests: tx,
            thread: Some(thread),
        })
    }

    /// A copy of a peer's state (without taking its received packets).
    pub fn state(&self, peer: &str) -> Option<PeerState> {
        let peers = self.shared.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.get(peer).map(|p| PeerState {
            received: Vec::new(),
            ..p.clone()
        })
    }

    /// Waits until `f` holds for the peer's state, up to `limit`.
    pub fn wait(
        &self,
        peer: &str,
        limit: Duration,
        what: &str,
        f: impl Fn(&PeerState) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        let mut peers = self.shared.peers.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if peers.get(peer).is_some_and(&f) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("peer {peer}: {what} not reached within {limit:?}");
            }
            peers = self
                .shared
                .changed
                .wait_timeout(peers, left.min(Duration::from_millis(200)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits until the peer has an IKE SA and a CHILD SA.
    pub fn wait_established(&self, peer: &str, limit: Duration) -> anyhow::Result<()> {
        self.wait(peer, limit, "an established CHILD SA", |s| {
            s.ike_up && s.child.is_some()
        })
    }

    /// Encrypts `packet` (an inner IPv4/IPv6 packet, any source the caller
    /// likes) with the peer's outbound SA and sends it to the gateway.
    pub fn send_inner(&self, peer: &str, packet: &[u8]) -> anyhow::Result<()> {
        let (reply, rx) = std::sync::mpsc::channel();
        self.requests
            .send(Request::Send {
                peer: peer.to_owned(),
                packet: packet.to_vec(),
                reply,
            })
            .map_err(|_| anyhow!("customer stopped"))?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| anyhow!("customer did not answer"))?
    }

    /// Takes the packets decrypted for the peer so far.
    pub fn take_received(&self, peer: &str) -> Vec<Vec<u8>> {
        let mut peers = self.shared.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers
            .get_mut(peer)
            .map(|p| std::mem::take(&mut p.received))
            .unwrap_or_default()
    }

    /// Stops the peers (no DELETE is sent: like a crash).
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.requests.send(Request::Stop);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => bail!("customer thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Customer {
    fn drop(&mut self) {
        let _ = self.requests.send(Request::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ike_config(p: &PeerSpec) -> anyhow::Result<ConnectionConfig> {
    let mut c = ConnectionConfig::new(p.name.clone(), p.local, p.remote, Psk::new(p.psk.clone()));
    c.initiate = p.initiate;
    c.force_encap = true;
    c.ike_ciphers = vec![
        IkeCipher::from_api(&p.ike.0, p.ike.1.as_deref(), Some(p.ike.2.as_str()))
            .map_err(|e| anyhow!("IKE proposal of {}: {e}", p.name))?,
    ];
    c.esp_ciphers = vec![EspCipher::from_api(&p.esp.0, p.esp.1.as_deref(), None)
        .map_err(|e| anyhow!("ESP proposal of {}: {e}", p.name))?];
    c.dpd_interval = Some(Duration::from_secs(10));
    Ok(c)
}

/// The peers' tunnels in this process's own SA table.
struct Tunnels {
    table: SaTable,
    ids: HashMap<String, TunnelId>,
    /// Outbound SAs of rekeys we answered, by inbound SPI: they send once
    /// the IKE core says the peer deleted the old pair.
    pending: HashMap<u32, OutboundSaConfig>,
}

impl Tunnels {
    /// Installs the pair; `Ok(false)` when its outbound SA waits.
    fn install(&mut self, c: &ChildSaInstall) -> anyhow::Result<bool> {
        let Some(&tunnel) = self.ids.get(&c.conn) else {
            bail!("CHILD SA for unknown peer {}", c.conn);
        };
        let suite = Suite::from_api_names(c.encryption, c.integrity)?;
        let keys_in = SaKeys::new(suite, &c.keys_in.encryption_key, &c.keys_in.integrity_key)?;
        let keys_out = SaKeys::new(suite, &c.keys_out.encryption_key, &c.keys_out.integrity_key)?;
        self.table.install_inbound(&InboundSaConfig {
            tunnel,
            spi: c.spi_in,
            keys: keys_in,
            esn: c.esn,
            replay_window: DEFAULT_WINDOW,
            selectors: TrafficSelectors::any(),
        })?;
        let out = OutboundSaConfig {
            tunnel,
            spi: c.spi_out,
            keys: keys_out,
            esn: c.esn,
            outer: OuterHeader {
                src: c.local_addr,
                dst: c.remote_addr,
                udp: c.udp_encap.map(|u| UdpEncap {
                    src_port: u.local_port,
                    dst_port: u.remote_port,
                }),
                ttl: 64,
            },
            lifetime: Lifetime::NONE,
        };
        if c.outbound_deferred {
            self.pending.insert(c.spi_in, out);
            return Ok(false);
        }
        self.table.install_outbound(&out)?;
        Ok(true)
    }

    /// The deferred outbound SA of `spi_in` sends from now on.
    fn activate(&mut self, spi_in: u32) -> bool {
        match self.pending.remove(&spi_in) {
            Some(out) => self.table.install_outbound(&out).is_ok(),
            None => false,
        }
    }
}

async fn run(
    peers: Vec<PeerSpec>,
    shared: Arc<Shared>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    ready: std::sync::mpsc::Sender<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let setup = async {
        let mut addrs: Vec<IpAddr> = peers.iter().map(|p| p.local).collect();
        addrs.sort();
        addrs.dedup();
        let (esp_tx, esp_rx) = mpsc::channel::<EspDatagram>(4096);
        let mut driver = UdpDriver::bind_with_esp_sink(&addrs, 500, 4500, Some(esp_tx))
            .await
            .context("binding UDP 500/4500 on the customer addresses")?;
        // As the gateway does: the peer learns of a CHILD SA only once it
        // is in this process's SA table (acknowledged below).
        driver.hold_sends_until_applied(Duration::from_secs(2));
        let raw = RawSender::new().context("raw socket")?;
        let configs = peers
            .iter()
            .map(ike_config)
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok::<_, anyhow::Error>((driver, raw, configs, esp_rx))
    };
    let (driver, raw, configs, mut esp_rx) = match setup.await {
        Ok(x) => x,
        Err(e) => {
            let msg = format!("{e:#}");
            let _ = ready.send(Err(e));
            bail!(msg);
        }
    };
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let (ev_tx, mut events) = mpsc::channel(1024);
    tokio::spawn(driver.run(cmd_rx, ev_tx));
    let mut tunnels = Tunnels {
        table: SaTable::new(),
        ids: HashMap::new(),
        pending: HashMap::new(),
    };
    {
        let mut st = shared.peers.lock().unwrap_or_else(|p| p.into_inner());
        for (i, p) in peers.iter().enumerate() {
            tunnels.ids.insert(p.name.clone(), i as TunnelId + 1);
            st.insert(p.name.clone(), PeerState::default());
        }
    }
    let by_tunnel: HashMap<TunnelId, String> =
        tunnels.ids.iter().map(|(n, i)| (*i, n.clone())).collect();
    // Per peer: its established IKE SAs, and the one its sending CHILD SA
    // belongs to (INITIAL_CONTACT or a rekey replaces an IKE SA after the
    // new one is up: only the loss of the carrier takes the child).
    let mut up: HashMap<String, Vec<IkeSaId>> = HashMap::new();
    let mut child_ike: HashMap<String, IkeSaId> = HashMap::new();
    for c in configs {
        cmd_tx
            .send(Command::AddConnection(Box::new(c)))
            .await
            .map_err(|_| anyhow!("IKE driver stopped"))?;
    }
    let _ = ready.send(Ok(()));
    let mut buf = vec![0u8; 65_536 + 256];
    loop {
        tokio::select! {
            Some(a) = events.recv() => {
                let mut st = shared.peers.lock().unwrap_or_else(|p| p.into_inner());
                match a {
                    Action::IkeSaUp { conn, ike, rekey_of, .. } => {
                        let sas = up.entry(conn.clone()).or_default();
                        sas.retain(|s| Some(*s) != rekey_of);
                        sas.push(ike);
                        if rekey_of.is_some() && rekey_of == child_ike.get(&conn).copied() {
                            child_ike.insert(conn.clone(), ike);
                        }
                        if let Some(p) = st.get_mut(&conn) { p.ike_up = true; }
                    }
                    Action::IkeSaDown { conn, ike, .. } => {
                        let sas = up.entry(conn.clone()).or_default();
                        sas.retain(|s| *s != ike);
                        let carrier = child_ike.get(&conn) == Some(&ike);
                        if let (true, Some(p)) = (carrier, st.get_mut(&conn)) {
                            child_ike.remove(&conn);
                            p.ike_up = !sas.is_empty();
                            if let Some((i, o)) = p.child.take() {
                                let _ = tunnels.table.remove_inbound(i);
                                if let Some(&t) = tunnels.ids.get(&conn) {
                                    let _ = tunnels.table.remove_outbound(t, o);
                                }
                            }
                        }
                    }
                    Action::InstallChildSa(c) => {
                        let installed = tunnels.install(&c);
                        let _ = cmd_tx.try_send(Command::ChildSaApplied { spi_in: c.spi_in });
                        if installed.as_ref().is_ok_and(|sends| *sends) {
                            child_ike.insert(c.conn.clone(), c.ike);
                        }
                        if let (Ok(sends), Some(p)) = (installed, st.get_mut(&c.conn)) {
                            if sends {
                                p.child = Some((c.spi_in, c.spi_out));
                            }
                            p.child_installs += 1;
                        }
                    }
                    Action::ActivateOutbound { conn, ike, spi_in, spi_out } => {
                        if let (true, Some(p)) = (tunnels.activate(spi_in), st.get_mut(&conn)) {
                            p.child = Some((spi_in, spi_out));
                            child_ike.insert(conn.clone(), ike);
                        }
                    }
                    Action::RemoveChildSa { conn, spi_in, spi_out, .. } => {
                        tunnels.pending.remove(&spi_in);
                        let _ = tunnels.table.remove_inbound(spi_in);
                        if let Some(&t) = tunnels.ids.get(&conn) {
                            let _ = tunnels.table.remove_outbound(t, spi_out);
                        }
                        if let Some(p) = st.get_mut(&conn) {
                            if p.child.map(|(i, _)| i) == Some(spi_in) { p.child = None; }
                        }
                    }
                    _ => {}
                }
                shared.changed.notify_all();
            }
            Some(d) = esp_rx.recv() => {
                let n = d.esp.len().min(buf.len());
                buf[..n].copy_from_slice(&d.esp[..n]);
                let r = tunnels.table.decap_esp(&mut buf, 0..n);
                let mut st = shared.peers.lock().unwrap_or_else(|p| p.into_inner());
                match r {
                    Ok(r) => {
                        if let Some(p) = by_tunnel.get(&r.tunnel).and_then(|n| st.get_mut(n)) {
                            if p.received.len() < RECEIVED_CAP {
                                p.received.push(buf[r.decap.inner].to_vec());
                            }
                        }
                    }
                    Err(_) => {
                        if let Some(p) = peer_of(&peers, d.to).and_then(|n| st.get_mut(n)) {
                            p.decap_errors += 1;
                        }
                    }
                }
                shared.changed.notify_all();
            }
            r = requests.recv() => match r {
                None | Some(Request::Stop) => return Ok(()),
                Some(Request::Send { peer, packet, reply }) => {
                    let _ = reply.send(send(&tunnels, &raw, &peer, &packet));
                }
            },
        }
    }
}

fn peer_of(peers: &[PeerSpec], to: SocketAddr) -> Option<&str> {
    peers
        .iter()
        .find(|p| p.local == to.ip())
        .map(|p| p.name.as_str())
}

fn send(tunnels: &Tunnels, raw: &RawSender, peer: &str, packet: &[u8]) -> anyhow::Result<()> {
    let &tunnel = tunnels
        .ids
        .get(peer)
        .ok_or_else(|| anyhow!("unknown peer {peer}"))?;
    let head = gateway_esp::MAX_HEADROOM;
    let mut buf = vec![0u8; head + packet.len() + gateway_esp::MAX_TAILROOM];
    buf[head..head + packet.len()].copy_from_slice(packet);
    let e = tunnels
        .table
        .encap(tunnel, &mut buf, head..head + packet.len())
        .map_err(|e| anyhow!("encapsulating for {peer}: {e}"))?;
    raw.send(&buf[e.packet])
        .with_context(|| format!("sending ESP of {peer}"))
}

//! The thin tokio driver around `IkeManager`: UDP sockets on the IKE port
//! (500) and the NAT-T port (4500) of each public address, timers, and a
//! command channel from the agent. Everything that is not a datagram or a
//! timer (CHILD SA install/remove, IKE SA up/down, a NAT'd peer's new
//! port, logs) is forwarded to the agent on the event channel. No protocol
//! logic lives here.
//!
//! UDP-encapsulated ESP (RFC 3948: a non-zero first word on the NAT-T
//! port) that reaches these sockets — because the XDP fast path is off or
//! has no AF_XDP socket bound — is not IKE: it goes to the optional ESP
//! sink (the data plane's slow path) instead of the IKE core.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::action::{Action, TimerId};
use crate::config::ConnectionConfig;
use crate::manager::IkeManager;

/// Requests from the agent.
#[derive(Debug)]
pub enum Command {
    AddConnection(Box<ConnectionConfig>),
    RemoveConnection(String),
    Initiate(String),
    DeleteIkeSa(String),
    DeleteChildSa { conn: String, spi_in: u32 },
    RekeyChildSa { conn: String, spi_in: u32 },
    RekeyIkeSa(String),
}

struct Received {
    bytes: Vec<u8>,
    from: SocketAddr,
    to: SocketAddr,
}

/// An ESP packet (from the SPI on) received on a NAT-T socket.
#[derive(Debug)]
pub struct EspDatagram {
    pub esp: Vec<u8>,
    pub from: SocketAddr,
    pub to: SocketAddr,
}

/// Whether a datagram on the NAT-T port is ESP (RFC 3948 §2.2): at least
/// an SPI and a sequence number, and a non-zero first word (zero is the
/// non-ESP marker in front of IKE; 0xff alone is a NAT keepalive).
pub fn is_udp_esp(payload: &[u8]) -> bool {
    payload.len() >= 8 && payload[..4] != [0, 0, 0, 0]
}

pub struct UdpDriver {
    mgr: IkeManager,
    sockets: HashMap<SocketAddr, Arc<UdpSocket>>,
    timers: BTreeMap<TimerId, Instant>,
    rx: mpsc::Receiver<Received>,
}

/// Largest datagram read; IKE messages above this are fragmented (RFC 7383).
const MAX_DATAGRAM: usize = 65_535;

impl UdpDriver {
    /// Binds `ike_port` and `natt_port` on every address (the VPN
    /// gateway's public IPs) and starts the receive loops.
    pub async fn bind(addrs: &[IpAddr], ike_port: u16, natt_port: u16) -> std::io::Result<Self> {
        Self::bind_with_esp_sink(addrs, ike_port, natt_port, None).await
    }

    /// As [`UdpDriver::bind`], and hands ESP received on the NAT-T sockets
    /// to `esp` (dropped when the sink is full: ESP is lossy by nature).
    pub async fn bind_with_esp_sink(
        addrs: &[IpAddr],
        ike_port: u16,
        natt_port: u16,
        esp: Option<mpsc::Sender<EspDatagram>>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(1024);
        let mut sockets = HashMap::new();
        for ip in addrs {
            for port in [ike_port, natt_port] {
                let local = SocketAddr::new(*ip, port);
                let sock = Arc::new(UdpSocket::bind(local).await?);
                let s = sock.clone();
                let tx = tx.clone();
                let esp = if port == natt_port { esp.clone() } else { None };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; MAX_DATAGRAM];
                    loop {
                        let Ok((n, from)) = s.recv_from(&mut buf).await else {
                            continue;
                        };
                        if let Some(sink) = &esp {
                            if is_udp_esp(&buf[..n]) {
                                let _ = sink.try_send(EspDatagram {
                                    esp: buf[..n].to_vec(),
                                    from,
                                    to: local,
                                });
                                continue;
                            }
                        }
                        let msg = Received {
                            bytes: buf[..n].to_vec(),
                            from,
                            to: local,
                        };
                        if tx.send(msg).await.is_err() {
                            return;
                        }
                    }
                });
                sockets.insert(local, sock);
            }
        }
        Ok(Self {
            mgr: IkeManager::new(),
            sockets,
            timers: BTreeMap::new(),
            rx,
        })
    }

    async fn apply(&mut self, actions: Vec<Action>, events: &mpsc::UnboundedSender<Action>) {
        for a in actions {
            match a {
                Action::Send { bytes, from, to } => {
                    if let Some(s) = self.sockets.get(&from) {
                        // A lost datagram is recovered by retransmission.
                        let _ = s.send_to(&bytes, to).await;
                    }
                }
                Action::ArmTimer { id, at } => {
                    self.timers.insert(id, at);
                }
                // InstallChildSa, RemoveChildSa, IkeSaUp/Down,
                // PeerEndpointChanged (the data plane must move the ESP of
                // those CHILD SAs), Log: the agent's business.
                other => {
                    let _ = events.send(other);
                }
            }
        }
    }

    /// Runs until the command channel closes.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        events: mpsc::UnboundedSender<Action>,
    ) {
        loop {
            let next = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(id, at)| (*id, *at));
            let sleep = async {
                match next {
                    Some((_, at)) => {
                        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                Some(r) = self.rx.recv() => {
                    let acts = self.mgr.handle_datagram(&r.bytes, r.from, r.to, Instant::now());
                    self.apply(acts, &events).await;
                }
                cmd = commands.recv() => {
                    let now = Instant::now();
                    let acts = match cmd {
                        None => return,
                        Some(Command::AddConnection(c)) => self.mgr.add_connection(*c, now),
                        Some(Command::RemoveConnection(n)) => self.mgr.remove_connection(&n, now),
                        Some(Command::Initiate(n)) => self.mgr.initiate(&n, now),
                        Some(Command::DeleteIkeSa(n)) => self.mgr.delete_ike_sa(&n, now),
                        Some(Command::DeleteChildSa { conn, spi_in }) => self.mgr.delete_child_sa(&conn, spi_in, now),
                        Some(Command::RekeyChildSa { conn, spi_in }) => self.mgr.rekey_child_sa(&conn, spi_in, now),
                        Some(Command::RekeyIkeSa(n)) => self.mgr.rekey_ike_sa(&n, now),
                    };
                    self.apply(acts, &events).await;
                }
                () = sleep => {
                    if let Some((id, _)) = next {
                        self.timers.remove(&id);
                        let acts = self.mgr.handle_timer(id, Instant::now());
                        self.apply(acts, &events).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_udp_esp;

    #[test]
    fn esp_is_told_from_ike_and_keepalives() {
        assert!(is_udp_esp(&[0, 0, 0, 1, 0, 0, 0, 1]));
        assert!(
            !is_udp_esp(&[0, 0, 0, 0, 1, 2, 3, 4, 5]),
            "non-ESP marker: IKE"
        );
        assert!(!is_udp_esp(&[0xff]), "NAT keepalive");
        assert!(
            !is_udp_esp(&[1, 2, 3]),
            "too short for SPI + sequence number"
        );
    }
}

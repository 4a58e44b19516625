//! The thin tokio driver around `IkeManager`: UDP sockets on the IKE port
//! (500) and the NAT-T port (4500) of each public address, timers, and a
//! command channel from the agent. Everything that is not a datagram or a
//! timer (CHILD SA install/remove, IKE SA up/down, logs) is forwarded to
//! the agent on the event channel. No protocol logic lives here.

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
        let (tx, rx) = mpsc::channel(1024);
        let mut sockets = HashMap::new();
        for ip in addrs {
            for port in [ike_port, natt_port] {
                let local = SocketAddr::new(*ip, port);
                let sock = Arc::new(UdpSocket::bind(local).await?);
                let s = sock.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; MAX_DATAGRAM];
                    loop {
                        let Ok((n, from)) = s.recv_from(&mut buf).await else {
                            continue;
                        };
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

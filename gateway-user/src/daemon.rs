//! Assembles the running data path of one host: the shared SA table, the
//! data-plane backend (table + XDP maps + kernel routes), the TUN slow path
//! with its raw-ESP receiver, and, with the fast path on, one AF_XDP worker
//! per receive queue, the neighbour cache that feeds them and the thread
//! that copies replay-window edges back to `SA_IN`. The agent drives it;
//! this module owns only construction and orderly shutdown. At start it
//! makes the LAN's kernel settings right ([`crate::sysctl`]) and gives the
//! data path what it sizes packets by: the WAN MTU, the LAN addresses and
//! the ICMP rate limit.

use crate::capture::Capture;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use gateway_common::XSKS_LAN_BASE;
use gateway_config::Config;
use gateway_esp::table::SaTable;
use gateway_netio::afxdp::BusyPoll;
use gateway_netio::netlink::{NeighbourCache, Netlink, NetlinkError};

use crate::dataplane::backend::GatewayDataPlane;
use crate::dataplane::mtu::{lan_config, LanReply};
use crate::dataplane::slowpath::{SlowPath, SlowPathError};
use crate::dataplane::worker::{
    lan_addresses, LocalAddrs, SkipLocal, Worker, WorkerConfig, WorkerError, XskSlot,
};
use crate::dataplane::xdp::{self, XdpDataplane, XdpError};
use crate::sysctl::{self, SysctlError};

/// How often replay-window right edges are copied to `SA_IN`: XDP's early
/// drop only needs them approximately.
const REPLAY_SYNC: Duration = Duration::from_millis(200);
/// How often the neighbour cache re-resolves what the workers asked for.
const NEIGHBOUR_REFRESH: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum DataPathError {
    #[error("slow path")]
    SlowPath(#[from] SlowPathError),
    #[error("AF_XDP worker for queue {queue}")]
    Worker {
        queue: u32,
        #[source]
        source: WorkerError,
    },
    #[error("rtnetlink")]
    Netlink(#[from] NetlinkError),
    #[error("kernel settings")]
    Sysctl(#[from] SysctlError),
    #[error("XDP maps")]
    Xdp(#[from] XdpError),
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What the agent needs of the data path: SAs and routes, TUNs, and the
/// set of our own addresses.
#[derive(Clone)]
pub struct DataPathHandle {
    pub dataplane: Arc<GatewayDataPlane>,
    pub slow: Arc<Mutex<SlowPath>>,
    pub local: Option<LocalAddrs>,
}

impl DataPathHandle {
    /// Tells the workers which addresses are ours (never resolved).
    pub fn set_local_addresses(&self, addrs: Vec<IpAddr>) {
        if let Some(l) = &self.local {
            l.set(addrs);
        }
    }
}

/// The data path of the host, shared by the agent (SAs, routes, TUNs) and
/// the metrics endpoint (counters).
pub struct DataPath {
    pub table: Arc<SaTable>,
    pub dataplane: Arc<GatewayDataPlane>,
    pub slow: Arc<Mutex<SlowPath>>,
    pub xdp: Option<Arc<Mutex<XdpDataplane>>>,
    /// Addresses the workers must never try to resolve (ours): the agent
    /// keeps it up to date; `None` without the fast path.
    pub local: Option<LocalAddrs>,
    /// The workers copy packets here while `s2s-gateway capture` runs.
    pub capture: Arc<Capture>,
    workers: Vec<Worker>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

/// Receive queues of an interface, from sysfs (1 when unknown).
fn rx_queues(iface: &str) -> u32 {
    std::fs::read_dir(Path::new("/sys/class/net").join(iface).join("queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

impl DataPath {
    /// Builds the data path. With `xdp`, starts the AF_XDP workers (one per
    /// receive queue both interfaces have) and binds their sockets into
    /// `XSKS`; without, everything goes through the TUN slow path.
    pub fn start(
        config: &Config,
        xdp: Option<Arc<Mutex<XdpDataplane>>>,
    ) -> Result<Self, DataPathError> {
        let (wan, lan) = (&config.interfaces.wan, &config.interfaces.lan);
        // Before anything is forwarded: refuse to start rather than lose
        // packets silently.
        sysctl::prepare_lan(lan)?;
        let table = Arc::new(SaTable::new());
        let dp = GatewayDataPlane::with_xdp(Arc::clone(&table), xdp.clone());
        let mut nl = Netlink::open()?;
        let wan_mtu = nl.link_by_name(wan)?.mtu;
        dp.set_wan_mtu(wan_mtu);
        let lan_index = nl.link_by_name(lan)?.index;
        let (lan_v4, lan_v6) = lan_addresses(&mut nl, lan_index)?;
        let rate = (
            config.datapath.icmp_too_big_per_second,
            config.datapath.icmp_too_big_burst,
        );
        if let Some(x) = &xdp {
            // veth needs its own way out for lan_ingress's ICMP errors (see
            // LanReply); an interface ethtool cannot name is taken for a NIC.
            let driver = xdp::driver_name(lan).unwrap_or_else(|e| {
                tracing::warn!(lan = %lan, error = %e, "driver of the LAN interface unknown: answering with XDP_TX");
                String::new()
            });
            let reply = LanReply::for_driver(&driver);
            tracing::info!(lan = %lan, driver = %driver, ?reply, "how lan_ingress sends its ICMP errors");
            if reply == LanReply::Redirect {
                tracing::info!(
                    lan = %lan,
                    "veth LAN: the ICMP errors of the fast path reach the other end only if it runs NAPI (ethtool -K <peer> gro on, or an XDP program on it)"
                );
            }
            x.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .set_lan_config(lan_config(lan_v4, lan_v6, rate.0, rate.1, reply))?;
        }
        tracing::info!(wan_mtu, lan_v4 = ?lan_v4, lan_v6 = ?lan_v6, "sources of ICMP too-big errors");
        dp.set_netlink(nl);
        let dataplane = Arc::new(dp);
        let mut slow = SlowPath::with_tunnel_params(
            Arc::clone(&table),
            Arc::clone(dataplane.tunnel_params()),
        )?;
        // Plain ESP (protocol 50) reaches us only through raw sockets: the
        // kernel has no ESP of its own.
        slow.spawn_esp_receiver()?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut me = Self {
            table,
            dataplane,
            slow: Arc::new(Mutex::new(slow)),
            xdp: xdp.clone(),
            local: None,
            capture: Arc::new(Capture::default()),
            workers: Vec::new(),
            threads: Vec::new(),
            stop,
        };
        let Some(xdp) = xdp else {
            return Ok(me);
        };
        let (cache, refresher) = NeighbourCache::new(4096);
        let stop = Arc::clone(&me.stop);
        me.threads.push(
            std::thread::Builder::new()
                .name("neighbours".into())
                .spawn(move || {
                    let mut nl = match Netlink::open() {
                        Ok(nl) => nl,
                        Err(e) => {
                            tracing::error!(error = %e, "neighbour refresher cannot open rtnetlink");
                            return;
                        }
                    };
                    if let Err(e) = refresher.run(&mut nl, NEIGHBOUR_REFRESH, &stop) {
                        tracing::error!(error = %e, "neighbour refresher stopped");
                    }
                })
                .map_err(|source| DataPathError::Io {
                    what: "spawning the neighbour refresher",
                    source,
                })?,
        );
        let (resolver, local) = SkipLocal::new(cache);
        me.local = Some(local);
        let (wq, lq) = (rx_queues(wan), rx_queues(lan));
        if wq != lq {
            tracing::warn!(
                wan_queues = wq,
                lan_queues = lq,
                "WAN and LAN have different queue counts; workers serve the common ones"
            );
        }
        let queues = wq.min(lq).min(XSKS_LAN_BASE);
        let slow_handle = me
            .slow
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .handle();
        let busy_poll = config
            .datapath
            .busy_poll()
            .map(|(usecs, budget)| BusyPoll { usecs, budget });
        if let Some(bp) = busy_poll {
            tracing::info!(
                usecs = bp.usecs,
                budget = bp.budget,
                "AF_XDP sockets busy-poll (SO_PREFER_BUSY_POLL); the NICs' napi_defer_hard_irqs and gro_flush_timeout are left as they are"
            );
        }
        for queue in 0..queues {
            let mut wcfg = WorkerConfig::new(wan, lan, queue);
            wcfg.xsk.busy_poll = busy_poll;
            wcfg.tunnel_params = Some(Arc::clone(me.dataplane.tunnel_params()));
            wcfg.icmp_rate = rate;
            wcfg.capture = Some(Arc::clone(&me.capture));
            let worker = Worker::spawn(
                &wcfg,
                Arc::clone(&me.table),
                resolver.clone(),
                slow_handle.clone(),
                Some(XskSlot {
                    maps: Arc::clone(&xdp),
                    key: queue,
                }),
                Some(XskSlot {
                    maps: Arc::clone(&xdp),
                    key: XSKS_LAN_BASE + queue,
                }),
                Arc::clone(&me.stop),
            )
            .map_err(|source| DataPathError::Worker { queue, source })?;
            me.workers.push(worker);
        }
        tracing::info!(queues, wan = %wan, lan = %lan, "AF_XDP workers started");
        me.threads.push(
            me.dataplane
                .spawn_replay_sync(REPLAY_SYNC, Arc::clone(&me.stop))
                .map_err(|source| DataPathError::Io {
                    what: "spawning the replay-edge sync",
                    source,
                })?,
        );
        Ok(me)
    }

    pub fn handle(&self) -> DataPathHandle {
        DataPathHandle {
            dataplane: Arc::clone(&self.dataplane),
            slow: Arc::clone(&self.slow),
            local: self.local.clone(),
        }
    }

    /// Stops the workers and threads; the slow path stops when dropped.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            if let Err(e) = w.stop() {
                tracing::warn!(error = %e, "worker stopped with an error");
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.slow
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .shutdown();
    }
}

//! A worker thread: its WAN and LAN sockets over one UMEM, their
//! registration in the `XSKS` maps, the receive/transmit loop that hands
//! each batch to the [`Pipeline`], and its stop.

use super::*;

/// Where a worker inserts one of its sockets: an `XSKS` map and the key.
#[derive(Clone)]
pub struct XskSlot {
    /// The loaded object whose `XSKS` map the interface's program reads.
    pub maps: Arc<Mutex<XdpDataplane>>,
    /// The key (the receive queue index).
    pub key: u32,
}

impl std::fmt::Debug for XskSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskSlot").field("key", &self.key).finish()
    }
}

/// Settings of one worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// WAN interface name.
    pub wan: String,
    /// LAN interface name.
    pub lan: String,
    /// Queue served on both interfaces.
    pub queue: u32,
    /// UMEM geometry.
    pub umem: UmemConfig,
    /// Socket settings.
    pub xsk: XskConfig,
    /// Frames per batch.
    pub batch: usize,
    /// How long to sleep in `poll(2)` when idle (bounds shutdown latency).
    pub idle_poll: Duration,
    /// Per-tunnel inner MTU and MSS clamping (the backend's); `None`: the
    /// defaults.
    pub tunnel_params: Option<Arc<TunnelParams>>,
    /// ICMP too-big errors per second and source, and the burst.
    pub icmp_rate: (u32, u32),
    /// Where a running capture's copies go (`s2s-gateway capture`).
    pub capture: Option<Arc<Capture>>,
}

impl WorkerConfig {
    /// Defaults for `queue` of `wan`/`lan`.
    pub fn new(wan: &str, lan: &str, queue: u32) -> Self {
        Self {
            wan: wan.to_owned(),
            lan: lan.to_owned(),
            queue,
            umem: UmemConfig {
                frame_count: 4096,
                ..UmemConfig::default()
            },
            xsk: XskConfig::default(),
            batch: 64,
            idle_poll: Duration::from_millis(10),
            tunnel_params: None,
            icmp_rate: DEFAULT_ICMP_RATE,
            capture: None,
        }
    }
}

/// Why a worker could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// UMEM or socket setup.
    #[error("AF_XDP setup")]
    Xsk(#[from] XskError),
    /// Inserting the socket into `XSKS`.
    #[error("XSKS update")]
    XskMap(#[from] XdpError),
    /// An interface does not exist.
    #[error("interface {0:?} not found")]
    NoInterface(String),
    /// Reading the WAN interface's MTU.
    #[error("reading the WAN MTU")]
    Netlink(#[source] NetlinkError),
    /// Thread spawn or poll failure.
    #[error("{op}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// A running worker thread.
pub struct Worker {
    handle: Option<JoinHandle<Result<(), WorkerError>>>,
    counters: Arc<WorkerCounters>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("counters", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

struct Sockets {
    umem: Umem,
    wan: XskSocket,
    lan: XskSocket,
    slots: [Option<XskSlot>; 2],
}

impl Drop for Sockets {
    fn drop(&mut self) {
        for s in self.slots.iter().flatten() {
            let _ = s
                .maps
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .unset_xsk(s.key);
        }
    }
}

impl Worker {
    /// Binds the WAN and LAN sockets of `cfg.queue` (in the calling thread's
    /// network namespace), inserts them into their `XSKS` slots and starts
    /// the worker thread. It runs until `stop` is set.
    pub fn spawn<R, S>(
        cfg: &WorkerConfig,
        table: Arc<SaTable>,
        resolver: R,
        slow: S,
        wan_slot: Option<XskSlot>,
        lan_slot: Option<XskSlot>,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, WorkerError>
    where
        R: Resolver + Send + 'static,
        S: SlowSink + Send + 'static,
    {
        let wan_ifindex = super::super::xdp::ifindex(&cfg.wan)
            .ok_or_else(|| WorkerError::NoInterface(cfg.wan.clone()))?;
        let lan_ifindex = super::super::xdp::ifindex(&cfg.lan)
            .ok_or_else(|| WorkerError::NoInterface(cfg.lan.clone()))?;
        let mut umem = Umem::new(cfg.umem.clone())?;
        let wan = XskSocket::bind(&mut umem, &cfg.wan, cfg.queue, &cfg.xsk)?;
        let lan = XskSocket::bind(&mut umem, &cfg.lan, cfg.queue, &cfg.xsk)?;
        let mut socks = Sockets {
            umem,
            wan,
            lan,
            slots: [None, None],
        };
        for (i, slot) in [wan_slot, lan_slot].into_iter().enumerate() {
            if let Some(s) = slot {
                let fd = if i == 0 {
                    socks.wan.fd()
                } else {
                    socks.lan.fd()
                };
                s.maps
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .set_xsk(s.key, fd)?;
                socks.slots[i] = Some(s);
            }
        }
        let mut nl = Netlink::open().map_err(WorkerError::Netlink)?;
        let wan_mtu = nl.link_by_name(&cfg.wan).map_err(WorkerError::Netlink)?.mtu;
        let lan_mtu = nl.link_by_name(&cfg.lan).map_err(WorkerError::Netlink)?.mtu;
        let (v4, v6) = lan_addresses(&mut nl, lan_ifindex).map_err(WorkerError::Netlink)?;
        let mut pipeline = Pipeline::new(table, resolver, slow, lan_ifindex, wan_ifindex)
            .with_wan_mtu(wan_mtu)
            .with_lan(lan_mtu, v4, v6, cfg.icmp_rate);
        if let Some(p) = &cfg.tunnel_params {
            pipeline = pipeline.with_tunnel_params(Arc::clone(p));
        }
        if let Some(c) = &cfg.capture {
            pipeline = pipeline.with_capture(Arc::clone(c));
        }
        let counters = Arc::clone(pipeline.counters());
        let (batch, idle) = (cfg.batch.max(1), cfg.idle_poll);
        let thread_stop = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name(format!("xdp-worker-{}", cfg.queue))
            .spawn(move || run(socks, &pipeline, batch, idle, &thread_stop))
            .map_err(|source| WorkerError::Io {
                op: "spawning the worker",
                source,
            })?;
        Ok(Self {
            handle: Some(handle),
            counters,
            stop,
        })
    }

    /// The worker's counters.
    pub fn counters(&self) -> WorkerCountersSnapshot {
        self.counters.snapshot()
    }

    /// Sets the stop flag and waits for the thread (its sockets leave
    /// `XSKS` and close).
    pub fn stop(mut self) -> Result<(), WorkerError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(WorkerError::Io {
                op: "worker thread panicked",
                source: io::ErrorKind::Other.into(),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The first global IPv4 and IPv6 addresses of an interface: the sources of
/// the gateway's ICMP errors on that side.
pub fn lan_addresses(
    nl: &mut Netlink,
    ifindex: u32,
) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), NetlinkError> {
    let addrs = nl.list_addresses(ifindex)?;
    let v4 = addrs.iter().find_map(|a| match a.addr {
        IpAddr::V4(v) if !v.is_loopback() && !v.is_link_local() => Some(v),
        _ => None,
    });
    let v6 = addrs.iter().find_map(|a| match a.addr {
        IpAddr::V6(v) if !v.is_loopback() && !v.is_unicast_link_local() => Some(v),
        _ => None,
    });
    Ok((v4, v6))
}

/// Processes every frame of `rx` with `f` and queues the forwarded ones on
/// `tx` (dropping, counted, when `tx` is full).
fn process<F>(umem: &mut Umem, rx: &mut Batch, tx: &mut Batch, counters: &WorkerCounters, mut f: F)
where
    F: FnMut(&mut [u8], Range<usize>, Option<XdpMeta>) -> Verdict,
{
    while let Some(mut frame) = rx.pop() {
        let (chunk, range) = umem.chunk_mut(&frame);
        // The XDP programs put the metadata in front of the Ethernet
        // header (`steer` in gateway-ebpf): the frame starts after it.
        let meta = chunk
            .get(range.start..range.start.saturating_add(META_LEN).min(range.end))
            .filter(|m| m.len() == META_LEN)
            .and_then(XdpMeta::from_bytes);
        let range = if meta.is_some() {
            range.start + META_LEN..range.end
        } else {
            range
        };
        match f(chunk, range, meta) {
            Verdict::Forward(r) => {
                if umem.set_packet(&mut frame, r).is_err() {
                    counters.drop_frame(WorkerDrop::NotIp);
                    umem.release(frame);
                    continue;
                }
                if let Err(frame) = tx.push(frame) {
                    counters.drop_frame(WorkerDrop::TxFull);
                    umem.release(frame);
                }
            }
            Verdict::Consumed => umem.release(frame),
        }
    }
}

fn run<R: Resolver, S: SlowSink>(
    mut s: Sockets,
    p: &Pipeline<R, S>,
    batch: usize,
    idle: Duration,
    stop: &AtomicBool,
) -> Result<(), WorkerError> {
    let mut rx = Batch::with_capacity(batch);
    let mut lan_tx = Batch::with_capacity(batch * 2);
    let mut wan_tx = Batch::with_capacity(batch * 2);
    let counters = Arc::clone(p.counters());
    let mut rounds: u32 = 0;
    let mut empty_rounds: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        rounds = rounds.wrapping_add(1);
        if rounds.is_multiple_of(1024) {
            publish_xsk_stats(&s, &counters);
        }
        // `process` pops from the end: reverse first so flows keep their
        // order (the replay window would tolerate it; receivers may not).
        let n_wan = s.wan.recv(&mut s.umem, &mut rx);
        if n_wan == 0 {
            // Busy polling: run the queue's NAPI (no-op otherwise).
            s.wan.busy_poll_rx();
        }
        rx.frames_mut().reverse();
        process(&mut s.umem, &mut rx, &mut lan_tx, &counters, |c, r, m| {
            p.inbound(c, r, m)
        });
        s.lan.send(&mut s.umem, &mut lan_tx);
        let n_lan = s.lan.recv(&mut s.umem, &mut rx);
        if n_lan == 0 {
            s.lan.busy_poll_rx();
        }
        rx.frames_mut().reverse();
        process(&mut s.umem, &mut rx, &mut wan_tx, &counters, |c, r, m| {
            p.outbound(c, r, m)
        });
        s.wan.send(&mut s.umem, &mut wan_tx);
        // Sleep only when idle with nothing left to transmit, and only
        // after a short spin: under load the rings are often empty for a
        // moment between the kernel's batches, and a poll(2) sleep and
        // wake-up per such gap cost more than the packets themselves
        // (the tunnel benchmark's profile: 17 % of the worker).
        if n_wan + n_lan == 0 && lan_tx.is_empty() && wan_tx.is_empty() {
            s.wan.flush(&mut s.umem);
            s.lan.flush(&mut s.umem);
            empty_rounds += 1;
            if empty_rounds >= SPIN_ROUNDS {
                empty_rounds = 0;
                publish_xsk_stats(&s, &counters);
                wait_either(&s.wan, &s.lan, idle)
                    .map_err(|source| WorkerError::Io { op: "poll", source })?;
            } else {
                std::hint::spin_loop();
            }
        } else {
            empty_rounds = 0;
        }
    }
    Ok(())
}

/// Copies the sockets' kernel counters (sums of WAN and LAN) into ours.
fn publish_xsk_stats(s: &Sockets, c: &WorkerCounters) {
    let (Ok(w), Ok(l)) = (s.wan.stats(), s.lan.stats()) else {
        return;
    };
    c.xsk_rx_dropped
        .store(w.rx_dropped + l.rx_dropped, Ordering::Relaxed);
    c.xsk_rx_ring_full
        .store(w.rx_ring_full + l.rx_ring_full, Ordering::Relaxed);
    c.xsk_fill_ring_empty.store(
        w.rx_fill_ring_empty_descs + l.rx_fill_ring_empty_descs,
        Ordering::Relaxed,
    );
}

fn wait_either(a: &XskSocket, b: &XskSocket, timeout: Duration) -> io::Result<()> {
    let mut fds = [
        libc::pollfd {
            fd: a.fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: b.fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: two valid pollfds.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

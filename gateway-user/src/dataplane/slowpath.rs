//! The TUN slow path: per tunnel, a TUN interface the kernel routes into
//! (learned prefixes, the locally originated BGP session, everything when
//! the fast path is off), and the way back for ESP the fast path does not
//! handle. It shares the [`SaTable`] with the AF_XDP workers: one engine,
//! one truth for keys, sequence numbers and replay windows.
//!
//! # Design
//!
//! * **Out (TUN → peer)**: one reader thread waits on every tunnel's TUN
//!   at once (epoll, level-triggered: a busy TUN is drained in bounded
//!   batches so it cannot starve the others; thousands of idle tunnels
//!   cost no wake-ups), encapsulates each packet with [`SaTable::encap`] (outer IP + UDP +
//!   ESP, built by the engine) and sends the complete outer packet through
//!   a raw socket (`AF_INET`/`AF_INET6`, `IPPROTO_RAW`, header included).
//!   A raw socket rather than a UDP socket because the IKE driver owns the
//!   UDP 500/4500 sockets, and a second socket on 4500 would steal its
//!   datagrams; the raw socket binds no port and lets the kernel route and
//!   resolve the next hop. The same socket carries the outer packets the
//!   workers built but could not send themselves (next hop not resolved).
//! * **In (peer → TUN)**: ESP-in-UDP that XDP does not steer (no AF_XDP
//!   socket bound, fast path off) reaches the IKE driver's port-4500
//!   socket with a non-zero marker. The driver hands the datagram's
//!   payload to [`SlowPath::inbound_esp`], which decapsulates it and writes
//!   the inner packet to the tunnel's TUN: the kernel then delivers it
//!   locally (BGP) or forwards it. The workers do the same for decrypted
//!   packets whose next hop they cannot serve ([`SlowPathHandle::deliver_inner`]).
//!   Plain ESP (protocol 50, no NAT between the peers) that XDP does not
//!   steer is read from raw `IPPROTO_ESP` sockets by
//!   [`SlowPath::spawn_esp_receiver`] and takes the same way.
//!
//! TCP SYNs are MSS-clamped to the tunnel's inner MTU both ways (before
//! encapsulation, after decapsulation), as on the fast path; packets too
//! big for a TUN or for the LAN are the kernel's to answer or fragment,
//! which it does because the daemon turns forwarding on for the TUNs and
//! the LAN (see `sysctl`).
//!
//! Not per-packet-allocation free like the workers, but close: the reader
//! owns one buffer; [`SlowPath::inbound_esp`] reuses one.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use gateway_esp::table::{SaTable, TunnelId};
use gateway_esp::{DecapError, EncapError, MAX_HEADROOM, MAX_TAILROOM};
use gateway_netio::tun::Tun;

use super::mtu::TunnelParams;
use super::police::Way;

/// Largest IP packet read from a TUN or an IKE socket.
const MAX_PACKET: usize = 65_535;

/// Why a slow-path operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SlowPathError {
    /// Creating a raw socket or a thread failed.
    #[error("{op}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The ESP packet did not decapsulate.
    #[error("decapsulation")]
    Decap(#[from] DecapError),
    /// The packet did not encapsulate.
    #[error("encapsulation")]
    Encap(#[from] EncapError),
    /// No TUN registered for the tunnel of the SA.
    #[error("no TUN interface for tunnel {tunnel}")]
    NoTun {
        /// Tunnel.
        tunnel: TunnelId,
    },
    /// The packet is larger than an IP packet can be.
    #[error("packet of {len} bytes too long")]
    TooLong {
        /// Length.
        len: usize,
    },
    /// The outer packet is neither IPv4 nor IPv6.
    #[error("outer packet is not IP")]
    NotIp,
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> SlowPathError {
    move |source| SlowPathError::Io { op, source }
}

/// Counters of the slow path (all tunnels).
#[derive(Debug, Default)]
pub struct SlowPathCounters {
    /// Packets read from TUNs.
    pub tun_rx: AtomicU64,
    /// Outer packets sent through the raw sockets (readers and workers).
    pub raw_tx: AtomicU64,
    /// Raw socket send failures.
    pub raw_tx_errors: AtomicU64,
    /// TUN packets that failed to encapsulate (no SA, exhausted...).
    pub encap_errors: AtomicU64,
    /// Inner packets written to TUNs.
    pub tun_tx: AtomicU64,
    /// TUN write failures (including no TUN for the tunnel).
    pub tun_tx_errors: AtomicU64,
    /// ESP datagrams from the IKE socket that failed to decapsulate.
    pub inbound_drops: AtomicU64,
}

/// A copy of [`SlowPathCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlowPathCountersSnapshot {
    /// See [`SlowPathCounters::tun_rx`].
    pub tun_rx: u64,
    /// See [`SlowPathCounters::raw_tx`].
    pub raw_tx: u64,
    /// See [`SlowPathCounters::raw_tx_errors`].
    pub raw_tx_errors: u64,
    /// See [`SlowPathCounters::encap_errors`].
    pub encap_errors: u64,
    /// See [`SlowPathCounters::tun_tx`].
    pub tun_tx: u64,
    /// See [`SlowPathCounters::tun_tx_errors`].
    pub tun_tx_errors: u64,
    /// See [`SlowPathCounters::inbound_drops`].
    pub inbound_drops: u64,
}

impl SlowPathCounters {
    /// Copies the counters.
    pub fn snapshot(&self) -> SlowPathCountersSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SlowPathCountersSnapshot {
            tun_rx: l(&self.tun_rx),
            raw_tx: l(&self.raw_tx),
            raw_tx_errors: l(&self.raw_tx_errors),
            encap_errors: l(&self.encap_errors),
            tun_tx: l(&self.tun_tx),
            tun_tx_errors: l(&self.tun_tx_errors),
            inbound_drops: l(&self.inbound_drops),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Shared {
    table: Arc<SaTable>,
    tuns: ArcSwap<HashMap<TunnelId, Arc<Tun>>>,
    raw4: OwnedFd,
    /// `None` when the host has IPv6 disabled.
    raw6: Option<OwnedFd>,
    params: Arc<TunnelParams>,
    counters: SlowPathCounters,
}

fn raw_socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What the workers need from the slow path: cheap to clone, lock-free.
#[derive(Clone)]
pub struct SlowPathHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SlowPathHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlowPathHandle").finish_non_exhaustive()
    }
}

impl SlowPathHandle {
    /// Writes an inner (decrypted) packet to the TUN of `tunnel`, for the
    /// kernel to deliver or forward.
    pub fn deliver_inner(&self, tunnel: TunnelId, packet: &[u8]) -> Result<(), SlowPathError> {
        let tuns = self.shared.tuns.load();
        let Some(tun) = tuns.get(&tunnel) else {
            bump(&self.shared.counters.tun_tx_errors);
            return Err(SlowPathError::NoTun { tunnel });
        };
        match tun.write(packet) {
            Ok(_) => {
                bump(&self.shared.counters.tun_tx);
                Ok(())
            }
            Err(e) => {
                bump(&self.shared.counters.tun_tx_errors);
                Err(SlowPathError::Io {
                    op: "write to TUN",
                    source: e,
                })
            }
        }
    }

    /// Sends a complete outer IP packet (as built by `encap`) through the
    /// raw socket of its family; the kernel routes it.
    pub fn send_outer(&self, packet: &[u8]) -> Result<(), SlowPathError> {
        let r = send_raw(&self.shared, packet);
        match &r {
            Ok(()) => bump(&self.shared.counters.raw_tx),
            Err(_) => bump(&self.shared.counters.raw_tx_errors),
        }
        r
    }

    /// The slow path's counters.
    pub fn counters(&self) -> SlowPathCountersSnapshot {
        self.shared.counters.snapshot()
    }
}

fn send_raw(sh: &Shared, packet: &[u8]) -> Result<(), SlowPathError> {
    let version = packet.first().map(|b| b >> 4);
    let rc = match version {
        Some(4) if packet.len() >= 20 => {
            // SAFETY: sockaddr_in is plain data; zero is a valid start.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_addr.s_addr =
                u32::from_ne_bytes([packet[16], packet[17], packet[18], packet[19]]);
            // SAFETY: packet and sa are valid for the given lengths.
            unsafe {
                libc::sendto(
                    sh.raw4.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&raw const sa).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        Some(6) if packet.len() >= 40 => {
            let Some(raw6) = &sh.raw6 else {
                return Err(SlowPathError::Io {
                    op: "IPv6 raw socket",
                    source: io::ErrorKind::Unsupported.into(),
                });
            };
            // SAFETY: sockaddr_in6 is plain data; zero is a valid start.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_addr.s6_addr.copy_from_slice(&packet[24..40]);
            // SAFETY: as above. IPPROTO_RAW on IPv6 implies IPV6_HDRINCL.
            unsafe {
                libc::sendto(
                    raw6.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&raw const sa).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
        _ => return Err(SlowPathError::NotIp),
    };
    if rc < 0 {
        return Err(SlowPathError::Io {
            op: "send outer packet on the raw socket",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

struct Reader {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

/// The epoll reader of every TUN. `wake` (an eventfd, registered with
/// [`WAKE`]) makes it look at `stop` at once.
struct TunReader {
    epoll: Arc<OwnedFd>,
    wake: Arc<OwnedFd>,
    reader: Reader,
}

/// epoll token of the wake-up eventfd (tunnel ids are below 2^32).
const WAKE: u64 = u64::MAX;

/// How long [`SlowPath::remove_tunnel`] waits for the last users of a TUN
/// (the reader in a batch, a worker delivering) before it lets the
/// descriptor close behind them.
const TUN_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The slow path of the gateway: every tunnel's TUN, the raw sockets and
/// the inbound entry point for ESP from the IKE socket.
pub struct SlowPath {
    shared: Arc<Shared>,
    reader: Option<TunReader>,
    esp_receiver: Option<Reader>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for SlowPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlowPath")
            .field(
                "tunnels",
                &self.shared.tuns.load().keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl SlowPath {
    /// Opens the raw sockets in the current network namespace.
    pub fn new(table: Arc<SaTable>) -> Result<Self, SlowPathError> {
        Self::with_tunnel_params(table, Arc::new(TunnelParams::default()))
    }

    /// As [`Self::new`], with the backend's per-tunnel inner MTU and MSS
    /// clamping switch.
    pub fn with_tunnel_params(
        table: Arc<SaTable>,
        params: Arc<TunnelParams>,
    ) -> Result<Self, SlowPathError> {
        let raw4 = raw_socket(libc::AF_INET).map_err(io_err("raw IPv4 socket"))?;
        let raw6 = raw_socket(libc::AF_INET6).ok();
        Ok(Self {
            shared: Arc::new(Shared {
                table,
                tuns: ArcSwap::from_pointee(HashMap::new()),
                raw4,
                raw6,
                params,
                counters: SlowPathCounters::default(),
            }),
            reader: None,
            esp_receiver: None,
            buf: vec![0; MAX_PACKET],
        })
    }

    /// The handle the AF_XDP workers use.
    pub fn handle(&self) -> SlowPathHandle {
        SlowPathHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The TUN reader thread, started on first use.
    fn reader(&mut self) -> Result<&TunReader, SlowPathError> {
        if self.reader.is_none() {
            // SAFETY: plain syscalls; the results are checked and owned.
            let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if epoll < 0 {
                return Err(io_err("epoll_create1")(io::Error::last_os_error()));
            }
            // SAFETY: as above.
            let epoll = Arc::new(unsafe { OwnedFd::from_raw_fd(epoll) });
            // SAFETY: as above.
            let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if wake < 0 {
                return Err(io_err("eventfd")(io::Error::last_os_error()));
            }
            // SAFETY: as above.
            let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(wake) });
            epoll_ctl(&epoll, libc::EPOLL_CTL_ADD, wake.as_raw_fd(), WAKE)
                .map_err(io_err("registering the wake-up eventfd"))?;
            let stop = Arc::new(AtomicBool::new(false));
            let (sh, ep, wk, st) = (
                Arc::clone(&self.shared),
                Arc::clone(&epoll),
                Arc::clone(&wake),
                Arc::clone(&stop),
            );
            let handle = std::thread::Builder::new()
                .name("tun-rx".into())
                .spawn(move || tun_reader(&sh, &ep, &wk, &st))
                .map_err(io_err("spawning the TUN reader"))?;
            self.reader = Some(TunReader {
                epoll,
                wake,
                reader: Reader { stop, handle },
            });
        }
        Ok(self.reader.as_ref().expect("just set"))
    }

    /// Serves `tun` as the TUN of `tunnel` from now on (replacing a
    /// previous TUN of the tunnel).
    pub fn add_tunnel(&mut self, tunnel: TunnelId, tun: Tun) -> Result<(), SlowPathError> {
        self.remove_tunnel(tunnel);
        let fd = tun.as_raw_fd();
        let epoll = Arc::clone(&self.reader()?.epoll);
        let mut next = HashMap::clone(&self.shared.tuns.load());
        next.insert(tunnel, Arc::new(tun));
        self.shared.tuns.store(Arc::new(next));
        if let Err(e) = epoll_ctl(&epoll, libc::EPOLL_CTL_ADD, fd, u64::from(tunnel)) {
            self.remove_tunnel(tunnel);
            return Err(io_err("registering the TUN with epoll")(e));
        }
        Ok(())
    }

    /// Stops serving the tunnel's TUN. The descriptor is closed here once
    /// the reader and the workers let go of it, which they do within one
    /// batch, so that a tunnel re-created under the same interface name
    /// can open it again. A persistent TUN ([`Tun::set_persist`]) stays,
    /// with its addresses and routes (a restart); see
    /// [`Self::delete_tunnel`].
    pub fn remove_tunnel(&mut self, tunnel: TunnelId) {
        self.release(tunnel, false);
    }

    /// [`Self::remove_tunnel`], and the interface goes with the descriptor
    /// even if it was persistent: the tunnel is gone for good.
    pub fn delete_tunnel(&mut self, tunnel: TunnelId) {
        self.release(tunnel, true);
    }

    fn release(&mut self, tunnel: TunnelId, delete: bool) {
        let cur = self.shared.tuns.load_full();
        let Some(tun) = cur.get(&tunnel).cloned() else {
            return;
        };
        if delete {
            if let Err(e) = tun.set_persist(false) {
                tracing::warn!(tunnel, tun = tun.name(), error = %e, "cannot make the TUN non-persistent: it outlives the tunnel");
            }
        }
        if let Some(r) = &self.reader {
            // Deregistered first: the reader gets no new event for it.
            let _ = epoll_ctl(&r.epoll, libc::EPOLL_CTL_DEL, tun.as_raw_fd(), 0);
        }
        let mut next = HashMap::clone(&cur);
        next.remove(&tunnel);
        self.shared.tuns.store(Arc::new(next));
        drop(cur);
        let deadline = std::time::Instant::now() + TUN_RELEASE_WAIT;
        while Arc::strong_count(&tun) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    /// ESP received on the IKE driver's UDP 4500 socket (a datagram whose
    /// first four bytes are not the zero non-ESP marker): `payload` is the
    /// UDP payload, SPI through ICV. Decapsulates it with the shared table
    /// and writes the inner packet to the SA's tunnel's TUN. `src`/`dst`
    /// are the datagram's addresses; they are only logged today (ESP's ICV
    /// authenticates the packet; NAT-T port changes are IKE's business).
    pub fn inbound_esp(
        &mut self,
        payload: &[u8],
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Result<TunnelId, SlowPathError> {
        let n = payload.len();
        let Some(slot) = self.buf.get_mut(..n) else {
            return Err(SlowPathError::TooLong { len: n });
        };
        slot.copy_from_slice(payload);
        let rx = match self.shared.table.decap_esp(&mut self.buf, 0..n) {
            Ok(r) => r,
            Err(e) => {
                bump(&self.shared.counters.inbound_drops);
                if !e.is_silent() {
                    tracing::debug!(%src, %dst, reason = e.reason(), "slow path ESP dropped");
                }
                return Err(e.into());
            }
        };
        if !self
            .shared
            .params
            .police()
            .admit(rx.tunnel, Way::In, rx.decap.inner.len())
        {
            // Counted by the policer.
            return Ok(rx.tunnel);
        }
        self.shared
            .params
            .clamp(rx.tunnel, &mut self.buf[rx.decap.inner.clone()]);
        let inner = &self.buf[rx.decap.inner.clone()];
        self.handle().deliver_inner(rx.tunnel, inner)?;
        Ok(rx.tunnel)
    }

    /// The slow path's counters.
    pub fn counters(&self) -> SlowPathCountersSnapshot {
        self.shared.counters.snapshot()
    }

    /// Starts receiving plain ESP (IP protocol 50, no UDP encapsulation)
    /// on raw sockets of the current network namespace, for when the fast
    /// path is off or XDP passes a packet: the kernel has no ESP of its own,
    /// a raw socket gets a copy of every ESP packet addressed to us (and its
    /// presence stops the kernel's protocol-unreachable reply). Decrypted
    /// packets go to their tunnel's TUN. Idempotent.
    pub fn spawn_esp_receiver(&mut self) -> Result<(), SlowPathError> {
        if self.esp_receiver.is_some() {
            return Ok(());
        }
        let esp = |family| {
            // SAFETY: plain syscall; the result is checked.
            let fd = unsafe {
                libc::socket(
                    family,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                    libc::IPPROTO_ESP,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fresh descriptor we own.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let v4 = esp(libc::AF_INET).map_err(io_err("raw ESP socket"))?;
        let v6 = esp(libc::AF_INET6).ok();
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, st) = (Arc::clone(&self.shared), Arc::clone(&stop));
        let handle = std::thread::Builder::new()
            .name("esp-rx".into())
            .spawn(move || esp_receiver(&sh, &v4, v6.as_ref(), &st))
            .map_err(io_err("spawning the ESP receiver"))?;
        self.esp_receiver = Some(Reader { stop, handle });
        Ok(())
    }

    /// Stops every reader thread.
    pub fn shutdown(&mut self) {
        if let Some(r) = self.esp_receiver.take() {
            r.stop.store(true, Ordering::Relaxed);
            let _ = r.handle.join();
        }
        if let Some(r) = self.reader.take() {
            r.reader.stop.store(true, Ordering::Relaxed);
            let one = 1u64.to_ne_bytes();
            // SAFETY: an 8-byte write to our eventfd.
            unsafe { libc::write(r.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
            let _ = r.reader.handle.join();
        }
        let ids: Vec<TunnelId> = self.shared.tuns.load().keys().copied().collect();
        for t in ids {
            self.remove_tunnel(t);
        }
    }
}

impl Drop for SlowPath {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn epoll_ctl(epoll: &OwnedFd, op: libc::c_int, fd: libc::c_int, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: valid descriptors and a live event struct.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd, &raw mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Every TUN's TUN → ESP → raw socket loop.
fn tun_reader(sh: &Shared, epoll: &OwnedFd, wake: &OwnedFd, stop: &AtomicBool) {
    let mut buf = vec![0u8; MAX_HEADROOM + MAX_PACKET + MAX_TAILROOM];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `events` is a live buffer of the length given.
        let n = unsafe {
            libc::epoll_wait(
                epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                1000,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::warn!(error = %e, "waiting on the TUNs failed");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            continue;
        }
        for ev in &events[..n as usize] {
            let token = ev.u64;
            if token == WAKE {
                let mut b = [0u8; 8];
                // SAFETY: an 8-byte read from our eventfd.
                unsafe { libc::read(wake.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
                continue;
            }
            let Ok(tunnel) = TunnelId::try_from(token) else {
                continue;
            };
            let Some(tun) = sh.tuns.load().get(&tunnel).cloned() else {
                continue;
            };
            drain_tun(sh, tunnel, &tun, &mut buf);
        }
    }
}

/// Encapsulates and sends what is queued on one TUN, at most one batch
/// (level-triggered epoll brings the rest back on the next round).
fn drain_tun(sh: &Shared, tunnel: TunnelId, tun: &Tun, buf: &mut [u8]) {
    for _ in 0..256 {
        let n = match tun.read(&mut buf[MAX_HEADROOM..MAX_HEADROOM + MAX_PACKET]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                tracing::warn!(tunnel, error = %e, "reading the TUN failed");
                break;
            }
        };
        bump(&sh.counters.tun_rx);
        if !sh.params.police().admit(tunnel, Way::Out, n) {
            continue;
        }
        sh.params
            .clamp(tunnel, &mut buf[MAX_HEADROOM..MAX_HEADROOM + n]);
        match sh.table.encap(tunnel, buf, MAX_HEADROOM..MAX_HEADROOM + n) {
            Ok(e) => {
                if e.soft_limit_reached {
                    tracing::debug!(tunnel, "outbound SA past its soft limit");
                }
                match send_raw(sh, &buf[e.packet]) {
                    Ok(()) => bump(&sh.counters.raw_tx),
                    Err(err) => {
                        bump(&sh.counters.raw_tx_errors);
                        tracing::debug!(tunnel, error = %err, "slow path send failed");
                    }
                }
            }
            Err(err) => {
                bump(&sh.counters.encap_errors);
                tracing::debug!(tunnel, error = %err, "slow path encap failed");
            }
        }
    }
}

/// Receives plain ESP on raw sockets until `stop` (see
/// [`SlowPath::spawn_esp_receiver`]). IPv4 raw sockets deliver the IP
/// header too; IPv6 ones only the payload.
fn esp_receiver(sh: &Shared, v4: &OwnedFd, v6: Option<&OwnedFd>, stop: &AtomicBool) {
    let mut buf = vec![0u8; MAX_PACKET];
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [
            libc::pollfd {
                fd: v4.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: v6.map_or(-1, AsRawFd::as_raw_fd),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds (a negative fd is ignored by poll).
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, 100) };
        if rc <= 0 {
            continue;
        }
        for (i, fd) in [Some(v4), v6].into_iter().enumerate() {
            let Some(fd) = fd else { continue };
            if fds[i].revents & libc::POLLIN == 0 {
                continue;
            }
            for _ in 0..256 {
                // SAFETY: buf is writable for its length.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                let Ok(n) = usize::try_from(n) else { break };
                let esp = if i == 0 {
                    // Skip the IPv4 header; trust its lengths only as far
                    // as the bytes received.
                    if n < 20 {
                        bump(&sh.counters.inbound_drops);
                        continue;
                    }
                    let ihl = usize::from(buf[0] & 0x0f) * 4;
                    let total = usize::from(u16::from_be_bytes([buf[2], buf[3]])).min(n);
                    if ihl < 20 || ihl > total {
                        bump(&sh.counters.inbound_drops);
                        continue;
                    }
                    ihl..total
                } else {
                    0..n
                };
                match sh.table.decap_esp(&mut buf, esp) {
                    Ok(rx) => {
                        if !sh
                            .params
                            .police()
                            .admit(rx.tunnel, Way::In, rx.decap.inner.len())
                        {
                            continue;
                        }
                        sh.params.clamp(rx.tunnel, &mut buf[rx.decap.inner.clone()]);
                        let tuns = sh.tuns.load();
                        let written = tuns
                            .get(&rx.tunnel)
                            .map(|t| t.write(&buf[rx.decap.inner.clone()]));
                        match written {
                            Some(Ok(_)) => bump(&sh.counters.tun_tx),
                            _ => bump(&sh.counters.tun_tx_errors),
                        }
                    }
                    Err(_) => bump(&sh.counters.inbound_drops),
                }
            }
        }
    }
}

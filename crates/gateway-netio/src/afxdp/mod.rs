//! AF_XDP sockets for the fast path: a UMEM of fixed-size frames, one
//! [`XskSocket`] per (interface, queue), batched receive and transmit, fill and
//! completion ring handling and frame recycling without per-packet allocation.
//! It does not load XDP programs; [`xskmap`] inserts a socket into the `XSKMAP`
//! the dataplane's program redirects to.
//!
//! # Why `xdpilone`
//! `xdpilone` is a maintained, pure-Rust implementation of the AF_XDP ring
//! protocol (the `xsk.h` logic of libxdp) over `libc`: no libbpf/libxdp C build,
//! no bindgen, and it does not insist on loading its own XDP program (we have
//! our own in `gateway-ebpf`). The alternatives either wrap libbpf/libxdp
//! (`libxdp-sys`, `xsk-rs`: C toolchain and a pinned libbpf), are unmaintained
//! (`afxdp`), or would mean writing the ring barriers ourselves. We use its ring
//! primitives and keep frame ownership here.
//!
//! # Design: one UMEM per worker, shared by its sockets
//! A worker thread owns one [`Umem`] and binds every socket it serves to it
//! (e.g. queue 3 of the LAN interface and queue 3 of the WAN interface, with
//! `XDP_SHARED_UMEM`; each gets its own fill and completion ring). A frame
//! received on one socket can then be rewritten in place (ESP encap/decap) and
//! handed to the other socket's TX ring without a copy: the frame is just an
//! offset into the shared area. Completions return frames to the UMEM's free
//! list; fill rings are refilled from it. Nothing is shared between threads, so
//! no locks. (Copying between UMEMs is never needed in this design.)
//!
//! # Frame layout
//! Each chunk is `frame_size` bytes. On receive the kernel writes the packet at
//! `headroom + XDP_PACKET_HEADROOM (256)` into the chunk, where `headroom` is
//! [`UmemConfig::headroom`]. If the XDP program grew the metadata area with
//! `bpf_xdp_adjust_meta(ctx, -N)`, those `N` bytes sit immediately in front of
//! the packet data, and [`Umem::metadata`] returns them; the descriptor does
//! not carry `N`, so the reader must know the metadata size it agreed with the
//! program. (Some kernels refuse that helper: the gateway's programs prepend
//! their metadata to the frame with `bpf_xdp_adjust_head` instead, as the
//! privileged test's program does, and the reader moves the packet's start
//! past it with [`Umem::set_packet`].) Everything in
//! front of the data is free headroom for prepending outer headers (outer
//! IP + UDP + ESP), everything after it up to the chunk end is tailroom (ESP
//! trailer + ICV). A transmit descriptor may start anywhere in its chunk.
//!
//! # Checksums on veth (lab setups)
//! A packet sent by a local stack over veth is `CHECKSUM_PARTIAL` (tx
//! checksum offload): its UDP/TCP checksum field holds only the pseudo-header
//! sum when XDP redirects it to AF_XDP. A real NIC delivers complete checksums.
//! Whoever forwards such frames (the echo test, an ESP encap of a VPC host's
//! packet in the netns lab) must complete the checksum or the lab must disable
//! tx offload on the sender's veth (`ethtool -K <dev> tx off`); otherwise the
//! receiver drops them as `UdpInCsumErrors`.
//!
//! # Ownership and safety
//! A [`Frame`] is a move-only token for one chunk that userspace owns (not in
//! any ring). Only [`XskSocket::recv`] and [`Umem::alloc`] create them; they are
//! consumed by [`XskSocket::send`] or [`Umem::release`]. While a token exists
//! the kernel does not touch the chunk, so handing out `&mut [u8]` for it under
//! `&mut Umem` is sound; a token from another UMEM is bounds-checked and at
//! worst refers to the wrong bytes, never out of the mapping.

//!
//! # A worker loop (how the dataplane glues it)
//! ```no_run
//! use gateway_netio::afxdp::{xskmap, Batch, Umem, UmemConfig, XskConfig, XskSocket};
//! # fn esp_encap(_chunk: &mut [u8], r: std::ops::Range<usize>, _meta: &[u8]) -> Option<std::ops::Range<usize>> { Some(r) }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let queue = 0;
//! let mut umem = Umem::new(UmemConfig::default())?;
//! let mut lan = XskSocket::bind(&mut umem, "lan0", queue, &XskConfig::default())?;
//! let mut wan = XskSocket::bind(&mut umem, "wan0", queue, &XskConfig::default())?;
//! xskmap::update_pinned("/sys/fs/bpf/s2s/XSKS_LAN".as_ref(), queue, lan.fd())?;
//! let (mut rx, mut tx) = (Batch::with_capacity(64), Batch::with_capacity(64));
//! loop {
//!     lan.recv(&mut umem, &mut rx);
//!     for mut f in rx.drain() {
//!         let meta = umem.metadata(&f, 8).map(<[u8]>::to_vec); // (copy only for the example)
//!         let (chunk, range) = umem.chunk_mut(&f);
//!         let out = esp_encap(chunk, range, meta.as_deref().unwrap_or_default());
//!         match out.map(|r| umem.set_packet(&mut f, r)) {
//!             Some(Ok(())) => {
//!                 if let Err(f) = tx.push(f) {
//!                     umem.release(f); // batch full: drop
//!                 }
//!             }
//!             _ => umem.release(f),
//!         }
//!     }
//!     wan.send(&mut umem, &mut tx); // leftovers stay in `tx` for the next round
//!     wan.flush(&mut umem);
//! }
//! # }
//! ```

pub mod xskmap;

use std::ffi::CString;
use std::io;
use std::num::NonZeroU32;
use std::os::fd::{BorrowedFd, RawFd};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use xdpilone::xdp::XdpDesc;

/// Bytes the kernel reserves in front of every received packet
/// (`XDP_PACKET_HEADROOM`), on top of [`UmemConfig::headroom`].
pub const XDP_PACKET_HEADROOM: u32 = 256;

/// Errors creating or binding AF_XDP objects.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    #[error("mapping the UMEM area")]
    Mmap(#[source] io::Error),
    #[error("{op} failed")]
    Os {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("binding {ifname} queue {queue}")]
    Bind {
        ifname: String,
        queue: u32,
        #[source]
        source: io::Error,
    },
}

fn os(op: &'static str, e: xdpilone::Errno) -> XskError {
    XskError::Os {
        op,
        source: io::Error::from_raw_os_error(e.get_raw().abs()),
    }
}

/// UMEM geometry.
#[derive(Debug, Clone)]
pub struct UmemConfig {
    /// Number of frames; the area is `frame_count * frame_size` bytes, locked in
    /// memory (needs `CAP_IPC_LOCK` or enough `RLIMIT_MEMLOCK`).
    pub frame_count: u32,
    /// 2048 or 4096 (aligned chunk mode: a power of two, at most a page).
    pub frame_size: u32,
    /// Extra bytes the kernel leaves free in front of each received packet, on
    /// top of the 256 of `XDP_PACKET_HEADROOM` (which also holds XDP metadata).
    pub headroom: u32,
    /// Fill and completion ring sizes per socket (powers of two).
    pub fill_size: u32,
    pub comp_size: u32,
}

impl Default for UmemConfig {
    fn default() -> Self {
        Self {
            frame_count: 8192,
            frame_size: 4096,
            headroom: 128,
            fill_size: 2048,
            comp_size: 2048,
        }
    }
}

/// One chunk of the UMEM owned by userspace, with the packet's position in it.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// Chunk start, as an offset into the UMEM area.
    base: u64,
    /// Packet start within the chunk.
    start: u32,
    len: u32,
}

impl Frame {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offset of the packet in its chunk (= bytes of headroom in front of it).
    pub fn start(&self) -> usize {
        self.start as usize
    }

    /// The UMEM address of the packet (what a descriptor carries).
    pub fn addr(&self) -> u64 {
        self.base + u64::from(self.start)
    }
}

/// A bounded set of frames: receive fills it, transmit drains it. Its capacity
/// is fixed at construction; it never reallocates.
#[derive(Debug)]
pub struct Batch {
    frames: Vec<Frame>,
}

impl Batch {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            frames: Vec::with_capacity(n),
        }
    }

    pub fn capacity(&self) -> usize {
        self.frames.capacity()
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    fn room(&self) -> usize {
        self.frames.capacity() - self.frames.len()
    }

    /// Add a frame; gives it back if the batch is full.
    pub fn push(&mut self, f: Frame) -> Result<(), Frame> {
        if self.room() == 0 {
            return Err(f);
        }
        self.frames.push(f);
        Ok(())
    }

    pub fn pop(&mut self) -> Option<Frame> {
        self.frames.pop()
    }

    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    pub fn frames_mut(&mut self) -> &mut [Frame] {
        &mut self.frames
    }

    /// Take all frames out, in order.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Frame> {
        self.frames.drain(..)
    }
}

/// An anonymous, page-aligned mapping that backs a UMEM.
struct Area {
    ptr: NonNull<u8>,
    len: usize,
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from a successful mmap and are unmapped once.
        // The kernel keeps its own page references for as long as a socket
        // still uses the UMEM, so this cannot pull memory from under it.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The packet memory of one worker and its free-frame list.
pub struct Umem {
    // Field order matters: the AF_XDP registration (`inner`) is dropped before
    // the mapping.
    inner: xdpilone::Umem,
    area: Area,
    cfg: UmemConfig,
    /// Chunk base addresses owned by userspace and not handed out as a `Frame`.
    free: Vec<u64>,
    /// Whether the UMEM's own socket fd already serves a device queue.
    own_fd_used: bool,
}

// SAFETY: `Umem` owns its mapping exclusively (raw pointers inside are what
// make it !Send); moving it to another thread moves that ownership with it.
unsafe impl Send for Umem {}

impl Umem {
    pub fn new(cfg: UmemConfig) -> Result<Self, XskError> {
        if !cfg.frame_size.is_power_of_two() || !(2048..=4096).contains(&cfg.frame_size) {
            return Err(XskError::Config("frame_size must be 2048 or 4096"));
        }
        if cfg.frame_count == 0
            || !cfg.fill_size.is_power_of_two()
            || !cfg.comp_size.is_power_of_two()
        {
            return Err(XskError::Config(
                "frame_count > 0 and ring sizes powers of two",
            ));
        }
        if cfg.headroom + XDP_PACKET_HEADROOM + 256 > cfg.frame_size {
            return Err(XskError::Config("headroom leaves no room for packets"));
        }
        let len = usize::try_from(u64::from(cfg.frame_count) * u64::from(cfg.frame_size))
            .map_err(|_| XskError::Config("UMEM too large"))?;
        // SAFETY: anonymous private mapping, no address hint; result checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(XskError::Mmap(io::Error::last_os_error()));
        }
        let area = Area {
            ptr: NonNull::new(p.cast()).ok_or(XskError::Mmap(io::ErrorKind::Other.into()))?,
            len,
        };
        let slice = NonNull::slice_from_raw_parts(area.ptr, len);
        let xcfg = xdpilone::UmemConfig {
            fill_size: cfg.fill_size,
            complete_size: cfg.comp_size,
            frame_size: cfg.frame_size,
            headroom: cfg.headroom,
            flags: 0,
        };
        // SAFETY: the area is page aligned (fresh mmap), `len` bytes long, and
        // `area` is kept alive in the same struct, dropped after `inner`.
        let inner =
            unsafe { xdpilone::Umem::new(xcfg, slice) }.map_err(|e| os("XDP_UMEM_REG", e))?;
        let free = (0..u64::from(cfg.frame_count))
            .rev()
            .map(|i| i * u64::from(cfg.frame_size))
            .collect();
        Ok(Self {
            inner,
            area,
            cfg,
            free,
            own_fd_used: false,
        })
    }

    pub fn config(&self) -> &UmemConfig {
        &self.cfg
    }

    /// Frames userspace holds in reserve (neither in a ring nor handed out).
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// Where a fresh packet starts in a chunk: the same spot the kernel uses on
    /// receive, so locally built packets get the same headroom.
    pub fn default_start(&self) -> u32 {
        self.cfg.headroom + XDP_PACKET_HEADROOM
    }

    /// Take a free frame to build a packet in (e.g. from the TUN slow path).
    /// Its data starts at [`Self::default_start`] with length 0.
    pub fn alloc(&mut self) -> Option<Frame> {
        let base = self.free.pop()?;
        Some(Frame {
            base,
            start: self.default_start(),
            len: 0,
        })
    }

    /// Give a frame back (a dropped packet).
    pub fn release(&mut self, f: Frame) {
        self.free.push(f.base);
    }

    fn chunk_of(&self, addr: u64) -> u64 {
        addr & !u64::from(self.cfg.frame_size - 1)
    }

    /// The whole chunk of `f` as bytes, or `None` if `f` is not from this UMEM.
    fn chunk_ptr(&self, f: &Frame) -> Option<*mut u8> {
        let base = usize::try_from(f.base).ok()?;
        let end = base.checked_add(self.cfg.frame_size as usize)?;
        if end > self.area.len {
            return None;
        }
        // SAFETY: `base + frame_size <= len`, so the offset stays inside the mapping.
        Some(unsafe { self.area.ptr.as_ptr().add(base) })
    }

    /// The whole chunk (headroom, packet, tailroom) and the packet's range in
    /// it, for in-place transforms that move the packet's start or end (ESP).
    /// Apply the result with [`Self::set_packet`]. Empty for a foreign frame.
    pub fn chunk_mut(&mut self, f: &Frame) -> (&mut [u8], std::ops::Range<usize>) {
        let range = f.start()..f.start() + f.len();
        match self.chunk_ptr(f) {
            // SAFETY: the chunk lies within the mapping (checked by chunk_ptr); the
            // frame token proves userspace owns it, and `&mut self` excludes any
            // other slice into the area for the returned lifetime.
            Some(p) => (
                unsafe { std::slice::from_raw_parts_mut(p, self.cfg.frame_size as usize) },
                range,
            ),
            None => (&mut [], 0..0),
        }
    }

    /// The packet bytes of `f`.
    pub fn data(&self, f: &Frame) -> &[u8] {
        match self.chunk_ptr(f) {
            // SAFETY: start+len <= frame_size is an invariant of every Frame
            // (set_packet and recv check it); the chunk is in bounds and owned.
            Some(p) => unsafe { std::slice::from_raw_parts(p.add(f.start()), f.len()) },
            None => &[],
        }
    }

    /// The packet bytes of `f`, writable.
    pub fn data_mut(&mut self, f: &Frame) -> &mut [u8] {
        let (chunk, range) = self.chunk_mut(f);
        chunk.get_mut(range).unwrap_or_default()
    }

    /// The `len` bytes immediately in front of the packet: the XDP metadata if
    /// the program grew it by `len` with `bpf_xdp_adjust_meta`. `None` if the
    /// headroom is shorter than `len`.
    pub fn metadata(&self, f: &Frame, len: usize) -> Option<&[u8]> {
        let from = f.start().checked_sub(len)?;
        let p = self.chunk_ptr(f)?;
        // SAFETY: `from..start` lies inside the owned, in-bounds chunk.
        Some(unsafe { std::slice::from_raw_parts(p.add(from), len) })
    }

    /// Move the packet to `range` within its chunk (after prepending headers or
    /// appending a trailer in the bytes from [`Self::chunk_mut`]).
    pub fn set_packet(&self, f: &mut Frame, range: std::ops::Range<usize>) -> Result<(), XskError> {
        if range.start > range.end || range.end > self.cfg.frame_size as usize {
            return Err(XskError::Config("packet range outside its frame"));
        }
        f.start = u32::try_from(range.start).map_err(|_| XskError::Config("range"))?;
        f.len = u32::try_from(range.end - range.start).map_err(|_| XskError::Config("range"))?;
        Ok(())
    }

    /// Bytes free in front of the packet.
    pub fn headroom(&self, f: &Frame) -> usize {
        f.start()
    }

    /// Bytes free after the packet up to the end of its chunk.
    pub fn tailroom(&self, f: &Frame) -> usize {
        (self.cfg.frame_size as usize).saturating_sub(f.start() + f.len())
    }
}

/// How to bind: let the kernel choose, or force copy / zero-copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BindMode {
    #[default]
    Auto,
    Copy,
    ZeroCopy,
}

/// Per-socket settings.
#[derive(Debug, Clone)]
pub struct XskConfig {
    pub rx_size: u32,
    pub tx_size: u32,
    pub mode: BindMode,
    /// How long to keep retrying a bind that fails with `EBUSY` (the kernel
    /// releases a queue asynchronously, ~1-2 s after the previous socket closed).
    pub busy_retry: Duration,
    /// Preferred busy polling on the socket (`None`: interrupts and NAPI
    /// as the device is set up).
    pub busy_poll: Option<BusyPoll>,
}

/// Preferred busy polling (kernel `Documentation/networking/napi.rst`):
/// the application's `recvfrom`/`sendto`/`poll` run the queue's NAPI
/// instead of the softirq, and with the device's `napi_defer_hard_irqs`
/// and `gro_flush_timeout` set, interrupts stay off while it keeps up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyPoll {
    /// `SO_BUSY_POLL`: microseconds one call may busy-poll for.
    pub usecs: u32,
    /// `SO_BUSY_POLL_BUDGET`: packets per NAPI poll from a busy-poll.
    pub budget: u16,
}

impl Default for XskConfig {
    fn default() -> Self {
        Self {
            rx_size: 2048,
            tx_size: 2048,
            mode: BindMode::Auto,
            busy_retry: Duration::from_secs(5),
            busy_poll: None,
        }
    }
}

// Workers may build their sockets on one thread and run them on another.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Umem>();
    assert_send::<XskSocket>();
};

/// Kernel counters of one socket (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// An AF_XDP socket bound to one (interface, queue), with its own fill,
/// completion, RX and TX rings over a shared [`Umem`].
///
/// Frames sitting in its fill ring or awaiting TX completion when it is dropped
/// do not return to the UMEM's free list: drop sockets only with their UMEM
/// (a worker's lifetime). If the first bind on a fresh UMEM fails, make a new
/// UMEM before retrying (its own fd already carries ring setup).
pub struct XskSocket {
    dev: xdpilone::DeviceQueue,
    rx: xdpilone::RingRx,
    tx: xdpilone::RingTx,
    ifindex: u32,
    queue: u32,
    /// Frames in the TX ring or awaiting completion.
    tx_in_flight: u32,
    /// Preferred busy polling is set on the socket.
    busy_poll: bool,
}

fn setsockopt(fd: RawFd, opt: libc::c_int, value: i32, op: &'static str) -> Result<(), XskError> {
    // SAFETY: `value` is a live i32 for the duration of the call and its
    // size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(XskError::Os {
            op,
            source: io::Error::last_os_error(),
        })
    }
}

fn getsockopt(fd: RawFd, opt: libc::c_int) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live and sized as the kernel expects.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            std::ptr::from_mut(&mut value).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

impl XskSocket {
    /// Create a socket on `ifname` queue `queue` over `umem` and bind it.
    pub fn bind(
        umem: &mut Umem,
        ifname: &str,
        queue: u32,
        cfg: &XskConfig,
    ) -> Result<Self, XskError> {
        let cname =
            CString::new(ifname).map_err(|_| XskError::Config("interface name contains NUL"))?;
        let mut info = xdpilone::IfInfo::invalid();
        info.from_name(&cname).map_err(|e| XskError::Bind {
            ifname: ifname.to_owned(),
            queue,
            source: io::Error::from_raw_os_error(e.get_raw().abs()),
        })?;
        info.set_queue(queue);
        // The first socket uses the UMEM's own fd; later ones get a new fd and
        // bind with XDP_SHARED_UMEM (xdpilone sets the flag when fds differ).
        let sock = if umem.own_fd_used {
            xdpilone::Socket::new(&info)
        } else {
            xdpilone::Socket::with_shared(&info, &umem.inner)
        }
        .map_err(|e| os("socket(AF_XDP)", e))?;
        let dev = umem
            .inner
            .fq_cq(&sock)
            .map_err(|e| os("fill/completion rings", e))?;
        // A socket joining a UMEM (XDP_SHARED_UMEM) must not pass mode or
        // need-wakeup flags (EINVAL): it inherits those of the UMEM's first socket.
        let bind_flags = if umem.own_fd_used {
            0
        } else {
            xdpilone::SocketConfig::XDP_BIND_NEED_WAKEUP
                | match cfg.mode {
                    BindMode::Auto => 0,
                    BindMode::Copy => xdpilone::SocketConfig::XDP_BIND_COPY,
                    BindMode::ZeroCopy => xdpilone::SocketConfig::XDP_BIND_ZEROCOPY,
                }
        };
        let scfg = xdpilone::SocketConfig {
            rx_size: NonZeroU32::new(cfg.rx_size),
            tx_size: NonZeroU32::new(cfg.tx_size),
            bind_flags,
        };
        let user = umem
            .inner
            .rx_tx(&sock, &scfg)
            .map_err(|e| os("rx/tx rings", e))?;
        let rx = user.map_rx().map_err(|e| os("mmap rx ring", e))?;
        let tx = user.map_tx().map_err(|e| os("mmap tx ring", e))?;
        let deadline = Instant::now() + cfg.busy_retry;
        let mut backoff = Duration::from_millis(20);
        loop {
            match umem.inner.bind(&user) {
                Ok(()) => break,
                Err(e) if e.get_raw().abs() == libc::EBUSY && Instant::now() < deadline => {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Err(e) => {
                    return Err(XskError::Bind {
                        ifname: ifname.to_owned(),
                        queue,
                        source: io::Error::from_raw_os_error(e.get_raw().abs()),
                    })
                }
            }
        }
        if !umem.own_fd_used {
            umem.own_fd_used = true;
        }
        let mut s = Self {
            dev,
            rx,
            tx,
            ifindex: info.ifindex(),
            queue,
            tx_in_flight: 0,
            busy_poll: cfg.busy_poll.is_some(),
        };
        if let Some(bp) = cfg.busy_poll {
            let fd = s.rx.as_raw_fd();
            setsockopt(
                fd,
                libc::SO_PREFER_BUSY_POLL,
                1,
                "setsockopt(SO_PREFER_BUSY_POLL)",
            )?;
            let usecs = i32::try_from(bp.usecs).unwrap_or(i32::MAX);
            setsockopt(fd, libc::SO_BUSY_POLL, usecs, "setsockopt(SO_BUSY_POLL)")?;
            let budget = i32::from(bp.budget);
            setsockopt(
                fd,
                libc::SO_BUSY_POLL_BUDGET,
                budget,
                "setsockopt(SO_BUSY_POLL_BUDGET)",
            )?;
        }
        s.refill(umem);
        Ok(s)
    }

    /// The busy-poll time the kernel holds for this socket, in
    /// microseconds, when preferred busy polling is on (`None` otherwise).
    /// The budget has no getter in the kernel.
    pub fn busy_poll_usecs(&self) -> io::Result<Option<u32>> {
        let fd = self.rx.as_raw_fd();
        let usecs = getsockopt(fd, libc::SO_BUSY_POLL)?;
        if usecs == 0 || getsockopt(fd, libc::SO_PREFER_BUSY_POLL)? == 0 {
            return Ok(None);
        }
        Ok(u32::try_from(usecs).ok())
    }

    /// With busy polling on, a non-blocking `recvfrom` that runs the
    /// queue's NAPI (what fills the RX ring when interrupts are deferred);
    /// nothing otherwise. Call when the RX ring came back empty.
    pub fn busy_poll_rx(&self) {
        if self.busy_poll {
            // SAFETY: a zero-length receive into no buffer on our own fd;
            // its result (EAGAIN, mostly) carries nothing we need.
            unsafe {
                libc::recvfrom(
                    self.rx.as_raw_fd(),
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                );
            }
        }
    }

    /// The socket fd: insert it into the `XSKMAP` at [`Self::queue`], or poll it.
    pub fn fd(&self) -> BorrowedFd<'_> {
        let raw: RawFd = self.rx.as_raw_fd();
        // SAFETY: the fd is owned by the rings inside `self` and stays open for
        // the lifetime of the borrow of `self`.
        unsafe { BorrowedFd::borrow_raw(raw) }
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Hand free frames to the kernel's fill ring: exactly as many as the ring
    /// has room for (xdpilone's `insert` would otherwise consume one extra item
    /// of the iterator and lose it).
    fn refill(&mut self, umem: &mut Umem) {
        let want = u32::try_from(umem.free.len())
            .unwrap_or(u32::MAX)
            .min(umem.cfg.fill_size);
        if want == 0 {
            return;
        }
        let mut w = self.dev.fill(want);
        let n = w.capacity() as usize;
        let at = umem.free.len() - n;
        for addr in umem.free.drain(at..) {
            // Guaranteed to succeed for the first `capacity` inserts.
            let _ = w.insert_once(addr);
        }
        w.commit();
        drop(w);
        if self.dev.needs_wakeup() {
            self.dev.wake();
        }
    }

    /// Return transmitted frames to the free list.
    fn reap(&mut self, umem: &mut Umem) {
        if self.tx_in_flight == 0 {
            return;
        }
        let mut r = self.dev.complete(self.tx_in_flight);
        let mut n = 0;
        while let Some(addr) = r.read() {
            umem.free.push(umem.chunk_of(addr));
            n += 1;
        }
        r.release();
        self.tx_in_flight -= n;
    }

    /// Receive up to `batch`'s free room of packets. Also recycles completed TX
    /// frames and tops up the fill ring. Never blocks; returns the count added.
    pub fn recv(&mut self, umem: &mut Umem, batch: &mut Batch) -> usize {
        self.reap(umem);
        self.refill(umem);
        let room = u32::try_from(batch.room()).unwrap_or(u32::MAX);
        if room == 0 {
            return 0;
        }
        let mut r = self.rx.receive(room);
        let mut n = 0;
        while let Some(d) = r.read() {
            let base = umem.chunk_of(d.addr);
            let start = u32::try_from(d.addr - base).unwrap_or(u32::MAX);
            let fits = start
                .checked_add(d.len)
                .is_some_and(|end| end <= umem.cfg.frame_size);
            if !fits {
                // Cannot happen with a sane kernel; recycle rather than trust it.
                umem.free.push(base);
                continue;
            }
            batch.frames.push(Frame {
                base,
                start,
                len: d.len,
            });
            n += 1;
        }
        r.release();
        n
    }

    /// Queue the batch's frames for transmission on this socket, in order, and
    /// kick the kernel. Frames that do not fit in the TX ring stay in `batch`
    /// (retry later). Returns the number queued.
    pub fn send(&mut self, umem: &mut Umem, batch: &mut Batch) -> usize {
        self.reap(umem);
        let want = u32::try_from(batch.len()).unwrap_or(u32::MAX);
        if want == 0 {
            return 0;
        }
        let mut w = self.tx.transmit(want);
        let n = w.capacity();
        for f in batch.frames.drain(..n as usize) {
            let _ = w.insert_once(XdpDesc {
                addr: f.addr(),
                len: f.len,
                options: 0,
            });
        }
        w.commit();
        drop(w);
        self.tx_in_flight += n;
        // Copy mode always needs the syscall to transmit; with need_wakeup the
        // kernel tells us when a zero-copy driver needs it too.
        if self.tx.needs_wakeup() {
            self.tx.wake();
        }
        n as usize
    }

    /// Kick TX and recycle completions without sending more (call when idle
    /// so frames in flight come back).
    pub fn flush(&mut self, umem: &mut Umem) {
        if self.tx_in_flight > 0 && self.tx.needs_wakeup() {
            self.tx.wake();
        }
        self.reap(umem);
    }

    /// Frames given to TX whose completion has not been seen yet.
    pub fn tx_in_flight(&self) -> u32 {
        self.tx_in_flight
    }

    /// Wait up to `timeout` for received packets (`poll(2)`); true if readable.
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd: self.rx.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd, count 1.
        let rc = unsafe { libc::poll(&raw mut p, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        Ok(rc > 0 && p.revents & libc::POLLIN != 0)
    }

    pub fn stats(&self) -> Result<XskStats, XskError> {
        let s = self
            .dev
            .statistics_v2()
            .map_err(|e| os("XDP_STATISTICS", e))?;
        Ok(XskStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }
}

//! TUN devices for the slow path: each tunnel has a layer-3 interface
//! (`IFF_TUN | IFF_NO_PI`: bare IPv4/IPv6 packets, no extra header) that the
//! kernel routes learned prefixes and the BGP session into. This module opens or
//! creates the device, configures it through [`crate::netlink`], and reads and
//! writes whole IP packets with caller buffers, non-blocking. Use it from a
//! thread with [`Tun::wait_readable`], or from tokio with [`AsyncTun`].
//!
//! With `multi_queue`, [`Tun::open_queue`] attaches further queues of the same
//! device so several workers can each own one fd; the kernel spreads flows
//! across them.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::netlink::{Address, Netlink, NetlinkError};

// include/uapi/linux/if_tun.h
const TUNSETIFF: u64 = 0x4004_54ca; // _IOW('T', 202, int)
const TUNSETPERSIST: u64 = 0x4004_54cb; // _IOW('T', 203, int)
const IFF_TUN: i16 = 0x0001;
const IFF_NO_PI: i16 = 0x1000;
const IFF_MULTI_QUEUE: i16 = 0x0100;

/// Errors opening or configuring a TUN device.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    #[error("interface name {0:?} is not valid (empty, longer than 15 bytes or contains NUL)")]
    BadName(String),
    #[error("{op} on /dev/net/tun")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("configuring the TUN interface")]
    Netlink(#[from] NetlinkError),
}

/// One queue (fd) of a TUN device.
#[derive(Debug)]
pub struct Tun {
    fd: OwnedFd,
    name: String,
    multi_queue: bool,
}

/// `struct ifreq` as TUNSETIFF reads it: name, then the flags `short`, padded
/// to the size of the union (40 bytes on 64-bit).
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

impl Tun {
    /// Open (creating if missing) the TUN device `name`, non-blocking.
    pub fn create(name: &str, multi_queue: bool) -> Result<Self, TunError> {
        if name.is_empty() || name.len() >= 16 || name.contains('\0') {
            return Err(TunError::BadName(name.to_owned()));
        }
        // SAFETY: the path is a NUL-terminated literal; the result is checked.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(TunError::Io {
                op: "open",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `raw` is a freshly opened descriptor we exclusively own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq {
            name: [0; 16],
            flags: IFF_TUN | IFF_NO_PI | if multi_queue { IFF_MULTI_QUEUE } else { 0 },
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `req` has its
        // layout and size and lives across the call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &raw mut req) };
        if rc < 0 {
            return Err(TunError::Io {
                op: "TUNSETIFF",
                source: io::Error::last_os_error(),
            });
        }
        // The kernel may have completed a pattern such as "tun%d".
        let end = req.name.iter().position(|&c| c == 0).unwrap_or(16);
        let name = String::from_utf8_lossy(&req.name[..end]).into_owned();
        Ok(Self {
            fd,
            name,
            multi_queue,
        })
    }

    /// Attach one more queue to a multi-queue device.
    pub fn open_queue(&self) -> Result<Self, TunError> {
        Self::create(&self.name, self.multi_queue)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Persistent: the interface, its addresses and the routes into it
    /// outlive this descriptor (the kernel drops what is routed into it
    /// while no process has it open); [`Tun::create`] with the same name
    /// attaches to it again. Not persistent (the default): closing the
    /// last descriptor deletes the interface.
    pub fn set_persist(&self, persist: bool) -> Result<(), TunError> {
        // SAFETY: TUNSETPERSIST takes its argument by value (an int).
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                TUNSETPERSIST as _,
                libc::c_ulong::from(persist),
            )
        };
        if rc < 0 {
            return Err(TunError::Io {
                op: "TUNSETPERSIST",
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Set the MTU, add `addrs` and bring the interface up. Returns its ifindex.
    pub fn configure(
        &self,
        nl: &mut Netlink,
        mtu: u32,
        addrs: &[Address],
    ) -> Result<u32, TunError> {
        let index = nl.link_by_name(&self.name)?.index;
        nl.set_mtu(index, mtu)?;
        for a in addrs {
            nl.add_address(&Address {
                ifindex: index,
                ..*a
            })?;
        }
        nl.set_link_up(index, true)?;
        Ok(index)
    }

    /// Read one IP packet into `buf`. `WouldBlock` when none is queued. A packet
    /// longer than `buf` is truncated by the kernel, so size `buf` to the MTU.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is writable for `buf.len()` bytes.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Write one IP packet (IPv4 or IPv6, no header in front).
    pub fn write(&self, packet: &[u8]) -> io::Result<usize> {
        // SAFETY: `packet` is readable for `packet.len()` bytes.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Block up to `timeout_ms` (-1: forever) until a packet can be read.
    /// Returns whether the device is readable.
    pub fn wait_readable(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd, count 1.
            let rc = unsafe { libc::poll(&raw mut p, 1, timeout_ms) };
            if rc >= 0 {
                return Ok(rc > 0 && p.revents & libc::POLLIN != 0);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A TUN queue registered with the tokio reactor.
#[cfg(feature = "tokio")]
pub struct AsyncTun {
    inner: tokio::io::unix::AsyncFd<Tun>,
}

#[cfg(feature = "tokio")]
impl AsyncTun {
    /// Must be called within a tokio runtime with I/O enabled.
    pub fn new(tun: Tun) -> io::Result<Self> {
        // SAFETY: `Tun` owns its descriptor (an `OwnedFd` never replaced), so
        // `as_raw_fd` returns the same open fd for as long as the `AsyncFd` owns it.
        let inner = unsafe { tokio::io::unix::AsyncFd::register(tun) }?;
        Ok(Self { inner })
    }

    pub fn get_ref(&self) -> &Tun {
        self.inner.get_ref()
    }

    /// Read one IP packet, waiting until one arrives.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.inner.readable().await?;
            match guard.try_io(|t| t.get_ref().read(buf)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Write one IP packet, waiting while the device queue is full.
    pub async fn write(&self, packet: &[u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.inner.writable().await?;
            match guard.try_io(|t| t.get_ref().write(packet)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

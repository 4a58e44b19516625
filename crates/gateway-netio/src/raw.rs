//! Sending complete IP packets (headers included) through the kernel's
//! routing: raw `IPPROTO_RAW` sockets, one per family. The caller builds
//! every header (the ESP engine writes outer IP + UDP + ESP); the kernel
//! only routes and fragments. Used for encrypted packets whose next hop the
//! fast path could not resolve, and by the test customers that play a
//! customer gateway with the project's own ESP engine.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Raw IPv4 and (when the host has IPv6) IPv6 sockets.
#[derive(Debug)]
pub struct RawSender {
    v4: OwnedFd,
    v6: Option<OwnedFd>,
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

impl RawSender {
    /// Opens the sockets (needs CAP_NET_RAW) in the calling thread's network
    /// namespace.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            v4: raw_socket(libc::AF_INET)?,
            v6: raw_socket(libc::AF_INET6).ok(),
        })
    }

    /// Sends one IPv4 or IPv6 packet as it is, to its destination address.
    pub fn send(&self, packet: &[u8]) -> io::Result<()> {
        let rc = match packet.first().map(|b| b >> 4) {
            Some(4) if packet.len() >= 20 => {
                // SAFETY: sockaddr_in is plain data; zero is a valid start.
                let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_addr.s_addr =
                    u32::from_ne_bytes([packet[16], packet[17], packet[18], packet[19]]);
                // SAFETY: packet and sa are valid for the given lengths.
                unsafe {
                    libc::sendto(
                        self.v4.as_raw_fd(),
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&sa as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    )
                }
            }
            Some(6) if packet.len() >= 40 => {
                let Some(fd) = &self.v6 else {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "no raw IPv6 socket",
                    ));
                };
                // SAFETY: sockaddr_in6 is plain data; zero is a valid start.
                let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
                sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sa.sin6_addr.s6_addr.copy_from_slice(&packet[24..40]);
                // SAFETY: packet and sa are valid for the given lengths.
                unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&sa as *const libc::sockaddr_in6).cast(),
                        std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                    )
                }
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not an IPv4 or IPv6 packet",
                ))
            }
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

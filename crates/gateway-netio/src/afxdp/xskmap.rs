//! Inserting AF_XDP sockets into an `XSKMAP` with the raw `bpf(2)` syscall:
//! `BPF_OBJ_GET` on a pinned map path, `BPF_MAP_UPDATE_ELEM` /
//! `BPF_MAP_DELETE_ELEM` keyed by rx queue index. No libbpf, no aya: whoever
//! loaded the XDP program (the dataplane) only has to hand over a pin path or a
//! map fd.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_ANY: u64 = 0;

/// `union bpf_attr` is at most a few hundred bytes; every command we issue uses
/// the first 32. The kernel requires the bytes past the fields it knows to be
/// zero, which an all-zero buffer of this size satisfies.
#[repr(C, align(8))]
struct BpfAttr([u8; 128]);

impl BpfAttr {
    fn new() -> Self {
        Self([0; 128])
    }
    fn u32_at(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn u64_at(&mut self, at: usize, v: u64) {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }
}

/// Issue `bpf(cmd, attr)`. Returns the syscall's non-negative result.
///
/// # Safety
/// Every pointer stored in `attr` must be valid for the access `cmd` makes
/// through it for the duration of the call.
unsafe fn sys_bpf(cmd: libc::c_long, attr: &mut BpfAttr) -> io::Result<libc::c_long> {
    let size = std::mem::size_of::<BpfAttr>();
    // SAFETY: `attr` is a live, writable 128-byte buffer; pointer validity of its
    // contents is the caller's obligation (see above).
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), size) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Open a pinned BPF object (e.g. `/sys/fs/bpf/s2s/XSKS`) and return its fd.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut attr = BpfAttr::new();
    attr.u64_at(0, c.as_ptr() as u64); // pathname
                                       // SAFETY: the only pointer is `c`, a NUL-terminated string alive across the call.
    let fd = unsafe { sys_bpf(BPF_OBJ_GET, &mut attr) }?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: BPF_OBJ_GET returned a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `map[queue] = xsk` in an `XSKMAP` (key and value are both `u32`; the value is
/// the socket's fd, which the kernel resolves to the socket at update time).
pub fn update(map: BorrowedFd<'_>, queue: u32, xsk: BorrowedFd<'_>) -> io::Result<()> {
    let key = queue;
    let value =
        u32::try_from(xsk.as_raw_fd()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut attr = BpfAttr::new();
    attr.u32_at(0, u32::try_from(map.as_raw_fd()).unwrap_or(u32::MAX)); // map_fd
    attr.u64_at(8, &raw const key as u64); // key
    attr.u64_at(16, &raw const value as u64); // value
    attr.u64_at(24, BPF_ANY); // flags
                              // SAFETY: key and value are live u32 locals, the sizes an XSKMAP expects.
    unsafe { sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map(drop)
}

/// Remove `map[queue]`.
pub fn delete(map: BorrowedFd<'_>, queue: u32) -> io::Result<()> {
    let key = queue;
    let mut attr = BpfAttr::new();
    attr.u32_at(0, u32::try_from(map.as_raw_fd()).unwrap_or(u32::MAX));
    attr.u64_at(8, &raw const key as u64);
    // SAFETY: key is a live u32 local.
    unsafe { sys_bpf(BPF_MAP_DELETE_ELEM, &mut attr) }.map(drop)
}

/// Open the pinned `XSKMAP` at `path` and set `map[queue] = xsk`.
pub fn update_pinned(path: &Path, queue: u32, xsk: BorrowedFd<'_>) -> io::Result<()> {
    use std::os::fd::AsFd;
    let map = obj_get(path)?;
    update(map.as_fd(), queue, xsk)
}

//! The host around the programs: interface indexes and drivers, bpffs.

use super::*;

/// The index of a network interface of this namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// The driver of a network interface of this namespace, as `ethtool -i`
/// names it (`veth`, `mlx5_core`, ...).
pub fn driver_name(ifname: &str) -> std::io::Result<String> {
    const ETHTOOL_GDRVINFO: u32 = 3;
    /// `struct ethtool_drvinfo` (linux/ethtool.h).
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: all-zero is a valid value of both plain C structs.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    // SAFETY: as above.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    // SAFETY: a datagram socket used for this one ioctl and closed below;
    // the ioctl writes at most size_of::<DrvInfo>() bytes into `info`,
    // which outlives the call.
    let rc = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let rc = libc::ioctl(fd, libc::SIOCETHTOOL as _, &mut req);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        (rc == 0).then_some(()).ok_or(err)
    };
    rc?;
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// The conventional bpffs mount point.
pub(super) const BPFFS: &str = "/sys/fs/bpf";

/// Mounts bpffs at `/sys/fs/bpf` when the pin directory lies below it and
/// nothing is mounted there (hosts without systemd, fresh network
/// namespaces entered with `ip netns exec`). Other pin directories must be
/// on a bpffs already; `pin_maps` says so if not.
pub fn mount_bpffs_if_missing(pin_dir: &Path) -> Result<(), XdpError> {
    let root = Path::new(BPFFS);
    if !pin_dir.starts_with(root) || is_bpffs(root) || !root.is_dir() {
        return Ok(());
    }
    // SAFETY: constant NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c"/sys/fs/bpf".as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
            return Err(XdpError::PermissionDenied {
                op: "mounting bpffs",
                source: Box::new(e),
            });
        }
        return Err(XdpError::BpffsMissing(root.to_path_buf()));
    }
    tracing::info!("mounted bpffs at {BPFFS}");
    Ok(())
}

pub(super) fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

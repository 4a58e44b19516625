//! systemd's notify protocol (sd_notify(3)), for `Type=notify` and the
//! service watchdog: datagrams such as `READY=1` or `WATCHDOG=1` to the
//! socket named by `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
//! namespace). Without the variable (not started by systemd) nothing is
//! sent. A few lines of our own: the protocol is one datagram, and the
//! crates for it add nothing the standard library lacks.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends `state` to `socket` (a `$NOTIFY_SOCKET` value).
pub fn notify_to(socket: &str, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let addr = match socket.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(socket)?,
    };
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// Sends `state` to systemd when it started us with `Type=notify`;
/// `false` when there is nobody to tell (or the send failed).
pub fn notify(state: &str) -> bool {
    match std::env::var("NOTIFY_SOCKET") {
        Ok(socket) => match notify_to(&socket, state) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(socket = %socket, error = %e, "cannot notify systemd");
                false
            }
        },
        Err(_) => false,
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC` when the
/// service has a watchdog meant for this process (`$WATCHDOG_PID`, if set,
/// is ours).
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_a_path_socket_and_an_abstract_one() {
        let dir = std::env::temp_dir().join(format!("s2s-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        notify_to(path.to_str().unwrap(), "READY=1\nSTATUS=serving").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
        let name = format!("s2s-notify-test-{}", std::process::id());
        let abs = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&abs).unwrap();
        notify_to(&format!("@{name}"), "WATCHDOG=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        let _ = std::fs::remove_dir_all(dir);
    }
}

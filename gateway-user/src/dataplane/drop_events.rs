//! The XDP programs' drop events, sent through aya-log: a thread reads
//! the ring buffer and writes each event to the daemon's log (target
//! `xdp`) with the drop reason by name, the side (wan or lan) and the
//! interface index. The programs send events only at the level
//! `[datapath] drop_events` sets (`XdpDataplane::set_drop_events`); off,
//! they send none and the thread sleeps in `poll`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use gateway_common::DropReason;

/// A `log::Log` for aya-log's records: each becomes a `tracing` event.
pub struct TracingLog;

impl log::Log for TracingLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let text = record.args().to_string();
        let level = record.level();
        match parse(&text) {
            Some(e) => {
                let reason = DropReason::ALL
                    .get(e.reason as usize)
                    .map_or("unknown", |r| r.name());
                let side = if e.side == 0 { "wan" } else { "lan" };
                match level {
                    log::Level::Error | log::Level::Warn => {
                        tracing::warn!(target: "xdp", reason, side, ifindex = e.ifindex, "XDP drop")
                    }
                    log::Level::Info => {
                        tracing::info!(target: "xdp", reason, side, ifindex = e.ifindex, "XDP drop")
                    }
                    log::Level::Debug | log::Level::Trace => {
                        tracing::debug!(target: "xdp", reason, side, ifindex = e.ifindex, "XDP drop")
                    }
                }
            }
            None => tracing::info!(target: "xdp", message = %text, "XDP program log"),
        }
    }

    fn flush(&self) {}
}

/// One drop event as the programs format it.
#[derive(Debug, PartialEq, Eq)]
struct Event {
    reason: u32,
    side: u32,
    ifindex: u32,
}

/// `xdp drop reason=R side=S ifindex=I` (the programs' format).
fn parse(text: &str) -> Option<Event> {
    let rest = text.strip_prefix("xdp drop ")?;
    let mut fields = rest.split(' ');
    let mut num = |key: &str| -> Option<u32> {
        fields
            .next()?
            .strip_prefix(key)?
            .strip_prefix('=')?
            .parse()
            .ok()
    };
    let e = Event {
        reason: num("reason")?,
        side: num("side")?,
        ifindex: num("ifindex")?,
    };
    fields.next().is_none().then_some(e)
}

/// The thread that empties the ring buffer; woken, stopped and joined at
/// once on drop (a pipe wakes its `poll`: a daemon that stops for a
/// restart must not wait out a poll timeout).
pub struct Reader {
    stop: Arc<AtomicBool>,
    wake: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl Reader {
    pub fn start(mut logger: aya_log::EbpfLogger<TracingLog>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let mut fds = [0; 2];
        // SAFETY: a valid two-element array for the pipe's ends.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both fds were just created and are owned only here.
        let (wake_rx, wake) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let fd: RawFd = logger.as_raw_fd();
        let thread = std::thread::Builder::new()
            .name("xdp-drop-events".into())
            .spawn(move || {
                let wake_rx = wake_rx;
                while !flag.load(Ordering::Relaxed) {
                    let mut pfds = [
                        libc::pollfd {
                            fd,
                            events: libc::POLLIN,
                            revents: 0,
                        },
                        libc::pollfd {
                            fd: wake_rx.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        },
                    ];
                    // SAFETY: two valid pollfds; the ring buffer's fd lives
                    // in `logger` and the pipe's in `wake_rx`, both owned
                    // by this thread until it returns.
                    let n = unsafe { libc::poll(pfds.as_mut_ptr(), 2, -1) };
                    if n > 0 && pfds[0].revents != 0 {
                        // A record the reader cannot decode must not take
                        // the daemon down: aya-log panics on one.
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            logger.flush();
                        }));
                        if r.is_err() {
                            tracing::error!(target: "xdp", "undecodable XDP log record: drop events stop");
                            return;
                        }
                    }
                }
            })?;
        Ok(Self {
            stop,
            wake,
            thread: Some(thread),
        })
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // SAFETY: writes one byte from a valid buffer to our pipe's end.
        let _ = unsafe { libc::write(self.wake.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_programs_format_parses_and_nothing_else_does() {
        assert_eq!(
            parse("xdp drop reason=5 side=1 ifindex=7"),
            Some(Event {
                reason: 5,
                side: 1,
                ifindex: 7
            })
        );
        for bad in [
            "",
            "xdp drop",
            "xdp drop reason=5 side=1",
            "xdp drop reason=x side=1 ifindex=7",
            "xdp drop reason=5 side=1 ifindex=7 extra",
            "xdp drop side=1 reason=5 ifindex=7",
            "other reason=5 side=1 ifindex=7",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}

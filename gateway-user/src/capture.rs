//! Packet capture on the fast path. `tcpdump` on the WAN or LAN interface
//! cannot see what the XDP programs redirect to the AF_XDP workers, nor
//! what the workers transmit through their sockets, so the workers copy
//! those packets here while a capture runs: the ESP packets as received
//! from WAN and as sent to it (outer IP header on), and the inner packets
//! as decrypted and as taken from LAN, each as an IP packet (pcap
//! LINKTYPE_RAW), for one tunnel or all.
//!
//! Off, it costs a worker one relaxed atomic load per packet. On, each
//! captured packet is copied into a bounded queue; a full queue drops the
//! copy (counted), never the packet. One capture runs at a time.
//!
//! The daemon serves captures on a Unix socket in its state directory
//! (root only, like `tcpdump`): `s2s-gateway capture` sends one JSON line
//! ([`Request`]) and receives a pcap stream until the count or the
//! duration is reached, or until it hangs up.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::DataLink;
use serde::{Deserialize, Serialize};

/// Every tunnel.
const ALL: u32 = u32::MAX;
/// Copies queued between the workers and the writer.
const QUEUE: usize = 4096;
/// Largest copy (an IP packet on a jumbo-frame WAN).
const SNAPLEN: usize = 9216;

/// One copied packet.
struct Copy {
    at: SystemTime,
    data: Vec<u8>,
    /// Its length on the wire (the copy may be cut at [`SNAPLEN`]).
    len: u32,
}

/// The workers' side: shared by every worker and the capture server.
#[derive(Default)]
pub struct Capture {
    on: AtomicBool,
    tunnel: AtomicU32,
    sink: Mutex<Option<SyncSender<Copy>>>,
    /// Copies dropped because the writer was behind, this capture.
    dropped: AtomicU64,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("on", &self.on.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A capture already runs.
#[derive(Debug, thiserror::Error)]
#[error("a capture is already running")]
pub struct Busy;

impl Capture {
    /// Whether a packet of `tunnel` is to be copied (the only cost when off).
    #[inline]
    pub fn wants(&self, tunnel: u32) -> bool {
        self.on.load(Ordering::Relaxed) && {
            let t = self.tunnel.load(Ordering::Relaxed);
            t == ALL || t == tunnel
        }
    }

    /// Copies `packet` (an IP packet) for the running capture.
    pub fn record(&self, packet: &[u8]) {
        let sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = sink.as_ref() else {
            return;
        };
        let copy = Copy {
            at: SystemTime::now(),
            data: packet[..packet.len().min(SNAPLEN)].to_vec(),
            len: u32::try_from(packet.len()).unwrap_or(u32::MAX),
        };
        if let Err(TrySendError::Full(_)) = tx.try_send(copy) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Starts a capture of `tunnel` (`None`: all); the copies arrive on the
    /// returned receiver until [`Capture::stop`].
    fn start(&self, tunnel: Option<u32>) -> Result<Receiver<Copy>, Busy> {
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        if sink.is_some() {
            return Err(Busy);
        }
        let (tx, rx) = sync_channel(QUEUE);
        *sink = Some(tx);
        self.dropped.store(0, Ordering::Relaxed);
        self.tunnel.store(tunnel.unwrap_or(ALL), Ordering::Relaxed);
        self.on.store(true, Ordering::Relaxed);
        Ok(rx)
    }

    fn stop(&self) {
        self.on.store(false, Ordering::Relaxed);
        *self.sink.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// What `s2s-gateway capture` asks for (one JSON line on the socket).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// A tunnel's name as `/metrics` labels it (`tunnel="..."`); none: all.
    pub tunnel: Option<String>,
    /// Stop after this many packets.
    pub count: Option<u64>,
    /// Stop after this many seconds.
    pub seconds: Option<u64>,
}

/// The capture socket of a state directory.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("capture.sock")
}

/// Why a capture failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("capture socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("pcap: {0}")]
    Pcap(#[from] pcap_file::PcapError),
    #[error("bad request: {0}")]
    Request(String),
    #[error("the daemon refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Busy(#[from] Busy),
}

/// Serves one capture on `stream`: reads the request, resolves the tunnel
/// name with `lookup`, writes a pcap header then every copy until the
/// request's limits, the client hanging up, or `stop`. A refusal is one
/// line starting with `error: ` instead of the pcap header.
pub fn serve(
    capture: &Capture,
    mut stream: std::os::unix::net::UnixStream,
    lookup: impl Fn(&str) -> Option<u32>,
    stop: &AtomicBool,
) -> Result<u64, CaptureError> {
    // A client that connects and says nothing does not hold its thread.
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    // One line, bounded.
    while line.len() < 4096 {
        if stream.read(&mut byte)? == 0 || byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    let refuse = |stream: &mut std::os::unix::net::UnixStream, why: String| {
        let _ = writeln!(stream, "error: {why}");
        CaptureError::Refused(why)
    };
    let req: Request = match serde_json::from_slice(&line) {
        Ok(r) => r,
        Err(e) => {
            return Err(refuse(
                &mut stream,
                format!("request is not valid JSON: {e}"),
            ))
        }
    };
    let tunnel = match &req.tunnel {
        None => None,
        Some(name) => match lookup(name) {
            Some(id) => Some(id),
            None => return Err(refuse(&mut stream, format!("no tunnel named {name:?}"))),
        },
    };
    let rx = match capture.start(tunnel) {
        Ok(rx) => rx,
        Err(Busy) => return Err(refuse(&mut stream, Busy.to_string())),
    };
    let result = stream_copies(&rx, &mut stream, &req, stop);
    capture.stop();
    let dropped = capture.dropped.load(Ordering::Relaxed);
    if dropped > 0 {
        tracing::warn!(dropped, "capture: copies dropped (the reader was behind)");
    }
    result
}

fn stream_copies(
    rx: &Receiver<Copy>,
    stream: &mut std::os::unix::net::UnixStream,
    req: &Request,
    stop: &AtomicBool,
) -> Result<u64, CaptureError> {
    let header = PcapHeader {
        snaplen: SNAPLEN as u32,
        datalink: DataLink::RAW,
        ..PcapHeader::default()
    };
    // The client sends nothing more: a read that returns 0 means it hung up.
    let mut hangup = stream.try_clone()?;
    hangup.set_read_timeout(Some(Duration::from_millis(1)))?;
    let mut out = PcapWriter::with_header(stream, header)?;
    let deadline = req.seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let mut written = 0u64;
    while req.count.is_none_or(|c| written < c) && !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        let wait = deadline.map_or(Duration::from_millis(200), |d| {
            (d - now).min(Duration::from_millis(200))
        });
        let copy = match rx.recv_timeout(wait) {
            Ok(c) => c,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if matches!(hangup.read(&mut [0u8; 1]), Ok(0)) {
                    break;
                }
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let ts = copy
            .at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        out.write_packet(&PcapPacket::new(ts, copy.len, &copy.data))?;
        written += 1;
    }
    Ok(written)
}

/// The client: asks the daemon whose state directory is `state_dir` for
/// `req`, writes the pcap stream to `out`, and returns the number of
/// packets, calling `progress` after each.
pub fn fetch(
    state_dir: &Path,
    req: &Request,
    out: impl Write,
    mut progress: impl FnMut(u64),
) -> Result<u64, CaptureError> {
    let path = socket_path(state_dir);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
        CaptureError::Io(std::io::Error::new(
            e.kind(),
            format!(
                "{}: {e} (is the daemon running, and are you root?)",
                path.display()
            ),
        ))
    })?;
    let mut line = serde_json::to_vec(req).map_err(|e| CaptureError::Request(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut first = [0u8; 7];
    stream.read_exact(&mut first)?;
    if &first == b"error: " {
        let mut why = String::new();
        stream.read_to_string(&mut why)?;
        return Err(CaptureError::Refused(why.trim().to_owned()));
    }
    let reader = std::io::Read::chain(&first[..], stream);
    let mut pcap = PcapReader::new(reader)?;
    let mut writer = PcapWriter::with_header(out, pcap.header())?;
    let mut n = 0u64;
    while let Some(packet) = pcap.next_packet() {
        writer.write_packet(&packet?)?;
        n += 1;
        progress(n);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn off_copies_nothing_and_the_filter_picks_the_tunnel() {
        let c = Capture::default();
        assert!(!c.wants(1));
        c.record(b"nothing listens");
        let rx = c.start(Some(7)).unwrap();
        assert!(c.wants(7) && !c.wants(8));
        assert!(matches!(c.start(None), Err(Busy)));
        c.record(&[0x45, 0, 0, 20]);
        assert_eq!(rx.try_recv().unwrap().data, [0x45, 0, 0, 20]);
        c.stop();
        assert!(!c.wants(7));
        c.record(&[1]);
        assert!(rx.try_recv().is_err());
        let _ = c.start(None).unwrap();
        assert!(c.wants(7) && c.wants(8));
    }

    #[test]
    fn a_capture_streams_pcap_to_the_client_until_its_count() {
        let dir = std::env::temp_dir().join(format!("s2s-capture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = socket_path(&dir);
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let capture = Arc::new(Capture::default());
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let (capture, stop) = (Arc::clone(&capture), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut served = Vec::new();
                for _ in 0..2 {
                    let (s, _) = listener.accept().unwrap();
                    served.push(serve(&capture, s, |n| (n == "c1/v4").then_some(3), &stop));
                }
                served
            })
        };
        let feeder = {
            let capture = Arc::clone(&capture);
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut sent = 0u8;
                while start.elapsed() < Duration::from_secs(10) && sent < 200 {
                    for tunnel in [3, 4] {
                        if capture.wants(tunnel) {
                            capture.record(&[0x45, tunnel as u8, sent, 0]);
                        }
                    }
                    sent = sent.wrapping_add(1);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        let unknown = Request {
            tunnel: Some("nope".into()),
            ..Request::default()
        };
        match fetch(&dir, &unknown, Vec::new(), |_| {}) {
            Err(CaptureError::Refused(why)) => assert!(why.contains("no tunnel named"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        let req = Request {
            tunnel: Some("c1/v4".into()),
            count: Some(5),
            seconds: Some(10),
        };
        let mut file = Vec::new();
        let mut seen = 0;
        let n = fetch(&dir, &req, &mut file, |k| seen = k).unwrap();
        assert_eq!((n, seen), (5, 5));
        let mut reader = PcapReader::new(&file[..]).unwrap();
        assert_eq!(reader.header().datalink, DataLink::RAW);
        let mut packets = 0;
        while let Some(p) = reader.next_packet() {
            assert_eq!(p.unwrap().data[1], 3, "only tunnel 3's packets");
            packets += 1;
        }
        assert_eq!(packets, 5);
        let served = server.join().unwrap();
        assert!(matches!(served[0], Err(CaptureError::Refused(_))));
        assert_eq!(served[1].as_ref().unwrap(), &5);
        assert!(!capture.wants(3), "the capture stopped with its client");
        feeder.join().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}

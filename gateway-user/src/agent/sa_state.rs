//! The IKE and ESP state a restart resumes: what the IKE driver reports as
//! resumable ([`gateway_ike::snapshot`]) with the data plane's sequence
//! numbers, in `<state_dir>/sa-state.sealed`.
//!
//! The file is `S2SSA` and a version byte, a 96-bit nonce, then the JSON
//! body sealed with AES-256-GCM under the master key (the PSKs' key,
//! `master.key`; bound to the purpose [`PURPOSE`]). It is written whole,
//! mode 0600, to a temporary file that is synced and renamed over the old
//! one (then the directory is synced): a crash leaves the old file or the
//! new one, never a mix.
//!
//! Sequence numbers are never reused, whatever happens to the process:
//!
//! * Outbound, each SA may send only the numbers already written to this
//!   file as its high-water mark (`seq_out`, see
//!   [`gateway_esp::OutboundSa::reserve_through`]); the agent writes a
//!   mark [`SEQ_BLOCK`] ahead of the last number used once half a block is
//!   left, and raises the SA's limit only after the write is on disk. A
//!   resumed SA starts above the mark and sends nothing until the next
//!   mark is written. A new SA sends its first block before any write: it
//!   was never in a file, so no restart can resume it. The cost: up to
//!   one block of numbers skipped per restart.
//! * Inbound, the replay window's right edge is written with every write
//!   (at least every [`EDGE_EVERY`] while it moves); a resumed SA accepts
//!   nothing at or below it. After a crash, what the peer sent between the
//!   last write and the crash could be replayed once: at most
//!   [`EDGE_EVERY`] of traffic, never after a clean stop (SIGTERM writes
//!   the file last).
//! * An old file (a restored backup, a long outage) is not resumed: each
//!   IKE SA older than [`MAX_AGE`] since its last write is ignored, and the
//!   tunnel starts with a new handshake. Restore `sa-state.sealed` from a
//!   backup never; the daemon refuses stale entries anyway.
//!
//! IKE message IDs change with every exchange (DPD every few seconds):
//! each change marks the state dirty and is written within [`TICK`]. A
//! crash inside that window can leave the peer one message ID ahead of
//! the file; its next request is then not answered, its DPD gives up and
//! the tunnel is negotiated again (what happens without this file).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gateway_api::secrets::Sealed;
use gateway_api::Store;
use gateway_ike::snapshot::IkeSaSnapshot;
use serde::{Deserialize, Serialize};

/// The state file's name in the state directory.
pub const FILE: &str = "sa-state.sealed";
const MAGIC: &[u8; 6] = b"S2SSA\x01";
/// What the seal is bound to.
pub const PURPOSE: &str = "s2s-gateway sa-state v1";
/// A file larger than this is not read (hostile or broken).
pub const MAX_FILE: u64 = 256 << 20;
/// Entries older than this are not resumed.
pub const MAX_AGE: Duration = Duration::from_secs(120);
/// Outbound sequence numbers reserved at a time (at 10 M packets/s, 1.6 s).
pub const SEQ_BLOCK: u64 = 1 << 24;
/// How often the agent checks whether the file must be written.
pub const TICK: Duration = Duration::from_millis(50);
/// How often inbound right edges that moved are written, at most.
pub const EDGE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum SaStateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: not a state file of this version")]
    Format(PathBuf),
    #[error("{0}: larger than {MAX_FILE} bytes")]
    TooLarge(PathBuf),
    #[error("{path}: cannot open (another master key, or tampered): {source}")]
    Seal {
        path: PathBuf,
        #[source]
        source: gateway_api::StoreError,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// One resumable IKE SA.
#[derive(Clone, Serialize, Deserialize)]
pub struct Entry {
    /// The tunnel (IKE connection) it belongs to.
    pub tunnel: String,
    /// The tunnel's configuration when it was taken ([`fingerprint`]): it
    /// is resumed only under the same.
    pub fingerprint: String,
    /// When the IKE core took the snapshot (its durations count from it).
    pub taken_unix_ms: u64,
    pub snapshot: IkeSaSnapshot,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("tunnel", &self.tunnel)
            .field("snapshot", &self.snapshot)
            .finish_non_exhaustive()
    }
}

impl Entry {
    /// How long ago the snapshot was taken (zero if the clock went back).
    pub fn age(&self, now: SystemTime) -> Duration {
        let taken = UNIX_EPOCH + Duration::from_millis(self.taken_unix_ms);
        now.duration_since(taken).unwrap_or_default()
    }
}

/// A route learned over BGP, kept across a restart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteRecord {
    /// The BGP session (`connection/v4`) it was learned on.
    pub session: String,
    pub prefix: ipnet::IpNet,
}

#[derive(Serialize, Deserialize)]
struct Body {
    #[serde(default)]
    written_unix_ms: u64,
    entries: Vec<Entry>,
    /// The routes installed when the file was written.
    #[serde(default)]
    routes: Vec<RouteRecord>,
}

/// What the state file held.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The resumable IKE SAs per tunnel.
    pub entries: BTreeMap<String, Vec<Entry>>,
    /// The routes per BGP session, if the file is not over [`MAX_AGE`] old.
    pub routes: BTreeMap<String, Vec<ipnet::IpNet>>,
}

/// Milliseconds since the epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What a resumed IKE SA must still match: the tunnel's IKE configuration
/// (PSK revision, proposals, initiation policy) and addresses.
pub fn fingerprint(t: &super::plan::TunnelPlan) -> String {
    format!("{}|{}|{}", t.ike_fingerprint, t.local, t.remote)
}

/// Reads the state file: the resumable IKE SAs per tunnel and the routes
/// per session, or nothing if there is no file.
pub fn load(store: &Store, dir: &Path) -> Result<Loaded, SaStateError> {
    let path = dir.join(FILE);
    let io = |source| SaStateError::Io {
        path: path.clone(),
        source,
    };
    let bytes = match std::fs::metadata(&path) {
        Ok(m) if m.len() > MAX_FILE => return Err(SaStateError::TooLarge(path)),
        Ok(_) => std::fs::read(&path).map_err(io)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(e) => return Err(io(e)),
    };
    if bytes.len() < MAGIC.len() + 12 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(SaStateError::Format(path));
    }
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&bytes[MAGIC.len()..MAGIC.len() + 12]);
    let sealed = Sealed {
        nonce,
        ciphertext: bytes[MAGIC.len() + 12..].to_vec(),
    };
    let plain = store
        .open_blob(PURPOSE, &sealed)
        .map_err(|source| SaStateError::Seal {
            path: path.clone(),
            source,
        })?;
    let body: Body = serde_json::from_slice(&plain).map_err(|source| SaStateError::Json {
        path: path.clone(),
        source,
    })?;
    let mut out = Loaded::default();
    for e in body.entries {
        out.entries.entry(e.tunnel.clone()).or_default().push(e);
    }
    let written = UNIX_EPOCH + Duration::from_millis(body.written_unix_ms);
    let age = SystemTime::now()
        .duration_since(written)
        .unwrap_or_default();
    if age <= MAX_AGE {
        for r in body.routes {
            out.routes.entry(r.session).or_default().push(r.prefix);
        }
    }
    Ok(out)
}

/// Replaces the state file with `entries` and `routes` (atomically, mode
/// 0600).
pub fn save(
    store: &Store,
    dir: &Path,
    entries: &[Entry],
    routes: &[RouteRecord],
) -> Result<(), SaStateError> {
    let path = dir.join(FILE);
    let io = |source| SaStateError::Io {
        path: path.clone(),
        source,
    };
    let plain = zeroize::Zeroizing::new(
        serde_json::to_vec(&Body {
            written_unix_ms: unix_ms(SystemTime::now()),
            entries: entries.to_vec(),
            routes: routes.to_vec(),
        })
        .map_err(|source| SaStateError::Json {
            path: path.clone(),
            source,
        })?,
    );
    let sealed = store
        .seal_blob(PURPOSE, &plain)
        .map_err(|source| SaStateError::Seal {
            path: path.clone(),
            source,
        })?;
    let tmp = dir.join(format!(".{FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(MAGIC).map_err(io)?;
    f.write_all(&sealed.nonce).map_err(io)?;
    f.write_all(&sealed.ciphertext).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

/// Removes the state file (a drain: nothing is to be resumed).
pub fn remove(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(FILE));
}

/// The agent's side of the state file: what the IKE driver last reported
/// resumable, what the file held at start, and when to write.
#[derive(Debug)]
pub struct SaBook {
    pub dir: PathBuf,
    /// Resumable IKE SAs as last reported, by our IKE SPI.
    pub current: BTreeMap<u64, Entry>,
    /// Something changed since the last write.
    pub dirty: bool,
    /// Read at start: what each tunnel may resume (taken when it starts).
    pub resumable: BTreeMap<String, Vec<Entry>>,
    /// Read at start: the routes each BGP session had (taken when the
    /// session starts; installed stale until the session is back).
    pub routes_at_start: BTreeMap<String, Vec<ipnet::IpNet>>,
    pub last_write: Option<std::time::Instant>,
    /// Inbound right edges as last written, by inbound SPI.
    pub edges: BTreeMap<u32, u64>,
    /// A resumed outbound SA waits for the next write.
    pub urgent: bool,
    /// Outbound SPIs out of reserved numbers with no entry to vouch for
    /// them: since when, and whether that was logged.
    pub starved: BTreeMap<u32, (std::time::Instant, bool)>,
    /// When the tunnels were last looked at for starved SAs.
    pub starved_scan: Option<std::time::Instant>,
}

impl SaBook {
    pub fn new(dir: PathBuf, loaded: Loaded) -> Self {
        Self {
            dir,
            current: BTreeMap::new(),
            dirty: false,
            resumable: loaded.entries,
            routes_at_start: loaded.routes,
            last_write: None,
            edges: BTreeMap::new(),
            urgent: false,
            starved: BTreeMap::new(),
            starved_scan: None,
        }
    }

    /// What tunnel `name` may resume under `fingerprint`: snapshots not
    /// older than [`MAX_AGE`], with how old the oldest is. Taken once.
    pub fn take(
        &mut self,
        name: &str,
        fingerprint: &str,
        now: SystemTime,
    ) -> (Vec<IkeSaSnapshot>, Duration, Vec<String>) {
        let mut why_not = Vec::new();
        let mut out = Vec::new();
        let mut oldest = Duration::ZERO;
        for e in self.resumable.remove(name).unwrap_or_default() {
            let age = e.age(now);
            if e.fingerprint != fingerprint {
                why_not.push("the connection changed while the daemon was down".to_owned());
            } else if age > MAX_AGE {
                why_not.push(format!(
                    "taken {} s ago, over {} s",
                    age.as_secs(),
                    MAX_AGE.as_secs()
                ));
            } else {
                oldest = oldest.max(age);
                out.push(e.snapshot);
            }
        }
        (out, oldest, why_not)
    }
}

/// A snapshot of IKE SA 1/2 of `conn` from 192.0.2.1 to 192.0.2.2 (7/9
/// message IDs), with one AES-256-GCM CHILD SA `(spi_in, spi_out)` if
/// given. Its keys are placeholders: a real snapshot's shape is the IKE
/// crate's business (established ones are built and resumed there).
#[cfg(test)]
pub(crate) fn sample_snapshot(conn: &str, child: Option<(u32, u32)>) -> IkeSaSnapshot {
    let children: Vec<serde_json::Value> = child
        .into_iter()
        .map(|(spi_in, spi_out)| {
            serde_json::json!({
                "spi_in": spi_in, "spi_out": spi_out, "encr": 20, "encr_key_bits": 256,
                "integ": null, "dh": null, "esn": true, "encap": true,
                "local_ts": [], "remote_ts": [], "age_ms": 0, "rekey_in_ms": null,
                "expire_in_ms": null,
                "keys_in": {"encryption_key": "01", "integrity_key": ""},
                "keys_out": {"encryption_key": "02", "integrity_key": ""},
                "seq_out": 0, "replay_right_edge": 0
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "version": 1, "conn": conn, "initiator": true,
        "spi_i": 1u64, "spi_r": 2u64,
        "local": "192.0.2.1:4500", "remote": "192.0.2.2:4500",
        "encap": true, "nat_local": false, "nat_remote": false, "peer_frag": false,
        "encr": 20, "encr_key_bits": 256, "prf": 5, "integ": null, "dh": 31,
        "keys": {"sk_d": "00", "sk_ai": "", "sk_ar": "", "sk_ei": "01", "sk_er": "02", "sk_pi": "03", "sk_pr": "04"},
        "my_msg_id": 7, "peer_msg_id": 9, "age_ms": 1000, "rekey_in_ms": null,
        "children": children
    }))
    .expect("a valid snapshot")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tunnel: &str) -> Entry {
        Entry {
            tunnel: tunnel.into(),
            fingerprint: "fp".into(),
            taken_unix_ms: unix_ms(SystemTime::now()),
            snapshot: sample_snapshot(tunnel, None),
        }
    }

    #[test]
    fn the_file_round_trips_sealed_and_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(
            load(&store, dir.path()).unwrap().entries.is_empty(),
            "no file yet"
        );
        let route = RouteRecord {
            session: "c/v4".into(),
            prefix: "203.0.113.0/24".parse().unwrap(),
        };
        save(
            &store,
            dir.path(),
            &[entry("c/v4"), entry("c/v6")],
            std::slice::from_ref(&route),
        )
        .unwrap();
        let path = dir.path().join(FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let raw = std::fs::read(&path).unwrap();
        assert!(
            !raw.windows(4).any(|w| w == b"c/v4"),
            "the body is sealed, not plain"
        );
        let back = load(&store, dir.path()).unwrap();
        assert_eq!(back.entries.len(), 2);
        assert_eq!(back.entries["c/v4"][0].snapshot.my_msg_id, 7);
        assert_eq!(back.routes["c/v4"], [route.prefix]);
        // Overwritten whole; no temporary file left behind.
        save(&store, dir.path(), &[entry("c/v6")], &[]).unwrap();
        let back = load(&store, dir.path()).unwrap();
        assert_eq!((back.entries.len(), back.routes.len()), (1, 0));
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("sa-state"))
            .collect();
        assert_eq!(names, [FILE]);
    }

    #[test]
    fn a_tampered_or_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        save(&store, dir.path(), &[entry("c/v4")], &[]).unwrap();
        let path = dir.path().join(FILE);
        let mut raw = std::fs::read(&path).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        std::fs::write(&path, &raw).unwrap();
        assert!(matches!(
            load(&store, dir.path()),
            Err(SaStateError::Seal { .. })
        ));
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(
            load(&store, dir.path()),
            Err(SaStateError::Format(_))
        ));
        // Another host's (another master key's) file.
        let other = tempfile::tempdir().unwrap();
        let other_store = Store::open(other.path()).unwrap();
        save(&other_store, other.path(), &[entry("c/v4")], &[]).unwrap();
        std::fs::copy(other.path().join(FILE), &path).unwrap();
        assert!(matches!(
            load(&store, dir.path()),
            Err(SaStateError::Seal { .. })
        ));
        remove(dir.path());
        assert!(load(&store, dir.path()).unwrap().entries.is_empty());
    }

    #[test]
    fn only_fresh_snapshots_of_an_unchanged_tunnel_are_resumed() {
        let now = SystemTime::now();
        let mut fresh = entry("c/v4");
        fresh.taken_unix_ms = unix_ms(now - Duration::from_secs(2));
        let mut stale = entry("c/v4");
        stale.taken_unix_ms = unix_ms(now - MAX_AGE - Duration::from_secs(1));
        let mut changed = entry("c/v4");
        changed.fingerprint = "another PSK revision".into();
        let mut book = SaBook::new(
            PathBuf::from("/nonexistent"),
            Loaded {
                entries: BTreeMap::from([("c/v4".to_owned(), vec![fresh, stale, changed])]),
                routes: BTreeMap::new(),
            },
        );
        let (snaps, age, why_not) = book.take("c/v4", "fp", now);
        assert_eq!(snaps.len(), 1);
        assert!(age >= Duration::from_secs(1) && age <= Duration::from_secs(3));
        assert_eq!(why_not.len(), 2, "{why_not:?}");
        // Taken once: a tunnel re-created later starts afresh.
        assert!(book.take("c/v4", "fp", now).0.is_empty());
        assert!(book.take("other/v4", "fp", now).0.is_empty());
    }

    #[test]
    fn ages_count_from_the_snapshot() {
        let mut e = entry("c/v4");
        let now = SystemTime::now();
        e.taken_unix_ms = unix_ms(now - Duration::from_secs(30));
        let age = e.age(now);
        assert!(age >= Duration::from_secs(29) && age <= Duration::from_secs(31));
        e.taken_unix_ms = unix_ms(now + Duration::from_secs(30));
        assert_eq!(e.age(now), Duration::ZERO);
    }
}

#![no_main]
//! Decodes an IKE SA snapshot as the daemon reads it from its state file
//! (JSON; the file is sealed, but a decoder treats its input as hostile
//! all the same), resumes it into a manager whose connection matches its
//! addresses, and runs the resumed SA's timers (DPD, rekeys, expiry).
//! Nothing may panic; what does not fit is refused. Seeds:
//! `corpus/snapshot/` (snapshots of established IKE SAs).

use std::time::{Duration, Instant};

use gateway_ike::snapshot::IkeSaSnapshot;
use gateway_ike::{Action, ConnectionConfig, IkeManager, Psk};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(snap) = serde_json::from_slice::<IkeSaSnapshot>(data) else {
        return;
    };
    let mut cfg = ConnectionConfig::new(
        snap.conn.clone(),
        snap.local.ip(),
        snap.remote.ip(),
        Psk::new(b"fuzz".to_vec()),
    );
    cfg.initiate = false;
    cfg.dpd_interval = Some(Duration::from_secs(3));
    let mut mgr = IkeManager::new();
    let now = Instant::now();
    let elapsed = Duration::from_millis(u64::from(data[0]) * 1000);
    let (mut acts, results) =
        mgr.add_connection_resuming(cfg, std::slice::from_ref(&snap), elapsed, now);
    assert_eq!(results.len(), 1);
    if results[0].is_err() {
        assert_eq!(mgr.ike_sas().count(), 0, "a refused snapshot leaves nothing");
    }
    // Run the timers the resumed SA arms, a bounded number of times.
    for _ in 0..16 {
        let Some((id, at)) = acts.iter().find_map(|a| match a {
            Action::ArmTimer { id, at } => Some((*id, *at)),
            _ => None,
        }) else {
            break;
        };
        acts = mgr.handle_timer(id, at.max(now) + Duration::from_secs(1));
    }
});

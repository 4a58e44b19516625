//! Benchmarks, and the few helpers their binaries share.

use std::time::Duration;

/// The `q` quantile (0..=1) of `v` (sorted in place), in milliseconds; 0
/// for no samples.
pub fn quantile_ms(v: &mut [Duration], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort();
    let rank = (q * (v.len() - 1) as f64).round() as usize;
    v[rank.min(v.len() - 1)].as_secs_f64() * 1000.0
}

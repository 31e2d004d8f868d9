//! Small trees of the index database keyed by stream and time (camera events, edge fills):
//! key = camera ‖ 0 ‖ stream ‖ 0 ‖ time (90 kHz, order-preserving) ‖ whatever the tree adds,
//! so "rows of stream S in [t0, t1)" is one range scan and purging by age is one per stream.
//!
//! Owns the key layout and the purge; the rows' contents and meaning are their module's.

use std::collections::HashMap;

use vigie_core::{StreamKey, TIME_UNITS_PER_SEC, Time90k};

use crate::StoreError;

/// `camera ‖ 0 ‖ stream ‖ 0`: the prefix of every row of `key`.
pub(crate) fn stream_prefix(key: &StreamKey) -> Vec<u8> {
    let mut p = Vec::with_capacity(key.camera.len() + key.stream.len() + 2 + 8);
    p.extend_from_slice(key.camera.as_bytes());
    p.push(0);
    p.extend_from_slice(key.stream.as_bytes());
    p.push(0);
    p
}

/// The stream's prefix followed by `t`: a row's key (or a range bound) at `t`.
pub(crate) fn key_at(key: &StreamKey, t: Time90k) -> Vec<u8> {
    let mut k = stream_prefix(key);
    k.extend_from_slice(&((t.0 as u64) ^ (1 << 63)).to_be_bytes());
    k
}

/// Rows removed per batch while purging (bounded memory whatever the tree holds).
const PURGE_BATCH: usize = 1024;

/// Deletes the rows of each stream keyed before `now − days − slack_90k` (`days` = the
/// stream's retention). Returns how many were deleted.
pub(crate) fn purge_before(
    tree: &sled::Tree,
    per_stream_days: &HashMap<StreamKey, u32>,
    now: Time90k,
    slack_90k: i64,
) -> Result<u64, StoreError> {
    let mut n = 0;
    for (key, days) in per_stream_days {
        let cutoff = Time90k(now.0 - i64::from(*days) * 86_400 * TIME_UNITS_PER_SEC - slack_90k);
        let (lo, hi) = (stream_prefix(key), key_at(key, cutoff));
        loop {
            let batch: Vec<sled::IVec> = tree
                .range(lo.clone()..hi.clone())
                .keys()
                .take(PURGE_BATCH)
                .collect::<Result<_, _>>()?;
            for k in &batch {
                tree.remove(k)?;
            }
            n += batch.len() as u64;
            if batch.len() < PURGE_BATCH {
                break;
            }
        }
    }
    Ok(n)
}

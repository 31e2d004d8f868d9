//! Footage filled from a camera's own recording (ONVIF Profile G "edge" storage): which time
//! ranges of a stream came from the camera's card instead of live recording. Kept in the index
//! database, tree `edge_fills` (key = camera ‖ 0 ‖ stream ‖ 0 ‖ start (90 kHz,
//! order-preserving)), apart from the segment entries, whose encoding does not change: the
//! segments themselves are ordinary segments of the stream (written by
//! [`crate::Store::start_edge_writer`]), found by the same range scans as live ones. Purged by
//! age with the stream's footage (retention). What a fill is for (register, journal) is the
//! caller's.

use serde::{Deserialize, Serialize};
use vigie_core::{StreamKey, TIME_UNITS_PER_SEC, Time90k};

use crate::timed::key_at;
use crate::{Inner, StoreError};

/// Longest fill recorded (a fill is at most the configured window, capped at a day).
pub const MAX_FILL_90K: i64 = 86_400 * TIME_UNITS_PER_SEC;

/// One filled range of a stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeFill {
    pub camera: String,
    pub stream: String,
    /// Wall-clock range of the stored footage, `[start, end)`.
    pub start: Time90k,
    pub end: Time90k,
    /// Frames stored.
    pub frames: u64,
    /// The camera's recording token it came from.
    pub recording: String,
    /// When it was filled.
    pub filled_at: Time90k,
}

fn tree(inner: &Inner) -> Result<sled::Tree, StoreError> {
    Ok(inner.index()?.db.open_tree("edge_fills")?)
}

pub(crate) fn record(inner: &Inner, fill: &EdgeFill) -> Result<(), StoreError> {
    if fill.end <= fill.start || fill.end.0 - fill.start.0 > MAX_FILL_90K {
        return Err(StoreError::Corrupt {
            what: format!(
                "edge fill [{}, {}) is empty or longer than a day",
                fill.start.0, fill.end.0
            ),
        });
    }
    let k = key_at(&StreamKey::new(&fill.camera, &fill.stream), fill.start);
    tree(inner)?.insert(k, postcard::to_allocvec(fill)?)?;
    Ok(())
}

/// Fills of `key` overlapping `[start, end)`, oldest first (one range scan).
pub(crate) fn list(
    inner: &Inner,
    key: &StreamKey,
    start: Time90k,
    end: Time90k,
) -> Result<Vec<EdgeFill>, StoreError> {
    let lo = key_at(key, Time90k(start.0.saturating_sub(MAX_FILL_90K)));
    let hi = key_at(key, end);
    let mut out = Vec::new();
    for kv in tree(inner)?.range(lo..hi) {
        let (_, v) = kv?;
        let f: EdgeFill = postcard::from_bytes(&v)?;
        if f.end > start && f.start < end {
            out.push(f);
        }
    }
    Ok(out)
}

/// Deletes the fills of each stream that ended before its retention (`days`), as of `now`.
pub(crate) fn purge(
    inner: &Inner,
    per_stream_days: &std::collections::HashMap<StreamKey, u32>,
    now: Time90k,
) -> Result<u64, StoreError> {
    crate::timed::purge_before(&tree(inner)?, per_stream_days, now, MAX_FILL_90K)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use vigie_core::SimulatedClock;

    use super::*;
    use crate::{Store, StoreConfig};

    #[test]
    fn fills_are_listed_by_overlap_and_purged_with_retention() {
        let dir = tempfile::tempdir().unwrap();
        let now = Time90k::from_unix_secs(1_800_000_000);
        let store = Store::open(
            StoreConfig::new(dir.path().to_owned(), Default::default(), 0),
            Arc::new(SimulatedClock::new(now)),
        )
        .unwrap();
        let s = TIME_UNITS_PER_SEC;
        let fill = |stream: &str, a: i64, b: i64| EdgeFill {
            camera: "cam".into(),
            stream: stream.into(),
            start: Time90k(now.0 - a * s),
            end: Time90k(now.0 - b * s),
            frames: 25 * (a - b) as u64,
            recording: "rec-main".into(),
            filled_at: now,
        };
        store.record_edge_fill(&fill("main", 600, 570)).unwrap();
        store.record_edge_fill(&fill("main", 120, 60)).unwrap();
        store.record_edge_fill(&fill("sub", 120, 60)).unwrap();
        let key = StreamKey::new("cam", "main");
        let all = store
            .edge_fills(&key, Time90k(now.0 - 3600 * s), now)
            .unwrap();
        assert_eq!(all, vec![fill("main", 600, 570), fill("main", 120, 60)]);
        // A window that starts inside a fill sees it; one between fills sees none.
        let w = store
            .edge_fills(&key, Time90k(now.0 - 100 * s), now)
            .unwrap();
        assert_eq!(w, vec![fill("main", 120, 60)]);
        let none = store
            .edge_fills(&key, Time90k(now.0 - 500 * s), Time90k(now.0 - 200 * s))
            .unwrap();
        assert!(none.is_empty());
        // Empty or over-long fills are refused.
        assert!(store.record_edge_fill(&fill("main", 60, 60)).is_err());
        assert!(store.record_edge_fill(&fill("main", 200_000, 0)).is_err());
        // Retention of 0 days drops fills that ended more than a day ago only.
        let mut days = HashMap::new();
        days.insert(key.clone(), 0u32);
        purge(&store.inner, &days, Time90k(now.0 + 2 * MAX_FILL_90K)).unwrap();
        assert!(
            store
                .edge_fills(&key, Time90k(0), Time90k(i64::MAX / 2))
                .unwrap()
                .is_empty()
        );
        let sub = StreamKey::new("cam", "sub");
        assert_eq!(store.edge_fills(&sub, Time90k(0), now).unwrap().len(), 1);
    }
}

//! Camera events (ONVIF motion, tampering, video loss, digital inputs) kept per stream in the
//! index database, tree `camera_events`, so that "events of stream S in [t0, t1)" is one range
//! scan: key = camera ‖ 0 ‖ stream ‖ 0 ‖ time (90 kHz, order-preserving) ‖ sequence. They are
//! deleted by age with the footage of their stream ([`purge`], called by retention). Recording
//! does not depend on them. What an event means is the caller's (kind is a free string).

use serde::{Deserialize, Serialize};
use vigie_core::{StreamKey, Time90k};

use crate::timed::key_at;
use crate::{Inner, StoreError};

/// Longest listing answered at once.
pub const MAX_EVENTS_LISTED: usize = 10_000;

/// One stored event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraEvent {
    pub camera: String,
    pub stream: String,
    /// When it happened (the camera's time when given, else reception).
    pub at: Time90k,
    /// `motion`, `tampering`, `video-loss`, `digital-input`, `other`.
    pub kind: String,
    /// Condition raised (`true`), cleared (`false`), or a one-off (`None`).
    pub active: Option<bool>,
    /// The topic as the camera sent it.
    pub topic: String,
}

fn tree(inner: &Inner) -> Result<sled::Tree, StoreError> {
    Ok(inner.index()?.db.open_tree("camera_events")?)
}

pub(crate) fn record(inner: &Inner, ev: &CameraEvent) -> Result<(), StoreError> {
    let t = tree(inner)?;
    let seq = inner.index()?.db.generate_id()?;
    let mut k = key_at(&StreamKey::new(&ev.camera, &ev.stream), ev.at);
    k.extend_from_slice(&seq.to_be_bytes());
    t.insert(k, postcard::to_allocvec(ev)?)?;
    Ok(())
}

pub(crate) fn list(
    inner: &Inner,
    key: &StreamKey,
    start: Time90k,
    end: Time90k,
    kind: Option<&str>,
) -> Result<Vec<CameraEvent>, StoreError> {
    let t = tree(inner)?;
    let lo = key_at(key, start);
    let hi = key_at(key, end);
    let mut out = Vec::new();
    for kv in t.range(lo..hi) {
        let (_, v) = kv?;
        let ev: CameraEvent = postcard::from_bytes(&v)?;
        if kind.is_none_or(|k| k == ev.kind) {
            out.push(ev);
            if out.len() >= MAX_EVENTS_LISTED {
                break;
            }
        }
    }
    Ok(out)
}

/// Deletes the events of each stream older than its retention (`days`), as of `now`.
pub(crate) fn purge(
    inner: &Inner,
    per_stream_days: &std::collections::HashMap<StreamKey, u32>,
    now: Time90k,
) -> Result<u64, StoreError> {
    crate::timed::purge_before(&tree(inner)?, per_stream_days, now, 0)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use vigie_core::SimulatedClock;

    use super::*;
    use crate::{Store, StoreConfig};
    use vigie_core::TIME_UNITS_PER_SEC;

    #[test]
    fn events_are_listed_by_stream_window_and_kind_and_purged_with_retention() {
        let dir = tempfile::tempdir().unwrap();
        let now = Time90k::from_unix_secs(1_800_000_000);
        let clock = Arc::new(SimulatedClock::new(now));
        let store = Store::open(
            StoreConfig::new(dir.path().to_owned(), Default::default(), 0),
            clock,
        )
        .unwrap();
        let ev = |stream: &str, at: Time90k, kind: &str| CameraEvent {
            camera: "dome".into(),
            stream: stream.into(),
            at,
            kind: kind.into(),
            active: Some(true),
            topic: format!("tns1:{kind}"),
        };
        let day = 86_400 * TIME_UNITS_PER_SEC;
        let old = Time90k(now.0 - 10 * day);
        for e in [
            ev("main", Time90k(now.0 - 60 * TIME_UNITS_PER_SEC), "motion"),
            ev(
                "main",
                Time90k(now.0 - 30 * TIME_UNITS_PER_SEC),
                "tampering",
            ),
            ev("sub", Time90k(now.0 - 30 * TIME_UNITS_PER_SEC), "motion"),
            ev("main", old, "motion"),
        ] {
            store.record_event(&e).unwrap();
        }
        let main = StreamKey::new("dome", "main");
        let all = store
            .events(&main, Time90k(now.0 - 20 * day), now, None)
            .unwrap();
        assert_eq!(all.len(), 3);
        assert!(all.windows(2).all(|w| w[0].at <= w[1].at));
        let recent = store
            .events(&main, Time90k(now.0 - 45 * TIME_UNITS_PER_SEC), now, None)
            .unwrap();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].kind, "tampering");
        let motion = store
            .events(&main, Time90k(now.0 - 20 * day), now, Some("motion"))
            .unwrap();
        assert_eq!(motion.len(), 2);
        // Negative times keep their order (the key is order-preserving).
        assert!(key_at(&main, Time90k(-5)) < key_at(&main, Time90k(3)));
        // Retention of 7 days drops the 10-day-old event only.
        let mut days = HashMap::new();
        days.insert(main.clone(), 7);
        assert_eq!(purge(&store.inner, &days, now).unwrap(), 1);
        assert_eq!(
            store
                .events(&main, Time90k(now.0 - 20 * day), now, None)
                .unwrap()
                .len(),
            2
        );
    }
}

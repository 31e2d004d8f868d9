//! Retention by age (simulated clock) and under a free-space floor (injected free space).

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use vigie_core::{Clock, FrameSink, StreamEvent, StreamKey, Time90k};
use vigie_store::{FakeFreeSpace, RetentionPolicy, SegmentInfo, Store};

fn list(store: &Store, k: &StreamKey) -> Vec<SegmentInfo> {
    store
        .segments(k, Time90k(0), Time90k(i64::MAX / 2))
        .unwrap()
}

/// Records 10 s sessions of `key` starting at each of `starts` (seconds after t0).
fn record_sessions(store: &Store, k: &StreamKey, starts: &[i64]) -> vigie_store::WriterHandle {
    let h = store.start_writer(k.clone(), (0, 1)).unwrap();
    for (i, &s) in starts.iter().enumerate() {
        let session = i as u64 + 1;
        feed(
            &h,
            stream_a(),
            session,
            Pos {
                media: 0,
                recv: t0() + secs(s),
            },
            250,
        );
        h.push(StreamEvent::SessionEnded {
            session_id: session,
            reason: "test".into(),
        });
    }
    h
}

#[tokio::test]
async fn age_retention_deletes_and_journals() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = open(&config(dir.path()), &clock);
    let other = StreamKey::new("cam-2", "main");
    let _h1 = record_sessions(&store, &key(), &[0, 3600, 7200]);
    let _h2 = record_sessions(&store, &other, &[0]);
    store.shutdown().await;
    let segs = list(&store, &key());
    assert_eq!(segs.len(), 3);

    let policy = RetentionPolicy {
        per_stream_days: HashMap::from([(key(), 1)]),
    };
    // One day + 1 h + 5 s later: only the first segment (ended at t0 + 10 s) is older than 1 day.
    clock.set(t0() + secs(86_400 + 3600 + 5));
    let r = store.apply_retention(&policy).unwrap();
    assert_eq!(r.deleted.len(), 1, "{r:?}");
    let d = &r.deleted[0];
    assert_eq!(
        (d.camera.as_str(), d.stream.as_str(), d.segment_id),
        ("cam-1", "main", segs[0].id)
    );
    assert_eq!(
        (d.start, d.end, d.bytes),
        (segs[0].start, segs[0].end(), segs[0].bytes)
    );
    assert_eq!(d.when, clock.now());
    assert_eq!(d.reason, "age > 1 days");
    assert!(!segs[0].path.exists());
    assert_eq!(list(&store, &key()), segs[1..].to_vec());
    assert_eq!(
        list(&store, &other).len(),
        1,
        "other stream keeps the legal 30 days"
    );
    assert_eq!(
        store.deletions(t0(), clock.now() + secs(1)).unwrap(),
        r.deleted
    );
    assert!(
        store.deletions(t0(), clock.now()).unwrap().is_empty(),
        "window is [start, end)"
    );
    let st = store.stats();
    assert_eq!((st.segments_deleted, st.bytes_deleted), (1, segs[0].bytes));

    // Running again changes nothing; later, the rest goes, and after 30 days the other stream.
    assert!(store.apply_retention(&policy).unwrap().deleted.is_empty());
    clock.set(t0() + secs(31 * 86_400));
    let r = store.apply_retention(&policy).unwrap();
    assert_eq!(r.deleted.len(), 3);
    assert!(
        r.deleted
            .iter()
            .any(|d| d.camera == "cam-2" && d.reason == "age > 30 days")
    );
    assert!(list(&store, &key()).is_empty() && list(&store, &other).is_empty());
    assert_eq!(
        store
            .deletions(Time90k(0), Time90k(i64::MAX / 2))
            .unwrap()
            .len(),
        4
    );
}

#[tokio::test]
async fn free_space_floor_deletes_oldest_first_across_streams() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let free = Arc::new(FakeFreeSpace::new(0, 1 << 40));
    let mut cfg = config(dir.path());
    let store =
        Store::open_with(cfg.clone(), clock.clone() as Arc<dyn Clock>, free.clone()).unwrap();
    let other = StreamKey::new("cam-2", "main");
    let _h1 = record_sessions(&store, &key(), &[0, 7200]);
    let _h2 = record_sessions(&store, &other, &[3600, 10_800]);
    store.shutdown().await;
    let a = list(&store, &key());
    let b = list(&store, &other);
    drop(store);

    // Floor = the two oldest segments' bytes: exactly those two go, oldest first.
    cfg.min_free_bytes = a[0].bytes + b[0].bytes;
    let store =
        Store::open_with(cfg.clone(), clock.clone() as Arc<dyn Clock>, free.clone()).unwrap();
    let r = store.apply_retention(&RetentionPolicy::default()).unwrap();
    let ids: Vec<u64> = r.deleted.iter().map(|d| d.segment_id).collect();
    assert_eq!(ids, vec![a[0].id, b[0].id]);
    assert!(
        r.deleted
            .iter()
            .all(|d| d.reason == "free space below floor")
    );
    assert!(!r.floor_unreachable);
    assert_eq!(r.free_bytes, cfg.min_free_bytes);
    assert_eq!(list(&store, &key()), a[1..].to_vec());
    assert_eq!(list(&store, &other), b[1..].to_vec());

    // A floor that cannot be reached: everything closed goes, then it says so.
    free.set_free(0);
    drop(store);
    cfg.min_free_bytes = u64::MAX;
    let store = Store::open_with(cfg, clock.clone() as Arc<dyn Clock>, free.clone()).unwrap();
    let r = store.apply_retention(&RetentionPolicy::default()).unwrap();
    assert_eq!(r.deleted.len(), 2);
    assert!(r.floor_unreachable);
    assert!(list(&store, &key()).is_empty());
}

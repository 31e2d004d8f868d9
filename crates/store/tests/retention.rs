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

    // Floor = the two oldest segments' bytes: exactly those two go, oldest first (already when
    // the store opens: it frees space before anything records).
    cfg.min_free_bytes = a[0].bytes + b[0].bytes;
    let store = reopen(cfg.clone(), clock.clone() as Arc<dyn Clock>, free.clone());
    let mut r = store.apply_retention(&RetentionPolicy::default()).unwrap();
    r.deleted.splice(0..0, store.take_startup_deletions());
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
    let store = reopen(cfg, clock.clone() as Arc<dyn Clock>, free.clone());
    let mut r = store.apply_retention(&RetentionPolicy::default()).unwrap();
    r.deleted.splice(0..0, store.take_startup_deletions());
    assert_eq!(r.deleted.len(), 2);
    assert!(r.floor_unreachable);
    assert!(list(&store, &key()).is_empty());
}

#[tokio::test]
async fn legal_holds_are_never_deleted_and_a_disk_full_of_them_stops_recording() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let free = Arc::new(FakeFreeSpace::new(1 << 40, 1 << 40));
    let mut cfg = config(dir.path());
    cfg.min_free_bytes = 1 << 30;
    let store =
        Store::open_with(cfg.clone(), clock.clone() as Arc<dyn Clock>, free.clone()).unwrap();
    let h = record_sessions(&store, &key(), &[0, 3600, 7200]);
    // The writer thread works asynchronously: wait until the three sessions are closed.
    let mut segs = list(&store, &key());
    for _ in 0..200 {
        if segs.len() == 3 && segs.iter().all(|s| !s.open) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
        segs = list(&store, &key());
    }
    assert_eq!(segs.len(), 3);

    // Hold the middle segment (a range inside it is enough to cover it).
    let hold = store
        .place_hold(vigie_store::NewHold {
            key: key(),
            start: segs[1].start + secs(2),
            end: segs[1].start + secs(4),
            procedure: "PV-2026-0042".into(),
            reason: "requisition".into(),
            created_by: "alice".into(),
        })
        .unwrap();
    assert!(
        store
            .place_hold(vigie_store::NewHold {
                end: segs[1].start,
                start: segs[1].start,
                ..hold_req()
            })
            .is_err()
    );

    // 40 days later: age retention deletes all but the held segment, and says it kept one.
    clock.set(t0() + secs(40 * 86_400));
    let policy = RetentionPolicy {
        per_stream_days: HashMap::from([(key(), 30)]),
    };
    let r = store.apply_retention(&policy).unwrap();
    let ids: Vec<u64> = r.deleted.iter().map(|d| d.segment_id).collect();
    assert_eq!(ids, vec![segs[0].id, segs[2].id]);
    assert_eq!(r.held_kept, 1);
    assert_eq!(list(&store, &key()), vec![segs[1].clone()]);
    assert!(segs[1].path.exists());

    // The disk fills up: the held segment is still not deleted; recording stops instead.
    free.set_free(0);
    let r = store.apply_retention(&policy).unwrap();
    assert!(
        r.deleted.is_empty() && r.floor_unreachable && r.recording_blocked,
        "{r:?}"
    );
    assert!(store.recording_blocked());
    assert!(segs[1].path.exists());
    let before = h.stats();
    feed(
        &h,
        stream_a(),
        9,
        Pos {
            media: 0,
            recv: clock.now(),
        },
        100,
    );
    let after = h.stats();
    assert_eq!(
        after.frames, before.frames,
        "frames were written while blocked"
    );
    assert!(after.dropped_frames >= before.dropped_frames + 100);

    // Releasing the hold lets retention delete it; space comes back; recording resumes.
    let released = store
        .release_hold(hold.id, "bob", "procedure closed")
        .unwrap()
        .unwrap();
    assert_eq!(released.released.as_ref().unwrap().by, "bob");
    assert!(store.holds().unwrap().iter().all(|h| !h.active()));
    let r = store.apply_retention(&policy).unwrap();
    assert_eq!(r.deleted.len(), 1);
    free.set_free(1 << 40);
    store.apply_retention(&policy).unwrap();
    assert!(!store.recording_blocked());
    feed(
        &h,
        stream_a(),
        10,
        Pos {
            media: 0,
            recv: clock.now(),
        },
        100,
    );
    h.push(StreamEvent::SessionEnded {
        session_id: 10,
        reason: "test".into(),
    });
    store.shutdown().await;
    assert!(
        h.stats().frames >= after.frames + 50,
        "recording did not resume"
    );
}

fn hold_req() -> vigie_store::NewHold {
    vigie_store::NewHold {
        key: key(),
        start: t0(),
        end: t0(),
        procedure: "x".into(),
        reason: "x".into(),
        created_by: "x".into(),
    }
}

/// Reopens a store just dropped: sled releases its file lock when its background flusher lets
/// go of the database, which can lag the drop by a moment on a loaded machine.
fn reopen(cfg: vigie_store::StoreConfig, clock: Arc<dyn Clock>, free: Arc<FakeFreeSpace>) -> Store {
    for _ in 0..100 {
        match Store::open_with(cfg.clone(), clock.clone(), free.clone()) {
            Ok(s) => return s,
            Err(e) if e.to_string().contains("lock") => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the index is still locked 10 s after the store was dropped")
}

/// What a `kill -9` right after a retention pass leaves on disk: a copy of the data directory
/// taken at once (the page cache is what survives a process kill). The deletion must be in it
/// (entry gone, deletion record kept): before the fix the index transaction was unlinked-after
/// but not flushed, so the copy had the entry back without its file and no deletion record.
#[tokio::test]
async fn deletion_is_durable_before_the_file_goes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = open(&config(dir.path()), &clock);
    let _h = record_sessions(&store, &key(), &[0, 3600]);
    store.shutdown().await;
    let segs = list(&store, &key());
    assert_eq!(segs.len(), 2);

    let policy = RetentionPolicy {
        per_stream_days: HashMap::from([(key(), 1)]),
    };
    clock.set(t0() + secs(86_400 + 60));
    let r = store.apply_retention(&policy).unwrap();
    assert_eq!(r.deleted.len(), 1, "{r:?}");
    assert!(!segs[0].path.exists());
    // Copy at once, before sled's own periodic flush (500 ms) could have run.
    let copy = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", dir.path().display()))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    drop(store);

    let copied = open(&config(copy.path()), &clock);
    assert_eq!(
        copied.deletions(t0(), clock.now() + secs(1)).unwrap(),
        r.deleted,
        "the deletion record must survive a kill right after the unlink"
    );
    let left = list(&copied, &key());
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].id, segs[1].id);
}

/// Cluster: holds placed on other nodes (`ExternalHolds::Known`) protect footage here as local
/// holds do, and while they are unknown (`ExternalHolds::Unknown`) retention deletes nothing
/// at all, neither by age nor under the free-space floor.
#[tokio::test]
async fn holds_kept_elsewhere_are_honoured_and_unknown_ones_stop_every_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = open(&config(dir.path()), &clock);
    let _h = record_sessions(&store, &key(), &[0, 3600, 7200]);
    store.shutdown().await;
    let segs = list(&store, &key());
    assert_eq!(segs.len(), 3);
    let policy = RetentionPolicy {
        per_stream_days: HashMap::from([(key(), 1)]),
    };
    clock.set(t0() + secs(3 * 86_400));

    store.set_external_holds(vigie_store::ExternalHolds::Unknown(
        "etcd unreachable".into(),
    ));
    let err = store.apply_retention(&policy).unwrap_err();
    assert!(
        matches!(err, vigie_store::StoreError::HoldsUnknown(_)),
        "{err}"
    );
    assert!(err.to_string().contains("etcd unreachable"), "{err}");
    assert!(store.free_space_pass().is_err());
    assert_eq!(list(&store, &key()), segs, "nothing deleted");

    // A hold placed on another node over the second segment.
    let other = vigie_store::Hold {
        id: 7,
        camera: key().camera.clone(),
        stream: key().stream.clone(),
        start: segs[1].start,
        end: segs[1].start + secs(1),
        procedure: "PV-1".into(),
        reason: "placed on node rec-b".into(),
        created_by: "alice".into(),
        created_at: t0(),
        released: None,
    };
    store.set_external_holds(vigie_store::ExternalHolds::Known(vec![other]));
    let r = store.apply_retention(&policy).unwrap();
    let deleted: Vec<u64> = r.deleted.iter().map(|d| d.segment_id).collect();
    assert_eq!(deleted, vec![segs[0].id, segs[2].id], "{r:?}");
    assert_eq!(list(&store, &key()), vec![segs[1].clone()]);
}

/// A cluster node: retention trusts only a read of the cluster's holds that began after it
/// started deciding. A stale read (a hold placed elsewhere since may be missing from it) makes
/// the pass wait for a newer one, and delete nothing when none comes; a newer read that arrives
/// while it waits is used. (Before this rule a node deleted a segment held through another
/// node 4.2 s after the hold: e2e `cluster_ha::cluster_hold_placed_on_one_node_…`.)
#[tokio::test]
async fn holds_kept_elsewhere_count_only_when_read_after_the_pass_began() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = open(&config(dir.path()), &clock);
    let _h = record_sessions(&store, &key(), &[0, 3600, 7200]);
    store.shutdown().await;
    let segs = list(&store, &key());
    assert_eq!(segs.len(), 3);
    let policy = RetentionPolicy {
        per_stream_days: HashMap::from([(key(), 1)]),
    };
    clock.set(t0() + secs(3 * 86_400));

    // Read (with no hold) before the pass: not trusted; no newer read comes → nothing deleted.
    store.set_external_holds_read_at(
        vigie_store::ExternalHolds::Known(vec![]),
        Some(std::time::Instant::now()),
    );
    std::thread::sleep(std::time::Duration::from_millis(5));
    let err = store.apply_retention(&policy).unwrap_err();
    assert!(
        matches!(err, vigie_store::StoreError::HoldsUnknown(_)),
        "{err}"
    );
    assert_eq!(
        list(&store, &key()),
        segs,
        "nothing deleted on a stale read"
    );

    // A newer read arrives while the pass waits, with a hold over the second segment.
    let held = vigie_store::Hold {
        id: 9,
        camera: key().camera.clone(),
        stream: key().stream.clone(),
        start: segs[1].start,
        end: segs[1].start + secs(1),
        procedure: "PV-2".into(),
        reason: "placed on node rec-a".into(),
        created_by: "alice".into(),
        created_at: t0(),
        released: None,
    };
    let s2 = store.clone();
    let reader = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        s2.set_external_holds_read_at(
            vigie_store::ExternalHolds::Known(vec![held]),
            Some(std::time::Instant::now()),
        );
    });
    let r = store.apply_retention(&policy).unwrap();
    reader.join().unwrap();
    let deleted: Vec<u64> = r.deleted.iter().map(|d| d.segment_id).collect();
    assert_eq!(deleted, vec![segs[0].id, segs[2].id], "{r:?}");
    assert_eq!(list(&store, &key()), vec![segs[1].clone()]);
}

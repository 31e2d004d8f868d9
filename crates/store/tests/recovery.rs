//! Crash recovery, orphans and reindex, on real files.

mod common;

use std::io::Write;

use common::*;
use vigie_core::{FrameSink, StreamEvent, Time90k};
use vigie_store::{SegmentInfo, Store, SyncFault};

fn all(store: &Store) -> Vec<SegmentInfo> {
    store
        .segments(&key(), Time90k(0), Time90k(i64::MAX / 2))
        .unwrap()
}

fn drain(h: &vigie_store::WriterHandle) {
    h.wait_handled_for_test();
}

/// Feeds `frames` frames of the test stream to a new writer and waits until it has them.
fn record(store: &Store, frames: usize) -> vigie_store::WriterHandle {
    let h = store.start_writer(key(), (0, 1)).unwrap();
    feed(
        &h,
        stream_a(),
        1,
        Pos {
            media: 0,
            recv: t0(),
        },
        frames,
    );
    drain(&h);
    h
}

/// Records, then "kill -9": the writer stops dead, nothing is closed.
async fn record_then_crash(cfg: &vigie_store::StoreConfig, frames: usize) {
    let store = open(cfg, &clock());
    let _h = record(&store, frames);
    store.crash_writers_for_test();
    store.shutdown().await;
}

/// The store holds one segment, closed by recovery with a trailer past `file_len`, with the
/// 225 frames of 9 synced fragments, and ffmpeg decodes them all.
fn assert_single_closed_225(store: &Store, file_len: u64) {
    let segs = all(store);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].frames, 225);
    assert!(!segs[0].open);
    assert!(segs[0].bytes > file_len, "a trailer was added");
    assert_valid(&segs[0].path, 225);
}

fn only_file(dir: &std::path::Path) -> std::path::PathBuf {
    let d = dir.join("recordings/cam-1/main/20261128");
    let mut v: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(v.len(), 1, "{v:?}");
    v.pop().unwrap()
}

#[tokio::test]
async fn kill_with_unindexed_fragments_and_partial_tail_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.recording.flush_interval_ms = 60_000; // the index lags: the file is not indexed at all
    record_then_crash(&cfg, 500).await;
    let path = only_file(dir.path());
    // The fragment being written when the process died: half of a real fragment.
    let bytes = std::fs::read(&path).unwrap();
    let p = vigie_mp4::parse_segment_bytes(&bytes);
    assert_eq!(p.frames(), 475, "the last fragment was still in memory");
    let f = &p.fragments[1];
    let partial = bytes[f.offset as usize..(f.offset + (f.end - f.offset) / 2) as usize].to_vec();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&partial)
        .unwrap();

    let store = open(&cfg, &clock());
    let r = store.recovery_report().clone();
    assert_eq!(r.orphans_indexed, 1, "{r:?}");
    assert_eq!(r.bytes_truncated, partial.len() as u64);
    let segs = all(&store);
    assert_eq!(segs.len(), 1);
    let s = &segs[0];
    assert_eq!(
        (s.frames, s.open, s.end_reason.as_deref()),
        (475, false, Some("recovered"))
    );
    assert_eq!(s.start, t0());
    assert_eq!(std::fs::metadata(&s.path).unwrap().len(), s.bytes);
    assert_valid(&s.path, 475);
    // Recording resumes with fresh ids.
    let h = store.start_writer(key(), (0, 1)).unwrap();
    feed(
        &h,
        stream_a(),
        2,
        Pos {
            media: 0,
            recv: t0() + secs(60),
        },
        50,
    );
    store.shutdown().await;
    let segs = all(&store);
    assert_eq!(segs.len(), 2);
    assert!(segs[1].id > segs[0].id);
}

/// `index_interval_ms`: the open segment's entry is written at its first fdatasync, then not
/// again within the interval although every fragment is synced; a crash loses nothing more,
/// because recovery indexes the durable fragments past the indexed length from the file.
#[tokio::test]
async fn index_lags_by_index_interval_and_recovery_indexes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.recording.flush_interval_ms = 0; // every fragment synced
    cfg.recording.index_interval_ms = 60_000;
    let store = open(&cfg, &clock());
    let h = record(&store, 250);
    let segs = all(&store);
    assert_eq!(segs.len(), 1);
    assert!(segs[0].open);
    assert_eq!(
        segs[0].frames, 25,
        "only the first synced fragment is indexed"
    );
    store.crash_writers_for_test();
    store.shutdown().await;
    drop((h, store));
    let file_len = std::fs::metadata(only_file(dir.path())).unwrap().len();

    let store = open(&cfg, &clock());
    assert_eq!(store.recovery_report().segments_recovered, 1);
    // 9 complete fragments were synced; the 10th was still in memory.
    assert_single_closed_225(&store, file_len);
}

#[tokio::test]
async fn open_entry_with_garbage_appended_is_cut_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.recording.flush_interval_ms = 0; // every fragment synced and indexed
    cfg.recording.index_interval_ms = 0;
    record_then_crash(&cfg, 250).await;
    let path = only_file(dir.path());
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&[0x5a; 3000])
        .unwrap();
    let store = open(&cfg, &clock());
    assert_eq!(
        store.recovery_report().segments_recovered,
        1,
        "{:?}",
        store.recovery_report()
    );
    assert_single_closed_225(&store, len);
}

#[tokio::test]
async fn file_truncated_mid_fragment_keeps_complete_fragments() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.recording.flush_interval_ms = 0;
    cfg.recording.index_interval_ms = 0;
    record_then_crash(&cfg, 250).await;
    let path = only_file(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let p = vigie_mp4::parse_segment_bytes(&bytes);
    let last = p.fragments.last().unwrap();
    let cut = last.offset + 100;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let store = open(&cfg, &clock());
    let r = store.recovery_report().clone();
    assert_eq!((r.entries_dropped, r.orphans_indexed), (1, 1), "{r:?}");
    let segs = all(&store);
    assert_eq!(segs.len(), 1);
    let kept = p.frames() - last.samples.len();
    assert_eq!(segs[0].frames as usize, kept);
    assert_valid(&segs[0].path, kept as u32);
}

#[tokio::test]
async fn dangling_entries_and_empty_orphans_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let store = open(&cfg, &clock());
    let h = store.start_writer(key(), (0, 1)).unwrap();
    let p = feed(
        &h,
        stream_a(),
        1,
        Pos {
            media: 0,
            recv: t0(),
        },
        100,
    );
    h.push(StreamEvent::SessionEnded {
        session_id: 1,
        reason: "x".into(),
    });
    feed(
        &h,
        stream_a(),
        2,
        Pos {
            media: 0,
            recv: p.recv + secs(5),
        },
        100,
    );
    store.shutdown().await;
    let before = all(&store);
    assert_eq!(before.len(), 2);
    drop(h);
    drop(store);
    std::fs::remove_file(&before[0].path).unwrap();
    // A file created just before a crash, with only its init segment.
    let orphan =
        vigie_store::layout::Layout::new(dir.path()).segment_path(&key(), 999, t0() + secs(100));
    let meta = vigie_mp4::SegmentMeta {
        camera: "cam-1".into(),
        stream: "main".into(),
        segment_id: 999,
        start_90k: (t0() + secs(100)).0,
        session_id: 3,
    };
    std::fs::write(&orphan, vigie_mp4::init_segment(&stream_a().params, &meta)).unwrap();

    let store = open(&cfg, &clock());
    let r = store.recovery_report().clone();
    assert_eq!((r.entries_dropped, r.orphans_deleted), (1, 1), "{r:?}");
    assert!(!orphan.exists());
    assert_eq!(all(&store), before[1..].to_vec());
    // Ids continue above every id seen, including the deleted orphan's.
    let h = store.start_writer(key(), (0, 1)).unwrap();
    feed(
        &h,
        stream_a(),
        4,
        Pos {
            media: 0,
            recv: t0() + secs(200),
        },
        30,
    );
    store.shutdown().await;
    assert!(all(&store).last().unwrap().id > 999);
}

#[tokio::test]
async fn reindex_rebuilds_an_identical_index() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let store = open(&cfg, &clock());
    let h = store.start_writer(key(), (0, 1)).unwrap();
    let h2 = store
        .start_writer(vigie_core::StreamKey::new("cam-2", "sub"), (1, 2))
        .unwrap();
    let p = feed(
        &h,
        stream_a(),
        1,
        Pos {
            media: 0,
            recv: t0(),
        },
        70 * 25,
    );
    feed(
        &h2,
        stream_b(),
        9,
        Pos {
            media: 0,
            recv: t0(),
        },
        40 * 25,
    );
    h.push(StreamEvent::SessionEnded {
        session_id: 1,
        reason: "stall".into(),
    });
    feed(
        &h,
        stream_b(),
        2,
        Pos {
            media: 0,
            recv: p.recv + secs(3),
        },
        10 * 25,
    );
    store.shutdown().await;
    let k2 = vigie_core::StreamKey::new("cam-2", "sub");
    let listing = |s: &Store| {
        let a = all(s);
        let b = s.segments(&k2, Time90k(0), Time90k(i64::MAX / 2)).unwrap();
        let ix: Vec<_> = a
            .iter()
            .chain(&b)
            .map(|x| s.segment_index(x.id).unwrap().unwrap())
            .collect();
        let params: Vec<_> = a
            .iter()
            .chain(&b)
            .map(|x| s.params(x.params_id).unwrap().unwrap())
            .collect();
        (a, b, ix, params)
    };
    let before = listing(&store);
    assert_eq!((before.0.len(), before.1.len()), (3, 2));
    drop((h, h2));
    drop(store);

    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let r = Store::reindex(&cfg).unwrap();
    assert_eq!(r.files_indexed, 5, "{r:?}");
    assert_eq!((r.files_repaired, r.files_deleted), (0, 0));
    let store = open(&cfg, &clock());
    let after = listing(&store);
    assert_eq!(before, after);
}

/// Group commit: several streams on one writer thread are made durable by one `syncfs` per
/// flush, their open entries then describe exactly the synced fragments, and after a kill -9
/// recovery keeps every stream's synced fragments.
#[tokio::test]
async fn streams_synced_together_by_syncfs_survive_a_crash() {
    let stats = synced_streams_survive_a_crash(SyncFault::None).await;
    assert!(stats.syncfs_calls >= 1, "{stats:?}");
    assert_eq!(stats.fdatasync_calls, 0, "{stats:?}");
}

/// When a `syncfs` fails, every stream waiting on it `fdatasync`s its own file instead (which
/// reports the error against that file), and what is indexed is still durable.
#[tokio::test]
async fn a_failed_syncfs_falls_back_to_each_file() {
    let stats = synced_streams_survive_a_crash(SyncFault::SyncfsFails).await;
    assert!(stats.syncfs_calls >= 1, "{stats:?}");
    assert!(stats.fdatasync_calls >= 3, "{stats:?}");
}

/// On a kernel whose `syncfs` cannot report errors (before 5.8), writer threads sync each file
/// on their own, every `flush_interval_ms`, and never call `syncfs`.
#[tokio::test]
async fn without_an_error_reporting_syncfs_each_file_is_synced() {
    let stats = synced_streams_survive_a_crash(SyncFault::OldKernel).await;
    assert_eq!(stats.syncfs_calls, 0, "{stats:?}");
    assert!(stats.fdatasync_calls >= 3, "{stats:?}");
}

/// Records three streams (one writer thread) with `fault` forced, waits until every stream's
/// open entry indexes its synced fragments, kills the writers and checks that recovery keeps
/// exactly those fragments. Returns the store's sync counters before the kill.
async fn synced_streams_survive_a_crash(fault: SyncFault) -> vigie_store::StoreStats {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path()); // flush every 1000 ms
    let keys: Vec<_> = (0..3)
        .map(|i| vigie_core::StreamKey::new(format!("cam-{i}"), "main"))
        .collect();
    let store = open(&cfg, &clock());
    store.set_sync_fault_for_test(fault);
    let handles: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| store.start_writer(k.clone(), (i as u32, 3)).unwrap())
        .collect();
    for h in &handles {
        feed(
            h,
            stream_a(),
            1,
            Pos {
                media: 0,
                recv: t0(),
            },
            250,
        );
        drain(h);
    }
    // Nothing synced yet within the first flush interval; then one flush covers all three.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let indexed = |k: &vigie_core::StreamKey| {
        store
            .segments(k, Time90k(0), Time90k(i64::MAX / 2))
            .unwrap()
            .first()
            .map(|s| s.frames)
    };
    while keys.iter().any(|k| indexed(k) != Some(225)) {
        assert!(
            std::time::Instant::now() < deadline,
            "open entries not indexed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let stats = store.stats();
    store.crash_writers_for_test();
    store.shutdown().await;
    drop((handles, store));

    let store = open(&cfg, &clock());
    assert_eq!(store.recovery_report().segments_recovered, 3);
    for k in &keys {
        let segs = store
            .segments(k, Time90k(0), Time90k(i64::MAX / 2))
            .unwrap();
        assert_eq!(segs.len(), 1, "{k}");
        assert_eq!(segs[0].frames, 225, "{k}");
        assert!(!segs[0].open);
        assert_valid(&segs[0].path, 225);
    }
    stats
}

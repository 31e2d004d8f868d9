//! A full disk never bricks the store: the floor is enforced where bytes are written (injected
//! free space, deterministic), and on a real full file system (a small tmpfs, as root; skipped
//! with a message where mounting is refused) deletion keeps working when the index cannot
//! write, the index is reopened, recording resumes, and the index still matches the files.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use vigie_core::{Clock, FrameSink, StreamEvent, Time90k};
use vigie_store::{FakeFreeSpace, SegmentInfo, StorageState, Store};

fn all(store: &Store) -> Vec<SegmentInfo> {
    store
        .segments(&key(), Time90k(0), Time90k(i64::MAX / 2))
        .unwrap()
}

/// Below the floor a writer asks for a free-space pass at once; below half of it, it ends its
/// segment (`disk-full`) and writes nothing more; it records again at the next key frame once
/// there is room. Health says which state the storage is in. Fails on the old code, where only
/// the periodic retention pass looked at free space and writers wrote until ENOSPC.
#[tokio::test(flavor = "multi_thread")]
async fn writers_enforce_the_floor_where_they_write() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let free = Arc::new(FakeFreeSpace::new(1 << 40, 1 << 40));
    let mut cfg = config(dir.path());
    cfg.min_free_bytes = 4 << 20;
    let store =
        Store::open_with(cfg.clone(), clock.clone() as Arc<dyn Clock>, free.clone()).unwrap();
    // The reserve (a quarter of the floor) is in place.
    assert_eq!(
        std::fs::metadata(dir.path().join(".reserve"))
            .unwrap()
            .len(),
        1 << 20
    );
    assert_eq!(store.storage_health().state, StorageState::Ok);
    let h = store.start_writer(key(), (0, 1)).unwrap();
    let mut pos = Pos {
        media: 0,
        recv: t0(),
    };
    pos = feed(&h, stream_a(), 1, pos, 100);
    h.wait_handled_for_test();
    assert!(h.stats().recording);

    // Below the floor, above half of it: recording continues, a pass is asked for now.
    free.set_free(3 << 20);
    pos = feed(&h, stream_a(), 1, pos, 50);
    h.wait_handled_for_test();
    tokio::time::timeout(Duration::from_secs(5), store.space_wanted())
        .await
        .expect("the writer did not ask for a free-space pass");
    assert!(h.stats().recording);
    assert_eq!(store.storage_health().state, StorageState::BelowFloor);

    // Below half the floor: the segment ends cleanly with `disk-full`, nothing more is written.
    free.set_free(1 << 20);
    pos = feed(&h, stream_a(), 1, pos, 50);
    h.wait_handled_for_test();
    let stopped = h.stats();
    assert!(!stopped.recording, "{stopped:?}");
    let segs = all(&store);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].end_reason.as_deref(), Some("disk-full"));
    assert!(!segs[0].open);
    let health = store.storage_health();
    assert_eq!(health.state, StorageState::Full, "{health:?}");
    assert!(health.recording_blocked && health.message.contains("recording stopped"));
    pos = feed(&h, stream_a(), 1, pos, 100);
    h.wait_handled_for_test();
    assert_eq!(
        h.stats().frames,
        stopped.frames,
        "frames written below half the floor"
    );

    // Room again: recording resumes at the next key frame (at most one second of frames here).
    free.set_free(1 << 40);
    feed(&h, stream_a(), 1, pos, 100);
    h.push(StreamEvent::SessionEnded {
        session_id: 1,
        reason: "test".into(),
    });
    h.wait_handled_for_test();
    let segs = all(&store);
    assert_eq!(segs.len(), 2, "{segs:?}");
    assert!(segs[1].frames >= 75, "{}", segs[1].frames);
    assert_eq!(store.storage_health().state, StorageState::Ok);
    store.shutdown().await;
    assert_valid(&segs[0].path, segs[0].frames);
}

/// Starting below the floor frees space before anything records: the reserve goes first (sled
/// needs room to open), the oldest footage next, and the reserve comes back once there is room.
#[tokio::test]
async fn opening_below_the_floor_releases_the_reserve_then_deletes_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let free = Arc::new(FakeFreeSpace::new(1 << 40, 1 << 40));
    let mut cfg = config(dir.path());
    cfg.min_free_bytes = 4 << 20;
    let store =
        Store::open_with(cfg.clone(), clock.clone() as Arc<dyn Clock>, free.clone()).unwrap();
    let h = store.start_writer(key(), (0, 1)).unwrap();
    for s in 0..3u64 {
        feed(
            &h,
            stream_a(),
            s + 1,
            Pos {
                media: 0,
                recv: t0() + secs(100 * s as i64),
            },
            100,
        );
        h.push(StreamEvent::SessionEnded {
            session_id: s + 1,
            reason: "test".into(),
        });
    }
    h.wait_handled_for_test();
    drop(h);
    store.shutdown().await;
    let segs = all(&store);
    assert_eq!(segs.len(), 3);
    drop(store);
    assert!(dir.path().join(".reserve").exists());

    // The disk is now full (another program): free space 0 until something is deleted.
    free.set_free(0);
    cfg.min_free_bytes = segs[0].bytes + segs[1].bytes;
    let store = loop {
        match Store::open_with(cfg.clone(), clock.clone() as Arc<dyn Clock>, free.clone()) {
            Ok(s) => break s,
            Err(e) if e.to_string().contains("in use") => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("{e}"),
        }
    };
    let deleted: Vec<u64> = store
        .take_startup_deletions()
        .iter()
        .map(|d| d.segment_id)
        .collect();
    assert_eq!(deleted, vec![segs[0].id, segs[1].id]);
    assert_eq!(all(&store), segs[2..].to_vec());
    assert!(
        !dir.path().join(".reserve").exists(),
        "the reserve was not released (free space did not allow it back)"
    );
    // Room again: the next pass puts the reserve back.
    free.set_free(1 << 40);
    store.free_space_pass().unwrap();
    assert!(dir.path().join(".reserve").exists());
}

// ---- a real full file system ----

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, mib: u64) -> Option<Mount> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Mount(dir.to_owned()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until ENOSPC.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    for chunk in [1 << 20, 4 << 10, 256] {
        let buf = vec![1u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
}

fn free_bytes(dir: &Path) -> u64 {
    vigie_store::FreeSpace::space(&vigie_store::Statvfs, dir)
        .unwrap()
        .free_bytes
}

/// On a 24 MiB tmpfs, another program fills the disk to 0 bytes while a stream records: the
/// index's next write fails (sled then refuses every write until reopened). The free-space
/// pass reopens the index (the reserve gives it room), deletes the oldest footage, and
/// recording resumes; the index still matches the files (a reindex of a copy gives the same
/// segments) and every file decodes.
#[tokio::test(flavor = "multi_thread")]
async fn another_program_fills_the_disk_recording_resumes_and_the_index_matches_the_files() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let Some(_mount) = Mount::tmpfs(&data, 24) else {
        return;
    };
    let clock = clock();
    let mut cfg = config(&data);
    cfg.min_free_bytes = 4 << 20;
    cfg.recording.segment_seconds = 4;
    cfg.recording.flush_interval_ms = 200;
    let store = Store::open(cfg.clone(), clock.clone() as Arc<dyn Clock>).unwrap();
    assert!(data.join(".reserve").exists());
    let h = store.start_writer(key(), (0, 1)).unwrap();
    let mut pos = Pos {
        media: 0,
        recv: t0(),
    };
    // Record well over the floor's worth of footage (fed faster than real time), then fill.
    while all(&store).iter().map(|s| s.bytes).sum::<u64>() < 12 << 20 {
        pos = feed(&h, stream_a(), 1, pos, 250);
        h.wait_handled_for_test();
    }
    let before = all(&store);
    eprintln!(
        "{} segments, {} bytes before the fill",
        before.len(),
        before.iter().map(|s| s.bytes).sum::<u64>()
    );
    fill(&data.join("junk"));
    assert!(free_bytes(&data) < 64 << 10);
    // Keep recording while the pass (the retention loop's job) makes room.
    let mut passes = 0;
    let mut index_error_seen = false;
    for _ in 0..40 {
        pos = feed(&h, stream_a(), 1, pos, 25);
        h.wait_handled_for_test();
        std::thread::sleep(Duration::from_millis(250));
        index_error_seen |= store.storage_health().state == StorageState::IndexError;
        match store.free_space_pass() {
            Ok(r) => {
                passes += 1;
                if passes > 3 && r.free_bytes >= cfg.min_free_bytes {
                    break;
                }
            }
            Err(e) => eprintln!("pass failed (retried): {e}"),
        }
    }
    eprintln!("index error seen: {index_error_seen}");
    let health = store.storage_health();
    assert!(
        matches!(health.state, StorageState::Ok | StorageState::BelowFloor),
        "{health:?}"
    );
    // Recording resumed: new frames land in segments started after the fill.
    let last_id = before.last().unwrap().id;
    for _ in 0..8 {
        pos = feed(&h, stream_a(), 1, pos, 100);
        h.wait_handled_for_test();
        store.free_space_pass().unwrap();
    }
    h.push(StreamEvent::SessionEnded {
        session_id: 1,
        reason: "test".into(),
    });
    h.wait_handled_for_test();
    drop(h);
    store.shutdown().await;
    let after = all(&store);
    assert!(
        after
            .iter()
            .filter(|s| s.id > last_id)
            .map(|s| s.frames)
            .sum::<u32>()
            >= 600,
        "recording did not resume: {after:?}"
    );
    assert!(
        after.first().unwrap().id > before.first().unwrap().id,
        "nothing was deleted"
    );
    drop(store);

    // Index and files agree: every listed file exists and decodes, and a reindex of a copy of
    // the data directory lists the same segments.
    for s in &after {
        assert_valid(&s.path, s.frames);
    }
    let copy = work.path().join("copy");
    let st = Command::new("cp")
        .args(["-a"])
        .arg(&data)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_file(copy.join("junk")).unwrap();
    let mut ccfg = cfg.clone();
    ccfg.data_dir = copy.clone();
    ccfg.min_free_bytes = 0;
    let report = Store::reindex(&ccfg).unwrap();
    eprintln!("reindex: {report:?}");
    for s in &after {
        eprintln!(
            "{} {:?} {:?} {}",
            s.id,
            s.end_reason,
            s.path.file_name(),
            std::fs::metadata(&s.path).map(|m| m.len()).unwrap_or(0)
        );
    }
    let reindexed = Store::open(ccfg, clock.clone() as Arc<dyn Clock>).unwrap();
    let r = all(&reindexed);
    let strip = |v: &[SegmentInfo]| -> Vec<(u64, Time90k, i64, u32, u64)> {
        v.iter()
            .map(|s| (s.id, s.start, s.duration_90k, s.frames, s.bytes))
            .collect()
    };
    assert_eq!(strip(&r), strip(&after));
}

/// The index alone runs out of space (its own 2 MiB file system fills up, the data directory
/// has room): sled's next write fails, and sled then refuses every write until reopened.
/// Recording stops cleanly, health says `index_error`; once its file system has room again,
/// the free-space pass reopens the index, replays what it may have lost, and recording
/// resumes; the index matches the files. Fails on the old code (no reopen: every later write
/// of the index fails until the process restarts).
#[tokio::test(flavor = "multi_thread")]
async fn an_index_that_cannot_write_is_reopened_and_recording_resumes() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let Some(_data_mount) = Mount::tmpfs(&data, 64) else {
        return;
    };
    let Some(_index_mount) = Mount::tmpfs(&data.join("index"), 2) else {
        return;
    };
    let clock = clock();
    let mut cfg = config(&data);
    cfg.min_free_bytes = 4 << 20;
    cfg.recording.segment_seconds = 2;
    cfg.recording.flush_interval_ms = 100;
    cfg.recording.index_interval_ms = 0;
    let store = Store::open(cfg.clone(), clock.clone() as Arc<dyn Clock>).unwrap();
    let h = store.start_writer(key(), (0, 1)).unwrap();
    let mut pos = Pos {
        media: 0,
        recv: t0(),
    };
    pos = feed(&h, stream_a(), 1, pos, 100);
    h.wait_handled_for_test();
    fill(&data.join("index").join("junk"));
    // Keep recording until the index fails (sled flushes every 500 ms).
    let mut failed = false;
    for _ in 0..60 {
        pos = feed(&h, stream_a(), 1, pos, 25);
        h.wait_handled_for_test();
        std::thread::sleep(Duration::from_millis(100));
        let health = store.storage_health();
        if health.state == StorageState::IndexError {
            assert!(health.recording_blocked, "{health:?}");
            assert!(
                health.message.contains("index cannot be written"),
                "{health:?}"
            );
            failed = true;
            break;
        }
    }
    assert!(
        failed,
        "the index never failed: {:?}",
        store.storage_health()
    );
    // While its file system is full, it cannot be reopened: recording stays stopped.
    assert!(store.free_space_pass().is_err());
    pos = feed(&h, stream_a(), 1, pos, 50);
    h.wait_handled_for_test();
    assert!(!h.stats().recording);
    // Room again: reopened at the next pass; recording resumes at the next key frame.
    std::fs::remove_file(data.join("index").join("junk")).unwrap();
    store.free_space_pass().unwrap();
    assert_eq!(store.storage_health().state, StorageState::Ok);
    let resumed_at = pos.recv;
    feed(&h, stream_a(), 1, pos, 200);
    h.push(StreamEvent::SessionEnded {
        session_id: 1,
        reason: "test".into(),
    });
    h.wait_handled_for_test();
    drop(h);
    store.shutdown().await;
    let segs = all(&store);
    assert!(
        segs.iter()
            .filter(|s| s.start >= resumed_at)
            .map(|s| s.frames)
            .sum::<u32>()
            >= 175,
        "recording did not resume: {segs:?}"
    );
    drop(store);
    for s in &segs {
        assert_valid(&s.path, s.frames);
    }
    // A reopen after a clean shutdown finds nothing to recover, and lists the same.
    let reopened = loop {
        match Store::open(cfg.clone(), clock.clone() as Arc<dyn Clock>) {
            Ok(s) => break s,
            Err(e) if e.to_string().contains("in use") => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(all(&reopened), segs);
    assert_eq!(
        reopened.recovery_report(),
        &vigie_store::RecoveryReport::default()
    );
}

/// The worst case: the disk is at 0 bytes, the reserve is gone (another program took the
/// space), and the index has failed a write (sled refuses every write until reopened, and
/// reopening writes a snapshot, which needs space). The pass deletes the oldest segment file
/// *before* its entry (that frees space), reopens the index, then removes the entry with its
/// deletion record: recording resumes and the index still matches the files.
#[tokio::test(flavor = "multi_thread")]
async fn with_no_reserve_left_the_oldest_file_is_deleted_before_its_entry() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let Some(_mount) = Mount::tmpfs(&data, 24) else {
        return;
    };
    let clock = clock();
    let mut cfg = config(&data);
    cfg.min_free_bytes = 4 << 20;
    cfg.recording.segment_seconds = 4;
    let store = Store::open(cfg.clone(), clock.clone() as Arc<dyn Clock>).unwrap();
    let h = store.start_writer(key(), (0, 1)).unwrap();
    let mut pos = Pos {
        media: 0,
        recv: t0(),
    };
    while all(&store).iter().map(|s| s.bytes).sum::<u64>() < 12 << 20 {
        pos = feed(&h, stream_a(), 1, pos, 250);
        h.wait_handled_for_test();
    }
    let before = all(&store);
    std::fs::remove_file(data.join(".reserve")).unwrap();
    fill(&data.join("junk"));
    // Make sled fail a write now (a hold on another stream, flushed at once).
    let poisoned = store
        .place_hold(vigie_store::NewHold {
            key: vigie_core::StreamKey::new("cam-x", "main"),
            ..hold_req()
        })
        .is_err();
    eprintln!("index write failed: {poisoned}");
    let mut ok = false;
    for _ in 0..20 {
        pos = feed(&h, stream_a(), 1, pos, 25);
        h.wait_handled_for_test();
        match store.free_space_pass() {
            Ok(r) if r.free_bytes >= cfg.min_free_bytes => {
                ok = true;
                break;
            }
            Ok(_) => {}
            Err(e) => eprintln!("pass failed (retried): {e}"),
        }
    }
    assert!(ok, "{:?}", store.storage_health());
    for _ in 0..4 {
        pos = feed(&h, stream_a(), 1, pos, 100);
        h.wait_handled_for_test();
        store.free_space_pass().unwrap();
    }
    h.push(StreamEvent::SessionEnded {
        session_id: 1,
        reason: "test".into(),
    });
    h.wait_handled_for_test();
    drop(h);
    store.shutdown().await;
    let after = all(&store);
    let last_id = before.last().unwrap().id;
    assert!(
        after
            .iter()
            .filter(|s| s.id > last_id)
            .map(|s| s.frames)
            .sum::<u32>()
            >= 300,
        "recording did not resume: {after:?}"
    );
    // Every deletion is journaled, the files and the index agree.
    let deleted: Vec<u64> = store
        .deletions(Time90k(0), Time90k(i64::MAX / 2))
        .unwrap()
        .iter()
        .map(|d| d.segment_id)
        .collect();
    for s in &before {
        assert!(
            after.iter().any(|a| a.id == s.id) || deleted.contains(&s.id),
            "segment {} neither listed nor journaled as deleted",
            s.id
        );
    }
    eprintln!(
        "{} segments before, {} after, {} deletions journaled",
        before.len(),
        after.len(),
        deleted.len()
    );
    assert!(!deleted.is_empty());
    for s in &after {
        assert!(s.path.exists(), "{}", s.path.display());
    }
    let files = walk_mp4(&data.join("recordings"));
    assert_eq!(files.len(), after.len(), "{files:?}");
    drop(store);
    let reopened = loop {
        match Store::open(cfg.clone(), clock.clone() as Arc<dyn Clock>) {
            Ok(s) => break s,
            Err(e) if e.to_string().contains("in use") => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("{e}"),
        }
    };
    // The disk has no reserve: the start-up pass of the reopened store may delete the oldest
    // segments again (how many depends on what the index took on disk meanwhile). Those are
    // journaled deletions of the oldest; everything else is exactly as before.
    let kept = all(&reopened);
    let gone_at_open: Vec<u64> = reopened
        .deletions(Time90k(0), Time90k(i64::MAX / 2))
        .unwrap()
        .iter()
        .map(|d| d.segment_id)
        .filter(|id| !deleted.contains(id))
        .collect();
    let expected: Vec<_> = after
        .iter()
        .filter(|s| !gone_at_open.contains(&s.id))
        .cloned()
        .collect();
    assert_eq!(kept, expected, "deleted at open: {gone_at_open:?}");
    assert!(
        gone_at_open
            .iter()
            .all(|id| after.iter().take(gone_at_open.len()).any(|s| s.id == *id)),
        "the start-up pass deleted other than the oldest: {gone_at_open:?}"
    );
    assert_eq!(reopened.recovery_report().entries_dropped, 0);
}

fn hold_req() -> vigie_store::NewHold {
    vigie_store::NewHold {
        key: key(),
        start: t0(),
        end: t0() + secs(1),
        procedure: "x".into(),
        reason: "x".into(),
        created_by: "x".into(),
    }
}

fn walk_mp4(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "mp4") {
                out.push(p);
            }
        }
    }
    out
}

//! Issue 16: a start costs what a crash can have affected, not the history kept. A large
//! synthetic index with its files present (sparse files of the indexed lengths): the store opens
//! and records before the background verification of the history is done, and that
//! verification finds what was done to old files behind Vigie's back.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::*;
use vigie_core::{Clock, SimulatedClock, StreamKey, Time90k};
use vigie_mp4::SampleInfo;
use vigie_store::{RECENT_ENTRIES_PER_STREAM, SegmentInfo, Store, SyntheticSegment};

/// Per stream; two streams.
const PER_STREAM: i64 = 10_000;
/// Throttle of the background pass: 20,000 entries at 1,000/s cannot be done in under 20 s.
const RATE: u32 = 1_000;

fn seg() -> SyntheticSegment {
    SyntheticSegment {
        start: Time90k(0),
        wall_duration_90k: None,
        samples: (0..1500)
            .map(|i| SampleInfo {
                duration_90k: 3600,
                bytes: if i % 25 == 0 { 20_000 } else { 2_000 + i },
                is_key: i % 25 == 0,
            })
            .collect(),
        samples_per_fragment: 25,
        fragment_header_len: 300,
        init_len: 700,
        session_id: 1,
    }
}

fn everything(store: &Store, k: &StreamKey) -> Vec<SegmentInfo> {
    store
        .segments(k, Time90k(0), Time90k(i64::MAX / 2))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_history_opens_at_once_and_is_verified_in_the_background() {
    let _ = stream_a(); // generate the clip before timing anything
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.verify_entries_per_s = RATE;
    // Every complete fragment synced and indexed: what was recorded is listed at once.
    cfg.recording.flush_interval_ms = 0;
    cfg.recording.index_interval_ms = 0;
    let keys = [key(), StreamKey::new("cam-2", "main")];
    let history_start = t0().0 - PER_STREAM * 60 * 90_000 - 3_600 * 90_000;
    {
        let store = open(&cfg, &clock());
        let params = vigie_mp4::testutil::avc_params(&[0x67, 0x4d, 0x40, 0x1f], &[0x68], 320, 240);
        for k in &keys {
            let enc = store.encode_synthetic(k, &params, &seg()).unwrap();
            for i in 0..PER_STREAM {
                store
                    .insert_synthetic(&enc, Time90k(history_start + i * 60 * 90_000))
                    .unwrap();
            }
        }
        store.flush_index().unwrap();
        // The files, as sparse files of the indexed lengths.
        for k in &keys {
            for s in everything(&store, k) {
                std::fs::create_dir_all(s.path.parent().unwrap()).unwrap();
                std::fs::File::create(&s.path)
                    .unwrap()
                    .set_len(s.bytes)
                    .unwrap();
            }
        }
        store.shutdown().await;
    }
    // Behind Vigie's back, in the old history: one file deleted, one cut short, one cut inside
    // the tables box at its end (index format 4 keeps a closed segment's tables in its file).
    let (deleted, cut, torn) = {
        let store = open(&cfg, &clock());
        let a = everything(&store, &keys[0]);
        let b = everything(&store, &keys[1]);
        store.shutdown().await;
        (
            a[10].clone(),
            b[PER_STREAM as usize / 2].clone(),
            b[PER_STREAM as usize / 4].clone(),
        )
    };
    std::fs::OpenOptions::new()
        .write(true)
        .open(&torn.path)
        .unwrap()
        .set_len(torn.bytes - 100)
        .unwrap();
    std::fs::remove_file(&deleted.path).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cut.path)
        .unwrap()
        .set_len(cut.bytes / 2)
        .unwrap();

    let clock = Arc::new(SimulatedClock::new(t0()));
    let opened = Instant::now();
    let store = open(&cfg, &clock);
    let open_ms = opened.elapsed().as_millis();
    // Start-up recovery checked the newest entries only: both findings are still ahead.
    assert_eq!(
        *store.recovery_report(),
        vigie_store::RecoveryReport::default()
    );
    assert!(!store.verification().done);
    // Recording resumes while the history is being verified.
    let h = store.start_writer(key(), (0, 1)).unwrap();
    feed(
        &h,
        stream_a(),
        7,
        Pos {
            media: 0,
            recv: clock.now(),
        },
        100,
    );
    h.wait_handled_for_test();
    let recorded = store.segments(&key(), t0(), t0() + secs(3600)).unwrap();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert!(recorded[0].frames > 0);
    let v = store.verification();
    assert!(
        !v.done,
        "recording resumed before the background verification ended: {v:?}"
    );
    eprintln!("open: {open_ms} ms; verification when recording: {v:?}");

    // The background pass finds both, exactly as start-up recovery would have.
    wait_verified(&store, 300).await;
    let v = store.verification();
    eprintln!("verification done: {v:?}");
    assert_eq!((v.findings, v.errors), (3, 0), "{v:?}");
    assert_eq!(v.report.entries_dropped, 3, "{v:?}");
    // The short files held no complete fragment (sparse: zeros): re-read as orphans, they were
    // deleted.
    assert_eq!(v.report.orphans_deleted, 2, "{v:?}");
    // Checked at start-up: each stream's newest by start, and the store's newest ids.
    let at_start = 4 * RECENT_ENTRIES_PER_STREAM as u64;
    assert!(
        (2 * PER_STREAM as u64 - at_start..=2 * PER_STREAM as u64).contains(&v.entries_checked),
        "{v:?}"
    );
    assert_eq!(store.segment(deleted.id).unwrap(), None);
    assert_eq!(store.segment(cut.id).unwrap(), None);
    assert!(!cut.path.exists());
    assert_eq!(store.segment(torn.id).unwrap(), None);
    assert!(!torn.path.exists());
    assert_eq!(everything(&store, &keys[1]).len(), PER_STREAM as usize - 2);
    // This run's segment was not touched.
    assert_eq!(
        store.segment(recorded[0].id).unwrap().map(|s| s.id),
        Some(recorded[0].id)
    );
    store.shutdown().await;
}

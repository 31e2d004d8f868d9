//! A segment file without an index entry in the old history (what a full disk can leave: a
//! segment abandoned when the index could not be written, then a stop before it was re-read)
//! is found by the background verification after a start, not only in the newest directories
//! start-up recovery looks at: indexed again from its own content. Before, such a file stayed
//! on disk forever, unlisted and never deleted by retention.

mod common;

use common::*;
use vigie_core::{FrameSink, StreamEvent, Time90k};
use vigie_store::{RECENT_ENTRIES_PER_STREAM, index::Index};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_in_the_old_history_is_indexed_by_the_background_pass() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let clock = clock();
    let sessions = RECENT_ENTRIES_PER_STREAM as u64 + 4;
    let segs = {
        let store = open(&cfg, &clock);
        let h = store.start_writer(key(), (0, 1)).unwrap();
        for session in 1..=sessions {
            feed(
                &h,
                stream_a(),
                session,
                Pos {
                    media: 0,
                    recv: t0() + secs(session as i64 * 60),
                },
                50,
            );
            h.push(StreamEvent::SessionEnded {
                session_id: session,
                reason: "test".into(),
            });
        }
        h.wait_handled_for_test();
        drop(h);
        store.shutdown().await;
        let segs = store
            .segments(&key(), Time90k(0), Time90k(i64::MAX / 2))
            .unwrap();
        assert_eq!(segs.len() as u64, sessions, "{segs:?}");
        segs
    };
    // The second segment loses its entry (its file stays): older than every entry start-up
    // recovery checks.
    let victim = &segs[1];
    {
        let ix = Index::open(&dir.path().join("index")).unwrap();
        let e = ix.get_segment(victim.id).unwrap().unwrap();
        ix.remove_segment(&e.head).unwrap();
        ix.db.flush().unwrap();
    }
    assert!(victim.path.exists());

    let store = open(&cfg, &clock);
    assert_eq!(store.recovery_report().orphans_indexed, 0);
    wait_verified(&store, 60).await;
    let v = store.verification();
    assert_eq!(v.report.orphans_indexed, 1, "{v:?}");
    let listed = store
        .segments(&key(), Time90k(0), Time90k(i64::MAX / 2))
        .unwrap();
    assert_eq!(listed.len() as u64, sessions, "{listed:?}");
    let back = listed
        .iter()
        .find(|s| s.id == victim.id)
        .expect("re-indexed");
    assert_eq!((back.start, back.frames), (victim.start, victim.frames));
    store.shutdown().await;
}

/// The files' merge join reads `by_id` in chunks (of 4,096 rows): orphans past the first chunk
/// of a day of 9,000 files, and at its very end, are found; the other files are not taken for
/// orphans (their rows are met in a later chunk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_beyond_the_first_by_id_chunk_of_a_day_are_found() {
    const N: i64 = 9_000;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.verify_entries_per_s = 1_000_000;
    let clock = clock();
    // 9,000 entries 1 s apart, all on 2026-11-28 (18:00–20:30 UTC), each with a sparse file.
    let segs = {
        let store = open(&cfg, &clock);
        let params = vigie_mp4::testutil::avc_params(&[0x67, 0x4d, 0x40, 0x1f], &[0x68], 320, 240);
        let seg = vigie_store::SyntheticSegment {
            start: Time90k(0),
            wall_duration_90k: Some(90_000),
            samples: (0..25)
                .map(|i| vigie_store::SampleInfo {
                    duration_90k: 3600,
                    bytes: 1_000,
                    is_key: i == 0,
                })
                .collect(),
            samples_per_fragment: 25,
            fragment_header_len: 300,
            init_len: 700,
            session_id: 1,
        };
        let enc = store.encode_synthetic(&key(), &params, &seg).unwrap();
        let first = t0() - secs(3 * 3600);
        for i in 0..N {
            let start = first + secs(i);
            let id = store.insert_synthetic(&enc, start).unwrap();
            let (path, _) = store.synthetic_file(&key(), &enc, id, start);
            if i == 0 {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            }
            store
                .create_synthetic_file(&key(), &enc, id, start, false)
                .unwrap();
        }
        store.flush_index().unwrap();
        store.shutdown().await;
        store
            .segments(&key(), Time90k(0), Time90k(i64::MAX / 2))
            .unwrap()
    };
    assert_eq!(segs.len() as i64, N);
    let day = segs[0].path.parent().unwrap().to_owned();
    assert!(segs.iter().all(|s| s.path.parent().unwrap() == day));
    // Entries removed, files left: one in the second chunk, one in the third, none of them
    // among the newest entries start-up recovery checks.
    let victims = [&segs[5_000], &segs[8_500]];
    {
        let ix = Index::open(&dir.path().join("index")).unwrap();
        for v in victims {
            let e = ix.get_segment(v.id).unwrap().unwrap();
            ix.remove_segment(&e.head).unwrap();
        }
        ix.db.flush().unwrap();
    }

    let store = open(&cfg, &clock);
    wait_verified(&store, 120).await;
    let v = store.verification();
    // Sparse files hold no complete fragment: handled as orphans, they are deleted.
    assert_eq!((v.findings, v.errors), (2, 0), "{v:?}");
    assert_eq!(v.report.orphans_deleted, 2, "{v:?}");
    for victim in victims {
        assert!(!victim.path.exists(), "{}", victim.path.display());
    }
    assert_eq!(
        std::fs::read_dir(&day).unwrap().count() as i64,
        N - 2,
        "every other file is still there"
    );
    store.shutdown().await;
}

//! A segment file without an index entry in the old history (what a full disk can leave: a
//! segment abandoned when the index could not be written, then a stop before it was re-read)
//! is found by the background verification after a start, not only in the newest directories
//! start-up recovery looks at: indexed again from its own content. Before, such a file stayed
//! on disk forever, unlisted and never deleted by retention.

mod common;

use std::time::{Duration, Instant};

use common::*;
use vigie_core::{FrameSink, StreamEvent, Time90k};
use vigie_store::{RECENT_ENTRIES_PER_STREAM, index::ByIdRow, index::Index};

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
        let row = ix.by_id.get(victim.id.to_be_bytes()).unwrap().unwrap();
        let row = ByIdRow::decode(&row).unwrap();
        ix.segments.remove(row.key).unwrap();
        ix.by_id.remove(victim.id.to_be_bytes()).unwrap();
        ix.db.flush().unwrap();
    }
    assert!(victim.path.exists());

    let store = open(&cfg, &clock);
    assert_eq!(store.recovery_report().orphans_indexed, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !store.verification().done {
        assert!(Instant::now() < deadline, "{:?}", store.verification());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

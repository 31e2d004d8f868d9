//! Footage from a camera's own recording written into the past of a stream while its live
//! writer runs: same index, no gap left, separate counters, the fill recorded apart.

mod common;

use common::*;
use vigie_core::Time90k;
use vigie_store::EdgeFill;

#[tokio::test]
async fn an_edge_writer_fills_a_gap_behind_the_live_writer() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let clock = clock();
    let store = open(&cfg, &clock);
    let s = stream_a();
    let live = store.start_writer(key(), (0, 1)).unwrap();
    // 20 s live, then the camera's link goes down for 30 s.
    feed(
        &live,
        s,
        1,
        Pos {
            media: 0,
            recv: t0(),
        },
        20 * 25,
    );
    let gap = (t0() + secs(20), t0() + secs(50));
    // A second writer of the same stream while the live one is registered: refused…
    assert!(store.start_writer(key(), (0, 1)).is_err());
    // …but an edge writer is not the stream's writer.
    let edge = store.start_edge_writer(key()).unwrap();
    // Live again (a new session) while the replay of the gap is written.
    let after = feed(
        &live,
        s,
        2,
        Pos {
            media: 0,
            recv: gap.1,
        },
        5 * 25,
    );
    feed(
        &edge,
        s,
        3,
        Pos {
            media: 0,
            recv: gap.0,
        },
        30 * 25,
    );
    feed(&live, s, 2, after, 15 * 25);
    edge.wait_handled_for_test();
    let edge_stats = edge.stats();
    drop(edge);
    store
        .record_edge_fill(&EdgeFill {
            camera: key().camera,
            stream: key().stream,
            start: gap.0,
            end: gap.1,
            frames: 750,
            recording: "rec-main".into(),
            filled_at: t0() + secs(60),
        })
        .unwrap();
    live.wait_handled_for_test();
    let live_stats = live.stats();
    drop(live);
    store.shutdown().await;

    // The live writer's counters are the live frames only (those of the open fragment are
    // counted when written); the edge writer's its own.
    assert!(
        (900..=40 * 25).contains(&live_stats.frames),
        "{live_stats:?}"
    );
    assert!(
        (700..=30 * 25).contains(&edge_stats.frames),
        "{edge_stats:?}"
    );
    assert_eq!(edge_stats.dropped_frames + live_stats.dropped_frames, 0);
    // One span: the gap is filled, in the same index.
    let spans = store.spans(&key(), t0(), t0() + secs(3600)).unwrap();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!((spans[0].start, spans[0].end), (t0(), t0() + secs(70)));
    let in_gap = store.segments(&key(), gap.0, gap.1).unwrap();
    let filled: Vec<_> = in_gap
        .iter()
        .filter(|g| g.start >= gap.0 && g.end() <= gap.1)
        .collect();
    assert_eq!(filled.len(), 1, "{in_gap:#?}");
    assert_eq!((filled[0].start, filled[0].end()), gap);
    assert_eq!(filled[0].frames, 750);
    assert_valid(&filled[0].path, 750);
    let all = store.segments(&key(), t0(), t0() + secs(70)).unwrap();
    assert_eq!(all.iter().map(|g| g.frames).sum::<u32>(), 70 * 25);
    // A playback of the whole hour is one plan over 70 s of footage.
    let plan = store
        .playback_plan(
            &key(),
            t0(),
            t0() + secs(70),
            vigie_store::GapPolicy::Refuse,
        )
        .unwrap();
    let input = lazy_equals_materialised(&plan);
    assert_eq!(input.samples.len(), 70 * 25);
    let fills = store
        .edge_fills(&key(), t0(), Time90k(t0().0 + 3600 * 90_000))
        .unwrap();
    assert_eq!(fills.len(), 1);
    assert_eq!((fills[0].start, fills[0].end), gap);
}

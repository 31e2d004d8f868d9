//! Writer, listing and segmentation tests on real H.264 frames, validated with ffmpeg.

mod common;

use std::time::Duration;

use common::*;
use vigie_core::{FrameSink, StreamEvent, Time90k};
use vigie_store::SegmentInfo;

fn all(store: &vigie_store::Store) -> Vec<SegmentInfo> {
    store
        .segments(&key(), Time90k(0), Time90k(i64::MAX / 2))
        .unwrap()
}

#[tokio::test]
async fn hundred_fifty_seconds_make_three_valid_contiguous_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let clock = clock();
    let store = open(&cfg, &clock);
    let h = store.start_writer(key(), (0, 1)).unwrap();
    let s = stream_a();
    feed(
        &h,
        s,
        1,
        Pos {
            media: 1_000,
            recv: t0(),
        },
        150 * 25,
    );
    store.shutdown().await;

    let segs = all(&store);
    assert_eq!(segs.len(), 3, "{segs:#?}");
    assert_eq!(segs[0].start, t0());
    let secs_of: Vec<f64> = segs
        .iter()
        .map(|s| s.duration_90k as f64 / 90_000.0)
        .collect();
    assert!(
        (secs_of[0] - 60.0).abs() < 0.1
            && (secs_of[1] - 60.0).abs() < 0.1
            && (secs_of[2] - 30.0).abs() < 0.1,
        "{secs_of:?}"
    );
    assert_eq!(segs.iter().map(|s| s.frames).sum::<u32>(), 150 * 25);
    assert_eq!(segs[0].end_reason.as_deref(), Some("rotation"));
    assert_eq!(segs[1].end_reason.as_deref(), Some("rotation"));
    assert_eq!(segs[2].end_reason.as_deref(), Some("shutdown"));
    for w in segs.windows(2) {
        assert_eq!(
            w[1].start,
            w[0].end(),
            "segments of one session are contiguous"
        );
    }
    for seg in &segs {
        assert!(!seg.open);
        assert_eq!((seg.width, seg.height), (320, 240));
        assert!((seg.fps - 25.0).abs() < 0.01, "{}", seg.fps);
        assert_eq!(seg.key_frames, seg.frames / 25);
        assert_eq!(std::fs::metadata(&seg.path).unwrap().len(), seg.bytes);
        assert_valid(&seg.path, seg.frames);
    }

    // Listing: one range scan per window; spans merge contiguous segments and clip.
    let mid = store
        .segments(&key(), t0() + secs(70), t0() + secs(80))
        .unwrap();
    assert_eq!(
        mid.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![segs[1].id]
    );
    let edge = store
        .segments(&key(), t0() + secs(59), t0() + secs(61))
        .unwrap();
    assert_eq!(edge.len(), 2);
    assert!(
        store
            .segments(&key(), t0() + secs(200), t0() + secs(300))
            .unwrap()
            .is_empty()
    );
    let spans = store
        .spans(&key(), t0() - secs(3600), t0() + secs(3600))
        .unwrap();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].start, t0());
    assert!((spans[0].end - t0()).as_secs_f64() - 150.0 < 0.1);
    let clipped = store
        .spans(&key(), t0() + secs(10), t0() + secs(20))
        .unwrap();
    assert_eq!(
        clipped,
        vec![vigie_store::Span {
            start: t0() + secs(10),
            end: t0() + secs(20)
        }]
    );

    // Index: sample tables decode to what was written; measure bytes per frame.
    let mut table_bytes = 0;
    for seg in &segs {
        let ix = store.segment_index(seg.id).unwrap().unwrap();
        assert_eq!(ix.samples.len() as u32, seg.frames);
        assert_eq!(
            ix.samples
                .iter()
                .map(|s| i64::from(s.duration_90k))
                .sum::<i64>(),
            seg.media_duration_90k
        );
        let parsed =
            vigie_mp4::parse_segment(&mut std::fs::File::open(&seg.path).unwrap()).unwrap();
        let offsets: Vec<u64> = parsed.fragments.iter().map(|f| f.offset).collect();
        assert_eq!(
            ix.fragments.iter().map(|f| f.offset).collect::<Vec<_>>(),
            offsets
        );
        assert_eq!(
            ix.samples,
            parsed
                .fragments
                .iter()
                .flat_map(|f| f.samples.clone())
                .collect::<Vec<_>>()
        );
        table_bytes += vigie_store::sampletable::encode_samples(&ix.samples).len();
        let params = store.params(seg.params_id).unwrap().unwrap();
        assert_eq!(params, *stream_a().params);
    }
    // The counts the writer stored in each entry's head (used to lay out playback files without
    // decoding the tables) match the tables: a file across the three segments, built from the
    // heads, equals the one built from the decoded tables.
    let plan = store
        .playback_plan(
            &key(),
            t0() + secs(1),
            t0() + secs(149),
            vigie_store::GapPolicy::Refuse,
        )
        .unwrap();
    assert_eq!(plan.input.pieces.len(), 3);
    let full = common::lazy_equals_materialised(&plan);
    assert!(full.samples.len() > 3600);
    let per_frame = table_bytes as f64 / 3750.0;
    println!("index sample table: {table_bytes} bytes for 3750 frames = {per_frame:.2} B/frame");
    assert!(per_frame <= 4.0);
    let stats = store.stats();
    let w = &stats.writers[&key()];
    assert_eq!((w.frames, w.segments, w.overflows), (3750, 3, 0));
    assert!(stats.total_bytes > 0);
}

#[tokio::test]
async fn staggered_writer_rotates_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&config(dir.path()), &clock());
    let h = store.start_writer(key(), (1, 2)).unwrap();
    feed(
        &h,
        stream_a(),
        1,
        Pos {
            media: 0,
            recv: t0(),
        },
        100 * 25,
    );
    store.shutdown().await;
    let d: Vec<i64> = all(&store)
        .iter()
        .map(|s| (s.duration_90k as f64 / 90_000.0).round() as i64)
        .collect();
    assert_eq!(d, vec![30, 60, 10]);
}

#[tokio::test]
async fn parameter_change_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&config(dir.path()), &clock());
    let h = store.start_writer(key(), (0, 1)).unwrap();
    let p = feed(
        &h,
        stream_a(),
        1,
        Pos {
            media: 0,
            recv: t0(),
        },
        250,
    );
    feed(&h, stream_b(), 1, p, 250);
    store.shutdown().await;
    let segs = all(&store);
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[0].end_reason.as_deref(), Some("params-change"));
    assert_eq!((segs[1].width, segs[1].height), (352, 288));
    assert_ne!(segs[0].params_id, segs[1].params_id);
    assert_eq!(segs[1].start, segs[0].end());
    for s in &segs {
        assert_eq!(s.frames, 250);
        assert_valid(&s.path, s.frames);
    }
    assert_eq!(store.spans(&key(), t0(), t0() + secs(60)).unwrap().len(), 1);
}

#[tokio::test]
async fn timestamp_jumps_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&config(dir.path()), &clock());
    let h = store.start_writer(key(), (0, 1)).unwrap();
    // Backwards jump, then a forward jump of 20 s; the host clock runs on.
    let p = feed(
        &h,
        stream_a(),
        1,
        Pos {
            media: 500_000,
            recv: t0(),
        },
        250,
    );
    let p = feed(
        &h,
        stream_a(),
        1,
        Pos {
            media: 0,
            recv: p.recv,
        },
        250,
    );
    feed(
        &h,
        stream_a(),
        1,
        Pos {
            media: p.media + 20 * 90_000,
            recv: p.recv,
        },
        250,
    );
    store.shutdown().await;
    let segs = all(&store);
    assert_eq!(segs.len(), 3, "{segs:#?}");
    assert_eq!(segs[0].end_reason.as_deref(), Some("ts-jump"));
    assert_eq!(segs[1].end_reason.as_deref(), Some("ts-jump"));
    for s in &segs {
        assert_eq!(s.frames, 250);
        assert_eq!(s.media_duration_90k, 250 * 3600);
        assert_valid(&s.path, s.frames);
    }
    // Wall clock follows the host: no gap, since frames kept arriving.
    assert_eq!(store.spans(&key(), t0(), t0() + secs(60)).unwrap().len(), 1);
}

#[tokio::test]
async fn session_end_and_new_session_give_two_spans() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&config(dir.path()), &clock());
    let h = store.start_writer(key(), (0, 1)).unwrap();
    let p = feed(
        &h,
        stream_a(),
        1,
        Pos {
            media: 0,
            recv: t0(),
        },
        250,
    );
    h.push(StreamEvent::SessionEnded {
        session_id: 1,
        reason: "camera gone".into(),
    });
    // New session 20 s later; its first 10 frames are not key frames and are discarded.
    let s = stream_a();
    let mut shifted = s.clone();
    shifted.frames.rotate_left(15);
    feed(
        &h,
        &shifted,
        2,
        Pos {
            media: 7,
            recv: p.recv + secs(20),
        },
        260,
    );
    store.shutdown().await;
    let segs = all(&store);
    assert_eq!(segs.len(), 2);
    assert_eq!(
        segs[0].end_reason.as_deref(),
        Some("session-ended: camera gone")
    );
    assert_eq!(segs[1].frames, 250);
    assert_eq!(store.stats().writers[&key()].discarded_frames, 10);
    let spans = store.spans(&key(), t0(), t0() + secs(3600)).unwrap();
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert_eq!(spans[0].end, t0() + secs(10));
    // The second session's start is the minimum of recv − elapsed over its first fragment:
    // its first recorded (key) frame was received 10 frames after the session's first frame.
    assert_eq!(
        spans[1].start,
        t0() + secs(30) + vigie_core::Duration90k(10 * 3600)
    );
    for s in &segs {
        assert_valid(&s.path, s.frames);
    }
}

#[tokio::test]
async fn writer_overflow_ends_segment_and_resumes_at_key_frame() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.recording.writer_queue_bytes = vigie_core::config::ByteSize(50_000);
    let store = open(&cfg, &clock());
    let h = store.start_writer(key(), (0, 1)).unwrap();
    let s = stream_a();
    let mut p = Pos {
        media: 0,
        recv: t0(),
    };
    // 2 s paced, then the disk stalls while 4 s arrive at once, then 4 s paced.
    let paced = |p: Pos, first: usize| {
        let mut p = p;
        for i in 0..100 {
            p = feed_from(&h, s, 1, p, 1, first + i);
            // The writer drains its queue in batches; `push` wakes it past half the limit.
            while h.stats().queue_bytes > 25_000 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        p
    };
    p = paced(p, 0);
    h.stall_for_test(Duration::from_millis(300));
    std::thread::sleep(Duration::from_millis(20));
    for i in 0..100 {
        let (data, is_key) = &s.frames[i];
        h.push(StreamEvent::Frame(vigie_core::Frame {
            data: data.clone(),
            is_key: *is_key,
            media_90k: p.media,
            recv: p.recv,
            params: s.params.clone(),
            session_id: 1,
        }));
        p = Pos {
            media: p.media + 3600,
            recv: p.recv + vigie_core::Duration90k(3600),
        };
    }
    assert!(h.stats().overflows == 1, "{:?}", h.stats());
    std::thread::sleep(Duration::from_millis(400));
    paced(p, 0);
    store.shutdown().await;
    let st = store.stats().writers[&key()].clone();
    assert_eq!(st.overflows, 1, "{st:?}");
    assert!(st.dropped_frames > 0);
    let segs = all(&store);
    assert!(segs.len() >= 2, "{segs:#?}");
    assert_eq!(segs[0].end_reason.as_deref(), Some("writer-overflow"));
    assert_eq!(segs.last().unwrap().end_reason.as_deref(), Some("shutdown"));
    let recorded: u64 = segs.iter().map(|s| u64::from(s.frames)).sum();
    assert_eq!(recorded + st.dropped_frames + st.discarded_frames, 300);
    for s in &segs {
        assert_valid(&s.path, s.frames);
    }
    // The gap is visible.
    assert_eq!(store.spans(&key(), t0(), t0() + secs(60)).unwrap().len(), 2);
}

#[tokio::test]
async fn dropping_the_handle_closes_and_a_new_writer_can_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&config(dir.path()), &clock());
    let h = store.start_writer(key(), (0, 1)).unwrap();
    assert!(matches!(
        store.start_writer(key(), (0, 1)),
        Err(vigie_store::StoreError::AlreadyRecording { .. })
    ));
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
    drop(h);
    let h = store.start_writer(key(), (0, 1)).unwrap();
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
    let segs = all(&store);
    assert_eq!(segs.len(), 2);
    assert!(
        segs.iter()
            .all(|s| s.end_reason.as_deref() == Some("shutdown") && s.frames == 100)
    );
    assert!(matches!(
        store.start_writer(key(), (0, 1)),
        Err(vigie_store::StoreError::ShuttingDown)
    ));
}

/// Index cost on a denser stream (720p30, one IDR per second), as the Moonfire comparison.
#[test]
fn index_bytes_per_frame_720p() {
    let dir = tempfile::tempdir().unwrap();
    let s = vigie_mp4::testutil::generate_h264(dir.path(), 1280, 720, 30, 30, 10);
    let samples: Vec<vigie_store::SampleInfo> = s
        .frames
        .iter()
        .map(|(d, k)| vigie_store::SampleInfo {
            duration_90k: 3000,
            bytes: d.len() as u32,
            is_key: *k,
        })
        .collect();
    let bytes = vigie_store::sampletable::encode_samples(&samples).len();
    let kbps = s.frames.iter().map(|(d, _)| d.len()).sum::<usize>() as f64 * 8.0 / 10.0 / 1000.0;
    let per = bytes as f64 / samples.len() as f64;
    println!(
        "720p30 at {kbps:.0} kbit/s: sample table {bytes} bytes for {} frames = {per:.2} B/frame",
        samples.len()
    );
    assert!(per <= 4.0);
}

/// A camera whose clock runs 1000 ppm fast: wall durations are slewed by the 500 ppm bound, and
/// segments stay contiguous.
#[tokio::test]
async fn drift_is_slewed_within_500_ppm() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&config(dir.path()), &clock());
    let h = store.start_writer(key(), (0, 1)).unwrap();
    let s = stream_a();
    for i in 0..(150 * 25) {
        let (data, is_key) = &s.frames[i % s.frames.len()];
        while h.stats().queue_bytes > 4 << 20 {
            std::thread::sleep(Duration::from_millis(1));
        }
        h.push(StreamEvent::Frame(vigie_core::Frame {
            data: data.clone(),
            is_key: *is_key,
            media_90k: i as i64 * 3600,
            recv: t0() + vigie_core::Duration90k(i as i64 * 3600 * 999 / 1000),
            params: s.params.clone(),
            session_id: 1,
        }));
    }
    store.shutdown().await;
    let segs = all(&store);
    assert_eq!(segs.len(), 3, "{segs:#?}");
    for seg in &segs {
        let slew = seg.duration_90k - seg.media_duration_90k;
        assert_eq!(slew, -seg.media_duration_90k * 500 / 1_000_000, "{seg:?}");
    }
    for w in segs.windows(2) {
        assert_eq!(w[1].start, w[0].end());
    }
}

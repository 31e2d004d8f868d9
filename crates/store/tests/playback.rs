//! Playback planning on synthetic index entries: mid-GOP starts (edit list), end clipping,
//! gaps (refused or skipped), no recording, several segments.

mod common;

use std::sync::Arc;

use common::lazy_equals_materialised;

use vigie_core::{SimulatedClock, StreamKey, Time90k};
use vigie_mp4::SampleInfo;
use vigie_store::{GapPolicy, PlaybackError, Store, StoreConfig, SyntheticSegment};

const T0: i64 = 1_795_899_600 * 90_000;

fn store(dir: &std::path::Path) -> Store {
    Store::open(
        StoreConfig {
            data_dir: dir.to_owned(),
            recording: Default::default(),
            min_free_bytes: 0,
            index_cache_bytes: vigie_store::index::DEFAULT_CACHE_BYTES,
            verify_entries_per_s: vigie_store::verify::DEFAULT_VERIFY_ENTRIES_PER_S,
        },
        Arc::new(SimulatedClock::new(Time90k(T0))),
    )
    .unwrap()
}

/// 10 s at 25 fps, GOP 50, fragments of 25 frames.
fn seg(start: i64) -> SyntheticSegment {
    SyntheticSegment {
        start: Time90k(start),
        wall_duration_90k: None,
        samples: (0..250)
            .map(|i| SampleInfo {
                duration_90k: 3600,
                bytes: if i % 50 == 0 { 10_000 } else { 1_000 + i },
                is_key: i % 50 == 0,
            })
            .collect(),
        samples_per_fragment: 25,
        fragment_header_len: 300,
        init_len: 700,
        session_id: 1,
    }
}

fn key() -> StreamKey {
    StreamKey::new("cam", "main")
}

#[test]
fn plans_mid_gop_start_end_clip_and_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let params = vigie_mp4::testutil::avc_params(&[0x67, 0x4d, 0x40, 0x1f], &[0x68], 320, 240);
    let enc = s.encode_synthetic_inline(&key(), &params, &seg(0)).unwrap();
    // Three contiguous segments, then a 60 s gap, then one more.
    let ids: Vec<u64> = [0, 10, 20, 90]
        .iter()
        .map(|&sec| {
            s.insert_synthetic(&enc, Time90k(T0 + sec * 90_000))
                .unwrap()
        })
        .collect();

    // Inside one segment, starting mid-GOP at frame 60 (2.4 s) + 1 ms, ending at 5 s.
    let start = Time90k(T0 + 60 * 3600 + 90);
    let end = Time90k(T0 + 5 * 90_000);
    let p = s
        .playback_plan(&key(), start, end, GapPolicy::Refuse)
        .unwrap();
    assert_eq!(p.segments.len(), 1);
    assert_eq!(p.segments[0].id, ids[0]);
    assert_eq!(
        p.segments[0].first_sample, 50,
        "starts at the key frame before"
    );
    // Frames 50..125 (frame 124 starts at 4.96 s < 5 s).
    assert_eq!(samples(&p), 75);
    assert_eq!(p.input.skip_90k, 10 * 3600, "frame 60 is shown at start");
    assert_eq!(p.input.duration_90k, (end.0 - start.0) as u64 + 90);
    // Chunks follow fragments: frames 50..75, 75..100, 100..125.
    let full = lazy_equals_materialised(&p);
    assert_eq!(full.chunks.len(), 3);
    let payload = |r: std::ops::Range<u32>| -> u64 {
        r.map(|i| {
            if i % 50 == 0 {
                10_000
            } else {
                1_000 + u64::from(i)
            }
        })
        .sum()
    };
    let frag2_offset = 700 + 2 * 300 + payload(0..50);
    assert_eq!(full.chunks[0].offset, frag2_offset + 300);
    assert_eq!(
        full.chunks[1].offset,
        frag2_offset + 300 + payload(50..75) + 300
    );
    assert_eq!(p.pieces.len(), 1);
    assert_eq!(p.pieces[0].wall_start, Time90k(start.0 - 90));

    // Across the three contiguous segments.
    let p = s
        .playback_plan(
            &key(),
            Time90k(T0 + 5 * 90_000),
            Time90k(T0 + 25 * 90_000),
            GapPolicy::Refuse,
        )
        .unwrap();
    assert_eq!(p.spans.len(), 1);
    assert_eq!(p.segments.len(), 3);
    assert_eq!(
        p.input.sample_entries.len(),
        1,
        "one description for one params id"
    );
    assert_eq!(p.input.files.len(), 3);
    assert_eq!(p.input.duration_90k, 20 * 90_000);
    assert_eq!(p.input.skip_90k, 25 * 3600); // 5 s = frame 125, key frame at 100
    assert_eq!(samples(&p), 150 + 250 + 125);
    // The middle segment is whole: laid out from its index head alone, and the lazily generated
    // tables equal those of the fully decoded plan, byte for byte.
    assert_eq!(p.input.pieces[1].summary.samples, 250);
    lazy_equals_materialised(&p);

    // The gap is refused by default, concatenated with gaps=skip.
    let (a, b) = (Time90k(T0 + 25 * 90_000), Time90k(T0 + 95 * 90_000));
    match s.playback_plan(&key(), a, b, GapPolicy::Refuse) {
        Err(PlaybackError::Gaps { spans }) => {
            assert_eq!(spans.len(), 2);
            assert_eq!(spans[0].end, Time90k(T0 + 30 * 90_000));
            assert_eq!(spans[1].start, Time90k(T0 + 90 * 90_000));
        }
        other => panic!("{other:?}"),
    }
    let p = s.playback_plan(&key(), a, b, GapPolicy::Skip).unwrap();
    assert_eq!(p.spans.len(), 2);
    assert_eq!(p.input.duration_90k, 10 * 90_000);
    assert_eq!(p.pieces.len(), 2);
    assert_eq!(p.pieces[1].presentation_90k, 5 * 90_000);
    assert_eq!(p.pieces[1].wall_start, Time90k(T0 + 90 * 90_000));
    lazy_equals_materialised(&p);

    // Nothing recorded there; unknown stream.
    for (k, a, b) in [
        (key(), T0 + 40 * 90_000, T0 + 80 * 90_000),
        (key(), T0 - 100 * 90_000, T0 - 50 * 90_000),
        (StreamKey::new("cam", "other"), T0, T0 + 90_000),
    ] {
        assert!(matches!(
            s.playback_plan(&k, Time90k(a), Time90k(b), GapPolicy::Skip),
            Err(PlaybackError::NoRecording)
        ));
    }
}

fn samples(p: &vigie_store::PlaybackPlan) -> u32 {
    p.input.pieces.iter().map(|p| p.summary.samples).sum()
}

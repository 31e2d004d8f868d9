//! Shared helpers of the store's integration tests: real H.264 frames (ffmpeg), a store in a
//! temporary directory, a paced feeder.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use vigie_core::config::{ByteSize, RecordingConfig};
use vigie_core::{Clock, Frame, FrameSink, SimulatedClock, StreamEvent, StreamKey, Time90k};
use vigie_mp4::testutil::{TestStream, generate_h264};
use vigie_store::{Store, StoreConfig, WriterHandle};

/// 4 s of 320x240 at 25 fps, one IDR per second (cached per test binary).
pub fn stream_a() -> &'static TestStream {
    static S: OnceLock<TestStream> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        generate_h264(dir.path(), 320, 240, 25, 25, 4)
    })
}

/// Same at 352x288: different parameters.
pub fn stream_b() -> &'static TestStream {
    static S: OnceLock<TestStream> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        generate_h264(dir.path(), 352, 288, 25, 25, 4)
    })
}

pub fn t0() -> Time90k {
    Time90k::parse_rfc3339("2026-11-28T21:00:00Z").unwrap()
}

pub fn key() -> StreamKey {
    StreamKey::new("cam-1", "main")
}

pub fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        data_dir: dir.to_owned(),
        recording: RecordingConfig {
            segment_seconds: 60,
            fragment_ms: 1000,
            flush_interval_ms: 1000,
            index_interval_ms: 10_000,
            writer_queue_bytes: ByteSize(16 << 20),
        },
        min_free_bytes: 0,
        index_cache_bytes: vigie_store::index::DEFAULT_CACHE_BYTES,
        verify_entries_per_s: vigie_store::verify::DEFAULT_VERIFY_ENTRIES_PER_S,
    }
}

pub fn clock() -> Arc<SimulatedClock> {
    Arc::new(SimulatedClock::new(t0()))
}

pub fn open(cfg: &StoreConfig, clock: &Arc<SimulatedClock>) -> Store {
    Store::open(cfg.clone(), clock.clone() as Arc<dyn Clock>).unwrap()
}

/// Waits until the background verification is done (after a migration it first empties the
/// old index trees), failing the test after `timeout_s`.
pub async fn wait_verified(store: &Store, timeout_s: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(timeout_s);
    while !store.verification().done {
        assert!(
            std::time::Instant::now() < deadline,
            "verification not done: {:?}",
            store.verification()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where a feed ended, to continue it.
#[derive(Copy, Clone, Debug)]
pub struct Pos {
    pub media: i64,
    pub recv: Time90k,
}

/// Pushes `n` frames of `s` (looped from its first frame) at 25 fps: media time from
/// `pos.media`, receive time from `pos.recv` plus a little jitter (never negative, zero on the
/// first frame). Paces itself on the writer's queue so it never overflows.
pub fn feed(h: &WriterHandle, s: &TestStream, session: u64, pos: Pos, n: usize) -> Pos {
    feed_from(h, s, session, pos, n, 0)
}

/// [`feed`] starting at frame `first` of the clip.
pub fn feed_from(
    h: &WriterHandle,
    s: &TestStream,
    session: u64,
    pos: Pos,
    n: usize,
    first: usize,
) -> Pos {
    for i in 0..n {
        let (data, is_key) = &s.frames[(first + i) % s.frames.len()];
        let off = i as i64 * 3600;
        let jitter = if i == 0 {
            0
        } else {
            ((i as i64 * 37) % 5) * 200
        };
        while h.stats().queue_bytes > 4 << 20 {
            std::thread::sleep(Duration::from_millis(1));
        }
        h.push(StreamEvent::Frame(Frame {
            data: data.clone(),
            is_key: *is_key,
            media_90k: pos.media + off,
            recv: pos.recv + vigie_core::Duration90k(off + jitter),
            params: s.params.clone(),
            session_id: session,
        }));
    }
    let d = n as i64 * 3600;
    Pos {
        media: pos.media + d,
        recv: pos.recv + vigie_core::Duration90k(d),
    }
}

pub fn secs(s: i64) -> vigie_core::Duration90k {
    vigie_core::Duration90k::from_secs(s)
}

/// Runs ffmpeg + ffprobe on a segment file and checks it decodes with `frames` frames.
pub fn assert_valid(path: &Path, frames: u32) {
    let v = vigie_mp4::testutil::validate_with_ffmpeg(path);
    assert!(
        v.ffmpeg_ok,
        "{}: ffmpeg: {}",
        path.display(),
        v.ffmpeg_stderr
    );
    assert_eq!(v.frames, Some(u64::from(frames)), "{}", path.display());
}

/// Builds `p` lazily and from its fully decoded tables, and checks the two files' headers are
/// identical (so the counts stored in index heads match the tables); returns the decoded input.
pub fn lazy_equals_materialised(p: &vigie_store::PlaybackPlan) -> vigie_mp4::progressive::Input {
    let full = p.materialise().unwrap();
    let lazy = p.clone().build().unwrap();
    let eager = vigie_mp4::progressive::build(&full).unwrap();
    assert_eq!(lazy.total_len, eager.total_len);
    assert_eq!(lazy.header_len, eager.header_len);
    assert_eq!(
        lazy.read_to_vec(0, lazy.header_len).unwrap(),
        eager.read_to_vec(0, eager.header_len).unwrap()
    );
    full
}

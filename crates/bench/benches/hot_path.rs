//! Criterion micro-benchmarks of the recording hot path (see docs/BENCHMARKS.md, "Ingest"):
//!
//! * `writer/…`: frames → segment file through the real [`vigie_store::WriterHandle`] (writer
//!   thread, fragments, fdatasync, index updates), on tmpfs (`/dev/shm`) when present so the
//!   disk does not dominate;
//! * `index/…`: the per-segment sample table (encode, decode) and the `SegmentEntry` postcard
//!   encoding rewritten at each index update;
//! * `mp4/…`: `fragment_header` (per fragment), `init_segment` (per segment) and the virtual
//!   progressive MP4 header (`moov`) for 1 h and 24 h of a 25 fps stream.
//!
//! Run: `cargo bench -p vigie-bench --bench hot_path` (add `-- --quick` for a fast pass).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigie_core::config::{ByteSize, RecordingConfig};
use vigie_core::{Clock, Frame, FrameSink, SimulatedClock, StreamEvent, StreamKey, Time90k};
use vigie_mp4::testutil::{TestStream, annexb_to_stream};
use vigie_mp4::{SampleInfo, SegmentMeta};
use vigie_store::{Store, StoreConfig};

/// The 2 Mbit/s 720p benchmark fixture (4 s, GOP 50), as MP4-form frames.
fn fixture() -> TestStream {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/h264-2mbps-25fps.h264");
    let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    annexb_to_stream(&data, 1280, 720, 25)
}

/// A minute of samples shaped like the fixture (sizes repeat).
fn samples(s: &TestStream, n: usize) -> Vec<SampleInfo> {
    (0..n)
        .map(|i| {
            let (d, k) = &s.frames[i % s.frames.len()];
            SampleInfo {
                duration_90k: 3600,
                bytes: d.len() as u32,
                is_key: *k,
            }
        })
        .collect()
}

fn writer(c: &mut Criterion) {
    let s = fixture();
    let base = if Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::tempdir_in(&base).unwrap();
    let cfg = StoreConfig {
        data_dir: dir.path().to_owned(),
        recording: RecordingConfig {
            segment_seconds: 60,
            fragment_ms: 1000,
            flush_interval_ms: 1000,
            index_interval_ms: 10_000,
            writer_queue_bytes: ByteSize(64 << 20),
        },
        min_free_bytes: 0,
        index_cache_bytes: vigie_store::index::DEFAULT_CACHE_BYTES,
        verify_entries_per_s: vigie_store::verify::DEFAULT_VERIFY_ENTRIES_PER_S,
    };
    let t0 = Time90k::parse_rfc3339("2026-11-28T21:00:00Z").unwrap();
    let clock = Arc::new(SimulatedClock::new(t0));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = Store::open(cfg, clock.clone() as Arc<dyn Clock>).unwrap();
    let key = StreamKey::new("cam-1", "main");
    let h = store.start_writer(key, (0, 1)).unwrap();
    const N: u64 = 250; // 10 s: 10 fragments, 10 syncs + index updates, one segment
    let mut media = 0i64;
    let mut session = 0u64;
    let mut g = c.benchmark_group("writer");
    g.throughput(Throughput::Elements(N));
    g.sample_size(20);
    g.bench_function("push_250_frames_2mbps_to_closed_segment", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                session += 1;
                let target = h.stats().frames + N;
                let start = Instant::now();
                for i in 0..N as usize {
                    let (data, is_key) = &s.frames[i % s.frames.len()];
                    h.push(StreamEvent::Frame(Frame {
                        data: data.clone(),
                        is_key: *is_key,
                        media_90k: media,
                        recv: t0 + vigie_core::Duration90k(media),
                        params: s.params.clone(),
                        session_id: session,
                    }));
                    media += 3600;
                }
                // Ends the segment: the writer writes the last fragment, the trailer, syncs.
                h.push(StreamEvent::SessionEnded {
                    session_id: session,
                    reason: "bench".into(),
                });
                while h.stats().frames < target || h.stats().recording {
                    std::thread::yield_now();
                }
                total += start.elapsed();
                media += 90_000 * 20; // a gap: next iteration is a new run
            }
            total
        })
    });
    g.finish();
    drop(h);
    rt.block_on(store.shutdown());
}

fn index(c: &mut Criterion) {
    let s = fixture();
    let minute = samples(&s, 1500);
    let table = vigie_store::sampletable::encode_samples(&minute);
    let mut g = c.benchmark_group("index");
    g.throughput(Throughput::Elements(minute.len() as u64));
    g.bench_function("sample_table_encode_60s", |b| {
        b.iter(|| vigie_store::sampletable::encode_samples(std::hint::black_box(&minute)))
    });
    g.bench_function("sample_table_decode_60s", |b| {
        b.iter(|| vigie_store::sampletable::decode_samples(std::hint::black_box(&table)))
    });
    // The journal form (v1): what the writer appends to, and what entries written before index
    // format 3 hold.
    let table_v1 = vigie_store::sampletable::encode_samples_v1(&minute);
    g.bench_function("sample_table_encode_60s_v1", |b| {
        b.iter(|| vigie_store::sampletable::encode_samples_v1(std::hint::black_box(&minute)))
    });
    g.bench_function("sample_table_decode_60s_v1", |b| {
        b.iter(|| vigie_store::sampletable::decode_samples(std::hint::black_box(&table_v1)))
    });
    let entry = vigie_store::index::SegmentEntry {
        head: vigie_store::index::EntryHead {
            id: 1,
            stream_id: 1,
            start_90k: 0,
            wall_duration_90k: 1500 * 3600,
            media_duration_90k: 1500 * 3600,
            bytes: 15_000_000,
            frames: 1500,
            key_frames: 30,
            width: 1280,
            height: 720,
            codec: vigie_core::Codec::H264,
            params_id: 1,
            session_id: 1,
            open: true,
            end_reason: None,
            counts: vigie_store::sampletable::TableCounts::default(),
        },
        init_len: 800,
        sample_table: table.clone(),
        fragment_table: vec![0; 180],
    };
    g.bench_function("segment_entry_postcard_encode_60s", |b| {
        b.iter(|| postcard::to_allocvec(std::hint::black_box(&entry)).unwrap())
    });
    g.finish();
    eprintln!(
        "index: sample table {} B for {} frames = {:.2} B/frame",
        table.len(),
        minute.len(),
        table.len() as f64 / minute.len() as f64
    );
}

fn mp4(c: &mut Criterion) {
    let s = fixture();
    let fragment = samples(&s, 25);
    let meta = SegmentMeta {
        camera: "cam-1".into(),
        stream: "main".into(),
        segment_id: 1,
        start_90k: 0,
        session_id: 1,
    };
    let mut g = c.benchmark_group("mp4");
    g.bench_function("fragment_header_25_samples", |b| {
        b.iter(|| vigie_mp4::fragment_header(7, 90_000, std::hint::black_box(&fragment)))
    });
    g.bench_function("init_segment", |b| {
        b.iter(|| vigie_mp4::init_segment(&s.params, std::hint::black_box(&meta)))
    });
    for (hours, sample_size) in [(1u64, 50), (24, 10)] {
        let input = progressive_input(&s, hours);
        g.throughput(Throughput::Elements(input.samples.len() as u64));
        g.sample_size(sample_size);
        // The whole `moov`: layout, then every table rendered (what a full read of the header
        // costs, spread over the response).
        g.bench_function(format!("progressive_moov_{hours}h"), |b| {
            b.iter(|| {
                let v = vigie_mp4::progressive::build(std::hint::black_box(&input)).unwrap();
                v.read_to_vec(0, v.header_len).unwrap()
            })
        });
        // The layout alone from per-piece summaries (what a request costs before its first
        // byte; pieces come from the index heads).
        let (lazy, source) = vigie_mp4::progressive::to_pieces(&input);
        let source = std::sync::Arc::new(source);
        g.bench_function(format!("progressive_layout_{hours}h"), |b| {
            b.iter(|| {
                vigie_mp4::progressive::build_lazy(
                    std::hint::black_box(lazy.clone()),
                    source.clone(),
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

/// `hours` of 25 fps in 60 s segment files of 1 s fragments (one chunk per fragment).
fn progressive_input(s: &TestStream, hours: u64) -> vigie_mp4::progressive::Input {
    use vigie_mp4::progressive::{Chunk, Input};
    let n = (hours * 3600 * 25) as usize;
    let samples = samples(s, n);
    let mut chunks = Vec::with_capacity(n / 25);
    let mut files = Vec::new();
    let mut offset = 0u64;
    for (i, frag) in samples.chunks(25).enumerate() {
        if i % 60 == 0 {
            files.push(format!("/data/rec/{i:012}.mp4").into());
            offset = 800;
        }
        offset += 200;
        chunks.push(Chunk {
            file: (files.len() - 1) as u32,
            offset,
            first_sample: (i * 25) as u32,
            samples: frag.len() as u32,
            description: 0,
        });
        offset += frag.iter().map(|x| u64::from(x.bytes)).sum::<u64>();
    }
    Input {
        sample_entries: vec![s.params.sample_entry.clone()],
        width: 1280,
        height: 720,
        files,
        samples,
        chunks,
        skip_90k: 0,
        duration_90k: n as u64 * 3600,
        cues: Vec::new(),
    }
}

criterion_group!(benches, writer, index, mp4);
criterion_main!(benches);

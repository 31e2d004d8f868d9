//! Playback benchmark (not a timed test): time to first byte and throughput of video.mp4.
//!
//! Generates a synthetic index of `--days` days × `--streams` streams (60 s segments at 25 fps,
//! GOP 50, ~1 s fragments, realistic varying frame sizes at `--kbps`), then for 1 min, 1 h and
//! 24 h ranges measures:
//! * TTFB: `vigie_footage::prepare` (index range scan, gap check, ETag, plan and layout
//!   of the file: sample tables decoded only for the segments cut by the range) + producing the
//!   first body chunk (cold: a distinct range each time, so the layout cache misses; warm: the
//!   same range again, a cache hit) — everything the handler does before sending the first
//!   byte. Also measured: rendering the whole `moov` (all sample tables), which happens while
//!   the response streams;
//! * throughput: the handler's body pipeline (a blocking reader of 256 KiB chunks feeding a
//!   channel, drained by an async task) over real segment files already in the page cache.
//!
//! Run: `cargo bench -p vigie-footage --bench playback -- [--streams 50] [--days 30] [--dir D]
//! [--iterations N] [--kbps K] [--no-throughput] [--v1-tables] [--inline-tables] [--drop-caches]`
//! (`--v1-tables`: sample tables in the journal form, as index entries written before index
//! format 3 hold them, to compare the two forms in one binary; `--inline-tables`: packed
//! tables in the entries, as format 3 holds them, instead of in the segment files (format 4);
//! `--drop-caches`: page cache dropped before each iteration of the breakdown, as root)
//! (see docs/BENCHMARKS.md).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use vigie_core::{Codec, StreamKey, SystemClock, Time90k, VideoParams};
use vigie_mp4::SampleInfo;
use vigie_store::{GapPolicy, Store, StoreConfig, SyntheticSegment};

struct Args {
    streams: u32,
    days: u32,
    kbps: u32,
    dir: Option<PathBuf>,
    iterations: u32,
    /// `--no-throughput`: only TTFB (no segment files written).
    throughput: bool,
    /// `--v1-tables`: journal-form (pre-format-3) sample tables.
    v1_tables: bool,
    /// `--inline-tables`: packed tables in the index entries (format 3), not in the files.
    inline_tables: bool,
    /// `--drop-caches`: drop the page cache (root) before each iteration of the breakdown, so
    /// its scan, plan and whole-`moov` rendering read the index and the tables from the disk.
    drop_caches: bool,
}

fn args() -> Args {
    let mut a = Args {
        streams: 50,
        days: 30,
        kbps: 2000,
        dir: None,
        iterations: 20,
        throughput: true,
        v1_tables: false,
        inline_tables: false,
        drop_caches: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_default();
        match k.as_str() {
            "--streams" => a.streams = v().parse().unwrap_or(a.streams),
            "--days" => a.days = v().parse().unwrap_or(a.days),
            "--kbps" => a.kbps = v().parse().unwrap_or(a.kbps),
            "--iterations" => a.iterations = v().parse().unwrap_or(a.iterations),
            "--dir" => a.dir = Some(v().into()),
            "--no-throughput" => a.throughput = false,
            "--v1-tables" => a.v1_tables = true,
            "--inline-tables" => a.inline_tables = true,
            "--drop-caches" => a.drop_caches = true,
            _ => {} // `--bench` and friends from cargo
        }
    }
    a
}

/// Deterministic pseudo-random numbers (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn params() -> VideoParams {
    VideoParams {
        codec: Codec::H264,
        rfc6381_codec: "avc1.4d401f".into(),
        width: 1920,
        height: 1080,
        pixel_aspect_ratio: (1, 1),
        // A plausible avc1 entry (the benchmark never decodes).
        sample_entry: Bytes::from(vec![0u8; 120]),
    }
}

/// One 60 s segment: 1500 frames, key frame every 50 (5× the size of the others), sizes
/// jittering ±20 %, durations 3600 ± 1 tick now and then (RTP jitter).
fn segment(rng: &mut Rng, kbps: u32) -> SyntheticSegment {
    let per_frame = u64::from(kbps) * 1000 / 8 / 25;
    let p_size = per_frame * 50 / 54; // key = 5 × p, GOP of 50
    let samples = (0..1500)
        .map(|i| {
            let key = i % 50 == 0;
            let base = if key { p_size * 5 } else { p_size };
            let jitter = rng.next() % (base * 2 / 5 + 1);
            SampleInfo {
                duration_90k: match rng.next() % 20 {
                    0 => 3599,
                    1 => 3601,
                    _ => 3600,
                },
                bytes: (base * 4 / 5 + jitter) as u32,
                is_key: key,
            }
        })
        .collect();
    SyntheticSegment {
        start: Time90k(0),
        wall_duration_90k: None,
        samples,
        samples_per_fragment: 25,
        fragment_header_len: 380,
        init_len: 900,
        session_id: 1,
    }
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "median {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        ms(v[v.len() / 2]),
        ms(v[v.len() * 9 / 10]),
        ms(v[v.len() - 1])
    )
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            total += if m.is_dir() {
                dir_bytes(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

fn main() -> anyhow::Result<()> {
    let a = args();
    let tmp = tempfile::tempdir()?;
    let dir = a.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    let store = Store::open(
        StoreConfig {
            data_dir: dir.clone(),
            recording: Default::default(),
            min_free_bytes: 0,
            index_cache_bytes: vigie_store::index::DEFAULT_CACHE_BYTES,
            verify_entries_per_s: vigie_store::verify::DEFAULT_VERIFY_ENTRIES_PER_S,
        },
        Arc::new(SystemClock),
    )?;
    let seg_90k = 60 * 90_000i64;
    // Day 0 starts at a UTC midnight; segments of stream s are staggered by s × 60 s / streams.
    let t0 = Time90k::parse_rfc3339("2026-10-01T00:00:00Z")?.0;
    let per_stream = i64::from(a.days) * 1440;
    let key = |s: u32| StreamKey::new(format!("cam-{s:02}"), "main");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let templates: Vec<SyntheticSegment> = (0..8).map(|_| segment(&mut rng, a.kbps)).collect();
    println!(
        "generating {} streams × {} days = {} segments of 60 s ({} kbit/s, 25 fps, {} sample tables) in {}",
        a.streams,
        a.days,
        i64::from(a.streams) * per_stream,
        a.kbps,
        if a.v1_tables {
            "v1 in the index"
        } else if a.inline_tables {
            "packed in the index"
        } else {
            "packed in the segment files"
        },
        dir.display()
    );
    let t = Instant::now();
    let mut made_dirs = std::collections::HashSet::new();
    for s in 0..a.streams {
        let encs: Vec<_> = templates
            .iter()
            .map(|tpl| {
                if a.v1_tables {
                    store.encode_synthetic_v1(&key(s), &params(), tpl)
                } else if a.inline_tables {
                    store.encode_synthetic_inline(&key(s), &params(), tpl)
                } else {
                    store.encode_synthetic(&key(s), &params(), tpl)
                }
            })
            .collect::<Result<_, _>>()?;
        let stagger = seg_90k * i64::from(s) / i64::from(a.streams);
        for k in 0..per_stream {
            let start = Time90k(t0 + stagger + k * seg_90k);
            let enc = &encs[(k as usize * 7 + s as usize) % encs.len()];
            let id = store.insert_synthetic(enc, start)?;
            // The file, sparse, with its tables box when the tables are in the files (playback
            // reads them there).
            let (path, _) = store.synthetic_file(&key(s), enc, id, start);
            if let Some(d) = path.parent()
                && made_dirs.insert(d.to_owned())
            {
                std::fs::create_dir_all(d)?;
            }
            store.create_synthetic_file(&key(s), enc, id, start, true)?;
        }
    }
    store.flush_index()?;
    let index_bytes = dir_bytes(&dir.join("index"));
    println!(
        "index generated in {:.1} s; {:.2} GB on disk ({:.1} MB per camera-day)",
        t.elapsed().as_secs_f64(),
        index_bytes as f64 / 1e9,
        index_bytes as f64 / 1e6 / f64::from(a.streams * a.days)
    );

    let k = key(a.streams / 2);
    let mid = t0 + i64::from(a.days / 2) * 86_400 * 90_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    for (name, secs) in [("1 min", 60i64), ("1 h", 3600), ("24 h", 86_400)] {
        // TTFB, cold: shift the range by 1.3 s each time so neither the ETag nor the cache
        // repeats.
        let mut cold = Vec::new();
        let mut header = 0;
        for i in 0..a.iterations {
            let start = Time90k(mid + i64::from(i) * 117_000 + 12_345);
            let req = vigie_footage::PlaybackRequest {
                key: k.clone(),
                start,
                end: Time90k(start.0 + secs * 90_000),
                gaps: GapPolicy::Refuse,
                subtitles: None,
                on_behalf: None,
            };
            let t = Instant::now();
            let p = vigie_footage::prepare(&store, &req)?;
            let mut first = 0usize;
            vigie_footage::read_blocking(&p.mp4, 0, p.mp4.total_len, |b| {
                first = b.len();
                false
            })?;
            cold.push(t.elapsed());
            assert!(first > 0);
            header = p.mp4.header_len;
        }
        let mut warm = Vec::new();
        let req = vigie_footage::PlaybackRequest {
            key: k.clone(),
            start: Time90k(mid + 12_345),
            end: Time90k(mid + 12_345 + secs * 90_000),
            gaps: GapPolicy::Refuse,
            subtitles: None,
            on_behalf: None,
        };
        let prepared = vigie_footage::prepare(&store, &req)?;
        for _ in 0..a.iterations {
            let t = Instant::now();
            vigie_footage::prepare(&store, &req)?;
            warm.push(t.elapsed());
        }
        // Breakdown of a cold request: index scan, plan (only the segments cut by the range are
        // decoded), layout. Then, after the first byte, rendering the whole `moov` (every
        // sample table decoded and written), which a player reads at network speed.
        let (mut scan, mut plan, mut build, mut moov) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..a.iterations {
            let start = Time90k(mid + i64::from(i) * 117_000 + 99_999);
            if a.drop_caches {
                let _ = std::process::Command::new("sync").status();
                std::fs::write("/proc/sys/vm/drop_caches", b"3\n")?;
            }
            let t = Instant::now();
            let c = store.playback_candidates(&k, start, Time90k(start.0 + secs * 90_000))?;
            scan.push(t.elapsed());
            let t = Instant::now();
            let p = c.plan(&store, GapPolicy::Refuse)?;
            plan.push(t.elapsed());
            let t = Instant::now();
            let v = p.build()?;
            build.push(t.elapsed());
            let t = Instant::now();
            let mut n = 0u64;
            v.read(0, v.header_len, vigie_footage::READ_CHUNK_BYTES, |b| {
                n += b.len() as u64;
                true
            })?;
            assert_eq!(n, v.header_len);
            moov.push(t.elapsed());
        }
        println!(
            "{name:>6}: moov+headers {:.2} MB, file {:.2} GB\n        TTFB cold {}\n          scan {}\n          plan {}\n          layout {}\n        whole moov rendered (after the first byte) {}\n        TTFB warm (cached layout) {}",
            header as f64 / 1e6,
            prepared.mp4.total_len as f64 / 1e9,
            stats(cold),
            stats(scan),
            stats(plan),
            stats(build),
            stats(moov),
            stats(warm)
        );

        // Throughput: write the segment files of the range (real data for ≤ 1 h, sparse files
        // for 24 h), read them once into the page cache, then time the body pipeline.
        if !a.throughput {
            continue;
        }
        let mp4 = prepared.mp4.clone();
        let sparse = secs > 3600;
        let buf = vec![0x5au8; 1 << 20];
        let mut needs = vec![0u64; mp4.files.len()];
        mp4.for_each_slice(mp4.header_len, mp4.total_len, |s| {
            if let vigie_mp4::progressive::Slice::File { file, offset, len } = s {
                let n = &mut needs[file as usize];
                *n = (*n).max(offset + len);
            }
            true
        })?;
        for (f, &need) in mp4.files.iter().zip(&needs) {
            // The files exist (sparse, with their tables box at the end when the tables are
            // there): give the ≤ 1 h ranges real media bytes, leaving the tail as it is.
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(f).ok();
            let have_len = meta.as_ref().map_or(0, |m| m.len());
            let have_real = meta.as_ref().map_or(0, |m| m.blocks() * 512);
            if (sparse && have_len >= need) || (!sparse && have_real >= need) {
                continue;
            }
            if let Some(d) = f.parent() {
                std::fs::create_dir_all(d)?;
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(f)?;
            if sparse {
                file.set_len(need)?;
            } else {
                let mut left = need;
                while left > 0 {
                    let n = left.min(buf.len() as u64) as usize;
                    file.write_all(&buf[..n])?;
                    left -= n as u64;
                }
            }
        }
        let pipeline = |mp4: Arc<vigie_mp4::progressive::VirtualMp4>| {
            rt.block_on(async move {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
                let len = mp4.total_len;
                tokio::task::spawn_blocking(move || {
                    let r = vigie_footage::read_blocking(&mp4, 0, len, |c| {
                        tx.blocking_send(Ok(c)).is_ok()
                    });
                    if let Err(e) = r {
                        let _ = tx.blocking_send(Err(e));
                    }
                });
                let mut n = 0u64;
                while let Some(c) = rx.recv().await {
                    n += c?.len() as u64;
                }
                Ok::<u64, std::io::Error>(n)
            })
        };
        pipeline(mp4.clone())?; // warm the page cache
        let t = Instant::now();
        let n = pipeline(mp4.clone())?;
        let dt = t.elapsed().as_secs_f64();
        println!(
            "{name:>6}: throughput {:.2} GB/s ({:.2} GB in {:.2} s{})",
            n as f64 / dt / 1e9,
            n as f64 / 1e9,
            dt,
            if sparse { ", sparse files" } else { "" }
        );
        for f in &mp4.files {
            let _ = std::fs::remove_file(f);
        }
    }
    Ok(())
}

//! Experiment (issue 16, docs/BENCHMARKS.md "Restart"): what a walk of the whole index as the
//! background verification does it (`Index::heads_batch`, 256 entries a batch, on its own
//! thread) leaves resident, with and without giving glibc's free pages back
//! (`malloc_trim`), independently of Vigie's writers.
//!
//! * `walk_memory gen DIR STREAMS DAYS`: an index of STREAMS × DAYS × 1,440 segments of 60 s
//!   (format 5 blocks, entries as the restart benchmark's; no segment files);
//! * `walk_memory walk DIR [trim|notrim] [MAX_ENTRIES] [nosettle]`: opens it (8 MiB cache,
//!   Vigie's default), walks the entries on a thread (all, or the first MAX_ENTRIES) as the
//!   verification does, `Index::settle_walk` after each batch included (`nosettle`: without
//!   it, as before the fix), and prints
//!   VmRSS/VmHWM as it goes, after the walk with the index still open, and after
//!   `malloc_trim(0)` (`trim`: also every 64 batches during the walk).
//!
//! * `walk_memory legacy DIR`: rewrites the index as format 4 wrote it (one item per entry);
//! * `walk_memory migrate DIR`: opens it, which migrates it to format 5 in place, then empties
//!   and drops the old trees as the verification thread does first, and prints VmRSS/VmHWM
//!   and the time of each.
//!
//! `cargo build --release -p vigie-store --example walk_memory`

use std::sync::Arc;
use std::time::Instant;

use vigie_core::{Codec, StreamKey, SystemClock, Time90k, VideoParams};
use vigie_store::{SampleInfo, Store, StoreConfig, SyntheticSegment};

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| {
                v.trim_start_matches(':')
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

fn mem() -> String {
    format!(
        "VmRSS {} MiB, VmHWM {} MiB",
        status_kib("VmRSS") / 1024,
        status_kib("VmHWM") / 1024
    )
}

fn trim() {
    // SAFETY: takes no pointer; glibc locks each arena it trims.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

fn segment(i: u64) -> SyntheticSegment {
    let samples = (0..1500u64)
        .map(|k| SampleInfo {
            duration_90k: 3600,
            bytes: (8000 + (k * 7919 + i) % 4000) as u32 * if k % 50 == 0 { 5 } else { 1 },
            is_key: k % 50 == 0,
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&a[2]);
    match a[1].as_str() {
        "gen" => {
            let (streams, days): (u64, i64) = (a[3].parse()?, a[4].parse()?);
            let store = Store::open(
                StoreConfig::new(dir.clone(), Default::default(), 0),
                Arc::new(SystemClock),
            )?;
            let params = VideoParams {
                codec: Codec::H264,
                rfc6381_codec: "avc1.4d401f".into(),
                width: 1920,
                height: 1080,
                pixel_aspect_ratio: (1, 1),
                sample_entry: bytes::Bytes::from(vec![0u8; 120]),
            };
            let seg_90k = 60 * 90_000i64;
            let per_stream = days * 1440;
            let t0 = 1_795_000_000 * 90_000i64;
            let t = Instant::now();
            for s in 0..streams {
                let key = StreamKey::new(format!("cam{s:04}"), "main");
                let encs: Vec<_> = (0..8)
                    .map(|i| store.encode_synthetic(&key, &params, &segment(i)))
                    .collect::<Result<_, _>>()?;
                let mut k = 0;
                while k < per_stream {
                    let items: Vec<_> = (k..(k + 1440).min(per_stream))
                        .map(|k| (&encs[k as usize % 8], Time90k(t0 + k * seg_90k)))
                        .collect();
                    store.insert_synthetic_many(&items)?;
                    k += items.len() as i64;
                }
            }
            store.flush_index()?;
            println!("generated in {:.0} s", t.elapsed().as_secs_f64());
        }
        "walk" => {
            let with_trim = a.get(3).is_some_and(|v| v == "trim");
            // As the verification (`settle_walk` after each batch) unless told `nosettle`.
            let settle = !a.iter().any(|v| v == "nosettle");
            let max: u64 = a.get(4).and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
            let t = Instant::now();
            let index = vigie_store::index::Index::open(&dir.join("index"))?;
            println!("opened in {:.2} s: {}", t.elapsed().as_secs_f64(), mem());
            let kept = index.clone();
            let walker = std::thread::spawn(move || -> Result<u64, String> {
                let mut after = None;
                let (mut n, mut batches) = (0u64, 0u64);
                loop {
                    let (batch, last) = index
                        .heads_batch(after.as_ref(), 256)
                        .map_err(|e| e.to_string())?;
                    let Some(last) = last else { break };
                    if settle {
                        index.settle_walk(&last).map_err(|e| e.to_string())?;
                    }
                    after = Some(last);
                    n += batch.len() as u64;
                    batches += 1;
                    if with_trim && batches % 64 == 0 {
                        trim();
                    }
                    if n >= max {
                        break;
                    }
                    if batches % 4000 == 0 {
                        println!("  {n} entries: {}", mem());
                    }
                }
                Ok(n)
            });
            let n = walker.join().map_err(|_| "walker panicked")??;
            println!(
                "walked {n} entries in {:.1} s: {}",
                t.elapsed().as_secs_f64(),
                mem()
            );
            std::thread::sleep(std::time::Duration::from_secs(2));
            println!("2 s later, index open: {}", mem());
            trim();
            println!("after malloc_trim(0), index open: {}", mem());
            drop(kept);
            std::thread::sleep(std::time::Duration::from_secs(2));
            trim();
            println!("index closed, after malloc_trim(0): {}", mem());
        }
        "legacy" => {
            // The index as format 4 wrote it (one item per entry), to be migrated.
            let index = vigie_store::index::Index::open(&dir.join("index"))?;
            index.write_legacy_layout_for_test()?;
            println!("written as format 4");
        }
        "migrate" => {
            // Opening migrates it in place (format 4 -> 5), old trees dropped.
            println!("before: {}", mem());
            let t = Instant::now();
            let index = vigie_store::index::Index::open(&dir.join("index"))?;
            println!(
                "opened (migrated) in {:.1} s: {}",
                t.elapsed().as_secs_f64(),
                mem()
            );
            // What the verification thread then does first: empty and drop the old trees
            // (here without its pause between steps).
            let t = Instant::now();
            let mut cursor = vigie_store::index::LegacyCursor::default();
            while !index.drop_legacy_step(&mut cursor)? {}
            println!(
                "old trees emptied and dropped in {:.1} s: {}",
                t.elapsed().as_secs_f64(),
                mem()
            );
            drop(index);
            trim();
            println!("index closed, after malloc_trim(0): {}", mem());
        }
        m => return Err(format!("unknown mode {m}").into()),
    }
    Ok(())
}

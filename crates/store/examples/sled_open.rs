//! Experiment (issue 16, docs/BENCHMARKS.md "Restart"): what sled 0.34 costs at open and when
//! walked, independently of Vigie.
//!
//! * `sled_open gen DIR ENTRIES [SIZE]` writes ENTRIES entries of SIZE bytes (default 4,755:
//!   a 60 s segment's index entry in format 2; 85 in format 4) as the store does (`segments`
//!   + `by_id` rows of 29 bytes);
//! * `sled_open open DIR [CACHE_BYTES]` opens it and prints the time and peak RSS (sled replays
//!   its log since its last snapshot, which it writes only when it opens);
//! * `sled_open walk DIR [CACHE_BYTES]` also walks every entry, then `by_id`, and prints the
//!   memory left resident;
//! * `sled_open byid DIR [CACHE_BYTES]` walks `by_id` alone (as the background verification
//!   does) and prints the memory left resident.
//!
//! `cargo build --release -p vigie-store --example sled_open`

use std::time::Instant;

fn hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let dir = std::path::Path::new(&a[2]);
    match a[1].as_str() {
        "gen" => {
            let n: u64 = a[3].parse()?;
            // Optional entry size (85 B: an index format 4 head; 4,755 B by default).
            let size: usize = a.get(4).and_then(|s| s.parse().ok()).unwrap_or(4755);
            let db = sled::Config::new()
                .path(dir)
                .cache_capacity(64 << 20)
                .open()?;
            let seg = db.open_tree("segments")?;
            let by_id = db.open_tree("by_id")?;
            let mut v = vec![0u8; size];
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for i in 0..n {
                for b in v.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8 & 0x3f;
                }
                let mut k = [0u8; 20];
                k[..4].copy_from_slice(&((i % 50) as u32).to_be_bytes());
                k[4..12].copy_from_slice(&(i / 50).to_be_bytes());
                k[12..].copy_from_slice(&i.to_be_bytes());
                seg.insert(k, &v[..])?;
                // As `ByIdRow`: the key, the indexed length, the open flag (29 B).
                let mut row = [0u8; 29];
                row[..20].copy_from_slice(&k);
                row[20..28].copy_from_slice(&(i * 7).to_be_bytes());
                by_id.insert(i.to_be_bytes(), &row[..])?;
            }
            db.flush()?;
        }
        mode => {
            let cache: u64 = a.get(3).and_then(|c| c.parse().ok()).unwrap_or(64 << 20);
            let t = Instant::now();
            let db = sled::Config::new().path(dir).cache_capacity(cache).open()?;
            let seg = db.open_tree("segments")?;
            let last = seg.last()?.map(|(k, _)| k.len());
            println!(
                "open {:.2} s, VmHWM {} MiB (last key {last:?})",
                t.elapsed().as_secs_f64(),
                hwm_kib() / 1024
            );
            if mode == "batches" {
                // As the background verification walks: 256 entries per range scan.
                let t = Instant::now();
                let mut n = 0u64;
                let mut after: Option<sled::IVec> = None;
                loop {
                    let lo = match &after {
                        Some(k) => std::ops::Bound::Excluded(k.clone()),
                        None => std::ops::Bound::Unbounded,
                    };
                    let mut last = None;
                    for kv in seg
                        .range::<sled::IVec, _>((lo, std::ops::Bound::Unbounded))
                        .take(256)
                    {
                        let (k, v) = kv?;
                        n += v.len() as u64;
                        last = Some(k);
                    }
                    match last {
                        Some(k) => after = Some(k),
                        None => break,
                    }
                }
                println!(
                    "batched walk {:.2} s ({n} bytes), VmHWM {} MiB, VmRSS {} MiB",
                    t.elapsed().as_secs_f64(),
                    hwm_kib() / 1024,
                    rss_kib() / 1024
                );
            }
            if mode == "byid" {
                // What the background verification walks: `by_id` alone.
                let by_id = db.open_tree("by_id")?;
                let t = Instant::now();
                let mut m = 0u64;
                for kv in by_id.iter() {
                    let (_, v) = kv?;
                    m += v.len() as u64;
                }
                println!(
                    "by_id walk {:.2} s ({m} bytes), VmHWM {} MiB, VmRSS {} MiB",
                    t.elapsed().as_secs_f64(),
                    hwm_kib() / 1024,
                    rss_kib() / 1024
                );
            }
            if mode == "walk" {
                let t = Instant::now();
                let mut n = 0u64;
                for kv in seg.iter() {
                    let (_, v) = kv?;
                    n += v.len() as u64;
                }
                println!(
                    "walk {:.2} s ({n} bytes), VmHWM {} MiB, VmRSS {} MiB",
                    t.elapsed().as_secs_f64(),
                    hwm_kib() / 1024,
                    rss_kib() / 1024
                );
                let by_id = db.open_tree("by_id")?;
                let t = Instant::now();
                let mut m = 0u64;
                for kv in by_id.iter() {
                    let (_, v) = kv?;
                    m += v.len() as u64;
                }
                println!(
                    "by_id walk {:.2} s ({m} bytes), VmHWM {} MiB, VmRSS {} MiB",
                    t.elapsed().as_secs_f64(),
                    hwm_kib() / 1024,
                    rss_kib() / 1024
                );
            }
        }
    }
    Ok(())
}

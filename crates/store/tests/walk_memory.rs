//! Issue 16, memory: a walk of the whole index as the background verification does it
//! (`Index::heads_batch`, then `Index::settle_walk` after each batch) leaves about sled's cache
//! resident, not the leaves it has read. Without `settle_walk`, sled 0.34's batched LRU kept
//! ~20 leaves of blocks per cache shard resident (+94 MiB after 1 M entries, +160 MiB plateau
//! at 8.64 M, whatever `index_cache_bytes`: docs/BENCHMARKS.md "Restart").
//!
//! Memory is read from this test's own process (`/proc/self/status`; nextest runs each test in
//! a process of its own).

mod common;

use std::sync::Arc;

use common::*;
use vigie_core::{SystemClock, Time90k};
use vigie_mp4::SampleInfo;
use vigie_store::{Store, SyntheticSegment};

const STREAMS: u64 = 200;
/// 5 days of 1-minute segments a stream: 1.44 M entries, ~45,000 blocks in ~3,500 sled leaves
/// (~14 per cache shard: enough for the unsettled walk to keep > 100 MiB resident).
const PER_STREAM: i64 = 5 * 1_440;
/// What the walk may add to the resident memory of the opened index: sled's 8 MiB cache (it
/// counts on-disk bytes; a leaf in memory is larger, and each of the 256 shards keeps the
/// page it last added), the walk's batches, allocator slack.
const WALK_BUDGET_KIB: u64 = 48 * 1024;

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .expect("VmRSS in /proc/self/status")
}

fn segment(i: u64) -> SyntheticSegment {
    SyntheticSegment {
        start: Time90k(0),
        wall_duration_90k: None,
        samples: (0..1500u64)
            .map(|k| SampleInfo {
                duration_90k: 3600,
                bytes: (8000 + (k * 7919 + i) % 4000) as u32 * if k % 50 == 0 { 5 } else { 1 },
                is_key: k % 50 == 0,
            })
            .collect(),
        samples_per_fragment: 25,
        fragment_header_len: 380,
        init_len: 900,
        session_id: 1,
    }
}

#[test]
fn a_walk_of_the_whole_index_leaves_about_the_cache_resident() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(config(dir.path()), Arc::new(SystemClock)).unwrap();
        let params = vigie_mp4::testutil::avc_params(&[0x67, 0x4d, 0x40, 0x1f], &[0x68], 320, 240);
        let seg_90k = 60 * 90_000i64;
        let t0 = 1_795_000_000 * 90_000i64;
        for s in 0..STREAMS {
            let key = vigie_core::StreamKey::new(format!("cam{s:04}"), "main");
            let encs: Vec<_> = (0..4)
                .map(|i| store.encode_synthetic(&key, &params, &segment(i)).unwrap())
                .collect();
            let items: Vec<_> = (0..PER_STREAM)
                .map(|k| (&encs[k as usize % 4], Time90k(t0 + k * seg_90k)))
                .collect();
            store.insert_synthetic_many(&items).unwrap();
        }
        store.flush_index().unwrap();
    }
    // The index alone, opened with Vigie's default cache, walked on a thread of its own as the
    // verification walks it.
    let index = vigie_store::index::Index::open(&dir.path().join("index")).unwrap();
    let opened_kib = vm_rss_kib();
    let walker = std::thread::spawn(move || {
        let (mut after, mut n, mut batches, mut peak_kib) = (None, 0u64, 0u64, 0u64);
        loop {
            let (batch, last) = index
                .heads_batch(after.as_ref(), vigie_store::verify::BATCH)
                .unwrap();
            let Some(last) = last else { break };
            index.settle_walk(&last).unwrap();
            after = Some(last);
            n += batch.len() as u64;
            batches += 1;
            if batches % 64 == 0 {
                peak_kib = peak_kib.max(vm_rss_kib());
            }
        }
        (n, peak_kib.max(vm_rss_kib()))
    });
    let (n, peak_kib) = walker.join().unwrap();
    assert_eq!(n, STREAMS * PER_STREAM as u64, "every entry walked");
    let added_kib = peak_kib.saturating_sub(opened_kib);
    eprintln!(
        "added {} MiB over {} MiB",
        added_kib / 1024,
        opened_kib / 1024
    );
    assert!(
        added_kib < WALK_BUDGET_KIB,
        "the walk added {} MiB to the {} MiB of the opened index (budget {} MiB)",
        added_kib / 1024,
        opened_kib / 1024,
        WALK_BUDGET_KIB / 1024
    );
}

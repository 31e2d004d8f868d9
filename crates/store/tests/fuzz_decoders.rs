//! Fuzzing of the index decoders: the sample-table and fragment-table varint decoders
//! (`vigie_store::sampletable`) and the postcard entries of the sled index (`SegmentEntry`,
//! `EntryHead`, `GarbageRow`, `DeletionRecord`, `StreamKey`, `VideoParams`). A damaged or crafted
//! index must yield "malformed" (`None` / `Err`), never a panic, an overflow or an allocation
//! beyond a bound linear in the input.
//!
//! The suite runs a few hundred cases per property; the longer run is in docs/FUZZING.md:
//! `PROPTEST_CASES=100000 cargo test -p vigie-store --test fuzz_decoders --release`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use proptest::prelude::*;
use vigie_core::{Codec, StreamKey, VideoParams};
use vigie_store::index::{EntryHead, GarbageRow, SegmentEntry};
use vigie_store::sampletable::{
    FragmentTableEncoder, TableCounts, decode_fragments, decode_samples, encode_samples,
    encode_samples_v1, max_samples,
};
use vigie_store::{DeletionRecord, FragmentLoc, SampleInfo};

/// Any single allocation above this aborts the test process (a failed run, not a machine
/// brought down by a multi-gigabyte request).
const ALLOC_CAP_BYTES: usize = 64 << 20;

struct Capped;

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP_BYTES {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Capped = Capped;

static BIGGEST: AtomicUsize = AtomicUsize::new(0);

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn entry(sample_table: Vec<u8>, fragment_table: Vec<u8>) -> SegmentEntry {
    SegmentEntry {
        head: vigie_store::index::EntryHead {
            id: 7,
            stream_id: 2,
            start_90k: 1_795_899_600 * 90_000,
            wall_duration_90k: 900_000,
            media_duration_90k: 899_990,
            bytes: 1 << 20,
            frames: 250,
            key_frames: 5,
            width: 1920,
            height: 1080,
            codec: Codec::H264,
            params_id: 99,
            session_id: 3,
            open: false,
            end_reason: Some("rotation".into()),
            counts: TableCounts::default(),
        },
        init_len: 800,
        sample_table,
        fragment_table,
    }
}

/// Decodes `bytes` as every index value type; checks the bounds of what comes out.
fn decode_everything(bytes: &[u8]) {
    if let Ok(e) = postcard::from_bytes::<SegmentEntry>(bytes) {
        assert!(e.sample_table.len() + e.fragment_table.len() <= bytes.len());
        if let Some(s) = decode_samples(&e.sample_table) {
            assert!(s.len() <= max_samples(e.sample_table.len()));
            if let Some(f) = decode_fragments(&e.fragment_table, u64::from(e.init_len), &s) {
                assert!(f.len() <= s.len() + e.fragment_table.len() / 3);
            }
        }
    }
    let _ = postcard::take_from_bytes::<EntryHead>(bytes);
    let _ = postcard::from_bytes::<GarbageRow>(bytes);
    let _ = postcard::from_bytes::<DeletionRecord>(bytes);
    let _ = postcard::from_bytes::<StreamKey>(bytes);
    if let Ok(p) = postcard::from_bytes::<VideoParams>(bytes) {
        assert!(p.sample_entry.len() <= bytes.len());
    }
    BIGGEST.fetch_max(bytes.len(), Relaxed);
}

fn mutate(mut buf: Vec<u8>, edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    for &(i, b) in edits {
        if !buf.is_empty() {
            let i = i % buf.len();
            buf[i] = b;
        }
    }
    if let Some(c) = cut
        && !buf.is_empty()
    {
        buf.truncate(c % buf.len());
    }
    buf
}

fn samples() -> impl Strategy<Value = Vec<SampleInfo>> {
    prop::collection::vec(
        (any::<u32>(), any::<u32>(), any::<bool>()).prop_map(|(d, b, k)| SampleInfo {
            duration_90k: d,
            bytes: b,
            is_key: k,
        }),
        0..64,
    )
}

proptest! {
    #![proptest_config(config())]

    /// Random bytes behind the packed form's magic (index format 3's tables).
    #[test]
    fn fuzz_packed_sample_table_random(tail in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = vec![0x80, 0x00, 0x02];
        buf.extend_from_slice(&tail);
        if let Some(s) = decode_samples(&buf) {
            prop_assert!(s.len() <= max_samples(buf.len()));
            prop_assert_eq!(decode_samples(&encode_samples(&s)), Some(s));
        }
    }

    #[test]
    fn fuzz_sample_table_v1_round_trip(s in samples()) {
        prop_assert_eq!(decode_samples(&encode_samples_v1(&s)), Some(s));
    }

    #[test]
    fn fuzz_sample_table_random(buf in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Some(s) = decode_samples(&buf) {
            prop_assert!(s.len() <= max_samples(buf.len()));
            // A table that decodes re-encodes to itself only when canonical; decoding the
            // re-encoding must give the same samples.
            prop_assert_eq!(decode_samples(&encode_samples(&s)), Some(s));
        }
    }

    #[test]
    fn fuzz_sample_table_round_trip(s in samples()) {
        prop_assert_eq!(decode_samples(&encode_samples(&s)), Some(s));
    }

    #[test]
    fn fuzz_fragment_table_random(
        buf in prop::collection::vec(any::<u8>(), 0..256),
        init_len in any::<u64>(),
        s in samples(),
    ) {
        if let Some(f) = decode_fragments(&buf, init_len, &s) {
            prop_assert!(f.len() <= buf.len() / 3);
            let total: u64 = f.iter().map(|l| u64::from(l.samples)).sum();
            prop_assert!(total <= s.len() as u64);
        }
    }

    /// Random bytes behind the packed form's magic: runs of fragments.
    #[test]
    fn fuzz_packed_fragment_table_random(
        tail in prop::collection::vec(any::<u8>(), 0..256),
        init_len in any::<u64>(),
        s in samples(),
    ) {
        let mut buf = vec![0x80, 0x00, 0x02];
        buf.extend_from_slice(&tail);
        if let Some(f) = decode_fragments(&buf, init_len, &s) {
            prop_assert!(f.len() <= s.len() + buf.len() / 4);
            let total: u64 = f.iter().map(|l| u64::from(l.samples)).sum();
            prop_assert!(total <= s.len() as u64);
        }
    }

    #[test]
    fn fuzz_fragment_table_with_huge_values(
        values in prop::collection::vec(prop_oneof![Just(u64::MAX), Just(u64::MAX - 1),
            Just(u64::from(u32::MAX)), Just(1u64 << 63), 0u64..10, any::<u64>()], 0..24),
        init_len in prop_oneof![Just(u64::MAX), Just(0u64), any::<u64>()],
        s in samples(),
    ) {
        let mut buf = Vec::new();
        for v in values {
            let mut x = v;
            while x >= 0x80 {
                buf.push((x as u8) | 0x80);
                x >>= 7;
            }
            buf.push(x as u8);
        }
        let _ = decode_fragments(&buf, init_len, &s);
    }

    #[test]
    fn fuzz_index_values_random(buf in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&buf);
    }

    #[test]
    fn fuzz_index_values_mutated(
        s in samples(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in prop::option::of(any::<usize>()),
    ) {
        let mut frags = FragmentTableEncoder::default();
        frags.push(800, &FragmentLoc { offset: 800, header_len: 120, samples: s.len() as u32 });
        let e = entry(encode_samples(&s), frags.buf);
        let enc = postcard::to_allocvec(&e).unwrap();
        prop_assert_eq!(postcard::from_bytes::<SegmentEntry>(&enc).unwrap(), e);
        decode_everything(&mutate(enc, &edits, cut));
        let key = StreamKey::new("cam-1", "main");
        let enc = postcard::to_allocvec(&key).unwrap();
        decode_everything(&mutate(enc, &edits, cut));
        let row = GarbageRow { path: "/data/x/y.mp4".into(), bytes: 5 };
        decode_everything(&mutate(postcard::to_allocvec(&row).unwrap(), &edits, cut));
    }

    /// Length prefixes claiming huge vectors and strings: postcard must check them against the
    /// bytes present before allocating.
    #[test]
    fn fuzz_index_values_huge_lengths(
        prefix in prop::collection::vec(any::<u8>(), 0..40),
        len in prop_oneof![Just(u64::from(u32::MAX)), Just(u64::MAX), Just(1u64 << 40),
            any::<u64>()],
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut buf = prefix;
        let mut x = len;
        while x >= 0x80 {
            buf.push((x as u8) | 0x80);
            x >>= 7;
        }
        buf.push(x as u8);
        buf.extend_from_slice(&tail);
        decode_everything(&buf);
    }
}

//! Index format 4: a closed segment's tables are in its file (`vigie_store::filetables`). What
//! that adds as failure modes, on segments recorded by the real writer: the tables box torn (the
//! file cut inside it) is found by start-up recovery as a short file (entry dropped, the file
//! re-read from its `moof` boxes, which index it again with its tables); the box's bytes changed
//! behind Vigie's back are refused when read (an error, never wrong tables).

mod common;

use common::*;
use vigie_core::Time90k;
use vigie_store::filetables::{external_len, is_external};
use vigie_store::index::Index;
use vigie_store::{GapPolicy, SegmentInfo, Store};

fn everything(store: &Store) -> Vec<SegmentInfo> {
    store
        .segments(&key(), Time90k(0), Time90k(i64::MAX / 2))
        .unwrap()
}

/// Records two closed segments; returns them (oldest first).
async fn record(cfg: &vigie_store::StoreConfig) -> Vec<SegmentInfo> {
    let store = open(cfg, &clock());
    let h = store.start_writer(key(), (0, 1)).unwrap();
    let p = Pos {
        media: 0,
        recv: t0(),
    };
    let p = feed(&h, stream_a(), 1, p, 150);
    feed(&h, stream_a(), 2, p, 150);
    store.shutdown().await;
    let segs = everything(&store);
    assert_eq!(segs.len(), 2, "{segs:?}");
    drop(store);
    let ix = Index::open(&cfg.data_dir.join("index")).unwrap();
    for s in &segs {
        let e = ix.get_segment(s.id).unwrap().unwrap();
        assert!(is_external(&e.sample_table), "segment {}", s.id);
    }
    segs
}

/// Where the tables box of `id` starts in its file, and its length.
fn tables_box(cfg: &vigie_store::StoreConfig, id: u64) -> (u64, u64) {
    let ix = Index::open(&cfg.data_dir.join("index")).unwrap();
    let e = ix.get_segment(id).unwrap().unwrap();
    let payload = u64::from(external_len(&e.sample_table).unwrap());
    let offset = u64::from_le_bytes(e.sample_table[3..11].try_into().unwrap());
    (offset - 24, payload + 24)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tables_box_is_a_short_file_recovery_reindexes_it_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let segs = record(&cfg).await;
    let newest = &segs[1];
    let (at, len) = tables_box(&cfg, newest.id);
    assert!(at + len < newest.bytes, "the trailer follows the box");
    // Torn in the middle of the box (what a crash before the closing sync could leave, or a
    // disk error).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&newest.path)
        .unwrap()
        .set_len(at + len / 2)
        .unwrap();

    let store = open(&cfg, &clock());
    let r = store.recovery_report().clone();
    // The entry is dropped and the file re-read as an orphan: its complete fragments (every
    // frame) are indexed again, the tail cut, a trailer appended.
    assert_eq!(r.entries_dropped, 1, "{r:?}");
    assert_eq!(r.orphans_indexed, 1, "{r:?}");
    let after = everything(&store);
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[1].frames, newest.frames);
    assert_valid(&after[1].path, after[1].frames);
    let ix = store.segment_index(after[1].id).unwrap().unwrap();
    assert_eq!(ix.samples.len(), newest.frames as usize);
    // Playback across both (one from its file's tables, one from the re-read entry).
    let plan = store
        .playback_plan(
            &key(),
            after[0].start,
            after[1].start + secs(4),
            GapPolicy::Skip,
        )
        .unwrap();
    let full = lazy_equals_materialised(&plan);
    assert!(full.samples.len() > after[0].frames as usize);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_changed_behind_vigies_back_are_refused_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let segs = record(&cfg).await;
    let old = &segs[0];
    let (at, len) = tables_box(&cfg, old.id);
    // Same length, one byte of the sample table changed.
    let mut bytes = std::fs::read(&old.path).unwrap();
    bytes[(at + len / 2) as usize] ^= 0x10;
    std::fs::write(&old.path, &bytes).unwrap();

    let store = open(&cfg, &clock());
    let e = store.segment_index(old.id).unwrap_err();
    assert!(e.to_string().contains("hash mismatch"), "{e}");
    // A playback cut inside it fails with the same error instead of serving wrong offsets.
    let e = store
        .playback_plan(
            &key(),
            old.start + secs(1),
            old.start + secs(3),
            GapPolicy::Refuse,
        )
        .unwrap_err();
    assert!(e.to_string().contains("hash mismatch"), "{e}");
    // The other segment is unaffected.
    assert!(store.segment_index(segs[1].id).unwrap().is_some());
    store.shutdown().await;
}

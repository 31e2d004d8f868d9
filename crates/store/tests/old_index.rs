//! Index formats 3 (packed sample tables, issue 16), 4 (a closed segment's tables in its
//! file, the entry referring to them) and 5 (entries packed in blocks): an index written before
//! them — format 2, one sled item per entry whose sample tables are in the journal form — is
//! migrated into blocks at open with its entries as they are, they are read next to format-3
//! and format-4 ones, and playback over all three kinds is right.

mod common;

use common::*;
use vigie_core::{StreamKey, Time90k};
use vigie_mp4::SampleInfo;
use vigie_store::filetables::{external_len, is_external};
use vigie_store::index::Index;
use vigie_store::sampletable::{decode_samples, is_packed};
use vigie_store::{GapPolicy, SyntheticSegment};

fn seg(seed: u32) -> SyntheticSegment {
    SyntheticSegment {
        start: Time90k(0),
        wall_duration_90k: None,
        samples: (0..1500u32)
            .map(|i| SampleInfo {
                duration_90k: if (i * 7 + seed).is_multiple_of(10) {
                    3601
                } else {
                    3600
                },
                bytes: if i % 50 == 0 {
                    40_000 + i
                } else {
                    8_000 + (i * 37 + seed) % 3_000
                },
                is_key: i % 50 == 0,
            })
            .collect(),
        samples_per_fragment: 25,
        fragment_header_len: 380,
        init_len: 900,
        session_id: 1,
    }
}

fn sample_table(ix: &Index, id: u64) -> Vec<u8> {
    ix.get_segment(id).unwrap().unwrap().sample_table
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_2_index_opens_and_its_old_entries_read_beside_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let k: StreamKey = key();
    let params = vigie_mp4::testutil::avc_params(&[0x67, 0x4d, 0x40, 0x1f], &[0x68], 320, 240);
    let start = |i: i64| Time90k(t0().0 - 3_600 * 90_000 + i * 60 * 90_000);
    let (mut old_ids, mut new_ids, mut file_ids) = (Vec::new(), Vec::new(), Vec::new());
    {
        let store = open(&cfg, &clock());
        for i in 0..4 {
            let enc = store.encode_synthetic_v1(&k, &params, &seg(i)).unwrap();
            let id = store.insert_synthetic(&enc, start(i.into())).unwrap();
            // Its file, as a sparse file of the indexed length (recovery checks it at the next
            // start).
            let info = store.segment(id).unwrap().unwrap();
            std::fs::create_dir_all(info.path.parent().unwrap()).unwrap();
            std::fs::File::create(&info.path)
                .unwrap()
                .set_len(info.bytes)
                .unwrap();
            old_ids.push(id);
        }
        store.flush_index().unwrap();
        store.shutdown().await;
    }
    // As a binary before format 3 left it: format 2 and journal-form tables.
    {
        let ix = Index::open(&dir.path().join("index")).unwrap();
        for id in &old_ids {
            assert!(!is_packed(&sample_table(&ix, *id)));
        }
        // One `segments` item per entry, as every format before 5 (migrated at the next open).
        ix.write_legacy_layout_for_test().unwrap();
        ix.meta.insert("format", &2u32.to_be_bytes()).unwrap();
        ix.db.flush().unwrap();
    }
    {
        let store = open(&cfg, &clock());
        for i in 4..8 {
            // Format 3: packed tables in the entry.
            let enc = store.encode_synthetic_inline(&k, &params, &seg(i)).unwrap();
            new_ids.push(store.insert_synthetic(&enc, start(i.into())).unwrap());
        }
        for i in 8..12 {
            // Format 4: packed tables in the segment file.
            let enc = store.encode_synthetic(&k, &params, &seg(i)).unwrap();
            let id = store.insert_synthetic(&enc, start(i.into())).unwrap();
            let info = store.segment(id).unwrap().unwrap();
            std::fs::create_dir_all(info.path.parent().unwrap()).unwrap();
            store
                .create_synthetic_file(&k, &enc, id, start(i.into()), true)
                .unwrap();
            file_ids.push(id);
        }
        // Every segment's samples, of all three kinds, are the ones indexed.
        for (i, id) in old_ids.iter().chain(&new_ids).chain(&file_ids).enumerate() {
            let ix = store.segment_index(*id).unwrap().unwrap();
            assert_eq!(ix.samples, seg(i as u32).samples, "segment {i}");
            assert_eq!(ix.fragments.len(), 60);
        }
        // A playback across both kinds, cut inside an old and inside a new segment: the lazily
        // rendered file equals the one built from the decoded tables.
        let plan = store
            .playback_plan(
                &k,
                Time90k(start(1).0 + 10 * 90_000),
                Time90k(start(10).0 + 30 * 90_000),
                GapPolicy::Refuse,
            )
            .unwrap();
        let full = lazy_equals_materialised(&plan);
        assert!(!full.samples.is_empty());
        // The old trees are emptied and dropped by the background verification, first.
        wait_verified(&store, 60).await;
        store.flush_index().unwrap();
        store.shutdown().await;
    }
    // Marked format 5 (entries moved into stream-hour blocks, the old trees gone); old entries'
    // tables untouched, format-3 ones packed and smaller, format-4 ones a reference of a few
    // bytes to as many bytes of tables in the file.
    let ix = Index::open(&dir.path().join("index")).unwrap();
    assert_eq!(
        ix.meta.get("format").unwrap().unwrap().as_ref(),
        vigie_store::index::FORMAT.to_be_bytes()
    );
    assert!(ix.segments.is_empty() && ix.by_id.is_empty());
    for ((o, n), f) in old_ids.iter().zip(&new_ids).zip(&file_ids) {
        let (old, new, file) = (
            sample_table(&ix, *o),
            sample_table(&ix, *n),
            sample_table(&ix, *f),
        );
        assert!(!is_packed(&old) && is_packed(&new) && is_external(&file));
        assert!(new.len() < old.len(), "{} vs {}", new.len(), old.len());
        assert!(file.len() < 32, "{}", file.len());
        assert!(
            external_len(&file).unwrap() as usize >= new.len(),
            "{file:?}"
        );
        assert_eq!(decode_samples(&old).unwrap().len(), 1500);
    }
}

/// A format this binary does not know is still refused (not misread).
#[test]
fn an_unknown_index_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ix = Index::open(dir.path()).unwrap();
        ix.meta.insert("format", &1u32.to_be_bytes()).unwrap();
        ix.db.flush().unwrap();
    }
    let e = Index::open(dir.path()).err().unwrap();
    assert!(e.to_string().contains("reindex"), "{e}");
}

/// What the writer indexes is in the packed form (in the segment file once the segment is
/// closed), and decodes to the frames recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_indexes_packed_tables() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let clock = clock();
    let ids: Vec<(u64, std::path::PathBuf)> = {
        let store = open(&cfg, &clock);
        let h = store.start_writer(key(), (0, 1)).unwrap();
        let s = stream_a();
        let p = Pos {
            media: 0,
            recv: t0(),
        };
        feed(&h, s, 1, p, 250);
        store.shutdown().await;
        let segs = store
            .segments(&key(), Time90k(0), Time90k(i64::MAX / 2))
            .unwrap();
        assert!(!segs.is_empty());
        for seg in &segs {
            let ix = store.segment_index(seg.id).unwrap().unwrap();
            assert_eq!(ix.samples.len(), seg.frames as usize);
            assert_valid(&seg.path, seg.frames);
        }
        drop(store);
        segs.iter().map(|s| (s.id, s.path.clone())).collect()
    };
    // Closed segments: the entry refers to the tables in the file, which are packed.
    let ix = Index::open(&dir.path().join("index")).unwrap();
    for (id, path) in ids {
        let mut e = ix.get_segment(id).unwrap().unwrap();
        assert!(is_external(&e.sample_table), "segment {id}");
        assert!(e.fragment_table.is_empty(), "segment {id}");
        vigie_store::filetables::load(&mut e, &path).unwrap();
        assert!(is_packed(&e.sample_table), "segment {id}");
        assert_eq!(
            decode_samples(&e.sample_table).unwrap().len(),
            e.frames as usize
        );
    }
}

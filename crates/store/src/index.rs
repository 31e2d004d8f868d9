//! The sled index: trees, key encoding and entry format.
//!
//! Trees:
//! * `meta`: `next_segment_id` (u64 BE), `next_stream_id` (u32 BE), `format` (u32 BE).
//! * `streams`: `"<camera>/<stream>"` → stream id (u32 BE); `streams_rev`: id → postcard(StreamKey).
//! * `blocks`, `ids`, `open` (index format 5, [`crate::blocks`]): a stream's closed segment
//!   entries packed by up to 32 in one value keyed by the [`seg_key`] of its first entry
//!   (stream id u32 BE ‖ start_90k u64 BE, sign bit flipped ‖ segment id u64 BE), so one
//!   stream's segments are contiguous and sorted by start, and "segments of S overlapping
//!   [t0, t1)" is one seek for the block holding `(S, t0 − MAX_SEGMENT_90K)` and one range scan
//!   from there to `(S, t1)`, filtered on end > t0; id → block rows, 64 ids a value; the
//!   entries of open segments, one item each. Entries are postcard ([`SegmentEntry`]).
//! * `segments`, `by_id`: formats 2–4's one item per entry (key as above) and id → key ‖
//!   length ‖ open flag rows ([`ByIdRow`]); migrated into the trees above at open, then empty.
//! * `params`: params id (u64 BE, FNV-1a of the postcard encoding) → postcard(VideoParams):
//!   codec parameters stored once, shared by all segments that use them.
//! * `garbage`: segment id → postcard(GarbageRow): a deletion in progress (survives a crash).
//! * `deletions`: when_90k (sign-flipped u64 BE) ‖ sequence (u64 BE) → postcard(DeletionRecord).

use serde::{Deserialize, Serialize};
use sled::Tree;

use vigie_core::dblock::{LOCK_WAIT, is_lock_conflict, retry_while_locked};
use vigie_core::{Codec, StreamKey, Time90k, VideoParams};

use crate::sampletable::TableCounts;
use crate::{DeletionRecord, StoreError};

/// Longest a segment can be in the index: the 5 min hard cap + the 10 s largest frame duration
/// + slew margin. Range scans start this far before the window.
pub const MAX_SEGMENT_90K: i64 = (300 + 20) * vigie_core::TIME_UNITS_PER_SEC;

/// 2: entries carry [`TableCounts`]. 3: new entries' sample tables are in the packed form
/// ([`crate::sampletable`]); format-2 entries (journal-form tables) stay as they are and are
/// read as before, so a format-2 index is opened and marked 3 in place (no migration).
/// 4: a closed segment's tables are in its file, its entry refers to them
/// ([`crate::filetables`]); entries holding their tables (older formats, open segments,
/// recovered ones) are read as before, so a format-2 or 3 index is opened and marked 4 in place.
/// The mark keeps a binary that cannot read the newer entries from opening the index.
/// 5: closed entries packed by stream in blocks of up to 32 (`blocks`), open ones in `open`,
/// `ids` instead of `by_id`
/// ([`crate::blocks`]); formats 2–4 (one `segments` item per entry) are migrated in place at
/// open (resumably: [`crate::blocks::migrate`]), their entries copied as they are.
pub const FORMAT: u32 = 5;

/// Formats [`Index::open`] accepts (and marks [`FORMAT`], migrating 2–4).
const READABLE_FORMATS: [u32; 4] = [2, 3, 4, 5];

/// One segment in the index: its [`EntryHead`] (what listings need) followed by the init
/// length and the tables. postcard lays a nested struct out inline, so the encoded bytes are
/// those of the flat layout older versions wrote (test `entry_bytes_are_those_of_the_flat_layout`),
/// and an [`EntryHead`] decodes from the prefix of an encoded entry: listing-only scans skip the
/// sample tables. Reads of head fields go through `Deref` (`entry.id`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentEntry {
    pub head: EntryHead,
    /// Length of the init segment (`ftyp` + `moov`): where the first fragment starts.
    pub init_len: u32,
    /// See [`crate::sampletable`].
    pub sample_table: Vec<u8>,
    /// See [`crate::sampletable`].
    pub fragment_table: Vec<u8>,
}

impl std::ops::Deref for SegmentEntry {
    type Target = EntryHead;
    fn deref(&self) -> &EntryHead {
        &self.head
    }
}

impl std::ops::DerefMut for SegmentEntry {
    fn deref_mut(&mut self) -> &mut EntryHead {
        &mut self.head
    }
}

/// The leading fields of a [`SegmentEntry`]: everything but the init length and the tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryHead {
    pub id: u64,
    pub stream_id: u32,
    /// Wall-clock start, 90 kHz.
    pub start_90k: i64,
    /// Wall-clock duration (media duration slewed toward the host clock; equal to it while open).
    pub wall_duration_90k: i64,
    /// Sum of the sample durations (RTP time).
    pub media_duration_90k: i64,
    /// Length of the file covered by this entry (durable bytes).
    pub bytes: u64,
    pub frames: u32,
    pub key_frames: u32,
    pub width: u16,
    pub height: u16,
    pub codec: Codec,
    pub params_id: u64,
    pub session_id: u64,
    pub open: bool,
    pub end_reason: Option<String>,
    /// Run, chunk and payload counts of the tables (for laying out playback files).
    pub counts: TableCounts,
}

impl EntryHead {
    pub fn start(&self) -> Time90k {
        Time90k(self.start_90k)
    }
    pub fn end(&self) -> Time90k {
        Time90k(self.start_90k.saturating_add(self.wall_duration_90k))
    }
    /// True if the segment reaches past `start` (an empty one counts if it starts there or
    /// later): the filter of a range scan that starts [`MAX_SEGMENT_90K`] early.
    pub fn overlaps(&self, start: Time90k) -> bool {
        self.end() > start || (self.wall_duration_90k == 0 && self.start() >= start)
    }
}

/// A deletion in progress.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GarbageRow {
    pub path: std::path::PathBuf,
    pub bytes: u64,
}

pub fn seg_key(stream_id: u32, start_90k: i64, id: u64) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..4].copy_from_slice(&stream_id.to_be_bytes());
    k[4..12].copy_from_slice(&flip(start_90k));
    k[12..].copy_from_slice(&id.to_be_bytes());
    k
}

/// A `by_id` row: the `segments` key, and the indexed length and open flag when the row has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByIdRow {
    pub key: [u8; 20],
    pub bytes_open: Option<(u64, bool)>,
}

impl ByIdRow {
    pub fn encode(key: &[u8; 20], bytes: u64, open: bool) -> [u8; 29] {
        let mut v = [0u8; 29];
        v[..20].copy_from_slice(key);
        v[20..28].copy_from_slice(&bytes.to_be_bytes());
        v[28] = u8::from(open);
        v
    }

    /// `None` for a value that is neither 20 nor 29 bytes long.
    pub fn decode(v: &[u8]) -> Option<ByIdRow> {
        let key: [u8; 20] = v.get(..20)?.try_into().ok()?;
        let bytes_open = match v.len() {
            20 => None,
            29 => Some((u64_of(&v[20..28])?, v[28] != 0)),
            _ => return None,
        };
        Some(ByIdRow { key, bytes_open })
    }

    pub fn stream_id(&self) -> u32 {
        u32::from_be_bytes([self.key[0], self.key[1], self.key[2], self.key[3]])
    }

    pub fn start_90k(&self) -> i64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.key[4..12]);
        (u64::from_be_bytes(b) ^ (1 << 63)) as i64
    }

    pub fn id(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.key[12..]);
        u64::from_be_bytes(b)
    }
}

fn flip(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn u64_of(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

fn u32_of(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

/// FNV-1a 64: a stable content hash for params ids.
pub(crate) fn fnv1a(data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `meta` mark: format 4's trees still hold what a migration copied (emptied in the
/// background, then dropped: [`Index::drop_legacy_step`]).
const LEGACY_TREES: &str = "legacy_trees_pending";

/// Where [`Index::drop_legacy_step`] is in format 4's trees.
#[derive(Debug, Default)]
pub struct LegacyCursor {
    /// 0: `segments`, 1: `by_id`.
    tree: u8,
    after: Option<sled::IVec>,
}

#[derive(Clone)]
pub struct Index {
    pub db: sled::Db,
    pub meta: Tree,
    pub streams: Tree,
    pub streams_rev: Tree,
    /// Format 5's closed entries, one value per block of a stream's consecutive segments
    /// ([`crate::blocks`]).
    pub blocks: Tree,
    /// Format 5's id → block rows, one value per 64 ids ([`crate::blocks`]).
    pub ids: Tree,
    /// Format 5's entries of open segments, one item each, keyed as [`seg_key`]: what a
    /// writer updates every `index_interval_ms`, moved into its block when it closes.
    pub open: Tree,
    /// Formats 2–4's entries, one item per segment: empty once migrated (kept open so tests
    /// can write an index as older binaries did).
    pub segments: Tree,
    /// Formats 2–4's id → `segments` key rows: empty once migrated.
    pub by_id: Tree,
    pub params: Tree,
    pub garbage: Tree,
    pub deletions: Tree,
}

fn is_sled_lock(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if is_lock_conflict(io))
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt { what: what.into() }
}

/// Default of sled's page cache (`storage.index_cache_bytes`): sled's own default is 1 GiB,
/// which a walk of a large index (background verification, reindex) fills, and the recorder
/// keeps for good. sled counts its cache in on-disk bytes; in memory a walked page costs ~3.6
/// times that (measured in format 4: a walk of 2 M `by_id` rows leaves +231 MiB resident with
/// 64 MiB, +60 with 16, +30 with 8, +3 with 1; docs/BENCHMARKS.md "Restart"). 8 MiB still holds
/// the upper levels of the trees and the newest leaves every writer and listing touches.
pub const DEFAULT_CACHE_BYTES: u64 = 8 << 20;

impl Index {
    /// One step of emptying format 4's trees after a migration (at most a chunk of keys,
    /// sled's cache settled after it, as the migration's copy): `true` once there is nothing
    /// left (both trees dropped, the mark cleared, or no migration ever). Resumable: a step
    /// interrupted leaves fewer keys for the next run.
    pub fn drop_legacy_step(&self, cursor: &mut LegacyCursor) -> Result<bool, StoreError> {
        if self.meta.get(LEGACY_TREES)?.is_none() {
            return Ok(true);
        }
        let tree = if cursor.tree == 0 {
            &self.segments
        } else {
            &self.by_id
        };
        match crate::blocks::empty_tree_step(tree, cursor.after.as_ref())? {
            Some(last) => cursor.after = Some(last),
            None if cursor.tree == 0 => {
                *cursor = LegacyCursor {
                    tree: 1,
                    after: None,
                };
            }
            None => {
                for name in ["segments", "by_id"] {
                    self.db.drop_tree(name)?;
                }
                self.meta.remove(LEGACY_TREES)?;
                self.db.flush()?;
                tracing::info!("the index's format 4 trees are emptied and dropped");
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub fn open(dir: &std::path::Path) -> Result<Index, StoreError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// [`Index::open`] with sled's page cache capped at `cache_bytes`.
    pub fn open_with_cache(dir: &std::path::Path, cache_bytes: u64) -> Result<Index, StoreError> {
        let db = retry_while_locked(
            LOCK_WAIT,
            || {
                // sled's settings, deliberately (docs/BENCHMARKS.md "Restart"):
                // * cache: `cache_bytes` (`storage.index_cache_bytes`, 8 MiB by default;
                //   sled's 1 GiB would be filled by a walk of the index and kept);
                // * log flush every 500 ms: what the writers' index updates may lose to a
                //   crash is re-read from the files by recovery (crates/store/README.md);
                // * no compression: entries are heads of ~100 B (format 4), and sled refuses
                //   an index whose compression setting changed, so it is pinned here;
                // * segment size: sled's default (512 KiB), which sled also refuses to change
                //   for an existing index (its own docs call the setting testing-only).
                sled::Config::new()
                    .path(dir)
                    .cache_capacity(cache_bytes)
                    .flush_every_ms(Some(500))
                    .use_compression(false)
                    .open()
            },
            is_sled_lock,
        )
        .map_err(|source| {
            if is_sled_lock(&source) {
                StoreError::InUse {
                    path: dir.to_owned(),
                }
            } else {
                StoreError::Index {
                    context: format!("opening {}", dir.display()),
                    source,
                }
            }
        })?;
        let t = |name: &str| {
            db.open_tree(name).map_err(|source| StoreError::Index {
                context: format!("opening tree {name}"),
                source,
            })
        };
        let meta = t("meta")?;
        match meta.get("format")? {
            None => {
                meta.insert("format", &FORMAT.to_be_bytes())?;
            }
            Some(v) if u32_of(&v) == Some(FORMAT) => {}
            Some(v) if u32_of(&v).is_some_and(|f| READABLE_FORMATS.contains(&f)) => {
                // Marked first (in one batch with the mark of a migration under way): a binary
                // that cannot read blocks refuses a half-migrated index.
                let mut b = sled::Batch::default();
                b.insert("format", &FORMAT.to_be_bytes());
                b.insert("migrating", &u32_of(&v).unwrap_or(0).to_be_bytes());
                meta.apply_batch(b)?;
                db.flush()?;
            }
            Some(_) => {
                return Err(corrupt(format!(
                    "index format is not {FORMAT} (run `vigie reindex` to rebuild it from the segment files)"
                )));
            }
        }
        if let Some(from) = meta.get("migrating")? {
            let started = std::time::Instant::now();
            tracing::info!(
                from = u32_of(&from),
                to = FORMAT,
                "migrating the index in place (entries packed in blocks)"
            );
            let moved = {
                let (segments, by_id) = (t("segments")?, t("by_id")?);
                drop(by_id);
                crate::blocks::migrate(&meta, &segments, &t("blocks")?, &t("ids")?, &t("open")?)?
            };
            db.flush()?;
            // The old trees are emptied later, in the background ([`Index::drop_legacy_step`],
            // from the verification thread): dropping them here read every page back at once
            // (+1.4 GB and 10 s at 30 days × 50 streams, before recording could resume).
            let mut b = sled::Batch::default();
            for k in ["migrating", "migrate_segments_after"] {
                b.remove(k);
            }
            b.insert(LEGACY_TREES, &[1u8][..]);
            meta.apply_batch(b)?;
            db.flush()?;
            tracing::info!(
                from = u32_of(&from),
                entries = moved,
                ms = started.elapsed().as_millis() as u64,
                "index migrated to format 5"
            );
        }
        let idx = Index {
            meta,
            streams: t("streams")?,
            streams_rev: t("streams_rev")?,
            blocks: t("blocks")?,
            ids: t("ids")?,
            open: t("open")?,
            segments: t("segments")?,
            by_id: t("by_id")?,
            params: t("params")?,
            garbage: t("garbage")?,
            deletions: t("deletions")?,
            db,
        };
        idx.drop_stale_open_rows()?;
        Ok(idx)
    }

    pub fn next_segment_id(&self) -> Result<u64, StoreError> {
        Ok(self
            .meta
            .get("next_segment_id")?
            .and_then(|v| u64_of(&v))
            .unwrap_or(1))
    }

    pub fn set_next_segment_id(&self, id: u64) -> Result<(), StoreError> {
        self.meta.fetch_and_update("next_segment_id", |old| {
            let cur = old.and_then(u64_of).unwrap_or(1);
            Some(cur.max(id).to_be_bytes().to_vec())
        })?;
        Ok(())
    }

    /// The stream's id, allocating one if needed.
    pub fn stream_id(&self, key: &StreamKey) -> Result<u32, StoreError> {
        let name = key.to_string();
        if let Some(v) = self.streams.get(&name)? {
            return u32_of(&v).ok_or_else(|| corrupt(format!("stream id of {name}")));
        }
        let prev = self.meta.fetch_and_update("next_stream_id", |old| {
            let cur = old.and_then(u32_of).unwrap_or(1);
            Some(cur.saturating_add(1).to_be_bytes().to_vec())
        })?;
        let id = prev.and_then(|v| u32_of(&v)).unwrap_or(1);
        match self.streams.compare_and_swap(
            &name,
            None as Option<&[u8]>,
            Some(&id.to_be_bytes()[..]),
        )? {
            Ok(()) => {
                self.streams_rev
                    .insert(id.to_be_bytes(), postcard::to_allocvec(key)?)?;
                Ok(id)
            }
            Err(e) => e
                .current
                .and_then(|v| u32_of(&v))
                .ok_or_else(|| corrupt(format!("stream id of {name}"))),
        }
    }

    pub fn existing_stream_id(&self, key: &StreamKey) -> Result<Option<u32>, StoreError> {
        Ok(self.streams.get(key.to_string())?.and_then(|v| u32_of(&v)))
    }

    /// All streams known to the index.
    pub fn all_streams(&self) -> Result<Vec<(u32, StreamKey)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.streams_rev.iter() {
            let (k, v) = kv?;
            let id = u32_of(&k).ok_or_else(|| corrupt("streams_rev key"))?;
            out.push((id, postcard::from_bytes(&v)?));
        }
        Ok(out)
    }

    pub fn stream_key(&self, stream_id: u32) -> Result<Option<StreamKey>, StoreError> {
        match self.streams_rev.get(stream_id.to_be_bytes())? {
            Some(v) => Ok(Some(postcard::from_bytes(&v)?)),
            None => Ok(None),
        }
    }

    /// Stores `params` once; returns its id.
    pub fn put_params(&self, params: &VideoParams) -> Result<u64, StoreError> {
        let enc = postcard::to_allocvec(params)?;
        let mut id = fnv1a(&enc);
        loop {
            match self.params.compare_and_swap(
                id.to_be_bytes(),
                None as Option<&[u8]>,
                Some(enc.as_slice()),
            )? {
                Ok(()) => return Ok(id),
                Err(e) if e.current.as_deref() == Some(enc.as_slice()) => return Ok(id),
                Err(_) => id = id.wrapping_add(1), // hash collision: probe the next id
            }
        }
    }

    pub fn get_params(&self, id: u64) -> Result<Option<VideoParams>, StoreError> {
        match self.params.get(id.to_be_bytes())? {
            Some(v) => Ok(Some(postcard::from_bytes(&v)?)),
            None => Ok(None),
        }
    }

    pub fn deletion_key(when: Time90k, seq: u64) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&flip(when.0));
        k[8..].copy_from_slice(&seq.to_be_bytes());
        k
    }

    pub fn deletions_between(
        &self,
        start: Time90k,
        end: Time90k,
    ) -> Result<Vec<DeletionRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self
            .deletions
            .range(Self::deletion_key(start, 0)..Self::deletion_key(end, 0))
        {
            let (_, v) = kv?;
            out.push(postcard::from_bytes(&v)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock released within [`LOCK_WAIT`] (as sled's I/O threads release it just after a
    /// close) is waited for; one still held after it is reported as another Vigie running.
    #[test]
    fn a_second_open_waits_for_the_lock_then_reports_it_in_use() {
        let d = tempfile::tempdir().unwrap();
        let first = Index::open(d.path()).unwrap();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(first);
        });
        let second = Index::open(d.path()).unwrap();
        closer.join().unwrap();
        let e = Index::open(d.path()).err().unwrap();
        assert!(matches!(e, StoreError::InUse { .. }), "{e}");
        assert!(e.to_string().contains("already running"), "{e}");
        drop(second);
    }

    #[test]
    fn entry_head_decodes_from_an_entry_prefix() {
        let e = SegmentEntry {
            head: EntryHead {
                id: 7,
                stream_id: 2,
                start_90k: -5,
                wall_duration_90k: 900_000,
                media_duration_90k: 899_990,
                bytes: 1 << 33,
                frames: 250,
                key_frames: 5,
                width: 1920,
                height: 1080,
                codec: Codec::H265,
                params_id: 99,
                session_id: 3,
                open: true,
                end_reason: Some("rotation".into()),
                counts: TableCounts {
                    stts_runs: 4,
                    chunks: 5,
                    stsc_runs: 2,
                    payload_bytes: 1 << 34,
                },
            },
            init_len: 800,
            sample_table: vec![1, 2, 3],
            fragment_table: vec![4, 5],
        };
        let enc = postcard::to_allocvec(&e).unwrap();
        // The bytes of the flat layout (format 2 and 3 indexes written before the head was
        // nested): nesting must not change them.
        let hex: String = enc.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "070209c0ee6dacee6d8080808020fa0105800fb808016303010108726f746174696f6e04050280808080\
             40a00603010203020405",
            "entry_bytes_are_those_of_the_flat_layout"
        );
        let (h, _): (EntryHead, _) = postcard::take_from_bytes(&enc).unwrap();
        assert_eq!(
            (h.id, h.start_90k, h.bytes, h.codec, h.end_reason.as_deref()),
            (7, -5, 1 << 33, Codec::H265, Some("rotation"))
        );
        assert_eq!((h.open, h.session_id, h.params_id), (true, 3, 99));
        assert_eq!(h.counts, e.counts);
    }

    #[test]
    fn by_id_rows_round_trip_and_old_rows_still_decode() {
        let k = seg_key(3, -90_000, 42);
        let row = ByIdRow::decode(&ByIdRow::encode(&k, 1 << 40, true)).unwrap();
        assert_eq!(row.bytes_open, Some((1 << 40, true)));
        assert_eq!(
            (row.stream_id(), row.start_90k(), row.id()),
            (3, -90_000, 42)
        );
        let old = ByIdRow::decode(&k).unwrap();
        assert_eq!((old.key, old.bytes_open), (k, None));
        assert_eq!(ByIdRow::decode(&k[..19]), None);
    }

    #[test]
    fn key_order_follows_start_including_negative_times() {
        let a = seg_key(1, -5, 9);
        let b = seg_key(1, 0, 1);
        let c = seg_key(1, 90_000, 0);
        let d = seg_key(2, i64::MIN, 0);
        assert!(a < b && b < c && c < d);
    }
}

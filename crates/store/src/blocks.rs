//! Index format 5: a stream's closed segment entries packed in blocks of up to 32 (issue 16,
//! memory).
//!
//! sled 0.34 keeps ~75 B of memory per item it has opened, whatever its cache (16-item leaves;
//! its page table and snapshot keep ~500 B per page): one item per segment (and one `by_id` row)
//! made the recorder's memory grow with the history kept (+635 MiB at 8.64 M segments). Here a
//! stream's consecutive closed segments share **one sled value per [`BLOCK_ENTRIES`] entries**
//! (half an hour of 1-minute segments), and the id lookup is one value per 64 consecutive ids:
//! ~20 times fewer items than format 4. The cap (rather than a fixed time span) bounds what
//! one update rewrites whatever the segment length (a 4 s segment makes 900 an hour).
//!
//! Trees (owned here; the rest of the index is in [`crate::index`]):
//! * `blocks`: key = the [`seg_key`] of the entry the block was started with (stream id ‖
//!   start ‖ id, 20 bytes) → a *block*: version byte `1`, then each entry as u32 LE length ‖
//!   postcard [`SegmentEntry`], sorted by (start, id). A block holds the stream's entries from
//!   its key up to the next block's key, so the entry keyed K is in the block with the greatest
//!   key ≤ K (one reverse seek: [`Index::floor_block`]). Appending to a full block starts a new
//!   one; an entry inserted among older ones (an orphan indexed late, a clock stepped back)
//!   goes into the block whose range holds it even if full (rare; never split). A block is
//!   never empty (its last entry removed, the key is removed).
//! * `ids`: key = segment id >> 6 (u64 BE) → rows of 21 bytes (id & 63, block key), sorted:
//!   where each segment's entry is ([`Index::get_segment`], orphan checks, the newest ids).
//! * `open`: [`seg_key`] → the entry of a segment still open: a writer's periodic update
//!   rewrites this one small item (as in format 4); when the segment closes its entry moves to
//!   its block and the open row is removed (a crash in between leaves both: readers prefer the
//!   block's, and [`Index::open`] drops the stale row).
//!
//! Writes: [`Index::put_segment`] writes the id row first, then the entry (block: a
//! compare-and-swap loop). Removal: entry first, then the id row. A crash between the two
//! leaves an id row without an entry, which reads as "no entry" (never an entry without its id
//! row). Deletions by retention rewrite the block in the same sled transaction as the garbage
//! row and the deletion record ([`Index::deletion_txn`]).
//!
//! What this does not own: what an entry holds ([`crate::index::SegmentEntry`]), the checks
//! against files ([`crate::recovery`], [`crate::verify`]).
//!
//! **Migration** (formats 2, 3, 4 → 5, at open, [`migrate`]): the old `segments` tree (one
//! item per entry) is copied in key order into id rows and blocks, in chunks, each chunk's
//! progress recorded in `meta` after its writes (a kill −9 resumes from there; a chunk written
//! twice is cut into the same blocks and merges into them: idempotent); the old `segments` and
//! `by_id` trees are emptied later, in the background ([`empty_tree_step`], driven by
//! `Index::drop_legacy_step`), then dropped. The index is marked format 5 before the first chunk,
//! so an older binary refuses a half-migrated index rather than misreading it.

use std::ops::Bound;

use sled::{IVec, Tree};
use vigie_core::Time90k;

use crate::StoreError;
use crate::index::{ByIdRow, EntryHead, Index, MAX_SEGMENT_90K, SegmentEntry, seg_key};

/// Entries a block is filled to before a new one is started.
pub const BLOCK_ENTRIES: usize = 32;

/// Ids per `ids` row: 64 consecutive ids (21 B each, ≤ 1,344 B a value).
const ID_CHUNK_BITS: u32 = 6;
const ID_ROW: usize = 21;
const BLOCK_VERSION: u8 = 1;

/// Accesses sled 0.34's cache queues per shard before it accounts for them (`lru.rs`,
/// `MAX_QUEUE_ITEMS`): until then, the pages read are resident whatever `cache_capacity` says.
const SLED_LRU_QUEUE: usize = 64;

/// Makes sled evict now what a walk has read beyond its cache, in the shard of the page
/// holding `key` and in those of the index pages above it.
///
/// Why: sled 0.34 keeps its LRU in 256 shards (page id mod 256) and queues each access until
/// 64 of one shard's are waiting; only then does it evict. A walk in key order meets each leaf
/// a few times and the same shard again only ~256 leaves later, so a shard's queue filled only
/// after ~20 leaves: ~5,000 leaves of ~46 KB (blocks) stayed resident, a plateau of ~160 MiB
/// over the open index at 8.64 M segments (docs/BENCHMARKS.md, "Restart"), however small the
/// cache. Reading the last key 64 times fills the queue of its shard (and of the index pages
/// on the way), so each shard keeps what its LRU allows: about one leaf (a leaf outweighs a
/// shard's 1/256 of the cache, and sled never evicts the page just added). Cost: 64 cached
/// lookups per call (microseconds each), against a batch of 256 entries checked.
fn settle_cache(tree: &Tree, key: &[u8]) -> Result<(), StoreError> {
    for _ in 0..SLED_LRU_QUEUE {
        tree.get(key)?;
    }
    Ok(())
}

/// A block's key: the [`seg_key`] of the entry it was started with.
pub type BlockKey = [u8; 20];

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt { what: what.into() }
}

/// The entries of one block, in order: (offset, length) of each encoded entry.
fn spans(v: &[u8]) -> Result<Vec<(usize, usize)>, StoreError> {
    if v.first() != Some(&BLOCK_VERSION) {
        return Err(corrupt("index block version"));
    }
    let mut out = Vec::new();
    let mut off = 1usize;
    while off < v.len() {
        let len = v
            .get(off..off + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| corrupt("index block entry length"))? as usize;
        off += 4;
        if off + len > v.len() {
            return Err(corrupt("index block entry past its end"));
        }
        out.push((off, len));
        off += len;
    }
    Ok(out)
}

/// How many entries a block holds.
pub fn block_len(v: &[u8]) -> Result<usize, StoreError> {
    Ok(spans(v)?.len())
}

/// Every entry of a block with its head decoded; the encoded entry is a slice of the block
/// (reference-counted, no copy).
pub(crate) fn block_heads(v: &IVec) -> Result<Vec<(EntryHead, IVec)>, StoreError> {
    spans(v)?
        .into_iter()
        .map(|(off, len)| {
            let e = v.subslice(off, len);
            let (h, _): (EntryHead, _) = postcard::take_from_bytes(&e)?;
            Ok((h, e))
        })
        .collect()
}

/// `block` with `e` put in place (an entry with the same id replaced).
fn block_with(block: Option<&[u8]>, e: &SegmentEntry) -> Result<Vec<u8>, StoreError> {
    let enc = postcard::to_allocvec(e)?;
    let mut items: Vec<(i64, u64, &[u8])> = Vec::new();
    if let Some(b) = block {
        for (off, len) in spans(b)? {
            let s = &b[off..off + len];
            let (h, _): (EntryHead, _) = postcard::take_from_bytes(s)?;
            if h.id != e.id {
                items.push((h.start_90k, h.id, s));
            }
        }
    }
    items.push((e.start_90k, e.id, &enc));
    items.sort_by_key(|&(s, id, _)| (s, id));
    Ok(encode_block(items.iter().map(|&(_, _, s)| s)))
}

fn encode_block<'a>(items: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = vec![BLOCK_VERSION];
    for s in items {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s);
    }
    out
}

/// `block` without the entry `id` (`None`: nothing left; `Some(same)` if it was not there).
fn block_without(block: &[u8], id: u64) -> Result<Option<Vec<u8>>, StoreError> {
    let mut kept = Vec::new();
    for (off, len) in spans(block)? {
        let s = &block[off..off + len];
        let (h, _): (EntryHead, _) = postcard::take_from_bytes(s)?;
        if h.id != id {
            kept.push(s);
        }
    }
    Ok((!kept.is_empty()).then(|| encode_block(kept.into_iter())))
}

fn id_chunk_key(id: u64) -> [u8; 8] {
    (id >> ID_CHUNK_BITS).to_be_bytes()
}

fn id_low(id: u64) -> u8 {
    (id & ((1 << ID_CHUNK_BITS) - 1)) as u8
}

/// Rows of an `ids` value: (id, block key).
fn id_rows(chunk_key: &[u8], v: &[u8]) -> Result<Vec<(u64, BlockKey)>, StoreError> {
    let hi = <[u8; 8]>::try_from(chunk_key)
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt("ids key length"))?;
    if !v.len().is_multiple_of(ID_ROW) {
        return Err(corrupt("ids row length"));
    }
    Ok(v.chunks_exact(ID_ROW)
        .map(|r| {
            let mut k = [0u8; 20];
            k.copy_from_slice(&r[1..]);
            ((hi << ID_CHUNK_BITS) | u64::from(r[0]), k)
        })
        .collect())
}

fn encode_id_rows(rows: &[(u64, BlockKey)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * ID_ROW);
    for (id, k) in rows {
        out.push(id_low(*id));
        out.extend_from_slice(k);
    }
    out
}

/// Merges `new` rows into an `ids` value (a row for the same id replaced).
fn id_rows_with(
    chunk_key: &[u8],
    old: Option<&[u8]>,
    new: &[(u64, BlockKey)],
) -> Result<Vec<u8>, StoreError> {
    let mut rows = match old {
        Some(v) => id_rows(chunk_key, v)?,
        None => Vec::new(),
    };
    rows.retain(|(id, _)| !new.iter().any(|(n, _)| n == id));
    rows.extend_from_slice(new);
    rows.sort_by_key(|(id, _)| *id);
    Ok(encode_id_rows(&rows))
}

/// Read-modify-write of one value with a compare-and-swap loop (`f` may run more than once;
/// `None` from it removes the key).
fn cas_update(
    tree: &Tree,
    key: &[u8],
    mut f: impl FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>, StoreError>,
) -> Result<(), StoreError> {
    let mut cur = tree.get(key)?;
    loop {
        let new = f(cur.as_deref())?;
        match tree.compare_and_swap(key, cur.as_ref(), new)? {
            Ok(()) => return Ok(()),
            Err(e) => cur = e.current,
        }
    }
}

/// The heads of a block-tree scan, in order: lazily, one block decoded at a time.
struct Heads<I> {
    blocks: I,
    cur: std::vec::IntoIter<(EntryHead, IVec)>,
}

impl<I: Iterator<Item = sled::Result<(IVec, IVec)>>> Iterator for Heads<I> {
    type Item = Result<(EntryHead, IVec), StoreError>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(x) = self.cur.next() {
                return Some(Ok(x));
            }
            match self.blocks.next()? {
                Ok((_, v)) => match block_heads(&v) {
                    Ok(h) => self.cur = h.into_iter(),
                    Err(e) => return Some(Err(e)),
                },
                Err(e) => return Some(Err(e.into())),
            }
        }
    }
}

fn heads<I: Iterator<Item = sled::Result<(IVec, IVec)>>>(
    blocks: I,
) -> impl Iterator<Item = Result<(EntryHead, IVec), StoreError>> {
    Heads {
        blocks,
        cur: Vec::new().into_iter(),
    }
}

/// The range of block keys of one stream.
fn stream_range(sid: u32) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (
        Bound::Included(sid.to_be_bytes().to_vec()),
        match sid.checked_add(1) {
            Some(n) => Bound::Excluded(n.to_be_bytes().to_vec()),
            None => Bound::Unbounded,
        },
    )
}

/// What [`Index::deletion_txn`] writes besides removing the entry.
pub(crate) struct DeletionWrite<'a> {
    pub garbage: Option<&'a [u8]>,
    pub rec_key: &'a [u8],
    pub rec: &'a [u8],
}

/// Merges two iterators of heads sorted by (start, id); on equal keys (an entry caught
/// between its open row and its block by a crash) the block's wins.
struct Merge<A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
    rev: bool,
}

type HeadItem = Result<(EntryHead, IVec), StoreError>;

fn order(h: &HeadItem) -> Option<(i64, u64)> {
    h.as_ref().ok().map(|(h, _)| (h.start_90k, h.id))
}

impl<A: Iterator<Item = HeadItem>, B: Iterator<Item = HeadItem>> Iterator for Merge<A, B> {
    type Item = HeadItem;
    fn next(&mut self) -> Option<HeadItem> {
        let (ka, kb) = match (self.a.peek(), self.b.peek()) {
            (None, None) => return None,
            (Some(_), None) => return self.a.next(),
            (None, Some(_)) => return self.b.next(),
            (Some(x), Some(y)) => (order(x), order(y)),
        };
        match (ka, kb) {
            (None, _) => self.a.next(),
            (_, None) => self.b.next(),
            (Some(x), Some(y)) if x == y => {
                self.b.next();
                self.a.next()
            }
            (Some(x), Some(y)) if (x < y) != self.rev => self.a.next(),
            _ => self.b.next(),
        }
    }
}

fn merge<A: Iterator<Item = HeadItem>, B: Iterator<Item = HeadItem>>(
    a: A,
    b: B,
    rev: bool,
) -> Merge<A, B> {
    Merge {
        a: a.peekable(),
        b: b.peekable(),
        rev,
    }
}

fn open_head(v: IVec) -> HeadItem {
    let (h, _): (EntryHead, _) = postcard::take_from_bytes(&v)?;
    Ok((h, v))
}

fn key_of(e: &EntryHead) -> [u8; 20] {
    seg_key(e.stream_id, e.start_90k, e.id)
}

fn to_key(k: &[u8]) -> Result<BlockKey, StoreError> {
    <BlockKey>::try_from(k).map_err(|_| corrupt("block key length"))
}

/// Where a closed entry goes: `(block key, its value before, its value after)`.
type Placement = (BlockKey, Option<IVec>, Vec<u8>);

impl Index {
    /// The block whose range holds the entry keyed `k` (the greatest block key ≤ `k` of the
    /// same stream): one reverse seek.
    pub(crate) fn floor_block(&self, k: &[u8; 20]) -> Result<Option<(BlockKey, IVec)>, StoreError> {
        let lo = seg_key(crate::recovery::key_fields(k).0, i64::MIN, 0);
        match self.blocks.range(lo..=*k).next_back() {
            Some(kv) => {
                let (bk, v) = kv?;
                Ok(Some((to_key(&bk)?, v)))
            }
            None => Ok(None),
        }
    }

    /// Where closed entry `e` goes now: into the block whose range holds it, or a new block
    /// keyed by it when that one is full and `e` comes after its last entry (or there is none).
    fn place(&self, e: &SegmentEntry) -> Result<Placement, StoreError> {
        let k = key_of(e);
        if let Some((bk, v)) = self.floor_block(&k)? {
            let entries = block_heads(&v)?;
            let holds = entries.iter().any(|(h, _)| h.id == e.id);
            let after_last = entries.last().is_none_or(|(h, _)| key_of(h) < k);
            if holds || entries.len() < BLOCK_ENTRIES || !after_last {
                let nv = block_with(Some(&v), e)?;
                return Ok((bk, Some(v), nv));
            }
        }
        Ok((k, None, block_with(None, e)?))
    }

    /// Stores (or replaces) a segment's entry: its id row first, then the entry — in the
    /// `open` tree while the segment is open (a writer's periodic update rewrites one small
    /// item), in its block once closed (then its open row is removed).
    pub fn put_segment(&self, e: &SegmentEntry) -> Result<(), StoreError> {
        let sk = key_of(e);
        let prev = self.block_of_id(e.id)?;
        if e.open {
            if prev != Some(sk) {
                self.set_id_row(e.id, &sk)?;
            }
            self.open.insert(sk, postcard::to_allocvec(e)?)?;
            return Ok(());
        }
        if let Some(old) = prev
            && old != sk
            && self
                .block_heads_of(&old)?
                .is_some_and(|hs| hs.iter().any(|h| h.id == e.id && key_of(h) != sk))
        {
            // The entry's start changed: not left behind under the old one.
            self.remove_from_block(&old, e.id)?;
        }
        let mut row = prev;
        loop {
            let (bk, old, new) = self.place(e)?;
            if row != Some(bk) {
                self.set_id_row(e.id, &bk)?;
                row = Some(bk);
            }
            if self.blocks.compare_and_swap(bk, old, Some(new))?.is_ok() {
                break;
            }
        }
        self.open.remove(sk)?;
        Ok(())
    }

    fn set_id_row(&self, id: u64, bk: &BlockKey) -> Result<(), StoreError> {
        let ck = id_chunk_key(id);
        cas_update(&self.ids, &ck, |v| {
            id_rows_with(&ck, v, &[(id, *bk)]).map(Some)
        })
    }

    fn block_heads_of(&self, bk: &BlockKey) -> Result<Option<Vec<EntryHead>>, StoreError> {
        match self.blocks.get(bk)? {
            Some(v) => Ok(Some(block_heads(&v)?.into_iter().map(|(h, _)| h).collect())),
            None => Ok(None),
        }
    }

    /// Open rows that a crash left beside their entry's block (the block was written, the
    /// open row not yet removed) are removed; readers already prefer the block's.
    pub(crate) fn drop_stale_open_rows(&self) -> Result<(), StoreError> {
        for kv in self.open.iter() {
            let (k, v) = kv?;
            let (h, _) = open_head(v)?;
            if self.block_head(&key_of(&h), h.id)?.is_some() {
                self.open.remove(k)?;
            }
        }
        Ok(())
    }

    /// The block key recorded for segment `id`.
    fn block_of_id(&self, id: u64) -> Result<Option<BlockKey>, StoreError> {
        let ck = id_chunk_key(id);
        let Some(v) = self.ids.get(ck)? else {
            return Ok(None);
        };
        Ok(id_rows(&ck, &v)?
            .into_iter()
            .find(|(i, _)| *i == id)
            .map(|(_, k)| k))
    }

    /// True if the index has an entry (or an id row left by a crash mid-removal) for `id`.
    pub fn contains_id(&self, id: u64) -> Result<bool, StoreError> {
        Ok(self.block_of_id(id)?.is_some())
    }

    fn remove_from_block(&self, bk: &BlockKey, id: u64) -> Result<(), StoreError> {
        cas_update(&self.blocks, bk, |v| match v {
            Some(b) => block_without(b, id),
            None => Ok(None),
        })
    }

    fn remove_id_row(&self, id: u64) -> Result<(), StoreError> {
        let ck = id_chunk_key(id);
        cas_update(&self.ids, &ck, |v| {
            let Some(v) = v else { return Ok(None) };
            let mut rows = id_rows(&ck, v)?;
            rows.retain(|(i, _)| *i != id);
            Ok((!rows.is_empty()).then(|| encode_id_rows(&rows)))
        })
    }

    /// The entry `id` in block `bk` or, if not there, among the stream's open rows: its head
    /// and encoding.
    fn find(&self, bk: &BlockKey, id: u64) -> Result<Option<(EntryHead, IVec)>, StoreError> {
        if let Some(v) = self.blocks.get(bk)? {
            for (h, e) in block_heads(&v)? {
                if h.id == id {
                    return Ok(Some((h, e)));
                }
            }
        }
        for kv in self.open.scan_prefix(&bk[..4]) {
            let (h, v) = open_head(kv?.1)?;
            if h.id == id {
                return Ok(Some((h, v)));
            }
        }
        Ok(None)
    }

    /// The head of the closed entry keyed `k` in the block whose range holds it.
    fn block_head(&self, k: &[u8; 20], id: u64) -> Result<Option<EntryHead>, StoreError> {
        let Some((_, v)) = self.floor_block(k)? else {
            return Ok(None);
        };
        Ok(block_heads(&v)?
            .into_iter()
            .find(|(h, _)| h.id == id && key_of(h) == *k)
            .map(|(h, _)| h))
    }

    /// A segment's entry by id.
    pub fn get_segment(&self, id: u64) -> Result<Option<SegmentEntry>, StoreError> {
        let Some(bk) = self.block_of_id(id)? else {
            return Ok(None);
        };
        match self.find(&bk, id)? {
            Some((_, e)) => Ok(Some(postcard::from_bytes(&e)?)),
            None => Ok(None),
        }
    }

    /// The head of the entry of segment `id` of `stream_id` starting at `start_90k` (what a
    /// [`seg_key`] names).
    pub fn head_at(
        &self,
        stream_id: u32,
        start_90k: i64,
        id: u64,
    ) -> Result<Option<EntryHead>, StoreError> {
        let k = seg_key(stream_id, start_90k, id);
        if let Some(h) = self.block_head(&k, id)? {
            return Ok(Some(h));
        }
        match self.open.get(k)? {
            Some(v) => Ok(Some(open_head(v)?.0)),
            None => Ok(None),
        }
    }

    /// The head of entry `id`, recorded as being in block `bk`.
    pub fn head_in(&self, bk: &BlockKey, id: u64) -> Result<Option<EntryHead>, StoreError> {
        Ok(self.find(bk, id)?.map(|(h, _)| h))
    }

    /// Removes a segment's entry (its block or open row, then its id row).
    pub fn remove_segment(&self, e: &EntryHead) -> Result<(), StoreError> {
        let k = key_of(e);
        self.open.remove(k)?;
        if let Some((bk, _)) = self.floor_block(&k)? {
            self.remove_from_block(&bk, e.id)?;
        }
        self.remove_id_row(e.id)
    }

    /// The index half of a deletion, in one sled transaction: the entry out of its block (or
    /// its open row), its id row, a garbage row (if any) and the deletion record.
    pub(crate) fn deletion_txn(
        &self,
        h_stream: u32,
        h_start: i64,
        id: u64,
        w: &DeletionWrite<'_>,
    ) -> Result<(), StoreError> {
        use sled::Transactional;
        use sled::transaction::ConflictableTransactionError as C;
        let sk = seg_key(h_stream, h_start, id);
        // Blocks are never split and a new one is only ever keyed after the full block's
        // last entry: the block holding `sk` now is the one holding it at commit.
        let bk = self.floor_block(&sk)?.map(|(k, _)| k);
        let ck = id_chunk_key(id);
        let idk = id.to_be_bytes();
        (
            &self.blocks,
            &self.ids,
            &self.open,
            &self.garbage,
            &self.deletions,
        )
            .transaction(|(blocks, ids, open, garb, dels)| {
                if let Some(bk) = &bk
                    && let Some(b) = blocks.get(bk)?
                {
                    match block_without(&b, id).map_err(C::Abort)? {
                        Some(nb) => blocks.insert(&bk[..], nb)?,
                        None => blocks.remove(&bk[..])?,
                    };
                }
                open.remove(&sk[..])?;
                if let Some(v) = ids.get(ck)? {
                    let mut rows = id_rows(&ck, &v).map_err(C::Abort)?;
                    rows.retain(|(i, _)| *i != id);
                    if rows.is_empty() {
                        ids.remove(&ck[..])?;
                    } else {
                        ids.insert(&ck[..], encode_id_rows(&rows))?;
                    }
                }
                if let Some(g) = w.garbage {
                    garb.insert(&idk[..], g)?;
                }
                dels.insert(w.rec_key, w.rec)?;
                Ok::<(), C<StoreError>>(())
            })?;
        Ok(())
    }

    /// The open rows of a stream in a [`seg_key`] range, in order (few: a stream has one
    /// segment open, more only between a crash and recovery).
    fn open_rows(&self, lo: [u8; 20], hi: [u8; 20]) -> Vec<HeadItem> {
        self.open.range(lo..hi).map(|kv| open_head(kv?.1)).collect()
    }

    /// The blocks of stream `sid` that can hold entries keyed from `from` (exclusive of
    /// nothing) up to `to` (exclusive): the floor block of `from`, then every block before `to`.
    fn blocks_from(&self, from: &[u8; 20], to: &[u8; 20]) -> Result<sled::Iter, StoreError> {
        let lo = match self.floor_block(from)? {
            Some((bk, _)) => bk,
            None => *from,
        };
        Ok(if lo < *to {
            self.blocks.range(lo..*to)
        } else {
            self.blocks.range(lo..lo)
        })
    }

    /// [`Index::segments_overlapping`] decoding only each entry's [`EntryHead`]; the encoded
    /// entry comes along (a slice of its block, reference-counted) for a full decode later.
    /// Lazy: one block decoded at a time; the caller keeps what it needs.
    pub fn segments_overlapping_heads(
        &self,
        stream_id: u32,
        start: Time90k,
        end: Time90k,
    ) -> impl Iterator<Item = Result<(EntryHead, IVec), StoreError>> + use<> {
        let from = seg_key(stream_id, start.0.saturating_sub(MAX_SEGMENT_90K), 0);
        let to = seg_key(stream_id, end.0, 0);
        let (blocks, first_err) = match self.blocks_from(&from, &to) {
            Ok(it) => (Some(it), None),
            Err(e) => (None, Some(Err(e))),
        };
        let open = self.open_rows(from, to);
        first_err.into_iter().chain(
            merge(heads(blocks.into_iter().flatten()), open.into_iter(), false).filter(move |r| {
                match r {
                    Ok((h, _)) => h.start_90k < end.0 && h.overlaps(start),
                    Err(_) => true,
                }
            }),
        )
    }

    /// Segments of a stream overlapping [start, end), in start order: lazily, one block at a
    /// time (nothing accumulated).
    pub fn segments_overlapping(
        &self,
        stream_id: u32,
        start: Time90k,
        end: Time90k,
    ) -> impl Iterator<Item = Result<SegmentEntry, StoreError>> + use<> {
        self.segments_overlapping_heads(stream_id, start, end).map(
            |r| -> Result<SegmentEntry, StoreError> {
                Ok(postcard::from_bytes::<SegmentEntry>(&r?.1)?)
            },
        )
    }

    /// Every head of a stream in start order (lazily), blocks and open rows merged.
    fn stream_heads(&self, sid: u32) -> impl Iterator<Item = HeadItem> + use<> {
        let open = self.open_rows(seg_key(sid, i64::MIN, 0), seg_key(sid, i64::MAX, u64::MAX));
        merge(
            heads(self.blocks.range(stream_range(sid))),
            open.into_iter(),
            false,
        )
    }

    /// The oldest and the newest segment head of a stream (two seeks, nothing walked).
    pub fn stream_extent(
        &self,
        stream_id: u32,
    ) -> Result<Option<(EntryHead, EntryHead)>, StoreError> {
        let Some(first) = self.stream_heads(stream_id).next().transpose()? else {
            return Ok(None);
        };
        let last = self
            .newest_heads(stream_id, 1)?
            .pop()
            .unwrap_or_else(|| first.0.clone());
        Ok(Some((first.0, last)))
    }

    /// The newest `n` heads of a stream by start, newest first (a reverse scan of its blocks,
    /// its open rows merged).
    pub fn newest_heads(&self, stream_id: u32, n: usize) -> Result<Vec<EntryHead>, StoreError> {
        let mut open = self.open_rows(
            seg_key(stream_id, i64::MIN, 0),
            seg_key(stream_id, i64::MAX, u64::MAX),
        );
        open.reverse();
        let blocks =
            self.blocks
                .range(stream_range(stream_id))
                .rev()
                .flat_map(|kv| -> Vec<HeadItem> {
                    match kv {
                        Ok((_, v)) => match block_heads(&v) {
                            Ok(h) => h.into_iter().rev().map(Ok).collect(),
                            Err(e) => vec![Err(e)],
                        },
                        Err(e) => vec![Err(e.into())],
                    }
                });
        merge(blocks, open.into_iter(), true)
            .take(n)
            .map(|r| r.map(|(h, _)| h))
            .collect()
    }

    /// The newest `n` segment ids of the whole store with their block keys, newest first.
    pub fn newest_ids(&self, n: usize) -> Result<Vec<(u64, BlockKey)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.ids.iter().rev() {
            let (k, v) = kv?;
            for r in id_rows(&k, &v)?.into_iter().rev() {
                if out.len() >= n {
                    return Ok(out);
                }
                out.push(r);
            }
            if out.len() >= n {
                break;
            }
        }
        Ok(out)
    }

    /// The highest segment id with an id row (0 if none).
    pub fn max_id(&self) -> Result<u64, StoreError> {
        Ok(self.newest_ids(1)?.first().map_or(0, |(id, _)| *id))
    }

    /// Up to about `max` ids with an id row from `lo` to `hi` (inclusive), in order; fewer than
    /// `max` only if `hi` was reached. Reads whole rows of 64 ids.
    /// sled's cache is settled after the scan ([`settle_cache`]): the verification's orphan
    /// pass walks the whole of `ids` with it.
    pub fn ids_between(&self, lo: u64, hi: u64, max: usize) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        let mut last_key = None;
        for kv in self.ids.range(id_chunk_key(lo)..=id_chunk_key(hi)) {
            let (k, v) = kv?;
            last_key = Some(k.clone());
            out.extend(
                id_rows(&k, &v)?
                    .into_iter()
                    .map(|(id, _)| id)
                    .filter(|id| (lo..=hi).contains(id)),
            );
            if out.len() >= max {
                break;
            }
        }
        if let Some(k) = last_key {
            settle_cache(&self.ids, &k)?;
        }
        Ok(out)
    }

    /// Up to `n` entry heads of stream `sid` after the entry named by `after` (exclusive), in
    /// start order, with their [`seg_key`]s.
    pub fn heads_after(
        &self,
        sid: u32,
        after: Option<[u8; 20]>,
        n: usize,
    ) -> Result<Vec<([u8; 20], EntryHead)>, StoreError> {
        let from = after.unwrap_or(seg_key(sid, i64::MIN, 0));
        let to = seg_key(sid, i64::MAX, u64::MAX);
        let open = self.open_rows(from, to);
        let mut out = Vec::new();
        for r in merge(
            heads(self.blocks_from(&from, &to)?),
            open.into_iter(),
            false,
        ) {
            let (h, _) = r?;
            let k = key_of(&h);
            if after.is_some_and(|a| k <= a) {
                continue;
            }
            out.push((k, h));
            if out.len() >= n {
                break;
            }
        }
        Ok(out)
    }

    /// Up to about `n` entry heads of the whole store after block `after` (exclusive), whole
    /// blocks at a time, in key order, and the last block's key (the background verification's
    /// walk; open rows: [`Index::open_heads`]).
    pub fn heads_batch(
        &self,
        after: Option<&BlockKey>,
        n: usize,
    ) -> Result<(Vec<EntryHead>, Option<BlockKey>), StoreError> {
        let lo = match after {
            Some(k) => Bound::Excluded(k.to_vec()),
            None => Bound::Unbounded,
        };
        let (mut out, mut last) = (Vec::new(), None);
        for kv in self.blocks.range::<Vec<u8>, _>((lo, Bound::Unbounded)) {
            let (k, v) = kv?;
            out.extend(block_heads(&v)?.into_iter().map(|(h, _)| h));
            last = Some(to_key(&k)?);
            if out.len() >= n {
                break;
            }
        }
        Ok((out, last))
    }

    /// After a [`Index::heads_batch`] of a walk of the whole index (the background
    /// verification): makes sled evict now, rather than ~20 leaves later, what the batch read
    /// beyond its cache ([`settle_cache`]; without it such a walk keeps ~160 MiB resident at
    /// 8.64 M segments, whatever `index_cache_bytes`). `last` is the batch's last block key.
    pub fn settle_walk(&self, last: &BlockKey) -> Result<(), StoreError> {
        settle_cache(&self.blocks, last)
    }

    /// The heads of every open row (open segments: one a stream, more after a crash).
    pub fn open_heads(&self) -> Result<Vec<EntryHead>, StoreError> {
        self.open.iter().map(|kv| Ok(open_head(kv?.1)?.0)).collect()
    }

    /// All segments of a stream, oldest first (lazily).
    pub fn stream_segments(
        &self,
        stream_id: u32,
    ) -> impl Iterator<Item = Result<SegmentEntry, StoreError>> + use<> {
        self.stream_heads(stream_id)
            .map(|r| Ok(postcard::from_bytes::<SegmentEntry>(&r?.1)?))
    }

    /// Every segment entry (lazily, one block at a time; open rows after the blocks).
    pub fn all_segments(&self) -> impl Iterator<Item = Result<SegmentEntry, StoreError>> + use<> {
        heads(self.blocks.iter())
            .chain(self.open.iter().map(|kv| open_head(kv?.1)))
            .map(|r| Ok(postcard::from_bytes::<SegmentEntry>(&r?.1)?))
    }

    /// Writes closed entries in bulk (benchmark generators), each stream's in start order
    /// after what it has: cut into new blocks of [`BLOCK_ENTRIES`], id rows first, one sled
    /// batch per tree. Entries not after their stream's newest block go one by one.
    pub fn put_segments_bulk(&self, entries: &[SegmentEntry]) -> Result<(), StoreError> {
        use std::collections::BTreeMap;
        let mut sorted: Vec<&SegmentEntry> = entries.iter().collect();
        sorted.sort_by_key(|e| key_of(e));
        let mut blocks: Vec<(BlockKey, Vec<&SegmentEntry>)> = Vec::new();
        let mut ids: BTreeMap<[u8; 8], Vec<(u64, BlockKey)>> = BTreeMap::new();
        let mut newest: BTreeMap<u32, Option<[u8; 20]>> = BTreeMap::new();
        for e in sorted {
            let k = key_of(e);
            let last = match newest.get(&e.stream_id) {
                Some(l) => *l,
                None => {
                    let l = self.newest_heads(e.stream_id, 1)?.pop().map(|h| key_of(&h));
                    newest.insert(e.stream_id, l);
                    l
                }
            };
            if e.open || last.is_some_and(|l| k <= l) {
                self.put_segment(e)?;
                continue;
            }
            match blocks.last_mut() {
                Some((bk, es)) if es.len() < BLOCK_ENTRIES && bk[..4] == k[..4] => {
                    es.push(e);
                    ids.entry(id_chunk_key(e.id)).or_default().push((e.id, *bk));
                }
                _ => {
                    blocks.push((k, vec![e]));
                    ids.entry(id_chunk_key(e.id)).or_default().push((e.id, k));
                }
            }
        }
        let mut b = sled::Batch::default();
        for (ck, rows) in &ids {
            b.insert(
                &ck[..],
                id_rows_with(ck, self.ids.get(ck)?.as_deref(), rows)?,
            );
        }
        self.ids.apply_batch(b)?;
        let mut b = sled::Batch::default();
        for (bk, es) in &blocks {
            b.insert(&bk[..], merge_block(None, es)?);
        }
        self.blocks.apply_batch(b)?;
        Ok(())
    }

    /// Moves every entry back into format 4's trees (one item per entry, `by_id` rows) and
    /// empties the blocks: what an index written before format 5 looks like (tests and
    /// benchmarks of the migration).
    #[doc(hidden)]
    pub fn write_legacy_layout_for_test(&self) -> Result<(), StoreError> {
        for e in self.all_segments() {
            let e = e?;
            let key = seg_key(e.stream_id, e.start_90k, e.id);
            self.segments.insert(key, postcard::to_allocvec(&e)?)?;
            self.by_id.insert(
                e.id.to_be_bytes(),
                &ByIdRow::encode(&key, e.bytes, e.open)[..],
            )?;
        }
        self.blocks.clear()?;
        self.ids.clear()?;
        self.open.clear()?;
        self.meta.insert("format", &4u32.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }
}

/// `block` with `es` merged in (same id: the one from `es` wins).
fn merge_block(block: Option<&[u8]>, es: &[&SegmentEntry]) -> Result<Vec<u8>, StoreError> {
    let encs: Vec<(i64, u64, Vec<u8>)> = es
        .iter()
        .map(|e| Ok((e.start_90k, e.id, postcard::to_allocvec(*e)?)))
        .collect::<Result<_, StoreError>>()?;
    let mut items: Vec<(i64, u64, &[u8])> = Vec::new();
    if let Some(b) = block {
        for (off, len) in spans(b)? {
            let s = &b[off..off + len];
            let (h, _): (EntryHead, _) = postcard::take_from_bytes(s)?;
            if !es.iter().any(|e| e.id == h.id) {
                items.push((h.start_90k, h.id, s));
            }
        }
    }
    items.extend(encs.iter().map(|(s, id, v)| (*s, *id, v.as_slice())));
    items.sort_by_key(|&(s, id, _)| (s, id));
    items.dedup_by_key(|x| x.1);
    Ok(encode_block(items.iter().map(|&(_, _, s)| s)))
}

/// Rows per migration chunk (its memory: this many entries, then their blocks).
const MIGRATE_CHUNK: usize = 16_384;

fn migrate_chunk_rows() -> usize {
    // Tests cut a small index into many chunks.
    #[cfg(feature = "test-support")]
    if let Some(n) = std::env::var("VIGIE_STORE_TEST_MIGRATE_CHUNK")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    MIGRATE_CHUNK
}

/// Tests of an interrupted migration: the process dies (abort, no destructor, no flush) after
/// writing chunk N's id rows and blocks, before recording its progress.
fn crash_point_for_test(_chunks: usize) {
    #[cfg(feature = "test-support")]
    if std::env::var("VIGIE_STORE_TEST_CRASH_AFTER_CHUNKS").ok() == Some(_chunks.to_string()) {
        std::process::abort();
    }
}

/// Copies format 4's one-item-per-entry `segments` tree into id rows, blocks and open rows.
/// Resumable: progress is in `meta` (`migrate_segments_after`: the last old key whose chunk is
/// written); a chunk is cut into blocks from its first row on, so one written again after a
/// crash gives the same blocks, merged into those it wrote. `by_id` is not read (its rows are
/// what the id rows replace). The caller marks the old trees for emptying and clears the
/// `migrating` mark.
pub(crate) fn migrate(
    meta: &Tree,
    segments: &Tree,
    blocks: &Tree,
    ids: &Tree,
    open: &Tree,
) -> Result<u64, StoreError> {
    use std::collections::BTreeMap;
    let mut moved = 0u64;
    let rows_per_chunk = migrate_chunk_rows();
    let mut chunks = 0usize;
    loop {
        let after = meta.get("migrate_segments_after")?;
        let lo = match &after {
            Some(k) => Bound::Excluded(k.to_vec()),
            None => Bound::Unbounded,
        };
        let mut chunk: Vec<SegmentEntry> = Vec::new();
        let mut last = None;
        for kv in segments
            .range::<Vec<u8>, _>((lo, Bound::Unbounded))
            .take(rows_per_chunk)
        {
            let (k, v) = kv?;
            last = Some(k);
            match postcard::from_bytes::<SegmentEntry>(&v) {
                Ok(e) => chunk.push(e),
                // Not readable: left out (as an unreadable entry would have failed its reads);
                // its file, if any, is an orphan the background verification indexes.
                Err(e) => tracing::warn!(error = %e, "migration: unreadable index entry skipped"),
            }
        }
        let Some(last) = last else { break };
        // Key order: each stream's entries consecutive and by start.
        let mut cut: Vec<(BlockKey, Vec<&SegmentEntry>)> = Vec::new();
        let mut id_rows_new: BTreeMap<[u8; 8], Vec<(u64, BlockKey)>> = BTreeMap::new();
        for e in &chunk {
            let k = key_of(e);
            if e.open {
                id_rows_new
                    .entry(id_chunk_key(e.id))
                    .or_default()
                    .push((e.id, k));
                open.insert(k, postcard::to_allocvec(e)?)?;
                continue;
            }
            match cut.last_mut() {
                Some((bk, es)) if es.len() < BLOCK_ENTRIES && bk[..4] == k[..4] => {
                    id_rows_new
                        .entry(id_chunk_key(e.id))
                        .or_default()
                        .push((e.id, *bk));
                    es.push(e);
                }
                _ => {
                    id_rows_new
                        .entry(id_chunk_key(e.id))
                        .or_default()
                        .push((e.id, k));
                    cut.push((k, vec![e]));
                }
            }
        }
        let mut b = sled::Batch::default();
        for (ck, rows) in &id_rows_new {
            b.insert(&ck[..], id_rows_with(ck, ids.get(ck)?.as_deref(), rows)?);
        }
        ids.apply_batch(b)?;
        let mut b = sled::Batch::default();
        for (bk, es) in &cut {
            b.insert(&bk[..], merge_block(blocks.get(bk)?.as_deref(), es)?);
        }
        blocks.apply_batch(b)?;
        // A copy in key order is a walk of the whole index: let sled evict what this chunk read
        // and wrote now ([`settle_cache`]), not pages later.
        settle_cache(segments, &last)?;
        if let Some((bk, _)) = cut.last() {
            settle_cache(blocks, bk)?;
        }
        if let Some((ck, _)) = id_rows_new.last_key_value() {
            settle_cache(ids, ck)?;
        }
        chunks += 1;
        crash_point_for_test(chunks);
        meta.insert("migrate_segments_after", last)?;
        // Each chunk durable before the next: a crash redoes at most one chunk.
        meta.flush()?;
        moved += chunk.len() as u64;
        if moved.is_multiple_of(MIGRATE_CHUNK as u64 * 16) {
            tracing::info!(entries = moved, "index migration to format 5 in progress");
        }
    }
    Ok(moved)
}

/// Removes up to a migration chunk of `tree`'s keys after `after` (from the last key removed:
/// sled 0.34 does not merge emptied leaves, so a scan from the start would walk every leaf
/// emptied so far again), then lets sled evict what it read ([`settle_cache`]). The last key
/// removed, or `None` when nothing was left.
pub(crate) fn empty_tree_step(
    tree: &Tree,
    after: Option<&sled::IVec>,
) -> Result<Option<sled::IVec>, StoreError> {
    let lo = match after {
        Some(k) => Bound::Excluded(k.to_vec()),
        None => Bound::Unbounded,
    };
    let keys: Vec<sled::IVec> = tree
        .range::<Vec<u8>, _>((lo, Bound::Unbounded))
        .keys()
        .take(migrate_chunk_rows())
        .collect::<Result<_, _>>()?;
    let Some(last) = keys.last().cloned() else {
        return Ok(None);
    };
    let mut b = sled::Batch::default();
    for k in &keys {
        b.remove(k);
    }
    tree.apply_batch(b)?;
    settle_cache(tree, &last)?;
    Ok(Some(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_rows_round_trip_and_merge() {
        let ck = id_chunk_key(130);
        let k1 = seg_key(1, 0, 7);
        let k2 = seg_key(2, 90_000, 9);
        let v = id_rows_with(&ck, None, &[(130, k1), (128, k2)]).unwrap();
        assert_eq!(id_rows(&ck, &v).unwrap(), vec![(128, k2), (130, k1)]);
        let v = id_rows_with(&ck, Some(&v), &[(130, k2)]).unwrap();
        assert_eq!(id_rows(&ck, &v).unwrap(), vec![(128, k2), (130, k2)]);
        assert!(id_rows(&ck, &v[..5]).is_err());
    }
}

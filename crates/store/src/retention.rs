//! Retention: destroy whole segments whose end is older than the stream's retention, then, while
//! the data directory's free space is below the floor, the oldest segments across all streams.
//! Open segments and segments under a legal hold are never deleted. Also owns what keeps
//! deletion working on a full disk: reopening the index after a failed write, and the start-up
//! open of the index on a full disk (see `space` for the reserve).
//!
//! Deletion order (crash-safe): one index transaction removes the entry, inserts a `garbage` row
//! and journals the deletion → unlink the file → fsync its directory → remove the `garbage` row.
//! A crash in between leaves a `garbage` row that recovery finishes.
//!
//! When the index cannot be written (sled refuses every write after one failed for lack of
//! space, until it is reopened): the reserve is released and the index reopened; if it still
//! cannot be opened (the file system is full and the reserve is gone), the oldest unheld file is
//! unlinked **first** (that frees space; the entry is still there), then the index is reopened
//! and the transaction applied. A crash between the unlink and the transaction leaves an entry
//! without a file, which recovery drops (logged) like any entry whose file vanished: the only
//! thing lost is that deletion's record in the `deletions` tree.
//!
//! Memory: scans decode entry heads only (never sample tables) and the age pass deletes in
//! batches of [`BATCH`] while it walks a stream, so no pass holds more than a batch of entries.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use vigie_core::config::LEGAL_MAX_RETENTION_DAYS;
use vigie_core::{Duration90k, StreamKey, Time90k};

use crate::holds::Hold;
use crate::index::{EntryHead, GarbageRow, Index, SegmentEntry, seg_key};
use crate::layout::{Layout, fsync_dir};
use crate::space::{Space, is_no_space, is_sled_io};
use crate::{DeletionRecord, Inner, RetentionPolicy, RetentionReport, StoreError};

pub const FREE_SPACE_REASON: &str = "free space below floor";
/// Entries decoded per step of the age pass.
const BATCH: usize = 256;
/// Index writes younger than this when the index fails may not have reached its file (sled
/// flushes every 500 ms): they are replayed after it is reopened.
const REPLAY_WINDOW: Duration = Duration::from_secs(5);

/// Index writes to apply again after the index is reopened: recent and failed segment entry
/// updates (latest per segment), recent deletions, and recently stored codec parameters.
#[derive(Default)]
pub(crate) struct Replay {
    puts: BTreeMap<u64, (Instant, SegmentEntry)>,
    deletions: Vec<(Instant, PendingDeletion)>,
    /// Codec parameters stored at segment starts (entries refer to them by id).
    params: Vec<(Instant, std::sync::Arc<vigie_core::VideoParams>)>,
}

#[derive(Clone)]
pub(crate) struct PendingDeletion {
    skey: [u8; 20],
    id: u64,
    rec_key: [u8; 16],
    rec: Vec<u8>,
    /// The garbage row written with it: replayed too, so that a deletion whose flush failed
    /// (the file still there) has its file unlinked once the index is back.
    garbage: Option<Vec<u8>>,
}

impl Replay {
    fn prune(&mut self, keep_all: bool) {
        if keep_all {
            return;
        }
        let fresh = |t: &Instant| t.elapsed() < REPLAY_WINDOW;
        self.puts.retain(|_, (t, _)| fresh(t));
        self.deletions.retain(|(t, _)| fresh(t));
        self.params.retain(|(t, _)| fresh(t));
    }
}

impl Inner {
    /// Remembers a segment entry written (or that failed to be written) to the index, to write
    /// it again if the index has to be reopened before sled flushed it.
    pub(crate) fn note_put(&self, e: &SegmentEntry) {
        let failed = self.space.index_error().is_some();
        if let Ok(mut r) = self.replay.lock() {
            r.prune(failed);
            r.puts.insert(e.id, (Instant::now(), e.clone()));
        }
    }

    /// Remembers codec parameters just stored (see [`Inner::note_put`]).
    pub(crate) fn note_params(&self, p: &std::sync::Arc<vigie_core::VideoParams>) {
        let failed = self.space.index_error().is_some();
        if let Ok(mut r) = self.replay.lock() {
            r.prune(failed);
            if !r.params.iter().any(|(_, q)| std::sync::Arc::ptr_eq(q, p)) {
                r.params.push((Instant::now(), p.clone()));
            }
        }
    }

    fn note_deletion(&self, d: PendingDeletion) {
        let failed = self.space.index_error().is_some();
        if let Ok(mut r) = self.replay.lock() {
            r.prune(failed);
            r.deletions.push((Instant::now(), d));
        }
    }
}

/// Opens the index at start-up. If that fails for lack of space (sled writes a snapshot when it
/// opens), the reserve is released and it is tried again.
pub(crate) fn open_index_on_full_disk(
    layout: &Layout,
    space: &Space,
    cache_bytes: u64,
) -> Result<Index, StoreError> {
    match Index::open_with_cache(&layout.index_dir(), cache_bytes) {
        Ok(ix) => Ok(ix),
        Err(e) if is_sled_io(&e) => {
            tracing::warn!(error = %e, "cannot open the index: releasing the reserve and retrying");
            if space.release_reserve("the index could not be opened") == 0 {
                return Err(no_room(e));
            }
            Index::open_with_cache(&layout.index_dir(), cache_bytes).map_err(no_room)
        }
        Err(e) => Err(e),
    }
}

fn no_room(e: StoreError) -> StoreError {
    let full = match &e {
        StoreError::Index {
            source: sled::Error::Io(io),
            ..
        }
        | StoreError::Sled(sled::Error::Io(io)) => is_no_space(io),
        _ => false,
    };
    if full {
        StoreError::Invalid(format!(
            "{e}: the file system of the index is full and the reserve file is gone; free some space (e.g. delete the oldest recordings) and start again"
        ))
    } else {
        e
    }
}

/// Reopens the index after a failed write: releases the reserve, drops the failed handle, opens
/// the index again, replays the writes it may have lost and finishes interrupted deletions.
/// Caller holds the retention lock.
pub(crate) fn reopen_index(inner: &Inner) -> Result<(), StoreError> {
    inner.space.release_reserve("the index failed to write");
    {
        let mut cell = inner.index_cell.write().unwrap_or_else(|p| p.into_inner());
        // sled releases its lock once every handle is gone; `Index::open` waits for it.
        drop(cell.take());
        match Index::open_with_cache(&inner.layout.index_dir(), inner.cfg.index_cache_bytes) {
            Ok(ix) => *cell = Some(ix),
            Err(e) => {
                tracing::warn!(error = %e, "cannot reopen the index yet");
                return Err(e);
            }
        }
    }
    let ix = inner.index()?;
    let replay = inner
        .replay
        .lock()
        .map(|mut r| std::mem::take(&mut *r))
        .unwrap_or_default();
    let res = (|| {
        for (_, p) in &replay.params {
            ix.put_params(p)?;
        }
        for (_, e) in replay.puts.values() {
            // A later state already in the index (e.g. closed) wins over an older one.
            if let Some(cur) = ix.get_segment(e.id)?
                && (cur.bytes > e.bytes || (!cur.open && e.open))
            {
                continue;
            }
            ix.put_segment(e)?;
        }
        for (_, d) in &replay.deletions {
            apply_deletion_txn(&ix, d, d.garbage.as_deref())?;
        }
        ix.set_next_segment_id(
            inner
                .next_segment_id
                .load(std::sync::atomic::Ordering::SeqCst),
        )?;
        // Durable (and proof that the index can write to its file again) before the files of
        // replayed deletions are unlinked.
        ix.db.flush()?;
        finish_garbage(&ix)?;
        ix.db.flush()?;
        Ok::<(), StoreError>(())
    })();
    if let Err(e) = res {
        // Keep what is still to replay for the next attempt.
        if let Ok(mut r) = inner.replay.lock() {
            for (id, p) in replay.puts {
                r.puts.entry(id).or_insert(p);
            }
            r.deletions.extend(replay.deletions);
            r.params.extend(replay.params);
        }
        inner.index_failed(&e);
        return Err(e);
    }
    tracing::info!(
        entries = replay.puts.len(),
        deletions = replay.deletions.len(),
        "index reopened"
    );
    inner.space.clear_index_error();
    Ok(())
}

/// Interrupted deletions: unlink (already done, normally), fsync, drop the row.
fn finish_garbage(ix: &Index) -> Result<(), StoreError> {
    for kv in ix.garbage.iter() {
        let (k, v) = kv?;
        let row: GarbageRow = postcard::from_bytes(&v)?;
        match fs::remove_file(&row.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("deleting", &row.path)(e)),
        }
        if let Some(dir) = row.path.parent()
            && dir.exists()
        {
            fsync_dir(dir).map_err(StoreError::io("fsync", dir))?;
        }
        ix.garbage.remove(k)?;
    }
    Ok(())
}

/// Active holds (read even from an index that can no longer write), with the cluster's
/// ([`crate::ExternalHolds`]); an error when the cluster's are unknown (delete nothing).
fn active_holds(inner: &Inner) -> Result<Vec<Hold>, StoreError> {
    let mut holds = crate::holds::active(inner)?;
    // A hold placed on another node just before this decision must be seen: when the read
    // time of the cluster's holds is tracked, only a read that began after now counts.
    let deciding_since = std::time::Instant::now();
    loop {
        let external = inner
            .external_holds
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        let read_at = inner
            .external_holds_read_at
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|e| *e.into_inner());
        match external {
            crate::ExternalHolds::None => return Ok(holds),
            crate::ExternalHolds::Unknown(why) => return Err(StoreError::HoldsUnknown(why)),
            crate::ExternalHolds::Known(h) => {
                if read_at.is_none_or(|t| t >= deciding_since) {
                    holds.extend(h.into_iter().filter(Hold::active));
                    return Ok(holds);
                }
            }
        }
        if deciding_since.elapsed() > FRESH_HOLDS_WAIT {
            return Err(StoreError::HoldsUnknown(format!(
                "no read of the cluster's holds began in the {} s after this retention pass did",
                FRESH_HOLDS_WAIT.as_secs()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// How long retention waits for a read of the cluster's holds that began after it started
/// deciding (a cluster node reads them every agent tick, ≤ 0.5 s).
pub const FRESH_HOLDS_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn held(holds: &[Hold], key: &StreamKey, h: &EntryHead) -> bool {
    holds.iter().any(|x| x.covers(key, h.start(), h.end()))
}

/// Up to `n` entry heads of stream `sid` after `after` (exclusive), in start order, with keys.
fn heads_after(
    ix: &Index,
    sid: u32,
    after: Option<[u8; 20]>,
    n: usize,
) -> Result<Vec<([u8; 20], EntryHead)>, StoreError> {
    ix.heads_after(sid, after, n)
}

pub(crate) fn apply(
    inner: &Inner,
    policy: &RetentionPolicy,
) -> Result<RetentionReport, StoreError> {
    let _guard = inner
        .retention_lock
        .lock()
        .map_err(|_| StoreError::ShuttingDown)?;
    let now = inner.clock.now();
    let mut report = RetentionReport::default();
    if inner.space.index_error().is_some() {
        reopen_or_make_room(inner)?;
    }
    let ix = inner.index()?;
    let streams = ix.all_streams()?;
    let holds = active_holds(inner)?;

    for (sid, key) in &streams {
        let days = policy
            .per_stream_days
            .get(key)
            .copied()
            .unwrap_or(LEGAL_MAX_RETENTION_DAYS)
            .min(LEGAL_MAX_RETENTION_DAYS);
        let cutoff = now - Duration90k::from_secs(i64::from(days) * 86_400);
        let mut after = None;
        'stream: loop {
            let batch = heads_after(&ix, *sid, after, BATCH)?;
            let Some((last, _)) = batch.last() else { break };
            after = Some(*last);
            // Index halves of the batch, one flush, then the files (see `delete`).
            let mut marked = Vec::new();
            let mut reached_cutoff = false;
            for (_, h) in &batch {
                if h.start() >= cutoff {
                    reached_cutoff = true;
                    break;
                }
                if !h.open && h.end() <= cutoff {
                    if held(&holds, key, h) {
                        report.held_kept += 1;
                    } else {
                        let reason = format!("age > {days} days");
                        marked.push(mark_deleted(inner, &ix, key, h, &reason, now)?);
                    }
                }
            }
            if !marked.is_empty() {
                ix.db.flush()?;
            }
            for m in marked {
                unlink_deleted(inner, &ix, key, m, now, &mut report)?;
            }
            if reached_cutoff {
                break 'stream;
            }
        }
    }
    drop(ix);
    floor_loop(inner, &streams, &holds, now, &mut report)?;
    reread_abandoned(inner);
    inner.space.ensure_reserve();
    Ok(report)
}

/// The free-space floor alone: reopen a failed index, delete the oldest while below the floor,
/// re-create the reserve.
pub(crate) fn free_space_pass(inner: &Inner) -> Result<RetentionReport, StoreError> {
    let _guard = inner
        .retention_lock
        .lock()
        .map_err(|_| StoreError::ShuttingDown)?;
    let now = inner.clock.now();
    let mut report = RetentionReport::default();
    if inner.space.index_error().is_some() {
        reopen_or_make_room(inner)?;
    }
    let streams = inner.index()?.all_streams()?;
    let holds = active_holds(inner)?;
    floor_loop(inner, &streams, &holds, now, &mut report)?;
    reread_abandoned(inner);
    inner.space.ensure_reserve();
    Ok(report)
}

/// Indexes the segment files abandoned for lack of space from their content (complete
/// fragments kept, partial tail cut, `recovered` trailer), as recovery would at the next start.
/// Files that still cannot be handled stay for the next pass.
fn reread_abandoned(inner: &Inner) {
    let todo = match inner.reread.lock() {
        Ok(mut r) if !r.is_empty() => std::mem::take(&mut *r),
        _ => return,
    };
    let Ok(ix) = inner.index() else {
        if let Ok(mut r) = inner.reread.lock() {
            r.extend(todo);
        }
        return;
    };
    for (key, path) in todo {
        if !path.exists() {
            continue; // deleted since (or never created)
        }
        match crate::recovery::index_file(&ix, &inner.layout, &key, &path) {
            Ok(crate::recovery::FileOutcome::Indexed {
                entry, truncated, ..
            }) => {
                tracing::info!(camera = %key.camera, stream = %key.stream, segment = entry.id, frames = entry.frames, truncated, "abandoned segment indexed from its file");
                inner.note_put(&entry);
            }
            Ok(crate::recovery::FileOutcome::Deleted) => {
                if let Some(id) = crate::layout::file_name(&path)
                    .as_deref()
                    .and_then(Layout::parse_segment_file_name)
                    && let Ok(Some(e)) = ix.get_segment(id)
                {
                    let _ = ix.remove_segment(&e.head);
                }
            }
            Ok(crate::recovery::FileOutcome::Problem(p)) => {
                tracing::warn!(problem = %p, "abandoned segment file left as is");
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot index an abandoned segment yet");
                inner.index_failed(&e);
                if let Ok(mut r) = inner.reread.lock() {
                    r.push((key, path));
                }
            }
        }
    }
}

/// Reopens the index; if that fails (for lack of space: sled writes a snapshot when it opens),
/// unlinks the oldest unheld segment file first and tries again, a few files per pass at most.
/// The entry of an unlinked file is then removed with its deletion record.
fn reopen_or_make_room(inner: &Inner) -> Result<(), StoreError> {
    let mut last = match reopen_index(inner) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    // Deleting footage helps only if the index shares the data directory's file system and that
    // is what is full (an index on its own full file system must be given room by a person).
    let same_fs = same_device(&inner.layout.index_dir(), &inner.cfg.data_dir);
    if !same_fs || inner.space.free_bytes() >= inner.cfg.min_free_bytes.max(1) {
        return Err(last);
    }
    let mut unlinked = Vec::new();
    for _ in 0..8 {
        let Some(path) = oldest_file_unheld(inner)? else {
            break;
        };
        tracing::warn!(path = %path.display(), error = %last, "the index cannot be reopened: deleting the oldest segment file before its entry");
        fs::remove_file(&path).map_err(StoreError::io("deleting", &path))?;
        if let Some(dir) = path.parent() {
            fsync_dir(dir).map_err(StoreError::io("fsync", dir))?;
        }
        unlinked.push(path);
        match reopen_index(inner) {
            Ok(()) => {
                for p in &unlinked {
                    drop_entry_of_unlinked(inner, p)?;
                }
                return Ok(());
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn same_device(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev(),
        _ => false,
    }
}

/// The oldest segment file of any stream, from the files' names (the index may be unreadable):
/// only streams without an active hold (holds as last read from the index; none known → none
/// deleted), and never a stream's newest file (it may be open).
fn oldest_file_unheld(inner: &Inner) -> Result<Option<std::path::PathBuf>, StoreError> {
    let Some(holds) = inner.holds_cache.lock().ok().and_then(|c| c.clone()) else {
        return Ok(None); // holds unknown: never risk deleting held footage
    };
    let mut best: Option<(String, std::path::PathBuf)> = None;
    let dirs = inner
        .layout
        .list_stream_dirs()
        .map_err(StoreError::io("listing", &inner.layout.recordings_dir()))?;
    for (key, dir) in dirs {
        if holds
            .iter()
            .any(|h| h.camera == key.camera && h.stream == key.stream)
        {
            continue;
        }
        let mut files = Vec::new();
        for d in crate::layout::read_dir_sorted(&dir).map_err(StoreError::io("listing", &dir))? {
            let Some(date) = crate::layout::file_name(&d) else {
                continue;
            };
            for f in crate::layout::read_dir_sorted(&d).map_err(StoreError::io("listing", &d))? {
                let Some(name) = crate::layout::file_name(&f) else {
                    continue;
                };
                if Layout::parse_segment_file_name(&name).is_none() {
                    continue;
                }
                // `<date dir><HHMMSSZ.mp4>` orders the files of all streams by start.
                let time = name.split('-').nth(1).unwrap_or_default();
                files.push((format!("{date}{time}"), f));
                if files.len() == 2 {
                    break;
                }
            }
            if files.len() == 2 {
                break;
            }
        }
        if files.len() < 2 {
            continue;
        }
        let (order, f) = files.swap_remove(0);
        if best.as_ref().is_none_or(|(b, _)| order < *b) {
            best = Some((order, f));
        }
    }
    Ok(best.map(|(_, p)| p))
}

/// After a file was unlinked before its entry (index full): remove the entry, journal it.
fn drop_entry_of_unlinked(inner: &Inner, path: &std::path::Path) -> Result<(), StoreError> {
    let Some(id) = crate::layout::file_name(path)
        .as_deref()
        .and_then(Layout::parse_segment_file_name)
    else {
        return Ok(());
    };
    let ix = inner.index()?;
    let Some(h) = ix.get_segment(id)?.map(|e| e.head) else {
        return Ok(());
    };
    let Some(key) = ix.stream_key(h.stream_id)? else {
        return Ok(());
    };
    let mut report = RetentionReport::default();
    delete(
        inner,
        &ix,
        &key,
        &h,
        FREE_SPACE_REASON,
        inner.clock.now(),
        &mut report,
    )
}

/// While below the floor: delete the oldest closed, unheld segment across all streams.
fn floor_loop(
    inner: &Inner,
    streams: &[(u32, StreamKey)],
    holds: &[Hold],
    now: Time90k,
    report: &mut RetentionReport,
) -> Result<(), StoreError> {
    if let Ok(mut c) = inner.holds_cache.lock() {
        *c = Some(holds.to_vec());
    }
    let floor = inner.cfg.min_free_bytes;
    let mut reopened = false;
    loop {
        let free = inner.space.free_bytes();
        report.free_bytes = free;
        if free >= floor {
            let _ = inner.space.set_pass_outcome(false, false);
            if inner
                .recording_blocked
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                tracing::warn!(
                    free,
                    "free space is above the floor again: recording resumes"
                );
            }
            return Ok(());
        }
        let ix = inner.index()?;
        let mut oldest: Option<(&StreamKey, EntryHead)> = None;
        let mut open_or_held = 0u64;
        for (sid, key) in streams {
            let mut after = None;
            'scan: loop {
                let batch = heads_after(&ix, *sid, after, 16)?;
                let Some((last, _)) = batch.last() else { break };
                after = Some(*last);
                for (_, h) in batch {
                    if h.open || held(holds, key, &h) {
                        open_or_held += 1;
                        continue;
                    }
                    if oldest
                        .as_ref()
                        .is_none_or(|(_, o)| h.start_90k < o.start_90k)
                    {
                        oldest = Some((key, h));
                    }
                    break 'scan;
                }
            }
        }
        let Some((key, h)) = oldest else {
            report.floor_unreachable = true;
            // Held footage is never deleted to make room: stop recording instead (alert).
            let held_full = !holds.is_empty();
            let already = inner.space.set_pass_outcome(held_full, true);
            if held_full {
                report.recording_blocked = true;
                if !inner
                    .recording_blocked
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    tracing::error!(
                        free,
                        floor,
                        "disk full of footage under legal hold: RECORDING STOPPED until space is freed or holds are released"
                    );
                }
            } else {
                if !already {
                    tracing::warn!(
                        free,
                        floor,
                        open_or_held,
                        "free space below the floor and nothing left to delete"
                    );
                }
                if inner
                    .recording_blocked
                    .swap(false, std::sync::atomic::Ordering::SeqCst)
                {
                    tracing::warn!(
                        "no legal hold left: recording resumes (free space is still below the floor)"
                    );
                }
            }
            return Ok(());
        };
        match delete(inner, &ix, key, &h, FREE_SPACE_REASON, now, report) {
            Ok(()) => {}
            Err(e) if is_sled_io(&e) && !reopened => {
                // The index cannot write: reopen it (the reserve is released first), then
                // continue; once per pass, the next pass tries again.
                drop(ix);
                inner.index_failed(&e);
                reopened = true;
                reopen_or_make_room(inner)?;
            }
            Err(e) => {
                inner.index_failed(&e);
                return Err(e);
            }
        }
    }
}

fn apply_deletion_txn(
    ix: &Index,
    d: &PendingDeletion,
    garbage: Option<&[u8]>,
) -> Result<(), StoreError> {
    let (sid, start, _) = crate::recovery::key_fields(&d.skey);
    ix.deletion_txn(
        sid,
        start,
        d.id,
        &crate::blocks::DeletionWrite {
            garbage,
            rec_key: &d.rec_key,
            rec: &d.rec,
        },
    )
}

/// Deletes one segment: its entry (and a deletion record) first, made durable, then its file.
fn delete(
    inner: &Inner,
    ix: &Index,
    key: &StreamKey,
    h: &EntryHead,
    reason: &str,
    now: Time90k,
    report: &mut RetentionReport,
) -> Result<(), StoreError> {
    let marked = mark_deleted(inner, ix, key, h, reason, now)?;
    // Durable before the unlink: a kill in between must not bring the entry back without its
    // file and without the deletion record (footage destroyed, nothing saying so).
    ix.db.flush()?;
    unlink_deleted(inner, ix, key, marked, now, report)
}

/// A segment whose entry is gone from the index (and its deletion recorded, and a garbage row
/// written) but whose file is still there.
struct Marked {
    path: std::path::PathBuf,
    id: u64,
    bytes: u64,
    rec: DeletionRecord,
}

/// The index half of a deletion: one transaction removes the entry, records the deletion and
/// writes a garbage row (what recovery finishes if the file's unlink never happens). Not yet
/// flushed: the caller flushes before [`unlink_deleted`] (once per batch).
fn mark_deleted(
    inner: &Inner,
    ix: &Index,
    key: &StreamKey,
    h: &EntryHead,
    reason: &str,
    now: Time90k,
) -> Result<Marked, StoreError> {
    let path = inner.layout.segment_path(key, h.id, h.start());
    let rec = DeletionRecord {
        camera: key.camera.clone(),
        stream: key.stream.clone(),
        segment_id: h.id,
        start: h.start(),
        end: h.end(),
        bytes: h.bytes,
        when: now,
        reason: reason.to_owned(),
    };
    let seq = ix.db.generate_id()?;
    let garbage = postcard::to_allocvec(&GarbageRow {
        path: path.clone(),
        bytes: h.bytes,
    })?;
    let pending = PendingDeletion {
        skey: seg_key(h.stream_id, h.start_90k, h.id),
        id: h.id,
        rec_key: Index::deletion_key(now, seq),
        rec: postcard::to_allocvec(&rec)?,
        garbage: Some(garbage.clone()),
    };
    apply_deletion_txn(ix, &pending, Some(&garbage))?;
    inner.note_deletion(pending);
    Ok(Marked {
        path,
        id: h.id,
        bytes: h.bytes,
        rec,
    })
}

/// The file half of a deletion, once the index half is durable.
fn unlink_deleted(
    inner: &Inner,
    ix: &Index,
    key: &StreamKey,
    m: Marked,
    now: Time90k,
    report: &mut RetentionReport,
) -> Result<(), StoreError> {
    let Marked {
        path,
        id,
        bytes,
        rec,
    } = m;
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(StoreError::io("deleting", &path)(err)),
    }
    if let Some(dir) = path.parent() {
        fsync_dir(dir).map_err(StoreError::io("fsync", dir))?;
        // Old date directories are removed once empty (never today's or yesterday's, where a
        // writer may be creating a file).
        let old = Layout::date_dir_name(now - Duration90k::from_secs(2 * 86_400));
        if crate::layout::file_name(dir).is_some_and(|n| n < old)
            && fs::remove_dir(dir).is_ok()
            && let Some(parent) = dir.parent()
        {
            let _ = fsync_dir(parent);
        }
    }
    ix.garbage.remove(id.to_be_bytes())?;
    inner.free.on_deleted(bytes);
    inner
        .segments_deleted
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    inner
        .bytes_deleted
        .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(camera = %key.camera, stream = %key.stream, segment = id, start = %rec.start, end = %rec.end, bytes, reason = %rec.reason, "segment deleted");
    report.bytes_deleted += bytes;
    report.deleted.push(rec);
    Ok(())
}

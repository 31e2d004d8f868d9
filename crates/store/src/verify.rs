//! Background verification of the history: after start-up recovery has checked what a crash can
//! have affected ([`crate::recovery`]) and recording has resumed, one thread walks every older
//! index entry and checks it against its file exactly as start-up recovery always did
//! ([`crate::recovery::check_entry`]: a missing file drops the entry, a short file drops it and
//! the file is re-read as an orphan, an open or longer one is re-read). Findings are logged with
//! camera, stream and segment id, as start-up findings are. Then it lists every segment file
//! older than this run, a day at a time, and compares the sorted ids with a key-ordered walk of
//! the `ids` rows (a merge join, not a lookup per file): a file without an entry is handled as
//! an orphan ([`orphan_pass`]), as start-up recovery handles those of the newest directories.
//!
//! Bounded cost:
//! * memory: the walk reads the blocks of entries in key order (index format 5: up to 32 heads
//!   a value, [`crate::blocks`]), whole blocks of about [`BATCH`] entries at a time, resuming
//!   after the last block's key, decoding heads only, then the open rows; it keeps the stream
//!   names (one per stream); the index is never materialised;
//! * I/O: throttled to `verify_entries_per_s` entries per second (one `stat` each);
//! * concurrency: a finding is handled under the retention lock after re-reading the entry, so
//!   a segment retention is deleting at the same moment is not mistaken for a missing file;
//!   entries of this run's writers (ids ≥ the first id allocated after recovery) are skipped.
//!
//! The thread holds the store only through a weak reference between batches: dropping the store
//! ends it, and [`crate::Store::shutdown`] stops and joins it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use vigie_core::StreamKey;

use crate::index::{EntryHead, seg_key};
use crate::recovery::{Checked, Deferred, RecoveryReport, check_entry};
use crate::{Inner, StoreError};

/// Entries read per batch (one index range scan, then the store is released).
pub const BATCH: usize = 256;

/// Ids read per range scan of the `ids` rows in the files' merge join (whole rows of 64).
const BY_ID_CHUNK: usize = 4096;

/// True while the store exists and is not shutting down.
fn alive(weak: &Weak<Inner>) -> bool {
    weak.upgrade()
        .is_some_and(|i| !i.shutting_down.load(Ordering::SeqCst))
}

/// Default of `storage.verify_entries_per_s`.
pub const DEFAULT_VERIFY_ENTRIES_PER_S: u32 = 2_000;

/// Progress of the background verification, shared with the API (metrics, health).
#[derive(Debug, Default)]
pub struct VerifyProgress {
    checked: AtomicU64,
    findings: AtomicU64,
    errors: AtomicU64,
    done: AtomicBool,
    duration_ms: AtomicU64,
    report: Mutex<RecoveryReport>,
}

/// A snapshot of [`VerifyProgress`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VerifyStatus {
    /// Entries of the history checked against their files so far.
    pub entries_checked: u64,
    /// Entries for which something was done (dropped, recovered, re-read).
    pub findings: u64,
    /// Entries that could not be checked (unreadable entry, I/O error other than a missing
    /// file); left as they are and logged.
    pub errors: u64,
    /// True once every entry older than this run has been checked.
    pub done: bool,
    /// How long the whole pass took (once done).
    pub duration_ms: u64,
    /// What the findings were, counted as start-up recovery counts them.
    pub report: RecoveryReport,
}

impl VerifyProgress {
    pub fn status(&self) -> VerifyStatus {
        VerifyStatus {
            entries_checked: self.checked.load(Ordering::Relaxed),
            findings: self.findings.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            done: self.done.load(Ordering::Acquire),
            duration_ms: self.duration_ms.load(Ordering::Relaxed),
            report: self.report.lock().map(|r| r.clone()).unwrap_or_default(),
        }
    }
}

/// Starts the background pass on its own thread.
pub(crate) fn spawn(
    inner: Weak<Inner>,
    progress: Arc<VerifyProgress>,
    deferred: Deferred,
    entries_per_s: u32,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("vigie-verify".into())
        .spawn(move || run(&inner, &progress, &deferred, entries_per_s))
}

fn run(weak: &Weak<Inner>, progress: &VerifyProgress, deferred: &Deferred, entries_per_s: u32) {
    let started = Instant::now();
    let rate = f64::from(entries_per_s.max(1));
    let mut names: HashMap<u32, Option<StreamKey>> = HashMap::new();
    let mut after: Option<crate::blocks::BlockKey> = None;
    let mut seen = 0u64;
    tracing::info!(
        entries_per_s,
        "verifying the recorded history against the segment files in the background"
    );
    if !drop_legacy_trees(weak) {
        return;
    }
    loop {
        let Some(inner) = weak.upgrade() else {
            return;
        };
        if inner.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        // The index is away while it is reopened after a write error (full disk): wait.
        let Ok(index) = inner.index() else {
            drop(inner);
            std::thread::sleep(std::time::Duration::from_secs(1));
            continue;
        };
        let (batch, last) = match index.heads_batch(after.as_ref(), BATCH) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "background verification: reading the index failed; stopping");
                progress.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let Some(last) = last else {
            // The blocks are done; then the open rows (a handful: segments being written,
            // or left open by a crash before this run, which recovery checked already).
            match index.open_heads() {
                Ok(open) => {
                    for h in &open {
                        seen += 1;
                        if let Err(e) = check_one(&inner, progress, deferred, &mut names, h) {
                            tracing::error!(error = %e, "background verification of an index entry failed; entry left as it is");
                            progress.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "background verification: reading the index failed");
                    progress.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            break;
        };
        if let Err(e) = index.settle_walk(&last) {
            tracing::error!(error = %e, "background verification: reading the index failed; stopping");
            progress.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        after = Some(last);
        for h in &batch {
            seen += 1;
            if let Err(e) = check_one(&inner, progress, deferred, &mut names, h) {
                tracing::error!(error = %e, "background verification of an index entry failed; entry left as it is");
                progress.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(inner);
        if seen % (BATCH as u64 * 400) < BATCH as u64 {
            tracing::info!(
                entries_checked = progress.checked.load(Ordering::Relaxed),
                findings = progress.findings.load(Ordering::Relaxed),
                "background verification in progress"
            );
        }
        // Throttle: never ahead of `rate` entries per second since the start.
        let due = started + Duration::from_secs_f64(seen as f64 / rate);
        while let Some(wait) = due.checked_duration_since(Instant::now()) {
            match weak.upgrade() {
                Some(i) if !i.shutting_down.load(Ordering::SeqCst) => {}
                _ => return,
            }
            std::thread::sleep(wait.min(Duration::from_millis(100)));
        }
    }
    // Then the files: one without an entry anywhere in the history (not only where a crash
    // leaves them, which start-up recovery checked).
    if !orphan_pass(weak, progress, deferred, started, rate, &mut seen) {
        return;
    }
    let ms = started.elapsed().as_millis() as u64;
    progress.duration_ms.store(ms, Ordering::Relaxed);
    progress.done.store(true, Ordering::Release);
    let s = progress.status();
    tracing::info!(
        entries_checked = s.entries_checked,
        findings = s.findings,
        errors = s.errors,
        duration_ms = ms,
        report = ?s.report,
        "background verification of the history done"
    );
}

/// After a migration from format 4, empties and drops the old trees first, a chunk at a time
/// (one step a second at most: ~16,000 keys/s), releasing the store between steps. `false`
/// when the store is gone or shutting down (the next run resumes).
fn drop_legacy_trees(weak: &Weak<Inner>) -> bool {
    let mut cursor = crate::index::LegacyCursor::default();
    loop {
        let started = Instant::now();
        let Some(inner) = weak.upgrade() else {
            return false;
        };
        if inner.shutting_down.load(Ordering::SeqCst) {
            return false;
        }
        let Ok(index) = inner.index() else {
            drop(inner);
            std::thread::sleep(Duration::from_secs(1));
            continue;
        };
        match index.drop_legacy_step(&mut cursor) {
            Ok(true) => return true,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "emptying the index's format 4 trees failed; left for the next start");
                return true;
            }
        }
        drop(index);
        drop(inner);
        std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
    }
}

/// Every segment file older than this run is compared with the `ids` rows; a file without an entry is
/// an orphan: indexed from its own content, or deleted if it holds no complete fragment, exactly
/// as start-up recovery handles the recent ones. Orphans away from the newest directories arise
/// when the disk is full (a segment abandoned when the index could not be written and the
/// process stopped before it was re-read; an entry removed whose file could not be unlinked).
///
/// A merge join, one UTC day at a time: the day's directories of every stream are listed and
/// their segment ids sorted (8 bytes a file: 2.3 MB for 200 streams' day), then `ids` is read
/// once in key order over the day's id range (ids are global and increase with time, so the
/// days' ranges barely overlap and `ids` is read about once in all) instead of one lookup
/// per file; only a file whose id the walk did not meet is looked up ([`check_file`]: under the
/// retention lock, since retention may be deleting it, entry first, then file; skipped while a
/// deletion of it is pending). Throttled with the entries (one file = one entry). Returns false
/// when the store went away or is shutting down.
fn orphan_pass(
    weak: &Weak<Inner>,
    progress: &VerifyProgress,
    deferred: &Deferred,
    started: Instant,
    rate: f64,
    seen: &mut u64,
) -> bool {
    let dirs = match weak.upgrade().map(|i| i.layout.list_stream_dirs()) {
        None => return false,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            tracing::error!(error = %e, "background verification: listing the recordings failed");
            progress.errors.fetch_add(1, Ordering::Relaxed);
            return true;
        }
    };
    // The days present (directory names), across streams.
    let mut days = std::collections::BTreeSet::new();
    for (_, dir) in &dirs {
        if let Ok(date_dirs) = crate::layout::read_dir_sorted(dir) {
            for d in date_dirs.into_iter().filter(|d| d.is_dir()) {
                if let Some(name) = crate::layout::file_name(&d) {
                    days.insert(name);
                }
            }
        }
    }
    for day in days {
        // (segment id, stream) of every file of the day older than this run.
        let mut files: Vec<(u64, u32)> = Vec::new();
        for (s, (_, dir)) in dirs.iter().enumerate() {
            if s % 32 == 0 && !alive(weak) {
                return false;
            }
            let Ok(names) = crate::layout::read_dir_sorted(&dir.join(&day)) else {
                continue;
            };
            files.extend(names.iter().filter_map(|p| {
                let id = crate::layout::file_name(p)
                    .as_deref()
                    .and_then(crate::layout::Layout::parse_segment_file_name)?;
                (id < deferred.first_new_id).then_some((id, s as u32))
            }));
        }
        files.sort_unstable();
        let Some(&(hi, _)) = files.last() else {
            continue;
        };
        // The ids of the day's files that `ids` lacks: `ids` read in key order from the
        // day's first id to its last, [`BY_ID_CHUNK`] rows per range scan, the store held
        // only during a scan (shutdown is not held up by a day of 288,000 files).
        let mut missing: Vec<(u64, u32)> = Vec::new();
        let mut i = 0usize;
        while i < files.len() {
            let rows: Vec<u64> = {
                let Some(inner) = weak.upgrade() else {
                    return false;
                };
                if inner.shutting_down.load(Ordering::SeqCst) {
                    return false;
                }
                let Ok(index) = inner.index() else {
                    break; // reopening after a write error: this day is checked next start
                };
                match index.ids_between(files[i].0, hi, BY_ID_CHUNK) {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::error!(error = %e, "background verification: reading the index failed");
                        progress.errors.fetch_add(1, Ordering::Relaxed);
                        Vec::new()
                    }
                }
            };
            let Some(&last) = rows.last() else {
                missing.extend_from_slice(&files[i..]);
                break;
            };
            let mut r = 0usize;
            while i < files.len() && files[i].0 <= last {
                let id = files[i].0;
                while r < rows.len() && rows[r] < id {
                    r += 1;
                }
                if rows.get(r) != Some(&id) {
                    missing.push(files[i]);
                }
                i += 1;
            }
            if rows.len() < BY_ID_CHUNK {
                // The scan reached the day's last id (or a row it could not read): what is
                // left has no row met here and is looked up one by one.
                missing.extend_from_slice(&files[i..]);
                break;
            }
        }
        *seen += files.len() as u64;
        for (id, s) in missing {
            let Some(inner) = weak.upgrade() else {
                return false;
            };
            if inner.shutting_down.load(Ordering::SeqCst) {
                return false;
            }
            let (key, dir) = &dirs[s as usize];
            let path = crate::layout::read_dir_sorted(&dir.join(&day))
                .ok()
                .and_then(|names| {
                    names.into_iter().find(|p| {
                        crate::layout::file_name(p)
                            .as_deref()
                            .and_then(crate::layout::Layout::parse_segment_file_name)
                            == Some(id)
                    })
                });
            if let Some(path) = path
                && let Err(e) = check_file(&inner, progress, key, id, &path)
            {
                tracing::error!(camera = %key.camera, stream = %key.stream, segment = id, error = %e, "background verification of a segment file failed; left as it is");
                progress.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Throttle: never ahead of `rate` files per second since the start.
        let due = started + Duration::from_secs_f64(*seen as f64 / rate);
        while let Some(wait) = due.checked_duration_since(Instant::now()) {
            match weak.upgrade() {
                Some(i) if !i.shutting_down.load(Ordering::SeqCst) => {}
                _ => return false,
            }
            std::thread::sleep(wait.min(Duration::from_millis(100)));
        }
    }
    true
}

fn check_file(
    inner: &Inner,
    progress: &VerifyProgress,
    key: &StreamKey,
    id: u64,
    path: &std::path::Path,
) -> Result<(), StoreError> {
    let id_key = id.to_be_bytes();
    if inner.index()?.contains_id(id)? {
        return Ok(());
    }
    let _guard = inner
        .retention_lock
        .lock()
        .map_err(|_| StoreError::ShuttingDown)?;
    let index = inner.index()?;
    if !path.exists() || index.contains_id(id)? || index.garbage.contains_key(id_key)? {
        return Ok(()); // deleted meanwhile, indexed meanwhile, or being deleted
    }
    tracing::warn!(camera = %key.camera, stream = %key.stream, segment = id, "segment file without an index entry in the history: treated as an orphan");
    let mut r = RecoveryReport::default();
    crate::recovery::index_orphan(&index, &inner.layout, key, id, path, &mut r)?;
    progress.findings.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut total) = progress.report.lock() {
        total.orphans_indexed += r.orphans_indexed;
        total.orphans_deleted += r.orphans_deleted;
        total.bytes_truncated += r.bytes_truncated;
    }
    Ok(())
}

fn check_one(
    inner: &Inner,
    progress: &VerifyProgress,
    deferred: &Deferred,
    names: &mut HashMap<u32, Option<StreamKey>>,
    h: &EntryHead,
) -> Result<(), StoreError> {
    if h.id >= deferred.first_new_id
        || deferred
            .checked
            .contains(&seg_key(h.stream_id, h.start_90k, h.id))
    {
        return Ok(());
    }
    let (bytes, open) = (h.bytes, h.open);
    let sid = h.stream_id;
    let key = match names.get(&sid) {
        Some(k) => k.clone(),
        None => {
            let k = inner.index()?.stream_key(sid)?;
            names.insert(sid, k.clone());
            k
        }
    };
    progress.checked.fetch_add(1, Ordering::Relaxed);
    // The common case, without any lock and without reading the entry: the file is there with
    // the indexed length.
    if let Some(key) = &key
        && !open
        && std::fs::metadata(inner.layout.segment_path(key, h.id, h.start()))
            .is_ok_and(|m| m.len() == bytes)
    {
        return Ok(());
    }
    // A finding, or a race with retention: re-read the entry under the retention lock.
    let _guard = inner
        .retention_lock
        .lock()
        .map_err(|_| StoreError::ShuttingDown)?;
    let Some(h) = inner.index()?.head_at(h.stream_id, h.start_90k, h.id)? else {
        return Ok(()); // deleted by retention meanwhile
    };
    let mut r = RecoveryReport::default();
    if check_entry(&inner.index()?, &inner.layout, key.as_ref(), &h, &mut r)? == Checked::Repaired {
        progress.findings.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut total) = progress.report.lock() {
            total.entries_dropped += r.entries_dropped;
            total.segments_recovered += r.segments_recovered;
            total.orphans_indexed += r.orphans_indexed;
            total.orphans_deleted += r.orphans_deleted;
            total.bytes_truncated += r.bytes_truncated;
        }
    }
    Ok(())
}

//! Crash recovery, run by [`crate::Store::open`] before anything is served, and the shared
//! "index a segment file from its own content" used by recovery and reindex.
//!
//! 1. Finish interrupted deletions (`garbage` rows): unlink, fsync the directory, drop the row.
//! 2. Check each stream's newest entries ([`RECENT_ENTRIES_PER_STREAM`], by start and by id:
//!    the only ones a crash can have left open or short) against their files: a missing file
//!    drops the entry; a file shorter than the indexed length drops the entry and the file is
//!    re-read as an orphan; an entry still open (or a file longer than indexed) is re-read from
//!    the file: its complete fragments beyond the indexed length are indexed, a partial tail is
//!    truncated, a trailer (`recovered`) is appended and the entry is closed. Every older entry
//!    gets the same check ([`check_entry`]) afterwards, in the background, throttled, while
//!    recording runs ([`crate::verify`]).
//! 3. Orphans (files with no entry) in the date directory of each stream's newest entry and
//!    later ones — where a crash can leave them — are indexed from their own metadata if they hold at least one
//!    complete fragment, else deleted. Only files with an id from the oldest of the stream's
//!    entries checked in step 2 on are looked up in the index (a crash's orphan is newer).
//!    Orphans elsewhere in the history (a full disk can leave them) are found afterwards by the
//!    background pass ([`crate::verify`]), which looks up every older file.
//! 4. The next segment id is raised above every id seen (the index's highest id and the
//!    orphans').
//!
//! Steps 1–4 cost reverse range scans and a few date directories per stream: the time and
//! memory of a start no longer grow with the history kept (issue 16).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

use vigie_core::{StreamKey, Time90k};
use vigie_mp4::{ParsedSegment, SegmentTrailer};

use crate::StoreError;
use crate::index::{EntryHead, Index, SegmentEntry, seg_key};
use crate::layout::{Layout, file_name, fsync_dir, read_dir_sorted};
use crate::sampletable::{FragmentLoc, FragmentTableEncoder, SampleTableEncoder};

/// End reason given to segments closed by recovery.
pub const RECOVERED: &str = "recovered";

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryReport {
    pub garbage_removed: u64,
    pub entries_dropped: u64,
    pub segments_recovered: u64,
    pub orphans_indexed: u64,
    pub orphans_deleted: u64,
    pub bytes_truncated: u64,
}

/// What became of a file given to [`index_file`].
#[derive(Debug)]
pub(crate) enum FileOutcome {
    Indexed {
        entry: Box<SegmentEntry>,
        repaired: bool,
        truncated: u64,
    },
    Deleted,
    Problem(String),
}

fn remove_durably(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io("deleting", path)(e)),
    }
    if let Some(dir) = path.parent()
        && dir.exists()
    {
        fsync_dir(dir).map_err(StoreError::io("fsync", dir))?;
    }
    Ok(())
}

/// Reads a segment file, cuts it back to its last complete fragment, closes it with a trailer
/// if it has none, and indexes it. Files without a complete fragment are deleted.
pub(crate) fn index_file(
    index: &Index,
    layout: &Layout,
    key: &StreamKey,
    path: &Path,
) -> Result<FileOutcome, StoreError> {
    let mut file = File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(StoreError::io("opening", path))?;
    let p: ParsedSegment =
        vigie_mp4::parse_segment(&mut file).map_err(StoreError::io("reading", path))?;
    let Some(init) = p.init.as_ref().filter(|_| !p.fragments.is_empty()) else {
        tracing::warn!(path = %path.display(), problem = ?p.problem, "segment file has no complete fragment: deleting it");
        drop(file);
        remove_durably(path)?;
        return Ok(FileOutcome::Deleted);
    };
    let m = &init.meta;
    if m.camera != key.camera || m.stream != key.stream {
        return Ok(FileOutcome::Problem(format!(
            "{}: belongs to {}/{}, not {key}",
            path.display(),
            m.camera,
            m.stream
        )));
    }
    let expected = layout.segment_path(key, m.segment_id, Time90k(m.start_90k));
    if expected != path {
        return Ok(FileOutcome::Problem(format!(
            "{}: its metadata says it should be {}",
            path.display(),
            expected.display()
        )));
    }
    let media: u64 = p.media_duration_90k();
    let repaired = p.trailer.is_none() || p.complete_len != p.total_len;
    let truncated = p.total_len - p.complete_len;
    let mut bytes = p.complete_len;
    let trailer = match &p.trailer {
        Some(t) => t.clone(),
        None => SegmentTrailer {
            wall_duration_90k: media as i64,
            end_reason: RECOVERED.to_owned(),
        },
    };
    if repaired {
        if truncated > 0 {
            tracing::warn!(path = %path.display(), bytes = truncated, problem = ?p.problem, "truncating a partial tail");
        }
        file.set_len(p.complete_len)
            .map_err(StoreError::io("truncating", path))?;
        if p.trailer.is_none() {
            let t = vigie_mp4::trailer_box(&trailer);
            file.seek(SeekFrom::Start(p.complete_len))
                .map_err(StoreError::io("seeking", path))?;
            file.write_all(&t)
                .map_err(StoreError::io("writing", path))?;
            bytes += t.len() as u64;
        }
        file.sync_all().map_err(StoreError::io("fsync", path))?;
    }
    let mut frags = FragmentTableEncoder::default();
    let mut prev_end = init.len;
    for f in &p.fragments {
        let loc = FragmentLoc {
            offset: f.offset,
            header_len: (f.data_offset - f.offset) as u32,
            samples: f.samples.len() as u32,
        };
        frags.push(prev_end, &loc);
        prev_end = f.end;
    }
    let samples: Vec<_> = p.fragments.iter().flat_map(|f| f.samples.iter()).collect();
    let table = SampleTableEncoder::of(samples.iter().copied());
    let entry = SegmentEntry {
        head: EntryHead {
            id: m.segment_id,
            stream_id: index.stream_id(key)?,
            start_90k: m.start_90k,
            wall_duration_90k: trailer.wall_duration_90k,
            media_duration_90k: media as i64,
            bytes,
            frames: samples.len() as u32,
            key_frames: samples.iter().filter(|s| s.is_key).count() as u32,
            width: init.params.width,
            height: init.params.height,
            codec: init.params.codec,
            params_id: index.put_params(&init.params)?,
            session_id: m.session_id,
            open: false,
            end_reason: Some(trailer.end_reason.clone()),
            counts: crate::sampletable::counts(&table, &frags),
        },
        init_len: init.len as u32,
        sample_table: table.packed_prefix(table.buf.len()),
        fragment_table: frags.packed_prefix(frags.buf.len()),
    };
    index.put_segment(&entry)?;
    Ok(FileOutcome::Indexed {
        entry: Box::new(entry),
        repaired,
        truncated,
    })
}

/// How many of each stream's newest entries (by start, and by id across the store) start-up
/// recovery checks before recording resumes. A crash can only have affected the segments being
/// written, which are each stream's newest; the margin covers a writer replaced while its old
/// segment was still open and a wall clock stepped back (a newer id keyed at an earlier start).
pub const RECENT_ENTRIES_PER_STREAM: usize = 8;

/// What start-up recovery leaves to the background verification ([`crate::verify`]).
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    /// [`seg_key`]s of the entries already checked at start-up (at most [`RECENT_ENTRIES_PER_STREAM`] × 2 per
    /// stream: memory bounded by the number of streams).
    pub checked: BTreeSet<[u8; 20]>,
    /// Ids from this one on are allocated by this run's writers: not history.
    pub first_new_id: u64,
}

/// Removes an entry (its block or open row, and its id row).
pub(crate) fn remove_entry(index: &Index, h: &EntryHead) -> Result<(), StoreError> {
    index.remove_segment(h)
}

/// What [`check_entry`] concluded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Checked {
    /// File present with the indexed length, entry closed: nothing done.
    Sound,
    /// Something was done (entry dropped or recovered, file re-read): a finding.
    Repaired,
}

/// Checks one index entry against its file, exactly as start-up recovery always has: a missing
/// file drops the entry; a file shorter than indexed drops the entry and the file is re-read as
/// an orphan; an entry still open (or a file longer than indexed) is re-read from the file.
/// Findings are logged (the journal of these repairs) and counted in `r`.
pub(crate) fn check_entry(
    index: &Index,
    layout: &Layout,
    key: Option<&StreamKey>,
    e: &EntryHead,
    r: &mut RecoveryReport,
) -> Result<Checked, StoreError> {
    let Some(key) = key else {
        tracing::warn!(
            segment = e.id,
            stream_id = e.stream_id,
            "index entry of an unknown stream: dropped"
        );
        remove_entry(index, e)?;
        r.entries_dropped += 1;
        return Ok(Checked::Repaired);
    };
    let path = layout.segment_path(key, e.id, e.start());
    let len = match fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            tracing::warn!(camera = %key.camera, stream = %key.stream, segment = e.id, path = %path.display(), "segment file missing: index entry dropped");
            remove_entry(index, e)?;
            r.entries_dropped += 1;
            return Ok(Checked::Repaired);
        }
        Err(err) => return Err(StoreError::io("reading metadata of", &path)(err)),
    };
    if len < e.bytes {
        tracing::warn!(camera = %key.camera, stream = %key.stream, segment = e.id, len, indexed = e.bytes, "segment file shorter than indexed: entry dropped, file re-read as an orphan");
        remove_entry(index, e)?;
        r.entries_dropped += 1;
        index_orphan(index, layout, key, e.id, &path, r)?;
        return Ok(Checked::Repaired);
    }
    if !e.open && len == e.bytes {
        return Ok(Checked::Sound);
    }
    match index_file(index, layout, key, &path)? {
        FileOutcome::Indexed {
            entry, truncated, ..
        } => {
            tracing::info!(camera = %key.camera, stream = %key.stream, segment = e.id, frames = entry.frames, indexed_before = e.frames, truncated, "open segment recovered");
            r.segments_recovered += 1;
            r.bytes_truncated += truncated;
        }
        FileOutcome::Deleted => {
            remove_entry(index, e)?;
            r.entries_dropped += 1;
        }
        FileOutcome::Problem(p) => {
            tracing::warn!(camera = %key.camera, stream = %key.stream, segment = e.id, problem = %p, "segment file unusable: index entry dropped");
            remove_entry(index, e)?;
            r.entries_dropped += 1;
        }
    }
    Ok(Checked::Repaired)
}

/// Indexes a file with no entry from its own content (or deletes it if it holds no complete
/// fragment).
pub(crate) fn index_orphan(
    index: &Index,
    layout: &Layout,
    key: &StreamKey,
    id: u64,
    path: &Path,
    r: &mut RecoveryReport,
) -> Result<(), StoreError> {
    match index_file(index, layout, key, path)? {
        FileOutcome::Indexed { truncated, .. } => {
            tracing::info!(camera = %key.camera, stream = %key.stream, segment = id, "orphan segment file indexed");
            r.orphans_indexed += 1;
            r.bytes_truncated += truncated;
        }
        FileOutcome::Deleted => r.orphans_deleted += 1,
        FileOutcome::Problem(p) => {
            tracing::warn!(camera = %key.camera, stream = %key.stream, segment = id, problem = %p, "orphan segment file left in place")
        }
    }
    Ok(())
}

/// The [`seg_key`]s of the entries start-up recovery checks: each stream's newest entries by start, and the
/// newest ids of the whole store (an id newer than its stream's newest start means the clock
/// stepped back). Reverse range scans: cost independent of the history.
fn recent_keys(
    index: &Index,
    streams: &[(u32, StreamKey)],
) -> Result<BTreeSet<[u8; 20]>, StoreError> {
    let mut keys = BTreeSet::new();
    for (sid, _) in streams {
        for h in index.newest_heads(*sid, RECENT_ENTRIES_PER_STREAM)? {
            keys.insert(seg_key(h.stream_id, h.start_90k, h.id));
        }
    }
    for (id, bk) in index.newest_ids(RECENT_ENTRIES_PER_STREAM * streams.len().max(1))? {
        if let Some(h) = index.head_in(&bk, id)? {
            keys.insert(seg_key(h.stream_id, h.start_90k, h.id));
        }
    }
    Ok(keys)
}

/// The (stream id, start, id) a [`seg_key`] names.
pub(crate) fn key_fields(k: &[u8; 20]) -> (u32, i64, u64) {
    let row = crate::index::ByIdRow {
        key: *k,
        bytes_open: None,
    };
    (row.stream_id(), row.start_90k(), row.id())
}

/// Start-up recovery: everything a crash can have affected, in time independent of the history
/// kept. Returns what the background verification must still look at.
pub(crate) fn recover(
    index: &Index,
    layout: &Layout,
) -> Result<(RecoveryReport, Deferred), StoreError> {
    let mut r = RecoveryReport::default();

    // 1. Interrupted deletions.
    for kv in index.garbage.iter() {
        let (k, v) = kv?;
        let row: crate::index::GarbageRow = postcard::from_bytes(&v)?;
        remove_durably(&row.path)?;
        index.garbage.remove(k)?;
        r.garbage_removed += 1;
    }

    // 2. The newest entries against their files (the rest: crate::verify, in the background).
    let streams = index.all_streams()?;
    let keys: std::collections::HashMap<u32, StreamKey> = streams.iter().cloned().collect();
    let checked = recent_keys(index, &streams)?;
    for k in &checked {
        let (sid, start, id) = key_fields(k);
        let Some(e) = index.head_at(sid, start, id)? else {
            continue;
        };
        check_entry(index, layout, keys.get(&e.stream_id), &e, &mut r)?;
    }
    let mut max_id = index.max_id()?;

    // 3. Orphans in recent date directories.
    for (key, dir) in layout
        .list_stream_dirs()
        .map_err(StoreError::io("listing", &layout.recordings_dir()))?
    {
        let newest = match index.existing_stream_id(&key)? {
            Some(sid) => index.newest_heads(sid, 1)?.pop(),
            None => None,
        };
        // A crash's orphan starts after the newest entry (allowing an hour of wall-clock
        // correction): at most that entry's date directory and later ones are listed. Orphans
        // anywhere else are found by the background pass (`crate::verify`).
        let from = newest.map(|e| {
            Layout::date_dir_name(Time90k(
                e.start_90k - 3_600 * vigie_core::TIME_UNITS_PER_SEC,
            ))
        });
        // A writer creates its next file only after closing the previous one, so a crash's
        // orphan is newer (by id) than its stream's newest entries, all of which step 2 saw:
        // files older than the oldest of those are indexed (or were handled in step 2) and need
        // no lookup. Saves one index lookup per file of the last two days (3.5 s at 200 streams
        // on a cold cache).
        let oldest_checked_id = match index.existing_stream_id(&key)? {
            Some(sid) => {
                let lo = seg_key(sid, i64::MIN, 0);
                let hi = seg_key(sid, i64::MAX, u64::MAX);
                checked
                    .range(lo..=hi)
                    .map(|k| {
                        u64::from_be_bytes([k[12], k[13], k[14], k[15], k[16], k[17], k[18], k[19]])
                    })
                    .min()
            }
            None => None,
        };
        for date_dir in read_dir_sorted(&dir).map_err(StoreError::io("listing", &dir))? {
            let Some(name) = file_name(&date_dir) else {
                continue;
            };
            if from.as_ref().is_some_and(|f| name < *f) || !date_dir.is_dir() {
                continue;
            }
            for path in read_dir_sorted(&date_dir).map_err(StoreError::io("listing", &date_dir))? {
                let Some(id) = file_name(&path)
                    .as_deref()
                    .and_then(Layout::parse_segment_file_name)
                else {
                    continue;
                };
                max_id = max_id.max(id);
                if oldest_checked_id.is_some_and(|o| id < o) || index.contains_id(id)? {
                    continue;
                }
                index_orphan(index, layout, &key, id, &path, &mut r)?;
            }
        }
    }

    // 4. Ids.
    index.set_next_segment_id(max_id + 1)?;
    index.db.flush()?;
    let first_new_id = index.next_segment_id()?;
    Ok((
        r,
        Deferred {
            checked,
            first_new_id,
        },
    ))
}

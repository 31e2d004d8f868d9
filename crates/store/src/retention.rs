//! Retention: destroy whole segments whose end is older than the stream's retention, then, while
//! the data directory's free space is below the floor, the oldest segments across all streams.
//! Open segments are never deleted.
//!
//! Deletion order (crash-safe): one index transaction removes the entry, inserts a `garbage` row
//! and journals the deletion → unlink the file → fsync its directory → remove the `garbage` row.
//! A crash in between leaves a `garbage` row that recovery finishes.

use std::fs;

use vigie_core::config::LEGAL_MAX_RETENTION_DAYS;
use vigie_core::{Duration90k, StreamKey, Time90k};

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use crate::index::{GarbageRow, Index, SegmentEntry, seg_key};
use crate::layout::{Layout, fsync_dir};
use crate::{DeletionRecord, Inner, RetentionPolicy, RetentionReport, StoreError};

pub const FREE_SPACE_REASON: &str = "free space below floor";

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
    let streams = inner.index.all_streams()?;
    let holds = crate::holds::active(inner)?;
    let held =
        |key: &StreamKey, e: &SegmentEntry| holds.iter().any(|h| h.covers(key, e.start(), e.end()));

    for (sid, key) in &streams {
        let days = policy
            .per_stream_days
            .get(key)
            .copied()
            .unwrap_or(LEGAL_MAX_RETENTION_DAYS)
            .min(LEGAL_MAX_RETENTION_DAYS);
        let cutoff = now - Duration90k::from_secs(i64::from(days) * 86_400);
        let mut victims = Vec::new();
        for e in inner.index.stream_segments(*sid) {
            let e = e?;
            if e.start() >= cutoff {
                break;
            }
            if !e.open && e.end() <= cutoff {
                if held(key, &e) {
                    report.held_kept += 1;
                } else {
                    victims.push(e);
                }
            }
        }
        for e in victims {
            delete(
                inner,
                key,
                &e,
                &format!("age > {days} days"),
                now,
                &mut report,
            )?;
        }
    }

    let dir = &inner.cfg.data_dir;
    loop {
        let space = inner
            .free
            .space(dir)
            .map_err(StoreError::io("statvfs", dir))?;
        report.free_bytes = space.free_bytes;
        if space.free_bytes >= inner.cfg.min_free_bytes {
            if inner
                .recording_blocked
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                tracing::warn!(
                    free = space.free_bytes,
                    "free space is above the floor again: recording resumes"
                );
            }
            break;
        }
        let mut oldest: Option<(&StreamKey, SegmentEntry)> = None;
        for (sid, key) in &streams {
            for e in inner.index.stream_segments(*sid) {
                let e = e?;
                if e.open || held(key, &e) {
                    continue;
                }
                if oldest
                    .as_ref()
                    .is_none_or(|(_, o)| e.start_90k < o.start_90k)
                {
                    oldest = Some((key, e));
                }
                break;
            }
        }
        let Some((key, e)) = oldest else {
            tracing::warn!(
                free = space.free_bytes,
                floor = inner.cfg.min_free_bytes,
                "free space below the floor and nothing left to delete"
            );
            report.floor_unreachable = true;
            // Held footage is never deleted to make room: stop recording instead (alert).
            if !holds.is_empty() {
                report.recording_blocked = true;
                if !inner
                    .recording_blocked
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    tracing::error!(
                        free = space.free_bytes,
                        floor = inner.cfg.min_free_bytes,
                        "disk full of footage under legal hold: RECORDING STOPPED until space is freed or holds are released"
                    );
                }
            } else if inner
                .recording_blocked
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                tracing::warn!(
                    "no legal hold left: recording resumes (free space is still below the floor)"
                );
            }
            break;
        };
        delete(inner, key, &e, FREE_SPACE_REASON, now, &mut report)?;
    }
    Ok(report)
}

fn delete(
    inner: &Inner,
    key: &StreamKey,
    e: &SegmentEntry,
    reason: &str,
    now: Time90k,
    report: &mut RetentionReport,
) -> Result<(), StoreError> {
    let ix: &Index = &inner.index;
    let path = inner.layout.segment_path(key, e.id, e.start());
    let rec = DeletionRecord {
        camera: key.camera.clone(),
        stream: key.stream.clone(),
        segment_id: e.id,
        start: e.start(),
        end: e.end(),
        bytes: e.bytes,
        when: now,
        reason: reason.to_owned(),
    };
    let seq = ix.db.generate_id()?;
    let garbage = postcard::to_allocvec(&GarbageRow {
        path: path.clone(),
        bytes: e.bytes,
    })?;
    let rec_bytes = postcard::to_allocvec(&rec)?;
    let skey = seg_key(e.stream_id, e.start_90k, e.id);
    let id = e.id.to_be_bytes();
    (&ix.segments, &ix.by_id, &ix.garbage, &ix.deletions).transaction(
        |(segs, by_id, garb, dels)| {
            segs.remove(&skey[..])?;
            by_id.remove(&id[..])?;
            garb.insert(&id[..], garbage.as_slice())?;
            dels.insert(&Index::deletion_key(now, seq)[..], rec_bytes.as_slice())?;
            Ok::<(), ConflictableTransactionError<StoreError>>(())
        },
    )?;
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
    ix.garbage.remove(id)?;
    inner.free.on_deleted(e.bytes);
    inner
        .segments_deleted
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    inner
        .bytes_deleted
        .fetch_add(e.bytes, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(camera = %key.camera, stream = %key.stream, segment = e.id, start = %rec.start, end = %rec.end, bytes = e.bytes, reason, "segment deleted");
    report.bytes_deleted += e.bytes;
    report.deleted.push(rec);
    Ok(())
}

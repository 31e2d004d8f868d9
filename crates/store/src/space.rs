//! Free space where bytes are written: the free-space floor as the writers see it, the reserve
//! file that lets the index write on a full disk, and the storage state reported by health.
//!
//! Owns:
//! * `Space::admit`, called by every writer before it starts a segment and before each
//!   fragment it writes. Below `min_free_bytes` it wakes the deletion of the oldest footage at
//!   once (`Space::wanted`, awaited by the retention loop) instead of waiting for the periodic
//!   pass; below **half** the floor (at most 256 MiB: `Space::stop_bytes`) it refuses: the
//!   writer ends its segment (`disk-full`) and records again at the first key frame once space
//!   is back. The rest is left to the index, the access journal and exports.
//! * The **reserve**, `<data_dir>/.reserve`: a file of a quarter of the floor (at most
//!   [`MAX_RESERVE_BYTES`]) kept allocated while the disk has room. It is released (unlinked)
//!   when the index may need the space: at start-up before the index is opened (sled writes a
//!   snapshot when it opens), and when a write of the index failed, before the index is reopened
//!   and footage deleted. It is created again once free space is back above floor + reserve.
//! * The storage state ([`StorageState`]): what is wrong, for `/api/v1/health`.
//!
//! Why the reserve and not only the floor: the floor keeps footage from filling the disk, but
//! something else can (exports, the journal, another program). sled cannot write then, and a
//! failed write poisons a sled database until it is reopened, which itself writes; deleting
//! footage needs an index transaction. The reserve guarantees those writes a few MiB.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::freespace::FreeSpace;
use crate::layout::fsync_dir;

/// Name of the reserve file in the data directory.
pub const RESERVE_FILE: &str = ".reserve";
/// Largest reserve, whatever the floor.
pub const MAX_RESERVE_BYTES: u64 = 64 << 20;
/// Writers stop below half the floor, but never higher than this: with a huge floor (larger
/// than the disk, to make retention delete everything closed) recording still goes on while
/// retention deletes.
pub const MAX_STOP_BYTES: u64 = 256 << 20;

/// Size of the reserve for a floor: a quarter of it, at most [`MAX_RESERVE_BYTES`].
pub fn reserve_bytes_for(min_free_bytes: u64) -> u64 {
    (min_free_bytes / 4).min(MAX_RESERVE_BYTES)
}

/// What is wrong with the storage.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageState {
    /// Free space at or above the floor, index writable.
    Ok,
    /// Below the floor: the oldest footage is being deleted; recording continues.
    BelowFloor,
    /// Below the stop level (half the floor, at most 256 MiB): recording stopped until the
    /// oldest footage is deleted (or, with nothing left to delete, until space returns).
    Full,
    /// Below the floor and what is left is under legal hold: recording stopped (never deleted).
    HeldFull,
    /// The index cannot be written (e.g. its file system is full): recording stopped until it
    /// can be reopened.
    IndexError,
}

/// The storage part of health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StorageHealth {
    pub state: StorageState,
    pub free_bytes: u64,
    pub floor_bytes: u64,
    /// Writers stop below this (half the floor, at most 256 MiB).
    pub stop_bytes: u64,
    pub reserve_bytes: u64,
    /// The reserve file is in place.
    pub reserve_present: bool,
    /// Recording is stopped (state `full`, `held_full` or `index_error`).
    pub recording_blocked: bool,
    /// What is wrong, in words (empty when `ok`).
    pub message: String,
}

/// What a writer may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    Write,
    /// Stop: the reason recorded as the segment's end reason, and the message to log.
    Refuse {
        reason: &'static str,
        message: String,
    },
}

pub(crate) struct Space {
    data_dir: PathBuf,
    floor_bytes: u64,
    reserve_bytes: u64,
    free: std::sync::Arc<dyn FreeSpace>,
    /// Wakes the retention loop for an immediate free-space pass.
    wake: tokio::sync::Notify,
    /// Set while the index cannot be written (message); cleared once reopened.
    index_error: Mutex<Option<String>>,
    index_failed: AtomicBool,
    /// Set by the free-space pass: nothing left to delete but held footage.
    held_full: AtomicBool,
    /// Set by the free-space pass: nothing left to delete at all (open segments, other files).
    nothing_to_delete: AtomicBool,
    /// Last time a writer woke the retention loop (to wake it at most every 100 ms).
    last_wake: Mutex<Option<Instant>>,
}

impl Space {
    pub fn new(data_dir: &Path, floor_bytes: u64, free: std::sync::Arc<dyn FreeSpace>) -> Space {
        Space {
            data_dir: data_dir.to_owned(),
            floor_bytes,
            reserve_bytes: reserve_bytes_for(floor_bytes),
            free,
            wake: tokio::sync::Notify::new(),
            index_error: Mutex::new(None),
            index_failed: AtomicBool::new(false),
            held_full: AtomicBool::new(false),
            nothing_to_delete: AtomicBool::new(false),
            last_wake: Mutex::new(None),
        }
    }

    /// Writers stop below this: half the floor, at most [`MAX_STOP_BYTES`].
    pub fn stop_bytes(&self) -> u64 {
        (self.floor_bytes / 2).min(MAX_STOP_BYTES)
    }

    pub fn reserve_path(&self) -> PathBuf {
        self.data_dir.join(RESERVE_FILE)
    }

    /// Free bytes of the data directory's file system now (`u64::MAX` if statvfs fails: a
    /// failing statvfs must not stop recording; the error is logged).
    pub fn free_bytes(&self) -> u64 {
        match self.free.space(&self.data_dir) {
            Ok(s) => s.free_bytes,
            Err(e) => {
                tracing::warn!(error = %e, dir = %self.data_dir.display(), "statvfs failed");
                u64::MAX
            }
        }
    }

    /// Asks the retention loop for a free-space pass now (coalesced: at most every 100 ms).
    pub fn wake(&self) {
        let mut last = self.last_wake.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed().as_millis() >= 100) {
            *last = Some(Instant::now());
            self.wake.notify_one();
        }
    }

    /// Resolves when a writer (or an index failure) asks for a free-space pass.
    pub async fn wanted(&self) {
        self.wake.notified().await
    }

    /// Called by a writer before it starts a segment and before each fragment.
    pub fn admit(&self) -> Admit {
        if let Some(msg) = self.index_error() {
            return Admit::Refuse {
                reason: "index-error",
                message: msg,
            };
        }
        if self.floor_bytes == 0 {
            return Admit::Write;
        }
        let free = self.free_bytes();
        if free >= self.floor_bytes {
            return Admit::Write;
        }
        self.wake();
        if free >= self.stop_bytes() {
            return Admit::Write;
        }
        if self.held_full.load(Ordering::Relaxed) {
            return Admit::Refuse {
                reason: "disk-full-held",
                message: format!(
                    "{free} bytes free, floor {}: what is left on disk is under legal hold",
                    self.floor_bytes
                ),
            };
        }
        Admit::Refuse {
            reason: "disk-full",
            message: format!(
                "{free} bytes free, below the stop level ({} bytes; floor {}): waiting for the oldest footage to be deleted",
                self.stop_bytes(),
                self.floor_bytes
            ),
        }
    }

    pub fn index_error(&self) -> Option<String> {
        if !self.index_failed.load(Ordering::Relaxed) {
            return None;
        }
        self.index_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A write of the index failed with an I/O error: sled refuses every write from now on
    /// until it is reopened. Writers stop; the retention loop is woken to free space and reopen.
    pub fn set_index_error(&self, msg: String) {
        let mut g = self.index_error.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            tracing::error!(error = %msg, "the index cannot be written: recording stops until it can be reopened");
        }
        *g = Some(msg);
        self.index_failed.store(true, Ordering::SeqCst);
        drop(g);
        self.wake.notify_one();
    }

    pub fn clear_index_error(&self) {
        let mut g = self.index_error.lock().unwrap_or_else(|p| p.into_inner());
        if g.take().is_some() {
            tracing::warn!("the index was reopened and is writable again: recording resumes");
        }
        self.index_failed.store(false, Ordering::SeqCst);
    }

    /// Result of a free-space pass: whether anything deletable was left when it ended.
    /// Returns the previous "nothing to delete" (to log a change once, not at every pass).
    pub fn set_pass_outcome(&self, held_full: bool, nothing_to_delete: bool) -> bool {
        self.held_full.store(held_full, Ordering::SeqCst);
        self.nothing_to_delete
            .swap(nothing_to_delete, Ordering::SeqCst)
    }

    pub fn reserve_present(&self) -> bool {
        self.reserve_path().exists()
    }

    /// Unlinks the reserve (durably) if it exists; returns the bytes it held.
    pub fn release_reserve(&self, why: &str) -> u64 {
        let path = self.reserve_path();
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(_) => return 0,
        };
        match fs::remove_file(&path) {
            Ok(()) => {
                let _ = fsync_dir(&self.data_dir);
                tracing::warn!(bytes = len, why, "reserve file released");
                len
            }
            Err(e) => {
                tracing::error!(error = %e, path = %path.display(), "cannot release the reserve file");
                0
            }
        }
    }

    /// Creates the reserve if it is missing and free space allows it (above floor + reserve).
    pub fn ensure_reserve(&self) {
        if self.reserve_bytes == 0 || self.index_error().is_some() {
            return;
        }
        let path = self.reserve_path();
        if path.exists() {
            return;
        }
        let free = self.free_bytes();
        if free < self.floor_bytes.saturating_add(self.reserve_bytes) {
            return;
        }
        match create_reserve(&path, self.reserve_bytes) {
            Ok(()) => {
                let _ = fsync_dir(&self.data_dir);
                tracing::info!(bytes = self.reserve_bytes, path = %path.display(), "reserve file created");
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot create the reserve file")
            }
        }
    }

    pub fn health(&self, recording_blocked_held: bool) -> StorageHealth {
        let free = self.free_bytes();
        let (state, message) = if let Some(msg) = self.index_error() {
            (
                StorageState::IndexError,
                format!(
                    "the index cannot be written: {msg}; recording stopped until it can be reopened"
                ),
            )
        } else if recording_blocked_held
            || (self.held_full.load(Ordering::Relaxed) && free < self.floor_bytes)
        {
            (
                StorageState::HeldFull,
                format!(
                    "{free} bytes free, below the floor of {} bytes, and everything left to delete is under legal hold: recording stopped until space is freed or holds are released",
                    self.floor_bytes
                ),
            )
        } else if free < self.stop_bytes() {
            (
                StorageState::Full,
                format!(
                    "{free} bytes free, below the stop level of {} bytes (floor {}): recording stopped until the oldest footage is deleted{}",
                    self.stop_bytes(),
                    self.floor_bytes,
                    if self.nothing_to_delete.load(Ordering::Relaxed) {
                        " (nothing left to delete: other files fill the disk)"
                    } else {
                        ""
                    }
                ),
            )
        } else if free < self.floor_bytes {
            (
                StorageState::BelowFloor,
                format!(
                    "{free} bytes free, below the floor of {} bytes: deleting the oldest footage",
                    self.floor_bytes
                ),
            )
        } else {
            (StorageState::Ok, String::new())
        };
        StorageHealth {
            state,
            free_bytes: free,
            floor_bytes: self.floor_bytes,
            stop_bytes: self.stop_bytes(),
            reserve_bytes: self.reserve_bytes,
            reserve_present: self.reserve_present(),
            recording_blocked: matches!(
                state,
                StorageState::Full | StorageState::HeldFull | StorageState::IndexError
            ),
            message,
        }
    }
}

/// Writes the reserve under a temporary name, syncs it, then renames it: a crash never leaves a
/// short reserve under the real name (a short one would be harmless anyway).
fn create_reserve(path: &Path, bytes: u64) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let res = (|| {
        let mut f = File::create(&tmp)?;
        // Real blocks (not a sparse file): zeros written, 1 MiB at a time.
        let chunk = vec![0u8; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// True for the error sled returns once a write failed for lack of space (or any I/O error:
/// sled refuses every later write until reopened either way).
pub(crate) fn is_sled_io(e: &crate::StoreError) -> bool {
    use crate::StoreError;
    matches!(
        e,
        StoreError::Sled(sled::Error::Io(_))
            | StoreError::Index {
                source: sled::Error::Io(_),
                ..
            }
    )
}

/// True for "no space left on device" (ENOSPC) or "disk quota exceeded" (EDQUOT).
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::libc::ENOSPC || code == nix::libc::EDQUOT
    ) || e.kind() == io::ErrorKind::StorageFull
}

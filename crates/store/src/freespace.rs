//! Free space of the data directory: `statvfs` in production, injectable in tests (filling a
//! real disk to test the free-space floor is impractical).

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};

/// Free and total bytes of a file system.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes available to an unprivileged process.
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// Source of free-space figures.
pub trait FreeSpace: Send + Sync + 'static {
    fn space(&self, dir: &Path) -> io::Result<DiskSpace>;
    /// Told after the store unlinked `bytes` of segment files (used by fakes).
    fn on_deleted(&self, _bytes: u64) {}
}

/// The real thing: `statvfs(2)`.
#[derive(Copy, Clone, Debug, Default)]
pub struct Statvfs;

impl FreeSpace for Statvfs {
    fn space(&self, dir: &Path) -> io::Result<DiskSpace> {
        let s = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
        let frag = s.fragment_size() as u64;
        Ok(DiskSpace {
            free_bytes: (s.blocks_available() as u64).saturating_mul(frag),
            total_bytes: (s.blocks() as u64).saturating_mul(frag),
        })
    }
}

/// A fake for tests: free space = a settable base + the bytes the store has deleted so far
/// (the store reports them through [`FreeSpace::on_deleted`]).
#[derive(Debug)]
pub struct FakeFreeSpace {
    free: AtomicI64,
    pub total: u64,
}

impl FakeFreeSpace {
    pub fn new(free: u64, total: u64) -> Self {
        FakeFreeSpace {
            free: AtomicI64::new(free as i64),
            total,
        }
    }
    pub fn set_free(&self, free: u64) {
        self.free.store(free as i64, Ordering::SeqCst);
    }
    /// Called when `bytes` were freed.
    pub fn note_deleted(&self, bytes: u64) {
        self.free.fetch_add(bytes as i64, Ordering::SeqCst);
    }
}

impl FreeSpace for FakeFreeSpace {
    fn space(&self, _dir: &Path) -> io::Result<DiskSpace> {
        Ok(DiskSpace {
            free_bytes: self.free.load(Ordering::SeqCst).max(0) as u64,
            total_bytes: self.total,
        })
    }
    fn on_deleted(&self, bytes: u64) {
        self.note_deleted(bytes);
    }
}

impl<T: FreeSpace> FreeSpace for std::sync::Arc<T> {
    fn space(&self, dir: &Path) -> io::Result<DiskSpace> {
        (**self).space(dir)
    }
    fn on_deleted(&self, bytes: u64) {
        (**self).on_deleted(bytes)
    }
}

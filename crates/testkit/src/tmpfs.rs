//! A small real file system for full-disk tests: a tmpfs of a given size mounted on a temporary
//! directory (needs root; [`Tmpfs::mount`] returns `None` with the reason printed when mounting
//! is refused, so tests can skip), unmounted when dropped, even after a failed assertion.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    dir: PathBuf,
    _holder: Option<tempfile::TempDir>,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_mib` MiB on a new temporary directory.
    pub fn mount(size_mib: u64) -> Option<Tmpfs> {
        let holder = tempfile::tempdir().ok()?;
        let dir = holder.path().to_owned();
        let mut t = Self::mount_at(&dir, size_mib)?;
        t._holder = Some(holder);
        Some(t)
    }

    /// Mounts a tmpfs of `size_mib` MiB on `dir` (created if needed).
    pub fn mount_at(dir: &Path, size_mib: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                dir: dir.to_owned(),
                _holder: None,
            }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs on {} (needs root): {}",
                    dir.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Grows or shrinks the file system (tmpfs can be resized while mounted).
    pub fn resize(&self, size_mib: u64) -> bool {
        Command::new("mount")
            .args(["-o", &format!("remount,size={size_mib}m")])
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process still holding a file there (a Vigie being killed) must not make the
        // unmount fail and leave the mount behind.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Free bytes of the file system holding `dir` (as an unprivileged process sees them).
pub fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output();
    out.ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .and_then(|l| l.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Writes `path` until the file system is full (ENOSPC): "another program fills the disk".
/// Returns the bytes written.
pub fn fill(path: &Path) -> u64 {
    let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    else {
        return 0;
    };
    let mut written = 0u64;
    for chunk in [1 << 20, 64 << 10, 4 << 10, 512] {
        let buf = vec![0x5au8; chunk];
        while f.write_all(&buf).is_ok() {
            written += chunk as u64;
        }
    }
    let _ = f.sync_all();
    written
}

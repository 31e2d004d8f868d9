//! Where things live under the data directory, and the few file-system helpers that make
//! creation and deletion durable.
//!
//! ```text
//! <data_dir>/index/                                  sled index
//! <data_dir>/recordings/<camera>/<stream>/<YYYYMMDD>/<segment id, 12 digits>-<HHMMSS>Z.mp4
//! ```
//! The date and time are the segment's wall-clock start in UTC. The file name carries the
//! segment id so recovery can tell indexed files from orphans without opening them.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use vigie_core::{StreamKey, Time90k};

#[derive(Clone, Debug)]
pub struct Layout {
    pub data_dir: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &Path) -> Self {
        Layout {
            data_dir: data_dir.to_owned(),
        }
    }

    pub fn index_dir(&self) -> PathBuf {
        self.data_dir.join("index")
    }

    pub fn recordings_dir(&self) -> PathBuf {
        self.data_dir.join("recordings")
    }

    pub fn stream_dir(&self, key: &StreamKey) -> PathBuf {
        self.recordings_dir().join(&key.camera).join(&key.stream)
    }

    /// `YYYYMMDD` (UTC) of an instant.
    pub fn date_dir_name(start: Time90k) -> String {
        let dt = start.to_timestamp().to_zoned(jiff::tz::TimeZone::UTC);
        format!("{:04}{:02}{:02}", dt.year(), dt.month(), dt.day())
    }

    pub fn segment_path(&self, key: &StreamKey, id: u64, start: Time90k) -> PathBuf {
        let dt = start.to_timestamp().to_zoned(jiff::tz::TimeZone::UTC);
        self.stream_dir(key)
            .join(Self::date_dir_name(start))
            .join(format!(
                "{id:012}-{:02}{:02}{:02}Z.mp4",
                dt.hour(),
                dt.minute(),
                dt.second()
            ))
    }

    /// The segment id encoded in a file name made by [`Layout::segment_path`].
    pub fn parse_segment_file_name(name: &str) -> Option<u64> {
        let stem = name.strip_suffix(".mp4")?;
        let (id, rest) = stem.split_once('-')?;
        if id.len() != 12 || !rest.ends_with('Z') {
            return None;
        }
        id.parse().ok()
    }

    /// Every `(key, date dir)` under `recordings/`, sorted.
    pub fn list_stream_dirs(&self) -> io::Result<Vec<(StreamKey, PathBuf)>> {
        let mut out = Vec::new();
        for cam in read_dir_sorted(&self.recordings_dir())? {
            if !cam.is_dir() {
                continue;
            }
            for st in read_dir_sorted(&cam)? {
                if !st.is_dir() {
                    continue;
                }
                let (Some(c), Some(s)) = (file_name(&cam), file_name(&st)) else {
                    continue;
                };
                out.push((StreamKey::new(c, s), st));
            }
        }
        Ok(out)
    }
}

pub fn file_name(p: &Path) -> Option<String> {
    p.file_name().and_then(|n| n.to_str()).map(str::to_owned)
}

/// Entries of a directory, sorted by name; an absent directory is empty.
pub fn read_dir_sorted(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut v = rd
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<Vec<_>>>()?;
    v.sort();
    Ok(v)
}

/// fsync of a directory, making entries created or removed in it durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `create_dir_all`, then fsync the parent of every directory it created (so the new directory
/// entries survive a power cut).
pub fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut p = dir;
    while !p.exists() {
        missing.push(p.to_owned());
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    for m in missing.iter().rev() {
        if let Some(parent) = m.parent() {
            fsync_dir(parent)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let l = Layout::new(Path::new("/d"));
        let k = StreamKey::new("cam", "main");
        let t = Time90k::parse_rfc3339("2026-11-28T21:05:09.5Z").unwrap();
        let p = l.segment_path(&k, 42, t);
        assert_eq!(
            p,
            Path::new("/d/recordings/cam/main/20261128/000000000042-210509Z.mp4")
        );
        assert_eq!(
            Layout::parse_segment_file_name("000000000042-210509Z.mp4"),
            Some(42)
        );
        assert_eq!(Layout::parse_segment_file_name("42-210509Z.mp4"), None);
        assert_eq!(
            Layout::parse_segment_file_name("000000000042-210509Z.mp4.tmp"),
            None
        );
    }
}

//! A minimal reader of a zip's central directory: the raw name of every entry, in order,
//! duplicates included (the `zip` crate keys entries by name, so it cannot see a second entry
//! with the same name, which an unzip would still extract over the first).
//!
//! Bounded on hostile input: the end record is searched in the last 64 KiB + 22 bytes, the
//! central directory read is at most 64 MiB, at most `max_entries` entries are read.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CDH_SIG: u32 = 0x0201_4b50;
const MAX_CD_BYTES: u64 = 64 << 20;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn read_at(f: &mut std::fs::File, at: u64, len: u64) -> Result<Vec<u8>, String> {
    f.seek(SeekFrom::Start(at)).map_err(|e| e.to_string())?;
    let mut v = Vec::new();
    f.take(len).read_to_end(&mut v).map_err(|e| e.to_string())?;
    if (v.len() as u64) < len {
        return Err("truncated".into());
    }
    Ok(v)
}

/// The raw names of the central directory's entries of the zip at `path`.
pub fn central_directory_names(path: &Path, max_entries: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let tail_len = len.min(65_535 + 22);
    let tail = read_at(&mut f, len - tail_len, tail_len)?;
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| u32_at(&tail, i) == Some(EOCD_SIG))
        .ok_or("no end of central directory record: not a zip")?;
    let eocd_pos = len - tail_len + eocd as u64;
    let bad = || "malformed end of central directory record".to_owned();
    let mut entries = u64::from(u16_at(&tail, eocd + 10).ok_or_else(bad)?);
    let mut cd_size = u64::from(u32_at(&tail, eocd + 12).ok_or_else(bad)?);
    let mut cd_offset = u64::from(u32_at(&tail, eocd + 16).ok_or_else(bad)?);
    if (entries == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF) && eocd_pos >= 20 {
        let loc = read_at(&mut f, eocd_pos - 20, 20)?;
        if u32_at(&loc, 0) == Some(ZIP64_LOCATOR_SIG) {
            let z64_pos = u64_at(&loc, 8).ok_or_else(bad)?;
            let z = read_at(&mut f, z64_pos, 56).map_err(|e| format!("zip64 record: {e}"))?;
            if u32_at(&z, 0) != Some(ZIP64_EOCD_SIG) {
                return Err("zip64 end record not found where its locator says".into());
            }
            entries = u64_at(&z, 32).ok_or_else(bad)?;
            cd_size = u64_at(&z, 40).ok_or_else(bad)?;
            cd_offset = u64_at(&z, 48).ok_or_else(bad)?;
        }
    }
    if entries > max_entries as u64 {
        return Err(format!("{entries} entries (at most {max_entries} read)"));
    }
    if cd_size > MAX_CD_BYTES || cd_offset.checked_add(cd_size).is_none_or(|end| end > len) {
        return Err("the central directory lies outside the file".into());
    }
    let cd = read_at(&mut f, cd_offset, cd_size)?;
    let mut names = Vec::new();
    let mut at = 0usize;
    while names.len() < entries as usize {
        if u32_at(&cd, at) != Some(CDH_SIG) {
            return Err(format!(
                "central directory entry {} is malformed",
                names.len()
            ));
        }
        let bad_entry = || format!("central directory entry {} is truncated", names.len());
        let name_len = usize::from(u16_at(&cd, at + 28).ok_or_else(bad_entry)?);
        let extra_len = usize::from(u16_at(&cd, at + 30).ok_or_else(bad_entry)?);
        let comment_len = usize::from(u16_at(&cd, at + 32).ok_or_else(bad_entry)?);
        let name = cd
            .get(at + 46..at + 46 + name_len)
            .ok_or_else(bad_entry)?
            .to_vec();
        names.push(name);
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn names_in_order_and_garbage_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.zip");
        let mut w = zip::ZipWriter::new(std::fs::File::create(&p).unwrap());
        for n in ["b.txt", "a.txt", "../c"] {
            w.start_file(n, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(b"x").unwrap();
        }
        w.finish().unwrap();
        let names = central_directory_names(&p, 100).unwrap();
        assert_eq!(
            names,
            [b"b.txt".to_vec(), b"a.txt".to_vec(), b"../c".to_vec()]
        );
        assert!(central_directory_names(&p, 2).is_err());
        std::fs::write(&p, b"not a zip at all").unwrap();
        assert!(central_directory_names(&p, 100).is_err());
        std::fs::write(&p, b"").unwrap();
        assert!(central_directory_names(&p, 100).is_err());
    }
}

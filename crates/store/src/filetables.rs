//! Sample and fragment tables kept in the segment file itself (index format 4), so that the
//! sled index holds only entry heads (~100 bytes a segment instead of ~2.8 KB): sled's log, its
//! open (a replay of the log) and what it keeps resident after a walk shrink with it
//! (docs/BENCHMARKS.md "Restart").
//!
//! When a segment closes, the writer appends one `uuid` box (user type [`TABLES_UUID`]) holding
//! its packed tables just before the close trailer, syncs the file, and only then writes the
//! index entry, whose `sample_table` is then a *reference* ([`EXTERNAL_MAGIC`], offset and
//! length of the box's payload in the file, FNV-1a 64 of the payload) and whose
//! `fragment_table` is empty. The entry's indexed length covers the box and the trailer, so:
//! * a box missing or torn by a crash or by someone else means a file shorter than indexed,
//!   which recovery and the background verification already handle (entry dropped and
//!   journaled, the file re-read as an orphan from its own `moof` boxes);
//! * a box whose bytes changed behind Vigie's back (same length) fails its hash when read:
//!   [`load`] reports [`StoreError::Corrupt`], never wrong tables.
//!
//! The box sits before the close trailer, where the file parser (`vigie_mp4::parse`, also of
//! older binaries) skips unknown `uuid` boxes, so a file with it parses, plays (players ignore
//! the box) and is re-indexed as any other. Open segments keep their tables in the index (they
//! change at every index update) and so do entries written by recovery, orphan indexing and
//! reindex, and every entry of an index written before format 4: the decoders read both.
//!
//! Not here: the tables' encodings ([`crate::sampletable`]).

use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::StoreError;
use crate::index::SegmentEntry;

/// `uuid` user type of the tables box.
pub const TABLES_UUID: [u8; 16] = *b"vigie-seg-tbls01";

/// First bytes of an entry's `sample_table` when the tables are in the file (the journal form
/// never starts with `80 00`, the packed form is `80 00 02`).
pub const EXTERNAL_MAGIC: [u8; 3] = [0x80, 0x00, 0x03];

/// Length of a reference: magic, offset u64, length u32, FNV-1a 64 (little-endian).
const REF_LEN: usize = 3 + 8 + 4 + 8;

/// The payload of a tables box: sample table length (u32 LE), sample table, fragment table.
/// Larger tables than this are left in the index (never the case for a 5 min segment).
const MAX_PAYLOAD_BYTES: usize = 16 << 20;

/// True if `sample_table` is a reference to tables in the segment file.
pub fn is_external(sample_table: &[u8]) -> bool {
    sample_table.starts_with(&EXTERNAL_MAGIC)
}

/// The tables box to write at file offset `at`, and the reference the entry gets for it.
/// `None` if the tables are too large for a box (they then stay in the index).
pub fn tables_box(
    at: u64,
    sample_table: &[u8],
    fragment_table: &[u8],
) -> Option<(Vec<u8>, Vec<u8>)> {
    let payload_len = 4 + sample_table.len() + fragment_table.len();
    if payload_len > MAX_PAYLOAD_BYTES {
        return None;
    }
    let box_len = 8 + 16 + payload_len;
    let mut b = Vec::with_capacity(box_len);
    b.extend_from_slice(&(box_len as u32).to_be_bytes());
    b.extend_from_slice(b"uuid");
    b.extend_from_slice(&TABLES_UUID);
    b.extend_from_slice(&(sample_table.len() as u32).to_le_bytes());
    b.extend_from_slice(sample_table);
    b.extend_from_slice(fragment_table);
    let payload = &b[24..];
    Some((b.clone(), reference(at + 24, payload)))
}

fn reference(offset: u64, payload: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(REF_LEN);
    r.extend_from_slice(&EXTERNAL_MAGIC);
    r.extend_from_slice(&offset.to_le_bytes());
    r.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    r.extend_from_slice(&crate::index::fnv1a(payload).to_le_bytes());
    r
}

/// Length of the tables a reference points at (what they cost in the file); `None` if
/// `sample_table` is not a reference.
pub fn external_len(sample_table: &[u8]) -> Option<u32> {
    parse_ref(sample_table).map(|(_, len, _)| len)
}

/// Where the tables of an encoded entry (as stored in sled) are in its file, (offset, length),
/// if the entry refers to them; read from the entry's last bytes without decoding it (postcard
/// ends an entry with the sample table's length, 23, the reference, and an empty fragment
/// table). Used to read tables ahead (`crate::playback`); a wrong guess costs one useless read.
pub fn external_range_of_encoded(entry: &[u8]) -> Option<(u64, u32)> {
    let n = entry.len();
    if n < REF_LEN + 2 || entry[n - 1] != 0 || usize::from(entry[n - REF_LEN - 2]) != REF_LEN {
        return None;
    }
    parse_ref(&entry[n - REF_LEN - 1..n - 1]).map(|(offset, len, _)| (offset, len))
}

/// (offset, length, hash) of a reference.
fn parse_ref(r: &[u8]) -> Option<(u64, u32, u64)> {
    if r.len() != REF_LEN || !is_external(r) {
        return None;
    }
    Some((
        u64::from_le_bytes(r[3..11].try_into().ok()?),
        u32::from_le_bytes(r[11..15].try_into().ok()?),
        u64::from_le_bytes(r[15..23].try_into().ok()?),
    ))
}

/// If `e`'s tables are in its file (`path`), reads them into `e.sample_table` and
/// `e.fragment_table` (one `pread`); entries holding their tables are left as they are.
pub fn load(e: &mut SegmentEntry, path: &Path) -> Result<(), StoreError> {
    if !is_external(&e.sample_table) {
        return Ok(());
    }
    let corrupt = |why: &str| StoreError::Corrupt {
        what: format!("tables of segment {} in {}: {why}", e.id, path.display()),
    };
    let (offset, len, hash) = parse_ref(&e.sample_table).ok_or_else(|| corrupt("bad reference"))?;
    if len as usize > MAX_PAYLOAD_BYTES
        || len < 4
        || offset.saturating_add(u64::from(len)) > e.bytes
    {
        return Err(corrupt("reference out of bounds"));
    }
    let f = std::fs::File::open(path).map_err(StoreError::io("opening", path))?;
    let mut payload = vec![0u8; len as usize];
    f.read_exact_at(&mut payload, offset).map_err(|err| {
        if err.kind() == std::io::ErrorKind::UnexpectedEof {
            corrupt("file shorter than indexed")
        } else {
            StoreError::io("reading", path)(err)
        }
    })?;
    if crate::index::fnv1a(&payload) != hash {
        return Err(corrupt(
            "hash mismatch (the file changed behind Vigie's back)",
        ));
    }
    let st_len = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize;
    if 4 + st_len > payload.len() {
        return Err(corrupt("sample table length out of bounds"));
    }
    e.fragment_table = payload[4 + st_len..].to_vec();
    payload.truncate(4 + st_len);
    payload.drain(..4);
    e.sample_table = payload;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_box_round_trips_and_a_changed_byte_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f");
        let (st, ft) = (vec![0x80, 0, 2, 5, 6, 7], vec![1, 2, 3]);
        let head = vec![0u8; 1000];
        let (b, r) = tables_box(head.len() as u64, &st, &ft).unwrap();
        assert!(is_external(&r) && r.len() == REF_LEN);
        let mut file = head.clone();
        file.extend_from_slice(&b);
        file.extend_from_slice(&[9; 40]); // the close trailer
        std::fs::write(&path, &file).unwrap();
        let mut e = blank();
        e.head.bytes = file.len() as u64;
        e.sample_table = r.clone();
        load(&mut e, &path).unwrap();
        assert_eq!(
            (e.sample_table.as_slice(), e.fragment_table.as_slice()),
            (&st[..], &ft[..])
        );
        // Loading an entry that holds its tables changes nothing.
        load(&mut e, &path).unwrap();
        assert_eq!(e.sample_table, st);

        file[1000 + 30] ^= 1;
        std::fs::write(&path, &file).unwrap();
        let mut e2 = blank();
        e2.head.bytes = file.len() as u64;
        e2.sample_table = r.clone();
        let err = load(&mut e2, &path).unwrap_err();
        assert!(err.to_string().contains("hash mismatch"), "{err}");

        std::fs::write(&path, &file[..1010]).unwrap();
        let mut e3 = blank();
        e3.head.bytes = file.len() as u64;
        e3.sample_table = r;
        let err = load(&mut e3, &path).unwrap_err();
        assert!(err.to_string().contains("shorter"), "{err}");

        // The range is found in the encoded entry as sled stores it.
        let enc = postcard::to_allocvec(&e3).unwrap();
        assert_eq!(external_range_of_encoded(&enc), Some((1024, 4 + 6 + 3)));
        assert_eq!(
            external_range_of_encoded(&postcard::to_allocvec(&e).unwrap()),
            None
        );
    }

    fn blank() -> SegmentEntry {
        SegmentEntry {
            head: crate::index::EntryHead {
                id: 1,
                stream_id: 1,
                start_90k: 0,
                wall_duration_90k: 0,
                media_duration_90k: 0,
                bytes: 0,
                frames: 0,
                key_frames: 0,
                width: 0,
                height: 0,
                codec: vigie_core::Codec::H264,
                params_id: 0,
                session_id: 0,
                open: false,
                end_reason: None,
                counts: Default::default(),
            },
            init_len: 0,
            sample_table: Vec::new(),
            fragment_table: Vec::new(),
        }
    }
}

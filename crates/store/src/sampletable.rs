//! The compact per-segment sample table kept in the index (Moonfire's scheme).
//!
//! Per frame, two unsigned LEB128 varints:
//! 1. `zigzag(duration − prev_duration) << 1 | is_key`
//! 2. `zigzag(bytes − prev_bytes_of_same_kind)` — key and non-key frames keep separate "previous"
//!    sizes, since key frames are much larger.
//!
//! A steady 25 fps stream costs 1 byte for the first varint and 1–2 for the second: ~2–3 bytes
//! per frame. Fragments are stored alongside as three varints each: gap from the previous
//! fragment's end (0 in practice), header length (`moof` + `mdat` header) and sample count, from
//! which every sample's byte offset in the file follows.

use serde::{Deserialize, Serialize};
use vigie_mp4::SampleInfo;
use vigie_mp4::progressive::RunCounter;

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        if shift >= 64 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
    }
}

/// Counts kept in each index entry's head beside the encoded tables: with the frame and
/// key-frame counts and the media duration they make the segment's
/// [`vigie_mp4::progressive::PieceSummary`], so a playback of whole segments is laid out
/// without decoding their tables (see `crate::playback`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCounts {
    /// Runs of equal sample durations.
    pub stts_runs: u32,
    /// Fragments holding at least one sample.
    pub chunks: u32,
    /// Runs of such fragments with equal sample counts.
    pub stsc_runs: u32,
    /// Sum of the sample sizes.
    pub payload_bytes: u64,
}

/// The counts of what `samples` and `frags` encoded so far.
pub fn counts(samples: &SampleTableEncoder, frags: &FragmentTableEncoder) -> TableCounts {
    TableCounts {
        stts_runs: samples.stts.runs(),
        chunks: frags.chunks,
        stsc_runs: frags.stsc.runs(),
        payload_bytes: samples.payload_bytes,
    }
}

/// Incremental encoder of the sample table.
#[derive(Clone, Debug, Default)]
pub struct SampleTableEncoder {
    pub buf: Vec<u8>,
    prev_duration: i64,
    prev_bytes: [i64; 2],
    stts: RunCounter,
    payload_bytes: u64,
}

impl SampleTableEncoder {
    pub fn push(&mut self, s: &SampleInfo) {
        self.stts.push(s.duration_90k);
        self.payload_bytes += u64::from(s.bytes);
        let d = i64::from(s.duration_90k);
        put_varint(
            &mut self.buf,
            (zigzag(d - self.prev_duration) << 1) | u64::from(s.is_key),
        );
        self.prev_duration = d;
        let k = usize::from(s.is_key);
        let b = i64::from(s.bytes);
        put_varint(&mut self.buf, zigzag(b - self.prev_bytes[k]));
        self.prev_bytes[k] = b;
    }
}

/// Encodes a whole table.
pub fn encode_samples<'a>(samples: impl IntoIterator<Item = &'a SampleInfo>) -> Vec<u8> {
    SampleTableEncoder::of(samples).buf
}

impl SampleTableEncoder {
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a SampleInfo>) -> SampleTableEncoder {
        let mut e = SampleTableEncoder::default();
        for s in samples {
            e.push(s);
        }
        e
    }
}

/// Decodes a table; `None` if it is malformed. Work and memory are linear in `buf.len()`
/// (each sample takes at least two bytes), whatever the bytes (fuzzed by
/// `tests/fuzz_decoders.rs`).
pub fn decode_samples(buf: &[u8]) -> Option<Vec<SampleInfo>> {
    let mut out = Vec::with_capacity(buf.len() / 2);
    decode_samples_into(buf, &mut out).then_some(out)
}

/// Decodes a table into `out` (cleared first, its allocation reused); false if malformed.
pub fn decode_samples_into(buf: &[u8], out: &mut Vec<SampleInfo>) -> bool {
    out.clear();
    decode_into(buf, out).is_some()
}

fn decode_into(buf: &[u8], out: &mut Vec<SampleInfo>) -> Option<()> {
    let (mut pos, mut prev_d, mut prev_b) = (0usize, 0i64, [0i64; 2]);
    while pos < buf.len() {
        let a = get_varint(buf, &mut pos)?;
        let is_key = a & 1 == 1;
        let d = prev_d.checked_add(unzigzag(a >> 1))?;
        let k = usize::from(is_key);
        let b = prev_b[k].checked_add(unzigzag(get_varint(buf, &mut pos)?))?;
        prev_d = d;
        prev_b[k] = b;
        out.push(SampleInfo {
            duration_90k: u32::try_from(d).ok()?,
            bytes: u32::try_from(b).ok()?,
            is_key,
        });
    }
    Some(())
}

/// Where a fragment sits in its segment file.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FragmentLoc {
    /// Offset of the `moof` box.
    pub offset: u64,
    /// Length of `moof` + `mdat` header: the first sample starts at `offset + header_len`.
    pub header_len: u32,
    pub samples: u32,
}

/// Incremental encoder of the fragment table.
#[derive(Clone, Debug, Default)]
pub struct FragmentTableEncoder {
    pub buf: Vec<u8>,
    chunks: u32,
    stsc: RunCounter,
}

impl FragmentTableEncoder {
    /// `prev_end` is where the previous fragment (or the init segment) ended.
    pub fn push(&mut self, prev_end: u64, f: &FragmentLoc) {
        if f.samples > 0 {
            self.chunks += 1;
            self.stsc.push(f.samples);
        }
        put_varint(&mut self.buf, f.offset.saturating_sub(prev_end));
        put_varint(&mut self.buf, u64::from(f.header_len));
        put_varint(&mut self.buf, u64::from(f.samples));
    }
}

/// Decodes the fragment table of a segment whose init segment is `init_len` bytes long, using
/// the sample table for the payload sizes. `None` if it is malformed: a sample count beyond
/// `samples`, or offsets that overflow. Linear in `buf.len() + samples.len()`.
pub fn decode_fragments(
    buf: &[u8],
    init_len: u64,
    samples: &[SampleInfo],
) -> Option<Vec<FragmentLoc>> {
    let mut out = Vec::new();
    let (mut pos, mut end, mut next_sample) = (0usize, init_len, 0usize);
    while pos < buf.len() {
        let offset = end.checked_add(get_varint(buf, &mut pos)?)?;
        let header_len = u32::try_from(get_varint(buf, &mut pos)?).ok()?;
        let n = u32::try_from(get_varint(buf, &mut pos)?).ok()?;
        let last = next_sample.checked_add(n as usize)?;
        let payload: u64 = samples
            .get(next_sample..last)?
            .iter()
            .map(|s| u64::from(s.bytes))
            .sum();
        next_sample = last;
        // A corrupt (or crafted) index can hold any offset: overflow is malformed, not a panic.
        end = offset
            .checked_add(u64::from(header_len))?
            .checked_add(payload)?;
        out.push(FragmentLoc {
            offset,
            header_len,
            samples: n,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_size() {
        let samples: Vec<SampleInfo> = (0..250)
            .map(|i| SampleInfo {
                duration_90k: if i % 7 == 0 { 3601 } else { 3600 },
                bytes: if i % 25 == 0 {
                    40_000 + i * 3
                } else {
                    3_000 + (i * 37) % 400
                },
                is_key: i % 25 == 0,
            })
            .collect();
        let enc = encode_samples(&samples);
        assert_eq!(decode_samples(&enc).unwrap(), samples);
        assert!(enc.len() <= 4 * samples.len(), "{} bytes", enc.len());
        for v in [0i64, 1, -1, i64::from(u32::MAX), -i64::from(u32::MAX)] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        let mut f = FragmentTableEncoder::default();
        let locs = [
            FragmentLoc {
                offset: 700,
                header_len: 320,
                samples: 25,
            },
            FragmentLoc {
                offset: 0,
                header_len: 320,
                samples: 225,
            },
        ];
        let p1: u64 = samples[..25].iter().map(|s| u64::from(s.bytes)).sum();
        let second = FragmentLoc {
            offset: 700 + 320 + p1,
            ..locs[1]
        };
        f.push(700, &locs[0]);
        f.push(700 + 320 + p1, &second);
        assert_eq!(
            decode_fragments(&f.buf, 700, &samples).unwrap(),
            vec![locs[0], second]
        );
    }

    #[test]
    fn malformed_tables_are_rejected() {
        assert!(decode_samples(&[0x80]).is_none());
        assert!(decode_samples(&[0x02]).is_none());
        assert!(decode_fragments(&[0, 8, 5], 0, &[]).is_none());
        assert!(decode_samples(&[0xff; 12]).is_none());
    }

    /// A fragment offset near `u64::MAX` overflowed `offset + header_len` (a panic in debug
    /// builds, a wrapped offset in release) instead of being reported as malformed.
    #[test]
    fn fragment_offsets_that_overflow_are_malformed() {
        let mut buf = Vec::new();
        put_varint(&mut buf, u64::MAX - 10);
        put_varint(&mut buf, 100);
        put_varint(&mut buf, 0);
        assert!(decode_fragments(&buf, 5, &[]).is_none());
    }
}

//! The compact per-segment sample table kept in the index.
//!
//! Two encodings, told apart by their first bytes (entries of both kinds coexist in an index
//! written before and after the change; [`decode_samples`] reads both):
//!
//! **Journal form** (v1, Moonfire's scheme; what the writer appends to while a segment is open,
//! and what index entries written before index format 3 hold). Per frame, two unsigned LEB128
//! varints:
//! 1. `zigzag(duration − prev_duration) << 1 | is_key`
//! 2. `zigzag(bytes − prev_bytes_of_same_kind)` — key and non-key frames keep separate "previous"
//!    sizes, since key frames are much larger.
//!
//! ~3 bytes per frame (1 + 2): 4.45 KB for a minute at 25 fps and 2 Mbit/s, 94 % of an index
//! entry (docs/BENCHMARKS.md "Restart"). Its strength is that it is append-only: the table of
//! an open segment at a sync is a prefix of the buffer.
//!
//! **Packed form** (v2; what index entries hold since format 3, see [`pack`]): the three
//! columns stored apart, each in the cheapest way for what cameras send:
//! * `0x80 0x00 0x02` (a varint never starts with `0x80 0x00` in canonical v1), then the sample
//!   count (varint);
//! * durations: mode byte 0 = the most common duration, then the exceptions as (index gap,
//!   zigzag difference) pairs — a constant frame rate costs 2–3 bytes per segment, RTP jitter on
//!   10 % of frames ~2 bytes per jittered frame; mode 1 = per-frame zigzag deltas as in v1 (for
//!   variable frame rates, when it is smaller);
//! * key frames: their count, then each one's index gap (1 byte per key frame at any usual GOP);
//! * key-frame sizes: zigzag deltas from the previous key frame's;
//! * other frames' sizes: blocks of [`BLOCK`] frames, each its minimum (varint), a bit width
//!   `w` (one byte, ≤ 32) and the sizes minus the minimum packed in `w` bits each
//!   (frame-of-reference bit packing): ~1.5 bytes per frame at 2 Mbit/s instead of 2.
//!
//! Measured on the benchmarks' minute (1500 frames at 2 Mbit/s, ±20 % size jitter, 10 % of
//! durations jittered): 4,451 B in v1, 2,740 B packed (`packed_is_smaller_on_the_benchmark_minute`),
//! and decoded ~40 % faster (`examples/table_decode.rs`).
//!
//! Fragments are stored alongside as three varints each: gap from the previous fragment's end
//! (0 in practice), header length (`moof` + `mdat` header) and sample count, from which every
//! sample's byte offset in the file follows. Since index format 3 the entries hold them packed
//! too ([`pack_fragments`]): runs of equal fragments (one run for a steady stream's minute,
//! instead of ~4 B per fragment).

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

/// Encodes a whole table in the packed form (what index entries hold).
pub fn encode_samples<'a>(samples: impl IntoIterator<Item = &'a SampleInfo>) -> Vec<u8> {
    let v: Vec<SampleInfo> = samples.into_iter().copied().collect();
    pack(&v)
}

/// Encodes a whole table in the journal form (v1): what entries written before index format 3
/// hold (tests of old indexes, benchmarks).
#[doc(hidden)]
pub fn encode_samples_v1<'a>(samples: impl IntoIterator<Item = &'a SampleInfo>) -> Vec<u8> {
    SampleTableEncoder::of(samples).buf
}

impl SampleTableEncoder {
    /// The packed form of the first `len` bytes of the journal (a sync mark's prefix), for the
    /// index entry. A prefix that does not decode (it cannot: the encoder wrote it) is kept in
    /// the journal form, which readers also accept.
    pub fn packed_prefix(&self, len: usize) -> Vec<u8> {
        let journal = self.buf.get(..len).unwrap_or_default();
        let mut samples = Vec::with_capacity(journal.len() / 2);
        if decode_v1_into(journal, &mut samples).is_some() {
            pack(&samples)
        } else {
            journal.to_vec()
        }
    }

    pub fn of<'a>(samples: impl IntoIterator<Item = &'a SampleInfo>) -> SampleTableEncoder {
        let mut e = SampleTableEncoder::default();
        for s in samples {
            e.push(s);
        }
        e
    }
}

/// Most samples a table of `len` bytes can hold, in either form: v1 takes two bytes a sample;
/// packed, each block of [`BLOCK`] non-key samples takes at least two bytes and each key frame
/// one. Decoders refuse a count above it before allocating.
pub fn max_samples(len: usize) -> usize {
    len.saturating_mul(BLOCK / 2 + 1)
}

/// Decodes a table (either form); `None` if it is malformed. Work and memory are linear in
/// `buf.len()` (at most [`max_samples`] samples), whatever the bytes (fuzzed by
/// `tests/fuzz_decoders.rs`).
pub fn decode_samples(buf: &[u8]) -> Option<Vec<SampleInfo>> {
    let mut out = Vec::new();
    decode_samples_into(buf, &mut out).then_some(out)
}

/// Decodes a table (either form) into `out` (cleared first, its allocation reused); false if
/// malformed.
pub fn decode_samples_into(buf: &[u8], out: &mut Vec<SampleInfo>) -> bool {
    out.clear();
    let ok = if crate::filetables::is_external(buf) {
        false // a reference to tables in the segment file: `crate::filetables::load` first
    } else if buf.starts_with(&PACKED_MAGIC) {
        unpack_into(buf, out).is_some()
    } else {
        out.reserve(buf.len() / 2);
        decode_v1_into(buf, out).is_some()
    };
    if !ok {
        out.clear();
    }
    ok
}

/// True if `buf` is in the packed form.
pub fn is_packed(buf: &[u8]) -> bool {
    buf.starts_with(&PACKED_MAGIC)
}

/// Non-key frame sizes per bit-packed block.
pub const BLOCK: usize = 32;

/// First bytes of a packed table: `0x80 0x00` begins no canonical varint (hence no v1 table
/// written by [`SampleTableEncoder`]), then the form's version.
const PACKED_MAGIC: [u8; 3] = [0x80, 0x00, 0x02];

/// The packed form of `samples` (see the module docs).
pub fn pack(samples: &[SampleInfo]) -> Vec<u8> {
    let n = samples.len();
    let mut out = Vec::with_capacity(16 + n * 2);
    out.extend_from_slice(&PACKED_MAGIC);
    put_varint(&mut out, n as u64);

    // Durations: the most common one and its exceptions, or per-frame deltas if smaller.
    let base = most_common(samples.iter().map(|s| s.duration_90k));
    let mut exceptions = Vec::new();
    let mut count = 0u64;
    let mut prev_idx = 0usize;
    for (i, s) in samples.iter().enumerate() {
        if s.duration_90k != base {
            count += 1;
            put_varint(&mut exceptions, (i - prev_idx) as u64);
            put_varint(
                &mut exceptions,
                zigzag(i64::from(s.duration_90k) - i64::from(base)),
            );
            prev_idx = i + 1;
        }
    }
    let mut deltas = Vec::new();
    let mut prev_d = 0i64;
    for s in samples {
        put_varint(&mut deltas, zigzag(i64::from(s.duration_90k) - prev_d));
        prev_d = i64::from(s.duration_90k);
    }
    let mut head = Vec::with_capacity(12);
    put_varint(&mut head, u64::from(base));
    put_varint(&mut head, count);
    if head.len() + exceptions.len() <= deltas.len() {
        out.push(0);
        out.extend_from_slice(&head);
        out.extend_from_slice(&exceptions);
    } else {
        out.push(1);
        out.extend_from_slice(&deltas);
    }

    // Key frames: their positions, then their sizes.
    let keys = samples.iter().filter(|s| s.is_key).count();
    put_varint(&mut out, keys as u64);
    let mut prev_idx = 0usize;
    for (i, s) in samples.iter().enumerate() {
        if s.is_key {
            put_varint(&mut out, (i - prev_idx) as u64);
            prev_idx = i + 1;
        }
    }
    let mut prev_b = 0i64;
    for s in samples.iter().filter(|s| s.is_key) {
        put_varint(&mut out, zigzag(i64::from(s.bytes) - prev_b));
        prev_b = i64::from(s.bytes);
    }

    // Other frames' sizes: frame-of-reference bit packing per block.
    let mut block = [0u32; BLOCK];
    let mut len = 0usize;
    for s in samples.iter().filter(|s| !s.is_key) {
        block[len] = s.bytes;
        len += 1;
        if len == BLOCK {
            put_block(&mut out, &block[..len]);
            len = 0;
        }
    }
    if len > 0 {
        put_block(&mut out, &block[..len]);
    }
    out
}

/// The most common value (the smallest among equals; 0 for none).
fn most_common(values: impl Iterator<Item = u32>) -> u32 {
    let mut counts: Vec<(u32, u32)> = Vec::new();
    for v in values {
        if let Some((_, c)) = counts.iter_mut().find(|(x, _)| *x == v) {
            *c += 1;
        } else if counts.len() < 16 {
            // Variable frame rates would make this quadratic: past a few distinct values, the
            // per-frame delta mode wins anyway.
            counts.push((v, 1));
        }
    }
    counts
        .iter()
        .max_by_key(|(v, c)| (*c, std::cmp::Reverse(*v)))
        .map_or(0, |(v, _)| *v)
}

fn put_block(out: &mut Vec<u8>, sizes: &[u32]) {
    let min = sizes.iter().copied().min().unwrap_or(0);
    let max = sizes.iter().copied().max().unwrap_or(0);
    let w = 32 - (max - min).leading_zeros();
    put_varint(out, u64::from(min));
    out.push(w as u8);
    let mut acc = 0u64;
    let mut bits = 0u32;
    for &b in sizes {
        acc |= u64::from(b - min) << bits;
        bits += w;
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push(acc as u8);
    }
}

fn unpack_into(buf: &[u8], out: &mut Vec<SampleInfo>) -> Option<()> {
    let mut pos = PACKED_MAGIC.len();
    let n = usize::try_from(get_varint(buf, &mut pos)?).ok()?;
    if n > max_samples(buf.len()) {
        return None;
    }
    let mode = *buf.get(pos)?;
    pos += 1;
    match mode {
        0 => {
            let base = u32::try_from(get_varint(buf, &mut pos)?).ok()?;
            out.resize(
                n,
                SampleInfo {
                    duration_90k: base,
                    bytes: 0,
                    is_key: false,
                },
            );
            let count = get_varint(buf, &mut pos)?;
            let mut next = 0usize;
            for _ in 0..count {
                let i = next.checked_add(usize::try_from(get_varint(buf, &mut pos)?).ok()?)?;
                let d = i64::from(base).checked_add(unzigzag(get_varint(buf, &mut pos)?))?;
                out.get_mut(i)?.duration_90k = u32::try_from(d).ok()?;
                next = i + 1;
            }
        }
        1 => {
            let mut prev_d = 0i64;
            out.reserve(n);
            for _ in 0..n {
                let d = prev_d.checked_add(unzigzag(get_varint(buf, &mut pos)?))?;
                out.push(SampleInfo {
                    duration_90k: u32::try_from(d).ok()?,
                    bytes: 0,
                    is_key: false,
                });
                prev_d = d;
            }
        }
        _ => return None,
    }
    let keys = usize::try_from(get_varint(buf, &mut pos)?).ok()?;
    if keys > n {
        return None;
    }
    let mut next = 0usize;
    for _ in 0..keys {
        let i = next.checked_add(usize::try_from(get_varint(buf, &mut pos)?).ok()?)?;
        out.get_mut(i)?.is_key = true;
        next = i + 1;
    }
    let mut key_sizes = Vec::with_capacity(keys);
    let mut prev_b = 0i64;
    for _ in 0..keys {
        let b = prev_b.checked_add(unzigzag(get_varint(buf, &mut pos)?))?;
        key_sizes.push(u32::try_from(b).ok()?);
        prev_b = b;
    }
    // The other sizes, block by block: one bounds check per block, then each value read as a
    // little-endian u64 window from a padded copy of the block's bytes (no per-bit loop).
    let others = n - keys;
    let mut other_sizes = Vec::with_capacity(others);
    let mut window = [0u8; BLOCK * 4 + 8];
    while other_sizes.len() < others {
        let count = (others - other_sizes.len()).min(BLOCK);
        let min = u64::from(u32::try_from(get_varint(buf, &mut pos)?).ok()?);
        let w = usize::from(*buf.get(pos)?);
        pos += 1;
        if w > 32 {
            return None;
        }
        let len = (w * count).div_ceil(8);
        let bytes = buf.get(pos..pos.checked_add(len)?)?;
        pos += len;
        window[..len].copy_from_slice(bytes);
        window[len..len + 8].fill(0);
        let mask = (1u64 << w) - 1;
        for j in 0..count {
            let bit = j * w;
            let mut word = [0u8; 8];
            word.copy_from_slice(&window[bit / 8..bit / 8 + 8]);
            let v = min + ((u64::from_le_bytes(word) >> (bit % 8)) & mask);
            other_sizes.push(u32::try_from(v).ok()?);
        }
    }
    let (mut k, mut o) = (key_sizes.into_iter(), other_sizes.into_iter());
    for s in out.iter_mut() {
        s.bytes = if s.is_key { k.next()? } else { o.next()? };
    }
    // Trailing bytes: malformed (keeps one encoding per table).
    (pos == buf.len()).then_some(())
}

fn decode_v1_into(buf: &[u8], out: &mut Vec<SampleInfo>) -> Option<()> {
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

impl FragmentTableEncoder {
    /// The packed form of the first `len` bytes of the journal (see [`pack_fragments`]); kept
    /// as it is if it does not parse (it cannot: the encoder wrote it).
    pub fn packed_prefix(&self, len: usize) -> Vec<u8> {
        let journal = self.buf.get(..len).unwrap_or_default();
        pack_fragments(journal).unwrap_or_else(|| journal.to_vec())
    }
}

/// A journal-form fragment table (three varints per fragment) in the packed form: the magic
/// of packed sample tables, then runs of equal fragments, each `varint(count)` and the three
/// varints once (the usual steady stream: one run per segment instead of ~4 B per fragment).
/// Only fragments holding samples are merged (so a table cannot expand into more fragments
/// than samples plus runs). `None` if `journal` does not parse.
pub fn pack_fragments(journal: &[u8]) -> Option<Vec<u8>> {
    let mut out = PACKED_MAGIC.to_vec();
    let mut pos = 0usize;
    let mut run: Option<([u64; 3], u64)> = None;
    let flush = |out: &mut Vec<u8>, r: ([u64; 3], u64)| {
        put_varint(out, r.1);
        for v in r.0 {
            put_varint(out, v);
        }
    };
    while pos < journal.len() {
        let f = [
            get_varint(journal, &mut pos)?,
            get_varint(journal, &mut pos)?,
            get_varint(journal, &mut pos)?,
        ];
        run = match run {
            Some((g, c)) if g == f && f[2] > 0 => Some((g, c + 1)),
            Some(r) => {
                flush(&mut out, r);
                Some((f, 1))
            }
            None => Some((f, 1)),
        };
    }
    if let Some(r) = run {
        flush(&mut out, r);
    }
    Some(out)
}

/// Decodes the fragment table (either form) of a segment whose init segment is `init_len`
/// bytes long, using the sample table for the payload sizes. `None` if it is malformed: a
/// sample count beyond `samples`, a run of several empty fragments, or offsets that overflow.
/// Linear in `buf.len() + samples.len()`.
pub fn decode_fragments(
    buf: &[u8],
    init_len: u64,
    samples: &[SampleInfo],
) -> Option<Vec<FragmentLoc>> {
    let mut out = Vec::new();
    let packed = buf.starts_with(&PACKED_MAGIC);
    let mut pos = if packed { PACKED_MAGIC.len() } else { 0 };
    let (mut end, mut next_sample) = (init_len, 0usize);
    let mut repeat = (0u64, 0u64, 0u32, 0u32); // (left, gap, header_len, samples)
    while repeat.0 > 0 || pos < buf.len() {
        if repeat.0 == 0 {
            let count = if packed {
                get_varint(buf, &mut pos)?
            } else {
                1
            };
            let gap = get_varint(buf, &mut pos)?;
            let header_len = u32::try_from(get_varint(buf, &mut pos)?).ok()?;
            let n = u32::try_from(get_varint(buf, &mut pos)?).ok()?;
            if count == 0 || (n == 0 && count > 1) {
                return None;
            }
            repeat = (count, gap, header_len, n);
        }
        repeat.0 -= 1;
        let (_, gap, header_len, n) = repeat;
        let offset = end.checked_add(gap)?;
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

    /// The benchmarks' minute (crates/footage/benches/playback.rs, crates/bench/src/restart.rs):
    /// 1500 frames at 2 Mbit/s, GOP 50, sizes ±20 %, 10 % of durations off by one tick.
    fn benchmark_minute(seed: u64) -> Vec<SampleInfo> {
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let p_size = 2000u64 * 1000 / 8 / 25 * 50 / 54;
        (0..1500)
            .map(|i| {
                let key = i % 50 == 0;
                let base = if key { p_size * 5 } else { p_size };
                let jitter = next() % (base * 2 / 5 + 1);
                SampleInfo {
                    duration_90k: match next() % 20 {
                        0 => 3599,
                        1 => 3601,
                        _ => 3600,
                    },
                    bytes: (base * 4 / 5 + jitter) as u32,
                    is_key: key,
                }
            })
            .collect()
    }

    #[test]
    fn packed_is_smaller_on_the_benchmark_minute() {
        let samples = benchmark_minute(0x9e37_79b9_7f4a_7c15);
        let v1 = encode_samples_v1(&samples);
        let packed = encode_samples(&samples);
        println!("v1 {} B, packed {} B", v1.len(), packed.len());
        assert!(is_packed(&packed) && !is_packed(&v1));
        assert_eq!(decode_samples(&packed).unwrap(), samples);
        assert_eq!(decode_samples(&v1).unwrap(), samples);
        assert!(
            packed.len() * 10 < v1.len() * 7,
            "{} vs {}",
            packed.len(),
            v1.len()
        );
        // A constant frame rate costs nothing per frame for durations.
        let steady: Vec<SampleInfo> = samples
            .iter()
            .map(|s| SampleInfo {
                duration_90k: 3600,
                ..*s
            })
            .collect();
        let p = encode_samples(&steady);
        assert_eq!(decode_samples(&p).unwrap(), steady);
        assert!(
            p.len() + 250 < packed.len(),
            "{} vs {}",
            p.len(),
            packed.len()
        );
    }

    #[test]
    fn packed_round_trips_every_shape() {
        let s = |d: u32, b: u32, k: bool| SampleInfo {
            duration_90k: d,
            bytes: b,
            is_key: k,
        };
        let shapes: Vec<Vec<SampleInfo>> = vec![
            vec![],
            vec![s(0, 0, false)],
            vec![s(3600, 40_000, true)],
            vec![
                s(u32::MAX, u32::MAX, false),
                s(0, 0, false),
                s(1, u32::MAX, true),
            ],
            (0..100)
                .map(|i| s(3000 + i * 7, 5_000 + i, false))
                .collect(), // variable rate
            (0..100).map(|i| s(3600, 9_000, i % 3 == 0)).collect(),
            (0..65)
                .map(|i| s(3600, if i == 64 { u32::MAX } else { 0 }, false))
                .collect(),
            (0..40).map(|i| s(i, i * 1000, true)).collect(),
        ];
        for v in shapes {
            let p = encode_samples(&v);
            assert_eq!(decode_samples(&p).as_ref(), Some(&v), "{v:?}");
            assert!(v.len() <= max_samples(p.len()));
        }
    }

    /// What the writer stores at each sync: the journal's prefix, packed, decodes to the
    /// frames written so far.
    #[test]
    fn packed_prefix_of_the_journal_is_the_frames_so_far() {
        let samples = benchmark_minute(7);
        let mut enc = SampleTableEncoder::default();
        for (i, smp) in samples.iter().enumerate() {
            enc.push(smp);
            if i % 97 == 0 {
                let len = enc.buf.len();
                assert_eq!(
                    decode_samples(&enc.packed_prefix(len)).unwrap(),
                    samples[..=i]
                );
            }
        }
        assert_eq!(enc.packed_prefix(0), pack(&[]));
    }

    #[test]
    fn malformed_packed_tables_are_rejected() {
        let samples = benchmark_minute(3);
        let p = encode_samples(&samples);
        let mut trailing = p.clone();
        trailing.push(0);
        assert!(decode_samples(&trailing).is_none());
        for cut in [3, 4, 10, p.len() / 2, p.len() - 1] {
            assert!(decode_samples(&p[..cut]).is_none(), "cut at {cut}");
        }
        // A huge sample count is refused before allocating.
        let mut huge = PACKED_MAGIC.to_vec();
        put_varint(&mut huge, u64::from(u32::MAX));
        huge.extend_from_slice(&[0, 0, 0, 0]);
        assert!(decode_samples(&huge).is_none());
        // A bit width above 32.
        let mut wide = PACKED_MAGIC.to_vec();
        wide.extend_from_slice(&[1, 0, 0, 0, 0, 0, 33, 0, 0, 0, 0, 0]);
        assert!(decode_samples(&wide).is_none());
        // An unknown duration mode.
        let mut mode = PACKED_MAGIC.to_vec();
        mode.extend_from_slice(&[0, 2]);
        assert!(decode_samples(&mode).is_none());
    }

    #[test]
    fn packed_fragments_round_trip_and_are_smaller() {
        let samples = benchmark_minute(11);
        let mut f = FragmentTableEncoder::default();
        let mut end = 900u64;
        let mut locs = Vec::new();
        for (i, group) in samples.chunks(25).enumerate() {
            // An empty fragment now and then, and one header of another length.
            if i == 3 {
                let empty = FragmentLoc {
                    offset: end,
                    header_len: 100,
                    samples: 0,
                };
                f.push(end, &empty);
                locs.push(empty);
                end += 100;
            }
            let loc = FragmentLoc {
                offset: end + u64::from(i == 7) * 5,
                header_len: if i == 20 { 390 } else { 380 },
                samples: group.len() as u32,
            };
            f.push(end, &loc);
            locs.push(loc);
            end = loc.offset
                + u64::from(loc.header_len)
                + group.iter().map(|s| u64::from(s.bytes)).sum::<u64>();
        }
        let packed = f.packed_prefix(f.buf.len());
        assert!(packed.starts_with(&PACKED_MAGIC));
        assert!(
            packed.len() * 4 < f.buf.len(),
            "{} vs {}",
            packed.len(),
            f.buf.len()
        );
        assert_eq!(decode_fragments(&packed, 900, &samples).unwrap(), locs);
        assert_eq!(decode_fragments(&f.buf, 900, &samples).unwrap(), locs);
        // Malformed: a zero count, several empty fragments in one run, trailing bytes.
        let mut bad = PACKED_MAGIC.to_vec();
        bad.extend_from_slice(&[0, 0, 8, 1]);
        assert!(decode_fragments(&bad, 0, &samples).is_none());
        let mut bad = PACKED_MAGIC.to_vec();
        bad.extend_from_slice(&[2, 0, 8, 0]);
        assert!(decode_fragments(&bad, 0, &samples).is_none());
        let mut bad = packed.clone();
        bad.push(1);
        assert!(decode_fragments(&bad, 900, &samples).is_none());
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

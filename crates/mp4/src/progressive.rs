//! The virtual progressive MP4: a plain (non-fragmented) MP4 for any time range, built from the
//! index alone, without reading a single sample byte.
//!
//! Layout: `ftyp`, `moov` (`mvhd` v1, one video `trak` with `tkhd` v1, `edts`/`elst` v1,
//! `mdia`/`mdhd` v1, `stbl` = `stsd` (one sample description per distinct set of codec
//! parameters), `stts`, `stss`, `stsc`, `stsz`, `co64`; optionally a `tx3g` subtitle `trak`),
//! then `mdat` (with a 64-bit `largesize` when its payload exceeds 4 GiB) whose body is a list
//! of byte ranges of the segment files.
//!
//! The result is a [`VirtualMp4`]: a list of [`Part`]s (headers in memory, sample data as file
//! ranges) with a known total length, so an HTTP handler can serve any byte range by walking the
//! parts. Every size and offset is 64-bit (`co64`, v1 headers), so 24-hour ranges and files over
//! 4 GiB work.
//!
//! Chunks: one [`Chunk`] per run of samples contiguous in one file (a fragment's `mdat`
//! payload), so `stsc` and `co64` stay small. A start between key frames is handled by the
//! caller: it begins at the previous key frame and sets [`Input::skip_90k`], which becomes the
//! edit list's `media_time`, so players open at the exact instant.
//!
//! Does not own: files or the index (the caller turns its index into an [`Input`]); HTTP.

use std::path::PathBuf;

use bytes::Bytes;

use crate::boxes::BoxWriter;
use crate::write::{SampleInfo, TIMESCALE};

/// Bumped whenever the bytes produced for the same input change (part of HTTP ETags).
pub const FORMAT_VERSION: u32 = 1;

const VIDEO_TRACK_ID: u32 = 1;
const TEXT_TRACK_ID: u32 = 2;

/// A run of samples stored contiguously in one file.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Index into [`Input::files`].
    pub file: u32,
    /// Byte offset of the first sample in the file.
    pub offset: u64,
    /// Index of the chunk's first sample in [`Input::samples`].
    pub first_sample: u32,
    pub samples: u32,
    /// Index into [`Input::sample_entries`] (0-based).
    pub description: u32,
}

/// One subtitle cue; cues are contiguous from presentation time 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cue {
    pub duration_90k: u32,
    pub text: String,
}

/// Everything the builder needs, in plain types (no store types).
#[derive(Clone, Debug, Default)]
pub struct Input {
    /// `avc1`/`hvc1` sample entry boxes, verbatim (`stsd` entries, in order).
    pub sample_entries: Vec<Bytes>,
    /// Display size written in `tkhd` (the first sample description's).
    pub width: u16,
    pub height: u16,
    pub files: Vec<PathBuf>,
    /// Every sample, in decode order (no composition offsets: streams have no B-frames).
    pub samples: Vec<SampleInfo>,
    /// Chunks in order; together they cover `samples` exactly once, in order.
    pub chunks: Vec<Chunk>,
    /// Media time skipped at the start (the edit list's `media_time`).
    pub skip_90k: u64,
    /// Presented duration (the edit list's `segment_duration`); at most the media duration
    /// minus `skip_90k`.
    pub duration_90k: u64,
    /// Optional wall-clock subtitle track (`tx3g`), one cue per second or so. Empty: no track.
    pub cues: Vec<Cue>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("no samples")]
    Empty,
    #[error("chunk {chunk} does not follow the previous one in the sample list")]
    ChunkOrder { chunk: usize },
    #[error("chunks cover {covered} samples of {total}")]
    Coverage { covered: u64, total: u64 },
    #[error("chunk {chunk} refers to missing file {file} or sample description {description}")]
    BadReference {
        chunk: usize,
        file: u32,
        description: u32,
    },
    #[error(
        "edit list: skip {skip_90k} + duration {duration_90k} exceed the media duration {media_90k}"
    )]
    Edit {
        skip_90k: u64,
        duration_90k: u64,
        media_90k: u64,
    },
}

/// One piece of the virtual file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Mem(Bytes),
    /// `len` bytes at `offset` of [`VirtualMp4::files`]`[file]`.
    File {
        file: u32,
        offset: u64,
        len: u64,
    },
}

impl Part {
    pub fn len(&self) -> u64 {
        match self {
            Part::Mem(b) => b.len() as u64,
            Part::File { len, .. } => *len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A slice of one part, as returned by [`VirtualMp4::slices`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slice {
    Mem(Bytes),
    File { file: u32, offset: u64, len: u64 },
}

/// The virtual file: parts in order, their start offsets and the total length.
#[derive(Clone, Debug)]
pub struct VirtualMp4 {
    pub files: Vec<PathBuf>,
    parts: Vec<Part>,
    /// `starts[i]` = offset of `parts[i]` in the virtual file.
    starts: Vec<u64>,
    pub total_len: u64,
    /// Length of `ftyp` + `moov` + `mdat` header (the part built in memory before the samples).
    pub header_len: u64,
}

impl VirtualMp4 {
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The slices covering bytes `[start, end)` of the virtual file (clamped to its length), in
    /// order. Finds the first part by binary search: O(log parts + slices).
    pub fn slices(&self, start: u64, end: u64) -> impl Iterator<Item = Slice> + '_ {
        let end = end.min(self.total_len);
        let first = self
            .starts
            .partition_point(|&s| s <= start)
            .saturating_sub(1);
        self.parts[first.min(self.parts.len())..]
            .iter()
            .zip(&self.starts[first.min(self.starts.len())..])
            .take_while(move |(_, s)| **s < end)
            .filter_map(move |(p, &s)| {
                let a = start.max(s) - s;
                let b = end.min(s + p.len()) - s;
                if b <= a {
                    return None;
                }
                Some(match p {
                    Part::Mem(m) => Slice::Mem(m.slice(a as usize..b as usize)),
                    Part::File { file, offset, .. } => Slice::File {
                        file: *file,
                        offset: offset + a,
                        len: b - a,
                    },
                })
            })
    }
}

fn write_ftyp(w: &mut BoxWriter) {
    w.boxed(b"ftyp", |w| {
        w.bytes(b"isom")
            .u32(0x200)
            .bytes(b"isom")
            .bytes(b"iso2")
            .bytes(b"avc1")
            .bytes(b"mp41");
    });
}

fn write_mvhd(w: &mut BoxWriter, duration_90k: u64, next_track_id: u32) {
    w.full_boxed(b"mvhd", 1, 0, |w| {
        w.u64(0).u64(0).u32(TIMESCALE).u64(duration_90k);
        w.u32(0x0001_0000).u16(0x0100).zeros(10); // rate, volume, reserved
        w.unity_matrix().zeros(24).u32(next_track_id);
    });
}

fn write_tkhd(w: &mut BoxWriter, track_id: u32, duration_90k: u64, width: u16, height: u16) {
    w.full_boxed(b"tkhd", 1, 0x3, |w| {
        w.u64(0).u64(0).u32(track_id).u32(0).u64(duration_90k);
        w.zeros(8).u16(0).u16(0).u16(0).u16(0); // reserved, layer, group, volume, reserved
        w.unity_matrix();
        w.u32(u32::from(width) << 16).u32(u32::from(height) << 16);
    });
}

fn write_mdhd_hdlr(w: &mut BoxWriter, duration_90k: u64, handler: &[u8; 4], name: &[u8]) {
    w.full_boxed(b"mdhd", 1, 0, |w| {
        w.u64(0).u64(0).u32(TIMESCALE).u64(duration_90k);
        w.u16(0x55c4).u16(0); // 'und'
    });
    w.full_boxed(b"hdlr", 0, 0, |w| {
        w.u32(0).bytes(handler).zeros(12).bytes(name);
    });
}

fn write_dinf(w: &mut BoxWriter) {
    w.boxed(b"dinf", |w| {
        w.full_boxed(b"dref", 0, 0, |w| {
            w.u32(1).full_boxed(b"url ", 0, 1, |_| {});
        });
    });
}

/// `stts` from an iterator of durations (run-length encoded).
fn write_stts(w: &mut BoxWriter, durations: impl Iterator<Item = u32>) {
    w.full_boxed(b"stts", 0, 0, |w| {
        let count_pos = w.len();
        w.u32(0);
        let (mut entries, mut run, mut cur) = (0u32, 0u32, None::<u32>);
        for d in durations {
            if cur == Some(d) {
                run += 1;
            } else {
                if let Some(c) = cur {
                    w.u32(run).u32(c);
                    entries += 1;
                }
                cur = Some(d);
                run = 1;
            }
        }
        if let Some(c) = cur {
            w.u32(run).u32(c);
            entries += 1;
        }
        w.patch_u32(count_pos, entries);
    });
}

/// The tx3g sample entry: default style, white text at the bottom, font "Sans-Serif".
fn write_tx3g_entry(w: &mut BoxWriter, height: u16) {
    w.boxed(b"tx3g", |w| {
        w.zeros(6).u16(1); // reserved, data_reference_index
        w.u32(0); // display flags
        w.u8(1).u8(0xff); // horizontal: centre, vertical: bottom
        w.bytes(&[0, 0, 0, 0]); // background rgba
        w.u16(0).u16(0).u16(height).u16(0); // default text box (top, left, bottom, right)
        w.u16(0)
            .u16(0)
            .u16(1)
            .u8(0)
            .u8(18)
            .bytes(&[0xff, 0xff, 0xff, 0xff]); // style record
        w.boxed(b"ftab", |w| {
            w.u16(1).u16(1).u8(10).bytes(b"Sans-Serif");
        });
    });
}

/// Where the `co64` tables sit in the header buffer, to patch once the header length is known.
struct Co64Patch {
    pos: usize,
    /// Offsets relative to the start of the `mdat` payload.
    rel: Vec<u64>,
}

/// Builds the virtual file. Fails only on an inconsistent [`Input`] (a caller bug).
pub fn build(input: &Input) -> Result<VirtualMp4, BuildError> {
    let n = input.samples.len();
    if n == 0 || input.chunks.is_empty() {
        return Err(BuildError::Empty);
    }
    // Validate chunks: in order, covering every sample once, valid references.
    let mut next = 0u64;
    for (i, c) in input.chunks.iter().enumerate() {
        if u64::from(c.first_sample) != next {
            return Err(BuildError::ChunkOrder { chunk: i });
        }
        next += u64::from(c.samples);
        if c.file as usize >= input.files.len()
            || c.description as usize >= input.sample_entries.len()
        {
            return Err(BuildError::BadReference {
                chunk: i,
                file: c.file,
                description: c.description,
            });
        }
    }
    if next != n as u64 {
        return Err(BuildError::Coverage {
            covered: next,
            total: n as u64,
        });
    }
    let media_90k: u64 = input
        .samples
        .iter()
        .map(|s| u64::from(s.duration_90k))
        .sum();
    if input.skip_90k.saturating_add(input.duration_90k) > media_90k {
        return Err(BuildError::Edit {
            skip_90k: input.skip_90k,
            duration_90k: input.duration_90k,
            media_90k,
        });
    }

    // Subtitle samples: u16 length + UTF-8 text each, all in one chunk at the start of mdat.
    let mut text_payload = Vec::new();
    for c in &input.cues {
        let t = &c.text.as_bytes()[..c.text.len().min(u16::MAX as usize)];
        text_payload.extend_from_slice(&(t.len() as u16).to_be_bytes());
        text_payload.extend_from_slice(t);
    }
    let chunk_lens: Vec<u64> = input.chunks.iter().map(|c| chunk_bytes(input, c)).collect();
    let video_payload: u64 = chunk_lens.iter().sum();
    let payload = text_payload.len() as u64 + video_payload;

    let entries_len: usize = input.sample_entries.iter().map(|e| e.len()).sum();
    let mut w = BoxWriter::with_capacity(
        1024 + entries_len + 4 * n + 12 * input.chunks.len() + 30 * input.cues.len(),
    );
    write_ftyp(&mut w);
    let mut patches: Vec<Co64Patch> = Vec::new();
    let has_text = !input.cues.is_empty();
    w.start(b"moov");
    write_mvhd(
        &mut w,
        input.duration_90k,
        if has_text {
            TEXT_TRACK_ID + 1
        } else {
            VIDEO_TRACK_ID + 1
        },
    );

    // Video track.
    w.start(b"trak");
    write_tkhd(
        &mut w,
        VIDEO_TRACK_ID,
        input.duration_90k,
        input.width,
        input.height,
    );
    w.boxed(b"edts", |w| {
        w.full_boxed(b"elst", 1, 0, |w| {
            w.u32(1)
                .u64(input.duration_90k)
                .i64(input.skip_90k as i64)
                .u16(1)
                .u16(0);
        });
    });
    w.start(b"mdia");
    write_mdhd_hdlr(&mut w, media_90k, b"vide", b"VideoHandler\0");
    w.start(b"minf");
    w.full_boxed(b"vmhd", 0, 1, |w| {
        w.zeros(8);
    });
    write_dinf(&mut w);
    w.start(b"stbl");
    w.full_boxed(b"stsd", 0, 0, |w| {
        w.u32(input.sample_entries.len() as u32);
        for e in &input.sample_entries {
            w.bytes(e);
        }
    });
    write_stts(&mut w, input.samples.iter().map(|s| s.duration_90k));
    let keys = input.samples.iter().filter(|s| s.is_key).count();
    if keys != n {
        w.full_boxed(b"stss", 0, 0, |w| {
            w.u32(keys as u32);
            for (i, s) in input.samples.iter().enumerate() {
                if s.is_key {
                    w.u32(i as u32 + 1);
                }
            }
        });
    }
    w.full_boxed(b"stsc", 0, 0, |w| {
        let count_pos = w.len();
        w.u32(0);
        let mut entries = 0u32;
        let mut prev = None;
        for (i, c) in input.chunks.iter().enumerate() {
            let cur = (c.samples, c.description + 1);
            if prev != Some(cur) {
                w.u32(i as u32 + 1).u32(cur.0).u32(cur.1);
                entries += 1;
                prev = Some(cur);
            }
        }
        w.patch_u32(count_pos, entries);
    });
    w.full_boxed(b"stsz", 0, 0, |w| {
        w.u32(0).u32(n as u32);
        for s in &input.samples {
            w.u32(s.bytes);
        }
    });
    let mut rel = Vec::with_capacity(input.chunks.len());
    let mut at = text_payload.len() as u64;
    for len in &chunk_lens {
        rel.push(at);
        at += len;
    }
    w.full_boxed(b"co64", 0, 0, |w| {
        w.u32(rel.len() as u32);
        patches.push(Co64Patch { pos: w.len(), rel });
        w.zeros(8 * input.chunks.len());
    });
    w.end(); // stbl
    w.end(); // minf
    w.end(); // mdia
    w.end(); // trak

    if has_text {
        let text_90k: u64 = input.cues.iter().map(|c| u64::from(c.duration_90k)).sum();
        w.start(b"trak");
        write_tkhd(&mut w, TEXT_TRACK_ID, text_90k, input.width, input.height);
        w.start(b"mdia");
        write_mdhd_hdlr(&mut w, text_90k, b"sbtl", b"WallClock\0");
        w.start(b"minf");
        w.full_boxed(b"nmhd", 0, 0, |_| {});
        write_dinf(&mut w);
        w.start(b"stbl");
        w.full_boxed(b"stsd", 0, 0, |w| {
            w.u32(1);
            write_tx3g_entry(w, input.height);
        });
        write_stts(&mut w, input.cues.iter().map(|c| c.duration_90k));
        w.full_boxed(b"stsc", 0, 0, |w| {
            w.u32(1).u32(1).u32(input.cues.len() as u32).u32(1);
        });
        w.full_boxed(b"stsz", 0, 0, |w| {
            w.u32(0).u32(input.cues.len() as u32);
            for c in &input.cues {
                w.u32(2 + c.text.len().min(u16::MAX as usize) as u32);
            }
        });
        w.full_boxed(b"co64", 0, 0, |w| {
            w.u32(1);
            patches.push(Co64Patch {
                pos: w.len(),
                rel: vec![0],
            });
            w.u64(0);
        });
        w.end(); // stbl
        w.end(); // minf
        w.end(); // mdia
        w.end(); // trak
    }
    w.end(); // moov

    let mdat_hdr = crate::write::mdat_header_len(payload) as u64;
    if mdat_hdr == 8 {
        w.u32((payload + 8) as u32).bytes(b"mdat");
    } else {
        w.u32(1).bytes(b"mdat").u64(payload + 16);
    }
    let header_len = w.len() as u64;
    let mut buf = w.into_inner();
    for p in patches {
        for (i, r) in p.rel.iter().enumerate() {
            let pos = p.pos + 8 * i;
            buf[pos..pos + 8].copy_from_slice(&(header_len + r).to_be_bytes());
        }
    }

    let mut parts = Vec::with_capacity(input.chunks.len() + 2);
    parts.push(Part::Mem(Bytes::from(buf)));
    if !text_payload.is_empty() {
        parts.push(Part::Mem(Bytes::from(text_payload)));
    }
    for (c, &len) in input.chunks.iter().zip(&chunk_lens) {
        // Merge with the previous part when contiguous in the same file.
        if let Some(Part::File {
            file,
            offset,
            len: plen,
        }) = parts.last_mut()
            && *file == c.file
            && *offset + *plen == c.offset
        {
            *plen += len;
            continue;
        }
        parts.push(Part::File {
            file: c.file,
            offset: c.offset,
            len,
        });
    }
    let mut starts = Vec::with_capacity(parts.len());
    let mut total = 0u64;
    for p in &parts {
        starts.push(total);
        total += p.len();
    }
    debug_assert_eq!(total, header_len + payload);
    Ok(VirtualMp4 {
        files: input.files.clone(),
        parts,
        starts,
        total_len: total,
        header_len,
    })
}

fn chunk_bytes(input: &Input, c: &Chunk) -> u64 {
    let a = c.first_sample as usize;
    input.samples[a..a + c.samples as usize]
        .iter()
        .map(|s| u64::from(s.bytes))
        .sum()
}

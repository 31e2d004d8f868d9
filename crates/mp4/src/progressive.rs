//! The virtual progressive MP4: a plain (non-fragmented) MP4 for any time range, built from the
//! index alone, without reading a single sample byte, and whose sample tables are generated
//! lazily, per requested byte range.
//!
//! Layout: `ftyp`, `moov` (`mvhd` v1, one video `trak` with `tkhd` v1, `edts`/`elst` v1,
//! `mdia`/`mdhd` v1, `stbl` = `stsd` (one sample description per distinct set of codec
//! parameters), `stts`, `stss`, `stsc`, `stsz`, `co64`; optionally a `tx3g` subtitle `trak`),
//! then `mdat` (with a 64-bit `largesize` when its payload exceeds 4 GiB). Every size and offset
//! is 64-bit (`co64`, v1 headers), so 24-hour ranges and files over 4 GiB work.
//!
//! **Pieces.** The input is a list of [`PieceRef`]s: runs of samples from one file with one
//! sample description (in practice, one recorded segment, or the part of one inside the range).
//! A piece contributes a contiguous share of each table (its `stts` runs, key frames, `stsc`
//! runs, sizes and chunk offsets) and of `mdat`. The size of every share follows from the
//! piece's [`PieceSummary`] (sample, key-frame, chunk and run counts, payload bytes), which the
//! index stores per segment — so the whole file's layout and length are known from the index
//! entries' heads, before any sample table is decoded. Why: a 24 h range is 2.16 M samples and a
//! 12.6 MB `moov`; decoding and writing all of it took ~110 ms before the first byte could go
//! out (docs/BENCHMARKS.md), while a player needs the first bytes at once and then reads the
//! `moov` at network speed.
//!
//! The result is a [`VirtualMp4`]: [`Part`]s with known lengths: fixed headers in memory, table
//! shares ([`Part::Table`]) and sample data ([`Part::Data`]) resolved on demand through a
//! [`PieceSource`] that loads one piece's sample tables. [`VirtualMp4::read`] serves any byte
//! range; a share whose rendered length differs from the one promised by its summary (an index
//! inconsistency) is an error, never silently wrong bytes. Table runs (`stts`, `stsc`) are not
//! merged across pieces, so each share depends on its own piece only (equal consecutive runs are
//! valid MP4, just not minimal).
//!
//! [`build`] takes the simpler, fully materialised [`Input`] (every sample and chunk in memory)
//! and goes through the same lazy builder, so there is one way of laying out the file.
//!
//! A start between key frames is handled by the caller: it begins at the previous key frame and
//! sets the edit list's `media_time` (`skip_90k`), so players open at the exact instant.
//!
//! Does not own: files or the index (the caller turns its index into pieces); HTTP.

use std::collections::{HashMap, hash_map};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::boxes::{BoxWriter, write_dinf, write_mdhd_hdlr, write_mvhd, write_tkhd};
use crate::write::SampleInfo;

/// Bumped whenever the bytes produced for the same input change (part of HTTP ETags).
/// 2: table runs are no longer merged across pieces.
pub const FORMAT_VERSION: u32 = 2;

const VIDEO_TRACK_ID: u32 = 1;
const TEXT_TRACK_ID: u32 = 2;

/// A run of samples stored contiguously in one file (for [`Input`]).
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

/// A fully materialised input (every sample in memory): exports and tests.
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

/// One chunk of a piece: `samples` samples stored contiguously from `offset` in the piece's file.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ChunkLoc {
    pub offset: u64,
    pub samples: u32,
}

/// The sample tables of one piece, as loaded by a [`PieceSource`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PieceTables {
    pub samples: Vec<SampleInfo>,
    /// In order; together they cover `samples` exactly once; none is empty.
    pub chunks: Vec<ChunkLoc>,
}

/// Counts of equal consecutive values (`stts` duration runs, `stsc` samples-per-chunk runs). The
/// index's incremental encoders use it too, so the counts they store match
/// [`PieceSummary::of`] by construction.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct RunCounter {
    runs: u32,
    last: Option<u32>,
}

impl RunCounter {
    pub fn push(&mut self, v: u32) {
        if self.last != Some(v) {
            self.runs += 1;
            self.last = Some(v);
        }
    }
    pub fn runs(&self) -> u32 {
        self.runs
    }
}

/// What fixes the size of a piece's share of each table and of `mdat`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PieceSummary {
    pub samples: u32,
    pub key_frames: u32,
    /// Runs of equal sample durations.
    pub stts_runs: u32,
    pub chunks: u32,
    /// Runs of chunks with equal sample counts.
    pub stsc_runs: u32,
    /// Sum of the sample sizes.
    pub payload_bytes: u64,
    /// Sum of the sample durations.
    pub media_90k: u64,
}

impl PieceSummary {
    pub fn of(t: &PieceTables) -> PieceSummary {
        let mut stts = RunCounter::default();
        let mut stsc = RunCounter::default();
        let mut s = PieceSummary {
            samples: t.samples.len() as u32,
            chunks: t.chunks.len() as u32,
            ..PieceSummary::default()
        };
        for x in &t.samples {
            stts.push(x.duration_90k);
            s.key_frames += u32::from(x.is_key);
            s.payload_bytes += u64::from(x.bytes);
            s.media_90k += u64::from(x.duration_90k);
        }
        for c in &t.chunks {
            stsc.push(c.samples);
        }
        s.stts_runs = stts.runs();
        s.stsc_runs = stsc.runs();
        s
    }
}

/// One piece of the output: samples from one file, with one sample description.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PieceRef {
    /// Index into [`LazyInput::files`].
    pub file: u32,
    /// Index into [`LazyInput::sample_entries`] (0-based).
    pub description: u32,
    pub summary: PieceSummary,
}

/// Loads a piece's sample tables when its share of the file is read. Must return tables whose
/// [`PieceSummary::of`] equals the summary the piece was built with (checked when rendering).
pub trait PieceSource: Send + Sync + fmt::Debug {
    fn load(&self, piece: u32) -> io::Result<Arc<PieceTables>>;
    /// Memory held by the source (for cache accounting).
    fn resident_bytes(&self) -> u64 {
        0
    }
}

/// Pieces already in memory.
#[derive(Debug)]
pub struct MemSource(pub Vec<Arc<PieceTables>>);

impl PieceSource for MemSource {
    fn load(&self, piece: u32) -> io::Result<Arc<PieceTables>> {
        self.0
            .get(piece as usize)
            .cloned()
            .ok_or_else(|| io::Error::other(format!("no piece #{piece}")))
    }
    fn resident_bytes(&self) -> u64 {
        self.0
            .iter()
            .map(|t| (t.samples.len() * 12 + t.chunks.len() * 16) as u64)
            .sum()
    }
}

/// The input of [`build_lazy`]: everything but the sample tables themselves.
#[derive(Clone, Debug, Default)]
pub struct LazyInput {
    /// `avc1`/`hvc1` sample entry boxes, verbatim (`stsd` entries, in order).
    pub sample_entries: Vec<Bytes>,
    /// Display size written in `tkhd` (the first sample description's).
    pub width: u16,
    pub height: u16,
    pub files: Vec<PathBuf>,
    pub pieces: Vec<PieceRef>,
    /// Media time skipped at the start (the edit list's `media_time`).
    pub skip_90k: u64,
    /// Presented duration (the edit list's `segment_duration`).
    pub duration_90k: u64,
    /// Optional wall-clock subtitle track. Empty: no track.
    pub cues: Vec<Cue>,
}

impl LazyInput {
    /// The same file as a fully materialised [`Input`], every piece's tables loaded from
    /// `source`: for consumers that walk every sample (export frame counts, the burned-in
    /// copy, tests).
    pub fn materialise(&self, source: &dyn PieceSource) -> io::Result<Input> {
        let mut out = Input {
            sample_entries: self.sample_entries.clone(),
            width: self.width,
            height: self.height,
            files: self.files.clone(),
            samples: Vec::new(),
            chunks: Vec::new(),
            skip_90k: self.skip_90k,
            duration_90k: self.duration_90k,
            cues: self.cues.clone(),
        };
        for (n, piece) in self.pieces.iter().enumerate() {
            let n = u32::try_from(n).map_err(|_| io::Error::other("too many pieces"))?;
            let t = source.load(n)?;
            let mut first = u32::try_from(out.samples.len())
                .map_err(|_| io::Error::other("too many samples"))?;
            for c in &t.chunks {
                out.chunks.push(Chunk {
                    file: piece.file,
                    offset: c.offset,
                    first_sample: first,
                    samples: c.samples,
                    description: piece.description,
                });
                first += c.samples;
            }
            out.samples.extend_from_slice(&t.samples);
        }
        Ok(out)
    }
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
    #[error("piece {piece}: {what}")]
    BadPiece { piece: usize, what: &'static str },
    #[error("the range has too many samples for one MP4 track")]
    TooLarge,
    #[error(
        "edit list: skip {skip_90k} + duration {duration_90k} exceed the media duration {media_90k}"
    )]
    Edit {
        skip_90k: u64,
        duration_90k: u64,
        media_90k: u64,
    },
}

/// The sample tables a piece has a share of.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Table {
    Stts,
    Stss,
    Stsc,
    Stsz,
    Co64,
}

/// One piece of the virtual file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Mem(Bytes),
    /// A piece's share of one table, generated on demand.
    Table {
        table: Table,
        piece: u32,
        len: u64,
    },
    /// A piece's sample data (its chunks, read from its file).
    Data {
        piece: u32,
        len: u64,
    },
}

impl Part {
    pub fn len(&self) -> u64 {
        match self {
            Part::Mem(b) => b.len() as u64,
            Part::Table { len, .. } | Part::Data { len, .. } => *len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A resolved slice of the virtual file, as handed out by [`VirtualMp4::for_each_slice`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slice {
    Mem(Bytes),
    /// `len` bytes at `offset` of [`VirtualMp4::files`]`[file]`.
    File {
        file: u32,
        offset: u64,
        len: u64,
    },
}

/// The virtual file: parts in order, their start offsets and the total length.
#[derive(Clone, Debug)]
pub struct VirtualMp4 {
    pub files: Vec<PathBuf>,
    pieces: Vec<PieceRef>,
    /// Per piece and [`Table`]: the number of samples before the piece (`stss`), of chunks
    /// before it (`stsc`), or the absolute offset of its first sample (`co64`); 0 otherwise.
    bases: Vec<[u64; 5]>,
    source: Arc<dyn PieceSource>,
    parts: Vec<Part>,
    /// `starts[i]` = offset of `parts[i]` in the virtual file.
    starts: Vec<u64>,
    pub total_len: u64,
    /// Length of `ftyp` + `moov` + `mdat` header (everything before the samples).
    pub header_len: u64,
}

fn inconsistent(piece: u32, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("piece {piece}: {what} differs from its index summary (index inconsistent)"),
    )
}

impl VirtualMp4 {
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Memory held: in-memory parts, the part list and the piece source.
    pub fn resident_bytes(&self) -> u64 {
        let mem: u64 = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Mem(b) => b.len() as u64,
                _ => 0,
            })
            .sum();
        mem + (self.parts.len() * 48 + self.pieces.len() * 48) as u64 + self.source.resident_bytes()
    }

    /// Resolves bytes `[start, end)` (clamped to the length) into slices, in order, loading
    /// pieces as needed; stops early (Ok) when `f` returns false. Errors come from the piece
    /// source, or from a piece whose tables no longer match its summary.
    pub fn for_each_slice(
        &self,
        start: u64,
        end: u64,
        mut f: impl FnMut(Slice) -> bool,
    ) -> io::Result<()> {
        let end = end.min(self.total_len);
        if start >= end {
            return Ok(());
        }
        let first = self
            .starts
            .partition_point(|&s| s <= start)
            .saturating_sub(1);
        // Parts are visited in order and a piece's parts are spread over the tables: keep the
        // last loaded piece (consecutive slices of one share, the data of one piece).
        let mut loaded: Option<(u32, Arc<PieceTables>)> = None;
        let mut load = |piece: u32| -> io::Result<Arc<PieceTables>> {
            if let Some((p, t)) = &loaded
                && *p == piece
            {
                return Ok(t.clone());
            }
            let t = self.source.load(piece)?;
            loaded = Some((piece, t.clone()));
            Ok(t)
        };
        // The five tables each visit every piece in turn, so a piece's shares are far apart in
        // the file: when one share of a piece is needed all five are rendered, and the others
        // wait here for their turn, so each piece is loaded (decoded) once per read. At most
        // about the `moov`'s size is pending (12.7 MB for 24 h at 25 fps), for the duration of
        // one read.
        let mut pending: HashMap<u32, [Option<Bytes>; 5]> = HashMap::new();
        for (part, &s) in self.parts[first..].iter().zip(&self.starts[first..]) {
            if s >= end {
                break;
            }
            let a = start.max(s) - s;
            let b = end.min(s + part.len()) - s;
            if b <= a {
                continue;
            }
            let go_on = match part {
                Part::Mem(m) => f(Slice::Mem(m.slice(a as usize..b as usize))),
                Part::Table { table, piece, len } => {
                    let shares = match pending.entry(*piece) {
                        hash_map::Entry::Occupied(e) => e.into_mut(),
                        hash_map::Entry::Vacant(v) => {
                            let t = load(*piece)?;
                            v.insert(self.render_shares(*piece, &t))
                        }
                    };
                    let bytes = match shares[*table as usize].take() {
                        Some(b) => b,
                        None => {
                            let t = load(*piece)?;
                            self.render_shares(*piece, &t)[*table as usize]
                                .take()
                                .unwrap_or_default()
                        }
                    };
                    if *table == Table::Co64 {
                        // A piece's last share: nothing of it is pending any more.
                        pending.remove(piece);
                    }
                    if bytes.len() as u64 != *len {
                        return Err(inconsistent(*piece, "a table share"));
                    }
                    f(Slice::Mem(bytes.slice(a as usize..b as usize)))
                }
                Part::Data { piece, len } => {
                    let t = load(*piece)?;
                    let file = self.pieces.get(*piece as usize).map_or(0, |p| p.file);
                    let covered: u64 = t.chunks.iter().map(|c| u64::from(c.samples)).sum();
                    let bytes: u64 = t.samples.iter().map(|s| u64::from(s.bytes)).sum();
                    if bytes != *len || covered != t.samples.len() as u64 {
                        return Err(inconsistent(*piece, "the sample data length"));
                    }
                    let (mut pos, mut first) = (0u64, 0usize);
                    let mut go_on = true;
                    for c in &t.chunks {
                        let n = chunk_payload(&t, c, first);
                        first += c.samples as usize;
                        let (lo, hi) = (pos.max(a), (pos + n).min(b));
                        if lo < hi && go_on {
                            go_on = f(Slice::File {
                                file,
                                offset: c.offset + (lo - pos),
                                len: hi - lo,
                            });
                        }
                        pos += n;
                    }
                    go_on
                }
            };
            if !go_on {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Every share of `piece` (indexed by [`Table`]).
    fn render_shares(&self, piece: u32, t: &PieceTables) -> [Option<Bytes>; 5] {
        let desc = self.pieces.get(piece as usize).map_or(0, |p| p.description);
        let bases = self.bases.get(piece as usize).copied().unwrap_or_default();
        [
            Table::Stts,
            Table::Stss,
            Table::Stsc,
            Table::Stsz,
            Table::Co64,
        ]
        .map(|table| Some(Bytes::from(render(table, t, bases[table as usize], desc))))
    }

    /// Reads bytes `[start, end)` (clamped) from memory and the files, handing chunks of at most
    /// `max_chunk` bytes to `send` in order; stops early (Ok) when `send` returns false. A file
    /// shorter than the index says (deleted or truncated meanwhile) is an error.
    pub fn read(
        &self,
        start: u64,
        end: u64,
        max_chunk: usize,
        mut send: impl FnMut(Bytes) -> bool,
    ) -> io::Result<()> {
        let max_chunk = max_chunk.max(1);
        let mut open: Option<(u32, File)> = None;
        let mut err: Option<io::Error> = None;
        self.for_each_slice(start, end, |s| match s {
            Slice::Mem(m) => {
                for i in (0..m.len()).step_by(max_chunk) {
                    if !send(m.slice(i..(i + max_chunk).min(m.len()))) {
                        return false;
                    }
                }
                true
            }
            Slice::File { file, offset, len } => {
                if open.as_ref().is_none_or(|(f, _)| *f != file) {
                    let Some(path) = self.files.get(file as usize) else {
                        err = Some(io::Error::other(format!(
                            "virtual MP4 refers to file #{file}"
                        )));
                        return false;
                    };
                    match File::open(path) {
                        Ok(f) => open = Some((file, f)),
                        Err(e) => {
                            err =
                                Some(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
                            return false;
                        }
                    }
                }
                let Some((_, f)) = open.as_ref() else {
                    return false;
                };
                let mut done = 0u64;
                while done < len {
                    let n = (len - done).min(max_chunk as u64) as usize;
                    let mut buf = vec![0u8; n];
                    if let Err(e) = f.read_exact_at(&mut buf, offset + done) {
                        let path = self.files.get(file as usize).cloned().unwrap_or_default();
                        err = Some(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
                        return false;
                    }
                    done += n as u64;
                    if !send(Bytes::from(buf)) {
                        return false;
                    }
                }
                true
            }
        })?;
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Reads `[start, end)` into memory (tests, small ranges).
    pub fn read_to_vec(&self, start: u64, end: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read(start, end, 1 << 20, |b| {
            out.extend_from_slice(&b);
            true
        })?;
        Ok(out)
    }
}

/// Payload bytes of chunk `c` whose first sample is `t.samples[first]`.
fn chunk_payload(t: &PieceTables, c: &ChunkLoc, first: usize) -> u64 {
    t.samples
        .get(first..first + c.samples as usize)
        .map_or(0, |s| s.iter().map(|s| u64::from(s.bytes)).sum())
}

/// A piece's share of `table`.
fn render(table: Table, t: &PieceTables, base: u64, description: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |v: u32| out.extend_from_slice(&v.to_be_bytes());
    match table {
        Table::Stts => {
            let mut run: Option<(u32, u32)> = None;
            for s in &t.samples {
                run = match run {
                    Some((n, d)) if d == s.duration_90k => Some((n + 1, d)),
                    Some((n, d)) => {
                        put(n);
                        put(d);
                        Some((1, s.duration_90k))
                    }
                    None => Some((1, s.duration_90k)),
                };
            }
            if let Some((n, d)) = run {
                put(n);
                put(d);
            }
        }
        Table::Stss => {
            for (i, s) in t.samples.iter().enumerate() {
                if s.is_key {
                    put((base + i as u64 + 1) as u32);
                }
            }
        }
        Table::Stsc => {
            let mut prev = None;
            for (i, c) in t.chunks.iter().enumerate() {
                if prev != Some(c.samples) {
                    put((base + i as u64 + 1) as u32);
                    put(c.samples);
                    put(description + 1);
                    prev = Some(c.samples);
                }
            }
        }
        Table::Stsz => {
            for s in &t.samples {
                put(s.bytes);
            }
        }
        Table::Co64 => {
            let (mut at, mut first) = (base, 0usize);
            for c in &t.chunks {
                out.extend_from_slice(&at.to_be_bytes());
                at += chunk_payload(t, c, first);
                first += c.samples as usize;
            }
        }
    }
    out
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

/// Builds the virtual file from a fully materialised input (through [`build_lazy`]: consecutive
/// chunks of one file and description form a piece). Fails only on an inconsistent [`Input`]
/// (a caller bug).
pub fn build(input: &Input) -> Result<VirtualMp4, BuildError> {
    let n = input.samples.len();
    if n == 0 || input.chunks.is_empty() {
        return Err(BuildError::Empty);
    }
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
    let (lazy, source) = to_pieces(input);
    build_lazy(lazy, Arc::new(source))
}

/// `input` as pieces (consecutive chunks of one file and description) with their summaries,
/// and a source holding their tables. Does not validate `input` (see [`build`]).
pub fn to_pieces(input: &Input) -> (LazyInput, MemSource) {
    let mut pieces: Vec<PieceRef> = Vec::new();
    let mut tables: Vec<PieceTables> = Vec::new();
    for c in input.chunks.iter().filter(|c| c.samples > 0) {
        let same = pieces
            .last()
            .is_some_and(|p| p.file == c.file && p.description == c.description);
        if !same {
            pieces.push(PieceRef {
                file: c.file,
                description: c.description,
                summary: PieceSummary::default(),
            });
            tables.push(PieceTables::default());
        }
        if let Some(t) = tables.last_mut() {
            let a = (c.first_sample as usize).min(input.samples.len());
            let b = (a + c.samples as usize).min(input.samples.len());
            t.samples.extend_from_slice(&input.samples[a..b]);
            t.chunks.push(ChunkLoc {
                offset: c.offset,
                samples: c.samples,
            });
        }
    }
    for (p, t) in pieces.iter_mut().zip(&tables) {
        p.summary = PieceSummary::of(t);
    }
    let lazy = LazyInput {
        sample_entries: input.sample_entries.clone(),
        width: input.width,
        height: input.height,
        files: input.files.clone(),
        pieces,
        skip_90k: input.skip_90k,
        duration_90k: input.duration_90k,
        cues: input.cues.clone(),
    };
    (lazy, MemSource(tables.into_iter().map(Arc::new).collect()))
}

/// Totals over all pieces.
#[derive(Default)]
struct Totals {
    samples: u64,
    key_frames: u64,
    stts_runs: u64,
    chunks: u64,
    stsc_runs: u64,
    payload_bytes: u64,
    media_90k: u64,
}

fn check_pieces(input: &LazyInput) -> Result<Totals, BuildError> {
    if input.pieces.is_empty() {
        return Err(BuildError::Empty);
    }
    let mut t = Totals::default();
    for (i, p) in input.pieces.iter().enumerate() {
        let s = &p.summary;
        let bad = |what| Err(BuildError::BadPiece { piece: i, what });
        if p.file as usize >= input.files.len() {
            return bad("refers to a missing file");
        }
        if p.description as usize >= input.sample_entries.len() {
            return bad("refers to a missing sample description");
        }
        if s.samples == 0 || s.chunks == 0 || s.chunks > s.samples {
            return bad("needs 1 ≤ chunks ≤ samples");
        }
        if s.stts_runs == 0 || s.stts_runs > s.samples || s.stsc_runs == 0 || s.stsc_runs > s.chunks
        {
            return bad("run counts out of bounds");
        }
        if s.key_frames > s.samples {
            return bad("more key frames than samples");
        }
        t.samples += u64::from(s.samples);
        t.key_frames += u64::from(s.key_frames);
        t.stts_runs += u64::from(s.stts_runs);
        t.chunks += u64::from(s.chunks);
        t.stsc_runs += u64::from(s.stsc_runs);
        t.payload_bytes += s.payload_bytes;
        t.media_90k += s.media_90k;
    }
    // Every count goes into a 32-bit field, and the tables into a moov with 32-bit box sizes.
    let table_bytes =
        8 * t.stts_runs + 4 * t.key_frames + 12 * t.stsc_runs + 4 * t.samples + 8 * t.chunks;
    if t.samples > u64::from(u32::MAX) || table_bytes > u64::from(u32::MAX) - (1 << 24) {
        return Err(BuildError::TooLarge);
    }
    if input.skip_90k.saturating_add(input.duration_90k) > t.media_90k {
        return Err(BuildError::Edit {
            skip_90k: input.skip_90k,
            duration_90k: input.duration_90k,
            media_90k: t.media_90k,
        });
    }
    Ok(t)
}

/// A lazily generated share, recorded at its position in the header buffer.
struct Hole {
    mem_pos: usize,
    table: Table,
    piece: u32,
    len: u64,
}

/// Declares each piece's share of `table` (`entry_len` bytes per counted item).
fn shares(
    w: &mut BoxWriter,
    holes: &mut Vec<Hole>,
    pieces: &[PieceRef],
    table: Table,
    entry_len: u64,
    count: impl Fn(&PieceSummary) -> u32,
) {
    for (i, p) in pieces.iter().enumerate() {
        let len = entry_len * u64::from(count(&p.summary));
        if len > 0 {
            holes.push(Hole {
                mem_pos: w.len(),
                table,
                piece: i as u32,
                len,
            });
            w.outside(len);
        }
    }
}

/// Builds the virtual file from piece summaries; the tables are rendered when read. Fails only
/// on an inconsistent [`LazyInput`] (a caller bug).
pub fn build_lazy(
    input: LazyInput,
    source: Arc<dyn PieceSource>,
) -> Result<VirtualMp4, BuildError> {
    let totals = check_pieces(&input)?;
    let pieces = &input.pieces;

    // Subtitle samples: u16 length + UTF-8 text each, all in one chunk at the start of mdat.
    let mut text_payload = Vec::new();
    for c in &input.cues {
        let t = &c.text.as_bytes()[..c.text.len().min(u16::MAX as usize)];
        text_payload.extend_from_slice(&(t.len() as u16).to_be_bytes());
        text_payload.extend_from_slice(t);
    }
    let payload = text_payload.len() as u64 + totals.payload_bytes;

    let entries_len: usize = input.sample_entries.iter().map(|e| e.len()).sum();
    let mut w = BoxWriter::with_capacity(2048 + entries_len + 30 * input.cues.len());
    let mut holes: Vec<Hole> = Vec::with_capacity(pieces.len() * 5);
    write_ftyp(&mut w);
    let has_text = !input.cues.is_empty();
    w.start(b"moov");
    write_mvhd(
        &mut w,
        1,
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
        1,
        0x3,
        VIDEO_TRACK_ID,
        input.duration_90k,
        (input.width, input.height),
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
    write_mdhd_hdlr(&mut w, 1, totals.media_90k, b"vide", b"VideoHandler\0");
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
    // Counts fit in u32: checked by check_pieces.
    w.start_full(b"stts", 0, 0).u32(totals.stts_runs as u32);
    shares(&mut w, &mut holes, pieces, Table::Stts, 8, |s| s.stts_runs);
    w.end();
    if totals.key_frames != totals.samples {
        w.start_full(b"stss", 0, 0).u32(totals.key_frames as u32);
        shares(&mut w, &mut holes, pieces, Table::Stss, 4, |s| s.key_frames);
        w.end();
    }
    w.start_full(b"stsc", 0, 0).u32(totals.stsc_runs as u32);
    shares(&mut w, &mut holes, pieces, Table::Stsc, 12, |s| s.stsc_runs);
    w.end();
    w.start_full(b"stsz", 0, 0)
        .u32(0)
        .u32(totals.samples as u32);
    shares(&mut w, &mut holes, pieces, Table::Stsz, 4, |s| s.samples);
    w.end();
    w.start_full(b"co64", 0, 0).u32(totals.chunks as u32);
    shares(&mut w, &mut holes, pieces, Table::Co64, 8, |s| s.chunks);
    w.end();
    w.end(); // stbl
    w.end(); // minf
    w.end(); // mdia
    w.end(); // trak

    // The text track's single chunk offset, patched once the header length is known.
    let mut text_co64_pos = None;
    if has_text {
        let text_90k: u64 = input.cues.iter().map(|c| u64::from(c.duration_90k)).sum();
        w.start(b"trak");
        write_tkhd(
            &mut w,
            1,
            0x3,
            TEXT_TRACK_ID,
            text_90k,
            (input.width, input.height),
        );
        w.start(b"mdia");
        write_mdhd_hdlr(&mut w, 1, text_90k, b"sbtl", b"WallClock\0");
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
            text_co64_pos = Some(w.len());
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
    let header_len = w.virtual_len();
    let mut buf = w.into_inner();
    if let Some(pos) = text_co64_pos {
        buf[pos..pos + 8].copy_from_slice(&header_len.to_be_bytes());
    }
    let buf = Bytes::from(buf);

    // Bases of each piece's shares: samples and chunks before it, offset of its first sample.
    let mut bases = Vec::with_capacity(pieces.len());
    let (mut samples, mut chunks) = (0u64, 0u64);
    let mut offset = header_len + text_payload.len() as u64;
    for p in pieces {
        // Indexed by `Table`: stts, stss, stsc, stsz, co64.
        bases.push([0, samples, chunks, 0, offset]);
        samples += u64::from(p.summary.samples);
        chunks += u64::from(p.summary.chunks);
        offset += p.summary.payload_bytes;
    }

    let mut parts = Vec::with_capacity(holes.len() * 2 + pieces.len() + 3);
    let mut at = 0usize;
    for h in holes {
        if h.mem_pos > at {
            parts.push(Part::Mem(buf.slice(at..h.mem_pos)));
            at = h.mem_pos;
        }
        parts.push(Part::Table {
            table: h.table,
            piece: h.piece,
            len: h.len,
        });
    }
    if at < buf.len() {
        parts.push(Part::Mem(buf.slice(at..)));
    }
    if !text_payload.is_empty() {
        parts.push(Part::Mem(Bytes::from(text_payload)));
    }
    for (i, p) in pieces.iter().enumerate() {
        if p.summary.payload_bytes > 0 {
            parts.push(Part::Data {
                piece: i as u32,
                len: p.summary.payload_bytes,
            });
        }
    }
    let mut starts = Vec::with_capacity(parts.len());
    let mut total = 0u64;
    for p in &parts {
        starts.push(total);
        total += p.len();
    }
    debug_assert_eq!(total, header_len + payload);
    Ok(VirtualMp4 {
        files: input.files,
        pieces: input.pieces,
        bases,
        source,
        parts,
        starts,
        total_len: total,
        header_len,
    })
}

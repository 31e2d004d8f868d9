//! Playback plans: which samples of which segment files make up a wall-clock range, turned into
//! the plain input of the virtual progressive MP4 builder ([`vigie_mp4::progressive`]).
//!
//! Rules (see docs/API.md "video.mp4"):
//! * Segments overlapping `[start, end)` come from one index range scan; they are merged into
//!   spans with [`crate::SPAN_MERGE_TOLERANCE_90K`]. No span → [`PlaybackError::NoRecording`].
//!   More than one span (a gap) → [`PlaybackError::Gaps`] unless [`GapPolicy::Skip`], which
//!   concatenates the spans (the caller says so in a response header).
//! * Inside a segment, wall-clock offsets map to media time proportionally (wall duration vs
//!   media duration; they differ by at most ±500 ppm).
//! * The first frame is the one showing at `start`; samples begin at the key frame at or before
//!   it and the edit list skips the frames in between, so players open on the frame showing at
//!   the requested instant (the output thus starts at most one frame before `start`: players
//!   drop a frame that begins before the edit start). Frames starting before `end` are
//!   included; the edit ends at `end` (within the last frame).
//! * Each segment may carry its own codec parameters: each distinct set becomes one sample
//!   description (`stsd` entry). A codec change (H.264 ↔ H.265) inside the range cannot be one
//!   track: [`PlaybackError::CodecChange`] lists the sub-ranges to ask for instead.
//! * Only indexed (durable) fragments are used, so a segment still being written is served up to
//!   its indexed length.

use std::collections::HashMap;
use std::sync::Arc;

use vigie_core::{Codec, StreamKey, Time90k};
use vigie_mp4::SampleInfo;
use vigie_mp4::progressive::{
    self, BuildError, ChunkLoc, Input, LazyInput, PieceRef, PieceSource, PieceSummary, PieceTables,
    VirtualMp4,
};

use crate::index::{EntryHead, SegmentEntry};
use crate::sampletable::FragmentLoc;
use crate::{Span, Store, StoreError, sampletable};

/// What to do when the range holds more than one span of recording.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum GapPolicy {
    /// Refuse ([`PlaybackError::Gaps`]): gaps are never hidden by default.
    Refuse,
    /// Concatenate the spans.
    Skip,
}

#[derive(Debug, thiserror::Error)]
pub enum PlaybackError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no recording in the requested range")]
    NoRecording,
    #[error("the range holds {} spans of recording separated by gaps (ask for each span, or pass gaps=skip)", .spans.len())]
    Gaps { spans: Vec<Span> },
    #[error("the codec changes inside the range; ask for each sub-range separately")]
    CodecChange { ranges: Vec<Span> },
}

/// One segment's contribution (for ETags and diagnostics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedSegment {
    pub id: u64,
    /// Indexed length of the file when planned (grows while the segment is open).
    pub bytes: u64,
    pub first_sample: u32,
    pub samples: u32,
}

/// A stretch of the output's presentation timeline mapped to wall-clock time.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Start on the output's presentation timeline (after the edit list).
    pub presentation_90k: u64,
    pub wall_start: Time90k,
    pub duration_90k: u64,
}

/// The result of [`Store::playback_plan`].
#[derive(Clone, Debug)]
pub struct PlaybackPlan {
    /// Builder input (no subtitle cues: the caller adds them from [`PlaybackPlan::pieces`]).
    pub input: LazyInput,
    /// Loads each piece's sample tables when the built file is read.
    pub source: Arc<IndexPieces>,
    /// Spans of recording inside the window (more than one only with [`GapPolicy::Skip`]).
    pub spans: Vec<Span>,
    pub segments: Vec<PlannedSegment>,
    /// Presentation → wall clock, in order, covering `input.duration_90k`.
    pub pieces: Vec<Piece>,
}

impl PlaybackPlan {
    /// Lays out the virtual MP4 (no sample table is decoded for whole segments).
    pub fn build(self) -> Result<VirtualMp4, BuildError> {
        progressive::build_lazy(self.input, self.source)
    }

    /// The same file as a fully materialised [`Input`] (decodes every piece's tables): for
    /// consumers that walk every sample (export frame counts, the burned-in copy, tests).
    pub fn materialise(&self) -> std::io::Result<Input> {
        self.input.materialise(self.source.as_ref())
    }
}

fn scale(v: i64, num: i64, den: i64) -> i64 {
    if den <= 0 || num <= 0 {
        return v;
    }
    (i128::from(v) * i128::from(num) / i128::from(den)) as i64
}

/// The segments overlapping a window, read with one index range scan, before any sample table
/// is decoded: enough to check gaps and compute a cache key ([`Candidates::fingerprint`]).
#[derive(Clone, Debug)]
pub struct Candidates {
    key: StreamKey,
    start: Time90k,
    end: Time90k,
    entries: Vec<(EntryHead, sled::IVec)>,
    /// Spans of recording inside the window.
    pub spans: Vec<Span>,
}

impl Candidates {
    /// Refuses gaps (unless skipped) and codec changes.
    pub fn check(&self, gaps: GapPolicy) -> Result<(), PlaybackError> {
        if self.spans.len() > 1 && gaps == GapPolicy::Refuse {
            return Err(PlaybackError::Gaps {
                spans: self.spans.clone(),
            });
        }
        check_codecs(&self.entries, self.start, self.end)
    }

    /// Per segment: id, start, wall duration and indexed length. With the request parameters
    /// it determines the plan (an open segment changes when it grows or closes).
    pub fn fingerprint(&self) -> impl Iterator<Item = [u64; 4]> + '_ {
        self.entries.iter().map(|(e, _)| {
            [
                e.id,
                e.start_90k as u64,
                e.wall_duration_90k as u64,
                e.bytes,
            ]
        })
    }

    /// Decodes the sample tables and plans (after [`Candidates::check`]).
    pub fn plan(&self, store: &Store, gaps: GapPolicy) -> Result<PlaybackPlan, PlaybackError> {
        self.check(gaps)?;
        plan_entries(
            store,
            &self.key,
            &self.entries,
            self.start,
            self.end,
            self.spans.clone(),
        )
    }
}

impl Store {
    /// The segments of `key` overlapping `[start, end)` with frames; [`PlaybackError::NoRecording`]
    /// when there are none.
    pub fn playback_candidates(
        &self,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
    ) -> Result<Candidates, PlaybackError> {
        let Some(sid) = self.inner.index()?.existing_stream_id(key)? else {
            return Err(PlaybackError::NoRecording);
        };
        // Streamed: only the entries with frames are kept (the plan needs each one's tables);
        // their number is bounded by the range, which the API caps (24 h).
        let mut entries: Vec<(EntryHead, sled::IVec)> = Vec::new();
        for r in self
            .inner
            .index()?
            .segments_overlapping_heads(sid, start, end)
        {
            let (h, v) = r?;
            if h.frames > 0 {
                entries.push((h, v));
            }
        }
        let spans = crate::spans::merge_ranges(
            entries.iter().map(|(e, _)| (e.start(), e.end())),
            start,
            end,
        );
        if spans.is_empty() {
            return Err(PlaybackError::NoRecording);
        }
        Ok(Candidates {
            key: key.clone(),
            start,
            end,
            entries,
            spans,
        })
    }

    /// Plans the virtual MP4 of `key` for `[start, end)` (see the module docs for the rules).
    pub fn playback_plan(
        &self,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
        gaps: GapPolicy,
    ) -> Result<PlaybackPlan, PlaybackError> {
        self.playback_candidates(key, start, end)?.plan(self, gaps)
    }
}

impl Store {
    /// Samples `[first, first + count)` of segment `id` of `key` and their chunks (offsets in
    /// the segment file), cut to its indexed (durable) length: a plan's piece of the segment
    /// ([`PlannedSegment::first_sample`], [`PlannedSegment::samples`]), for another node laying
    /// out the file (`/internal/v1/…/segments/{id}/tables`). `None`: no such segment of `key`
    /// here, or it no longer holds those samples (deleted meanwhile).
    pub fn segment_tables(
        &self,
        key: &StreamKey,
        id: u64,
        first: u32,
        count: u32,
    ) -> Result<Option<PieceTables>, StoreError> {
        let Some(info) = self.segment(id)?.filter(|i| &i.key == key) else {
            return Ok(None);
        };
        let Some(mut e) = self.inner.index()?.get_segment(id)? else {
            return Ok(None);
        };
        let mut samples = Vec::new();
        let frags = decode_usable(&mut e, &info.path, &mut samples)?;
        let (lo, hi) = (first as usize, first as usize + count as usize);
        if count == 0 || hi > samples.len() {
            return Ok(None);
        }
        Ok(Some(tables_of(&samples, &frags, lo, hi)))
    }
}

fn plan_entries(
    store: &Store,
    key: &StreamKey,
    entries: &[(EntryHead, sled::IVec)],
    start: Time90k,
    end: Time90k,
    spans: Vec<Span>,
) -> Result<PlaybackPlan, PlaybackError> {
    let mut input = LazyInput::default();
    let mut sources: Vec<IndexPiece> = Vec::new();
    let mut descriptions: HashMap<u64, u32> = HashMap::new();
    let mut segments = Vec::new();
    let mut pieces: Vec<Piece> = Vec::new();
    let mut presented = 0u64; // presentation time so far (after the edit)
    let mut last_clip = 0u64; // media time of the last included frame after `end`
    let mut scratch: Vec<SampleInfo> = Vec::new();
    for (h, encoded) in entries {
        let wall = h.wall_duration_90k;
        let is_first_piece = input.pieces.is_empty();
        // (summary, first sample, source, presented media [from, to), media after `to`)
        let (summary, first_sample, source, present_from, present_to, clip);
        if h.start_90k >= start.0 && h.end() <= end {
            // The whole segment: laid out from the entry's head, tables decoded when read.
            let media = h.media_duration_90k.max(0);
            summary = PieceSummary {
                samples: h.frames,
                key_frames: h.key_frames,
                stts_runs: h.counts.stts_runs,
                chunks: h.counts.chunks,
                stsc_runs: h.counts.stsc_runs,
                payload_bytes: h.counts.payload_bytes,
                media_90k: media as u64,
            };
            first_sample = 0;
            source = IndexPiece::Entry {
                id: h.id,
                encoded: encoded.clone(),
                samples: h.frames,
                path: store.inner.layout.segment_path(key, h.id, h.start()),
            };
            (present_from, present_to, clip) = (0, media, 0);
        } else {
            // A segment cut by the window: decode it now (at most the first and last ones).
            let mut e: SegmentEntry = postcard::from_bytes(encoded).map_err(StoreError::from)?;
            let path = store.inner.layout.segment_path(key, h.id, h.start());
            let frags = decode_usable(&mut e, &path, &mut scratch)?;
            let samples = &scratch[..];
            if samples.is_empty() {
                continue;
            }
            let media_sum: i64 = samples.iter().map(|s| i64::from(s.duration_90k)).sum();
            let a =
                scale((start.0 - e.start_90k).max(0), e.media_duration_90k, wall).min(media_sum);
            let b = scale(end.0 - e.start_90k, e.media_duration_90k, wall).clamp(0, media_sum);
            if a >= media_sum {
                continue;
            }
            // first = frame showing at `a`; last_excl = first frame at or after b.
            let mut pts = 0i64;
            let (mut first, mut last_excl) = (samples.len(), samples.len());
            let mut first_pts = 0i64;
            let mut end_pts = media_sum;
            for (i, s) in samples.iter().enumerate() {
                let d = i64::from(s.duration_90k);
                if first == samples.len() && a < pts + d {
                    first = i;
                    first_pts = pts;
                }
                if pts >= b {
                    last_excl = i;
                    end_pts = pts;
                    break;
                }
                pts += d;
            }
            if first >= last_excl {
                continue;
            }
            let key_idx = samples[..=first]
                .iter()
                .rposition(|s| s.is_key)
                .unwrap_or(0);
            let key_pts: i64 = samples[..key_idx]
                .iter()
                .map(|s| i64::from(s.duration_90k))
                .sum();
            let from = if is_first_piece {
                // The edit starts at the frame showing at `start` (players drop frames that
                // begin before the edit, even those still showing at its start).
                input.skip_90k = (first_pts - key_pts).max(0) as u64;
                first_pts
            } else {
                key_pts
            };
            let to = b.min(end_pts).max(from);
            let tables = tables_of(samples, &frags, key_idx, last_excl);
            summary = PieceSummary::of(&tables);
            first_sample = key_idx as u32;
            source = IndexPiece::Decoded(Arc::new(tables));
            (present_from, present_to, clip) = (from - key_pts, to - key_pts, end_pts - to);
            // Presentation offsets below are relative to the piece's first (key) sample.
            let wall_at = |m: i64| Time90k(e.start_90k + scale(m, wall, e.media_duration_90k));
            pieces.push(Piece {
                presentation_90k: presented,
                wall_start: wall_at(from),
                duration_90k: (to - from) as u64,
            });
        }
        if matches!(source, IndexPiece::Entry { .. }) {
            pieces.push(Piece {
                presentation_90k: presented,
                wall_start: h.start(),
                duration_90k: present_to as u64,
            });
        }
        presented += (present_to - present_from).max(0) as u64;
        last_clip = clip.max(0) as u64;

        // Sample description.
        let n_desc = descriptions.len() as u32;
        let description = match descriptions.get(&h.params_id) {
            Some(d) => *d,
            None => {
                let p = store
                    .params(h.params_id)?
                    .ok_or_else(|| StoreError::Corrupt {
                        what: format!("segment {} refers to unknown params", h.id),
                    })?;
                if input.sample_entries.is_empty() {
                    input.width = p.width;
                    input.height = p.height;
                }
                input.sample_entries.push(p.sample_entry.clone());
                descriptions.insert(h.params_id, n_desc);
                n_desc
            }
        };
        let file = input.files.len() as u32;
        input
            .files
            .push(store.inner.layout.segment_path(key, h.id, h.start()));
        input.pieces.push(PieceRef {
            file,
            description,
            summary,
        });
        sources.push(source);
        segments.push(PlannedSegment {
            id: h.id,
            bytes: h.bytes,
            first_sample,
            samples: summary.samples,
        });
    }
    if input.pieces.is_empty() {
        return Err(PlaybackError::NoRecording);
    }
    let media: u64 = input.pieces.iter().map(|p| p.summary.media_90k).sum();
    input.duration_90k = media
        .saturating_sub(input.skip_90k)
        .saturating_sub(last_clip);
    if input.duration_90k == 0 {
        // The window ends inside the first frame: present that frame.
        input.duration_90k = media.saturating_sub(input.skip_90k).max(1);
        input.skip_90k = input.skip_90k.min(media.saturating_sub(input.duration_90k));
    }
    prefetch_tables(&sources);
    Ok(PlaybackPlan {
        input,
        source: Arc::new(IndexPieces { pieces: sources }),
        spans,
        segments,
        pieces,
    })
}

/// Threads reading a plan's tables ahead.
const PREFETCH_THREADS: usize = 4;

/// Plans of fewer whole segments than this do not read ahead.
const PREFETCH_MIN_SEGMENTS: usize = 16;

/// Reads ahead, into the page cache, the tables of the plan's whole segments that are kept in
/// their files ([`crate::filetables`]), on a few short-lived threads, when a probe finds them
/// out of the page cache: rendering the `moov` then finds them cached instead of reading 1,440
/// files one after the other for a 24 h range from a cold cache (docs/BENCHMARKS.md "Restart",
/// playback). Only a hint: a failed read is ignored (the render reads, and reports, for itself).
fn prefetch_tables(pieces: &[IndexPiece]) {
    let targets: Vec<(std::path::PathBuf, u64, u32)> = pieces
        .iter()
        .filter_map(|p| match p {
            IndexPiece::Entry { encoded, path, .. } => {
                crate::filetables::external_range_of_encoded(encoded)
                    .map(|(offset, len)| (path.clone(), offset, len))
            }
            IndexPiece::Decoded(_) => None,
        })
        .collect();
    if targets.len() < PREFETCH_MIN_SEGMENTS {
        return;
    }
    // One thread first probes two tables: when both come from the page cache (a warm, recent
    // range), reading ahead would only take CPU from the response, and it stops there.
    let _ = std::thread::Builder::new()
        .name("vigie-tables-ahead".into())
        .spawn(move || {
            use std::os::unix::fs::FileExt;
            let read = |(path, offset, len): &(std::path::PathBuf, u64, u32), buf: &mut Vec<u8>| {
                if let Ok(f) = std::fs::File::open(path) {
                    buf.resize(*len as usize, 0);
                    let _ = f.read_exact_at(buf, *offset);
                }
            };
            let mut buf = Vec::new();
            let probe = std::time::Instant::now();
            read(&targets[0], &mut buf);
            read(&targets[targets.len() / 2], &mut buf);
            if probe.elapsed() < std::time::Duration::from_micros(200) {
                return;
            }
            let targets = Arc::new(targets);
            for t in 1..PREFETCH_THREADS {
                let targets = targets.clone();
                let _ = std::thread::Builder::new()
                    .name("vigie-tables-ahead".into())
                    .spawn(move || {
                        let mut buf = Vec::new();
                        for target in targets.iter().skip(t).step_by(PREFETCH_THREADS) {
                            read(target, &mut buf);
                        }
                    });
            }
            for target in targets.iter().step_by(PREFETCH_THREADS) {
                read(target, &mut buf);
            }
        });
}

/// Decodes an entry's sample table into `samples` and returns its fragments, both cut to the
/// fragments wholly inside the indexed (durable) length. Tables kept in the segment file
/// (`path`) are read from it first ([`crate::filetables`]).
fn decode_usable(
    e: &mut SegmentEntry,
    path: &std::path::Path,
    samples: &mut Vec<SampleInfo>,
) -> Result<Vec<FragmentLoc>, StoreError> {
    crate::filetables::load(e, path)?;
    let corrupt = || StoreError::Corrupt {
        what: format!("sample table of segment {}", e.id),
    };
    if !sampletable::decode_samples_into(&e.sample_table, samples) {
        return Err(corrupt());
    }
    let mut frags =
        sampletable::decode_fragments(&e.fragment_table, u64::from(e.init_len), samples)
            .ok_or_else(corrupt)?;
    let mut usable = 0usize;
    let mut n_usable = 0usize;
    for f in &frags {
        let last = n_usable + f.samples as usize;
        let payload: u64 = samples[n_usable..last]
            .iter()
            .map(|s| u64::from(s.bytes))
            .sum();
        if f.offset + u64::from(f.header_len) + payload > e.bytes {
            break;
        }
        usable += 1;
        n_usable = last;
    }
    frags.truncate(usable);
    samples.truncate(n_usable);
    Ok(frags)
}

/// Samples `[lo, hi)` of a segment and their chunks (each fragment's part of the range).
fn tables_of(samples: &[SampleInfo], frags: &[FragmentLoc], lo: usize, hi: usize) -> PieceTables {
    let hi = hi.min(samples.len());
    let lo = lo.min(hi);
    let mut t = PieceTables {
        samples: samples[lo..hi].to_vec(),
        chunks: Vec::with_capacity(frags.len()),
    };
    let mut frag_first = 0usize;
    for f in frags {
        let frag_last = frag_first + f.samples as usize;
        let (a, b) = (frag_first.max(lo), frag_last.min(hi));
        if a < b {
            let skip_bytes: u64 = samples[frag_first..a]
                .iter()
                .map(|s| u64::from(s.bytes))
                .sum();
            t.chunks.push(ChunkLoc {
                offset: f.offset + u64::from(f.header_len) + skip_bytes,
                samples: (b - a) as u32,
            });
        }
        frag_first = frag_last;
    }
    t
}

/// One piece of a plan, for [`IndexPieces`].
enum IndexPiece {
    /// The first `samples` samples of an encoded entry (the bytes the plan's scan read, so later
    /// appends to an open segment do not matter).
    Entry {
        id: u64,
        encoded: sled::IVec,
        samples: u32,
        /// The segment file (its tables may be there).
        path: std::path::PathBuf,
    },
    /// Tables decoded while planning (segments cut by the window).
    Decoded(Arc<PieceTables>),
}

/// The [`PieceSource`] of a [`PlaybackPlan`]: loads each piece's tables from the index entries
/// the plan was made from.
pub struct IndexPieces {
    pieces: Vec<IndexPiece>,
}

impl std::fmt::Debug for IndexPieces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IndexPieces({} pieces)", self.pieces.len())
    }
}

impl PieceSource for IndexPieces {
    fn load(&self, piece: u32) -> std::io::Result<Arc<PieceTables>> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        match self.pieces.get(piece as usize) {
            None => Err(std::io::Error::other(format!("no piece #{piece}"))),
            Some(IndexPiece::Decoded(t)) => Ok(t.clone()),
            Some(IndexPiece::Entry {
                id,
                encoded,
                samples,
                path,
            }) => {
                let mut e: SegmentEntry = postcard::from_bytes(encoded)
                    .map_err(|e| invalid(format!("index entry of segment {id}: {e}")))?;
                let mut decoded = Vec::new();
                let frags = decode_usable(&mut e, path, &mut decoded)
                    .map_err(|e| invalid(e.to_string()))?;
                Ok(Arc::new(tables_of(&decoded, &frags, 0, *samples as usize)))
            }
        }
    }

    fn resident_bytes(&self) -> u64 {
        self.pieces
            .iter()
            .map(|p| match p {
                IndexPiece::Entry { encoded, .. } => encoded.len() as u64,
                IndexPiece::Decoded(t) => (t.samples.len() * 12 + t.chunks.len() * 16) as u64,
            })
            .sum()
    }
}

/// A codec change inside the window → the sub-ranges of constant codec.
fn check_codecs(
    entries: &[(EntryHead, sled::IVec)],
    start: Time90k,
    end: Time90k,
) -> Result<(), PlaybackError> {
    let mut ranges: Vec<(Codec, Span)> = Vec::new();
    for (e, _) in entries {
        let (a, b) = (e.start().max(start), e.end().min(end));
        if b <= a {
            continue;
        }
        match ranges.last_mut() {
            Some((c, s)) if *c == e.codec => s.end = s.end.max(b),
            _ => ranges.push((e.codec, Span { start: a, end: b })),
        }
    }
    if ranges.len() > 1 {
        return Err(PlaybackError::CodecChange {
            ranges: ranges.into_iter().map(|(_, s)| s).collect(),
        });
    }
    Ok(())
}

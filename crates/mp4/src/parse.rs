//! A tolerant reader of Vigie segment files, for crash recovery and `vigie reindex`.
//!
//! It walks the top-level boxes, reads the init segment back (codec parameters, size, Vigie
//! metadata), then every complete `moof` + `mdat` fragment, and reports where the last complete
//! fragment (or the trailer) ends. Anything after that — a fragment cut by a crash, garbage — is
//! reported, never trusted, and never makes the parser panic: every length is checked against
//! the bytes actually present.
//!
//! The input may be hostile (a crafted file in the recordings directory is read at start-up):
//! the work and memory are bounded by the input's size and by fixed caps, never by a count read
//! from the file. A `trun` sample count must fit in the bytes of its own box (one 4-byte field
//! per sample) or, when sample sizes come from defaults, in its `mdat` (each sample at least one
//! byte); a fragment holds at most [`MAX_SAMPLES_PER_FRAGMENT`] samples, a segment at most
//! [`MAX_SAMPLES_PER_SEGMENT`] samples and [`MAX_FRAGMENTS_PER_SEGMENT`] fragments; a box body
//! read into memory is at most 16 MiB. `tests/fuzz_parse.rs` fuzzes all of this.

use std::io::{self, Read, Seek, SeekFrom};

use bytes::Bytes;
use vigie_core::{Codec, VideoParams};

use crate::write::{META_UUID, SampleInfo, SegmentMeta, SegmentTrailer, TIMESCALE, TRAILER_UUID};

/// Largest `moov` or `moof` the parser accepts (anything bigger is garbage for us).
const MAX_HEADER_BOX: u64 = 16 << 20;

/// Most samples one fragment may hold. Vigie writes about one fragment per second (a few dozen
/// frames); a million is beyond any camera and bounds one `trun` to 12 MiB of [`SampleInfo`].
pub const MAX_SAMPLES_PER_FRAGMENT: usize = 1 << 20;
/// Most samples a segment may hold: 4 Mi frames, 14 000 fps over the 5 min longest segment.
/// Parsing stops (as at a damaged fragment) when a fragment would exceed it.
pub const MAX_SAMPLES_PER_SEGMENT: usize = 1 << 22;
/// Most fragments a segment may hold (Vigie writes a few hundred): empty fragments cost memory
/// without samples, so they are capped on their own.
pub const MAX_FRAGMENTS_PER_SEGMENT: usize = 1 << 20;

/// The init segment read back from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedInit {
    pub params: VideoParams,
    pub meta: SegmentMeta,
    /// Byte offset where the init segment (`ftyp` + `moov`) ends: the first fragment starts here.
    pub len: u64,
}

/// One complete fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedFragment {
    /// Byte offset of the `moof` box.
    pub offset: u64,
    /// Byte offset of the first sample byte (inside `mdat`).
    pub data_offset: u64,
    /// Byte offset just past the `mdat` box.
    pub end: u64,
    pub sequence: u32,
    pub base_media_decode_time_90k: u64,
    pub samples: Vec<SampleInfo>,
}

/// Everything the parser could read from a segment file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedSegment {
    pub init: Option<ParsedInit>,
    pub fragments: Vec<ParsedFragment>,
    pub trailer: Option<SegmentTrailer>,
    /// Offset where the last complete, consistent part ends (init, fragment or trailer). Bytes
    /// beyond it are a partial tail to truncate.
    pub complete_len: u64,
    /// Total length of the input.
    pub total_len: u64,
    /// Why parsing stopped before `total_len`, if it did.
    pub problem: Option<String>,
}

impl ParsedSegment {
    /// Sum of sample durations.
    pub fn media_duration_90k(&self) -> u64 {
        self.fragments
            .iter()
            .flat_map(|f| &f.samples)
            .map(|s| u64::from(s.duration_90k))
            .sum()
    }
    pub fn frames(&self) -> usize {
        self.fragments.iter().map(|f| f.samples.len()).sum()
    }
    /// True when the input ends exactly where the complete data ends.
    pub fn is_clean(&self) -> bool {
        self.problem.is_none() && self.complete_len == self.total_len
    }
}

/// Parses a whole in-memory buffer.
pub fn parse_segment_bytes(buf: &[u8]) -> ParsedSegment {
    // Reading from a Cursor over a slice cannot fail.
    parse_segment(&mut io::Cursor::new(buf)).unwrap_or_default()
}

/// Parses a segment file, reading only box headers, `moov` and `moof` (never the sample data).
/// I/O errors are returned; malformed content is reported in the result.
pub fn parse_segment<R: Read + Seek>(r: &mut R) -> io::Result<ParsedSegment> {
    let total = r.seek(SeekFrom::End(0))?;
    let mut out = ParsedSegment {
        total_len: total,
        ..Default::default()
    };
    let mut pos = 0u64;
    let mut seen_ftyp = false;
    let mut samples_total = 0usize;
    while pos < total {
        let Some(h) = read_header(r, pos, total)? else {
            out.problem = Some(format!("truncated or invalid box header at offset {pos}"));
            break;
        };
        if h.end > total {
            out.problem = Some(format!("box {} at offset {pos} is truncated", h.name()));
            break;
        }
        match &h.fourcc {
            b"ftyp" if pos == 0 => {
                seen_ftyp = true;
            }
            b"moov" if seen_ftyp && out.init.is_none() => {
                let body = read_body(r, &h)?;
                match parse_moov(&body) {
                    Ok((params, meta)) => {
                        out.init = Some(ParsedInit {
                            params,
                            meta,
                            len: h.end,
                        });
                        out.complete_len = h.end;
                    }
                    Err(e) => {
                        out.problem = Some(format!("invalid moov: {e}"));
                        break;
                    }
                }
            }
            b"moof" if out.init.is_some() && out.trailer.is_none() => {
                if out.fragments.len() >= MAX_FRAGMENTS_PER_SEGMENT {
                    out.problem = Some(format!(
                        "fragment at offset {pos}: more than {MAX_FRAGMENTS_PER_SEGMENT} fragments"
                    ));
                    break;
                }
                // The mdat is read first: its size bounds the sample count of the moof.
                let Some(m) = read_header(r, h.end, total)? else {
                    out.problem = Some(format!(
                        "fragment at offset {pos}: missing or truncated mdat header"
                    ));
                    break;
                };
                if &m.fourcc != b"mdat" {
                    out.problem = Some(format!(
                        "fragment at offset {pos}: moof followed by {}",
                        m.name()
                    ));
                    break;
                }
                if m.end > total {
                    out.problem = Some(format!("fragment at offset {pos}: mdat is truncated"));
                    break;
                }
                let limits = SampleLimits {
                    mdat_payload_bytes: m.end - m.body_start(),
                    max_samples: MAX_SAMPLES_PER_FRAGMENT
                        .min(MAX_SAMPLES_PER_SEGMENT.saturating_sub(samples_total)),
                };
                let body = read_body(r, &h)?;
                let (sequence, bmdt, samples, data_offset) = match parse_moof(&body, limits) {
                    Ok(v) => v,
                    Err(e) => {
                        out.problem = Some(format!("invalid moof at offset {pos}: {e}"));
                        break;
                    }
                };
                let payload: u64 = samples.iter().map(|s| u64::from(s.bytes)).sum();
                let data_start = h.start.saturating_add(data_offset);
                if data_start != m.body_start() || data_start.saturating_add(payload) != m.end {
                    out.problem = Some(format!(
                        "fragment at offset {pos}: sample sizes do not match mdat"
                    ));
                    break;
                }
                samples_total += samples.len();
                out.fragments.push(ParsedFragment {
                    offset: h.start,
                    data_offset: data_start,
                    end: m.end,
                    sequence,
                    base_media_decode_time_90k: bmdt,
                    samples,
                });
                out.complete_len = m.end;
                pos = m.end;
                continue;
            }
            b"uuid" if out.init.is_some() && out.trailer.is_none() => {
                let body = read_body(r, &h)?;
                if body.len() >= 16 && body[..16] == TRAILER_UUID {
                    match parse_trailer(&body[16..]) {
                        Some(t) => {
                            out.trailer = Some(t);
                            out.complete_len = h.end;
                        }
                        None => {
                            out.problem = Some(format!("invalid trailer at offset {pos}"));
                            break;
                        }
                    }
                }
            }
            b"free" | b"skip" | b"prft" | b"styp" | b"sidx" | b"uuid" => {}
            _ => {
                out.problem = Some(format!("unexpected box {} at offset {pos}", h.name()));
                break;
            }
        }
        pos = h.end;
    }
    if out.init.is_none() && out.problem.is_none() {
        out.problem = Some("no init segment (ftyp + moov)".into());
    }
    Ok(out)
}

struct Header {
    fourcc: [u8; 4],
    start: u64,
    header_len: u64,
    end: u64,
}

impl Header {
    fn body_start(&self) -> u64 {
        self.start + self.header_len
    }
    fn name(&self) -> String {
        self.fourcc
            .iter()
            .map(|&c| {
                if c.is_ascii_graphic() || c == b' ' {
                    c as char
                } else {
                    '?'
                }
            })
            .collect()
    }
}

/// Reads a box header at `pos`. `None` when fewer than a header's bytes remain or the size is
/// impossible.
fn read_header<R: Read + Seek>(r: &mut R, pos: u64, total: u64) -> io::Result<Option<Header>> {
    if total.saturating_sub(pos) < 8 {
        return Ok(None);
    }
    r.seek(SeekFrom::Start(pos))?;
    let mut b = [0u8; 16];
    r.read_exact(&mut b[..8])?;
    let size32 = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let fourcc = [b[4], b[5], b[6], b[7]];
    let (size, header_len) = match size32 {
        0 => (total - pos, 8),
        1 => {
            if total - pos < 16 {
                return Ok(None);
            }
            r.read_exact(&mut b[8..16])?;
            (
                u64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
                16,
            )
        }
        n => (u64::from(n), 8),
    };
    if size < header_len {
        return Ok(None);
    }
    Ok(Some(Header {
        fourcc,
        start: pos,
        header_len,
        end: pos.saturating_add(size),
    }))
}

fn read_body<R: Read + Seek>(r: &mut R, h: &Header) -> io::Result<Vec<u8>> {
    let len = h.end - h.body_start();
    if len > MAX_HEADER_BOX {
        return Ok(Vec::new());
    }
    r.seek(SeekFrom::Start(h.body_start()))?;
    let mut v = vec![0u8; len as usize];
    r.read_exact(&mut v)?;
    Ok(v)
}

/// A bounds-checked big-endian reader over a slice.
struct Cur<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Cur<'a> {
    fn new(b: &'a [u8]) -> Self {
        Cur { b, p: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .p
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or("unexpected end of box")?;
        let s = &self.b[self.p..end];
        self.p = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
    fn str16(&mut self) -> Result<String, String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "invalid UTF-8".to_owned())
    }
    fn rest(&self) -> &'a [u8] {
        &self.b[self.p.min(self.b.len())..]
    }
}

/// Child boxes of a container body: (fourcc, whole box incl. header, body).
fn children(body: &[u8]) -> Vec<([u8; 4], &[u8], &[u8])> {
    let mut out = Vec::new();
    let mut p = 0usize;
    while body.len() - p >= 8 {
        let size = u32::from_be_bytes([body[p], body[p + 1], body[p + 2], body[p + 3]]) as usize;
        let fourcc = [body[p + 4], body[p + 5], body[p + 6], body[p + 7]];
        let (size, hl) = match size {
            0 => (body.len() - p, 8),
            1 => {
                if body.len() - p < 16 {
                    break;
                }
                let mut a = [0u8; 8];
                a.copy_from_slice(&body[p + 8..p + 16]);
                (
                    usize::try_from(u64::from_be_bytes(a)).unwrap_or(usize::MAX),
                    16,
                )
            }
            n => (n, 8),
        };
        if size < hl || size > body.len() - p {
            break;
        }
        out.push((fourcc, &body[p..p + size], &body[p + hl..p + size]));
        p += size;
    }
    out
}

fn child<'a>(body: &'a [u8], fourcc: &[u8; 4]) -> Result<&'a [u8], String> {
    children(body)
        .into_iter()
        .find(|(f, _, _)| f == fourcc)
        .map(|(_, _, b)| b)
        .ok_or_else(|| format!("missing {}", String::from_utf8_lossy(fourcc)))
}

fn parse_moov(moov: &[u8]) -> Result<(VideoParams, SegmentMeta), String> {
    let trak = child(moov, b"trak")?;
    let mdia = child(trak, b"mdia")?;
    let mut mdhd = Cur::new(child(mdia, b"mdhd")?);
    let version = mdhd.u8()?;
    mdhd.take(3)?;
    mdhd.take(if version == 1 { 16 } else { 8 })?;
    let timescale = mdhd.u32()?;
    if timescale != TIMESCALE {
        return Err(format!("timescale {timescale} is not {TIMESCALE}"));
    }
    let stbl = child(child(mdia, b"minf")?, b"stbl")?;
    let mut stsd = Cur::new(child(stbl, b"stsd")?);
    stsd.take(4)?;
    if stsd.u32()? < 1 {
        return Err("empty stsd".into());
    }
    let (fourcc, entry, entry_body) = children(stsd.rest())
        .into_iter()
        .next()
        .ok_or("missing sample entry")?;
    let codec = match &fourcc {
        b"avc1" | b"avc3" => Codec::H264,
        b"hvc1" | b"hev1" => Codec::H265,
        other => {
            return Err(format!(
                "unsupported sample entry {}",
                String::from_utf8_lossy(other)
            ));
        }
    };
    // VisualSampleEntry: 6 reserved + 2 data_reference_index + 16 pre_defined/reserved, then
    // width and height. The track header's size (written from `VideoParams`) wins when present.
    let mut e = Cur::new(entry_body);
    e.take(24)?;
    let (mut width, mut height) = (e.u16()?, e.u16()?);
    if let Ok(tkhd) = child(trak, b"tkhd") {
        let n = tkhd.len();
        if n >= 8 {
            let mut c = Cur::new(&tkhd[n - 8..]);
            width = (c.u32()? >> 16) as u16;
            height = (c.u32()? >> 16) as u16;
        }
    }

    let uuid = children(moov)
        .into_iter()
        .filter(|(f, _, _)| f == b"uuid")
        .map(|(_, _, b)| b)
        .find(|b| b.len() >= 16 && b[..16] == META_UUID)
        .ok_or("missing Vigie metadata box")?;
    let mut m = Cur::new(&uuid[16..]);
    let v = m.u8()?;
    if v != 1 {
        return Err(format!("unknown Vigie metadata version {v}"));
    }
    let segment_id = m.u64()?;
    let start_90k = m.u64()? as i64;
    let session_id = m.u64()?;
    let par = (m.u32()?, m.u32()?);
    let camera = m.str16()?;
    let stream = m.str16()?;
    let rfc6381_codec = m.str16()?;
    Ok((
        VideoParams {
            codec,
            rfc6381_codec,
            width,
            height,
            pixel_aspect_ratio: par,
            sample_entry: Bytes::copy_from_slice(entry),
        },
        SegmentMeta {
            camera,
            stream,
            segment_id,
            start_90k,
            session_id,
        },
    ))
}

type MoofContent = (u32, u64, Vec<SampleInfo>, u64);

/// What bounds the sample count of one `moof`, besides the bytes of its `trun`.
#[derive(Clone, Copy, Debug)]
struct SampleLimits {
    /// Payload bytes of the fragment's `mdat`.
    mdat_payload_bytes: u64,
    /// Samples this fragment may still hold (per-fragment and per-segment caps).
    max_samples: usize,
}

fn parse_moof(moof: &[u8], limits: SampleLimits) -> Result<MoofContent, String> {
    let mut mfhd = Cur::new(child(moof, b"mfhd")?);
    mfhd.take(4)?;
    let sequence = mfhd.u32()?;
    let traf = child(moof, b"traf")?;
    let mut tfhd = Cur::new(child(traf, b"tfhd")?);
    let tf_flags = tfhd.u32()? & 0x00ff_ffff;
    let _track = tfhd.u32()?;
    if tf_flags & 0x1 != 0 {
        return Err("explicit base-data-offset is not supported".into());
    }
    if tf_flags & 0x2 != 0 {
        tfhd.u32()?;
    }
    let default_duration = if tf_flags & 0x8 != 0 { tfhd.u32()? } else { 0 };
    let default_size = if tf_flags & 0x10 != 0 { tfhd.u32()? } else { 0 };
    let default_flags = if tf_flags & 0x20 != 0 {
        tfhd.u32()?
    } else {
        crate::write::NON_SYNC_SAMPLE_FLAGS
    };
    let mut tfdt = Cur::new(child(traf, b"tfdt")?);
    let bmdt = if tfdt.u8()? == 1 {
        tfdt.take(3)?;
        tfdt.u64()?
    } else {
        tfdt.take(3)?;
        u64::from(tfdt.u32()?)
    };
    let mut trun = Cur::new(child(traf, b"trun")?);
    let flags = trun.u32()? & 0x00ff_ffff;
    let count = trun.u32()? as usize;
    let data_offset = if flags & 0x1 != 0 {
        trun.u32()? as i32
    } else {
        0
    };
    if data_offset <= 0 {
        return Err("missing or invalid trun data offset".into());
    }
    let first_flags = if flags & 0x4 != 0 {
        Some(trun.u32()?)
    } else {
        None
    };
    let per_sample = [0x100, 0x200, 0x400, 0x800]
        .iter()
        .filter(|&&f| flags & f != 0)
        .count();
    if count.saturating_mul(per_sample * 4) > trun.rest().len() {
        return Err("trun sample count exceeds the box".into());
    }
    if count > limits.max_samples {
        return Err(format!(
            "trun sample count {count} exceeds the limit of {}",
            limits.max_samples
        ));
    }
    // Without per-sample sizes every sample has the default size: they must fill the mdat
    // exactly, and an empty sample is not a frame (without this a count with no per-sample
    // fields would be bounded by nothing).
    if flags & 0x200 == 0 && count > 0 {
        let needed = (count as u64).checked_mul(u64::from(default_size));
        if default_size == 0 || needed != Some(limits.mdat_payload_bytes) {
            return Err("trun default sample sizes do not match the mdat".into());
        }
    }
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let duration_90k = if flags & 0x100 != 0 {
            trun.u32()?
        } else {
            default_duration
        };
        let bytes = if flags & 0x200 != 0 {
            trun.u32()?
        } else {
            default_size
        };
        let mut sflags = if flags & 0x400 != 0 {
            trun.u32()?
        } else {
            default_flags
        };
        if let (0, Some(f)) = (i, first_flags) {
            sflags = f;
        }
        if flags & 0x800 != 0 {
            trun.u32()?;
        }
        samples.push(SampleInfo {
            duration_90k,
            bytes,
            is_key: sflags & 0x0001_0000 == 0,
        });
    }
    Ok((sequence, bmdt, samples, data_offset as u64))
}

fn parse_trailer(b: &[u8]) -> Option<SegmentTrailer> {
    let mut c = Cur::new(b);
    if c.u8().ok()? != 1 {
        return None;
    }
    let wall_duration_90k = c.u64().ok()? as i64;
    let end_reason = c.str16().ok()?;
    Some(SegmentTrailer {
        wall_duration_90k,
        end_reason,
    })
}

//! Recorded footage as MP4 files: preparing and reading the virtual MP4 of `video.mp4`, and the
//! wall-clock subtitle cues also written into evidence exports (used by the HTTP layer, the
//! export jobs and `cargo bench -p vigie-footage --bench playback`).
//!
//! * [`prepare`]: the overlapping segments from one index scan
//!   ([`vigie_store::Store::playback_candidates`]), gap check, strong ETag (hash of the format
//!   version, the request parameters and each segment's id, start, duration and indexed length),
//!   then — unless a file with that ETag is cached — the plan and the layout of the file
//!   (sample tables are decoded only for the segments cut by the range; the others are laid
//!   out from their index heads and their tables generated while the response streams, see
//!   [`vigie_mp4::progressive`]) and the wall-clock subtitle cues.
//! * [`read_blocking`]: streams any byte range of a [`VirtualMp4`] from memory and the segment
//!   files in chunks of [`READ_CHUNK_BYTES`], never holding the whole range in memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use vigie_core::{StreamKey, Time90k};
use vigie_mp4::progressive::{self, Cue, VirtualMp4};
use vigie_store::{GapPolicy, Piece, PlaybackError, Span, Store, StoreError};

/// Why footage cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum FootageError {
    /// Nothing recorded in the range.
    #[error("no recording of {key} between {start} and {end}")]
    NoRecording {
        key: StreamKey,
        start: Time90k,
        end: Time90k,
    },
    /// Gaps (with `gaps=error`) or a codec change inside the range: the recorded spans.
    #[error("{message}")]
    Conflict { message: String, spans: Vec<Span> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The start of a `video.mp4` strong ETag: `domain`, the MP4 layout's format version and every
/// request parameter that changes the file (stream, range, gap policy, subtitles' time zone).
/// The caller adds what identifies the footage (segment ids and lengths).
pub fn etag_hasher(domain: &[u8], req: &PlaybackRequest) -> Sha256 {
    let mut h = Sha256::new();
    h.update(domain);
    h.update(progressive::FORMAT_VERSION.to_be_bytes());
    h.update(req.key.to_string().as_bytes());
    h.update([0]);
    h.update(req.start.0.to_be_bytes());
    h.update(req.end.0.to_be_bytes());
    h.update([u8::from(req.gaps == GapPolicy::Skip)]);
    match &req.subtitles {
        Some(tz) => {
            h.update([1]);
            h.update(tz.iana_name().unwrap_or("?").as_bytes());
        }
        None => h.update([0]),
    }
    h
}

/// Size of the reads from segment files while streaming.
pub const READ_CHUNK_BYTES: usize = 256 * 1024;

/// What is asked for.
#[derive(Clone, Debug)]
pub struct PlaybackRequest {
    pub key: StreamKey,
    pub start: Time90k,
    pub end: Time90k,
    pub gaps: GapPolicy,
    /// Add the wall-clock subtitle track, in this time zone.
    pub subtitles: Option<jiff::tz::TimeZone>,
    /// The user the file is for, as JSON (`vigie_api::internal::CarriedIdentity`), set by the
    /// HTTP layer: a cluster implementation carries it to the nodes holding the footage (for
    /// their journals). Not part of the file (nor of its ETag).
    pub on_behalf: Option<String>,
}

/// A virtual MP4 ready to serve.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub mp4: Arc<VirtualMp4>,
    /// Quoted strong entity tag, e.g. `"3f…"`.
    pub etag: String,
    pub spans: Vec<Span>,
}

/// Built files kept for repeated requests (players issue many range requests for the same
/// resource): at most this many entries…
const CACHE_ENTRIES: usize = 16;
/// …and this many bytes in total (index entries and in-memory headers; a 24 h file holds
/// ~10 MB of index entries).
const CACHE_BYTES: u64 = 128 << 20;

type Cache = Mutex<VecDeque<(String, Arc<VirtualMp4>)>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(VecDeque::new()))
}

fn cache_get(etag: &str) -> Option<Arc<VirtualMp4>> {
    let mut c = cache().lock().ok()?;
    let i = c.iter().position(|(e, _)| e == etag)?;
    let entry = c.remove(i)?;
    let v = entry.1.clone();
    c.push_front(entry);
    Some(v)
}

fn cache_put(etag: &str, v: &Arc<VirtualMp4>) {
    let Ok(mut c) = cache().lock() else { return };
    c.push_front((etag.to_owned(), v.clone()));
    let mut total = 0u64;
    let mut keep = 0;
    for (_, m) in c.iter() {
        total += m.resident_bytes();
        if keep >= CACHE_ENTRIES || (keep > 0 && total > CACHE_BYTES) {
            break;
        }
        keep += 1;
    }
    c.truncate(keep);
}

/// Plans, computes the ETag and builds (or reuses) the virtual MP4. Blocking (index reads).
pub fn prepare(store: &Store, req: &PlaybackRequest) -> Result<Prepared, FootageError> {
    let map_err = |e: PlaybackError| {
        let message = e.to_string();
        match e {
            PlaybackError::Store(e) => FootageError::Store(e),
            PlaybackError::NoRecording => FootageError::NoRecording {
                key: req.key.clone(),
                start: req.start,
                end: req.end,
            },
            PlaybackError::Gaps { spans } => FootageError::Conflict { message, spans },
            PlaybackError::CodecChange { ranges } => FootageError::Conflict {
                message,
                spans: ranges,
            },
        }
    };
    let cands = store
        .playback_candidates(&req.key, req.start, req.end)
        .map_err(map_err)?;
    cands.check(req.gaps).map_err(map_err)?;
    let mut h = etag_hasher(b"vigie video.mp4", req);
    for f in cands.fingerprint() {
        for v in f {
            h.update(v.to_be_bytes());
        }
    }
    let digest = h.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let etag = format!("\"{hex}\"");
    if let Some(mp4) = cache_get(&etag) {
        return Ok(Prepared {
            mp4,
            etag,
            spans: cands.spans,
        });
    }
    let mut plan = cands.plan(store, req.gaps).map_err(map_err)?;
    if let Some(tz) = &req.subtitles {
        plan.input.cues = cues(&plan.pieces, tz);
    }
    let spans = plan.spans.clone();
    let mp4 = Arc::new(plan.build().map_err(|e| {
        FootageError::Store(StoreError::Corrupt {
            what: format!("playback plan of {}: {e}", req.key),
        })
    })?);
    cache_put(&etag, &mp4);
    Ok(Prepared { mp4, etag, spans })
}

/// One cue per wall-clock second (the first and last ones partial), local time with its UTC
/// offset, e.g. `2026-11-28 22:00:01 +01:00`. Cues follow the pieces, so concatenated spans
/// (`gaps=skip`) jump to the right time.
pub fn cues(pieces: &[Piece], tz: &jiff::tz::TimeZone) -> Vec<Cue> {
    let mut out = Vec::new();
    for p in pieces {
        let mut t = 0u64;
        while t < p.duration_90k {
            let wall = Time90k(p.wall_start.0 + t as i64);
            let next_second = (wall.0.div_euclid(90_000) + 1) * vigie_core::TIME_UNITS_PER_SEC;
            let d = ((next_second - wall.0) as u64).min(p.duration_90k - t);
            let text = wall
                .to_timestamp()
                .to_zoned(tz.clone())
                .strftime("%Y-%m-%d %H:%M:%S %:z")
                .to_string();
            out.push(Cue {
                duration_90k: d as u32,
                text,
            });
            t += d;
        }
    }
    out
}

/// Reads bytes `[start, end)` of `mp4`, handing chunks of at most [`READ_CHUNK_BYTES`] to
/// `send` in order; stops early (Ok) when `send` returns false (the client went away).
/// A segment file shorter than indexed (deleted or truncated meanwhile) is an error.
pub fn read_blocking(
    mp4: &VirtualMp4,
    start: u64,
    end: u64,
    send: impl FnMut(Bytes) -> bool,
) -> std::io::Result<()> {
    mp4.read(start, end, READ_CHUNK_BYTES, send)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cues_follow_wall_seconds_and_pieces() {
        let tz = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
        let t0 = Time90k::parse_rfc3339("2026-11-28T21:00:00.5Z").unwrap();
        let t1 = Time90k::parse_rfc3339("2026-11-28T21:10:00Z").unwrap();
        let pieces = [
            Piece {
                presentation_90k: 0,
                wall_start: t0,
                duration_90k: 2 * 90_000,
            },
            Piece {
                presentation_90k: 2 * 90_000,
                wall_start: t1,
                duration_90k: 45_000,
            },
        ];
        let c = cues(&pieces, &tz);
        let texts: Vec<&str> = c.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "2026-11-28 22:00:00 +01:00",
                "2026-11-28 22:00:01 +01:00",
                "2026-11-28 22:00:02 +01:00",
                "2026-11-28 22:10:00 +01:00"
            ]
        );
        let d: Vec<u32> = c.iter().map(|c| c.duration_90k).collect();
        assert_eq!(d, [45_000, 90_000, 45_000, 45_000]);
    }
}

//! Handlers of the internal routes (`/internal/v1/…`, see [`crate::internal`]): this node's own
//! footage of a stream, for another node of the cluster. Every handler answers from the local
//! store only (never asks a third node), so a request cannot loop between nodes.
//!
//! * `whoami`: the sender and identity as verified (diagnostics, tests).
//! * `spans`: the spans this node holds of a stream in `[start, end)`.
//! * `plan`: the playback entries of `[start_90k, end_90k)` as this node would lay them out for
//!   `video.mp4` (`gaps=skip`): sample descriptions, edit (`skip_90k`, `duration_90k`), the
//!   presentation → wall-clock map, and per segment its id, indexed length, first sample and
//!   the piece's summary (counts that fix its share of each table; not the tables, so a 24 h
//!   plan is ~300 KB). With this, the calling node lays out one MP4 and reads each `mdat` part
//!   from here by byte range.
//! * `segments/{id}/tables?first=&samples=`: one piece's sample tables (durations, sizes, key
//!   flags; chunk offsets in the segment file), asked when the calling node renders it.
//! * `segments/{id}`: bytes of one segment file (HTTP `Range`, streamed in 256 KiB reads), up
//!   to its indexed (durable) length. Journaled under the carried identity.

use std::io::{Read, Seek, SeekFrom};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};
use vigie_store::GapPolicy;

use super::video::{RangeAnswer, parse_range};
use crate::internal::Verified;
use crate::{ApiError, AppState};

pub async fn whoami(State(state): State<AppState>, v: Verified) -> Json<Value> {
    let me = state.cluster.as_ref().map(|c| c.node().to_owned());
    Json(json!({ "node": me, "from": v.node, "identity": v.identity }))
}

/// A window in 90 kHz units since the epoch (exact: the calling node merges the answer with
/// its own spans, clipped to the same window).
#[derive(Debug, serde::Deserialize)]
pub struct Window90k {
    start_90k: i64,
    end_90k: i64,
}

pub async fn spans(
    State(state): State<AppState>,
    _: Verified,
    Path((cam, stream)): Path<(String, String)>,
    Query(q): Query<Window90k>,
) -> Result<Json<Value>, ApiError> {
    let key = state.stream(&cam, &stream)?.key.clone();
    if q.end_90k <= q.start_90k {
        return Err(ApiError::BadRequest(
            "end_90k must be after start_90k".into(),
        ));
    }
    let w = crate::params::Window {
        start: vigie_core::Time90k(q.start_90k),
        end: vigie_core::Time90k(q.end_90k),
    };
    let store = state.store.clone();
    let spans = tokio::task::spawn_blocking(move || store.spans(&key, w.start, w.end))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))??;
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| json!({ "start_90k": s.start.0, "end_90k": s.end.0 }))
        .collect();
    Ok(Json(
        json!({ "camera": cam, "stream": stream, "spans": spans }),
    ))
}

pub async fn plan(
    State(state): State<AppState>,
    _: Verified,
    Path((cam, stream)): Path<(String, String)>,
    Query(q): Query<Window90k>,
) -> Result<Json<Value>, ApiError> {
    let key = state.stream(&cam, &stream)?.key.clone();
    if q.end_90k <= q.start_90k {
        return Err(ApiError::BadRequest(
            "end_90k must be after start_90k".into(),
        ));
    }
    if q.end_90k - q.start_90k > super::video::MAX_RANGE_SECS * vigie_core::TIME_UNITS_PER_SEC {
        return Err(ApiError::BadRequest("range longer than 24 h".into()));
    }
    let (start, end) = (
        vigie_core::Time90k(q.start_90k),
        vigie_core::Time90k(q.end_90k),
    );
    let store = state.store.clone();
    let body = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        let plan = match store.playback_plan(&key, start, end, GapPolicy::Skip) {
            Ok(p) => p,
            Err(vigie_store::PlaybackError::NoRecording) => {
                return Ok(json!({ "pieces": [], "spans": [] }));
            }
            Err(vigie_store::PlaybackError::Store(e)) => return Err(e.into()),
            Err(e) => {
                return Err(ApiError::Conflict {
                    message: e.to_string(),
                    spans: Vec::new(),
                });
            }
        };
        if plan.segments.len() != plan.input.pieces.len() {
            return Err(ApiError::Internal(format!(
                "plan of {key}: {} segments for {} pieces",
                plan.segments.len(),
                plan.input.pieces.len()
            )));
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        // Summaries only (~200 bytes a segment: 300 KB for 24 h): the tables are asked per
        // piece, when the calling node renders that piece's share of the file.
        let pieces: Vec<Value> = plan
            .input
            .pieces
            .iter()
            .zip(&plan.segments)
            .map(|(p, seg)| {
                let s = &p.summary;
                json!({
                    "segment": seg.id,
                    "bytes": seg.bytes,
                    "first_sample": seg.first_sample,
                    "description": p.description,
                    "summary": [s.samples, s.key_frames, s.stts_runs, s.chunks, s.stsc_runs,
                        s.payload_bytes, s.media_90k],
                })
            })
            .collect();
        let wall: Vec<Value> = plan
            .pieces
            .iter()
            .map(|p| {
                json!({
                    "presentation_90k": p.presentation_90k,
                    "wall_start_90k": p.wall_start.0,
                    "duration_90k": p.duration_90k,
                })
            })
            .collect();
        // RFC 6381 codec strings of the segments, in order (an export names them).
        let mut codecs: Vec<String> = Vec::new();
        let mut params_seen = Vec::new();
        for seg in &plan.segments {
            let Some(info) = store.segment(seg.id)? else {
                continue;
            };
            if params_seen.contains(&info.params_id) {
                continue;
            }
            params_seen.push(info.params_id);
            if let Some(p) = store.params(info.params_id)?
                && !codecs.contains(&p.rfc6381_codec)
            {
                codecs.push(p.rfc6381_codec);
            }
        }
        Ok(json!({
            "codecs": codecs,
            "sample_entries": plan.input.sample_entries.iter().map(|e| b64.encode(e)).collect::<Vec<_>>(),
            "width": plan.input.width,
            "height": plan.input.height,
            "skip_90k": plan.input.skip_90k,
            "duration_90k": plan.input.duration_90k,
            "spans": plan.spans.iter().map(|s| json!({ "start_90k": s.start.0, "end_90k": s.end.0 })).collect::<Vec<_>>(),
            "wall": wall,
            "pieces": pieces,
        }))
    })
    .await
    .map_err(|e| ApiError::Unavailable(e.to_string()))??;
    Ok(Json(body))
}

/// Which samples of a segment (a plan's piece: `first_sample`, `summary[0]` samples).
#[derive(Debug, serde::Deserialize)]
pub struct SampleRange {
    first: u32,
    samples: u32,
}

/// The sample tables of a piece of a plan: `samples` ([duration_90k, bytes, key]) and `chunks`
/// ([offset in the segment file, samples]).
pub async fn tables(
    State(state): State<AppState>,
    _: Verified,
    Path((cam, stream, id)): Path<(String, String, u64)>,
    Query(q): Query<SampleRange>,
) -> Result<Json<Value>, ApiError> {
    let key = state.stream(&cam, &stream)?.key.clone();
    let store = state.store.clone();
    let t = tokio::task::spawn_blocking(move || store.segment_tables(&key, id, q.first, q.samples))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))??
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no samples {}..+{} of segment {id} of {cam}/{stream} here",
                q.first, q.samples
            ))
        })?;
    let samples: Vec<[u64; 3]> = t
        .samples
        .iter()
        .map(|s| {
            [
                u64::from(s.duration_90k),
                u64::from(s.bytes),
                u64::from(s.is_key),
            ]
        })
        .collect();
    let chunks: Vec<[u64; 2]> = t
        .chunks
        .iter()
        .map(|c| [c.offset, u64::from(c.samples)])
        .collect();
    Ok(Json(json!({ "samples": samples, "chunks": chunks })))
}

/// Size of the reads from a segment file while streaming it to another node.
const READ_CHUNK_BYTES: usize = 256 * 1024;

pub async fn segment(
    State(state): State<AppState>,
    v: Verified,
    Path((cam, stream, id)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = state.stream(&cam, &stream)?.key.clone();
    let store = state.store.clone();
    let info = tokio::task::spawn_blocking(move || store.segment(id))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))??
        .filter(|s| s.key == key)
        .ok_or_else(|| ApiError::NotFound(format!("no segment {id} of {cam}/{stream} here")))?;
    let len = info.bytes;
    let (status, a, b) = match headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|r| parse_range(r, len))
        .unwrap_or(RangeAnswer::Full)
    {
        RangeAnswer::Full => (StatusCode::OK, 0, len),
        RangeAnswer::Partial(a, b) => (StatusCode::PARTIAL_CONTENT, a, b),
        RangeAnswer::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable { total_len: len }),
    };
    // The footage leaves this node: journaled under the user it is for, once per user request
    // and segment (a served file reads each segment in a few ranges).
    crate::journal::record_once(
        &state,
        format!("{}|{}|{id}", v.identity.request_id, v.node),
        vigie_audit::NewEntry::new(v.identity.actor.clone(), vigie_audit::Action::Playback)
            .camera(&cam, &stream)
            .range(info.start, info.end())
            .details(json!({
                "via_node": v.node,
                "request_id": v.identity.request_id,
                "segment": id,
            })),
    )
    .await?;
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {a}-{}/{len}", b.saturating_sub(1)))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&(b - a).to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let path = info.path.clone();
    tokio::task::spawn_blocking(move || {
        let r = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::open(&path)?;
            f.seek(SeekFrom::Start(a))?;
            let mut left = b - a;
            while left > 0 {
                // Read into spare capacity (not zeroed first: `read_to_end` fills it as is).
                let n = left.min(READ_CHUNK_BYTES as u64);
                let mut buf = Vec::with_capacity(n as usize);
                (&mut f).take(n).read_to_end(&mut buf)?;
                if buf.len() as u64 != n {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "segment file shorter than its indexed length",
                    ));
                }
                left -= n;
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return Ok(()); // the other node went away
                }
            }
            Ok(())
        })();
        if let Err(e) = r {
            tracing::warn!(error = %e, segment = id, "internal segment read failed; response cut");
            let _ = tx.blocking_send(Err(e));
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((status, h, Body::from_stream(body)).into_response())
}

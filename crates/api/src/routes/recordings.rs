//! `GET /api/v1/cameras/{cam}/streams/{stream}/recordings?start=T&end=T`: spans of continuous
//! recording inside the window, answered from the index (never a directory walk). Gaps are the
//! complement of the spans within the window and are listed explicitly too.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde_json::{Value, json};

use serde::Deserialize;

use crate::params::WindowQuery;
use crate::{ApiError, AppState};

#[derive(Debug, Deserialize)]
pub struct RecordingsQuery {
    start: Option<String>,
    end: Option<String>,
    /// `segments=1` also lists the individual segments (for diagnostics and tests).
    segments: Option<String>,
}

/// Most segments listed by one `segments=1` answer (about a week of one stream at 60 s
/// segments); `segments_next_start` then says where the next page starts.
pub const MAX_LISTED_SEGMENTS: usize = 10_000;

pub async fn list(
    State(state): State<AppState>,
    Path((cam, stream)): Path<(String, String)>,
    query: Result<Query<RecordingsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query?;
    let entry = state.stream(&cam, &stream)?;
    let w = WindowQuery {
        start: query.start,
        end: query.end,
    }
    .window()?;
    let with_segments = match query.segments.as_deref() {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "`segments` must be 0 or 1, not {other:?}"
            )));
        }
    };
    let footage = state.footage.clone();
    let key = entry.key.clone();
    // Spans stream the index (memory grows with the spans); the segment list is paged.
    let (spans, segments) = tokio::task::spawn_blocking(move || {
        let spans = footage.spans(&key, w.start, w.end)?;
        let segments = if with_segments {
            Some(footage.segments_page(&key, w.start, w.end, MAX_LISTED_SEGMENTS)?)
        } else {
            None
        };
        Ok::<_, vigie_store::StoreError>((spans, segments))
    })
    .await
    .map_err(|e| ApiError::Unavailable(e.to_string()))??;
    let mut gaps = Vec::new();
    let mut cursor = w.start;
    for s in &spans {
        if s.start > cursor {
            gaps.push(json!({ "start": cursor.to_rfc3339(), "end": s.start.to_rfc3339(), "duration_s": (s.start - cursor).as_secs_f64() }));
        }
        cursor = cursor.max(s.end);
    }
    if cursor < w.end {
        gaps.push(json!({ "start": cursor.to_rfc3339(), "end": w.end.to_rfc3339(), "duration_s": (w.end - cursor).as_secs_f64() }));
    }
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| json!({ "start": s.start.to_rfc3339(), "end": s.end.to_rfc3339(), "duration_s": (s.end - s.start).as_secs_f64() }))
        .collect();
    let mut body = json!({
        "camera": cam,
        "stream": stream,
        "start": w.start.to_rfc3339(),
        "end": w.end.to_rfc3339(),
        "spans": spans,
        "gaps": gaps,
    });
    if let Some((segments, next)) = segments {
        if let Some(next) = next {
            // More than one page: ask again from here.
            body["segments_next_start"] = json!(next.to_rfc3339());
        }
        body["segments"] = segments
            .iter()
            .map(|s| {
                let end = s.start + vigie_core::Duration90k(s.duration_90k);
                json!({
                    "id": s.id,
                    "start": s.start.to_rfc3339(),
                    "end": end.to_rfc3339(),
                    "duration_s": vigie_core::Duration90k(s.duration_90k).as_secs_f64(),
                    "frames": s.frames,
                    "key_frames": s.key_frames,
                    "bytes": s.bytes,
                    "codec": s.codec,
                    "width": s.width,
                    "height": s.height,
                    "fps": s.fps,
                    "open": s.open,
                    "end_reason": s.end_reason,
                })
            })
            .collect();
    }
    Ok(Json(body))
}

//! `GET /api/v1/cameras/{cam}/streams/{stream}/recordings?start=T&end=T`: spans of continuous
//! recording inside the window, answered from the index (never a directory walk). Gaps are the
//! complement of the spans within the window and are listed explicitly too.
//!
//! In a cluster the spans are those of every node holding footage of the camera (the nodes'
//! coverage in etcd says which): this node's own, and the others' asked over the internal
//! routes on behalf of the caller; overlapping copies are merged. What a node that cannot be
//! asked (down) holds is listed under `unavailable` with the node's name, and is not a gap.
//! `local=1` lists only this node's own footage (diagnostics, the cluster tests); the segment
//! list (`segments=1`) is always this node's own.

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
    /// `local=1`: only the footage held by this node (in a cluster).
    local: Option<String>,
}

fn flag(name: &str, v: Option<&str>) -> Result<bool, ApiError> {
    match v {
        None | Some("0") | Some("false") => Ok(false),
        Some("1") | Some("true") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "`{name}` must be 0 or 1, not {other:?}"
        ))),
    }
}

/// Most segments listed by one `segments=1` answer (about a week of one stream at 60 s
/// segments); `segments_next_start` then says where the next page starts.
pub const MAX_LISTED_SEGMENTS: usize = 10_000;

pub async fn list(
    State(state): State<AppState>,
    who: crate::access::Principal,
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
    let with_segments = flag("segments", query.segments.as_deref())?;
    let local = flag("local", query.local.as_deref())?;
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
    // The other nodes' footage (cluster): merged with ours; what cannot be asked is unavailable.
    let mut unavailable: Vec<Value> = Vec::new();
    let spans = match (&state.cluster, local) {
        (Some(cluster), false) => {
            let who = crate::internal::CarriedIdentity {
                user: who.user.clone(),
                role: who.role,
                scope: who.scope.clone(),
                actor: who.actor(),
                request_id: hex::encode(rand::random::<[u8; 8]>()),
            };
            let remote = cluster.remote_spans(&entry.key, w.start, w.end, who).await;
            let mut all: Vec<(vigie_core::Time90k, vigie_core::Time90k)> =
                spans.iter().map(|s| (s.start, s.end)).collect();
            let mut down = Vec::new();
            for r in remote {
                match r {
                    crate::NodeFootage::Spans { spans, .. } => {
                        all.extend(spans.iter().map(|s| (s.start, s.end)));
                    }
                    crate::NodeFootage::Unavailable {
                        node,
                        start,
                        end,
                        open_until,
                        ..
                    } => down.push((start, end, open_until, node)),
                }
            }
            all.sort();
            let merged = vigie_store::spans::merge_ranges(all.into_iter(), w.start, w.end);
            // A down node's footage is unavailable where no other copy is available.
            down.sort();
            for (a, b, open_until, node) in down {
                // Recording when last heard of: up to the next copy (the camera's new
                // recorder), within the bound.
                let b = match open_until {
                    Some(limit) => merged
                        .iter()
                        .map(|s| s.start)
                        .find(|t| *t >= b)
                        .unwrap_or(limit)
                        .min(limit)
                        .max(b),
                    None => b,
                };
                let (a, b) = (a.max(w.start), b.min(w.end));
                if b <= a {
                    continue;
                }
                for (ga, gb) in vigie_store::gaps(&merged, a, b) {
                    unavailable.push(json!({ "start": ga.to_rfc3339(), "end": gb.to_rfc3339(), "duration_s": (gb - ga).as_secs_f64(), "node": node }));
                }
            }
            merged
        }
        _ => spans,
    };
    let mut covered: Vec<(vigie_core::Time90k, vigie_core::Time90k)> =
        spans.iter().map(|s| (s.start, s.end)).collect();
    for u in &unavailable {
        let t = |k: &str| {
            u[k].as_str()
                .and_then(|s| vigie_core::Time90k::parse_rfc3339(s).ok())
        };
        if let (Some(a), Some(b)) = (t("start"), t("end")) {
            covered.push((a, b));
        }
    }
    covered.sort();
    let covered = vigie_store::spans::merge_ranges(covered.into_iter(), w.start, w.end);
    let mut gaps = Vec::new();
    let mut cursor = w.start;
    for s in &covered {
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
    if state.cluster.is_some() && !local {
        body["unavailable"] = json!(unavailable);
    }
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

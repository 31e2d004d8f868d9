//! `GET /api/v1/cameras/{cam}/streams/{stream}/snapshot.jpg?at=T`: the picture shown at `T`
//! (RFC 3339; default: the latest) as a JPEG. Decoding needs the `gst` cargo feature; without it
//! the route answers 501 naming the feature. The still comes from the [`vigie_service::Stills`]
//! service (locally: `vigie_decode::still`).
//!
//! In a cluster the still is rendered by the node that has the picture: for the latest picture
//! the node recording the camera now, for a past instant this node if it holds footage there,
//! else the node that does, asked over the signed internal route `…/still.jpg` on behalf of the
//! caller (that node journals it too, naming this node). A past instant held only by a node
//! that is down is a 502 naming the node.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::Instrument;
use vigie_core::Time90k;

use crate::{ApiError, AppState};

#[derive(Debug, Deserialize)]
pub struct SnapshotQuery {
    at: Option<String>,
}

pub async fn snapshot(
    State(state): State<AppState>,
    who: crate::access::Principal,
    Path((cam, stream)): Path<(String, String)>,
    query: Result<Query<SnapshotQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let entry = state.stream(&cam, &stream)?;
    let at = query
        .at
        .as_deref()
        .map(|s| Time90k::parse_rfc3339(s).map_err(|e| ApiError::BadRequest(format!("`at`: {e}"))))
        .transpose()?;
    let span = tracing::info_span!("snapshot", camera = %cam, stream = %stream);
    let response = match remote_node(&state, entry, at, &who).await? {
        Some(node) => {
            let cluster = state
                .cluster
                .as_ref()
                .ok_or_else(|| ApiError::Internal("a remote still without a cluster".into()))?;
            let jpeg = cluster
                .remote_still(&node, &entry.key, at, crate::internal::identity_of(&who))
                .instrument(span)
                .await?;
            (
                [
                    (header::CONTENT_TYPE, "image/jpeg"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                jpeg,
            )
                .into_response()
        }
        None => render(&state, entry, at, span).await?,
    };
    // Journaled once the still exists (no entry for a refused or failed request), before it is
    // handed over.
    let at = at.unwrap_or_else(|| state.clock.now());
    crate::journal::record(
        &state,
        vigie_audit::NewEntry::new(who.actor(), vigie_audit::Action::Still)
            .camera(&cam, &stream)
            .range(at, at),
    )
    .await?;
    Ok(response)
}

/// In a cluster, the node that must render the still, when it is not this one: for the latest
/// picture the node recording the camera now; for a past instant this node if it holds footage
/// there, else a node that does (asked through the internal spans route).
async fn remote_node(
    state: &AppState,
    entry: &crate::StreamEntry,
    at: Option<Time90k>,
    who: &crate::access::Principal,
) -> Result<Option<String>, ApiError> {
    let Some(cluster) = &state.cluster else {
        return Ok(None);
    };
    let cam = &entry.key.camera;
    let Some(at) = at else {
        if cluster.records_here(cam) {
            return Ok(None);
        }
        // Nobody records it: this node's latest footage (or its error) will do.
        return Ok(cluster
            .published_status(cam)
            .map(|(node, _)| node)
            .filter(|n| n != cluster.node()));
    };
    // One second around the instant: a still needs the key frame before it, in the same span.
    let (a, b) = (
        at,
        at + vigie_core::Duration90k(vigie_core::TIME_UNITS_PER_SEC),
    );
    let footage = state.footage.clone();
    let key = entry.key.clone();
    let here = tokio::task::spawn_blocking(move || footage.spans(&key, a, b))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))??;
    if here.iter().any(|s| s.start <= at && at < s.end) {
        return Ok(None);
    }
    let remote = cluster
        .remote_spans(&entry.key, a, b, crate::internal::identity_of(who))
        .await;
    let mut down = None;
    for r in remote {
        match r {
            crate::NodeFootage::Spans { node, spans }
                if spans.iter().any(|s| s.start <= at && at < s.end) =>
            {
                return Ok(Some(node));
            }
            other => {
                if let Some((node, start, end, reason)) = other.unavailable_part()
                    && start <= at
                    && at < end
                {
                    down = Some((node, reason));
                }
            }
        }
    }
    match down {
        // Held by a node that cannot be asked now: say so rather than "nothing recorded".
        Some((node, reason)) => Err(ApiError::NodeUnavailable(format!(
            "the footage of {} at {} is held by node {node}, which cannot be asked now: {reason}",
            entry.key,
            at.to_rfc3339()
        ))),
        None => Ok(None),
    }
}

#[cfg(feature = "gst")]
async fn render(
    state: &AppState,
    entry: &crate::StreamEntry,
    at: Option<Time90k>,
    span: tracing::Span,
) -> Result<Response, ApiError> {
    let jpeg = state.stills.still(&entry.key, at).instrument(span).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        jpeg,
    )
        .into_response())
}

#[cfg(not(feature = "gst"))]
async fn render(
    _state: &AppState,
    _entry: &crate::StreamEntry,
    _at: Option<Time90k>,
    _span: tracing::Span,
) -> Result<Response, ApiError> {
    Err(not_built())
}

#[cfg(not(feature = "gst"))]
fn not_built() -> ApiError {
    ApiError::NotImplemented(
        "snapshot.jpg decodes video with GStreamer: this Vigie was built without the \"gst\" feature"
            .into(),
    )
}

#[cfg(all(test, not(feature = "gst")))]
mod tests {
    use axum::response::IntoResponse;

    #[tokio::test]
    async fn without_gst_the_still_is_501_naming_the_feature() {
        let r = super::not_built().into_response();
        assert_eq!(r.status(), axum::http::StatusCode::NOT_IMPLEMENTED);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "not_implemented");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("built without the \"gst\" feature"), "{msg}");
    }
}

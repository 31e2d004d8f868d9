//! `GET /api/v1/cameras/{cam}/streams/{stream}/snapshot.jpg?at=T`: the picture shown at `T`
//! (RFC 3339; default: the latest) as a JPEG. Decoding needs the `gst` cargo feature; without it
//! the route answers 501 naming the feature. The still comes from the [`vigie_service::Stills`]
//! service (locally: `vigie_decode::still`).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
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
    let response = render(&state, entry, at, span).await?;
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

#[cfg(feature = "gst")]
async fn render(
    state: &AppState,
    entry: &crate::StreamEntry,
    at: Option<Time90k>,
    span: tracing::Span,
) -> Result<Response, ApiError> {
    use axum::http::header;
    use axum::response::IntoResponse;
    use tracing::Instrument;

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

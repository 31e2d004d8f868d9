//! `video.mp4?start=T&end=T&transcode=h264`: the H.264 fallback of playback, for browsers that
//! cannot decode the recorded codec (H.265). The same range as the untranscoded file (same
//! parameters, same 404/409), decoded and re-encoded by the server
//! ([`vigie_service::Transcodes`]) and **streamed** as a fragmented MP4 while it is encoded.
//!
//! What differs from the untranscoded answer (docs/API.md "H.264 fallback"): the length is not
//! known in advance (no `Content-Length`, chunked), so there is no `Range` (`Accept-Ranges:
//! none`; a `Range` header is ignored: 200 with the whole file), no `ETag` and no conditional
//! requests, `Cache-Control: no-store`; seeking is a new request from the new start. Each GET
//! holds one of the `[live] max_transcodes` slots until its body ends (503 + `Retry-After`
//! beyond); each GET is journaled (a new transcode each time). `HEAD` plans the range (404,
//! 409) without transcoding.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use vigie_core::{StreamKey, Time90k};
use vigie_footage::PlaybackRequest;
use vigie_store::GapPolicy;

use crate::{ApiError, AppState};

pub struct Request {
    pub cam: String,
    pub stream: String,
    pub key: StreamKey,
    pub start: Time90k,
    pub end: Time90k,
    pub gaps: GapPolicy,
}

pub async fn serve(
    state: &AppState,
    who: &crate::access::Principal,
    method: Method,
    r: Request,
) -> Result<Response, ApiError> {
    // The slot first: a refusal costs nothing (no index read).
    let slot = if method == Method::HEAD {
        None
    } else {
        Some(state.transcodes.acquire()?)
    };
    let req = PlaybackRequest {
        key: r.key.clone(),
        start: r.start,
        end: r.end,
        gaps: r.gaps,
        subtitles: None,
        on_behalf: None,
    };
    let transcodes = state.transcodes.clone();
    let plan = tokio::task::spawn_blocking(move || transcodes.plan(&req))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))??;
    let mut h = HeaderMap::new();
    let hv = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("invalid"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("none"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-vigie-transcode", HeaderValue::from_static("h264"));
    let f = |t: Time90k| t.to_timestamp().strftime("%Y%m%dT%H%M%SZ").to_string();
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    h.insert(
        header::CONTENT_DISPOSITION,
        hv(&format!(
            "inline; filename=\"{}_{}_{}_{}_h264.mp4\"",
            clean(&r.cam),
            clean(&r.stream),
            f(r.start),
            f(r.end)
        )),
    );
    if r.gaps == GapPolicy::Skip {
        let list: Vec<String> = plan
            .spans
            .iter()
            .map(|s| format!("{}/{}", s.start.to_rfc3339(), s.end.to_rfc3339()))
            .collect();
        let kind = if plan.spans.len() > 1 {
            "skipped"
        } else {
            "none"
        };
        h.insert(
            "x-vigie-gaps",
            hv(&format!("{kind}; spans={}", list.join(","))),
        );
    }
    let Some(slot) = slot else {
        return Ok((StatusCode::OK, h).into_response());
    };
    // Journaled before any byte is served, once per GET (each is a new transcode).
    crate::journal::record(
        state,
        vigie_audit::NewEntry::new(who.actor(), vigie_audit::Action::Playback)
            .camera(&r.cam, &r.stream)
            .range(r.start, r.end)
            .details(serde_json::json!({
                "transcode": "h264",
                "gaps": format!("{:?}", r.gaps),
                "ts": false,
            })),
    )
    .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let transcodes = state.transcodes.clone();
    let span = tracing::info_span!("video_transcode", camera = %r.cam, stream = %r.stream);
    tokio::task::spawn_blocking(move || {
        let _enter = span.enter();
        let _slot = slot; // held until the body ends
        let result = transcodes.run(&plan, &mut |chunk| tx.blocking_send(Ok(chunk)).is_ok());
        if let Err(e) = result {
            tracing::warn!(error = %e, "video.mp4 transcode failed; response cut");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((StatusCode::OK, h, Body::from_stream(stream)).into_response())
}

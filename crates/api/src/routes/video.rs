//! `GET|HEAD /api/v1/cameras/{cam}/streams/{stream}/video.mp4?start=T&end=T` (or
//! `duration=S`; optional `gaps=skip`, `ts=1`): the virtual progressive MP4 of a time range,
//! with RFC 9110 range and conditional requests (see docs/API.md "video.mp4").
//!
//! * `Accept-Ranges: bytes`; one `Range` → 206 + `Content-Range`; a range past the end → 416
//!   with `Content-Range: bytes */len`; several ranges (or a malformed header) → the whole file
//!   (200), as RFC 9110 allows a server to ignore `Range`.
//! * Strong `ETag`; `If-None-Match` → 304; `If-Range` with another tag (or a date) → 200 whole.
//! * The body is streamed from the segment files by a blocking reader feeding a small channel:
//!   at most a few 256 KiB chunks are in memory per response.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use vigie_core::{Duration90k, Time90k};
use vigie_store::GapPolicy;

use crate::{ApiError, AppState};
use vigie_footage::{PlaybackRequest, Prepared};

/// Longest range one request may ask for.
pub const MAX_RANGE_SECS: i64 = 24 * 3600;

#[derive(Debug, Deserialize)]
pub struct VideoQuery {
    start: Option<String>,
    end: Option<String>,
    /// Seconds, instead of `end`.
    duration: Option<String>,
    /// `skip` concatenates the spans of a range with gaps (default: 409).
    gaps: Option<String>,
    /// `1` adds the wall-clock subtitle track.
    ts: Option<String>,
    /// `h264`: the H.264 fallback, streamed (see [`super::video_transcode`]).
    transcode: Option<String>,
}

fn parse_query(q: &VideoQuery) -> Result<(Time90k, Time90k, GapPolicy, bool), ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let start = q
        .start
        .as_deref()
        .ok_or_else(|| bad("missing query parameter `start` (RFC 3339 time)".into()))?;
    let start = Time90k::parse_rfc3339(start).map_err(|e| bad(format!("`start`: {e}")))?;
    let end = match (&q.end, &q.duration) {
        (Some(_), Some(_)) => return Err(bad("give `end` or `duration`, not both".into())),
        (None, None) => {
            return Err(bad(
                "missing query parameter `end` (RFC 3339 time) or `duration` (seconds)".into(),
            ));
        }
        (Some(e), None) => Time90k::parse_rfc3339(e).map_err(|e| bad(format!("`end`: {e}")))?,
        (None, Some(d)) => {
            let secs: f64 = d
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite())
                .ok_or_else(|| bad(format!("`duration`: {d:?} is not a number of seconds")))?;
            if secs <= 0.0 {
                return Err(bad(format!("`duration` must be positive, not {d}")));
            }
            start + Duration90k((secs.min(1e9) * 90_000.0).round() as i64)
        }
    };
    if end <= start {
        return Err(bad(format!(
            "`end` ({}) must be after `start` ({})",
            end.to_rfc3339(),
            start.to_rfc3339()
        )));
    }
    if (end - start).0 > MAX_RANGE_SECS * vigie_core::TIME_UNITS_PER_SEC {
        return Err(bad(format!(
            "the range is longer than {MAX_RANGE_SECS} s; ask for it in parts"
        )));
    }
    let gaps = match q.gaps.as_deref() {
        None | Some("refuse") => GapPolicy::Refuse,
        Some("skip") => GapPolicy::Skip,
        Some(o) => return Err(bad(format!("`gaps` must be `skip` or `refuse`, not {o:?}"))),
    };
    let ts = match q.ts.as_deref() {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") => true,
        Some(o) => return Err(bad(format!("`ts` must be 0 or 1, not {o:?}"))),
    };
    Ok((start, end, gaps, ts))
}

/// What a `Range` header asks for, resolved against the length.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RangeAnswer {
    /// No (usable) range: the whole representation.
    Full,
    /// One satisfiable range `[start, end)`.
    Partial(u64, u64),
    Unsatisfiable,
}

/// Parses a `Range` header value (RFC 9110 §14.1.2) for a representation of `len` bytes. Several
/// ranges and syntax errors give [`RangeAnswer::Full`] (a server may ignore `Range`).
pub(crate) fn parse_range(value: &str, len: u64) -> RangeAnswer {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Full;
    };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    if a.is_empty() {
        // Suffix range: the last `b` bytes.
        return match num(b) {
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(n) if len > 0 => RangeAnswer::Partial(len.saturating_sub(n), len),
            Some(_) => RangeAnswer::Unsatisfiable,
            None => RangeAnswer::Full,
        };
    }
    let Some(first) = num(a) else {
        return RangeAnswer::Full;
    };
    let last = if b.is_empty() {
        None
    } else {
        match num(b) {
            Some(l) if l >= first => Some(l),
            _ => return RangeAnswer::Full,
        }
    };
    if first >= len {
        return RangeAnswer::Unsatisfiable;
    }
    let end = last.map_or(len, |l| l.saturating_add(1).min(len));
    RangeAnswer::Partial(first, end)
}

/// `If-None-Match`: does any listed tag match (weak comparison), or `*`?
fn none_match(value: &str, etag: &str) -> bool {
    value.split(',').map(str::trim).any(|t| {
        t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag.strip_prefix("W/").unwrap_or(etag)
    })
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn filename(cam: &str, stream: &str, start: Time90k, end: Time90k) -> String {
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
    format!(
        "{}_{}_{}_{}.mp4",
        clean(cam),
        clean(stream),
        f(start),
        f(end)
    )
}

pub async fn video(
    State(state): State<AppState>,
    who: crate::access::Principal,
    Path((cam, stream)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    query: Result<Query<VideoQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let entry = state.stream(&cam, &stream)?;
    let (start, end, gaps, ts) = parse_query(&query)?;
    match query.transcode.as_deref() {
        None | Some("") => {}
        Some("h264") if ts => {
            return Err(ApiError::BadRequest(
                "`ts=1` is not available with `transcode=h264`".into(),
            ));
        }
        Some("h264") => {
            let r = super::video_transcode::Request {
                cam: cam.clone(),
                stream: stream.clone(),
                key: entry.key.clone(),
                start,
                end,
                gaps,
            };
            return super::video_transcode::serve(&state, &who, method, r).await;
        }
        Some(o) => {
            return Err(ApiError::BadRequest(format!(
                "`transcode` must be `h264`, not {o:?}"
            )));
        }
    }
    let subtitles = if ts {
        Some(
            jiff::tz::TimeZone::get(&state.config.server.timezone)
                .map_err(|e| ApiError::Unavailable(format!("server.timezone: {e}")))?,
        )
    } else {
        None
    };
    let req = PlaybackRequest {
        key: entry.key.clone(),
        start,
        end,
        gaps,
        subtitles,
        // The user, for the journals of the nodes holding the footage (cluster).
        on_behalf: state.cluster.as_ref().and_then(|_| {
            serde_json::to_string(&crate::internal::CarriedIdentity {
                user: who.user.clone(),
                role: who.role,
                scope: who.scope.clone(),
                actor: who.actor(),
                request_id: hex::encode(rand::random::<[u8; 8]>()),
            })
            .ok()
        }),
    };
    let footage = state.footage.clone();
    let Prepared { mp4, etag, spans } = tokio::task::spawn_blocking(move || footage.prepare(&req))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))??;
    // Journaled before any byte is served; once per user and representation (a player's many
    // range requests for one video are one access).
    crate::journal::record_once(
        &state,
        format!("{}|{etag}", who.actor()),
        vigie_audit::NewEntry::new(who.actor(), vigie_audit::Action::Playback)
            .camera(&cam, &stream)
            .range(start, end)
            .details(serde_json::json!({ "etag": etag, "gaps": format!("{gaps:?}"), "ts": ts })),
    )
    .await?;

    let mut h = HeaderMap::new();
    let hv = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("invalid"));
    h.insert(header::ETAG, hv(&etag));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    if let Some(inm) = header_str(&headers, header::IF_NONE_MATCH)
        && none_match(inm, &etag)
    {
        return Ok((StatusCode::NOT_MODIFIED, h).into_response());
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    h.insert(
        header::CONTENT_DISPOSITION,
        hv(&format!(
            "inline; filename=\"{}\"",
            filename(&cam, &stream, start, end)
        )),
    );
    if gaps == GapPolicy::Skip {
        let list: Vec<String> = spans
            .iter()
            .map(|s| format!("{}/{}", s.start.to_rfc3339(), s.end.to_rfc3339()))
            .collect();
        let v = if spans.len() > 1 {
            format!("skipped; spans={}", list.join(","))
        } else {
            format!("none; spans={}", list.join(","))
        };
        h.insert("x-vigie-gaps", hv(&v));
    }
    let len = mp4.total_len;
    let range_applies = match header_str(&headers, header::IF_RANGE) {
        None => true,
        Some(tag) => tag.trim() == etag, // strong comparison; a date never matches
    };
    let answer = match header_str(&headers, header::RANGE) {
        Some(r) if range_applies => parse_range(r, len),
        _ => RangeAnswer::Full,
    };
    let (status, a, b) = match answer {
        RangeAnswer::Full => (StatusCode::OK, 0, len),
        RangeAnswer::Partial(a, b) => {
            h.insert(
                header::CONTENT_RANGE,
                hv(&format!("bytes {a}-{}/{len}", b - 1)),
            );
            (StatusCode::PARTIAL_CONTENT, a, b)
        }
        RangeAnswer::Unsatisfiable => {
            return Err(ApiError::RangeNotSatisfiable { total_len: len });
        }
    };
    h.insert(header::CONTENT_LENGTH, hv(&(b - a).to_string()));
    if method == Method::HEAD {
        return Ok((status, h).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let footage = state.footage.clone();
    tokio::task::spawn_blocking(move || {
        let r = footage.read(&mp4, a, b, &mut |chunk| tx.blocking_send(Ok(chunk)).is_ok());
        if let Err(e) = r {
            tracing::warn!(error = %e, "video.mp4: reading segment data failed; response cut");
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((status, h, Body::from_stream(stream)).into_response())
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_per_rfc_9110() {
        use RangeAnswer::*;
        assert_eq!(parse_range("bytes=0-99", 1000), Partial(0, 100));
        assert_eq!(parse_range("bytes=900-", 1000), Partial(900, 1000));
        assert_eq!(parse_range("bytes=900-5000", 1000), Partial(900, 1000));
        assert_eq!(parse_range("bytes=-100", 1000), Partial(900, 1000));
        assert_eq!(parse_range("bytes=-5000", 1000), Partial(0, 1000));
        assert_eq!(parse_range("bytes=999-999", 1000), Partial(999, 1000));
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-9", 1000), Full);
        assert_eq!(parse_range("bytes=5-1", 1000), Full);
        assert_eq!(parse_range("items=0-1", 1000), Full);
        assert_eq!(parse_range("bytes=x-1", 1000), Full);
        assert_eq!(parse_range("bytes=+1-2", 1000), Full);
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        assert!(none_match("\"a\"", "\"a\""));
        assert!(none_match("W/\"a\", \"b\"", "\"a\""));
        assert!(none_match("*", "\"a\""));
        assert!(!none_match("\"b\"", "\"a\""));
    }

    #[test]
    fn query_validation() {
        let q = |s: Option<&str>, e: Option<&str>, d: Option<&str>| VideoQuery {
            start: s.map(Into::into),
            end: e.map(Into::into),
            duration: d.map(Into::into),
            gaps: None,
            ts: None,
            transcode: None,
        };
        let t = "2026-11-28T21:00:00Z";
        let (a, b, _, _) = parse_query(&q(Some(t), None, Some("1.5"))).unwrap();
        assert_eq!((b - a).0, 135_000);
        for bad in [
            q(None, Some(t), None),
            q(Some(t), None, None),
            q(Some(t), Some(t), None),
            q(Some("yesterday"), Some(t), None),
            q(Some(t), None, Some("-3")),
            q(Some(t), None, Some("NaN")),
            q(Some(t), Some("2026-11-28T20:00:00Z"), None),
            q(Some(t), Some("2026-11-30T21:00:00Z"), None),
        ] {
            assert!(
                matches!(parse_query(&bad), Err(ApiError::BadRequest(_))),
                "{bad:?}"
            );
        }
    }
}

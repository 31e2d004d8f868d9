//! Evidence exports: `POST/GET /api/v1/exports`, `GET /api/v1/exports/{id}`,
//! `GET /api/v1/exports/{id}/package`, and the installation's public key at
//! `GET /api/v1/signing-key`.
//!
//! A multi-camera export (`streams: [{camera, stream?}, …]` instead of `camera` and `stream`, 2
//! to [`MAX_EXPORT_CAMERAS`]; without `stream`, the camera's main stream) makes one package with a master per camera: the caller's export
//! right is checked on every camera first (403 for any camera outside its scope, nothing
//! built), every camera is checked for footage, held and journaled (hold, creation, download)
//! one entry per camera. Listing, status and download need the right on every camera.
//!
//! Creating an export validates everything before writing anything (400 bad or missing fields,
//! end not after start, a range in the future or longer than 24 h; 404 unknown camera or stream,
//! or no recording in the range; 403 out of scope; 409 a codec change inside the range), then
//! places a legal hold on the range (journaled `HoldPlace`) and starts the background job
//! ([`vigie_export::jobs`]), answering 202 with the job. Downloads are journaled (`ExportDownload`).
//!
//! Limits ([`vigie_export::jobs::Exports::admit`], before the hold): an identical request (same
//! user, range, procedure, reason, requester and options) while its job is queued or running
//! answers 200 with that job (`"deduplicated": true`); too many jobs for the user or in total →
//! 429 with `Retry-After`; over the export quota or the free-space floor → 507. A deleted
//! package answers 410.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use vigie_audit::{Action, NewEntry};
use vigie_auth::Permission;
use vigie_core::Time90k;
use vigie_store::{GapPolicy, NewHold, PlaybackError};

use crate::access::Principal;
use crate::{ApiError, AppState};
use vigie_export::jobs::{
    Admit, AdmitRequest, Job, JobRecord, JobStream, MAX_EXPORT_SECS, Status, estimate_package_bytes,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    camera: Option<String>,
    stream: Option<String>,
    start: Option<String>,
    end: Option<String>,
    reason: Option<String>,
    procedure: Option<String>,
    requester: Option<String>,
    /// Add the wall-clock subtitle track.
    #[serde(default)]
    ts: bool,
    /// Derived JPEG stills at these instants (RFC 3339, inside the range; `gst` feature).
    #[serde(default)]
    stills: Vec<String>,
    /// A derived working copy with camera name, date and time burned in (`gst` feature).
    #[serde(default)]
    burn_in: bool,
    /// A multi-camera export: these streams over the same range, one package (instead of
    /// `camera` and `stream`).
    #[serde(default)]
    streams: Option<Vec<StreamRef>>,
    /// A cluster: footage held by a node that cannot be reached fails the request (`refuse`,
    /// the default: 409 naming the node) or is left out and listed in the manifest's
    /// `unavailable` (`skip`).
    #[serde(default)]
    unavailable: Option<String>,
}

/// One stream of a multi-camera export request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRef {
    camera: Option<String>,
    stream: Option<String>,
}

/// Most cameras in one multi-camera export.
pub const MAX_EXPORT_CAMERAS: usize = 16;

/// The (camera, stream) pairs a request asks for: `camera` + `stream`, or `streams` (2 to
/// [`MAX_EXPORT_CAMERAS`], all different; an entry without `stream` means the camera's main,
/// recorded, stream).
fn targets(
    req: &ExportRequest,
    config: &vigie_core::config::Config,
) -> Result<Vec<(String, String)>, ApiError> {
    let Some(list) = &req.streams else {
        return Ok(vec![(
            required("camera", "camera id", &req.camera)?,
            required("stream", "stream name", &req.stream)?,
        )]);
    };
    if req.camera.is_some() || req.stream.is_some() {
        return Err(ApiError::BadRequest(
            "give either `camera` and `stream` (one camera) or `streams` (several), not both"
                .into(),
        ));
    }
    if list.len() < 2 || list.len() > MAX_EXPORT_CAMERAS {
        return Err(ApiError::BadRequest(format!(
            "`streams` lists {} streams: a multi-camera export takes 2 to {MAX_EXPORT_CAMERAS} (use `camera` and `stream` for one)",
            list.len()
        )));
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let camera = required(&format!("streams[{i}].camera"), "camera id", &s.camera)?;
        let main = config
            .camera(&camera)
            .and_then(|c| c.record_stream())
            .map(|m| m.name.clone());
        let stream = match (&s.stream, main) {
            (None, Some(main)) => main,
            (given, _) => required(&format!("streams[{i}].stream"), "stream name", given)?,
        };
        if out.iter().any(|(c, st)| *c == camera && *st == stream) {
            return Err(ApiError::BadRequest(format!(
                "`streams` lists {camera}/{stream} twice"
            )));
        }
        out.push((camera, stream));
    }
    Ok(out)
}

/// Most derived stills per export.
const MAX_STILLS: usize = 20;

fn required(name: &str, what: &str, v: &Option<String>) -> Result<String, ApiError> {
    let v = v.as_deref().map(str::trim).unwrap_or_default();
    if v.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "`{name}` ({what}) is required for an evidence export"
        )));
    }
    if v.len() > 500 {
        return Err(ApiError::BadRequest(format!(
            "`{name}` is longer than 500 bytes"
        )));
    }
    Ok(v.to_owned())
}

pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    body: Result<Json<ExportRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(req) = body?;
    let targets = targets(&req, &state.config)?;
    let multi = req.streams.is_some();
    // The caller's rights on every camera before anything else: a scoped user asking for one
    // camera outside its scope gets 403 and nothing is built, held or journaled as done.
    for (camera, _) in &targets {
        who.require(&state, Permission::Export, Some(camera))?;
    }
    let mut keys = Vec::with_capacity(targets.len());
    for (camera, stream) in &targets {
        keys.push(state.stream(camera, stream)?.key.clone());
    }
    let start_s = required("start", "RFC 3339 time", &req.start)?;
    let end_s = required("end", "RFC 3339 time", &req.end)?;
    let start = Time90k::parse_rfc3339(&start_s)
        .map_err(|e| ApiError::BadRequest(format!("`start`: {e}")))?;
    let end =
        Time90k::parse_rfc3339(&end_s).map_err(|e| ApiError::BadRequest(format!("`end`: {e}")))?;
    if end <= start {
        return Err(ApiError::BadRequest(format!(
            "`end` ({}) must be after `start` ({})",
            end.to_rfc3339(),
            start.to_rfc3339()
        )));
    }
    let now = state.clock.now();
    if end > now {
        return Err(ApiError::BadRequest(format!(
            "the range is in the future: `end` ({}) is after now ({}); an export covers recorded footage only",
            end.to_rfc3339(),
            now.to_rfc3339()
        )));
    }
    if (end - start).0 > MAX_EXPORT_SECS * vigie_core::TIME_UNITS_PER_SEC {
        return Err(ApiError::BadRequest(format!(
            "the range is longer than {MAX_EXPORT_SECS} s; export it in parts"
        )));
    }
    // The export's range goes under a legal hold: the rule of every hold applies.
    super::holds::check_hold_range(&state, start, end)?;
    let procedure = required("procedure", "judicial procedure number", &req.procedure)?;
    let reason = required("reason", "reason of the export", &req.reason)?;
    let requester = required("requester", "who asked for the footage", &req.requester)?;
    if req.stills.len() > MAX_STILLS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_STILLS} `stills` per export"
        )));
    }
    let mut stills_90k = Vec::new();
    for s in &req.stills {
        let t = Time90k::parse_rfc3339(s)
            .map_err(|e| ApiError::BadRequest(format!("`stills`: {s:?}: {e}")))?;
        if t < start || t >= end {
            return Err(ApiError::BadRequest(format!(
                "`stills`: {s} is outside the exported range"
            )));
        }
        stills_90k.push(t.0);
    }
    if !stills_90k.is_empty() && !cfg!(feature = "gst") {
        return Err(ApiError::NotImplemented(
            "derived stills need Vigie built with the `gst` cargo feature (GStreamer)".into(),
        ));
    }

    if multi && (req.burn_in || !stills_90k.is_empty()) {
        return Err(ApiError::BadRequest(
            "`stills` and `burn_in` are for single-camera exports: export the camera alone for its derived copies".into(),
        ));
    }
    if req.burn_in && !cfg!(feature = "gst") {
        return Err(ApiError::NotImplemented(
            "the burned-in copy (`burn_in`) needs Vigie built with the `gst` cargo feature (GStreamer)"
                .into(),
        ));
    }

    let skip_unavailable = match req.unavailable.as_deref() {
        None | Some("refuse") => false,
        Some("skip") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "`unavailable` must be \"refuse\" or \"skip\", not {other:?}"
            )));
        }
    };
    // A cluster: the footage other nodes hold of each camera (bytes estimated for the quota).
    let mut remote_estimate_bytes = 0u64;
    let mut held_elsewhere = vec![false; keys.len()];
    if state.cluster.is_some() {
        for (i, key) in keys.iter().enumerate() {
            let (held, bytes) =
                cluster_cover(&state, &who, key, start, end, skip_unavailable).await?;
            held_elsewhere[i] = held;
            remote_estimate_bytes = remote_estimate_bytes.saturating_add(bytes);
        }
    }

    // Something to export, for every camera? (one index scan each; nothing written yet)
    for (key, held_elsewhere) in keys.iter().zip(&held_elsewhere) {
        let footage = state.footage.clone();
        let k2 = key.clone();
        let check =
            tokio::task::spawn_blocking(move || footage.check(&k2, start, end, GapPolicy::Skip))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
        match check {
            Ok(()) => {}
            Err(PlaybackError::NoRecording) if *held_elsewhere => {}
            Err(PlaybackError::NoRecording) => {
                return Err(ApiError::NotFound(format!(
                    "no recording of {key} between {} and {}",
                    start.to_rfc3339(),
                    end.to_rfc3339()
                )));
            }
            Err(PlaybackError::Store(e)) => return Err(ApiError::Store(e)),
            Err(e @ PlaybackError::CodecChange { .. }) | Err(e @ PlaybackError::Gaps { .. }) => {
                let message = format!("{key}: {e}");
                let spans = match e {
                    PlaybackError::CodecChange { ranges } => ranges,
                    PlaybackError::Gaps { spans } => spans,
                    _ => Vec::new(),
                };
                return Err(ApiError::Conflict { message, spans });
            }
        }
    }

    // The limits, before anything is written: an identical request under way returns its job;
    // job counts, the quota and the free-space floor are checked and a place reserved.
    let (burn_in, stills) = (req.burn_in, stills_90k.len());
    let mut estimate_bytes = remote_estimate_bytes;
    for key in &keys {
        let footage = state.footage.clone();
        let k2 = key.clone();
        estimate_bytes += tokio::task::spawn_blocking(move || {
            footage
                .segments(&k2, start, end)
                .map(|segs| estimate_package_bytes(&segs, start, end, burn_in, stills))
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    }
    let key = keys[0].clone();
    let dedupe_key = if multi {
        let list: Vec<[&str; 2]> = keys
            .iter()
            .map(|k| [k.camera.as_str(), k.stream.as_str()])
            .collect();
        serde_json::to_string(&json!([
            who.user,
            list,
            start.0,
            end.0,
            procedure,
            reason,
            requester,
            req.ts,
            skip_unavailable
        ]))
    } else {
        serde_json::to_string(&json!([
            who.user,
            key.camera,
            key.stream,
            start.0,
            end.0,
            procedure,
            reason,
            requester,
            req.ts,
            stills_90k,
            req.burn_in,
            skip_unavailable
        ]))
    }
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let ask = AdmitRequest {
        user: who.user.clone(),
        dedupe_key: dedupe_key.clone(),
        estimate_bytes,
    };
    let exports = state.exports.clone();
    let admitted = tokio::task::spawn_blocking(move || exports.admit(&ask))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let admission = match admitted {
        Ok(Admit::New(a)) => a,
        Ok(Admit::Existing(job)) => {
            let mut body = job.to_json();
            body["deduplicated"] = json!(true);
            return Ok((StatusCode::OK, Json(body)));
        }
        Err(e) => {
            tracing::warn!(camera = %key.camera, stream = %key.stream, user = %who.user, error = %e, "export refused");
            return Err(e.into());
        }
    };

    // The range goes under legal hold before anything else, on every camera.
    let id = vigie_export::new_export_id(now.to_timestamp().as_second());
    let actor = who.actor();
    let mut holds = Vec::with_capacity(keys.len());
    for key in &keys {
        let new = NewHold {
            key: key.clone(),
            start,
            end,
            procedure: procedure.clone(),
            reason: format!("export {id}: {reason}"),
            created_by: actor.clone(),
        };
        let store = state.store.clone();
        let hold = tokio::task::spawn_blocking(move || store.place_hold(new))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        crate::journal::record(
            &state,
            NewEntry::new(actor.clone(), Action::HoldPlace)
                .camera(&key.camera, &key.stream)
                .range(start, end)
                .procedure(procedure.clone())
                .reason(hold.reason.clone())
                .details(json!({ "hold_id": hold.id, "export_id": id, "requester": requester })),
        )
        .await?;
        holds.push(hold.id);
    }
    let streams = if multi {
        keys.iter()
            .zip(&holds)
            .map(|(k, h)| JobStream {
                camera: k.camera.clone(),
                stream: k.stream.clone(),
                hold_id: Some(*h),
                sha256: None,
                mp4_bytes: None,
            })
            .collect()
    } else {
        Vec::new()
    };

    // The user, for the journals of the nodes holding the footage (cluster); the request id
    // names the export there.
    let on_behalf = state.cluster.as_ref().and_then(|_| {
        let mut who = crate::internal::identity_of(&who);
        who.request_id = format!("export-{id}");
        serde_json::to_string(&who).ok()
    });
    let job = state.exports.create(
        admission,
        JobRecord {
            id,
            status: Status::Queued,
            error: None,
            camera: key.camera.clone(),
            stream: key.stream.clone(),
            start_90k: start.0,
            end_90k: end.0,
            reason,
            procedure,
            requester,
            operator: actor,
            user: who.user.clone(),
            ts: req.ts,
            // The user, for the journals of the nodes holding the footage (cluster).
            on_behalf,
            skip_unavailable,
            stills_90k,
            burn_in: req.burn_in,
            created_90k: now.0,
            finished_90k: None,
            hold_id: holds.first().copied(),
            bytes_total: 0,
            sha256: None,
            mp4_bytes: None,
            package_sha256: None,
            package_bytes: None,
            manifest: None,
            estimate_bytes,
            dedupe_key,
            package_deleted: None,
            streams,
        },
    )?;
    let body = job.to_json();
    state.exports.start(job);
    Ok((StatusCode::ACCEPTED, Json(body)))
}

/// Bytes a second assumed for footage another node holds, to count an export against the
/// quota before it is planned (the other nodes' `/spans` give no sizes; 8 Mbit/s is above the
/// usual main stream). The job checks the free space again once the size is known.
const REMOTE_ESTIMATE_BYTES_PER_S: u64 = 1_000_000;

/// A cluster: whether other nodes hold footage of `key` in `[start, end)`, and an estimate of
/// its size. Footage only a node that cannot be reached holds refuses the request (409 naming
/// the node) unless `skip_unavailable`.
async fn cluster_cover(
    state: &AppState,
    who: &Principal,
    key: &vigie_core::StreamKey,
    start: Time90k,
    end: Time90k,
    skip_unavailable: bool,
) -> Result<(bool, u64), ApiError> {
    let Some(cluster) = &state.cluster else {
        return Ok((false, 0));
    };
    let footage = state.footage.clone();
    let k2 = key.clone();
    let local = tokio::task::spawn_blocking(move || footage.spans(&k2, start, end))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let remote = cluster
        .remote_spans(key, start, end, crate::internal::identity_of(who))
        .await;
    let mut others: Vec<(Time90k, Time90k)> = Vec::new();
    let mut down = Vec::new();
    for r in remote {
        match r {
            crate::NodeFootage::Spans { spans, .. } => {
                others.extend(spans.iter().map(|s| (s.start, s.end)));
            }
            other => down.extend(other.unavailable_part()),
        }
    }
    let all = vigie_store::spans::merge_ranges(
        local
            .iter()
            .map(|s| (s.start, s.end))
            .chain(others.iter().copied()),
        start,
        end,
    );
    let mut missing = Vec::new();
    for (node, a, b, reason) in &down {
        let (a, b) = ((*a).max(start), (*b).min(end));
        if a < b && !vigie_store::gaps(&all, a, b).is_empty() {
            missing.push(format!(
                "{node} ({reason}) from {} to {}",
                a.to_rfc3339(),
                b.to_rfc3339()
            ));
        }
    }
    if !missing.is_empty() && !skip_unavailable {
        return Err(ApiError::Conflict {
            message: format!(
                "{key}: part of the range is held by nodes that cannot be reached now: {} (ask again later, or pass \"unavailable\": \"skip\" to export what is reachable, the rest listed in the manifest)",
                missing.join(", ")
            ),
            spans: all,
        });
    }
    // What the others hold and this node does not.
    let here = vigie_store::spans::merge_ranges(local.iter().map(|s| (s.start, s.end)), start, end);
    let elsewhere_90k: i64 = vigie_store::spans::merge_ranges(others.iter().copied(), start, end)
        .iter()
        .flat_map(|s| vigie_store::gaps(&here, s.start, s.end))
        .map(|(a, b)| (b - a).0)
        .sum();
    let bytes = (elsewhere_90k.max(0) as u64 / vigie_core::TIME_UNITS_PER_SEC as u64)
        .saturating_add(1)
        .saturating_mul(REMOTE_ESTIMATE_BYTES_PER_S);
    Ok((
        !others.is_empty(),
        if others.is_empty() { 0 } else { bytes },
    ))
}

pub async fn list(State(state): State<AppState>, who: Principal) -> Result<Json<Value>, ApiError> {
    let jobs: Vec<Value> = state
        .exports
        .list()
        .iter()
        .filter(|j| {
            j.record().cameras().iter().all(|c| {
                who.require(&state, Permission::ViewEvidence, Some(c))
                    .is_ok()
            })
        })
        .map(|j| j.to_json())
        .collect();
    Ok(Json(json!({ "exports": jobs })))
}

fn find(state: &AppState, id: &str) -> Result<std::sync::Arc<Job>, ApiError> {
    state
        .exports
        .get(id)
        .ok_or_else(|| ApiError::NotFound(format!("no export {id:?}")))
}

pub async fn get_one(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = find(&state, &id)?;
    for c in job.record().cameras() {
        who.require(&state, Permission::ViewEvidence, Some(c))?;
    }
    Ok(Json(job.to_json()))
}

pub async fn package(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = find(&state, &id)?;
    let rec = job.record();
    for c in rec.cameras() {
        who.require(&state, Permission::Export, Some(c))?;
    }
    if let Some(d) = &rec.package_deleted {
        return Err(ApiError::Gone(format!(
            "the package of export {id} was deleted on {} ({}); the journal and the register keep its hashes",
            Time90k(d.at_90k).to_rfc3339(),
            d.reason
        )));
    }
    match rec.status {
        Status::Done => {}
        Status::Failed => {
            return Err(ApiError::Conflict {
                message: format!(
                    "export {id} failed, there is no package: {}",
                    rec.error.as_deref().unwrap_or("unknown error")
                ),
                spans: Vec::new(),
            });
        }
        Status::Queued | Status::Running => {
            return Err(ApiError::Conflict {
                message: format!("export {id} is not finished yet ({:?})", rec.status),
                spans: Vec::new(),
            });
        }
    }
    let path = state.exports.package_path(&id);
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?
        .len();
    // Journaled per camera: a multi-camera package is a copy of each camera's footage.
    for c in rec.per_camera() {
        crate::journal::record(
            &state,
            NewEntry::new(who.actor(), Action::ExportDownload)
                .camera(&c.camera, &c.stream)
                .range(Time90k(c.start_90k), Time90k(c.end_90k))
                .procedure(c.procedure.clone())
                .reason(c.reason.clone())
                .details(json!({
                    "export_id": c.id,
                    "requester": c.requester,
                    "sha256": c.sha256,
                    "package_sha256": c.package_sha256,
                    "bytes": len,
                })),
        )
        .await?;
    }
    let stream = futures::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let hv = |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("invalid"));
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    h.insert(header::CONTENT_LENGTH, hv(len.to_string()));
    h.insert(
        header::CONTENT_DISPOSITION,
        hv(format!("attachment; filename=\"vigie-export-{id}.zip\"")),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(sha) = &rec.package_sha256 {
        h.insert("x-vigie-package-sha256", hv(sha.clone()));
    }
    Ok(resp)
}

/// The installation's public key (public: anyone may check a package against it).
pub async fn signing_key(State(state): State<AppState>) -> Json<Value> {
    let k = state.exports.signing_key();
    Json(json!({
        "algorithm": "Ed25519",
        "public_key_hex": k.public_hex(),
        "public_key_pem": k.public_pem(),
    }))
}

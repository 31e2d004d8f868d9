//! The access journal and the legal register over HTTP:
//! `GET /api/v1/audit` (filters: `start`, `end`, `actor`, `camera`, `action`, `after`, `limit`,
//! `format=csv`), `GET /api/v1/audit/verify`, and `GET /api/v1/register.csv?start=&end=` (the
//! legal register: recordings per camera and day, destructions, extractions, holds, quality).
//!
//! Users whose scope is limited see only entries about cameras in their scope; entries about no
//! camera (logins, configuration) are shown to users with an unlimited scope only.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use vigie_audit::{Action, Entry};
use vigie_auth::{Communes, Permission};
use vigie_core::{Duration90k, Time90k};

use crate::access::Principal;
use crate::csvsafe::SafeCsv;
use crate::{ApiError, AppState};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    start: Option<String>,
    end: Option<String>,
    actor: Option<String>,
    camera: Option<String>,
    action: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
    format: Option<String>,
}

fn parse_time(name: &str, v: &Option<String>) -> Result<Option<Time90k>, ApiError> {
    v.as_deref()
        .map(|s| {
            Time90k::parse_rfc3339(s).map_err(|e| ApiError::BadRequest(format!("`{name}`: {e}")))
        })
        .transpose()
}

fn sees_everything(who: &Principal) -> bool {
    matches!(who.scope.communes, Communes::All) && who.scope.cameras.is_none()
}

fn visible(state: &AppState, who: &Principal, e: &Entry) -> bool {
    match &e.camera {
        None => sees_everything(who),
        Some(cam) => match state.config.camera(cam) {
            Some(c) => who.can(Permission::Audit, Some((c.id.as_str(), c.commune.as_str()))),
            // A camera since removed from the configuration: only for unlimited scopes.
            None => sees_everything(who),
        },
    }
}

fn entry_json(e: &Entry) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    v["time"] = json!(e.time().to_rfc3339());
    if let Some(s) = e.start_90k {
        v["start"] = json!(Time90k(s).to_rfc3339());
    }
    if let Some(s) = e.end_90k {
        v["end"] = json!(Time90k(s).to_rfc3339());
    }
    v
}

async fn query_journal(state: &AppState, q: vigie_audit::Query) -> Result<Vec<Entry>, ApiError> {
    let journal = state.journal.clone();
    tokio::task::spawn_blocking(move || journal.query(&q))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Unavailable(format!("access journal: {e}")))
}

pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let action = match q.action.as_deref() {
        None => None,
        Some(a) => Some(
            Action::parse(a)
                .ok_or_else(|| ApiError::BadRequest(format!("unknown action {a:?}")))?,
        ),
    };
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::BadRequest(
            "`limit` must be within 1..=10000".into(),
        ));
    }
    let (start, end) = (parse_time("start", &q.start)?, parse_time("end", &q.end)?);
    if let (Some(s), Some(e)) = (start, end)
        && e <= s
    {
        return Err(ApiError::BadRequest("`end` must be after `start`".into()));
    }
    let jq = vigie_audit::Query {
        start,
        end,
        actor: q.actor.clone(),
        camera: q.camera.clone(),
        action,
        after_seq: q.after,
        limit: Some(limit),
    };
    let entries: Vec<Entry> = query_journal(&state, jq)
        .await?
        .into_iter()
        .filter(|e| visible(&state, &who, e))
        .collect();
    match q.format.as_deref() {
        None | Some("json") => {
            let next = entries.last().map(|e| e.seq);
            Ok(Json(json!({ "entries": entries.iter().map(entry_json).collect::<Vec<_>>(), "next_after": next })).into_response())
        }
        Some("csv") => {
            let mut w = SafeCsv::from_writer(Vec::new());
            let _ = w.write_record([
                "seq",
                "time",
                "actor",
                "action",
                "camera",
                "stream",
                "start",
                "end",
                "reason",
                "procedure",
                "remote_addr",
                "details",
                "prev_hash",
                "hash",
            ]);
            for e in &entries {
                let _ = w.write_record([
                    e.seq.to_string(),
                    e.time().to_rfc3339(),
                    e.actor.clone(),
                    e.action.as_str().to_owned(),
                    e.camera.clone().unwrap_or_default(),
                    e.stream.clone().unwrap_or_default(),
                    e.start_90k
                        .map(|t| Time90k(t).to_rfc3339())
                        .unwrap_or_default(),
                    e.end_90k
                        .map(|t| Time90k(t).to_rfc3339())
                        .unwrap_or_default(),
                    e.reason.clone().unwrap_or_default(),
                    e.procedure.clone().unwrap_or_default(),
                    e.remote_addr.clone().unwrap_or_default(),
                    if e.details.is_null() {
                        String::new()
                    } else {
                        e.details.to_string()
                    },
                    e.prev_hash.clone(),
                    e.hash.clone(),
                ]);
            }
            Ok(csv_response(w, "vigie-journal.csv"))
        }
        Some(other) => Err(ApiError::BadRequest(format!(
            "`format` must be json or csv, not {other:?}"
        ))),
    }
}

fn csv_response(w: SafeCsv<Vec<u8>>, filename: &str) -> Response {
    let body = w.into_inner().unwrap_or_default();
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

pub async fn verify(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let journal = state.journal.clone();
    let r = tokio::task::spawn_blocking(move || journal.verify())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Unavailable(format!("access journal: {e}")))?;
    Ok(Json(json!({
        "ok": r.ok(),
        "entries": r.entries,
        "first_seq": r.first_seq,
        "first_broken": r.first_broken.as_ref().map(|(seq, why)| json!({ "seq": seq, "problem": why })),
        // Tamper alarms are never cleared: once raised, `ok` stays false.
        "alarms": r.alarms.iter().map(|a| json!({
            "id": a.id,
            "time": Time90k(a.time_90k).to_rfc3339(),
            "entry_seq": a.entry_seq,
            "problem": a.problem,
        })).collect::<Vec<_>>(),
        "head_signed_by": r.head_key,
    })))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RegisterQuery {
    start: Option<String>,
    end: Option<String>,
}

/// The legal register as CSV, one row per fact, `section` saying which kind. Streamed: rows
/// are produced on a blocking thread (recordings day by day from the index, facts one by one
/// from the journal) into a small bounded channel, so memory stays bounded whatever the window.
pub async fn register(
    State(state): State<AppState>,
    who: Principal,
    q: Result<Query<RegisterQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let now = state.clock.now();
    let end = parse_time("end", &q.end)?.unwrap_or(now);
    let start = parse_time("start", &q.start)?.unwrap_or(end - Duration90k::from_secs(31 * 86_400));
    if end <= start {
        return Err(ApiError::BadRequest("`end` must be after `start`".into()));
    }
    // Chunks of about 64 KiB, at most 4 in flight.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut out = SafeCsv::from_writer(ChunkSender {
            buf: Vec::with_capacity(REGISTER_CHUNK_BYTES),
            tx: tx.clone(),
        });
        let done = write_register(&state, &who, start, end, &mut out)
            .and_then(|()| out.flush().map_err(|e| e.to_string()));
        if let Err(e) = done {
            // Headers are sent: the stream ends with an error (the client sees a cut body).
            tracing::debug!(error = %e, "legal register: stopped");
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"vigie-register.csv\"".to_owned(),
            ),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

const REGISTER_CHUNK_BYTES: usize = 64 << 10;

/// Where the register's CSV goes: chunks of [`REGISTER_CHUNK_BYTES`] sent to the response
/// body, waiting (bounded channel) while the client is slow; an error once it went away.
struct ChunkSender {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
}

impl ChunkSender {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(REGISTER_CHUNK_BYTES));
        self.tx
            .blocking_send(Ok(bytes::Bytes::from(chunk)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= REGISTER_CHUNK_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

type RegisterOut = SafeCsv<ChunkSender>;

fn row<const N: usize>(out: &mut RegisterOut, cells: [String; N]) -> Result<(), String> {
    out.write_record(cells).map_err(|e| e.to_string())
}

/// Start of the UTC day after `t`.
fn next_utc_day(t: Time90k) -> Time90k {
    const DAY_90K: i64 = 86_400 * vigie_core::TIME_UNITS_PER_SEC;
    Time90k((t.0.div_euclid(DAY_90K) + 1) * DAY_90K)
}

fn write_register(
    state: &AppState,
    who: &Principal,
    start: Time90k,
    end: Time90k,
    out: &mut RegisterOut,
) -> Result<(), String> {
    row(
        out,
        [
            "section",
            "camera",
            "stream",
            "commune",
            "start",
            "end",
            "when",
            "actor",
            "requester",
            "procedure",
            "reason",
            "detail",
        ]
        .map(str::to_owned),
    )?;
    // Recordings per camera and (UTC) day, from the index, one day of segments at a time.
    for s in state.streams.iter() {
        let Some(cam) = state.config.camera(&s.key.camera) else {
            continue;
        };
        if !who.can(
            Permission::Audit,
            Some((cam.id.as_str(), cam.commune.as_str())),
        ) {
            continue;
        }
        let mut a = start;
        while a < end {
            let b = next_utc_day(a).min(end);
            let segs = state
                .footage
                .segments(&s.key, a, b)
                .map_err(|e| e.to_string())?;
            let mut per_day: BTreeMap<String, (f64, u64, Time90k, Time90k)> = BTreeMap::new();
            // A segment belongs to the day it starts in; the first day also takes those that
            // started before the window.
            for seg in segs.iter().filter(|seg| seg.start >= a || a == start) {
                let day = seg.start.to_rfc3339()[..10].to_owned();
                let d = per_day.entry(day).or_insert((0.0, 0, seg.start, seg.end()));
                d.0 += Duration90k(seg.duration_90k).as_secs_f64();
                d.1 += seg.bytes;
                d.2 = d.2.min(seg.start);
                d.3 = d.3.max(seg.end());
            }
            for (day, (secs, bytes, first, last)) in per_day {
                row(
                    out,
                    [
                        "recording".to_owned(),
                        cam.id.clone(),
                        s.key.stream.clone(),
                        cam.commune.clone(),
                        first.to_rfc3339(),
                        last.to_rfc3339(),
                        day,
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        format!(
                            "recorded {secs:.0} s, {bytes} bytes, retention {} days",
                            state.config.retention_days(cam)
                        ),
                    ],
                )?;
            }
            a = b;
        }
    }
    // The privacy masks each camera has now (CSI L251-3), one row per camera with masks.
    for cam in &state.config.cameras {
        if cam.masks.is_empty()
            || !who.can(
                Permission::Audit,
                Some((cam.id.as_str(), cam.commune.as_str())),
            )
        {
            continue;
        }
        let m = crate::masks::camera_json(cam, &state.masks);
        row(
            out,
            [
                "privacy-masks".to_owned(),
                cam.id.clone(),
                String::new(),
                cam.commune.clone(),
                String::new(),
                String::new(),
                state.clock.now().to_rfc3339(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                format!(
                    "{} mask(s): {}; hash {}; confirmed on camera: {}",
                    cam.masks.len(),
                    cam.masks
                        .iter()
                        .map(|m| m.name.trim())
                        .collect::<Vec<_>>()
                        .join(" | "),
                    vigie_core::masks::hash(&cam.masks),
                    match m["confirmed_on_camera"].as_bool() {
                        Some(true) => "yes",
                        Some(false) => "no",
                        None => "not checked",
                    }
                ),
            ],
        )?;
    }
    // Facts from the journal, read lazily.
    let jq = vigie_audit::Query {
        start: Some(start),
        end: Some(end),
        ..Default::default()
    };
    for e in state.journal.scan(&jq).map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        if !visible(state, who, &e) {
            continue;
        }
        let section = match e.action {
            Action::RetentionDelete => "destruction",
            Action::ExportCreate => "extraction",
            Action::ExportDownload => "extraction-download",
            Action::ExportDelete => "extraction-deleted",
            Action::HoldPlace => "hold",
            Action::HoldRelease => "hold-release",
            Action::QualityAlert => "below-quality-floor",
            Action::QualityClear => "quality-floor-restored",
            Action::RecordingBlocked => "recording-blocked",
            Action::TamperAlarm => "journal-tamper-alarm",
            Action::MasksChanged => "privacy-masks-changed",
            _ => continue,
        };
        let commune = e
            .camera
            .as_deref()
            .and_then(|c| state.config.camera(c))
            .map(|c| c.commune.clone())
            .unwrap_or_default();
        let detail = match e.action {
            Action::ExportCreate | Action::ExportDownload | Action::ExportDelete => {
                format!("sha256={}", e.details["sha256"].as_str().unwrap_or(""))
            }
            _ if e.details.is_null() => String::new(),
            _ => e.details.to_string(),
        };
        row(
            out,
            [
                section.to_owned(),
                e.camera.clone().unwrap_or_default(),
                e.stream.clone().unwrap_or_default(),
                commune,
                e.start_90k
                    .map(|t| Time90k(t).to_rfc3339())
                    .unwrap_or_default(),
                e.end_90k
                    .map(|t| Time90k(t).to_rfc3339())
                    .unwrap_or_default(),
                e.time().to_rfc3339(),
                e.actor.clone(),
                e.details["requester"].as_str().unwrap_or("").to_owned(),
                e.procedure.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                detail,
            ],
        )?;
    }
    Ok(())
}

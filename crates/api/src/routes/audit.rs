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
    /// Single node: the last sequence number seen. Cluster: the cursor `next_after` returned
    /// (`node:seq,…`); a bare number is this node's own sequence number.
    after: Option<String>,
    limit: Option<usize>,
    format: Option<String>,
    /// `local=1`: only this node's journal (in a cluster).
    local: Option<String>,
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

pub(super) fn visible(state: &AppState, who: &Principal, e: &Entry) -> bool {
    match &e.camera {
        None => sees_everything(who),
        Some(cam) => match state.config.camera(cam) {
            Some(c) => who.can(Permission::Audit, Some((c.id.as_str(), c.commune.as_str()))),
            // A camera since removed from the configuration: only for unlimited scopes.
            None => sees_everything(who),
        },
    }
}

pub(super) fn entry_json(e: &Entry) -> Value {
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

pub(super) async fn query_journal(
    state: &AppState,
    q: vigie_audit::Query,
) -> Result<Vec<Entry>, ApiError> {
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
    if !matches!(q.format.as_deref(), None | Some("json") | Some("csv")) {
        return Err(ApiError::BadRequest(format!(
            "`format` must be json or csv, not {:?}",
            q.format.as_deref().unwrap_or_default()
        )));
    }
    let local = match q.local.as_deref() {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "`local` must be 0 or 1, not {other:?}"
            )));
        }
    };
    let filters = super::audit_cluster::Filters {
        start,
        end,
        actor: q.actor.clone(),
        camera: q.camera.clone(),
        action,
        limit,
    };
    if let Some(cluster) = state.cluster.clone()
        && !local
    {
        let cursor = super::audit_cluster::Cursor::parse(q.after.as_deref(), cluster.node())?;
        let merged =
            super::audit_cluster::merged_page(&state, &cluster, &who, &filters, cursor).await?;
        return Ok(super::audit_cluster::answer(
            merged,
            q.format.as_deref() == Some("csv"),
        ));
    }
    let after = q
        .after
        .as_deref()
        .map(|a| {
            a.parse::<u64>().map_err(|_| {
                ApiError::BadRequest(format!("`after` must be a sequence number, not {a:?}"))
            })
        })
        .transpose()?;
    let jq = vigie_audit::Query {
        start,
        end,
        actor: q.actor.clone(),
        camera: q.camera.clone(),
        action,
        after_seq: after,
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
        _ => {
            let mut w = SafeCsv::from_writer(Vec::new());
            let _ = w.write_record(CSV_HEADER);
            for e in &entries {
                let _ = w.write_record(csv_row(e));
            }
            Ok(csv_response(w, "vigie-journal.csv"))
        }
    }
}

pub(super) const CSV_HEADER: [&str; 14] = [
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
];

/// One entry as a row of the journal's CSV (columns [`CSV_HEADER`]).
pub(super) fn csv_row(e: &Entry) -> [String; 14] {
    [
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
    ]
}

pub(super) fn csv_response(w: SafeCsv<Vec<u8>>, filename: &str) -> Response {
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
    verify_report(&state).await.map(Json)
}

/// This node's journal verified (chain, signed head, purges, alarms), as JSON.
pub(super) async fn verify_report(state: &AppState) -> Result<Value, ApiError> {
    let journal = state.journal.clone();
    let r = tokio::task::spawn_blocking(move || journal.verify())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Unavailable(format!("access journal: {e}")))?;
    Ok(json!({
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
    }))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RegisterQuery {
    start: Option<String>,
    end: Option<String>,
    /// `local=1`: only this node's journal facts and footage (in a cluster).
    local: Option<String>,
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
    let local = matches!(q.local.as_deref(), Some("1") | Some("true"));
    // In a cluster, every node's journal facts (the first page of each asked now, so that the
    // nodes that cannot be asked are known before the answer starts).
    let mut cluster = match (&state.cluster, local) {
        (Some(c), false) => {
            let filters = super::audit_cluster::Filters {
                start: Some(start),
                end: Some(end),
                actor: None,
                camera: None,
                action: None,
                limit: 1,
            };
            let (sources, unavailable) =
                super::audit_cluster::register_sources(c, &who, &filters, &FACT_ACTIONS).await;
            Some(ClusterFacts {
                cluster: c.clone(),
                me: c.node().to_owned(),
                rt: tokio::runtime::Handle::current(),
                who: super::audit_cluster::carried(&who),
                filters,
                sources,
                unavailable,
            })
        }
        _ => None,
    };
    let unavailable_header = cluster
        .as_ref()
        .map(|c| {
            c.unavailable
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .filter(|s| !s.is_empty());
    // Chunks of about 64 KiB, at most 4 in flight.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut out = SafeCsv::from_writer(ChunkSender {
            buf: Vec::with_capacity(REGISTER_CHUNK_BYTES),
            tx: tx.clone(),
        });
        let done = write_register(&state, &who, start, end, cluster.as_mut(), &mut out)
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
    let mut resp = (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"vigie-register.csv\"".to_owned(),
            ),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response();
    if let Some(v) = unavailable_header.and_then(|v| header::HeaderValue::from_str(&v).ok()) {
        resp.headers_mut().insert("x-vigie-unavailable-nodes", v);
    }
    Ok(resp)
}

/// The journal actions that are facts of the register (and their section names).
const FACT_ACTIONS: [Action; 12] = [
    Action::RetentionDelete,
    Action::ExportCreate,
    Action::ExportDownload,
    Action::ExportDelete,
    Action::HoldPlace,
    Action::HoldRelease,
    Action::QualityAlert,
    Action::QualityClear,
    Action::RecordingBlocked,
    Action::TamperAlarm,
    Action::EdgeFill,
    Action::MasksChanged,
];

fn fact_section(a: Action) -> Option<&'static str> {
    Some(match a {
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
        Action::EdgeFill => "edge-fill",
        Action::MasksChanged => "privacy-masks-changed",
        _ => return None,
    })
}

/// One day of a stream's recordings on one node (a row of the register).
pub(super) struct DayRecording {
    pub day: String,
    pub secs: f64,
    pub bytes: u64,
    pub first: Time90k,
    pub last: Time90k,
}

/// This node's recordings of `key` per (UTC) day in `[start, end)`, from the index, one day of
/// segments at a time.
pub(super) fn day_recordings(
    state: &AppState,
    key: &vigie_core::StreamKey,
    start: Time90k,
    end: Time90k,
    mut each: impl FnMut(DayRecording) -> Result<(), String>,
) -> Result<(), String> {
    let mut a = start;
    while a < end {
        let b = next_utc_day(a).min(end);
        let segs = state
            .footage
            .segments(key, a, b)
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
            each(DayRecording {
                day,
                secs,
                bytes,
                first,
                last,
            })?;
        }
        a = b;
    }
    Ok(())
}

fn recording_row(
    state: &AppState,
    out: &mut RegisterOut,
    node: Option<&str>,
    cam: &vigie_core::config::Camera,
    stream: &str,
    d: DayRecording,
) -> Result<(), String> {
    row(
        out,
        node,
        [
            "recording".to_owned(),
            cam.id.clone(),
            stream.to_owned(),
            cam.commune.clone(),
            d.first.to_rfc3339(),
            d.last.to_rfc3339(),
            d.day,
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            format!(
                "recorded {:.0} s, {} bytes, retention {} days",
                d.secs,
                d.bytes,
                state.config.retention_days(cam)
            ),
        ],
    )
}

/// Another node's recording rows (`/internal/v1/register/recordings`, paged by stream).
fn remote_recordings(
    state: &AppState,
    who: &Principal,
    c: &mut ClusterFacts,
    node: &str,
    start: Time90k,
    end: Time90k,
    out: &mut RegisterOut,
) -> Result<(), String> {
    let mut after: Option<String> = None;
    loop {
        let mut pq = format!(
            "/internal/v1/register/recordings?start_90k={}&end_90k={}",
            start.0, end.0
        );
        if let Some(a) = &after {
            pq.push_str(&format!("&after={}", super::audit_cluster::pct(a)));
        }
        let v =
            c.rt.block_on(c.cluster.internal_json(node, pq, c.who.clone()))?;
        for r in v["rows"].as_array().into_iter().flatten() {
            let (Some(cam), Some(stream)) = (r["camera"].as_str(), r["stream"].as_str()) else {
                continue;
            };
            let Some(cam) = state.config.camera(cam) else {
                continue;
            };
            if !who.can(
                Permission::Audit,
                Some((cam.id.as_str(), cam.commune.as_str())),
            ) {
                continue;
            }
            let d = DayRecording {
                day: r["day"].as_str().unwrap_or_default().to_owned(),
                secs: r["secs"].as_f64().unwrap_or(0.0),
                bytes: r["bytes"].as_u64().unwrap_or(0),
                first: Time90k(r["first_90k"].as_i64().unwrap_or(0)),
                last: Time90k(r["last_90k"].as_i64().unwrap_or(0)),
            };
            recording_row(state, out, Some(node), cam, stream, d)?;
        }
        match v["next"].as_str() {
            Some(n) if after.as_deref() != Some(n) => after = Some(n.to_owned()),
            _ => return Ok(()),
        }
    }
}

/// The register of a cluster node: the other nodes' journal facts, merged by time with this
/// node's (see `routes::audit_cluster`); every row gets a `node` column.
struct ClusterFacts {
    cluster: std::sync::Arc<dyn crate::ClusterInfo>,
    me: String,
    rt: tokio::runtime::Handle,
    who: crate::internal::CarriedIdentity,
    filters: super::audit_cluster::Filters,
    sources: Vec<super::audit_cluster::RemoteFacts>,
    unavailable: Vec<(String, String)>,
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

/// One row; in a cluster (`node`), the node column last.
fn row<const N: usize>(
    out: &mut RegisterOut,
    node: Option<&str>,
    cells: [String; N],
) -> Result<(), String> {
    match node {
        None => out.write_record(cells),
        Some(n) => out.write_record(cells.iter().map(String::as_str).chain([n])),
    }
    .map_err(|e| e.to_string())
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
    mut cluster: Option<&mut ClusterFacts>,
    out: &mut RegisterOut,
) -> Result<(), String> {
    let me = cluster.as_ref().map(|c| c.me.clone());
    let here = me.as_deref();
    row(
        out,
        cluster.as_ref().map(|_| "node"),
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
    // The nodes whose journal could not be read: the register is incomplete, and says so.
    if let Some(c) = cluster.as_ref() {
        for (node, why) in &c.unavailable {
            row(
                out,
                Some(node),
                [
                    "journal-unavailable".to_owned(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    state.clock.now().to_rfc3339(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    format!("the journal of node {node} could not be read: {why}"),
                ],
            )?;
        }
    }
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
        day_recordings(state, &s.key, start, end, |d| {
            recording_row(state, out, here, cam, &s.key.stream, d)
        })?;
    }
    // The other nodes' recordings (their own indexes), node by node.
    if let Some(c) = cluster.as_deref_mut() {
        for node in c.sources.iter().map(|s| s.node.clone()).collect::<Vec<_>>() {
            if let Err(why) = remote_recordings(state, who, c, &node, start, end, out) {
                row(
                    out,
                    Some(&node),
                    [
                        "recordings-unavailable".to_owned(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        state.clock.now().to_rfc3339(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        format!("the recordings of node {node} could not be read: {why}"),
                    ],
                )?;
            }
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
            here,
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
    let mut local = state
        .journal
        .scan(&jq)
        .map_err(|e| e.to_string())?
        .filter(|e| {
            e.as_ref()
                .map_or(true, |e| fact_section(e.action).is_some())
        })
        .peekable();
    loop {
        // The oldest next fact of all nodes (ties: this node first, then by name).
        let local_time = match local.peek() {
            Some(Ok(e)) => Some(e.time_90k),
            Some(Err(_)) => Some(i64::MIN),
            None => None,
        };
        let mut pick: Option<(i64, usize)> = None;
        if let Some(c) = cluster.as_deref_mut() {
            for (i, src) in c.sources.iter_mut().enumerate() {
                if let Some(t) =
                    src.peek_time(&c.rt, &c.cluster, &c.who, &c.filters, &FACT_ACTIONS)?
                    && pick.is_none_or(|(p, _)| t < p)
                    && local_time.is_none_or(|l| t < l)
                {
                    pick = Some((t, i));
                }
            }
        }
        let (e, node) = match (pick, cluster.as_deref_mut()) {
            (Some((_, i)), Some(c)) => match c.sources[i].pop() {
                Some(e) => (e, Some(c.sources[i].node.clone())),
                None => continue,
            },
            _ => match local.next() {
                Some(e) => (e.map_err(|e| e.to_string())?, me.clone()),
                None => break,
            },
        };
        if !visible(state, who, &e) {
            continue;
        }
        let Some(section) = fact_section(e.action) else {
            continue;
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
            node.as_deref(),
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

//! Internal routes of the access journal (`/internal/v1/journal/…`, signed requests only, see
//! [`crate::internal`]): this node's own journal for another node, which merges it into `audit`
//! and the register, or checks its chain (`vigie audit verify` of a cluster).
//!
//! * `entries`: this node's entries, oldest first, filtered like `GET /api/v1/audit` (window
//!   in 90 kHz units, actor, camera, one or several actions) and paged by sequence number
//!   (`after`, `limit` ≤ 10,000), whole (hashes included: the caller can re-check the chain).
//!   No rights are checked here: the node the user called checked them (`Permission::Audit`)
//!   and filters what the user may see, as for its own journal.
//! * `register/recordings`: this node's recordings per stream and (UTC) day in a window (the
//!   register's `recording` rows), every stream it holds, paged by stream (`after`,
//!   about [`RECORDING_ROWS_PAGE`] rows a page).
//! * `verify`: this node's own verification of its journal (chain, signed head, purges,
//!   tamper alarms) and its head.
//!
//! Does not own: the merge (`routes::audit_cluster`), the anchors (`vigie-cluster`).

use axum::Json;
use axum::extract::{Query, State};
use serde_json::{Value, json};
use vigie_audit::Action;

use crate::internal::Verified;
use crate::{ApiError, AppState};

/// Largest page of entries.
pub const MAX_PAGE: usize = 10_000;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    start_90k: Option<i64>,
    end_90k: Option<i64>,
    actor: Option<String>,
    camera: Option<String>,
    /// Comma-separated action names (kebab-case); any of them.
    actions: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
}

pub async fn entries(
    State(state): State<AppState>,
    _: Verified,
    q: Result<Query<EntriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::BadRequest(format!(
            "`limit` must be within 1..={MAX_PAGE}"
        )));
    }
    let actions: Vec<Action> = match q.actions.as_deref() {
        None | Some("") => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|a| {
                Action::parse(a)
                    .ok_or_else(|| ApiError::BadRequest(format!("unknown action {a:?}")))
            })
            .collect::<Result<_, _>>()?,
    };
    let jq = vigie_audit::Query {
        start: q.start_90k.map(vigie_core::Time90k),
        end: q.end_90k.map(vigie_core::Time90k),
        actor: q.actor,
        camera: q.camera,
        action: (actions.len() == 1).then(|| actions[0]),
        after_seq: q.after,
        limit: None,
    };
    let journal = state.journal.clone();
    let page = tokio::task::spawn_blocking(move || -> Result<Vec<_>, vigie_audit::AuditError> {
        let mut out = Vec::new();
        for e in journal.scan(&jq)? {
            let e = e?;
            if actions.len() > 1 && !actions.contains(&e.action) {
                continue;
            }
            out.push(e);
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Unavailable(format!("access journal: {e}")))?;
    let me = state.cluster.as_ref().map(|c| c.node().to_owned());
    Ok(Json(json!({
        "node": me,
        "next_after": page.last().map(|e| e.seq),
        // A full page: there may be more after `next_after`.
        "more": page.len() == limit,
        "entries": page,
    })))
}

pub async fn verify(State(state): State<AppState>, _: Verified) -> Result<Json<Value>, ApiError> {
    let mut v = super::audit::verify_report(&state).await?;
    let journal = state.journal.clone();
    let head = tokio::task::spawn_blocking(move || journal.head())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Unavailable(format!("access journal: {e}")))?;
    v["node"] = json!(state.cluster.as_ref().map(|c| c.node().to_owned()));
    v["head"] = json!(head.map(|(seq, hash)| json!({ "seq": seq, "hash": hash })));
    Ok(Json(v))
}

/// Rows of a `register/recordings` page (whole streams: a page may hold a few more).
pub const RECORDING_ROWS_PAGE: usize = 2000;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingsQuery {
    start_90k: i64,
    end_90k: i64,
    /// `camera/stream` of the last stream of the previous page.
    after: Option<String>,
}

pub async fn register_recordings(
    State(state): State<AppState>,
    _: Verified,
    q: Result<Query<RecordingsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    if q.end_90k <= q.start_90k {
        return Err(ApiError::BadRequest(
            "end_90k must be after start_90k".into(),
        ));
    }
    let (start, end) = (
        vigie_core::Time90k(q.start_90k),
        vigie_core::Time90k(q.end_90k),
    );
    let st = state.clone();
    let (rows, next) = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let mut rows = Vec::new();
        let mut skipping = q.after.is_some();
        let mut next = None;
        for s in st.streams.iter() {
            let name = format!("{}/{}", s.key.camera, s.key.stream);
            if skipping {
                skipping = q.after.as_deref() != Some(name.as_str());
                continue;
            }
            if rows.len() >= RECORDING_ROWS_PAGE {
                break;
            }
            super::audit::day_recordings(&st, &s.key, start, end, |d| {
                rows.push(json!({
                    "camera": s.key.camera, "stream": s.key.stream, "day": d.day,
                    "first_90k": d.first.0, "last_90k": d.last.0,
                    "secs": d.secs, "bytes": d.bytes,
                }));
                Ok(())
            })?;
            next = Some(name);
        }
        // The last stream listed ends the page unless it was the last stream of all.
        let last_stream = st
            .streams
            .iter()
            .last()
            .map(|s| format!("{}/{}", s.key.camera, s.key.stream));
        Ok((rows, next.filter(|n| Some(n) != last_stream.as_ref())))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(ApiError::Unavailable)?;
    Ok(Json(json!({ "rows": rows, "next": next })))
}

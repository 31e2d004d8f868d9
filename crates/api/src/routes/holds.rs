//! Legal holds: `GET/POST /api/v1/holds`, `GET /api/v1/holds/{id}`,
//! `POST /api/v1/holds/{id}/release`.
//!
//! A hold protects `[start, end)` of a stream from retention until it is released explicitly
//! (procedure number required). Placing and releasing are journaled; listing shows only holds on
//! cameras inside the caller's scope.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use vigie_audit::{Action, NewEntry};
use vigie_auth::Permission;
use vigie_core::Time90k;
use vigie_store::{Hold, NewHold};

use crate::access::Principal;
use crate::{ApiError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    pub camera: String,
    pub stream: String,
    pub start: String,
    pub end: String,
    pub procedure: String,
    pub reason: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub reason: String,
}

pub fn hold_json(h: &Hold) -> Value {
    json!({
        "id": h.id,
        "camera": h.camera,
        "stream": h.stream,
        "start": h.start.to_rfc3339(),
        "end": h.end.to_rfc3339(),
        "procedure": h.procedure,
        "reason": h.reason,
        "created_by": h.created_by,
        "created_at": h.created_at.to_rfc3339(),
        "active": h.active(),
        "released": h.released.as_ref().map(|r| json!({
            "by": r.by, "at": r.at.to_rfc3339(), "reason": r.reason,
        })),
    })
}

/// Parses and checks a `[start, end)` range given as RFC 3339 strings: end after start, not in
/// the future.
pub fn parse_range(
    state: &AppState,
    start: &str,
    end: &str,
) -> Result<(Time90k, Time90k), ApiError> {
    let s =
        Time90k::parse_rfc3339(start).map_err(|e| ApiError::BadRequest(format!("`start`: {e}")))?;
    let e = Time90k::parse_rfc3339(end).map_err(|e| ApiError::BadRequest(format!("`end`: {e}")))?;
    if e <= s {
        return Err(ApiError::BadRequest(format!(
            "`end` ({e}) must be after `start` ({s})"
        )));
    }
    let now = state.clock.now();
    if s > now {
        return Err(ApiError::BadRequest(format!(
            "`start` ({s}) is in the future (now {now})"
        )));
    }
    Ok((s, e))
}

fn require_text(name: &str, v: &str) -> Result<String, ApiError> {
    let v = v.trim();
    if v.is_empty() {
        return Err(ApiError::BadRequest(format!("`{name}` is required")));
    }
    if v.len() > 500 {
        return Err(ApiError::BadRequest(format!(
            "`{name}` is longer than 500 bytes"
        )));
    }
    Ok(v.to_owned())
}

pub async fn list(State(state): State<AppState>, who: Principal) -> Result<Json<Value>, ApiError> {
    let store = state.store.clone();
    let holds = tokio::task::spawn_blocking(move || store.holds())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let visible: Vec<Value> = holds
        .iter()
        .filter(|h| {
            who.require(&state, Permission::ViewEvidence, Some(&h.camera))
                .is_ok()
        })
        .map(hold_json)
        .collect();
    Ok(Json(json!({ "holds": visible })))
}

pub async fn get_one(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    let h = find(&state, id).await?;
    who.require(&state, Permission::ViewEvidence, Some(&h.camera))?;
    Ok(Json(hold_json(&h)))
}

async fn find(state: &AppState, id: u64) -> Result<Hold, ApiError> {
    let store = state.store.clone();
    let holds = tokio::task::spawn_blocking(move || store.holds())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    holds
        .into_iter()
        .find(|h| h.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no hold {id}")))
}

pub async fn place(
    State(state): State<AppState>,
    who: Principal,
    body: Result<Json<HoldRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(req) = body?;
    who.require(&state, Permission::Hold, Some(&req.camera))?;
    let entry = state.stream(&req.camera, &req.stream)?;
    let (start, end) = parse_range(&state, &req.start, &req.end)?;
    let procedure = require_text("procedure", &req.procedure)?;
    let reason = require_text("reason", &req.reason)?;
    let new = NewHold {
        key: entry.key.clone(),
        start,
        end,
        procedure: procedure.clone(),
        reason: reason.clone(),
        created_by: who.actor(),
    };
    let store = state.store.clone();
    let hold = tokio::task::spawn_blocking(move || store.place_hold(new))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    crate::journal::record(
        &state,
        NewEntry::new(who.actor(), Action::HoldPlace)
            .camera(&hold.camera, &hold.stream)
            .range(start, end)
            .procedure(procedure)
            .reason(reason)
            .details(json!({ "hold_id": hold.id })),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(hold_json(&hold))))
}

pub async fn release(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<u64>,
    body: Result<Json<ReleaseRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(req) = body?;
    let reason = require_text("reason", &req.reason)?;
    let h = find(&state, id).await?;
    who.require(&state, Permission::Hold, Some(&h.camera))?;
    if let Some(r) = &h.released {
        return Err(ApiError::AlreadyExists(format!(
            "hold {id} was already released by {} at {}",
            r.by, r.at
        )));
    }
    let store = state.store.clone();
    let actor = who.actor();
    let (a2, r2) = (actor.clone(), reason.clone());
    let hold = tokio::task::spawn_blocking(move || store.release_hold(id, &a2, &r2))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??
        .ok_or_else(|| ApiError::NotFound(format!("no hold {id}")))?;
    crate::journal::record(
        &state,
        NewEntry::new(actor, Action::HoldRelease)
            .camera(&hold.camera, &hold.stream)
            .range(hold.start, hold.end)
            .procedure(hold.procedure.clone())
            .reason(reason)
            .details(json!({ "hold_id": hold.id })),
    )
    .await?;
    Ok(Json(hold_json(&hold)))
}

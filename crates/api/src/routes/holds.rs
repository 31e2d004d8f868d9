//! Legal holds: `GET/POST /api/v1/holds`, `GET /api/v1/holds/{id}`,
//! `POST /api/v1/holds/{id}/release`.
//!
//! A hold protects `[start, end)` of a stream from retention until it is released explicitly
//! (procedure number required). Placing and releasing are journaled (the release with who
//! placed the hold); listing shows only holds on cameras inside the caller's scope.
//!
//! A hold covers footage that exists ([`check_hold_range`]: not ending in the future, at most
//! `holds.max_span_days` long; the same rule for the holds that exports place). A hold is
//! released by its creator, or by a role with `ReleaseAnyHold` (supervisor, admin).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use vigie_audit::{Action, NewEntry};
use vigie_auth::Permission;
use vigie_core::{TIME_UNITS_PER_SEC, Time90k};
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

/// How far in the future a hold's `end` may be: the caller's clock may run a little ahead.
pub const HOLD_CLOCK_TOLERANCE_S: i64 = 5;

/// Parses and checks a `[start, end)` range given as RFC 3339 strings ([`check_hold_range`]).
pub fn parse_range(
    state: &AppState,
    start: &str,
    end: &str,
) -> Result<(Time90k, Time90k), ApiError> {
    let s =
        Time90k::parse_rfc3339(start).map_err(|e| ApiError::BadRequest(format!("`start`: {e}")))?;
    let e = Time90k::parse_rfc3339(end).map_err(|e| ApiError::BadRequest(format!("`end`: {e}")))?;
    check_hold_range(state, s, e)?;
    Ok((s, e))
}

/// The rule of every legal hold, placed directly or by an export: a hold covers footage that
/// exists. `start` < `end`; `end` not after now (+ [`HOLD_CLOCK_TOLERANCE_S`]), so that no
/// future recording escapes retention (CSI L252-5) nor, in time, fills the disk; and at most
/// `holds.max_span_days` long. 400 otherwise.
pub fn check_hold_range(state: &AppState, start: Time90k, end: Time90k) -> Result<(), ApiError> {
    if end <= start {
        return Err(ApiError::BadRequest(format!(
            "`end` ({}) must be after `start` ({})",
            end.to_rfc3339(),
            start.to_rfc3339()
        )));
    }
    let now = state.clock.now();
    let latest = Time90k(now.0 + HOLD_CLOCK_TOLERANCE_S * TIME_UNITS_PER_SEC);
    if end > latest {
        return Err(ApiError::BadRequest(format!(
            "`end` ({}) is in the future (now {}): a legal hold covers footage already recorded; place another hold later for what comes next",
            end.to_rfc3339(),
            now.to_rfc3339()
        )));
    }
    let max_days = i64::from(state.config.holds.max_span_days);
    if end.0.saturating_sub(start.0) > max_days * 86_400 * TIME_UNITS_PER_SEC {
        return Err(ApiError::BadRequest(format!(
            "the range is longer than {max_days} days (holds.max_span_days): place several holds, one per period"
        )));
    }
    Ok(())
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
    if !placed_by(&h, &who.user) && !vigie_auth::allows(who.role, Permission::ReleaseAnyHold) {
        return Err(ApiError::Forbidden(format!(
            "hold {id} was placed by {}: only its creator, a supervisor or an admin may release it",
            h.created_by
        )));
    }
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
            .details(json!({ "hold_id": hold.id, "placed_by": hold.created_by })),
    )
    .await?;
    Ok(Json(hold_json(&hold)))
}

/// Did `user` place this hold (in person or with one of its API tokens)? `created_by` is the
/// journal actor: the user name, or `name (token tok-…)`; user names hold no space.
fn placed_by(h: &Hold, user: &str) -> bool {
    h.created_by == user
        || h.created_by
            .strip_prefix(user)
            .is_some_and(|rest| rest.starts_with(" (token "))
}

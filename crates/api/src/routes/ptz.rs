//! PTZ of ONVIF cameras: `GET /api/v1/cameras/{cam}/ptz` (position, motion, who holds it),
//! `POST …/ptz/move` `{pan, tilt, zoom}` (velocities in [-1, 1]), `POST …/ptz/stop`,
//! `GET …/ptz/presets`, `POST …/ptz/presets/{token}` (go to), `PUT …/ptz/presets/{name}`
//! (store the current position), `DELETE …/ptz/lock` (hand over before the lock expires).
//!
//! Needs the `ptz` right on the camera. One operator at a time per camera: a command from
//! someone else while the lock is held answers 409 naming the holder. Every command is
//! journaled (who, camera, what), refused ones included.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument;
use vigie_audit::{Action, NewEntry};
use vigie_service::ptz::{LOCK_TTL, PtzCommand};

use crate::access::Principal;
use crate::{ApiError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    #[serde(default)]
    pan: f64,
    #[serde(default)]
    tilt: f64,
    #[serde(default)]
    zoom: f64,
}

fn known(state: &AppState, cam: &str) -> Result<(), ApiError> {
    if state.config.camera(cam).is_none() {
        return Err(ApiError::NotFound(format!("no camera {cam:?}")));
    }
    Ok(())
}

/// Runs a command and journals it with its outcome.
async fn run(
    state: &AppState,
    who: &Principal,
    cam: &str,
    cmd: PtzCommand,
) -> Result<Option<String>, ApiError> {
    known(state, cam)?;
    let span = tracing::info_span!("ptz", camera = %cam, command = cmd.name());
    let details = match &cmd {
        PtzCommand::Move { pan, tilt, zoom } => {
            json!({"command": "move", "pan": pan, "tilt": tilt, "zoom": zoom})
        }
        PtzCommand::Stop => json!({"command": "stop"}),
        PtzCommand::GotoPreset { token } => json!({"command": "goto-preset", "preset": token}),
        PtzCommand::SetPreset { name } => json!({"command": "set-preset", "name": name}),
    };
    let result = state
        .ptz
        .command(cam, &who.user, cmd)
        .instrument(span)
        .await;
    let mut entry = NewEntry::new(who.actor(), Action::Ptz).details(match &result {
        Ok(_) => details,
        Err(e) => {
            let mut d = details;
            d["refused"] = e.to_string().into();
            d
        }
    });
    entry.camera = Some(cam.to_owned());
    crate::journal::record(state, entry).await?;
    Ok(result?)
}

fn lock_json(who: &Principal) -> Value {
    json!({"holder": who.user, "expires_in_s": LOCK_TTL.as_secs()})
}

pub async fn move_(
    State(state): State<AppState>,
    who: Principal,
    Path(cam): Path<String>,
    body: Result<Json<MoveRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(m) = body?;
    for (k, v) in [("pan", m.pan), ("tilt", m.tilt), ("zoom", m.zoom)] {
        if !(v.is_finite() && (-1.0..=1.0).contains(&v)) {
            return Err(ApiError::BadRequest(format!(
                "{k} must be a velocity between -1 and 1"
            )));
        }
    }
    run(
        &state,
        &who,
        &cam,
        PtzCommand::Move {
            pan: m.pan,
            tilt: m.tilt,
            zoom: m.zoom,
        },
    )
    .await?;
    Ok(Json(json!({"lock": lock_json(&who)})))
}

pub async fn stop(
    State(state): State<AppState>,
    who: Principal,
    Path(cam): Path<String>,
) -> Result<Json<Value>, ApiError> {
    run(&state, &who, &cam, PtzCommand::Stop).await?;
    Ok(Json(json!({"lock": lock_json(&who)})))
}

pub async fn goto_preset(
    State(state): State<AppState>,
    who: Principal,
    Path((cam, token)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    if token.is_empty() || token.len() > 64 {
        return Err(ApiError::BadRequest("bad preset token".into()));
    }
    run(&state, &who, &cam, PtzCommand::GotoPreset { token }).await?;
    Ok(Json(json!({"lock": lock_json(&who)})))
}

pub async fn set_preset(
    State(state): State<AppState>,
    who: Principal,
    Path((cam, name)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "a preset name has 1 to 64 printable characters".into(),
        ));
    }
    let token = run(
        &state,
        &who,
        &cam,
        PtzCommand::SetPreset { name: name.clone() },
    )
    .await?
    .unwrap_or_default();
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": token, "name": name, "lock": lock_json(&who)})),
    ))
}

pub async fn presets(
    State(state): State<AppState>,
    Path(cam): Path<String>,
) -> Result<Json<Value>, ApiError> {
    known(&state, &cam)?;
    let p = state.ptz.presets(&cam).await?;
    Ok(Json(json!({"presets": p})))
}

pub async fn status(
    State(state): State<AppState>,
    Path(cam): Path<String>,
) -> Result<Json<Value>, ApiError> {
    known(&state, &cam)?;
    let st = state.ptz.state(&cam).await?;
    Ok(Json(json!({
        "position": st.position.map(|[p, t, z]| json!({"pan": p, "tilt": t, "zoom": z})),
        "moving": st.moving,
        "lock": st.lock,
    })))
}

pub async fn release(
    State(state): State<AppState>,
    who: Principal,
    Path(cam): Path<String>,
) -> Result<StatusCode, ApiError> {
    known(&state, &cam)?;
    state.ptz.release(&cam, &who.user);
    Ok(StatusCode::NO_CONTENT)
}

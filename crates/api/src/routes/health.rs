//! `GET /api/v1/health`: liveness and readiness (storage writable, cameras online).
//!
//! Without authentication the body is only `{"status": "ok" | "degraded" | "unavailable"}`
//! (status 200, or 503 when storage is not writable or the index cannot be written);
//! authenticated users also get the details, among them `storage.state` (`ok`, `below_floor`,
//! `full`, `held_full`, `index_error`), `storage.message` and `recording_blocked`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;

use crate::AppState;
use crate::access::Principal;

pub async fn health(
    State(state): State<AppState>,
    principal: Option<Principal>,
) -> (StatusCode, Json<serde_json::Value>) {
    let dir = state.config.storage.data_dir.clone();
    let writable = tokio::task::spawn_blocking(move || {
        let probe = dir.join(".vigie-health-probe");
        std::fs::write(&probe, b"ok").and_then(|_| std::fs::remove_file(&probe))
    })
    .await;
    // A full disk is not "unavailable": the storage state below says what is wrong and
    // retention is making room; a read-only or missing data directory is.
    let mut probe_full = false;
    let storage_error = match writable {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            probe_full = vigie_store::space::is_no_space(&e);
            Some(e.to_string())
        }
        Err(e) => Some(e.to_string()),
    };
    // In a cluster, the streams this node records now (the others are another node's).
    let here: Vec<_> = state
        .streams
        .iter()
        .filter(|s| {
            state
                .cluster
                .as_ref()
                .is_none_or(|c| c.records_here(&s.key.camera))
        })
        .collect();
    let total = here.len();
    let online = here.iter().filter(|s| s.status.snapshot().online).count();
    let stats = state.store.stats();
    let store = state.store.clone();
    let storage = tokio::task::spawn_blocking(move || store.storage_health())
        .await
        .ok();
    let index_error = storage
        .as_ref()
        .is_some_and(|s| s.state == vigie_store::StorageState::IndexError);
    let ready = (storage_error.is_none() || probe_full) && !index_error;
    let blocked =
        state.store.recording_blocked() || storage.as_ref().is_some_and(|s| s.recording_blocked);
    let mut warnings: Vec<String> = state
        .config
        .authorisation_warnings(
            state
                .clock
                .now()
                .to_timestamp()
                .to_zoned(jiff::tz::TimeZone::UTC)
                .date(),
            60,
        )
        .iter()
        .map(|w| w.to_string())
        .collect();
    if let Some(s) = storage.as_ref().filter(|s| !s.message.is_empty()) {
        warnings.push(format!(
            "storage {}: {}",
            serde_json::to_value(s.state)
                .unwrap_or_default()
                .as_str()
                .unwrap_or("?"),
            s.message
        ));
    } else if blocked {
        warnings.push("recording stopped: the disk is full of footage under legal hold".into());
    }
    let status = if !ready {
        "unavailable"
    } else if online < total
        || blocked
        || storage
            .as_ref()
            .is_some_and(|s| s.state != vigie_store::StorageState::Ok)
    {
        "degraded"
    } else {
        "ok"
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if principal.is_none() {
        return (code, Json(json!({ "status": status })));
    }
    let body = json!({
        "status": status,
        "storage": {
            "data_dir": state.config.storage.data_dir,
            "writable": ready,
            "error": storage_error,
            "free_bytes": storage.as_ref().map_or(stats.free_bytes, |s| s.free_bytes),
            "min_free_bytes": state.config.storage.min_free_bytes.0,
            // What is wrong, exactly (see vigie_store::space).
            "state": storage.as_ref().map(|s| s.state),
            "floor_bytes": storage.as_ref().map(|s| s.floor_bytes),
            "stop_bytes": storage.as_ref().map(|s| s.stop_bytes),
            "reserve_bytes": storage.as_ref().map(|s| s.reserve_bytes),
            "reserve_present": storage.as_ref().map(|s| s.reserve_present),
            "recording_blocked": storage.as_ref().is_some_and(|s| s.recording_blocked),
            "message": storage.as_ref().map(|s| s.message.clone()),
        },
        "streams": { "online": online, "total": total },
        "recording_blocked": blocked,
        // Background check of the history against the files after a start (issue 16).
        "history_verification": state.store.verification(),
        "warnings": warnings,
        "time": state.clock.now().to_rfc3339(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    (code, Json(body))
}

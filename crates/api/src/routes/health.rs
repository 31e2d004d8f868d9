//! `GET /api/v1/health`: liveness and readiness (storage writable, cameras online).
//!
//! Without authentication the body is only `{"status": "ok" | "degraded" | "unavailable"}`
//! (status 200, or 503 when storage is not writable); authenticated users also get the details.

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
    let storage_error = match writable {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    let total = state.streams.len();
    let online = state
        .streams
        .iter()
        .filter(|s| s.status.snapshot().online)
        .count();
    let stats = state.store.stats();
    let ready = storage_error.is_none();
    let blocked = state.store.recording_blocked();
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
    if blocked {
        warnings.push("recording stopped: the disk is full of footage under legal hold".into());
    }
    let status = if !ready {
        "unavailable"
    } else if online < total || blocked {
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
            "free_bytes": stats.free_bytes,
            "min_free_bytes": state.config.storage.min_free_bytes.0,
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

//! `GET /api/v1/health`: liveness and readiness (storage writable, cameras online).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;

use crate::AppState;

pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
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
    let body = json!({
        "status": if !ready { "unavailable" } else if online < total { "degraded" } else { "ok" },
        "storage": {
            "data_dir": state.config.storage.data_dir,
            "writable": ready,
            "error": storage_error,
            "free_bytes": stats.free_bytes,
            "min_free_bytes": state.config.storage.min_free_bytes.0,
        },
        "streams": { "online": online, "total": total },
        "time": state.clock.now().to_rfc3339(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

//! `GET /api/v1/cameras`: cameras, their streams and live status (in a cluster, which node
//! records each camera: `recorder`, `recorded_here`). Credentials never appear:
//! stream URLs are shown without user info. Only the cameras inside the caller's scope are
//! listed.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use vigie_core::config::redact_url;

use crate::AppState;
use crate::access::Principal;

pub async fn list(State(state): State<AppState>, p: Principal) -> Json<Value> {
    let cfg = &state.config;
    let cameras: Vec<Value> = cfg
        .cameras
        .iter()
        .filter(|cam| {
            p.can(
                vigie_auth::Permission::ViewStatus,
                Some((&cam.id, &cam.commune)),
            )
        })
        .map(|cam| {
            let streams: Vec<Value> = cam
                .streams
                .iter()
                .map(|s| {
                    let entry = state
                        .streams
                        .iter()
                        .find(|e| e.key.camera == cam.id && e.key.stream == s.name);
                    let status = entry
                        .map(|e| serde_json::to_value(e.status.snapshot()).unwrap_or(Value::Null));
                    let compliance = entry.map(|e| {
                        let c = e.compliance.snapshot();
                        json!({
                            "state": c.state,
                            "alert": c.state == "below-floor",
                            "reason": c.reason,
                            "since": c.since.map(|t| t.to_rfc3339()),
                            "floor": c.floor,
                        })
                    });
                    json!({
                        "name": s.name,
                        "url": redact_url(&s.url),
                        "transport": s.transport,
                        "status": status,
                        "compliance": compliance,
                    })
                })
                .collect();
            json!({
                "id": cam.id,
                "name": cam.name,
                "commune": cam.commune,
                "commune_name": cfg.communes.iter().find(|c| c.id == cam.commune).map(|c| c.name.as_str()),
                "class": cam.class,
                "retention_days": cfg.retention_days(cam),
                "site": cam.site,
                // Cluster: the node recording the camera (null: single node, or unassigned),
                // and whether this node records it now.
                "recorder": state.cluster.as_ref().and_then(|c| c.recorder_of(&cam.id)),
                "recorded_here": state.cluster.as_ref().is_none_or(|c| c.records_here(&cam.id)),
                "streams": streams,
            })
        })
        .collect();
    Json(json!({ "cameras": cameras }))
}

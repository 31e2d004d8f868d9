//! `GET /api/v1/cameras`: cameras, their streams (with their role: `record`, `live`, `both`)
//! and live status; per camera, the stream the live wall shows and the main (recorded) one,
//! and in a cluster which node records it (`recorder`, `recorded_here`). Credentials never appear:
//! stream URLs are shown without user info. Only the cameras inside the caller's scope are
//! listed.
//!
//! In a cluster every node lists every camera the same way: the streams' status is the one
//! the recording node published in etcd (state, fps, size, last frame; `recorder` names the
//! node), `recording_on` lists the nodes recording the camera now. Two fields stay this node's
//! own: `recorded_here`, and `compliance` (the quality floors are watched by the recording
//! node; `null` elsewhere).

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
            let recorded_here = state.cluster.as_ref().is_none_or(|c| c.records_here(&cam.id));
            let published = state.cluster.as_ref().map(|c| c.published_status(&cam.id));
            let streams: Vec<Value> = cam
                .streams
                .iter()
                .map(|s| {
                    let entry = state
                        .streams
                        .iter()
                        .find(|e| e.key.camera == cam.id && e.key.stream == s.name);
                    let status = match &published {
                        // Cluster: what the recording node published (the same on every node).
                        Some(p) => p.as_ref().and_then(|(node, streams)| {
                            streams.get(&s.name).map(|st| {
                                let mut v = st.clone();
                                v["camera"] = json!(cam.id);
                                v["stream"] = json!(s.name);
                                v["url"] = json!(redact_url(&s.url));
                                v["transport"] = json!(s.transport);
                                v["recorder"] = json!(node);
                                v
                            })
                        }),
                        None => entry
                            .map(|e| serde_json::to_value(e.status.snapshot()).unwrap_or(Value::Null)),
                    };
                    // Quality floors apply to recorded streams only (a live-only sub-stream
                    // is not watched).
                    let compliance = entry.filter(|_| cam.records(&s.name) && recorded_here).map(|e| {
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
                        "role": cam.role(&s.name),
                        "recorded": cam.records(&s.name),
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
                "recorded_here": recorded_here,
                "recording_on": state.cluster.as_ref().map(|c| c.recording_on(&cam.id)),
                "streams": streams,
                // PTZ and events are reached through the camera's ONVIF device.
                "onvif": cam.onvif.is_some(),
                "onvif_events": cam.onvif.as_ref().map(|_| {
                    let (subscribed, last_error) = state.camera_events.status(&cam.id).unwrap_or_default();
                    json!({"subscribed": subscribed, "last_error": last_error})
                }),
                // Privacy masks: how many, and whether the camera confirmed them (Media2).
                "masks": crate::masks::camera_json(cam, &state.masks),
                // The stream the live wall shows, and the main (recorded) one: the enlarged
                // tile, playback and exports.
                "live_stream": cam.live_stream().map(|s| s.name.as_str()),
                "main_stream": cam.record_stream().map(|s| s.name.as_str()),
            })
        })
        .collect();
    Json(json!({ "cameras": cameras }))
}

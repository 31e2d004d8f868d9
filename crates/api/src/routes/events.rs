//! `GET /api/v1/cameras/{cam}/events?start=T&end=T&type=K&stream=S`: the camera's own events
//! (ONVIF motion, tampering, video loss, digital inputs) stored with the stream's footage,
//! oldest first. `stream` defaults to the camera's first stream; `type` filters one kind.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use vigie_core::{StreamKey, Time90k};

use crate::{ApiError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    start: String,
    end: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    stream: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    Path(cam): Path<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    let camera = state
        .config
        .camera(&cam)
        .ok_or_else(|| ApiError::NotFound(format!("no camera {cam:?}")))?;
    let stream = match &q.stream {
        Some(s) => s.clone(),
        None => camera
            .streams
            .first()
            .map(|s| s.name.clone())
            .ok_or_else(|| ApiError::NotFound(format!("camera {cam:?} has no stream")))?,
    };
    state.stream(&cam, &stream)?;
    let parse = |k: &str, v: &str| {
        Time90k::parse_rfc3339(v).map_err(|e| ApiError::BadRequest(format!("`{k}`: {e}")))
    };
    let (start, end) = (parse("start", &q.start)?, parse("end", &q.end)?);
    if end <= start {
        return Err(ApiError::BadRequest("`end` must be after `start`".into()));
    }
    let key = StreamKey::new(&cam, &stream);
    let store = state.store.clone();
    let kind = q.kind.clone();
    let events =
        tokio::task::spawn_blocking(move || store.events(&key, start, end, kind.as_deref()))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
    let rows: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "time": e.at.to_rfc3339(),
                "type": e.kind,
                "active": e.active,
                "topic": e.topic,
            })
        })
        .collect();
    Ok(Json(
        json!({"camera": cam, "stream": stream, "events": rows}),
    ))
}

//! The recorder's side of live views and stills served by another node (issue 15, "live and
//! stills through any node"), on the signed internal routes ([`crate::internal`]):
//!
//! * `GET /internal/v1/cameras/{cam}/streams/{stream}/live` (WebSocket upgrade, the signature
//!   headers on the upgrade request): the frames of this node's live hub of the stream in the
//!   relay format of [`vigie_live::wire`], for the node the user called, which muxes them for
//!   its viewer. Refused with 409 when this node does not record the camera now (the caller
//!   then looks for the node that does). Journaled `live-start` / `live-stop` under the carried
//!   identity with `via_node` and `request_id`.
//! * `GET /internal/v1/cameras/{cam}/streams/{stream}/still.jpg?at_90k=T`: a still rendered
//!   here (latest picture by default), journaled `still` under the carried identity.
//!
//! Does not own: the user's rights (checked by the calling node), following a camera that moves
//! (the caller's relay, in the binary), the muxing for browsers (the caller's `LiveMuxer`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::Instrument;
use vigie_core::{Time90k, VideoParams};
use vigie_live::{LiveHub, LiveItem, wire};

use super::live::close;
use crate::internal::Verified;
use crate::{ApiError, AppState};

/// How often the relay is pinged: a relay that hears nothing for a few of these reconnects.
pub const RELAY_PING_EVERY: Duration = Duration::from_secs(1);

fn via(v: &Verified) -> serde_json::Value {
    json!({ "via_node": v.node, "request_id": v.identity.request_id })
}

/// Refuses a camera this node does not record now (409): its hub has no frames to give.
fn recorded_here(state: &AppState, cam: &str) -> Result<(), ApiError> {
    match &state.cluster {
        Some(c) if !c.records_here(cam) => Err(ApiError::Conflict {
            message: format!("node {} does not record camera {cam} now", c.node()),
            spans: Vec::new(),
        }),
        _ => Ok(()),
    }
}

pub async fn live(
    State(state): State<AppState>,
    v: Verified,
    Path((cam, stream)): Path<(String, String)>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let entry = state.stream(&cam, &stream)?;
    recorded_here(&state, &cam)?;
    let ws = ws.map_err(|e| {
        ApiError::BadRequest(format!(
            "the internal live view is a WebSocket endpoint: {}",
            e.body_text()
        ))
    })?;
    let hub = state
        .live
        .hub(&entry.key)
        .ok_or_else(|| ApiError::NotFound(format!("no live view of {}", entry.key)))?;
    crate::journal::record(
        &state,
        vigie_audit::NewEntry::new(v.identity.actor.clone(), vigie_audit::Action::LiveStart)
            .camera(&cam, &stream)
            .details(via(&v)),
    )
    .await?;
    let span = tracing::info_span!("live_relay_source", camera = %cam, stream = %stream, to_node = %v.node);
    let journal = state.journal.clone();
    let clock = state.clock.clone();
    let started = clock.now();
    Ok(ws.max_message_size(64 << 10).on_upgrade(move |socket| {
        async move {
            let why = serve(socket, hub).await;
            tracing::info!(why, "relayed live view ended");
            let entry =
                vigie_audit::NewEntry::new(v.identity.actor.clone(), vigie_audit::Action::LiveStop)
                    .camera(&cam, &stream)
                    .range(started, clock.now())
                    .details(via(&v));
            let _ = tokio::task::spawn_blocking(move || journal.append_or_log(entry)).await;
        }
        .instrument(span)
    }))
}

/// Sends the hub's frames until the socket or the stream ends; returns why.
async fn serve(mut socket: WebSocket, hub: Arc<LiveHub>) -> String {
    let Some((queue, backlog)) = hub.subscribe() else {
        let _ = socket.send(close(1001, "server shutting down")).await;
        return "server shutting down".into();
    };
    let mut params: Option<Arc<VideoParams>> = None;
    let why = 'run: {
        for f in &backlog {
            if let Err(e) = send_frame(&mut socket, &mut params, f).await {
                break 'run e;
            }
        }
        let mut ping = tokio::time::interval(RELAY_PING_EVERY);
        loop {
            tokio::select! {
                _ = ping.tick() => {
                    if socket.send(Message::Ping(bytes::Bytes::from_static(b"relay"))).await.is_err() {
                        break 'run "ping failed".to_owned();
                    }
                }
                items = queue.next_batch() => {
                    for item in items {
                        match item {
                            LiveItem::Frame(f) => {
                                if let Err(e) = send_frame(&mut socket, &mut params, &f).await {
                                    break 'run e;
                                }
                            }
                            LiveItem::Dropped(n) => {
                                let t = json!({ "type": "drop", "frames": n }).to_string();
                                if socket.send(Message::Text(t.into())).await.is_err() {
                                    break 'run "send failed".to_owned();
                                }
                            }
                            LiveItem::End { code, reason } => {
                                let _ = socket.send(close(code, &reason)).await;
                                break 'run reason;
                            }
                            LiveItem::Notice(_) => {}
                        }
                    }
                }
                msg = socket.recv() => match msg {
                    None | Some(Err(_)) => break 'run "connection lost".to_owned(),
                    Some(Ok(Message::Close(_))) => break 'run "closed by the relay".to_owned(),
                    Some(Ok(_)) => {}
                }
            }
        }
    };
    queue.leave();
    why
}

async fn send_frame(
    socket: &mut WebSocket,
    params: &mut Option<Arc<VideoParams>>,
    f: &vigie_live::LiveFrame,
) -> Result<(), String> {
    let p = &f.frame.params;
    if !params
        .as_ref()
        .is_some_and(|q| Arc::ptr_eq(q, p) || **q == **p)
    {
        socket
            .send(Message::Text(wire::params_message(p).into()))
            .await
            .map_err(|e| format!("send failed: {e}"))?;
        *params = Some(p.clone());
    }
    socket
        .send(Message::Binary(wire::frame_message(f)))
        .await
        .map_err(|e| format!("send failed: {e}"))
}

#[derive(Debug, serde::Deserialize)]
pub struct StillQuery {
    /// 90 kHz units since the epoch; absent: the latest picture.
    at_90k: Option<i64>,
}

pub async fn still(
    State(state): State<AppState>,
    v: Verified,
    Path((cam, stream)): Path<(String, String)>,
    Query(q): Query<StillQuery>,
) -> Result<Response, ApiError> {
    let entry = state.stream(&cam, &stream)?;
    let at = q.at_90k.map(Time90k);
    let span =
        tracing::info_span!("internal_still", camera = %cam, stream = %stream, to_node = %v.node);
    let jpeg = state.stills.still(&entry.key, at).instrument(span).await?;
    let at = at.unwrap_or_else(|| state.clock.now());
    crate::journal::record(
        &state,
        vigie_audit::NewEntry::new(v.identity.actor.clone(), vigie_audit::Action::Still)
            .camera(&cam, &stream)
            .range(at, at)
            .details(via(&v)),
    )
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        jpeg,
    )
        .into_response())
}

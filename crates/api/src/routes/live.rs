//! `GET /api/v1/cameras/{cam}/streams/{stream}/live`: the live view as fMP4 over a WebSocket.
//! The message protocol is documented in [`vigie_live`]; this module only runs one viewer's
//! socket.
//!
//! An open view checks its rights again every second ([`Rights`]): after a logout, a session
//! expiry, a token revocation, a disabled account or a password change it closes with code
//! [`CLOSE_UNAUTHENTICATED`] (4401); when the user loses `Live` on the camera (role or scope
//! change) with [`CLOSE_FORBIDDEN`] (4403); the reason says why.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use tracing::Instrument;

use crate::{ApiError, AppState};
use vigie_live::{LiveHub, LiveItem, LiveMessage, LiveMuxer, drop_message};

/// Keepalive ping period.
pub(super) const PING_EVERY: Duration = Duration::from_secs(30);
/// At most this many frames per media segment when catching up (the first GOP is one segment).
const MAX_GROUP: usize = 1024;

pub async fn live(
    State(state): State<AppState>,
    who: crate::access::Principal,
    crate::access::Credential(credential): crate::access::Credential,
    Path((cam, stream)): Path<(String, String)>,
    Query(query): Query<LiveQuery>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let entry = state.stream(&cam, &stream)?;
    // Rights (Live on this camera's scope) and the `Origin` = `Host` check (cross-site
    // WebSocket hijacking) were done before the upgrade by crate::access::enforce.
    let ws = ws.map_err(|e| {
        ApiError::BadRequest(format!(
            "the live view is a WebSocket endpoint: {}",
            e.body_text()
        ))
    })?;
    let local = state
        .live
        .hub(&entry.key)
        .ok_or_else(|| ApiError::NotFound(format!("no live view of {}", entry.key)))?;
    // The H.264 fallback: a slot is taken before the upgrade; refused, the socket opens and
    // closes at once with 4000 + the HTTP status (4503 busy or off, 4501 not built) and why,
    // which a browser sees (it sees no HTTP status of a failed upgrade).
    let transcode = match query.transcode.as_deref() {
        None | Some("") => None,
        Some("h264") => Some(state.transcodes.acquire().map_err(ApiError::from)),
        Some(o) => {
            return Err(ApiError::BadRequest(format!(
                "`transcode` must be `h264`, not {o:?}"
            )));
        }
    };
    if let Some(Err(refused)) = transcode {
        let (code, reason) = (refused.close_code(), refused.to_string());
        tracing::info!(camera = %cam, stream = %stream, code, %reason, "live transcode refused");
        return Ok(ws.on_upgrade(move |mut socket| async move {
            let _ = socket.send(close(code, &reason)).await;
        }));
    }
    let slot = transcode.and_then(Result::ok);
    // In a cluster the view goes through a relay that follows the camera to whichever node
    // records it (this one included); rights stay checked here, by `Rights`.
    let (hub, relay) = match state
        .cluster
        .as_ref()
        .and_then(|c| c.live_relay(&entry.key, crate::internal::identity_of(&who)))
    {
        Some(r) => (r.hub, Some(r.guard)),
        None => (local, None),
    };
    let span = tracing::info_span!("live_viewer", camera = %cam, stream = %stream, transcode = slot.is_some());
    // Journaled before the first frame is sent; the stop is journaled when the socket ends.
    let actor = who.actor();
    let mut start_entry = vigie_audit::NewEntry::new(actor.clone(), vigie_audit::Action::LiveStart)
        .camera(&cam, &stream);
    if slot.is_some() {
        start_entry = start_entry.details(serde_json::json!({ "transcode": "h264" }));
    }
    crate::journal::record(&state, start_entry).await?;
    let transcodes = state.transcodes.clone();
    let journal = state.journal.clone();
    let started = state.clock.now();
    let clock = state.clock.clone();
    let rights = Rights {
        state: state.clone(),
        credential,
        camera: cam.clone(),
    };
    Ok(ws.max_message_size(64 << 10).on_upgrade(move |socket| {
        async move {
            // The relay runs while the viewer's socket does.
            let _relay = relay;
            match slot {
                Some(slot) => {
                    super::live_transcode::serve(socket, hub, rights, transcodes, slot).await
                }
                None => serve_viewer(socket, hub, rights).await,
            }
            let entry = vigie_audit::NewEntry::new(actor, vigie_audit::Action::LiveStop)
                .camera(&cam, &stream)
                .range(started, clock.now());
            let _ = tokio::task::spawn_blocking(move || journal.append_or_log(entry)).await;
        }
        .instrument(span)
    }))
}

/// Query parameters of the live view.
#[derive(Debug, serde::Deserialize)]
pub struct LiveQuery {
    /// `h264`: the H.264 fallback (the server re-encodes the stream).
    transcode: Option<String>,
}

/// What a viewer's right to watch rests on, checked again every [`RECHECK_EVERY`]: the
/// credential (session or token) must still stand and its user must still have `Live` on the
/// camera. Watching is not activity: it does not keep an idle session alive.
pub(super) struct Rights {
    state: AppState,
    credential: vigie_auth::Credential,
    camera: String,
}

/// Close code when the credential no longer stands (logout, expiry, revocation, disabled
/// account, password change): like HTTP 401.
pub const CLOSE_UNAUTHENTICATED: u16 = 4401;
/// Close code when the user may no longer watch this camera (role or scope changed): like 403.
pub const CLOSE_FORBIDDEN: u16 = 4403;
/// How often an open live view checks its rights again.
pub(super) const RECHECK_EVERY: Duration = Duration::from_secs(1);

impl Rights {
    /// `Err((close code, reason))` when the viewer must be disconnected.
    pub(super) fn check(&self) -> Result<(), (u16, String)> {
        let p = self.state.auth.recheck(&self.credential).map_err(|e| {
            (
                CLOSE_UNAUTHENTICATED,
                format!("credentials no longer valid: {e}"),
            )
        })?;
        crate::access::Principal(p)
            .require(
                &self.state,
                vigie_auth::Permission::Live,
                Some(&self.camera),
            )
            .map_err(|e| (CLOSE_FORBIDDEN, format!("live view no longer allowed: {e}")))
    }
}

async fn serve_viewer(mut socket: WebSocket, hub: Arc<LiveHub>, rights: Rights) {
    let Some((queue, backlog)) = hub.subscribe() else {
        let _ = socket.send(close(1001, "server shutting down")).await;
        return;
    };
    tracing::info!(viewers = hub.viewers(), "live viewer connected");
    let mut mux = LiveMuxer::new(hub.key().clone());
    let why = run(&mut socket, &queue, &mut mux, backlog, &rights).await;
    queue.leave();
    tracing::info!(why, "live viewer left");
}

/// Runs until the socket or the stream ends; returns why.
async fn run(
    socket: &mut WebSocket,
    queue: &vigie_live::ViewerQueue,
    mux: &mut LiveMuxer,
    backlog: Vec<vigie_live::LiveFrame>,
    rights: &Rights,
) -> String {
    for m in mux.messages(&backlog, MAX_GROUP) {
        if socket.send(ws_message(m)).await.is_err() {
            return "send failed".into();
        }
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut recheck =
        tokio::time::interval_at(tokio::time::Instant::now() + RECHECK_EVERY, RECHECK_EVERY);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = recheck.tick() => {
                if let Err((code, reason)) = rights.check() {
                    tracing::info!(code, %reason, "live viewer disconnected: rights withdrawn");
                    let _ = socket.send(close(code, &reason)).await;
                    return reason;
                }
            }
            items = queue.next_batch() => {
                let mut frames = Vec::new();
                for item in items {
                    match item {
                        LiveItem::Frame(f) => frames.push(f),
                        LiveItem::Dropped(n) => {
                            // Send what came before the gap (unlikely: a drop clears the queue).
                            if let Err(e) = send_frames(socket, mux, &mut frames).await {
                                return e;
                            }
                            tracing::debug!(frames = n, "slow live viewer skipped to a key frame");
                            if socket.send(ws_message(drop_message(n))).await.is_err() {
                                return "send failed".into();
                            }
                        }
                        LiveItem::End { code, reason } => {
                            if let Err(e) = send_frames(socket, mux, &mut frames).await {
                                return e;
                            }
                            let _ = socket.send(close(code, &reason)).await;
                            return reason;
                        }
                        LiveItem::Notice(text) => {
                            if let Err(e) = send_frames(socket, mux, &mut frames).await {
                                return e;
                            }
                            if socket.send(Message::Text(text.into())).await.is_err() {
                                return "send failed".into();
                            }
                        }
                    }
                }
                if let Err(e) = send_frames(socket, mux, &mut frames).await {
                    return e;
                }
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(bytes::Bytes::from_static(b"vigie"))).await.is_err() {
                    return "ping failed".into();
                }
            }
            msg = socket.recv() => match msg {
                None | Some(Err(_)) => return "connection lost".into(),
                Some(Ok(Message::Close(_))) => return "closed by client".into(),
                Some(Ok(_)) => {}
            }
        }
    }
}

/// One media segment per frame (lowest latency).
async fn send_frames(
    socket: &mut WebSocket,
    mux: &mut LiveMuxer,
    frames: &mut Vec<vigie_live::LiveFrame>,
) -> Result<(), String> {
    for f in frames.drain(..) {
        for m in mux.messages(std::slice::from_ref(&f), 1) {
            socket
                .send(ws_message(m))
                .await
                .map_err(|e| format!("send failed: {e}"))?;
        }
    }
    Ok(())
}

/// A live-protocol message as a WebSocket message.
pub(super) fn ws_message(m: LiveMessage) -> Message {
    match m {
        LiveMessage::Text(t) => Message::Text(t.into()),
        LiveMessage::Binary(b) => Message::Binary(b),
    }
}

pub(super) fn close(code: u16, reason: &str) -> Message {
    // A close reason is at most 123 bytes.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: reason[..end].into(),
    }))
}

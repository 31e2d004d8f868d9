//! The live view through the H.264 fallback (`live?transcode=h264`): the stream's frames are
//! decoded and re-encoded by the server ([`vigie_service::Transcodes`], GStreamer) for browsers
//! that cannot decode its codec (H.265 in most Chromium builds), then sent with the same live
//! protocol as the untranscoded view (docs/API.md "Live", "H.264 fallback").
//!
//! Bounds: the transcode holds one of the `[live] max_transcodes` slots while the socket is
//! open; without a free slot the socket closes at once with code 4503 (4501 when built without
//! GStreamer). Input the decoder cannot keep up with is skipped to the next key frame; output
//! the socket cannot keep up with is skipped to the next encoded key frame (a `drop` message
//! says how many frames were lost), so nothing grows without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::extract::ws::{Message, WebSocket};
use vigie_core::{Frame, Time90k};
use vigie_decode::transcode::{Encoded, TranscodeSlot, Transcoder};
use vigie_live::{LiveFrame, LiveHub, LiveItem, LiveMuxer, drop_message};

use super::live::{PING_EVERY, RECHECK_EVERY, Rights, close, ws_message};

/// Encoded frames waiting for the socket before output is skipped to the next key frame.
const OUT_QUEUE_FRAMES: usize = 100;
/// Input waiting for the decoder before input is skipped to the next key frame.
const MAX_INPUT_QUEUED_BYTES: u64 = 8 << 20;
/// Close code when the transcode fails (the server's fault: like WebSocket's 1011).
pub const CLOSE_TRANSCODE_FAILED: u16 = 1011;

/// Runs one transcoded viewer until the socket or the stream ends; `slot` is released then.
pub async fn serve(
    mut socket: WebSocket,
    hub: Arc<LiveHub>,
    rights: Rights,
    transcodes: Arc<dyn vigie_service::Transcodes>,
    slot: TranscodeSlot,
) {
    let Some((queue, backlog)) = hub.subscribe() else {
        let _ = socket.send(close(1001, "server shutting down")).await;
        return;
    };
    tracing::info!(viewers = hub.viewers(), "transcoded live viewer connected");
    let mut v = Viewer {
        mux: LiveMuxer::new(hub.key().clone()),
        transcoder: None,
        rx: None,
        settings: transcodes.settings(),
        masks: transcodes.masks(&hub.key().camera),
        base: None,
        last_pts_90k: None,
        skipping_input: false,
        dropped: Arc::new(AtomicU64::new(0)),
    };
    let why = v.run(&mut socket, &queue, backlog, &rights).await;
    queue.leave();
    // Stopping the pipeline waits for its threads: off the async executor. The slot is freed
    // once it has stopped.
    let _ = tokio::task::spawn_blocking(move || {
        drop(v);
        drop(slot);
    })
    .await;
    tracing::info!(why, "transcoded live viewer left");
}

struct Viewer {
    mux: LiveMuxer,
    transcoder: Option<Transcoder>,
    rx: Option<tokio::sync::mpsc::Receiver<Encoded>>,
    settings: vigie_decode::transcode::TranscodeSettings,
    /// The camera's privacy masks, painted on every transcoded picture.
    masks: Vec<vigie_core::masks::Mask>,
    /// Wall clock of the first frame pushed: input PTS are measured from it.
    base: Option<Time90k>,
    last_pts_90k: Option<u64>,
    /// The decoder fell behind: input is skipped to the next key frame.
    skipping_input: bool,
    /// Frames lost (input or output skipped) not yet reported with a `drop` message.
    dropped: Arc<AtomicU64>,
}

impl Viewer {
    async fn run(
        &mut self,
        socket: &mut WebSocket,
        queue: &vigie_live::ViewerQueue,
        backlog: Vec<LiveFrame>,
        rights: &Rights,
    ) -> String {
        for f in &backlog {
            if let Err(e) = self.push(f) {
                let _ = socket.send(close(CLOSE_TRANSCODE_FAILED, &e)).await;
                return e;
            }
        }
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        let mut recheck =
            tokio::time::interval_at(tokio::time::Instant::now() + RECHECK_EVERY, RECHECK_EVERY);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = recheck.tick() => {
                    if let Err((code, reason)) = rights.check() {
                        tracing::info!(code, %reason, "transcoded viewer disconnected: rights withdrawn");
                        let _ = socket.send(close(code, &reason)).await;
                        return reason;
                    }
                    if let Some(e) = self.transcoder.as_ref().and_then(Transcoder::error) {
                        let reason = format!("transcode failed: {e}");
                        tracing::warn!(%reason, "transcoded live view ends");
                        let _ = socket.send(close(CLOSE_TRANSCODE_FAILED, &reason)).await;
                        return reason;
                    }
                }
                items = queue.next_batch() => {
                    for item in items {
                        match item {
                            LiveItem::Frame(f) => {
                                if let Err(e) = self.push(&f) {
                                    let reason = format!("transcode failed: {e}");
                                    let _ = socket.send(close(CLOSE_TRANSCODE_FAILED, &reason)).await;
                                    return reason;
                                }
                            }
                            LiveItem::Dropped(n) => {
                                // The hub skipped us to a key frame: so does the decoder.
                                self.dropped.fetch_add(n, Ordering::Relaxed);
                            }
                            LiveItem::End { code, reason } => {
                                let _ = socket.send(close(code, &reason)).await;
                                return reason;
                            }
                            LiveItem::Notice(text) => {
                                if socket.send(Message::Text(text.into())).await.is_err() {
                                    return "send failed".into();
                                }
                            }
                        }
                    }
                }
                e = recv(&mut self.rx) => {
                    let Some(e) = e else {
                        let reason = "transcode ended".to_owned();
                        let _ = socket.send(close(CLOSE_TRANSCODE_FAILED, &reason)).await;
                        return reason;
                    };
                    if let Err(e) = self.send(socket, e).await {
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

    /// Feeds one camera frame to the decoder (started at the first key frame).
    fn push(&mut self, f: &LiveFrame) -> Result<(), String> {
        if self.transcoder.is_none() {
            if !f.frame.is_key {
                return Ok(());
            }
            let (tx, rx) = tokio::sync::mpsc::channel::<Encoded>(OUT_QUEUE_FRAMES);
            let dropped = self.dropped.clone();
            let skipping = AtomicBool::new(false);
            let out = Box::new(move |e: Encoded| {
                if skipping.load(Ordering::Relaxed) && !e.is_key {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                match tx.try_send(e) {
                    Ok(()) => {
                        skipping.store(false, Ordering::Relaxed);
                        true
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                        // The socket is too slow: resume at the next key frame.
                        dropped.fetch_add(1, Ordering::Relaxed);
                        skipping.store(true, Ordering::Relaxed);
                        true
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
            let t = Transcoder::new(&f.frame.params, &self.settings, &self.masks, true, out)
                .map_err(|e| e.to_string())?;
            self.transcoder = Some(t);
            self.rx = Some(rx);
            self.base = Some(f.wall);
        }
        let Some(t) = self.transcoder.as_mut() else {
            return Ok(());
        };
        if t.queued_bytes() > MAX_INPUT_QUEUED_BYTES {
            self.skipping_input = true;
        }
        if self.skipping_input {
            if !f.frame.is_key {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            self.skipping_input = false;
        }
        let base = self.base.unwrap_or(f.wall);
        // Input timestamps from the wall clock, kept increasing across camera reconnects.
        let mut pts = u64::try_from((f.wall - base).0).unwrap_or(0);
        if let Some(last) = self.last_pts_90k
            && pts <= last
        {
            pts = last + 1;
        }
        self.last_pts_90k = Some(pts);
        t.push(&f.frame, pts, f.duration_90k)
            .map_err(|e| e.to_string())
    }

    /// Sends one encoded frame as a media segment (after a `drop` message if frames were lost).
    async fn send(&mut self, socket: &mut WebSocket, e: Encoded) -> Result<(), String> {
        let n = self.dropped.swap(0, Ordering::Relaxed);
        if n > 0 && socket.send(ws_message(drop_message(n))).await.is_err() {
            return Err("send failed".into());
        }
        let base = self.base.unwrap_or_default();
        let wall = Time90k(base.0 + i64::try_from(e.pts_90k).unwrap_or(0));
        let lf = LiveFrame {
            duration_90k: e.duration_90k.filter(|d| *d > 0).unwrap_or(3600),
            frame: Frame {
                data: e.data,
                is_key: e.is_key,
                media_90k: i64::try_from(e.pts_90k).unwrap_or(0),
                recv: wall,
                params: e.params,
                session_id: 0,
            },
            wall,
        };
        for m in self.mux.messages(std::slice::from_ref(&lf), 1) {
            socket
                .send(ws_message(m))
                .await
                .map_err(|e| format!("send failed: {e}"))?;
        }
        Ok(())
    }
}

/// The next encoded frame, or never before the transcoder starts.
async fn recv(rx: &mut Option<tokio::sync::mpsc::Receiver<Encoded>>) -> Option<Encoded> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

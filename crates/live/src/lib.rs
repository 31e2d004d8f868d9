//! Live view: a per-stream hub fed by ingest that fans frames out to viewers, and the muxer that
//! turns a viewer's frames into the messages of the live protocol ([`LiveMessage`]). The HTTP
//! layer (`vigie-api`) only carries these messages over a WebSocket.
//!
//! # Data path
//!
//! The binary wraps each stream's store writer in a [`TeeSink`], so every [`StreamEvent`] goes to
//! the writer *and* to the stream's [`LiveHub`]. [`LiveHub::push`] runs on the RTSP read loop: it
//! never blocks (one short, uncontended `std::sync::Mutex` section, no I/O, no await) and never
//! copies frame bytes (`Bytes` and `Arc<VideoParams>` clones are reference counts). All viewers
//! share the same frame `Bytes`.
//!
//! The hub holds back each frame until the next one arrives, to know its exact duration (one
//! frame of added latency, 40 ms at 25 fps). While the stream is watched — a viewer is connected,
//! or one was, or a still was asked for, in the last [`GOP_LINGER`] — it keeps the frames since
//! the latest key frame (the current GOP, at most [`MAX_GOP_FRAMES`] / [`MAX_GOP_BYTES`]), so a
//! new viewer starts at the most recent key frame and sees a picture at once. A stream nobody
//! watches keeps no GOP: the first viewer starts at the next key frame (at most one GOP later,
//! ≤ 2 s for a camera sending a key frame every 2 s). That GOP was most of Vigie's memory per
//! recorded stream: ~0.26 MiB on average and 0.5 MiB at its peak at 2 Mbit/s, 0.5 and 1 MiB at
//! 4 Mbit/s (GOP 50 at 25 fps), held for every camera although few are watched at any time (see
//! docs/BENCHMARKS.md, "Ingest"). Each viewer has a bounded queue ([`MAX_QUEUE_FRAMES`] /
//! [`MAX_QUEUE_BYTES`]); a viewer whose queue is full (it reads slower than the camera sends)
//! loses its queued frames and resumes at the next key frame, and is told how many frames it
//! missed. Memory per stream is therefore one GOP while watched, plus at most one queue per
//! viewer.
//!
//! # WebSocket protocol (`GET /api/v1/cameras/{cam}/streams/{stream}/live`)
//!
//! Server → client, in order:
//! 1. text `{"type":"init","codec":"avc1.42C01E","mime":"video/mp4; codecs=\"avc1.42C01E\"",
//!    "width":640,"height":360}`, then one **binary** message: the fMP4 init segment
//!    (`ftyp` + `moov`, one video track, timescale 90 kHz). Feed it to MSE
//!    (`MediaSource.addSourceBuffer(mime)`, `appendBuffer`). Sent again (text + binary) whenever
//!    the camera's codec parameters change.
//! 2. For each media segment, text `{"type":"media","dts_90k":D,"duration_90k":N,"frames":F,
//!    "key":true,"wall":"2026-11-28T21:00:00.040Z","wall_ms":1795899600040}` announcing it, then
//!    one **binary** message: `moof` + `mdat`. `dts_90k` is the segment's `tfdt` (decode time in
//!    90 kHz units, starting at 0 for each viewer and continuous: no gaps even after a drop or a
//!    camera reconnect). `wall`/`wall_ms` are the host wall-clock time of the segment's first
//!    frame (estimated capture time), so a client can show the clock and compute its latency as
//!    `now − (wall_ms + (currentTime·1000 − dts_90k/90))`. The first media segment starts with a
//!    key frame and holds the frames since the most recent key frame (or, on a stream nobody
//!    watched in the last [`GOP_LINGER`], the next key frame alone); after that, one frame per
//!    segment. The init is sent just before the first media segment.
//! 3. text `{"type":"drop","frames":N}` when the client was too slow: N frames were skipped and
//!    the next media segment starts at a key frame.
//! 4. A WebSocket ping every 30 s (browsers answer automatically).
//! 5. A close frame when the stream stops: code 4000 and reason `stream stopped: <why>` when the
//!    camera session ends (the client may reconnect; the stream resumes when ingest reconnects),
//!    1001 `server shutting down` when Vigie stops.
//!
//! Messages from the client are ignored (except close). Unknown camera or stream: 404 JSON before
//! the upgrade. A request that is not a WebSocket upgrade: 400 JSON.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;
use vigie_core::{Frame, FrameSink, StreamEvent, StreamKey, Time90k, VideoParams};
use vigie_mp4::{SampleInfo, SegmentMeta};

pub mod wire;

/// The current GOP is kept for this long after the stream was last watched (a viewer connected,
/// or a still asked for): a player that reconnects, or an operator who comes back to a camera
/// within a minute, starts at once; past it the GOP's memory (up to ~1 MiB per 4 Mbit/s camera)
/// goes back. Measured at each key frame, so a GOP may be kept up to one GOP longer.
pub const GOP_LINGER: Duration = Duration::from_secs(60);
/// The current GOP kept for new viewers is dropped (they wait for the next key frame) beyond
/// this many frames…
pub const MAX_GOP_FRAMES: usize = 900;
/// …or bytes.
pub const MAX_GOP_BYTES: usize = 16 << 20;
/// A viewer that has this many frames waiting (≈ 4 s at 25 fps) is skipped to the next key
/// frame…
pub const MAX_QUEUE_FRAMES: usize = 100;
/// …or this many bytes.
pub const MAX_QUEUE_BYTES: usize = 8 << 20;

/// Frame durations outside (0, 10 s] are replaced by the previous duration (timestamp jump).
const MAX_FRAME_DURATION_90K: i64 = 900_000;
/// Used before any duration is known (25 fps).
const DEFAULT_DURATION_90K: u32 = 3_600;

/// Close code sent when the camera session ends (application range 4000-4999).
pub const CLOSE_STREAM_STOPPED: u16 = 4000;
/// Close code sent when Vigie shuts down ("going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// A frame as the live hub publishes it: with its exact duration and wall-clock time.
#[derive(Clone, Debug)]
pub struct LiveFrame {
    pub frame: Frame,
    pub duration_90k: u32,
    /// Estimated capture time on the host clock.
    pub wall: Time90k,
}

/// What a viewer's queue carries.
#[derive(Clone, Debug)]
pub enum LiveItem {
    Frame(LiveFrame),
    /// `n` frames were skipped; the next frame is a key frame.
    Dropped(u64),
    /// The stream stopped: close the socket with this code and reason.
    End {
        code: u16,
        reason: String,
    },
    /// A text message of the live protocol for the viewer (JSON), e.g. a relay saying that it
    /// follows the camera to another recorder ([`LiveHub::notice`]).
    Notice(String),
}

/// Fans the frames of one stream out to its live viewers. See the module documentation.
pub struct LiveHub {
    key: StreamKey,
    state: Mutex<HubState>,
}

#[derive(Default)]
struct HubState {
    /// The latest frame, waiting for the next one to know its duration; with its wall time.
    pending: Option<(Frame, Time90k)>,
    last_duration_90k: Option<u32>,
    /// Session whose clock `wall_base_90k` estimates.
    session: Option<u64>,
    /// min over the session's frames of (receive time − media time): cancels receive jitter.
    wall_base_90k: i64,
    /// Frames since the latest key frame while the stream is watched (`keep_gop`); empty until
    /// a key frame is seen, and while nobody watches.
    gop: Vec<LiveFrame>,
    gop_bytes: usize,
    /// Decided at each key frame: the stream was watched in the last [`GOP_LINGER`].
    keep_gop: bool,
    /// Last time the stream was watched: a viewer subscribed, or was connected at a key frame,
    /// or a still asked for the current GOP.
    watched_at: Option<Instant>,
    viewers: Vec<Arc<ViewerQueue>>,
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the state half-updated in a way that
    // matters more than losing live view; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LiveHub {
    pub fn new(key: StreamKey) -> Arc<LiveHub> {
        Arc::new(LiveHub {
            key,
            state: Mutex::new(HubState::default()),
        })
    }

    pub fn key(&self) -> &StreamKey {
        &self.key
    }

    /// Number of connected viewers.
    pub fn viewers(&self) -> usize {
        let mut st = lock(&self.state);
        // Forget the viewers that left since the last frame (a relay hub may see no frame
        // for a while).
        st.viewers.retain(|v| !lock(&v.inner).gone);
        st.viewers.len()
    }

    /// A new viewer: its queue, and the frames since the latest key frame (empty if none yet,
    /// or if nobody watched the stream in the last [`GOP_LINGER`]: the queue then starts at the
    /// next key frame). Taken atomically, so nothing is missed or sent twice. `None` once the
    /// hub is closed (Vigie is stopping).
    pub fn subscribe(&self) -> Option<(Arc<ViewerQueue>, Vec<LiveFrame>)> {
        let mut st = lock(&self.state);
        if st.closed {
            return None;
        }
        st.watched();
        let backlog = st.gop.clone();
        let q = Arc::new(ViewerQueue::new(backlog.is_empty()));
        st.viewers.push(q.clone());
        Some((q, backlog))
    }

    /// The frames since the latest key frame (for a "latest" still); empty when the hub keeps
    /// no GOP (nobody watched the stream in the last [`GOP_LINGER`]), but the call counts as
    /// watching: the hub keeps the GOP from the next key frame on (see
    /// [`LiveHub::latest_gop`]).
    pub fn current_gop(&self) -> Vec<LiveFrame> {
        let mut st = lock(&self.state);
        st.watched();
        let mut gop = st.gop.clone();
        // The held-back frame is the newest picture; its duration does not matter here.
        if let Some((f, wall)) = &st.pending
            && (!gop.is_empty() || f.is_key)
        {
            if f.is_key {
                gop.clear();
            }
            gop.push(LiveFrame {
                frame: f.clone(),
                duration_90k: st.last_duration_90k.unwrap_or(DEFAULT_DURATION_90K),
                wall: *wall,
            });
        }
        gop
    }

    /// The current GOP as [`LiveHub::current_gop`]; if the hub keeps none while the camera is
    /// streaming, waits (at most `wait`) for the next key frame and returns it alone, which
    /// decodes by itself. Empty when the stream is offline or no key frame came in time.
    pub async fn latest_gop(&self, wait: Duration) -> Vec<LiveFrame> {
        let gop = self.current_gop();
        if !gop.is_empty() || lock(&self.state).session.is_none() {
            return gop;
        }
        let Some((queue, backlog)) = self.subscribe() else {
            return Vec::new();
        };
        if !backlog.is_empty() {
            queue.leave();
            return backlog;
        }
        let mut out = Vec::new();
        let _ = tokio::time::timeout(wait, async {
            loop {
                for item in queue.next_batch().await {
                    match item {
                        // The queue of a viewer that joined without a backlog starts at a key
                        // frame.
                        LiveItem::Frame(f) => {
                            out.push(f);
                            return;
                        }
                        LiveItem::End { .. } => return,
                        LiveItem::Dropped(_) | LiveItem::Notice(_) => {}
                    }
                }
            }
        })
        .await;
        queue.leave();
        out
    }

    /// Ends every viewer's socket with `reason` and refuses new ones (server shutdown).
    pub fn close(&self, reason: &str) {
        let mut st = lock(&self.state);
        st.closed = true;
        for v in st.viewers.drain(..) {
            v.end(CLOSE_GOING_AWAY, reason);
        }
    }

    /// Publishes a frame whose duration and wall-clock time are already known: a frame relayed
    /// from the hub of another node (a cluster node serving a camera another node records; see
    /// [`wire`]). No frame is held back (the sender knew its duration).
    pub fn relay(&self, lf: LiveFrame) {
        let mut st = lock(&self.state);
        st.session = Some(lf.frame.session_id);
        st.last_duration_90k = Some(lf.duration_90k);
        st.publish(lf);
    }

    /// Queues a text message of the live protocol for every viewer (it does not count against
    /// their frame bounds; a relay sends at most one a second).
    pub fn notice(&self, text: String) {
        let st = lock(&self.state);
        for v in &st.viewers {
            v.notice(&text);
        }
    }

    /// Ends every viewer's socket with `code` and `reason`; the hub stays open (a relay that
    /// found no recorder to follow the camera to).
    pub fn end_viewers(&self, code: u16, reason: &str) {
        let mut st = lock(&self.state);
        st.gop.clear();
        st.gop_bytes = 0;
        st.session = None;
        for v in st.viewers.drain(..) {
            v.end(code, reason);
        }
    }

    fn on_frame(&self, frame: Frame) {
        let mut st = lock(&self.state);
        if st.session != Some(frame.session_id) {
            st.session = Some(frame.session_id);
            st.wall_base_90k = frame.recv.0.saturating_sub(frame.media_90k);
        } else {
            st.wall_base_90k = st
                .wall_base_90k
                .min(frame.recv.0.saturating_sub(frame.media_90k));
        }
        let wall = Time90k(st.wall_base_90k.saturating_add(frame.media_90k));
        if let Some((prev, prev_wall)) = st.pending.take() {
            let d = frame.media_90k.saturating_sub(prev.media_90k);
            let duration =
                if prev.session_id == frame.session_id && d > 0 && d <= MAX_FRAME_DURATION_90K {
                    d as u32
                } else {
                    st.last_duration_90k.unwrap_or(DEFAULT_DURATION_90K)
                };
            st.last_duration_90k = Some(duration);
            st.publish(LiveFrame {
                frame: prev,
                duration_90k: duration,
                wall: prev_wall,
            });
        }
        st.pending = Some((frame, wall));
    }

    fn on_session_end(&self, reason: &str) {
        let mut st = lock(&self.state);
        if let Some((prev, wall)) = st.pending.take() {
            let duration = st.last_duration_90k.unwrap_or(DEFAULT_DURATION_90K);
            st.publish(LiveFrame {
                frame: prev,
                duration_90k: duration,
                wall,
            });
        }
        st.gop.clear();
        st.gop_bytes = 0;
        st.session = None;
        let reason = format!("stream stopped: {reason}");
        for v in st.viewers.drain(..) {
            v.end(CLOSE_STREAM_STOPPED, &reason);
        }
    }
}

impl HubState {
    fn watched(&mut self) {
        self.watched_at = Some(Instant::now());
    }

    fn publish(&mut self, lf: LiveFrame) {
        let len = lf.frame.data.len();
        if lf.frame.is_key {
            self.gop.clear();
            self.gop_bytes = 0;
            // Decided once per GOP (one clock read per key frame, not per frame).
            if !self.viewers.is_empty() {
                self.watched();
            }
            let keep = self.watched_at.is_some_and(|t| t.elapsed() < GOP_LINGER);
            if self.keep_gop && !keep {
                // Give the memory of the Vec back too (a GOP of 50 frames: ~4 KiB).
                self.gop = Vec::new();
            }
            self.keep_gop = keep;
        }
        if self.keep_gop && (lf.frame.is_key || !self.gop.is_empty()) {
            if self.gop.len() >= MAX_GOP_FRAMES || self.gop_bytes + len > MAX_GOP_BYTES {
                // Absurdly long GOP: new viewers wait for the next key frame instead.
                self.gop.clear();
                self.gop_bytes = 0;
            } else {
                self.gop_bytes += len;
                self.gop.push(lf.clone());
            }
        }
        self.viewers.retain(|v| v.offer(&lf));
    }
}

impl FrameSink for LiveHub {
    fn push(&self, event: StreamEvent) {
        match event {
            StreamEvent::Frame(f) => self.on_frame(f),
            StreamEvent::SessionEnded { reason, .. } => self.on_session_end(&reason),
        }
    }
}

/// Sends every event to two sinks (the store's writer, then the live hub). Never blocks if they
/// don't; clones of events are reference-count increments.
pub struct TeeSink {
    pub first: Arc<dyn FrameSink>,
    pub second: Arc<dyn FrameSink>,
}

impl FrameSink for TeeSink {
    fn push(&self, event: StreamEvent) {
        self.first.push(event.clone());
        self.second.push(event);
    }
}

/// One viewer's bounded queue, filled by the hub, drained by the viewer's socket task.
pub struct ViewerQueue {
    inner: Mutex<QueueInner>,
    notify: Notify,
}

struct QueueInner {
    items: VecDeque<LiveItem>,
    bytes: usize,
    frames: usize,
    /// Waiting for a key frame (after an overflow, or before the first key frame).
    skipping: bool,
    /// Frames skipped since the last `Dropped` marker was queued.
    dropped: u64,
    ended: bool,
    /// The socket task has gone (the hub forgets the viewer at the next frame).
    gone: bool,
}

impl ViewerQueue {
    fn new(wait_for_key: bool) -> ViewerQueue {
        ViewerQueue {
            inner: Mutex::new(QueueInner {
                items: VecDeque::new(),
                bytes: 0,
                frames: 0,
                skipping: wait_for_key,
                dropped: 0,
                ended: false,
                gone: false,
            }),
            notify: Notify::new(),
        }
    }

    /// Queues a frame; false if the viewer is gone (the hub then forgets it).
    fn offer(&self, lf: &LiveFrame) -> bool {
        let mut q = lock(&self.inner);
        if q.gone || q.ended {
            return false;
        }
        let len = lf.frame.data.len();
        if q.skipping {
            if !lf.frame.is_key {
                // Before the first key frame nothing was promised, so nothing is "dropped".
                if q.dropped > 0 || !q.items.is_empty() {
                    q.dropped += 1;
                }
                return true;
            }
            q.skipping = false;
        } else if q.frames >= MAX_QUEUE_FRAMES || q.bytes + len > MAX_QUEUE_BYTES {
            // Too slow: forget what it has not read and resume at a key frame.
            let mut n = 0;
            for item in q.items.drain(..) {
                match item {
                    LiveItem::Frame(_) => n += 1,
                    LiveItem::Dropped(d) => n += d,
                    LiveItem::End { .. } | LiveItem::Notice(_) => {}
                }
            }
            q.dropped += n;
            q.bytes = 0;
            q.frames = 0;
            if !lf.frame.is_key {
                q.dropped += 1;
                q.skipping = true;
                return true;
            }
        }
        if q.dropped > 0 {
            let n = std::mem::take(&mut q.dropped);
            q.items.push_back(LiveItem::Dropped(n));
        }
        q.bytes += len;
        q.frames += 1;
        q.items.push_back(LiveItem::Frame(lf.clone()));
        drop(q);
        self.notify.notify_one();
        true
    }

    fn end(&self, code: u16, reason: &str) {
        let mut q = lock(&self.inner);
        q.ended = true;
        q.items.push_back(LiveItem::End {
            code,
            reason: reason.to_owned(),
        });
        drop(q);
        self.notify.notify_one();
    }

    fn notice(&self, text: &str) {
        let mut q = lock(&self.inner);
        if q.gone || q.ended {
            return;
        }
        q.items.push_back(LiveItem::Notice(text.to_owned()));
        drop(q);
        self.notify.notify_one();
    }

    /// Waits for items and takes them all.
    pub async fn next_batch(&self) -> Vec<LiveItem> {
        loop {
            {
                let mut q = lock(&self.inner);
                if !q.items.is_empty() {
                    q.bytes = 0;
                    q.frames = 0;
                    return q.items.drain(..).collect();
                }
            }
            // `notify_one` stores a permit when nobody waits: no wake-up is lost.
            self.notify.notified().await;
        }
    }

    /// The socket task is leaving.
    pub fn leave(&self) {
        let mut q = lock(&self.inner);
        q.gone = true;
        q.items.clear();
    }
}

/// One message of the live protocol: a WebSocket text or binary message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveMessage {
    Text(String),
    Binary(Bytes),
}

/// Turns a viewer's frames into WebSocket messages (see the protocol in the module docs).
pub struct LiveMuxer {
    key: StreamKey,
    params: Option<Arc<VideoParams>>,
    sequence: u32,
    next_dts_90k: u64,
}

impl LiveMuxer {
    pub fn new(key: StreamKey) -> LiveMuxer {
        LiveMuxer {
            key,
            params: None,
            sequence: 0,
            next_dts_90k: 0,
        }
    }

    /// Messages for `frames` (in order; the first one is a key frame): an init when the codec
    /// parameters change, then media segments of runs of frames with the same parameters (at
    /// most `max_group` frames each).
    pub fn messages(&mut self, frames: &[LiveFrame], max_group: usize) -> Vec<LiveMessage> {
        let mut out = Vec::new();
        let mut rest = frames;
        while let Some(first) = rest.first() {
            let same = |p: &Arc<VideoParams>| {
                Arc::ptr_eq(p, &first.frame.params) || **p == *first.frame.params
            };
            if !self.params.as_ref().is_some_and(same) {
                out.extend(self.init(first));
            }
            let n = rest
                .iter()
                .take(max_group.max(1))
                .take_while(|f| same(&f.frame.params))
                .count()
                .max(1);
            let (group, tail) = rest.split_at(n);
            out.extend(self.media(group));
            rest = tail;
        }
        out
    }

    fn init(&mut self, first: &LiveFrame) -> [LiveMessage; 2] {
        let p = &first.frame.params;
        self.params = Some(p.clone());
        let codec = &p.rfc6381_codec;
        let text = serde_json::json!({
            "type": "init",
            "codec": codec,
            "mime": format!("video/mp4; codecs=\"{codec}\""),
            "width": p.width,
            "height": p.height,
        });
        let init = vigie_mp4::init_segment(
            p,
            &SegmentMeta {
                camera: self.key.camera.clone(),
                stream: self.key.stream.clone(),
                segment_id: 0,
                start_90k: first.wall.0,
                session_id: first.frame.session_id,
            },
        );
        [
            LiveMessage::Text(text.to_string()),
            LiveMessage::Binary(Bytes::from(init)),
        ]
    }

    fn media(&mut self, group: &[LiveFrame]) -> [LiveMessage; 2] {
        let samples: Vec<SampleInfo> = group
            .iter()
            .map(|f| SampleInfo {
                duration_90k: f.duration_90k,
                bytes: u32::try_from(f.frame.data.len()).unwrap_or(u32::MAX),
                is_key: f.frame.is_key,
            })
            .collect();
        self.sequence = self.sequence.wrapping_add(1);
        let header = vigie_mp4::fragment_header(self.sequence, self.next_dts_90k, &samples);
        let payload: usize = group.iter().map(|f| f.frame.data.len()).sum();
        // The one copy per viewer: a WebSocket message is one buffer (tungstenite copies it into
        // its write buffer anyway).
        let mut buf = Vec::with_capacity(header.len() + payload);
        buf.extend_from_slice(&header);
        for f in group {
            buf.extend_from_slice(&f.frame.data);
        }
        let duration: u64 = samples.iter().map(|s| u64::from(s.duration_90k)).sum();
        let wall = group.first().map(|f| f.wall).unwrap_or_default();
        let text = serde_json::json!({
            "type": "media",
            "dts_90k": self.next_dts_90k,
            "duration_90k": duration,
            "frames": group.len(),
            "key": group.first().is_some_and(|f| f.frame.is_key),
            "wall": wall.to_rfc3339(),
            "wall_ms": wall.0.div_euclid(90),
        });
        self.next_dts_90k += duration;
        [
            LiveMessage::Text(text.to_string()),
            LiveMessage::Binary(Bytes::from(buf)),
        ]
    }
}

/// `{"type":"drop","frames":N}`.
pub fn drop_message(n: u64) -> LiveMessage {
    LiveMessage::Text(serde_json::json!({ "type": "drop", "frames": n }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigie_core::Codec;

    fn params() -> Arc<VideoParams> {
        Arc::new(VideoParams {
            codec: Codec::H264,
            rfc6381_codec: "avc1.42C01E".into(),
            width: 64,
            height: 48,
            pixel_aspect_ratio: (1, 1),
            sample_entry: Bytes::from_static(b"\0\0\0\x08avc1"),
        })
    }

    fn frame(i: i64, key: bool, p: &Arc<VideoParams>, data: &Bytes) -> StreamEvent {
        StreamEvent::Frame(Frame {
            data: data.clone(),
            is_key: key,
            media_90k: i * 3600,
            recv: Time90k(1_000_000 + i * 3600),
            params: p.clone(),
            session_id: 1,
        })
    }

    fn frames(items: &[LiveItem]) -> Vec<&LiveFrame> {
        items
            .iter()
            .filter_map(|i| match i {
                LiveItem::Frame(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn new_viewer_starts_at_latest_key_frame_and_shares_bytes() {
        let hub = LiveHub::new(StreamKey::new("c", "s"));
        let p = params();
        let data = Bytes::from(vec![7u8; 1000]);
        // Watched (a still asked for): the hub keeps the GOP from the next key frame.
        assert!(hub.current_gop().is_empty());
        for i in 0..8 {
            hub.push(frame(i, i % 5 == 0, &p, &data));
        }
        // Published: 0..=6 (7 is held back); GOP = 5, 6.
        let (q, backlog) = hub.subscribe().unwrap();
        assert_eq!(backlog.len(), 2);
        assert!(backlog[0].frame.is_key);
        assert_eq!(backlog[0].duration_90k, 3600);
        assert_eq!(backlog[0].frame.data.as_ptr(), data.as_ptr(), "no copy");
        hub.push(frame(8, false, &p, &data));
        let got = q.next_batch().await;
        assert_eq!(frames(&got).len(), 1);
        assert_eq!(frames(&got)[0].frame.media_90k, 7 * 3600);
        assert_eq!(hub.current_gop().len(), 4); // 5, 6, 7 + held-back 8
    }

    #[tokio::test]
    async fn a_relay_hub_publishes_timed_frames_at_once_notices_and_ends_its_viewers() {
        let hub = LiveHub::new(StreamKey::new("c", "s"));
        let p = params();
        let data = Bytes::from(vec![3u8; 10]);
        let (q, _) = hub.subscribe().unwrap();
        let (q2, _) = hub.subscribe().unwrap();
        assert_eq!(hub.viewers(), 2);
        q2.leave();
        assert_eq!(
            hub.viewers(),
            1,
            "a viewer that left is forgotten without a frame"
        );
        let lf = |i: i64, key: bool| LiveFrame {
            frame: Frame {
                data: data.clone(),
                is_key: key,
                media_90k: i * 3000,
                recv: Time90k(i),
                params: p.clone(),
                session_id: 9,
            },
            duration_90k: 3000,
            wall: Time90k(5_000 + i),
        };
        // Not held back: the sender knew each frame's duration.
        hub.relay(lf(0, true));
        hub.notice("{\"type\":\"recorder\"}".into());
        hub.relay(lf(1, false));
        let got = q.next_batch().await;
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(matches!(&got[1], LiveItem::Notice(t) if t.contains("recorder")));
        assert_eq!(frames(&got)[1].duration_90k, 3000);
        assert_eq!(frames(&got)[1].wall, Time90k(5_001));
        hub.end_viewers(4502, "gone");
        let got = q.next_batch().await;
        assert!(matches!(&got[0], LiveItem::End { code: 4502, reason } if reason == "gone"));
        assert_eq!(hub.viewers(), 0);
        // The hub stays open.
        assert!(hub.subscribe().is_some());
    }

    #[tokio::test]
    async fn slow_viewer_is_skipped_to_next_key_frame() {
        let hub = LiveHub::new(StreamKey::new("c", "s"));
        let p = params();
        let data = Bytes::from(vec![1u8; 100]);
        let _ = hub.current_gop(); // watched: the GOP is kept
        hub.push(frame(0, true, &p, &data));
        hub.push(frame(1, false, &p, &data));
        let (q, backlog) = hub.subscribe().unwrap();
        assert_eq!(backlog.len(), 1);
        // Never reads while 300 frames go by (key frame every 50).
        for i in 2..302 {
            hub.push(frame(i, i % 50 == 0, &p, &data));
        }
        let got = q.next_batch().await;
        let LiveItem::Dropped(n) = &got[0] else {
            panic!("expected a drop first, got {got:?}")
        };
        assert!(*n > 0);
        let fs = frames(&got);
        assert!(fs[0].frame.is_key, "resumes at a key frame");
        assert!(fs.len() <= MAX_QUEUE_FRAMES);
        // Frames accounted: dropped + queued = published since subscribing (1..=300).
        assert_eq!(*n as usize + fs.len(), 300);
    }

    #[tokio::test]
    async fn unwatched_stream_keeps_no_gop_and_its_first_viewer_starts_at_the_next_key_frame() {
        let hub = LiveHub::new(StreamKey::new("c", "s"));
        let p = params();
        let data = Bytes::from(vec![3u8; 500]);
        for i in 0..8 {
            hub.push(frame(i, i % 5 == 0, &p, &data));
        }
        assert!(
            lock(&hub.state).gop.is_empty(),
            "nobody watches: no GOP held"
        );
        let (q1, backlog) = hub.subscribe().unwrap();
        assert!(backlog.is_empty());
        for i in 8..14 {
            hub.push(frame(i, i % 5 == 0, &p, &data));
        }
        // Published 7..=12: the viewer's queue starts at key frame 10, nothing reported dropped.
        let got = q1.next_batch().await;
        assert!(
            got.iter().all(|i| matches!(i, LiveItem::Frame(_))),
            "{got:?}"
        );
        let fs = frames(&got);
        assert_eq!(fs.len(), 3);
        assert!(fs[0].frame.is_key);
        assert_eq!(fs[0].frame.media_90k, 10 * 3600);
        // Now watched: a second viewer joining mid-GOP gets the GOP at once.
        let (_q2, backlog) = hub.subscribe().unwrap();
        assert_eq!(backlog.len(), 3);
        assert!(backlog[0].frame.is_key);
        // After the first viewer leaves, the GOP is still kept (for `GOP_LINGER`).
        q1.leave();
        for i in 14..22 {
            hub.push(frame(i, i % 5 == 0, &p, &data));
        }
        assert_eq!(hub.current_gop().len(), 2, "20 and the held-back 21");
    }

    #[tokio::test]
    async fn latest_gop_waits_for_the_next_key_frame_when_none_is_kept() {
        let hub = LiveHub::new(StreamKey::new("c", "s"));
        let p = params();
        let data = Bytes::from(vec![5u8; 200]);
        // Offline: nothing to wait for.
        let offline = LiveHub::new(StreamKey::new("c", "offline"));
        assert!(offline.latest_gop(Duration::from_secs(5)).await.is_empty());
        for i in 0..3 {
            hub.push(frame(i, i == 0, &p, &data));
        }
        let feeder = {
            let hub = hub.clone();
            let (p, data) = (p.clone(), data.clone());
            tokio::spawn(async move {
                for i in 3..12 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    hub.push(frame(i, i % 5 == 0, &p, &data));
                }
            })
        };
        let gop = hub.latest_gop(Duration::from_secs(5)).await;
        assert_eq!(gop.len(), 1, "{gop:?}");
        assert!(gop[0].frame.is_key);
        assert_eq!(gop[0].frame.media_90k, 5 * 3600);
        feeder.await.unwrap();
        // The request counted as watching: the GOP is kept from then on, and the still's
        // viewer queue is gone.
        assert_eq!(hub.current_gop().len(), 2, "10 and the held-back 11");
        hub.push(frame(12, false, &p, &data));
        assert_eq!(hub.viewers(), 0);
    }

    #[tokio::test]
    async fn session_end_closes_viewers() {
        let hub = LiveHub::new(StreamKey::new("c", "s"));
        let p = params();
        let data = Bytes::from(vec![1u8; 10]);
        hub.push(frame(0, true, &p, &data));
        let (q, _) = hub.subscribe().unwrap();
        hub.push(StreamEvent::SessionEnded {
            session_id: 1,
            reason: "camera gone".into(),
        });
        let got = q.next_batch().await;
        assert!(
            matches!(got.last(), Some(LiveItem::End { code: CLOSE_STREAM_STOPPED, reason }) if reason.contains("camera gone")),
            "{got:?}"
        );
        assert_eq!(hub.viewers(), 0);
        assert!(hub.current_gop().is_empty());
    }

    #[test]
    fn muxer_sends_init_then_continuous_media() {
        let p = params();
        let data = Bytes::from(vec![0u8; 10]);
        let lf = |i: i64, key| LiveFrame {
            frame: Frame {
                data: data.clone(),
                is_key: key,
                media_90k: i * 3600,
                recv: Time90k(0),
                params: p.clone(),
                session_id: 1,
            },
            duration_90k: 3600,
            wall: Time90k(90_000),
        };
        let mut m = LiveMuxer::new(StreamKey::new("c", "s"));
        let msgs = m.messages(&[lf(0, true), lf(1, false), lf(2, false)], 64);
        assert_eq!(msgs.len(), 4, "init text + init + media text + media");
        let LiveMessage::Text(t) = &msgs[2] else {
            panic!()
        };
        assert!(t.as_str().contains("\"dts_90k\":0"), "{}", t.as_str());
        let msgs = m.messages(&[lf(3, false)], 64);
        assert_eq!(msgs.len(), 2);
        let LiveMessage::Text(t) = &msgs[0] else {
            panic!()
        };
        assert!(t.as_str().contains("\"dts_90k\":10800"), "{}", t.as_str());
    }
}

//! Per-stream status: what the API, metrics and health checks show about a stream.
//!
//! The ingest task updates a [`StatusCell`] (one short `std::sync::Mutex` critical section per
//! frame, never held across I/O); readers take a [`StreamStatus`] snapshot. Frame rate and bitrate
//! are measured over a sliding window of about [`WINDOW_SECS`] seconds of received frames, frame
//! rate from the frames' RTP timestamps (immune to network jitter), both falling to 0 when frames
//! stop arriving.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Serialize, Serializer};
use vigie_core::config::Transport;
use vigie_core::{Clock, Codec, Duration90k, StreamKey, Time90k, VideoParams};

/// Length of the measurement window for `fps` and `bitrate_bps`, in seconds.
pub const WINDOW_SECS: i64 = 5;

/// At most this many frames are kept in the window (bounds memory for absurd frame rates).
const WINDOW_MAX_FRAMES: usize = 2048;

/// The life cycle of a stream's ingest task.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    /// Connecting: waiting for stale sessions, DESCRIBE/SETUP/PLAY, or the first key frame.
    Connecting,
    /// Frames are flowing.
    Online,
    /// The last attempt failed; waiting before the next one.
    Backoff,
    /// Shut down; the task has ended or is ending.
    Stopped,
}

/// A snapshot of one stream's status. Never contains credentials.
#[derive(Clone, Debug, Serialize)]
pub struct StreamStatus {
    pub camera: String,
    pub stream: String,
    /// The stream URL without credentials.
    pub url: String,
    pub transport: Transport,
    pub state: StreamState,
    /// True when frames are flowing (`state == Online`).
    pub online: bool,
    /// Wall-clock time of the last frame received, as RFC 3339.
    #[serde(serialize_with = "ser_rfc3339")]
    pub last_frame: Option<Time90k>,
    /// The same in 90 kHz units since the epoch.
    pub last_frame_90k: Option<i64>,
    /// Frames per second over the last ~5 s (from RTP timestamps); 0 when no recent frames.
    pub fps: f64,
    /// Bits per second over the last ~5 s; 0 when no recent frames.
    pub bitrate_bps: u64,
    pub width: Option<u16>,
    pub height: Option<u16>,
    pub codec: Option<Codec>,
    /// RFC 6381 codec string, e.g. `avc1.640028`.
    pub rfc6381_codec: Option<String>,
    /// Frames delivered to the sink since start-up.
    pub frames_total: u64,
    /// Bytes of frame data delivered to the sink since start-up.
    pub bytes_total: u64,
    /// Connection attempts after the first one.
    pub reconnects: u64,
    /// Sessions that reached PLAY.
    pub sessions: u64,
    /// Non-fatal errors seen (packet loss, depacketization errors...).
    pub packet_errors: u64,
    /// The most recent error, kept after recovery so operators see why a stream flapped.
    pub last_error: Option<String>,
    /// When `last_error` happened, as RFC 3339.
    #[serde(serialize_with = "ser_rfc3339")]
    pub last_error_at: Option<Time90k>,
    /// Start of the current session (first frame), as RFC 3339; `None` unless online.
    #[serde(serialize_with = "ser_rfc3339")]
    pub connected_since: Option<Time90k>,
    /// Id of the current session (as in `Frame::session_id`), if any.
    pub session_id: Option<u64>,
    /// When state is `backoff`, seconds until the next attempt is started.
    pub retry_in_s: Option<f64>,
}

fn ser_rfc3339<S: Serializer>(t: &Option<Time90k>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&t.to_rfc3339()),
        None => s.serialize_none(),
    }
}

struct WindowEntry {
    recv: Time90k,
    media_90k: i64,
    bytes: u64,
}

struct Inner {
    state: StreamState,
    last_frame: Option<Time90k>,
    window: VecDeque<WindowEntry>,
    params: Option<Arc<VideoParams>>,
    frames_total: u64,
    bytes_total: u64,
    reconnects: u64,
    sessions: u64,
    packet_errors: u64,
    last_error: Option<String>,
    last_error_at: Option<Time90k>,
    connected_since: Option<Time90k>,
    session_id: Option<u64>,
    retry_at: Option<Time90k>,
}

/// The shared, cheaply updated status of one stream.
pub struct StatusCell {
    key: StreamKey,
    url: String,
    transport: Transport,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for StatusCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusCell")
            .field("key", &self.key)
            .field("url", &self.url)
            .finish()
    }
}

impl StatusCell {
    /// `url` must already be free of credentials; it is redacted again to be sure.
    pub fn new(key: StreamKey, url: &str, transport: Transport, clock: Arc<dyn Clock>) -> Self {
        StatusCell {
            key,
            url: vigie_core::config::redact_url(url),
            transport,
            clock,
            inner: Mutex::new(Inner {
                state: StreamState::Connecting,
                last_frame: None,
                window: VecDeque::new(),
                params: None,
                frames_total: 0,
                bytes_total: 0,
                reconnects: 0,
                sessions: 0,
                packet_errors: 0,
                last_error: None,
                last_error_at: None,
                connected_since: None,
                session_id: None,
                retry_at: None,
            }),
        }
    }

    pub fn key(&self) -> &StreamKey {
        &self.key
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` inconsistent in a harmful way.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current status.
    pub fn snapshot(&self) -> StreamStatus {
        let now = self.clock.now();
        let mut g = self.lock();
        prune(&mut g.window, now);
        let (fps, bitrate_bps) = rates(&g.window);
        let p = g.params.clone();
        StreamStatus {
            camera: self.key.camera.clone(),
            stream: self.key.stream.clone(),
            url: self.url.clone(),
            transport: self.transport,
            state: g.state,
            online: g.state == StreamState::Online,
            last_frame: g.last_frame,
            last_frame_90k: g.last_frame.map(|t| t.0),
            fps,
            bitrate_bps,
            width: p.as_ref().map(|p| p.width),
            height: p.as_ref().map(|p| p.height),
            codec: p.as_ref().map(|p| p.codec),
            rfc6381_codec: p.as_ref().map(|p| p.rfc6381_codec.clone()),
            frames_total: g.frames_total,
            bytes_total: g.bytes_total,
            reconnects: g.reconnects,
            sessions: g.sessions,
            packet_errors: g.packet_errors,
            last_error: g.last_error.clone(),
            last_error_at: g.last_error_at,
            connected_since: g.connected_since,
            session_id: g.session_id,
            retry_in_s: match (g.state, g.retry_at) {
                (StreamState::Backoff, Some(t)) => Some((t - now).as_secs_f64().max(0.0)),
                _ => None,
            },
        }
    }

    pub(crate) fn set_connecting(&self, is_retry: bool) {
        let mut g = self.lock();
        g.state = StreamState::Connecting;
        g.retry_at = None;
        if is_retry {
            g.reconnects += 1;
        }
    }

    /// PLAY succeeded: a new session begins (not yet online until the first key frame).
    pub(crate) fn session_started(&self, session_id: u64) {
        let mut g = self.lock();
        g.sessions += 1;
        g.session_id = Some(session_id);
        g.window.clear();
    }

    pub(crate) fn on_frame(
        &self,
        recv: Time90k,
        media_90k: i64,
        bytes: usize,
        params: &Arc<VideoParams>,
    ) {
        let mut g = self.lock();
        if g.state != StreamState::Online {
            g.state = StreamState::Online;
            g.connected_since = Some(recv);
        }
        if !g.params.as_ref().is_some_and(|p| Arc::ptr_eq(p, params)) {
            g.params = Some(params.clone());
        }
        g.last_frame = Some(recv);
        g.frames_total += 1;
        g.bytes_total += bytes as u64;
        if g.window.len() >= WINDOW_MAX_FRAMES {
            g.window.pop_front();
        }
        g.window.push_back(WindowEntry {
            recv,
            media_90k,
            bytes: bytes as u64,
        });
        prune(&mut g.window, recv);
    }

    pub(crate) fn on_packet_error(&self) {
        self.lock().packet_errors += 1;
    }

    /// Records an error (already sanitized: no credentials).
    pub(crate) fn set_error(&self, msg: String) {
        let now = self.clock.now();
        let mut g = self.lock();
        g.last_error = Some(msg);
        g.last_error_at = Some(now);
    }

    /// The session ended; waiting `delay` before retrying.
    pub(crate) fn set_backoff(&self, delay: std::time::Duration) {
        let now = self.clock.now();
        let mut g = self.lock();
        g.state = StreamState::Backoff;
        g.connected_since = None;
        g.session_id = None;
        g.window.clear();
        g.retry_at = Some(now + Duration90k((delay.as_secs_f64() * 90_000.0) as i64));
    }

    /// Marks the stream stopped: its task ended, or (cluster) it is not recorded here.
    pub fn set_stopped(&self) {
        let mut g = self.lock();
        g.state = StreamState::Stopped;
        g.connected_since = None;
        g.session_id = None;
        g.retry_at = None;
        g.window.clear();
    }
}

/// Drops window entries received more than [`WINDOW_SECS`] before `now`.
fn prune(w: &mut VecDeque<WindowEntry>, now: Time90k) {
    let horizon = now - Duration90k::from_secs(WINDOW_SECS);
    while w.front().is_some_and(|e| e.recv < horizon) {
        w.pop_front();
    }
}

/// (fps, bits per second) over the window: `n - 1` frame intervals over the media-time span.
fn rates(w: &VecDeque<WindowEntry>) -> (f64, u64) {
    let (Some(first), Some(last)) = (w.front(), w.back()) else {
        return (0.0, 0);
    };
    let n = w.len();
    if n < 2 {
        return (0.0, 0);
    }
    let mut span = (last.media_90k - first.media_90k) as f64 / 90_000.0;
    if span <= 0.0 {
        // Broken timestamps: fall back to receive times.
        span = (last.recv - first.recv).as_secs_f64();
    }
    if span <= 0.0 {
        return (0.0, 0);
    }
    let fps = (n - 1) as f64 / span;
    let bytes: u64 = w.iter().skip(1).map(|e| e.bytes).sum();
    (
        ((fps * 100.0).round()) / 100.0,
        (bytes as f64 * 8.0 / span) as u64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use vigie_core::SimulatedClock;

    fn params() -> Arc<VideoParams> {
        Arc::new(VideoParams {
            codec: Codec::H264,
            rfc6381_codec: "avc1.64001f".into(),
            width: 640,
            height: 360,
            pixel_aspect_ratio: (1, 1),
            sample_entry: Bytes::new(),
        })
    }

    #[test]
    fn fps_bitrate_and_staleness() {
        let t0 = Time90k::from_unix_secs(1_800_000_000);
        let clock = Arc::new(SimulatedClock::new(t0));
        let cell = StatusCell::new(
            StreamKey::new("cam", "main"),
            "rtsp://user:pw@cam.example/s",
            Transport::Tcp,
            clock.clone(),
        );
        assert!(!cell.snapshot().url.contains("pw"));
        cell.set_connecting(false);
        cell.session_started(1);
        let p = params();
        // 10 s at 25 fps, 1000 bytes per frame.
        for i in 0..250 {
            clock.set(t0 + Duration90k(i * 3600));
            cell.on_frame(clock.now(), i * 3600, 1000, &p);
        }
        let s = cell.snapshot();
        assert_eq!(s.state, StreamState::Online);
        assert!(s.online);
        assert!((s.fps - 25.0).abs() < 0.01, "{}", s.fps);
        assert!(
            (s.bitrate_bps as i64 - 200_000).abs() < 1000,
            "{}",
            s.bitrate_bps
        );
        assert_eq!(s.frames_total, 250);
        assert_eq!(s.width, Some(640));
        let json = serde_json::to_value(&s).unwrap();
        assert!(
            json["last_frame"].as_str().unwrap().ends_with('Z'),
            "{json}"
        );
        assert_eq!(json["state"], "online");
        assert_eq!(json["codec"], "h264");
        // No frames for 6 s: rates fall to zero.
        clock.advance(Duration90k::from_secs(6));
        let s = cell.snapshot();
        assert_eq!(s.fps, 0.0);
        assert_eq!(s.bitrate_bps, 0);
        cell.set_error("boom".into());
        cell.set_backoff(std::time::Duration::from_secs(2));
        cell.set_connecting(true);
        let s = cell.snapshot();
        assert_eq!(s.reconnects, 1);
        assert_eq!(s.last_error.as_deref(), Some("boom"));
        assert_eq!(s.state, StreamState::Connecting);
        assert!(!s.online);
    }
}

//! Replay of a camera's own recording over RTSP (ONVIF Profile G, "Streaming Specification"
//! §6: `Require: onvif-replay`, `Range: clock=START-END` on PLAY), turned into [`Frame`]s whose
//! `recv` is the wall-clock instant the camera recorded them at, for the store to file in the
//! past.
//!
//! retina 0.4 always sends `Range: npt=0.000-` on PLAY and no `Require` header, and offers no
//! way to add or change request headers. So, as the [`crate::guard`] does for live sessions,
//! the session goes through a loopback relay of its own: it adds `Require: onvif-replay` to
//! DESCRIBE, SETUP and PLAY, replaces PLAY's `Range` with the clock range, and reads the PLAY
//! answer's `Range: clock=` (the range the camera serves). retina's depacketizer, parameters and
//! digest authentication are thus reused as they are.
//!
//! Wall-clock mapping: RFC 2326 §12.33 makes `RTP-Info: rtptime` the RTP timestamp of the start
//! of the answered `Range`; retina, asked to require `rtptime`, gives each frame's timestamp
//! relative to it, so a frame's instant is `range start + elapsed`. (The ONVIF RTP header
//! extension with an NTP time per frame would allow jumps inside a replay; retina skips header
//! extensions, and a replay of one continuous range does not need it.)
//!
//! Frames before `start` (a camera that starts at the key frame before it) are skipped, and
//! delivery starts at the first key frame at or after `start`: footage is never stored twice,
//! a gap shorter than one GOP may remain at the start.
//!
//! Ends at `end` (frames at or after it are not delivered), when the camera closes the session
//! (the usual way a replay ends), or on error/timeout. Throttled by the caller's backlog
//! function: while the sink holds more than `max_backlog_bytes`, the relay stops reading (TCP
//! flow control then slows the camera) — a replay never makes a writer queue overflow.
//! Owns no state beyond one replay; does not touch disk.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use retina::client::{
    Credentials, InitialTimestampPolicy, PlayOptions, Session, SessionOptions, SetupOptions,
    TcpTransportOptions, Transport as RtspTransport,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};
use vigie_core::{Frame, FrameSink, StreamEvent, Time90k, VideoParams};

use crate::error::{IngestError, from_retina, sanitize};
use crate::params::video_params;

/// The range the camera says it serves, seen by the relay in the PLAY answer.
type Served = Arc<Mutex<Option<(Time90k, Option<Time90k>)>>>;

/// A frame starting this little before the asked start counts as starting at it: `clock=`
/// times travel with millisecond precision, so the camera's answered start (and the first
/// frame's time) may be up to 1 ms before the asked one.
const START_TOLERANCE_90K: i64 = 1_800;

/// Largest RTSP message (header + body) relayed in either direction.
const MAX_MESSAGE_BYTES: usize = 64 << 10;

/// What to replay.
#[derive(Clone, Debug)]
pub struct ReplayRequest {
    /// The camera's replay URI (`GetReplayUri`), `rtsp://host[:port]/…`, without credentials.
    pub url: String,
    /// Credentials for the camera's RTSP digest.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Wall-clock range wanted.
    pub start: Time90k,
    pub end: Time90k,
    /// Session id given to the frames (a new one per replay: a discontinuity for the writer).
    pub session_id: u64,
    /// Whole replay bound (connection, answers and media).
    pub timeout: Duration,
    /// No frame for this long ends the replay with an error.
    pub stall: Duration,
    /// Pause reading while the sink's backlog exceeds this many bytes.
    pub max_backlog_bytes: u64,
}

/// What a replay delivered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Frames pushed to the sink.
    pub frames: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Wall-clock instant of the first frame pushed.
    pub first_90k: Option<Time90k>,
    /// Wall-clock instant of the last frame pushed plus its duration (estimated from the
    /// previous frame's).
    pub end_90k: Option<Time90k>,
    /// The range the camera said it serves (PLAY answer's `Range: clock=`).
    pub served: Option<(Time90k, Option<Time90k>)>,
}

/// Replays `req` into `sink`. `backlog` reports the sink's queued bytes (see the module docs).
pub async fn replay(
    req: &ReplayRequest,
    sink: &dyn FrameSink,
    backlog: &(dyn Fn() -> u64 + Send + Sync),
) -> Result<ReplayReport, IngestError> {
    match tokio::time::timeout(req.timeout, replay_inner(req, sink, backlog)).await {
        Ok(r) => r,
        Err(_) => Err(IngestError::Timeout {
            secs: req.timeout.as_secs() as u32,
            phase: "replay",
        }),
    }
}

async fn replay_inner(
    req: &ReplayRequest,
    sink: &dyn FrameSink,
    backlog: &(dyn Fn() -> u64 + Send + Sync),
) -> Result<ReplayReport, IngestError> {
    let secret = req.password.as_deref();
    let mut url =
        url::Url::parse(&req.url).map_err(|e| IngestError::Protocol(format!("replay URI: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(IngestError::Protocol(
            "replay URI carries credentials: refused".into(),
        ));
    }
    if url.scheme() != "rtsp" {
        return Err(IngestError::Protocol(format!(
            "replay URI scheme {:?} is not rtsp",
            url.scheme()
        )));
    }
    let host = url
        .host_str()
        .ok_or_else(|| IngestError::Protocol("replay URI has no host".into()))?
        .to_owned();
    let port = url.port().unwrap_or(554);
    let camera = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| IngestError::Connect(sanitize(&e.to_string(), secret)))?;
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| IngestError::Connect(format!("replay relay: {e}")))?;
    let relay_addr = listener
        .local_addr()
        .map_err(|e| IngestError::Connect(format!("replay relay: {e}")))?;
    let _ = url.set_host(Some("127.0.0.1"));
    let _ = url.set_port(Some(relay_addr.port()));
    let served: Served = Arc::default();
    let range = format!(
        "clock={}-{}",
        format_clock(req.start),
        format_clock(req.end)
    );
    let relay = Relay {
        range,
        served: served.clone(),
        max_backlog_bytes: req.max_backlog_bytes,
    };
    let backlog_ptr: &(dyn Fn() -> u64 + Send + Sync) = backlog;
    let relay_fut = relay.run(listener, camera, backlog_ptr);
    let session_fut = session(req, url, sink, served.clone());
    tokio::pin!(relay_fut);
    tokio::pin!(session_fut);
    // The session ends the replay; the relay ends when either side closes (then the session
    // sees EOF, its usual end).
    let mut relay_done = false;
    loop {
        tokio::select! {
            r = &mut session_fut => {
                let mut rep = r?;
                rep.served = *served.lock().unwrap_or_else(|p| p.into_inner());
                return Ok(rep);
            }
            r = &mut relay_fut, if !relay_done => {
                relay_done = true;
                r?;
            }
        }
    }
}

async fn session(
    req: &ReplayRequest,
    url: url::Url,
    sink: &dyn FrameSink,
    served: Served,
) -> Result<ReplayReport, IngestError> {
    let secret = req.password.as_deref();
    let creds = req.username.as_ref().map(|u| Credentials {
        username: u.clone(),
        password: req.password.clone().unwrap_or_default(),
    });
    let mut s = Session::describe(url, SessionOptions::default().creds(creds))
        .await
        .map_err(|e| from_retina(&e, "DESCRIBE (replay)", secret))?;
    let i = s
        .streams()
        .iter()
        .position(|st| st.media() == "video" && matches!(st.encoding_name(), "h264" | "h265"))
        .ok_or_else(|| IngestError::Media("the replay offers no H.264/H.265 video".into()))?;
    if s.streams()[i].clock_rate_hz() != 90_000 {
        return Err(IngestError::Media(
            "replay video clock is not 90 kHz".into(),
        ));
    }
    s.setup(
        i,
        SetupOptions::default()
            .transport(RtspTransport::Tcp(TcpTransportOptions::default()))
            .frame_format(FrameFormat::MP4),
    )
    .await
    .map_err(|e| from_retina(&e, "SETUP (replay)", secret))?;
    let playing = s
        .play(PlayOptions::default().initial_timestamp(InitialTimestampPolicy::Require))
        .await
        .map_err(|e| from_retina(&e, "PLAY (replay)", secret))?;
    let Some((range_start, _)) = *served.lock().unwrap_or_else(|p| p.into_inner()) else {
        return Err(IngestError::Protocol(
            "the camera's PLAY answer has no Range: clock= (not an ONVIF replay)".into(),
        ));
    };
    let mut demuxed = playing
        .demuxed()
        .map_err(|e| from_retina(&e, "PLAY (replay)", secret))?;
    let mut rep = ReplayReport::default();
    let mut params: Option<Arc<VideoParams>> = None;
    let mut last: Option<(i64, i64)> = None; // (media, previous duration)
    let mut have_key = false;
    loop {
        let item = match tokio::time::timeout(req.stall, demuxed.next()).await {
            Err(_) => return Err(IngestError::Stall(req.stall.as_secs() as u32)),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                // A camera ends a replay by closing the connection: after frames, that is the end.
                if rep.frames > 0 {
                    debug!(error = %sanitize(&e.to_string(), secret), "replay session closed");
                    break;
                }
                return Err(from_retina(&e, "replay", secret));
            }
            Ok(Some(Ok(item))) => item,
        };
        let CodecItem::VideoFrame(f) = item else {
            continue;
        };
        if f.stream_id() != i {
            continue;
        }
        if (f.has_new_parameters() || params.is_none())
            && let Some(ParametersRef::Video(p)) = demuxed.streams()[i].parameters()
        {
            let new = video_params(p).map_err(IngestError::Media)?;
            if params.as_deref() != Some(&new) {
                params = Some(Arc::new(new));
            }
        }
        let Some(p) = params.clone() else { continue };
        let media_90k = f.timestamp().elapsed();
        let at = Time90k(range_start.0 + media_90k);
        if at >= req.end {
            break;
        }
        // A camera may start at the key frame before the asked start (real ones do): what lies
        // before it is already stored (the footage before the gap), so it is skipped, and the
        // stored replay starts at the first key frame at or after the start (a gap shorter
        // than one GOP may remain, never footage stored twice).
        if at.0 + START_TOLERANCE_90K < req.start.0 {
            continue;
        }
        if !have_key {
            if !f.is_random_access_point() {
                continue;
            }
            have_key = true;
        }
        let is_key = f.is_random_access_point();
        let data = Bytes::from(f.into_data());
        rep.frames += 1;
        rep.bytes += data.len() as u64;
        rep.first_90k.get_or_insert(at);
        let dur = match last {
            Some((m, _)) if media_90k > m => media_90k - m,
            Some((_, d)) => d,
            None => 3_600,
        };
        last = Some((media_90k, dur));
        rep.end_90k = Some(Time90k(at.0 + dur));
        sink.push(StreamEvent::Frame(Frame {
            data,
            is_key,
            media_90k,
            recv: at,
            params: p,
            session_id: req.session_id,
        }));
    }
    // The last frame's duration is its predecessor's: the writer does the same.
    sink.push(StreamEvent::SessionEnded {
        session_id: req.session_id,
        reason: "edge replay ended".into(),
    });
    info!(frames = rep.frames, "replay ended");
    Ok(rep)
}

/// The relay between retina and the camera (see the module docs).
struct Relay {
    range: String,
    served: Served,
    max_backlog_bytes: u64,
}

impl Relay {
    async fn run(
        &self,
        listener: TcpListener,
        camera: TcpStream,
        backlog: &(dyn Fn() -> u64 + Send + Sync),
    ) -> Result<(), IngestError> {
        let (client, _) = listener
            .accept()
            .await
            .map_err(|e| IngestError::Connect(format!("replay relay: {e}")))?;
        let _ = client.set_nodelay(true);
        let _ = camera.set_nodelay(true);
        let (mut cr, mut cw) = client.into_split();
        let (mut kr, mut kw) = camera.into_split();
        let up = async {
            let mut buf = Vec::with_capacity(4096);
            let mut chunk = [0u8; 4096];
            loop {
                let n = cr.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    let _ = kw.shutdown().await;
                    return Ok::<(), IngestError>(());
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some((len, msg)) = next_message(&buf)? {
                    let out = match msg {
                        Some(head) => self.rewrite_request(&head, &buf[head.len()..len]),
                        None => buf[..len].to_vec(),
                    };
                    if kw.write_all(&out).await.is_err() {
                        return Ok(());
                    }
                    buf.drain(..len);
                }
            }
        };
        let down = async {
            let mut buf = Vec::with_capacity(64 << 10);
            let mut chunk = vec![0u8; 64 << 10];
            loop {
                // Throttle: the sink drains first (TCP flow control slows the camera).
                while backlog() > self.max_backlog_bytes {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let n = kr.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    let _ = cw.shutdown().await;
                    return Ok::<(), IngestError>(());
                }
                buf.extend_from_slice(&chunk[..n]);
                let mut used = 0;
                while let Some((len, msg)) = next_message(&buf[used..])? {
                    if let Some(head) = msg {
                        self.observe_response(&head);
                    }
                    used += len;
                }
                if used > 0 {
                    if cw.write_all(&buf[..used]).await.is_err() {
                        return Ok(());
                    }
                    buf.drain(..used);
                }
            }
        };
        let (a, b) = tokio::join!(up, down);
        a.and(b)
    }

    fn rewrite_request(&self, head: &str, body: &[u8]) -> Vec<u8> {
        let method = head.split(' ').next().unwrap_or("");
        let mut out = String::with_capacity(head.len() + 80);
        let mut lines = head.trim_end_matches("\r\n").split("\r\n");
        if let Some(first) = lines.next() {
            out.push_str(first);
            out.push_str("\r\n");
        }
        for l in lines {
            let name = l.split(':').next().unwrap_or("").trim();
            if method == "PLAY" && name.eq_ignore_ascii_case("Range") {
                continue;
            }
            if name.eq_ignore_ascii_case("Require") {
                continue;
            }
            out.push_str(l);
            out.push_str("\r\n");
        }
        if matches!(method, "DESCRIBE" | "SETUP" | "PLAY") {
            out.push_str("Require: onvif-replay\r\n");
        }
        if method == "PLAY" {
            out.push_str(&format!("Range: {}\r\n", self.range));
        }
        out.push_str("\r\n");
        let mut v = out.into_bytes();
        v.extend_from_slice(body);
        v
    }

    fn observe_response(&self, head: &str) {
        for l in head.split("\r\n").skip(1) {
            if let Some((n, v)) = l.split_once(':')
                && n.trim().eq_ignore_ascii_case("Range")
                && let Some(r) = parse_clock_range(v)
            {
                *self.served.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
            }
        }
    }
}

/// The next complete message at the start of `buf`: `(length, Some(header text))` for an RTSP
/// message (its body follows the header within `length`), `(length, None)` for an interleaved
/// frame; `None` when incomplete. Errors when a message exceeds [`MAX_MESSAGE_BYTES`].
fn next_message(buf: &[u8]) -> Result<Option<(usize, Option<String>)>, IngestError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] == b'$' {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = 4 + usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        return Ok((buf.len() >= len).then_some((len, None)));
    }
    let Some(end) = buf
        .windows(4)
        .take(MAX_MESSAGE_BYTES)
        .position(|w| w == b"\r\n\r\n")
    else {
        if buf.len() > MAX_MESSAGE_BYTES {
            return Err(IngestError::Limit(format!(
                "replay: RTSP header longer than {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
    let clen = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("Content-Length"))
        .map(|(_, v)| v.trim().parse::<usize>())
        .transpose()
        .map_err(|_| IngestError::Protocol("replay: bad Content-Length".into()))?
        .unwrap_or(0);
    if end + 4 + clen > MAX_MESSAGE_BYTES {
        return Err(IngestError::Limit(format!(
            "replay: RTSP message longer than {MAX_MESSAGE_BYTES} bytes"
        )));
    }
    let len = end + 4 + clen;
    Ok((buf.len() >= len).then_some((len, Some(head))))
}

/// `Time90k` → `YYYYMMDDThhmmss.fffZ` (RFC 2326 §3.7 absolute time).
pub fn format_clock(t: Time90k) -> String {
    let ts = t.to_timestamp();
    ts.strftime("%Y%m%dT%H%M%S.%3fZ").to_string()
}

/// `clock=START-[END]` → times (`None` for anything else).
pub fn parse_clock_range(v: &str) -> Option<(Time90k, Option<Time90k>)> {
    let r = v.trim().strip_prefix("clock=")?;
    let (a, b) = r.split(';').next()?.trim().split_once('-')?;
    let start = parse_clock(a)?;
    let end = if b.trim().is_empty() {
        None
    } else {
        Some(parse_clock(b)?)
    };
    Some((start, end))
}

fn parse_clock(s: &str) -> Option<Time90k> {
    let s = s.trim();
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    if date.len() != 8 || hms.len() != 6 || frac.len() > 9 {
        return None;
    }
    if !date
        .bytes()
        .chain(hms.bytes())
        .chain(frac.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let iso = format!(
        "{}-{}-{}T{}:{}:{}{}{}Z",
        &date[..4],
        &date[4..6],
        &date[6..],
        &hms[..2],
        &hms[2..4],
        &hms[4..],
        if frac.is_empty() { "" } else { "." },
        frac
    );
    let ts: jiff::Timestamp = iso.parse().ok()?;
    Some(Time90k::from_timestamp(ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_ranges() {
        let (a, b) = parse_clock_range("clock=20261204T130000.250Z-20261204T130030Z").unwrap();
        assert_eq!(b.unwrap().0 - a.0, 29_750 * 90);
        assert_eq!(format_clock(a), "20261204T130000.250Z");
        assert_eq!(
            parse_clock_range(" clock=20261204T130000.250Z-"),
            Some((a, None))
        );
        for bad in [
            "npt=0-",
            "clock=2026-12-04T13:00:00Z-",
            "clock=20261204T130000-",
            "clock=x",
        ] {
            assert_eq!(parse_clock_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn requests_get_require_and_the_clock_range() {
        let r = Relay {
            range: "clock=20261204T130000.000Z-20261204T130030.000Z".into(),
            served: Arc::default(),
            max_backlog_bytes: 0,
        };
        let head = "PLAY rtsp://127.0.0.1:5/cam RTSP/1.0\r\nCSeq: 4\r\nSession: 1\r\nRange: npt=0.000-\r\n\r\n";
        let out = String::from_utf8(r.rewrite_request(head, b"")).unwrap();
        assert_eq!(
            out,
            "PLAY rtsp://127.0.0.1:5/cam RTSP/1.0\r\nCSeq: 4\r\nSession: 1\r\nRequire: onvif-replay\r\nRange: clock=20261204T130000.000Z-20261204T130030.000Z\r\n\r\n"
        );
        let head = "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n";
        assert_eq!(r.rewrite_request(head, b""), head.as_bytes());
        r.observe_response(
            "RTSP/1.0 200 OK\r\nCSeq: 4\r\nRange: clock=20261204T130000.000Z-\r\n\r\n",
        );
        assert!(r.served.lock().unwrap().is_some());
    }

    #[test]
    fn framing_is_bounded() {
        assert_eq!(next_message(b"$\x00\x00\x02ab+").unwrap(), Some((6, None)));
        assert_eq!(next_message(b"$\x00\x00\x05ab").unwrap(), None);
        let m = b"RTSP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(next_message(m).unwrap().unwrap().0, m.len());
        assert!(next_message(&vec![b'A'; MAX_MESSAGE_BYTES + 10]).is_err());
        assert!(next_message(b"RTSP/1.0 200 OK\r\nContent-Length: 99999999\r\n\r\n").is_err());
        assert!(next_message(b"RTSP/1.0 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    }
}

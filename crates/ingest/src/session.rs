//! One RTSP session: DESCRIBE/SETUP/PLAY under the connect timeout, then the read loop that turns
//! retina frames into [`StreamEvent::Frame`]s until an error, a stall, EOF or shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use retina::client::{
    Credentials, Demuxed, PlayOptions, Session, SessionGroup, SessionOptions, SetupOptions,
    TcpTransportOptions, Transport as RtspTransport, UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use vigie_core::config::{ResolvedSource, Transport};
use vigie_core::{Clock, Codec, Frame, FrameSink, StreamEvent, Time90k, VideoParams};

use crate::error::{IngestError, Severity, classify, from_retina, sanitize};
use crate::guard::{self, Guard, GuardConfig, StreamLimits};
use crate::params::video_params;
use crate::status::StatusCell;

/// Everything a session needs, borrowed from the stream task.
pub(crate) struct SessionCtx<'a> {
    pub source: &'a ResolvedSource,
    pub sink: &'a dyn FrameSink,
    pub status: &'a StatusCell,
    pub clock: &'a dyn Clock,
    pub group: &'a Arc<SessionGroup>,
    pub shutdown: &'a CancellationToken,
    pub user_agent: &'a str,
    pub limits: &'a StreamLimits,
}

/// How a session ended.
#[derive(Debug)]
pub(crate) enum End {
    Shutdown,
    Error(IngestError),
}

pub(crate) struct Outcome {
    pub end: End,
    /// Frames delivered to the sink.
    pub frames: u64,
    /// Time from the first delivered frame to the end.
    pub streamed_for: Duration,
}

const PHASES: [&str; 4] = ["connect/DESCRIBE", "SETUP", "PLAY", "PLAY"];

fn secret(src: &ResolvedSource) -> Option<&str> {
    src.password.as_ref().map(|p| p.expose())
}

/// RTP clock rates accepted for video (RFC 6184 and 7798 mandate 90 kHz; anything far from it
/// is a hostile or broken camera, and rescaling its timestamps would be meaningless).
const CLOCK_RATES_HZ: std::ops::RangeInclusive<u32> = 1_000..=1_000_000;

/// Connects through the [`guard`] relay, DESCRIBE, pick the first H.264/H.265 video stream,
/// SETUP it, PLAY. The guard is returned with the stream: it must live as long as the session.
async fn start(
    ctx: &SessionCtx<'_>,
    phase: &AtomicU8,
    guard_slot: &mut Option<Guard>,
) -> Result<(Demuxed, usize), IngestError> {
    let src = ctx.source;
    phase.store(0, Ordering::Relaxed);
    let g = guard::start(
        &src.url,
        GuardConfig {
            limits: ctx.limits.clone(),
            allow_basic_auth: src.allow_basic_auth,
            has_password: src.password.is_some(),
        },
    )
    .await?;
    let url = g.url.clone();
    let g = guard_slot.insert(g);
    let explain = |e: IngestError| g.explain(e);
    let creds = src.username.as_ref().map(|u| Credentials {
        username: u.clone(),
        password: src
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default(),
    });
    let opts = SessionOptions::default()
        .creds(creds)
        .session_group(ctx.group.clone())
        .user_agent(ctx.user_agent.to_owned());
    let mut session = Session::describe(url, opts)
        .await
        .map_err(|e| explain(from_retina(&e, "DESCRIBE", secret(src))))?;
    let found: Vec<String> = session
        .streams()
        .iter()
        .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
        .collect();
    let i = session
        .streams()
        .iter()
        .position(|s| s.media() == "video" && matches!(s.encoding_name(), "h264" | "h265"))
        .ok_or_else(|| {
            IngestError::Media(format!(
                "no H.264/H.265 video stream offered (found: {})",
                found.join(", ")
            ))
        })?;
    let clock_rate_hz = session.streams()[i].clock_rate_hz();
    if !CLOCK_RATES_HZ.contains(&clock_rate_hz) {
        return Err(IngestError::Media(format!(
            "RTP clock rate {clock_rate_hz} Hz is outside {}..={} Hz (video uses 90000)",
            CLOCK_RATES_HZ.start(),
            CLOCK_RATES_HZ.end()
        )));
    }
    let transport = match src.transport {
        Transport::Tcp => RtspTransport::Tcp(TcpTransportOptions::default()),
        Transport::Udp => RtspTransport::Udp(UdpTransportOptions::default()),
    };
    phase.store(1, Ordering::Relaxed);
    session
        .setup(
            i,
            SetupOptions::default()
                .transport(transport)
                .frame_format(FrameFormat::MP4),
        )
        .await
        .map_err(|e| explain(from_retina(&e, "SETUP", secret(src))))?;
    phase.store(2, Ordering::Relaxed);
    let playing = session
        .play(PlayOptions::default())
        .await
        .map_err(|e| explain(from_retina(&e, "PLAY", secret(src))))?;
    phase.store(3, Ordering::Relaxed);
    let demuxed = playing
        .demuxed()
        .map_err(|e| explain(from_retina(&e, "PLAY", secret(src))))?;
    Ok((demuxed, i))
}

/// Converts the stream's current parameters, reusing `current` when they are unchanged.
fn refresh_params(
    demuxed: &Demuxed,
    i: usize,
    current: &Option<Arc<VideoParams>>,
) -> Result<Option<Arc<VideoParams>>, IngestError> {
    let Some(ParametersRef::Video(p)) = demuxed.streams()[i].parameters() else {
        return Ok(current.clone());
    };
    let new = video_params(p).map_err(IngestError::Media)?;
    match current {
        Some(c) if **c == new => Ok(Some(c.clone())),
        _ => Ok(Some(Arc::new(new))),
    }
}

/// Rescales a timestamp in `clock_rate` units to 90 kHz.
fn to_90k(ticks: i64, clock_rate: u32) -> i64 {
    if clock_rate == 90_000 {
        ticks
    } else {
        (i128::from(ticks) * 90_000 / i128::from(clock_rate.max(1))) as i64
    }
}

/// Runs one session to its end. Never panics on bad input.
pub(crate) async fn run(ctx: &SessionCtx<'_>, session_id: u64) -> Outcome {
    let src = ctx.source;
    let connect_timeout = Duration::from_secs(u64::from(src.connect_timeout_s.max(1)));
    let phase = AtomicU8::new(0);
    let mut guard: Option<Guard> = None;
    let started = tokio::select! {
        biased;
        _ = ctx.shutdown.cancelled() => None,
        r = tokio::time::timeout(connect_timeout, start(ctx, &phase, &mut guard)) => Some(r),
    };
    let fail = |e| Outcome {
        end: End::Error(e),
        frames: 0,
        streamed_for: Duration::ZERO,
    };
    let (mut demuxed, i) = match started {
        None => {
            return Outcome {
                end: End::Shutdown,
                frames: 0,
                streamed_for: Duration::ZERO,
            };
        }
        Some(Err(_)) if guard.as_ref().and_then(Guard::verdict).is_some() => {
            return fail(
                guard
                    .as_ref()
                    .and_then(Guard::verdict)
                    .unwrap_or(IngestError::Eof),
            );
        }
        Some(Err(_)) => {
            let phase = PHASES[usize::from(phase.load(Ordering::Relaxed)).min(PHASES.len() - 1)];
            return fail(IngestError::Timeout {
                secs: src.connect_timeout_s.max(1),
                phase,
            });
        }
        Some(Ok(Err(e))) => return fail(e),
        Some(Ok(Ok(x))) => x,
    };
    match demuxed.tool() {
        Some(tool) => info!(tool = %sanitize(tool, None), "playing"),
        None => info!("playing"),
    }
    ctx.status.session_started(session_id);

    let stall_s = src.stall_timeout_s.max(1);
    let stall = Duration::from_secs(u64::from(stall_s));
    let play_at = Instant::now();
    let params = match refresh_params(&demuxed, i, &None) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let mut r = Reader {
        ctx,
        i,
        session_id,
        stall,
        // A camera that sends frames but never a key frame is as useless as a stalled one.
        key_wait: Duration::from_secs(u64::from(stall_s).max(10) * 3),
        play_at,
        deadline: play_at + stall,
        params,
        have_key: false,
        frames: 0,
        first_frame_at: None,
        packet_errors: 0,
    };

    // One cancellation future and one stall timer for the whole session, not one of each per
    // item: `deadline` moves with every frame, the timer is re-armed only when it fires before
    // the current deadline (about once per stall period), which keeps timer-wheel and
    // cancellation-list updates out of the per-frame path (see docs/BENCHMARKS.md).
    let cancelled = ctx.shutdown.cancelled();
    tokio::pin!(cancelled);
    let stall_timer = tokio::time::sleep_until(r.deadline);
    tokio::pin!(stall_timer);
    let end = loop {
        let item = tokio::select! {
            biased;
            _ = &mut cancelled => break End::Shutdown,
            _ = &mut stall_timer => {
                let now = Instant::now();
                // A timer that fires long after its own deadline means this process was not
                // running (SIGSTOP, host suspend, starvation), not that the camera stalled:
                // what the camera sent meanwhile waits in the socket; read it before judging.
                let late = now.saturating_duration_since(stall_timer.deadline());
                if now >= r.deadline && late > PAUSE_LATENESS {
                    tracing::info!(late_ms = late.as_millis() as u64, "this process was paused: reading what the camera sent meanwhile before judging a stall");
                    r.deadline = now + r.stall;
                } else if now >= r.deadline {
                    break End::Error(IngestError::Stall(stall_s));
                }
                stall_timer.as_mut().reset(r.deadline);
                continue;
            }
            item = demuxed.next() => item,
        };
        // A wake-up finds many frames buffered (see `runtime`): read the clocks once for all of
        // them (the first frame is complete by now and the others were already in the socket,
        // or arrive within the microseconds it takes to read them, so `recv` is not earlier
        // than a frame's arrival by more than that), and handle the rest without going back
        // through the `select!`: cancellation and the stall timer are polled once per wake-up,
        // not once per frame.
        let now = Instant::now();
        let recv = ctx.clock.now();
        let mut item = Some(item);
        let ended = loop {
            let Some(it) = item else { break None };
            if let Some(end) = r.on_item(&demuxed, it, now, recv) {
                break Some(end);
            }
            // `None` once nothing is buffered; the `select!` then registers the task's waker.
            item = demuxed.next().now_or_never();
        };
        if let Some(end) = ended {
            break end;
        }
    };
    // The relay ended the session (a limit, Basic refused): retina only saw the connection close.
    let end = match (end, guard.as_ref().and_then(Guard::verdict)) {
        (End::Error(_), Some(v)) => End::Error(v),
        (end, _) => end,
    };
    let frames = r.frames;
    let streamed_for = r.first_frame_at.map(|t| t.elapsed()).unwrap_or_default();
    // retina's TEARDOWN goes through the relay: drop the session first.
    drop(r);
    drop(demuxed);
    drop(guard);
    Outcome {
        end,
        frames,
        streamed_for,
    }
}

/// The read loop's state: what handling one retina item updates.
struct Reader<'c, 'a> {
    ctx: &'c SessionCtx<'a>,
    i: usize,
    session_id: u64,
    stall: Duration,
    key_wait: Duration,
    /// Since when a key frame is awaited: PLAY, or the last frame refused mid-stream.
    play_at: Instant,
    /// No frame by then is a stall.
    deadline: Instant,
    params: Option<Arc<VideoParams>>,
    have_key: bool,
    frames: u64,
    first_frame_at: Option<Instant>,
    packet_errors: u64,
}

impl Reader<'_, '_> {
    /// After a frame that cannot be recorded as the session's codec: drop frames until the next
    /// key frame, waiting at most `key_wait` (then the session ends and the reconnection gets
    /// the camera's new SDP).
    fn await_key_frame(&mut self, now: Instant) {
        if self.have_key {
            self.have_key = false;
            self.play_at = now;
        }
    }

    /// Handles one item of the demuxed stream (`None`: end of stream), received by `now`
    /// (`recv` on the wall clock). Returns how the session ends, if this item ends it.
    fn on_item(
        &mut self,
        demuxed: &Demuxed,
        item: Option<Result<CodecItem, retina::Error>>,
        now: Instant,
        recv: Time90k,
    ) -> Option<End> {
        let src = self.ctx.source;
        let item = match item {
            None => return Some(End::Error(IngestError::Eof)),
            Some(Err(e)) => match classify(&e) {
                Severity::Session => return Some(End::Error(from_retina(&e, "PLAY", secret(src)))),
                Severity::Packet => {
                    self.packet_errors += 1;
                    self.ctx.status.on_packet_error();
                    let msg = sanitize(&e.to_string(), secret(src));
                    let msg = crate::params::first_line(&msg);
                    let packet_errors = self.packet_errors;
                    // Joining mid-stream routinely yields one such error; persistent ones matter.
                    if self.have_key && (packet_errors <= 3 || packet_errors.is_multiple_of(1000)) {
                        warn!(packet_errors, "packet error (frame dropped): {msg}");
                    } else {
                        debug!(packet_errors, "packet error (frame dropped): {msg}");
                    }
                    // The frames after a dropped one may reference it; they are still recorded
                    // (decoders conceal the damage: a picture with artefacts until the next key
                    // frame is better evidence than none). What is not H.264 at all is refused
                    // below.
                    return None;
                }
            },
            Some(Ok(item)) => item,
        };
        let CodecItem::VideoFrame(f) = item else {
            return None;
        };
        if f.stream_id() != self.i {
            return None;
        }
        if f.has_new_parameters() || self.params.is_none() {
            match refresh_params(demuxed, self.i, &self.params) {
                Ok(p) => {
                    if self.have_key
                        && p.as_ref()
                            .zip(self.params.as_ref())
                            .is_some_and(|(a, b)| !Arc::ptr_eq(a, b))
                    {
                        info!("codec parameters changed");
                    }
                    self.params = p;
                }
                Err(e) => return Some(End::Error(e)),
            }
        }
        if !self.have_key {
            if !f.is_random_access_point() || self.params.is_none() {
                if now.duration_since(self.play_at) > self.key_wait {
                    return Some(End::Error(IngestError::Media(format!(
                        "no key frame within {} s of {}",
                        self.key_wait.as_secs(),
                        if self.frames == 0 {
                            "PLAY"
                        } else {
                            "a frame that was not H.264"
                        }
                    ))));
                }
                self.deadline = now + self.stall;
                return None;
            }
            self.have_key = true;
        }
        let p = self.params.as_ref()?;
        if p.codec == Codec::H264 && !plausible_h264(f.data()) {
            // Not H.264 (e.g. H.265 sent inside an H.264 session): never recorded as such.
            self.packet_errors += 1;
            self.ctx.status.on_packet_error();
            warn!(
                packet_errors = self.packet_errors,
                "frame dropped: NAL units that are not H.264 slices or parameter sets (codec changed inside the session?); waiting for a key frame"
            );
            self.await_key_frame(now);
            return None;
        }
        let ts = f.timestamp();
        let media_90k = to_90k(ts.elapsed(), ts.clock_rate().get());
        let is_key = f.is_random_access_point();
        let data = Bytes::from(f.into_data());
        self.ctx.status.on_frame(recv, media_90k, data.len(), p);
        if self.frames == 0 {
            self.first_frame_at = Some(now);
            info!(codec = %p.rfc6381_codec, width = p.width, height = p.height, "online");
        }
        self.frames += 1;
        self.ctx.sink.push(StreamEvent::Frame(Frame {
            data,
            is_key,
            media_90k,
            recv,
            params: p.clone(),
            session_id: self.session_id,
        }));
        self.deadline = now + self.stall;
        None
    }
}

/// Whether an AVC access unit (4-byte length-prefixed NAL units, as retina hands them) holds
/// only NAL unit types H.264 cameras send: slices (1, 5), SEI, parameter sets, delimiters,
/// end of sequence/stream, filler, SPS extension (6–13), SVC/MVC units (14, 15, 19, 20), and no
/// forbidden bit. Refused: 0, data partitions (2–4, Extended profile only, which no browser
/// plays), reserved and unspecified types: what H.265 NAL headers (VPS, SPS, PPS, TRAIL) look
/// like when read as H.264.
fn plausible_h264(data: &[u8]) -> bool {
    let mut rest = data;
    let mut any = false;
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return false;
        };
        let len = u32::from_be_bytes(*len) as usize;
        let Some(header) = tail.get(..len).and_then(|n| n.first()) else {
            return false;
        };
        if header & 0x80 != 0 || !matches!(header & 0x1f, 1 | 5..=15 | 19 | 20) {
            return false;
        }
        any = true;
        rest = &tail[len..];
    }
    any
}

/// A stall timer firing later than this after its deadline means the process did not run
/// (paused or starved) rather than that the camera stopped sending.
const PAUSE_LATENESS: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    #[test]
    fn plausible_h264_access_units() {
        use super::plausible_h264;
        let au = |nals: &[&[u8]]| {
            let mut v = Vec::new();
            for n in nals {
                v.extend_from_slice(&(n.len() as u32).to_be_bytes());
                v.extend_from_slice(n);
            }
            v
        };
        assert!(plausible_h264(&au(&[
            &[0x67, 1],
            &[0x68, 1],
            &[0x65, 0x88]
        ])));
        assert!(plausible_h264(&au(&[&[0x41, 0x9a]])));
        assert!(!plausible_h264(&au(&[&[0x02, 0x01]]))); // H.265 TRAIL_R read as H.264
        assert!(!plausible_h264(&au(&[&[0x41, 0x9a], &[0x40, 0x01]]))); // VPS
        assert!(!plausible_h264(&[0, 0, 0, 9, 0x41])); // truncated
        assert!(!plausible_h264(&[]));
    }

    #[test]
    fn rescale() {
        assert_eq!(super::to_90k(3600, 90_000), 3600);
        assert_eq!(super::to_90k(1000, 1000), 90_000);
    }
}

//! One RTSP session: DESCRIBE/SETUP/PLAY under the connect timeout, then the read loop that turns
//! retina frames into [`StreamEvent::Frame`]s until an error, a stall, EOF or shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use retina::client::{
    Credentials, Demuxed, PlayOptions, Session, SessionGroup, SessionOptions, SetupOptions,
    TcpTransportOptions, Transport as RtspTransport, UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use vigie_core::config::{ResolvedSource, Transport};
use vigie_core::{Clock, Frame, FrameSink, StreamEvent, VideoParams};

use crate::error::{IngestError, Severity, classify, from_retina, sanitize};
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

/// DESCRIBE, pick the first H.264/H.265 video stream, SETUP it, PLAY.
async fn start(ctx: &SessionCtx<'_>, phase: &AtomicU8) -> Result<(Demuxed, usize), IngestError> {
    let src = ctx.source;
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
    phase.store(0, Ordering::Relaxed);
    let mut session = Session::describe(src.url.clone(), opts)
        .await
        .map_err(|e| from_retina(&e, "DESCRIBE", secret(src)))?;
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
        .map_err(|e| from_retina(&e, "SETUP", secret(src)))?;
    phase.store(2, Ordering::Relaxed);
    let playing = session
        .play(PlayOptions::default())
        .await
        .map_err(|e| from_retina(&e, "PLAY", secret(src)))?;
    phase.store(3, Ordering::Relaxed);
    let demuxed = playing
        .demuxed()
        .map_err(|e| from_retina(&e, "PLAY", secret(src)))?;
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
    let started = tokio::select! {
        biased;
        _ = ctx.shutdown.cancelled() => None,
        r = tokio::time::timeout(connect_timeout, start(ctx, &phase)) => Some(r),
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
    // A camera that sends frames but never a key frame is as useless as a stalled one.
    let key_wait = Duration::from_secs(u64::from(stall_s).max(10) * 3);
    let play_at = Instant::now();
    let mut deadline = play_at + stall;
    let mut params = match refresh_params(&demuxed, i, &None) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let mut have_key = false;
    let mut frames = 0u64;
    let mut first_frame_at: Option<Instant> = None;
    let mut packet_errors = 0u64;

    // One cancellation future and one stall timer for the whole session, not one of each per
    // item: `deadline` moves with every frame, the timer is re-armed only when it fires before
    // the current deadline (about once per stall period), which keeps timer-wheel and
    // cancellation-list updates out of the per-frame path (see docs/BENCHMARKS.md).
    let cancelled = ctx.shutdown.cancelled();
    tokio::pin!(cancelled);
    let stall_timer = tokio::time::sleep_until(deadline);
    tokio::pin!(stall_timer);
    let end = loop {
        let item = tokio::select! {
            biased;
            _ = &mut cancelled => break End::Shutdown,
            _ = &mut stall_timer => {
                if Instant::now() >= deadline {
                    break End::Error(IngestError::Stall(stall_s));
                }
                stall_timer.as_mut().reset(deadline);
                continue;
            }
            r = demuxed.next() => r,
        };
        let item = match item {
            None => break End::Error(IngestError::Eof),
            Some(Err(e)) => match classify(&e) {
                Severity::Session => break End::Error(from_retina(&e, "PLAY", secret(src))),
                Severity::Packet => {
                    packet_errors += 1;
                    ctx.status.on_packet_error();
                    let msg = sanitize(&e.to_string(), secret(src));
                    let msg = crate::params::first_line(&msg);
                    // Joining mid-stream routinely yields one such error; persistent ones matter.
                    if have_key && (packet_errors <= 3 || packet_errors.is_multiple_of(1000)) {
                        warn!(packet_errors, "packet error (frame dropped): {msg}");
                    } else {
                        debug!(packet_errors, "packet error (frame dropped): {msg}");
                    }
                    continue;
                }
            },
            Some(Ok(item)) => item,
        };
        let CodecItem::VideoFrame(f) = item else {
            continue;
        };
        if f.stream_id() != i {
            continue;
        }
        let now = Instant::now();
        if f.has_new_parameters() || params.is_none() {
            match refresh_params(&demuxed, i, &params) {
                Ok(p) => {
                    if have_key
                        && p.as_ref()
                            .zip(params.as_ref())
                            .is_some_and(|(a, b)| !Arc::ptr_eq(a, b))
                    {
                        info!("codec parameters changed");
                    }
                    params = p;
                }
                Err(e) => break End::Error(e),
            }
        }
        if !have_key {
            if !f.is_random_access_point() || params.is_none() {
                if now.duration_since(play_at) > key_wait {
                    break End::Error(IngestError::Media(format!(
                        "no key frame within {} s of PLAY",
                        key_wait.as_secs()
                    )));
                }
                deadline = now + stall;
                continue;
            }
            have_key = true;
        }
        let Some(p) = params.as_ref() else { continue };
        let recv = ctx.clock.now();
        let ts = f.timestamp();
        let media_90k = to_90k(ts.elapsed(), ts.clock_rate().get());
        let is_key = f.is_random_access_point();
        let data = Bytes::from(f.into_data());
        ctx.status.on_frame(recv, media_90k, data.len(), p);
        if frames == 0 {
            first_frame_at = Some(now);
            info!(codec = %p.rfc6381_codec, width = p.width, height = p.height, "online");
        }
        frames += 1;
        ctx.sink.push(StreamEvent::Frame(Frame {
            data,
            is_key,
            media_90k,
            recv,
            params: p.clone(),
            session_id,
        }));
        deadline = now + stall;
    };
    Outcome {
        end,
        frames,
        streamed_for: first_frame_at.map(|t| t.elapsed()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rescale() {
        assert_eq!(super::to_90k(3600, 90_000), 3600);
        assert_eq!(super::to_90k(1000, 1000), 90_000);
    }
}

//! RTSP ingest for Vigie: keeps each configured stream recorded.
//!
//! [`spawn_stream`] starts one tokio task per stream. The task connects with
//! [retina](https://docs.rs/retina) (DESCRIBE/SETUP/PLAY within `connect_timeout_s`, TCP
//! interleaved or UDP as configured), reads frames in MP4 form (length-prefixed NAL units),
//! converts each once into [`bytes::Bytes`] without copying and pushes it to the stream's
//! [`FrameSink`], starting at the first key frame of each session. When the session ends (error,
//! EOF, no frame for `stall_timeout_s`) it pushes [`StreamEvent::SessionEnded`] and reconnects
//! after an exponential backoff with jitter ([`backoff`]), forever, until the shutdown token fires.
//!
//! Each stream has its own retina `SessionGroup`; before reconnecting the task waits for the
//! previous sessions' TEARDOWN (old live555 servers corrupt a new session otherwise).
//!
//! Failures never panic and never affect other streams; each is reported in the stream's
//! [`StatusCell`] (`last_error`, short and free of credentials) and logged with `tracing::warn!`
//! inside a span carrying `camera` and `stream`.
//!
//! TCP sessions can run on an [`IngestRuntime`] ([`IngestOptions::runtime`]; `vigie run` does):
//! a few threads that wake once per tick (91 ms) and then handle every packet buffered since,
//! instead of once per packet burst per stream, the largest cost of ingest before.
//!
//! Hostile cameras: every session goes through [`guard`], a relay that bounds each stream's
//! memory ([`StreamLimits`]: RTSP message size, access-unit bytes and packets) and refuses to
//! send a password in clear (Basic authentication on plain RTSP) unless the stream sets
//! `allow_basic_auth = true`; such sessions end with a clear `last_error`
//! ([`IngestError::Limit`], [`IngestError::BasicAuthRefused`]) and are retried with backoff like
//! any failure, without affecting other streams. Codec parameters are checked too: an RTP
//! clock rate outside 1 kHz..=1 MHz or dimensions beyond 65535 end the session.
//!
//! Modules: [`backoff`] (delays), [`status`] (per-stream status and rates), [`error`]
//! (classification, sanitizing), [`guard`] (the bounding relay), [`params`] (codec
//! parameters), [`runtime`] (the paced ingest threads), `session` (one RTSP session),
//! [`replay`] (ONVIF Profile G replay of a camera's own recording over a rewriting relay: frames
//! stamped with the wall-clock time the camera recorded them at).

pub mod backoff;
pub mod error;
pub mod guard;
pub mod params;
pub mod replay;
pub mod runtime;
mod session;
pub mod status;

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use retina::client::SessionGroup;
use tokio::task::JoinHandle;
use tracing::{Instrument, info, info_span, warn};
use vigie_core::config::{ResolvedSource, Transport};
use vigie_core::{Clock, FrameSink, StreamEvent, StreamKey};

pub use backoff::{Backoff, BackoffConfig};
pub use error::IngestError;
pub use guard::StreamLimits;
pub use replay::{ReplayReport, ReplayRequest, replay};
pub use runtime::IngestRuntime;
pub use status::{StatusCell, StreamState, StreamStatus};
pub use tokio_util::sync::CancellationToken;

/// Options shared by all streams.
#[derive(Clone)]
pub struct IngestOptions {
    /// Wall clock used for `Frame::recv` and status times.
    pub clock: Arc<dyn Clock>,
    /// Reconnect delays (default 1 s → 30 s, ±20 % jitter, reset after 30 s of good streaming).
    pub backoff: BackoffConfig,
    /// `User-Agent` sent to cameras.
    pub user_agent: String,
    /// Where TCP sessions run (see [`runtime`]); `None`: on the caller's runtime, reading
    /// packets as they arrive. UDP sessions always run on the caller's runtime.
    pub runtime: Option<Arc<IngestRuntime>>,
    /// Bounds on what each stream's camera may make Vigie buffer ([`guard`]).
    pub limits: StreamLimits,
}

impl IngestOptions {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        IngestOptions {
            clock,
            backoff: BackoffConfig::default(),
            user_agent: format!("Vigie/{}", env!("CARGO_PKG_VERSION")),
            runtime: None,
            limits: StreamLimits::default(),
        }
    }
}

impl std::fmt::Debug for IngestOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestOptions")
            .field("backoff", &self.backoff)
            .field("user_agent", &self.user_agent)
            .field("runtime", &self.runtime)
            .field("limits", &self.limits)
            .finish()
    }
}

/// A running stream task.
#[derive(Debug)]
pub struct StreamHandle {
    pub status: Arc<StatusCell>,
    join: JoinHandle<()>,
}

impl StreamHandle {
    /// The stream's current status.
    pub fn snapshot(&self) -> StreamStatus {
        self.status.snapshot()
    }

    /// True once the task has ended (after shutdown).
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// Waits for the task to end (cancel the shutdown token first). The task ends promptly:
    /// it checks the token at every await point.
    pub async fn join(self) {
        if let Err(e) = self.join.await
            && e.is_panic()
        {
            warn!(stream = %self.status.key(), "ingest task panicked");
        }
    }

    /// Aborts the task without waiting (prefer cancelling the shutdown token).
    pub fn abort(&self) {
        self.join.abort();
    }
}

/// Returns a fresh session id: unique within the process and, being seeded from the wall clock in
/// microseconds, increasing across restarts unless the host clock goes backwards. Never 0.
pub fn next_session_id() -> u64 {
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    NEXT.get_or_init(|| {
        let us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        AtomicU64::new(us.max(1))
    })
    .fetch_add(1, Ordering::Relaxed)
}

/// Spawns the task that keeps one stream recorded: connect, describe, setup, play, read frames,
/// push them to `sink`; reconnect forever with backoff until `shutdown` is cancelled.
///
/// Frames are pushed from the first random-access frame of each session on; each session has a
/// fresh `session_id` ([`next_session_id`]). A session that delivered at least one frame ends with
/// `StreamEvent::SessionEnded { reason }`, where `reason` is the [`IngestError`] text (e.g.
/// `"stall: no frame for 10 s"`, `"server closed the session"`) or `"shutdown"`; sessions that
/// never delivered a frame push nothing (there is no segment to close).
///
/// Must be called within a tokio runtime. `source.url` carries no credentials (see
/// [`vigie_core::config::StreamConfig::resolve`]); they are passed to retina separately.
pub fn spawn_stream(
    key: StreamKey,
    source: ResolvedSource,
    sink: Arc<dyn FrameSink>,
    opts: IngestOptions,
    shutdown: CancellationToken,
) -> StreamHandle {
    spawn_stream_from(key, source, None, sink, opts, shutdown)
}

/// Finds a stream's URL anew before each connection attempt (an ONVIF camera's
/// `GetStreamUri`: the URI may change after a reboot). An `Err` is the stream's `last_error`
/// (short, free of credentials) and the attempt is retried with the usual backoff.
pub trait UrlSource: Send + Sync {
    /// The URL to connect to now.
    fn url(&self) -> std::pin::Pin<Box<dyn Future<Output = Result<url::Url, String>> + Send + '_>>;
}

/// [`spawn_stream`] whose URL comes from `url_source` (when given) instead of `source.url`
/// (then only shown in the status until the first answer).
pub fn spawn_stream_from(
    key: StreamKey,
    source: ResolvedSource,
    url_source: Option<Arc<dyn UrlSource>>,
    sink: Arc<dyn FrameSink>,
    opts: IngestOptions,
    shutdown: CancellationToken,
) -> StreamHandle {
    let status = Arc::new(StatusCell::new(
        key.clone(),
        source.url.as_str(),
        source.transport,
        opts.clock.clone(),
    ));
    spawn_stream_with_status(key, source, url_source, sink, opts, status, shutdown)
}

/// [`spawn_stream`] reporting into an existing status cell: a stream stopped and started
/// again (cluster handovers) keeps one cell, so the API and the quality monitor keep
/// following it. Its counters go on from where they were.
pub fn spawn_stream_with_status(
    key: StreamKey,
    source: ResolvedSource,
    url_source: Option<Arc<dyn UrlSource>>,
    sink: Arc<dyn FrameSink>,
    mut opts: IngestOptions,
    status: Arc<StatusCell>,
    shutdown: CancellationToken,
) -> StreamHandle {
    let span = info_span!("stream", camera = %key.camera, stream = %key.stream);
    let runtime = match (opts.runtime.take(), source.transport) {
        (rt, Transport::Tcp) => rt,
        // No flow control: see `runtime` for why UDP is read as packets arrive.
        (_, Transport::Udp) => None,
    };
    let task = run_stream(
        key,
        source,
        url_source,
        sink,
        opts,
        status.clone(),
        shutdown,
    )
    .instrument(span);
    let join = match runtime {
        Some(rt) => {
            let handle = rt.handle().clone();
            // The task keeps its threads running until it ends, even if the caller lets go of
            // the runtime.
            handle.spawn(async move {
                let _threads = rt;
                task.await
            })
        }
        None => tokio::spawn(task),
    };
    StreamHandle { status, join }
}

async fn run_stream(
    key: StreamKey,
    mut source: ResolvedSource,
    url_source: Option<Arc<dyn UrlSource>>,
    sink: Arc<dyn FrameSink>,
    opts: IngestOptions,
    status: Arc<StatusCell>,
    shutdown: CancellationToken,
) {
    let group = Arc::new(SessionGroup::default().named(key.to_string()));
    let mut backoff = Backoff::new(opts.backoff.clone());
    let mut attempt = 0u64;
    info!(url = %status.snapshot().url, transport = ?source.transport, "starting ingest");
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        status.set_connecting(attempt > 0);
        attempt += 1;

        let stale = group.stale_sessions();
        if stale.num_sessions > 0 {
            info!(
                sessions = stale.num_sessions,
                "waiting for stale sessions to be torn down or expire"
            );
            tokio::select! {
                _ = group.await_stale_sessions(&stale) => {}
                _ = shutdown.cancelled() => break,
            }
        }

        if let Some(us) = &url_source {
            let found = tokio::select! {
                r = us.url() => r,
                _ = shutdown.cancelled() => break,
            };
            match found {
                Ok(mut u) => {
                    // Credentials are configured apart; any in the camera's answer are dropped.
                    let _ = u.set_username("");
                    let _ = u.set_password(None);
                    status.set_url(u.as_str());
                    source.url = u;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    status.set_error(e.clone());
                    status.set_backoff(delay);
                    warn!(
                        retry_in_s = format_args!("{:.1}", delay.as_secs_f64()),
                        "stream URL unavailable: {e}"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    continue;
                }
            }
        }
        let session_id = next_session_id();
        let ctx = session::SessionCtx {
            source: &source,
            sink: &*sink,
            status: &status,
            clock: &*opts.clock,
            group: &group,
            shutdown: &shutdown,
            user_agent: &opts.user_agent,
            limits: &opts.limits,
        };
        let outcome = session::run(&ctx, session_id)
            .instrument(info_span!("session", id = session_id))
            .await;
        let reason = match &outcome.end {
            session::End::Shutdown => "shutdown".to_owned(),
            session::End::Error(e) => e.to_string(),
        };
        if outcome.frames > 0 {
            sink.push(StreamEvent::SessionEnded {
                session_id,
                reason: reason.clone(),
            });
        }
        let session::End::Error(e) = outcome.end else {
            break;
        };
        if outcome.streamed_for >= opts.backoff.healthy_after {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        status.set_error(reason.clone());
        status.set_backoff(delay);
        warn!(
            session_id,
            frames = outcome.frames,
            retry_in_s = format_args!("{:.1}", delay.as_secs_f64()),
            "stream failed: {e}"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    status.set_stopped();
    info!("ingest stopped");
}

//! Edge filling: gaps of a stream filled from the camera's own recording (ONVIF Profile G).
//!
//! One task per camera with `edge_fill`. Every [`TICK`], while the stream is online, it lists
//! the stream's spans over the last `window_s` from the index; each gap between two spans of at
//! least `min_gap_s` that no earlier fill covers is asked of the camera: `FindRecordings`
//! (vigie-onvif), the recording holding it, `GetReplayUri`, then an RTSP replay of exactly that
//! range (vigie-ingest `replay`), written by an edge writer of the store into the stream's past
//! (same index, so listings, `video.mp4` and exports see continuous footage). Each fill is
//! recorded in the store's `edge_fills` tree, journaled (`edge-fill`, which the register lists
//! as its own section), logged and counted in `/metrics`.
//!
//! Bounds: only the window; one replay at a time per camera (the task is sequential) and at
//! most [`MAX_CONCURRENT_REPLAYS`] in the process; the replay reads only while its writer's
//! queue holds less than [`MAX_BACKLOG_BYTES`] (so the camera is slowed by TCP flow control,
//! never the live writers); a failed gap is retried with backoff ([`RETRY_FIRST`] doubling to
//! [`RETRY_MAX`], at most [`MAX_ATTEMPTS`] times), then left as a gap. The gap appears in the
//! index once the live writer has indexed the first segment after the outage (its index
//! interval, 10 s by default), so a fill starts some seconds after the camera is back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Semaphore;
use vigie_core::config::{EdgeFillConfig, OnvifAccess};
use vigie_core::{Clock, StreamKey, Time90k};
use vigie_ingest::{CancellationToken, ReplayRequest, StatusCell, StreamState};
use vigie_onvif::{Device, Options, Recording};

/// How often each camera's task looks for gaps.
pub const TICK: Duration = Duration::from_secs(2);
/// Replays running at once in the process.
pub const MAX_CONCURRENT_REPLAYS: usize = 2;
/// The replay pauses while its writer's queue holds more than this.
pub const MAX_BACKLOG_BYTES: u64 = 1 << 20;
/// First retry delay of a failed gap.
pub const RETRY_FIRST: Duration = Duration::from_secs(15);
/// Longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(600);
/// Attempts per gap.
pub const MAX_ATTEMPTS: u32 = 5;

/// What every camera's task shares.
#[derive(Clone)]
pub struct EdgeContext {
    pub store: vigie_store::Store,
    pub journal: vigie_audit::Journal,
    pub clock: Arc<dyn Clock>,
    pub counts: Arc<vigie_api::CameraEventCounts>,
    pub replays: Arc<Semaphore>,
}

impl EdgeContext {
    pub fn new(
        store: vigie_store::Store,
        journal: vigie_audit::Journal,
        clock: Arc<dyn Clock>,
        counts: Arc<vigie_api::CameraEventCounts>,
    ) -> Self {
        EdgeContext {
            store,
            journal,
            clock,
            counts,
            replays: Arc::new(Semaphore::new(MAX_CONCURRENT_REPLAYS)),
        }
    }
}

/// One camera's edge filling.
pub struct EdgeCamera {
    pub key: StreamKey,
    pub config: EdgeFillConfig,
    pub access: OnvifAccess,
    /// The stream's profile token, when it names one (to pick the recording of that source).
    pub profile: Option<String>,
    /// RTSP credentials of the stream (the replay uses the same).
    pub rtsp_username: Option<String>,
    pub rtsp_password: Option<vigie_core::config::Secret>,
    pub status: Arc<StatusCell>,
}

struct Attempt {
    failures: u32,
    next: tokio::time::Instant,
}

/// Runs until `shutdown` (see the module docs).
pub async fn fill_loop(cam: EdgeCamera, ctx: EdgeContext, shutdown: CancellationToken) {
    let span = tracing::info_span!("edge_fill", camera = %cam.key.camera, stream = %cam.key.stream);
    let mut attempts: HashMap<(i64, i64), Attempt> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        if cam.status.snapshot().state != StreamState::Online {
            continue;
        }
        let gaps = match find_gaps(&cam, &ctx).await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(parent: &span, "edge fill: listing the stream's gaps: {e:#}");
                continue;
            }
        };
        for gap in gaps {
            let slot = (gap.0.0, gap.1.0);
            if let Some(a) = attempts.get(&slot)
                && (a.failures >= MAX_ATTEMPTS || tokio::time::Instant::now() < a.next)
            {
                continue;
            }
            let permit = tokio::select! {
                _ = shutdown.cancelled() => return,
                p = ctx.replays.clone().acquire_owned() => p,
            };
            let Ok(_permit) = permit else {
                return;
            };
            tracing::info!(parent: &span, start = %gap.0.to_rfc3339(), end = %gap.1.to_rfc3339(), "edge fill: asking the camera for its recording of a gap");
            let r = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = fill_one(&cam, &ctx, gap) => r,
            };
            match r {
                Ok(()) => {
                    attempts.remove(&slot);
                }
                Err(e) => {
                    ctx.counts.edge_failed(&cam.key.camera, &cam.key.stream);
                    let a = attempts.entry(slot).or_insert(Attempt {
                        failures: 0,
                        next: tokio::time::Instant::now(),
                    });
                    a.failures += 1;
                    let delay = RETRY_FIRST
                        .saturating_mul(1 << a.failures.min(8).saturating_sub(1))
                        .min(RETRY_MAX);
                    a.next = tokio::time::Instant::now() + delay;
                    tracing::warn!(parent: &span, failures = a.failures, retry_in_s = delay.as_secs(), "edge fill of [{}, {}) failed: {e:#}", gap.0.to_rfc3339(), gap.1.to_rfc3339());
                }
            }
        }
        // Forget gaps that left the window.
        let from = ctx.clock.now().0 - i64::from(cam.config.window_s) * 90_000;
        attempts.retain(|k, _| k.1 > from);
    }
}

/// Gaps of at least `min_gap_s` between spans of the window that no fill covers yet, oldest
/// first.
async fn find_gaps(cam: &EdgeCamera, ctx: &EdgeContext) -> anyhow::Result<Vec<(Time90k, Time90k)>> {
    let now = ctx.clock.now();
    let from = Time90k(now.0 - i64::from(cam.config.window_s) * 90_000);
    let store = ctx.store.clone();
    let key = cam.key.clone();
    let min_gap_90k = i64::from(cam.config.min_gap_s) * 90_000;
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(Time90k, Time90k)>> {
        let spans = store.spans(&key, from, now)?;
        let fills = store.edge_fills(&key, from, now)?;
        Ok(spans
            .windows(2)
            .map(|w| (w[0].end, w[1].start))
            .filter(|(a, b)| b.0 - a.0 >= min_gap_90k)
            .filter(|(a, b)| !fills.iter().any(|f| f.start < *b && f.end > *a))
            .collect())
    })
    .await?
}

/// Picks the recording to replay: the configured token, else the one recording the stream's
/// profile, else the one holding most of the gap (`recordings` is sorted so).
fn pick<'a>(cam: &EdgeCamera, recordings: &'a [Recording]) -> Option<&'a Recording> {
    if let Some(t) = &cam.config.recording {
        return recordings.iter().find(|r| &r.token == t);
    }
    cam.profile
        .as_ref()
        .and_then(|p| recordings.iter().find(|r| &r.source_id == p))
        .or_else(|| recordings.first())
}

async fn fill_one(
    cam: &EdgeCamera,
    ctx: &EdgeContext,
    gap: (Time90k, Time90k),
) -> anyhow::Result<()> {
    let dev = Device::connect(
        &cam.access.url,
        crate::onvif::credentials(&cam.access),
        Options::default(),
    )
    .await?;
    let (a, b) = (gap.0.to_timestamp(), gap.1.to_timestamp());
    let recordings = dev.recordings_covering(a, b).await?;
    let rec = pick(cam, &recordings).with_context(|| {
        format!(
            "the camera holds no recording of the gap ({} recordings overlap it)",
            recordings.len()
        )
    })?;
    let (a, b) = rec
        .overlap(a, b)
        .context("the recording does not hold the gap")?;
    let (start, end) = (Time90k::from_timestamp(a), Time90k::from_timestamp(b));
    let uri = dev.replay_uri(&rec.token).await?;
    let writer = ctx.store.start_edge_writer(cam.key.clone())?;
    let span_s = (end.0 - start.0) as f64 / 90_000.0;
    let req = ReplayRequest {
        url: uri,
        username: cam.rtsp_username.clone(),
        password: cam.rtsp_password.as_ref().map(|p| p.expose().to_owned()),
        start,
        end,
        session_id: vigie_ingest::next_session_id(),
        // A camera replays at least in real time; a minute more for the answers.
        timeout: Duration::from_secs_f64(span_s + 60.0),
        stall: Duration::from_secs(15),
        max_backlog_bytes: MAX_BACKLOG_BYTES,
    };
    let backlog = || writer.stats().queue_bytes;
    let rep = vigie_ingest::replay(&req, &writer, &backlog).await;
    let segments = writer.stats().segments;
    drop(writer);
    let rep = rep.context("replaying the camera's recording")?;
    let (Some(first), Some(last)) = (rep.first_90k, rep.end_90k) else {
        anyhow::bail!("the camera's replay held no frame of the gap");
    };
    let fill = vigie_store::EdgeFill {
        camera: cam.key.camera.clone(),
        stream: cam.key.stream.clone(),
        start: first,
        end: last,
        frames: rep.frames,
        recording: rec.token.clone(),
        filled_at: ctx.clock.now(),
    };
    ctx.store.record_edge_fill(&fill)?;
    let secs = (last.0 - first.0) as f64 / 90_000.0;
    ctx.counts.edge_filled(
        &cam.key.camera,
        &cam.key.stream,
        segments.max(1),
        rep.frames,
        secs,
    );
    let mut entry = vigie_audit::NewEntry::new("system", vigie_audit::Action::EdgeFill)
        .camera(&cam.key.camera, &cam.key.stream)
        .range(first, last)
        .details(serde_json::json!({
            "recording": rec.token,
            "frames": rep.frames,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "gap": [gap.0.to_rfc3339(), gap.1.to_rfc3339()],
        }));
    entry.reason = Some("gap filled from the camera's own recording (ONVIF Profile G)".into());
    ctx.journal.append_or_log(entry);
    tracing::info!(camera = %cam.key.camera, stream = %cam.key.stream, start = %first.to_rfc3339(), end = %last.to_rfc3339(), frames = rep.frames, recording = %rec.token, "edge fill: stored the camera's recording of a gap");
    Ok(())
}

//! Fault behaviour of vigie-ingest against hand-rolled bad cameras: garbage, refused connections,
//! silent servers, 401/404 answers, mid-stream packet errors, frames before the first key frame,
//! stalls. Nothing may panic, errors must be clear and free of credentials, retries must go on.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Behaviour, FakeCamera};
use vigie_core::config::{ResolvedSource, Secret, Transport};
use vigie_core::{Codec, Frame, FrameSink, StreamEvent, StreamKey, SystemClock};
use vigie_ingest::{
    CancellationToken, IngestOptions, IngestRuntime, StreamHandle, StreamState, spawn_stream,
};

#[derive(Default)]
struct Collect(Mutex<Vec<StreamEvent>>);

impl FrameSink for Collect {
    fn push(&self, event: StreamEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Collect {
    fn frames(&self) -> Vec<Frame> {
        let g = self.0.lock().unwrap();
        g.iter()
            .filter_map(|e| match e {
                StreamEvent::Frame(f) => Some(f.clone()),
                _ => None,
            })
            .collect()
    }
    fn ends(&self) -> Vec<(u64, String)> {
        let g = self.0.lock().unwrap();
        g.iter()
            .filter_map(|e| match e {
                StreamEvent::SessionEnded { session_id, reason } => {
                    Some((*session_id, reason.clone()))
                }
                _ => None,
            })
            .collect()
    }
}

fn source(url: &str) -> ResolvedSource {
    ResolvedSource {
        url: url.parse().unwrap(),
        username: None,
        password: None,
        transport: Transport::Tcp,
        connect_timeout_s: 2,
        stall_timeout_s: 2,
        allow_basic_auth: false,
    }
}

fn start(src: ResolvedSource) -> (Arc<Collect>, StreamHandle, CancellationToken) {
    start_on(src, None)
}

/// Starts a stream whose TCP session runs on `runtime` (the caller's runtime if `None`).
fn start_on(
    src: ResolvedSource,
    runtime: Option<Arc<IngestRuntime>>,
) -> (Arc<Collect>, StreamHandle, CancellationToken) {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("vigie_ingest=debug")
        .try_init();
    let sink = Arc::new(Collect::default());
    let shutdown = CancellationToken::new();
    let mut opts = IngestOptions::new(Arc::new(SystemClock));
    opts.backoff.min = Duration::from_millis(100);
    opts.backoff.max = Duration::from_millis(400);
    opts.runtime = runtime;
    let h = spawn_stream(
        StreamKey::new("cam", "main"),
        src,
        sink.clone(),
        opts,
        shutdown.clone(),
    );
    (sink, h, shutdown)
}

async fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stop(handle: StreamHandle, shutdown: CancellationToken) {
    assert!(
        !handle.is_finished(),
        "the task must keep running until shutdown"
    );
    shutdown.cancel();
    let status = handle.status.clone();
    tokio::time::timeout(Duration::from_secs(5), handle.join())
        .await
        .expect("prompt shutdown");
    assert_eq!(status.snapshot().state, StreamState::Stopped);
}

#[tokio::test]
async fn garbage_server_is_retried_with_clear_error() {
    let cam = FakeCamera::start(Behaviour::Garbage).await;
    let (sink, handle, shutdown) = start(source(&cam.url()));
    wait_for("3 reconnects", 10, || handle.snapshot().reconnects >= 3).await;
    let st = handle.snapshot();
    let err = st.last_error.clone().expect("last_error set");
    assert!(!err.contains('\n'), "single line: {err:?}");
    assert!(err.starts_with("DESCRIBE: RTSP framing error"), "{err}");
    assert!(!err.ends_with(':'), "{err}");
    assert!(!st.online);
    assert!(cam.connections() >= 3);
    assert!(sink.frames().is_empty() && sink.ends().is_empty());
    stop(handle, shutdown).await;
}

#[tokio::test]
async fn connection_refused_backs_off() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (_sink, handle, shutdown) = start(source(&format!("rtsp://127.0.0.1:{port}/x")));
    wait_for("an error", 5, || handle.snapshot().last_error.is_some()).await;
    let st = handle.snapshot();
    let err = st.last_error.unwrap();
    assert!(
        err.starts_with("cannot connect:") && err.to_lowercase().contains("refused"),
        "{err}"
    );
    wait_for("backoff state", 5, || {
        handle.snapshot().state == StreamState::Backoff
    })
    .await;
    assert!(handle.snapshot().retry_in_s.is_some());
    wait_for("retries", 10, || handle.snapshot().reconnects >= 2).await;
    stop(handle, shutdown).await;
}

#[tokio::test]
async fn silent_server_hits_connect_timeout() {
    let cam = FakeCamera::start(Behaviour::Silent).await;
    let mut src = source(&cam.url());
    src.connect_timeout_s = 1;
    let (_sink, handle, shutdown) = start(src);
    wait_for("timeout error", 10, || {
        handle.snapshot().last_error.is_some()
    })
    .await;
    assert_eq!(
        handle.snapshot().last_error.unwrap(),
        "timed out after 1 s during connect/DESCRIBE"
    );
    stop(handle, shutdown).await;
}

#[tokio::test]
async fn unauthorized_says_authentication_and_hides_password() {
    let cam = FakeCamera::start(Behaviour::Unauthorized).await;
    // With credentials (wrong ones, as far as the camera is concerned).
    let mut src = source(&format!("rtsp://{}/stream", cam.addr));
    src.username = Some("admin".into());
    src.password = Some(Secret::new("hunter2"));
    src.allow_basic_auth = true; // its challenge is Basic (refused by default: see rogue.rs)
    let (_sink, handle, shutdown) = start(src);
    wait_for("auth error", 10, || handle.snapshot().reconnects >= 1).await;
    let st = handle.snapshot();
    let err = st.last_error.clone().unwrap();
    assert!(err.starts_with("authentication failed (401)"), "{err}");
    let json = serde_json::to_string(&st).unwrap();
    assert!(
        !json.contains("hunter2") && !json.contains("admin"),
        "{json}"
    );
    stop(handle, shutdown).await;

    // Without credentials.
    let (_sink, handle, shutdown) = start(source(&cam.url()));
    wait_for("auth error", 10, || handle.snapshot().last_error.is_some()).await;
    assert!(
        handle
            .snapshot()
            .last_error
            .unwrap()
            .starts_with("authentication failed (401)")
    );
    stop(handle, shutdown).await;
}

#[tokio::test]
async fn not_found_is_reported() {
    let cam = FakeCamera::start(Behaviour::NotFound).await;
    let (_sink, handle, shutdown) = start(source(&cam.url()));
    wait_for("error", 10, || handle.snapshot().last_error.is_some()).await;
    let err = handle.snapshot().last_error.unwrap();
    assert!(err.starts_with("server answered 404 to DESCRIBE"), "{err}");
    stop(handle, shutdown).await;
}

/// Joining mid-stream (FU-A without start), P frames before the first key frame, then frames,
/// then silence: packet error tolerated, leading frames skipped, stall ends the session,
/// reconnect follows.
#[tokio::test]
async fn stream_then_stall() {
    stream_then_stall_on(None).await;
}

/// The same on a paced ingest thread (see `vigie_ingest::runtime`): frames, stall detection,
/// reconnection and shutdown behave the same; frames come in batches, `recv` never goes back.
#[tokio::test]
async fn stream_then_stall_on_ingest_runtime() {
    let rt = IngestRuntime::start(1, vigie_ingest::runtime::DEFAULT_TICK).unwrap();
    stream_then_stall_on(Some(Arc::new(rt))).await;
}

async fn stream_then_stall_on(runtime: Option<Arc<IngestRuntime>>) {
    let cam = FakeCamera::start(Behaviour::Stream {
        leading_p: 3,
        frames: 20,
    })
    .await;
    let mut src = source(&cam.url());
    src.stall_timeout_s = 1;
    let (sink, handle, shutdown) = start_on(src, runtime);
    wait_for("21 frames", 10, || sink.frames().len() >= 21).await;
    let frames = sink.frames();
    assert!(
        frames[0].is_key,
        "frames before the first key frame are not sent"
    );
    assert!(frames[1..21].iter().all(|f| !f.is_key));
    assert_eq!(frames[0].params.codec, Codec::H264);
    assert_eq!(
        (frames[0].params.width, frames[0].params.height),
        (640, 360)
    );
    assert!(
        frames
            .windows(2)
            .take(20)
            .all(|w| w[1].media_90k - w[0].media_90k == 3600)
    );
    assert!(frames.windows(2).all(|w| w[1].recv >= w[0].recv));
    let st = handle.snapshot();
    assert!(st.online);
    assert!(st.packet_errors >= 1, "{st:?}");
    assert_eq!(st.reconnects, 0);

    wait_for("stall", 10, || !sink.ends().is_empty()).await;
    assert_eq!(
        sink.ends()[0],
        (frames[0].session_id, "stall: no frame for 1 s".to_owned())
    );
    // The camera streams again on the next connection: new session id.
    wait_for("second session", 10, || {
        sink.frames()
            .last()
            .is_some_and(|f| f.session_id != frames[0].session_id)
    })
    .await;
    let st = handle.snapshot();
    assert!(st.reconnects >= 1);
    assert_eq!(st.sessions, 2);
    assert_eq!(st.last_error.as_deref(), Some("stall: no frame for 1 s"));
    stop(handle, shutdown).await;
    let ends = sink.ends();
    assert_eq!(ends.last().unwrap().1, "shutdown");
}

/// Other streams are unaffected by a failing one.
#[tokio::test]
async fn streams_are_independent() {
    let bad = FakeCamera::start(Behaviour::Garbage).await;
    let good = FakeCamera::start(Behaviour::Stream {
        leading_p: 0,
        frames: 200,
    })
    .await;
    let (_s1, h1, sd1) = start(source(&bad.url()));
    let (s2, h2, sd2) = start(source(&good.url()));
    wait_for("good frames", 10, || s2.frames().len() >= 10).await;
    assert!(h1.snapshot().last_error.is_some());
    assert!(h2.snapshot().online);
    assert_eq!(h2.snapshot().reconnects, 0);
    stop(h1, sd1).await;
    stop(h2, sd2).await;
}

/// NAL unit types of the AVC (4-byte length-prefixed) access unit `data` (H.264 header byte).
fn h264_nal_types(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(nal) = rest.get(4..4 + len) else {
            out.push(0xff); // truncated: not a valid access unit
            break;
        };
        out.push(nal.first().map_or(0xff, |b| b & 0x9f)); // forbidden bit + type
        rest = &rest[4 + len..];
    }
    out
}

/// A camera that switches from H.264 to H.265 inside its session (no new SDP: what a hostile or
/// misconfigured camera can do). retina rejects some of the H.265 NAL units as H.264 (bad
/// header) and lets others through as H.264 types they are not (data partitions, SEI…). Every
/// frame handed to the recorder as H.264 must hold only H.264 slice and parameter NAL units:
/// after a dropped frame, ingest waits for the next key frame (none comes here), so no garbage
/// reaches a segment. Before the fix, frames of NAL types 2/4 (H.265 TRAIL_R/PPS headers read
/// as H.264) were recorded.
#[tokio::test]
async fn codec_switch_inside_a_session_records_no_garbage() {
    use vigie_camsim::{Fixture, MountConfig, Server};
    let h264 = Fixture::embedded("h264-baseline-640x360-25fps-gop50.h264").unwrap();
    let h265 = Fixture::embedded("h265-main-1280x720-25fps-gop50.h265").unwrap();
    let server = Server::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![MountConfig::new("cam", h264)],
    )
    .await
    .unwrap();
    let url = server.url("cam");
    let (sink, handle, shutdown) = start(source(&url));
    wait_for("H.264 frames", 15, || sink.frames().len() >= 30).await;
    server.mount("cam").unwrap().switch_fixture(h265);
    // 4 s of H.265 in an H.264 session (~100 access units).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let frames = sink.frames();
    let mut bad = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        if f.params.codec != vigie_core::Codec::H264 {
            continue;
        }
        let types = h264_nal_types(&f.data);
        if types.is_empty() || types.iter().any(|t| !matches!(t, 1 | 5..=9 | 12)) {
            bad.push((i, types));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} frames recorded as H.264 are not H.264: first {:?}",
        bad.len(),
        frames.len(),
        &bad[..bad.len().min(3)]
    );
    stop(handle, shutdown).await;
}

/// A paused process is not a stalled camera: when the thread running the session does not run
/// for 3 s (as under SIGSTOP) while the camera goes on sending, the stall timer (1 s) fires
/// late on resume; the session then reads what waited in the socket instead of ending with
/// a stall, and no frame of the pause is lost.
#[tokio::test]
async fn a_paused_process_reads_what_waited_in_the_socket_instead_of_judging_a_stall() {
    let rt = Arc::new(IngestRuntime::start(1, vigie_ingest::runtime::DEFAULT_TICK).unwrap());
    let cam = FakeCamera::start(Behaviour::Stream {
        leading_p: 0,
        frames: 250,
    })
    .await;
    let mut src = source(&cam.url());
    src.stall_timeout_s = 1;
    let (sink, handle, shutdown) = start_on(src, Some(rt.clone()));
    wait_for("20 frames", 10, || sink.frames().len() >= 20).await;
    // The ingest thread does not run for 3 s; the camera (on this runtime) keeps sending.
    rt.handle()
        .spawn(async { std::thread::sleep(Duration::from_secs(3)) });
    wait_for("all 250 frames", 30, || sink.frames().len() >= 250).await;
    let frames = sink.frames();
    assert!(
        sink.ends().is_empty(),
        "the session ended: {:?}",
        sink.ends()
    );
    assert!(
        frames
            .windows(2)
            .all(|w| w[1].session_id == w[0].session_id && w[1].media_90k - w[0].media_90k == 3600),
        "one session, no frame missing"
    );
    assert_eq!(handle.snapshot().reconnects, 0);
    stop(handle, shutdown).await;
}

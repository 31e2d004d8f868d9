//! vigie-ingest against an independent RTSP server (gst-rtsp-server looping fixture files):
//! H.264 and H.265, TCP and UDP, cadence, key frames, parameters, status, stall, drop, auth and a
//! mid-stream resolution change.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vigie_core::config::{ResolvedSource, Secret, Transport};
use vigie_core::{Codec, Frame, FrameSink, StreamEvent, StreamKey, SystemClock};
use vigie_ingest::{CancellationToken, IngestOptions, StreamHandle, StreamState, spawn_stream};
use vigie_testkit::gst_server::{GstRtspServer, GstServerOptions, fixture};
use vigie_testkit::media::ffprobe_output;

const H264: &str = "h264-baseline-640x360-25fps-gop50.h264";
const H265: &str = "h265-main-1280x720-25fps-gop50.h265";
const RES_CHANGE: &str = "h264-res-change.h264";

#[derive(Default)]
struct Collect(Mutex<Vec<StreamEvent>>);

impl FrameSink for Collect {
    fn push(&self, event: StreamEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Collect {
    fn frames(&self) -> Vec<Frame> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Frame(f) => Some(f.clone()),
                _ => None,
            })
            .collect()
    }
    fn ends(&self) -> Vec<(u64, String)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                StreamEvent::SessionEnded { session_id, reason } => {
                    Some((*session_id, reason.clone()))
                }
                _ => None,
            })
            .collect()
    }
}

fn source(url: &str, transport: Transport) -> ResolvedSource {
    ResolvedSource {
        url: url.parse().unwrap(),
        username: None,
        password: None,
        transport,
        connect_timeout_s: 10,
        stall_timeout_s: 10,
        allow_basic_auth: false,
    }
}

fn start(src: ResolvedSource) -> (Arc<Collect>, StreamHandle, CancellationToken) {
    let sink = Arc::new(Collect::default());
    let shutdown = CancellationToken::new();
    let mut opts = IngestOptions::new(Arc::new(SystemClock));
    opts.backoff.min = Duration::from_millis(200);
    opts.backoff.max = Duration::from_secs(1);
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn check_stream(name: &str, codec: Codec, transport: Transport, width: u16, height: u16) {
    let server = GstRtspServer::start(&fixture(name), codec, 25).unwrap();
    let (sink, handle, shutdown) = start(source(&server.url(), transport));
    const N: usize = 100;
    wait_for("100 frames", 30, || sink.frames().len() >= N).await;
    let st = handle.snapshot();
    let frames = sink.frames();

    let first = &frames[0];
    assert!(first.is_key, "first frame must be a key frame");
    assert_eq!(first.params.codec, codec);
    assert_eq!((first.params.width, first.params.height), (width, height));
    assert!(!first.params.sample_entry.is_empty());
    let fourcc = &first.params.sample_entry[4..8];
    assert_eq!(
        fourcc,
        if codec == Codec::H264 {
            b"avc1"
        } else {
            b"hvc1"
        }
    );
    assert!(frames.iter().all(|f| f.session_id == first.session_id));
    // 4-byte length-prefixed NAL units covering the whole frame.
    for f in &frames[..10] {
        let mut rest = &f.data[..];
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            assert!(len > 0 && len + 4 <= rest.len(), "bad NAL framing");
            rest = &rest[4 + len..];
        }
    }
    // Media time: strictly increasing by 1/25 s (3600 ticks at 90 kHz).
    for w in frames.windows(2) {
        assert_eq!(w[1].media_90k - w[0].media_90k, 3600, "media_90k cadence");
    }
    // Key frames every 50 frames (GOP 50).
    let keys: Vec<usize> = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.is_key)
        .map(|(i, _)| i)
        .collect();
    assert!(keys.windows(2).all(|w| w[1] - w[0] == 50), "{keys:?}");
    // Real-time pacing: N frames take about N/25 s of wall clock.
    let last = &frames[N - 1];
    let wall = (last.recv - first.recv).as_secs_f64();
    let expected = (N - 1) as f64 / 25.0;
    assert!(
        (wall - expected).abs() < expected * 0.25,
        "wall {wall:.2}s vs {expected:.2}s"
    );

    assert_eq!(st.state, StreamState::Online, "{st:?}");
    assert!(st.online);
    assert!((st.fps - 25.0).abs() < 1.5, "fps {}", st.fps);
    assert!(st.bitrate_bps > 0);
    assert_eq!(
        (st.width, st.height, st.codec),
        (Some(width), Some(height), Some(codec))
    );
    assert!(st.last_frame.is_some() && st.connected_since.is_some());
    assert_eq!(st.reconnects, 0);
    assert!(st.frames_total >= N as u64);
    assert_eq!(st.transport, transport);

    shutdown.cancel();
    let status = handle.status.clone();
    tokio::time::timeout(Duration::from_secs(10), handle.join())
        .await
        .expect("task ends on shutdown");
    assert_eq!(status.snapshot().state, StreamState::Stopped);
    let ends = sink.ends();
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(ends[0], (first.session_id, "shutdown".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_tcp() {
    check_stream(H264, Codec::H264, Transport::Tcp, 640, 360).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_udp() {
    check_stream(H264, Codec::H264, Transport::Udp, 640, 360).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_tcp() {
    check_stream(H265, Codec::H265, Transport::Tcp, 1280, 720).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_udp() {
    check_stream(H265, Codec::H265, Transport::Udp, 1280, 720).await;
}

/// The helper server's timestamps advance (DESIGN §6 PTS trap), checked with ffprobe.
#[test]
fn gst_server_timestamps_advance_ffprobe() {
    let server = GstRtspServer::start(&fixture(H264), Codec::H264, 25).unwrap();
    let out = ffprobe_output(
        server.url(),
        &[
            "-rtsp_transport",
            "tcp",
            "-select_streams",
            "v:0",
            "-read_intervals",
            "%+3",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
        ],
    )
    .unwrap();
    let pts: Vec<f64> = out
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    assert!(pts.len() >= 40, "{pts:?}");
    assert!(
        pts.windows(2).all(|w| w[1] > w[0]),
        "timestamps must increase: {pts:?}"
    );
    let span = pts[pts.len() - 1] - pts[0];
    let expected = (pts.len() - 1) as f64 / 25.0;
    assert!((span - expected).abs() < 0.1, "span {span} vs {expected}");
}

/// Loop boundary: the fixture is 10 s long; after it loops, media time keeps increasing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_keeps_timestamps_monotonic() {
    let server = GstRtspServer::start(&fixture(RES_CHANGE), Codec::H264, 25).unwrap();
    let (sink, handle, shutdown) = start(source(&server.url(), Transport::Tcp));
    // 200 frames per loop at 25 fps = 8 s; wait into the second loop.
    wait_for("frames after the loop", 30, || sink.frames().len() >= 260).await;
    let frames = sink.frames();
    for w in frames.windows(2) {
        assert_eq!(w[1].media_90k - w[0].media_90k, 3600);
    }
    // Resolution change mid-stream: new parameters Arc with the new size, starting on a key frame.
    let sizes: Vec<(u16, u16)> = frames
        .iter()
        .map(|f| (f.params.width, f.params.height))
        .collect();
    let change = sizes
        .iter()
        .position(|s| *s == (320, 180))
        .expect("resolution change seen");
    assert!(frames[change].is_key);
    assert!(!Arc::ptr_eq(
        &frames[change].params,
        &frames[change - 1].params
    ));
    // Unchanged parameters share one Arc.
    assert!(Arc::ptr_eq(
        &frames[change].params,
        &frames[change + 1].params
    ));
    // And back to 640x360 after the loop.
    assert!(sizes[change..].contains(&(640, 360)));
    assert_eq!(handle.snapshot().reconnects, 0);
    shutdown.cancel();
    handle.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_then_recover() {
    let server = GstRtspServer::start(&fixture(H264), Codec::H264, 25).unwrap();
    let mut src = source(&server.url(), Transport::Tcp);
    src.stall_timeout_s = 2;
    let (sink, handle, shutdown) = start(src);
    wait_for("frames", 20, || sink.frames().len() >= 25).await;
    let first_session = sink.frames()[0].session_id;
    server.set_stalled(true);
    wait_for("stall detected", 20, || !sink.ends().is_empty()).await;
    let ends = sink.ends();
    assert_eq!(ends[0].0, first_session);
    assert_eq!(ends[0].1, "stall: no frame for 2 s");
    // The status cell is updated just after the session end reaches the sink: wait for it
    // (a full run at load caught the gap between the two).
    wait_for("the status to show the stall", 10, || {
        let st = handle.snapshot();
        st.last_error.as_deref() == Some("stall: no frame for 2 s") && !st.online
    })
    .await;
    server.set_stalled(false);
    wait_for("new session", 30, || {
        sink.frames()
            .last()
            .is_some_and(|f| f.session_id != first_session)
    })
    .await;
    let new_frames: Vec<Frame> = sink
        .frames()
        .into_iter()
        .filter(|f| f.session_id != first_session)
        .collect();
    assert!(new_frames[0].is_key);
    wait_for("online again", 10, || handle.snapshot().online).await;
    assert!(handle.snapshot().reconnects >= 1);
    shutdown.cancel();
    handle.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_drop_reconnects() {
    let server = GstRtspServer::start(&fixture(H264), Codec::H264, 25).unwrap();
    let (sink, handle, shutdown) = start(source(&server.url(), Transport::Tcp));
    wait_for("frames", 20, || sink.frames().len() >= 25).await;
    let first_session = sink.frames()[0].session_id;
    server.disconnect_all();
    wait_for("session end", 20, || !sink.ends().is_empty()).await;
    assert_eq!(sink.ends()[0].0, first_session);
    wait_for("new session", 30, || {
        sink.frames()
            .last()
            .is_some_and(|f| f.session_id != first_session)
    })
    .await;
    let st = handle.snapshot();
    assert!(st.reconnects >= 1, "{st:?}");
    assert!(st.last_error.is_some());
    shutdown.cancel();
    handle.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_wrong_and_right_password() {
    let server = GstRtspServer::start_with(GstServerOptions {
        fixture: fixture(H264),
        codec: Codec::H264,
        fps: 25,
        credentials: Some(("rec".into(), "s3cret-pw".into())),
    })
    .unwrap();

    // gst-rtsp-server challenges with Basic: by default the password is not sent at all.
    let mut src = source(&server.url(), Transport::Tcp);
    src.username = Some("rec".into());
    src.password = Some(Secret::new("s3cret-pw"));
    let (sink, handle, shutdown) = start(src);
    wait_for("a refusal", 20, || handle.snapshot().last_error.is_some()).await;
    let err = handle.snapshot().last_error.unwrap();
    assert!(
        err.starts_with("refused to send the password in clear"),
        "{err}"
    );
    assert!(sink.frames().is_empty());
    shutdown.cancel();
    handle.join().await;

    // Wrong password (Basic allowed): clear error, retries, never the password in status.
    let mut src = source(&server.url(), Transport::Tcp);
    src.username = Some("rec".into());
    src.password = Some(Secret::new("wrong-pw"));
    src.allow_basic_auth = true;
    let (sink, handle, shutdown) = start(src);
    wait_for("two failed attempts", 20, || {
        handle.snapshot().reconnects >= 2
    })
    .await;
    let st = handle.snapshot();
    let err = st.last_error.clone().unwrap();
    assert!(err.contains("authentication failed (401)"), "{err}");
    let json = serde_json::to_string(&st).unwrap();
    assert!(
        !json.contains("wrong-pw") && !json.contains("rec@"),
        "{json}"
    );
    assert!(sink.frames().is_empty());
    shutdown.cancel();
    handle.join().await;

    // Right password (Basic allowed).
    let mut src = source(&server.url(), Transport::Tcp);
    src.username = Some("rec".into());
    src.password = Some(Secret::new("s3cret-pw"));
    src.allow_basic_auth = true;
    let (sink, handle, shutdown) = start(src);
    wait_for("frames with auth", 20, || sink.frames().len() >= 10).await;
    shutdown.cancel();
    handle.join().await;
}

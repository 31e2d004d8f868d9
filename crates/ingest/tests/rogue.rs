//! Hostile cameras (camsim rogue modes) against vigie-ingest: each rogue session ends with a
//! clear `last_error` naming the broken bound (see `vigie_ingest::guard`), the password never
//! leaves in clear on plain RTSP unless the stream allows Basic, and a healthy stream next to
//! the rogue ones loses no frame.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vigie_camsim::{Auth, Fixture, MountConfig, Rogue, Server, ServerHandle};
use vigie_core::config::{ResolvedSource, Secret, Transport};
use vigie_core::{FrameSink, StreamEvent, StreamKey, SystemClock};
use vigie_ingest::{CancellationToken, IngestOptions, StreamHandle, StreamLimits, spawn_stream};

#[derive(Default)]
struct Count {
    frames: Mutex<u64>,
}

impl FrameSink for Count {
    fn push(&self, event: StreamEvent) {
        if let StreamEvent::Frame(_) = event {
            *self.frames.lock().unwrap() += 1;
        }
    }
}

impl Count {
    fn frames(&self) -> u64 {
        *self.frames.lock().unwrap()
    }
}

fn fixture() -> Arc<Fixture> {
    Fixture::embedded("h264-baseline-640x360-25fps-gop50.h264").unwrap()
}

async fn camsim(mounts: Vec<MountConfig>) -> ServerHandle {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("vigie_ingest=info,vigie_camsim=info")
        .try_init();
    Server::start("127.0.0.1:0".parse().unwrap(), mounts)
        .await
        .unwrap()
}

fn source(url: &str) -> ResolvedSource {
    ResolvedSource {
        url: url.parse().unwrap(),
        username: None,
        password: None,
        transport: Transport::Tcp,
        connect_timeout_s: 5,
        stall_timeout_s: 5,
        allow_basic_auth: false,
    }
}

fn start(name: &str, src: ResolvedSource) -> (Arc<Count>, StreamHandle, CancellationToken) {
    let sink = Arc::new(Count::default());
    let shutdown = CancellationToken::new();
    let mut opts = IngestOptions::new(Arc::new(SystemClock));
    opts.backoff.min = Duration::from_millis(200);
    opts.backoff.max = Duration::from_millis(500);
    let h = spawn_stream(
        StreamKey::new(name, "main"),
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
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), handle.join())
        .await
        .expect("prompt shutdown");
}

/// The error a rogue mode must end its session with (default limits).
fn expected_error(mode: Rogue) -> String {
    let l = StreamLimits::default();
    match mode {
        Rogue::EndlessHeader => format!(
            "camera exceeded a per-stream limit: RTSP header longer than {} bytes",
            l.max_rtsp_message_bytes
        ),
        // 1 TiB of body plus the header.
        Rogue::HugeContentLength => {
            "camera exceeded a per-stream limit: RTSP message of 1099511627".to_owned()
        }
        Rogue::EndlessFuA => format!(
            "camera exceeded a per-stream limit: access unit larger than {} bytes",
            l.max_access_unit_bytes
        ),
        Rogue::TinyPacketFlood => format!(
            "camera exceeded a per-stream limit: access unit of more than {} RTP packets",
            l.max_access_unit_packets
        ),
        Rogue::HugeSprop => "camera exceeded a per-stream limit: RTSP message of".to_owned(),
        Rogue::AbsurdClockRate => "RTP clock rate 1 Hz is outside".to_owned(),
    }
}

async fn rogue_session_ends_clearly(mode: Rogue) {
    let sim = camsim(vec![MountConfig::new("rogue", fixture()).with_rogue(mode)]).await;
    let (sink, handle, shutdown) = start("rogue", source(&sim.url("rogue")));
    wait_for("the session to fail", 30, || {
        handle.snapshot().last_error.is_some()
    })
    .await;
    let err = handle.snapshot().last_error.unwrap();
    let want = expected_error(mode);
    assert!(
        err.starts_with(&want),
        "{mode:?}: {err:?}, expected {want:?}"
    );
    if mode.is_media() {
        // It recorded until the attack.
        assert!(sink.frames() >= 10, "{mode:?}: {} frames", sink.frames());
    }
    // And it keeps trying (with backoff), failing the same way.
    wait_for("a retry", 20, || handle.snapshot().reconnects >= 2).await;
    assert!(handle.snapshot().last_error.unwrap().starts_with(&want));
    stop(handle, shutdown).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn endless_rtsp_header() {
    rogue_session_ends_clearly(Rogue::EndlessHeader).await;
}

#[tokio::test]
async fn huge_content_length() {
    rogue_session_ends_clearly(Rogue::HugeContentLength).await;
}

#[tokio::test]
async fn access_unit_of_endless_fu_a_fragments() {
    rogue_session_ends_clearly(Rogue::EndlessFuA).await;
}

#[tokio::test]
async fn flood_of_tiny_rtp_packets() {
    rogue_session_ends_clearly(Rogue::TinyPacketFlood).await;
}

#[tokio::test]
async fn sdp_with_huge_sprop_parameter_sets() {
    rogue_session_ends_clearly(Rogue::HugeSprop).await;
}

#[tokio::test]
async fn sdp_with_absurd_clock_rate() {
    rogue_session_ends_clearly(Rogue::AbsurdClockRate).await;
}

fn with_password(url: &str, allow_basic_auth: bool) -> ResolvedSource {
    let mut s = source(url);
    s.username = Some("admin".into());
    s.password = Some(Secret::new("hunter2"));
    s.allow_basic_auth = allow_basic_auth;
    s
}

/// A Basic challenge on plain RTSP: the password is never sent unless the stream allows Basic;
/// Digest works through the relay as before.
#[tokio::test]
async fn basic_challenge_on_plain_rtsp_is_refused_unless_allowed() {
    let sim = camsim(vec![
        MountConfig::new("basic", fixture()).with_auth(Auth::basic("admin", "hunter2")),
        MountConfig::new("digest", fixture()).with_auth(Auth::digest("admin", "hunter2")),
    ])
    .await;
    let basic = sim.mount("basic").unwrap();
    let (sink, handle, shutdown) = start("basic", with_password(&sim.url("basic"), false));
    wait_for("refusal", 20, || handle.snapshot().reconnects >= 2).await;
    let err = handle.snapshot().last_error.unwrap();
    assert!(
        err.starts_with("refused to send the password in clear"),
        "{err}"
    );
    assert!(err.contains("allow_basic_auth"), "{err}");
    assert_eq!(basic.stats().basic_credentials, 0, "password sent in clear");
    assert_eq!(sink.frames(), 0);
    stop(handle, shutdown).await;

    // Allowed explicitly: it records (and the camera did receive Basic credentials).
    let (sink, handle, shutdown) = start("basic", with_password(&sim.url("basic"), true));
    wait_for("frames with Basic allowed", 20, || sink.frames() >= 10).await;
    assert!(basic.stats().basic_credentials >= 1);
    stop(handle, shutdown).await;

    // Digest through the relay.
    let digest = sim.mount("digest").unwrap();
    let (sink, handle, shutdown) = start("digest", with_password(&sim.url("digest"), false));
    wait_for("frames with Digest", 20, || sink.frames() >= 10).await;
    assert_eq!(digest.stats().basic_credentials, 0);
    assert_eq!(handle.snapshot().reconnects, 0);
    stop(handle, shutdown).await;
    sim.shutdown().await;
}

/// Every rogue mode at once next to a healthy camera: the healthy stream receives every frame
/// camsim sent it (counted by camsim), with no reconnection.
#[tokio::test]
async fn healthy_stream_loses_no_frame_next_to_rogue_ones() {
    let mut mounts = vec![MountConfig::new("healthy", fixture())];
    for mode in Rogue::ALL {
        mounts.push(MountConfig::new(mode.name(), fixture()).with_rogue(mode));
    }
    let sim = camsim(mounts).await;
    let (healthy, hh, hsd) = start("healthy", source(&sim.url("healthy")));
    let rogues: Vec<_> = Rogue::ALL
        .iter()
        .map(|m| (*m, start(m.name(), source(&sim.url(m.name())))))
        .collect();
    for (mode, (_, h, _)) in &rogues {
        wait_for(mode.name(), 30, || {
            h.snapshot().last_error.is_some() && h.snapshot().reconnects >= 1
        })
        .await;
        let err = h.snapshot().last_error.unwrap();
        assert!(err.starts_with(&expected_error(*mode)), "{mode:?}: {err}");
    }
    // Freeze the healthy camera, let the last frames arrive, compare the counts.
    let m = sim.mount("healthy").unwrap();
    m.stall_for(Duration::from_secs(600));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = m.stats().frames;
    assert!(sent >= 50, "only {sent} frames sent");
    assert_eq!(healthy.frames(), sent, "frames lost on the healthy stream");
    let st = hh.snapshot();
    assert_eq!(st.reconnects, 0, "{st:?}");
    assert!(st.last_error.is_none(), "{st:?}");
    for (_, (_, h, sd)) in rogues {
        stop(h, sd).await;
    }
    stop(hh, hsd).await;
    sim.shutdown().await;
}

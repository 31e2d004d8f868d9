//! ONVIF replay of camsim's recording card through `vigie_ingest::replay`: the frames of the
//! asked range, stamped with the card's wall-clock instants, starting on a key frame, with the
//! camera's digest; refusals are clear errors.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vigie_camsim::{Auth, Fixture, MountConfig, Server};
use vigie_core::{FrameSink, StreamEvent, Time90k};
use vigie_ingest::{IngestError, ReplayRequest, replay};

#[derive(Default)]
struct Collect(Mutex<Vec<StreamEvent>>);
impl FrameSink for Collect {
    fn push(&self, e: StreamEvent) {
        self.0.lock().unwrap().push(e);
    }
}

fn request(url: String, start: Time90k, end: Time90k, password: &str) -> ReplayRequest {
    ReplayRequest {
        url,
        username: Some("admin".into()),
        password: Some(password.into()),
        start,
        end,
        session_id: 77,
        timeout: Duration::from_secs(20),
        stall: Duration::from_secs(5),
        max_backlog_bytes: 1 << 20,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_delivers_the_range_in_wall_clock_time() {
    let f = Fixture::embedded("h264-baseline-640x360-25fps-gop50.h264").unwrap();
    let server = Server::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![
            MountConfig::new("cam", f)
                .with_auth(Auth::digest("admin", "s3cret-pw"))
                .with_card(Duration::from_secs(600)),
        ],
    )
    .await
    .unwrap();
    let cam = server.mount("cam").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (from_ms, _) = cam.card_coverage_ms().unwrap();
    // Not on a millisecond: the `clock=` range carries milliseconds only, the first frame
    // (at the answered start, up to 1 ms early) must still be delivered.
    let start = Time90k((from_ms + 100) * 90 + 45);
    let end = Time90k(start.0 + 2 * 90_000);
    let sink = Collect::default();
    let rep = replay(
        &request(server.url("cam"), start, end, "s3cret-pw"),
        &sink,
        &|| 0,
    )
    .await
    .unwrap();
    // 2 s at 25 fps.
    assert_eq!(rep.frames, 50, "{rep:?}");
    assert_eq!(cam.stats().replayed_frames, 50);
    let served = Time90k((from_ms + 100) * 90);
    assert_eq!(rep.first_90k, Some(served));
    assert_eq!(rep.served.map(|s| s.0), Some(served));
    let events = sink.0.into_inner().unwrap();
    let frames: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Frame(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(frames.len(), 50);
    assert!(frames[0].is_key);
    assert_eq!(frames.iter().filter(|f| f.is_key).count(), 1);
    for (k, f) in frames.iter().enumerate() {
        assert_eq!(f.recv, Time90k(served.0 + k as i64 * 3600));
        assert_eq!(f.media_90k, k as i64 * 3600);
        assert_eq!(f.session_id, 77);
    }
    assert!(matches!(
        events.last(),
        Some(StreamEvent::SessionEnded { session_id: 77, .. })
    ));

    // Wrong password: the camera's 401, no password in the error.
    let e = replay(
        &request(server.url("cam"), start, end, "wrong-pw-x"),
        &Collect::default(),
        &|| 0,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, IngestError::Auth { .. }), "{e:?}");
    assert!(!e.to_string().contains("wrong-pw-x"));
    // A range the card does not hold: refused (457), nothing delivered.
    let old = Time90k(start.0 - 3600 * 90_000);
    let e = replay(
        &request(server.url("cam"), old, Time90k(old.0 + 90_000), "s3cret-pw"),
        &Collect::default(),
        &|| 0,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("457"), "{e}");
    assert_eq!(cam.stats().replayed_frames, 50);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_without_a_card_or_a_bad_uri_is_a_clear_error() {
    let f = Fixture::embedded("h264-baseline-640x360-25fps-gop50.h264").unwrap();
    let server = Server::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![MountConfig::new("cam", f)],
    )
    .await
    .unwrap();
    let now = Time90k(jiff::Timestamp::now().as_millisecond() * 90);
    let sink = Arc::new(Collect::default());
    let e = replay(
        &request(server.url("cam"), Time90k(now.0 - 90_000), now, "x"),
        sink.as_ref(),
        &|| 0,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("551"), "{e}");
    for bad in ["http://127.0.0.1/x", "rtsp://u:p@127.0.0.1/x", "not a url"] {
        let e = replay(&request(bad.into(), now, now, "x"), sink.as_ref(), &|| 0)
            .await
            .unwrap_err();
        assert!(matches!(e, IngestError::Protocol(_)), "{bad}: {e:?}");
        assert!(!e.to_string().contains(":p@"));
    }
    server.shutdown().await;
}

/// A camera that starts its replay at the key frame before the asked start (as real ones do):
/// nothing before the start is delivered (it would overlap the footage before the gap), the
/// first frame delivered is a key frame, and its wall-clock time comes from the answered range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_before_the_start_are_not_delivered_when_the_camera_starts_early() {
    let f = Fixture::embedded("h264-baseline-640x360-25fps-gop50.h264").unwrap();
    let server = Server::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![MountConfig::new("cam", f).with_card_from_key_frame_before(Duration::from_secs(600))],
    )
    .await
    .unwrap();
    let cam = server.mount("cam").unwrap();
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let (from_ms, _) = cam.card_coverage_ms().unwrap();
    // 1 s into the card's second GOP (key frames every 2 s from its start), for 3 s.
    let start = Time90k((from_ms + 3000) * 90);
    let end = Time90k(start.0 + 3 * 90_000);
    let sink = Collect::default();
    let mut req = request(server.url("cam"), start, end, "x");
    req.username = None;
    req.password = None;
    let rep = replay(&req, &sink, &|| 0).await.unwrap();
    let st = cam.stats();
    // The camera sent from the key frame at from + 2 s: 4 s of frames.
    assert_eq!(st.replayed_frames, 100);
    assert_eq!(
        rep.served.map(|s| s.0),
        Some(Time90k((from_ms + 2000) * 90))
    );
    let events = sink.0.into_inner().unwrap();
    let frames: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Frame(f) => Some(f),
            _ => None,
        })
        .collect();
    // Delivered: from the first key frame at or after the start (from + 4 s) to the end.
    assert_eq!(frames.len(), 50, "{rep:?}");
    assert_eq!(rep.frames, 50);
    assert!(frames[0].is_key);
    assert_eq!(frames[0].recv, Time90k((from_ms + 4000) * 90));
    assert!(frames.iter().all(|f| f.recv >= start && f.recv < end));
    server.shutdown().await;
}

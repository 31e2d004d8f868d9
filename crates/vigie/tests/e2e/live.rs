//! End-to-end live view: the real `vigie` binary records camsim cameras (in this process) and
//! serves their live WebSocket; a Rust client checks the protocol and the media with ffmpeg, a
//! slow client is skipped to a key frame with bounded memory, and headless Chromium plays the
//! stream through Media Source Extensions (`/live.html`).

use std::sync::Arc;
use std::time::Duration;

use vigie_camsim::{Fixture, MountConfig, ServerHandle};
use vigie_testkit::live::{LiveClient, LiveEvent, mdat_payload};
use vigie_testkit::media::{ffmpeg_decodes, ffprobe};
use vigie_testkit::{Vigie, VigieBuilder, fixtures_dir};

const BIN: &str = env!("CARGO_BIN_EXE_vigie");
const BASELINE: &str = "h264-baseline-640x360-25fps-gop50.h264";
const H265: &str = "h265-main-1280x720-25fps-gop50.h265";
const T: Duration = Duration::from_secs(10);

async fn camsim(mounts: Vec<MountConfig>) -> ServerHandle {
    vigie_testkit::sim::start(mounts).await
}

fn embedded(name: &str) -> Arc<Fixture> {
    Fixture::embedded(name).unwrap_or_else(|| panic!("fixture {name}"))
}

fn camera_toml(id: &str, url: &str) -> String {
    format!(
        "[[cameras]]\nid = \"{id}\"\nname = \"Camera {id}\"\ncommune = \"test\"\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"{url}\"\n"
    )
}

const COMMUNE: &str = "[[communes]]\nid = \"test\"\nname = \"Test\"\nretention_days = 7\n";

async fn wait_online(v: &Vigie, cam: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = v.stream_status(cam, "main").await
            && s["online"] == true
        {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{cam} never online");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Init + media of a viewer, with checks on the protocol: an init first, the first media starts
/// at a key frame, decode times are continuous.
struct Received {
    init_meta: serde_json::Value,
    init: Vec<u8>,
    media: Vec<(serde_json::Value, bytes::Bytes)>,
}

async fn receive(c: &mut LiveClient, d: Duration) -> Received {
    let events = c.collect_for(d).await.unwrap();
    let mut it = events.into_iter();
    let Some(LiveEvent::Init { meta, data }) = it.next() else {
        panic!("the first event is not an init")
    };
    let media: Vec<_> = it
        .map(|e| match e {
            LiveEvent::Media { meta, data } => (meta, data),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert!(!media.is_empty(), "no media segments");
    assert_eq!(
        media[0].0["key"], true,
        "first media segment is not a key frame"
    );
    assert_eq!(media[0].0["dts_90k"], 0);
    for w in media.windows(2) {
        let (a, b) = (&w[0].0, &w[1].0);
        assert_eq!(
            a["dts_90k"].as_u64().unwrap() + a["duration_90k"].as_u64().unwrap(),
            b["dts_90k"].as_u64().unwrap(),
            "decode times not continuous: {a} then {b}"
        );
    }
    Received {
        init_meta: meta,
        init: data.to_vec(),
        media,
    }
}

fn write_mp4(dir: &std::path::Path, name: &str, r: &Received) -> (std::path::PathBuf, u64) {
    let path = dir.join(name);
    let mut buf = r.init.clone();
    let mut frames = 0;
    for (meta, data) in &r.media {
        buf.extend_from_slice(data);
        frames += meta["frames"].as_u64().unwrap();
    }
    std::fs::write(&path, buf).unwrap();
    (path, frames)
}

#[tokio::test(flavor = "multi_thread")]
async fn live_websocket_serves_playable_fmp4_to_several_viewers() {
    let sim = camsim(vec![
        MountConfig::new("a", embedded(BASELINE)),
        MountConfig::new("b", embedded(H265)),
    ])
    .await;
    let mut v = VigieBuilder::new(BIN)
        .toml(COMMUNE)
        .toml(&camera_toml("cam-a", &sim.url("a")))
        .toml(&camera_toml("cam-b", &sim.url("b")))
        .start()
        .unwrap();
    wait_online(&v, "cam-a").await;
    wait_online(&v, "cam-b").await;

    // Errors before the upgrade: JSON 404 for unknown camera/stream, 400 for a plain GET.
    for (path, code) in [
        ("/api/v1/cameras/nope/streams/main/live", 404),
        ("/api/v1/cameras/cam-a/streams/nope/live", 404),
        ("/api/v1/cameras/cam-a/streams/main/live", 400),
    ] {
        let (status, body) = v.get(path).await.unwrap();
        assert_eq!(status, code, "{path}: {body}");
        assert!(body["error"]["message"].is_string(), "{path}: {body}");
    }
    let (status, body) = v
        .get("/api/v1/cameras/nope/streams/main/snapshot.jpg")
        .await
        .unwrap();
    assert_eq!(status, 404, "{body}");
    #[cfg(not(feature = "gst"))]
    {
        let (status, body) = v
            .get("/api/v1/cameras/cam-a/streams/main/snapshot.jpg")
            .await
            .unwrap();
        assert_eq!(status, 501, "{body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("\"gst\" feature"), "{msg}");
    }

    // Nobody has watched cam-a yet, so its live hub keeps no GOP (memory: see docs/API.md
    // "Live"): the first viewers start at the camera's next key frame, at most one GOP (2 s here,
    // plus the one frame the hub holds back) after they connect.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let t_connect = std::time::Instant::now();
    let mut c1 = LiveClient::connect(v.port, "cam-a", "main", None)
        .await
        .unwrap();
    let mut c2 = LiveClient::connect(v.port, "cam-a", "main", None)
        .await
        .unwrap();
    let first = c1.next(T).await.unwrap();
    let LiveEvent::Init { meta, .. } = &first else {
        panic!("{first:?}")
    };
    assert_eq!(meta["width"], 640);
    assert_eq!(meta["height"], 360);
    let codec = meta["codec"].as_str().unwrap();
    assert!(codec.starts_with("avc1."), "{meta}");
    assert_eq!(
        meta["mime"].as_str().unwrap(),
        format!("video/mp4; codecs=\"{codec}\"")
    );
    let LiveEvent::Media { meta: m0, .. } = c1.next(T).await.unwrap() else {
        panic!("no media after init")
    };
    assert_eq!(m0["key"], true, "{m0}");
    let first_picture = t_connect.elapsed();
    eprintln!("live: first viewer's first picture after {first_picture:?}");
    assert!(
        first_picture < Duration::from_millis(3000),
        "first picture of an unwatched stream took {first_picture:?} (GOP 2 s)"
    );
    drop(c1);

    // Now the stream is watched (c2 is connected): its hub keeps the current GOP, so a viewer
    // joining mid-GOP (~1.3 s after a key frame) gets the frames since that key frame at once.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let t_connect = std::time::Instant::now();
    let mut c1 = LiveClient::connect(v.port, "cam-a", "main", None)
        .await
        .unwrap();
    let first = c1.next(T).await.unwrap();
    assert!(matches!(first, LiveEvent::Init { .. }), "{first:?}");
    assert!(
        t_connect.elapsed() < Duration::from_secs(1),
        "init took {:?}",
        t_connect.elapsed()
    );
    let LiveEvent::Media { meta: m0, .. } = c1.next(T).await.unwrap() else {
        panic!("no media after init")
    };
    // The picture comes at once: the current GOP is delivered in one go.
    assert_eq!(m0["key"], true, "{m0}");
    assert!(m0["frames"].as_u64().unwrap() > 1, "not the GOP: {m0}");
    assert!(
        t_connect.elapsed() < Duration::from_secs(1),
        "first picture took {:?}",
        t_connect.elapsed()
    );
    drop(c1);

    // Viewer 2 records ~4 s; a fresh viewer 3 runs alongside: they get the same frame bytes.
    let mut c3 = LiveClient::connect(v.port, "cam-a", "main", None)
        .await
        .unwrap();
    let (r2, r3) = tokio::join!(
        receive(&mut c2, Duration::from_secs(4)),
        receive(&mut c3, Duration::from_secs(4))
    );
    let recv_ms = now_ms();
    let by_wall = |r: &Received| -> std::collections::HashMap<i64, bytes::Bytes> {
        r.media
            .iter()
            .filter(|(m, _)| m["frames"] == 1)
            .map(|(m, d)| {
                (
                    m["wall_ms"].as_i64().unwrap(),
                    bytes::Bytes::copy_from_slice(mdat_payload(d).unwrap()),
                )
            })
            .collect()
    };
    let (w2, w3) = (by_wall(&r2), by_wall(&r3));
    let common: Vec<_> = w2.keys().filter(|k| w3.contains_key(k)).collect();
    assert!(common.len() >= 50, "only {} common frames", common.len());
    for k in common {
        assert_eq!(w2[k], w3[k], "viewers got different bytes for frame at {k}");
    }
    // Server-side latency of the newest frame (wall clock of capture vs now): well under 1 s.
    let newest = r2
        .media
        .iter()
        .map(|(m, _)| m["wall_ms"].as_i64().unwrap())
        .max()
        .unwrap();
    let lag = recv_ms - newest;
    eprintln!("live: newest frame {lag} ms old when received");
    assert!((0..1000).contains(&lag), "newest frame is {lag} ms old");

    let dir = v.work_dir().to_owned();
    for (name, r, w, h) in [
        ("live-a2.mp4", &r2, 640, 360),
        ("live-a3.mp4", &r3, 640, 360),
    ] {
        let (path, frames) = write_mp4(&dir, name, r);
        ffmpeg_decodes(&path).unwrap();
        let p = ffprobe(&path).unwrap();
        assert_eq!((p.width, p.height), (w, h), "{name}: {p:?}");
        assert_eq!(p.frames, frames, "{name}: {p:?}");
        assert!(frames >= 90, "{name}: only {frames} frames in 4 s");
    }

    // H.265.
    let mut cb = LiveClient::connect(v.port, "cam-b", "main", None)
        .await
        .unwrap();
    let rb = receive(&mut cb, Duration::from_secs(3)).await;
    assert!(
        rb.init_meta["codec"]
            .as_str()
            .is_some_and(|c| c.starts_with("hvc1.") || c.starts_with("hev1.")),
        "{}",
        rb.init_meta
    );
    let (path, frames) = write_mp4(&dir, "live-b.mp4", &rb);
    ffmpeg_decodes(&path).unwrap();
    let p = ffprobe(&path).unwrap();
    assert_eq!(
        (p.width, p.height, p.codec.as_str()),
        (1280, 720, "hevc"),
        "{p:?}"
    );
    assert_eq!(p.frames, frames);

    // The camera drops its session: the socket closes with a clear reason.
    sim.mount("a").unwrap().drop_sessions();
    let deadline = tokio::time::Instant::now() + T;
    let closed = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c2.next(left).await.unwrap() {
            LiveEvent::Closed { code, reason } => break (code, reason),
            _ => continue,
        }
    };
    assert_eq!(closed.0, 4000, "{closed:?}");
    assert!(closed.1.starts_with("stream stopped"), "{closed:?}");

    // Vigie stopping closes the others with 1001.
    drop(c3);
    v.stop().unwrap();
    let deadline = tokio::time::Instant::now() + T;
    let closed = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match cb.next(left).await {
            Ok(LiveEvent::Closed { code, reason }) => break Some((code, reason)),
            Ok(_) => continue,
            Err(e) => {
                eprintln!("no close frame at shutdown: {e}");
                break None;
            }
        }
    };
    if let Some((code, reason)) = closed {
        assert!(
            code == 1001 || code == 4000,
            "close at shutdown: {code} {reason}"
        );
        assert!(!reason.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_live_viewer_is_skipped_to_a_key_frame_with_bounded_memory() {
    // ~4 Mbit/s, 1080p, GOP 50 at 25 fps, sent 2.5 times faster than real time (~1.25 MB/s) so
    // that the socket buffers (several MB on loopback) fill quickly.
    let fx = Fixture::load(fixtures_dir().join("h264-4mbps-25fps.h264"), 25.0).unwrap();
    let sim = camsim(vec![MountConfig::new("hd", fx).with_speed(2.5)]).await;
    let v = VigieBuilder::new(BIN)
        .toml(COMMUNE)
        .toml(&camera_toml("cam-hd", &sim.url("hd")))
        .start()
        .unwrap();
    wait_online(&v, "cam-hd").await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A well-behaved viewer alongside must not be disturbed.
    let mut good = LiveClient::connect(v.port, "cam-hd", "main", None)
        .await
        .unwrap();
    let good_task = tokio::spawn(async move {
        let events = good.collect_for(Duration::from_secs(16)).await.unwrap();
        events
            .iter()
            .filter(|e| matches!(e, LiveEvent::Drop { .. }))
            .count()
    });

    let mut slow = LiveClient::connect(v.port, "cam-hd", "main", Some(4096))
        .await
        .unwrap();
    assert!(matches!(
        slow.next(T).await.unwrap(),
        LiveEvent::Init { .. }
    ));
    assert!(slow.next(T).await.unwrap().is_key_media());
    let rss_before = v.rss_bytes().unwrap();
    // Stop reading for 12 s: ~15 MB of video comes (more than socket buffers + the queue).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let rss_after = v.rss_bytes().unwrap();
    eprintln!(
        "RSS before {} MiB, after {} MiB",
        rss_before >> 20,
        rss_after >> 20
    );
    assert!(
        rss_after < rss_before + (48 << 20),
        "memory grew from {rss_before} to {rss_after}"
    );
    // Reading again: a drop notice, then media resumes at a key frame with continuous times.
    let mut last_dts_end: Option<u64> = None;
    let mut dropped = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match slow.next(left).await.unwrap() {
            LiveEvent::Media { meta, .. } => {
                let dts = meta["dts_90k"].as_u64().unwrap();
                if let Some(end) = last_dts_end {
                    assert_eq!(dts, end, "decode time gap");
                }
                last_dts_end = Some(dts + meta["duration_90k"].as_u64().unwrap());
                if let Some(n) = dropped {
                    assert_eq!(meta["key"], true, "after dropping {n} frames: {meta}");
                    break;
                }
            }
            LiveEvent::Drop { frames } => {
                assert!(frames > 0);
                dropped = Some(frames);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    eprintln!("slow viewer: {:?} frames dropped", dropped);
    // It keeps up again afterwards.
    let more = slow.collect_for(Duration::from_secs(2)).await.unwrap();
    assert!(
        more.iter()
            .filter(|e| matches!(e, LiveEvent::Media { .. }))
            .count()
            > 25,
        "no media after the drop"
    );
    let good_drops = good_task.await.unwrap();
    assert_eq!(good_drops, 0, "the fast viewer was skipped too");
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_plays_the_live_view_through_mse() {
    let sim = camsim(vec![MountConfig::new("a", embedded(BASELINE))]).await;
    let v = VigieBuilder::new(BIN)
        .toml(COMMUNE)
        .toml(&camera_toml("cam-a", &sim.url("a")))
        .start()
        .unwrap();
    wait_online(&v, "cam-a").await;
    let browser = vigie_testkit::browser::Browser::start().await.unwrap();
    browser
        .goto(&format!(
            "{}/live.html?camera=cam-a&stream=main",
            v.base_url()
        ))
        .await
        .unwrap();
    let state = async || {
        browser
            .eval(
                "const v = document.getElementById('v'); const l = window.vigieLive || {};
                 return { t: v.currentTime, rs: v.readyState, w: v.videoWidth, h: v.videoHeight,
                          lat: l.latencyMs, segs: l.segments, inits: l.inits, err: l.error || null,
                          state: l.state, close: l.closeReason || null, drops: l.drops };",
                vec![],
            )
            .await
            .unwrap()
    };
    // Playing: currentTime advances.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let s0 = loop {
        let s = state().await;
        if s["t"].as_f64().unwrap_or(0.0) > 0.5 && s["lat"].is_number() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "not playing: {s}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s1 = state().await;
    eprintln!("browser live state: {s0} then {s1}");
    let advanced = s1["t"].as_f64().unwrap() - s0["t"].as_f64().unwrap();
    assert!(
        advanced > 2.0,
        "currentTime advanced by {advanced} s in 3 s: {s1}"
    );
    assert!(s1["rs"].as_u64().unwrap() >= 3, "{s1}");
    assert_eq!(
        (s1["w"].as_u64(), s1["h"].as_u64()),
        (Some(640), Some(360)),
        "{s1}"
    );
    assert!(s1["err"].is_null(), "{s1}");
    // Latency: browser clock minus the server's wall-clock time of the picture on screen.
    let mut lats = Vec::new();
    for _ in 0..8 {
        lats.push(state().await["lat"].as_f64().unwrap());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    lats.sort_by(f64::total_cmp);
    let median = lats[lats.len() / 2];
    eprintln!("browser live latency (ms): {lats:?}, median {median}");
    assert!(
        median > 0.0 && median < 2000.0 && lats[lats.len() - 1] < 2000.0,
        "latency {lats:?} ms"
    );
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-live-chromium.png");
    browser.screenshot_to(&shot).await.unwrap();
    eprintln!("screenshot: {}", shot.display());
    browser.close().await.unwrap();
}

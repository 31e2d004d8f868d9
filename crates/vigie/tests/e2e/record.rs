//! End-to-end recording tests: the real `vigie` binary records cameras simulated by camsim (in
//! this process), and every segment it writes is checked with ffmpeg and ffprobe.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use vigie_camsim::{Fixture, ServerHandle};
use vigie_testkit::media::{ffmpeg_decodes, ffprobe, mp4_files};
use vigie_testkit::{Vigie, VigieBuilder, fixtures_dir};

const BIN: &str = env!("CARGO_BIN_EXE_vigie");
const BASELINE: &str = "h264-baseline-640x360-25fps-gop50.h264";
const H265: &str = "h265-main-1280x720-25fps-gop50.h265";

async fn camsim(mounts: &[(&str, &str)]) -> ServerHandle {
    vigie_testkit::sim::start_embedded(mounts).await
}

fn camera_toml(id: &str, url: &str) -> String {
    format!(
        "[[cameras]]\nid = \"{id}\"\nname = \"Camera {id}\"\ncommune = \"test\"\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"{url}\"\n"
    )
}

const COMMUNE: &str = "[[communes]]\nid = \"test\"\nname = \"Test\"\nretention_days = 7\n";

fn window() -> (String, String) {
    let now = Timestamp::now();
    (
        (now - SignedDuration::from_hours(1)).to_string(),
        (now + SignedDuration::from_hours(1)).to_string(),
    )
}

async fn wait_spans(
    v: &Vigie,
    cam: &str,
    min_secs: f64,
    timeout: Duration,
) -> Vec<(Timestamp, Timestamp)> {
    let (a, b) = window();
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let spans = v.spans(cam, "main", &a, &b).await.unwrap();
        let total: f64 = spans
            .iter()
            .map(|(s, e)| e.duration_since(*s).as_secs_f64())
            .sum();
        if total >= min_secs || std::time::Instant::now() > deadline {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Validates every segment file under the data dir; returns the total frame count by codec.
fn validate_segments(v: &Vigie) -> Vec<(std::path::PathBuf, vigie_testkit::media::Probe)> {
    let files = mp4_files(&v.data_dir.join("recordings"));
    assert!(
        !files.is_empty(),
        "no segment files under {}",
        v.data_dir.display()
    );
    files
        .into_iter()
        .map(|f| {
            ffmpeg_decodes(&f).unwrap();
            let p = ffprobe(&f).unwrap();
            assert!(p.frames > 0, "{} has no frames", f.display());
            (f, p)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn records_camsim_cameras_end_to_end() {
    let sim = camsim(&[("a", BASELINE), ("b", H265)]).await;
    let t_launch = Timestamp::now();
    let mut v = VigieBuilder::new(BIN)
        .toml(COMMUNE)
        .toml(&camera_toml("cam-a", &sim.url("a")))
        .toml(&camera_toml("cam-b", &sim.url("b")))
        .start()
        .unwrap();

    // After ~10 s of recording the listing shows one span per stream, ending close to now: a
    // segment being written is re-indexed every `recording.index_interval_ms` (default 10 s)
    // after a sync (every 2 s) of complete fragments (1 s + up to 0.25 s in the queue), so the
    // listing lags live by at most ~13.25 s (docs/API.md, video.mp4).
    for cam in ["cam-a", "cam-b"] {
        let spans = wait_spans(&v, cam, 12.0, Duration::from_secs(40)).await;
        let now = Timestamp::now();
        assert_eq!(spans.len(), 1, "{cam}: expected one span, got {spans:?}");
        let (start, end) = spans[0];
        assert!(
            start >= t_launch - SignedDuration::from_secs(1),
            "{cam}: span starts {start} before launch {t_launch}"
        );
        assert!(
            start <= t_launch + SignedDuration::from_secs(5),
            "{cam}: span starts {start}, launch {t_launch}"
        );
        assert!(
            end <= now + SignedDuration::from_secs(1),
            "{cam}: span ends in the future: {end} > {now}"
        );
        assert!(
            end >= now - SignedDuration::from_secs(15),
            "{cam}: index lags: span end {end}, now {now}"
        );
    }
    let status = v.stream_status("cam-a", "main").await.unwrap();
    assert_eq!(status["online"], true, "{status}");
    assert_eq!(status["width"], 640, "{status}");
    let fps = status["fps"].as_f64().unwrap();
    assert!((fps - 25.0).abs() < 3.0, "fps {fps}");
    let cams = v.get_text("/api/v1/cameras").await.unwrap().1;
    assert!(!cams.contains("password"), "{cams}");

    // Prometheus metrics carry per-stream counters and storage gauges.
    let (code, metrics) = v.get_text("/metrics").await.unwrap();
    assert_eq!(code, 200);
    for needle in [
        "vigie_stream_online{camera=\"cam-a\",stream=\"main\"} 1",
        "vigie_stream_frames_total{camera=\"cam-b\",stream=\"main\"}",
        "vigie_stream_reconnects_total{camera=\"cam-a\",stream=\"main\"} 0",
        "vigie_storage_free_bytes{dir=",
        "vigie_storage_segments_deleted_total{dir=",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle}:\n{metrics}"
        );
    }
    let frames_line = metrics
        .lines()
        .find(|l| l.starts_with("vigie_writer_frames_total{camera=\"cam-a\""))
        .unwrap();
    let written: f64 = frames_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(written > 100.0, "{frames_line}");
    // Both streams' writers share a thread, which syncs their files together (group commit).
    let grouped: f64 = metrics
        .lines()
        .find(|l| l.starts_with("vigie_storage_syncs_total{") && l.contains("kind=\"filesystem\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no grouped sync count:\n{metrics}"));
    assert!(
        grouped >= 1.0,
        "no syncfs after ~12 s of two streams:\n{metrics}"
    );
    let (code, health) = v.get("/api/v1/health").await.unwrap();
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["status"], "ok", "{health}");

    // Bad parameters get clear JSON errors with the right status.
    let base = "/api/v1/cameras/cam-a/streams/main/recordings";
    for (query, status, needle) in [
        (format!("{base}?start=yesterday&end=2026-11-29T00:00:00Z"), 400, "start"),
        (format!("{base}?start=2026-11-29T10:00:00Z&end=2026-11-29T09:00:00Z"), 400, "after"),
        (format!("{base}?end=2026-11-29T09:00:00Z"), 400, "missing"),
        ("/api/v1/cameras/nope/streams/main/recordings?start=2026-11-29T00:00:00Z&end=2026-11-29T01:00:00Z".to_owned(), 404, "nope"),
        ("/api/v1/cameras/cam-a/streams/sub/recordings?start=2026-11-29T00:00:00Z&end=2026-11-29T01:00:00Z".to_owned(), 404, "sub"),
        ("/api/v1/nothing".to_owned(), 404, "no route"),
    ] {
        let (code, body) = v.get(&query).await.unwrap();
        assert_eq!(code, status, "{query}: {body}");
        let msg = body["error"]["message"].as_str().unwrap_or_else(|| panic!("{query}: not a JSON error: {body}"));
        assert!(msg.contains(needle), "{query}: {msg}");
        assert!(body["error"]["code"].is_string(), "{body}");
    }

    // Stop cleanly: segments are closed; the final span ends at the stop time (within 1 s).
    v.stop().unwrap();
    let t_stop = Timestamp::now();
    sim.shutdown().await;
    v.spawn().unwrap(); // cameras now unreachable: nothing new is recorded
    let (a, b) = window();
    for (cam, fps, gop) in [("cam-a", 25.0, 50u64), ("cam-b", 25.0, 50u64)] {
        let spans = v.spans(cam, "main", &a, &b).await.unwrap();
        assert_eq!(spans.len(), 1, "{cam}: {spans:?}");
        let (start, end) = spans[0];
        assert!(
            t_stop.duration_since(end).as_secs_f64().abs() < 1.5,
            "{cam}: span end {end} vs stop {t_stop}"
        );
        let expected_frames = (end.duration_since(start).as_secs_f64() * fps).round() as u64;
        let dir = v.data_dir.join("recordings").join(cam);
        let frames: u64 = mp4_files(&dir)
            .iter()
            .map(|f| {
                ffmpeg_decodes(f).unwrap();
                ffprobe(f).unwrap().frames
            })
            .sum();
        assert!(
            frames.abs_diff(expected_frames) <= gop,
            "{cam}: {frames} frames in files, span implies {expected_frames}"
        );
    }
    let probes = validate_segments(&v);
    assert!(
        probes
            .iter()
            .any(|(_, p)| p.codec == "hevc" && p.width == 1280)
    );
    assert!(
        probes
            .iter()
            .any(|(_, p)| p.codec == "h264" && p.width == 640)
    );
    v.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn camera_outage_gives_two_spans_with_the_gap() {
    let sim = camsim(&[("a", BASELINE)]).await;
    let mut v = VigieBuilder::new(BIN)
        .toml(COMMUNE)
        .toml(&camera_toml("cam-a", &sim.url("a")))
        .start()
        .unwrap();
    wait_spans(&v, "cam-a", 5.0, Duration::from_secs(30)).await;
    let mount = sim.mount("a").unwrap();
    mount.refuse_for(Duration::from_secs(5));
    mount.drop_sessions();
    let t_drop = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Wait until the recorder is back and has recorded a few seconds more.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let spans = loop {
        let (a, b) = window();
        let spans = v.spans("cam-a", "main", &a, &b).await.unwrap();
        if spans.len() >= 2 && spans[1].1.duration_since(spans[1].0).as_secs_f64() > 3.0 {
            break spans;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no second span: {spans:?}\n{}",
            v.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(spans.len(), 2, "{spans:?}");
    let gap = spans[1].0.duration_since(spans[0].1).as_secs_f64();
    assert!(
        (gap - 5.0).abs() <= 2.0,
        "gap {gap} s, expected 5 ± 2 (drop at {t_drop}); spans {spans:?}"
    );
    let status = v.stream_status("cam-a", "main").await.unwrap();
    assert!(status["reconnects"].as_u64().unwrap() >= 1, "{status}");
    v.stop().unwrap();
    validate_segments(&v);
}

#[tokio::test(flavor = "multi_thread")]
async fn parameter_change_starts_a_segment_at_the_new_resolution() {
    let sim = camsim(&[("a", BASELINE)]).await;
    let mut v = VigieBuilder::new(BIN)
        .toml(COMMUNE)
        .toml(&camera_toml("cam-a", &sim.url("a")))
        .start()
        .unwrap();
    wait_spans(&v, "cam-a", 3.0, Duration::from_secs(30)).await;
    let other = Fixture::load(
        fixtures_dir().join("h264-main-1280x720-15fps-gop30.h264"),
        15.0,
    )
    .unwrap();
    sim.mount("a").unwrap().switch_fixture(other);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let st = v.stream_status("cam-a", "main").await.unwrap();
        if st["width"] == 1280 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "resolution never changed: {st}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    v.stop().unwrap();
    let probes = validate_segments(&v);
    let dims: Vec<_> = probes.iter().map(|(_, p)| (p.width, p.height)).collect();
    assert!(
        dims.contains(&(640, 360)) && dims.contains(&(1280, 720)),
        "{dims:?}"
    );
    // No file mixes resolutions: each decodes cleanly at one size (ffmpeg -xerror above).
}

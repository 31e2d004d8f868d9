//! Fault tests of the real binary: kill -9 and recovery, reindex from files alone, bad cameras
//! (garbage, wrong password, unreachable host) next to a good one, broken configurations.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use vigie_camsim::{Auth, Fixture, Garbage, MountConfig, ServerHandle};
use vigie_testkit::media::{ffmpeg_decodes, ffprobe, mp4_files};
use vigie_testkit::{Vigie, VigieBuilder};

const BIN: &str = env!("CARGO_BIN_EXE_vigie");
const BASELINE: &str = "h264-baseline-640x360-25fps-gop50.h264";
const COMMUNE: &str = "[[communes]]\nid = \"test\"\nname = \"Test\"\n";

fn fixture(name: &str) -> Arc<Fixture> {
    Fixture::embedded(name).unwrap_or_else(|| panic!("fixture {name}"))
}

fn camera_toml(id: &str, url: &str, extra: &str) -> String {
    format!(
        "[[cameras]]\nid = \"{id}\"\nname = \"Camera {id}\"\ncommune = \"test\"\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"{url}\"\n  connect_timeout_s = 3\n  stall_timeout_s = 3\n{extra}"
    )
}

fn window() -> (String, String) {
    let now = Timestamp::now();
    (
        (now - SignedDuration::from_hours(1)).to_string(),
        (now + SignedDuration::from_hours(1)).to_string(),
    )
}

async fn listing(v: &Vigie, cam: &str) -> serde_json::Value {
    let (a, b) = window();
    let (status, body) = v
        .get(&format!(
            "/api/v1/cameras/{cam}/streams/main/recordings?start={a}&end={b}&segments=1"
        ))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

async fn recorded_secs(v: &Vigie, cam: &str) -> f64 {
    let (a, b) = window();
    v.spans(cam, "main", &a, &b)
        .await
        .unwrap()
        .iter()
        .map(|(s, e)| e.duration_since(*s).as_secs_f64())
        .sum()
}

async fn sim(mounts: Vec<MountConfig>) -> ServerHandle {
    vigie_testkit::sim::start(mounts).await
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_then_restart_recovers_and_reindex_restores_the_listing() {
    let sim = sim(vec![MountConfig::new("a", fixture(BASELINE))]).await;
    let mut v = VigieBuilder::new(BIN)
        .toml(COMMUNE)
        .toml(&camera_toml("cam-a", &sim.url("a"), ""))
        .start()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while recorded_secs(&v, "cam-a").await < 14.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "not recording:\n{}",
            v.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Mid-segment (segments are 10 s): kill -9.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    v.kill9().unwrap();
    let t_kill = Timestamp::now();
    sim.shutdown().await; // nothing new after restart
    v.spawn().unwrap();

    let body = listing(&v, "cam-a").await;
    let segments = body["segments"]
        .as_array()
        .expect("segments listed")
        .clone();
    assert!(segments.len() >= 2, "{body}");
    // The interrupted segment lost at most its last fragment (1 s) plus the frame in flight.
    let last_end: Timestamp = body["spans"].as_array().unwrap().last().unwrap()["end"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let lost = t_kill.duration_since(last_end).as_secs_f64();
    assert!(lost < 2.5, "recording ends {lost:.2} s before the kill");
    // Index and files agree: one file per listed segment, each decoding with the listed frame count.
    let files = mp4_files(&v.data_dir.join("recordings"));
    assert_eq!(
        files.len(),
        segments.len(),
        "files {files:?}\nsegments {segments:?}"
    );
    for seg in &segments {
        let id = seg["id"].as_u64().unwrap();
        let file = files
            .iter()
            .find(|f| {
                f.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .contains(&format!("{id:016x}"))
                    || segment_id_of(f) == Some(id)
            })
            .unwrap_or_else(|| panic!("no file for segment {seg} among {files:?}"));
        ffmpeg_decodes(file).unwrap();
        assert_eq!(
            ffprobe(file).unwrap().frames,
            seg["frames"].as_u64().unwrap(),
            "{}",
            file.display()
        );
    }
    let before = body["spans"].clone();
    let before_segments: Vec<_> = segments
        .iter()
        .map(|s| (s["start"].clone(), s["end"].clone(), s["frames"].clone()))
        .collect();
    v.stop().unwrap();

    // Delete the index; rebuild it from the files alone.
    std::fs::remove_dir_all(v.data_dir.join("index")).unwrap();
    let (ok, out) = v.command(&["reindex"]).unwrap();
    assert!(ok, "reindex failed: {out}");
    v.spawn().unwrap();
    let after = listing(&v, "cam-a").await;
    assert_eq!(after["spans"], before, "listing changed by reindex");
    let after_segments: Vec<_> = after["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["start"].clone(), s["end"].clone(), s["frames"].clone()))
        .collect();
    assert_eq!(after_segments, before_segments);
    v.stop().unwrap();
}

/// The segment id from a file name like `<id>-<start>.mp4` (decimal or hex id first).
fn segment_id_of(f: &std::path::Path) -> Option<u64> {
    let stem = f.file_stem()?.to_str()?;
    let first = stem.split(['-', '_']).next()?;
    first
        .parse()
        .ok()
        .or_else(|| u64::from_str_radix(first, 16).ok())
}

/// A "camera" that answers every connection with random bytes.
async fn garbage_camera() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let junk: Vec<u8> = (0..2048u32)
                    .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                    .collect();
                let _ = s.write_all(&junk).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_cameras_get_clear_errors_and_good_ones_keep_recording() {
    let mut locked = MountConfig::new("locked", fixture(BASELINE));
    locked.auth = Some(Auth::digest("recorder", "right-password"));
    let sim = sim(vec![
        MountConfig::new("good", fixture(BASELINE)),
        MountConfig::new("flaky", fixture(BASELINE)),
        locked,
    ])
    .await;
    let unused = vigie_testkit::process::free_port().unwrap();
    let garbage = garbage_camera().await;
    let mut v = VigieBuilder::new(BIN)
        .toml(COMMUNE)
        .toml(&camera_toml("good", &sim.url("good"), ""))
        .toml(&camera_toml("flaky", &sim.url("flaky"), ""))
        .toml(&camera_toml(
            "garbage",
            &format!("rtsp://127.0.0.1:{garbage}/stream"),
            "",
        ))
        .toml(&camera_toml(
            "wrongpw",
            &sim.url("locked"),
            "  username = \"recorder\"\n  password = \"wrong-password\"\n",
        ))
        .toml(&camera_toml(
            "unreachable",
            &format!("rtsp://127.0.0.1:{unused}/nothing"),
            "",
        ))
        .start()
        .unwrap();
    // A camera that starts sending garbage in the middle of a session.
    tokio::time::sleep(Duration::from_secs(4)).await;
    sim.mount("flaky").unwrap().send_garbage(Garbage::Raw);
    tokio::time::sleep(Duration::from_secs(8)).await;
    for (cam, expect) in [
        ("garbage", ""),
        ("wrongpw", "401"),
        ("unreachable", "refused"),
    ] {
        let st = v.stream_status(cam, "main").await.unwrap();
        assert_eq!(st["online"], false, "{cam}: {st}");
        let err = st["last_error"]
            .as_str()
            .unwrap_or_else(|| panic!("{cam}: no last_error in {st}"));
        assert!(
            err.to_lowercase().contains(expect),
            "{cam}: {err:?} should mention {expect:?}"
        );
        assert!(
            !err.contains("wrong-password"),
            "{cam}: secret in error {err}"
        );
        assert!(st["reconnects"].as_u64().unwrap_or(0) >= 1, "{cam}: {st}");
    }
    let st = v.stream_status("flaky", "main").await.unwrap();
    assert!(st["last_error"].is_string(), "flaky: {st}");
    assert!(st["reconnects"].as_u64().unwrap_or(0) >= 1, "flaky: {st}");
    assert_eq!(st["online"], true, "flaky camera did not come back: {st}");
    let log = v.log();
    assert!(!log.contains("wrong-password"), "password in the log");
    assert!(log.contains("wrongpw"), "the log names the failing camera");
    // The good camera records on, without a gap. Its listing may lag live by up to
    // `recording.index_interval_ms` (10 s) + ~2 s: wait for it to cover 8 s.
    let (a, b) = window();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = v.spans("good", "main", &a, &b).await.unwrap();
        if spans
            .first()
            .is_some_and(|(s, e)| e.duration_since(*s).as_secs_f64() > 8.0)
            || std::time::Instant::now() > deadline
        {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(spans.len(), 1, "the good camera has a gap: {spans:?}");
    assert!(
        spans[0].1.duration_since(spans[0].0).as_secs_f64() > 8.0,
        "{spans:?}"
    );
    v.stop().unwrap();
    for f in mp4_files(&v.data_dir.join("recordings")) {
        ffmpeg_decodes(&f).unwrap();
    }
}

fn check_config(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, text).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("check-config")
        .arg(&p)
        .output()
        .unwrap();
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

#[test]
fn broken_configurations_are_refused_with_the_key_named() {
    let good = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/example.toml"
    ))
    .unwrap();
    let good = good.replace(
        "password_env = \"VIGIE_CAM_VERSAILLES_GARE\"",
        "password = \"x\"",
    );
    let (ok, out) = check_config(&good);
    assert!(ok, "{out}");
    let cases = [
        (
            good.replace("max_days = 30", "max_days = 45"),
            "retention.max_days",
        ),
        (
            good.replace("retention_days = 15", "retention_days = 31"),
            "communes[0].retention_days",
        ),
        (
            good.replace("url = \"rtsp://", "url = \"http://"),
            "cameras[0].streams[0].url",
        ),
        (
            good.replace("commune = \"versailles\"", "commune = \"nowhere\""),
            "cameras[0].commune",
        ),
        (good[..good.len() / 2].to_owned() + "\n[[cameras", "line"),
        (
            good.replace("segment_seconds = 60", "segment_seconds = \"long\""),
            "segment_seconds",
        ),
    ];
    for (text, key) in cases {
        let (ok, out) = check_config(&text);
        assert!(!ok, "accepted a broken config (expected error at {key})");
        assert!(out.contains(key), "error does not name {key}: {out}");
    }
    // `vigie run` refuses it too, before touching anything.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, good.replace("max_days = 30", "max_days = 31")).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("legal ceiling"));
}

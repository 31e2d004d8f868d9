//! A full disk never bricks a recorder: the real `vigie` binary records camsim cameras on a
//! small real file system (a tmpfs mounted by the test, as root; each test prints SKIPPED and
//! passes where mounting is refused) through many fill-and-delete cycles, another program
//! filling the disk to 0 bytes, a restart on a disk at 0 bytes free, an index whose own file
//! system fills up, and a journal whose file system fills up.
//!
//! What is checked: recording continues within a fragment or two of each deletion (gaps measured
//! from the index's spans), health says exactly what is wrong, every file decodes
//! (`ffmpeg -xerror`), and the index matches the files (`vigie reindex` of a copy lists the
//! same segments).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use vigie_camsim::{Fixture, MountConfig, ServerHandle};
use vigie_testkit::media::{ffmpeg_decodes, mp4_files};
use vigie_testkit::tmpfs::{Tmpfs, fill, free_bytes};
use vigie_testkit::{Vigie, VigieBuilder};

const BIN: &str = env!("CARGO_BIN_EXE_vigie");
const COMMUNE: &str = "[[communes]]\nid = \"test\"\nname = \"Test\"\n";

/// ~4 Mbit/s 1080p (500 kB/s): two cameras fill a 48 MiB disk in well under a minute.
fn heavy_fixture() -> Arc<Fixture> {
    let path = vigie_testkit::fixtures_dir().join("h264-4mbps-25fps.h264");
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Fixture::from_annexb(
        "h264-4mbps-25fps.h264",
        bytes::Bytes::from(data),
        vigie_camsim::h26x::Codec::H264,
        25.0,
    )
    .unwrap()
}

fn camera_toml(id: &str, url: &str) -> String {
    format!(
        "[[cameras]]\nid = \"{id}\"\nname = \"Camera {id}\"\ncommune = \"test\"\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"{url}\"\n  connect_timeout_s = 3\n  stall_timeout_s = 3\n"
    )
}

fn window() -> (String, String) {
    let now = Timestamp::now();
    (
        (now - SignedDuration::from_hours(1)).to_string(),
        (now + SignedDuration::from_hours(1)).to_string(),
    )
}

async fn spans(v: &Vigie, cam: &str) -> Vec<(Timestamp, Timestamp)> {
    let (a, b) = window();
    v.spans(cam, "main", &a, &b).await.unwrap_or_default()
}

async fn segments(v: &Vigie, cam: &str) -> Vec<serde_json::Value> {
    let (a, b) = window();
    let (code, body) = v
        .get(&format!(
            "/api/v1/cameras/{cam}/streams/main/recordings?start={a}&end={b}&segments=1"
        ))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    body["segments"].as_array().cloned().unwrap_or_default()
}

/// End of the newest span of `cam`.
async fn recorded_until(v: &Vigie, cam: &str) -> Option<Timestamp> {
    spans(v, cam).await.last().map(|s| s.1)
}

/// Waits until `cam` has recorded past `t + extra_s` (the index lags the camera by up to one
/// segment: segments are indexed when they are first synced and when they close).
async fn wait_recording_past(v: &Vigie, cam: &str, t: Timestamp, extra_s: i64, what: &str) {
    let target = t + SignedDuration::from_secs(extra_s);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if recorded_until(v, cam).await.is_some_and(|e| e >= target) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {cam} not recording past {target} within 60 s; spans {:?}; health {}\nlog:\n{}",
            spans(v, cam).await,
            v.get("/api/v1/health")
                .await
                .map(|h| h.1)
                .unwrap_or_default(),
            v.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn health(v: &Vigie) -> serde_json::Value {
    v.get("/api/v1/health")
        .await
        .map(|h| h.1)
        .unwrap_or_default()
}

/// Largest gap between consecutive spans starting at or after `from`, in seconds.
fn largest_gap(spans: &[(Timestamp, Timestamp)], from: Timestamp) -> f64 {
    spans
        .windows(2)
        .filter(|w| w[1].0 >= from)
        .map(|w| w[1].0.duration_since(w[0].1).as_secs_f64())
        .fold(0.0, f64::max)
}

/// (id, start, frames) of every listed segment of the cameras, sorted.
async fn listing(v: &Vigie, cams: &[&str]) -> Vec<(u64, String, u64)> {
    let mut out = Vec::new();
    for cam in cams {
        for s in segments(v, cam).await {
            out.push((
                s["id"].as_u64().unwrap_or(0),
                s["start"].as_str().unwrap_or("").to_owned(),
                s["frames"].as_u64().unwrap_or(0),
            ));
        }
    }
    out.sort();
    out
}

/// Copies the data directory without the test's filler files.
fn copy_data(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .args(["-a"])
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
    for f in ["other-program.bin", "filler-1", "filler-2"] {
        let _ = std::fs::remove_file(to.join(f));
    }
}

/// Two ~4 Mbit/s cameras on a 48 MiB tmpfs, another program's 24 MiB file on it, floor 4 MiB,
/// periodic retention pass once an hour (so only the writers' own floor checks keep the disk
/// from filling): many fill-and-delete cycles, no gap longer than a few seconds; then another
/// program fills the disk to 0 bytes while recording (recording goes on); then a restart on a
/// disk at 0 bytes free comes back recording. Every file decodes, listed segments = files, and
/// a reindex of a copy lists the same segments.
#[tokio::test(flavor = "multi_thread")]
async fn fill_and_delete_cycles_keep_recording_and_a_restart_at_0_bytes_free_records() {
    let Some(fs) = Tmpfs::mount(48) else {
        return;
    };
    let data = fs.path().to_owned();
    std::fs::write(data.join("other-program.bin"), vec![7u8; 24 << 20]).unwrap();
    let f = heavy_fixture();
    let sim: ServerHandle = vigie_testkit::sim::start(vec![
        MountConfig::new("a", f.clone()),
        MountConfig::new("b", f),
    ])
    .await;
    let mut v = VigieBuilder::new(BIN)
        .data_dir(&data)
        .min_free_bytes("4MiB")
        .segment_seconds(10)
        .toml("[retention]\ncheck_interval_s = 3600\n")
        .toml(COMMUNE)
        .toml(&camera_toml("cam-a", &sim.url("a")))
        .toml(&camera_toml("cam-b", &sim.url("b")))
        .start()
        .unwrap();
    let t_start = Timestamp::now();

    // Phase 1: recording through fill-and-delete cycles (~0.5 MB/s a camera, 5 MB segments:
    // deletions start after ~20 s), until 6 segments were deleted and 30 s passed (90 s at
    // most: the assertion below says what was seen).
    let mut states = std::collections::BTreeSet::new();
    let mut min_free = u64::MAX;
    let phase1 = Instant::now();
    while phase1.elapsed() < Duration::from_secs(30)
        || (phase1.elapsed() < Duration::from_secs(90)
            && v.log().matches("segment deleted").count() < 6)
    {
        let h = health(&v).await;
        assert_ne!(h["status"], "unavailable", "{h}");
        states.insert(h["storage"]["state"].as_str().unwrap_or("?").to_owned());
        min_free = min_free.min(free_bytes(&data));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deleted = v.log().matches("segment deleted").count();
    eprintln!(
        "phase 1: {deleted} segments deleted, storage states seen {states:?}, lowest free space {min_free} bytes"
    );
    assert!(deleted >= 6, "too few deletions: {deleted}\n{}", v.log());
    // Recording went on through the deletions: measure the gaps (first segment excluded: the
    // cameras connect then).
    let from = t_start + SignedDuration::from_secs(10);
    for cam in ["cam-a", "cam-b"] {
        let s = spans(&v, cam).await;
        let gap = largest_gap(&s, from);
        eprintln!("{cam}: {} spans, largest gap {gap:.2} s", s.len());
        assert!(gap < 6.0, "{cam}: a {gap:.2} s gap in {s:?}");
    }

    // Phase 2: another program fills the disk to 0 bytes while recording.
    let filled = fill(&data.join("filler-1"));
    let t_fill = Timestamp::now();
    eprintln!(
        "phase 2: filler wrote {filled} bytes, free now {}",
        free_bytes(&data)
    );
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let h = health(&v).await;
        seen.insert(h["storage"]["state"].as_str().unwrap_or("?").to_owned());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!("storage states after the fill: {seen:?}");
    for cam in ["cam-a", "cam-b"] {
        wait_recording_past(&v, cam, t_fill, 10, "after another program filled the disk").await;
    }

    // Phase 3: stop, fill the disk to 0 bytes, start again: it comes back recording.
    v.stop().unwrap();
    fill(&data.join("filler-2"));
    let free_at_start = free_bytes(&data);
    assert!(free_at_start < 64 << 10, "{free_at_start}");
    let t_restart = Timestamp::now();
    v.spawn().unwrap();
    for cam in ["cam-a", "cam-b"] {
        wait_recording_past(&v, cam, t_restart, 8, "after a restart at 0 bytes free").await;
    }
    let log = v.log();
    assert!(
        log.contains("reserve file released")
            || log.contains("oldest footage deleted before recording"),
        "{log}"
    );
    v.stop().unwrap();
    sim.shutdown().await;

    // Index and files agree (once the background verification, which also indexes orphan
    // files anywhere in the history, is done); every file decodes.
    v.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while health(&v).await["history_verification"]["done"] != serde_json::json!(true) {
        assert!(Instant::now() < deadline, "history verification not done");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed = listing(&v, &["cam-a", "cam-b"]).await;
    v.stop().unwrap();
    let files = mp4_files(&data.join("recordings"));
    assert_eq!(
        files.len(),
        listed.len(),
        "files {files:?}\nlisted {listed:?}"
    );
    for f in &files {
        ffmpeg_decodes(f).unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("copy");
    copy_data(&data, &copy);
    drop(fs); // unmounted: the copy is on the ordinary disk
    let mut v2 = VigieBuilder::new(BIN)
        .data_dir(&copy)
        .min_free_bytes("4MiB")
        .segment_seconds(10)
        .toml(COMMUNE)
        .toml(&camera_toml("cam-a", "rtsp://127.0.0.1:9/none"))
        .toml(&camera_toml("cam-b", "rtsp://127.0.0.1:9/none"))
        .start()
        .unwrap();
    v2.stop().unwrap();
    let (ok, out) = v2.command(&["reindex"]).unwrap();
    assert!(ok, "reindex failed: {out}");
    v2.spawn().unwrap();
    let reindexed = listing(&v2, &["cam-a", "cam-b"]).await;
    v2.stop().unwrap();
    assert_eq!(reindexed, listed, "reindex of a copy lists other segments");
}

/// The index alone runs out of space (its own 2 MiB file system, the data directory has room):
/// recording stops cleanly, health says `index_error` (503, `recording_blocked`); once the
/// index's file system has room again, Vigie reopens the index by itself and records again.
#[tokio::test(flavor = "multi_thread")]
async fn an_index_out_of_space_stops_recording_loudly_then_recovers_without_a_restart() {
    let Some(fs) = Tmpfs::mount(64) else {
        return;
    };
    let data = fs.path().to_owned();
    let Some(_index_fs) = Tmpfs::mount_at(&data.join("index"), 2) else {
        return;
    };
    let sim = vigie_testkit::sim::start_baseline(&["a"]).await;
    let mut v = VigieBuilder::new(BIN)
        .data_dir(&data)
        .min_free_bytes("4MiB")
        .segment_seconds(10)
        // (first extra line: it lands in the generated `[recording]` table)
        .toml("index_interval_ms = 0")
        .toml(COMMUNE)
        .toml(&camera_toml("cam-a", &sim.url("a")))
        .start()
        .unwrap();
    wait_recording_past(&v, "cam-a", Timestamp::now(), 4, "at start").await;
    fill(&data.join("index").join("junk"));
    let deadline = Instant::now() + Duration::from_secs(45);
    let h = loop {
        let (code, h) = v.get("/api/v1/health").await.unwrap();
        if h["storage"]["state"] == "index_error" {
            assert_eq!(code, 503, "{h}");
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "no index error reported: {h}\n{}",
            v.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    eprintln!("health while the index cannot write: {h}");
    let (_, metrics) = v.get_text("/metrics").await.unwrap();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("vigie_storage_state{") && l.contains("state=\"index_error\"} 1")
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("vigie_storage_recording_blocked{") && l.ends_with(" 1")),
        "{metrics}"
    );
    assert_eq!(h["status"], "unavailable");
    assert_eq!(h["recording_blocked"], true, "{h}");
    assert!(
        h["storage"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("index cannot be written")),
        "{h}"
    );
    std::fs::remove_file(data.join("index").join("junk")).unwrap();
    let t_room = Timestamp::now();
    wait_recording_past(&v, "cam-a", t_room, 6, "after the index had room again").await;
    let h = health(&v).await;
    assert_eq!(h["storage"]["state"], "ok", "{h}");
    assert!(v.log().contains("index reopened"), "{}", v.log());
    v.stop().unwrap();
    sim.shutdown().await;
    for f in mp4_files(&data.join("recordings")) {
        ffmpeg_decodes(&f).unwrap();
    }
}

/// The access journal alone runs out of space (its own 2 MiB file system): recording goes on
/// (the store does not depend on it), footage is never served without its access journaled
/// (503); once there is room again footage is served again without a restart (the journal is
/// reopened; before, it stayed refused until someone restarted Vigie), and after a restart too.
#[tokio::test(flavor = "multi_thread")]
async fn a_journal_out_of_space_never_stops_recording_nor_serves_unjournaled_footage() {
    let Some(fs) = Tmpfs::mount(64) else {
        return;
    };
    let data = fs.path().to_owned();
    let Some(_journal_fs) = Tmpfs::mount_at(&data.join("journal"), 2) else {
        return;
    };
    let sim = vigie_testkit::sim::start_baseline(&["a"]).await;
    let mut v = VigieBuilder::new(BIN)
        .data_dir(&data)
        .min_free_bytes("4MiB")
        .segment_seconds(10)
        .toml(COMMUNE)
        .toml(&camera_toml("cam-a", &sim.url("a")))
        .start()
        .unwrap();
    wait_recording_past(&v, "cam-a", Timestamp::now(), 4, "at start").await;
    fill(&data.join("journal").join("junk"));
    let t_full = Timestamp::now();
    // Accesses need journal entries: keep asking for footage until the journal fails (sled may
    // still have room in the log segment it already wrote: up to 512 KiB of entries).
    // (Each request a different range: the same access is journaled once a minute.)
    let video_at = |i: i64| {
        let start =
            (t_full - SignedDuration::from_secs(4) + SignedDuration::from_millis(i)).to_string();
        format!("/api/v1/cameras/cam-a/streams/main/video.mp4?start={start}&duration=2")
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut served = 0;
    let refused = loop {
        let (code, body) = v.get_text(&video_at(served)).await.unwrap();
        if code == 503 {
            break body;
        }
        assert_eq!(code, 200, "{body}");
        served += 1;
        assert!(
            Instant::now() < deadline,
            "footage still served with a full journal after {served} requests"
        );
    };
    eprintln!("footage refused while the journal is full (after {served} served): {refused}");
    wait_recording_past(&v, "cam-a", t_full, 8, "with a full journal").await;
    std::fs::remove_file(data.join("journal").join("junk")).unwrap();
    // Room again: served again, same process (a reopen is tried at most once a second).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    loop {
        i += 1;
        let (code, body) = v.get_text(&video_at(served + i)).await.unwrap();
        if code == 200 {
            break;
        }
        assert_eq!(code, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "footage still refused 30 s after the journal's disk has room again: {body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Its access was journaled: the entry is in the journal (read through the API).
    let (code, body) = v.get("/api/v1/audit?limit=10000").await.unwrap();
    assert_eq!(code, 200, "{body}");
    v.stop().unwrap();
    v.spawn().unwrap();
    let (code, body) = v.get_text(&video_at(-1)).await.unwrap();
    assert_eq!(code, 200, "{body}");
    v.stop().unwrap();
    sim.shutdown().await;
}

/// Exports and a full exports file system. First the admission: an export larger than the room
/// on its file system (1 MiB, the export ~10 MB) is refused before anything is written (507,
/// with the numbers). Then an export admitted with room whose file system another program
/// fills while it runs (the burned-in copy keeps it busy for seconds): the job fails with a
/// clear error, leaves no partial package, the footage it covers is still there, and recording
/// continues.
#[tokio::test(flavor = "multi_thread")]
async fn an_export_that_cannot_be_written_fails_cleanly_and_recording_continues() {
    let Some(fs) = Tmpfs::mount(64) else {
        return;
    };
    let data = fs.path().to_owned();
    let Some(exports_fs) = Tmpfs::mount_at(&data.join("exports"), 1) else {
        return;
    };
    let f = heavy_fixture();
    let sim = vigie_testkit::sim::start(vec![MountConfig::new("a", f)]).await;
    let mut v = VigieBuilder::new(BIN)
        .data_dir(&data)
        .min_free_bytes("4MiB")
        .segment_seconds(10)
        .toml(COMMUNE)
        .toml(&camera_toml("cam-a", &sim.url("a")))
        .toml("[exports]\nmin_free_bytes = \"1MiB\"\n")
        .start()
        .unwrap();
    let t0 = Timestamp::now();
    wait_recording_past(&v, "cam-a", t0, 22, "before the export").await;
    let before = listing(&v, &["cam-a"]).await;
    let body = |burn_in: bool| {
        serde_json::json!({
            "camera": "cam-a", "stream": "main",
            "start": (t0 + SignedDuration::from_secs(2)).to_string(),
            "end": (t0 + SignedDuration::from_secs(20)).to_string(),
            "reason": "réquisition", "procedure": "2026/00999", "requester": "OPJ Test",
            "burn_in": burn_in,
        })
    };
    // 1. Refused at admission: nothing written.
    let r = v
        .http()
        .post(format!("{}/api/v1/exports", v.base_url()))
        .json(&body(false))
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    let refusal: serde_json::Value = r.json().await.unwrap();
    assert_eq!(code, 507, "{refusal}");
    let msg = refusal["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("not enough free space"),
        "unclear refusal: {refusal}"
    );

    // 2. Admitted with room, then the file system fills up under the running job.
    assert!(exports_fs.resize(64), "cannot resize the exports tmpfs");
    let r = v
        .http()
        .post(format!("{}/api/v1/exports", v.base_url()))
        .json(&body(true))
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    let job: serde_json::Value = r.json().await.unwrap();
    assert_eq!(code, 202, "{job}");
    // Another program takes every byte left.
    {
        use std::io::Write;
        let mut junk = std::fs::File::create(data.join("exports").join("junk")).unwrap();
        let block = vec![0u8; 1 << 20];
        while junk.write_all(&block).is_ok() {}
    }
    let id = job["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let (_, j) = v.get(&format!("/api/v1/exports/{id}")).await.unwrap();
        match j["status"].as_str().unwrap_or("") {
            "failed" => break j,
            "done" => panic!("an export larger than its file system succeeded: {j}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "export still running: {j}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    eprintln!("export failed as expected: {}", job["error"]);
    let err = job["error"].as_str().unwrap_or("");
    assert!(
        err.to_lowercase().contains("no space left") || err.contains("space"),
        "unclear error: {job}"
    );
    // No partial package left behind.
    let leftovers: Vec<_> = walk(&data.join("exports"))
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.ends_with(".mp4") || n.ends_with(".zip") || n.contains(".part") || n.contains(".tmp")
        })
        .collect();
    assert!(leftovers.is_empty(), "partial package left: {leftovers:?}");
    // Nothing lost, recording continues.
    let after = listing(&v, &["cam-a"]).await;
    for s in &before {
        assert!(
            after.iter().any(|a| a.0 == s.0 && a.1 == s.1),
            "segment {s:?} lost"
        );
    }
    wait_recording_past(&v, "cam-a", Timestamp::now(), 5, "after the failed export").await;
    v.stop().unwrap();
    sim.shutdown().await;
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

//! Lawful-access e2e tests on the real binary: quality-floor alerts, legal holds, the access
//! journal (every footage access journaled; tampering detected by `vigie audit verify`), the
//! legal register.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use vigie_camsim::{Fixture, MountConfig, Server, ServerHandle};
use vigie_e2e::{Vigie, VigieBuilder, fixtures_dir};

const BIN: &str = env!("CARGO_BIN_EXE_vigie");

async fn sim(mount: &str, fixture: Arc<Fixture>) -> ServerHandle {
    Server::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![MountConfig::new(mount, fixture)],
    )
    .await
    .unwrap()
}

fn camera(id: &str, class: &str, url: &str) -> String {
    format!(
        "[[communes]]\nid = \"test\"\nname = \"Test\"\nauthorisation = \"2024/00/0001\"\n\
         [[cameras]]\nid = \"{id}\"\nname = \"Camera {id}\"\ncommune = \"test\"\nclass = \"{class}\"\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"{url}\"\n"
    )
}

async fn journal(v: &Vigie, query: &str) -> Vec<Value> {
    let (code, body) = v.get(&format!("/api/v1/audit?{query}")).await.unwrap();
    assert_eq!(code, 200, "{body}");
    body["entries"].as_array().unwrap().clone()
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn compliance(v: &Vigie, cam: &str) -> Value {
    let (_, body) = v.get("/api/v1/cameras").await.unwrap();
    body["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == cam)
        .unwrap()["streams"][0]["compliance"]
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn quality_floor_alert_raises_and_clears_and_is_journaled() {
    // 1280×720 at 25 fps on a close-up camera (floor 704×576, 12 fps).
    let fixture = Fixture::load(fixtures_dir().join("h264-2mbps-25fps.h264"), 25.0).unwrap();
    let sim = sim("cam", fixture).await;
    let mut v = VigieBuilder::new(BIN)
        .toml(&camera("closeup", "close-up", &sim.url("cam")))
        .start()
        .unwrap();
    wait_for("compliance ok", Duration::from_secs(30), async || {
        compliance(&v, "closeup").await["state"] == "ok"
    })
    .await;

    // The camera drops to 5 fps: alert in status, metrics and journal.
    sim.mount("cam").unwrap().set_frame_divisor(5);
    wait_for("quality alert", Duration::from_secs(40), async || {
        compliance(&v, "closeup").await["alert"] == true
    })
    .await;
    let c = compliance(&v, "closeup").await;
    assert!(c["reason"].as_str().unwrap().contains("frame rate"), "{c}");
    let (_, metrics) = v.get_text("/metrics").await.unwrap();
    assert!(
        metrics.contains("vigie_stream_below_quality_floor{camera=\"closeup\",stream=\"main\"} 1"),
        "{metrics}"
    );
    let alerts = journal(&v, "action=quality-alert").await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["camera"], "closeup");

    // Back at 25 fps: cleared, journaled.
    sim.mount("cam").unwrap().set_frame_divisor(1);
    wait_for("quality clear", Duration::from_secs(40), async || {
        compliance(&v, "closeup").await["state"] == "ok"
    })
    .await;
    let (_, metrics) = v.get_text("/metrics").await.unwrap();
    assert!(
        metrics.contains("vigie_stream_below_quality_floor{camera=\"closeup\",stream=\"main\"} 0")
    );
    assert_eq!(journal(&v, "action=quality-clear").await.len(), 1);

    // The register lists the period below the floor.
    let (code, csv) = v.get_text("/api/v1/register.csv").await.unwrap();
    assert_eq!(code, 200, "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with("below-quality-floor,closeup,main,test")),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with("quality-floor-restored,closeup")),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with("recording,closeup,main,test")),
        "{csv}"
    );
    v.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn holds_journal_and_tamper_evidence() {
    let sim = sim(
        "cam",
        Fixture::embedded("h264-baseline-640x360-25fps-gop50.h264").unwrap(),
    )
    .await;
    let mut v = VigieBuilder::new(BIN)
        .toml(&camera("gare", "wide", &sim.url("cam")))
        .start()
        .unwrap();
    let t_start = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let url = format!("{}/api/v1/holds", v.base_url());
    let now = Timestamp::now();
    let good = json!({
        "camera": "gare", "stream": "main",
        "start": (now - SignedDuration::from_secs(5)).to_string(),
        "end": (now - SignedDuration::from_secs(1)).to_string(),
        "procedure": "PV 2026/1234", "reason": "réquisition judiciaire",
    });
    // Bad input: clear 4xx, nothing written.
    let mut no_procedure = good.clone();
    no_procedure["procedure"] = json!("  ");
    let mut reversed = good.clone();
    reversed["end"] = good["start"].clone();
    reversed["start"] = good["end"].clone();
    let mut future = good.clone();
    future["start"] = json!((now + SignedDuration::from_hours(1)).to_string());
    future["end"] = json!((now + SignedDuration::from_hours(2)).to_string());
    let mut unknown = good.clone();
    unknown["camera"] = json!("nowhere");
    for (body, status, needle) in [
        (no_procedure.to_string(), 400, "procedure"),
        (reversed.to_string(), 400, "after"),
        (future.to_string(), 400, "future"),
        (unknown.to_string(), 404, "nowhere"),
        ("{\"camera\": ".to_owned(), 400, ""),
    ] {
        let r = v
            .http()
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        let err: Value = r.json().await.unwrap();
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains(needle),
            "{err}"
        );
    }
    let (_, holds) = v.get("/api/v1/holds").await.unwrap();
    assert_eq!(
        holds["holds"].as_array().unwrap().len(),
        0,
        "a refused request wrote something"
    );
    assert!(journal(&v, "action=hold-place").await.is_empty());

    // A valid hold, listed, journaled, released once.
    let r = v.http().post(&url).json(&good).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let hold: Value = r.json().await.unwrap();
    let id = hold["id"].as_u64().unwrap();
    let (_, holds) = v.get("/api/v1/holds").await.unwrap();
    assert_eq!(holds["holds"][0]["procedure"], "PV 2026/1234");
    let placed = journal(&v, "action=hold-place").await;
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0]["procedure"], "PV 2026/1234");
    let release = format!("{url}/{id}/release");
    let r = v
        .http()
        .post(&release)
        .json(&json!({ "reason": "classement" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = v
        .http()
        .post(&release)
        .json(&json!({ "reason": "again" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    assert_eq!(journal(&v, "action=hold-release").await.len(), 1);

    // A footage access leaves its entry (playback of a range, with that range).
    let a = t_start.to_string();
    let b = Timestamp::now().to_string();
    let (code, _) = v
        .get_text(&format!(
            "/api/v1/cameras/gare/streams/main/video.mp4?start={a}&end={b}&gaps=skip"
        ))
        .await
        .unwrap();
    assert!(code == 200 || code == 404, "{code}");
    let playbacks = journal(&v, "action=playback").await;
    assert!(!playbacks.is_empty(), "playback not journaled");
    assert_eq!(playbacks[0]["camera"], "gare");
    let (_, verify) = v.get("/api/v1/audit/verify").await.unwrap();
    assert_eq!(verify["ok"], true, "{verify}");
    let csv = v.get_text("/api/v1/audit?format=csv").await.unwrap().1;
    assert!(csv.starts_with("seq,time,actor,action"), "{csv}");
    v.stop().unwrap();

    // The journal verifies with the CLI; editing or deleting one entry makes it fail and name it.
    let (ok, out) = v.command(&["audit", "verify"]).unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("hash chain intact"), "{out}");
    let journal_dir = v.data_dir.join("journal");
    let target_seq = placed[0]["seq"].as_u64().unwrap();
    {
        let j =
            vigie_audit::Journal::open(&journal_dir, Arc::new(vigie_core::SystemClock)).unwrap();
        let raw = j.raw_entries().unwrap();
        let v0 = raw.get(target_seq.to_be_bytes()).unwrap().unwrap();
        let edited = String::from_utf8(v0.to_vec())
            .unwrap()
            .replace("PV 2026/1234", "PV 2026/9999");
        raw.insert(target_seq.to_be_bytes(), edited.as_bytes())
            .unwrap();
        j.flush().unwrap();
    }
    let (ok, out) = v.command(&["audit", "verify"]).unwrap();
    assert!(!ok, "tampering not detected: {out}");
    assert!(out.contains(&format!("entry {target_seq}")), "{out}");
    {
        let j =
            vigie_audit::Journal::open(&journal_dir, Arc::new(vigie_core::SystemClock)).unwrap();
        let raw = j.raw_entries().unwrap();
        let original = raw.get((target_seq).to_be_bytes()).unwrap().unwrap();
        let fixed = String::from_utf8(original.to_vec())
            .unwrap()
            .replace("PV 2026/9999", "PV 2026/1234");
        raw.insert(target_seq.to_be_bytes(), fixed.as_bytes())
            .unwrap();
        raw.remove((target_seq + 1).to_be_bytes()).unwrap();
        j.flush().unwrap();
    }
    let (ok, out) = v.command(&["audit", "verify"]).unwrap();
    assert!(!ok, "deletion not detected: {out}");
    assert!(out.contains(&format!("entry {}", target_seq + 1)), "{out}");
}

async fn segments(v: &Vigie, cam: &str) -> Vec<Value> {
    let now = Timestamp::now();
    let (a, b) = (
        now - SignedDuration::from_hours(1),
        now + SignedDuration::from_hours(1),
    );
    let (code, body) = v
        .get(&format!(
            "/api/v1/cameras/{cam}/streams/main/recordings?start={a}&end={b}&segments=1"
        ))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    body["segments"].as_array().unwrap().clone()
}

/// Free-space floor unreachable (1000 TB): retention deletes every closed segment, except the
/// held one; with only held footage left, recording stops (alert) instead of deleting it; the
/// register lists the destructions.
#[tokio::test(flavor = "multi_thread")]
async fn retention_spares_held_footage_and_the_register_lists_destructions() {
    let sim = sim(
        "cam",
        Fixture::embedded("h264-baseline-640x360-25fps-gop50.h264").unwrap(),
    )
    .await;
    let mut v = VigieBuilder::new(BIN)
        .min_free_bytes("1000TB")
        .toml("[retention]\ncheck_interval_s = 1\n")
        .toml(&camera("gare", "wide", &sim.url("cam")))
        .start()
        .unwrap();
    // The first segment closes and is destroyed by the floor.
    wait_for("a destruction", Duration::from_secs(45), async || {
        !journal(&v, "action=retention-delete").await.is_empty()
    })
    .await;
    let destroyed = journal(&v, "action=retention-delete").await;
    assert_eq!(
        destroyed[0]["reason"], "free space below floor",
        "{destroyed:?}"
    );
    // Hold the segment being recorded now; when it closes it must survive, and recording stops.
    wait_for("the next segment", Duration::from_secs(20), async || {
        !segments(&v, "gare").await.is_empty()
    })
    .await;
    let open = segments(&v, "gare").await;
    let current = open.last().expect("an open segment").clone();
    let now = Timestamp::now();
    let hold = json!({
        "camera": "gare", "stream": "main",
        "start": current["start"], "end": (now + SignedDuration::from_secs(1)).to_string(),
        "procedure": "PV 2026/77", "reason": "requisition",
    });
    let r = v
        .http()
        .post(format!("{}/api/v1/holds", v.base_url()))
        .json(&hold)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    wait_for("recording blocked", Duration::from_secs(45), async || {
        !journal(&v, "action=recording-blocked").await.is_empty()
    })
    .await;
    let segs = segments(&v, "gare").await;
    assert!(
        segs.iter().any(|s| s["id"] == current["id"]),
        "held segment deleted: {segs:?}"
    );
    let (_, health) = v.get("/api/v1/health").await.unwrap();
    assert_eq!(health["recording_blocked"], true, "{health}");
    assert!(
        health["warnings"].to_string().contains("legal hold"),
        "{health}"
    );
    let (_, csv) = v.get_text("/api/v1/register.csv").await.unwrap();
    let destructions = csv
        .lines()
        .filter(|l| l.starts_with("destruction,gare,main,test"))
        .count();
    assert!(destructions >= 1, "{csv}");
    assert!(
        csv.lines().any(|l| l.starts_with("recording-blocked,")),
        "{csv}"
    );
    assert!(
        !csv.contains(&format!("\"segment_id\":{}", current["id"])),
        "held segment listed as destroyed"
    );
    v.stop().unwrap();
}

//! Multi-camera evidence exports end to end, on the real binary recording two camsim cameras:
//! one requisition, two cameras over one range, one package. Checked with independent tools:
//! `vigie verify` (valid; a flipped byte in either master is named), `sha256sum`, `ffmpeg
//! -xerror` and `ffprobe -count_frames` on each master (frame count = the manifest's), the
//! legal holds and journal entries per camera, a scoped user refused for a camera outside its
//! scope (nothing held, no job, no file), and the offline `player.html` playing both videos in
//! headless Chromium.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use vigie_testkit::media::{ffmpeg_decodes, ffprobe};
use vigie_testkit::{Vigie, VigieBuilder};

use super::export::{post, sha256sum, tamper, unzip, vigie_verify, written_state};

const BIN: &str = env!("CARGO_BIN_EXE_vigie");
const PW: &str = "a long enough password";

fn config(a: &str, b: &str) -> String {
    format!(
        "[[communes]]\nid = \"versailles\"\nname = \"Versailles\"\nauthorisation = \"2024/78/0123\"\n\
         [[cameras]]\nid = \"gare\"\nname = \"Gare Rive Droite — parvis\"\ncommune = \"versailles\"\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"{a}\"\n\
         [[cameras]]\nid = \"quai\"\nname = \"Gare Rive Droite — quai 1\"\ncommune = \"versailles\"\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"{b}\"\n"
    )
}

/// Sends `method path` with a bearer token; (status, JSON body).
async fn call(
    v: &Vigie,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let client = v.anonymous_client_builder().unwrap().build().unwrap();
    let mut r = client
        .request(method.parse().unwrap(), format!("{}{}", v.base_url(), path))
        .header("authorization", format!("Bearer {token}"));
    if let Some(b) = body {
        r = r.json(b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// An investigator allowed camera `gare` only, and an API token for it.
async fn scoped_investigator(v: &Vigie) -> String {
    let admin = v.admin_token().unwrap().to_owned();
    let (st, b) = call(
        v,
        &admin,
        "POST",
        "/api/v1/users",
        Some(
            &json!({ "name": "ines", "role": "investigator", "password": PW,
                       "communes": ["versailles"], "cameras": ["gare"] }),
        ),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    let (st, b) = call(
        v,
        &admin,
        "POST",
        "/api/v1/tokens",
        Some(&json!({ "user": "ines", "name": "test" })),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    b["token"].as_str().unwrap().to_owned()
}

/// Waits until both cameras have a span of ≥ 14 s; returns an instant from which 9 s are
/// recorded on both.
async fn common_recording(v: &Vigie) -> Timestamp {
    let (wa, wb) = (
        (Timestamp::now() - SignedDuration::from_hours(1)).to_string(),
        (Timestamp::now() + SignedDuration::from_hours(1)).to_string(),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut firsts = Vec::new();
        for cam in ["gare", "quai"] {
            let spans = v.spans(cam, "main", &wa, &wb).await.unwrap();
            if let Some(&(a, b)) = spans.first()
                && b.duration_since(a).as_secs_f64() >= 14.0
            {
                firsts.push((a, b));
            }
        }
        if firsts.len() == 2 {
            let start = firsts.iter().map(|s| s.0).max().unwrap();
            let end = firsts.iter().map(|s| s.1).min().unwrap();
            if end.duration_since(start).as_secs_f64() >= 10.0 {
                return start;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not enough recording on both cameras"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_camera_export_verifies_decodes_plays_and_refuses_out_of_scope() {
    let sim = vigie_testkit::sim::start_baseline(&["a", "b"]).await;
    let mut v = VigieBuilder::new(BIN)
        .toml(&config(&sim.url("a"), &sim.url("b")))
        .start()
        .unwrap();
    let work: PathBuf = v.work_dir().to_owned();
    let ines = scoped_investigator(&v).await;

    // 6 s on both cameras, starting mid-GOP.
    let start = common_recording(&v).await + SignedDuration::from_millis(2_020);
    let end = start + SignedDuration::from_secs(6);
    // `quai` without its stream: the camera's main (recorded) stream.
    let good = json!({
        "streams": [{"camera": "gare", "stream": "main"}, {"camera": "quai"}],
        "start": start.to_string(), "end": end.to_string(),
        "reason": "réquisition judiciaire", "procedure": "2026/00777",
        "requester": "OPJ Martin, commissariat de Versailles",
    });

    // Refused, nothing written: a camera outside the scope of the caller (403), and bad lists.
    let before = written_state(&v).await;
    let (st, b) = call(&v, &ines, "POST", "/api/v1/exports", Some(&good)).await;
    assert_eq!(st, 403, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("quai"),
        "{b}"
    );
    let with = |k: &str, val: Value| {
        let mut x = good.clone();
        x[k] = val;
        x.to_string()
    };
    for (body, status, needle) in [
        (
            with("streams", json!([{"camera": "gare", "stream": "main"}])),
            400,
            "2 to",
        ),
        (
            with(
                "streams",
                json!([{"camera": "gare", "stream": "main"}, {"camera": "gare", "stream": "main"}]),
            ),
            400,
            "twice",
        ),
        (with("camera", json!("gare")), 400, "not both"),
        (
            with("stills", json!([start.to_string()])),
            400,
            "single-camera",
        ),
        (
            with(
                "streams",
                json!([{"camera": "gare", "stream": "main"}, {"camera": "quai", "stream": "sub"}]),
            ),
            404,
            "sub",
        ),
        (
            with(
                "streams",
                json!([{"camera": "gare", "stream": "main"}, {"camera": "nope", "stream": "main"}]),
            ),
            404,
            "nope",
        ),
    ] {
        let (code, resp) = post(&v, &body).await;
        assert_eq!(code, status, "{body}: {resp}");
        let msg = resp["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    assert_eq!(
        written_state(&v).await,
        before,
        "a refused multi-camera export wrote something"
    );

    // The export, by the (unscoped) admin.
    let (code, job) = post(&v, &good.to_string()).await;
    assert_eq!(code, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(90);
    let job = loop {
        let (code, j) = v.get(&format!("/api/v1/exports/{id}")).await.unwrap();
        assert_eq!(code, 200, "{j}");
        match j["status"].as_str().unwrap() {
            "done" => break j,
            "failed" => panic!("export failed: {j}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "export not done: {j}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let streams = job["streams"].as_array().unwrap().clone();
    assert_eq!(streams.len(), 2, "{job}");
    // The scoped user sees neither the job nor its package.
    let (st, _) = call(&v, &ines, "GET", &format!("/api/v1/exports/{id}"), None).await;
    assert_eq!(st, 403);
    let (st, _) = call(
        &v,
        &ines,
        "GET",
        &format!("/api/v1/exports/{id}/package"),
        None,
    )
    .await;
    assert_eq!(st, 403);
    let (_, list) = call(&v, &ines, "GET", "/api/v1/exports", None).await;
    assert!(
        !list["exports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == id.as_str()),
        "{list}"
    );

    let r = v
        .http()
        .get(format!("{}/api/v1/exports/{id}/package", v.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let pkg = work.join("multi.zip");
    std::fs::write(&pkg, r.bytes().await.unwrap()).unwrap();
    assert_eq!(sha256sum(&pkg), job["package"]["sha256"].as_str().unwrap());

    // vigie verify: every file, both masters.
    let (ok, out) = vigie_verify(&v, &pkg, true);
    assert!(
        ok && out.contains("VALID") && !out.contains("INVALID"),
        "{out}"
    );
    assert!(out.contains("2 cameras"), "{out}");

    let dir = work.join("multi-unzipped");
    unzip(&pkg, &dir);
    let m: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["format"], "vigie-evidence-package/2", "{m}");
    assert_eq!(m["procedure"], "2026/00777");
    let cams = m["cameras"].as_array().unwrap();
    assert_eq!(
        cams.iter()
            .map(|c| c["camera"]["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["gare", "quai"]
    );
    let utc: Timestamp = m["requested"]["start"]["utc"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(utc, start);
    let mut names = Vec::new();
    for (c, s) in cams.iter().zip(&streams) {
        let name = c["video"]["file"].as_str().unwrap().to_owned();
        let f = m["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} not in files: {m}"));
        assert_eq!(f["role"], "master");
        let path = dir.join(&name);
        let sha = sha256sum(&path);
        assert_eq!(sha, f["sha256"].as_str().unwrap());
        assert_eq!(s["sha256"].as_str(), Some(sha.as_str()), "{job}");
        ffmpeg_decodes(&path).unwrap();
        let probe = ffprobe(&path).unwrap();
        assert_eq!(
            c["video"]["frames"].as_u64(),
            Some(probe.frames),
            "{name}: {c}"
        );
        assert!(
            probe.frames.abs_diff(150) <= 1,
            "{name}: {} frames",
            probe.frames
        );
        assert_eq!((probe.width, probe.height), (640, 360));
        assert_eq!(c["gaps"].as_array().unwrap().len(), 0, "{c}");
        names.push(name);
    }
    assert_ne!(names[0], names[1]);
    assert_ne!(streams[0]["sha256"], streams[1]["sha256"]);

    // Tampering with either master: INVALID, naming that file.
    for name in &names {
        let bad = work.join("bad-multi.zip");
        tamper(&pkg, &bad, name);
        let (ok, out) = vigie_verify(&v, &bad, true);
        assert!(!ok, "{out}");
        let failed: Vec<&str> = out.lines().filter(|l| l.contains("[FAIL]")).collect();
        assert!(
            failed.iter().any(|l| l.contains(name.as_str())),
            "{name}: {out}"
        );
        let other = names.iter().find(|n| *n != name).unwrap();
        assert!(!failed.iter().any(|l| l.contains(other.as_str())), "{out}");
    }

    // A legal hold per camera, and the journal per camera (creation and download).
    let holds = v.get("/api/v1/holds").await.unwrap().1;
    for cam in ["gare", "quai"] {
        assert!(
            holds["holds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["camera"] == cam
                    && h["procedure"] == "2026/00777"
                    && h["active"] == true),
            "{cam}: {holds}"
        );
    }
    for action in ["export-create", "export-download"] {
        let (_, body) = v
            .get(&format!("/api/v1/audit?action={action}"))
            .await
            .unwrap();
        for (cam, s) in ["gare", "quai"].iter().zip(&streams) {
            let e = body["entries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["details"]["export_id"] == id.as_str() && e["camera"] == *cam)
                .unwrap_or_else(|| panic!("no {action} entry for {cam}: {body}"));
            assert_eq!(e["details"]["sha256"], s["sha256"], "{e}");
            assert_eq!(e["procedure"], "2026/00777");
        }
    }

    // The legal register lists one extraction per camera, each with its master's hash.
    let (_, register) = v.get_text("/api/v1/register.csv").await.unwrap();
    for s in &streams {
        let sha = s["sha256"].as_str().unwrap();
        assert!(
            register
                .lines()
                .any(|l| l.starts_with("extraction,") && l.contains(sha)),
            "no extraction with {sha}:\n{register}"
        );
    }

    players_in_chromium(&dir, &names, &work).await;
    v.stop().unwrap();
    sim.shutdown().await;
}

/// Opens the multi-camera player and waits for its verdict and both videos playing.
async fn open_player(b: &vigie_testkit::browser::Browser, page: &Path) -> Value {
    b.goto(&format!("file://{}", page.display())).await.unwrap();
    b.execute_async(
        r#"const done = arguments[0];
           const t0 = Date.now();
           const poll = () => {
             const st = document.getElementById('verdict').dataset.state;
             const vids = [...document.querySelectorAll('video')];
             const playing = vids.length > 0 && vids.every(v => v.readyState >= 3 && v.currentTime > 0.5);
             if ((st !== 'pending' && playing) || Date.now() - t0 > 25000) {
               done({verdict: st, text: document.getElementById('verdict').innerText,
                     signature: document.getElementById('signature').dataset.state || '',
                     cams: [...document.querySelectorAll('.cam-verdict')].map(e => e.dataset.state),
                     videos: vids.map(v => ({camera: v.dataset.camera, readyState: v.readyState,
                       currentTime: v.currentTime, width: v.videoWidth, height: v.videoHeight,
                       error: v.error ? String(v.error.message || v.error.code) : null}))});
             } else setTimeout(poll, 200);
           };
           poll();"#,
        vec![],
    )
    .await
    .unwrap()
}

async fn players_in_chromium(dir: &Path, names: &[String], work: &Path) {
    use vigie_testkit::browser::Browser;
    let b = Browser::start_with_args(&["--allow-file-access-from-files"])
        .await
        .unwrap();
    b.set_script_timeout(Duration::from_secs(40)).await.unwrap();
    let r = open_player(&b, &dir.join("player.html")).await;
    assert_eq!(r["verdict"], "valid", "{r}");
    assert_eq!(r["cams"], json!(["valid", "valid"]), "{r}");
    assert_eq!(r["signature"], "valid", "{r}");
    let videos = r["videos"].as_array().unwrap();
    assert_eq!(videos.len(), 2, "{r}");
    for (vid, cam) in videos.iter().zip(["gare", "quai"]) {
        assert_eq!(vid["camera"], cam, "{r}");
        assert!(
            vid["currentTime"].as_f64().unwrap() > 0.5,
            "{cam} does not play: {r}"
        );
        assert_eq!(
            (vid["width"].as_u64(), vid["height"].as_u64()),
            (Some(640), Some(360)),
            "{r}"
        );
    }
    let shot = work.join("multi-player-valid.png");
    b.screenshot_to(&shot).await.unwrap();
    if let Ok(d) = std::env::var("VIGIE_TEST_ARTIFACTS") {
        let _ = std::fs::create_dir_all(&d);
        let _ = std::fs::copy(&shot, Path::new(&d).join("export-multi-player-valid.png"));
    }
    // The second camera's master altered: overall INVALID, that camera INVALID.
    let bad = work.join("multi-tampered");
    std::fs::create_dir_all(&bad).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), bad.join(e.file_name())).unwrap();
    }
    let f = bad.join(&names[1]);
    let mut bytes = std::fs::read(&f).unwrap();
    let at = bytes.len() - 1000;
    bytes[at] ^= 0x01;
    std::fs::write(&f, bytes).unwrap();
    let r = open_player(&b, &bad.join("player.html")).await;
    assert_eq!(r["verdict"], "invalid", "{r}");
    assert_eq!(r["cams"], json!(["valid", "invalid"]), "{r}");
    assert!(
        r["text"].as_str().unwrap().contains(names[1].as_str()),
        "{r}"
    );
    b.close().await.unwrap();
}

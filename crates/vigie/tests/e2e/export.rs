//! Evidence exports end to end, on the real binary recording a camsim camera: the job, the
//! package checked with independent tools (`sha256sum`, `ffmpeg -xerror`, `ffprobe
//! -count_frames`, `openssl pkeyutl` for the signature), `vigie verify` (valid, then a flipped
//! byte in the MP4 or in manifest.json), the legal hold, the journal and register, bad requests
//! (clear 4xx, nothing written), and `player.html` in headless Chromium from `file://`.
//!
//! Chromium refuses by default to let a `file://` page read its neighbours, so the player is
//! opened with `--allow-file-access-from-files` (real users without it get the player's file
//! picker, checked here too).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use vigie_camsim::ServerHandle;
use vigie_testkit::media::{ffmpeg_decodes, ffprobe, ffprobe_output};
use vigie_testkit::{Vigie, VigieBuilder};

const BIN: &str = env!("CARGO_BIN_EXE_vigie");

async fn camsim() -> ServerHandle {
    vigie_testkit::sim::start_baseline(&["a"]).await
}

fn config(url: &str) -> String {
    format!(
        "[[communes]]\nid = \"versailles\"\nname = \"Versailles\"\nauthorisation = \"2024/78/0123\"\n\
         [[cameras]]\nid = \"gare\"\nname = \"Gare Rive Droite — parvis\"\ncommune = \"versailles\"\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"{url}\"\n"
    )
}

pub(crate) async fn post(v: &Vigie, body: &str) -> (u16, Value) {
    let r = v
        .http()
        .post(format!("{}/api/v1/exports", v.base_url()))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// What a rejected request must not have created.
pub(crate) async fn written_state(v: &Vigie) -> (usize, usize, usize) {
    let holds = v.get("/api/v1/holds").await.unwrap().1["holds"]
        .as_array()
        .unwrap()
        .len();
    let jobs = v.get("/api/v1/exports").await.unwrap().1["exports"]
        .as_array()
        .unwrap()
        .len();
    let dirs = std::fs::read_dir(v.data_dir.join("exports"))
        .map(|d| d.count())
        .unwrap_or(0);
    (holds, jobs, dirs)
}

pub(crate) fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

pub(crate) fn unzip(zip_path: &Path, dest: &Path) {
    let mut z = zip::ZipArchive::new(std::fs::File::open(zip_path).unwrap()).unwrap();
    z.extract(dest).unwrap();
}

/// Copies a zip, flipping one byte in the middle of entry `name` (zip CRC recomputed, as a
/// forger would).
pub(crate) fn tamper(src: &Path, dst: &Path, name: &str) {
    let mut z = zip::ZipArchive::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut w = zip::ZipWriter::new(std::fs::File::create(dst).unwrap());
    let mut found = false;
    for i in 0..z.len() {
        let mut f = z.by_index(i).unwrap();
        let n = f.name().to_owned();
        let mut b = Vec::new();
        f.read_to_end(&mut b).unwrap();
        if n == name {
            let at = b.len() / 2;
            b[at] ^= 0x01;
            found = true;
        }
        w.start_file(n, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(&b).unwrap();
    }
    w.finish().unwrap();
    assert!(found, "{name} not in the package");
}

pub(crate) fn vigie_verify(v: &Vigie, package: &Path, with_config: bool) -> (bool, String) {
    let mut c = Command::new(BIN);
    c.arg("verify").arg(package);
    if with_config {
        c.arg("--config").arg(&v.config_path);
    }
    let out = c.output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn evidence_export_package_verifies_plays_and_detects_tampering() {
    let sim = camsim().await;
    let mut v = VigieBuilder::new(BIN)
        .toml(&config(&sim.url("a")))
        .start()
        .unwrap();
    let work: PathBuf = v.work_dir().to_owned();

    // ~15 s of recording.
    let (wa, wb) = (
        (Timestamp::now() - SignedDuration::from_hours(1)).to_string(),
        (Timestamp::now() + SignedDuration::from_hours(1)).to_string(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let (span_start, _) = loop {
        let spans = v.spans("gare", "main", &wa, &wb).await.unwrap();
        if let Some(&(a, b)) = spans.first()
            && b.duration_since(a).as_secs_f64() >= 14.0
        {
            break (a, b);
        }
        assert!(Instant::now() < deadline, "not enough recording: {spans:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // 6 s starting mid-GOP (GOP = 2 s) and mid-frame.
    let start = span_start + SignedDuration::from_millis(3_020);
    let end = start + SignedDuration::from_secs(6);
    let mut good = json!({
        "camera": "gare", "stream": "main",
        "start": start.to_string(), "end": end.to_string(),
        "reason": "réquisition judiciaire", "procedure": "2026/00123",
        "requester": "OPJ Martin, commissariat de Versailles",
        "ts": true,
    });
    // With GStreamer: a derived JPEG still 2.5 s into the range.
    let still_at = start + SignedDuration::from_millis(2_500);
    // and a working copy with camera name, date and time burned in.
    if cfg!(feature = "gst") {
        good["stills"] = json!([still_at.to_string()]);
        good["burn_in"] = json!(true);
    } else {
        let mut b = good.clone();
        b["stills"] = json!([still_at.to_string()]);
        let (code, resp) = post(&v, &b.to_string()).await;
        assert_eq!(code, 501, "{resp}");
        let mut b = good.clone();
        b["burn_in"] = json!(true);
        let (code, resp) = post(&v, &b.to_string()).await;
        assert_eq!(code, 501, "{resp}");
        assert!(resp.to_string().contains("gst"), "{resp}");
    }

    // Bad requests: clear 4xx, no job, no hold, no file.
    let before = written_state(&v).await;
    let future = Timestamp::now() + SignedDuration::from_hours(1);
    let with = |k: &str, val: Value| {
        let mut b = good.clone();
        b[k] = val;
        b.to_string()
    };
    let mut no_procedure = good.clone();
    no_procedure.as_object_mut().unwrap().remove("procedure");
    for (body, status, needle) in [
        (no_procedure.to_string(), 400, "procedure"),
        (with("procedure", json!("  ")), 400, "procedure"),
        (with("requester", json!("")), 400, "requester"),
        (with("end", json!(start.to_string())), 400, "after"),
        (
            with("end", json!((start - SignedDuration::from_secs(5)).to_string())),
            400,
            "after",
        ),
        (
            json!({"camera": "gare", "stream": "main", "start": future.to_string(),
                   "end": (future + SignedDuration::from_secs(6)).to_string(),
                   "reason": "r", "procedure": "p", "requester": "q"})
            .to_string(),
            400,
            "future",
        ),
        (with("camera", json!("nope")), 404, "nope"),
        (with("stream", json!("sub")), 404, "sub"),
        (with("start", json!("yesterday")), 400, "start"),
        (
            with("stills", json!([(end + SignedDuration::from_secs(1)).to_string()])),
            400,
            "outside",
        ),
        (
            json!({"camera": "gare", "stream": "main", "start": "2020-01-01T00:00:00Z",
                   "end": "2020-01-01T00:00:06Z", "reason": "r", "procedure": "p", "requester": "q"})
            .to_string(),
            404,
            "no recording",
        ),
        ("{\"camera\": \"gare\", ".to_owned(), 400, ""),
        ("not json at all".to_owned(), 400, ""),
    ] {
        let (code, resp) = post(&v, &body).await;
        assert_eq!(code, status, "{body}: {resp}");
        let msg = resp["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}: not a JSON error: {resp}"));
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    assert_eq!(
        written_state(&v).await,
        before,
        "a rejected export wrote something"
    );

    // The export: 202, then the job runs to completion with progress.
    let (code, job) = post(&v, &good.to_string()).await;
    assert_eq!(code, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    assert!(["queued", "running", "done"].contains(&job["status"].as_str().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let (code, j) = v.get(&format!("/api/v1/exports/{id}")).await.unwrap();
        assert_eq!(code, 200, "{j}");
        let p = j["progress"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p), "{j}");
        match j["status"].as_str().unwrap() {
            "done" => break j,
            "failed" => panic!("export failed: {j}"),
            _ => {}
        }
        // Not downloadable before it is done.
        let (c, _) = v
            .get(&format!("/api/v1/exports/{id}/package"))
            .await
            .unwrap();
        assert!(c == 409 || c == 200, "{c}");
        assert!(Instant::now() < deadline, "export not done: {j}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(job["progress"], 1.0, "{job}");
    let mp4_sha = job["sha256"].as_str().unwrap().to_owned();
    let list = v.get("/api/v1/exports").await.unwrap().1;
    assert!(
        list["exports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == id.as_str() && e["sha256"] == mp4_sha.as_str()),
        "{list}"
    );

    // Download.
    let r = v
        .http()
        .get(format!("{}/api/v1/exports/{id}/package", v.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/zip");
    let body = r.bytes().await.unwrap();
    let pkg = work.join("package.zip");
    std::fs::write(&pkg, &body).unwrap();
    assert_eq!(
        sha256sum(&pkg),
        job["package"]["sha256"].as_str().unwrap(),
        "package hash"
    );

    // vigie verify: VALID, with and without the installation's key.
    let (ok, out) = vigie_verify(&v, &pkg, true);
    assert!(ok, "{out}");
    assert!(out.contains("VALID") && !out.contains("INVALID"), "{out}");
    assert!(out.contains("installation key"), "{out}");
    let (ok, out) = vigie_verify(&v, &pkg, false);
    assert!(ok, "{out}");

    // Unzipped: the MP4 checked with independent tools.
    let dir = work.join("unzipped");
    unzip(&pkg, &dir);
    let manifest_bytes = std::fs::read(dir.join("manifest.json")).unwrap();
    let m: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let mp4_name = m["video"]["file"].as_str().unwrap().to_owned();
    let mp4 = dir.join(&mp4_name);
    let master = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["role"] == "master")
        .unwrap();
    assert_eq!(master["name"], mp4_name.as_str());
    assert_eq!(sha256sum(&mp4), master["sha256"].as_str().unwrap());
    assert_eq!(sha256sum(&mp4), mp4_sha);
    assert_eq!(
        std::fs::metadata(&mp4).unwrap().len(),
        master["bytes"].as_u64().unwrap()
    );
    ffmpeg_decodes(&mp4).unwrap();
    let probe = ffprobe(&mp4).unwrap();
    assert!(
        probe.frames.abs_diff(150) <= 1,
        "{} frames, want 6 s × 25 fps ± 1",
        probe.frames
    );
    assert_eq!(m["video"]["frames"].as_u64(), Some(probe.frames), "{m}");
    assert_eq!((probe.width, probe.height), (640, 360));
    assert!((probe.duration_s - 6.0).abs() < 0.05, "{probe:?}");
    // The manifest says what police need.
    assert_eq!(m["procedure"], "2026/00123");
    assert_eq!(m["requester"], "OPJ Martin, commissariat de Versailles");
    assert_eq!(m["operator"], vigie_testkit::process::ADMIN_USER);
    assert_eq!(m["camera"]["name"], "Gare Rive Droite — parvis");
    assert_eq!(m["camera"]["commune"]["authorisation"], "2024/78/0123");
    let utc: Timestamp = m["requested"]["start"]["utc"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(utc, start, "{m}");
    let local = m["requested"]["start"]["local"].as_str().unwrap();
    assert!(
        local.ends_with("+01:00") || local.ends_with("+02:00"),
        "{local}"
    );
    assert_eq!(m["gaps"].as_array().unwrap().len(), 0, "{m}");
    assert!(
        m["video"]["codec"].as_str().unwrap().starts_with("avc1."),
        "{m}"
    );
    assert_eq!(m["timezone"], "Europe/Paris");
    // ts: the wall-clock subtitle track is there.
    assert_eq!(m["video"]["timestamp_track"], true, "{m}");
    let types = ffprobe_output(
        &mp4,
        &["-show_entries", "stream=codec_type", "-of", "csv=p=0"],
    )
    .unwrap();
    assert!(types.contains("subtitle"), "{types}");
    // The derived still: a JPEG of the recorded picture, carrying the master's hash.
    if cfg!(feature = "gst") {
        let d: Vec<&Value> = m["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["role"] == "derived")
            .collect();
        assert_eq!(d.len(), 2, "a still and the burned-in copy: {m}");
        let still = d
            .iter()
            .find(|f| f["name"].as_str().unwrap().ends_with(".jpg"))
            .unwrap_or_else(|| panic!("no still: {m}"));
        let name = still["name"].as_str().unwrap();
        assert!(
            name.starts_with("derive-still-01-") && name.ends_with(".jpg"),
            "{name}"
        );
        assert_eq!(still["derived_from_sha256"], mp4_sha.as_str());
        let p = ffprobe(&dir.join(name)).unwrap();
        assert_eq!(
            (p.codec.as_str(), p.width, p.height),
            ("mjpeg", 640, 360),
            "{p:?}"
        );
        assert_eq!(
            sha256sum(&dir.join(name)),
            still["sha256"].as_str().unwrap()
        );
        // The burned-in working copy: decodes cleanly, same pictures as the master.
        let burn = d
            .iter()
            .find(|f| f["name"].as_str().unwrap().ends_with(".mp4"))
            .unwrap_or_else(|| panic!("no burned-in copy: {m}"));
        let name = burn["name"].as_str().unwrap();
        assert!(name.starts_with("derive-burnin-"), "{name}");
        assert_eq!(burn["derived_from_sha256"], mp4_sha.as_str());
        assert_eq!(sha256sum(&dir.join(name)), burn["sha256"].as_str().unwrap());
        ffmpeg_decodes(&dir.join(name)).unwrap();
        let p = ffprobe(&dir.join(name)).unwrap();
        assert_eq!(
            (p.codec.as_str(), p.width, p.height),
            ("h264", 640, 360),
            "{p:?}"
        );
        if let Ok(d) = std::env::var("VIGIE_TEST_ARTIFACTS") {
            let _ = std::fs::create_dir_all(&d);
            let _ = std::fs::copy(dir.join(name), Path::new(&d).join("export-burnin.mp4"));
            let _ = std::fs::copy(&mp4, Path::new(&d).join("export-master.mp4"));
            let _ = Command::new("ffmpeg")
                .args(["-v", "error", "-y", "-ss", "2", "-i"])
                .arg(dir.join(name))
                .args(["-frames:v", "1"])
                .arg(Path::new(&d).join("export-burnin-frame.png"))
                .status();
        }
        assert!(
            p.frames.abs_diff(probe.frames) <= 1,
            "burned-in copy: {} frames, master {}",
            p.frames,
            probe.frames
        );
    }
    // sha256sum -c over every file, player.html included.
    let out = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The signature checks with OpenSSL, as LISEZ-MOI.txt explains.
    let sig = Command::new("base64")
        .args(["-d", "manifest.sig"])
        .current_dir(&dir)
        .output()
        .unwrap();
    std::fs::write(dir.join("manifest.sig.bin"), &sig.stdout).unwrap();
    let out = Command::new("openssl")
        .args([
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            "signing-key.pub",
            "-rawin",
            "-in",
            "manifest.json",
            "-sigfile",
            "manifest.sig.bin",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("Verified Successfully"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(dir.join("manifest.sig.bin")).unwrap();
    // The key is the installation's, as published.
    let key = v.get("/api/v1/signing-key").await.unwrap().1;
    let hex = key["public_key_hex"].as_str().unwrap();
    assert_eq!(m["signature"]["public_key_hex"], hex);
    let (ok, shown) = v.command(&["key", "show"]).unwrap();
    assert!(ok && shown.contains(hex), "{shown}");
    assert!(
        key["public_key_pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN PUBLIC KEY")
    );

    // The range is under legal hold.
    let holds = v.get("/api/v1/holds").await.unwrap().1;
    let hold = holds["holds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["procedure"] == "2026/00123")
        .unwrap_or_else(|| panic!("no hold: {holds}"));
    assert_eq!(hold["active"], true);
    assert_eq!(hold["camera"], "gare");
    let (hs, he): (Timestamp, Timestamp) = (
        hold["start"].as_str().unwrap().parse().unwrap(),
        hold["end"].as_str().unwrap().parse().unwrap(),
    );
    assert!(hs <= start && he >= end, "{hold}");

    // Tampering: one byte of the MP4, then of the manifest.
    let bad = work.join("bad-mp4.zip");
    tamper(&pkg, &bad, &mp4_name);
    let (ok, out) = vigie_verify(&v, &bad, true);
    assert!(!ok, "{out}");
    assert!(out.contains("INVALID") && out.contains(&mp4_name), "{out}");
    let bad = work.join("bad-manifest.zip");
    tamper(&pkg, &bad, "manifest.json");
    let (ok, out) = vigie_verify(&v, &bad, false);
    assert!(!ok, "{out}");
    assert!(
        out.contains("INVALID") && out.contains("signature"),
        "{out}"
    );

    // The journal: export created (with the hash the register prints) and downloaded.
    let entries = |action: &'static str| {
        let v = &v;
        async move {
            let (code, body) = v
                .get(&format!("/api/v1/audit?action={action}"))
                .await
                .unwrap();
            assert_eq!(code, 200, "{body}");
            body["entries"].as_array().unwrap().clone()
        }
    };
    for action in ["export-create", "export-download"] {
        let e = entries(action).await;
        let e = e
            .iter()
            .find(|e| e["details"]["export_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no {action} entry: {e:?}"));
        assert_eq!(e["procedure"], "2026/00123", "{e}");
        assert_eq!(e["reason"], "réquisition judiciaire", "{e}");
        assert_eq!(e["camera"], "gare", "{e}");
        assert_eq!(
            e["details"]["requester"], "OPJ Martin, commissariat de Versailles",
            "{e}"
        );
        assert_eq!(e["details"]["sha256"], mp4_sha.as_str(), "{e}");
    }
    let (_, register) = v.get_text("/api/v1/register.csv").await.unwrap();
    assert!(
        register
            .lines()
            .any(|l| l.starts_with("extraction,") && l.contains(&mp4_sha)),
        "{register}"
    );

    // player.html in headless Chromium, from file://.
    player_in_chromium(&dir, &mp4_name, &work).await;

    // The job survives a restart.
    v.stop().unwrap();
    v.spawn().unwrap();
    let (code, j) = v.get(&format!("/api/v1/exports/{id}")).await.unwrap();
    assert_eq!((code, j["status"].as_str()), (200, Some("done")), "{j}");
    let key2 = v.get("/api/v1/signing-key").await.unwrap().1;
    assert_eq!(
        key2["public_key_hex"], hex,
        "the key must survive a restart"
    );
    v.stop().unwrap();
    sim.shutdown().await;
}

/// Opens player.html and waits for its verdict; returns (verdict state, video state).
pub(crate) async fn open_player(b: &vigie_testkit::browser::Browser, page: &Path) -> Value {
    b.goto(&format!("file://{}", page.display())).await.unwrap();
    b.execute_async(
        r#"const done = arguments[0];
           const t0 = Date.now();
           const poll = () => {
             const st = document.getElementById('verdict').dataset.state;
             const v = document.getElementById('video');
             const settled = st !== 'pending';
             if ((settled && v.readyState >= 3 && v.currentTime > 0.5) || Date.now() - t0 > 20000) {
               done({verdict: st, text: document.getElementById('verdict').innerText,
                     signature: document.getElementById('signature').dataset.state || '',
                     readyState: v.readyState, currentTime: v.currentTime, paused: v.paused,
                     width: v.videoWidth, height: v.videoHeight,
                     error: v.error ? String(v.error.message || v.error.code) : null});
             } else setTimeout(poll, 200);
           };
           poll();"#,
        vec![],
    )
    .await
    .unwrap()
}

async fn player_in_chromium(dir: &Path, mp4_name: &str, work: &Path) {
    use vigie_testkit::browser::Browser;
    let b = Browser::start_with_args(&["--allow-file-access-from-files"])
        .await
        .unwrap();
    b.set_script_timeout(Duration::from_secs(30)).await.unwrap();
    let r = open_player(&b, &dir.join("player.html")).await;
    assert_eq!(r["verdict"], "valid", "{r}");
    assert!(r["text"].as_str().unwrap().contains("VALIDE"), "{r}");
    assert!(r["readyState"].as_u64().unwrap() >= 3, "{r}");
    assert!(
        r["currentTime"].as_f64().unwrap() > 0.5,
        "video does not play: {r}"
    );
    assert_eq!(
        (r["width"].as_u64(), r["height"].as_u64()),
        (Some(640), Some(360)),
        "{r}"
    );
    assert_eq!(r["signature"], "valid", "{r}");
    let shot = work.join("player-valid.png");
    b.screenshot_to(&shot).await.unwrap();
    if let Ok(d) = std::env::var("VIGIE_TEST_ARTIFACTS") {
        let _ = std::fs::create_dir_all(&d);
        let _ = std::fs::copy(&shot, Path::new(&d).join("export-player-valid.png"));
    }

    // A copy whose MP4 has one byte flipped: INVALID.
    let bad = work.join("tampered");
    std::fs::create_dir_all(&bad).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), bad.join(e.file_name())).unwrap();
    }
    let f = bad.join(mp4_name);
    let mut bytes = std::fs::read(&f).unwrap();
    let at = bytes.len() - 1000;
    bytes[at] ^= 0x01;
    std::fs::write(&f, bytes).unwrap();
    let r = open_player(&b, &bad.join("player.html")).await;
    assert_eq!(r["verdict"], "invalid", "{r}");
    assert!(r["text"].as_str().unwrap().contains("INVALIDE"), "{r}");
    let shot = work.join("player-invalid.png");
    b.screenshot_to(&shot).await.unwrap();
    if let Ok(d) = std::env::var("VIGIE_TEST_ARTIFACTS") {
        let _ = std::fs::copy(&shot, Path::new(&d).join("export-player-invalid.png"));
    }
    b.close().await.unwrap();

    // Without the flag (a real user's browser), the player asks for the file instead.
    let b = Browser::start().await.unwrap();
    b.set_script_timeout(Duration::from_secs(30)).await.unwrap();
    b.goto(&format!("file://{}", dir.join("player.html").display()))
        .await
        .unwrap();
    let r = b
        .execute_async(
            r#"const done = arguments[0]; const t0 = Date.now();
               const poll = () => {
                 const st = document.getElementById('verdict').dataset.state;
                 if (st !== 'pending' || Date.now() - t0 > 15000)
                   done({verdict: st, picker: getComputedStyle(document.getElementById('picker')).display});
                 else setTimeout(poll, 200);
               };
               poll();"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(r["verdict"], "need-file", "{r}");
    assert_eq!(r["picker"], "block", "{r}");
    b.close().await.unwrap();
}

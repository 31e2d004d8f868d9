//! Privacy masks end to end (CSI L251-3; feature `gst`): the real binary pushes a camera's
//! configured masks to camsim's ONVIF Media2 service (camsim reports exactly those polygons),
//! `/api/v1/cameras` shows them confirmed; a still and a burned-in copy, decoded by ffmpeg, have
//! the masked zones black and the rest of the picture not; the recorded master keeps the
//! camera's picture (what the camera-side mask protects); cameras whose masks cannot be
//! confirmed (no Media2, no ONVIF, malformed answers, refused credentials) are flagged (API and
//! cameras page) and confirmed once the camera
//! offers Media2 again; a change of masks is journaled (once) and listed in the register.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use vigie_camsim::OnvifFault;
use vigie_testkit::{Vigie, VigieBuilder};

use crate::onvif::{onvif_camera, onvif_camera_toml};

const BIN: &str = env!("CARGO_BIN_EXE_vigie");
const COMMUNE: &str = "[[communes]]\nid = \"test\"\nname = \"Test\"\n";
const PASS: &str = "Dome-pw-7431";
const W: usize = 1280;
const H: usize = 720;

/// "porte 12" (a quadrilateral) and "fenêtre" (a triangle), in picture fractions.
const DOOR: [[f64; 2]; 4] = [[0.1, 0.1], [0.45, 0.1], [0.45, 0.6], [0.1, 0.6]];
const WINDOW: [[f64; 2]; 3] = [[0.6, 0.5], [0.95, 0.5], [0.95, 0.95]];
/// Boxes inside the masks (a few pixels in from the edges), and one outside both.
const IN_DOOR: (f64, f64, f64, f64) = (0.12, 0.12, 0.43, 0.58);
const IN_WINDOW: (f64, f64, f64, f64) = (0.86, 0.75, 0.94, 0.8);
const OUTSIDE: (f64, f64, f64, f64) = (0.0, 0.65, 0.55, 1.0);

fn masks_toml(masks: &[(&str, &[[f64; 2]])]) -> String {
    masks
        .iter()
        .map(|(name, pts)| {
            let p: Vec<String> = pts.iter().map(|[x, y]| format!("[{x},{y}]")).collect();
            format!(
                "  [[cameras.masks]]\n  name = \"{name}\"\n  points = [{}]\n",
                p.join(",")
            )
        })
        .collect()
}

/// 8-bit grey of one picture of `input` (an image, or the frame `ss` seconds into a video),
/// decoded by ffmpeg.
fn grey(input: &Path, ss: Option<f64>) -> Vec<u8> {
    let mut c = Command::new("ffmpeg");
    c.args(["-nostdin", "-v", "error"]);
    if let Some(ss) = ss {
        c.args(["-ss", &ss.to_string()]);
    }
    let out = c
        .arg("-i")
        .arg(input)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), W * H, "not a {W}×{H} picture");
    out.stdout
}

fn mean(g: &[u8], (x0, y0, x1, y1): (f64, f64, f64, f64)) -> f64 {
    let (xa, xb) = ((x0 * W as f64) as usize, (x1 * W as f64) as usize);
    let (ya, yb) = ((y0 * H as f64) as usize, (y1 * H as f64) as usize);
    let mut sum = 0u64;
    for y in ya..yb {
        for x in xa..xb {
            sum += u64::from(g[y * W + x]);
        }
    }
    sum as f64 / ((xb - xa) * (yb - ya)) as f64
}

/// The brightest pixel of a box (a single unmasked pixel shows here).
fn max(g: &[u8], (x0, y0, x1, y1): (f64, f64, f64, f64)) -> u8 {
    let (xa, xb) = ((x0 * W as f64) as usize, (x1 * W as f64) as usize);
    let (ya, yb) = ((y0 * H as f64) as usize, (y1 * H as f64) as usize);
    (ya..yb)
        .flat_map(|y| (xa..xb).map(move |x| g[y * W + x]))
        .max()
        .unwrap_or(0)
}

/// Masked zones black (codec noise allowed), the rest of the picture not.
fn assert_masked(what: &str, g: &[u8]) {
    for zone in [IN_DOOR, IN_WINDOW] {
        let (m, x) = (mean(g, zone), max(g, zone));
        assert!(
            m < 20.0 && x < 48,
            "{what}: zone {zone:?} not black: mean {m:.1}, max {x}"
        );
    }
    let m = mean(g, OUTSIDE);
    assert!(
        m > 60.0,
        "{what}: the unmasked picture is dark too: mean {m:.1}"
    );
}

async fn camera(v: &Vigie, id: &str) -> Value {
    let (code, body) = v.get("/api/v1/cameras").await.unwrap();
    assert_eq!(code, 200, "{body}");
    body["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no camera {id}: {body}"))
        .clone()
}

/// Waits until `/api/v1/cameras` shows `id`'s masks with `confirmed_on_camera == want`.
async fn wait_masks(v: &Vigie, id: &str, want: bool, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let c = camera(v, id).await;
        if c["masks"]["confirmed_on_camera"] == json!(want) {
            return c["masks"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "{id}: masks not confirmed={want}: {}\n{}",
            c["masks"],
            v.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn journal(v: &Vigie, query: &str) -> Vec<Value> {
    let (code, body) = v.get(&format!("/api/v1/audit?{query}")).await.unwrap();
    assert_eq!(code, 200, "{body}");
    body["entries"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn masks_are_pushed_to_the_camera_and_painted_on_stills_and_burned_in_copies() {
    let cam = onvif_camera("dome").await;
    let masks = masks_toml(&[("porte 12", &DOOR), ("fenêtre", &WINDOW)]);
    let mut v = VigieBuilder::new(BIN)
        .toml(COMMUNE)
        .toml(&(onvif_camera_toml("dome", &cam.onvif.device_url(), PASS) + &masks))
        .start()
        .unwrap();

    // Pushed through Media2 and read back: confirmed, and camsim holds exactly these polygons
    // (ONVIF space: x = 2·fx − 1, y = 1 − 2·fy).
    let m = wait_masks(&v, "dome", true, Duration::from_secs(30)).await;
    assert_eq!(m["configured"], 2, "{m}");
    assert_eq!(m["names"], json!(["porte 12", "fenêtre"]), "{m}");
    assert_eq!(m["unconfirmed"], false, "{m}");
    assert_eq!(m["last_error"], Value::Null, "{m}");
    let held = cam.onvif.masks();
    assert_eq!(held.len(), 2, "{held:?}");
    for (want, got) in [&DOOR[..], &WINDOW[..]].iter().zip(&held) {
        assert_eq!(got.configuration_token, "vsc0");
        assert_eq!(got.mask_type, "Color");
        assert!(got.enabled);
        assert_eq!(got.points.len(), want.len(), "{got:?}");
        for ([fx, fy], (x, y)) in want.iter().zip(&got.points) {
            assert!((x - (2.0 * fx - 1.0)).abs() < 1e-5, "{got:?}");
            assert!((y - (1.0 - 2.0 * fy)).abs() < 1e-5, "{got:?}");
        }
    }
    // And camsim's own control API says the same.
    let ctl: Value = reqwest::get(format!("{}/control/masks", cam.onvif.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ctl["masks"].as_array().unwrap().len(), 2, "{ctl}");

    // A still (latest picture): masked zones black.
    let deadline = Instant::now() + Duration::from_secs(60);
    let jpeg = loop {
        let r = v
            .http()
            .get(format!(
                "{}/api/v1/cameras/dome/streams/main/snapshot.jpg",
                v.base_url()
            ))
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 200 {
            break r.bytes().await.unwrap().to_vec();
        }
        assert!(Instant::now() < deadline, "no still: {}", r.status());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let still = v.work_dir().join("still.jpg");
    std::fs::write(&still, &jpeg).unwrap();
    assert_masked("still", &grey(&still, None));

    // Enough recording for an export of 4 s.
    let (wa, wb) = (
        (Timestamp::now() - SignedDuration::from_hours(1)).to_string(),
        (Timestamp::now() + SignedDuration::from_hours(1)).to_string(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let span_start = loop {
        let spans = v.spans("dome", "main", &wa, &wb).await.unwrap();
        if let Some(&(a, b)) = spans.first()
            && b.duration_since(a).as_secs_f64() >= 6.0
        {
            break a;
        }
        assert!(Instant::now() < deadline, "not enough recording: {spans:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let start = span_start + SignedDuration::from_millis(1_000);
    let end = start + SignedDuration::from_secs(4);
    let body = json!({
        "camera": "dome", "stream": "main",
        "start": start.to_string(), "end": end.to_string(),
        "reason": "réquisition", "procedure": "2026/00777", "requester": "OPJ Durand",
        "stills": [(start + SignedDuration::from_millis(1_500)).to_string()],
        "burn_in": true,
    });
    let (code, job) = crate::export::post(&v, &body.to_string()).await;
    assert_eq!(code, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, j) = v.get(&format!("/api/v1/exports/{id}")).await.unwrap();
        match j["status"].as_str().unwrap() {
            "done" => break,
            "failed" => panic!("export failed: {j}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "export not done: {j}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let r = v
        .http()
        .get(format!("{}/api/v1/exports/{id}/package", v.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let pkg = v.work_dir().join("masked.zip");
    std::fs::write(&pkg, r.bytes().await.unwrap()).unwrap();
    let dir = v.work_dir().join("masked");
    crate::export::unzip(&pkg, &dir);
    let m: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let name = |suffix: &str, prefix: &str| -> String {
        m["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_owned())
            .find(|n| n.starts_with(prefix) && n.ends_with(suffix))
            .unwrap_or_else(|| panic!("no {prefix}…{suffix}: {m}"))
    };
    // The burned-in copy, at 1 s and 3 s, and the derived still: masked.
    let burnin = dir.join(name(".mp4", "derive-burnin-"));
    for ss in [1.0, 3.0] {
        assert_masked(
            &format!("burned-in copy at {ss} s"),
            &grey(&burnin, Some(ss)),
        );
    }
    assert_masked(
        "derived still",
        &grey(&dir.join(name(".jpg", "derive-still-")), None),
    );
    // The master is the camera's picture, untouched (the camera-side mask protects it; camsim's
    // masks do not alter its pre-encoded picture): its zones are not black.
    let master = dir.join(m["video"]["file"].as_str().unwrap());
    let g = grey(&master, Some(1.0));
    assert!(mean(&g, IN_DOOR) > 60.0, "master zone black?");

    // Journaled once at first start (from none), listed in the register with the current set.
    let e = journal(&v, "action=masks-changed").await;
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0]["camera"], "dome");
    assert_eq!(e[0]["actor"], "system");
    assert_eq!(e[0]["details"]["count"], 2);
    assert_eq!(e[0]["details"]["names"], json!(["porte 12", "fenêtre"]));
    assert_eq!(e[0]["details"]["hash"], m_hash(&v).await);
    assert_eq!(e[0]["details"]["previous_hash"], Value::Null);
    let (_, csv) = v.get_text("/api/v1/register.csv").await.unwrap();
    let row = csv
        .lines()
        .find(|l| l.starts_with("privacy-masks,dome,,test"))
        .unwrap_or_else(|| panic!("no privacy-masks row: {csv}"));
    assert!(
        row.contains("2 mask(s): porte 12 | fenêtre") && row.contains("confirmed on camera: yes"),
        "{row}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with("privacy-masks-changed,dome,")),
        "{csv}"
    );

    // A restart with the same masks journals nothing; with one more mask, one change.
    v.stop().unwrap();
    v.spawn().unwrap();
    assert_eq!(journal(&v, "action=masks-changed").await.len(), 1);
    let first_hash = m_hash(&v).await;
    v.stop().unwrap();
    let cfg = std::fs::read_to_string(&v.config_path).unwrap();
    std::fs::write(
        &v.config_path,
        cfg + &masks_toml(&[("balcon", &[[0.6, 0.05], [0.9, 0.05], [0.9, 0.3]])]),
    )
    .unwrap();
    v.spawn().unwrap();
    let e = journal(&v, "action=masks-changed").await;
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[1]["details"]["count"], 3);
    assert_eq!(e[1]["details"]["previous_hash"], first_hash);
    assert_eq!(e[1]["details"]["previous_count"], 2);
    // Vigie makes the camera hold the new set (it deleted what differed, pushed the three).
    wait_masks(&v, "dome", true, Duration::from_secs(30)).await;
    assert_eq!(cam.onvif.masks().len(), 3);
    assert!(!v.log().contains(PASS), "password in the log");
}

async fn m_hash(v: &Vigie) -> Value {
    camera(v, "dome").await["masks"]["hash"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn cameras_whose_masks_cannot_be_confirmed_are_flagged() {
    let old = onvif_camera("old").await;
    old.onvif.set_media2(false);
    let broken = onvif_camera("broken").await;
    broken.onvif.set_fault(OnvifFault::Malformed);
    let refusing = onvif_camera("refusing").await;
    let plain = vigie_testkit::sim::start_baseline(&["plain"]).await;
    let door = masks_toml(&[("porte 12", &DOOR)]);
    let v = VigieBuilder::new(BIN)
        .toml(COMMUNE)
        .toml(&(onvif_camera_toml("old", &old.onvif.device_url(), PASS) + &door))
        .toml(&(onvif_camera_toml("broken", &broken.onvif.device_url(), PASS) + &door))
        .toml(
            &(onvif_camera_toml("refusing", &refusing.onvif.device_url(), "Wrong-pw-9120")
                + &door),
        )
        .toml(&format!(
            "[[cameras]]\nid = \"plain\"\nname = \"Plain\"\ncommune = \"test\"\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"{}\"\n{door}",
            plain.url("plain")
        ))
        .start()
        .unwrap();
    let m = wait_masks(&v, "old", false, Duration::from_secs(30)).await;
    assert_eq!(m["unconfirmed"], true, "{m}");
    assert_eq!(m["applied_by_vigie"], true, "{m}");
    let err = m["last_error"].as_str().unwrap();
    assert!(err.contains("does not offer the Media2 service"), "{err}");
    let m = wait_masks(&v, "plain", false, Duration::from_secs(30)).await;
    assert!(
        m["last_error"]
            .as_str()
            .unwrap()
            .contains("no ONVIF device"),
        "{m}"
    );
    let m = wait_masks(&v, "broken", false, Duration::from_secs(30)).await;
    let err = m["last_error"].as_str().unwrap();
    assert!(err.contains("malformed answer"), "{err}");
    let m = wait_masks(&v, "refusing", false, Duration::from_secs(30)).await;
    let err = m["last_error"].as_str().unwrap();
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(
        !err.contains("Wrong-pw-9120") && !err.contains(PASS),
        "{err}"
    );
    assert!(refusing.onvif.masks().is_empty());
    // The cameras page says it plainly (Chromium).
    let b = vigie_testkit::browser::Browser::start().await.unwrap();
    // (`goto` logs in on `/` first; a query makes this a new document, not a hash change of
    // the login page.)
    b.goto(&format!("{}/?masks#/cameras", v.base_url()))
        .await
        .unwrap();
    let state_of = |cam: &'static str| {
        let b = &b;
        async move {
            b.eval(
                "const [c] = arguments; const e = document.querySelector(`.card[data-camera='${c}'] .masks`);
                 return e ? [e.dataset.masks, e.textContent] : null",
                vec![json!(cam)],
            )
            .await
            .unwrap()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    for cam in ["old", "plain"] {
        loop {
            let st = state_of(cam).await;
            if st[0] == "unconfirmed" {
                assert!(
                    st[1].as_str().unwrap().contains("non confirmé"),
                    "{cam}: {st}"
                );
                break;
            }
            if Instant::now() > deadline {
                let page = b
                    .eval(
                        "return location.href + ' ' + document.body.innerHTML.slice(0, 4000)",
                        vec![],
                    )
                    .await
                    .unwrap();
                panic!("{cam}: no unconfirmed flag in the UI: {st}\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // The camera that gains Media2 (a firmware update, say) is confirmed at the next retry.
    assert!(old.onvif.masks().is_empty());
    old.onvif.set_media2(true);
    wait_masks(&v, "old", true, Duration::from_secs(45)).await;
    assert_eq!(old.onvif.masks().len(), 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while state_of("old").await[0] != "confirmed" {
        assert!(
            Instant::now() < deadline,
            "old: not shown confirmed in the UI"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        !v.log().contains(PASS) && !v.log().contains("Wrong-pw-9120"),
        "password in the log"
    );
}

//! ONVIF cameras end to end: the real binary against camsim's simulated ONVIF device — stream
//! URLs from media profiles (recorded), ONVIF failures (refused digest, malformed SOAP) as a
//! clear `last_error`, `vigie camera probe` and `vigie camera discover`.

use std::time::Duration;

use vigie_camsim::{
    Auth, Fixture, MountConfig, OnvifConfig, OnvifFault, OnvifHandle, OnvifProfile, OnvifServer,
    ServerHandle,
};
use vigie_testkit::VigieBuilder;

const BIN: &str = env!("CARGO_BIN_EXE_vigie");
const COMMUNE: &str = "[[communes]]\nid = \"test\"\nname = \"Test\"\n";
const USER: &str = "onvif-op";
const PASS: &str = "Dome-pw-7431";

pub struct OnvifCam {
    pub rtsp: ServerHandle,
    pub onvif: OnvifHandle,
}

/// camsim with two RTSP mounts (`<name>/main` 720p, `<name>/sub` 360p, both behind the same
/// digest credentials as the ONVIF side) and an ONVIF device whose profiles point at them.
pub async fn onvif_camera(name: &str) -> OnvifCam {
    let main = Fixture::embedded("h264-main-1280x720-15fps-gop30.h264").unwrap();
    let sub = Fixture::embedded("h264-baseline-640x360-25fps-gop50.h264").unwrap();
    let auth = Auth::digest(USER, PASS);
    let rtsp = vigie_testkit::sim::start(vec![
        MountConfig::new(format!("{name}/main"), main).with_auth(auth.clone()),
        MountConfig::new(format!("{name}/sub"), sub).with_auth(auth),
    ])
    .await;
    let onvif = OnvifServer::start(
        "127.0.0.1:0".parse().unwrap(),
        OnvifConfig {
            auth: Some((USER.into(), PASS.into())),
            profiles: vec![
                OnvifProfile::for_mount("main", &rtsp, &format!("{name}/main")).unwrap(),
                OnvifProfile::for_mount("sub", &rtsp, &format!("{name}/sub")).unwrap(),
            ],
            ptz: true,
            discovery: Some("127.0.0.1:0".parse().unwrap()),
            recordings: Vec::new(),
        },
    )
    .await
    .unwrap();
    OnvifCam { rtsp, onvif }
}

/// Like [`onvif_camera`], but a dome whose picture follows its pan (both mounts serve camsim's
/// PTZ fixture: blue to the left, red to the right).
pub async fn onvif_ptz_camera(name: &str) -> OnvifCam {
    let dome = Fixture::embedded("h264-ptz-pan5-640x360-25fps-gop50.h264").unwrap();
    let auth = Auth::digest(USER, PASS);
    let rtsp = vigie_testkit::sim::start(vec![
        MountConfig::new(format!("{name}/main"), dome.clone()).with_auth(auth.clone()),
        MountConfig::new(format!("{name}/sub"), dome).with_auth(auth),
    ])
    .await;
    let onvif = OnvifServer::start(
        "127.0.0.1:0".parse().unwrap(),
        OnvifConfig {
            auth: Some((USER.into(), PASS.into())),
            profiles: vec![
                OnvifProfile::for_mount("main", &rtsp, &format!("{name}/main")).unwrap(),
                OnvifProfile::for_mount("sub", &rtsp, &format!("{name}/sub")).unwrap(),
            ],
            ptz: true,
            ..OnvifConfig::default()
        },
    )
    .await
    .unwrap();
    for stream in ["main", "sub"] {
        let mount = rtsp.mount(&format!("{name}/{stream}")).unwrap();
        onvif.attach_ptz_view(vigie_camsim::PtzView::embedded(mount));
    }
    OnvifCam { rtsp, onvif }
}

/// A camera whose streams come from its ONVIF profiles (no `url`).
pub fn onvif_camera_toml(id: &str, device_url: &str, password: &str) -> String {
    format!(
        "[[cameras]]\nid = \"{id}\"\nname = \"Dome {id}\"\ncommune = \"test\"\nonvif = \"{device_url}\"\nusername = \"{USER}\"\npassword = \"{password}\"\n  [[cameras.streams]]\n  name = \"main\"\n  connect_timeout_s = 3\n  stall_timeout_s = 5\n  [[cameras.streams]]\n  name = \"sub\"\n  connect_timeout_s = 3\n  stall_timeout_s = 5\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn onvif_stream_urls_come_from_the_profiles_and_record() {
    let cam = onvif_camera("dome").await;
    let v = VigieBuilder::new(BIN)
        .toml(COMMUNE)
        .toml(&onvif_camera_toml("dome", &cam.onvif.device_url(), PASS))
        .start()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for stream in ["main", "sub"] {
        loop {
            let st = v.stream_status("dome", stream).await.unwrap();
            if st["online"] == true && st["frames_total"].as_u64().unwrap_or(0) > 0 {
                let res = (st["width"].as_u64(), st["height"].as_u64());
                let want = if stream == "main" {
                    (Some(1280), Some(720))
                } else {
                    (Some(640), Some(360))
                };
                assert_eq!(res, want, "{stream}: {st}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{stream} not recording: {st}\n{}",
                v.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // The status shows the URL the camera gave (the profile's stream URI).
    let st = v.stream_status("dome", "sub").await.unwrap();
    assert_eq!(st["url"], cam.rtsp.url("dome/sub"), "{st}");
    // The RTSP sessions used the camera's credentials (the mounts demand them).
    assert!(cam.rtsp.mount("dome/main").unwrap().stats().sessions_total >= 1);
    assert!(cam.onvif.stats().requests >= 4);
    assert!(!v.log().contains(PASS), "password in the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn onvif_refusals_and_malformed_answers_are_a_clear_last_error() {
    let refusing = onvif_camera("refusing").await;
    let broken = onvif_camera("broken").await;
    broken.onvif.set_fault(OnvifFault::Malformed);
    let v = VigieBuilder::new(BIN)
        .toml(COMMUNE)
        .toml(&onvif_camera_toml(
            "refusing",
            &refusing.onvif.device_url(),
            "not-the-password",
        ))
        .toml(&onvif_camera_toml(
            "broken",
            &broken.onvif.device_url(),
            PASS,
        ))
        .start()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for (cam, expect) in [
        ("refusing", "refused the credentials"),
        ("broken", "malformed answer"),
    ] {
        loop {
            let st = v.stream_status(cam, "main").await.unwrap();
            if let Some(err) = st["last_error"].as_str() {
                assert!(err.contains(expect), "{cam}: {err:?} should say {expect:?}");
                assert!(err.contains("ONVIF"), "{cam}: {err}");
                assert!(!err.contains("not-the-password"), "{cam}: secret in {err}");
                assert_eq!(st["online"], false, "{cam}: {st}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{cam}: no last_error: {st}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    assert!(refusing.onvif.stats().auth_failures >= 1);
    // The event subscription's failure is shown on the camera too.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = v.get("/api/v1/cameras").await.unwrap();
        let cam = list["cameras"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "refusing")
            .unwrap()
            .clone();
        assert_eq!(cam["onvif"], true);
        if let Some(err) = cam["onvif_events"]["last_error"].as_str() {
            assert!(err.contains("refused the credentials"), "{err}");
            assert!(!err.contains("not-the-password"), "{err}");
            assert_eq!(cam["onvif_events"]["subscribed"], false);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no events error: {cam}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The camera recovers: the recorder picks it up without a restart.
    broken.onvif.set_fault(OnvifFault::None);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let st = v.stream_status("broken", "main").await.unwrap();
        if st["online"] == true {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "broken did not recover: {st}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, _) = v.get("/api/v1/health").await.unwrap();
    assert!(status == 200 || status == 503, "{status}");
    let log = v.log();
    assert!(
        !log.contains("not-the-password") && !log.contains(PASS),
        "password in the log"
    );
}

fn vigie_cmd(args: &[&str], password: Option<&str>) -> (bool, String) {
    let mut c = std::process::Command::new(BIN);
    c.args(args);
    if let Some(p) = password {
        c.env("E2E_ONVIF_PW", p);
    }
    let out = c.output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn camera_probe_prints_profiles_ptz_and_event_topics() {
    let cam = onvif_camera("probe").await;
    let url = cam.onvif.device_url();
    let args = [
        "camera",
        "probe",
        &url,
        "--user",
        USER,
        "--password-env",
        "E2E_ONVIF_PW",
    ];
    let (ok, out) = tokio::task::spawn_blocking({
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        move || {
            vigie_cmd(
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
                Some(PASS),
            )
        }
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    for want in [
        "Vigie camsim",
        "profiles    2",
        "1280x720",
        "640x360",
        "[stream main]",
        "[stream sub]",
        &cam.rtsp.url("probe/main"),
        &cam.rtsp.url("probe/sub"),
        "ptz         yes",
        "position pan 0.000",
        "tns1:VideoSource/MotionAlarm  [motion]",
        "tns1:VideoSource/GlobalSceneChange/ImagingService  [tampering]",
        "tns1:VideoSource/SignalLoss  [video-loss]",
        "tns1:Device/Trigger/DigitalInput  [digital-input]",
    ] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
    // A wrong password: a failure naming the refusal, not the password.
    let (ok, out) = tokio::task::spawn_blocking({
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        move || {
            vigie_cmd(
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
                Some("bad-pw-55"),
            )
        }
    })
    .await
    .unwrap();
    assert!(!ok, "{out}");
    assert!(out.contains("refused the credentials"), "{out}");
    assert!(!out.contains("bad-pw-55"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn camera_discover_lists_the_device_answering_a_probe() {
    let cam = onvif_camera("disco").await;
    let target = cam.onvif.discovery_addr().unwrap().to_string();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        vigie_cmd(
            &[
                "camera",
                "discover",
                "--timeout-s",
                "1",
                "--target",
                &target,
            ],
            None,
        )
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("1 ONVIF device(s)"), "{out}");
    assert!(out.contains(&cam.onvif.device_url()), "{out}");
    assert!(out.contains("camsim"), "{out}");
}

const USER_PW: &str = "a long enough password";

/// Creates a user (by the default admin) and returns an API token for it.
async fn user_token(v: &vigie_testkit::Vigie, name: &str, role: &str) -> String {
    let (st, b) = api(
        v,
        v.admin_token(),
        "POST",
        "/api/v1/users",
        Some(
            serde_json::json!({"name": name, "role": role, "password": USER_PW, "communes": "all"}),
        ),
    )
    .await;
    assert_eq!(st, 201, "creating {name}: {b}");
    let (st, b) = api(
        v,
        v.admin_token(),
        "POST",
        "/api/v1/tokens",
        Some(serde_json::json!({"user": name, "name": "ptz"})),
    )
    .await;
    assert_eq!(st, 201, "token for {name}: {b}");
    b["token"].as_str().unwrap().to_owned()
}

async fn api(
    v: &vigie_testkit::Vigie,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut r = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{}{}", v.base_url(), path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let st = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        st,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn ptz_api_moves_the_camera_one_operator_at_a_time_and_journals_every_command() {
    let cam = onvif_camera("ptzdome").await;
    let v = VigieBuilder::new(BIN)
        .toml(COMMUNE)
        .toml(&onvif_camera_toml("ptzdome", &cam.onvif.device_url(), PASS))
        .start()
        .unwrap();
    let alice = user_token(&v, "alice", "operator").await;
    let bob = user_token(&v, "bob", "operator").await;
    let ines = user_token(&v, "ines", "investigator").await;
    let base = "/api/v1/cameras/ptzdome/ptz";

    // Without the right: 403, and the head does not move.
    let (st, b) = api(
        &v,
        Some(&ines),
        "POST",
        &format!("{base}/move"),
        Some(serde_json::json!({"pan": 1.0})),
    )
    .await;
    assert_eq!(st, 403, "{b}");
    assert_eq!(
        cam.onvif.ptz_commands(),
        0,
        "a refused request reached the camera"
    );

    // Alice pans right: camsim's head moves.
    let (st, b) = api(
        &v,
        Some(&alice),
        "POST",
        &format!("{base}/move"),
        Some(serde_json::json!({"pan": 1.0, "tilt": 0.0, "zoom": 0.0})),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["lock"]["holder"], "alice");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cam.onvif.ptz_position().0.pan < 0.05 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            cam.onvif.ptz_position()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Bob is refused while Alice holds it, and told who does.
    let (st, b) = api(&v, Some(&bob), "POST", &format!("{base}/stop"), None).await;
    assert_eq!(st, 409, "{b}");
    assert_eq!(b["error"]["code"], "ptz_locked");
    assert_eq!(b["error"]["holder"], "alice");
    assert!(b["error"]["expires_in_s"].as_u64().unwrap() <= 30);
    assert!(
        cam.onvif.ptz_position().1,
        "bob's refused stop reached the camera"
    );
    assert_eq!(cam.onvif.ptz_commands(), 1);
    let (st, b) = api(&v, Some(&bob), "GET", base, None).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["lock"]["holder"], "alice", "{b}");
    assert_eq!(b["moving"], true, "{b}");
    // Alice stops, stores a preset, moves away, recalls it.
    let (st, b) = api(&v, Some(&alice), "POST", &format!("{base}/stop"), None).await;
    assert_eq!(st, 200, "{b}");
    assert!(!cam.onvif.ptz_position().1);
    let at = cam.onvif.ptz_position().0;
    let (st, b) = api(
        &v,
        Some(&alice),
        "PUT",
        &format!("{base}/presets/Pont%20neuf"),
        None,
    )
    .await;
    assert_eq!(st, 201, "{b}");
    let token = b["token"].as_str().unwrap().to_owned();
    let (st, _) = api(
        &v,
        Some(&alice),
        "POST",
        &format!("{base}/move"),
        Some(serde_json::json!({"tilt": -1.0})),
    )
    .await;
    assert_eq!(st, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (st, _) = api(&v, Some(&alice), "POST", &format!("{base}/stop"), None).await;
    assert_eq!(st, 200);
    assert_ne!(cam.onvif.ptz_position().0.tilt, at.tilt);
    let (st, b) = api(&v, Some(&alice), "GET", &format!("{base}/presets"), None).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["presets"][0]["name"], "Pont neuf", "{b}");
    let (st, b) = api(
        &v,
        Some(&alice),
        "POST",
        &format!("{base}/presets/{token}"),
        None,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(cam.onvif.ptz_position().0, at);
    // An unknown preset is the camera's refusal (502), not a crash.
    let (st, b) = api(
        &v,
        Some(&alice),
        "POST",
        &format!("{base}/presets/999"),
        None,
    )
    .await;
    assert_eq!(st, 502, "{b}");
    // Out-of-range velocities are refused before reaching the camera.
    let (st, _) = api(
        &v,
        Some(&alice),
        "POST",
        &format!("{base}/move"),
        Some(serde_json::json!({"pan": 7})),
    )
    .await;
    assert_eq!(st, 400);
    // Alice hands over; Bob can steer.
    let (st, _) = api(&v, Some(&alice), "DELETE", &format!("{base}/lock"), None).await;
    assert_eq!(st, 204);
    let (st, b) = api(&v, Some(&bob), "POST", &format!("{base}/stop"), None).await;
    assert_eq!(st, 200, "{b}");

    // Every command is journaled: who, camera, what (the refused one too).
    let (st, j) = v.get("/api/v1/audit?action=ptz").await.unwrap();
    assert_eq!(st, 200, "{j}");
    let entries = j["entries"].as_array().unwrap();
    let seen: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            assert_eq!(e["camera"], "ptzdome", "{e}");
            (
                e["actor"].as_str().unwrap_or("").to_owned(),
                e["details"]["command"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for want in [
        ("alice", "move"),
        ("alice", "stop"),
        ("alice", "set-preset"),
        ("alice", "goto-preset"),
        ("bob", "stop"),
    ] {
        assert!(
            seen.iter()
                .any(|(a, c)| a.starts_with(want.0) && c == want.1),
            "{want:?} not journaled: {seen:?}"
        );
    }
    assert!(
        entries
            .iter()
            .any(|e| e["actor"].as_str().unwrap_or("").starts_with("bob")
                && e["details"]["refused"]
                    .as_str()
                    .is_some_and(|r| r.contains("held by alice"))),
        "bob's refused stop is not journaled: {j}"
    );
    // A camera without ONVIF has no PTZ (404).
    let (st, _) = api(&v, Some(&alice), "GET", "/api/v1/cameras/nope/ptz", None).await;
    assert_eq!(st, 404);
}

/// Polls `f` every 50 ms until it is true (at most `secs`), else panics with `what`.
async fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// JavaScript testing the mean red and blue of the live tile's current picture (the decoded
/// frame the operator sees, read back from a canvas) with `$cond` over `r` and `b` (0-255);
/// null before a frame is shown.
macro_rules! tile_colour_is {
    ($cond:literal) => {
        concat!(
            "const v = document.querySelector('.tile video');
             if (!v || v.readyState < 2 || !v.videoWidth) return null;
             const c = document.createElement('canvas'); c.width = 64; c.height = 36;
             const g = c.getContext('2d'); g.drawImage(v, 0, 0, 64, 36);
             const d = g.getImageData(0, 0, 64, 36).data; let r = 0, b = 0;
             for (let i = 0; i < d.length; i += 4) { r += d[i]; b += d[i + 2]; }
             r /= d.length / 4; b /= d.length / 4;
             return ",
            $cond,
            ";"
        )
    };
}

#[tokio::test(flavor = "multi_thread")]
async fn ptz_controls_in_chromium_move_the_simulated_head_and_are_journaled() {
    use serde_json::json;
    use vigie_testkit::browser::Browser;
    use vigie_testkit::browser::fantoccini::Locator;

    let cam = onvif_ptz_camera("uidome").await;
    let plain = format!(
        "[[cameras]]\nid = \"plain\"\nname = \"Fixe\"\ncommune = \"test\"\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"{}\"\n  username = \"{USER}\"\n  password = \"{PASS}\"\n",
        cam.rtsp.url("uidome/sub")
    );
    let v = VigieBuilder::new(BIN)
        .toml(COMMUNE)
        .toml(&onvif_camera_toml("uidome", &cam.onvif.device_url(), PASS))
        .toml(&plain)
        .start()
        .unwrap();
    let _ = user_token(&v, "opera", "operator").await;
    let _ = user_token(&v, "ines", "investigator").await;
    let b = Browser::start().await.unwrap();
    b.set_window_size(1280, 900).await.unwrap();
    b.set_script_timeout(Duration::from_secs(30)).await.unwrap();
    let login = |user: &'static str| {
        let b = &b;
        let base = v.base_url();
        async move {
            b.goto_anonymous(&format!("{base}/")).await.unwrap();
            let wd = b.webdriver().unwrap();
            let field = |css: &'static str| async move {
                wd.wait()
                    .at_most(Duration::from_secs(20))
                    .for_element(Locator::Css(css))
                    .await
                    .unwrap()
            };
            field("#username").await.send_keys(user).await.unwrap();
            field("#password").await.send_keys(USER_PW).await.unwrap();
            field("#login-submit").await.click().await.unwrap();
            wd.wait()
                .at_most(Duration::from_secs(20))
                .for_element(Locator::Css("main[data-page]"))
                .await
                .unwrap();
        }
    };
    let wait_js = |what: &'static str, code: &'static str| {
        let b = &b;
        async move {
            b.wait_js(what, code, Duration::from_secs(30))
                .await
                .unwrap()
        }
    };
    // Presses a control (`down`: the JS dispatching the press), waits until the head moved as
    // `moved(pan, tilt)` says, releases it (`up`) and waits for the head to stop.
    let steer =
        |down: &'static str, up: &'static str, what: &'static str, moved: fn(f64, f64) -> bool| {
            let (b, cam) = (&b, &cam);
            async move {
                b.eval(down, vec![]).await.unwrap();
                until(what, 20, || {
                    let p = cam.onvif.ptz_position().0;
                    moved(p.pan, p.tilt)
                })
                .await;
                b.eval(up, vec![]).await.unwrap();
                until("the head to stop", 20, || !cam.onvif.ptz_position().1).await;
            }
        };

    // An operator: the one-tile wall of the dome has the PTZ controls.
    login("opera").await;
    b.eval("location.hash = '#/live?layout=1&cams=uidome';", vec![])
        .await
        .unwrap();
    wait_js(
        "the PTZ controls",
        "return document.querySelector('.tile .ptz [data-ptz=right]') !== null",
    )
    .await;
    assert_eq!(
        b.eval(
            "return window.vigie.live.tiles.map(t => [t.camera, t.ptz])",
            vec![]
        )
        .await
        .unwrap(),
        json!([["uidome", true]])
    );
    // Before any move the dome looks at the centre of its panorama: neither red nor blue.
    wait_js(
        "the centred live picture",
        tile_colour_is!("Math.abs(r - b) < 40"),
    )
    .await;
    // Holding "right" pans until released.
    steer(
        "document.querySelector('[data-ptz=right]').dispatchEvent(new PointerEvent('pointerdown', {bubbles: true, pointerId: 1}));",
        "document.querySelector('[data-ptz=right]').dispatchEvent(new PointerEvent('pointerup', {bubbles: true, pointerId: 1}));",
        "the head to pan right",
        |pan, _| pan > 0.3,
    )
    .await;
    // ... and the live picture in the browser moved with it: the dome looks at the red (right)
    // end of its panorama now (it showed the purple centre before the move).
    until("camsim to show the view right of centre", 20, || {
        cam.onvif.ptz_view().is_some_and(|v| v >= 3)
    })
    .await;
    wait_js(
        "the live picture to turn red (the dome panned right)",
        tile_colour_is!("r > b + 60"),
    )
    .await;
    // The arrow keys steer too (key down: move, key up: stop).
    steer(
        "const t = document.querySelector('.tile'); t.focus();
         t.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowUp', bubbles: true}));",
        "document.querySelector('.tile').dispatchEvent(new KeyboardEvent('keyup', {key: 'ArrowUp', bubbles: true}));",
        "the head to tilt up",
        |_, tilt| tilt > 0.1,
    )
    .await;
    // A preset stored from the controls appears in the list.
    let wd = b.webdriver().unwrap();
    wd.find(Locator::Css(".ptz-name"))
        .await
        .unwrap()
        .send_keys("Carrefour")
        .await
        .unwrap();
    wd.find(Locator::Css("[data-ptz=save]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        "the stored preset",
        "return [...document.querySelectorAll('.ptz-presets option')].some(o => o.textContent === 'Carrefour')",
    )
    .await;
    let status = wait_js(
        "the lock status",
        "const s = document.querySelector('.ptz-status'); return s && s.textContent || null",
    )
    .await;
    assert!(status.as_str().unwrap().contains("30 s"), "{status}");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("ui-screenshots");
    std::fs::create_dir_all(&shot).unwrap();
    b.screenshot_to(&shot.join("ptz-live.png")).await.unwrap();
    // A camera without ONVIF has no controls.
    b.eval("location.hash = '#/live?layout=1&cams=plain';", vec![])
        .await
        .unwrap();
    wait_js("the plain tile", "return window.vigie.live.tiles.length === 1 && window.vigie.live.tiles[0].camera === 'plain'").await;
    assert_eq!(
        b.eval("return document.querySelector('.ptz') === null", vec![])
            .await
            .unwrap(),
        json!(true)
    );
    let moves_by_operator = cam.onvif.ptz_commands();

    // An investigator (no ptz right): the same request from the UI's session is refused.
    b.eval("document.querySelector('header .logout').click();", vec![])
        .await
        .unwrap();
    wait_js(
        "the login form",
        "return document.querySelector('#username') !== null",
    )
    .await;
    login("ines").await;
    let r = b
        .execute_async(
            "const done = arguments[0];
             import('/assets/api.js').then(m => m.post('/api/v1/cameras/uidome/ptz/move', {pan: 1}))
               .then(() => done('accepted'), e => done(e.status + ' ' + e.code));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(r, json!("403 forbidden"));
    assert_eq!(
        cam.onvif.ptz_commands(),
        moves_by_operator,
        "the refused move reached the camera"
    );

    // Journaled with the right: who, which camera, what.
    let (st, j) = v.get("/api/v1/audit?action=ptz").await.unwrap();
    assert_eq!(st, 200, "{j}");
    let cmds: Vec<String> = j["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "opera" && e["camera"] == "uidome")
        .map(|e| e["details"]["command"].as_str().unwrap_or("").to_owned())
        .collect();
    for want in ["move", "stop", "set-preset"] {
        assert!(
            cmds.iter().any(|c| c == want),
            "{want} not journaled: {cmds:?}"
        );
    }
    assert!(
        cmds.iter().filter(|c| *c == "move").count() >= 2,
        "{cmds:?}"
    );
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn camera_events_are_stored_listed_counted_and_alarms_journaled() {
    let cam = onvif_camera("evdome").await;
    let v = VigieBuilder::new(BIN)
        .toml(COMMUNE)
        .toml(&onvif_camera_toml("evdome", &cam.onvif.device_url(), PASS))
        .start()
        .unwrap();
    let t0 = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(5);
    until("the recorder's subscription", 30, || {
        cam.onvif.stats().subscriptions == 1
    })
    .await;
    cam.onvif.raise(vigie_camsim::EventKind::Motion, true);
    // Through camsim's control API, as a script would.
    let st = reqwest::Client::new()
        .post(format!(
            "{}/control/events/tampering?state=true",
            cam.onvif.base_url()
        ))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, 204);
    cam.onvif
        .raise(vigie_camsim::EventKind::DigitalInput, false);
    let end = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60);
    let path = format!("/api/v1/cameras/evdome/events?start={t0}&end={end}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let events = loop {
        let (st, b) = v.get(&path).await.unwrap();
        assert_eq!(st, 200, "{b}");
        let evs = b["events"].as_array().unwrap().clone();
        if evs.len() >= 3 {
            assert_eq!(b["stream"], "main");
            break evs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "events not stored: {b}\n{}",
            v.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["motion", "tampering", "digital-input"],
        "{events:?}"
    );
    assert_eq!(events[1]["active"], true);
    assert_eq!(events[2]["active"], false);
    assert_eq!(
        events[1]["topic"],
        "tns1:VideoSource/GlobalSceneChange/ImagingService"
    );
    // Per stream (the sub stream has them too), filtered by type.
    let (_, b) = v
        .get(&format!("{path}&stream=sub&type=tampering"))
        .await
        .unwrap();
    assert_eq!(b["events"].as_array().unwrap().len(), 1, "{b}");
    // A window before them is empty; a bad window is a 400.
    let (_, b) = v
        .get(&format!(
            "/api/v1/cameras/evdome/events?start=2020-01-01T00:00:00Z&end={t0}"
        ))
        .await
        .unwrap();
    assert_eq!(b["events"].as_array().unwrap().len(), 0);
    let (st, _) = v
        .get(&format!(
            "/api/v1/cameras/evdome/events?start={end}&end={t0}"
        ))
        .await
        .unwrap();
    assert_eq!(st, 400);
    // Counted in /metrics.
    let (_, m) = v.get_text("/metrics").await.unwrap();
    for line in [
        "vigie_camera_events_total{camera=\"evdome\",kind=\"motion\"} 1",
        "vigie_camera_events_total{camera=\"evdome\",kind=\"tampering\"} 1",
        "vigie_camera_events_total{camera=\"evdome\",kind=\"digital-input\"} 1",
    ] {
        assert!(m.contains(line), "{line} not in metrics");
    }
    // Alarms (tampering, video loss) are journaled; motion is not.
    let (st, j) = v.get("/api/v1/audit?action=camera-alarm").await.unwrap();
    assert_eq!(st, 200, "{j}");
    let entries = j["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{j}");
    assert_eq!(entries[0]["camera"], "evdome");
    assert_eq!(entries[0]["details"]["type"], "tampering");

    // Marks on the playback timeline (Chromium).
    use vigie_testkit::browser::Browser;
    use vigie_testkit::browser::fantoccini::Locator;
    let b = Browser::start().await.unwrap();
    b.set_window_size(1280, 900).await.unwrap();
    b.goto_anonymous(&format!("{}/", v.base_url()))
        .await
        .unwrap();
    let wd = b.webdriver().unwrap();
    let el = |css: &'static str| async move {
        wd.wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap()
    };
    el("#username")
        .await
        .send_keys(vigie_testkit::process::ADMIN_USER)
        .await
        .unwrap();
    el("#password")
        .await
        .send_keys(vigie_testkit::process::ADMIN_PASSWORD)
        .await
        .unwrap();
    el("#login-submit").await.click().await.unwrap();
    el("main[data-page]").await;
    b.eval("location.hash = '#/playback/evdome';", vec![])
        .await
        .unwrap();
    el(".tl-row[data-camera=evdome] .tl-event[data-type=tampering]").await;
    let marks = b
        .eval(
            "return [...document.querySelectorAll('.tl-row[data-camera=evdome] .tl-event')].map(e => e.dataset.type)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        marks,
        serde_json::json!(["motion", "tampering", "digital-input"])
    );
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("ui-screenshots");
    std::fs::create_dir_all(&shot).unwrap();
    b.screenshot_to(&shot.join("events-timeline.png"))
        .await
        .unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_camera_does_not_hold_up_the_ptz_of_another() {
    let silent = onvif_camera("silentdome").await;
    let good = onvif_camera("gooddome").await;
    silent.onvif.set_fault(OnvifFault::Silent);
    let v = VigieBuilder::new(BIN)
        .toml(COMMUNE)
        .toml(&onvif_camera_toml(
            "silentdome",
            &silent.onvif.device_url(),
            PASS,
        ))
        .toml(&onvif_camera_toml(
            "gooddome",
            &good.onvif.device_url(),
            PASS,
        ))
        .start()
        .unwrap();
    let alice = user_token(&v, "alice", "operator").await;
    let stuck = {
        let (base, alice) = (v.base_url(), alice.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/api/v1/cameras/silentdome/ptz/stop"))
                .bearer_auth(alice)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    // Let the request to the silent camera start waiting on it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (st, b) = api(
        &v,
        Some(&alice),
        "POST",
        "/api/v1/cameras/gooddome/ptz/stop",
        None,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert!(
        !stuck.is_finished(),
        "the good camera's command waited for the silent camera's"
    );
    // The silent camera's command ends in a clear 502 after its timeout.
    assert_eq!(stuck.await.unwrap(), 502);
}

/// A camera that expires subscriptions that are pulled but not renewed (as some do): the
/// recorder renews at half the stated life, so one subscription lasts and events keep coming.
#[tokio::test(flavor = "multi_thread")]
async fn event_subscriptions_are_renewed_before_the_camera_expires_them() {
    let cam = onvif_camera("renewdome").await;
    cam.onvif
        .set_subscription_policy(vigie_camsim::SubscriptionPolicy {
            ttl: Duration::from_secs(3),
            pull_extends: false,
        });
    let v = VigieBuilder::new(BIN)
        .toml(COMMUNE)
        .toml(&onvif_camera_toml(
            "renewdome",
            &cam.onvif.device_url(),
            PASS,
        ))
        .start()
        .unwrap();
    let t0 = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(5);
    until("the recorder's subscription", 30, || {
        cam.onvif.stats().subscriptions_created == 1
    })
    .await;
    // Four lives of the subscription.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let st = cam.onvif.stats();
    assert_eq!(
        st.subscriptions_created,
        1,
        "re-subscribed: {st:?}\n{}",
        v.log()
    );
    assert!(st.renews >= 3, "{st:?}");
    cam.onvif.raise(vigie_camsim::EventKind::Tampering, true);
    let end = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60);
    let path = format!("/api/v1/cameras/renewdome/events?start={t0}&end={end}&type=tampering");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (st, b) = v.get(&path).await.unwrap();
        assert_eq!(st, 200, "{b}");
        if b["events"].as_array().is_some_and(|e| !e.is_empty()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "event not stored: {b}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

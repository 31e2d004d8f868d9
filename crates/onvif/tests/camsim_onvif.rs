//! The ONVIF client against camsim's simulated ONVIF device (two independent implementations:
//! each parses the other's XML and checks the other's digests), over real HTTP and UDP on
//! loopback.

use std::time::Duration;

use vigie_camsim::{
    EventKind as SimEvent, Fixture, MountConfig, OnvifConfig, OnvifFault, OnvifHandle,
    OnvifProfile, OnvifServer, Server, ServerHandle,
};
use vigie_onvif::{Credentials, Device, EventKind, OnvifError, Options, PtzVector};

const USER: &str = "operator";
const PASS: &str = "pw-Zk3!never-logged";

struct Cam {
    rtsp: ServerHandle,
    onvif: OnvifHandle,
}

async fn camsim(auth: bool) -> Cam {
    let main = Fixture::embedded("h264-main-1280x720-15fps-gop30.h264").unwrap();
    let sub = Fixture::embedded("h264-baseline-640x360-25fps-gop50.h264").unwrap();
    let rtsp = Server::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![
            MountConfig::new("cam/main", main),
            MountConfig::new("cam/sub", sub),
        ],
    )
    .await
    .unwrap();
    let onvif = OnvifServer::start(
        "127.0.0.1:0".parse().unwrap(),
        OnvifConfig {
            auth: auth.then(|| (USER.to_owned(), PASS.to_owned())),
            profiles: vec![
                OnvifProfile::for_mount("main", &rtsp, "cam/main").unwrap(),
                OnvifProfile::for_mount("sub", &rtsp, "cam/sub").unwrap(),
            ],
            ptz: true,
            discovery: Some("127.0.0.1:0".parse().unwrap()),
        },
    )
    .await
    .unwrap();
    Cam { rtsp, onvif }
}

fn creds(password: &str) -> Option<Credentials> {
    Some(Credentials {
        username: USER.into(),
        password: password.into(),
    })
}

fn quick() -> Options {
    Options {
        timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn profiles_and_stream_uris_come_from_the_camera() {
    let cam = camsim(true).await;
    let dev = Device::connect(&cam.onvif.device_url(), creds(PASS), Options::default())
        .await
        .unwrap();
    assert!(
        dev.clock_offset().as_secs().abs() <= 2,
        "{:?}",
        dev.clock_offset()
    );
    let info = dev.device_information().await.unwrap();
    assert_eq!(
        (info.manufacturer.as_str(), info.model.as_str()),
        ("Vigie", "camsim")
    );
    let profiles = dev.profiles().await.unwrap();
    let tokens: Vec<&str> = profiles.iter().map(|p| p.token.as_str()).collect();
    assert_eq!(tokens, ["main", "sub"]);
    assert_eq!(profiles[0].resolution, Some((1280, 720)));
    assert_eq!(profiles[1].resolution, Some((640, 360)));
    assert_eq!(profiles[0].encoding, "H264");
    assert_eq!(profiles[0].fps, Some(15.0));
    assert!(profiles.iter().all(|p| p.ptz));
    assert_eq!(
        dev.stream_uri("main").await.unwrap(),
        cam.rtsp.url("cam/main")
    );
    assert_eq!(
        dev.stream_uri("sub").await.unwrap(),
        cam.rtsp.url("cam/sub")
    );
    // An unknown profile is the camera's SOAP fault, named as such.
    let e = dev.stream_uri("nope").await.unwrap_err();
    assert!(matches!(e, OnvifError::Fault { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("GetStreamUri") && msg.contains("NoProfile"),
        "{msg}"
    );
    assert!(dev.has_ptz() && dev.has_events());
}

#[tokio::test]
async fn ptz_moves_the_simulated_head() {
    let cam = camsim(true).await;
    let dev = Device::connect(&cam.onvif.device_url(), creds(PASS), Options::default())
        .await
        .unwrap();
    let right = PtzVector {
        pan: 1.0,
        tilt: 0.0,
        zoom: 0.0,
    };
    dev.ptz_continuous_move("main", right, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    // Wait (bounded) until the head has visibly moved, as camsim's own view reports it.
    let mut moved = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if cam.onvif.ptz_position().0.pan > 0.05 {
            moved = true;
            break;
        }
    }
    assert!(moved, "{:?}", cam.onvif.ptz_position());
    let st = dev.ptz_status("main").await.unwrap();
    assert!(st.moving);
    assert!(st.position.unwrap().pan > 0.05, "{st:?}");
    dev.ptz_stop("main").await.unwrap();
    let stopped_at = cam.onvif.ptz_position();
    assert!(!stopped_at.1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(cam.onvif.ptz_position().0, stopped_at.0, "stop holds");

    dev.ptz_absolute_move(
        "main",
        PtzVector {
            pan: -0.5,
            tilt: 0.25,
            zoom: 0.5,
        },
    )
    .await
    .unwrap();
    let p = cam.onvif.ptz_position().0;
    assert_eq!((p.pan, p.tilt, p.zoom), (-0.5, 0.25, 0.5));
    let token = dev
        .ptz_set_preset("main", "Rond-point", None)
        .await
        .unwrap();
    dev.ptz_relative_move(
        "main",
        PtzVector {
            pan: 0.25,
            tilt: 0.0,
            zoom: -0.5,
        },
    )
    .await
    .unwrap();
    let p = cam.onvif.ptz_position().0;
    assert_eq!((p.pan, p.zoom), (-0.25, 0.0));
    let presets = dev.ptz_presets("main").await.unwrap();
    assert_eq!(presets.len(), 1);
    assert_eq!(presets[0].name, "Rond-point");
    assert_eq!(presets[0].token, token);
    assert_eq!(presets[0].position.unwrap().pan, -0.5);
    dev.ptz_goto_preset("main", &token).await.unwrap();
    assert_eq!(cam.onvif.ptz_position().0.pan, -0.5);
    let e = dev.ptz_goto_preset("main", "404").await.unwrap_err();
    assert!(matches!(e, OnvifError::Fault { .. }), "{e:?}");
}

#[tokio::test]
async fn events_arrive_over_a_pull_point() {
    let cam = camsim(true).await;
    let dev = Device::connect(&cam.onvif.device_url(), creds(PASS), Options::default())
        .await
        .unwrap();
    let topics = dev.event_topics().await.unwrap();
    for t in [
        "tns1:VideoSource/MotionAlarm",
        "tns1:VideoSource/GlobalSceneChange/ImagingService",
        "tns1:VideoSource/SignalLoss",
        "tns1:Device/Trigger/DigitalInput",
    ] {
        assert!(topics.iter().any(|x| x == t), "{t} not in {topics:?}");
    }
    let pp = dev.pull_point().await.unwrap();
    assert_eq!(cam.onvif.stats().subscriptions, 1);
    // Nothing raised yet: the long poll comes back empty after its wait.
    assert!(
        pp.pull(Duration::from_millis(200), 10)
            .await
            .unwrap()
            .is_empty()
    );
    cam.onvif.raise(SimEvent::Tampering, true);
    cam.onvif.raise(SimEvent::DigitalInput, false);
    let evs = pp.pull(Duration::from_secs(5), 10).await.unwrap();
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert_eq!(evs[0].kind, EventKind::Tampering);
    assert!(evs[0].kind.is_alarm());
    assert_eq!(evs[0].active, Some(true));
    assert!(evs[0].utc.is_some());
    assert_eq!(evs[1].kind, EventKind::DigitalInput);
    assert_eq!(evs[1].active, Some(false));
    // A pull that is waiting when the alarm comes returns it.
    let raiser = {
        let url = format!(
            "{}/control/events/video-loss?state=true",
            cam.onvif.base_url()
        );
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            reqwest::Client::new()
                .post(url)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let evs = pp.pull(Duration::from_secs(10), 10).await.unwrap();
    assert_eq!(raiser.await.unwrap(), 204);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].kind, EventKind::VideoLoss);
    let addr = pp.address().to_owned();
    pp.unsubscribe().await.unwrap();
    assert_eq!(cam.onvif.stats().subscriptions, 0);
    assert!(addr.contains("/onvif/events/sub/"));
}

#[tokio::test]
async fn refused_credentials_are_an_auth_error_naming_the_operation_not_the_password() {
    let cam = camsim(true).await;
    let url = cam.onvif.device_url();
    for c in [creds("wrong-password"), None] {
        let e = Device::connect(&url, c, quick()).await.unwrap_err();
        assert!(e.is_auth(), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("GetCapabilities") && msg.contains(&url),
            "{msg}"
        );
        assert!(
            !msg.contains(PASS) && !msg.contains("wrong-password"),
            "{msg}"
        );
    }
    assert!(cam.onvif.stats().auth_failures >= 2);
    // Credentials in the URL are refused before anything is sent, and not echoed.
    let with_pw = url.replace("http://", "http://admin:hunter2@");
    let e = Device::connect(&with_pw, None, quick()).await.unwrap_err();
    assert!(matches!(e, OnvifError::BadUrl { .. }), "{e:?}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[tokio::test]
async fn a_replayed_username_token_is_refused() {
    let cam = camsim(true).await;
    let env = vigie_onvif::soap::request(
        "<tds:GetDeviceInformation/>",
        creds(PASS).as_ref(),
        &jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap()
            .to_string(),
    );
    let http = reqwest::Client::new();
    let post = || {
        http.post(cam.onvif.device_url())
            .header("content-type", "application/soap+xml")
            .body(env.clone())
            .send()
    };
    let first = post().await.unwrap();
    assert_eq!(first.status(), 200);
    let second = post().await.unwrap();
    assert_eq!(second.status(), 400);
    let body = second.text().await.unwrap();
    assert!(
        body.contains("NotAuthorized") && body.contains("already used"),
        "{body}"
    );
}

#[tokio::test]
async fn malformed_garbage_and_silent_answers_are_clear_errors() {
    let cam = camsim(false).await;
    let dev = Device::connect(&cam.onvif.device_url(), None, quick())
        .await
        .unwrap();
    cam.onvif.set_fault(OnvifFault::Malformed);
    let e = dev.device_information().await.unwrap_err();
    assert!(matches!(e, OnvifError::Malformed { .. }), "{e:?}");
    assert!(e.to_string().contains("GetDeviceInformation"), "{e}");
    cam.onvif.set_fault(OnvifFault::Garbage);
    let e = dev.profiles().await.unwrap_err();
    assert!(matches!(e, OnvifError::Malformed { .. }), "{e:?}");
    cam.onvif.set_fault(OnvifFault::Silent);
    let e = dev.ptz_stop("main").await.unwrap_err();
    assert!(matches!(e, OnvifError::Timeout { .. }), "{e:?}");
    cam.onvif.set_fault(OnvifFault::None);
    assert_eq!(dev.profiles().await.unwrap().len(), 2);
    // A device that does not answer at all.
    let e = Device::connect("http://127.0.0.1:9/onvif/device_service", None, quick())
        .await
        .unwrap_err();
    assert!(
        matches!(e, OnvifError::Http { .. } | OnvifError::Timeout { .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn ws_discovery_finds_the_device_by_unicast_probe() {
    let cam = camsim(true).await;
    let found = vigie_onvif::discover(
        cam.onvif.discovery_addr().unwrap(),
        Duration::from_millis(500),
    )
    .await
    .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].xaddrs, [cam.onvif.device_url()]);
    assert_eq!(found[0].name().as_deref(), Some("camsim"));
    assert!(found[0].endpoint.starts_with("urn:uuid:"));
}

/// Mean (red, blue) of one frame of `url`, decoded by ffmpeg (an independent RTSP client).
fn picture_colour(url: &str) -> (f64, f64) {
    let out = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-rtsp_transport",
            "tcp",
        ])
        .args(["-timeout", "10000000", "-i", url, "-frames:v", "1"])
        .args([
            "-vf",
            "scale=64:36",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success() && out.stdout.len() == 64 * 36 * 3,
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = (64 * 36) as f64;
    let sum = |c: usize| {
        out.stdout
            .iter()
            .skip(c)
            .step_by(3)
            .map(|&v| f64::from(v))
            .sum::<f64>()
    };
    (sum(0) / n, sum(2) / n)
}

/// The dome's picture follows its head: the PTZ fixture is blue on the left and red on the
/// right, so after an absolute move to the right end a decoded frame is red, at the left end blue.
#[tokio::test(flavor = "multi_thread")]
async fn ptz_moves_the_picture() {
    let dome = Fixture::embedded("h264-ptz-pan5-640x360-25fps-gop50.h264").unwrap();
    let rtsp = Server::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![MountConfig::new("dome", dome)],
    )
    .await
    .unwrap();
    let onvif = OnvifServer::start(
        "127.0.0.1:0".parse().unwrap(),
        OnvifConfig {
            profiles: vec![OnvifProfile::for_mount("main", &rtsp, "dome").unwrap()],
            ptz: true,
            ..OnvifConfig::default()
        },
    )
    .await
    .unwrap();
    onvif.attach_ptz_view(vigie_camsim::PtzView::embedded(rtsp.mount("dome").unwrap()));
    let url = rtsp.url("dome");
    let dev = Device::connect(&onvif.device_url(), None, Options::default())
        .await
        .unwrap();
    let wait_view = |want: usize| {
        let onvif = &onvif;
        async move {
            for _ in 0..100 {
                if onvif.ptz_view() == Some(want) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("view {want} not shown: {:?}", onvif.ptz_view());
        }
    };
    wait_view(2).await;
    let u = url.clone();
    let (r, b) = tokio::task::spawn_blocking(move || picture_colour(&u))
        .await
        .unwrap();
    assert!(
        (r - b).abs() < 40.0,
        "centre view is neither red nor blue: r={r} b={b}"
    );
    for (pan, view, red) in [(1.0, 4, true), (-1.0, 0, false)] {
        dev.ptz_absolute_move(
            "main",
            PtzVector {
                pan,
                tilt: 0.0,
                zoom: 0.0,
            },
        )
        .await
        .unwrap();
        wait_view(view).await;
        let u = url.clone();
        let (r, b) = tokio::task::spawn_blocking(move || picture_colour(&u))
            .await
            .unwrap();
        if red {
            assert!(r > b + 120.0, "pan {pan}: expected red, r={r} b={b}");
        } else {
            assert!(b > r + 120.0, "pan {pan}: expected blue, r={r} b={b}");
        }
    }
}

/// A camera that does not extend subscriptions on pulls: the subscription lives as long as the
/// camera stated, `Renew` extends it, and without renewal it expires (the next pull is a fault).
#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_lives_as_long_as_it_is_renewed() {
    let cam = camsim(true).await;
    cam.onvif
        .set_subscription_policy(vigie_camsim::SubscriptionPolicy {
            ttl: Duration::from_secs(2),
            pull_extends: false,
        });
    let dev = Device::connect(&cam.onvif.device_url(), creds(PASS), Options::default())
        .await
        .unwrap();
    let pp = dev.pull_point().await.unwrap();
    let life = pp
        .lifetime()
        .expect("camsim states the subscription's life");
    assert!(
        (Duration::from_millis(1500)..=Duration::from_millis(2500)).contains(&life),
        "{life:?}"
    );
    // The camera grants at most its own longest life (2 s here).
    let granted = pp.renew(Duration::from_secs(60)).await.unwrap().unwrap();
    assert!(
        (Duration::from_millis(1500)..=Duration::from_millis(2500)).contains(&granted),
        "{granted:?}"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    pp.renew(Duration::from_secs(60)).await.unwrap();
    assert_eq!(cam.onvif.stats().renews, 2);
    // Past the first life, alive thanks to the renewals (pulls do not extend it here).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    pp.pull(Duration::from_millis(100), 10).await.unwrap();
    // Past the renewed life without another renewal: gone.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let e = pp.pull(Duration::from_millis(100), 10).await.unwrap_err();
    assert!(matches!(e, OnvifError::Fault { .. }), "{e:?}");
    let e = pp.renew(Duration::from_secs(4)).await.unwrap_err();
    assert!(matches!(e, OnvifError::Fault { .. }), "{e:?}");
}

/// A camera demanding HTTP Digest (its WS-Security off): the client answers the challenge
/// (qop=auth), keeps it for the next requests, and a wrong password or none is a clear
/// authentication error that names neither password.
#[tokio::test(flavor = "multi_thread")]
async fn http_digest_cameras_are_answered_and_refusals_are_clear() {
    let cam = camsim(true).await;
    cam.onvif.require_http_digest(true);
    let url = cam.onvif.device_url();
    let dev = Device::connect(&url, creds(PASS), quick()).await.unwrap();
    let info = dev.device_information().await.unwrap();
    assert!(!info.manufacturer.is_empty());
    let profiles = dev.profiles().await.unwrap();
    assert_eq!(profiles.len(), 2);
    let uri = dev.stream_uri(&profiles[1].token).await.unwrap();
    assert_eq!(uri, cam.rtsp.url("cam/sub"));
    // Events (another URL, the subscription's) are digest-authenticated too.
    let pp = dev.pull_point().await.unwrap();
    cam.onvif.raise(SimEvent::Motion, true);
    let evs = pp.pull(Duration::from_secs(2), 10).await.unwrap();
    assert_eq!(evs.len(), 1, "{evs:?}");
    // One challenge, then every request authenticated up front: about one 401 per device.
    let before = cam.onvif.stats().requests;
    dev.device_information().await.unwrap();
    assert_eq!(
        cam.onvif.stats().requests,
        before + 1,
        "no new challenge round trip"
    );
    assert_eq!(cam.onvif.stats().auth_failures, 0);

    for c in [creds("wrong-password"), None] {
        let e = Device::connect(&url, c, quick()).await.unwrap_err();
        assert!(e.is_auth(), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&url), "{msg}");
        assert!(
            !msg.contains(PASS) && !msg.contains("wrong-password"),
            "{msg}"
        );
    }
    assert!(cam.onvif.stats().auth_failures >= 1);
}

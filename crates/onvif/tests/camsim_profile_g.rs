//! Profile G (the camera's own recordings) of the ONVIF client against camsim's simulated
//! card: search, replay URI, refused credentials and misbehaving answers.

use std::time::Duration;

use vigie_camsim::onvif::recording::OnvifRecording;
use vigie_camsim::{
    Fixture, MountConfig, OnvifConfig, OnvifFault, OnvifHandle, OnvifProfile, OnvifServer, Server,
    ServerHandle,
};
use vigie_onvif::{Credentials, Device, OnvifError, Options};

const USER: &str = "operator";
const PASS: &str = "pw-Zk3!never-logged";

struct Cam {
    rtsp: ServerHandle,
    onvif: OnvifHandle,
}

async fn camsim(card: bool) -> Cam {
    let main = Fixture::embedded("h264-baseline-640x360-25fps-gop50.h264").unwrap();
    let mut m = MountConfig::new("cam/main", main);
    if card {
        m = m.with_card(Duration::from_secs(3600));
    }
    let rtsp = Server::start("127.0.0.1:0".parse().unwrap(), vec![m])
        .await
        .unwrap();
    let recordings = OnvifRecording::for_mount("main", &rtsp, "cam/main")
        .into_iter()
        .collect();
    let onvif = OnvifServer::start(
        "127.0.0.1:0".parse().unwrap(),
        OnvifConfig {
            auth: Some((USER.to_owned(), PASS.to_owned())),
            profiles: vec![OnvifProfile::for_mount("main", &rtsp, "cam/main").unwrap()],
            ptz: false,
            discovery: None,
            recordings,
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
async fn the_cards_recording_is_found_and_its_replay_uri_is_the_mount() {
    let cam = camsim(true).await;
    let before = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let dev = Device::connect(&cam.onvif.device_url(), creds(PASS), quick())
        .await
        .unwrap();
    let svc = dev.profile_g_services().await.unwrap();
    assert!(svc.search.is_some() && svc.replay.is_some(), "{svc:?}");
    let recs = dev.recordings().await.unwrap();
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!(
        (r.token.as_str(), r.source_id.as_str()),
        ("rec-main", "main")
    );
    let (a, b) = (r.earliest.unwrap(), r.latest.unwrap());
    assert!(a >= before && b > a, "{a} {b}");
    // A second of footage the card holds, and a range before it existed.
    let mid = a + jiff::SignedDuration::from_millis(200);
    let covering = dev
        .recordings_covering(mid, mid + jiff::SignedDuration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(covering.len(), 1);
    let old = a - jiff::SignedDuration::from_secs(600);
    assert!(
        dev.recordings_covering(old, old + jiff::SignedDuration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        dev.replay_uri("rec-main").await.unwrap(),
        cam.rtsp.url("cam/main")
    );
    match dev.replay_uri("rec-nope").await {
        Err(OnvifError::Fault { op, code, .. }) => {
            assert_eq!(op, "GetReplayUri");
            assert!(code.contains("NoRecording"), "{code}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_camera_without_a_card_says_it_has_no_search_service() {
    let cam = camsim(false).await;
    let dev = Device::connect(&cam.onvif.device_url(), creds(PASS), quick())
        .await
        .unwrap();
    let e = dev.recordings().await.unwrap_err();
    assert!(
        matches!(
            e,
            OnvifError::NotSupported {
                op: "FindRecordings",
                service: "search",
                ..
            }
        ),
        "{e:?}"
    );
    let e = dev.replay_uri("rec-main").await.unwrap_err();
    assert!(
        matches!(
            e,
            OnvifError::NotSupported {
                op: "GetReplayUri",
                service: "replay",
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn refused_credentials_and_malformed_answers_are_clear_errors_without_the_password() {
    let cam = camsim(true).await;
    // The digest is checked on every operation; connecting already asks for capabilities.
    let e = Device::connect(&cam.onvif.device_url(), creds("wrong-pw-8x!"), quick())
        .await
        .unwrap_err();
    assert!(e.is_auth(), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&cam.onvif.local_addr().to_string()), "{msg}");
    assert!(
        !msg.contains("wrong-pw-8x!") && !msg.contains(PASS),
        "{msg}"
    );

    let dev = Device::connect(&cam.onvif.device_url(), creds(PASS), quick())
        .await
        .unwrap();
    for fault in [
        OnvifFault::Malformed,
        OnvifFault::Garbage,
        OnvifFault::Silent,
    ] {
        cam.onvif.set_fault(fault);
        let e = dev.replay_uri("rec-main").await.unwrap_err();
        let e2 = dev.recordings().await.unwrap_err();
        assert_eq!(
            std::mem::discriminant(&e),
            std::mem::discriminant(&e2),
            "{e:?} {e2:?}"
        );
        match (fault, &e) {
            (OnvifFault::Silent, OnvifError::Timeout { .. }) => {}
            (OnvifFault::Malformed | OnvifFault::Garbage, OnvifError::Malformed { .. }) => {}
            _ => panic!("{fault:?}: {e:?}"),
        }
        assert!(!e.to_string().contains(PASS));
    }
    cam.onvif.set_fault(OnvifFault::None);
    assert!(dev.replay_uri("rec-main").await.is_ok());
}

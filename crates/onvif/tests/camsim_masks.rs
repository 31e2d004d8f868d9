//! Media2 privacy masks: the client against camsim's simulated device over real HTTP on
//! loopback (create, read back, set, delete; no Media2; refused credentials; malformed answers).

use std::time::Duration;

use vigie_camsim::{
    Fixture, MountConfig, OnvifConfig, OnvifFault, OnvifHandle, OnvifProfile, OnvifServer, Server,
    ServerHandle,
};
use vigie_onvif::media2::{picture_to_onvif, same_polygon};
use vigie_onvif::{Credentials, Device, OnvifError, Options};

const USER: &str = "operator";
const PASS: &str = "pw-Mask!never-logged";

struct Cam {
    _rtsp: ServerHandle,
    onvif: OnvifHandle,
}

async fn camsim() -> Cam {
    let main = Fixture::embedded("h264-baseline-640x360-25fps-gop50.h264").unwrap();
    let rtsp = Server::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![MountConfig::new("cam/main", main)],
    )
    .await
    .unwrap();
    let onvif = OnvifServer::start(
        "127.0.0.1:0".parse().unwrap(),
        OnvifConfig {
            auth: Some((USER.to_owned(), PASS.to_owned())),
            profiles: vec![OnvifProfile::for_mount("main", &rtsp, "cam/main").unwrap()],
            ptz: false,
            discovery: None,
        },
    )
    .await
    .unwrap();
    Cam { _rtsp: rtsp, onvif }
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
async fn masks_are_created_read_back_changed_and_deleted() {
    let cam = camsim().await;
    let dev = Device::connect(&cam.onvif.device_url(), creds(PASS), quick())
        .await
        .unwrap();
    let m2 = dev.media2().await.unwrap();
    assert!(m2.supports_masks());
    assert!(m2.url().ends_with("/onvif/media2"), "{}", m2.url());
    let vsc = m2.video_source_configurations().await.unwrap();
    assert_eq!(vsc, ["vsc0"]);
    assert!(m2.masks(Some("vsc0")).await.unwrap().is_empty());
    let door: Vec<(f64, f64)> = [[0.1, 0.2], [0.3, 0.2], [0.3, 0.6]]
        .into_iter()
        .map(picture_to_onvif)
        .collect();
    let t = m2.create_mask("vsc0", &door).await.unwrap();
    // Read back by the client and by the camera's own report.
    let read = m2.masks(Some("vsc0")).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].token, t);
    assert_eq!(read[0].mask_type, "Color");
    assert!(read[0].enabled);
    assert!(same_polygon(&read[0].points, &door, 1e-5), "{read:?}");
    let held = cam.onvif.masks();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].points.len(), 3);
    assert!((held[0].points[0].0 - (-0.8)).abs() < 1e-6, "{held:?}");
    assert!((held[0].points[0].1 - 0.6).abs() < 1e-6, "{held:?}");
    // SetMask replaces the polygon.
    let square: Vec<(f64, f64)> = vec![(-0.5, 0.5), (0.5, 0.5), (0.5, -0.5), (-0.5, -0.5)];
    m2.set_mask(&t, "vsc0", &square).await.unwrap();
    assert!(same_polygon(&cam.onvif.masks()[0].points, &square, 1e-6));
    // A configuration the camera does not have is a SOAP fault, named.
    let e = m2.create_mask("nope", &door).await.unwrap_err();
    assert!(matches!(e, OnvifError::Fault { .. }), "{e:?}");
    assert!(e.to_string().contains("CreateMask"), "{e}");
    m2.delete_mask(&t).await.unwrap();
    assert!(cam.onvif.masks().is_empty());
    assert!(m2.masks(None).await.unwrap().is_empty());
    let e = m2.delete_mask(&t).await.unwrap_err();
    assert!(matches!(e, OnvifError::Fault { .. }), "{e:?}");
}

#[tokio::test]
async fn a_camera_without_media2_is_not_supported_and_refusals_and_malformed_answers_are_clear() {
    let cam = camsim().await;
    // Refused credentials: an auth error naming the operation, never the password.
    let dev = Device::connect(&cam.onvif.device_url(), creds("bad-Pw-77"), quick()).await;
    let e = match dev {
        Ok(dev) => dev.media2().await.unwrap_err(),
        Err(e) => e,
    };
    assert!(matches!(e, OnvifError::Auth { .. }), "{e:?}");
    assert!(
        !e.to_string().contains("bad-Pw-77") && !e.to_string().contains(PASS),
        "{e}"
    );

    let dev = Device::connect(&cam.onvif.device_url(), creds(PASS), quick())
        .await
        .unwrap();
    cam.onvif.set_media2(false);
    let e = dev.media2().await.unwrap_err();
    assert!(
        matches!(
            e,
            OnvifError::NotSupported {
                service: "Media2",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("does not offer the Media2 service"),
        "{e}"
    );
    cam.onvif.set_media2(true);
    let m2 = dev.media2().await.unwrap();
    for (fault, want) in [
        (OnvifFault::Malformed, "malformed"),
        (OnvifFault::Garbage, "malformed"),
    ] {
        cam.onvif.set_fault(fault);
        let e = m2.masks(Some("vsc0")).await.unwrap_err();
        assert!(matches!(e, OnvifError::Malformed { .. }), "{e:?}");
        assert!(
            e.to_string().contains("GetMasks") && e.to_string().contains(want),
            "{e}"
        );
        let e = m2
            .create_mask("vsc0", &[(0.0, 0.0), (0.5, 0.0), (0.5, 0.5)])
            .await
            .unwrap_err();
        assert!(matches!(e, OnvifError::Malformed { .. }), "{e:?}");
    }
    cam.onvif.set_fault(OnvifFault::Silent);
    let e = m2.masks(None).await.unwrap_err();
    assert!(matches!(e, OnvifError::Timeout { .. }), "{e:?}");
    cam.onvif.set_fault(OnvifFault::None);
    assert!(m2.masks(None).await.unwrap().is_empty());
}

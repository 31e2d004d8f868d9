//! End-to-end JPEG stills (`snapshot.jpg`, feature `gst`): the real binary records camsim's
//! H.264 and H.265 fixtures; stills have the stream's dimensions, and a still at an instant
//! inside a GOP matches ffmpeg's decode of the stored segment at that frame.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use vigie_camsim::{Fixture, MountConfig, Server};
use vigie_testkit::media::{ffprobe, mp4_files};
use vigie_testkit::{Vigie, VigieBuilder};

const BIN: &str = env!("CARGO_BIN_EXE_vigie");
const BASELINE: &str = "h264-baseline-640x360-25fps-gop50.h264";
const H265: &str = "h265-main-1280x720-25fps-gop50.h265";
const COMMUNE: &str = "[[communes]]\nid = \"test\"\nname = \"Test\"\nretention_days = 7\n";

fn embedded(name: &str) -> Arc<Fixture> {
    Fixture::embedded(name).unwrap_or_else(|| panic!("fixture {name}"))
}

fn camera_toml(id: &str, url: &str) -> String {
    format!(
        "[[cameras]]\nid = \"{id}\"\nname = \"Camera {id}\"\ncommune = \"test\"\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"{url}\"\n"
    )
}

async fn get_bytes(v: &Vigie, path: &str) -> (u16, String, Vec<u8>) {
    let r = v
        .http()
        .get(format!("{}{}", v.base_url(), path))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, ct, r.bytes().await.unwrap().to_vec())
}

/// Decodes an image or one video frame to 8-bit gray with ffmpeg, through RGB. Video frames are
/// converted with GStreamer's convention for streams that don't signal their colour matrix
/// (BT.709 from 720 lines up, BT.601 below; ffmpeg would use BT.601 for all), so the comparison
/// measures the picture, not the convention.
fn gray(input: &Path, select_frame: Option<(u32, u32)>) -> Vec<u8> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "error", "-i"]).arg(input);
    if let Some((n, height)) = select_frame {
        cmd.args([
            "-vf",
            &format!(
                "select=eq(n\\,{n}),scale=in_color_matrix={}:in_range=tv,format=rgb24",
                if height >= 720 { "bt709" } else { "bt601" }
            ),
            "-fps_mode",
            "passthrough",
        ]);
    }
    let out = cmd
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(x.abs_diff(*y)))
        .sum::<f64>()
        / a.len() as f64
}

/// A closed segment of `cam` with at least 100 frames: (id, start).
async fn closed_segment(v: &Vigie, cam: &str) -> (u64, Timestamp) {
    let now = Timestamp::now();
    let (a, b) = (
        now - SignedDuration::from_hours(1),
        now + SignedDuration::from_hours(1),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = v
            .get(&format!(
                "/api/v1/cameras/{cam}/streams/main/recordings?start={a}&end={b}&segments=1"
            ))
            .await
            .unwrap();
        if let Some(s) = body["segments"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["open"] == false && s["frames"].as_u64().unwrap_or(0) >= 100)
        {
            return (
                s["id"].as_u64().unwrap(),
                s["start"].as_str().unwrap().parse().unwrap(),
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no closed segment: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn check_still_at_instant(v: &Vigie, cam: &str, w: u32, h: u32) {
    let (id, start) = closed_segment(v, cam).await;
    let file = mp4_files(&v.data_dir.join("recordings").join(cam))
        .into_iter()
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{id:012}-")))
        })
        .unwrap();
    // Frame 37 of the segment: 37 frames after its first key frame (GOP 50), mid-frame.
    let idx = 37u32;
    let at = start + SignedDuration::from_millis(i64::from(idx) * 40 + 20);
    let (status, ct, jpeg) = get_bytes(
        v,
        &format!("/api/v1/cameras/{cam}/streams/main/snapshot.jpg?at={at}"),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&jpeg));
    assert_eq!(ct, "image/jpeg");
    assert_eq!(&jpeg[..3], &[0xFF, 0xD8, 0xFF], "not a JPEG");
    let path = v.work_dir().join(format!("{cam}-at.jpg"));
    std::fs::write(&path, &jpeg).unwrap();
    let p = ffprobe(&path).unwrap();
    assert_eq!((p.width, p.height), (w, h), "{p:?}");
    let ours = gray(&path, None);
    let want = gray(&file, Some((idx, h)));
    let near = gray(&file, Some((idx - 6, h)));
    let d = mean_abs_diff(&ours, &want);
    let d_other = mean_abs_diff(&ours, &near);
    eprintln!(
        "{cam}: still vs frame {idx}: MAD {d:.2}; vs frame {}: {d_other:.2}",
        idx - 6
    );
    assert!(d < 3.0, "{cam}: still differs from frame {idx}: MAD {d}");
    assert!(
        d < d_other,
        "{cam}: still is closer to frame {} ({d_other}) than to {idx} ({d})",
        idx - 6
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_jpeg_for_h264_and_h265() {
    let sim = Server::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![
            MountConfig::new("a", embedded(BASELINE)),
            MountConfig::new("b", embedded(H265)),
        ],
    )
    .await
    .unwrap();
    let v = VigieBuilder::new(BIN)
        .toml(COMMUNE)
        .toml(&camera_toml("cam-a", &sim.url("a")))
        .toml(&camera_toml("cam-b", &sim.url("b")))
        .start()
        .unwrap();

    // Bad input first (no recording needed).
    let (status, body) = v
        .get("/api/v1/cameras/cam-a/streams/main/snapshot.jpg?at=yesterday")
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request");
    let (status, body) = v
        .get("/api/v1/cameras/cam-a/streams/main/snapshot.jpg?at=2020-01-01T00:00:00Z")
        .await
        .unwrap();
    assert_eq!(status, 404, "{body}");
    let (status, body) = v
        .get("/api/v1/cameras/cam-x/streams/main/snapshot.jpg")
        .await
        .unwrap();
    assert_eq!(status, 404, "{body}");

    // Latest picture of each stream.
    for (cam, w, h) in [("cam-a", 640, 360), ("cam-b", 1280, 720)] {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let jpeg = loop {
            let (status, ct, body) = get_bytes(
                &v,
                &format!("/api/v1/cameras/{cam}/streams/main/snapshot.jpg"),
            )
            .await;
            if status == 200 {
                assert_eq!(ct, "image/jpeg");
                break body;
            }
            assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
            assert!(std::time::Instant::now() < deadline, "no still for {cam}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert_eq!(&jpeg[..3], &[0xFF, 0xD8, 0xFF], "not a JPEG");
        let path = v.work_dir().join(format!("{cam}-latest.jpg"));
        std::fs::write(&path, &jpeg).unwrap();
        let p = ffprobe(&path).unwrap();
        assert_eq!((p.width, p.height), (w, h), "{cam}: {p:?}");
    }

    // A still at an instant inside a GOP is that frame.
    check_still_at_instant(&v, "cam-a", 640, 360).await;
    check_still_at_instant(&v, "cam-b", 1280, 720).await;
}

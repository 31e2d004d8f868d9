//! camsim against an independent RTSP client: ffmpeg / ffprobe (Debian package `ffmpeg`).

mod common;

use std::time::Duration;

use common::*;
use vigie_camsim::{Auth, MountConfig};

const T: Duration = Duration::from_secs(30);

async fn ffmpeg_null(url: &str, transport: &str, secs: &str) -> std::process::Output {
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-rtsp_transport",
            transport,
            "-i",
            url,
            "-t",
            secs,
            "-c",
            "copy",
            "-f",
            "null",
            "-",
        ],
        T,
    )
    .await
}

async fn count_frames(path: &std::path::Path) -> u32 {
    let o = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            path.to_str().unwrap(),
        ],
        T,
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).trim().parse().unwrap()
}

/// Records `secs` seconds with `-c copy` into an MP4 and returns the frame count.
async fn record(url: &str, transport: &str, secs: u32) -> u32 {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mp4");
    let o = run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-rtsp_transport",
            transport,
            "-i",
            url,
            "-t",
            &secs.to_string(),
            "-c",
            "copy",
            "-y",
            out.to_str().unwrap(),
        ],
        T,
    )
    .await;
    assert!(o.status.success(), "ffmpeg record failed: {}", stderr(&o));
    count_frames(&out).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_over_tcp_and_udp() {
    let server = start(vec![MountConfig::new("cam1", fixture(BASELINE))]).await;
    let url = server.url("cam1");
    for transport in ["tcp", "udp"] {
        let o = ffmpeg_null(&url, transport, "3").await;
        assert!(o.status.success(), "{transport}: {}", stderr(&o));
        assert_eq!(
            probe(&url, transport).await,
            ("h264".to_owned(), 640, 360),
            "{transport}"
        );
    }
    let stats = server.mount("cam1").unwrap().stats();
    assert!(stats.frames >= 2 * 70, "{stats:?}");
    assert!(stats.sessions_total >= 4);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_probe_and_record() {
    let server = start(vec![MountConfig::new("cam", fixture(H265))]).await;
    let url = server.url("cam");
    assert_eq!(probe(&url, "tcp").await, ("hevc".to_owned(), 1280, 720));
    let n = record(&url, "tcp", 3).await;
    assert!((65..=85).contains(&n), "3 s at 25 fps gave {n} frames");
    let o = ffmpeg_null(&url, "udp", "2").await;
    assert!(o.status.success(), "udp: {}", stderr(&o));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_main_records_at_15fps() {
    let server = start(vec![MountConfig::new("cam", fixture(MAIN720))]).await;
    let url = server.url("cam");
    assert_eq!(probe(&url, "tcp").await, ("h264".to_owned(), 1280, 720));
    let n = record(&url, "tcp", 3).await;
    assert!((38..=52).contains(&n), "3 s at 15 fps gave {n} frames");
    let n = record(&url, "udp", 3).await;
    assert!((38..=52).contains(&n), "udp: 3 s at 15 fps gave {n} frames");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_and_digest_auth() {
    let f = fixture(BASELINE);
    let server = start(vec![
        MountConfig::new("basic", f.clone()).with_auth(Auth::basic("viewer", "pa55")),
        MountConfig::new("digest", f).with_auth(Auth::digest("admin", "s3cret")),
    ])
    .await;
    let port = server.local_addr().port();
    for (mount, user, pass) in [("basic", "viewer", "pa55"), ("digest", "admin", "s3cret")] {
        let good = format!("rtsp://{user}:{pass}@127.0.0.1:{port}/{mount}");
        let o = ffmpeg_null(&good, "tcp", "1").await;
        assert!(o.status.success(), "{mount}: {}", stderr(&o));
        for bad in [
            format!("rtsp://{user}:wrong@127.0.0.1:{port}/{mount}"),
            format!("rtsp://127.0.0.1:{port}/{mount}"),
        ] {
            let o = ffmpeg_null(&bad, "tcp", "1").await;
            assert!(!o.status.success(), "{mount}: wrong credentials accepted");
            assert!(stderr(&o).contains("401"), "{mount}: {}", stderr(&o));
        }
        assert!(server.mount(mount).unwrap().stats().auth_failures >= 2);
    }
    server.shutdown().await;
}

/// Runs ffmpeg decoding with `showinfo` and returns the distinct frame sizes it printed.
async fn decoded_sizes(url: &str, secs: &str) -> Vec<String> {
    let o = run(
        "ffmpeg",
        &[
            "-v",
            "info",
            "-rtsp_transport",
            "tcp",
            "-i",
            url,
            "-t",
            secs,
            "-vf",
            "showinfo",
            "-f",
            "null",
            "-",
        ],
        T,
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let mut sizes: Vec<String> = Vec::new();
    for line in stderr(&o).lines().filter(|l| l.contains("Parsed_showinfo")) {
        if let Some(s) = line.split_whitespace().find_map(|w| w.strip_prefix("s:"))
            && sizes.last().map(String::as_str) != Some(s)
        {
            sizes.push(s.to_owned());
        }
    }
    sizes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolution_change_fixture_decodes_both_sizes() {
    // 8 s fixture at 4x speed: the SPS change arrives ~1 s in.
    let server = start(vec![
        MountConfig::new("cam", fixture(RES_CHANGE)).with_speed(4.0),
    ])
    .await;
    assert_eq!(
        probe(&server.url("cam"), "tcp").await,
        ("h264".to_owned(), 640, 360)
    );
    let sizes = decoded_sizes(&server.url("cam"), "6").await;
    assert!(
        sizes.len() >= 2 && sizes[0] == "640x360" && sizes[1] == "320x180",
        "{sizes:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_fixture_seen_by_ffmpeg() {
    let server = start(vec![MountConfig::new("cam", fixture(BASELINE))]).await;
    let cam = server.mount("cam").unwrap();
    let url = server.url("cam");
    let switch = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        cam.switch_fixture(fixture(MAIN720));
    });
    let sizes = decoded_sizes(&url, "4").await;
    switch.await.unwrap();
    assert_eq!(sizes, vec!["640x360", "1280x720"]);
    server.shutdown().await;
}

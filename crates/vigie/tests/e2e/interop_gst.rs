//! Interop: the real `vigie` binary records a camera served by GStreamer's RTSP server (an
//! implementation not written here), over TCP and UDP, in H.264 and H.265.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use vigie_core::Codec;
use vigie_testkit::gst_server::GstRtspServer;
use vigie_testkit::media::{ffmpeg_decodes, ffprobe, mp4_files};
use vigie_testkit::{VigieBuilder, fixtures_dir};

const BIN: &str = env!("CARGO_BIN_EXE_vigie");

async fn record_from_gstreamer(
    fixture: &str,
    codec: Codec,
    transport: &str,
    width: u32,
    ffcodec: &str,
) {
    let server = GstRtspServer::start(&fixtures_dir().join(fixture), codec, 25).unwrap();
    let t_launch = Timestamp::now();
    let mut v = VigieBuilder::new(BIN)
        .toml("[[communes]]\nid = \"test\"\nname = \"Test\"\n")
        .toml(&format!(
            "[[cameras]]\nid = \"gst\"\nname = \"GStreamer camera\"\ncommune = \"test\"\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"{}\"\n  transport = \"{transport}\"\n",
            server.url()
        ))
        .start()
        .unwrap();
    let (a, b) = {
        let now = Timestamp::now();
        (
            (now - SignedDuration::from_hours(1)).to_string(),
            (now + SignedDuration::from_hours(1)).to_string(),
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    let spans = loop {
        let spans = v.spans("gst", "main", &a, &b).await.unwrap();
        if spans
            .iter()
            .map(|(s, e)| e.duration_since(*s).as_secs_f64())
            .sum::<f64>()
            >= 10.0
        {
            break spans;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not recording {fixture} over {transport}: {spans:?}\n{}",
            v.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let now = Timestamp::now();
    assert_eq!(spans.len(), 1, "{spans:?}");
    // Wall-clock timestamps: the recording starts after the launch (1 s of slack for the
    // camera's own clock) and before the 10 s just found were indexed. Not a bound on how fast
    // it starts (a loaded machine takes longer; no timing assertion).
    assert!(
        spans[0].0 >= t_launch - SignedDuration::from_secs(1)
            && spans[0].0 <= now - SignedDuration::from_secs(10),
        "{spans:?}"
    );
    assert!(
        spans[0].1 >= now - SignedDuration::from_secs(4)
            && spans[0].1 <= now + SignedDuration::from_secs(1),
        "{spans:?}"
    );
    let st = v.stream_status("gst", "main").await.unwrap();
    assert_eq!(st["width"].as_u64(), Some(width as u64), "{st}");
    v.stop().unwrap();
    let files = mp4_files(&v.data_dir.join("recordings"));
    assert!(!files.is_empty());
    let mut frames = 0;
    for f in &files {
        ffmpeg_decodes(f).unwrap();
        let p = ffprobe(f).unwrap();
        assert_eq!(
            (p.codec.as_str(), p.width),
            (ffcodec, width),
            "{}",
            f.display()
        );
        frames += p.frames;
    }
    let (a2, b2) = (a.clone(), b.clone());
    v.spawn().unwrap();
    let spans = v.spans("gst", "main", &a2, &b2).await.unwrap();
    let recorded: f64 = spans
        .iter()
        .map(|(s, e)| e.duration_since(*s).as_secs_f64())
        .sum();
    let expected = (recorded * 25.0).round() as u64;
    assert!(
        frames.abs_diff(expected) <= 50,
        "{frames} frames decoded, {recorded:.2} s listed"
    );
    v.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn gstreamer_h264_tcp() {
    record_from_gstreamer(
        "h264-baseline-640x360-25fps-gop50.h264",
        Codec::H264,
        "tcp",
        640,
        "h264",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gstreamer_h264_udp() {
    record_from_gstreamer(
        "h264-baseline-640x360-25fps-gop50.h264",
        Codec::H264,
        "udp",
        640,
        "h264",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gstreamer_h265_tcp() {
    record_from_gstreamer(
        "h265-main-1280x720-25fps-gop50.h265",
        Codec::H265,
        "tcp",
        1280,
        "hevc",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gstreamer_h265_udp() {
    record_from_gstreamer(
        "h265-main-1280x720-25fps-gop50.h265",
        Codec::H265,
        "udp",
        1280,
        "hevc",
    )
    .await;
}

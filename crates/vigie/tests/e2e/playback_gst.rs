//! video.mp4 for recordings of a camera served by GStreamer's RTSP server (an implementation not
//! written here): ranges inside one segment, across three, starting mid-GOP.

use std::time::Duration;

use vigie_core::Codec;
use vigie_testkit::VigieBuilder;
use vigie_testkit::gst_server::GstRtspServer;

use crate::playback_common::{check_standard_ranges, wait_segments};

const BIN: &str = env!("CARGO_BIN_EXE_vigie");

#[tokio::test(flavor = "multi_thread")]
async fn gstreamer_h264_ranges() {
    let server = GstRtspServer::start(
        &vigie_testkit::fixtures_dir().join("h264-baseline-640x360-25fps-gop50.h264"),
        Codec::H264,
        25,
    )
    .unwrap();
    let mut v = VigieBuilder::new(BIN)
        .segment_seconds(10)
        .toml("[[communes]]\nid = \"test\"\nname = \"Test\"\n")
        .toml(&format!(
            "[[cameras]]\nid = \"gst\"\nname = \"GStreamer camera\"\ncommune = \"test\"\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"{}\"\n",
            server.url()
        ))
        .start()
        .unwrap();
    let segs = wait_segments(&v, "gst", 3, Duration::from_secs(45)).await;
    check_standard_ranges(&v, "gst", &segs).await;
    v.stop().unwrap();
}

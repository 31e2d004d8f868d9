//! CPU cost of the H.264 fallback per transcoded stream: transcodes `SECONDS` of an H.265
//! Annex B file (looped) through the fallback's pipeline ([`vigie_decode::transcode`], the
//! same one live views and playback use) as fast as it goes, and prints the process CPU time
//! (user + system) per second of video, i.e. the share of one core one live transcode takes.
//!
//! `cargo run -p vigie-decode --features gst --example transcode_bench -- FILE.h265 SECONDS [KBPS]`
//! (results in docs/BENCHMARKS.md, "H.264 fallback").

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use vigie_core::{Codec, VideoParams};
use vigie_decode::transcode::{TranscodeSettings, transcode_range};

/// The file's access units as stored (`hvc1`, length-prefixed) with the sample entry, by
/// GStreamer's h265parse.
fn load(path: &str) -> (Arc<VideoParams>, Vec<(Bytes, bool)>) {
    gst::init().expect("GStreamer");
    let p = gst::parse::launch(&format!(
        "filesrc location={path} ! h265parse ! video/x-h265,stream-format=hvc1,alignment=au ! \
         appsink name=sink sync=false"
    ))
    .expect("pipeline")
    .downcast::<gst::Pipeline>()
    .expect("pipeline");
    let sink = p
        .by_name("sink")
        .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
        .expect("appsink");
    p.set_state(gst::State::Playing).expect("playing");
    let (mut frames, mut hvcc, mut size) = (Vec::new(), None, (0u16, 0u16));
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        if hvcc.is_none() {
            let st = s
                .caps()
                .and_then(|c| c.structure(0).map(|s| s.to_owned()))
                .expect("caps");
            let cd = st.get::<gst::Buffer>("codec_data").expect("codec_data");
            hvcc = Some(cd.map_readable().expect("map").as_slice().to_vec());
            size = (
                st.get::<i32>("width").expect("width") as u16,
                st.get::<i32>("height").expect("height") as u16,
            );
        }
        let b = s.buffer().expect("buffer");
        frames.push((
            Bytes::copy_from_slice(b.map_readable().expect("map").as_slice()),
            !b.flags().contains(gst::BufferFlags::DELTA_UNIT),
        ));
    }
    let _ = p.set_state(gst::State::Null);
    let hvcc = hvcc.expect("no frame");
    let mut w = vigie_mp4::BoxWriter::new();
    w.boxed(b"hvc1", |w| {
        w.zeros(6).u16(1).zeros(16).u16(size.0).u16(size.1);
        w.u32(0x0048_0000)
            .u32(0x0048_0000)
            .u32(0)
            .u16(1)
            .zeros(32)
            .u16(0x0018)
            .u16(0xffff);
        w.boxed(b"hvcC", |w| {
            w.bytes(&hvcc);
        });
    });
    let params = VideoParams {
        codec: Codec::H265,
        rfc6381_codec: String::new(),
        width: size.0,
        height: size.1,
        pixel_aspect_ratio: (1, 1),
        sample_entry: Bytes::from(w.into_inner()),
    };
    (Arc::new(params), frames)
}

fn cpu_s() -> f64 {
    let r = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(r.user_time()) + t(r.system_time())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (path, secs) = (
        args.get(1).expect("FILE.h265 SECONDS [KBPS]"),
        args.get(2)
            .and_then(|s| s.parse::<u64>().ok())
            .expect("SECONDS"),
    );
    let kbps = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let (params, frames) = load(path);
    let fps = 25u64;
    let n = (secs * fps) as usize;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("samples.bin");
    let mut data = Vec::new();
    let mut samples = Vec::new();
    for i in 0..n {
        let (f, k) = &frames[i % frames.len()];
        data.extend_from_slice(f);
        samples.push(vigie_mp4::SampleInfo {
            duration_90k: 3600,
            bytes: f.len() as u32,
            is_key: *k,
        });
    }
    std::fs::write(&file, &data).expect("write");
    let input = vigie_mp4::progressive::Input {
        sample_entries: vec![params.sample_entry.clone()],
        width: params.width,
        height: params.height,
        files: vec![file],
        samples,
        chunks: vec![vigie_mp4::progressive::Chunk {
            file: 0,
            offset: 0,
            first_sample: 0,
            samples: n as u32,
            description: 0,
        }],
        skip_90k: 0,
        duration_90k: n as u64 * 3600,
        cues: Vec::new(),
    };
    let settings = TranscodeSettings {
        bitrate_kbps: kbps,
        ..Default::default()
    };
    let (cpu0, t0) = (cpu_s(), Instant::now());
    let mut out_bytes = 0u64;
    transcode_range(&input, Codec::H265, &settings, &[], &mut |b| {
        out_bytes += b.len() as u64;
        true
    })
    .expect("transcode");
    let (cpu, wall) = (cpu_s() - cpu0, t0.elapsed().as_secs_f64());
    let video_s = n as f64 / fps as f64;
    println!(
        "{}x{} H.265 → H.264 {kbps} kbit/s: {video_s:.0} s of video in {wall:.1} s wall, \
         {cpu:.1} CPU s → {:.3} CPU s per stream-second ({:.0} % of a core per live stream), \
         output {:.0} kbit/s",
        params.width,
        params.height,
        cpu / video_s,
        100.0 * cpu / video_s,
        out_bytes as f64 * 8.0 / video_s / 1000.0,
    );
}

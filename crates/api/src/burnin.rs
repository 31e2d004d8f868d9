//! Burned-in working copy of an evidence export (`gst` feature): the finished master MP4
//! decoded and re-encoded with the camera name and the recording's wall-clock date and time
//! drawn on every picture.
//!
//! `filesrc ! qtdemux ! h264parse|h265parse ! avdec_h264|avdec_h265 ! videoconvert !
//! textoverlay ! videoconvert ! x264enc ! h264parse ! mp4mux faststart=true ! filesink`.
//! The overlay text is set per buffer by a pad probe on textoverlay's video sink: the buffer's
//! stream time (the master's presentation time, after its edit list) is mapped to the wall
//! clock through the playback plan's pieces, so concatenated spans (`gaps=skip`) show the real
//! recording time, never the host clock at export time.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use vigie_core::{Codec, Time90k};
use vigie_store::Piece;

use crate::still::{StillError, gst_err, gst_init};

/// Wall clock of the picture presented at `presentation_90k` on the master's timeline.
pub fn wall_at(pieces: &[Piece], presentation_90k: u64) -> Option<Time90k> {
    let p = pieces
        .iter()
        .rev()
        .find(|p| p.presentation_90k <= presentation_90k)
        .or_else(|| pieces.first())?;
    let off = presentation_90k.saturating_sub(p.presentation_90k);
    Some(Time90k(p.wall_start.0 + off as i64))
}

/// The overlay text: camera name, then local date and time with the UTC offset.
pub fn overlay_text(camera: &str, wall: Time90k, tz: &jiff::tz::TimeZone) -> String {
    format!(
        "{camera}\n{}",
        wall.to_timestamp()
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S %:z")
    )
}

/// Decodes `master`, burns in `camera` and the wall-clock time, writes an H.264 MP4 to `out`.
/// `duration_90k` (the master's) bounds the time allowed.
pub fn burn_in(
    master: &Path,
    out: &Path,
    codec: Codec,
    camera: &str,
    pieces: Vec<Piece>,
    tz: jiff::tz::TimeZone,
    duration_90k: u64,
) -> Result<(), StillError> {
    gst_init()?;
    let (parse, dec) = match codec {
        Codec::H264 => ("h264parse", "avdec_h264"),
        Codec::H265 => ("h265parse", "avdec_h265"),
    };
    let desc = format!(
        "filesrc name=src ! qtdemux name=demux demux.video_0 ! queue ! {parse} ! {dec} ! videoconvert ! \
         textoverlay name=ov valignment=top halignment=left shaded-background=true \
         font-desc=\"Sans 14\" ! videoconvert ! \
         x264enc speed-preset=ultrafast tune=zerolatency ! h264parse ! mp4mux faststart=true ! \
         filesink name=sink"
    );
    let pipeline = gst::parse::launch(&desc)
        .map_err(|e| StillError::Gst(format!("{e} (is gstreamer1.0-plugins-ugly/-libav installed?)")))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| StillError::Gst("not a pipeline".into()))?;
    let by_name = |n: &str| {
        pipeline
            .by_name(n)
            .ok_or_else(|| StillError::Gst(format!("no element {n}")))
    };
    by_name("src")?.set_property("location", master.to_string_lossy().as_ref());
    by_name("sink")?.set_property("location", out.to_string_lossy().as_ref());
    let ov = by_name("ov")?;
    let first = wall_at(&pieces, 0).unwrap_or(Time90k(0));
    ov.set_property("text", overlay_text(camera, first, &tz));
    let pad = ov
        .static_pad("video_sink")
        .ok_or_else(|| StillError::Gst("textoverlay without video_sink".into()))?;
    let camera = camera.to_owned();
    let ov_weak = ov.downgrade();
    let last = Mutex::new(String::new());
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let (Some(buf), Some(ov)) = (info.buffer(), ov_weak.upgrade()) else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(pts) = buf.pts() else {
            return gst::PadProbeReturn::Ok;
        };
        let stream_time = pad
            .sticky_event::<gst::event::Segment>(0)
            .and_then(|e| {
                e.segment()
                    .downcast_ref::<gst::ClockTime>()
                    .and_then(|s| s.to_stream_time(pts))
            })
            .unwrap_or(pts);
        let p90k = stream_time.nseconds() * 9 / 100_000;
        if let Some(wall) = wall_at(&pieces, p90k) {
            let text = overlay_text(&camera, wall, &tz);
            let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
            if *last != text {
                ov.set_property("text", &text);
                *last = text;
            }
        }
        gst::PadProbeReturn::Ok
    });
    let result = run(&pipeline, duration_90k);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn run(pipeline: &gst::Pipeline, duration_90k: u64) -> Result<(), StillError> {
    // Generous: a loaded machine re-encodes SD at several times real time with ultrafast.
    let limit = Duration::from_secs(120 + 4 * duration_90k / 90_000);
    pipeline.set_state(gst::State::Playing).map_err(gst_err)?;
    let bus = pipeline
        .bus()
        .ok_or_else(|| StillError::Gst("pipeline without bus".into()))?;
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(StillError::Gst(format!(
                "the burned-in copy took more than {} s",
                limit.as_secs()
            )));
        }
        let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(left.as_millis().min(500) as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        ) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => return Ok(()),
            gst::MessageView::Error(e) => {
                return Err(StillError::Gst(format!("{} ({:?})", e.error(), e.debug())));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presentation_time_maps_to_the_wall_clock_across_skipped_gaps() {
        let pieces = vec![
            Piece {
                presentation_90k: 0,
                wall_start: Time90k(1_000 * 90_000),
                duration_90k: 5 * 90_000,
            },
            Piece {
                presentation_90k: 5 * 90_000,
                wall_start: Time90k(2_000 * 90_000),
                duration_90k: 5 * 90_000,
            },
        ];
        assert_eq!(wall_at(&pieces, 90_000), Some(Time90k(1_001 * 90_000)));
        assert_eq!(wall_at(&pieces, 6 * 90_000), Some(Time90k(2_001 * 90_000)));
        let tz = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
        // 2026-11-28T21:00:00Z = 22:00 in Paris.
        let t = Time90k::parse_rfc3339("2026-11-28T21:00:00Z").unwrap();
        assert_eq!(
            overlay_text("Gare", t, &tz),
            "Gare\n2026-11-28 22:00:00 +01:00"
        );
    }
}

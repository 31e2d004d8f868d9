//! Burned-in working copy of an evidence export (`gst` feature): the master's pictures
//! decoded and re-encoded with the camera name and the recording's wall-clock date and time
//! drawn on every picture.
//!
//! `appsrc ! h264parse|h265parse ! avdec_h264|avdec_h265 ! videoconvert ! textoverlay !
//! videoconvert ! x264enc ! h264parse ! mp4mux faststart=true ! filesink`, fed with the
//! master's samples (see [`burn_in`]).
//! The overlay text is set per buffer by a pad probe on textoverlay's video sink: the buffer's
//! stream time (the master's presentation time, after its edit list) is mapped to the wall
//! clock through the playback plan's pieces, so concatenated spans (`gaps=skip`) show the real
//! recording time, never the host clock at export time.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use vigie_core::{Codec, Time90k};
use vigie_mp4::progressive::Input;
use vigie_store::Piece;

use crate::still::{StillError, codec_data, gst_err, gst_init};

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

/// The burned-in copy's pipeline (its elements are listed in
/// [`crate::gst_elements::GST_ELEMENTS`], checked by a test).
pub(crate) fn pipeline_description(parse: &str, dec: &str) -> String {
    format!(
        "appsrc name=src format=time ! {parse} ! {dec} ! videoconvert ! \
         textoverlay name=ov valignment=bottom halignment=left shaded-background=true \
         font-desc=\"Sans 14\" ! videoconvert ! \
         x264enc speed-preset=ultrafast tune=zerolatency ! h264parse ! mp4mux faststart=true ! \
         filesink name=sink"
    )
}

/// Decodes the master's samples, burns in `camera` and the wall-clock time, writes an H.264
/// MP4 to `out`. `input` is what the master was built from: its samples are read from the
/// segment files (the very bytes of the master's `mdat`) and its edit list (`skip_90k`,
/// `duration_90k`) becomes the segment, so exactly the master's presented pictures are
/// encoded.
///
/// (Why not `filesrc ! qtdemux` on the master file: qtdemux 1.22 compares sample media times
/// with the movie's presentation duration and stops early when the edit list skips the start
/// of a GOP — up to that skip is lost at the end.)
pub fn burn_in(
    input: &Input,
    out: &Path,
    codec: Codec,
    camera: &str,
    pieces: Vec<Piece>,
    tz: jiff::tz::TimeZone,
) -> Result<(), StillError> {
    burn_in_masked(input, out, codec, camera, pieces, tz, Arc::default())
}

/// [`burn_in`] with the camera's privacy masks painted black on every picture
/// ([`crate::masks`], on the overlay's input: the camera name and time stay readable).
pub fn burn_in_masked(
    input: &Input,
    out: &Path,
    codec: Codec,
    camera: &str,
    pieces: Vec<Piece>,
    tz: jiff::tz::TimeZone,
    masks: Arc<crate::masks::MaskSet>,
) -> Result<(), StillError> {
    gst_init()?;
    let (media, format, parse, dec) = match codec {
        Codec::H264 => ("video/x-h264", "avc", "h264parse", "avdec_h264"),
        Codec::H265 => ("video/x-h265", "hvc1", "h265parse", "avdec_h265"),
    };
    let caps_for = |description: u32| -> Result<gst::Caps, StillError> {
        let entry = input
            .sample_entries
            .get(description as usize)
            .ok_or_else(|| StillError::Params(format!("no sample entry {description}")))?;
        let cd = codec_data(entry)
            .ok_or_else(|| StillError::Params("sample entry without avcC/hvcC".into()))?;
        Ok(gst::Caps::builder(media)
            .field("stream-format", format)
            .field("alignment", "au")
            .field("codec_data", gst::Buffer::from_slice(cd.to_vec()))
            .build())
    };
    let desc = pipeline_description(parse, dec);
    let pipeline = gst::parse::launch(&desc)
        .map_err(|e| {
            StillError::Gst(format!(
                "{e} (are gstreamer1.0-plugins-ugly/-good/-base and -libav installed?)"
            ))
        })?
        .downcast::<gst::Pipeline>()
        .map_err(|_| StillError::Gst("not a pipeline".into()))?;
    let by_name = |n: &str| {
        pipeline
            .by_name(n)
            .ok_or_else(|| StillError::Gst(format!("no element {n}")))
    };
    let src = by_name("src")?
        .downcast::<gst_app::AppSrc>()
        .map_err(|_| StillError::Gst("src is not an appsrc".into()))?;
    src.set_caps(Some(&caps_for(
        input.chunks.first().map_or(0, |c| c.description),
    )?));
    src.set_is_live(false);
    src.set_block(true);
    // Without it appsrc ignores the samples' segment (the edit list).
    src.set_property("handle-segment-change", true);
    src.set_max_bytes(8 << 20);
    by_name("sink")?.set_property("location", out.to_string_lossy().as_ref());
    let ov = by_name("ov")?;
    let first = wall_at(&pieces, 0).unwrap_or(Time90k(0));
    ov.set_property("text", overlay_text(camera, first, &tz));
    let pad = ov
        .static_pad("video_sink")
        .ok_or_else(|| StillError::Gst("textoverlay without video_sink".into()))?;
    crate::masks::attach(&pad, masks);
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
    pipeline.set_state(gst::State::Playing).map_err(gst_err)?;
    let result = push_and_wait(&pipeline, &src, input, &caps_for);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn ns(t_90k: u64) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(t_90k * 100_000 / 9)
}

/// Pushes every sample (the segment = the edit list), then waits for EOS.
fn push_and_wait(
    pipeline: &gst::Pipeline,
    src: &gst_app::AppSrc,
    input: &Input,
    caps_for: &dyn Fn(u32) -> Result<gst::Caps, StillError>,
) -> Result<(), StillError> {
    // Generous: a loaded machine re-encodes SD at several times real time with ultrafast.
    let limit = Duration::from_secs(120 + 4 * input.duration_90k / 90_000);
    let deadline = Instant::now() + limit;
    let bus = pipeline
        .bus()
        .ok_or_else(|| StillError::Gst("pipeline without bus".into()))?;
    let bus_error = || {
        bus.pop_filtered(&[gst::MessageType::Error])
            .and_then(|msg| match msg.view() {
                gst::MessageView::Error(e) => {
                    Some(StillError::Gst(format!("{} ({:?})", e.error(), e.debug())))
                }
                _ => None,
            })
    };
    let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
    segment.set_start(ns(input.skip_90k));
    segment.set_stop(ns(input.skip_90k + input.duration_90k));
    let mut description = input.chunks.first().map_or(0, |c| c.description);
    let mut caps = caps_for(description)?;
    crate::samples::for_each_sample(input, |s| {
        if s.description != description {
            description = s.description;
            caps = caps_for(description)?;
        }
        let mut buf = gst::Buffer::from_slice(s.data);
        let b = buf
            .get_mut()
            .ok_or_else(|| StillError::Gst("new buffer not writable".into()))?;
        b.set_pts(ns(s.pts_90k));
        b.set_dts(ns(s.pts_90k));
        b.set_duration(ns(u64::from(s.info.duration_90k)));
        if !s.info.is_key {
            b.set_flags(gst::BufferFlags::DELTA_UNIT);
        }
        let sample = gst::Sample::builder()
            .buffer(&buf)
            .caps(&caps)
            .segment(&segment)
            .build();
        if let Err(e) = src.push_sample(&sample) {
            return Err(bus_error().unwrap_or_else(|| gst_err(e)));
        }
        if Instant::now() > deadline {
            return Err(StillError::Gst(format!(
                "the burned-in copy took more than {} s",
                limit.as_secs()
            )));
        }
        Ok(())
    })?;
    src.end_of_stream().map_err(gst_err)?;
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
                wall_start: Time90k(1_000 * vigie_core::TIME_UNITS_PER_SEC),
                duration_90k: 5 * 90_000,
            },
            Piece {
                presentation_90k: 5 * 90_000,
                wall_start: Time90k(2_000 * vigie_core::TIME_UNITS_PER_SEC),
                duration_90k: 5 * 90_000,
            },
        ];
        assert_eq!(
            wall_at(&pieces, 90_000),
            Some(Time90k(1_001 * vigie_core::TIME_UNITS_PER_SEC))
        );
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

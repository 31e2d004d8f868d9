//! The H.264 fallback for browsers that cannot decode a camera's H.265: frames (live, from the
//! hub) or a recorded range (from the segment files) decoded and re-encoded as low-latency
//! H.264, for the live view (`live?transcode=h264`) and playback (`video.mp4?…&transcode=h264`).
//!
//! `appsrc ! h265parse|h264parse ! avdec_h265|avdec_h264 ! videoconvert ! video/x-raw,format=I420
//! ! identity name=masks (the camera's privacy masks painted black) ! x264enc tune=zerolatency speed-preset=superfast bitrate=K ! h264parse
//! ! appsink` ([`pipeline_description`]). The recorded master is only read, never changed.
//!
//! Owns: the pipeline, turning its output into [`Encoded`] frames with their H.264
//! [`VideoParams`] (an `avc1` sample entry built from the encoder's `avcC`), the fragmented MP4
//! of a transcoded range ([`transcode_range`]), and the bound on concurrent transcodes
//! ([`TranscodeSlots`]). Does not own: where frames come from, journaling, HTTP.
//!
//! Without the `gst` feature the types exist but [`Transcoder::new`] and [`transcode_range`]
//! answer [`StillError::NotBuilt`].

use std::sync::Arc;

use bytes::Bytes;
use vigie_core::{Codec, VideoParams};

use crate::StillError;

/// Encoder settings of the fallback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TranscodeSettings {
    /// Target bitrate of x264enc (bounded by its VBV buffer), kbit/s.
    pub bitrate_kbps: u32,
    /// At most this many frames between key frames (a new live viewer waits at most that).
    pub key_interval_frames: u32,
}

impl Default for TranscodeSettings {
    fn default() -> Self {
        TranscodeSettings {
            bitrate_kbps: 2000,
            key_interval_frames: 50,
        }
    }
}

/// One H.264 access unit out of the encoder (length-prefixed NAL units, `avc` format).
#[derive(Clone, Debug)]
pub struct Encoded {
    pub data: Bytes,
    pub is_key: bool,
    /// Presentation time on the input's timeline (what was pushed), 90 kHz.
    pub pts_90k: u64,
    /// The buffer's duration when the encoder set one.
    pub duration_90k: Option<u32>,
    /// The H.264 parameters (`avc1` sample entry); the same `Arc` while they do not change.
    pub params: Arc<VideoParams>,
}

/// How many transcodes may run at once (`[live] max_transcodes`); a slot is held for the
/// lifetime of one transcoded live view or playback response.
#[derive(Clone, Debug)]
pub struct TranscodeSlots {
    max: usize,
    sem: Arc<tokio::sync::Semaphore>,
}

/// A held transcode slot, released when dropped.
#[derive(Debug)]
pub struct TranscodeSlot(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl TranscodeSlots {
    pub fn new(max: usize) -> TranscodeSlots {
        TranscodeSlots {
            max,
            sem: Arc::new(tokio::sync::Semaphore::new(max)),
        }
    }
    /// The configured bound.
    pub fn max(&self) -> usize {
        self.max
    }
    /// Transcodes running now.
    pub fn running(&self) -> usize {
        self.max - self.sem.available_permits()
    }
    /// A slot, or `None` when `max` transcodes are running.
    pub fn try_acquire(&self) -> Option<TranscodeSlot> {
        self.sem.clone().try_acquire_owned().ok().map(TranscodeSlot)
    }
}

/// The fallback's pipeline for an input `codec` (its elements are listed in
/// [`crate::gst_elements::GST_ELEMENTS`], checked by a test).
pub fn pipeline_description(codec: Codec, s: &TranscodeSettings) -> String {
    let (parse, dec) = match codec {
        Codec::H264 => ("h264parse", "avdec_h264"),
        Codec::H265 => ("h265parse", "avdec_h265"),
    };
    // vbv-buf-capacity (ms) bounds the bitrate's peaks: about one second at the target rate.
    format!(
        "appsrc name=src format=time ! {parse} ! {dec} ! videoconvert ! \
         capsfilter caps=video/x-raw,format=I420 ! \
         identity name=masks ! \
         x264enc name=enc tune=zerolatency speed-preset=superfast bitrate={} vbv-buf-capacity=1000 \
         key-int-max={} ! capsfilter caps=video/x-h264,profile=main ! h264parse ! \
         capsfilter caps=video/x-h264,stream-format=avc,alignment=au ! appsink name=sink sync=false",
        s.bitrate_kbps.max(1),
        s.key_interval_frames.max(1),
    )
    // Privacy masks attach at `identity name=masks` (raw I420 pictures, before the encoder).
}

/// `avc1.PPCCLL` from an `avcC` record.
pub fn rfc6381_of_avcc(avcc: &[u8]) -> Option<String> {
    let b = avcc.get(1..4)?;
    Some(format!("avc1.{:02X}{:02X}{:02X}", b[0], b[1], b[2]))
}

/// H.264 [`VideoParams`] with an `avc1` sample entry holding `avcc` verbatim.
pub fn avc_params(avcc: &[u8], width: u16, height: u16) -> Option<VideoParams> {
    let codec = rfc6381_of_avcc(avcc)?;
    let mut w = vigie_mp4::BoxWriter::new();
    w.boxed(b"avc1", |w| {
        w.zeros(6).u16(1).zeros(16).u16(width).u16(height);
        w.u32(0x0048_0000)
            .u32(0x0048_0000)
            .u32(0)
            .u16(1)
            .zeros(32)
            .u16(0x0018)
            .u16(0xffff);
        w.boxed(b"avcC", |w| {
            w.bytes(avcc);
        });
    });
    Some(VideoParams {
        codec: Codec::H264,
        rfc6381_codec: codec,
        width,
        height,
        pixel_aspect_ratio: (1, 1),
        sample_entry: Bytes::from(w.into_inner()),
    })
}

#[cfg(feature = "gst")]
pub use imp::{Transcoder, transcode_range};

#[cfg(not(feature = "gst"))]
pub use stub::{Transcoder, transcode_range};

#[cfg(not(feature = "gst"))]
mod stub {
    use super::*;

    /// Built without the `gst` feature: cannot be made.
    pub struct Transcoder(());

    impl Transcoder {
        pub fn new(
            _: &VideoParams,
            _: &TranscodeSettings,
            _: &[vigie_core::masks::Mask],
            _: bool,
            _: Box<dyn FnMut(Encoded) -> bool + Send>,
        ) -> Result<Transcoder, StillError> {
            Err(StillError::NotBuilt)
        }
        pub fn push(&mut self, _: &vigie_core::Frame, _: u64, _: u32) -> Result<(), StillError> {
            Err(StillError::NotBuilt)
        }
        pub fn push_au(
            &mut self,
            _: &Arc<VideoParams>,
            _: Bytes,
            _: bool,
            _: u64,
            _: u32,
        ) -> Result<(), StillError> {
            Err(StillError::NotBuilt)
        }
        pub fn queued_bytes(&self) -> u64 {
            0
        }
        pub fn error(&self) -> Option<StillError> {
            None
        }
        pub fn finish(&self) {}
    }

    pub fn transcode_range(
        _: &vigie_mp4::progressive::Input,
        _: Codec,
        _: &TranscodeSettings,
        _: &[vigie_core::masks::Mask],
        _: &mut dyn FnMut(Bytes) -> bool,
    ) -> Result<(), StillError> {
        Err(StillError::NotBuilt)
    }
}

#[cfg(feature = "gst")]
mod imp {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use gstreamer as gst;
    use gstreamer::prelude::*;
    use gstreamer_app as gst_app;
    use vigie_mp4::{SampleInfo, SegmentMeta};

    use super::*;
    use crate::still::{codec_data, gst_err, gst_init};

    fn ns(t_90k: u64) -> gst::ClockTime {
        gst::ClockTime::from_nseconds(t_90k * 100_000 / 9)
    }
    fn to_90k(t: gst::ClockTime) -> u64 {
        t.nseconds() * 9 / 100_000
    }

    fn input_caps(p: &VideoParams) -> Result<gst::Caps, StillError> {
        let cd = codec_data(&p.sample_entry)
            .ok_or_else(|| StillError::Params("sample entry without avcC/hvcC".into()))?;
        let (media, format) = match p.codec {
            Codec::H264 => ("video/x-h264", "avc"),
            Codec::H265 => ("video/x-h265", "hvc1"),
        };
        Ok(gst::Caps::builder(media)
            .field("stream-format", format)
            .field("alignment", "au")
            .field("codec_data", gst::Buffer::from_slice(cd.to_vec()))
            .build())
    }

    /// Params of the encoder's output caps, cached while the `avcC` does not change.
    fn output_params(
        caps: &gst::CapsRef,
        last: &mut Option<(Vec<u8>, Arc<VideoParams>)>,
    ) -> Option<Arc<VideoParams>> {
        let s = caps.structure(0)?;
        let cd = s.get::<gst::Buffer>("codec_data").ok()?;
        let map = cd.map_readable().ok()?;
        if let Some((bytes, p)) = last.as_ref()
            && bytes.as_slice() == map.as_slice()
        {
            return Some(p.clone());
        }
        let w = u16::try_from(s.get::<i32>("width").ok()?).ok()?;
        let h = u16::try_from(s.get::<i32>("height").ok()?).ok()?;
        let p = Arc::new(avc_params(map.as_slice(), w, h)?);
        *last = Some((map.as_slice().to_vec(), p.clone()));
        Some(p)
    }

    /// A running decode → H.264 encode pipeline. Frames go in with [`Transcoder::push`]; each
    /// encoded access unit is handed to the `out` callback given to [`Transcoder::new`] (on a
    /// GStreamer streaming thread). Stopped when dropped.
    pub struct Transcoder {
        pipeline: gst::Pipeline,
        src: gst_app::AppSrc,
        codec: Codec,
        input: Option<(Arc<VideoParams>, gst::Caps)>,
        segment: gst::FormattedSegment<gst::ClockTime>,
    }

    impl Transcoder {
        /// `live`: the source is a live stream (pushes never block: the caller bounds what it
        /// pushes); otherwise pushes block while the pipeline is full. `out` returning false
        /// stops the output (the consumer left).
        /// `masks`: the camera's privacy masks, painted black on every decoded picture
        /// before the encoder (at `identity name=masks`).
        pub fn new(
            first: &VideoParams,
            settings: &TranscodeSettings,
            masks: &[vigie_core::masks::Mask],
            live: bool,
            mut out: Box<dyn FnMut(Encoded) -> bool + Send>,
        ) -> Result<Transcoder, StillError> {
            gst_init()?;
            let desc = pipeline_description(first.codec, settings);
            let pipeline = gst::parse::launch(&desc)
                .map_err(|e| {
                    StillError::Gst(format!(
                        "{e} (are gstreamer1.0-plugins-ugly/-good/-bad/-base and -libav installed?)"
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
            src.set_caps(Some(&input_caps(first)?));
            // The privacy masks, on the raw pictures the encoder gets (fails closed: a picture
            // that cannot be painted is dropped, see `crate::masks`).
            crate::masks::attach_to_element(
                &by_name("masks")?,
                crate::masks::MaskSet::new(masks.to_vec()),
            );
            src.set_is_live(live);
            src.set_block(!live);
            src.set_property("handle-segment-change", true);
            // A live source is bounded by the caller (it checks `queued_bytes`); a range by
            // this (pushes block).
            src.set_max_bytes(if live { 64 << 20 } else { 8 << 20 });
            let sink = by_name("sink")?
                .downcast::<gst_app::AppSink>()
                .map_err(|_| StillError::Gst("sink is not an appsink".into()))?;
            let last = Mutex::new(None::<(Vec<u8>, Arc<VideoParams>)>);
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        let (Some(buf), Some(caps)) = (sample.buffer(), sample.caps()) else {
                            return Ok(gst::FlowSuccess::Ok);
                        };
                        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
                        let Some(params) = output_params(caps, &mut last) else {
                            return Err(gst::FlowError::NotNegotiated);
                        };
                        let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
                        let e = Encoded {
                            data: Bytes::copy_from_slice(map.as_slice()),
                            is_key: !buf.flags().contains(gst::BufferFlags::DELTA_UNIT),
                            // x264enc shifts timestamps by 1000 h (and its segment with
                            // them): the stream time is the input's.
                            pts_90k: buf
                                .pts()
                                .map(|pts| {
                                    sample
                                        .segment()
                                        .and_then(|s| s.downcast_ref::<gst::ClockTime>())
                                        .and_then(|s| s.to_stream_time(pts))
                                        .unwrap_or(pts)
                                })
                                .map_or(0, to_90k),
                            duration_90k: buf
                                .duration()
                                .map(|d| u32::try_from(to_90k(d)).unwrap_or(u32::MAX)),
                            params,
                        };
                        if out(e) {
                            Ok(gst::FlowSuccess::Ok)
                        } else {
                            Err(gst::FlowError::Flushing)
                        }
                    })
                    .build(),
            );
            pipeline.set_state(gst::State::Playing).map_err(gst_err)?;
            Ok(Transcoder {
                pipeline,
                src,
                codec: first.codec,
                input: None,
                segment: gst::FormattedSegment::new(),
            })
        }

        /// Clips the output to `[start_90k, stop_90k)` of the input timeline (an edit list).
        fn set_segment(&mut self, start_90k: u64, stop_90k: u64) {
            self.segment.set_start(ns(start_90k));
            self.segment.set_stop(ns(stop_90k));
        }

        /// Bytes pushed but not yet taken by the decoder.
        pub fn queued_bytes(&self) -> u64 {
            self.src.current_level_bytes()
        }

        /// Pushes one access unit (`data`: length-prefixed NAL units as stored) at `pts_90k` on
        /// the input timeline. A codec change (H.264 ↔ H.265) cannot be followed: error.
        pub fn push_au(
            &mut self,
            params: &Arc<VideoParams>,
            data: Bytes,
            is_key: bool,
            pts_90k: u64,
            duration_90k: u32,
        ) -> Result<(), StillError> {
            if params.codec != self.codec {
                return Err(StillError::Params(format!(
                    "the codec changed from {:?} to {:?}",
                    self.codec, params.codec
                )));
            }
            if !self
                .input
                .as_ref()
                .is_some_and(|(p, _)| Arc::ptr_eq(p, params) || **p == **params)
            {
                self.input = Some((params.clone(), input_caps(params)?));
            }
            let Some((_, caps)) = self.input.as_ref() else {
                return Err(StillError::Params("no input caps".into()));
            };
            let mut buf = gst::Buffer::from_slice(data);
            let b = buf
                .get_mut()
                .ok_or_else(|| StillError::Gst("new buffer not writable".into()))?;
            b.set_pts(ns(pts_90k));
            b.set_dts(ns(pts_90k));
            b.set_duration(ns(u64::from(duration_90k)));
            if !is_key {
                b.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
            let sample = gst::Sample::builder()
                .buffer(&buf)
                .caps(caps)
                .segment(&self.segment)
                .build();
            self.src
                .push_sample(&sample)
                .map(|_| ())
                .map_err(|e| self.error().unwrap_or_else(|| gst_err(e)))
        }

        /// Pushes a live frame.
        pub fn push(
            &mut self,
            frame: &vigie_core::Frame,
            pts_90k: u64,
            duration_90k: u32,
        ) -> Result<(), StillError> {
            self.push_au(
                &frame.params,
                frame.data.clone(),
                frame.is_key,
                pts_90k,
                duration_90k,
            )
        }

        /// The pipeline's first error, if one was posted.
        pub fn error(&self) -> Option<StillError> {
            let bus = self.pipeline.bus()?;
            let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
            match msg.view() {
                gst::MessageView::Error(e) => {
                    Some(StillError::Gst(format!("{} ({:?})", e.error(), e.debug())))
                }
                _ => None,
            }
        }

        /// No more input: the pipeline drains (the last frames come out), then ends.
        pub fn finish(&self) {
            let _ = self.src.end_of_stream();
        }
    }

    impl Drop for Transcoder {
        fn drop(&mut self) {
            let _ = self.pipeline.set_state(gst::State::Null);
        }
    }

    /// Writes encoded frames as a fragmented MP4: the init segment before the first frame,
    /// then one `moof`+`mdat` per GOP or per second, whichever comes first.
    struct FragmentWriter {
        params: Option<Arc<VideoParams>>,
        pending: Vec<Encoded>,
        /// The frame held back until the next one gives its exact duration.
        held: Option<Encoded>,
        last_duration_90k: u32,
        next_dts_90k: u64,
        sequence: u32,
    }

    impl FragmentWriter {
        fn new() -> FragmentWriter {
            FragmentWriter {
                params: None,
                pending: Vec::new(),
                held: None,
                last_duration_90k: 3600,
                next_dts_90k: 0,
                sequence: 0,
            }
        }

        /// Takes one frame; returns bytes ready to send (may be empty).
        fn frame(&mut self, e: Encoded) -> Result<Vec<Bytes>, StillError> {
            let mut out = Vec::new();
            if let Some(mut prev) = self.held.take() {
                let d = e.pts_90k.saturating_sub(prev.pts_90k);
                let d = if d == 0 || d > 900_000 {
                    prev.duration_90k.unwrap_or(self.last_duration_90k)
                } else {
                    d as u32
                };
                prev.duration_90k = Some(d);
                self.last_duration_90k = d;
                out.extend(self.queue(prev)?);
            }
            self.held = Some(e);
            Ok(out)
        }

        fn queue(&mut self, e: Encoded) -> Result<Vec<Bytes>, StillError> {
            let mut out = Vec::new();
            match &self.params {
                None => {
                    let init = vigie_mp4::init_segment(
                        &e.params,
                        &SegmentMeta {
                            camera: String::new(),
                            stream: String::new(),
                            segment_id: 0,
                            start_90k: 0,
                            session_id: 0,
                        },
                    );
                    out.push(Bytes::from(init));
                    self.params = Some(e.params.clone());
                }
                Some(p) if !Arc::ptr_eq(p, &e.params) && **p != *e.params => {
                    // One file, one sample description: a resolution change mid-range ends it.
                    return Err(StillError::Params(
                        "the encoded parameters changed within the range (ask for the sub-ranges)"
                            .into(),
                    ));
                }
                Some(_) => {}
            }
            let pending_90k: u64 = self
                .pending
                .iter()
                .map(|f| u64::from(f.duration_90k.unwrap_or(0)))
                .sum();
            if !self.pending.is_empty() && (e.is_key || pending_90k >= 90_000) {
                out.push(self.flush());
            }
            self.pending.push(e);
            Ok(out)
        }

        fn flush(&mut self) -> Bytes {
            let samples: Vec<SampleInfo> = self
                .pending
                .iter()
                .map(|f| SampleInfo {
                    duration_90k: f.duration_90k.unwrap_or(self.last_duration_90k),
                    bytes: u32::try_from(f.data.len()).unwrap_or(u32::MAX),
                    is_key: f.is_key,
                })
                .collect();
            self.sequence = self.sequence.wrapping_add(1);
            let header = vigie_mp4::fragment_header(self.sequence, self.next_dts_90k, &samples);
            let payload: usize = self.pending.iter().map(|f| f.data.len()).sum();
            let mut buf = Vec::with_capacity(header.len() + payload);
            buf.extend_from_slice(&header);
            for f in self.pending.drain(..) {
                buf.extend_from_slice(&f.data);
            }
            self.next_dts_90k += samples
                .iter()
                .map(|s| u64::from(s.duration_90k))
                .sum::<u64>();
            Bytes::from(buf)
        }

        /// The held frame and the last fragment.
        fn end(&mut self) -> Result<Vec<Bytes>, StillError> {
            let mut out = Vec::new();
            if let Some(mut e) = self.held.take() {
                e.duration_90k = Some(e.duration_90k.unwrap_or(self.last_duration_90k));
                out.extend(self.queue(e)?);
            }
            if !self.pending.is_empty() {
                out.push(self.flush());
            }
            Ok(out)
        }
    }

    /// Transcodes a recorded range (the samples of `input`, within its edit list, exactly what
    /// its untranscoded `video.mp4` presents) to a fragmented H.264 MP4 handed to `send` in
    /// order, as it is produced; stops early (Ok) when `send` returns false. Blocking: the
    /// samples are read from the segment files here while a GStreamer thread encodes.
    pub fn transcode_range(
        input: &vigie_mp4::progressive::Input,
        codec: Codec,
        settings: &TranscodeSettings,
        masks: &[vigie_core::masks::Mask],
        send: &mut dyn FnMut(Bytes) -> bool,
    ) -> Result<(), StillError> {
        let params_for = |description: u32| -> Result<Arc<VideoParams>, StillError> {
            let entry = input
                .sample_entries
                .get(description as usize)
                .ok_or_else(|| StillError::Params(format!("no sample entry {description}")))?;
            Ok(Arc::new(VideoParams {
                codec,
                rfc6381_codec: String::new(),
                width: input.width,
                height: input.height,
                pixel_aspect_ratio: (1, 1),
                sample_entry: entry.clone(),
            }))
        };
        let first = params_for(input.chunks.first().map_or(0, |c| c.description))?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Encoded>(64);
        let mut t = Transcoder::new(
            &first,
            settings,
            masks,
            false,
            Box::new(move |e| tx.send(e).is_ok()),
        )?;
        t.set_segment(input.skip_90k, input.skip_90k + input.duration_90k);
        // Generous: a loaded machine re-encodes SD at several times real time with superfast.
        let deadline = Instant::now() + Duration::from_secs(120 + 4 * input.duration_90k / 90_000);
        let pipeline = t.pipeline.clone();
        let bus = pipeline
            .bus()
            .ok_or_else(|| StillError::Gst("pipeline without bus".into()))?;
        let feed_failed = std::sync::atomic::AtomicBool::new(false);
        let result = std::thread::scope(|scope| {
            let t = &mut t;
            let feed_failed = &feed_failed;
            let feeder = scope.spawn(move || -> Result<(), StillError> {
                let r = feed(t, input, &params_for);
                match &r {
                    Ok(()) => t.finish(),
                    Err(_) => feed_failed.store(true, std::sync::atomic::Ordering::Release),
                }
                r
            });
            // Any early return stops the pipeline first, which unblocks the feeder's push.
            let stop = |r: Result<bool, StillError>| {
                let _ = pipeline.set_state(gst::State::Null);
                r
            };
            let mut w = FragmentWriter::new();
            loop {
                if Instant::now() > deadline {
                    return stop(Err(StillError::Gst("the transcode took too long".into())));
                }
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(e) => {
                        let bytes = match w.frame(e) {
                            Ok(b) => b,
                            Err(e) => return stop(Err(e)),
                        };
                        for b in bytes {
                            if !send(b) {
                                // The client left.
                                return stop(Ok(false));
                            }
                        }
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        // The channel is empty: the output is complete once EOS was posted
                        // (appsink hands every sample over before posting it).
                        if let Some(msg) =
                            bus.pop_filtered(&[gst::MessageType::Eos, gst::MessageType::Error])
                        {
                            if let gst::MessageView::Error(e) = msg.view() {
                                return stop(Err(StillError::Gst(format!(
                                    "{} ({:?})",
                                    e.error(),
                                    e.debug()
                                ))));
                            }
                            break;
                        }
                        if feed_failed.load(std::sync::atomic::Ordering::Acquire) {
                            break;
                        }
                    }
                }
            }
            match feeder.join() {
                Ok(r) => r?,
                Err(_) => return Err(StillError::Gst("the transcode feeder panicked".into())),
            }
            for b in w.end()? {
                if !send(b) {
                    return Ok(false);
                }
            }
            Ok(true)
        });
        let _ = pipeline.set_state(gst::State::Null);
        result.map(|_| ())
    }

    /// Pushes every sample of `input` (blocking while the pipeline is full).
    fn feed(
        t: &mut Transcoder,
        input: &vigie_mp4::progressive::Input,
        params_for: &dyn Fn(u32) -> Result<Arc<VideoParams>, StillError>,
    ) -> Result<(), StillError> {
        let mut description = u32::MAX;
        let mut params = None;
        crate::samples::for_each_sample(input, |s| {
            if s.description != description || params.is_none() {
                description = s.description;
                params = Some(params_for(description)?);
            }
            match params.as_ref() {
                Some(p) => t.push_au(p, s.data, s.info.is_key, s.pts_90k, s.info.duration_90k),
                None => Ok(()),
            }
        })
    }
}

#[cfg(all(test, feature = "gst"))]
mod tests {
    use super::*;
    use gstreamer as gst;
    use gstreamer::prelude::*;
    use gstreamer_app as gst_app;

    /// The fixture's frames written one after the other to a file in `dir`, as a recorded
    /// range of one chunk at 25 fps presenting `[skip_90k, skip_90k + duration_90k)`.
    fn fixture_input(
        dir: &std::path::Path,
        params: &VideoParams,
        frames: &[(Bytes, bool)],
        skip_90k: u64,
        duration_90k: u64,
    ) -> vigie_mp4::progressive::Input {
        let src = dir.join("samples.bin");
        let all: Vec<u8> = frames.iter().flat_map(|(f, _)| f.to_vec()).collect();
        std::fs::write(&src, &all).unwrap();
        vigie_mp4::progressive::Input {
            sample_entries: vec![params.sample_entry.clone()],
            width: 1280,
            height: 720,
            files: vec![src],
            samples: frames
                .iter()
                .map(|(f, k)| vigie_mp4::SampleInfo {
                    duration_90k: 3600,
                    bytes: f.len() as u32,
                    is_key: *k,
                })
                .collect(),
            chunks: vec![vigie_mp4::progressive::Chunk {
                file: 0,
                offset: 0,
                first_sample: 0,
                samples: frames.len() as u32,
                description: 0,
            }],
            skip_90k,
            duration_90k,
            cues: Vec::new(),
        }
    }
    use std::process::Command;

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/h265-main-1280x720-25fps-gop50.h265"
    );

    /// The fixture's first `n` access units as stored (length-prefixed, `hvc1`), with their
    /// `hvc1` sample entry: parsed by GStreamer's h265parse, independently of Vigie's code.
    fn h265_fixture(n: usize) -> (Arc<VideoParams>, Vec<(Bytes, bool)>) {
        gst::init().unwrap();
        let p = gst::parse::launch(&format!(
            "filesrc location={FIXTURE} ! h265parse ! \
             video/x-h265,stream-format=hvc1,alignment=au ! appsink name=sink sync=false"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let sink = p
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        p.set_state(gst::State::Playing).unwrap();
        let mut frames = Vec::new();
        let mut hvcc = None;
        while frames.len() < n {
            let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) else {
                break;
            };
            if hvcc.is_none() {
                let st = s.caps().unwrap().structure(0).unwrap();
                let cd = st.get::<gst::Buffer>("codec_data").unwrap();
                hvcc = Some(cd.map_readable().unwrap().as_slice().to_vec());
            }
            let b = s.buffer().unwrap();
            frames.push((
                Bytes::copy_from_slice(b.map_readable().unwrap().as_slice()),
                !b.flags().contains(gst::BufferFlags::DELTA_UNIT),
            ));
        }
        p.set_state(gst::State::Null).unwrap();
        let hvcc = hvcc.unwrap();
        let mut w = vigie_mp4::BoxWriter::new();
        w.boxed(b"hvc1", |w| {
            w.zeros(6).u16(1).zeros(16).u16(1280).u16(720);
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
        let params = Arc::new(VideoParams {
            codec: Codec::H265,
            rfc6381_codec: "hvc1.1.6.L93.B0".into(),
            width: 1280,
            height: 720,
            pixel_aspect_ratio: (1, 1),
            sample_entry: Bytes::from(w.into_inner()),
        });
        (params, frames)
    }

    fn ffprobe_codec(path: &std::path::Path) -> String {
        let o = Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
            .args([
                "-show_entries",
                "stream=codec_name,width,height,nb_read_frames",
            ])
            .args(["-of", "csv=p=0"])
            .arg(path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    }

    fn ffmpeg_decodes(path: &std::path::Path) {
        let o = Command::new("ffmpeg")
            .args(["-v", "error", "-xerror", "-i"])
            .arg(path)
            .args(["-f", "null", "-"])
            .output()
            .unwrap();
        assert!(
            o.status.success() && o.stderr.is_empty(),
            "ffmpeg -xerror: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// A recorded H.265 range becomes a fragmented H.264 MP4 with every presented picture,
    /// which ffmpeg decodes without error and ffprobe reads as H.264 at the source size.
    #[test]
    fn a_recorded_h265_range_becomes_decodable_h264() {
        let (params, frames) = h265_fixture(100);
        assert_eq!(frames.len(), 100);
        assert!(frames[0].1, "the fixture starts with a key frame");
        let dir = tempfile::tempdir().unwrap();
        // An edit list skipping 10 frames, presenting 80.
        let input = fixture_input(dir.path(), &params, &frames, 10 * 3600, 80 * 3600);
        let mut out = Vec::new();
        transcode_range(
            &input,
            Codec::H265,
            &TranscodeSettings::default(),
            &[],
            &mut |b| {
                out.extend_from_slice(&b);
                true
            },
        )
        .unwrap();
        let path = dir.path().join("out.mp4");
        std::fs::write(&path, &out).unwrap();
        ffmpeg_decodes(&path);
        assert_eq!(ffprobe_codec(&path), "h264,1280,720,80");
        // The masks hook is in the pipeline, before the encoder.
        let d = pipeline_description(Codec::H265, &TranscodeSettings::default());
        assert!(d.find("identity name=masks").unwrap() < d.find("x264enc").unwrap());
    }

    /// The camera's privacy masks are on every transcoded picture: the masked half decodes
    /// black (ffmpeg, luma), the other half keeps the picture.
    #[test]
    fn privacy_masks_cover_the_transcoded_pictures() {
        let (params, frames) = h265_fixture(25);
        let dir = tempfile::tempdir().unwrap();
        let input = fixture_input(dir.path(), &params, &frames, 0, 25 * 3600);
        let masks = [vigie_core::masks::Mask {
            name: "porte".into(),
            points: vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]],
        }];
        let mut out = Vec::new();
        transcode_range(
            &input,
            Codec::H265,
            &TranscodeSettings::default(),
            &masks,
            &mut |b| {
                out.extend_from_slice(&b);
                true
            },
        )
        .unwrap();
        let path = dir.path().join("masked.mp4");
        std::fs::write(&path, &out).unwrap();
        ffmpeg_decodes(&path);
        // Frame 12 as 8-bit luma.
        let o = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&path)
            .args(["-vf", "select=eq(n\\,12)", "-frames:v", "1"])
            .args(["-f", "rawvideo", "-pix_fmt", "gray", "-"])
            .output()
            .unwrap();
        assert_eq!(
            o.stdout.len(),
            1280 * 720,
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let (mut left_max, mut right_sum, mut right_n) = (0u8, 0u64, 0u64);
        for y in 8..712 {
            for x in 0..1280 {
                let v = o.stdout[y * 1280 + x];
                if x < 632 {
                    left_max = left_max.max(v);
                } else if x >= 648 {
                    right_sum += u64::from(v);
                    right_n += 1;
                }
            }
        }
        assert!(left_max <= 24, "masked half not black: max luma {left_max}");
        assert!(right_sum / right_n > 40, "unmasked half lost its picture");
    }

    /// A client that goes away stops the transcode (no hang, no error).
    #[test]
    fn a_consumer_that_leaves_stops_the_range() {
        let (params, frames) = h265_fixture(50);
        let dir = tempfile::tempdir().unwrap();
        let input = fixture_input(dir.path(), &params, &frames, 0, 50 * 3600);
        let mut n = 0;
        transcode_range(
            &input,
            Codec::H265,
            &TranscodeSettings::default(),
            &[],
            &mut |_| {
                n += 1;
                n < 2
            },
        )
        .unwrap();
        assert_eq!(n, 2);
    }

    /// Live frames pushed one by one come out as H.264 access units with `avc1` parameters,
    /// a key frame first, one per input frame.
    #[test]
    fn live_frames_come_out_as_h264() {
        let (params, frames) = h265_fixture(60);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut t = Transcoder::new(
            &params,
            &TranscodeSettings::default(),
            &[],
            true,
            Box::new(move |e| tx.send(e).is_ok()),
        )
        .unwrap();
        for (i, (data, key)) in frames.iter().enumerate() {
            t.push_au(&params, data.clone(), *key, i as u64 * 3600, 3600)
                .unwrap();
        }
        t.finish();
        let mut out = Vec::new();
        while let Ok(e) = rx.recv_timeout(std::time::Duration::from_secs(20)) {
            out.push(e);
            if out.len() == 60 {
                break;
            }
        }
        assert_eq!(out.len(), 60, "{:?}", t.error());
        assert!(out[0].is_key);
        assert_eq!(out[0].params.codec, Codec::H264);
        assert!(
            out[0].params.rfc6381_codec.starts_with("avc1.4D"),
            "main profile"
        );
        assert_eq!((out[0].params.width, out[0].params.height), (1280, 720));
        assert_eq!(out[59].pts_90k, 59 * 3600);
        // The sample entry is an avc1 box holding the avcC.
        assert_eq!(&out[0].params.sample_entry[4..8], b"avc1");
        assert!(crate::still::codec_data(&out[0].params.sample_entry).is_some());
    }

    #[test]
    fn slots_bound_concurrent_transcodes() {
        let s = TranscodeSlots::new(2);
        let a = s.try_acquire().unwrap();
        let _b = s.try_acquire().unwrap();
        assert!(s.try_acquire().is_none());
        assert_eq!(s.running(), 2);
        drop(a);
        assert!(s.try_acquire().is_some());
    }
}

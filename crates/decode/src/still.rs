//! JPEG stills (`snapshot.jpg`): the frame shown at an instant, decoded with GStreamer.
//!
//! Frames come from the store: the segment covering `at`, its sample table (file offset and size
//! of each frame), and its codec parameters (the `avc1`/`hvc1` sample entry, whose `avcC`/`hvcC`
//! body is GStreamer's `codec_data`). The frames from the key frame before `at` up to the frame
//! shown at `at` are read with one positioned read and pushed through
//! `appsrc ! avdec_h264|avdec_h265 ! videoconvert ! video/x-raw,format=RGB ! jpegenc ! appsink`;
//! the segment starts at the last frame, so the decoder clips the pictures before it and only
//! the wanted one is converted and encoded. Without `at`, the live hub's current GOP gives the
//! latest picture; the hub keeps a GOP only for streams watched in the last minute, so for the
//! others the request waits for the camera's next key frame (at most [`LATEST_KEY_WAIT`]); the
//! store is used when the stream is offline or no key frame came. At most
//! [`MAX_CONCURRENT_DECODES`] decodes run at once, on blocking threads.

use std::os::unix::fs::FileExt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::Semaphore;
use vigie_core::{Clock, Codec, StreamKey, Time90k, VideoParams};
use vigie_live::LiveHub;
use vigie_store::Store;

use crate::masks::MaskSet;

/// Decodes running at once (each takes a core for up to a GOP of frames).
pub const MAX_CONCURRENT_DECODES: usize = 2;
/// A decode taking longer than this fails.
const DECODE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long "latest" waits for the next key frame of a stream whose live hub keeps no GOP
/// (cameras send one every 1–4 s; past this, the last recorded picture is used).
pub const LATEST_KEY_WAIT: Duration = Duration::from_secs(5);
/// How far back "latest" looks in the store when the stream is offline.
const LATEST_LOOKBACK_90K: i64 = 31 * 86_400 * vigie_core::TIME_UNITS_PER_SEC;

static DECODES: Semaphore = Semaphore::const_new(MAX_CONCURRENT_DECODES);

pub use crate::StillError;

/// What to decode: frames from a key frame to the wanted one (the last).
#[derive(Clone, Debug)]
pub struct DecodeJob {
    pub params: Arc<VideoParams>,
    /// (sample bytes, is_key, duration_90k); the first is a key frame.
    pub frames: Vec<(Bytes, bool, u32)>,
}

/// The JPEG of the picture shown at `at` (or the latest one; "latest" is judged by `clock`).
pub async fn snapshot(
    store: Store,
    hub: Arc<LiveHub>,
    key: StreamKey,
    at: Option<Time90k>,
    clock: Arc<dyn Clock>,
) -> Result<Vec<u8>, StillError> {
    snapshot_masked(store, hub, key, at, clock, Arc::default()).await
}

/// [`snapshot`] with the camera's privacy masks painted black ([`crate::masks`]).
pub async fn snapshot_masked(
    store: Store,
    hub: Arc<LiveHub>,
    key: StreamKey,
    at: Option<Time90k>,
    clock: Arc<dyn Clock>,
    masks: Arc<MaskSet>,
) -> Result<Vec<u8>, StillError> {
    let job = match at {
        None => {
            let gop = hub.latest_gop(LATEST_KEY_WAIT).await;
            match gop.last() {
                Some(last) => DecodeJob {
                    params: last.frame.params.clone(),
                    frames: gop
                        .iter()
                        .filter(|f| f.frame.params == last.frame.params)
                        .map(|f| (f.frame.data.clone(), f.frame.is_key, f.duration_90k))
                        .collect(),
                },
                None => {
                    let store = store.clone();
                    let key = key.clone();
                    let now = clock.now();
                    blocking(move || job_from_store(&store, &key, None, now)).await??
                }
            }
        }
        Some(at) => {
            let (store2, key2) = (store.clone(), key.clone());
            let now = clock.now();
            match blocking(move || job_from_store(&store2, &key2, Some(at), now)).await? {
                Ok(job) => job,
                // Not indexed yet (up to `recording.index_interval_ms` + ~2 s behind live): the
                // live GOP may cover it if the stream is being watched.
                Err(StillError::NoRecording(m)) => {
                    job_from_gop(&hub, at).ok_or(StillError::NoRecording(m))?
                }
                Err(e) => return Err(e),
            }
        }
    };
    if job.frames.first().is_none_or(|f| !f.1) {
        return Err(StillError::NoRecording(
            "no key frame to decode from".into(),
        ));
    }
    let _permit = DECODES
        .acquire()
        .await
        .map_err(|e| StillError::Unavailable(e.to_string()))?;
    tracing::debug!(frames = job.frames.len(), "decoding a still");
    blocking(move || decode_to_jpeg_masked(&job, masks)).await?
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StillError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StillError::Unavailable(format!("still task failed: {e}")))
}

/// Frames of the live GOP up to the one shown at `at`.
fn job_from_gop(hub: &LiveHub, at: Time90k) -> Option<DecodeJob> {
    let gop = hub.current_gop();
    let first = gop.first()?;
    let last = gop.last()?;
    if at < first.wall || at.0 >= last.wall.0 + i64::from(last.duration_90k) {
        return None;
    }
    let n = gop.iter().take_while(|f| f.wall <= at).count();
    let params = first.frame.params.clone();
    Some(DecodeJob {
        frames: gop[..n]
            .iter()
            .filter(|f| f.frame.params == params)
            .map(|f| (f.frame.data.clone(), f.frame.is_key, f.duration_90k))
            .collect(),
        params,
    })
}

/// Frames from the store: the key frame before `at` (or the latest frame, looked for in the
/// month before `now`, the injected clock's time) up to it.
/// (Also used for the derived stills of evidence exports.)
pub fn job_from_store(
    store: &Store,
    key: &StreamKey,
    at: Option<Time90k>,
    now: Time90k,
) -> Result<DecodeJob, StillError> {
    let (t0, t1) = match at {
        Some(at) => (at, Time90k(at.0.saturating_add(1))),
        None => (
            Time90k(now.0 - LATEST_LOOKBACK_90K),
            Time90k(now.0 + 3_600 * vigie_core::TIME_UNITS_PER_SEC),
        ),
    };
    let segments = store.segments(key, t0, t1)?;
    let seg = match at {
        Some(at) => segments
            .iter()
            .rev()
            .find(|s| s.start <= at && at < s.end() && s.frames > 0),
        None => segments.iter().rev().find(|s| s.frames > 0),
    };
    let Some(seg) = seg else {
        return Err(StillError::NoRecording(match at {
            Some(at) => format!("nothing recorded on {key} at {}", at.to_rfc3339()),
            None => format!("nothing recorded on {key}"),
        }));
    };
    let idx = store
        .segment_index(seg.id)?
        .ok_or_else(|| StillError::NoRecording(format!("segment {} vanished", seg.id)))?;
    let params = store
        .params(seg.params_id)?
        .ok_or_else(|| StillError::Params(format!("no parameters {}", seg.params_id)))?;
    if idx.samples.is_empty() {
        return Err(StillError::NoRecording(format!(
            "segment {} is empty",
            seg.id
        )));
    }
    // The sample shown at `at`: media offset = wall offset scaled by media/wall duration.
    let target = match at {
        Some(at) => {
            let wall_off = i128::from((at - seg.start).0);
            let media = i128::from(seg.media_duration_90k.max(1));
            let wall = i128::from(seg.duration_90k.max(1));
            (wall_off * media / wall) as i64
        }
        None => i64::MAX,
    };
    let mut t = 0i64;
    let mut i = idx.samples.len() - 1;
    for (j, s) in idx.samples.iter().enumerate() {
        if target < t + i64::from(s.duration_90k) {
            i = j;
            break;
        }
        t += i64::from(s.duration_90k);
    }
    let k = (0..=i)
        .rev()
        .find(|&j| idx.samples[j].is_key)
        .ok_or_else(|| {
            StillError::NoRecording(format!("segment {} has no key frame before", seg.id))
        })?;
    // File offset of every sample, from the fragment table.
    let mut offsets = Vec::with_capacity(idx.samples.len());
    let mut n = 0usize;
    for f in &idx.fragments {
        let mut off = f.offset + u64::from(f.header_len);
        for s in idx.samples.iter().skip(n).take(f.samples as usize) {
            offsets.push(off);
            off += u64::from(s.bytes);
        }
        n += f.samples as usize;
    }
    if offsets.len() <= i {
        return Err(StillError::Params(format!(
            "fragment table of segment {} is short",
            seg.id
        )));
    }
    let start = offsets[k];
    let end = offsets[i] + u64::from(idx.samples[i].bytes);
    let io = |source| StillError::Io {
        path: seg.path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(&seg.path).map_err(io)?;
    let len = usize::try_from(end - start).map_err(|_| StillError::Params("huge GOP".into()))?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, start).map_err(io)?;
    let buf = Bytes::from(buf);
    let frames = (k..=i)
        .map(|j| {
            let s = &idx.samples[j];
            let a = (offsets[j] - start) as usize;
            (buf.slice(a..a + s.bytes as usize), s.is_key, s.duration_90k)
        })
        .collect();
    Ok(DecodeJob {
        params: Arc::new(params),
        frames,
    })
}

/// The body of the `avcC`/`hvcC` box inside an `avc1`/`hvc1` sample entry: GStreamer's
/// `codec_data`.
pub fn codec_data(sample_entry: &[u8]) -> Option<&[u8]> {
    // Sample entry header (8) + VisualSampleEntry fields (78), then child boxes.
    let mut pos = 86usize;
    while pos + 8 <= sample_entry.len() {
        let size = u32::from_be_bytes(sample_entry[pos..pos + 4].try_into().ok()?) as usize;
        let kind = &sample_entry[pos + 4..pos + 8];
        if size < 8 || pos + size > sample_entry.len() {
            return None;
        }
        if kind == b"avcC" || kind == b"hvcC" {
            return Some(&sample_entry[pos + 8..pos + size]);
        }
        pos += size;
    }
    None
}

pub(crate) fn gst_init() -> Result<(), StillError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| gst::init().map_err(|e| e.to_string()))
        .clone()
        .map_err(StillError::Gst)
}

pub(crate) fn gst_err(e: impl std::fmt::Display) -> StillError {
    StillError::Gst(e.to_string())
}

/// Decodes `job` and encodes its last frame as JPEG.
pub fn decode_to_jpeg(job: &DecodeJob) -> Result<Vec<u8>, StillError> {
    decode_to_jpeg_masked(job, Arc::default())
}

/// [`decode_to_jpeg`] with `masks` painted black on the picture before it is encoded.
pub fn decode_to_jpeg_masked(job: &DecodeJob, masks: Arc<MaskSet>) -> Result<Vec<u8>, StillError> {
    let (jpeg, pictures) = decode_counted(job, masks)?;
    tracing::debug!(frames = job.frames.len(), pictures, "still decoded");
    Ok(jpeg)
}

/// The JPEG and how many pictures reached the encoder (1: the frames before are clipped).
fn decode_counted(job: &DecodeJob, masks: Arc<MaskSet>) -> Result<(Vec<u8>, usize), StillError> {
    gst_init()?;
    let p = &job.params;
    let cd = codec_data(&p.sample_entry)
        .ok_or_else(|| StillError::Params("sample entry without avcC/hvcC".into()))?;
    let (media, format, decoder) = match p.codec {
        Codec::H264 => ("video/x-h264", "avc", "avdec_h264"),
        Codec::H265 => ("video/x-h265", "hvc1", "avdec_h265"),
    };
    let caps = gst::Caps::builder(media)
        .field("stream-format", format)
        .field("alignment", "au")
        .field("codec_data", gst::Buffer::from_slice(cd.to_vec()))
        .field("width", i32::from(p.width))
        .field("height", i32::from(p.height))
        .build();
    let total: u64 = job.frames.iter().map(|f| f.0.len() as u64).sum();
    let src = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .is_live(false)
        .handle_segment_change(true)
        .max_bytes(total + 1)
        .build();
    let make = |name: &str| {
        gst::ElementFactory::make(name).build().map_err(|e| {
            StillError::Gst(format!(
                "element {name}: {e} (is gstreamer1.0-libav / plugins-good installed?)"
            ))
        })
    };
    let dec = make(decoder)?;
    let convert = make("videoconvert")?;
    // RGB into jpegenc: libjpeg then does the full-range (JFIF) conversion itself. Fed the
    // decoder's limited-range I420, jpegenc would label it full range: washed-out colours.
    let rgb = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", "RGB")
                .build(),
        )
        .build()
        .map_err(gst_err)?;
    let enc = make("jpegenc")?;
    let sink = gst_app::AppSink::builder().sync(false).build();
    let pipeline = gst::Pipeline::new();
    pipeline
        .add_many([
            src.upcast_ref(),
            &dec,
            &convert,
            &rgb,
            &enc,
            sink.upcast_ref(),
        ])
        .map_err(gst_err)?;
    gst::Element::link_many([
        src.upcast_ref(),
        &dec,
        &convert,
        &rgb,
        &enc,
        sink.upcast_ref(),
    ])
    .map_err(gst_err)?;
    // On the RGB picture, before jpegenc: the masks are in every still.
    if let Some(pad) = rgb.static_pad("src") {
        crate::masks::attach(&pad, masks);
    } else if !masks.is_empty() {
        return Err(StillError::Gst("capsfilter without src pad".into()));
    }
    let result = run_pipeline(&pipeline, &src, &sink, job);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn run_pipeline(
    pipeline: &gst::Pipeline,
    src: &gst_app::AppSrc,
    sink: &gst_app::AppSink,
    job: &DecodeJob,
) -> Result<(Vec<u8>, usize), StillError> {
    pipeline.set_state(gst::State::Playing).map_err(gst_err)?;
    let ns = |t_90k: u64| gst::ClockTime::from_nseconds(t_90k * 100_000 / 9);
    // The segment starts inside the wanted (last) frame: the decoder decodes the frames before
    // it (references) but clips their output, so only the wanted picture is converted and
    // encoded.
    let total_90k: u64 = job.frames.iter().map(|f| u64::from(f.2)).sum();
    let last_90k = job.frames.last().map_or(0, |f| u64::from(f.2));
    let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
    segment.set_start(ns(total_90k - last_90k + last_90k / 2));
    let mut pts = 0u64;
    for (data, is_key, duration) in &job.frames {
        let mut buf = gst::Buffer::from_slice(data.clone());
        let b = buf
            .get_mut()
            .ok_or_else(|| StillError::Gst("new buffer not writable".into()))?;
        b.set_pts(ns(pts));
        b.set_dts(ns(pts));
        b.set_duration(ns(u64::from(*duration)));
        if !is_key {
            b.set_flags(gst::BufferFlags::DELTA_UNIT);
        }
        pts += u64::from(*duration);
        let sample = gst::Sample::builder()
            .buffer(&buf)
            .segment(&segment)
            .build();
        src.push_sample(&sample).map_err(gst_err)?;
    }
    src.end_of_stream().map_err(gst_err)?;
    let bus = pipeline
        .bus()
        .ok_or_else(|| StillError::Gst("pipeline without bus".into()))?;
    let deadline = Instant::now() + DECODE_TIMEOUT;
    let mut jpeg = None;
    let mut pictures = 0;
    loop {
        if let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(50)) {
            jpeg = Some(sample);
            pictures += 1;
            continue;
        }
        if sink.is_eos() {
            break;
        }
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error])
            && let gst::MessageView::Error(e) = msg.view()
        {
            return Err(StillError::Gst(format!("{} ({:?})", e.error(), e.debug())));
        }
        if Instant::now() > deadline {
            return Err(StillError::Gst(format!(
                "decoding took more than {} s",
                DECODE_TIMEOUT.as_secs()
            )));
        }
    }
    let sample = jpeg.ok_or_else(|| StillError::Gst("the decoder produced no picture".into()))?;
    let buffer = sample
        .buffer()
        .ok_or_else(|| StillError::Gst("sample without buffer".into()))?;
    let map = buffer.map_readable().map_err(gst_err)?;
    Ok((map.as_slice().to_vec(), pictures))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "Latest" is looked for in the month before the injected clock's time, not the host's:
    /// footage recorded (by a simulated clock) in 2001 is found when that clock says 2001.
    #[test]
    fn latest_is_judged_by_the_injected_clock() {
        use vigie_store::{StoreConfig, SyntheticSegment};
        let dir = tempfile::tempdir().unwrap();
        let t0 = Time90k::parse_rfc3339("2001-02-03T04:05:06Z").unwrap();
        let clock = Arc::new(vigie_core::SimulatedClock::new(t0));
        let store = Store::open(
            StoreConfig {
                data_dir: dir.path().to_owned(),
                recording: Default::default(),
                min_free_bytes: 0,
                index_cache_bytes: vigie_store::index::DEFAULT_CACHE_BYTES,
                verify_entries_per_s: vigie_store::verify::DEFAULT_VERIFY_ENTRIES_PER_S,
            },
            clock.clone(),
        )
        .unwrap();
        let key = StreamKey::new("cam", "main");
        let params = VideoParams {
            codec: Codec::H264,
            rfc6381_codec: "avc1.42C01E".into(),
            width: 640,
            height: 360,
            pixel_aspect_ratio: (1, 1),
            sample_entry: Bytes::from(vec![0u8; 100]),
        };
        let seg = SyntheticSegment {
            start: Time90k(0),
            wall_duration_90k: None,
            samples: (0..50)
                .map(|i| vigie_mp4::SampleInfo {
                    duration_90k: 3600,
                    bytes: 100,
                    is_key: i % 25 == 0,
                })
                .collect(),
            samples_per_fragment: 25,
            fragment_header_len: 100,
            init_len: 200,
            session_id: 1,
        };
        let enc = store.encode_synthetic_inline(&key, &params, &seg).unwrap();
        store.insert_synthetic(&enc, t0).unwrap();
        // A synthetic entry has no file: give it one, longer than its frames need.
        let info = &store.segments(&key, t0, Time90k(t0.0 + 90_000)).unwrap()[0];
        std::fs::create_dir_all(info.path.parent().unwrap()).unwrap();
        std::fs::write(&info.path, vec![0u8; 64 << 10]).unwrap();

        clock.set(Time90k(t0.0 + 3_600 * vigie_core::TIME_UNITS_PER_SEC));
        let job = job_from_store(&store, &key, None, clock.now()).unwrap();
        // The latest picture: from the last key frame (25) to the last frame (49).
        assert_eq!(job.frames.len(), 25);
        assert!(job.frames[0].1);
    }

    #[test]
    fn codec_data_is_found_in_a_sample_entry() {
        let mut e = vec![0u8; 86];
        e[4..8].copy_from_slice(b"avc1");
        e.extend_from_slice(&[0, 0, 0, 10, b'p', b'a', b's', b'p', 1, 2]);
        e.extend_from_slice(&[0, 0, 0, 11, b'a', b'v', b'c', b'C', 1, 0x42, 0xc0]);
        let n = e.len() as u32;
        e[..4].copy_from_slice(&n.to_be_bytes());
        assert_eq!(codec_data(&e), Some(&[1, 0x42, 0xc0][..]));
        assert_eq!(codec_data(&e[..90]), None);
    }

    #[test]
    fn decodes_only_the_wanted_frame_of_a_gop() {
        let data = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/h264-baseline-640x360-25fps-gop50.h264"
        ))
        .unwrap();
        let s = vigie_mp4::testutil::annexb_to_stream(&data, 640, 360, 25);
        assert!(s.frames[0].1);
        let job = DecodeJob {
            params: s.params.clone(),
            frames: s.frames[..38]
                .iter()
                .map(|(d, k)| (d.clone(), *k, 3600))
                .collect(),
        };
        let (jpeg, pictures) = decode_counted(&job, Arc::default()).unwrap();
        assert_eq!(&jpeg[..3], &[0xFF, 0xD8, 0xFF]);
        assert_eq!(
            pictures, 1,
            "frames before the wanted one must not be encoded"
        );
    }

    /// Luma (8-bit grey) of a JPEG, decoded by ffmpeg (an independent decoder).
    fn grey(jpeg: &[u8], w: usize, h: usize) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jpg");
        std::fs::write(&p, jpeg).unwrap();
        let out = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-xerror", "-i"])
            .arg(&p)
            .args(["-f", "rawvideo", "-pix_fmt", "gray", "-"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout.len(), w * h);
        out.stdout
    }

    /// Mean luma of the pixels of `g` (w wide) in the normalised box.
    fn mean(g: &[u8], w: usize, h: usize, (x0, y0, x1, y1): (f64, f64, f64, f64)) -> f64 {
        let (xa, xb) = ((x0 * w as f64) as usize, (x1 * w as f64) as usize);
        let (ya, yb) = ((y0 * h as f64) as usize, (y1 * h as f64) as usize);
        let mut sum = 0u64;
        for y in ya..yb {
            for x in xa..xb {
                sum += u64::from(g[y * w + x]);
            }
        }
        sum as f64 / ((xb - xa) * (yb - ya)) as f64
    }

    #[test]
    fn a_still_has_its_masked_zone_black_and_the_rest_of_the_picture_intact() {
        let data = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/h264-baseline-640x360-25fps-gop50.h264"
        ))
        .unwrap();
        let s = vigie_mp4::testutil::annexb_to_stream(&data, 640, 360, 25);
        let job = DecodeJob {
            params: s.params.clone(),
            frames: s.frames[..10]
                .iter()
                .map(|(d, k)| (d.clone(), *k, 3600))
                .collect(),
        };
        // A triangle and a quadrilateral ("porte", "fenêtre").
        let masks = crate::masks::MaskSet::new(vec![
            vigie_core::masks::Mask {
                name: "porte".into(),
                points: vec![[0.1, 0.1], [0.4, 0.1], [0.4, 0.6], [0.1, 0.6]],
            },
            vigie_core::masks::Mask {
                name: "fenêtre".into(),
                points: vec![[0.6, 0.5], [0.95, 0.5], [0.95, 0.95]],
            },
        ]);
        let plain = grey(&decode_to_jpeg(&job).unwrap(), 640, 360);
        let masked = grey(&decode_to_jpeg_masked(&job, masks).unwrap(), 640, 360);
        let door = (0.12, 0.12, 0.38, 0.58);
        // Inside the triangle, below its diagonal from (0.6,0.5) to (0.95,0.95).
        let window = (0.85, 0.75, 0.93, 0.8);
        let free = (0.5, 0.0, 0.6, 1.0);
        for zone in [door, window] {
            assert!(
                mean(&plain, 640, 360, zone) > 40.0,
                "fixture zone {zone:?} is dark already"
            );
            assert!(
                mean(&masked, 640, 360, zone) < 8.0,
                "masked zone {zone:?} mean {}",
                mean(&masked, 640, 360, zone)
            );
        }
        // Every pixel of the masked zones (tolerance for JPEG ringing at the edges: 3 px in).
        for y in 40..212 {
            for x in 67..253 {
                assert!(
                    masked[y * 640 + x] < 30,
                    "pixel ({x},{y}) = {}",
                    masked[y * 640 + x]
                );
            }
        }
        let (a, b) = (mean(&plain, 640, 360, free), mean(&masked, 640, 360, free));
        assert!((a - b).abs() < 3.0, "unmasked zone changed: {a} → {b}");
    }
}

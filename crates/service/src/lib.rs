//! The services the HTTP layer reaches recorded footage, live frames, stills and evidence
//! export jobs through, one small trait each, keyed by stream: [`Footage`], [`LiveSource`],
//! [`Stills`], [`ExportJobs`].
//!
//! Today every stream is recorded by this node and the `Local*` implementations call the
//! crates that own each feature (`vigie-store` and `vigie-footage`, `vigie-live`,
//! `vigie-decode`, `vigie-export`). A camera recorded by another node will be served by another
//! implementation of the same traits (dispatching on the [`StreamKey`]), without the handlers
//! changing. Storage administration (holds, health, statistics, metrics) is node-local and stays
//! on the store.
//!
//! The H.264 fallback for browsers without an H.265 decoder ([`Transcodes`]: live frames and
//! recorded ranges re-encoded, at most `[live] max_transcodes` at once) is here too.
//!
//! PTZ of ONVIF cameras ([`ptz::PtzControl`], with the per-camera operator lock) is here too.
//!
//! Blocking methods say so: callers run them off the async executor.

pub mod ptz;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use vigie_core::{Clock, StreamKey, Time90k};
use vigie_decode::StillError;
use vigie_export::InstallationKey;
use vigie_export::jobs::{
    Admission, Admit, AdmitRequest, ExportLimits, Exports, Job, JobContext, JobError, JobRecord,
};
use vigie_footage::{FootageError, PlaybackRequest, Prepared};
use vigie_live::LiveHub;
use vigie_mp4::progressive::VirtualMp4;
use vigie_store::{GapPolicy, PlaybackError, SegmentInfo, Span, Store, StoreError};

/// A boxed future, for the async methods of object-safe traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Recorded footage of a stream. All methods are blocking (index and file reads).
pub trait Footage: Send + Sync {
    /// Continuous recording in `[start, end)`, merged and clipped to the window.
    fn spans(&self, key: &StreamKey, start: Time90k, end: Time90k)
    -> Result<Vec<Span>, StoreError>;
    /// Segments overlapping `[start, end)`, oldest first.
    fn segments(
        &self,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
    ) -> Result<Vec<SegmentInfo>, StoreError>;
    /// At most `limit` segments overlapping `[start, end)`, and where the next page starts.
    fn segments_page(
        &self,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
        limit: usize,
    ) -> Result<(Vec<SegmentInfo>, Option<Time90k>), StoreError>;
    /// Whether `[start, end)` can be served as one file under `gaps` (one index scan).
    fn check(
        &self,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
        gaps: GapPolicy,
    ) -> Result<(), PlaybackError>;
    /// The virtual MP4 of a range, its strong ETag and recorded spans.
    fn prepare(&self, req: &PlaybackRequest) -> Result<Prepared, FootageError>;
    /// Bytes `[start, end)` of a prepared file, in order, to `send` until it returns false.
    fn read(
        &self,
        mp4: &VirtualMp4,
        start: u64,
        end: u64,
        send: &mut dyn FnMut(Bytes) -> bool,
    ) -> std::io::Result<()>;
}

/// Live frames of a stream: its hub, which viewers subscribe to.
pub trait LiveSource: Send + Sync {
    /// `None`: no live view of this stream here.
    fn hub(&self, key: &StreamKey) -> Option<Arc<LiveHub>>;
}

/// JPEG stills of a stream.
pub trait Stills: Send + Sync {
    /// The picture shown at `at` (or the latest one) as a JPEG.
    fn still(
        &self,
        key: &StreamKey,
        at: Option<Time90k>,
    ) -> BoxFuture<'_, Result<Vec<u8>, StillError>>;
}

/// Evidence export jobs.
pub trait ExportJobs: Send + Sync {
    /// Admits a new request against the job limits, the quota and the free-space floor, or
    /// refuses it (see [`Exports::admit`]). Blocking (reads the free space).
    fn admit(&self, req: &AdmitRequest) -> Result<Admit, JobError>;
    /// Registers an admitted job (status queued).
    fn create(&self, admission: Admission, rec: JobRecord) -> Result<Arc<Job>, JobError>;
    /// Runs a registered job in the background; it journals its outcome.
    fn start(&self, job: Arc<Job>);
    /// All jobs, newest first.
    fn list(&self) -> Vec<Arc<Job>>;
    fn get(&self, id: &str) -> Option<Arc<Job>>;
    /// Where the finished package of a job is.
    fn package_path(&self, id: &str) -> PathBuf;
    /// The key packages are signed with.
    fn signing_key(&self) -> &InstallationKey;
}

/// Why a transcode (the H.264 fallback) was not started.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    /// The bound is reached: try again later.
    #[error(
        "the server is already transcoding {running} of at most {max} streams ([live] max_transcodes): try again later"
    )]
    Busy { running: usize, max: usize },
    /// `[live] max_transcodes = 0`.
    #[error("the H.264 fallback is turned off on this server ([live] max_transcodes = 0)")]
    Off,
    /// Built without GStreamer.
    #[error("the H.264 fallback needs the `gst` cargo feature (GStreamer)")]
    NotBuilt,
}

/// A recorded range ready to be transcoded: the samples its `video.mp4` presents.
pub struct RangePlan {
    /// The camera (whose privacy masks are painted).
    pub camera: String,
    pub input: vigie_mp4::progressive::Input,
    pub codec: vigie_core::Codec,
    pub spans: Vec<Span>,
}

/// The H.264 fallback: re-encoding for browsers that cannot decode a stream's codec.
pub trait Transcodes: Send + Sync {
    /// Takes one of the `[live] max_transcodes` slots (held until dropped), or says why not.
    fn acquire(&self) -> Result<vigie_decode::transcode::TranscodeSlot, TranscodeError>;
    /// Encoder settings (`[live] transcode_bitrate_kbps`).
    fn settings(&self) -> vigie_decode::transcode::TranscodeSettings;
    /// Plans a recorded range exactly as `video.mp4` would serve it (404 nothing recorded,
    /// 409 gaps or a codec change). Blocking (index reads).
    fn plan(&self, req: &PlaybackRequest) -> Result<RangePlan, FootageError>;
    /// Transcodes a planned range to a fragmented H.264 MP4, handed to `send` as produced
    /// (until it returns false). Blocking (file reads, waits on the encoder).
    fn run(&self, plan: &RangePlan, send: &mut dyn FnMut(Bytes) -> bool) -> Result<(), StillError>;
    /// The camera's privacy masks, painted on every transcoded picture.
    fn masks(&self, camera: &str) -> Vec<vigie_core::masks::Mask>;
    /// (running, bound, refused since start), for `/metrics`.
    fn load(&self) -> (usize, usize, u64);
}

/// The H.264 fallback run here, on the store's footage.
pub struct LocalTranscodes {
    pub store: Store,
    pub slots: vigie_decode::transcode::TranscodeSlots,
    pub settings: vigie_decode::transcode::TranscodeSettings,
    /// Transcodes refused since start (bound reached).
    pub refused: std::sync::atomic::AtomicU64,
    /// Privacy masks per camera id (`[[cameras.masks]]`).
    pub masks: HashMap<String, Vec<vigie_core::masks::Mask>>,
}

impl LocalTranscodes {
    /// From `[live]` and the cameras' `[[cameras.masks]]`.
    pub fn from_config(store: Store, config: &vigie_core::config::Config) -> LocalTranscodes {
        let live = &config.live;
        LocalTranscodes {
            masks: config
                .cameras
                .iter()
                .filter(|c| !c.masks.is_empty())
                .map(|c| (c.id.clone(), c.masks.clone()))
                .collect(),
            store,
            slots: vigie_decode::transcode::TranscodeSlots::new(live.max_transcodes as usize),
            settings: vigie_decode::transcode::TranscodeSettings {
                bitrate_kbps: live.transcode_bitrate_kbps,
                ..Default::default()
            },
            refused: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Transcodes for LocalTranscodes {
    fn acquire(&self) -> Result<vigie_decode::transcode::TranscodeSlot, TranscodeError> {
        if !vigie_decode::AVAILABLE {
            return Err(TranscodeError::NotBuilt);
        }
        if self.slots.max() == 0 {
            return Err(TranscodeError::Off);
        }
        self.slots.try_acquire().ok_or_else(|| {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            TranscodeError::Busy {
                running: self.slots.running(),
                max: self.slots.max(),
            }
        })
    }
    fn masks(&self, camera: &str) -> Vec<vigie_core::masks::Mask> {
        self.masks.get(camera).cloned().unwrap_or_default()
    }
    fn load(&self) -> (usize, usize, u64) {
        (
            self.slots.running(),
            self.slots.max(),
            self.refused.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
    fn settings(&self) -> vigie_decode::transcode::TranscodeSettings {
        self.settings
    }
    fn plan(&self, req: &PlaybackRequest) -> Result<RangePlan, FootageError> {
        let map_err = |e: PlaybackError| {
            let message = e.to_string();
            match e {
                PlaybackError::Store(e) => FootageError::Store(e),
                PlaybackError::NoRecording => FootageError::NoRecording {
                    key: req.key.clone(),
                    start: req.start,
                    end: req.end,
                },
                PlaybackError::Gaps { spans } => FootageError::Conflict { message, spans },
                PlaybackError::CodecChange { ranges } => FootageError::Conflict {
                    message,
                    spans: ranges,
                },
            }
        };
        let cands = self
            .store
            .playback_candidates(&req.key, req.start, req.end)
            .map_err(map_err)?;
        cands.check(req.gaps).map_err(map_err)?;
        let plan = cands.plan(&self.store, req.gaps).map_err(map_err)?;
        let input = plan.materialise().map_err(|e| {
            FootageError::Store(StoreError::Corrupt {
                what: format!("sample tables of {}: {e}", req.key),
            })
        })?;
        // The sample entry's type says the codec (a codec change inside a range is a 409 above).
        let codec = match input.sample_entries.first().and_then(|e| e.get(4..8)) {
            Some(b"hvc1") | Some(b"hev1") => vigie_core::Codec::H265,
            _ => vigie_core::Codec::H264,
        };
        Ok(RangePlan {
            camera: req.key.camera.clone(),
            input,
            codec,
            spans: plan.spans,
        })
    }
    fn run(&self, plan: &RangePlan, send: &mut dyn FnMut(Bytes) -> bool) -> Result<(), StillError> {
        let masks = self.masks(&plan.camera);
        vigie_decode::transcode::transcode_range(
            &plan.input,
            plan.codec,
            &self.settings,
            &masks,
            send,
        )
    }
}

/// Footage of the streams this node records: its store.
pub struct LocalFootage(pub Store);

impl Footage for LocalFootage {
    fn spans(
        &self,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
    ) -> Result<Vec<Span>, StoreError> {
        self.0.spans(key, start, end)
    }
    fn segments(
        &self,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
    ) -> Result<Vec<SegmentInfo>, StoreError> {
        self.0.segments(key, start, end)
    }
    fn segments_page(
        &self,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
        limit: usize,
    ) -> Result<(Vec<SegmentInfo>, Option<Time90k>), StoreError> {
        self.0.segments_page(key, start, end, limit)
    }
    fn check(
        &self,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
        gaps: GapPolicy,
    ) -> Result<(), PlaybackError> {
        self.0
            .playback_candidates(key, start, end)
            .and_then(|c| c.check(gaps))
    }
    fn prepare(&self, req: &PlaybackRequest) -> Result<Prepared, FootageError> {
        vigie_footage::prepare(&self.0, req)
    }
    fn read(
        &self,
        mp4: &VirtualMp4,
        start: u64,
        end: u64,
        send: &mut dyn FnMut(Bytes) -> bool,
    ) -> std::io::Result<()> {
        vigie_footage::read_blocking(mp4, start, end, send)
    }
}

/// The live hubs of the streams this node ingests.
pub struct LocalLive(pub HashMap<StreamKey, Arc<LiveHub>>);

impl LiveSource for LocalLive {
    fn hub(&self, key: &StreamKey) -> Option<Arc<LiveHub>> {
        self.0.get(key).cloned()
    }
}

/// Stills decoded here (`vigie-decode`) from the store and the live hubs.
pub struct LocalStills {
    pub store: Store,
    pub live: Arc<dyn LiveSource>,
    pub clock: Arc<dyn Clock>,
    /// Privacy masks per camera id, painted on every still (`vigie_decode::masks`).
    pub masks: HashMap<String, Vec<vigie_core::masks::Mask>>,
}

impl Stills for LocalStills {
    fn still(
        &self,
        key: &StreamKey,
        at: Option<Time90k>,
    ) -> BoxFuture<'_, Result<Vec<u8>, StillError>> {
        let key = key.clone();
        Box::pin(async move {
            let hub = self
                .live
                .hub(&key)
                .ok_or_else(|| StillError::NoRecording(format!("no live view of {key}")))?;
            let masks = self.masks.get(&key.camera).cloned().unwrap_or_default();
            decode(self.store.clone(), hub, key, at, self.clock.clone(), masks).await
        })
    }
}

#[cfg(feature = "gst")]
async fn decode(
    store: Store,
    hub: Arc<LiveHub>,
    key: StreamKey,
    at: Option<Time90k>,
    clock: Arc<dyn Clock>,
    masks: Vec<vigie_core::masks::Mask>,
) -> Result<Vec<u8>, StillError> {
    let masks = vigie_decode::masks::MaskSet::new(masks);
    vigie_decode::still::snapshot_masked(store, hub, key, at, clock, masks).await
}

#[cfg(not(feature = "gst"))]
async fn decode(
    _: Store,
    _: Arc<LiveHub>,
    _: StreamKey,
    _: Option<Time90k>,
    _: Arc<dyn Clock>,
    _: Vec<vigie_core::masks::Mask>,
) -> Result<Vec<u8>, StillError> {
    Err(StillError::NotBuilt)
}

/// The export jobs of this installation, run here.
pub struct LocalExports {
    pub jobs: Exports,
    pub ctx: JobContext,
}

impl ExportJobs for LocalExports {
    fn admit(&self, req: &AdmitRequest) -> Result<Admit, JobError> {
        let free = vigie_export::jobs::free_bytes(self.jobs.dir());
        self.jobs
            .admit(req, ExportLimits::from_config(&self.ctx.config), free)
    }
    fn create(&self, admission: Admission, rec: JobRecord) -> Result<Arc<Job>, JobError> {
        self.jobs.create(admission, rec)
    }
    fn start(&self, job: Arc<Job>) {
        self.jobs.spawn(&self.ctx, job);
    }
    fn list(&self) -> Vec<Arc<Job>> {
        self.jobs.list()
    }
    fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs.get(id)
    }
    fn package_path(&self, id: &str) -> PathBuf {
        self.jobs.package_path(id)
    }
    fn signing_key(&self) -> &InstallationKey {
        self.jobs.key()
    }
}

//! Vigie's recording store: segment writer, on-disk format, sled index, crash recovery, reindex
//! and retention. See `crates/store/README.md` for the on-disk format and the durability policy.
//!
//! * [`Store`] is the handle (cheap to clone). [`Store::open`] opens or creates
//!   `data_dir/index` (sled) and `data_dir/recordings`, and runs crash recovery before returning.
//! * [`Store::start_writer`] returns a [`WriterHandle`], the [`FrameSink`] ingest pushes into.
//!   `push` never blocks: a byte-bounded queue sits between ingest and the stream's recorder,
//!   which cuts segments and fragments and does all file I/O on one of a few shared writer
//!   threads (`writer::pool`).
//! * Listing ([`Store::segments`], [`Store::spans`]) is answered from the index with one range
//!   scan per call, never a directory walk.
//! * [`Store::playback_plan`] turns the index of a time range into the input of the virtual
//!   progressive MP4 builder ([`playback`]).
//! * [`Store::apply_retention`] deletes whole segments by age per stream and under a free-space
//!   floor, oldest first, and journals every deletion ([`Store::deletions`]).
//! * A full disk never bricks it ([`space`], `retention`): writers check free space before each
//!   segment and fragment (below the floor they wake [`Store::free_space_pass`] through
//!   [`Store::space_wanted`]; below min(floor/2, 256 MiB) they stop with `disk-full`), a reserve
//!   file lets the index write and be reopened after a failed write, and opening on a full disk
//!   frees space before anything records. [`Store::storage_health`] says what is wrong.
//!
//! Durability contract: a process crash loses at most 1.25 × `fragment_ms` of each stream, a
//! power cut at most `flush_interval_ms` + 1.25 × `fragment_ms`; the index never describes bytes
//! not yet synced, and at open recovery trusts the self-describing files over the index. How
//! (store-wide sync epochs, their fallbacks) and why: `crates/store/README.md`, "Durability
//! policy", the one home of that design.
//!
//! Wall-clock time: run starts cancel receive buffering, segments of a run are contiguous, and
//! camera drift is slewed by at most ±500 ppm (see [`timing`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use vigie_core::config::RecordingConfig;
use vigie_core::{Clock, Codec, StreamKey, Time90k, VideoParams};

pub mod blocks;
pub mod edge;
pub mod events;
pub mod filetables;
pub mod freespace;
pub mod holds;
pub mod index;
pub mod layout;
pub mod playback;
mod recovery;
mod reindex;
mod retention;
pub mod sampletable;
pub mod space;
pub mod spans;
mod synthetic;
mod timed;
pub mod timing;
pub mod verify;
mod writer;

pub use edge::EdgeFill;
pub use events::CameraEvent;
pub use freespace::{DiskSpace, FakeFreeSpace, FreeSpace, Statvfs};
pub use holds::{Hold, NewHold, Release};
pub use playback::{
    Candidates, GapPolicy, IndexPieces, Piece, PlannedSegment, PlaybackError, PlaybackPlan,
};
pub use recovery::{RECENT_ENTRIES_PER_STREAM, RecoveryReport};
pub use sampletable::FragmentLoc;
pub use space::{StorageHealth, StorageState};
pub use spans::{SPAN_MERGE_TOLERANCE_90K, Span, SpanMerger, gaps, merge_spans};
pub use synthetic::SyntheticSegment;
pub use verify::VerifyStatus;
pub use vigie_mp4::SampleInfo;
#[cfg(any(test, feature = "test-support"))]
pub use writer::pool::SyncFault;
pub use writer::{WriterHandle, WriterStats};

use index::{Index, SegmentEntry};
use layout::Layout;

/// Errors of the store, with the path or stream they concern.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("index: {context}: {source}")]
    Index {
        context: String,
        source: sled::Error,
    },
    #[error("index: {0}")]
    Sled(#[from] sled::Error),
    #[error("index entry encoding: {0}")]
    Encoding(#[from] postcard::Error),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another process (normally a running `vigie run`) has the index open.
    #[error(
        "the index {path} is in use by another process: is Vigie already running with this data_dir?"
    )]
    InUse { path: PathBuf },
    /// The index is being reopened after a failed write (see `space`).
    #[error("the index is unavailable: {0}")]
    IndexUnavailable(String),
    #[error("corrupt index: {what}")]
    Corrupt { what: String },
    #[error("stream {key} is already being recorded")]
    AlreadyRecording { key: StreamKey },
    #[error("the store is shutting down")]
    ShuttingDown,
    /// A request the store refuses (e.g. a hold whose end is not after its start).
    #[error("{0}")]
    Invalid(String),
    /// Holds placed elsewhere (a cluster) may cover footage here and are not known now:
    /// nothing is deleted ([`Store::set_external_holds`]).
    #[error("deleting nothing: the cluster's legal holds are not known here ({0})")]
    HoldsUnknown(String),
}

/// Legal holds kept outside this store (by the other nodes of a cluster), which retention
/// honours as its own.
#[derive(Clone, Debug, Default)]
pub enum ExternalHolds {
    /// A single node: there are none.
    #[default]
    None,
    /// There may be some, not known now (why): retention deletes nothing.
    Unknown(String),
    /// These (active ones only matter).
    Known(Vec<Hold>),
}

impl StoreError {
    pub(crate) fn io(
        op: &'static str,
        path: &Path,
    ) -> impl FnOnce(std::io::Error) -> StoreError + use<> {
        let path = path.to_owned();
        move |source| StoreError::Io { op, path, source }
    }
}

impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(e: sled::transaction::TransactionError<StoreError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

/// What the store needs from the configuration.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub recording: RecordingConfig,
    /// Free-space floor of the data directory's file system.
    pub min_free_bytes: u64,
    /// sled's page cache ([`index::DEFAULT_CACHE_BYTES`] by default).
    pub index_cache_bytes: u64,
    /// Throttle of the background verification of the history ([`verify`]), entries (one
    /// `stat` each) per second ([`verify::DEFAULT_VERIFY_ENTRIES_PER_S`] by default).
    pub verify_entries_per_s: u32,
}

impl StoreConfig {
    /// A configuration with the default index cache and verification rate.
    pub fn new(data_dir: PathBuf, recording: RecordingConfig, min_free_bytes: u64) -> Self {
        StoreConfig {
            data_dir,
            recording,
            min_free_bytes,
            index_cache_bytes: index::DEFAULT_CACHE_BYTES,
            verify_entries_per_s: verify::DEFAULT_VERIFY_ENTRIES_PER_S,
        }
    }
}

/// One recorded segment, as listed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SegmentInfo {
    pub id: u64,
    pub key: StreamKey,
    /// Wall-clock start.
    pub start: Time90k,
    /// Wall-clock duration (media duration slewed toward the host clock, ≤ ±500 ppm).
    pub duration_90k: i64,
    /// Sum of frame durations from RTP timestamps.
    pub media_duration_90k: i64,
    /// Indexed (durable) length of the file.
    pub bytes: u64,
    pub frames: u32,
    pub key_frames: u32,
    pub width: u16,
    pub height: u16,
    pub codec: Codec,
    /// Frames per second measured over the segment (frames / media duration).
    pub fps: f64,
    pub path: PathBuf,
    /// Still being written (the listing covers only its durable, indexed part).
    pub open: bool,
    /// Why it ended: `rotation`, `params-change`, `ts-jump`, `session-ended: <reason>`,
    /// `writer-overflow`, `max-duration`, `shutdown`, `io-error: <error>`, `recovered`.
    pub end_reason: Option<String>,
    /// Key of the codec parameters in the index ([`Store::params`]).
    pub params_id: u64,
    pub session_id: u64,
}

impl SegmentInfo {
    pub fn end(&self) -> Time90k {
        Time90k(self.start.0.saturating_add(self.duration_90k))
    }
}

/// Retention: days to keep per stream. Streams not listed (e.g. removed from the configuration)
/// are kept for the legal ceiling, [`vigie_core::config::LEGAL_MAX_RETENTION_DAYS`]. The
/// free-space floor comes from [`StoreConfig::min_free_bytes`].
#[derive(Clone, Debug, Default)]
pub struct RetentionPolicy {
    pub per_stream_days: HashMap<StreamKey, u32>,
}

/// A destroyed segment, journaled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionRecord {
    pub camera: String,
    pub stream: String,
    pub segment_id: u64,
    pub start: Time90k,
    pub end: Time90k,
    pub bytes: u64,
    /// When it was deleted (store clock).
    pub when: Time90k,
    /// `age > N days` or `free space below floor`.
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RetentionReport {
    pub deleted: Vec<DeletionRecord>,
    pub bytes_deleted: u64,
    /// Free bytes after the pass.
    pub free_bytes: u64,
    /// True when the floor could not be reached (nothing left to delete but open or held
    /// segments).
    pub floor_unreachable: bool,
    /// Segments kept past their retention because a legal hold covers them.
    pub held_kept: u64,
    /// True when recording is stopped because what is left on disk is held.
    pub recording_blocked: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StoreStats {
    pub free_bytes: u64,
    pub total_bytes: u64,
    /// Since the store was opened.
    pub segments_deleted: u64,
    pub bytes_deleted: u64,
    /// Since the store was opened: `syncfs` calls that made every writer's files durable at
    /// once (one per filesystem per `flush_interval_ms`), and `fdatasync` calls on one segment
    /// file (segment close, `flush_interval_ms = 0`, fallbacks; see `writer::pool::SyncEpochs`).
    pub syncfs_calls: u64,
    pub fdatasync_calls: u64,
    pub writers: BTreeMap<StreamKey, WriterStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReindexReport {
    pub files_indexed: u64,
    /// Files cut back to their last complete fragment (a trailer was added).
    pub files_repaired: u64,
    /// Files with no complete fragment, deleted.
    pub files_deleted: u64,
    /// Files that could not be used (unreadable, foreign); left in place.
    pub problems: Vec<String>,
}

/// The full index of one segment: what a virtual-MP4 builder needs.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentIndex {
    pub info: SegmentInfo,
    pub init_len: u64,
    pub samples: Vec<SampleInfo>,
    pub fragments: Vec<FragmentLoc>,
}

/// The recording store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub cfg: StoreConfig,
    pub layout: Layout,
    /// The index. `None` only while it is being reopened after a failed write ([`Inner::index`]).
    pub index_cell: std::sync::RwLock<Option<Index>>,
    /// Free space where bytes are written, the reserve, the storage state ([`space`]).
    pub space: space::Space,
    /// Index writes that failed or may not have reached the disk before the index failed,
    /// replayed after it is reopened ([`retention::reopen_index`]).
    pub replay: Mutex<retention::Replay>,
    pub clock: Arc<dyn Clock>,
    pub free: Arc<dyn FreeSpace>,
    pub next_segment_id: AtomicU64,
    pub writers: Mutex<HashMap<StreamKey, writer::WriterSlot>>,
    /// The threads the writers run on.
    pub pool: writer::pool::Pool,
    /// Writers whose handle was dropped and that were replaced before their thread ended.
    pub retired: Mutex<Vec<writer::WriterSlot>>,
    pub counters: Mutex<BTreeMap<StreamKey, Arc<writer::WriterCounters>>>,
    pub segments_deleted: AtomicU64,
    pub bytes_deleted: AtomicU64,
    pub fdatasync_calls: AtomicU64,
    pub retention_lock: Mutex<()>,
    pub shutting_down: AtomicBool,
    pub recovery: RecoveryReport,
    /// Background verification of the history ([`verify`]).
    pub verify: Arc<verify::VerifyProgress>,
    pub verify_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set by retention when the free-space floor cannot be reached without deleting held
    /// footage: writers stop recording (see [`holds`]).
    pub recording_blocked: Arc<AtomicBool>,
    /// Deletions made by [`Store::open`] to get above the floor, for the caller to journal.
    pub startup_deletions: Mutex<Vec<DeletionRecord>>,
    /// Active holds as last read by retention: what may not be deleted when the index cannot
    /// be read (see `retention`).
    pub holds_cache: Mutex<Option<Vec<Hold>>>,
    /// Holds kept elsewhere (cluster), honoured by retention.
    pub external_holds: Mutex<ExternalHolds>,
    /// When the read of [`Inner::external_holds`] began (`None`: not tracked). When tracked,
    /// retention decides only on holds read after it began deciding (see `retention`).
    pub external_holds_read_at: Mutex<Option<std::time::Instant>>,
    /// Notified when a hold is placed or released here (a cluster publishes it at once).
    pub holds_changed: Arc<tokio::sync::Notify>,
    /// Segment files abandoned for lack of space (or an index failure), to index from their
    /// content once there is room (`retention::free_space_pass`).
    pub reread: Mutex<Vec<(StreamKey, PathBuf)>>,
}

impl Inner {
    /// The index (a cheap clone of its handles). Callers never keep it: the index is replaced
    /// when it is reopened after a failed write.
    pub fn index(&self) -> Result<Index, StoreError> {
        self.index_cell
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| StoreError::IndexUnavailable("being reopened".into()))
    }

    /// Notes an index error: an I/O error means sled refuses every write until reopened.
    pub fn index_failed(&self, e: &StoreError) {
        if space::is_sled_io(e) {
            self.space.set_index_error(e.to_string());
        }
    }

    pub fn alloc_segment_id(&self) -> Result<u64, StoreError> {
        let id = self.next_segment_id.fetch_add(1, Ordering::SeqCst);
        self.index()?.set_next_segment_id(id + 1)?;
        Ok(id)
    }

    pub fn info(&self, key: &StreamKey, e: &SegmentEntry) -> SegmentInfo {
        entry_info(&self.layout, key, e)
    }
}

/// [`head_info`] of a full entry (its head: the tables play no part).
pub(crate) fn entry_info(layout: &Layout, key: &StreamKey, e: &SegmentEntry) -> SegmentInfo {
    head_info(layout, key, &e.head)
}

pub(crate) fn head_info(layout: &Layout, key: &StreamKey, e: &index::EntryHead) -> SegmentInfo {
    SegmentInfo {
        id: e.id,
        key: key.clone(),
        start: e.start(),
        duration_90k: e.wall_duration_90k,
        media_duration_90k: e.media_duration_90k,
        bytes: e.bytes,
        frames: e.frames,
        key_frames: e.key_frames,
        width: e.width,
        height: e.height,
        codec: e.codec,
        fps: if e.media_duration_90k > 0 {
            f64::from(e.frames) * 90_000.0 / e.media_duration_90k as f64
        } else {
            0.0
        },
        path: layout.segment_path(key, e.id, e.start()),
        open: e.open,
        end_reason: e.end_reason.clone(),
        params_id: e.params_id,
        session_id: e.session_id,
    }
}

impl Store {
    /// Opens/creates `data_dir/index` (sled) and `data_dir/recordings`; runs crash recovery
    /// before returning.
    pub fn open(cfg: StoreConfig, clock: Arc<dyn Clock>) -> Result<Store, StoreError> {
        Self::open_with(cfg, clock, Arc::new(Statvfs))
    }

    /// [`Store::open`] with an injected free-space source (tests of the free-space floor).
    pub fn open_with(
        cfg: StoreConfig,
        clock: Arc<dyn Clock>,
        free: Arc<dyn FreeSpace>,
    ) -> Result<Store, StoreError> {
        Self::open_full(cfg, clock, free, ExternalHolds::None)
    }

    /// [`Store::open`] for a node of a cluster: holds may be kept elsewhere, so until
    /// [`Store::set_external_holds`] says which, nothing is deleted (not even to start above
    /// the free-space floor).
    pub fn open_clustered(cfg: StoreConfig, clock: Arc<dyn Clock>) -> Result<Store, StoreError> {
        Self::open_full(
            cfg,
            clock,
            Arc::new(Statvfs),
            ExternalHolds::Unknown("the cluster's holds are not read yet".into()),
        )
    }

    fn open_full(
        cfg: StoreConfig,
        clock: Arc<dyn Clock>,
        free: Arc<dyn FreeSpace>,
        external_holds: ExternalHolds,
    ) -> Result<Store, StoreError> {
        let layout = Layout::new(&cfg.data_dir);
        let space = space::Space::new(&cfg.data_dir, cfg.min_free_bytes, free.clone());
        // On a full disk, opening the index (sled writes a snapshot), recovery (trailers) and
        // the first deletions need a little room: the reserve gives it (see `space`).
        if space.free_bytes() < cfg.min_free_bytes.max(1) {
            space.release_reserve("starting below the free-space floor");
        }
        layout::create_dir_all_durable(&layout.recordings_dir())
            .map_err(StoreError::io("creating", &layout.recordings_dir()))?;
        let started = std::time::Instant::now();
        let index = retention::open_index_on_full_disk(&layout, &space, cfg.index_cache_bytes)?;
        // sled replays its log since its last open here: the part of a start that still grows
        // (with the index written since then), see docs/BENCHMARKS.md "Restart".
        let index_open_ms = started.elapsed().as_millis() as u64;
        let (report, deferred) = recovery::recover(&index, &layout)?;
        let recovery_ms = started.elapsed().as_millis() as u64 - index_open_ms;
        tracing::info!(
            index_open_ms,
            recovery_ms,
            "index opened and start-up recovery done"
        );
        if report != RecoveryReport::default() {
            tracing::info!(?report, "crash recovery done");
        }
        let next = index.next_segment_id()?;
        let pool = writer::pool::Pool::new(
            cfg.recording.fragment_ms.max(1),
            cfg.recording.flush_interval_ms,
        );
        let verify_rate = cfg.verify_entries_per_s;
        let inner = Inner {
            pool,
            cfg,
            layout,
            index_cell: std::sync::RwLock::new(Some(index)),
            space,
            replay: Mutex::new(retention::Replay::default()),
            clock,
            free,
            next_segment_id: AtomicU64::new(next),
            writers: Mutex::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
            counters: Mutex::new(BTreeMap::new()),
            segments_deleted: AtomicU64::new(0),
            bytes_deleted: AtomicU64::new(0),
            fdatasync_calls: AtomicU64::new(0),
            retention_lock: Mutex::new(()),
            shutting_down: AtomicBool::new(false),
            recovery: report,
            verify: Arc::new(verify::VerifyProgress::default()),
            verify_thread: Mutex::new(None),
            recording_blocked: Arc::new(AtomicBool::new(false)),
            startup_deletions: Mutex::new(Vec::new()),
            holds_cache: Mutex::new(None),
            external_holds: Mutex::new(external_holds),
            external_holds_read_at: Mutex::new(None),
            holds_changed: Arc::new(tokio::sync::Notify::new()),
            reread: Mutex::new(Vec::new()),
        };
        let store = Store {
            inner: Arc::new(inner),
        };
        // Everything older than what recovery checked: verified while recording runs.
        let thread = verify::spawn(
            Arc::downgrade(&store.inner),
            store.inner.verify.clone(),
            deferred,
            verify_rate,
        )
        .map_err(StoreError::io(
            "starting the verification thread in",
            &store.inner.cfg.data_dir,
        ))?;
        if let Ok(mut t) = store.inner.verify_thread.lock() {
            *t = Some(thread);
        }
        // Free space first (before any writer starts), then keep the reserve. A failure here
        // must not keep the recorder from starting: writers stop on their own while there is
        // no room, and the retention loop tries again.
        match retention::free_space_pass(&store.inner) {
            Ok(r) => {
                if !r.deleted.is_empty() {
                    tracing::warn!(
                        segments = r.deleted.len(),
                        bytes = r.bytes_deleted,
                        free = r.free_bytes,
                        "started below the free-space floor: oldest footage deleted before recording"
                    );
                }
                if let Ok(mut d) = store.inner.startup_deletions.lock() {
                    d.extend(r.deleted);
                }
            }
            Err(e @ StoreError::HoldsUnknown(_)) => {
                tracing::info!(reason = %e, "free-space pass at start-up deferred")
            }
            Err(e) => tracing::error!(error = %e, "free-space pass at start-up failed"),
        }
        Ok(store)
    }

    /// What crash recovery did when the store was opened (before recording resumed).
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// Progress of the background verification of the older history ([`verify`]).
    pub fn verification(&self) -> VerifyStatus {
        self.inner.verify.status()
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.cfg
    }

    /// Starts the writer of one stream; `stagger` = (index, count) of this stream among all
    /// streams, to stagger rotations (offset = segment_seconds × index / count).
    pub fn start_writer(
        &self,
        key: StreamKey,
        stagger: (u32, u32),
    ) -> Result<WriterHandle, StoreError> {
        writer::start(&self.inner, key, stagger)
    }

    /// Starts a writer for footage of `key` from the past (a camera's own recording, see
    /// [`edge`]) beside the stream's live writer: its frames' `recv` is the wall-clock time they
    /// were recorded at, so its segments land in the past of the same stream, in the same index.
    /// It has its own queue and counters (the stream's live statistics do not include it);
    /// shutdown waits for it like for any writer. Dropping the handle closes its segment.
    pub fn start_edge_writer(&self, key: StreamKey) -> Result<WriterHandle, StoreError> {
        writer::start_edge(&self.inner, key)
    }

    /// Segments of `key` overlapping [start, end), oldest first: one sled range scan decoding
    /// entry heads only. The result grows with the window: long windows should use
    /// [`Store::segments_page`] or [`Store::for_each_segment`].
    pub fn segments(
        &self,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
    ) -> Result<Vec<SegmentInfo>, StoreError> {
        let mut out = Vec::new();
        self.for_each_segment(key, start, end, |s| {
            out.push(s);
            true
        })?;
        Ok(out)
    }

    /// At most `limit` segments of `key` overlapping [start, end), oldest first, and the start
    /// to ask for the next page from (`None`: the listing is complete).
    pub fn segments_page(
        &self,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
        limit: usize,
    ) -> Result<(Vec<SegmentInfo>, Option<Time90k>), StoreError> {
        let mut out = Vec::new();
        let mut next = None;
        self.for_each_segment(key, start, end, |s| {
            if out.len() >= limit {
                next = Some(s.start);
                return false;
            }
            out.push(s);
            true
        })?;
        Ok((out, next))
    }

    /// Streams the segments of `key` overlapping [start, end), oldest first, to `f` until it
    /// returns false: one range scan, heads only, nothing accumulated.
    pub fn for_each_segment(
        &self,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
        mut f: impl FnMut(SegmentInfo) -> bool,
    ) -> Result<(), StoreError> {
        let Some(sid) = self.inner.index()?.existing_stream_id(key)? else {
            return Ok(());
        };
        for r in self
            .inner
            .index()?
            .segments_overlapping_heads(sid, start, end)
        {
            let (h, _) = r?;
            if !f(head_info(&self.inner.layout, key, &h)) {
                break;
            }
        }
        Ok(())
    }

    /// The footage of `key` held here: start of its oldest segment, end of its newest (two
    /// index seeks; gaps between are not looked at). `None`: nothing held.
    pub fn coverage(&self, key: &StreamKey) -> Result<Option<(Time90k, Time90k)>, StoreError> {
        let index = self.inner.index()?;
        let Some(sid) = index.existing_stream_id(key)? else {
            return Ok(None);
        };
        Ok(index
            .stream_extent(sid)?
            .map(|(first, last)| (first.start(), last.end())))
    }

    /// Continuous recording of `key` in [start, end): contiguous segments merged, clipped to
    /// the window; gaps are what lies between spans. Streams the index (memory grows with the
    /// spans, not the segments).
    pub fn spans(
        &self,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
    ) -> Result<Vec<Span>, StoreError> {
        let mut m = SpanMerger::new(start, end);
        self.for_each_segment(key, start, end, |s| {
            m.push(s.start, s.end());
            true
        })?;
        Ok(m.finish())
    }

    /// One segment by id.
    pub fn segment(&self, id: u64) -> Result<Option<SegmentInfo>, StoreError> {
        let Some(e) = self.inner.index()?.get_segment(id)? else {
            return Ok(None);
        };
        let key = self
            .inner
            .index()?
            .stream_key(e.stream_id)?
            .ok_or_else(|| StoreError::Corrupt {
                what: format!("segment {id} refers to unknown stream id {}", e.stream_id),
            })?;
        Ok(Some(self.inner.info(&key, &e)))
    }

    /// A segment's sample table and fragment offsets (for the virtual MP4 builder).
    pub fn segment_index(&self, id: u64) -> Result<Option<SegmentIndex>, StoreError> {
        let Some(mut e) = self.inner.index()?.get_segment(id)? else {
            return Ok(None);
        };
        let info = self.segment(id)?.ok_or(StoreError::Corrupt {
            what: format!("segment {id} vanished"),
        })?;
        crate::filetables::load(&mut e, &info.path)?;
        let corrupt = || StoreError::Corrupt {
            what: format!("sample table of segment {id}"),
        };
        let samples = sampletable::decode_samples(&e.sample_table).ok_or_else(corrupt)?;
        let fragments =
            sampletable::decode_fragments(&e.fragment_table, u64::from(e.init_len), &samples)
                .ok_or_else(corrupt)?;
        Ok(Some(SegmentIndex {
            info,
            init_len: u64::from(e.init_len),
            samples,
            fragments,
        }))
    }

    /// Codec parameters by id ([`SegmentInfo::params_id`]).
    pub fn params(&self, params_id: u64) -> Result<Option<VideoParams>, StoreError> {
        self.inner.index()?.get_params(params_id)
    }

    /// Places a legal hold on `[start, end)` of a stream: its segments are exempt from retention
    /// until the hold is released.
    pub fn place_hold(&self, new: NewHold) -> Result<Hold, StoreError> {
        let h = holds::place(&self.inner, new)?;
        self.inner.holds_changed.notify_one();
        Ok(h)
    }

    /// Notified each time a hold is placed or released here (a cluster node publishes its
    /// holds at once rather than at its next tick).
    pub fn holds_changed(&self) -> Arc<tokio::sync::Notify> {
        self.inner.holds_changed.clone()
    }

    /// Releases a hold (`Ok(None)`: no such hold; releasing twice keeps the first release).
    pub fn release_hold(
        &self,
        id: u64,
        by: &str,
        reason: &str,
    ) -> Result<Option<Hold>, StoreError> {
        let r = holds::release(&self.inner, id, by, reason)?;
        self.inner.holds_changed.notify_one();
        Ok(r)
    }

    /// All holds, active and released, by id.
    pub fn holds(&self) -> Result<Vec<Hold>, StoreError> {
        holds::list(&self.inner)
    }

    /// Sets the holds kept elsewhere (the other nodes of a cluster): retention honours them
    /// as its own, and deletes nothing while they are [`ExternalHolds::Unknown`].
    pub fn set_external_holds(&self, holds: ExternalHolds) {
        self.set_external_holds_read_at(holds, None);
    }

    /// [`Store::set_external_holds`] with the instant their read began. With `Some`, retention
    /// honours them only if that read began after retention began deciding what to delete (it
    /// waits up to 3 s for a newer read, else deletes nothing):
    /// a hold placed elsewhere and published before a deletion decision is always seen.
    pub fn set_external_holds_read_at(
        &self,
        holds: ExternalHolds,
        read_at: Option<std::time::Instant>,
    ) {
        if let Ok(mut t) = self.inner.external_holds_read_at.lock() {
            *t = read_at;
        }
        if matches!(holds, ExternalHolds::Unknown(_))
            && let Ok(mut c) = self.inner.holds_cache.lock()
        {
            // The emergency deletion (index unwritable) reads this cache: unknown → none.
            *c = None;
        }
        if let Ok(mut h) = self.inner.external_holds.lock() {
            *h = holds;
        }
    }

    /// True while recording is stopped because the disk is full of held footage.
    pub fn recording_blocked(&self) -> bool {
        self.inner.recording_blocked.load(Ordering::Relaxed)
    }

    /// Applies retention: age per stream, then the free-space floor, oldest first; camera
    /// events go by age with their stream's footage.
    pub fn apply_retention(&self, policy: &RetentionPolicy) -> Result<RetentionReport, StoreError> {
        let report = retention::apply(&self.inner, policy)?;
        let purged = events::purge(&self.inner, &policy.per_stream_days, self.inner.clock.now())?;
        if purged > 0 {
            tracing::info!(purged, "camera events past retention deleted");
        }
        let purged = edge::purge(&self.inner, &policy.per_stream_days, self.inner.clock.now())?;
        if purged > 0 {
            tracing::info!(purged, "edge fill records past retention deleted");
        }
        Ok(report)
    }

    /// Records that `[fill.start, fill.end)` of a stream was filled from the camera's own
    /// recording ([`edge`]).
    pub fn record_edge_fill(&self, fill: &EdgeFill) -> Result<(), StoreError> {
        edge::record(&self.inner, fill)
    }

    /// The edge fills of a stream overlapping `[start, end)`, oldest first.
    pub fn edge_fills(
        &self,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
    ) -> Result<Vec<EdgeFill>, StoreError> {
        edge::list(&self.inner, key, start, end)
    }

    /// Stores a camera event (ONVIF alarm…) of a stream.
    pub fn record_event(&self, ev: &CameraEvent) -> Result<(), StoreError> {
        events::record(&self.inner, ev)
    }

    /// Events of a stream in `[start, end)`, oldest first, optionally of one kind (at most
    /// [`events::MAX_EVENTS_LISTED`]).
    pub fn events(
        &self,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
        kind: Option<&str>,
    ) -> Result<Vec<CameraEvent>, StoreError> {
        events::list(&self.inner, key, start, end, kind)
    }

    /// The free-space floor alone (what a writer below the floor asks for): reopens the index
    /// if a write of it failed, deletes the oldest unheld footage while below the floor, then
    /// re-creates the reserve. Cheap when nothing is to be done.
    pub fn free_space_pass(&self) -> Result<RetentionReport, StoreError> {
        retention::free_space_pass(&self.inner)
    }

    /// Resolves when a writer found free space below the floor or the index failed: run
    /// [`Store::free_space_pass`] then, not at the next periodic pass.
    pub async fn space_wanted(&self) {
        self.inner.space.wanted().await
    }

    /// What is wrong with the storage, if anything (for health).
    pub fn storage_health(&self) -> StorageHealth {
        self.inner.space.health(self.recording_blocked())
    }

    /// Deletions [`Store::open`] made to start above the floor (once; for the access journal,
    /// which opens after the store).
    pub fn take_startup_deletions(&self) -> Vec<DeletionRecord> {
        self.inner
            .startup_deletions
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    /// Deletions journaled with `when` in [start, end), oldest first.
    pub fn deletions(
        &self,
        start: Time90k,
        end: Time90k,
    ) -> Result<Vec<DeletionRecord>, StoreError> {
        self.inner.index()?.deletions_between(start, end)
    }

    pub fn stats(&self) -> StoreStats {
        let space = self
            .inner
            .free
            .space(&self.inner.cfg.data_dir)
            .unwrap_or_default();
        let counters = self
            .inner
            .counters
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        StoreStats {
            free_bytes: space.free_bytes,
            total_bytes: space.total_bytes,
            segments_deleted: self.inner.segments_deleted.load(Ordering::Relaxed),
            bytes_deleted: self.inner.bytes_deleted.load(Ordering::Relaxed),
            syncfs_calls: self.inner.pool.epochs.syncfs_calls(),
            fdatasync_calls: self.inner.fdatasync_calls.load(Ordering::Relaxed),
            writers: counters
                .iter()
                .map(|(k, c)| (k.clone(), c.snapshot()))
                .collect(),
        }
    }

    /// Closes every writer's segment cleanly (reason `shutdown`) and flushes the index. Call
    /// after ingest has stopped.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let mut slots: Vec<writer::WriterSlot> = match self.inner.writers.lock() {
            Ok(mut w) => w.drain().map(|(_, s)| s).collect(),
            Err(_) => Vec::new(),
        };
        if let Ok(mut r) = self.inner.retired.lock() {
            slots.append(&mut r);
        }
        for s in &slots {
            s.request_shutdown();
        }
        for s in slots {
            s.wait().await;
        }
        // The verification thread sees `shutting_down` within one batch or 100 ms.
        let verifier = self
            .inner
            .verify_thread
            .lock()
            .ok()
            .and_then(|mut t| t.take());
        if let Some(t) = verifier
            && tokio::task::spawn_blocking(move || t.join()).await.is_err()
        {
            tracing::error!("the verification thread panicked");
        }
        let flushed = match self.inner.index() {
            Ok(ix) => ix
                .db
                .flush_async()
                .await
                .map(|_| ())
                .map_err(StoreError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = flushed {
            tracing::error!(error = %e, "flushing the index at shutdown");
        }
    }

    /// Rebuilds the whole index from the segment files alone (the store must be closed).
    pub fn reindex(cfg: &StoreConfig) -> Result<ReindexReport, StoreError> {
        reindex::reindex(cfg)
    }

    /// Forces a sync path this machine cannot produce (a failing `syncfs`, an old kernel), for
    /// tests. Set it before starting writers. Feature `test-support` only.
    #[cfg(any(test, feature = "test-support"))]
    pub fn set_sync_fault_for_test(&self, fault: SyncFault) {
        self.inner.pool.epochs.set_fault(fault);
    }

    /// Simulates a crash for tests: drops every writer without closing its segment (files keep
    /// what was written, the index what was synced). Use with [`Store::shutdown`] to wait.
    /// Feature `test-support` only.
    #[cfg(any(test, feature = "test-support"))]
    pub fn crash_writers_for_test(&self) {
        if let Ok(w) = self.inner.writers.lock() {
            for s in w.values() {
                s.request_crash();
            }
        }
    }
}

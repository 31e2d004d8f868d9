//! The per-stream writer: a non-blocking [`FrameSink`] in front of a byte-bounded queue, and the
//! [`Recorder`] that cuts segments and fragments and does the stream's file I/O on one of the
//! shared writer threads ([`pool`]).
//!
//! Ingest calls [`WriterHandle::push`] from the RTSP read loop. It never blocks and never waits
//! on I/O: it only checks an atomic byte count and sends on a channel. When the queue would
//! exceed `writer_queue_bytes`, the frame is dropped, an overflow marker is queued (the writer
//! ends the segment with reason `writer-overflow`) and frames are dropped until the next key
//! frame that fits.
//!
//! Segmentation rules (applied by the recorder, per frame):
//! * a segment starts on a key frame; frames before the first key frame are discarded;
//! * a new session id, or media time going backwards or jumping by more than 10 s, ends the
//!   segment (`ts-jump`); different codec parameters end it (`params-change`);
//! * at the first key frame whose wall-clock position passes the segment's rotation boundary, the
//!   segment rotates (`rotation`). Boundaries are `k × segment_seconds + offset` with
//!   `offset = segment_seconds × index / count` (staggered across streams), at least half a
//!   segment after the segment's start; a segment that reaches 5 min without a key frame ends
//!   (`max-duration`) and recording resumes at the next key frame;
//! * `SessionEnded` ends it (`session-ended: <reason>`), shutdown too (`shutdown`);
//! * no room to write (checked before a segment starts and before each fragment,
//!   `space::Space::admit`) ends it (`disk-full`, `disk-full-held`, `index-error`); recording
//!   starts again at the first key frame once there is room.
//!
//! A frame's duration is the next frame's `media_90k` minus its own; the last frame of a segment
//! that ends without a successor gets the previous frame's duration. Fragments are cut at frame
//! boundaries once they reach `fragment_ms` (or earlier, at a key frame past 60 % of it), and
//! written with one vectored write of the `moof`/`mdat` header plus the frames' `Bytes`.
//! Durability (the store-wide `syncfs` epochs, or `fdatasync`) and index updates: see
//! [`Recorder::group_step`], [`pool::SyncEpochs`] and [`Recorder::sync`].

pub(crate) mod pool;

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::Thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use vigie_core::{Frame, FrameSink, StreamEvent, StreamKey, Time90k, VideoParams};
use vigie_mp4::{SampleInfo, SegmentMeta, SegmentTrailer};

use crate::index::SegmentEntry;
use crate::layout::{create_dir_all_durable, fsync_dir};
use crate::sampletable::{FragmentLoc, FragmentTableEncoder, SampleTableEncoder, TableCounts};
use crate::timing::{StartEstimator, wall_duration};
use crate::{Inner, StoreError};

/// A media-time step larger than this is a discontinuity.
pub const MAX_FRAME_GAP_90K: i64 = 10 * vigie_core::TIME_UNITS_PER_SEC;
/// Hard cap on a segment's media duration.
pub const HARD_CAP_90K: i64 = 300 * vigie_core::TIME_UNITS_PER_SEC;
/// Duration given to the only frame of a one-frame segment.
const DEFAULT_FRAME_DURATION: u32 = 3_000;
/// The sending side of a writer's queue. The writer thread wakes on its own once per tick (see
/// [`pool`]), so a message reaches it at once only when the sender unparks it: [`Tx::send`]
/// (control messages) always does; frames use [`Tx::send_quiet`] and wake it only when the
/// queue passes half of `writer_queue_bytes`.
#[derive(Clone)]
struct Tx {
    tx: mpsc::Sender<Msg>,
    thread: Thread,
}

impl Tx {
    fn send(&self, m: Msg) -> Result<(), mpsc::SendError<Msg>> {
        let r = self.tx.send(m);
        self.thread.unpark();
        r
    }
    fn send_quiet(&self, m: Msg) -> Result<(), mpsc::SendError<Msg>> {
        self.tx.send(m)
    }
}

pub(crate) enum Msg {
    Frame(Frame),
    SessionEnded {
        session_id: u64,
        reason: String,
    },
    Overflow,
    /// Recording stopped: the disk is full of held footage (see `holds`).
    Blocked,
    Stop,
    /// Test hook: a simulated `kill -9` of the writer.
    #[cfg(any(test, feature = "test-support"))]
    Crash,
    /// Test hook: the writer sleeps, like a stalled disk.
    #[cfg(any(test, feature = "test-support"))]
    Stall(Duration),
    /// Test hook: answered once every message queued before it has been handled.
    #[cfg(any(test, feature = "test-support"))]
    Barrier(mpsc::Sender<()>),
}

/// Per-stream counters (shared between ingest's push, the writer thread and stats).
#[derive(Debug, Default)]
pub(crate) struct WriterCounters {
    frames: AtomicU64,
    bytes: AtomicU64,
    segments: AtomicU64,
    overflows: AtomicU64,
    dropped_frames: AtomicU64,
    discarded_frames: AtomicU64,
    io_errors: AtomicU64,
    queue_bytes: AtomicU64,
    recording: AtomicBool,
}

/// A snapshot of a writer's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WriterStats {
    /// Frames written to segment files.
    pub frames: u64,
    /// Bytes written (headers included).
    pub bytes: u64,
    /// Segments started.
    pub segments: u64,
    /// Times the queue overflowed.
    pub overflows: u64,
    /// Frames dropped because of an overflow.
    pub dropped_frames: u64,
    /// Frames discarded while waiting for a key frame (session start, after a discontinuity).
    pub discarded_frames: u64,
    pub io_errors: u64,
    /// Bytes waiting in the queue now.
    pub queue_bytes: u64,
    /// A segment is open.
    pub recording: bool,
}

impl WriterCounters {
    pub fn snapshot(&self) -> WriterStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WriterStats {
            frames: l(&self.frames),
            bytes: l(&self.bytes),
            segments: l(&self.segments),
            overflows: l(&self.overflows),
            dropped_frames: l(&self.dropped_frames),
            discarded_frames: l(&self.discarded_frames),
            io_errors: l(&self.io_errors),
            queue_bytes: l(&self.queue_bytes),
            recording: self.recording.load(Ordering::Relaxed),
        }
    }
}

/// The store's handle on a running writer.
pub(crate) struct WriterSlot {
    tx: Tx,
    done: Option<tokio::sync::oneshot::Receiver<()>>,
    generation: u64,
    /// False once the [`WriterHandle`] was dropped (its recorder is finishing its segment).
    handle_alive: Arc<AtomicBool>,
}

impl WriterSlot {
    pub fn request_shutdown(&self) {
        let _ = self.tx.send(Msg::Stop);
    }
    #[cfg(any(test, feature = "test-support"))]
    pub fn request_crash(&self) {
        let _ = self.tx.send(Msg::Crash);
    }
    pub async fn wait(self) {
        if let Some(rx) = self.done {
            let _ = rx.await;
        }
    }
}

/// Where ingest pushes one stream's events. Dropping it closes the open segment (`shutdown`)
/// and stops the writer.
pub struct WriterHandle {
    key: StreamKey,
    alive: Arc<AtomicBool>,
    tx: Tx,
    limit: u64,
    dropping: AtomicBool,
    counters: Arc<WriterCounters>,
    /// Shared with retention: set while the disk is full of held footage.
    blocked: Arc<AtomicBool>,
    /// This handle has already ended its segment for the current blocked period.
    blocked_seen: AtomicBool,
}

impl WriterHandle {
    pub fn key(&self) -> &StreamKey {
        &self.key
    }
    pub fn stats(&self) -> WriterStats {
        self.counters.snapshot()
    }
    /// Test hook: makes the writer thread sleep for `d`, as if the disk stalled (the other
    /// streams of that thread wait too, as they would for a stalled disk). Feature
    /// `test-support` only.
    #[cfg(any(test, feature = "test-support"))]
    pub fn stall_for_test(&self, d: Duration) {
        let _ = self.tx.send(Msg::Stall(d));
    }
    /// Test hook: returns once the writer has handled everything pushed before this call
    /// (at most 30 s). Feature `test-support` only.
    #[cfg(any(test, feature = "test-support"))]
    pub fn wait_handled_for_test(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Msg::Barrier(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(30));
        }
    }
}

impl FrameSink for WriterHandle {
    fn push(&self, event: StreamEvent) {
        let c = &self.counters;
        match event {
            StreamEvent::Frame(f) => {
                if self.blocked.load(Ordering::Relaxed) {
                    if !self.blocked_seen.swap(true, Ordering::Relaxed) {
                        let _ = self.tx.send(Msg::Blocked);
                    }
                    c.dropped_frames.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if self.blocked_seen.swap(false, Ordering::Relaxed) {
                    // Resume at a key frame.
                    self.dropping.store(true, Ordering::Relaxed);
                }
                if self.dropping.load(Ordering::Relaxed) && !f.is_key {
                    c.dropped_frames.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let len = f.data.len() as u64;
                let queued = c.queue_bytes.load(Ordering::Acquire);
                if queued + len > self.limit {
                    if !self.dropping.swap(true, Ordering::Relaxed) {
                        c.overflows.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(camera = %self.key.camera, stream = %self.key.stream, queued, "writer queue overflow: ending the segment, dropping frames until the next key frame");
                        let _ = self.tx.send(Msg::Overflow);
                    }
                    c.dropped_frames.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                self.dropping.store(false, Ordering::Relaxed);
                // The writer thread drains the queue on its own tick; wake it early only when a
                // burst (or a slow disk) has filled half of the queue.
                let wake = queued + len > self.limit / 2;
                c.queue_bytes.fetch_add(len, Ordering::AcqRel);
                if self.tx.send_quiet(Msg::Frame(f)).is_err() {
                    c.queue_bytes.fetch_sub(len, Ordering::AcqRel);
                    c.dropped_frames.fetch_add(1, Ordering::Relaxed);
                } else if wake {
                    self.tx.thread.unpark();
                }
            }
            StreamEvent::SessionEnded { session_id, reason } => {
                let _ = self.tx.send(Msg::SessionEnded { session_id, reason });
            }
        }
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::SeqCst);
        let _ = self.tx.send(Msg::Stop);
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// A writer of past footage beside the live one (see [`crate::Store::start_edge_writer`]): not
/// registered as the stream's writer, with counters of its own; its slot goes to the retired
/// list at once, so shutdown asks it to stop and waits for it.
pub(crate) fn start_edge(inner: &Arc<Inner>, key: StreamKey) -> Result<WriterHandle, StoreError> {
    if inner.shutting_down.load(Ordering::SeqCst) {
        return Err(StoreError::ShuttingDown);
    }
    let stream_id = inner.index()?.stream_id(&key)?;
    let counters = Arc::new(WriterCounters::default());
    let (tx, rx) = mpsc::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    let rec = Recorder::new(
        inner.clone(),
        key.clone(),
        stream_id,
        counters.clone(),
        (0, 1),
    );
    let on_exit = Box::new(move || {
        let _ = done_tx.send(());
    });
    let span = tracing::info_span!("edge_writer", camera = %key.camera, stream = %key.stream);
    let thread = inner
        .pool
        .add(pool::Slot::new(rec, rx, span, on_exit))
        .map_err(StoreError::io(
            "spawning a writer thread for",
            &inner.layout.stream_dir(&key),
        ))?;
    let tx = Tx { tx, thread };
    let alive = Arc::new(AtomicBool::new(true));
    if let Ok(mut retired) = inner.retired.lock() {
        retired.push(WriterSlot {
            tx: tx.clone(),
            done: Some(done_rx),
            generation,
            handle_alive: alive.clone(),
        });
    }
    Ok(WriterHandle {
        key,
        alive,
        tx,
        limit: inner.cfg.recording.writer_queue_bytes.0,
        dropping: AtomicBool::new(false),
        counters,
        blocked: inner.recording_blocked.clone(),
        blocked_seen: AtomicBool::new(false),
    })
}

pub(crate) fn start(
    inner: &Arc<Inner>,
    key: StreamKey,
    stagger: (u32, u32),
) -> Result<WriterHandle, StoreError> {
    if inner.shutting_down.load(Ordering::SeqCst) {
        return Err(StoreError::ShuttingDown);
    }
    let mut writers = inner.writers.lock().map_err(|_| StoreError::ShuttingDown)?;
    if let Some(old) = writers.get(&key) {
        if old.handle_alive.load(Ordering::SeqCst) {
            return Err(StoreError::AlreadyRecording { key });
        }
        // The previous handle was dropped and its thread is closing its segment: let it finish
        // on its own (shutdown still waits for it) and start a new writer now.
        if let (Some(old), Ok(mut retired)) = (writers.remove(&key), inner.retired.lock()) {
            retired.push(old);
        }
    }
    let stream_id = inner.index()?.stream_id(&key)?;
    let counters = inner
        .counters
        .lock()
        .map_err(|_| StoreError::ShuttingDown)?
        .entry(key.clone())
        .or_default()
        .clone();
    let (tx, rx) = mpsc::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    let rec = Recorder::new(
        inner.clone(),
        key.clone(),
        stream_id,
        counters.clone(),
        stagger,
    );
    // When the recorder ends (on its pool thread): forget its slot, unless a newer writer for
    // the same stream already took it, and tell `WriterSlot::wait`.
    let weak = Arc::downgrade(inner);
    let key2 = key.clone();
    let on_exit = Box::new(move || {
        if let Some(inner) = weak.upgrade()
            && let Ok(mut w) = inner.writers.lock()
            && w.get(&key2).is_some_and(|s| s.generation == generation)
        {
            w.remove(&key2);
        }
        let _ = done_tx.send(());
    });
    let span = tracing::info_span!("writer", camera = %key.camera, stream = %key.stream);
    let thread = inner
        .pool
        .add(pool::Slot::new(rec, rx, span, on_exit))
        .map_err(StoreError::io(
            "spawning a writer thread for",
            &inner.layout.stream_dir(&key),
        ))?;
    let tx = Tx { tx, thread };
    let alive = Arc::new(AtomicBool::new(true));
    writers.insert(
        key.clone(),
        WriterSlot {
            tx: tx.clone(),
            done: Some(done_rx),
            generation,
            handle_alive: alive.clone(),
        },
    );
    let limit = inner.cfg.recording.writer_queue_bytes.0;
    Ok(WriterHandle {
        key,
        alive,
        tx,
        limit,
        dropping: AtomicBool::new(false),
        counters,
        blocked: inner.recording_blocked.clone(),
        blocked_seen: AtomicBool::new(false),
    })
}

/// What the recorder does after a message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    /// The recorder has ended (stop, crash, or its handle was dropped).
    Ended,
}

/// Continuity with the previous segment of the same run.
struct Run {
    session_id: u64,
    next_start: i64,
}

struct Segment {
    id: u64,
    session_id: u64,
    params: Arc<VideoParams>,
    params_id: u64,
    first_media_90k: i64,
    est: StartEstimator,
    contiguous_start: Option<i64>,
    start: Option<i64>,
    boundary_90k: i64,
    /// Frames of the fragment being built, with their durations.
    frag: Vec<(Frame, u32)>,
    frag_duration_90k: i64,
    /// The last frame: its duration is known when the next one arrives.
    pending: Frame,
    prev_duration_90k: u32,
    file: Option<File>,
    path: PathBuf,
    dir_needs_sync: bool,
    init_len: u32,
    written_len: u64,
    synced_len: u64,
    seq: u32,
    media_written_90k: i64,
    frames_written: u32,
    key_frames_written: u32,
    samples: SampleTableEncoder,
    frags: FragmentTableEncoder,
    /// What the last successful sync made durable (`None` before the first one).
    synced: Option<SyncMark>,
    /// A mark waiting for the store's next sync epoch: durable once `SyncEpochs::completed`
    /// reaches the epoch (see [`Recorder::group_step`]).
    sync_wait: Option<(SyncMark, u64)>,
    /// The index holds an entry for this segment (describing `indexed_len` synced bytes).
    indexed: bool,
    indexed_len: u64,
    last_index: Instant,
}

/// The state of a segment at its last fdatasync: what an index entry may describe. The sample
/// and fragment tables are append-only encodings, so their prefixes at these lengths are the
/// tables of the synced fragments.
#[derive(Clone, Copy, Debug)]
struct SyncMark {
    bytes: u64,
    media: i64,
    frames: u32,
    key_frames: u32,
    samples_len: usize,
    frags_len: usize,
    counts: TableCounts,
}

impl Segment {
    fn start_guess(&self) -> i64 {
        self.start
            .or(self.contiguous_start)
            .unwrap_or_else(|| self.est.estimate())
    }
    fn wall_pos(&self, media: i64) -> i64 {
        self.start_guess() + (media - self.first_media_90k)
    }
}

pub(crate) struct Recorder {
    inner: Arc<Inner>,
    key: StreamKey,
    stream_id: u32,
    counters: Arc<WriterCounters>,
    seg_len_90k: i64,
    stagger_offset_90k: i64,
    fragment_90k: i64,
    flush_interval: Duration,
    index_interval: Duration,
    seg: Option<Segment>,
    run: Option<Run>,
    /// Why the last segment start or fragment was refused (full disk, index error), until a
    /// segment starts again: state changes are logged once, not at every key frame.
    refused: Option<&'static str>,
}

fn same_params(a: &Arc<VideoParams>, b: &Arc<VideoParams>) -> bool {
    Arc::ptr_eq(a, b) || **a == **b
}

/// The first boundary `k × len + offset` at least half a segment after `start`.
pub(crate) fn next_boundary(start: i64, len: i64, offset: i64) -> i64 {
    let min = start + len / 2;
    let mut b = (min - offset).div_euclid(len) * len + offset;
    if b < min {
        b += len;
    }
    b
}

fn write_all_vectored(file: &mut File, bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    let mut bufs = bufs;
    while !bufs.is_empty() {
        let n = bufs.len().min(1024);
        match file.write_vectored(&bufs[..n]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "short write")),
            Ok(written) => IoSlice::advance_slices(&mut bufs, written),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Recorder {
    fn new(
        inner: Arc<Inner>,
        key: StreamKey,
        stream_id: u32,
        counters: Arc<WriterCounters>,
        stagger: (u32, u32),
    ) -> Self {
        let r = &inner.cfg.recording;
        let seg_len_90k =
            i64::from(r.segment_seconds.clamp(1, 300)) * vigie_core::TIME_UNITS_PER_SEC;
        let (i, n) = (i64::from(stagger.0), i64::from(stagger.1.max(1)));
        Recorder {
            seg_len_90k,
            stagger_offset_90k: seg_len_90k * (i % n) / n,
            fragment_90k: i64::from(r.fragment_ms.max(1)) * 90,
            flush_interval: Duration::from_millis(u64::from(r.flush_interval_ms)),
            index_interval: Duration::from_millis(u64::from(r.index_interval_ms)),
            inner,
            key,
            stream_id,
            counters,
            seg: None,
            run: None,
            refused: None,
        }
    }

    /// Asks the store for room before writing (see `space::Space::admit`); on a refusal, logs
    /// the state change once and returns the reason to end the segment with.
    fn refused_by_space(&mut self) -> Option<&'static str> {
        match self.inner.space.admit() {
            crate::space::Admit::Write => None,
            crate::space::Admit::Refuse { reason, message } => {
                if self.refused != Some(reason) {
                    tracing::warn!(reason, %message, "recording stopped: no room to write");
                    self.refused = Some(reason);
                }
                Some(reason)
            }
        }
    }

    /// Handles one message from the stream's queue.
    pub(crate) fn handle(&mut self, msg: Msg) -> Flow {
        match msg {
            Msg::Frame(f) => {
                self.counters
                    .queue_bytes
                    .fetch_sub(f.data.len() as u64, Ordering::AcqRel);
                self.on_frame(f);
            }
            Msg::SessionEnded { session_id, reason } => {
                if self
                    .seg
                    .as_ref()
                    .is_some_and(|s| s.session_id == session_id)
                {
                    self.finish(&format!("session-ended: {reason}"), None);
                }
                self.run = None;
            }
            Msg::Overflow => {
                self.finish("writer-overflow", None);
                self.run = None;
            }
            Msg::Blocked => {
                self.finish("disk-full-held", None);
                self.run = None;
            }
            Msg::Stop => {
                self.finish("shutdown", None);
                return Flow::Ended;
            }
            #[cfg(any(test, feature = "test-support"))]
            Msg::Crash => {
                // Simulated kill -9: whatever was written stays, nothing else happens.
                self.seg = None;
                return Flow::Ended;
            }
            #[cfg(any(test, feature = "test-support"))]
            Msg::Stall(d) => std::thread::sleep(d),
            #[cfg(any(test, feature = "test-support"))]
            Msg::Barrier(done) => {
                let _ = done.send(());
            }
        }
        Flow::Continue
    }

    /// The recorder is ending: nothing is recording any more.
    pub(crate) fn ended(&self) {
        self.counters.recording.store(false, Ordering::Relaxed);
    }

    fn on_frame(&mut self, f: Frame) {
        if let Some(seg) = &self.seg {
            let delta = f.media_90k - seg.pending.media_90k;
            if f.session_id != seg.session_id || delta <= 0 || delta > MAX_FRAME_GAP_90K {
                tracing::info!(
                    delta,
                    session = f.session_id,
                    "timestamp discontinuity: ending the segment"
                );
                self.finish("ts-jump", None);
                self.run = None;
            } else if !same_params(&seg.params, &f.params) {
                self.finish("params-change", Some(delta as u32));
            } else if f.is_key && seg.wall_pos(f.media_90k) >= seg.boundary_90k {
                self.finish("rotation", Some(delta as u32));
            } else if f.media_90k - seg.first_media_90k >= HARD_CAP_90K {
                self.finish("max-duration", Some(delta as u32));
            } else {
                self.append(f, delta as u32);
                return;
            }
        }
        if !f.is_key {
            self.counters
                .discarded_frames
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.begin(f);
    }

    fn begin(&mut self, f: Frame) {
        if self.refused_by_space().is_some() {
            self.counters.dropped_frames.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(reason) = self.refused.take() {
            tracing::warn!(reason, "room to write again: recording resumes");
        }
        let (id, params_id) = match (
            self.inner.alloc_segment_id(),
            self.inner.index().and_then(|ix| ix.put_params(&f.params)),
        ) {
            (Ok(id), Ok(p)) => {
                self.inner.note_params(&f.params);
                (id, p)
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot start a segment");
                self.inner.index_failed(&e);
                self.counters.io_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let contiguous_start = match &self.run {
            Some(r) if r.session_id == f.session_id => Some(r.next_start),
            _ => None,
        };
        let guess = contiguous_start.unwrap_or(f.recv.0);
        self.counters.segments.fetch_add(1, Ordering::Relaxed);
        self.counters.recording.store(true, Ordering::Relaxed);
        tracing::debug!(segment = id, "segment started");
        self.seg = Some(Segment {
            id,
            session_id: f.session_id,
            params: f.params.clone(),
            params_id,
            first_media_90k: f.media_90k,
            est: StartEstimator::new(f.media_90k, f.recv.0),
            contiguous_start,
            start: None,
            boundary_90k: next_boundary(guess, self.seg_len_90k, self.stagger_offset_90k),
            frag: Vec::new(),
            frag_duration_90k: 0,
            pending: f,
            prev_duration_90k: 0,
            file: None,
            path: PathBuf::new(),
            dir_needs_sync: false,
            init_len: 0,
            written_len: 0,
            synced_len: 0,
            seq: 1,
            media_written_90k: 0,
            frames_written: 0,
            key_frames_written: 0,
            samples: SampleTableEncoder::default(),
            frags: FragmentTableEncoder::default(),
            synced: None,
            sync_wait: None,
            indexed: false,
            indexed_len: 0,
            last_index: Instant::now(),
        });
    }

    fn append(&mut self, f: Frame, duration: u32) {
        let Some(seg) = self.seg.as_mut() else { return };
        seg.est.observe(f.media_90k, f.recv.0);
        let prev = std::mem::replace(&mut seg.pending, f);
        seg.frag.push((prev, duration));
        seg.frag_duration_90k += i64::from(duration);
        seg.prev_duration_90k = duration;
        let cut = seg.frag_duration_90k >= self.fragment_90k
            || (seg.pending.is_key && seg.frag_duration_90k * 10 >= self.fragment_90k * 6);
        if cut {
            // The floor is enforced where bytes are written: below half of it, end the segment
            // cleanly (it keeps what it has) and record again once there is room.
            if let Some(reason) = self.refused_by_space() {
                self.finish(reason, None);
                self.run = None;
                return;
            }
            if let Err(e) = self.write_fragment() {
                self.fail(e);
                return;
            }
            // Otherwise the store syncs every `flush_interval` (see `Recorder::group_step`).
            if self.flush_interval.is_zero()
                && let Err(e) = self.sync(true)
            {
                self.fail(e);
            }
        }
    }

    /// Abandons the segment after an I/O error (never retry an fsync: its failure may have
    /// dropped dirty pages). The index keeps the synced part; recovery at the next start cuts
    /// the file back to it.
    fn fail(&mut self, e: StoreError) {
        tracing::error!(error = %e, "segment abandoned");
        self.inner.index_failed(&e);
        let no_space =
            matches!(&e, StoreError::Io { source, .. } if crate::space::is_no_space(source));
        if no_space || crate::space::is_sled_io(&e) {
            // Something else filled the disk: ask for room now, and have the free-space pass
            // index the file from its content once there is room (what recovery would do at
            // the next start: its complete fragments are kept, a partial tail cut), so that the
            // index matches the files without a restart.
            self.inner.space.wake();
            if let Some(seg) = self.seg.as_ref().filter(|s| s.file.is_some())
                && let Ok(mut r) = self.inner.reread.lock()
            {
                r.push((self.key.clone(), seg.path.clone()));
            }
        }
        if let Some(seg) = self.seg.as_ref()
            && seg.indexed
            && let Some(mark) = seg.synced
        {
            let entry = self.entry(
                seg,
                &mark,
                false,
                Some(format!("io-error: {e}")),
                mark.media,
            );
            self.inner.note_put(&entry);
            if let Err(e2) = self.inner.index().and_then(|ix| ix.put_segment(&entry)) {
                tracing::error!(error = %e2, "cannot close the abandoned segment's index entry (written again when the index is reopened)");
                self.inner.index_failed(&e2);
            }
        }
        self.counters.io_errors.fetch_add(1, Ordering::Relaxed);
        self.counters.recording.store(false, Ordering::Relaxed);
        self.seg = None;
        self.run = None;
    }

    fn create_file(&mut self) -> Result<(), StoreError> {
        let Some(seg) = self.seg.as_mut() else {
            return Ok(());
        };
        let start = seg.contiguous_start.unwrap_or_else(|| seg.est.estimate());
        seg.start = Some(start);
        let path = self
            .inner
            .layout
            .segment_path(&self.key, seg.id, Time90k(start));
        let dir = path.parent().map(|p| p.to_owned()).unwrap_or_default();
        create_dir_all_durable(&dir).map_err(StoreError::io("creating directory", &dir))?;
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(StoreError::io("creating", &path))?;
        let meta = SegmentMeta {
            camera: self.key.camera.clone(),
            stream: self.key.stream.clone(),
            segment_id: seg.id,
            start_90k: start,
            session_id: seg.session_id,
        };
        let init = vigie_mp4::init_segment(&seg.params, &meta);
        file.write_all(&init)
            .map_err(StoreError::io("writing", &path))?;
        seg.init_len = init.len() as u32;
        seg.written_len = init.len() as u64;
        // Sync epochs `syncfs` each filesystem that holds segment files.
        let dev = file
            .metadata()
            .map_err(StoreError::io("inspecting", &path))?
            .dev();
        self.inner.pool.epochs.register(dev, &dir);
        seg.file = Some(file);
        seg.path = path;
        seg.dir_needs_sync = true;
        self.counters
            .bytes
            .fetch_add(init.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn write_fragment(&mut self) -> Result<(), StoreError> {
        if self.seg.as_ref().is_none_or(|s| s.frag.is_empty()) {
            return Ok(());
        }
        if self.seg.as_ref().is_some_and(|s| s.file.is_none()) {
            self.create_file()?;
        }
        let Some(seg) = self.seg.as_mut() else {
            return Ok(());
        };
        let samples: Vec<SampleInfo> = seg
            .frag
            .iter()
            .map(|(f, d)| SampleInfo {
                duration_90k: *d,
                bytes: f.data.len() as u32,
                is_key: f.is_key,
            })
            .collect();
        let hdr = vigie_mp4::fragment_header(seg.seq, seg.media_written_90k as u64, &samples);
        let mut bufs: Vec<IoSlice<'_>> = Vec::with_capacity(1 + seg.frag.len());
        bufs.push(IoSlice::new(&hdr));
        bufs.extend(seg.frag.iter().map(|(f, _)| IoSlice::new(&f.data)));
        let payload: u64 = samples.iter().map(|s| u64::from(s.bytes)).sum();
        let Some(file) = seg.file.as_mut() else {
            return Ok(());
        };
        write_all_vectored(file, &mut bufs).map_err(StoreError::io("writing", &seg.path))?;
        let loc = FragmentLoc {
            offset: seg.written_len,
            header_len: hdr.len() as u32,
            samples: samples.len() as u32,
        };
        seg.frags.push(seg.written_len, &loc);
        for s in &samples {
            seg.samples.push(s);
        }
        let total = hdr.len() as u64 + payload;
        seg.written_len += total;
        seg.media_written_90k += seg.frag_duration_90k;
        seg.frames_written += samples.len() as u32;
        seg.key_frames_written += samples.iter().filter(|s| s.is_key).count() as u32;
        seg.seq += 1;
        seg.frag.clear();
        seg.frag_duration_90k = 0;
        self.counters
            .frames
            .fetch_add(samples.len() as u64, Ordering::Relaxed);
        self.counters.bytes.fetch_add(total, Ordering::Relaxed);
        Ok(())
    }

    /// The index entry of `seg` as of the fdatasync `m`.
    fn entry(
        &self,
        seg: &Segment,
        m: &SyncMark,
        open: bool,
        end_reason: Option<String>,
        wall_duration_90k: i64,
    ) -> SegmentEntry {
        SegmentEntry {
            head: crate::index::EntryHead {
                id: seg.id,
                stream_id: self.stream_id,
                start_90k: seg.start.unwrap_or_default(),
                wall_duration_90k,
                media_duration_90k: m.media,
                bytes: m.bytes,
                frames: m.frames,
                key_frames: m.key_frames,
                width: seg.params.width,
                height: seg.params.height,
                codec: seg.params.codec,
                params_id: seg.params_id,
                session_id: seg.session_id,
                open,
                end_reason,
                counts: m.counts,
            },
            init_len: seg.init_len,
            // The journal's prefix at the sync mark, packed (see `crate::sampletable`).
            sample_table: seg.samples.packed_prefix(m.samples_len),
            fragment_table: seg.frags.packed_prefix(m.frags_len),
        }
    }

    /// The open segment has a file holding bytes written since its last sync.
    fn unsynced(&self) -> bool {
        self.seg
            .as_ref()
            .is_some_and(|seg| seg.file.is_some() && seg.written_len != seg.synced_len)
    }

    /// The state of the open segment now: what a sync started after this call makes durable.
    fn mark(&self) -> Option<SyncMark> {
        let seg = self.seg.as_ref()?;
        Some(SyncMark {
            bytes: seg.written_len,
            media: seg.media_written_90k,
            frames: seg.frames_written,
            key_frames: seg.key_frames_written,
            samples_len: seg.samples.buf.len(),
            frags_len: seg.frags.buf.len(),
            counts: crate::sampletable::counts(&seg.samples, &seg.frags),
        })
    }

    /// fdatasync (+ directory fsync after creation) of the open segment alone, then
    /// [`Recorder::synced`]. Used when a segment closes, when `flush_interval_ms` is 0, and
    /// when a group sync is not possible (see [`Recorder::group_step`]).
    fn sync(&mut self, index_open: bool) -> Result<(), StoreError> {
        let Some(mark) = self.mark() else {
            return Ok(());
        };
        let Some(seg) = self.seg.as_mut() else {
            return Ok(());
        };
        let Some(file) = seg.file.as_ref() else {
            return Ok(());
        };
        self.inner.fdatasync_calls.fetch_add(1, Ordering::Relaxed);
        file.sync_data()
            .map_err(StoreError::io("fdatasync", &seg.path))?;
        if seg.dir_needs_sync {
            if let Some(dir) = seg.path.parent() {
                fsync_dir(dir).map_err(StoreError::io("fsync", dir))?;
            }
            seg.dir_needs_sync = false;
        }
        self.synced(mark, index_open)
    }

    /// Records that `mark` is durable (file data, size and directory entry); then, when
    /// `index_open` and the segment's index entry is due (first sync of the segment, or
    /// `index_interval` since the last update), indexes the synced bytes. Updating the entry
    /// less often than syncing saves rewriting the growing sample table into sled every
    /// second (see `RecordingConfig::index_interval_ms`); recovery indexes the rest from the
    /// file.
    fn synced(&mut self, mark: SyncMark, index_open: bool) -> Result<(), StoreError> {
        let Some(seg) = self.seg.as_mut() else {
            return Ok(());
        };
        if seg.synced.is_some_and(|m| m.bytes >= mark.bytes) {
            return Ok(()); // a later sync of the file already covered it
        }
        seg.dir_needs_sync = false;
        seg.synced_len = mark.bytes;
        seg.synced = Some(mark);
        if index_open {
            self.maybe_index()?;
        }
        Ok(())
    }

    /// Indexes the open segment as of its last fdatasync if that is not indexed yet and the
    /// entry is due: never indexed, or `index_interval` elapsed since the last update. Also
    /// catches up a synced tail that missed its update because nothing was written since (a
    /// stalled camera): the pool calls it at every flush.
    fn maybe_index(&mut self) -> Result<(), StoreError> {
        let Some(seg) = self.seg.as_ref() else {
            return Ok(());
        };
        let Some(mark) = seg.synced else {
            return Ok(());
        };
        let due = !seg.indexed
            || (mark.bytes != seg.indexed_len && seg.last_index.elapsed() >= self.index_interval);
        if !due {
            return Ok(());
        }
        let e = self.entry(seg, &mark, true, None, mark.media);
        self.inner.index()?.put_segment(&e)?;
        if let Some(seg) = self.seg.as_mut() {
            seg.indexed = true;
            seg.indexed_len = mark.bytes;
            seg.last_index = Instant::now();
        }
        Ok(())
    }

    /// One step of group commit, run by the writer thread at every pass. A mark of what was
    /// written is taken, with the first sync epoch that will start after it (a sync that starts
    /// later covers every byte written before); once the store's epochs reach it, the mark is
    /// durable. If that epoch's `syncfs` failed, the file is `fdatasync`ed on its own instead,
    /// which reports its own error. Then the index entry is updated when due.
    pub(crate) fn group_step(&mut self, epochs: &pool::SyncEpochs) {
        let res = self.group_step_inner(epochs);
        if let Err(e) = res.and_then(|()| self.maybe_index()) {
            self.fail(e);
        }
    }

    fn group_step_inner(&mut self, epochs: &pool::SyncEpochs) -> Result<(), StoreError> {
        let Some(seg) = self.seg.as_mut() else {
            return Ok(());
        };
        if let Some((mark, epoch)) = seg.sync_wait
            && epochs.completed() >= epoch
        {
            seg.sync_wait = None;
            if epochs.failed_since(epoch) {
                self.sync(false)?;
            } else {
                self.synced(mark, false)?;
            }
        }
        if self.seg.as_ref().is_some_and(|s| s.sync_wait.is_none()) && self.unsynced() {
            let mark = self.mark();
            // Read after the writes the mark describes (they returned before this call).
            let epoch = epochs.next_to_start();
            if let (Some(seg), Some(mark)) = (self.seg.as_mut(), mark) {
                seg.sync_wait = Some((mark, epoch));
            }
        }
        Ok(())
    }

    /// Per-file durability at the writer thread's own flush, where `syncfs` cannot be used
    /// (kernels before 5.8, whose `syncfs` does not report write-back errors).
    pub(crate) fn flush_alone(&mut self) {
        if self.unsynced()
            && let Err(e) = self.sync(true)
        {
            self.fail(e);
            return;
        }
        if let Err(e) = self.maybe_index() {
            self.fail(e);
        }
    }

    /// Ends the open segment (if any). `next_duration` is the last frame's duration when the
    /// next frame is known and continuous (rotation, params change): the run then continues
    /// and the next segment starts exactly at this one's end.
    pub(crate) fn finish(&mut self, reason: &str, next_duration: Option<u32>) {
        let Some(seg) = self.seg.as_mut() else { return };
        let d = next_duration.unwrap_or(if seg.prev_duration_90k > 0 {
            seg.prev_duration_90k
        } else {
            DEFAULT_FRAME_DURATION
        });
        let last = seg.pending.clone();
        seg.frag.push((last, d));
        seg.frag_duration_90k += i64::from(d);
        if let Err(e) = self.write_fragment() {
            self.fail(e);
            return;
        }
        let Some(seg) = self.seg.as_mut() else { return };
        let start = seg.start.unwrap_or_default();
        let wall = wall_duration(start, seg.est.estimate(), seg.media_written_90k);
        // The tables go into the file, before the trailer (`crate::filetables`): the entry
        // written below, after the sync, refers to them, so sled keeps only the head.
        let tables = match seg.file {
            Some(_) => crate::filetables::tables_box(
                seg.written_len,
                &seg.samples.packed_prefix(seg.samples.buf.len()),
                &seg.frags.packed_prefix(seg.frags.buf.len()),
            ),
            None => None,
        };
        let mut trailer = Vec::new();
        let tables_ref = tables.map(|(b, r)| {
            trailer = b;
            r
        });
        trailer.extend(vigie_mp4::trailer_box(&SegmentTrailer {
            wall_duration_90k: wall,
            end_reason: reason.to_owned(),
        }));
        let res = match seg.file.as_mut() {
            Some(f) => f
                .write_all(&trailer)
                .map_err(StoreError::io("writing", &seg.path)),
            None => Ok(()),
        };
        if let Err(e) = res {
            self.fail(e);
            return;
        }
        seg.written_len += trailer.len() as u64;
        self.counters
            .bytes
            .fetch_add(trailer.len() as u64, Ordering::Relaxed);
        // The closed entry below is written at once: no open update first.
        if let Err(e) = self.sync(false) {
            self.fail(e);
            return;
        }
        let Some(seg) = self.seg.take() else { return };
        let Some(mark) = seg.synced else {
            // Nothing durable to index (cannot happen: the last fragment was just synced).
            self.counters.recording.store(false, Ordering::Relaxed);
            return;
        };
        let mut e = self.entry(&seg, &mark, false, Some(reason.to_owned()), wall);
        // Only if the sync covered the box (it always does: nothing is written after it).
        if let Some(r) = tables_ref
            && mark.bytes == seg.written_len
            && mark.samples_len == seg.samples.buf.len()
            && mark.frags_len == seg.frags.buf.len()
        {
            e.sample_table = r;
            e.fragment_table = Vec::new();
        }
        self.inner.note_put(&e);
        if let Err(err) = self.inner.index().and_then(|ix| ix.put_segment(&e)) {
            // The file is closed and durable: only its entry is missing, written again when the
            // index is reopened (or by recovery at the next start).
            tracing::error!(error = %err, segment = seg.id, "segment closed but its index entry could not be written");
            self.inner.index_failed(&err);
            self.counters.io_errors.fetch_add(1, Ordering::Relaxed);
            self.counters.recording.store(false, Ordering::Relaxed);
            self.run = None;
            return;
        }
        self.counters.recording.store(false, Ordering::Relaxed);
        tracing::info!(
            segment = seg.id,
            reason,
            frames = seg.frames_written,
            duration_s = wall as f64 / 90_000.0,
            "segment closed"
        );
        self.run = next_duration.map(|_| Run {
            session_id: seg.session_id,
            next_start: start + wall,
        });
    }
}

/// `syncfs(2)` returns write-back errors since Linux 5.8; before, it always succeeds.
pub(crate) fn syncfs_reports_errors() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release
            .trim()
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        let ok = (major, minor) >= (5, 8);
        if !ok {
            tracing::info!(
                release = release.trim(),
                "kernel before 5.8: writers fdatasync each file"
            );
        }
        ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_are_staggered_and_at_least_half_a_segment_away() {
        let len = 60 * vigie_core::TIME_UNITS_PER_SEC;
        assert_eq!(next_boundary(0, len, 0), len);
        assert_eq!(next_boundary(1, len, 0), len);
        assert_eq!(next_boundary(len / 2 + 1, len, 0), 2 * len);
        assert_eq!(next_boundary(0, len, len / 4), len + len / 4);
        assert_eq!(next_boundary(-len, len, 0), 0);
    }
}

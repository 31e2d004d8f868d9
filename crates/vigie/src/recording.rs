//! Which cameras this process records, started and stopped per camera: each stream of a
//! camera is a writer (store) and an ingest task feeding it and the stream's live hub. A
//! single node starts every camera at start-up; a cluster node starts and stops them as the
//! cluster assigns them (`crate::cluster`).
//!
//! Every stream has its status cell and live hub from start-up on, recorded here or not, so
//! the API and the quality monitor follow one cell per stream across stops and starts.
//!
//! Does not: decide which cameras to record.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vigie_core::config::{Config, ResolvedSource};
use vigie_core::{Clock, FrameSink, StreamKey};

/// One configured stream.
struct Slot {
    key: StreamKey,
    source: ResolvedSource,
    status: Arc<vigie_ingest::StatusCell>,
    live: Arc<vigie_live::LiveHub>,
    /// Recorded (role `record` or `both`); a `live`-only stream feeds its hub alone.
    recorded: bool,
    /// (index, count) among the recorded streams, to stagger segment rotations.
    stagger: (u32, u32),
}

/// One stream of a camera being recorded here: its ingest task, its writer and how many
/// frames the writer had written when it started (ready = it wrote more: a key frame first).
struct RunningStream {
    handle: vigie_ingest::StreamHandle,
    /// `None` for a live-only stream.
    writer: Option<(Arc<vigie_store::WriterHandle>, u64)>,
}

/// A camera being recorded here.
struct Running {
    token: CancellationToken,
    streams: Arc<Mutex<Vec<RunningStream>>>,
    /// How many streams the camera has (ready needs every one).
    expected: usize,
    cells: Vec<Arc<vigie_ingest::StatusCell>>,
}

pub struct Recording {
    store: vigie_store::Store,
    clock: Arc<dyn Clock>,
    ingest_rt: Arc<vigie_ingest::IngestRuntime>,
    shutdown: CancellationToken,
    /// camera id → its streams.
    cameras: BTreeMap<String, Vec<Slot>>,
    running: Mutex<HashMap<String, Running>>,
    /// Tasks ending stopped cameras (awaited at shutdown).
    stopping: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// One camera's state, for the cluster.
pub struct CameraState {
    /// The writer of every stream has written a frame to its segment file (the first one is a
    /// key frame) since the camera started here.
    pub ready: bool,
    /// At least one stream is online.
    pub online: bool,
}

impl Recording {
    /// Resolves every stream's source (credentials from the environment) and creates the
    /// status cells and live hubs; records nothing yet.
    pub fn new(
        config: &Config,
        store: vigie_store::Store,
        clock: Arc<dyn Clock>,
        ingest_rt: Arc<vigie_ingest::IngestRuntime>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Recording> {
        // Rotations are staggered across the recorded streams.
        let n = config
            .streams()
            .filter(|(_, cam, s)| cam.records(&s.name))
            .count() as u32;
        let mut rec_index = 0u32;
        let mut cameras: BTreeMap<String, Vec<Slot>> = BTreeMap::new();
        for (key, cam, stream) in config.streams() {
            let source = stream
                .resolve(&|k| std::env::var(k).ok())
                .map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
            let status = Arc::new(vigie_ingest::StatusCell::new(
                key.clone(),
                source.url.as_str(),
                source.transport,
                clock.clone(),
            ));
            let recorded = cam.records(&stream.name);
            if !recorded {
                tracing::info!(camera = %key.camera, stream = %key.stream, "live-only stream (role = \"live\"): not recorded");
            }
            cameras.entry(key.camera.clone()).or_default().push(Slot {
                live: vigie_live::LiveHub::new(key.clone()),
                key,
                source,
                status,
                recorded,
                stagger: (rec_index, n),
            });
            if recorded {
                rec_index += 1;
            }
        }
        Ok(Recording {
            store,
            clock,
            ingest_rt,
            shutdown,
            cameras,
            running: Mutex::new(HashMap::new()),
            stopping: Mutex::new(Vec::new()),
        })
    }

    fn running(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every stream's key, status cell and live hub, in configuration order of cameras.
    pub fn streams(
        &self,
    ) -> impl Iterator<
        Item = (
            &StreamKey,
            &Arc<vigie_ingest::StatusCell>,
            &Arc<vigie_live::LiveHub>,
        ),
    > {
        self.cameras
            .values()
            .flatten()
            .map(|s| (&s.key, &s.status, &s.live))
    }

    /// Marks every stream stopped (a cluster node records none until assigned).
    pub fn mark_all_stopped(&self) {
        for (_, status, _) in self.streams() {
            status.set_stopped();
        }
    }

    /// Starts recording `camera` now; an error (the store refuses a writer) is returned.
    pub fn start_now(&self, camera: &str) -> anyhow::Result<()> {
        let Some(slots) = self.cameras.get(camera) else {
            anyhow::bail!("no camera {camera:?}");
        };
        let mut running = self.running();
        if running.contains_key(camera) {
            return Ok(());
        }
        let token = self.shutdown.child_token();
        let mut streams = Vec::new();
        for slot in slots {
            let writer = if slot.recorded {
                Some(self.store.start_writer(slot.key.clone(), slot.stagger)?)
            } else {
                None
            };
            streams.push(self.spawn(slot, writer, &token));
        }
        running.insert(
            camera.to_owned(),
            Running {
                token,
                streams: Arc::new(Mutex::new(streams)),
                expected: slots.len(),
                cells: slots.iter().map(|s| s.status.clone()).collect(),
            },
        );
        Ok(())
    }

    /// Starts recording `camera` in the background: a writer of a stream stopped a moment ago
    /// may still be closing its segment, so each writer is retried for up to 10 s.
    pub fn start(self: &Arc<Self>, camera: &str) {
        let Some(slots) = self.cameras.get(camera) else {
            tracing::warn!(camera, "asked to record an unknown camera");
            return;
        };
        let mut running = self.running();
        if running.contains_key(camera) {
            return;
        }
        let token = self.shutdown.child_token();
        let streams = Arc::new(Mutex::new(Vec::new()));
        running.insert(
            camera.to_owned(),
            Running {
                token: token.clone(),
                streams: streams.clone(),
                expected: slots.len(),
                cells: slots.iter().map(|s| s.status.clone()).collect(),
            },
        );
        drop(running);
        let this = self.clone();
        let camera = camera.to_owned();
        tokio::spawn(async move {
            let Some(slots) = this.cameras.get(&camera) else {
                return;
            };
            for slot in slots {
                if !slot.recorded {
                    let r = this.spawn(slot, None, &token);
                    streams.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                    continue;
                }
                let mut tries = 0;
                let writer = loop {
                    if token.is_cancelled() {
                        return;
                    }
                    match this.store.start_writer(slot.key.clone(), slot.stagger) {
                        Ok(w) => break Some(w),
                        Err(vigie_store::StoreError::AlreadyRecording { .. }) if tries < 100 => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => {
                            tracing::error!(camera = %slot.key.camera, stream = %slot.key.stream, error = %e, "cannot start the writer");
                            break None;
                        }
                    }
                };
                let Some(writer) = writer else { continue };
                let r = this.spawn(slot, Some(writer), &token);
                streams.lock().unwrap_or_else(|e| e.into_inner()).push(r);
            }
        });
    }

    fn spawn(
        &self,
        slot: &Slot,
        writer: Option<vigie_store::WriterHandle>,
        token: &CancellationToken,
    ) -> RunningStream {
        let writer = writer.map(|w| {
            let w = Arc::new(w);
            let written_at_start = w.stats().frames;
            (w, written_at_start)
        });
        // Every event goes to the writer and to the stream's live hub (frames shared, not
        // copied); a stream with role `live` only feeds its hub.
        let sink: Arc<dyn FrameSink> = match &writer {
            Some((w, _)) => Arc::new(vigie_live::TeeSink {
                first: w.clone(),
                second: slot.live.clone(),
            }),
            None => slot.live.clone(),
        };
        let mut opts = vigie_ingest::IngestOptions::new(self.clock.clone());
        opts.runtime = Some(self.ingest_rt.clone());
        let handle = vigie_ingest::spawn_stream_with_status(
            slot.key.clone(),
            slot.source.clone(),
            sink,
            opts,
            slot.status.clone(),
            token.clone(),
        );
        RunningStream { handle, writer }
    }

    /// Stops recording `camera`: ends its sessions; the writers close their segments.
    pub fn stop(&self, camera: &str) {
        let Some(r) = self.running().remove(camera) else {
            return;
        };
        r.token.cancel();
        // The writers stop once their ingest tasks end and drop the last handle.
        let handles = take_handles(&r);
        let task = tokio::spawn(join_all(handles));
        let mut stopping = self.stopping.lock().unwrap_or_else(|e| e.into_inner());
        stopping.retain(|t| !t.is_finished());
        stopping.push(task);
    }

    /// Cameras recorded now, with their state.
    pub fn states(&self) -> BTreeMap<String, CameraState> {
        self.running()
            .iter()
            .map(|(cam, r)| {
                let streams = r.streams.lock().unwrap_or_else(|e| e.into_inner());
                // Every recorded stream has written a frame (live-only ones record nothing).
                let ready = streams.len() == r.expected
                    && streams.iter().all(|s| {
                        s.writer
                            .as_ref()
                            .is_none_or(|(w, at_start)| w.stats().frames > *at_start)
                    });
                let online = r.cells.iter().any(|c| c.snapshot().online);
                (cam.clone(), CameraState { ready, online })
            })
            .collect()
    }

    /// Shutdown (the shutdown token is cancelled): waits for every ingest task to end, 5 s at
    /// most each, as the single node always did.
    pub async fn join(&self) {
        let running: Vec<Running> = self.running().drain().map(|(_, r)| r).collect();
        for r in running {
            r.token.cancel();
            let handles = take_handles(&r);
            drop(r);
            join_all(handles).await;
        }
        let stopping =
            std::mem::take(&mut *self.stopping.lock().unwrap_or_else(|e| e.into_inner()));
        for t in stopping {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }

    /// The status cells of `camera`'s streams.
    pub fn camera_streams(&self, camera: &str) -> Vec<Arc<vigie_ingest::StatusCell>> {
        self.cameras
            .get(camera)
            .map(|s| s.iter().map(|s| s.status.clone()).collect())
            .unwrap_or_default()
    }
}

/// The ingest tasks of a camera, its writer handles let go (each writer stops when its
/// ingest task, holding the other handle, ends).
fn take_handles(r: &Running) -> Vec<vigie_ingest::StreamHandle> {
    std::mem::take(&mut *r.streams.lock().unwrap_or_else(|e| e.into_inner()))
        .into_iter()
        .map(|s| s.handle)
        .collect()
}

async fn join_all(handles: Vec<vigie_ingest::StreamHandle>) {
    for h in handles {
        if tokio::time::timeout(Duration::from_secs(5), h.join())
            .await
            .is_err()
        {
            tracing::warn!("an ingest task did not stop within 5 s");
        }
    }
}

//! Evidence export jobs: the installation signing key, the job table, the admission of new
//! requests, the background job that plans the range, assembles the manifest and writes the
//! package ([`crate::write_package`]), and the janitor that deletes packages when due. The HTTP
//! layer only validates requests and calls [`Exports`].
//!
//! Layout: `<data_dir>/exports/<id>/job.json` (the job, rewritten atomically at each state
//! change) and `<data_dir>/exports/<id>/vigie-export-<id>.zip` (the package, written via
//! `.zip.partial` then renamed). At start ([`Exports::open`]) every job is loaded back; one that
//! was queued or running when Vigie stopped is marked failed (its partial file removed, the
//! failure journaled); its legal hold stays in place.
//!
//! Journal: the API journals the hold at creation; the job journals `ExportCreate` when it ends
//! (done: with the MP4's `sha256`, which the legal register prints; failed: with the error).
//!
//! Bounds (`[exports]`, checked atomically by [`Exports::admit`] before anything is written):
//! jobs queued or running per user (`max_concurrent_per_user`) and in total (`max_queued`), a
//! repeated identical request returns the job already under way, a disk quota for the packages
//! kept plus the estimated size of the jobs under way (`quota_bytes`), and a free-space floor on
//! the exports file system (`min_free_bytes`, by default the storage floor + 2 GiB, so exports
//! never push retention into deleting other footage). Jobs run on their own threads, at most
//! `max_running` at once ([`Exports::spawn`]), never on tokio's blocking pool (which the journal and
//! retention need). [`janitor`] deletes a package when its legal hold is released or
//! `package_lifetime_days` after it was written, and journals `ExportDelete` (listed in the
//! register).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use vigie_audit::{Action, NewEntry};
use vigie_core::Clock;
use vigie_core::config::Config;
use vigie_core::{StreamKey, Time90k};
use vigie_store::{GapPolicy, Store};

use crate::manifest as mf;
use crate::{InstallationKey, Manifest, PackageSpec};

/// Why a request is refused or a job cannot be registered. The HTTP layer maps each variant to
/// its status (429, 409, 507, 500).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A bound on jobs per user or in total is reached: retry after `retry_after_s`.
    #[error("{message}")]
    LimitReached { message: String, retry_after_s: u64 },
    /// An identical request is being created right now.
    #[error("{0}")]
    Conflict(String),
    /// Over the export quota or the free-space floor.
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("{0}")]
    Internal(String),
}

/// What a running job needs besides its table: the configuration, the footage, the clock and
/// the journal it writes its outcome to.
#[derive(Clone)]
pub struct JobContext {
    pub config: Arc<Config>,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub journal: vigie_audit::Journal,
    /// A cluster: footage other nodes hold ([`RangeSource`]). `None`: this node's store only.
    pub ranges: Option<Arc<dyn RangeSource>>,
}

/// Footage of a range that other nodes may hold (a cluster), implemented by the binary over its
/// cluster footage (this crate cannot see the cluster). Its [`MasterReader`] reads the master's
/// parts held elsewhere.
pub trait RangeSource: crate::MasterReader {
    /// Plans `[start, end)` of a stream across the nodes holding it (blocking: called on the
    /// export's thread).
    fn plan(&self, req: &RangeRequest) -> Result<RangePlan, RangeError>;
}

/// What [`RangeSource::plan`] is asked.
#[derive(Clone, Debug)]
pub struct RangeRequest {
    pub key: StreamKey,
    pub start: Time90k,
    pub end: Time90k,
    /// Add the wall-clock subtitle track, in this time zone.
    pub subtitles: Option<jiff::tz::TimeZone>,
    /// The requesting user (JSON of the API's carried identity), for the holders' journals.
    pub on_behalf: Option<String>,
    /// Leave out (and list) footage held by nodes that cannot be reached, instead of failing.
    pub skip_unavailable: bool,
}

/// Why a range cannot be planned across nodes.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    /// Part of the range is held by nodes that cannot be reached (the message names them).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
}

/// A range planned by a [`RangeSource`].
pub enum RangePlan {
    /// Only this node (`node`) holds footage of the range: planned in its store, exactly as on
    /// a single node.
    Local { node: String },
    /// Footage from several nodes, laid out as one file.
    Nodes(Box<NodesPlan>),
}

/// A range laid out from the footage of several nodes.
pub struct NodesPlan {
    pub mp4: Arc<vigie_mp4::progressive::VirtualMp4>,
    /// The file's sample tables (every piece's, asked of its holder): frames, size, cues.
    pub input: vigie_mp4::progressive::Input,
    /// Recorded footage in the range, merged.
    pub spans: Vec<vigie_store::Span>,
    /// RFC 6381 codec strings, in order of appearance.
    pub codecs: Vec<String>,
    /// Each stretch of the file and the node it is read from, in order.
    pub recorders: Vec<(String, Time90k, Time90k)>,
    /// Parts held only by nodes that could not be reached (with `skip_unavailable`).
    pub unavailable: Vec<UnavailablePart>,
    /// Some of the sample data is on other nodes (derived copies are then refused: they decode
    /// local files).
    pub remote: bool,
}

/// A part of a range held only by a node that could not be reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnavailablePart {
    pub node: String,
    pub start: Time90k,
    pub end: Time90k,
    pub reason: String,
}

/// Longest range one export may cover.
pub const MAX_EXPORT_SECS: i64 = 24 * 3600;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Running,
    Done,
    Failed,
}

/// A job as persisted in `job.json` and shown by the API.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub status: Status,
    #[serde(default)]
    pub error: Option<String>,
    pub camera: String,
    pub stream: String,
    pub start_90k: i64,
    pub end_90k: i64,
    pub reason: String,
    pub procedure: String,
    pub requester: String,
    /// Who asked, as journaled (the user, plus the token id when an API token was used).
    pub operator: String,
    /// The user name alone (the manifest's `operator`).
    #[serde(default)]
    pub user: String,
    /// Add the wall-clock subtitle track to the MP4.
    pub ts: bool,
    /// A cluster: the requesting user (JSON of the API's carried identity), carried to the
    /// nodes holding the footage for their journals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf: Option<String>,
    /// A cluster: leave out footage held by nodes that cannot be reached (listed in the
    /// manifest's `unavailable`) instead of failing (`"unavailable": "skip"`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_unavailable: bool,
    /// Derived JPEG stills to add, at these instants (90 kHz wall clock; `gst` feature).
    #[serde(default)]
    pub stills_90k: Vec<i64>,
    /// Add a working copy with the camera name and date/time burned in (`gst` feature).
    #[serde(default)]
    pub burn_in: bool,
    pub created_90k: i64,
    #[serde(default)]
    pub finished_90k: Option<i64>,
    #[serde(default)]
    pub hold_id: Option<u64>,
    /// Size of the MP4 being written (known once planned).
    #[serde(default)]
    pub bytes_total: u64,
    /// SHA-256 of the master MP4 (once done; of the first camera's in a multi-camera export,
    /// every camera's is in `streams`).
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub mp4_bytes: Option<u64>,
    #[serde(default)]
    pub package_sha256: Option<String>,
    #[serde(default)]
    pub package_bytes: Option<u64>,
    /// Summary of the manifest (once done).
    #[serde(default)]
    pub manifest: Option<Value>,
    /// Estimated size of the package, counted against the quota while the job is under way.
    #[serde(default)]
    pub estimate_bytes: u64,
    /// Identity of the request, to return this job for an identical one while it is under way.
    #[serde(default)]
    pub dedupe_key: String,
    /// Set when the package was deleted (lifetime over, or its hold released).
    #[serde(default)]
    pub package_deleted: Option<PackageDeletion>,
    /// A multi-camera export: every camera, in the order asked (`camera`, `stream` and
    /// `hold_id` above repeat the first). Empty for a single-camera export (and in the
    /// `job.json` of jobs written before multi-camera exports existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<JobStream>,
}

/// One camera of a multi-camera export job.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobStream {
    pub camera: String,
    pub stream: String,
    /// The legal hold placed on this camera's range.
    #[serde(default)]
    pub hold_id: Option<u64>,
    /// SHA-256 and size of this camera's master MP4 (once done).
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub mp4_bytes: Option<u64>,
}

impl JobRecord {
    /// True for a multi-camera export.
    pub fn is_multi(&self) -> bool {
        !self.streams.is_empty()
    }
    /// The camera of every stream of the job (one for a single-camera export): the API checks
    /// the caller's rights on each.
    pub fn cameras(&self) -> Vec<&str> {
        if self.streams.is_empty() {
            vec![self.camera.as_str()]
        } else {
            self.streams.iter().map(|s| s.camera.as_str()).collect()
        }
    }
    /// The legal holds of the job (one per camera).
    pub fn hold_ids(&self) -> Vec<u64> {
        if self.streams.is_empty() {
            self.hold_id.into_iter().collect()
        } else {
            self.streams.iter().filter_map(|s| s.hold_id).collect()
        }
    }
    /// One view of the record per camera: `camera`, `stream`, `hold_id`, `sha256` and
    /// `mp4_bytes` set to that camera's (what is journaled per camera).
    pub fn per_camera(&self) -> Vec<JobRecord> {
        if self.streams.is_empty() {
            return vec![self.clone()];
        }
        self.streams
            .iter()
            .map(|s| JobRecord {
                camera: s.camera.clone(),
                stream: s.stream.clone(),
                hold_id: s.hold_id,
                sha256: s.sha256.clone(),
                mp4_bytes: s.mp4_bytes,
                ..self.clone()
            })
            .collect()
    }
}

/// Why and when a package was deleted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PackageDeletion {
    pub at_90k: i64,
    pub reason: String,
}

/// A job and its live progress.
#[derive(Debug)]
pub struct Job {
    record: Mutex<JobRecord>,
    written: AtomicU64,
}

impl Job {
    pub fn record(&self) -> JobRecord {
        self.record
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }
    fn update(&self, f: impl FnOnce(&mut JobRecord)) -> JobRecord {
        let mut g = self.record.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g);
        g.clone()
    }
    /// Bytes of the MP4 written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
    /// The job as JSON for the API (`progress` 0..1).
    pub fn to_json(&self) -> Value {
        let r = self.record();
        let written = if r.status == Status::Done {
            r.bytes_total
        } else {
            self.written()
        };
        let progress = match r.status {
            Status::Done => 1.0,
            _ if r.bytes_total > 0 => (written as f64 / r.bytes_total as f64).min(1.0),
            _ => 0.0,
        };
        json!({
            "id": r.id,
            "status": r.status,
            "progress": progress,
            "bytes_written": written,
            "bytes_total": r.bytes_total,
            "error": r.error,
            "camera": r.camera,
            "stream": r.stream,
            "start": Time90k(r.start_90k).to_rfc3339(),
            "end": Time90k(r.end_90k).to_rfc3339(),
            "reason": r.reason,
            "procedure": r.procedure,
            "requester": r.requester,
            "operator": r.operator,
            "ts": r.ts,
            "burn_in": r.burn_in,
            "created_at": Time90k(r.created_90k).to_rfc3339(),
            "finished_at": r.finished_90k.map(|t| Time90k(t).to_rfc3339()),
            "hold_id": r.hold_id,
            "sha256": r.sha256,
            "mp4_bytes": r.mp4_bytes,
            "package": (r.status == Status::Done && r.package_deleted.is_none()).then(|| json!({
                "url": format!("/api/v1/exports/{}/package", r.id),
                "sha256": r.package_sha256,
                "bytes": r.package_bytes,
            })),
            "package_deleted": r.package_deleted.as_ref().map(|d| json!({
                "at": Time90k(d.at_90k).to_rfc3339(),
                "reason": d.reason,
            })),
            "manifest": r.manifest,
            "streams": r.is_multi().then_some(&r.streams),
        })
    }
}

/// The export jobs of an installation and its signing key.
#[derive(Clone)]
pub struct Exports {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    key: InstallationKey,
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
    /// Requests admitted and not yet registered as jobs (placing their hold): counted by the
    /// limits like jobs. Locked after `jobs` when both are needed.
    reserved: Mutex<Vec<Reservation>>,
    /// The dedicated export workers' slots (`exports.max_running`), made at the first job.
    workers: std::sync::OnceLock<Arc<tokio::sync::Semaphore>>,
    next_reservation: AtomicU64,
}

#[derive(Debug, Clone)]
struct Reservation {
    id: u64,
    user: String,
    dedupe_key: String,
    estimate_bytes: u64,
}

/// What [`Exports::admit`] is asked about one request.
#[derive(Debug, Clone)]
pub struct AdmitRequest {
    pub user: String,
    /// Same value for identical requests (see the route).
    pub dedupe_key: String,
    pub estimate_bytes: u64,
}

/// The bounds [`Exports::admit`] applies (from `[exports]` and the free-space floor).
#[derive(Debug, Clone, Copy)]
pub struct ExportLimits {
    pub max_per_user: usize,
    pub max_queued: usize,
    pub quota_bytes: u64,
    pub min_free_bytes: u64,
}

impl ExportLimits {
    pub fn from_config(c: &Config) -> ExportLimits {
        ExportLimits {
            max_per_user: c.exports.max_concurrent_per_user as usize,
            max_queued: c.exports.max_queued as usize,
            quota_bytes: c.exports.quota_bytes.0,
            min_free_bytes: c.exports_min_free_bytes(),
        }
    }
}

/// A request admitted by [`Exports::admit`]: holds its place in the limits until it becomes a
/// job ([`Exports::create`]) or is dropped (the request failed).
#[derive(Debug)]
pub struct Admission {
    exports: Exports,
    id: u64,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Ok(mut r) = self.exports.inner.reserved.lock() {
            r.retain(|x| x.id != self.id);
        }
    }
}

/// The answer of [`Exports::admit`].
#[derive(Debug)]
pub enum Admit {
    New(Admission),
    /// An identical request is queued or running: this is its job.
    Existing(Arc<Job>),
}

impl std::fmt::Debug for Exports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exports")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path, e: std::io::Error) -> crate::ExportError {
    crate::ExportError::Io {
        path: path.display().to_string(),
        source: e,
    }
}

impl Exports {
    /// Loads (or creates, at the first start) the signing key in `<data_dir>/keys/` and the jobs
    /// in `<data_dir>/exports/`; jobs interrupted by a stop are marked failed and journaled.
    pub fn open(
        data_dir: &Path,
        journal: &vigie_audit::Journal,
        clock: &dyn vigie_core::Clock,
    ) -> Result<Exports, crate::ExportError> {
        let (key, created) = InstallationKey::load_or_create(data_dir)?;
        if created {
            tracing::info!(public_key = %key.public_hex(), path = %key.path().display(), "created the installation signing key (Ed25519)");
        } else {
            tracing::info!(public_key = %key.public_hex(), "installation signing key loaded");
        }
        let dir = data_dir.join("exports");
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let mut jobs = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let Ok(entry) = entry else { continue };
            let path = entry.path().join("job.json");
            let Ok(text) = std::fs::read(&path) else {
                continue;
            };
            let mut rec: JobRecord = match serde_json::from_slice(&text) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable export job: skipped");
                    continue;
                }
            };
            if !crate::valid_export_id(&rec.id) {
                continue;
            }
            if matches!(rec.status, Status::Queued | Status::Running) {
                rec.status = Status::Failed;
                rec.error = Some(
                    "interrupted: Vigie stopped while the package was being written; create the export again (the legal hold stays in place)"
                        .into(),
                );
                rec.finished_90k = Some(clock.now().0);
                let _ = std::fs::remove_file(partial_path(&dir, &rec.id));
                if let Err(e) = write_record(&dir, &rec) {
                    tracing::warn!(error = %e, id = %rec.id, "cannot mark an interrupted export as failed");
                }
                tracing::warn!(id = %rec.id, "export interrupted by a stop: marked failed");
                for e in create_entries(&rec) {
                    journal.append_or_log(e);
                }
            }
            jobs.insert(
                rec.id.clone(),
                Arc::new(Job {
                    record: Mutex::new(rec),
                    written: AtomicU64::new(0),
                }),
            );
        }
        Ok(Exports {
            inner: Arc::new(Inner {
                dir,
                key,
                jobs: Mutex::new(jobs),
                reserved: Mutex::new(Vec::new()),
                workers: std::sync::OnceLock::new(),
                next_reservation: AtomicU64::new(1),
            }),
        })
    }

    pub fn key(&self) -> &InstallationKey {
        &self.inner.key
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.inner.jobs.lock().ok()?.get(id).cloned()
    }

    /// All jobs, newest first.
    pub fn list(&self) -> Vec<Arc<Job>> {
        let Ok(jobs) = self.inner.jobs.lock() else {
            return Vec::new();
        };
        let mut v: Vec<_> = jobs.values().cloned().collect();
        v.sort_by_key(|j| std::cmp::Reverse(j.record().created_90k));
        v
    }

    /// The finished package of a job.
    pub fn package_path(&self, id: &str) -> PathBuf {
        self.inner
            .dir
            .join(id)
            .join(format!("vigie-export-{id}.zip"))
    }

    /// The directory holding the jobs and packages.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Bytes counted against the quota: packages kept, plus the estimates of the jobs under
    /// way and of the requests being admitted.
    pub fn used_bytes(&self) -> u64 {
        let jobs = self.list();
        let reserved: u64 = self
            .inner
            .reserved
            .lock()
            .map(|r| r.iter().map(|x| x.estimate_bytes).sum())
            .unwrap_or(0);
        jobs.iter()
            .map(|j| {
                let r = j.record();
                match r.status {
                    Status::Queued | Status::Running => r.estimate_bytes.max(r.bytes_total),
                    Status::Done if r.package_deleted.is_none() => r.package_bytes.unwrap_or(0),
                    _ => 0,
                }
            })
            .sum::<u64>()
            + reserved
    }

    /// Admits a new export request, or refuses it, atomically against concurrent requests (the
    /// place is reserved before the slow part: placing the hold). Refusals: 429 over a job
    /// limit, 409 while an identical request is being created, 507 over the quota or the
    /// free-space floor. `free_bytes` is the free space of the exports file system.
    pub fn admit(
        &self,
        req: &AdmitRequest,
        limits: ExportLimits,
        free_bytes: u64,
    ) -> Result<Admit, JobError> {
        let used = self.used_bytes();
        let jobs = self
            .inner
            .jobs
            .lock()
            .map_err(|_| JobError::Internal("export table poisoned".into()))?;
        let mut reserved = self
            .inner
            .reserved
            .lock()
            .map_err(|_| JobError::Internal("export reservations poisoned".into()))?;
        let active: Vec<JobRecord> = jobs
            .values()
            .map(|j| j.record())
            .filter(|r| matches!(r.status, Status::Queued | Status::Running))
            .collect();
        if let Some(j) = jobs.values().find(|j| {
            let r = j.record();
            matches!(r.status, Status::Queued | Status::Running) && r.dedupe_key == req.dedupe_key
        }) {
            return Ok(Admit::Existing(j.clone()));
        }
        if reserved.iter().any(|r| r.dedupe_key == req.dedupe_key) {
            return Err(JobError::Conflict(
                "an identical export request is being created right now: list the exports (GET /api/v1/exports) in a moment".into(),
            ));
        }
        let mine = active.iter().filter(|r| r.user == req.user).count()
            + reserved.iter().filter(|r| r.user == req.user).count();
        if mine >= limits.max_per_user {
            return Err(JobError::LimitReached {
                message: format!(
                    "user {:?} already has {mine} export job(s) queued or running (exports.max_concurrent_per_user = {}): wait for one to finish",
                    req.user, limits.max_per_user
                ),
                retry_after_s: 30,
            });
        }
        let total = active.len() + reserved.len();
        if total >= limits.max_queued {
            return Err(JobError::LimitReached {
                message: format!(
                    "{total} export jobs are queued or running (exports.max_queued = {}): try again later",
                    limits.max_queued
                ),
                retry_after_s: 30,
            });
        }
        if used.saturating_add(req.estimate_bytes) > limits.quota_bytes {
            return Err(JobError::InsufficientStorage(format!(
                "the export quota would be exceeded: {used} bytes of packages kept or under way + about {} for this one > exports.quota_bytes ({}); packages are deleted when their hold is released or after exports.package_lifetime_days",
                req.estimate_bytes, limits.quota_bytes
            )));
        }
        let pending: u64 = active
            .iter()
            .map(|r| {
                r.estimate_bytes
                    .max(r.bytes_total)
                    .saturating_sub(jobs.get(&r.id).map_or(0, |j| j.written()))
            })
            .sum::<u64>()
            + reserved.iter().map(|r| r.estimate_bytes).sum::<u64>();
        let after = free_bytes
            .saturating_sub(pending)
            .saturating_sub(req.estimate_bytes);
        if after < limits.min_free_bytes {
            return Err(JobError::InsufficientStorage(format!(
                "not enough free space for this export: {free_bytes} bytes free on the exports file system, about {} needed by the exports under way and this one, and {} must stay free (exports.min_free_bytes) so that recording is not affected",
                pending.saturating_add(req.estimate_bytes),
                limits.min_free_bytes
            )));
        }
        let id = self.inner.next_reservation.fetch_add(1, Ordering::Relaxed);
        reserved.push(Reservation {
            id,
            user: req.user.clone(),
            dedupe_key: req.dedupe_key.clone(),
            estimate_bytes: req.estimate_bytes,
        });
        Ok(Admit::New(Admission {
            exports: self.clone(),
            id,
        }))
    }

    /// Registers and persists a new job (status queued), ending its admission's reservation.
    pub fn create(&self, admission: Admission, rec: JobRecord) -> Result<Arc<Job>, JobError> {
        let job = self.create_unchecked(rec)?;
        drop(admission);
        Ok(job)
    }

    fn create_unchecked(&self, rec: JobRecord) -> Result<Arc<Job>, JobError> {
        let dir = self.inner.dir.join(&rec.id);
        std::fs::create_dir(&dir)
            .map_err(|e| JobError::Internal(format!("creating {}: {e}", dir.display())))?;
        write_record(&self.inner.dir, &rec).map_err(|e| JobError::Internal(e.to_string()))?;
        let job = Arc::new(Job {
            record: Mutex::new(rec.clone()),
            written: AtomicU64::new(0),
        });
        self.inner
            .jobs
            .lock()
            .map_err(|_| JobError::Internal("export table poisoned".into()))?
            .insert(rec.id, job.clone());
        Ok(job)
    }

    fn save(&self, rec: &JobRecord) {
        if let Err(e) = write_record(&self.inner.dir, rec) {
            tracing::error!(id = %rec.id, error = %e, "cannot persist the export job");
        }
    }
}

fn partial_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(id).join(format!("vigie-export-{id}.zip.partial"))
}

fn write_record(dir: &Path, rec: &JobRecord) -> Result<(), crate::ExportError> {
    let path = dir.join(&rec.id).join("job.json");
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(rec)?;
    // On a full disk the write fails part way: leave no `.tmp` behind (the job file in place
    // keeps its previous state; at the next start a job left running is marked failed).
    let written = std::fs::write(&tmp, bytes)
        .map_err(|e| io(&tmp, e))
        .and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| io(&path, e)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The `ExportCreate` journal entries of a finished (done or failed) job, one per camera (a
/// multi-camera export is an extraction from each camera; each entry carries that camera's
/// master hash and the export id). `details.sha256` and `details.requester` are what the legal
/// register prints.
fn create_entries(r: &JobRecord) -> Vec<NewEntry> {
    let n = r.cameras().len();
    r.per_camera()
        .iter()
        .map(|c| {
            let mut e = create_entry(c);
            if r.is_multi() {
                e = e.details(multi_details(create_details(c), n));
            }
            e
        })
        .collect()
}

/// `details` of a multi-camera job's per-camera entry: the single-camera details plus how many
/// cameras the package holds.
fn multi_details(mut d: Value, cameras: usize) -> Value {
    d["cameras"] = json!(cameras);
    d
}

fn create_details(r: &JobRecord) -> Value {
    json!({
        "export_id": r.id,
        "requester": r.requester,
        "status": r.status,
        "sha256": r.sha256,
        "bytes": r.mp4_bytes,
        "package_sha256": r.package_sha256,
        "hold_id": r.hold_id,
        "error": r.error,
    })
}

fn create_entry(r: &JobRecord) -> NewEntry {
    NewEntry::new(r.operator.clone(), Action::ExportCreate)
        .camera(&r.camera, &r.stream)
        .range(Time90k(r.start_90k), Time90k(r.end_90k))
        .procedure(r.procedure.clone())
        .reason(r.reason.clone())
        .details(create_details(r))
}

impl Exports {
    /// Runs a job to its end in the background and journals the outcome. The job waits for one of
    /// the `exports.max_running` worker slots, then runs on a thread of its own (never on tokio's
    /// blocking pool, which the journal and retention need).
    pub fn spawn(&self, ctx: &JobContext, job: Arc<Job>) {
        let slots = self
            .inner
            .workers
            .get_or_init(|| {
                Arc::new(tokio::sync::Semaphore::new(
                    ctx.config.exports.max_running.max(1) as usize,
                ))
            })
            .clone();
        let (exports, ctx) = (self.clone(), ctx.clone());
        tokio::spawn(async move {
            let result = match slots.acquire_owned().await {
                Err(e) => Err(format!("the export workers are closed: {e}")),
                Ok(slot) => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let (ex, cx, j) = (exports.clone(), ctx.clone(), job.clone());
                    let started = std::thread::Builder::new()
                        .name("vigie-export".into())
                        .spawn(move || {
                            let r = ex.run(&cx, &j);
                            drop(slot);
                            let _ = tx.send(r);
                        });
                    match started {
                        Err(e) => Err(format!("cannot start the export worker thread: {e}")),
                        Ok(_) => rx.await.unwrap_or_else(|_| {
                            Err("the export worker stopped unexpectedly".into())
                        }),
                    }
                }
            };
            let now = ctx.clock.now().0;
            let rec = job.update(|r| {
                r.finished_90k = Some(now);
                match result {
                    Ok(()) => r.status = Status::Done,
                    Err(e) => {
                        r.status = Status::Failed;
                        r.error = Some(e);
                    }
                }
            });
            if rec.status == Status::Failed {
                let _ = std::fs::remove_file(partial_path(&exports.inner.dir, &rec.id));
                tracing::error!(id = %rec.id, camera = %rec.camera, stream = %rec.stream, error = ?rec.error, "export failed");
            } else {
                tracing::info!(id = %rec.id, camera = %rec.camera, stream = %rec.stream, sha256 = ?rec.sha256, "export done");
            }
            exports.save(&rec);
            // Off the executor: the journal fsyncs. One entry per camera.
            let (journal, entries) = (ctx.journal.clone(), create_entries(&rec));
            let appended = tokio::task::spawn_blocking(move || {
                entries
                    .into_iter()
                    .try_for_each(|e| journal.append(e).map(|_| ()))
            })
            .await;
            match appended {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(id = %rec.id, error = %e, "cannot journal the export")
                }
                Err(e) => tracing::error!(id = %rec.id, error = %e, "cannot journal the export"),
            }
        });
    }
}

/// Why a kept package must go now, if it must: its legal hold was released, or it is older
/// than `lifetime_s`.
pub fn deletion_due(
    r: &JobRecord,
    now: Time90k,
    lifetime_s: i64,
    released_holds: &std::collections::HashSet<u64>,
) -> Option<String> {
    if r.status != Status::Done || r.package_deleted.is_some() {
        return None;
    }
    // A multi-camera package goes when the hold of any of its cameras is released: that
    // camera's footage may then be destroyed, its copy must not outlive it.
    if let Some(h) = r
        .hold_ids()
        .into_iter()
        .find(|h| released_holds.contains(h))
    {
        return Some(format!("legal hold {h} released"));
    }
    let written = r.finished_90k.unwrap_or(r.created_90k);
    (now.0 - written >= lifetime_s * vigie_core::TIME_UNITS_PER_SEC).then(|| {
        format!(
            "package lifetime over ({} days, exports.package_lifetime_days)",
            lifetime_s / 86_400
        )
    })
}

/// The `ExportDelete` journal entry of a deleted package (listed in the legal register).
fn delete_entry(r: &JobRecord, reason: &str) -> NewEntry {
    NewEntry::new("system", Action::ExportDelete)
        .camera(&r.camera, &r.stream)
        .range(Time90k(r.start_90k), Time90k(r.end_90k))
        .procedure(r.procedure.clone())
        .reason(reason.to_owned())
        .details(json!({
            "export_id": r.id,
            "requester": r.requester,
            "sha256": r.sha256,
            "package_sha256": r.package_sha256,
            "bytes": r.package_bytes,
            "hold_id": r.hold_id,
        }))
}

impl Exports {
    /// One pass of the janitor: deletes the packages that are due ([`deletion_due`]), marks
    /// their jobs and journals each deletion. Returns how many were deleted. Blocking (file
    /// system, journal): run it off the executor.
    pub fn delete_due_packages(
        &self,
        store: &Store,
        journal: &vigie_audit::Journal,
        now: Time90k,
        lifetime_s: i64,
    ) -> usize {
        let released: std::collections::HashSet<u64> = match store.holds() {
            Ok(h) => h.iter().filter(|h| !h.active()).map(|h| h.id).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "export janitor: cannot read the holds");
                return 0;
            }
        };
        let mut deleted = 0;
        for job in self.list() {
            let rec = job.record();
            let Some(reason) = deletion_due(&rec, now, lifetime_s, &released) else {
                continue;
            };
            let path = self.package_path(&rec.id);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(id = %rec.id, path = %path.display(), error = %e, "cannot delete an export package");
                    continue;
                }
            }
            let rec = job.update(|r| {
                r.package_deleted = Some(PackageDeletion {
                    at_90k: now.0,
                    reason: reason.clone(),
                })
            });
            self.save(&rec);
            tracing::info!(id = %rec.id, camera = %rec.camera, stream = %rec.stream, %reason, "export package deleted");
            for c in rec.per_camera() {
                journal.append_or_log(delete_entry(&c, &reason));
            }
            deleted += 1;
        }
        deleted
    }
}

/// Deletes export packages when due, every `exports.check_interval_s`, until `shutdown`.
pub async fn janitor(
    exports: Exports,
    ctx: JobContext,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let every = std::time::Duration::from_secs(u64::from(ctx.config.exports.check_interval_s));
    let lifetime_s = i64::from(ctx.config.exports.package_lifetime_days) * 86_400;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(every) => {}
        }
        let (ex, cx) = (exports.clone(), ctx.clone());
        let pass = tokio::task::spawn_blocking(move || {
            ex.delete_due_packages(&cx.store, &cx.journal, cx.clock.now(), lifetime_s)
        })
        .await;
        if let Err(e) = pass {
            tracing::error!(error = %e, "export janitor pass panicked");
        }
    }
}

/// Upper estimate of a package's size: the recorded bytes of `[start, end)` (each segment's
/// bytes pro rata of its overlap), plus room for the index, manifest and player; twice that
/// with a burned-in copy, plus 512 KiB per derived still.
pub fn estimate_package_bytes(
    segs: &[vigie_store::SegmentInfo],
    start: Time90k,
    end: Time90k,
    burn_in: bool,
    stills: usize,
) -> u64 {
    let media: u64 = segs
        .iter()
        .map(|s| {
            let (a, b) = (s.start.max(start), s.end().min(end));
            if b <= a || s.duration_90k <= 0 {
                return 0;
            }
            let part = (b - a).0 as f64 / s.duration_90k as f64;
            (s.bytes as f64 * part.min(1.0)).ceil() as u64
        })
        .sum();
    (media + media / 50 + 256 * 1024)
        .saturating_mul(if burn_in { 2 } else { 1 })
        .saturating_add(stills as u64 * 512 * 1024)
}

/// Free space of the file system holding `dir` (`u64::MAX` when it cannot be read: the write
/// itself will then fail cleanly).
pub fn free_bytes(dir: &Path) -> u64 {
    use vigie_store::FreeSpace;
    vigie_store::Statvfs
        .space(dir)
        .map_or(u64::MAX, |s| s.free_bytes)
}

fn local(t: Time90k, tz: &jiff::tz::TimeZone) -> mf::Instant {
    mf::Instant {
        utc: t.to_rfc3339(),
        local: t
            .to_timestamp()
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%.3f%:z")
            .to_string(),
    }
}

fn range(a: Time90k, b: Time90k, tz: &jiff::tz::TimeZone) -> mf::Range {
    mf::Range {
        start: local(a, tz),
        end: local(b, tz),
        duration_s: (b - a).as_secs_f64(),
    }
}

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect()
}

pub use vigie_store::gaps;

/// Frames presented by the edit list `[skip, skip + duration)` of samples with these durations
/// (a frame counts if any of it is shown), as `ffprobe -count_frames` reports them.
pub fn presented_frames(durations: impl Iterator<Item = u32>, skip: u64, duration: u64) -> u64 {
    let (mut t, mut n) = (0u64, 0u64);
    for d in durations {
        let end = t + u64::from(d);
        if end > skip && t < skip + duration {
            n += 1;
        }
        t = end;
    }
    n
}

/// One stream's range, planned and measured: what its master MP4 and its part of the manifest
/// are made from.
struct Planned {
    mp4: Arc<vigie_mp4::progressive::VirtualMp4>,
    input: vigie_mp4::progressive::Input,
    /// Recorded footage in the range (merged).
    spans: Vec<vigie_store::Span>,
    /// Presentation → wall clock (the burned-in copy); empty for footage from several nodes.
    pieces: Vec<vigie_store::Piece>,
    codec: Option<vigie_core::Codec>,
    /// RFC 6381 codec strings of the segments, in order of appearance.
    codecs: Vec<String>,
    frames: u64,
    /// A cluster: the node each stretch came from (empty on a single node).
    recorders: Vec<(String, Time90k, Time90k)>,
    /// A cluster: parts left out because their node could not be reached.
    unavailable: Vec<UnavailablePart>,
    /// Laid out from several nodes' footage (no derived copies).
    across_nodes: bool,
}

/// `<camera>_<stream>_<start>_<end>.mp4`, the master's name in the package.
fn master_name(camera: &str, stream: &str, start: Time90k, end: Time90k) -> String {
    format!(
        "{}_{}_{}_{}.mp4",
        clean(camera),
        clean(stream),
        compact(start),
        compact(end)
    )
}

fn compact(t: Time90k) -> String {
    t.to_timestamp().strftime("%Y%m%dT%H%M%SZ").to_string()
}

fn camera_info(config: &Config, cam: &vigie_core::config::Camera) -> mf::CameraInfo {
    let commune = config.communes.iter().find(|c| c.id == cam.commune);
    mf::CameraInfo {
        id: cam.id.clone(),
        name: cam.name.clone(),
        commune: mf::CommuneInfo {
            id: cam.commune.clone(),
            name: commune.map_or_else(|| cam.commune.clone(), |c| c.name.clone()),
            authorisation: commune.and_then(|c| c.authorisation.clone()),
            authorisation_expires: commune
                .and_then(|c| c.authorisation_expires)
                .map(|d| d.to_string()),
        },
    }
}

impl Planned {
    /// Plans `[start, end)` of `key` (gaps skipped): in the store, or in a cluster across the
    /// nodes holding it ([`RangeSource`]).
    fn new(
        ctx: &JobContext,
        rec: &JobRecord,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
        tz: &jiff::tz::TimeZone,
    ) -> Result<Planned, String> {
        let Some(source) = &ctx.ranges else {
            return Planned::local(&ctx.store, key, start, end, rec.ts, tz);
        };
        let req = RangeRequest {
            key: key.clone(),
            start,
            end,
            subtitles: rec.ts.then(|| tz.clone()),
            on_behalf: rec.on_behalf.clone(),
            skip_unavailable: rec.skip_unavailable,
        };
        match source.plan(&req).map_err(|e| format!("{key}: {e}"))? {
            RangePlan::Local { node } => {
                let mut p = Planned::local(&ctx.store, key, start, end, rec.ts, tz)?;
                let (a, b) = p.actual(start, end);
                p.recorders = vec![(node, a, b)];
                Ok(p)
            }
            RangePlan::Nodes(n) => {
                let n = *n;
                let frames = presented_frames(
                    n.input.samples.iter().map(|s| s.duration_90k),
                    n.input.skip_90k,
                    n.input.duration_90k,
                );
                let codec = n.codecs.first().map(|c| {
                    if c.starts_with("hvc1") || c.starts_with("hev1") {
                        vigie_core::Codec::H265
                    } else {
                        vigie_core::Codec::H264
                    }
                });
                Ok(Planned {
                    mp4: n.mp4,
                    input: n.input,
                    spans: n.spans,
                    pieces: Vec::new(),
                    codec,
                    codecs: n.codecs,
                    frames,
                    recorders: n.recorders,
                    unavailable: n.unavailable,
                    across_nodes: n.remote,
                })
            }
        }
    }

    /// Plans `[start, end)` of `key` in the store (gaps skipped) and builds its virtual MP4.
    fn local(
        store: &Store,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
        ts: bool,
        tz: &jiff::tz::TimeZone,
    ) -> Result<Planned, String> {
        let mut plan = store
            .playback_plan(key, start, end, GapPolicy::Skip)
            .map_err(|e| format!("planning {key}: {e}"))?;
        if ts {
            plan.input.cues = vigie_footage::cues(&plan.pieces, tz);
        }
        let mp4 = plan
            .clone()
            .build()
            .map_err(|e| format!("building the MP4 of {key}: {e}"))?;
        let mut codecs: Vec<String> = Vec::new();
        let mut codec = None;
        for seg in &plan.segments {
            let params = store
                .segment(seg.id)
                .ok()
                .flatten()
                .and_then(|s| store.params(s.params_id).ok().flatten());
            if let Some(p) = params {
                codec.get_or_insert(p.codec);
                if !codecs.contains(&p.rfc6381_codec) {
                    codecs.push(p.rfc6381_codec);
                }
            }
        }
        let input = plan
            .materialise()
            .map_err(|e| format!("reading the sample tables of {key}: {e}"))?;
        let frames = presented_frames(
            input.samples.iter().map(|s| s.duration_90k),
            input.skip_90k,
            input.duration_90k,
        );
        Ok(Planned {
            mp4: Arc::new(mp4),
            input,
            spans: plan.spans,
            pieces: plan.pieces,
            codec,
            codecs,
            frames,
            recorders: Vec::new(),
            unavailable: Vec::new(),
            across_nodes: false,
        })
    }

    fn actual(&self, start: Time90k, end: Time90k) -> (Time90k, Time90k) {
        (
            self.spans.first().map_or(start, |s| s.start),
            self.spans.last().map_or(end, |s| s.end),
        )
    }

    fn spans(&self, tz: &jiff::tz::TimeZone) -> Vec<mf::Range> {
        self.spans
            .iter()
            .map(|s| range(s.start, s.end, tz))
            .collect()
    }

    /// The manifest's `recorders` (empty on a single node).
    fn recorders(&self, tz: &jiff::tz::TimeZone) -> Vec<mf::Recorder> {
        self.recorders
            .iter()
            .map(|(node, a, b)| mf::Recorder {
                node: node.clone(),
                start: local(*a, tz),
                end: local(*b, tz),
                duration_s: (*b - *a).as_secs_f64(),
            })
            .collect()
    }

    /// The manifest's `unavailable` (empty unless allowed and a holder could not be reached).
    fn unavailable(&self, tz: &jiff::tz::TimeZone) -> Vec<mf::Unavailable> {
        self.unavailable
            .iter()
            .map(|u| mf::Unavailable {
                node: u.node.clone(),
                start: local(u.start, tz),
                end: local(u.end, tz),
                duration_s: (u.end - u.start).as_secs_f64(),
                reason: u.reason.clone(),
            })
            .collect()
    }

    fn gaps(&self, start: Time90k, end: Time90k, tz: &jiff::tz::TimeZone) -> Vec<mf::Gap> {
        gaps(&self.spans, start, end)
            .into_iter()
            .map(|(a, b)| mf::Gap {
                start: local(a, tz),
                end: local(b, tz),
                duration_s: (b - a).as_secs_f64(),
            })
            .collect()
    }

    fn video(&self, file: String) -> mf::VideoInfo {
        mf::VideoInfo {
            file,
            processing: "copie du flux, sans réencodage / stream copy, no re-encoding".into(),
            codec: self.codecs.join(","),
            width: u32::from(self.input.width),
            height: u32::from(self.input.height),
            frames: self.frames,
            duration_s: self.input.duration_90k as f64 / 90_000.0,
            timestamp_track: !self.input.cues.is_empty(),
        }
    }
}

impl Exports {
    /// Refuses to write what would cross the free-space floor, once the size is known.
    fn check_room(&self, config: &Config, bytes: u64) -> Result<(), String> {
        let floor = config.exports_min_free_bytes();
        let free = free_bytes(&self.inner.dir);
        if free.saturating_sub(bytes) < floor {
            return Err(format!(
                "not enough free space: the package needs about {bytes} bytes, {free} are free and {floor} must stay free (exports.min_free_bytes)"
            ));
        }
        Ok(())
    }

    fn run(&self, ctx: &JobContext, job: &Job) -> Result<(), String> {
        let rec = job.update(|r| r.status = Status::Running);
        self.save(&rec);
        if rec.is_multi() {
            return self.run_multi(ctx, job, &rec);
        }
        let config: &Config = &ctx.config;
        let cam = config
            .camera(&rec.camera)
            .ok_or_else(|| format!("camera {:?} is no longer configured", rec.camera))?;
        let tz = jiff::tz::TimeZone::get(&config.server.timezone)
            .map_err(|e| format!("server.timezone: {e}"))?;
        let key = StreamKey::new(&rec.camera, &rec.stream);
        let (start, end) = (Time90k(rec.start_90k), Time90k(rec.end_90k));
        let p = Planned::new(ctx, &rec, &key, start, end, &tz)?;
        if p.across_nodes && (rec.burn_in || !rec.stills_90k.is_empty()) {
            return Err(format!(
                "{key}: the footage of the range is on several nodes ({}): derived stills and the burned-in copy are made only from footage this node holds; export without them, or ask the node holding the footage",
                p.recorders
                    .iter()
                    .map(|r| r.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        job.update(|r| r.bytes_total = p.mp4.total_len);
        self.check_room(config, p.mp4.total_len)?;
        let (actual_start, actual_end) = p.actual(start, end);
        let manifest = Manifest {
            format: crate::FORMAT.into(),
            export_id: rec.id.clone(),
            software: software(),
            exported_at: local(ctx.clock.now(), &tz),
            operator: operator(&rec),
            requester: rec.requester.clone(),
            procedure: rec.procedure.clone(),
            reason: rec.reason.clone(),
            camera: camera_info(config, cam),
            stream: rec.stream.clone(),
            timezone: config.server.timezone.clone(),
            requested: range(start, end, &tz),
            actual: range(actual_start, actual_end, &tz),
            recorded_spans: p.spans(&tz),
            gaps: p.gaps(start, end, &tz),
            video: p.video(master_name(&rec.camera, &rec.stream, start, end)),
            recorders: p.recorders(&tz),
            unavailable: p.unavailable(&tz),
            files: Vec::new(),
            signature: Default::default(),
        };
        let mut extra = derived_stills(ctx, &key, &rec.stills_90k, &tz)?;
        let path = self.package_path(&rec.id);
        if rec.burn_in {
            let name = format!("derive-burnin-{}.mp4", compact(start));
            extra.push(derived_burn_in(
                &path, &p.input, &p.pieces, p.codec, cam, &tz, &name,
            )?);
        }
        let written = crate::write_package(
            &path,
            PackageSpec {
                manifest,
                mp4: &p.mp4,
                extra,
                reader: reader(ctx),
            },
            self.key(),
            &mut |w, _| job.written.store(w, Ordering::Relaxed),
        )
        .map_err(|e| format!("writing the package: {e}"))?;
        let m = &written.manifest;
        let mut summary = json!({
            "actual": m.actual,
            "gaps": m.gaps,
            "video": m.video,
            "files": m.files,
            "public_key_hex": m.signature.public_key_hex,
        });
        // A cluster: where the footage came from, and what could not be reached.
        if !m.recorders.is_empty() {
            summary["recorders"] = json!(m.recorders);
        }
        if !m.unavailable.is_empty() {
            summary["unavailable"] = json!(m.unavailable);
        }
        job.update(|r| {
            r.sha256 = Some(written.mp4_sha256.clone());
            r.mp4_bytes = Some(written.mp4_bytes);
            r.package_sha256 = Some(written.package_sha256.clone());
            r.package_bytes = Some(written.package_bytes);
            r.manifest = Some(summary);
        });
        Ok(())
    }

    /// A multi-camera job: every camera planned first (so a camera that cannot be exported
    /// fails the job before anything is written), then one package with a master per camera
    /// ([`crate::write_multi_package`]).
    fn run_multi(&self, ctx: &JobContext, job: &Job, rec: &JobRecord) -> Result<(), String> {
        let config: &Config = &ctx.config;
        let tz = jiff::tz::TimeZone::get(&config.server.timezone)
            .map_err(|e| format!("server.timezone: {e}"))?;
        let (start, end) = (Time90k(rec.start_90k), Time90k(rec.end_90k));
        let mut planned = Vec::with_capacity(rec.streams.len());
        let mut cameras = Vec::with_capacity(rec.streams.len());
        for s in &rec.streams {
            let cam = config
                .camera(&s.camera)
                .ok_or_else(|| format!("camera {:?} is no longer configured", s.camera))?;
            let key = StreamKey::new(&s.camera, &s.stream);
            let _span =
                tracing::info_span!("export", camera = %s.camera, stream = %s.stream).entered();
            let p = Planned::new(ctx, rec, &key, start, end, &tz)?;
            let (a, b) = p.actual(start, end);
            cameras.push(mf::CameraExport {
                camera: camera_info(config, cam),
                stream: s.stream.clone(),
                actual: range(a, b, &tz),
                recorded_spans: p.spans(&tz),
                gaps: p.gaps(start, end, &tz),
                video: p.video(master_name(&s.camera, &s.stream, start, end)),
                recorders: p.recorders(&tz),
                unavailable: p.unavailable(&tz),
            });
            planned.push(p);
        }
        let total: u64 = planned.iter().map(|p| p.mp4.total_len).sum();
        job.update(|r| r.bytes_total = total);
        self.check_room(config, total)?;
        let manifest = mf::MultiManifest {
            format: crate::FORMAT_MULTI.into(),
            export_id: rec.id.clone(),
            software: software(),
            exported_at: local(ctx.clock.now(), &tz),
            operator: operator(rec),
            requester: rec.requester.clone(),
            procedure: rec.procedure.clone(),
            reason: rec.reason.clone(),
            timezone: config.server.timezone.clone(),
            requested: range(start, end, &tz),
            cameras,
            files: Vec::new(),
            signature: Default::default(),
        };
        let path = self.package_path(&rec.id);
        let written = crate::write_multi_package(
            &path,
            crate::MultiPackageSpec {
                manifest,
                mp4s: planned.iter().map(|p| &*p.mp4).collect(),
                reader: reader(ctx),
            },
            self.key(),
            &mut |w, _| job.written.store(w, Ordering::Relaxed),
        )
        .map_err(|e| format!("writing the package: {e}"))?;
        let m = &written.manifest;
        let summary = json!({
            "format": m.format,
            "cameras": m.cameras.iter().map(|c| {
                let mut v = json!({
                    "camera": c.camera.id,
                    "stream": c.stream,
                    "actual": c.actual,
                    "gaps": c.gaps,
                    "video": c.video,
                });
                // A cluster: where the footage came from, and what could not be reached.
                if !c.recorders.is_empty() {
                    v["recorders"] = json!(c.recorders);
                }
                if !c.unavailable.is_empty() {
                    v["unavailable"] = json!(c.unavailable);
                }
                v
            }).collect::<Vec<_>>(),
            "files": m.files,
            "public_key_hex": m.signature.public_key_hex,
        });
        job.update(|r| {
            for (s, (sha, bytes)) in r.streams.iter_mut().zip(&written.masters) {
                s.sha256 = Some(sha.clone());
                s.mp4_bytes = Some(*bytes);
            }
            // The first camera's master, as for a single-camera job.
            r.sha256 = written.masters.first().map(|m| m.0.clone());
            r.mp4_bytes = written.masters.first().map(|m| m.1);
            r.package_sha256 = Some(written.package_sha256.clone());
            r.package_bytes = Some(written.package_bytes);
            r.manifest = Some(summary);
        });
        Ok(())
    }
}

/// How the masters are read: through the cluster's footage when there is one (its parts on
/// other nodes), else from the local files.
fn reader(ctx: &JobContext) -> Option<&dyn crate::MasterReader> {
    ctx.ranges.as_deref().map(|r| r as &dyn crate::MasterReader)
}

fn software() -> mf::Software {
    mf::Software {
        name: "Vigie".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// The manifest's `operator`: the user name alone.
fn operator(rec: &JobRecord) -> String {
    if rec.user.is_empty() {
        rec.operator.clone()
    } else {
        rec.user.clone()
    }
}

/// Derived JPEG stills of the frames shown at `instants`, decoded from the stored frames (the
/// same bytes as the master's) with GStreamer; named `derive-still-NN-<UTC>.jpg`; the manifest
/// gives each the master's SHA-256.
#[cfg(feature = "gst")]
fn derived_stills(
    ctx: &JobContext,
    key: &StreamKey,
    instants: &[i64],
    tz: &jiff::tz::TimeZone,
) -> Result<Vec<crate::ExtraFile>, String> {
    let mut out = Vec::new();
    // The camera's privacy masks are painted on every still (CSI L251-3).
    let masks = vigie_decode::masks::MaskSet::new(
        ctx.config
            .camera(&key.camera)
            .map(|c| c.masks.clone())
            .unwrap_or_default(),
    );
    for (i, &t) in instants.iter().enumerate() {
        let at = Time90k(t);
        let job = vigie_decode::still::job_from_store(&ctx.store, key, Some(at), ctx.clock.now())
            .map_err(|e| format!("still at {}: {e}", at.to_rfc3339()))?;
        let jpeg = vigie_decode::still::decode_to_jpeg_masked(&job, masks.clone())
            .map_err(|e| format!("still at {}: {e}", at.to_rfc3339()))?;
        let l = local(at, tz);
        out.push(crate::ExtraFile {
            name: format!(
                "derive-still-{:02}-{}.jpg",
                i + 1,
                at.to_timestamp().strftime("%Y%m%dT%H%M%S%.3fZ")
            ),
            role: "derived".into(),
            bytes: jpeg,
            derived_from_master: true,
            description: Some(format!(
                "image fixe dérivée (JPEG, décodée) de l'image affichée à {} / derived still (decoded JPEG) of the picture shown at {}",
                l.local, l.utc
            )),
        });
    }
    Ok(out)
}

#[cfg(not(feature = "gst"))]
fn derived_stills(
    _: &JobContext,
    _: &StreamKey,
    instants: &[i64],
    _: &jiff::tz::TimeZone,
) -> Result<Vec<crate::ExtraFile>, String> {
    if instants.is_empty() {
        Ok(Vec::new())
    } else {
        Err("derived stills need the `gst` cargo feature".into())
    }
}

/// The burned-in working copy ([`vigie_decode::burnin`]): the master's pictures (its samples, read
/// from the segment files it is made of, within its edit list) re-encoded with the camera name
/// and the wall-clock time of each picture. Written to a temporary file next to the package.
#[cfg(feature = "gst")]
fn derived_burn_in(
    package: &Path,
    input: &vigie_mp4::progressive::Input,
    pieces: &[vigie_store::Piece],
    codec: Option<vigie_core::Codec>,
    cam: &vigie_core::config::Camera,
    tz: &jiff::tz::TimeZone,
    name: &str,
) -> Result<crate::ExtraFile, String> {
    let out = package.with_extension("burnin.tmp.mp4");
    let result = vigie_decode::burnin::burn_in_masked(
        input,
        &out,
        codec.unwrap_or(vigie_core::Codec::H264),
        &cam.name,
        pieces.to_vec(),
        tz.clone(),
        // The camera's privacy masks, painted on every picture (CSI L251-3).
        vigie_decode::masks::MaskSet::new(cam.masks.clone()),
    )
    .map_err(|e| format!("burned-in copy: {e}"))
    .and_then(|()| std::fs::read(&out).map_err(|e| format!("burned-in copy: {e}")));
    let _ = std::fs::remove_file(&out);
    Ok(crate::ExtraFile {
        name: name.to_owned(),
        role: "derived".into(),
        bytes: result?,
        derived_from_master: true,
        description: Some(
            "copie de travail dérivée (réencodée H.264) avec nom de la caméra, date et heure incrustés / derived working copy (re-encoded H.264) with camera name, date and time burned in"
                .into(),
        ),
    })
}

#[cfg(not(feature = "gst"))]
fn derived_burn_in(
    _: &Path,
    _: &vigie_mp4::progressive::Input,
    _: &[vigie_store::Piece],
    _: Option<vigie_core::Codec>,
    _: &vigie_core::config::Camera,
    _: &jiff::tz::TimeZone,
    _: &str,
) -> Result<crate::ExtraFile, String> {
    Err("the burned-in copy needs the `gst` cargo feature".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigie_store::Span;

    #[test]
    fn gaps_are_the_complement_of_the_spans() {
        let t = |s: i64| Time90k(s * vigie_core::TIME_UNITS_PER_SEC);
        let spans = [
            Span {
                start: t(12),
                end: t(20),
            },
            Span {
                start: t(25),
                end: t(28),
            },
        ];
        assert_eq!(
            gaps(&spans, t(10), t(30)),
            [(t(10), t(12)), (t(20), t(25)), (t(28), t(30))]
        );
        assert!(gaps(&spans[..1], t(12), t(20)).is_empty());
    }

    #[test]
    fn a_job_interrupted_by_a_stop_is_failed_and_journaled_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(vigie_core::SimulatedClock::new(Time90k(
            1_000 * vigie_core::TIME_UNITS_PER_SEC,
        )));
        let journal =
            vigie_audit::Journal::open(&dir.path().join("journal"), clock.clone()).unwrap();
        let ex = Exports::open(dir.path(), &journal, &*clock).unwrap();
        let key_hex = ex.key().public_hex();
        let rec = JobRecord {
            id: "20261128T210000Z-00000001".into(),
            status: Status::Queued,
            error: None,
            camera: "cam".into(),
            stream: "main".into(),
            start_90k: 0,
            end_90k: 90_000,
            reason: "r".into(),
            procedure: "p".into(),
            requester: "q".into(),
            operator: "alice".into(),
            user: "alice".into(),
            ts: false,
            on_behalf: None,
            skip_unavailable: false,
            stills_90k: vec![],
            burn_in: false,
            created_90k: 0,
            finished_90k: None,
            hold_id: Some(1),
            bytes_total: 10,
            sha256: None,
            mp4_bytes: None,
            package_sha256: None,
            package_bytes: None,
            manifest: None,
            estimate_bytes: 0,
            dedupe_key: String::new(),
            package_deleted: None,
            streams: vec![],
        };
        let job = ex.create_unchecked(rec.clone()).unwrap();
        job.update(|r| r.status = Status::Running);
        ex.save(&job.record());
        std::fs::write(partial_path(&dir.path().join("exports"), &rec.id), b"half").unwrap();
        drop(ex);

        let ex = Exports::open(dir.path(), &journal, &*clock).unwrap();
        assert_eq!(ex.key().public_hex(), key_hex, "same key after a restart");
        let r = ex.get(&rec.id).unwrap().record();
        assert_eq!(r.status, Status::Failed);
        assert!(r.error.unwrap().contains("interrupted"));
        assert!(!partial_path(&dir.path().join("exports"), &rec.id).exists());
        let entries = journal
            .query(&vigie_audit::Query {
                action: Some(Action::ExportCreate),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].details["status"], "failed");
        assert_eq!(entries[0].details["requester"], "q");
        assert_eq!(ex.list().len(), 1);
    }

    fn record(id: &str, user: &str, status: Status, dedupe: &str) -> JobRecord {
        JobRecord {
            id: id.into(),
            status,
            error: None,
            camera: "cam".into(),
            stream: "main".into(),
            start_90k: 0,
            end_90k: 90_000,
            reason: "r".into(),
            procedure: "p".into(),
            requester: "q".into(),
            operator: user.into(),
            user: user.into(),
            ts: false,
            on_behalf: None,
            skip_unavailable: false,
            stills_90k: vec![],
            burn_in: false,
            created_90k: 0,
            finished_90k: None,
            hold_id: Some(7),
            bytes_total: 0,
            sha256: None,
            mp4_bytes: None,
            package_sha256: None,
            package_bytes: None,
            manifest: None,
            estimate_bytes: 1000,
            dedupe_key: dedupe.into(),
            package_deleted: None,
            streams: vec![],
        }
    }

    #[test]
    fn admission_bounds_jobs_dedupes_and_keeps_quota_and_floor() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(vigie_core::SimulatedClock::new(Time90k(
            1_000 * vigie_core::TIME_UNITS_PER_SEC,
        )));
        let journal =
            vigie_audit::Journal::open(&dir.path().join("journal"), clock.clone()).unwrap();
        let ex = Exports::open(dir.path(), &journal, &*clock).unwrap();
        let limits = ExportLimits {
            max_per_user: 2,
            max_queued: 3,
            quota_bytes: 10_000,
            min_free_bytes: 5_000,
        };
        let ask = |user: &str, key: &str, est: u64| AdmitRequest {
            user: user.into(),
            dedupe_key: key.into(),
            estimate_bytes: est,
        };
        let free = 1_000_000;
        // Two for alice: the third is refused (per user), even while the first two are only
        // being admitted (reservations count).
        let a1 = match ex.admit(&ask("alice", "k1", 1000), limits, free).unwrap() {
            Admit::New(a) => a,
            Admit::Existing(_) => panic!("nothing to dedupe"),
        };
        let Admit::New(_a2) = ex.admit(&ask("alice", "k2", 1000), limits, free).unwrap() else {
            panic!()
        };
        let e = ex
            .admit(&ask("alice", "k3", 1000), limits, free)
            .unwrap_err();
        assert!(matches!(e, JobError::LimitReached { .. }), "{e}");
        assert!(e.to_string().contains("max_concurrent_per_user"), "{e}");
        // The same request while it is being created: 409; once it is a job: that job.
        let e = ex
            .admit(&ask("alice", "k1", 1000), limits, free)
            .unwrap_err();
        assert!(matches!(e, JobError::Conflict(_)), "{e}");
        let job = ex
            .create(
                a1,
                record("20261128T210000Z-00000001", "alice", Status::Queued, "k1"),
            )
            .unwrap();
        match ex.admit(&ask("alice", "k1", 1000), limits, free).unwrap() {
            Admit::Existing(j) => assert_eq!(j.record().id, job.record().id),
            Admit::New(_) => panic!("an identical request must get the existing job"),
        }
        // The installation-wide limit.
        let Admit::New(_b1) = ex.admit(&ask("bob", "k4", 1000), limits, free).unwrap() else {
            panic!()
        };
        let e = ex
            .admit(&ask("carol", "k5", 1000), limits, free)
            .unwrap_err();
        assert!(e.to_string().contains("exports.max_queued"), "{e}");
        drop(_b1);
        // Quota: 2000 in use by alice's two; 9000 more would exceed 10 000.
        let e = ex
            .admit(&ask("carol", "k6", 9000), limits, free)
            .unwrap_err();
        assert!(matches!(e, JobError::InsufficientStorage(_)), "{e}");
        assert!(e.to_string().contains("quota"), "{e}");
        // Free-space floor: 8000 free, 2000 pending, 1000 more leaves 5000: fine; 1001: no.
        let Admit::New(_c) = ex.admit(&ask("carol", "k7", 1000), limits, 8000).unwrap() else {
            panic!()
        };
        drop(_c);
        let e = ex
            .admit(&ask("carol", "k8", 1001), limits, 8000)
            .unwrap_err();
        assert!(e.to_string().contains("min_free_bytes"), "{e}");
    }

    #[test]
    fn packages_go_when_their_hold_is_released_or_their_lifetime_is_over() {
        let mut r = record("x", "alice", Status::Done, "k");
        r.finished_90k = Some(0);
        let day = 86_400;
        let none = std::collections::HashSet::new();
        assert_eq!(
            deletion_due(
                &r,
                Time90k(6 * day * vigie_core::TIME_UNITS_PER_SEC),
                7 * day,
                &none
            ),
            None
        );
        assert!(
            deletion_due(
                &r,
                Time90k(7 * day * vigie_core::TIME_UNITS_PER_SEC),
                7 * day,
                &none
            )
            .unwrap()
            .contains("lifetime")
        );
        let released = std::collections::HashSet::from([7u64]);
        assert!(
            deletion_due(&r, Time90k(90_000), 7 * day, &released)
                .unwrap()
                .contains("hold 7 released")
        );
        r.package_deleted = Some(PackageDeletion {
            at_90k: 1,
            reason: "x".into(),
        });
        assert_eq!(
            deletion_due(
                &r,
                Time90k(8 * day * vigie_core::TIME_UNITS_PER_SEC),
                7 * day,
                &none
            ),
            None
        );
        let running = record("y", "alice", Status::Running, "k");
        assert_eq!(
            deletion_due(
                &running,
                Time90k(8 * day * vigie_core::TIME_UNITS_PER_SEC),
                7 * day,
                &released
            ),
            None
        );
    }

    #[test]
    fn a_multi_camera_package_goes_when_any_of_its_holds_is_released_and_is_journaled_per_camera() {
        let mut r = record("m", "alice", Status::Done, "k");
        r.finished_90k = Some(0);
        r.hold_id = Some(7);
        r.sha256 = Some("aa".into());
        r.streams = vec![
            JobStream {
                camera: "cam".into(),
                stream: "main".into(),
                hold_id: Some(7),
                sha256: Some("aa".into()),
                mp4_bytes: Some(1),
            },
            JobStream {
                camera: "quai".into(),
                stream: "main".into(),
                hold_id: Some(8),
                sha256: Some("bb".into()),
                mp4_bytes: Some(2),
            },
        ];
        assert_eq!(r.cameras(), ["cam", "quai"]);
        assert_eq!(r.hold_ids(), [7, 8]);
        let released = std::collections::HashSet::from([8u64]);
        assert!(
            deletion_due(&r, Time90k(90_000), 86_400, &released)
                .unwrap()
                .contains("hold 8 released")
        );
        let none = std::collections::HashSet::new();
        assert_eq!(deletion_due(&r, Time90k(90_000), 86_400, &none), None);
        let entries = create_entries(&r);
        assert_eq!(entries.len(), 2);
        let shown: Vec<(String, String)> = entries
            .iter()
            .map(|e| {
                (
                    e.camera.clone().unwrap_or_default(),
                    e.details["sha256"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [("cam".into(), "aa".into()), ("quai".into(), "bb".into())]
        );
        assert!(entries.iter().all(|e| e.details["cameras"] == 2));
        // A single-camera job: one entry, as before.
        let single = record("s", "alice", Status::Done, "k");
        assert_eq!(create_entries(&single).len(), 1);
        assert!(create_entries(&single)[0].details.get("cameras").is_none());
    }

    #[test]
    fn presented_frames_follow_the_edit_list() {
        // 25 fps, start half-way through frame 3, 6 s: 150 + 1 frames shown.
        let d = std::iter::repeat_n(3600u32, 400);
        assert_eq!(presented_frames(d, 3 * 3600 + 1800, 6 * 90_000), 151);
        let d = std::iter::repeat_n(3600u32, 10);
        assert_eq!(presented_frames(d, 0, 36_000), 10);
    }
}

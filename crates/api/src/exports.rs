//! Evidence export jobs (HTTP-independent): the installation signing key, the job table, the
//! background job that plans the range and writes the package with [`vigie_export`].
//!
//! Layout: `<data_dir>/exports/<id>/job.json` (the job, rewritten atomically at each state
//! change) and `<data_dir>/exports/<id>/vigie-export-<id>.zip` (the package, written via
//! `.zip.partial` then renamed). At start ([`Exports::open`]) every job is loaded back; one that
//! was queued or running when Vigie stopped is marked failed (its partial file removed, the
//! failure journaled); its legal hold stays in place.
//!
//! Journal: the API journals the hold at creation; the job journals `ExportCreate` when it ends
//! (done: with the MP4's `sha256`, which the legal register prints; failed: with the error).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use vigie_audit::{Action, NewEntry};
use vigie_core::config::Config;
use vigie_core::{StreamKey, Time90k};
use vigie_export::manifest as mf;
use vigie_export::{InstallationKey, Manifest, PackageSpec};
use vigie_store::{GapPolicy, Span, Store};

use crate::ApiError;

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
    /// SHA-256 of the master MP4 (once done).
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
            "package": (r.status == Status::Done).then(|| json!({
                "url": format!("/api/v1/exports/{}/package", r.id),
                "sha256": r.package_sha256,
                "bytes": r.package_bytes,
            })),
            "manifest": r.manifest,
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
}

impl std::fmt::Debug for Exports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exports")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path, e: std::io::Error) -> vigie_export::ExportError {
    vigie_export::ExportError::Io {
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
    ) -> Result<Exports, vigie_export::ExportError> {
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
            if !vigie_export::valid_export_id(&rec.id) {
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
                journal.append_or_log(create_entry(&rec));
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

    /// Registers and persists a new job (status queued).
    pub fn create(&self, rec: JobRecord) -> Result<Arc<Job>, ApiError> {
        let dir = self.inner.dir.join(&rec.id);
        std::fs::create_dir(&dir)
            .map_err(|e| ApiError::Internal(format!("creating {}: {e}", dir.display())))?;
        write_record(&self.inner.dir, &rec).map_err(|e| ApiError::Internal(e.to_string()))?;
        let job = Arc::new(Job {
            record: Mutex::new(rec.clone()),
            written: AtomicU64::new(0),
        });
        self.inner
            .jobs
            .lock()
            .map_err(|_| ApiError::Internal("export table poisoned".into()))?
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

fn write_record(dir: &Path, rec: &JobRecord) -> Result<(), vigie_export::ExportError> {
    let path = dir.join(&rec.id).join("job.json");
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(rec)?;
    std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    Ok(())
}

/// The `ExportCreate` journal entry of a finished (done or failed) job. `details.sha256` and
/// `details.requester` are what the legal register prints.
fn create_entry(r: &JobRecord) -> NewEntry {
    NewEntry::new(r.operator.clone(), Action::ExportCreate)
        .camera(&r.camera, &r.stream)
        .range(Time90k(r.start_90k), Time90k(r.end_90k))
        .procedure(r.procedure.clone())
        .reason(r.reason.clone())
        .details(json!({
            "export_id": r.id,
            "requester": r.requester,
            "status": r.status,
            "sha256": r.sha256,
            "bytes": r.mp4_bytes,
            "package_sha256": r.package_sha256,
            "hold_id": r.hold_id,
            "error": r.error,
        }))
}

/// Runs a job to its end in the background and journals the outcome.
pub fn spawn(state: crate::AppState, job: Arc<Job>) {
    tokio::spawn(async move {
        let (st, j) = (state.clone(), job.clone());
        let result = tokio::task::spawn_blocking(move || run(&st, &j))
            .await
            .unwrap_or_else(|e| Err(format!("the export task failed: {e}")));
        let now = state.clock.now().0;
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
            let _ = std::fs::remove_file(partial_path(&state.exports.inner.dir, &rec.id));
            tracing::error!(id = %rec.id, error = ?rec.error, "export failed");
        } else {
            tracing::info!(id = %rec.id, sha256 = ?rec.sha256, "export done");
        }
        state.exports.save(&rec);
        if let Err(e) = crate::journal::record(&state, create_entry(&rec)).await {
            tracing::error!(id = %rec.id, error = %e, "cannot journal the export");
        }
    });
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

/// Parts of `[start, end)` not covered by `spans` (sorted, inside the window).
pub fn gaps(spans: &[Span], start: Time90k, end: Time90k) -> Vec<(Time90k, Time90k)> {
    let mut out = Vec::new();
    let mut t = start;
    for s in spans {
        if s.start > t {
            out.push((t, s.start.min(end)));
        }
        t = t.max(s.end);
    }
    if t < end {
        out.push((t, end));
    }
    out
}

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

fn run(state: &crate::AppState, job: &Job) -> Result<(), String> {
    let rec = job.update(|r| r.status = Status::Running);
    state.exports.save(&rec);
    let config: &Config = &state.config;
    let cam = config
        .camera(&rec.camera)
        .ok_or_else(|| format!("camera {:?} is no longer configured", rec.camera))?;
    let commune = config.communes.iter().find(|c| c.id == cam.commune);
    let tz = jiff::tz::TimeZone::get(&config.server.timezone)
        .map_err(|e| format!("server.timezone: {e}"))?;
    let key = StreamKey::new(&rec.camera, &rec.stream);
    let (start, end) = (Time90k(rec.start_90k), Time90k(rec.end_90k));
    let store: &Store = &state.store;
    let mut plan = store
        .playback_plan(&key, start, end, GapPolicy::Skip)
        .map_err(|e| format!("planning {key}: {e}"))?;
    if rec.ts {
        plan.input.cues = crate::playback::cues(&plan.pieces, &tz);
    }
    let mp4 = plan
        .clone()
        .build()
        .map_err(|e| format!("building the MP4: {e}"))?;
    job.update(|r| r.bytes_total = mp4.total_len);
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
    let actual_start = plan.spans.first().map_or(start, |s| s.start);
    let actual_end = plan.spans.last().map_or(end, |s| s.end);
    let f = |t: Time90k| t.to_timestamp().strftime("%Y%m%dT%H%M%SZ").to_string();
    let mp4_name = format!(
        "{}_{}_{}_{}.mp4",
        clean(&rec.camera),
        clean(&rec.stream),
        f(start),
        f(end)
    );
    let manifest = Manifest {
        format: vigie_export::FORMAT.into(),
        export_id: rec.id.clone(),
        software: mf::Software {
            name: "Vigie".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        exported_at: local(state.clock.now(), &tz),
        operator: if rec.user.is_empty() {
            rec.operator.clone()
        } else {
            rec.user.clone()
        },
        requester: rec.requester.clone(),
        procedure: rec.procedure.clone(),
        reason: rec.reason.clone(),
        camera: mf::CameraInfo {
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
        },
        stream: rec.stream.clone(),
        timezone: config.server.timezone.clone(),
        requested: range(start, end, &tz),
        actual: range(actual_start, actual_end, &tz),
        recorded_spans: plan
            .spans
            .iter()
            .map(|s| range(s.start, s.end, &tz))
            .collect(),
        gaps: gaps(&plan.spans, start, end)
            .into_iter()
            .map(|(a, b)| mf::Gap {
                start: local(a, &tz),
                end: local(b, &tz),
                duration_s: (b - a).as_secs_f64(),
            })
            .collect(),
        video: mf::VideoInfo {
            file: mp4_name,
            processing: "copie du flux, sans réencodage / stream copy, no re-encoding".into(),
            codec: codecs.join(","),
            width: u32::from(input.width),
            height: u32::from(input.height),
            frames,
            duration_s: input.duration_90k as f64 / 90_000.0,
            timestamp_track: !input.cues.is_empty(),
        },
        files: Vec::new(),
        signature: Default::default(),
    };
    let mut extra = derived_stills(state, &key, &rec.stills_90k, &tz)?;
    let path = state.exports.package_path(&rec.id);
    if rec.burn_in {
        let name = format!("derive-burnin-{}.mp4", f(start));
        extra.push(derived_burn_in(
            &path,
            &input,
            &plan.pieces,
            codec,
            &cam.name,
            &tz,
            &name,
        )?);
    }
    let written = vigie_export::write_package(
        &path,
        PackageSpec {
            manifest,
            mp4: &mp4,
            extra,
        },
        state.exports.key(),
        &mut |w, _| job.written.store(w, Ordering::Relaxed),
    )
    .map_err(|e| format!("writing the package: {e}"))?;
    let m = &written.manifest;
    let summary = json!({
        "actual": m.actual,
        "gaps": m.gaps,
        "video": m.video,
        "files": m.files,
        "public_key_hex": m.signature.public_key_hex,
    });
    job.update(|r| {
        r.sha256 = Some(written.mp4_sha256.clone());
        r.mp4_bytes = Some(written.mp4_bytes);
        r.package_sha256 = Some(written.package_sha256.clone());
        r.package_bytes = Some(written.package_bytes);
        r.manifest = Some(summary);
    });
    Ok(())
}

/// Derived JPEG stills of the frames shown at `instants`, decoded from the stored frames (the
/// same bytes as the master's) with GStreamer; named `derive-still-NN-<UTC>.jpg`; the manifest
/// gives each the master's SHA-256.
#[cfg(feature = "gst")]
fn derived_stills(
    state: &crate::AppState,
    key: &StreamKey,
    instants: &[i64],
    tz: &jiff::tz::TimeZone,
) -> Result<Vec<vigie_export::ExtraFile>, String> {
    let mut out = Vec::new();
    for (i, &t) in instants.iter().enumerate() {
        let at = Time90k(t);
        let job = crate::still::job_from_store(&state.store, key, Some(at))
            .map_err(|e| format!("still at {}: {e}", at.to_rfc3339()))?;
        let jpeg = crate::still::decode_to_jpeg(&job)
            .map_err(|e| format!("still at {}: {e}", at.to_rfc3339()))?;
        let l = local(at, tz);
        out.push(vigie_export::ExtraFile {
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
    _: &crate::AppState,
    _: &StreamKey,
    instants: &[i64],
    _: &jiff::tz::TimeZone,
) -> Result<Vec<vigie_export::ExtraFile>, String> {
    if instants.is_empty() {
        Ok(Vec::new())
    } else {
        Err("derived stills need the `gst` cargo feature".into())
    }
}

/// The burned-in working copy ([`crate::burnin`]): the master's pictures (its samples, read
/// from the segment files it is made of, within its edit list) re-encoded with the camera name
/// and the wall-clock time of each picture. Written to a temporary file next to the package.
#[cfg(feature = "gst")]
fn derived_burn_in(
    package: &Path,
    input: &vigie_mp4::progressive::Input,
    pieces: &[vigie_store::Piece],
    codec: Option<vigie_core::Codec>,
    camera_name: &str,
    tz: &jiff::tz::TimeZone,
    name: &str,
) -> Result<vigie_export::ExtraFile, String> {
    let out = package.with_extension("burnin.tmp.mp4");
    let result = crate::burnin::burn_in(
        input,
        &out,
        codec.unwrap_or(vigie_core::Codec::H264),
        camera_name,
        pieces.to_vec(),
        tz.clone(),
    )
    .map_err(|e| format!("burned-in copy: {e}"))
    .and_then(|()| std::fs::read(&out).map_err(|e| format!("burned-in copy: {e}")));
    let _ = std::fs::remove_file(&out);
    Ok(vigie_export::ExtraFile {
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
    _: &str,
    _: &jiff::tz::TimeZone,
    _: &str,
) -> Result<vigie_export::ExtraFile, String> {
    Err("the burned-in copy needs the `gst` cargo feature".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_the_complement_of_the_spans() {
        let t = |s: i64| Time90k(s * 90_000);
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
        let clock = Arc::new(vigie_core::SimulatedClock::new(Time90k(1_000 * 90_000)));
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
        };
        let job = ex.create(rec.clone()).unwrap();
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

    #[test]
    fn presented_frames_follow_the_edit_list() {
        // 25 fps, start half-way through frame 3, 6 s: 150 + 1 frames shown.
        let d = std::iter::repeat_n(3600u32, 400);
        assert_eq!(presented_frames(d, 3 * 3600 + 1800, 6 * 90_000), 151);
        let d = std::iter::repeat_n(3600u32, 10);
        assert_eq!(presented_frames(d, 0, 36_000), 10);
    }
}

//! A soak with faults (issue 12, item 5): camsim serves N streams with random faults, the real
//! `vigie` binary records them, is killed with SIGKILL and restarted at random intervals, its data
//! directory sits on a small tmpfs kept near the free-space floor, and clients play
//! (`video.mp4` with `Range`), export (job, download, hold release) and watch live (WebSocket)
//! the whole time. At the end it checks what docs/RELIABILITY.md promises:
//!
//! * every segment file decodes (`ffmpeg -v error -xerror`);
//! * index and files agree (every indexed segment has its file, every file is indexed), and
//!   `vigie reindex` into a copy of the data directory rebuilds the same segments;
//! * frames lost are explained by the kills and the faults: per mount, frames camsim sent minus
//!   frames recorded is at most (kills × [`KILL_BOUND_FRAMES`]) + Σ faults × [`FAULT_BOUND_FRAMES`],
//!   and for each kill, mounts without any fault near it lost at most [`KILL_BOUND_FRAMES`];
//! * RSS and open descriptors of each `vigie` process are flat after warm-up (no leak);
//! * no panic in any log, no unexpected HTTP answer to a client.
//!
//! Owns: the schedule (one seed drives faults, kills and clients; it is printed), the sampling,
//! and the end checks. Used by `vigie-bench soak` (long runs) and `crates/vigie/tests/e2e/soak.rs` (short).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use vigie_camsim::{Fixture, Garbage, MountConfig, MountControl};

use crate::process::{Vigie, VigieBuilder};

/// Fixtures a `switch` fault moves a mount between (all closed GOPs of ≤ 50 frames).
const SWITCH_FIXTURES: [&str; 3] = [
    "h264-baseline-640x360-25fps-gop50.h264",
    "h264-main-1280x720-15fps-gop30.h264",
    "h265-main-1280x720-25fps-gop50.h265",
];
/// Largest frame rate among the fixtures served (frames per second).
const MAX_FPS: u64 = 25;
/// Largest GOP among the fixtures served (frames).
const MAX_GOP_FRAMES: u64 = 50;
/// What a `kill -9` may lose per stream: the fragment being built (`fragment_ms` = 1 s, a
/// fragment ends on the first frame at or past it, so ≤ 1.25 s) + frames queued between the
/// socket and the writer and in the socket buffers (≤ 0.5 s) + the frame in flight.
pub const KILL_BOUND_MS: u64 = 1_750;
/// [`KILL_BOUND_MS`] in frames at the fastest fixture.
pub const KILL_BOUND_FRAMES: u64 = KILL_BOUND_MS * MAX_FPS / 1000 + 1;
/// What one camera fault may lose: recording resumes at the next key frame (≤ one GOP) + the
/// frame being received + the one being assembled.
pub const FAULT_BOUND_FRAMES: u64 = MAX_GOP_FRAMES + 2;

/// Parameters of a soak.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    /// The `vigie` binary.
    pub vigie_bin: PathBuf,
    pub streams: usize,
    pub duration: Duration,
    /// Drives every random choice (printed in the report; pass it again to replay a schedule).
    pub seed: u64,
    /// Each `vigie` process lives a random time in this range (seconds) before `kill -9`.
    pub kill_every_s: (u64, u64),
    /// Each stream gets a fault every random time in this range (seconds).
    pub fault_every_s: (u64, u64),
    /// Size of the tmpfs holding the data directory.
    pub tmpfs_bytes: u64,
    /// `storage.min_free_bytes` (the floor retention keeps).
    pub min_free_bytes: u64,
    pub segment_seconds: u32,
    /// RSS / descriptors are compared after this long in each process's life.
    pub warmup_s: u64,
    /// Concurrent clients of each kind.
    pub players: usize,
    pub exporters: usize,
    pub watchers: usize,
    /// Where logs, configuration and the tmpfs mount point go (default: a temporary directory,
    /// removed at the end unless `keep`).
    pub work_dir: Option<PathBuf>,
    pub keep: bool,
    /// Progress lines on stderr.
    pub verbose: bool,
}

impl SoakConfig {
    pub fn new(vigie_bin: impl Into<PathBuf>, streams: usize, duration: Duration) -> SoakConfig {
        SoakConfig {
            vigie_bin: vigie_bin.into(),
            streams,
            duration,
            seed: seed_from_clock(),
            kill_every_s: (30, 120),
            fault_every_s: (20, 90),
            // ~60 KB/s per baseline stream: 50 streams fill 256 MiB of footage in ~90 s.
            tmpfs_bytes: (64 << 20) + streams as u64 * (6 << 20),
            min_free_bytes: (24 << 20) + streams as u64 * (2 << 20),
            segment_seconds: 10,
            warmup_s: 20,
            players: 2,
            exporters: 1,
            watchers: 2,
            work_dir: None,
            keep: false,
            verbose: true,
        }
    }
}

/// A seed from the clock (printed, so a run can be replayed).
pub fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x5eed)
}

/// SplitMix64: small, seedable, good enough to schedule faults (no crate needed).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.range(0, v.len() as u64 - 1) as usize]
    }
}

/// The outcome: `failures` empty means every check passed.
#[derive(Debug)]
pub struct SoakReport {
    pub seed: u64,
    pub failures: Vec<String>,
    /// Human-readable summary (also what the bench prints).
    pub summary: String,
    pub json: Value,
}

/// One fault injected into one mount.
#[derive(Clone, Debug)]
struct FaultEvent {
    at: Timestamp,
    mount: usize,
    kind: String,
}

/// One `vigie run` process.
#[derive(Clone, Debug, Default)]
struct Lifetime {
    spawn: Option<Timestamp>,
    /// camsim's per-mount sent frames when it was spawned.
    sent_at_spawn: Vec<u64>,
    kill: Option<Timestamp>,
    pid: u32,
    /// (seconds since spawn, RSS KiB, open descriptors).
    samples: Vec<(f64, u64, u64)>,
    /// Spawn → listening, seconds.
    start_s: f64,
}

/// A segment as last seen (polled listing, then the final index).
#[derive(Clone, Debug)]
struct Seen {
    start: Timestamp,
    end: Timestamp,
    frames: u64,
    open: bool,
}

#[derive(Default, Debug)]
struct ClientStats {
    counts: BTreeMap<String, u64>,
    unexpected: Vec<String>,
}

impl ClientStats {
    fn count(&mut self, k: &str) {
        *self.counts.entry(k.to_owned()).or_default() += 1;
    }
    fn unexpected(&mut self, what: String) {
        self.count("unexpected");
        if self.unexpected.len() < 50 {
            self.unexpected.push(what);
        }
    }
}

/// What the client tasks share.
#[derive(Clone)]
struct Ctx {
    base: String,
    port: u16,
    http: reqwest::Client,
    cams: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<ClientStats>>,
    /// Holds of exports not yet released (released again at the end).
    holds: Arc<Mutex<Vec<u64>>>,
}

impl Ctx {
    fn stats(&self) -> std::sync::MutexGuard<'_, ClientStats> {
        match self.stats.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    async fn sleep(&self, ms: u64) {
        let end = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < end && !self.stopped() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    fn recordings_url(&self, cam: &str, from: Timestamp, to: Timestamp) -> String {
        format!(
            "{}/api/v1/cameras/{cam}/streams/main/recordings?start={from}&end={to}&segments=1",
            self.base
        )
    }
    /// Closed segments of `cam` in the last 10 minutes: (start, end).
    async fn closed_segments(&self, cam: &str) -> Option<Vec<(Timestamp, Timestamp)>> {
        let now = Timestamp::now();
        let r = self
            .http
            .get(self.recordings_url(cam, now - SignedDuration::from_mins(10), now))
            .send()
            .await
            .ok()?;
        if r.status().as_u16() != 200 {
            return None;
        }
        let v: Value = r.json().await.ok()?;
        Some(
            v["segments"]
                .as_array()?
                .iter()
                .filter(|s| s["open"] == false)
                .filter_map(|s| {
                    Some((
                        s["start"].as_str()?.parse().ok()?,
                        s["end"].as_str()?.parse().ok()?,
                    ))
                })
                .collect(),
        )
    }
}

/// Mounts (or not) the tmpfs; unmounts on drop.
struct DataFs {
    mount_point: PathBuf,
    mounted: bool,
}

impl Drop for DataFs {
    fn drop(&mut self) {
        if self.mounted {
            let ok = Command::new("umount")
                .arg(&self.mount_point)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&self.mount_point)
                    .status();
            }
        }
    }
}

fn free_bytes(p: &Path) -> Option<u64> {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(p)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

fn fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

fn median(v: &mut [u64]) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

/// Runs a soak; `Err` only when the harness itself cannot run (a failed check is in
/// [`SoakReport::failures`]).
pub async fn run(cfg: SoakConfig) -> anyhow::Result<SoakReport> {
    let say = |s: String| {
        if cfg.verbose {
            eprintln!("[soak {}] {s}", Timestamp::now().strftime("%H:%M:%S"));
        }
    };
    let mut rng = Rng::new(cfg.seed);
    let mut failures: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    say(format!(
        "seed {} — {} streams, {} s, kill every {}–{} s, a fault per stream every {}–{} s",
        cfg.seed,
        cfg.streams,
        cfg.duration.as_secs(),
        cfg.kill_every_s.0,
        cfg.kill_every_s.1,
        cfg.fault_every_s.0,
        cfg.fault_every_s.1
    ));

    // Work directory and the small file system holding the data directory.
    let tmp_work;
    let work: PathBuf = match &cfg.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp_work = tempfile::Builder::new().prefix("vigie-soak-").tempdir()?;
            if cfg.keep {
                tmp_work.keep()
            } else {
                tmp_work.path().to_owned()
            }
        }
    };
    let mount_point = work.join("datafs");
    std::fs::create_dir_all(&mount_point)?;
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o"])
        .arg(format!("size={},mode=0700", cfg.tmpfs_bytes))
        .arg("tmpfs")
        .arg(&mount_point)
        .output();
    let mounted = matches!(&out, Ok(o) if o.status.success());
    let datafs = DataFs {
        mount_point: mount_point.clone(),
        mounted,
    };
    let min_free_bytes = if mounted {
        say(format!(
            "data directory on a {} MiB tmpfs, min_free_bytes {} MiB",
            cfg.tmpfs_bytes >> 20,
            cfg.min_free_bytes >> 20
        ));
        cfg.min_free_bytes
    } else {
        let why = match &out {
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
            Err(e) => e.to_string(),
        };
        // Same footage budget on the work disk: the floor is its free space minus the budget
        // (other programs writing there make retention delete more, never less).
        let free = free_bytes(&mount_point).context("free space of the work directory")?;
        let floor = free.saturating_sub(cfg.tmpfs_bytes - cfg.min_free_bytes);
        let n = format!(
            "SKIPPED the tmpfs (mount refused: {why}); data directory on the work disk with min_free_bytes = free − {} MiB = {} MiB",
            (cfg.tmpfs_bytes - cfg.min_free_bytes) >> 20,
            floor >> 20
        );
        say(n.clone());
        notes.push(n);
        floor
    };
    let data_dir = mount_point.join("data");

    // camsim in this process: faults are injected and counters read through its API.
    let baseline = crate::sim::embedded(SWITCH_FIXTURES[0]);
    let fixtures: Vec<Arc<Fixture>> = SWITCH_FIXTURES
        .iter()
        .map(|n| crate::sim::embedded(n))
        .collect();
    let names: Vec<String> = (1..=cfg.streams).map(|i| format!("cam{i:02}")).collect();
    let sim = crate::sim::start(
        names
            .iter()
            .map(|n| MountConfig::new(n.as_str(), baseline.clone()))
            .collect(),
    )
    .await;
    let controls: Vec<MountControl> = names
        .iter()
        .map(|n| sim.mount(n).context("camsim mount"))
        .collect::<anyhow::Result<_>>()?;
    let sent = |c: &[MountControl]| c.iter().map(|m| m.stats().frames).collect::<Vec<u64>>();

    // The disk sits at its floor by design: exports may use a quarter of it (their default
    // floor, the storage floor + 2 GiB, would refuse every export here with 507).
    let mut toml = format!(
        "[retention]\ncheck_interval_s = 1\n[exports]\nmin_free_bytes = \"{}B\"\n[[communes]]\nid = \"soak\"\nname = \"Soak\"\n",
        min_free_bytes / 4
    );
    for n in &names {
        toml.push_str(&format!(
            "[[cameras]]\nid = \"{n}\"\nname = \"Camera {n}\"\ncommune = \"soak\"\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"{}\"\n  connect_timeout_s = 3\n  stall_timeout_s = 3\n",
            sim.url(n)
        ));
    }
    let t0 = Instant::now();
    let soak_start = Timestamp::now();
    let mut lifetimes: Vec<Lifetime> = Vec::new();
    let sent0 = sent(&controls);
    let spawn_t = Instant::now();
    let spawn_ts = Timestamp::now();
    let mut v = VigieBuilder::new(&cfg.vigie_bin)
        .data_dir(&data_dir)
        .min_free_bytes(&format!("{min_free_bytes}B"))
        .segment_seconds(cfg.segment_seconds)
        .toml(&toml)
        .start()?;
    lifetimes.push(Lifetime {
        spawn: Some(spawn_ts),
        sent_at_spawn: sent0,
        pid: v.pid().unwrap_or(0),
        start_s: spawn_t.elapsed().as_secs_f64(),
        ..Default::default()
    });
    say(format!(
        "vigie started (pid {}), work dir {}",
        lifetimes[0].pid,
        work.display()
    ));

    let ctx = Ctx {
        base: v.base_url(),
        port: v.port,
        http: v.http().clone(),
        cams: Arc::new(names.clone()),
        stop: Arc::new(AtomicBool::new(false)),
        stats: Arc::default(),
        holds: Arc::default(),
    };
    let faults: Arc<Mutex<Vec<FaultEvent>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<(usize, u64), Seen>>> = Arc::default();
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(fault_task(
        ctx.clone(),
        controls.clone(),
        fixtures.clone(),
        cfg.fault_every_s,
        Rng::new(rng.next_u64()),
        faults.clone(),
    )));
    tasks.push(tokio::spawn(poll_task(
        ctx.clone(),
        soak_start,
        seen.clone(),
    )));
    for _ in 0..cfg.players {
        tasks.push(tokio::spawn(player_task(
            ctx.clone(),
            Rng::new(rng.next_u64()),
        )));
    }
    for _ in 0..cfg.exporters {
        tasks.push(tokio::spawn(exporter_task(
            ctx.clone(),
            Rng::new(rng.next_u64()),
        )));
    }
    for _ in 0..cfg.watchers {
        tasks.push(tokio::spawn(watcher_task(
            ctx.clone(),
            Rng::new(rng.next_u64()),
        )));
    }

    // Kill and restart at random intervals; sample RSS and descriptors every second.
    let mut free_min = u64::MAX;
    let mut last_progress = Instant::now();
    let mut aborted = false;
    loop {
        let remaining = cfg.duration.saturating_sub(t0.elapsed());
        let life = Duration::from_secs(rng.range(cfg.kill_every_s.0, cfg.kill_every_s.1));
        let last = life + Duration::from_secs(cfg.kill_every_s.0) > remaining;
        let run_for = if last { remaining } else { life };
        let lt_start = Instant::now();
        while lt_start.elapsed() < run_for {
            let cur = lifetimes.last_mut().context("lifetime")?;
            let t = cur
                .spawn
                .map(|s| Timestamp::now().duration_since(s).as_secs_f64())
                .unwrap_or(0.0);
            if let (Some(rss), Some(n)) = (v.rss_bytes(), fds(cur.pid)) {
                cur.samples.push((t, rss / 1024, n));
            }
            if let Some(f) = free_bytes(&data_dir) {
                free_min = free_min.min(f);
            }
            if last_progress.elapsed() >= Duration::from_secs(30) {
                last_progress = Instant::now();
                let (rss, n) = cur.samples.last().map(|s| (s.1, s.2)).unwrap_or((0, 0));
                let c = ctx.stats();
                say(format!(
                    "t={:.0}s kills={} faults={} rss={} MiB fds={} free={} MiB clients {:?}",
                    t0.elapsed().as_secs_f64(),
                    lifetimes.len() - 1,
                    faults.lock().map(|f| f.len()).unwrap_or(0),
                    rss / 1024,
                    n,
                    free_bytes(&data_dir).unwrap_or(0) >> 20,
                    c.counts
                ));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if last {
            break;
        }
        v.kill9()?;
        let kill_ts = Timestamp::now();
        if let Some(l) = lifetimes.last_mut() {
            l.kill = Some(kill_ts);
        }
        // The restart delay: systemd's RestartSec, roughly.
        tokio::time::sleep(Duration::from_millis(rng.range(200, 2_000))).await;
        let sent_now = sent(&controls);
        let t = Instant::now();
        let ts = Timestamp::now();
        if let Err(e) = v.spawn() {
            failures.push(format!(
                "vigie did not restart after kill {}: {e:#}",
                lifetimes.len()
            ));
            aborted = true;
            break;
        }
        lifetimes.push(Lifetime {
            spawn: Some(ts),
            sent_at_spawn: sent_now,
            pid: v.pid().unwrap_or(0),
            start_s: t.elapsed().as_secs_f64(),
            ..Default::default()
        });
        say(format!(
            "kill -9 #{} then restart (pid {}, listening after {:.2} s)",
            lifetimes.len() - 1,
            v.pid().unwrap_or(0),
            t.elapsed().as_secs_f64()
        ));
    }

    // Stop clients and faults; let camsim end its sessions (every frame sent drains to Vigie),
    // then stop Vigie cleanly: the last lifetime loses nothing to a kill.
    ctx.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(60), t).await;
    }
    for id in ctx.holds.lock().map(|h| h.clone()).unwrap_or_default() {
        if !aborted && let Err(e) = release_hold(&ctx, id).await {
            failures.push(format!("an export's hold could not be released: {e:#}"));
        }
    }
    sim.shutdown().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent_end = sent(&controls);
    let end_ts = Timestamp::now();
    if !aborted && let Err(e) = v.stop() {
        failures.push(format!("the last vigie did not stop cleanly: {e:#}"));
        let _ = v.kill9();
    }
    let _ = v.kill9();
    say(format!(
        "recording stopped after {:.0} s; checking",
        t0.elapsed().as_secs_f64()
    ));

    if cfg.keep {
        let logs = work.join("logs");
        let _ = std::fs::create_dir_all(&logs);
        for e in std::fs::read_dir(v.work_dir())?.flatten() {
            let _ = std::fs::copy(e.path(), logs.join(e.file_name()));
        }
    }
    // Logs: no panic anywhere.
    let mut log_errors = 0u64;
    let mut log_lines = 0u64;
    for e in std::fs::read_dir(v.work_dir())?.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "log") {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            for l in text.lines() {
                log_lines += 1;
                if l.contains("ERROR") {
                    log_errors += 1;
                }
                if l.contains("panicked") {
                    failures.push(format!("panic in {}: {l}", p.display()));
                }
            }
        }
    }

    // Index and files.
    let final_index = read_index(&data_dir);
    let deletions = read_deletions(&data_dir, soak_start);
    let index_entries = match &final_index {
        Ok(e) => e.clone(),
        Err(e) => {
            failures.push(format!("cannot read the final index: {e:#}"));
            Vec::new()
        }
    };
    {
        let mut s = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        for e in &index_entries {
            if let Some(i) = names.iter().position(|n| *n == e.camera) {
                s.insert(
                    (i, e.id),
                    Seen {
                        start: e.start,
                        end: e.end,
                        frames: e.frames,
                        open: e.open,
                    },
                );
            }
        }
    }
    let files = crate::media::mp4_files(&data_dir.join("recordings"));
    // By (camera, segment id): the file name carries the id (its time is the start when the
    // file was created; the index's start may be slewed later).
    let indexed_ids: std::collections::BTreeSet<(String, u64)> = index_entries
        .iter()
        .map(|e| (e.camera.clone(), e.id))
        .collect();
    let file_ids: BTreeMap<(String, u64), PathBuf> = files
        .iter()
        .filter_map(|f| {
            let id =
                vigie_store::layout::Layout::parse_segment_file_name(f.file_name()?.to_str()?)?;
            let cam = f
                .parent()?
                .parent()?
                .parent()?
                .file_name()?
                .to_str()?
                .to_owned();
            Some(((cam, id), f.clone()))
        })
        .collect();
    if file_ids.len() != files.len() {
        failures.push(format!(
            "{} files under recordings/ are not named <id>-<time>Z.mp4",
            files.len() - file_ids.len()
        ));
    }
    for (cam, id) in indexed_ids
        .iter()
        .filter(|k| !file_ids.contains_key(*k))
        .take(10)
    {
        failures.push(format!("indexed segment {cam}/{id} has no file"));
    }
    for (k, p) in file_ids
        .iter()
        .filter(|(k, _)| !indexed_ids.contains(*k))
        .take(10)
    {
        failures.push(format!(
            "file not in the index (segment {}/{}): {}",
            k.0,
            k.1,
            p.display()
        ));
    }
    for e in index_entries.iter().filter(|e| e.open).take(10) {
        failures.push(format!(
            "segment {} of {} still open after a clean stop",
            e.id, e.camera
        ));
    }
    let reindex = reindex_copy(&cfg.vigie_bin, &v, &data_dir, &work, &index_entries);
    match &reindex {
        Ok(diffs) => {
            for d in diffs.iter().take(10) {
                failures.push(format!("reindex of a copy differs: {d}"));
            }
        }
        Err(e) => failures.push(format!("reindex of a copy failed: {e:#}")),
    }

    // Every segment decodes (two ffmpeg at a time). A `stall` skips frames without a sequence
    // gap (camsim's model of an encoder that drops frames), so the frames after it reference
    // pictures the camera never sent: H.265 decoders say so. Such a segment is reported, not
    // failed, when a stall of its mount falls inside it.
    let faults = faults.lock().map(|f| f.clone()).unwrap_or_default();
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let mut decode_failures = Vec::new();
    let mut decode_explained = Vec::new();
    for (f, err) in decode_all(&files) {
        let seg = file_ids
            .iter()
            .find(|(_, p)| **p == f)
            .and_then(|((cam, id), _)| {
                let m = names.iter().position(|n| n == cam)?;
                Some((m, seen.get(&(m, *id))?.clone()))
            });
        // Only the H.265 decoder's missing-reference complaint is explained by a stall.
        let missing_refs_only = err
            .lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| l.contains("Could not find ref with POC"));
        let stall = seg
            .as_ref()
            .filter(|_| missing_refs_only)
            .and_then(|(m, s)| {
                faults.iter().find(|x| {
                    x.mount == *m
                        && x.kind.starts_with("stall")
                        && x.at >= s.start - SignedDuration::from_secs(1)
                        && x.at <= s.end
                })
            });
        match stall {
            Some(x) => decode_explained.push(format!(
                "{} (stall at {}): {err}",
                f.display(),
                x.at.strftime("%H:%M:%S%.3f")
            )),
            None => decode_failures.push(err),
        }
    }
    for d in decode_failures.iter().take(10) {
        failures.push(format!("does not decode: {d}"));
    }
    for d in &decode_explained {
        notes.push(format!(
            "decoder errors after a stall (frames skipped by the camera): {d}"
        ));
    }

    // Every segment listed during the run and gone at the end was deleted by retention, and
    // the deletion journal (written in the same index transaction) says so.
    match &deletions {
        Ok(d) => {
            let live: std::collections::BTreeSet<(String, u64)> = index_entries
                .iter()
                .map(|e| (e.camera.clone(), e.id))
                .collect();
            let mut missing = Vec::new();
            for (m, id) in seen.keys() {
                let k = (names[*m].clone(), *id);
                if !live.contains(&k) && !d.contains(&k) {
                    missing.push(format!("{}/{}", k.0, k.1));
                }
            }
            missing.sort();
            if !missing.is_empty() {
                failures.push(format!(
                    "{} segment(s) listed during the run are gone without a deletion record (first: {})",
                    missing.len(),
                    missing.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        Err(e) => failures.push(format!("cannot read the deletion journal: {e:#}")),
    }

    // Frame accounting.
    let kills = lifetimes.iter().filter(|l| l.kill.is_some()).count() as u64;
    // Lifetime i owns segments starting from the middle of the restart gap before it.
    let bounds: Vec<Timestamp> = lifetimes
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let spawn = l.spawn.unwrap_or(soak_start);
            match i.checked_sub(1).and_then(|p| lifetimes[p].kill) {
                Some(k) => k + spawn.duration_since(k) / 2,
                None => soak_start - SignedDuration::from_mins(1),
            }
        })
        .collect();
    let lifetime_of = |t: Timestamp| bounds.iter().rposition(|b| *b <= t).unwrap_or(0);
    let nl = lifetimes.len();
    let mut recorded = vec![vec![0u64; nl]; names.len()];
    let mut unobserved = vec![0u64; names.len()];
    // Per mount and lifetime: (first start, last end) of its segments.
    let mut extent: Vec<Vec<Option<(Timestamp, Timestamp)>>> = vec![vec![None; nl]; names.len()];
    for ((m, _), s) in &seen {
        let l = lifetime_of(s.start);
        recorded[*m][l] += s.frames;
        if s.open {
            unobserved[*m] += 1;
        }
        let e = &mut extent[*m][l];
        *e = Some(match *e {
            None => (s.start, s.end),
            Some((a, b)) => (a.min(s.start), b.max(s.end)),
        });
    }
    let sent_in = |m: usize, l: usize| -> u64 {
        let from = lifetimes[l].sent_at_spawn.get(m).copied().unwrap_or(0);
        let to = lifetimes
            .get(l + 1)
            .and_then(|n| n.sent_at_spawn.get(m).copied())
            .unwrap_or(sent_end[m]);
        to.saturating_sub(from)
    };
    let mut per_mount = Vec::new();
    let (mut total_sent, mut total_recorded, mut total_lost, mut total_allowed) =
        (0u64, 0u64, 0i64, 0u64);
    for (m, name) in names.iter().enumerate() {
        let s = sent_end[m];
        let r: u64 = recorded[m].iter().sum();
        let lost = s as i64 - r as i64;
        let nf = faults.iter().filter(|f| f.mount == m).count() as u64;
        let allowed = kills * KILL_BOUND_FRAMES + nf * FAULT_BOUND_FRAMES;
        total_sent += s;
        total_recorded += r;
        total_lost += lost;
        total_allowed += allowed;
        if lost < 0 {
            failures.push(format!(
                "{name}: {} frames recorded but {s} sent ({} more: duplicated frames?)",
                r, -lost
            ));
        } else if lost as u64 > allowed {
            failures.push(format!(
                "{name}: {lost} frames lost of {s} sent, more than explained by {kills} kills × {KILL_BOUND_FRAMES} + {nf} faults × {FAULT_BOUND_FRAMES} = {allowed}{}",
                if unobserved[m] > 0 {
                    format!(
                        " ({} segments deleted before seen closed: their last frames are not counted)",
                        unobserved[m]
                    )
                } else {
                    String::new()
                }
            ));
        }
        per_mount.push(
            json!({"mount": name, "sent": s, "recorded": r, "lost": lost,
            "faults": nf, "allowed": allowed, "unobserved_segments": unobserved[m]}),
        );
    }
    // Per process lifetime and mount: sent, recorded and the faults injected, for diagnosis.
    let mut cells = Vec::new();
    for l in 0..nl {
        let to = bounds.get(l + 1).copied().unwrap_or(end_ts);
        for (m, name) in names.iter().enumerate() {
            let fl: Vec<String> = faults
                .iter()
                .filter(|f| f.mount == m && f.at >= bounds[l] && f.at < to)
                .map(|f| format!("{} {}", f.at.strftime("%H:%M:%S%.3f"), f.kind))
                .collect();
            let s = sent_in(m, l);
            let r = recorded[m][l];
            cells.push(
                json!({"lifetime": l + 1, "mount": name, "sent": s, "recorded": r,
                "lost": s as i64 - r as i64, "killed": lifetimes[l].kill.is_some(), "faults": fl}),
            );
        }
    }
    // Per fault kind: the loss of the (lifetime, mount) cells that saw exactly that one fault
    // (it includes the cell's kill loss when the lifetime ended with a kill).
    let mut by_kind: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for c in &cells {
        if let Some([f]) = c["faults"].as_array().map(Vec::as_slice) {
            let kind = f
                .as_str()
                .and_then(|x| x.split_once(' ').map(|(_, k)| k))
                .map(|k| {
                    if k.starts_with("garbage") {
                        k.to_owned()
                    } else {
                        k.split(' ').next().unwrap_or(k).to_owned()
                    }
                })
                .unwrap_or_default();
            by_kind
                .entry(kind)
                .or_default()
                .push(c["lost"].as_i64().unwrap_or(0).max(0) as u64);
        }
    }
    let per_fault_kind: BTreeMap<String, Value> = by_kind
        .into_iter()
        .map(|(k, mut v)| {
            let max = v.iter().copied().max().unwrap_or(0);
            let n = v.len();
            let med = median(&mut v);
            (
                k,
                json!({"cells": n, "lost_frames_median": med, "lost_frames_max": max}),
            )
        })
        .collect();
    // Per kill: mounts with no fault from 10 s before the lifetime to its end.
    let mut kill_rows = Vec::new();
    for l in 0..nl {
        let Some(kill) = lifetimes[l].kill else {
            continue;
        };
        let from = bounds[l] - SignedDuration::from_secs(10);
        let to = bounds.get(l + 1).copied().unwrap_or(end_ts);
        let mut losses = Vec::new();
        let mut gaps_ms = Vec::new();
        for m in 0..names.len() {
            if let (Some((_, end)), Some(Some((next_start, _)))) =
                (extent[m][l], extent[m].get(l + 1))
            {
                gaps_ms.push(next_start.duration_since(end).as_millis().max(0) as u64);
            }
            let faulted = faults
                .iter()
                .any(|f| f.mount == m && f.at >= from && f.at < to);
            if faulted {
                continue;
            }
            let lost = sent_in(m, l) as i64 - recorded[m][l] as i64;
            if lost > KILL_BOUND_FRAMES as i64 {
                failures.push(format!(
                    "kill #{}: {} lost {lost} frames (no fault near it; bound {KILL_BOUND_FRAMES})",
                    l + 1,
                    names[m]
                ));
            }
            losses.push(lost.max(0) as u64);
        }
        let n_clean = losses.len();
        let max_loss = losses.iter().copied().max().unwrap_or(0);
        let med_loss = median(&mut losses);
        let max_gap = gaps_ms.iter().copied().max().unwrap_or(0);
        let med_gap = median(&mut gaps_ms);
        kill_rows.push(json!({"kill": l + 1, "at": kill.to_string(),
            "lived_s": kill.duration_since(lifetimes[l].spawn.unwrap_or(kill)).as_secs_f64(),
            "clean_mounts": n_clean, "lost_frames_median": med_loss, "lost_frames_max": max_loss,
            "recording_gap_ms_median": med_gap, "recording_gap_ms_max": max_gap}));
    }

    // RSS and descriptors: flat within each process's life, after warm-up.
    let mut mem_rows = Vec::new();
    for (i, l) in lifetimes.iter().enumerate() {
        let s: Vec<&(f64, u64, u64)> = l
            .samples
            .iter()
            .filter(|s| s.0 >= cfg.warmup_s as f64)
            .collect();
        let peak_rss = l.samples.iter().map(|s| s.1).max().unwrap_or(0);
        let peak_fds = l.samples.iter().map(|s| s.2).max().unwrap_or(0);
        if s.len() < 8 {
            mem_rows.push(json!({"lifetime": i + 1, "samples": s.len(), "peak_rss_mib": peak_rss / 1024, "peak_fds": peak_fds, "note": "too short after warm-up to compare"}));
            continue;
        }
        let q = s.len() / 4;
        let mut r1: Vec<u64> = s[..q].iter().map(|x| x.1).collect();
        let mut r4: Vec<u64> = s[s.len() - q..].iter().map(|x| x.1).collect();
        let mut f1: Vec<u64> = s[..q].iter().map(|x| x.2).collect();
        let mut f4: Vec<u64> = s[s.len() - q..].iter().map(|x| x.2).collect();
        let (r1, r4, f1, f4) = (
            median(&mut r1),
            median(&mut r4),
            median(&mut f1),
            median(&mut f4),
        );
        // Tolerances: caches (sled, the playback layout cache of ≤ 128 MiB, allocator arenas)
        // fill during the first minutes; a leak keeps growing with time and with kills.
        if r4 > r1 + r1 / 4 + 32 * 1024 {
            failures.push(format!(
                "lifetime {}: RSS grew from {} MiB to {} MiB (first vs last quarter after warm-up)",
                i + 1,
                r1 / 1024,
                r4 / 1024
            ));
        }
        if f4 > f1 + (f1 / 10).max(16) {
            failures.push(format!(
                "lifetime {}: open descriptors grew from {f1} to {f4}",
                i + 1
            ));
        }
        mem_rows.push(json!({"lifetime": i + 1, "samples": s.len(),
            "rss_mib_first_quarter": r1 as f64 / 1024.0, "rss_mib_last_quarter": r4 as f64 / 1024.0,
            "fds_first_quarter": f1, "fds_last_quarter": f4, "peak_rss_mib": peak_rss / 1024, "peak_fds": peak_fds}));
    }

    let clients = match ctx.stats.lock() {
        Ok(g) => (g.counts.clone(), g.unexpected.clone()),
        Err(p) => {
            let g = p.into_inner();
            (g.counts.clone(), g.unexpected.clone())
        }
    };
    for u in clients.1.iter().take(10) {
        failures.push(format!("client: {u}"));
    }
    for (k, what) in [
        ("play_ok", "no successful Range read of video.mp4"),
        ("export_downloaded", "no export downloaded"),
        ("live_media", "no live media received"),
    ] {
        let wanted = match k {
            "play_ok" => cfg.players,
            "export_downloaded" => cfg.exporters,
            _ => cfg.watchers,
        };
        if wanted > 0 && clients.0.get(k).copied().unwrap_or(0) == 0 {
            failures.push(format!("clients: {what}"));
        }
    }
    let mut fault_kinds: BTreeMap<String, u64> = BTreeMap::new();
    for f in &faults {
        *fault_kinds.entry(f.kind.clone()).or_default() += 1;
    }
    let restart_s: Vec<f64> = lifetimes.iter().skip(1).map(|l| l.start_s).collect();
    let json = json!({
        "seed": cfg.seed,
        "streams": cfg.streams,
        "duration_s": t0.elapsed().as_secs_f64(),
        "tmpfs": mounted,
        "tmpfs_bytes": cfg.tmpfs_bytes,
        "min_free_bytes": min_free_bytes,
        "free_bytes_min": if free_min == u64::MAX { 0 } else { free_min },
        "kills": kills,
        "restart_listen_s": restart_s,
        "faults": fault_kinds,
        "frames": {"sent": total_sent, "recorded": total_recorded, "lost": total_lost,
                   "allowed": total_allowed, "kill_bound_frames": KILL_BOUND_FRAMES,
                   "fault_bound_frames": FAULT_BOUND_FRAMES},
        "per_kill": kill_rows,
        "per_mount": per_mount,
        "per_fault_kind": per_fault_kind,
        "per_lifetime_mount": cells,
        "fault_events": faults.iter().map(|f| json!({"at": f.at.to_string(), "mount": names[f.mount], "kind": f.kind})).collect::<Vec<_>>(),
        "lifetimes": lifetimes.iter().map(|l| json!({"spawn": l.spawn.map(|t| t.to_string()), "kill": l.kill.map(|t| t.to_string()), "pid": l.pid})).collect::<Vec<_>>(),
        "memory": mem_rows,
        "segments_final": index_entries.len(),
        "files_final": files.len(),
        "segments_seen_total": seen.len(),
        "decode_failures": decode_failures.len(),
        "decode_errors_after_stalls": decode_explained.len(),
        "clients": clients.0,
        "log_lines": log_lines,
        "log_error_lines": log_errors,
        "notes": notes,
        "work_dir": if cfg.keep { Some(work.display().to_string()) } else { None },
        "failures": failures,
    });
    let mut summary = String::new();
    summary.push_str(&format!(
        "soak: seed {}, {} streams, {:.0} s, {} kills, {} faults {:?}\n",
        cfg.seed,
        cfg.streams,
        t0.elapsed().as_secs_f64(),
        kills,
        faults.len(),
        fault_kinds
    ));
    summary.push_str(&format!(
        "disk: {} (floor {} MiB), lowest free {} MiB; {} segments seen, {} at the end, {} files decoded ({} failed)\n",
        if mounted {
            format!("tmpfs {} MiB", cfg.tmpfs_bytes >> 20)
        } else {
            "work disk (tmpfs refused)".to_owned()
        },
        min_free_bytes >> 20,
        if free_min == u64::MAX { 0 } else { free_min >> 20 },
        seen.len(),
        index_entries.len(),
        files.len(),
        decode_failures.len()
    ));
    summary.push_str(&format!(
        "frames: sent {total_sent}, recorded {total_recorded}, lost {total_lost} (allowed by kills and faults: {total_allowed}; bounds {KILL_BOUND_FRAMES}/kill, {FAULT_BOUND_FRAMES}/fault)\n"
    ));
    for k in &kill_rows {
        summary.push_str(&format!("  {k}\n"));
    }
    summary.push_str(&format!(
        "  loss in cells with one fault (incl. their kill): {}\n",
        json!(per_fault_kind)
    ));
    for m in &mem_rows {
        summary.push_str(&format!("  {m}\n"));
    }
    summary.push_str(&format!(
        "clients: {:?}\nlogs: {log_lines} lines, {log_errors} ERROR\n",
        clients.0
    ));
    for n in notes.iter().take(20) {
        summary.push_str(&format!("note: {n}\n"));
    }
    if failures.is_empty() {
        summary.push_str("PASS\n");
    } else {
        summary.push_str(&format!("FAIL ({}):\n", failures.len()));
        for f in &failures {
            summary.push_str(&format!("  - {f}\n"));
        }
    }
    if cfg.keep {
        summary.push_str(&format!("work directory kept: {}\n", work.display()));
    }
    if cfg.keep {
        let _ = Command::new("cp")
            .arg("-a")
            .arg(&data_dir)
            .arg(work.join("data-copy"))
            .status();
    }
    drop(datafs);
    Ok(SoakReport {
        seed: cfg.seed,
        failures,
        summary,
        json,
    })
}

/// One segment of the final index.
#[derive(Clone, Debug, PartialEq)]
struct IndexRow {
    camera: String,
    stream: String,
    id: u64,
    start: Timestamp,
    end: Timestamp,
    start_90k: i64,
    duration_90k: i64,
    frames: u64,
    bytes: u64,
    open: bool,
}

fn read_index(data_dir: &Path) -> anyhow::Result<Vec<IndexRow>> {
    let idx = vigie_store::index::Index::open(&data_dir.join("index"))?;
    let mut out = Vec::new();
    for e in idx.all_segments() {
        let e = e?;
        let key = idx
            .stream_key(e.stream_id)?
            .with_context(|| format!("segment {}: unknown stream {}", e.id, e.stream_id))?;
        out.push(IndexRow {
            camera: key.camera,
            stream: key.stream,
            id: e.id,
            start: e.start().to_timestamp(),
            end: e.end().to_timestamp(),
            start_90k: e.start_90k,
            duration_90k: e.wall_duration_90k,
            frames: u64::from(e.frames),
            bytes: e.bytes,
            open: e.open,
        });
    }
    out.sort_by_key(|r| r.id);
    Ok(out)
}

/// (camera, segment id) of every deletion recorded since `since`.
fn read_deletions(
    data_dir: &Path,
    since: Timestamp,
) -> anyhow::Result<std::collections::BTreeSet<(String, u64)>> {
    let idx = vigie_store::index::Index::open(&data_dir.join("index"))?;
    let from = vigie_core::Time90k::from_timestamp(since - SignedDuration::from_hours(1));
    let to = vigie_core::Time90k::from_timestamp(Timestamp::now() + SignedDuration::from_hours(1));
    Ok(idx
        .deletions_between(from, to)?
        .into_iter()
        .map(|d| (d.camera, d.segment_id))
        .collect())
}

/// Copies the recordings, rebuilds an index from the files alone with `vigie reindex`, and
/// lists the differences with the live index.
fn reindex_copy(
    bin: &Path,
    v: &Vigie,
    data_dir: &Path,
    work: &Path,
    live: &[IndexRow],
) -> anyhow::Result<Vec<String>> {
    let copy = work.join("reindex-copy");
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy)?;
    let st = Command::new("cp")
        .arg("-a")
        .arg(data_dir.join("recordings"))
        .arg(&copy)
        .status()?;
    if !st.success() {
        bail!("cp -a of the recordings failed");
    }
    let cfg = std::fs::read_to_string(&v.config_path)?;
    let cfg: String = cfg
        .lines()
        .map(|l| {
            if l.starts_with("data_dir = ") {
                format!("data_dir = {:?}", copy.display().to_string())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let cfg_path = work.join("reindex-copy.toml");
    std::fs::write(&cfg_path, cfg)?;
    let out = Command::new(bin)
        .args(["reindex", "--config"])
        .arg(&cfg_path)
        .output()?;
    if !out.status.success() {
        bail!(
            "vigie reindex: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rebuilt = read_index(&copy)?;
    let key = |r: &IndexRow| (r.camera.clone(), r.id);
    let a: BTreeMap<_, _> = live.iter().map(|r| (key(r), r)).collect();
    let b: BTreeMap<_, _> = rebuilt.iter().map(|r| (key(r), r)).collect();
    let mut diffs = Vec::new();
    for (k, r) in &a {
        match b.get(k) {
            None => diffs.push(format!(
                "{}/{}: segment {} missing",
                r.camera, r.stream, r.id
            )),
            Some(x) => {
                if (x.start_90k, x.duration_90k, x.frames, x.bytes)
                    != (r.start_90k, r.duration_90k, r.frames, r.bytes)
                {
                    diffs.push(format!(
                        "{}/{} segment {}: live (start {}, duration_90k {}, frames {}, bytes {}) vs rebuilt (start {}, duration_90k {}, frames {}, bytes {})",
                        r.camera, r.stream, r.id, r.start, r.duration_90k, r.frames, r.bytes,
                        x.start, x.duration_90k, x.frames, x.bytes
                    ));
                }
            }
        }
    }
    for (k, r) in &b {
        if !a.contains_key(k) {
            diffs.push(format!("{}/{}: extra segment {}", r.camera, r.stream, r.id));
        }
    }
    let _ = std::fs::remove_dir_all(&copy);
    Ok(diffs)
}

fn decode_all(files: &[PathBuf]) -> Vec<(PathBuf, String)> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(f) = files.get(i) else { return };
                    if let Err(e) = crate::media::ffmpeg_decodes(f)
                        && let Ok(mut o) = out.lock()
                    {
                        o.push((f.clone(), format!("{e:#}")));
                    }
                }
            });
        }
    });
    out.into_inner().unwrap_or_default()
}

fn is_h265(fixture: usize) -> bool {
    SWITCH_FIXTURES
        .get(fixture)
        .is_some_and(|n| n.ends_with(".h265"))
}

async fn fault_task(
    ctx: Ctx,
    mounts: Vec<MountControl>,
    fixtures: Vec<Arc<Fixture>>,
    every_s: (u64, u64),
    mut rng: Rng,
    log: Arc<Mutex<Vec<FaultEvent>>>,
) {
    let start = Instant::now();
    // Next fault time of each mount, since start (ms).
    let mut next: Vec<u64> = mounts
        .iter()
        .map(|_| rng.range(every_s.0 * 500, every_s.1 * 1000))
        .collect();
    let mut current = vec![0usize; mounts.len()];
    while !ctx.stopped() {
        let now = start.elapsed().as_millis() as u64;
        for (m, ctl) in mounts.iter().enumerate() {
            if next[m] > now {
                continue;
            }
            next[m] = now + rng.range(every_s.0 * 1000, every_s.1 * 1000);
            let kind = match rng.range(0, 6) {
                0 => {
                    ctl.drop_sessions();
                    "drop".to_owned()
                }
                1 => {
                    let d = rng.range(2, 8);
                    ctl.refuse_for(Duration::from_secs(d));
                    ctl.drop_sessions();
                    format!("refuse {d}s")
                }
                2 => {
                    let d = rng.range(1, 6);
                    ctl.stall_for(Duration::from_secs(d));
                    format!("stall {d}s")
                }
                3 => {
                    let ticks = *rng.pick(&[900_000i64, -900_000, 90_000 * 60, -90_000 * 3]);
                    ctl.timestamp_jump(ticks);
                    format!("ts-jump {}s", ticks / 90_000)
                }
                4 => {
                    let mut to = rng.range(0, fixtures.len() as u64 - 1) as usize;
                    if to == current[m] {
                        to = (to + 1) % fixtures.len();
                    }
                    let codec_change = is_h265(to) != is_h265(current[m]);
                    current[m] = to;
                    if codec_change {
                        // A camera reconfigured to another codec restarts its RTSP session
                        // (the codec is in the SDP): end the session, refuse a reconnection
                        // until the switch is done, then serve the new fixture.
                        ctl.refuse_for(Duration::from_secs(1));
                        ctl.drop_sessions();
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    ctl.switch_fixture(fixtures[to].clone());
                    format!(
                        "switch {}{}",
                        SWITCH_FIXTURES[to],
                        if codec_change { " (new session)" } else { "" }
                    )
                }
                5 => {
                    ctl.send_garbage(Garbage::Rtp);
                    "garbage rtp".to_owned()
                }
                _ => {
                    ctl.send_garbage(Garbage::Raw);
                    "garbage raw".to_owned()
                }
            };
            if let Ok(mut l) = log.lock() {
                l.push(FaultEvent {
                    at: Timestamp::now(),
                    mount: m,
                    kind,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Lists every stream's segments every 3 s: a segment deleted by retention later is still
/// counted with its last listed frames (retention deletes closed segments only, the oldest
/// first, so it was listed closed long before).
async fn poll_task(ctx: Ctx, soak_start: Timestamp, seen: Arc<Mutex<HashMap<(usize, u64), Seen>>>) {
    while !ctx.stopped() {
        for (m, cam) in ctx.cams.iter().enumerate() {
            let from = soak_start - SignedDuration::from_hours(2);
            let to = Timestamp::now() + SignedDuration::from_hours(2);
            let Ok(r) = ctx.http.get(ctx.recordings_url(cam, from, to)).send().await else {
                continue;
            };
            if r.status().as_u16() != 200 {
                continue;
            }
            let Ok(v) = r.json::<Value>().await else {
                continue;
            };
            let Some(segs) = v["segments"].as_array() else {
                continue;
            };
            if let Ok(mut s) = seen.lock() {
                for seg in segs {
                    let (Some(id), Some(start), Some(end)) = (
                        seg["id"].as_u64(),
                        seg["start"].as_str().and_then(|x| x.parse().ok()),
                        seg["end"].as_str().and_then(|x| x.parse().ok()),
                    ) else {
                        continue;
                    };
                    s.insert(
                        (m, id),
                        Seen {
                            start,
                            end,
                            frames: seg["frames"].as_u64().unwrap_or(0),
                            open: seg["open"] == true,
                        },
                    );
                }
            }
        }
        ctx.sleep(3_000).await;
    }
}

/// A player: a closed segment's `video.mp4`, `HEAD` for its length, then a random `Range`.
async fn player_task(ctx: Ctx, mut rng: Rng) {
    while !ctx.stopped() {
        ctx.sleep(rng.range(200, 1_500)).await;
        let cam = rng.pick(&ctx.cams).clone();
        let Some(segs) = ctx.closed_segments(&cam).await else {
            ctx.stats().count("play_unavailable");
            continue;
        };
        if segs.is_empty() {
            continue;
        }
        let (a, b) = *rng.pick(&segs);
        let url = format!(
            "{}/api/v1/cameras/{cam}/streams/main/video.mp4?start={a}&end={b}",
            ctx.base
        );
        let Ok(h) = ctx.http.head(&url).send().await else {
            ctx.stats().count("play_unavailable");
            continue;
        };
        let code = h.status().as_u16();
        if code == 404 || code == 409 {
            // Deleted by retention since the listing, or a codec change inside (documented).
            ctx.stats().count(&format!("play_{code}"));
            continue;
        }
        if code != 200 {
            ctx.stats()
                .unexpected(format!("HEAD {url} answered {code}"));
            continue;
        }
        let len: u64 = h
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if len == 0 {
            ctx.stats()
                .unexpected(format!("HEAD {url}: no content-length"));
            continue;
        }
        let from = rng.range(0, len - 1);
        let to = (from + rng.range(1, 512 * 1024)).min(len - 1);
        let r = ctx
            .http
            .get(&url)
            .header("range", format!("bytes={from}-{to}"))
            .send()
            .await;
        let Ok(r) = r else {
            ctx.stats().count("play_unavailable");
            continue;
        };
        let code = r.status().as_u16();
        match code {
            206 => match r.bytes().await {
                Ok(body) if body.len() as u64 == to - from + 1 => ctx.stats().count("play_ok"),
                Ok(body) => ctx.stats().unexpected(format!(
                    "GET {url} bytes={from}-{to}: {} bytes instead of {}",
                    body.len(),
                    to - from + 1
                )),
                // Cut when Vigie is killed mid-body (or the segment deleted under it).
                Err(_) => ctx.stats().count("play_body_cut"),
            },
            // The segment was deleted between HEAD and GET (the ETag/length changes).
            404 | 409 | 416 => ctx.stats().count(&format!("play_{code}")),
            200 => ctx.stats().count("play_200_full"),
            _ => ctx
                .stats()
                .unexpected(format!("GET {url} with Range answered {code}")),
        }
    }
}

async fn release_hold(ctx: &Ctx, id: u64) -> anyhow::Result<()> {
    let r = ctx
        .http
        .post(format!("{}/api/v1/holds/{id}/release", ctx.base))
        .json(&json!({"reason": "soak: export downloaded"}))
        .send()
        .await?;
    let code = r.status().as_u16();
    if code == 200 || code == 204 || code == 409 {
        if let Ok(mut h) = ctx.holds.lock() {
            h.retain(|x| *x != id);
        }
        Ok(())
    } else {
        bail!("release of hold {id} answered {code}: {}", r.text().await?)
    }
}

/// An exporter: 3 s inside a closed segment, job to completion, package downloaded, hold
/// released (held footage must not pile up on a disk at its floor).
async fn exporter_task(ctx: Ctx, mut rng: Rng) {
    while !ctx.stopped() {
        ctx.sleep(rng.range(2_000, 6_000)).await;
        // Release holds left by a kill first.
        let pending = ctx.holds.lock().map(|h| h.clone()).unwrap_or_default();
        for id in pending {
            let _ = release_hold(&ctx, id).await;
        }
        let cam = rng.pick(&ctx.cams).clone();
        let Some(segs) = ctx.closed_segments(&cam).await else {
            ctx.stats().count("export_unavailable");
            continue;
        };
        let segs: Vec<_> = segs
            .into_iter()
            .filter(|(a, b)| b.duration_since(*a) >= SignedDuration::from_secs(5))
            .collect();
        if segs.is_empty() {
            continue;
        }
        let (a, _) = *rng.pick(&segs);
        let start = a + SignedDuration::from_millis(rng.range(0, 1500) as i64);
        let end = start + SignedDuration::from_secs(3);
        let body = json!({"camera": cam, "stream": "main", "start": start.to_string(),
            "end": end.to_string(), "reason": "soak test", "procedure": "SOAK/0001",
            "requester": "vigie soak"});
        let Ok(r) = ctx
            .http
            .post(format!("{}/api/v1/exports", ctx.base))
            .json(&body)
            .send()
            .await
        else {
            ctx.stats().count("export_unavailable");
            continue;
        };
        let code = r.status().as_u16();
        let job: Value = r.json().await.unwrap_or(Value::Null);
        if code == 404 || code == 409 {
            ctx.stats().count(&format!("export_{code}"));
            continue;
        }
        if code != 202 {
            ctx.stats()
                .unexpected(format!("POST /api/v1/exports answered {code}: {job}"));
            continue;
        }
        let (Some(id), hold) = (
            job["id"].as_str().map(str::to_owned),
            job["hold_id"].as_u64(),
        ) else {
            ctx.stats()
                .unexpected(format!("export job without id: {job}"));
            continue;
        };
        if let (Some(h), Ok(mut l)) = (hold, ctx.holds.lock()) {
            l.push(h);
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut outcome = "export_timeout".to_owned();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Ok(r) = ctx
                .http
                .get(format!("{}/api/v1/exports/{id}", ctx.base))
                .send()
                .await
            else {
                continue;
            };
            let Ok(j) = r.json::<Value>().await else {
                continue;
            };
            match j["status"].as_str() {
                Some("done") => {
                    outcome = match ctx
                        .http
                        .get(format!("{}/api/v1/exports/{id}/package", ctx.base))
                        .send()
                        .await
                    {
                        Ok(p) if p.status().as_u16() == 200 => match p.bytes().await {
                            Ok(b) if b.starts_with(b"PK") => "export_downloaded".to_owned(),
                            Ok(b) => {
                                ctx.stats().unexpected(format!(
                                    "export {id}: package of {} bytes is not a zip",
                                    b.len()
                                ));
                                "export_bad".to_owned()
                            }
                            Err(_) => "export_download_cut".to_owned(),
                        },
                        Ok(p) => {
                            ctx.stats().unexpected(format!(
                                "export {id}: package answered {}",
                                p.status()
                            ));
                            "export_bad".to_owned()
                        }
                        Err(_) => "export_download_cut".to_owned(),
                    };
                    break;
                }
                Some("failed") => {
                    let err = j["error"].to_string();
                    if err.contains("interrupted") {
                        // Vigie was killed while the job ran (documented).
                        outcome = "export_interrupted".to_owned();
                    } else {
                        ctx.stats().unexpected(format!("export {id} failed: {err}"));
                        outcome = "export_failed".to_owned();
                    }
                    break;
                }
                _ => {}
            }
            if ctx.stopped() && Instant::now() + Duration::from_secs(100) > deadline {
                outcome = "export_abandoned".to_owned();
                break;
            }
        }
        ctx.stats().count(&outcome);
        if let Some(h) = hold {
            match release_hold(&ctx, h).await {
                Ok(()) => ctx.stats().count("hold_released"),
                // Retried before the next export and at the end.
                Err(_) => ctx.stats().count("hold_release_deferred"),
            }
        }
    }
}

/// A live viewer: a WebSocket on a random stream for a few seconds, then another.
async fn watcher_task(ctx: Ctx, mut rng: Rng) {
    while !ctx.stopped() {
        ctx.sleep(rng.range(200, 1_000)).await;
        let cam = rng.pick(&ctx.cams).clone();
        let Ok(mut c) = crate::live::LiveClient::connect(ctx.port, &cam, "main", None).await else {
            ctx.stats().count("live_unavailable");
            continue;
        };
        let secs = rng.range(3, 10);
        match c.collect_for(Duration::from_secs(secs)).await {
            Ok(events) => {
                let mut media = 0;
                for e in &events {
                    match e {
                        crate::live::LiveEvent::Media { .. } => media += 1,
                        crate::live::LiveEvent::Init { .. } => ctx.stats().count("live_init"),
                        crate::live::LiveEvent::Drop { .. } => ctx.stats().count("live_drop"),
                        crate::live::LiveEvent::Closed { .. } => ctx.stats().count("live_closed"),
                    }
                }
                for _ in 0..media {
                    ctx.stats().count("live_media");
                }
                ctx.stats().count("live_session");
            }
            Err(_) => ctx.stats().count("live_cut"),
        }
        c.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..1000 {
            let x = a.range(3, 9);
            assert_eq!(x, b.range(3, 9));
            assert!((3..=9).contains(&x));
        }
    }

    #[test]
    fn bounds() {
        assert_eq!(KILL_BOUND_FRAMES, 44);
        assert_eq!(FAULT_BOUND_FRAMES, 52);
    }
}

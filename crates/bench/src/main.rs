//! `vigie-bench`: ingest cost per stream, Vigie against one `ffmpeg -c copy -f segment` process
//! per stream, recording the same camsim streams, in one run (see docs/BENCHMARKS.md).
//!
//! ```text
//! cargo run --release -p vigie-bench            # full run (~25 min)
//! cargo run --release -p vigie-bench -- --quick # smoke run (~2 min)
//! cargo run --release -p vigie-bench -- soak --minutes 20   # soak with faults (src/soak.rs)
//! cargo run --release -p vigie-bench -- failover --kills 20 # cluster failover gaps (src/failover.rs)
//! ```
//!
//! Every recorder and camsim run as separate processes (the release binaries next to this one,
//! built first with `cargo build --release -p vigie -p vigie-camsim` unless `--no-build`), so
//! each one's CPU is read from its own `/proc/PID/stat` (user + system, all threads). For each N:
//! 1. camsim serves N streams (half `h264-2mbps-25fps.h264` 720p, half `h264-4mbps-25fps.h264`
//!    1080p; N = 1 is one 2 Mbit/s stream) on one thread, with `--stats-json`;
//! 2. the recorder starts; once every stream is online and after a warm-up, CPU is sampled over a
//!    measurement window of `--secs` seconds; memory is the peak RSS (VmHWM) and PSS at the end;
//! 3. camsim stops first (its TCP connections drain, so every frame it sent reaches the
//!    recorder), writes how many frames it sent per mount; then the recorder stops;
//! 4. frames recorded (Vigie: `vigie_writer_frames_total`; ffmpeg: `ffprobe` packet count of the
//!    output files) are compared with the frames sent; disk bytes (files, and the kernel's
//!    `write_bytes`) with the payload bytes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;

mod failover;
mod restart;
mod soak;

const FX2: &str = "h264-2mbps-25fps.h264";
const FX4: &str = "h264-4mbps-25fps.h264";
const FPS: f64 = 25.0;

/// Ingest benchmark: Vigie vs `ffmpeg -c copy -f segment` (one process per stream) on camsim.
#[derive(Parser, Debug, Clone)]
#[command(name = "vigie-bench", args_conflicts_with_subcommands = true)]
struct Args {
    /// Without a subcommand: the ingest benchmark (the flags below).
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Smoke run: short windows, N = 1, 10, 50 and a 200-stream Vigie check only.
    #[arg(long)]
    quick: bool,
    /// Measurement window per run, seconds (default 40; 6 with --quick).
    #[arg(long)]
    secs: Option<u64>,
    /// Warm-up after every stream is online, before the window, seconds (default 8; 2 quick).
    #[arg(long)]
    warmup: Option<u64>,
    /// Stream counts for the Vigie/ffmpeg comparison (mixed 2 and 4 Mbit/s).
    #[arg(long, value_delimiter = ',')]
    ns: Option<Vec<usize>>,
    /// Stream counts for Vigie alone at 2 Mbit/s, upward; stops after the first run with loss.
    #[arg(long, value_delimiter = ',')]
    scale: Option<Vec<usize>>,
    /// Largest N run with ffmpeg (larger N: Vigie only).
    #[arg(long, default_value_t = 200)]
    ffmpeg_max: usize,
    /// Skip ffmpeg entirely.
    #[arg(long)]
    no_ffmpeg: bool,
    /// Skip the comparison runs (only the Vigie scale runs).
    #[arg(long)]
    scale_only: bool,
    /// Skip the Vigie scale runs (only the comparison runs).
    #[arg(long)]
    no_scale: bool,
    /// Where data directories go (local disk). Default: $TMPDIR/vigie-bench-PID.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Directory holding the `vigie` and `camsim` binaries. Default: next to this binary.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Fixtures directory (with fixtures.toml).
    #[arg(long)]
    fixtures: Option<PathBuf>,
    /// Do not run `cargo build --release -p vigie -p vigie-camsim` first.
    #[arg(long)]
    no_build: bool,
    /// Keep each run's data directory.
    #[arg(long)]
    keep: bool,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Vigie's `recording.flush_interval_ms` (default: Vigie's default, 2000).
    #[arg(long)]
    flush_interval_ms: Option<u32>,
    /// camsim runtime threads (1 = one thread, as measured by crates/camsim/benches/serve_load.rs).
    #[arg(long, default_value_t = 1)]
    camsim_threads: usize,
    /// Restart benchmark instead (issue 16): sizes `DAYSxSTREAMS`, e.g. `0x50,1x50,7x50` (0 days:
    /// an empty index, the control). See `restart.rs`.
    #[arg(long, value_delimiter = ',')]
    restart: Option<Vec<String>>,
    /// Restart benchmark: Vigie's `storage.verify_entries_per_s` (default: 1000000, i.e. the
    /// verification's own speed; Vigie's default is 2000).
    #[arg(long, default_value_t = 1_000_000)]
    restart_verify_rate: u32,
    /// Restart benchmark: longest wait for the background verification, seconds.
    #[arg(long, default_value_t = 600)]
    restart_verify_wait_s: u64,
    /// Restart benchmark: label of the binary in the table; `baseline` = a Vigie without the
    /// background verification (no `verify_entries_per_s` in its configuration).
    #[arg(long, default_value = "vigie")]
    restart_label: String,
    /// Restart benchmark: generate the index with journal-form (pre-format-3) sample and
    /// fragment tables, as an index written before issue 16's packing holds them.
    #[arg(long)]
    restart_v1_tables: bool,
    /// Restart benchmark: generate the index with the packed tables in the entries (index
    /// format 3), as an index written before the tables moved to the segment files holds them.
    #[arg(long)]
    restart_inline_tables: bool,
    /// Restart benchmark: Vigie's `storage.index_cache_bytes`, in MiB (default: Vigie's).
    #[arg(long)]
    restart_index_cache_mib: Option<u64>,
    /// Restart benchmark: the camera stream served (a file of `fixtures/`; default the 2 Mbit/s
    /// 720p one). A lighter one keeps 200 streams' recording small on a nearly full disk.
    #[arg(long)]
    restart_fixture: Option<String>,
    /// Restart benchmark: write the generated index as binaries before index format 5 did (one
    /// sled item per entry and a `by_id` row): the start then migrates it (its time measured).
    #[arg(long)]
    restart_legacy_layout: bool,
    /// Restart benchmark: keep Vigie recording this many seconds after the verification (or
    /// after every writer records, for a 0-day control) before the final RSS reading: the
    /// writers' steady state, and time to inspect the process (e.g. `gdb -p`).
    #[arg(long, default_value_t = 0)]
    restart_hold_s: u64,
}

#[derive(clap::Subcommand, Debug, Clone)]
enum Cmd {
    /// Soak with faults, kill -9 and restarts, a disk at its floor and clients (see
    /// docs/RELIABILITY.md).
    Soak(soak::SoakArgs),
    /// Failover gaps over many kill -9 of a cluster node (real etcd, 3 nodes, camsim).
    Failover(failover::FailoverArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
enum Mix {
    /// Half 2 Mbit/s 720p, half 4 Mbit/s 1080p (N = 1: one 2 Mbit/s stream).
    Mixed,
    /// All 2 Mbit/s 720p.
    TwoMbps,
}

#[derive(Clone, Debug, Default, Serialize)]
struct RunResult {
    recorder: String,
    n: usize,
    mix: String,
    window_s: f64,
    /// Recorder CPU (user + sys) over the window, seconds.
    cpu_s: f64,
    /// % of one core per stream.
    cpu_pct_per_stream: f64,
    /// camsim CPU over the window, % of one core (total, not per stream).
    camsim_cpu_pct: f64,
    /// CPU of the kernel's own threads over the window (children of kthreadd: page write-back,
    /// softirq, block I/O completion…), % of one core per stream. Charged to neither recorder,
    /// but caused mostly by them: a recorder that `fsync`s does its write-back in its own
    /// threads, one that leaves it to the kernel (ffmpeg, or `syncfs`) has it done here.
    kthreads_cpu_pct_per_stream: f64,
    /// Peak RSS: VmHWM (sum over processes for ffmpeg), KiB.
    rss_peak_kib: u64,
    /// RSS at the end of the window, KiB.
    rss_end_kib: u64,
    /// PSS at the end of the window (shared pages split between processes), KiB.
    pss_end_kib: u64,
    /// RSS of an idle process subtracted before dividing by N (Vigie: idle `vigie run`; ffmpeg:
    /// 0, each process serves one stream).
    baseline_kib: u64,
    /// (peak RSS − baseline) / N, MiB.
    rss_mib_per_stream: f64,
    /// PSS / N (ffmpeg) or (PSS − baseline) / N (Vigie), MiB.
    pss_mib_per_stream: f64,
    frames_sent: u64,
    /// Frames the recorder received (Vigie ingest counter; ffmpeg: = recorded).
    frames_received: u64,
    /// Frames in the recorded files.
    frames_recorded: u64,
    frames_lost: i64,
    /// Received over the window / (N × 25 × window): below 1 when camsim or the recorder lags.
    realtime: Option<f64>,
    payload_bytes: u64,
    /// Sizes of the recorded files.
    file_bytes: u64,
    /// Size of the index directory (Vigie).
    index_bytes: u64,
    /// Logical index size (sample + fragment tables) per recorded frame (Vigie).
    index_b_per_frame: Option<f64>,
    /// (file bytes + index bytes) / payload.
    write_amp_files: f64,
    /// /proc/PID/io write_bytes (bytes sent to the block layer) / payload.
    write_amp_device: f64,
    segments: u64,
    notes: Vec<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.cmd {
        Some(Cmd::Soak(a)) => return soak::main(a),
        Some(Cmd::Failover(a)) => return failover::main(a),
        None => {}
    }
    let quick = args.quick;
    let secs = args.secs.unwrap_or(if quick { 6 } else { 40 });
    let warmup = args.warmup.unwrap_or(if quick { 2 } else { 8 });
    let ns = args.ns.clone().unwrap_or(if quick {
        vec![1, 10, 50]
    } else {
        vec![1, 10, 50, 100, 200]
    });
    let scale = args.scale.clone().unwrap_or(if quick {
        vec![200]
    } else {
        vec![200, 300, 400, 600, 800]
    });
    let root = workspace_root();
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .to_owned(),
    };
    if !args.no_build {
        build(&root, &bin_dir)?;
    }
    let env = Env {
        vigie: bin_dir.join("vigie"),
        camsim: bin_dir.join("camsim"),
        fixtures: args
            .fixtures
            .clone()
            .unwrap_or_else(|| root.join("fixtures")),
        work: args.work_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("vigie-bench-{}", std::process::id()))
        }),
        secs,
        warmup,
        keep: args.keep,
        camsim_threads: args.camsim_threads,
        clk_tck: clk_tck(),
        flush_interval_ms: args.flush_interval_ms,
    };
    for b in [&env.vigie, &env.camsim] {
        if !b.is_file() {
            bail!(
                "{} not found (build with `cargo build --release -p vigie -p vigie-camsim`)",
                b.display()
            );
        }
    }
    std::fs::create_dir_all(&env.work)?;
    eprintln!("# machine: {}", machine_line());
    eprintln!(
        "# window {secs} s, warm-up {warmup} s, work dir {} (load before: {})",
        env.work.display(),
        loadavg()
    );

    let baseline = vigie_baseline(&env)?;
    eprintln!("# idle vigie RSS baseline: {baseline} KiB");
    if let Some(sizes) = &args.restart {
        let opts = restart::Opts {
            verify_rate: args.restart_verify_rate,
            verify_wait_s: args.restart_verify_wait_s,
            vigie_label: args.restart_label.clone(),
            v1_tables: args.restart_v1_tables,
            inline_tables: args.restart_inline_tables,
            index_cache_mib: args.restart_index_cache_mib,
            legacy_layout: args.restart_legacy_layout,
            fixture: args.restart_fixture.clone(),
            hold_s: args.restart_hold_s,
        };
        println!(
            "| binary | history | segments | index MB per camera-day | page cache | `vigie run` → HTTP (writers open) | → every writer recording | peak RSS at recording / at end (above idle) | background verification | notes |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for size in restart::parse_sizes(sizes)? {
            let r = restart::run_size(&env, &size, &opts, baseline)?;
            println!("{}", r.line(&args.restart_label));
        }
        return Ok(());
    }
    let mut results: Vec<RunResult> = Vec::new();
    let report = |r: RunResult, results: &mut Vec<RunResult>| {
        eprintln!("{}", one_line(&r));
        results.push(r);
    };
    if !args.scale_only {
        for &n in &ns {
            let r = run_vigie(&env, n, Mix::Mixed, baseline)?;
            report(r, &mut results);
            if !args.no_ffmpeg && n <= args.ffmpeg_max {
                let r = run_ffmpeg(&env, n, Mix::Mixed)?;
                report(r, &mut results);
            }
        }
    }
    for &n in scale.iter().filter(|_| !args.no_scale) {
        let r = run_vigie(&env, n, Mix::TwoMbps, baseline)?;
        let lost = r.frames_lost != 0;
        report(r, &mut results);
        if lost {
            eprintln!("# loss at N = {n}: stopping the scale runs");
            break;
        }
    }
    let table = render(&results);
    println!("{table}");
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}

struct Env {
    vigie: PathBuf,
    camsim: PathBuf,
    fixtures: PathBuf,
    work: PathBuf,
    secs: u64,
    warmup: u64,
    keep: bool,
    camsim_threads: usize,
    clk_tck: f64,
    flush_interval_ms: Option<u32>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

fn build(root: &Path, bin_dir: &Path) -> Result<()> {
    // bin_dir is <target>/release: build the same profile into the same target directory.
    let target = bin_dir.parent().context("target directory")?;
    eprintln!("# cargo build --release -p vigie -p vigie-camsim");
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "vigie", "-p", "vigie-camsim"])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !st.success() {
        bail!("cargo build failed");
    }
    Ok(())
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// /proc

/// utime + stime of a process (all its threads, live and exited), seconds.
fn cpu_secs(pid: u32, tck: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(i) = stat.rfind(')') else { return 0.0 };
    let f: Vec<&str> = stat[i + 2..].split(' ').collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); the slice starts at field 3.
    let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (ut + st) / tck
}

/// CPU seconds (user + sys) of kthreadd (pid 2) and each of its children (the kernel's own
/// threads), by pid.
fn kthreads_cpu(tck: f64) -> BTreeMap<u32, f64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(i) = stat.rfind(')') else { continue };
        // Field 4 (ppid) of proc(5); the slice starts at field 3.
        let ppid = stat[i + 2..]
            .split(' ')
            .nth(1)
            .and_then(|v| v.parse::<u32>().ok());
        if pid == 2 || ppid == Some(2) {
            out.insert(pid, cpu_secs(pid, tck));
        }
    }
    out
}

/// CPU the kernel's threads used between two [`kthreads_cpu`] readings: per-thread differences
/// (a worker that exited in between is missed, one that started counts whole).
fn kthreads_delta(before: &BTreeMap<u32, f64>, after: &BTreeMap<u32, f64>) -> f64 {
    after
        .iter()
        .map(|(pid, t)| (t - before.get(pid).copied().unwrap_or(0.0)).max(0.0))
        .sum()
}

/// CPU used during one measurement window of `env.secs`: by the recorder, by camsim, and by
/// the kernel's own threads ([`kthreads_cpu`]).
struct Window {
    secs: f64,
    recorder_cpu_s: f64,
    camsim_cpu_s: f64,
    kthreads_cpu_s: f64,
}

impl Window {
    /// Sleeps through the window; `recorder_cpu` reads the recorder's CPU seconds.
    fn measure(env: &Env, camsim_pid: u32, recorder_cpu: &dyn Fn() -> f64) -> Window {
        let c0 = recorder_cpu();
        let s0 = cpu_secs(camsim_pid, env.clk_tck);
        let k0 = kthreads_cpu(env.clk_tck);
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(env.secs));
        let secs = t0.elapsed().as_secs_f64();
        let c1 = recorder_cpu();
        let s1 = cpu_secs(camsim_pid, env.clk_tck);
        let k1 = kthreads_cpu(env.clk_tck);
        Window {
            secs,
            recorder_cpu_s: c1 - c0,
            camsim_cpu_s: s1 - s0,
            kthreads_cpu_s: kthreads_delta(&k0, &k1),
        }
    }

    /// `cpu_s` over the window, as % of one core.
    fn pct(&self, cpu_s: f64) -> f64 {
        cpu_s / self.secs * 100.0
    }
}

/// A `Key:   123 kB` field of /proc/PID/status or smaps_rollup, KiB.
fn proc_kib(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| {
                v.trim_start_matches(':')
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

fn write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    for e in rd.flatten() {
        let Ok(md) = e.metadata() else { continue };
        if md.is_dir() {
            total += dir_bytes(&e.path());
        } else {
            total += md.len();
        }
    }
    total
}

fn files_with_ext(p: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(p) else { return };
    for e in rd.flatten() {
        let path = e.path();
        if path.is_dir() {
            files_with_ext(&path, ext, out);
        } else if path.extension().is_some_and(|x| x == ext) {
            out.push(path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// processes

/// A child process killed (SIGKILL) if still running when dropped.
struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn signal(&self, s: Signal) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), s);
    }
    /// Waits up to `t`; true if it exited.
    fn wait_for(&mut self, t: Duration) -> bool {
        let end = Instant::now() + t;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    /// SIGTERM (or `sig`), then SIGKILL after `grace`.
    fn stop(&mut self, sig: Signal, grace: Duration) -> bool {
        self.signal(sig);
        if self.wait_for(grace) {
            return true;
        }
        eprintln!("# {} did not stop within {grace:?}: SIGKILL", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

struct Camsim {
    proc: Proc,
    urls: Vec<String>,
    stats_path: PathBuf,
}

fn start_camsim(env: &Env, dir: &Path, n: usize, mix: Mix) -> Result<Camsim> {
    start_camsim_with(env, dir, n, mix, None)
}

/// [`start_camsim`] serving `fixture` (a file of `fixtures/`) instead of the mix's.
fn start_camsim_with(
    env: &Env,
    dir: &Path,
    n: usize,
    mix: Mix,
    fixture: Option<&str>,
) -> Result<Camsim> {
    let port = free_port()?;
    let stats_path = dir.join("camsim-stats.json");
    let mut cmd = Command::new(&env.camsim);
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--fixtures")
        .arg(&env.fixtures)
        .arg("--threads")
        .arg(env.camsim_threads.to_string())
        .arg("--stats-json")
        .arg(&stats_path);
    match (mix, n) {
        (Mix::Mixed, 1) | (Mix::TwoMbps, _) => {
            cmd.arg("--mount")
                .arg(format!("a={}", fixture.unwrap_or(FX2)))
                .arg("--copies")
                .arg(n.to_string());
        }
        (Mix::Mixed, _) => {
            if !n.is_multiple_of(2) {
                bail!("mixed runs need N = 1 or an even N");
            }
            cmd.arg("--mount")
                .arg(format!("a={FX2}"))
                .arg("--mount")
                .arg(format!("b={FX4}"))
                .arg("--copies")
                .arg((n / 2).to_string());
        }
    }
    let log = std::fs::File::create(dir.join("camsim.log"))?;
    cmd.stdout(Stdio::piped())
        .stderr(log)
        .stdin(Stdio::null())
        .env("RUST_LOG", "warn");
    let mut child = cmd.spawn().context("starting camsim")?;
    let stdout = child.stdout.take().context("camsim stdout")?;
    let proc = Proc {
        child,
        name: "camsim".into(),
    };
    let mut urls = Vec::with_capacity(n);
    let mut lines = BufReader::new(stdout).lines();
    while urls.len() < n {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("rtsp://") => urls.push(l),
            Some(Ok(_)) => {}
            _ => bail!(
                "camsim exited before printing {n} URLs (see {})",
                dir.join("camsim.log").display()
            ),
        }
    }
    Ok(Camsim {
        proc,
        urls,
        stats_path,
    })
}

/// Stops camsim (SIGTERM) and returns the frames it sent, summed over mounts.
fn stop_camsim(mut c: Camsim) -> Result<u64> {
    c.proc.stop(Signal::SIGTERM, Duration::from_secs(20));
    let text = std::fs::read_to_string(&c.stats_path)
        .with_context(|| format!("reading {}", c.stats_path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let mounts = v["mounts"].as_object().context("camsim stats: no mounts")?;
    Ok(mounts.values().filter_map(|m| m["frames"].as_u64()).sum())
}

// ---------------------------------------------------------------------------------------------
// Vigie

fn vigie_config(dir: &Path, port: u16, urls: &[String], flush_ms: Option<u32>) -> String {
    let mut s = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[storage]\ndata_dir = {:?}\nmin_free_bytes = \"1GiB\"\n\n\
         [retention]\nmax_days = 30\n\n[[communes]]\nid = \"bench\"\nname = \"Bench\"\n",
        dir.join("data").display().to_string()
    );
    if let Some(ms) = flush_ms {
        s.push_str(&format!("\n[recording]\nflush_interval_ms = {ms}\n"));
    }
    for (i, url) in urls.iter().enumerate() {
        s.push_str(&format!(
            "\n[[cameras]]\nid = \"cam{i:04}\"\nname = \"cam{i:04}\"\ncommune = \"bench\"\nclass = \"traffic\"\n  \
             [[cameras.streams]]\n  name = \"main\"\n  url = \"{url}\"\n"
        ));
    }
    s
}

fn start_vigie(env: &Env, dir: &Path, urls: &[String]) -> Result<(Proc, u16)> {
    let port = free_port()?;
    let cfg = dir.join("vigie.toml");
    std::fs::write(&cfg, vigie_config(dir, port, urls, env.flush_interval_ms))?;
    let log = std::fs::File::create(dir.join("vigie.log"))?;
    let child = Command::new(&env.vigie)
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting vigie")?;
    Ok((
        Proc {
            child,
            name: "vigie".into(),
        },
        port,
    ))
}

/// GET /metrics; sums of each family over its label sets.
fn metrics(port: u16) -> Result<BTreeMap<String, f64>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    let mut out = BTreeMap::new();
    for l in body.lines() {
        if l.starts_with('#') || !l.starts_with("vigie_") {
            continue;
        }
        let Some((name_labels, v)) = l.rsplit_once(' ') else {
            continue;
        };
        let name = name_labels.split('{').next().unwrap_or(name_labels);
        if let Ok(v) = v.parse::<f64>() {
            *out.entry(name.to_owned()).or_insert(0.0) += v;
        }
    }
    Ok(out)
}

fn m(map: &BTreeMap<String, f64>, k: &str) -> f64 {
    map.get(k).copied().unwrap_or(0.0)
}

/// RSS of an idle `vigie run` (one stream whose camera refuses connections), KiB.
fn vigie_baseline(env: &Env) -> Result<u64> {
    let dir = env.work.join("baseline");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let dead = free_port()?;
    let (mut p, port) = start_vigie(env, &dir, &[format!("rtsp://127.0.0.1:{dead}/none")])?;
    wait_http(port, Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_secs(3));
    let _ = metrics(port);
    let rss = proc_kib(p.pid(), "status", "VmRSS");
    p.stop(Signal::SIGTERM, Duration::from_secs(20));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rss)
}

fn wait_http(port: u16, t: Duration) -> Result<()> {
    let end = Instant::now() + t;
    while Instant::now() < end {
        if metrics(port).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("vigie did not answer on port {port} within {t:?}")
}

fn run_dir(env: &Env, name: &str) -> Result<PathBuf> {
    let dir = env.work.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn mix_name(mix: Mix, n: usize) -> String {
    match (mix, n) {
        (Mix::Mixed, 1) | (Mix::TwoMbps, _) => "2M".into(),
        (Mix::Mixed, _) => "2M+4M".into(),
    }
}

fn run_vigie(env: &Env, n: usize, mix: Mix, baseline: u64) -> Result<RunResult> {
    let dir = run_dir(env, &format!("vigie-{n}-{}", mix_name(mix, n)))?;
    let cam = start_camsim(env, &dir, n, mix)?;
    let (mut vigie, port) = start_vigie(env, &dir, &cam.urls)?;
    let pid = vigie.pid();
    let mut notes = Vec::new();
    wait_http(port, Duration::from_secs(60))?;
    let t_online = Instant::now();
    loop {
        let mm = metrics(port)?;
        if m(&mm, "vigie_stream_online") as usize >= n {
            break;
        }
        if t_online.elapsed() > Duration::from_secs(120) {
            notes.push(format!(
                "only {} of {n} streams online after 120 s",
                m(&mm, "vigie_stream_online")
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(env.warmup));

    let m0 = metrics(port)?;
    let w = Window::measure(env, cam.proc.pid(), &|| cpu_secs(pid, env.clk_tck));
    let window = w.secs;
    let m1 = metrics(port)?;
    let rss_peak = proc_kib(pid, "status", "VmHWM");
    let rss_end = proc_kib(pid, "status", "VmRSS");
    let pss_end = proc_kib(pid, "smaps_rollup", "Pss");
    let realtime = (m(&m1, "vigie_stream_frames_total") - m(&m0, "vigie_stream_frames_total"))
        / (n as f64 * FPS * window);

    let sent = stop_camsim(cam)?;
    // Let the last frames (drained from camsim's sockets) reach the writers.
    let mut last = -1.0;
    let mut mm = metrics(port)?;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(300));
        mm = metrics(port)?;
        let f = m(&mm, "vigie_writer_frames_total") + m(&mm, "vigie_stream_frames_total");
        if f == last {
            break;
        }
        last = f;
    }
    let received = m(&mm, "vigie_stream_frames_total") as u64;
    let payload = m(&mm, "vigie_stream_bytes_total") as u64;
    let wb = write_bytes(pid);
    if !vigie.stop(Signal::SIGTERM, Duration::from_secs(60)) {
        notes.push("vigie had to be killed".into());
    }
    // Written frames: after shutdown every segment is closed; count from the index.
    let idx = index_stats(&dir.join("data/index"))?;
    let file_bytes = dir_bytes(&dir.join("data/recordings"));
    let index_bytes = dir_bytes(&dir.join("data/index"));
    let overflows = m(&mm, "vigie_writer_overflows_total");
    if overflows > 0.0 {
        notes.push(format!("{overflows} writer queue overflows"));
    }
    let r = RunResult {
        recorder: "vigie".into(),
        n,
        mix: mix_name(mix, n),
        window_s: window,
        cpu_s: w.recorder_cpu_s,
        cpu_pct_per_stream: w.pct(w.recorder_cpu_s) / n as f64,
        camsim_cpu_pct: w.pct(w.camsim_cpu_s),
        kthreads_cpu_pct_per_stream: w.pct(w.kthreads_cpu_s) / n as f64,
        rss_peak_kib: rss_peak,
        rss_end_kib: rss_end,
        pss_end_kib: pss_end,
        baseline_kib: baseline,
        rss_mib_per_stream: rss_peak.saturating_sub(baseline) as f64 / 1024.0 / n as f64,
        pss_mib_per_stream: pss_end.saturating_sub(baseline) as f64 / 1024.0 / n as f64,
        frames_sent: sent,
        frames_received: received,
        frames_recorded: idx.frames,
        frames_lost: sent as i64 - idx.frames as i64,
        realtime: Some(realtime),
        payload_bytes: payload,
        file_bytes,
        index_bytes,
        index_b_per_frame: (idx.frames > 0).then(|| idx.table_bytes as f64 / idx.frames as f64),
        write_amp_files: (file_bytes + index_bytes) as f64 / payload.max(1) as f64,
        write_amp_device: wb as f64 / payload.max(1) as f64,
        segments: idx.segments,
        notes,
    };
    if !env.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(r)
}

struct IndexStats {
    frames: u64,
    segments: u64,
    table_bytes: u64,
}

fn index_stats(dir: &Path) -> Result<IndexStats> {
    let idx = vigie_store::index::Index::open(dir)?;
    let mut s = IndexStats {
        frames: 0,
        segments: 0,
        table_bytes: 0,
    };
    for e in idx.all_segments() {
        let e = e?;
        s.frames += u64::from(e.frames);
        s.segments += 1;
        // Tables in the segment file (index format 4) count as much as tables in the entry.
        s.table_bytes += match vigie_store::filetables::external_len(&e.sample_table) {
            Some(len) => u64::from(len),
            None => (e.sample_table.len() + e.fragment_table.len()) as u64,
        };
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// ffmpeg

fn run_ffmpeg(env: &Env, n: usize, mix: Mix) -> Result<RunResult> {
    let dir = run_dir(env, &format!("ffmpeg-{n}-{}", mix_name(mix, n)))?;
    let cam = start_camsim(env, &dir, n, mix)?;
    let mut notes = Vec::new();
    let mut procs = Vec::with_capacity(n);
    let mut outs = Vec::with_capacity(n);
    for (i, url) in cam.urls.iter().enumerate() {
        let out = dir.join(format!("s{i:04}"));
        std::fs::create_dir_all(&out)?;
        let log = std::fs::File::create(out.join("ffmpeg.log"))?;
        let child = Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-loglevel", "error"])
            .args(["-rtsp_transport", "tcp", "-i", url])
            .args(["-c", "copy", "-f", "segment", "-segment_time", "60"])
            .args(["-reset_timestamps", "1"])
            .arg(out.join("out%03d.mp4"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting ffmpeg")?;
        procs.push(Proc {
            child,
            name: format!("ffmpeg {i}"),
        });
        outs.push(out);
    }
    // Online: every process has started its first output file.
    let t_online = Instant::now();
    loop {
        let started = outs
            .iter()
            .filter(|o| std::fs::metadata(o.join("out000.mp4")).is_ok_and(|m| m.len() > 0))
            .count();
        if started == n {
            break;
        }
        if t_online.elapsed() > Duration::from_secs(120) {
            notes.push(format!(
                "only {started} of {n} ffmpeg outputs started after 120 s"
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(env.warmup));
    let pids: Vec<u32> = procs.iter().map(|p| p.pid()).collect();
    let cpu = |pids: &[u32]| pids.iter().map(|&p| cpu_secs(p, env.clk_tck)).sum::<f64>();
    let w = Window::measure(env, cam.proc.pid(), &|| cpu(&pids));
    let window = w.secs;
    let sum = |f: &dyn Fn(u32) -> u64| pids.iter().map(|&p| f(p)).sum::<u64>();
    let rss_peak = sum(&|p| proc_kib(p, "status", "VmHWM"));
    let rss_end = sum(&|p| proc_kib(p, "status", "VmRSS"));
    let pss_end = sum(&|p| proc_kib(p, "smaps_rollup", "Pss"));
    let alive = procs
        .iter_mut()
        .map(|p| matches!(p.child.try_wait(), Ok(None)))
        .filter(|&a| a)
        .count();
    if alive < n {
        notes.push(format!("{} ffmpeg processes exited early", n - alive));
    }

    let wb = sum(&write_bytes);
    let sent = stop_camsim(cam)?;
    // ffmpeg sees EOF and finishes its files (moov) by itself.
    for p in &mut procs {
        if !p.wait_for(Duration::from_secs(30)) {
            notes.push(format!("{} did not exit after EOF", p.name));
            p.stop(Signal::SIGINT, Duration::from_secs(10));
        }
    }
    let mut files = Vec::new();
    for o in &outs {
        files_with_ext(o, "mp4", &mut files);
    }
    let file_bytes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let (frames, payload) = probe_all(&files)?;
    let r = RunResult {
        recorder: "ffmpeg".into(),
        n,
        mix: mix_name(mix, n),
        window_s: window,
        cpu_s: w.recorder_cpu_s,
        cpu_pct_per_stream: w.pct(w.recorder_cpu_s) / n as f64,
        camsim_cpu_pct: w.pct(w.camsim_cpu_s),
        kthreads_cpu_pct_per_stream: w.pct(w.kthreads_cpu_s) / n as f64,
        rss_peak_kib: rss_peak,
        rss_end_kib: rss_end,
        pss_end_kib: pss_end,
        baseline_kib: 0,
        rss_mib_per_stream: rss_peak as f64 / 1024.0 / n as f64,
        pss_mib_per_stream: pss_end as f64 / 1024.0 / n as f64,
        frames_sent: sent,
        frames_received: frames,
        frames_recorded: frames,
        frames_lost: sent as i64 - frames as i64,
        realtime: None,
        payload_bytes: payload,
        file_bytes,
        index_bytes: 0,
        index_b_per_frame: None,
        write_amp_files: file_bytes as f64 / payload.max(1) as f64,
        write_amp_device: wb as f64 / payload.max(1) as f64,
        segments: files.len() as u64,
        notes,
    };
    if !env.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(r)
}

/// Packets and payload bytes of the video stream of each file (ffprobe, no decoding), two
/// ffprobe processes at a time.
fn probe_all(files: &[PathBuf]) -> Result<(u64, u64)> {
    let mut frames = 0;
    let mut bytes = 0;
    for chunk in files.chunks(2) {
        let children: Vec<_> = chunk
            .iter()
            .map(|f| {
                Command::new("ffprobe")
                    .args(["-v", "error", "-select_streams", "v:0"])
                    .args(["-show_entries", "packet=size", "-of", "csv=p=0"])
                    .arg(f)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
            })
            .collect::<std::io::Result<_>>()?;
        for c in children {
            let out = c.wait_with_output()?;
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                if let Ok(v) = l.trim().trim_end_matches(',').parse::<u64>() {
                    frames += 1;
                    bytes += v;
                }
            }
        }
    }
    Ok((frames, bytes))
}

// ---------------------------------------------------------------------------------------------
// output

fn one_line(r: &RunResult) -> String {
    format!(
        "{:>6} N={:<4} {:<6} cpu {:.3}%/stream (kernel threads {:.3}%/stream, camsim {:.1}%), rss +{:.2} MiB/stream (pss {:.2}), \
         sent {} recorded {} lost {}, amp {:.4} files / {:.4} device{}{} [load {}]",
        r.recorder,
        r.n,
        r.mix,
        r.cpu_pct_per_stream,
        r.kthreads_cpu_pct_per_stream,
        r.camsim_cpu_pct,
        r.rss_mib_per_stream,
        r.pss_mib_per_stream,
        r.frames_sent,
        r.frames_recorded,
        r.frames_lost,
        r.write_amp_files,
        r.write_amp_device,
        r.index_b_per_frame
            .map(|b| format!(", index {b:.2} B/frame"))
            .unwrap_or_default(),
        if r.notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.notes.join("; "))
        },
        loadavg()
    )
}

/// The results as a Markdown table, then the Vigie/ffmpeg ratios.
fn render(results: &[RunResult]) -> String {
    let mut s = String::new();
    s.push_str(
        "| N | streams | recorder | CPU % of a core / stream | kernel threads CPU % / stream | camsim CPU % | RSS MiB / stream (peak, over baseline) | PSS MiB / stream | frames sent | recorded | lost | write amp (files) | write amp (device) | index B/frame |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        s.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.1} | {:.2} | {:.2} | {} | {} | {} | {:.4} | {:.4} | {} |\n",
            r.n,
            r.mix,
            r.recorder,
            r.cpu_pct_per_stream,
            r.kthreads_cpu_pct_per_stream,
            r.camsim_cpu_pct,
            r.rss_mib_per_stream,
            r.pss_mib_per_stream,
            r.frames_sent,
            r.frames_recorded,
            r.frames_lost,
            r.write_amp_files,
            r.write_amp_device,
            r.index_b_per_frame
                .map(|b| format!("{b:.2}"))
                .unwrap_or_else(|| "—".into()),
        ));
    }
    s.push_str(
        "\n| N | Vigie/ffmpeg CPU | same, kernel threads added to both | Vigie/ffmpeg RSS | Vigie/ffmpeg PSS |\n|---|---|---|---|---|\n",
    );
    for v in results.iter().filter(|r| r.recorder == "vigie") {
        if let Some(f) = results
            .iter()
            .find(|f| f.recorder == "ffmpeg" && f.n == v.n && f.mix == v.mix)
        {
            s.push_str(&format!(
                "| {} | {:.1} % | {:.1} % | {:.1} % | {:.1} % |\n",
                v.n,
                100.0 * v.cpu_pct_per_stream / f.cpu_pct_per_stream.max(1e-9),
                100.0 * (v.cpu_pct_per_stream + v.kthreads_cpu_pct_per_stream)
                    / (f.cpu_pct_per_stream + f.kthreads_cpu_pct_per_stream).max(1e-9),
                100.0 * v.rss_mib_per_stream / f.rss_mib_per_stream.max(1e-9),
                100.0 * v.pss_mib_per_stream / f.pss_mib_per_stream.max(1e-9),
            ));
        }
    }
    let notes: Vec<String> = results
        .iter()
        .filter(|r| !r.notes.is_empty())
        .map(|r| {
            format!(
                "- {} N={} {}: {}",
                r.recorder,
                r.n,
                r.mix,
                r.notes.join("; ")
            )
        })
        .collect();
    if !notes.is_empty() {
        s.push_str("\nNotes:\n");
        s.push_str(&notes.join("\n"));
        s.push('\n');
    }
    s
}

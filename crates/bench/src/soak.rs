//! `vigie-bench soak`: the long soak with faults (issue 12, item 5; docs/RELIABILITY.md).
//!
//! ```text
//! cargo build --release -p vigie -p vigie-bench
//! sudo target/release/vigie-bench soak --minutes 120 --streams 50
//! ```
//!
//! Owns only the command line: the soak itself (camsim with random faults, `kill -9` and
//! restarts of the release `vigie` next to this binary, a tmpfs at its floor, clients, and the
//! end checks) is [`vigie_testkit::soak`], shared with the short version in the test suite
//! (`crates/vigie/tests/e2e/soak.rs`). Exit status 1 when a check fails.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use vigie_testkit::soak::{SoakConfig, run, seed_from_clock};

/// Soak with faults: N camsim streams with random faults, Vigie killed with SIGKILL and
/// restarted at random intervals, its data directory on a small tmpfs at its free-space floor
/// (mounted when run as root), clients playing, exporting and watching live; then checks that
/// every segment decodes, index and files agree, frames lost are explained by the kills and
/// faults, and RSS / descriptors stay flat.
#[derive(Args, Debug, Clone)]
pub struct SoakArgs {
    /// Length of the run, minutes.
    #[arg(long, default_value_t = 20.0)]
    minutes: f64,
    /// camsim streams (cameras).
    #[arg(long, default_value_t = 50)]
    streams: usize,
    /// Seed of every random choice (default: from the clock; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Each vigie process lives MIN-MAX seconds before kill -9.
    #[arg(long, default_value = "30-120")]
    kill_every: String,
    /// Each stream gets a fault every MIN-MAX seconds.
    #[arg(long, default_value = "20-90")]
    fault_every: String,
    /// Size of the tmpfs holding the data directory, MiB (default 64 + 6 per stream).
    #[arg(long)]
    tmpfs_mib: Option<u64>,
    /// storage.min_free_bytes, MiB (default 24 + 2 per stream).
    #[arg(long)]
    min_free_mib: Option<u64>,
    /// recording.segment_seconds.
    #[arg(long, default_value_t = 10)]
    segment_seconds: u32,
    /// RSS and descriptors are compared after this warm-up in each process's life, seconds.
    #[arg(long, default_value_t = 20)]
    warmup: u64,
    /// Concurrent players (video.mp4 with Range).
    #[arg(long, default_value_t = 2)]
    players: usize,
    /// Concurrent exporters (job, download, hold release).
    #[arg(long, default_value_t = 1)]
    exporters: usize,
    /// Concurrent live viewers (WebSocket).
    #[arg(long, default_value_t = 2)]
    watchers: usize,
    /// The vigie binary (default: next to this one).
    #[arg(long)]
    vigie: Option<PathBuf>,
    /// Work directory (logs, configuration, the tmpfs mount point). Default: a temporary one.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the work directory (and copy the vigie logs into it).
    #[arg(long)]
    keep: bool,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn range(s: &str, what: &str) -> Result<(u64, u64)> {
    let (a, b) = s
        .split_once('-')
        .with_context(|| format!("--{what} {s:?}: expected MIN-MAX seconds"))?;
    let (a, b): (u64, u64) = (a.trim().parse()?, b.trim().parse()?);
    if a == 0 || b < a {
        bail!("--{what} {s:?}: expected 0 < MIN <= MAX");
    }
    Ok((a, b))
}

pub fn main(args: SoakArgs) -> Result<()> {
    let vigie = match &args.vigie {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .join("vigie"),
    };
    if !vigie.is_file() {
        bail!(
            "{} not found (build with `cargo build --release -p vigie -p vigie-bench`)",
            vigie.display()
        );
    }
    if !(args.minutes > 0.0 && args.minutes.is_finite()) {
        bail!("--minutes must be positive");
    }
    let mut cfg = SoakConfig::new(
        vigie,
        args.streams,
        Duration::from_secs_f64(args.minutes * 60.0),
    );
    cfg.seed = args.seed.unwrap_or_else(seed_from_clock);
    cfg.kill_every_s = range(&args.kill_every, "kill-every")?;
    cfg.fault_every_s = range(&args.fault_every, "fault-every")?;
    if let Some(m) = args.tmpfs_mib {
        cfg.tmpfs_bytes = m << 20;
    }
    if let Some(m) = args.min_free_mib {
        cfg.min_free_bytes = m << 20;
    }
    if cfg.min_free_bytes >= cfg.tmpfs_bytes {
        bail!("the floor (--min-free-mib) must be below the tmpfs size (--tmpfs-mib)");
    }
    cfg.segment_seconds = args.segment_seconds;
    cfg.warmup_s = args.warmup;
    cfg.players = args.players;
    cfg.exporters = args.exporters;
    cfg.watchers = args.watchers;
    cfg.work_dir = args.work_dir.clone();
    cfg.keep = args.keep;
    eprintln!(
        "# load before: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(run(cfg))?;
    eprintln!(
        "# load after: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!("{}", report.summary);
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report.json)?)?;
    }
    if !report.failures.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

//! The short soak (issue 12, item 5): 8 camsim streams with random faults, the real binary
//! killed with `kill -9` and restarted every 15–30 s, its data directory on a small tmpfs at its
//! free-space floor (on the work disk with a floor just under its free space where mounting is
//! refused), players, an exporter and live viewers throughout; then every check of
//! [`vigie_testkit::soak`] (decoding, index against files and against `vigie reindex`, frames lost
//! within the kill and fault bounds, RSS and descriptors flat). The long run is
//! `vigie-bench soak --minutes N` (docs/RELIABILITY.md).
//!
//! `VIGIE_SOAK_SEED=N` replays a schedule; the seed is printed either way.

use std::time::Duration;

use vigie_testkit::soak::{SoakConfig, run, seed_from_clock};

const BIN: &str = env!("CARGO_BIN_EXE_vigie");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_with_faults_kills_full_disk_and_clients() {
    let mut cfg = SoakConfig::new(BIN, 8, Duration::from_secs(60));
    cfg.seed = std::env::var("VIGIE_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(seed_from_clock);
    cfg.kill_every_s = (15, 30);
    cfg.fault_every_s = (10, 30);
    // ~0.5 MB/s of footage: 24 MiB between the floor and the top is ~40 s, so retention deletes
    // for most of the run.
    cfg.tmpfs_bytes = 48 << 20;
    cfg.min_free_bytes = 24 << 20;
    cfg.warmup_s = 10;
    // VIGIE_SOAK_KEEP=1 keeps the work directory (logs, report.json) for diagnosis.
    cfg.keep = std::env::var_os("VIGIE_SOAK_KEEP").is_some();
    let report = run(cfg).await.expect("the soak harness ran");
    eprintln!("{}", report.summary);
    if let Some(d) = report.json["work_dir"].as_str() {
        let _ = std::fs::write(
            std::path::Path::new(d).join("report.json"),
            serde_json::to_string_pretty(&report.json).unwrap_or_default(),
        );
    }
    assert!(
        report.failures.is_empty(),
        "soak failed (seed {}; replay with VIGIE_SOAK_SEED={}):\n{}",
        report.seed,
        report.seed,
        report.failures.join("\n")
    );
}

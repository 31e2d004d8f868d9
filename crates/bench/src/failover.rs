//! `vigie-bench failover`: the recording gap after a node is killed, over many kills.
//!
//! A real 3-member etcd ([`vigie_testkit::etcd`]), 3 real `vigie` nodes
//! ([`vigie_testkit::cluster`], default recording settings: 1 s fragments, 2 s syncs), camsim in
//! this process with `--cameras` cameras. Each round: wait until the cluster is settled, kill -9
//! one node (in turn), wait until the survivors record its cameras, then per camera take the
//! first frame on the new owner (its index) and the last frame on the dead node (its index
//! after it restarted: recovery indexes what reached the disk), gap = first − last (0 when they
//! overlap). The restarted node rejoins and gets its share back before the next round.
//!
//! Prints one line per round and the distribution over every camera of every round (median,
//! p90, max) with the lease TTL, for docs/BENCHMARKS.md.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use vigie_camsim::MountConfig;
use vigie_testkit::cluster::{CameraDef, ClusterConfig, NodeSpec, VigieCluster, spans_on};
use vigie_testkit::etcd::EtcdCluster;

#[derive(clap::Args, Debug, Clone)]
pub struct FailoverArgs {
    /// Number of kill -9 failovers.
    #[arg(long, default_value_t = 20)]
    pub kills: usize,
    /// Lease TTL of the nodes, seconds.
    #[arg(long, default_value_t = 2)]
    pub ttl_s: u32,
    /// Cameras (camsim streams, 640×360 25 fps H.264).
    #[arg(long, default_value_t = 30)]
    pub cameras: usize,
    /// The vigie binary (built with feature `cluster`; default: next to this one).
    #[arg(long)]
    pub vigie: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Round {
    victim: String,
    cameras: usize,
    /// kill → every camera of the victim assigned to and recorded by a survivor (status).
    reassigned_s: f64,
    gaps_s: Vec<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    ttl_s: u32,
    cameras: usize,
    rounds: Vec<Round>,
    gaps: usize,
    median_s: f64,
    p90_s: f64,
    max_s: f64,
    load_before: String,
    load_after: String,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn main(args: FailoverArgs) -> Result<()> {
    let vigie = match &args.vigie {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .join("vigie"),
    };
    if !vigie.is_file() {
        bail!(
            "{} not found (build with `cargo build --release -p vigie --features cluster -p vigie-bench`)",
            vigie.display()
        );
    }
    if args.kills == 0 || args.cameras == 0 {
        bail!("--kills and --cameras must be positive");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(run(args.clone(), vigie))?;
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)?;
    }
    println!(
        "| lease TTL | cameras | kills | gaps measured | median | p90 | max | load (1/5/15 min) before → after |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {} s | {} | {} | {} | {:.2} s | {:.2} s | {:.2} s | {} → {} |",
        report.ttl_s,
        report.cameras,
        report.rounds.len(),
        report.gaps,
        report.median_s,
        report.p90_s,
        report.max_s,
        report.load_before,
        report.load_after
    );
    Ok(())
}

async fn run(args: FailoverArgs, vigie: PathBuf) -> Result<Report> {
    let load_before = loadavg();
    eprintln!("# load before: {load_before}");
    let mut etcd = tokio::task::block_in_place(|| EtcdCluster::start(3))?;
    let fixture = vigie_camsim::Fixture::embedded(vigie_testkit::sim::BASELINE)
        .context("embedded fixture")?;
    let sim = vigie_testkit::sim::start(
        (0..args.cameras)
            .map(|i| MountConfig::new(format!("c{i:03}"), fixture.clone()))
            .collect(),
    )
    .await;
    let cams: Vec<CameraDef> = (0..args.cameras)
        .map(|i| CameraDef::new(format!("cam-{i:03}"), sim.url(&format!("c{i:03}"))))
        .collect();
    let mut cfg = ClusterConfig::new(vigie, etcd.endpoints(), cams);
    cfg.lease_ttl_s = args.ttl_s;
    // The default durability settings (what a kill -9 loses in production).
    cfg.recording_toml = String::new();
    let names = ["rec-a", "rec-b", "rec-c"];
    let mut c = tokio::task::block_in_place(|| {
        VigieCluster::start(cfg, names.iter().map(|n| NodeSpec::new(*n)).collect())
    })?;
    let mut rounds = Vec::new();
    let mut all = Vec::new();
    for k in 0..args.kills {
        let victim = names[k % names.len()];
        let st = c.wait_settled(Duration::from_secs(90)).await?;
        // Let the victim record its cameras for a while (a few fragments on disk).
        tokio::time::sleep(Duration::from_secs(4)).await;
        let moved = st.cameras_of(victim);
        if moved.is_empty() {
            eprintln!("round {k}: {victim} records nothing, skipped");
            continue;
        }
        let t_kill = Timestamp::now();
        tokio::task::block_in_place(|| c.node_mut(victim).vigie.kill9())?;
        let st2 = c
            .wait_status(
                "survivors record the dead node's cameras",
                Duration::from_secs(60),
                |s| {
                    moved.iter().all(|cam| {
                        s.assignments.get(cam).is_some_and(|n| {
                            n != victim
                                && s.node(n)
                                    .is_some_and(|x| x.alive && x.cameras.contains(cam))
                        })
                    })
                },
            )
            .await?;
        let reassigned_s = Timestamp::now().duration_since(t_kill).as_secs_f64();
        let mut first_new = BTreeMap::new();
        for cam in &moved {
            let owner = &st2.assignments[cam];
            let deadline = Instant::now() + Duration::from_secs(40);
            loop {
                let spans = spans_on(
                    &c.node(owner).vigie,
                    cam,
                    t_kill - SignedDuration::from_secs(60),
                    Timestamp::now(),
                )
                .await?;
                if let Some((s, _)) = spans.iter().find(|(_, e)| *e > t_kill) {
                    first_new.insert(cam.clone(), *s);
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{cam}: nothing on {owner} 40 s after the kill");
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        tokio::task::block_in_place(|| c.node_mut(victim).vigie.spawn())?;
        let mut gaps = Vec::new();
        for cam in &moved {
            let spans = spans_on(
                &c.node(victim).vigie,
                cam,
                t_kill - SignedDuration::from_secs(600),
                t_kill + SignedDuration::from_secs(1),
            )
            .await?;
            let last = spans
                .last()
                .map(|(_, e)| *e)
                .with_context(|| format!("{cam}: no footage on {victim} before the kill"))?;
            gaps.push(first_new[cam].duration_since(last).as_secs_f64().max(0.0));
        }
        let mut sorted = gaps.clone();
        sorted.sort_by(f64::total_cmp);
        eprintln!(
            "round {k}: killed {victim} ({} cameras), reassigned after {reassigned_s:.1} s, gap median {:.2} s, max {:.2} s",
            moved.len(),
            percentile(&sorted, 0.5),
            sorted.last().copied().unwrap_or(f64::NAN)
        );
        all.extend(gaps.iter().copied());
        rounds.push(Round {
            victim: victim.to_owned(),
            cameras: moved.len(),
            reassigned_s,
            gaps_s: gaps,
        });
    }
    all.sort_by(f64::total_cmp);
    let load_after = loadavg();
    drop(c);
    drop(sim);
    tokio::task::block_in_place(|| etcd.stop_all())?;
    Ok(Report {
        ttl_s: args.ttl_s,
        cameras: args.cameras,
        gaps: all.len(),
        median_s: percentile(&all, 0.5),
        p90_s: percentile(&all, 0.9),
        max_s: all.last().copied().unwrap_or(f64::NAN),
        rounds,
        load_before,
        load_after,
    })
}

//! `vigie audit verify` on a cluster node: every node's access journal, each checked against
//! its anchor in etcd (`j/<node>`).
//!
//! Which nodes: every live member and every node whose head is anchored (a node that ever ran
//! in the cluster). For each:
//! * this node, stopped (its journal opens here): the offline check of a single node (chain,
//!   signed head, purges, alarms) and its anchor;
//! * a live node (this one too while it runs: its journal is locked by the process): its chain
//!   read page by page over the signed internal route `/internal/v1/journal/entries` and
//!   checked here, independently (sequence, links, every hash, a missing prefix accounted for
//!   by a purge, tamper alarms on record), the anchor read from etcd *before* the chain
//!   compared with it (ends before it: truncated; another hash there: rewritten), and the
//!   node's own verification (`/internal/v1/journal/verify`: its signed head, purge retention,
//!   alarm store);
//! * a node that is down: unverifiable, reported with its anchor.
//!
//! Exit status 1 when any node is broken, truncated, rewritten, has a tamper alarm on record,
//! or could not be checked (down, no cluster secret here): an audit that could not see every
//! journal is not a pass. A journal truncated while its node was stopped is caught either way:
//! while the node is down it is unverifiable; once restarted, its chain ends before the anchor
//! until its agent's first tick, which raises a chained tamper alarm (see docs/CLUSTER.md).
//!
//! Does not own: the chain rules (`vigie_audit::ChainCheck`), the anchors (`vigie-cluster`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use vigie_api::internal::{CarriedIdentity, ClusterKey};
use vigie_audit::{AnchorCheck, ChainCheck, Entry};
use vigie_cluster::model::JournalAnchor;
use vigie_core::config::Config;
use vigie_core::{TIME_UNITS_PER_SEC, Time90k};

/// Entries per page read from another node.
const PAGE: usize = 10_000;
/// Bound on one internal request.
const TIMEOUT: Duration = Duration::from_secs(30);

fn anchor_text(a: &JournalAnchor) -> String {
    format!(
        "entry {} anchored at {}",
        a.seq,
        Time90k(a.anchored_s.saturating_mul(TIME_UNITS_PER_SEC)).to_rfc3339()
    )
}

pub fn verify(config: &Config) -> anyhow::Result<()> {
    let c = config.cluster.clone().context("no [cluster] section")?;
    let me = c.node.clone();
    let cams: Vec<String> = config.cameras.iter().map(|c| c.id.clone()).collect();
    let mut read = None;
    crate::run::block_on(async {
        let status = vigie_cluster::admin::status(&c, &cams)
            .await
            .context("reading the cluster's members from etcd")?;
        let anchors = vigie_cluster::admin::journal_anchors(&c)
            .await
            .context("reading the journal anchors from etcd")?;
        read = Some((status, anchors));
        Ok(())
    })?;
    let (status, anchors) = read.context("etcd read")?;
    let mut nodes: std::collections::BTreeSet<String> =
        anchors.iter().map(|a| a.node.clone()).collect();
    nodes.extend(
        status
            .nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| n.name.clone()),
    );
    nodes.insert(me.clone());
    let secret = c
        .secret(&|v| std::env::var(v).ok())
        .map_err(|e| anyhow::anyhow!("cluster secret: {e}"))?;
    let key = secret.as_ref().map(|s| ClusterKey::new(&me, "", s));
    let http = http_client(config)?;
    let mut failed: Vec<String> = Vec::new();
    for node in &nodes {
        let anchor = anchors.iter().find(|a| &a.node == node);
        let url = status
            .nodes
            .iter()
            .find(|n| &n.name == node && n.alive)
            .and_then(|n| n.advertise_url.clone());
        println!("== node {node}");
        if node == &me {
            match crate::audit::open_journal(config, Arc::new(vigie_core::SystemClock)) {
                Ok(journal) => {
                    println!("(this node, stopped: its journal checked here)");
                    let problems = crate::audit::check_local(config, &journal)?;
                    report(node, problems, &mut failed);
                    continue;
                }
                Err(e) if url.is_some() => {
                    tracing::debug!(error = %format!("{e:#}"), "the local journal cannot be opened here");
                    println!(
                        "(this node, running: its journal is the process's; asked over its internal route)"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        let (Some(url), Some(key)) = (url, key.as_ref()) else {
            let why = if key.is_none() {
                "no cluster secret here ([cluster] secret_env or secret_file)"
            } else {
                "the node is down (no live registration)"
            };
            println!(
                "node {node}: UNVERIFIABLE: {why}{}",
                anchor
                    .map(|a| format!("; its journal head was {}", anchor_text(a)))
                    .unwrap_or_default()
            );
            failed.push(format!("{node} unverifiable ({why})"));
            continue;
        };
        let mut problems = Vec::new();
        crate::run::block_on(async {
            problems = check_remote(&http, key, &url, node, anchor).await?;
            Ok(())
        })?;
        report(node, problems, &mut failed);
    }
    if failed.is_empty() {
        println!(
            "every node's access journal OK ({} node(s): {})",
            nodes.len(),
            nodes.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        Ok(())
    } else {
        anyhow::bail!("access journal verification failed: {}", failed.join("; "))
    }
}

fn report(node: &str, problems: Vec<String>, failed: &mut Vec<String>) {
    if problems.is_empty() {
        println!("node {node}: OK");
    } else {
        println!("node {node}: FAILED");
        failed.extend(problems.into_iter().map(|p| format!("{node}: {p}")));
    }
}

/// An error and its causes, on one line (reqwest's own text says only "error sending request").
fn causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn http_client(config: &Config) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder().timeout(TIMEOUT);
    if let Some(ca) = config.cluster.as_ref().and_then(|c| c.ca_file.as_ref()) {
        let pem = std::fs::read(ca).with_context(|| format!("cluster.ca_file {}", ca.display()))?;
        b = b.add_root_certificate(
            reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("cluster.ca_file {}", ca.display()))?,
        );
    }
    b.build().context("building the HTTP client")
}

async fn get(
    http: &reqwest::Client,
    key: &ClusterKey,
    url: &str,
    pq: &str,
) -> Result<serde_json::Value, String> {
    let who = CarriedIdentity {
        user: "system".into(),
        role: vigie_auth::Role::Admin,
        scope: vigie_auth::Scope::all(),
        actor: "vigie audit verify".into(),
        request_id: format!(
            "audit-verify-{}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond()
        ),
    };
    let (status, body) = crate::cluster::signed_get(http, key, url, pq, &who, None)
        .await
        .map_err(|e| causes(&e.without_url()))?;
    crate::cluster::json_answer(status, &body)
}

/// Checks a live node's journal over its internal routes; returns the problems found.
async fn check_remote(
    http: &reqwest::Client,
    key: &ClusterKey,
    url: &str,
    node: &str,
    anchor: Option<&JournalAnchor>,
) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    // Its own verdict (signed head, purge retention, alarm store).
    match get(http, key, url, "/internal/v1/journal/verify").await {
        Ok(v) => {
            for a in v["alarms"].as_array().into_iter().flatten() {
                println!(
                    "TAMPER ALARM #{} raised {} on node {node}: {}",
                    a["id"],
                    a["time"].as_str().unwrap_or("?"),
                    a["problem"].as_str().unwrap_or("?")
                );
            }
            if v["ok"] != serde_json::Value::Bool(true) {
                let why = match &v["first_broken"] {
                    serde_json::Value::Null => format!(
                        "{} tamper alarm(s) on record",
                        v["alarms"].as_array().map_or(0, Vec::len)
                    ),
                    b => format!(
                        "broken at entry {}: {}",
                        b["seq"],
                        b["problem"].as_str().unwrap_or("?")
                    ),
                };
                println!("node {node}: its own verification FAILED: {why}");
                problems.push(format!("its own verification failed: {why}"));
            }
        }
        Err(e) => {
            println!("node {node}: UNVERIFIABLE: {e}");
            problems.push(format!("unverifiable: {e}"));
            return Ok(problems);
        }
    }
    // The chain, checked here entry by entry, and the anchor.
    let mut chain = ChainCheck::new(anchor.map(|a| (a.seq, a.hash.clone())));
    let mut after: Option<u64> = None;
    loop {
        let pq = match after {
            None => format!("/internal/v1/journal/entries?limit={PAGE}"),
            Some(a) => format!("/internal/v1/journal/entries?limit={PAGE}&after={a}"),
        };
        let v = match get(http, key, url, &pq).await {
            Ok(v) => v,
            Err(e) => {
                println!("node {node}: UNVERIFIABLE: reading its chain: {e}");
                problems.push(format!("unverifiable: reading its chain: {e}"));
                return Ok(problems);
            }
        };
        let page: Vec<Entry> = serde_json::from_value(v["entries"].clone())
            .with_context(|| format!("entries of node {node}"))?;
        let more = v["more"].as_bool().unwrap_or(false) && !page.is_empty();
        after = page.last().map(|e| e.seq).or(after);
        for e in &page {
            if !chain.push(e) {
                break;
            }
        }
        if !more {
            break;
        }
    }
    let r = chain.finish();
    match &r.first_broken {
        None => println!(
            "node {node}: hash chain intact: {} entries checked here (sequence {}..{})",
            r.entries,
            r.first_seq.unwrap_or(0),
            r.last.as_ref().map_or(0, |l| l.0 + 1)
        ),
        Some((seq, why)) => {
            println!("node {node}: chain BROKEN at entry {seq}: {why}");
            problems.push(format!("chain broken at entry {seq}: {why}"));
        }
    }
    for a in &r.alarms {
        problems.push(format!(
            "tamper alarm in its chain (entry {}): {}",
            a.seq, a.problem
        ));
    }
    match (anchor, &r.anchor) {
        (None, _) | (_, None) => println!("node {node}: etcd holds no journal anchor of it yet"),
        (Some(a), Some(AnchorCheck::Matches)) => {
            println!("node {node}: etcd anchor held ({})", anchor_text(a))
        }
        (Some(a), Some(AnchorCheck::Purged { first_seq })) => println!(
            "node {node}: etcd anchor ({}) older than its oldest entry {first_seq} (purged by retention)",
            anchor_text(a)
        ),
        (Some(a), Some(AnchorCheck::Missing { last_seq })) => {
            let p = format!(
                "TRUNCATED: its journal ends at entry {} but {} in etcd: entries were removed",
                last_seq.map_or_else(|| "(none)".to_owned(), |s| s.to_string()),
                anchor_text(a)
            );
            println!("node {node}: {p}");
            problems.push(p);
        }
        (Some(a), Some(AnchorCheck::Differs { found })) => {
            let p = format!(
                "REWRITTEN: its entry {} has hash {found}, not the {} of the {}",
                a.seq,
                a.hash,
                anchor_text(a)
            );
            println!("node {node}: {p}");
            problems.push(p);
        }
    }
    Ok(problems)
}

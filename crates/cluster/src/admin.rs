//! The operator's commands: `vigie cluster status`, `drain`, `undrain`. They read and write
//! etcd directly (no node needs to answer).
//!
//! Does not: move cameras itself (the controller does, the nodes start and stop).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Serialize;
use vigie_core::config::ClusterConfig;

use crate::ClusterError;
use crate::etcd::{bounded, connect, get_prefix, now_s};
use crate::model::{
    AssignmentRecord, DrainRecord, JournalAnchor, Keys, NodeRecord, NodeStatus, parse,
};

/// One node in `vigie cluster status`.
#[derive(Clone, Debug, Serialize)]
pub struct NodeReport {
    pub name: String,
    pub site: Option<String>,
    pub capacity_streams: Option<u32>,
    pub advertise_url: Option<String>,
    /// Registered under a live lease.
    pub alive: bool,
    pub draining: bool,
    /// Cameras it records now (from its status).
    pub cameras: Vec<String>,
    /// Age of its last status write (by this host's clock against the node's: skew adds in).
    pub heartbeat_age_s: Option<i64>,
}

/// `vigie cluster status --json`.
#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    pub controller: Option<String>,
    pub nodes: Vec<NodeReport>,
    pub assignments: BTreeMap<String, String>,
    pub unassigned: Vec<String>,
    /// Cameras recorded by more than one node now (a handover, or a partition).
    pub duplicates: BTreeMap<String, Vec<String>>,
}

/// Reads the cluster's state; `cameras`: the configured camera ids (for `unassigned`).
pub async fn status(c: &ClusterConfig, cameras: &[String]) -> Result<StatusReport, ClusterError> {
    let client = connect(c).await?;
    let keys = Keys::new(&c.prefix);
    let control = get_prefix(&client, &keys.control()).await?;
    let statuses = get_prefix(&client, &keys.status_prefix()).await?;
    let mut members = BTreeMap::new();
    let mut controller = None;
    let mut assignment = AssignmentRecord::default();
    let mut drains = BTreeSet::new();
    for (key, v) in &control {
        if let Some(name) = key.strip_prefix(&keys.nodes()) {
            if let Some(n) = parse::<NodeRecord>(key, v) {
                members.insert(name.to_owned(), n);
            }
        } else if *key == keys.controller() {
            controller = Some(String::from_utf8_lossy(v).into_owned());
        } else if *key == keys.assignment() {
            assignment = parse(key, v).unwrap_or_default();
        } else if let Some(n) = key.strip_prefix(&keys.drain_prefix()) {
            drains.insert(n.to_owned());
        }
    }
    let mut status: BTreeMap<String, NodeStatus> = BTreeMap::new();
    for (key, v) in &statuses {
        if let (Some(name), Some(s)) = (key.strip_prefix(&keys.status_prefix()), parse(key, v)) {
            status.insert(name.to_owned(), s);
        }
    }
    let names: BTreeSet<String> = members
        .keys()
        .chain(status.keys())
        .chain(drains.iter())
        .chain(assignment.cameras.values())
        .cloned()
        .collect();
    let now = now_s();
    let nodes = names
        .into_iter()
        .map(|name| {
            let m = members.get(&name);
            let s = status.get(&name);
            NodeReport {
                site: m.and_then(|m| m.site.clone()),
                capacity_streams: m.map(|m| m.capacity_streams),
                advertise_url: m.map(|m| m.advertise_url.clone()),
                alive: m.is_some(),
                draining: drains.contains(&name) || s.is_some_and(|s| s.draining),
                cameras: s
                    .map(|s| s.recording.keys().cloned().collect())
                    .unwrap_or_default(),
                heartbeat_age_s: s.map(|s| (now - s.heartbeat_s).max(0)),
                name,
            }
        })
        .collect::<Vec<_>>();
    let mut recorders: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in &nodes {
        for cam in &n.cameras {
            recorders
                .entry(cam.clone())
                .or_default()
                .push(n.name.clone());
        }
    }
    Ok(StatusReport {
        controller,
        unassigned: cameras
            .iter()
            .filter(|c| !assignment.cameras.contains_key(*c))
            .cloned()
            .collect(),
        assignments: assignment.cameras,
        duplicates: recorders.into_iter().filter(|(_, v)| v.len() > 1).collect(),
        nodes,
    })
}

/// The human-readable form of [`status`].
pub fn render(r: &StatusReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "controller: {}",
        r.controller.as_deref().unwrap_or("(none elected)")
    );
    let _ = writeln!(
        out,
        "{:<20} {:<10} {:>8} {:<6} {:<8} {:>7} {:>9}  url",
        "node", "site", "capacity", "alive", "draining", "cameras", "lag_s"
    );
    for n in &r.nodes {
        let _ = writeln!(
            out,
            "{:<20} {:<10} {:>8} {:<6} {:<8} {:>7} {:>9}  {}",
            n.name,
            n.site.as_deref().unwrap_or("-"),
            n.capacity_streams
                .map(|c| c.to_string())
                .unwrap_or("-".into()),
            if n.alive { "yes" } else { "NO" },
            if n.draining { "yes" } else { "no" },
            n.cameras.len(),
            n.heartbeat_age_s
                .map(|a| a.to_string())
                .unwrap_or("-".into()),
            n.advertise_url.as_deref().unwrap_or("-"),
        );
    }
    let _ = writeln!(out, "assignments ({}):", r.assignments.len());
    for (cam, node) in &r.assignments {
        let _ = writeln!(out, "  {cam:<32} → {node}");
    }
    if !r.unassigned.is_empty() {
        let _ = writeln!(
            out,
            "UNASSIGNED ({}): {}",
            r.unassigned.len(),
            r.unassigned.join(", ")
        );
    }
    for (cam, nodes) in &r.duplicates {
        let _ = writeln!(out, "recorded twice now: {cam} on {}", nodes.join(", "));
    }
    out
}

/// `vigie cluster drain NODE`: marks the node draining and waits until it records nothing
/// (or is gone). `progress` is told each change of what it still records.
pub async fn drain(
    c: &ClusterConfig,
    node: &str,
    timeout: Duration,
    mut progress: impl FnMut(&str),
) -> Result<(), ClusterError> {
    let client = connect(c).await?;
    let keys = Keys::new(&c.prefix);
    let rec = DrainRecord {
        by: "cli".into(),
        at_s: now_s(),
    };
    let v = serde_json::to_vec(&rec).map_err(|e| ClusterError::Other(e.to_string()))?;
    let mut cl = client.clone();
    bounded(cl.put(keys.drain(node), v, None)).await?;
    progress(&format!(
        "{node} marked draining; waiting for its cameras to move"
    ));
    let deadline = Instant::now() + timeout;
    let mut last: Option<Vec<String>> = None;
    loop {
        let alive = !get_prefix(&client, &keys.node(node)).await?.is_empty();
        let st = get_prefix(&client, &keys.status(node)).await?;
        let s = st
            .first()
            .and_then(|(k, v)| parse::<NodeStatus>(k, v))
            .filter(|s| s.node == node);
        if !alive {
            progress(&format!("{node} is not running: it records nothing"));
            return Ok(());
        }
        if let Some(s) = &s {
            let cams: Vec<String> = s.recording.keys().cloned().collect();
            if s.draining && cams.is_empty() {
                progress(&format!("{node} records nothing now"));
                return Ok(());
            }
            if last.as_ref() != Some(&cams) {
                progress(&format!(
                    "{node} still records {} camera(s): {}",
                    cams.len(),
                    cams.join(", ")
                ));
                last = Some(cams);
            }
        }
        if Instant::now() >= deadline {
            let left = last.unwrap_or_default();
            return Err(ClusterError::Other(format!(
                "drain of {node} timed out after {} s: it still records {} camera(s) ({}). No other live node of their site may record them, or their new owner has not written a key frame yet; see `vigie cluster status`. {node} stays marked draining (undo with `vigie cluster undrain {node}`).",
                timeout.as_secs(),
                left.len(),
                left.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `vigie cluster undrain NODE`: the node may record again.
pub async fn undrain(c: &ClusterConfig, node: &str) -> Result<(), ClusterError> {
    let client = connect(c).await?;
    let keys = Keys::new(&c.prefix);
    let mut cl = client.clone();
    bounded(cl.delete(keys.drain(node), None)).await?;
    Ok(())
}

/// Every node's access-journal anchor (`vigie audit verify` of a cluster node checks its own
/// journal against its anchor).
pub async fn journal_anchors(c: &ClusterConfig) -> Result<Vec<JournalAnchor>, ClusterError> {
    let client = connect(c).await?;
    let keys = Keys::new(&c.prefix);
    Ok(get_prefix(&client, &keys.journal_prefix())
        .await?
        .into_iter()
        .filter_map(|(k, v)| parse(&k, &v))
        .collect())
}

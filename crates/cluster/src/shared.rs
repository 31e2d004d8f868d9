//! What the rest of the process reads of the cluster: this node's view (assignment, members,
//! controller, etcd reachability, the cluster's legal holds) and the `vigie_cluster_*`
//! metrics. Written by the agent, read by the API, the metrics route and retention.
//!
//! Does not: talk to etcd.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use crate::assign::Assignment;
use crate::model::{CoverageSnapshot, HoldRecord, NodeRecord, NodeStatus};

/// This node's latest view of the cluster.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub assignment: Assignment,
    pub members: BTreeMap<String, NodeRecord>,
    pub controller: Option<String>,
    /// The last etcd call succeeded.
    pub etcd_ok: bool,
    /// This node is draining.
    pub draining: bool,
    /// Cameras recorded here now.
    pub recording: Vec<String>,
}

/// Every node's published status (live nodes) and coverage (also of dead nodes), as last read
/// from etcd.
#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    pub statuses: BTreeMap<String, NodeStatus>,
    pub coverage: BTreeMap<String, CoverageSnapshot>,
    /// Every node's access-journal anchor (`j/<node>`): which nodes keep a journal.
    pub anchors: BTreeMap<String, crate::model::JournalAnchor>,
}

/// The cluster's legal holds as last read from etcd, and when.
#[derive(Clone, Debug)]
pub struct HoldsSnapshot {
    pub holds: Vec<HoldRecord>,
    pub read_at: Instant,
}

/// Failover/handover durations on this node: from the moment it saw a camera assigned to it
/// to the first key frame it received of every stream of that camera.
const BUCKETS_S: [f64; 9] = [0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 60.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS_S.len()],
    sum: f64,
    count: u64,
}

/// Shared between the agent (writer) and the rest of the process (readers).
pub struct Shared {
    node: String,
    view: RwLock<View>,
    holds: RwLock<Option<HoldsSnapshot>>,
    state: RwLock<ClusterState>,
    assignment_changes: AtomicU64,
    etcd_errors: AtomicU64,
    lease_losses: AtomicU64,
    anchors: AtomicU64,
    starts: AtomicU64,
    stops: AtomicU64,
    takeover: Mutex<BTreeMap<&'static str, Histogram>>,
}

impl Shared {
    pub fn new(node: &str) -> Shared {
        Shared {
            node: node.to_owned(),
            view: RwLock::new(View::default()),
            holds: RwLock::new(None),
            state: RwLock::new(ClusterState::default()),
            assignment_changes: AtomicU64::new(0),
            etcd_errors: AtomicU64::new(0),
            lease_losses: AtomicU64::new(0),
            anchors: AtomicU64::new(0),
            starts: AtomicU64::new(0),
            stops: AtomicU64::new(0),
            takeover: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn view(&self) -> View {
        self.view.read().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn update(&self, f: impl FnOnce(&mut View)) {
        if let Ok(mut v) = self.view.write() {
            f(&mut v);
        }
    }

    /// The node assigned to record `camera`, if any.
    pub fn recorder_of(&self, camera: &str) -> Option<String> {
        self.view
            .read()
            .ok()
            .and_then(|v| v.assignment.get(camera).cloned())
    }

    /// True when this node records `camera` now.
    pub fn records_here(&self, camera: &str) -> bool {
        self.view
            .read()
            .map(|v| v.recording.iter().any(|c| c == camera))
            .unwrap_or(false)
    }

    /// Every node's status and coverage, as just read from etcd.
    pub fn set_state(&self, state: ClusterState) {
        if let Ok(mut s) = self.state.write() {
            *s = state;
        }
    }

    /// Every node's status and coverage, as last read.
    pub fn state(&self) -> ClusterState {
        self.state.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// The cluster's holds, from a read of etcd that began at `read_at`.
    pub fn set_holds(&self, holds: Vec<HoldRecord>, read_at: Instant) {
        if let Ok(mut h) = self.holds.write() {
            *h = Some(HoldsSnapshot { holds, read_at });
        }
    }

    /// The cluster's holds as last read, `None` before the first successful read.
    pub fn holds(&self) -> Option<HoldsSnapshot> {
        self.holds.read().ok().and_then(|h| h.clone())
    }

    pub fn count_assignment_change(&self) {
        self.assignment_changes.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_etcd_error(&self) {
        self.etcd_errors.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_lease_loss(&self) {
        self.lease_losses.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_anchor(&self) {
        self.anchors.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_start(&self) {
        self.starts.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_stop(&self) {
        self.stops.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long a camera took to be recorded here once assigned here. `kind`:
    /// `failover` (the previous owner was dead), `handover` (it was alive) or `initial`.
    pub fn observe_takeover(&self, kind: &'static str, seconds: f64) {
        if let Ok(mut m) = self.takeover.lock() {
            let h = m.entry(kind).or_default();
            for (i, b) in BUCKETS_S.iter().enumerate() {
                if seconds <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        }
    }

    /// The `vigie_cluster_*` series, Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let v = self.view();
        let mut out = String::new();
        let node = &self.node;
        let mut gauge = |name: &str, help: &str, kind: &str, rows: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, val) in rows {
                let _ = writeln!(out, "{name}{{{labels}}} {val}");
            }
        };
        let l = format!("node=\"{node}\"");
        gauge(
            "vigie_cluster_etcd_reachable",
            "1 when this node's last etcd call succeeded.",
            "gauge",
            vec![(l.clone(), if v.etcd_ok { 1.0 } else { 0.0 })],
        );
        gauge(
            "vigie_cluster_members",
            "Live nodes (registered under a lease) as this node last saw them.",
            "gauge",
            vec![(l.clone(), v.members.len() as f64)],
        );
        gauge(
            "vigie_cluster_member_up",
            "1 per live node as this node last saw them.",
            "gauge",
            v.members
                .keys()
                .map(|m| (format!("node=\"{node}\",member=\"{m}\""), 1.0))
                .collect(),
        );
        gauge(
            "vigie_cluster_is_controller",
            "1 when this node is the elected controller.",
            "gauge",
            vec![(
                l.clone(),
                if v.controller.as_deref() == Some(node.as_str()) {
                    1.0
                } else {
                    0.0
                },
            )],
        );
        gauge(
            "vigie_cluster_draining",
            "1 while this node is draining.",
            "gauge",
            vec![(l.clone(), if v.draining { 1.0 } else { 0.0 })],
        );
        gauge(
            "vigie_cluster_cameras_assigned",
            "Cameras the assignment gives this node.",
            "gauge",
            vec![(
                l.clone(),
                v.assignment.values().filter(|n| *n == node).count() as f64,
            )],
        );
        gauge(
            "vigie_cluster_cameras_recording",
            "Cameras this node records now (more than assigned during a handover or while etcd is unreachable).",
            "gauge",
            vec![(l.clone(), v.recording.len() as f64)],
        );
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        gauge(
            "vigie_cluster_assignment_changes_total",
            "Changes of the assignment seen by this node.",
            "counter",
            vec![(l.clone(), c(&self.assignment_changes))],
        );
        gauge(
            "vigie_cluster_etcd_errors_total",
            "etcd calls that failed or timed out.",
            "counter",
            vec![(l.clone(), c(&self.etcd_errors))],
        );
        gauge(
            "vigie_cluster_lease_losses_total",
            "Times this node found its lease expired (partition, pause, etcd outage) and registered again.",
            "counter",
            vec![(l.clone(), c(&self.lease_losses))],
        );
        gauge(
            "vigie_cluster_journal_anchors_total",
            "Access-journal heads anchored in etcd by this node.",
            "counter",
            vec![(l.clone(), c(&self.anchors))],
        );
        gauge(
            "vigie_cluster_camera_starts_total",
            "Cameras started here by the cluster.",
            "counter",
            vec![(l.clone(), c(&self.starts))],
        );
        gauge(
            "vigie_cluster_camera_stops_total",
            "Cameras stopped here by the cluster.",
            "counter",
            vec![(l.clone(), c(&self.stops))],
        );
        let holds_age = self
            .holds()
            .map(|h| h.read_at.elapsed().as_secs_f64())
            .unwrap_or(-1.0);
        gauge(
            "vigie_cluster_holds_age_seconds",
            "Age of the cluster's legal holds as last read from etcd (-1: never read).",
            "gauge",
            vec![(l.clone(), holds_age)],
        );
        gauge(
            "vigie_cluster_holds_active",
            "Active legal holds of the whole cluster as last read from etcd.",
            "gauge",
            vec![(
                l.clone(),
                self.holds()
                    .map(|h| h.holds.iter().filter(|h| h.active).count() as f64)
                    .unwrap_or(0.0),
            )],
        );
        let name = "vigie_cluster_takeover_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From a camera being assigned to this node to its first key frame here (kind: failover, handover, initial)."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        if let Ok(m) = self.takeover.lock() {
            for (kind, h) in m.iter() {
                for (i, b) in BUCKETS_S.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{l},kind=\"{kind}\",le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{l},kind=\"{kind}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(out, "{name}_sum{{{l},kind=\"{kind}\"}} {}", h.sum);
                let _ = writeln!(out, "{name}_count{{{l},kind=\"{kind}\"}} {}", h.count);
            }
        }
        out
    }
}

//! What the cluster keeps in etcd: the key layout under the configured prefix and the JSON
//! records stored there (see docs/CLUSTER.md, "Key layout"). Pure data: no I/O.
//!
//! ```text
//! <prefix>/c/nodes/<node>        NodeRecord            lease of the node   (membership)
//! <prefix>/c/controller          node name             lease of the node   (election)
//! <prefix>/c/assignment          AssignmentRecord      none                (controller's txn)
//! <prefix>/c/ready/<camera>      node name             lease of the node   (make-before-break)
//! <prefix>/c/drain/<node>        DrainRecord           none                (operator / SIGTERM)
//! <prefix>/s/<node>              NodeStatus            lease of the node   (status, coverage)
//! <prefix>/h/<node>/<hold id>    HoldRecord            none                (legal holds)
//! <prefix>/v/<node>              CoverageSnapshot      none                (footage held, kept
//!                                                                          after the node dies)
//! <prefix>/j/<node>              JournalAnchor         none                (journal head)
//! <prefix>/u/…                   users, sessions, API tokens (keys in `users::UserKeys`)
//! ```
//!
//! Everything a node reads each tick (`c/`) is one range read; status and holds are read at a
//! lower rate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::assign::Assignment;

/// Keys of one cluster (one prefix).
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }
    /// Everything the tick reads: membership, controller, assignment, ready, drain.
    pub fn control(&self) -> String {
        format!("{}/c/", self.prefix)
    }
    pub fn nodes(&self) -> String {
        format!("{}/c/nodes/", self.prefix)
    }
    pub fn node(&self, name: &str) -> String {
        format!("{}{name}", self.nodes())
    }
    pub fn controller(&self) -> String {
        format!("{}/c/controller", self.prefix)
    }
    pub fn assignment(&self) -> String {
        format!("{}/c/assignment", self.prefix)
    }
    pub fn ready_prefix(&self) -> String {
        format!("{}/c/ready/", self.prefix)
    }
    pub fn ready(&self, camera: &str) -> String {
        format!("{}{camera}", self.ready_prefix())
    }
    pub fn drain_prefix(&self) -> String {
        format!("{}/c/drain/", self.prefix)
    }
    pub fn drain(&self, node: &str) -> String {
        format!("{}{node}", self.drain_prefix())
    }
    pub fn status_prefix(&self) -> String {
        format!("{}/s/", self.prefix)
    }
    pub fn status(&self, node: &str) -> String {
        format!("{}{node}", self.status_prefix())
    }
    /// Coverage of each node, without lease: who to ask for footage, also of a dead node
    /// (whose spans are then reported unavailable, not as gaps).
    pub fn coverage_prefix(&self) -> String {
        format!("{}/v/", self.prefix)
    }
    pub fn coverage(&self, node: &str) -> String {
        format!("{}{node}", self.coverage_prefix())
    }
    pub fn holds_prefix(&self) -> String {
        format!("{}/h/", self.prefix)
    }
    pub fn journal_prefix(&self) -> String {
        format!("{}/j/", self.prefix)
    }
    /// Where a node anchors its access journal's head (no lease: the anchor outlives the node,
    /// so a journal cut while its node is stopped is caught).
    pub fn journal(&self, node: &str) -> String {
        format!("{}/j/{node}", self.prefix)
    }
    pub fn hold(&self, node: &str, id: u64) -> String {
        format!("{}{node}/{id:020}", self.holds_prefix())
    }
}

/// A live node (`c/nodes/<node>`, under the node's lease).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub site: Option<String>,
    pub capacity_streams: u32,
    pub advertise_url: String,
    /// [`vigie_core::config::Config::cameras_hash`] of the node's configuration.
    pub cameras_hash: String,
    /// The node's own clock when it registered (seconds since the epoch; informative only).
    pub registered_at_s: i64,
    pub version: String,
}

/// The assignment in force (`c/assignment`), written by the controller in a transaction that
/// checks it still holds `c/controller`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentRecord {
    /// Incremented at each write.
    pub generation: u64,
    pub controller: String,
    /// camera id → node name.
    pub cameras: Assignment,
}

/// A drain request (`c/drain/<node>`): the node records nothing once its cameras have moved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRecord {
    /// Who asked: `cli` or `sigterm`.
    pub by: String,
    pub at_s: i64,
}

/// One stream's status as published (`s/<node>`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamStatusRecord {
    pub stream: String,
    /// `connecting`, `online`, `backoff`, `stopped`.
    pub state: String,
    pub fps: f64,
    pub width: Option<u16>,
    pub height: Option<u16>,
    /// Last frame received, seconds since the epoch (this node's clock).
    pub last_frame_s: Option<i64>,
}

/// Footage of one camera held on a node's disks: first and last instant, seconds since the
/// epoch (as recorded: the recording node's clock).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverageRecord {
    pub first_s: i64,
    pub last_s: i64,
    /// The node was recording the camera when it wrote this (its footage goes on after
    /// `last_s`).
    #[serde(default)]
    pub recording: bool,
}

/// The footage a node holds, per camera (`v/<node>`, no lease: it outlives the node, so the
/// others know whose footage is unavailable while it is down). Written with the status
/// heartbeat when it changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverageSnapshot {
    pub node: String,
    pub written_s: i64,
    pub coverage: BTreeMap<String, CoverageRecord>,
}

/// What a node publishes about itself (`s/<node>`, under its lease): written when the set of
/// recorded cameras or a stream's state changes, and as a heartbeat every
/// [`crate::STATUS_HEARTBEAT_S`] seconds otherwise.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    /// The node's clock at the write (seconds since the epoch).
    pub heartbeat_s: i64,
    /// True while the node is draining (asked to, or stopping on SIGTERM).
    pub draining: bool,
    /// Cameras recorded now → their streams' status.
    pub recording: BTreeMap<String, Vec<StreamStatusRecord>>,
    /// Cameras with footage on this node's disks (recorded here now or before).
    pub coverage: BTreeMap<String, CoverageRecord>,
}

/// What of a [`NodeStatus`] triggers a write when it changes: each recorded camera with its
/// streams' states, and the draining flag.
pub type ChangeKey = Vec<(String, Vec<String>)>;

impl NodeStatus {
    /// The part whose change triggers a write (everything but times that move on their own).
    /// True when a camera recorded here has received frames but `published` (the coverage
    /// last written) does not show it recorded by this node: taken since the last heartbeat,
    /// its footage would be unknown to the others if this node died now.
    pub fn coverage_behind(&self, published: &BTreeMap<String, CoverageRecord>) -> bool {
        self.recording.iter().any(|(cam, streams)| {
            streams.iter().any(|s| s.last_frame_s.is_some())
                && !published.get(cam).is_some_and(|r| r.recording)
        })
    }

    pub fn change_key(&self) -> ChangeKey {
        self.recording
            .iter()
            .map(|(c, s)| (c.clone(), s.iter().map(|s| s.state.clone()).collect()))
            .chain(std::iter::once((
                "draining".to_owned(),
                vec![self.draining.to_string()],
            )))
            .collect()
    }
}

/// A legal hold as shared in etcd (`h/<node>/<id>`): placed on `node`, by `created_by`.
/// A node's access-journal head as last anchored in etcd: the last entry's sequence number
/// and hash, and when (Unix seconds) it was anchored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalAnchor {
    pub node: String,
    pub seq: u64,
    pub hash: String,
    pub anchored_s: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    pub node: String,
    pub id: u64,
    pub camera: String,
    pub stream: String,
    pub start_90k: i64,
    pub end_90k: i64,
    pub procedure: String,
    pub created_by: String,
    pub active: bool,
}

/// Parses a JSON value, `None` (logged) when it does not parse: a record written by a
/// newer or broken node must not stop this one.
pub fn parse<T: for<'de> Deserialize<'de>>(key: &str, v: &[u8]) -> Option<T> {
    match serde_json::from_slice(v) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(key, error = %e, "ignoring an etcd value that does not parse");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn coverage_is_behind_once_a_camera_taken_since_the_last_copy_has_frames() {
        use super::*;
        let stream = |last_frame_s| StreamStatusRecord {
            stream: "main".into(),
            state: "online".into(),
            last_frame_s,
            ..Default::default()
        };
        let mut s = NodeStatus::default();
        s.recording.insert("cam-1".into(), vec![stream(None)]);
        let mut published = BTreeMap::new();
        // Taken, no frame yet: nothing recorded to announce.
        assert!(!s.coverage_behind(&published));
        s.recording.insert("cam-1".into(), vec![stream(Some(100))]);
        assert!(s.coverage_behind(&published));
        // Held from an earlier assignment, not recorded at the last copy: behind too.
        let rec = |recording| CoverageRecord {
            first_s: 10,
            last_s: 90,
            recording,
        };
        published.insert("cam-1".into(), rec(false));
        assert!(s.coverage_behind(&published));
        published.insert("cam-1".into(), rec(true));
        assert!(!s.coverage_behind(&published));
    }

    use super::*;

    #[test]
    fn keys_are_under_the_prefix_and_control_covers_the_tick() {
        let k = Keys::new("/vigie/");
        assert_eq!(k.node("rec-a"), "/vigie/c/nodes/rec-a");
        for key in [
            k.node("a"),
            k.controller(),
            k.assignment(),
            k.ready("cam"),
            k.drain("a"),
        ] {
            assert!(key.starts_with(&k.control()), "{key}");
        }
        for key in [k.status("a"), k.hold("a", 7)] {
            assert!(!key.starts_with(&k.control()), "{key}");
        }
        assert_eq!(k.hold("a", 7), "/vigie/h/a/00000000000000000007");
    }
}

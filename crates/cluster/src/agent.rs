//! A node's agent: one loop, one tick every ~half second, that keeps the node registered
//! under its lease, elects and runs the controller, decides which cameras this node records,
//! and publishes status and holds.
//!
//! Recording never waits for etcd: every etcd call is bounded ([`crate::etcd::bounded`]); a
//! tick whose read fails changes nothing to what is recorded (the last assignment is kept,
//! and persisted in `data_dir` so that a restart while etcd is down records it too).
//!
//! Handover is make-before-break: a node keeps recording a camera assigned elsewhere until
//! the new owner, alive, has published `ready/<camera>` (it has written a key frame of every
//! stream of the camera), or, when this node gets no frame of that camera itself, for at most
//! [`OFFLINE_HANDOVER_GRACE`].
//!
//! Does not: start or stop ingest itself ([`Recorder`] does), read footage.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn,
    TxnOp,
};
use tokio_util::sync::CancellationToken;
use vigie_core::config::ClusterConfig;

use crate::ClusterError;
use crate::assign::{self, Assignment, CameraInfo, NodeInfo};
use crate::etcd::{bounded, get_prefix, now_s};
use crate::model::{
    AssignmentRecord, DrainRecord, HoldRecord, JournalAnchor, Keys, NodeRecord, NodeStatus, parse,
};
use crate::shared::Shared;

/// A node that gets no frame of a camera it no longer owns stops it after this long even if
/// the new owner is not ready yet (the camera is probably down for both).
pub const OFFLINE_HANDOVER_GRACE: Duration = Duration::from_secs(15);
/// After this process was paused (or its lease was lost), cameras handed over are stopped
/// only after this long: ingest first reads what the cameras sent during the pause (waiting in
/// the sockets; measured: read within 100–200 ms of the resume), which covers the new owner's
/// takeover gap. Half the lease TTL within these bounds, so that the camera is back to one
/// recorder within a TTL of the resume (the promise).
pub fn catch_up(ttl: Duration) -> Duration {
    (ttl / 2).clamp(Duration::from_millis(800), Duration::from_secs(3))
}
/// A node's status is written at most this often (changes are coalesced).
pub const STATUS_MIN_INTERVAL: Duration = Duration::from_secs(2);

/// One camera recorded here, as the recorder reports it.
#[derive(Clone, Debug)]
pub struct LocalCamera {
    /// A key frame of every stream of the camera was written to its segment file since it
    /// started here.
    pub ready: bool,
    /// At least one of its streams is receiving frames now.
    pub online: bool,
}

/// What the binary gives the agent: the node's recording, started and stopped per camera.
pub trait Recorder: Send + Sync + 'static {
    /// Cameras recorded here now.
    fn recording(&self) -> BTreeMap<String, LocalCamera>;
    /// Starts recording a camera (all its streams). Idempotent.
    fn start(&self, camera: &str);
    /// Stops recording a camera: ends its sessions and closes its segments. Idempotent.
    fn stop(&self, camera: &str);
    /// This node's status to publish; `with_coverage`: also compute the coverage (costlier,
    /// asked at heartbeat only; otherwise the last one is reused).
    fn status(&self, with_coverage: bool) -> NodeStatus;
    /// Legal holds placed on this node (active and released).
    fn local_holds(&self) -> Vec<HoldRecord>;
    /// Notified when a hold is placed or released on this node: the agent publishes it at
    /// once instead of at its next tick.
    fn holds_changed(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }
    /// This node's access-journal head (last sequence number and hash), anchored in etcd
    /// ([`ANCHOR_MAX_INTERVAL`]); `None`: nothing to anchor.
    fn journal_head(&self) -> Option<(u64, String)> {
        None
    }
    /// Called once per process with the anchor etcd holds for this node, before the first
    /// anchor of this process replaces it: the journal must still hold that entry (a journal
    /// cut or replaced while the node was stopped does not).
    fn check_journal_anchor(&self, _anchor: &JournalAnchor) {}
}

/// The journal head is anchored when it changed, at most this often...
pub const ANCHOR_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// ... and at least this often (the anchor's time is refreshed even when nothing was
/// journaled).
pub const ANCHOR_MAX_INTERVAL: Duration = Duration::from_secs(60);

/// Everything the agent needs from the configuration.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub cluster: ClusterConfig,
    pub cameras: Vec<CameraInfo>,
    pub cameras_hash: String,
    /// Where the last assignment seen is kept across restarts.
    pub state_file: PathBuf,
}

/// The handle the binary keeps.
#[derive(Clone)]
pub struct AgentHandle {
    pub shared: Arc<Shared>,
    draining: Arc<AtomicBool>,
    recorder: Arc<dyn Recorder>,
}

impl AgentHandle {
    /// Drains this node (SIGTERM): publishes the drain, waits until every camera has moved
    /// (make-before-break) or `timeout`. Returns the cameras still recorded here.
    pub async fn drain(&self, timeout: Duration) -> Vec<String> {
        self.draining.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        loop {
            let left: Vec<String> = self.recorder.recording().into_keys().collect();
            if left.is_empty() || Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

struct Session {
    lease: i64,
    registered: bool,
    /// The keep-alive task (its own loop, so that slow etcd calls of a tick never delay a
    /// renewal) and its verdict: set once etcd answers that the lease is gone.
    keepalive: Option<(tokio::task::JoinHandle<()>, Arc<AtomicBool>)>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some((task, _)) = &self.keepalive {
            task.abort();
        }
    }
}

/// etcd's answer to a request under a lease that expired (`ErrLeaseNotFound`, gRPC NotFound).
fn is_lease_gone(e: &ClusterError) -> bool {
    e.to_string().contains("requested lease not found")
}

/// Renews `lease` every TTL/3 until etcd says it is gone (sets `lost`) or the task is aborted.
/// Errors (etcd unreachable) are retried at the next period on a new stream.
async fn keepalive_loop(client: Client, lease: i64, ttl_s: i64, lost: Arc<AtomicBool>) {
    let every = Duration::from_millis(ttl_s.max(1) as u64 * 1000 / 3);
    let mut keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if keeper.is_none() {
            let mut c = client.clone();
            match bounded(c.lease_keep_alive(lease)).await {
                Ok(k) => keeper = Some(k),
                Err(e) => {
                    tracing::debug!(error = %e, "lease keep-alive: no stream");
                    continue;
                }
            }
        }
        let Some((k, stream)) = keeper.as_mut() else {
            continue;
        };
        let answer = async {
            bounded(k.keep_alive()).await?;
            bounded(stream.message()).await
        }
        .await;
        match answer {
            Ok(Some(r)) if r.ttl() > 0 => {}
            Ok(Some(_)) => {
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) if is_lease_gone(&e) => {
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Ok(None) | Err(_) => keeper = None,
        }
    }
}

/// A snapshot of `c/`.
#[derive(Default)]
struct Control {
    members: BTreeMap<String, NodeRecord>,
    controller: Option<String>,
    assignment: Option<AssignmentRecord>,
    ready: BTreeMap<String, String>,
    drains: BTreeSet<String>,
}

pub struct Agent {
    cfg: AgentConfig,
    keys: Keys,
    me: String,
    client: Option<Client>,
    session: Option<Session>,
    shared: Arc<Shared>,
    recorder: Arc<dyn Recorder>,
    draining: Arc<AtomicBool>,
    assignment: Assignment,
    /// Cameras recorded here that are assigned elsewhere: since when.
    leaving: BTreeMap<String, Instant>,
    /// Cameras started here and not ready yet: since when, and why (`failover`, ...).
    starting: BTreeMap<String, (Instant, &'static str)>,
    last_status: Option<(crate::model::ChangeKey, Instant)>,
    published_holds: BTreeMap<u64, HoldRecord>,
    /// The coverage last written to `v/<me>`.
    published_coverage: Option<BTreeMap<String, crate::model::CoverageRecord>>,
    /// When every node's status and coverage were last read.
    state_read_at: Option<Instant>,
    /// The journal head last anchored in etcd, and when.
    last_anchor: Option<((u64, String), Instant)>,
    error_logged: Option<Instant>,
    first_registration: bool,
    tick: Duration,
    /// See [`catch_up`].
    catch_up: Duration,
    /// When this process last resumed from a pause (a tick much later than due) or lost its
    /// lease: stops of handed-over cameras wait [`catch_up`] after it.
    resumed_at: Option<Instant>,
}

impl Agent {
    /// Connects (lazily) and checks this node may join: its camera list matches the live
    /// nodes' and its name is not held by another live process (a previous instance of this
    /// node killed less than a lease TTL ago is waited for). etcd unreachable: not an error
    /// (the node starts from its persisted assignment and joins when etcd answers).
    pub async fn new(
        cfg: AgentConfig,
        recorder: Arc<dyn Recorder>,
    ) -> Result<(Agent, AgentHandle), ClusterError> {
        let me = cfg.cluster.node.clone();
        let keys = Keys::new(&cfg.cluster.prefix);
        let shared = Arc::new(Shared::new(&me));
        let draining = Arc::new(AtomicBool::new(false));
        let assignment = load_state(&cfg.state_file);
        let ttl = Duration::from_secs(u64::from(cfg.cluster.lease_ttl_s));
        let tick = (ttl / 6).clamp(Duration::from_millis(200), Duration::from_millis(500));
        let client = crate::etcd::connect(&cfg.cluster).await.ok();
        let agent = Agent {
            keys,
            me,
            client,
            session: None,
            shared: shared.clone(),
            recorder: recorder.clone(),
            draining: draining.clone(),
            assignment,
            leaving: BTreeMap::new(),
            starting: BTreeMap::new(),
            last_status: None,
            published_holds: BTreeMap::new(),
            published_coverage: None,
            state_read_at: None,
            last_anchor: None,
            error_logged: None,
            first_registration: true,
            tick,
            catch_up: catch_up(ttl),
            resumed_at: None,
            cfg,
        };
        if let Some(client) = agent.client.clone() {
            let deadline = Instant::now() + ttl + Duration::from_secs(2);
            loop {
                match agent.check_join(&client).await {
                    Ok(true) => break,
                    Ok(false) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(250)).await
                    }
                    Ok(false) => return Err(ClusterError::NameTaken(agent.me.clone())),
                    Err(e @ ClusterError::CamerasDiffer { .. }) => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "etcd unreachable at start: recording the last assignment known here, joining when etcd answers");
                        break;
                    }
                }
            }
        }
        let handle = AgentHandle {
            shared,
            draining,
            recorder,
        };
        Ok((agent, handle))
    }

    /// Ok(false): a live process holds this node's name.
    async fn check_join(&self, client: &Client) -> Result<bool, ClusterError> {
        for (key, v) in get_prefix(client, &self.keys.nodes()).await? {
            let Some(n) = parse::<NodeRecord>(&key, &v) else {
                continue;
            };
            if n.cameras_hash != self.cfg.cameras_hash {
                return Err(ClusterError::CamerasDiffer {
                    mine: self.cfg.cameras_hash.clone(),
                    other: n.name,
                    theirs: n.cameras_hash,
                });
            }
            if n.name == self.me {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Records the persisted assignment's cameras of this node at once (before etcd answers).
    pub fn start_from_persisted(&mut self) {
        let mine: Vec<String> = self
            .assignment
            .iter()
            .filter(|(_, n)| **n == self.me)
            .map(|(c, _)| c.clone())
            .collect();
        if !mine.is_empty() {
            tracing::info!(
                cameras = mine.len(),
                "recording the cameras of the last assignment known here"
            );
        }
        for c in mine {
            self.recorder.start(&c);
            self.starting.insert(c, (Instant::now(), "initial"));
        }
        let assignment = self.assignment.clone();
        self.shared.update(|v| v.assignment = assignment);
    }

    /// Runs until `shutdown`; then revokes the lease (the node's keys vanish at once rather
    /// than after the TTL).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(self.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_tick = Instant::now();
        let holds_changed = self.recorder.holds_changed();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => {}
                // A hold placed here: publish it now (the tick publishes and reads holds).
                _ = async {
                    match &holds_changed {
                        Some(n) => n.notified().await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            // The monotonic clock runs on while the process is stopped: a tick far later than
            // due means this process was paused (SIGSTOP, suspend) or starved.
            let gap = last_tick.elapsed();
            last_tick = Instant::now();
            if gap > self.tick + Duration::from_secs(1) {
                tracing::warn!(
                    paused_ms = gap.as_millis() as u64,
                    "this process did not run for a while (paused or starved)"
                );
                self.resumed_at = Some(Instant::now());
            }
            if let Err(e) = self.tick().await {
                if is_lease_gone(&e) && self.session.is_some() {
                    // A write under our lease was refused: the lease expired (pause,
                    // partition). Register again at the next tick.
                    tracing::warn!(
                        "this node's lease is gone (etcd refused a write under it): registering again"
                    );
                    self.shared.count_lease_loss();
                    self.resumed_at = Some(Instant::now());
                    self.session = None;
                    continue;
                }
                self.shared.count_etcd_error();
                self.shared.update(|v| v.etcd_ok = false);
                let now = Instant::now();
                if self
                    .error_logged
                    .is_none_or(|t| now.duration_since(t) > Duration::from_secs(10))
                {
                    tracing::warn!(error = %e, "etcd unreachable: recording continues with the cameras held here");
                    self.error_logged = Some(now);
                }
            }
        }
        if let (Some(client), Some(s)) = (self.client.as_ref(), self.session.as_ref()) {
            let mut c = client.clone();
            match bounded(c.lease_revoke(s.lease)).await {
                Ok(_) => tracing::info!("left the cluster (lease revoked)"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not revoke the lease; it expires by itself")
                }
            }
        }
    }

    async fn tick(&mut self) -> Result<(), ClusterError> {
        let client = match &self.client {
            Some(c) => c.clone(),
            None => {
                let c = crate::etcd::connect(&self.cfg.cluster).await?;
                self.client = Some(c.clone());
                c
            }
        };
        self.keep_session(&client).await?;
        let control = self.read_control(&client).await?;
        if self.error_logged.take().is_some() {
            tracing::info!("etcd reachable again");
        }
        let control = self.control(&client, control).await?;
        self.apply(&client, &control).await?;
        self.publish_status(&client, &control).await?;
        self.sync_holds(&client).await?;
        self.read_cluster_state(&client).await?;
        self.anchor_journal(&client).await?;
        Ok(())
    }

    /// Lease, keep-alive and registration.
    async fn keep_session(&mut self, client: &Client) -> Result<(), ClusterError> {
        let ttl = i64::from(self.cfg.cluster.lease_ttl_s);
        if self
            .session
            .as_ref()
            .and_then(|s| s.keepalive.as_ref())
            .is_some_and(|(_, lost)| lost.load(Ordering::SeqCst))
        {
            tracing::warn!(
                "this node's lease expired (etcd outage, partition or pause longer than {ttl} s): registering again"
            );
            self.shared.count_lease_loss();
            self.resumed_at = Some(Instant::now());
            self.session = None;
        }
        if self.session.is_none() {
            let mut c = client.clone();
            let lease = bounded(c.lease_grant(ttl, None)).await?.id();
            self.session = Some(Session {
                lease,
                registered: false,
                keepalive: None,
            });
        }
        let Some(s) = self.session.as_mut() else {
            return Ok(());
        };
        if !s.registered {
            let lease = s.lease;
            if self.first_registration {
                // A restart clears this node's drain (a drained node comes back by restarting).
                let mut c = client.clone();
                bounded(c.delete(self.keys.drain(&self.me), None)).await?;
            }
            let rec = NodeRecord {
                name: self.me.clone(),
                site: self.cfg.cluster.site.clone(),
                capacity_streams: self.cfg.cluster.capacity_streams,
                advertise_url: self.cfg.cluster.advertise_url.clone(),
                cameras_hash: self.cfg.cameras_hash.clone(),
                registered_at_s: now_s(),
                version: env!("CARGO_PKG_VERSION").into(),
            };
            let value = serde_json::to_vec(&rec).map_err(|e| ClusterError::Other(e.to_string()))?;
            let mut c = client.clone();
            bounded(c.put(
                self.keys.node(&self.me),
                value,
                Some(PutOptions::new().with_lease(lease)),
            ))
            .await?;
            if let Some(s) = self.session.as_mut() {
                s.registered = true;
                let lost = Arc::new(AtomicBool::new(false));
                let task = tokio::spawn(keepalive_loop(client.clone(), lease, ttl, lost.clone()));
                s.keepalive = Some((task, lost));
            }
            self.first_registration = false;
            self.last_status = None;
            self.published_holds.clear();
            tracing::info!(node = %self.me, lease, "registered in the cluster");
        }
        Ok(())
    }

    async fn read_control(&self, client: &Client) -> Result<Control, ClusterError> {
        let mut out = Control::default();
        for (key, v) in get_prefix(client, &self.keys.control()).await? {
            if let Some(name) = key.strip_prefix(&self.keys.nodes()) {
                if let Some(n) = parse::<NodeRecord>(&key, &v) {
                    out.members.insert(name.to_owned(), n);
                }
            } else if key == self.keys.controller() {
                out.controller = Some(String::from_utf8_lossy(&v).into_owned());
            } else if key == self.keys.assignment() {
                out.assignment = parse(&key, &v);
            } else if let Some(cam) = key.strip_prefix(&self.keys.ready_prefix()) {
                out.ready
                    .insert(cam.to_owned(), String::from_utf8_lossy(&v).into_owned());
            } else if let Some(node) = key.strip_prefix(&self.keys.drain_prefix()) {
                out.drains.insert(node.to_owned());
            }
        }
        Ok(out)
    }

    /// Election and, when this node is the controller, the assignment write.
    async fn control(
        &mut self,
        client: &Client,
        mut control: Control,
    ) -> Result<Control, ClusterError> {
        let Some(lease) = self.session.as_ref().map(|s| s.lease) else {
            return Ok(control);
        };
        if control.controller.is_none() {
            let key = self.keys.controller();
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key,
                    self.me.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            let mut c = client.clone();
            if bounded(c.txn(txn)).await?.succeeded() {
                tracing::info!("elected controller");
                control.controller = Some(self.me.clone());
            }
        }
        if control.controller.as_deref() != Some(self.me.as_str()) {
            return Ok(control);
        }
        let nodes: Vec<NodeInfo> = control
            .members
            .values()
            .map(|n| NodeInfo {
                name: n.name.clone(),
                site: n.site.clone(),
                capacity_streams: n.capacity_streams,
                draining: control.drains.contains(&n.name),
            })
            .collect();
        let previous = control.assignment.clone().unwrap_or_default();
        let next = assign::assign(&nodes, &self.cfg.cameras, &previous.cameras);
        if control.assignment.is_none() || next != previous.cameras {
            let moved = assign::moved(&previous.cameras, &next);
            let rec = AssignmentRecord {
                generation: previous.generation + 1,
                controller: self.me.clone(),
                cameras: next,
            };
            let value = serde_json::to_vec(&rec).map_err(|e| ClusterError::Other(e.to_string()))?;
            // Written only while this node still holds the controller key.
            let txn = Txn::new()
                .when([Compare::value(
                    self.keys.controller(),
                    CompareOp::Equal,
                    self.me.clone(),
                )])
                .and_then([TxnOp::put(self.keys.assignment(), value, None)]);
            let mut c = client.clone();
            if bounded(c.txn(txn)).await?.succeeded() {
                tracing::info!(
                    generation = rec.generation,
                    moved = moved.len(),
                    nodes = nodes.len(),
                    "assignment written"
                );
                control.assignment = Some(rec);
            }
        }
        Ok(control)
    }

    /// Starts and stops cameras to follow the assignment (make-before-break).
    async fn apply(&mut self, client: &Client, control: &Control) -> Result<(), ClusterError> {
        let previous = self.assignment.clone();
        if let Some(a) = &control.assignment
            && a.cameras != self.assignment
        {
            self.shared.count_assignment_change();
            self.assignment = a.cameras.clone();
            save_state(&self.cfg.state_file, &self.assignment);
        }
        let draining = self.draining.load(Ordering::SeqCst) || control.drains.contains(&self.me);
        if self.draining.load(Ordering::SeqCst)
            && !control.drains.contains(&self.me)
            && self.session.is_some()
        {
            let rec = DrainRecord {
                by: "sigterm".into(),
                at_s: now_s(),
            };
            let v = serde_json::to_vec(&rec).map_err(|e| ClusterError::Other(e.to_string()))?;
            let mut c = client.clone();
            bounded(c.put(self.keys.drain(&self.me), v, None)).await?;
        }
        let recording = self.recorder.recording();
        let lease = self.session.as_ref().map(|s| s.lease);
        let now = Instant::now();
        // Start what is assigned here (not while draining: the controller moves it away).
        for (cam, owner) in &self.assignment {
            if *owner == self.me && !recording.contains_key(cam) && !draining {
                self.leaving.remove(cam);
                // From a live node: a handover; from a dead one: a failover.
                let kind = match previous.get(cam) {
                    None => "initial",
                    Some(o) if *o == self.me => "initial",
                    Some(o) if control.members.contains_key(o) => "handover",
                    Some(_) => "failover",
                };
                tracing::info!(camera = %cam, kind, "starting: assigned to this node");
                self.recorder.start(cam);
                self.shared.count_start();
                self.starting.insert(cam.clone(), (now, kind));
            }
        }
        // Stop what moved away once its new owner records it.
        for (cam, local) in &recording {
            let owner = self.assignment.get(cam);
            if owner == Some(&self.me) && !draining {
                self.leaving.remove(cam);
                continue;
            }
            let since = *self.leaving.entry(cam.clone()).or_insert(now);
            let stop = match owner {
                // Unassigned (no live node may take it): keep recording rather than stop.
                None => false,
                Some(o) if o == &self.me => false, // draining, nobody else may take it
                Some(o) => {
                    // A dead owner records nothing: keep recording until the controller
                    // gives the camera to a live node that is ready.
                    let owner_ready =
                        control.ready.get(cam) == Some(o) && control.members.contains_key(o);
                    // Just back from a pause: first record what waited in the sockets.
                    let caught_up = self
                        .resumed_at
                        .is_none_or(|t| now.duration_since(t) > self.catch_up);
                    (owner_ready && caught_up)
                        || (!local.online && now.duration_since(since) > OFFLINE_HANDOVER_GRACE)
                }
            };
            if stop {
                tracing::info!(camera = %cam, new_owner = ?owner, "stopping: the new owner records it");
                self.recorder.stop(cam);
                self.shared.count_stop();
                self.leaving.remove(cam);
                self.starting.remove(cam);
                if lease.is_some() {
                    // Our ready key, if any, goes (only if it is still ours).
                    let key = self.keys.ready(cam);
                    let txn = Txn::new()
                        .when([Compare::value(
                            key.clone(),
                            CompareOp::Equal,
                            self.me.clone(),
                        )])
                        .and_then([TxnOp::delete(key, None::<DeleteOptions>)]);
                    let mut c = client.clone();
                    bounded(c.txn(txn)).await?;
                }
            }
        }
        // Publish readiness of what this node owns and has written a key frame of.
        let recording = self.recorder.recording();
        for (cam, local) in &recording {
            if !local.ready {
                continue;
            }
            if let Some((t, kind)) = self.starting.remove(cam) {
                self.shared
                    .observe_takeover(kind, now.duration_since(t).as_secs_f64());
            }
            let mine = self.assignment.get(cam) == Some(&self.me);
            if mine
                && control.ready.get(cam) != Some(&self.me)
                && let Some(lease) = lease
            {
                let mut c = client.clone();
                bounded(c.put(
                    self.keys.ready(cam),
                    self.me.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                ))
                .await?;
            }
        }
        let rec: Vec<String> = recording.into_keys().collect();
        let members = control.members.clone();
        let controller = control.controller.clone();
        let assignment = self.assignment.clone();
        self.shared.update(|v| {
            v.etcd_ok = true;
            v.members = members;
            v.controller = controller;
            v.assignment = assignment;
            v.draining = draining;
            v.recording = rec;
        });
        Ok(())
    }

    async fn publish_status(
        &mut self,
        client: &Client,
        control: &Control,
    ) -> Result<(), ClusterError> {
        let Some(lease) = self.session.as_ref().map(|s| s.lease) else {
            return Ok(());
        };
        let heartbeat_due = self
            .last_status
            .as_ref()
            .is_none_or(|(_, t)| t.elapsed() >= Duration::from_secs(crate::STATUS_HEARTBEAT_S));
        let mut status = self.recorder.status(heartbeat_due);
        // A camera this node records, with frames, that its published coverage does not show
        // as recorded here: publish the coverage now rather than at the next heartbeat. A node
        // that dies within a heartbeat of taking a camera must not leave the footage it wrote
        // unknown to the others (they would answer "nothing recorded" instead of naming it).
        let coverage_behind = !heartbeat_due
            && status.coverage_behind(self.published_coverage.as_ref().unwrap_or(&BTreeMap::new()));
        let recent = self
            .last_status
            .as_ref()
            .is_some_and(|(_, t)| t.elapsed() < STATUS_MIN_INTERVAL);
        if coverage_behind && !recent {
            status = self.recorder.status(true);
        }
        status.node = self.me.clone();
        status.draining = self.draining.load(Ordering::SeqCst) || control.drains.contains(&self.me);
        status.heartbeat_s = now_s();
        let key = status.change_key();
        let changed = self.last_status.as_ref().is_none_or(|(k, _)| *k != key);
        // Changes are coalesced: at most one write per STATUS_MIN_INTERVAL (cameras flapping
        // between connecting and backoff must not turn into a write stream).
        let coverage_now = heartbeat_due || (coverage_behind && !recent);
        let coverage_changed = coverage_now
            && self
                .published_coverage
                .as_ref()
                .is_none_or(|c| *c != status.coverage);
        if !((changed && !recent) || heartbeat_due || coverage_changed) {
            return Ok(());
        }
        let v = serde_json::to_vec(&status).map_err(|e| ClusterError::Other(e.to_string()))?;
        let mut ops = vec![TxnOp::put(
            self.keys.status(&self.me),
            v,
            Some(PutOptions::new().with_lease(lease)),
        )];
        // The coverage, without lease (it must outlive this node), in the same transaction:
        // one Raft proposal, and only when it changed (recomputed at heartbeats, and when a
        // camera recorded here is missing from it).
        if coverage_changed {
            let snap = crate::model::CoverageSnapshot {
                node: self.me.clone(),
                written_s: status.heartbeat_s,
                coverage: status.coverage.clone(),
            };
            let v = serde_json::to_vec(&snap).map_err(|e| ClusterError::Other(e.to_string()))?;
            ops.push(TxnOp::put(self.keys.coverage(&self.me), v, None));
        }
        let mut c = client.clone();
        bounded(c.txn(Txn::new().and_then(ops))).await?;
        if coverage_changed {
            self.published_coverage = Some(status.coverage.clone());
        }
        self.last_status = Some((key, Instant::now()));
        Ok(())
    }

    /// Reads every node's status and coverage (at most every [`STATUS_MIN_INTERVAL`]): what
    /// the API shows of cameras recorded elsewhere and which nodes hold footage.
    async fn read_cluster_state(&mut self, client: &Client) -> Result<(), ClusterError> {
        if self
            .state_read_at
            .is_some_and(|t| t.elapsed() < STATUS_MIN_INTERVAL)
        {
            return Ok(());
        }
        let mut state = crate::shared::ClusterState::default();
        for (k, v) in get_prefix(client, &self.keys.status_prefix()).await? {
            if let Some(s) = parse::<NodeStatus>(&k, &v) {
                state.statuses.insert(s.node.clone(), s);
            }
        }
        for (k, v) in get_prefix(client, &self.keys.coverage_prefix()).await? {
            if let Some(s) = parse::<crate::model::CoverageSnapshot>(&k, &v) {
                state.coverage.insert(s.node.clone(), s);
            }
        }
        for (k, v) in get_prefix(client, &self.keys.journal_prefix()).await? {
            if let Some(a) = parse::<JournalAnchor>(&k, &v) {
                state.anchors.insert(a.node.clone(), a);
            }
        }
        self.shared.set_state(state);
        self.state_read_at = Some(Instant::now());
        Ok(())
    }

    /// Anchors the access journal's head in etcd when it changed (at most every
    /// [`ANCHOR_MIN_INTERVAL`]) and at least every [`ANCHOR_MAX_INTERVAL`].
    async fn anchor_journal(&mut self, client: &Client) -> Result<(), ClusterError> {
        let Some(head) = self.recorder.journal_head() else {
            return Ok(());
        };
        let due = match &self.last_anchor {
            None => true,
            Some((h, t)) => {
                (*h != head && t.elapsed() >= ANCHOR_MIN_INTERVAL)
                    || t.elapsed() >= ANCHOR_MAX_INTERVAL
            }
        };
        if !due {
            return Ok(());
        }
        if self.last_anchor.is_none() {
            // First anchor of this process (possibly long after start, if etcd was down):
            // check the journal against the previous one before replacing it.
            if let Some(previous) = self.read_journal_anchor().await? {
                self.recorder.check_journal_anchor(&previous);
            }
        }
        let anchor = JournalAnchor {
            node: self.me.clone(),
            seq: head.0,
            hash: head.1.clone(),
            anchored_s: now_s(),
        };
        let v = serde_json::to_vec(&anchor).map_err(|e| ClusterError::Other(e.to_string()))?;
        let mut c = client.clone();
        bounded(c.put(self.keys.journal(&self.me), v, None)).await?;
        self.shared.count_anchor();
        self.last_anchor = Some((head, Instant::now()));
        Ok(())
    }

    /// This node's journal anchor as etcd holds it (`None`: never anchored).
    pub async fn read_journal_anchor(&self) -> Result<Option<JournalAnchor>, ClusterError> {
        let Some(client) = &self.client else {
            return Err(ClusterError::Other("etcd unreachable".into()));
        };
        let key = self.keys.journal(&self.me);
        Ok(get_prefix(client, &key)
            .await?
            .into_iter()
            .find(|(k, _)| *k == key)
            .and_then(|(k, v)| parse(&k, &v)))
    }

    /// Publishes this node's holds (each change) and reads every node's, at every tick: the
    /// holds are few, and retention here decides only on a read begun after it started
    /// deciding (`Store::set_external_holds_read_at`).
    async fn sync_holds(&mut self, client: &Client) -> Result<(), ClusterError> {
        for h in self.recorder.local_holds() {
            if self.published_holds.get(&h.id) == Some(&h) {
                continue;
            }
            let v = serde_json::to_vec(&h).map_err(|e| ClusterError::Other(e.to_string()))?;
            let mut c = client.clone();
            bounded(c.put(self.keys.hold(&self.me, h.id), v, None)).await?;
            self.published_holds.insert(h.id, h);
        }
        let read_started = Instant::now();
        let all: Vec<HoldRecord> = get_prefix(client, &self.keys.holds_prefix())
            .await?
            .into_iter()
            .filter_map(|(k, v)| parse(&k, &v))
            .collect();
        self.shared.set_holds(all, read_started);
        Ok(())
    }
}

fn load_state(path: &std::path::Path) -> Assignment {
    match std::fs::read(path) {
        Ok(b) => parse::<Assignment>(&path.display().to_string(), &b).unwrap_or_default(),
        Err(_) => Assignment::new(),
    }
}

/// Written atomically (temporary file + rename): a crash leaves the old or the new one.
fn save_state(path: &std::path::Path, a: &Assignment) {
    let tmp = path.with_extension("tmp");
    let res = serde_json::to_vec(a)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = res {
        tracing::warn!(path = %path.display(), error = %e, "cannot persist the assignment");
    }
}

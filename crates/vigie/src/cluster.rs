//! Cluster mode (feature `cluster`): `vigie cluster status|drain|undrain`, and for
//! `vigie run` with `[cluster]` the wiring of the `vigie-cluster` agent to this process's
//! recording (start/stop per camera), store (holds, coverage), API (recorder of each camera,
//! metrics) and signals (drain on SIGTERM). See docs/CLUSTER.md.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use tokio_util::sync::CancellationToken;
use vigie_cluster::agent::{Agent, AgentConfig, AgentHandle, LocalCamera, Recorder};
use vigie_cluster::assign::CameraInfo;
use vigie_cluster::model::{CoverageRecord, HoldRecord, NodeStatus, StreamStatusRecord};
use vigie_cluster::shared::Shared;
use vigie_core::config::{ClusterConfig, Config};
use vigie_core::{StreamKey, TIME_UNITS_PER_SEC, Time90k};

use crate::recording::Recording;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Nodes (alive, draining, cameras, heartbeat lag), the controller, the assignment and
    /// the cameras nobody records.
    Status {
        #[arg(long, short, env = "VIGIE_CONFIG")]
        config: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Move every camera off NODE (make-before-break) and wait until it records nothing.
    Drain {
        node: String,
        #[arg(long, short, env = "VIGIE_CONFIG")]
        config: PathBuf,
        /// Give up (exit status 1) after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
    },
    /// Let a drained NODE record again.
    Undrain {
        node: String,
        #[arg(long, short, env = "VIGIE_CONFIG")]
        config: PathBuf,
    },
}

fn cluster_of(config: &Config, path: &std::path::Path) -> anyhow::Result<ClusterConfig> {
    config
        .cluster
        .clone()
        .with_context(|| format!("{} has no [cluster] section", path.display()))
}

pub fn command(cmd: ClusterCommand) -> anyhow::Result<()> {
    crate::run::block_on(async move {
        match cmd {
            ClusterCommand::Status { config, json } => {
                let cfg = Config::load(&config)?;
                let c = cluster_of(&cfg, &config)?;
                let cams: Vec<String> = cfg.cameras.iter().map(|c| c.id.clone()).collect();
                let r = vigie_cluster::admin::status(&c, &cams)
                    .await
                    .context("reading the cluster's state from etcd")?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    print!("{}", vigie_cluster::admin::render(&r));
                }
                Ok(())
            }
            ClusterCommand::Drain {
                node,
                config,
                timeout_s,
            } => {
                let cfg = Config::load(&config)?;
                let c = cluster_of(&cfg, &config)?;
                vigie_core::config::validate_node_name(&node)
                    .map_err(|e| anyhow::anyhow!("node name: {e}"))?;
                vigie_cluster::admin::drain(&c, &node, Duration::from_secs(timeout_s), |m| {
                    println!("{m}")
                })
                .await?;
                Ok(())
            }
            ClusterCommand::Undrain { node, config } => {
                let cfg = Config::load(&config)?;
                let c = cluster_of(&cfg, &config)?;
                vigie_cluster::admin::undrain(&c, &node).await?;
                println!("{node} may record again");
                Ok(())
            }
        }
    })
}

/// The binary's side of the agent: this process's recording and store.
struct BinRecorder {
    node: String,
    recording: Arc<Recording>,
    store: vigie_store::Store,
    journal: vigie_audit::Journal,
    cameras: Vec<String>,
    coverage: Mutex<BTreeMap<String, CoverageRecord>>,
}

fn secs(t: Time90k) -> i64 {
    t.0.div_euclid(TIME_UNITS_PER_SEC)
}

impl Recorder for BinRecorder {
    fn recording(&self) -> BTreeMap<String, LocalCamera> {
        self.recording
            .states()
            .into_iter()
            .map(|(c, s)| {
                (
                    c,
                    LocalCamera {
                        ready: s.ready,
                        online: s.online,
                    },
                )
            })
            .collect()
    }

    fn start(&self, camera: &str) {
        self.recording.start(camera);
    }

    fn stop(&self, camera: &str) {
        self.recording.stop(camera);
    }

    fn status(&self, with_coverage: bool) -> NodeStatus {
        let recording = self
            .recording
            .states()
            .into_keys()
            .map(|cam| {
                let streams = self
                    .recording
                    .camera_streams(&cam)
                    .iter()
                    .map(|cell| {
                        let s = cell.snapshot();
                        StreamStatusRecord {
                            stream: s.stream.clone(),
                            state: serde_json::to_value(s.state)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_owned))
                                .unwrap_or_default(),
                            fps: (s.fps * 10.0).round() / 10.0,
                            width: s.width,
                            height: s.height,
                            last_frame_s: s.last_frame.map(secs),
                        }
                    })
                    .collect();
                (cam, streams)
            })
            .collect();
        let mut cov = self.coverage.lock().unwrap_or_else(|e| e.into_inner());
        if with_coverage {
            let recorded_now: std::collections::BTreeSet<String> =
                self.recording.states().into_keys().collect();
            cov.clear();
            for cam in &self.cameras {
                for cell in self.recording.camera_streams(cam) {
                    let key: &StreamKey = cell.key();
                    if let Ok(Some((first, last))) = self.store.coverage(key) {
                        let e = cov.entry(cam.clone()).or_insert(CoverageRecord {
                            first_s: secs(first),
                            last_s: secs(last),
                            recording: recorded_now.contains(cam),
                        });
                        e.first_s = e.first_s.min(secs(first));
                        e.last_s = e.last_s.max(secs(last));
                    }
                }
            }
        }
        NodeStatus {
            node: self.node.clone(),
            recording,
            coverage: cov.clone(),
            ..Default::default()
        }
    }

    fn holds_changed(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.store.holds_changed())
    }

    /// A journal cut or replaced while this node was stopped (its own chain may verify) does
    /// not hold the head anchored before: a tamper alarm, journaled and kept.
    fn check_journal_anchor(&self, anchor: &vigie_cluster::model::JournalAnchor) {
        match self.journal.check_anchor(anchor.seq, &anchor.hash) {
            Ok(check) if check.ok() => {
                tracing::info!(seq = anchor.seq, "the access journal holds its etcd anchor")
            }
            Ok(check) => {
                if let Err(e) = self
                    .journal
                    .raise_tamper_alarm(anchor_problem(anchor, &check))
                {
                    tracing::error!(error = %e, "cannot record the tamper alarm");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot check the journal against its anchor"),
        }
    }

    fn journal_head(&self) -> Option<(u64, String)> {
        match self.journal.head() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the access journal's head to anchor it");
                None
            }
        }
    }

    fn local_holds(&self) -> Vec<HoldRecord> {
        match self.store.holds() {
            Ok(h) => h
                .into_iter()
                .map(|h| HoldRecord {
                    node: self.node.clone(),
                    active: h.active(),
                    id: h.id,
                    camera: h.camera,
                    stream: h.stream,
                    start_90k: h.start.0,
                    end_90k: h.end.0,
                    procedure: h.procedure,
                    created_by: h.created_by,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the holds to publish them");
                Vec::new()
            }
        }
    }
}

/// The running cluster side of `vigie run`.
pub struct ClusterRuntime {
    handle: AgentHandle,
    agent: tokio::task::JoinHandle<()>,
}

/// What the API shows of the cluster, and its requests to the other nodes (signed with the
/// cluster key; none without one).
pub struct Info {
    shared: Arc<Shared>,
    lease_ttl_s: u32,
    key: Option<vigie_api::internal::ClusterKey>,
    http: reqwest::Client,
    /// What the live relays of this node's viewers share (crate::cluster_live).
    relay: Arc<crate::cluster_live::RelayContext>,
}

/// Bound on one internal request to another node (a node that does not answer in time is
/// reported unavailable rather than delaying the user's answer).
const INTERNAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a still asked of another node: the recorder may wait up to 5 s for the camera's
/// next key frame (a stream nobody watched keeps no GOP), then decode (two at once at most).
const STILL_TIMEOUT: Duration = Duration::from_secs(15);

impl Info {
    /// GET `path_and_query` at `url`, signed for `who`: the status and the body.
    async fn internal_get_bytes(
        &self,
        url: &str,
        path_and_query: &str,
        who: &vigie_api::internal::CarriedIdentity,
        timeout: Duration,
    ) -> Result<(reqwest::StatusCode, bytes::Bytes), String> {
        let key = self
            .key
            .as_ref()
            .ok_or("this node has no cluster secret ([cluster] secret_env or secret_file)")?;
        signed_get(&self.http, key, url, path_and_query, who, Some(timeout))
            .await
            .map_err(|e| e.without_url().to_string())
    }

    /// GET `path_and_query` on `node` (at `url`), signed for `who`; the JSON answer.
    async fn internal_get(
        &self,
        url: &str,
        path_and_query: &str,
        who: &vigie_api::internal::CarriedIdentity,
    ) -> Result<serde_json::Value, String> {
        let key = self
            .key
            .as_ref()
            .ok_or("this node has no cluster secret ([cluster] secret_env or secret_file)")?;
        let (status, body) = signed_get(&self.http, key, url, path_and_query, who, None)
            .await
            .map_err(|e| e.without_url().to_string())?;
        json_answer(status, &body)
    }
}

/// GET `path_and_query` at `url`, signed with `key` for `who` (bounded by `timeout` beyond the
/// client's own): the status and the body. Every internal read of a node, and of `vigie audit
/// verify`.
pub(crate) async fn signed_get(
    http: &reqwest::Client,
    key: &vigie_api::internal::ClusterKey,
    url: &str,
    path_and_query: &str,
    who: &vigie_api::internal::CarriedIdentity,
    timeout: Option<Duration>,
) -> Result<(reqwest::StatusCode, bytes::Bytes), reqwest::Error> {
    let mut req = http.get(format!("{}{path_and_query}", url.trim_end_matches('/')));
    if let Some(t) = timeout {
        req = req.timeout(t);
    }
    let now_s = jiff::Timestamp::now().as_second();
    for (k, v) in key.sign("GET", url, path_and_query, who, now_s) {
        req = req.header(k, v);
    }
    let resp = req.send().await?;
    let status = resp.status();
    Ok((status, resp.bytes().await?))
}

/// The JSON of an internal answer; unless it succeeded, an error naming the status and the
/// start of the body.
pub(crate) fn json_answer(
    status: reqwest::StatusCode,
    body: &[u8],
) -> Result<serde_json::Value, String> {
    if !status.is_success() {
        return Err(format!(
            "answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    serde_json::from_slice(body).map_err(|e| format!("answer is not JSON: {e}"))
}

impl Info {
    /// The live members' `advertise_url`s, by node (one MP4 across nodes,
    /// [`crate::cluster_footage`]).
    pub(crate) fn member_urls(&self) -> std::collections::HashMap<String, String> {
        self.shared
            .view()
            .members
            .iter()
            .map(|(n, m)| (n.clone(), m.advertise_url.clone()))
            .collect()
    }
}

fn t90k_of_s(s: i64) -> Time90k {
    Time90k(s.saturating_mul(TIME_UNITS_PER_SEC))
}

impl vigie_api::ClusterInfo for Info {
    fn node(&self) -> &str {
        self.shared.node()
    }
    fn recorder_of(&self, camera: &str) -> Option<String> {
        self.shared.recorder_of(camera)
    }
    fn records_here(&self, camera: &str) -> bool {
        self.shared.records_here(camera)
    }
    fn metrics_text(&self) -> String {
        self.shared.metrics_text()
    }
    fn recording_on(&self, camera: &str) -> Vec<String> {
        let members = self.shared.view().members;
        self.shared
            .state()
            .statuses
            .values()
            .filter(|s| members.contains_key(&s.node) && s.recording.contains_key(camera))
            .map(|s| s.node.clone())
            .collect()
    }
    fn published_status(
        &self,
        camera: &str,
    ) -> Option<(String, BTreeMap<String, serde_json::Value>)> {
        let view = self.shared.view();
        let state = self.shared.state();
        // The assigned recorder's status first; else any node recording it (a handover).
        let assigned = view.assignment.get(camera).cloned();
        let status = assigned
            .as_ref()
            .and_then(|n| state.statuses.get(n))
            .filter(|s| s.recording.contains_key(camera) && view.members.contains_key(&s.node))
            .or_else(|| {
                state.statuses.values().find(|s| {
                    s.recording.contains_key(camera) && view.members.contains_key(&s.node)
                })
            })?;
        let streams = status.recording.get(camera)?;
        Some((
            status.node.clone(),
            streams
                .iter()
                .map(|st| {
                    let last = st.last_frame_s.map(t90k_of_s);
                    (
                        st.stream.clone(),
                        serde_json::json!({
                            "state": st.state,
                            "online": st.state == "online",
                            "fps": st.fps,
                            "width": st.width,
                            "height": st.height,
                            "last_frame": last.map(|t| t.to_rfc3339()),
                            "last_frame_90k": last.map(|t| t.0),
                        }),
                    )
                })
                .collect(),
        ))
    }
    fn journal_nodes(&self) -> Vec<vigie_api::JournalNode> {
        let me = self.shared.node();
        let members = self.shared.view().members;
        let anchored = self.shared.state().anchors;
        let names: std::collections::BTreeSet<&String> =
            members.keys().chain(anchored.keys()).collect();
        names
            .into_iter()
            .filter(|n| n.as_str() != me)
            .map(|n| vigie_api::JournalNode {
                node: n.clone(),
                up: members.contains_key(n),
            })
            .collect()
    }
    fn internal_json(
        &self,
        node: &str,
        path_and_query: String,
        who: vigie_api::internal::CarriedIdentity,
    ) -> vigie_service::BoxFuture<'_, Result<serde_json::Value, String>> {
        let url = self
            .shared
            .view()
            .members
            .get(node)
            .map(|m| m.advertise_url.clone());
        Box::pin(async move {
            let url = url.ok_or("the node is down (no live registration)")?;
            match tokio::time::timeout(
                INTERNAL_TIMEOUT,
                self.internal_get(&url, &path_and_query, &who),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {} s", INTERNAL_TIMEOUT.as_secs())),
            }
        })
    }
    fn live_relay(
        &self,
        key: &StreamKey,
        who: vigie_api::internal::CarriedIdentity,
    ) -> Option<vigie_api::LiveRelay> {
        Some(crate::cluster_live::start(self.relay.clone(), key, who))
    }
    fn remote_still(
        &self,
        node: &str,
        key: &StreamKey,
        at: Option<Time90k>,
        who: vigie_api::internal::CarriedIdentity,
    ) -> vigie_service::BoxFuture<'_, Result<Vec<u8>, vigie_api::ApiError>> {
        let node = node.to_owned();
        let key = key.clone();
        Box::pin(async move {
            use vigie_api::ApiError;
            let url = self
                .shared
                .view()
                .members
                .get(&node)
                .map(|m| m.advertise_url.clone())
                .ok_or_else(|| {
                    ApiError::NodeUnavailable(format!(
                        "node {node}, which holds this picture of {}, is down",
                        key.camera
                    ))
                })?;
            let mut pq = format!(
                "/internal/v1/cameras/{}/streams/{}/still.jpg",
                key.camera, key.stream
            );
            if let Some(at) = at {
                pq.push_str(&format!("?at_90k={}", at.0));
            }
            let (status, body) = tokio::time::timeout(
                STILL_TIMEOUT,
                self.internal_get_bytes(&url, &pq, &who, STILL_TIMEOUT),
            )
            .await
            .map_err(|_| {
                ApiError::NodeUnavailable(format!(
                    "node {node} gave no still within {} s",
                    STILL_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| ApiError::NodeUnavailable(format!("node {node}: {e}")))?;
            if status.is_success() {
                return Ok(body.to_vec());
            }
            // The recorder's own refusal, as if this node had made it (404 nothing there, 501
            // not built with GStreamer…), its message kept.
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into());
            let message = format!("node {node}: {message}");
            Err(match status.as_u16() {
                404 => ApiError::NotFound(message),
                501 => ApiError::NotImplemented(message),
                409 => ApiError::Conflict {
                    message,
                    spans: Vec::new(),
                },
                _ => ApiError::NodeUnavailable(message),
            })
        })
    }
    fn remote_spans(
        &self,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
        who: vigie_api::internal::CarriedIdentity,
    ) -> vigie_service::BoxFuture<'_, Vec<vigie_api::NodeFootage>> {
        let key = key.clone();
        Box::pin(async move {
            use vigie_api::NodeFootage;
            let me = self.shared.node().to_owned();
            let view = self.shared.view();
            let state = self.shared.state();
            // Who may hold footage of the camera in the window: every node whose coverage
            // overlaps it (the coverage's last instant lags by up to a heartbeat), and every
            // live node recording the camera now.
            let slack_s = i64::try_from(vigie_cluster::STATUS_HEARTBEAT_S).unwrap_or(10) + 5;
            let open_s = slack_s + i64::from(self.lease_ttl_s) + 15;
            let mut holders: BTreeMap<String, Option<(Time90k, CoverageRecord)>> = BTreeMap::new();
            for (node, snap) in &state.coverage {
                if let Some(c) = snap.coverage.get(&key.camera)
                    && t90k_of_s(c.first_s) < end
                    && t90k_of_s(c.last_s + slack_s) > start
                {
                    holders.insert(node.clone(), Some((t90k_of_s(c.first_s), c.clone())));
                }
            }
            for s in state.statuses.values() {
                if s.recording.contains_key(&key.camera) && view.members.contains_key(&s.node) {
                    holders.entry(s.node.clone()).or_insert(None);
                }
            }
            holders.remove(&me);
            let asks = holders.into_iter().map(|(node, cov)| {
                let url = view.members.get(&node).map(|m| m.advertise_url.clone());
                let who = &who;
                let key = &key;
                async move {
                    let unavailable = |reason: String| {
                        cov.as_ref().map(|(first, c)| NodeFootage::Unavailable {
                            node: node.clone(),
                            start: *first,
                            end: t90k_of_s(c.last_s + 1),
                            // Recording at its last report: it recorded on after it, up to
                            // its end (≤ a heartbeat + the lease TTL + a takeover later).
                            open_until: c.recording.then(|| t90k_of_s(c.last_s + open_s)),
                            reason,
                        })
                    };
                    let Some(url) = url else {
                        return unavailable("the node is down (no live registration)".into());
                    };
                    let pq = format!(
                        "/internal/v1/cameras/{}/streams/{}/spans?start_90k={}&end_90k={}",
                        key.camera, key.stream, start.0, end.0
                    );
                    match tokio::time::timeout(
                        INTERNAL_TIMEOUT,
                        self.internal_get(&url, &pq, who),
                    )
                    .await
                    {
                        Ok(Ok(v)) => {
                            let spans = v["spans"]
                                .as_array()
                                .map(|a| {
                                    a.iter()
                                        .filter_map(|s| {
                                            Some(vigie_store::Span {
                                                start: Time90k(s["start_90k"].as_i64()?),
                                                end: Time90k(s["end_90k"].as_i64()?),
                                            })
                                        })
                                        .collect()
                                })
                                .unwrap_or_default();
                            Some(NodeFootage::Spans { node, spans })
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(node = %node, camera = %key.camera, stream = %key.stream, error = %e, "internal request failed");
                            unavailable(e)
                        }
                        Err(_) => {
                            tracing::warn!(node = %node, camera = %key.camera, stream = %key.stream, "internal request timed out");
                            unavailable(format!(
                                "no answer within {} s",
                                INTERNAL_TIMEOUT.as_secs()
                            ))
                        }
                    }
                }
            });
            futures::future::join_all(asks)
                .await
                .into_iter()
                .flatten()
                .collect()
        })
    }
}

impl ClusterRuntime {
    /// What the API reads of the cluster; `key` signs the requests to the other nodes; `live`
    /// is this node's own live hubs (a relay's source when the camera is recorded here).
    pub fn info(
        &self,
        config: &Config,
        key: Option<vigie_api::internal::ClusterKey>,
        live: Arc<dyn vigie_service::LiveSource>,
    ) -> anyhow::Result<Info> {
        let lease_ttl_s = config.cluster.as_ref().map_or(5, |c| c.lease_ttl_s);
        Ok(Info {
            relay: Arc::new(crate::cluster_live::RelayContext {
                shared: self.handle.shared.clone(),
                key: key.clone(),
                live,
                // A failover takes the lease TTL, a tick, the new recorder's RTSP connection
                // and its first key frame.
                follow_timeout: Duration::from_secs(2 * u64::from(lease_ttl_s) + 20),
                tls: match config.cluster.as_ref().and_then(|c| c.ca_file.as_ref()) {
                    Some(ca) => Some(
                        std::fs::read(ca)
                            .map_err(anyhow::Error::from)
                            .and_then(|pem| crate::cluster_live::relay_tls(&pem))
                            .with_context(|| format!("cluster.ca_file {}", ca.display()))?,
                    ),
                    None => None,
                },
            }),
            shared: self.handle.shared.clone(),
            lease_ttl_s: config.cluster.as_ref().map_or(5, |c| c.lease_ttl_s),
            key,
            http: {
                let mut b = reqwest::Client::builder().timeout(INTERNAL_TIMEOUT);
                if let Some(ca) = config.cluster.as_ref().and_then(|c| c.ca_file.as_ref()) {
                    let pem = std::fs::read(ca)
                        .with_context(|| format!("cluster.ca_file {}", ca.display()))?;
                    b = b.add_root_certificate(
                        reqwest::Certificate::from_pem(&pem)
                            .with_context(|| format!("cluster.ca_file {}", ca.display()))?,
                    );
                }
                b.build()
                    .context("building the HTTP client of internal requests")?
            },
        })
    }

    /// The SIGTERM drain, bounded by `cluster.drain_timeout_s`.
    pub fn drainer(&self, config: &Config) -> crate::run::Drainer {
        let handle = self.handle.clone();
        let timeout = Duration::from_secs(
            config
                .cluster
                .as_ref()
                .map_or(60, |c| u64::from(c.drain_timeout_s)),
        );
        Box::new(move || {
            Box::pin(async move {
                if !handle.shared.view().etcd_ok {
                    tracing::warn!(
                        "etcd unreachable: stopping without a drain (the other nodes take the cameras over when this node's lease expires)"
                    );
                    return;
                }
                tracing::info!(
                    timeout_s = timeout.as_secs(),
                    "draining: handing the cameras over before stopping"
                );
                let left = handle.drain(timeout).await;
                if left.is_empty() {
                    tracing::info!("drained: every camera is recorded by another node");
                } else {
                    tracing::warn!(cameras = ?left, "drain timed out: stopping anyway (these cameras move when this node's lease is gone)");
                }
            })
        })
    }

    /// After shutdown: the agent revokes the lease (bounded).
    pub async fn stopped(self) {
        let _ = tokio::time::timeout(Duration::from_secs(3), self.agent).await;
    }
}

/// Joins the cluster and starts recording what it assigns here (or, with etcd unreachable,
/// the last assignment known here). Refuses (error) a camera list that differs from the live
/// nodes' or a node name another live process holds.
pub async fn start(
    config: &Config,
    recording: &Arc<Recording>,
    store: &vigie_store::Store,
    journal: &vigie_audit::Journal,
    shutdown: CancellationToken,
) -> anyhow::Result<ClusterRuntime> {
    let c = config.cluster.clone().context("no [cluster] section")?;
    recording.mark_all_stopped();
    let recorder = Arc::new(BinRecorder {
        node: c.node.clone(),
        recording: recording.clone(),
        store: store.clone(),
        journal: journal.clone(),
        cameras: config.cameras.iter().map(|c| c.id.clone()).collect(),
        coverage: Mutex::new(BTreeMap::new()),
    });
    let agent_cfg = AgentConfig {
        cameras: config
            .cameras
            .iter()
            .map(|cam| CameraInfo {
                id: cam.id.clone(),
                site: cam.site.clone(),
            })
            .collect(),
        cameras_hash: config.cameras_hash(),
        state_file: config.storage.data_dir.join("cluster-assignment.json"),
        cluster: c.clone(),
    };
    tracing::info!(node = %c.node, etcd = ?c.etcd, "joining the cluster");
    let (mut agent, handle) = Agent::new(agent_cfg, recorder)
        .await
        .context("joining the cluster")?;
    // Until the cluster's holds are read, retention deletes nothing (`Store::open_clustered`).
    tokio::spawn(holds_loop(
        handle.shared.clone(),
        store.clone(),
        c.node.clone(),
        Duration::from_secs(u64::from(c.holds_max_age_s)),
        shutdown.clone(),
    ));
    agent.start_from_persisted();
    let agent = tokio::spawn(agent.run(shutdown.child_token()));
    Ok(ClusterRuntime { handle, agent })
}

/// `vigie audit verify` on a cluster node: checks the local journal against the head this node
/// anchored in etcd. Returns the problems found (empty: it holds its anchor, or none yet).
pub fn verify_journal_anchor(
    config: &Config,
    journal: &vigie_audit::Journal,
) -> anyhow::Result<Vec<String>> {
    let Some(c) = config.cluster.clone() else {
        return Ok(Vec::new());
    };
    let mut anchors = Vec::new();
    crate::run::block_on(async {
        anchors = vigie_cluster::admin::journal_anchors(&c)
            .await
            .context("reading the journal anchors from etcd")?;
        Ok(())
    })?;
    let me = config
        .cluster
        .as_ref()
        .map(|c| c.node.clone())
        .unwrap_or_default();
    let mut problems = Vec::new();
    for a in anchors.iter().filter(|a| a.node == me) {
        let check = journal.check_anchor(a.seq, &a.hash)?;
        if check.ok() {
            println!(
                "etcd anchor of node {me}: entry {} ({}) is in the journal",
                a.seq, a.hash
            );
        } else {
            problems.push(anchor_problem(a, &check));
        }
    }
    if anchors.iter().all(|a| a.node != me) {
        println!("etcd holds no journal anchor of node {me} yet");
    }
    Ok(problems)
}

/// What an anchor the journal does not hold means, in words.
pub fn anchor_problem(
    anchor: &vigie_cluster::model::JournalAnchor,
    check: &vigie_audit::AnchorCheck,
) -> String {
    let when =
        vigie_core::Time90k(anchor.anchored_s.saturating_mul(TIME_UNITS_PER_SEC)).to_rfc3339();
    match check {
        vigie_audit::AnchorCheck::Missing { last_seq } => format!(
            "the access journal of node {} ends at entry {} but entry {} was anchored in etcd at {when}: entries were removed (journal truncated or replaced)",
            anchor.node,
            last_seq.map_or_else(|| "(none)".to_owned(), |s| s.to_string()),
            anchor.seq
        ),
        vigie_audit::AnchorCheck::Differs { found } => format!(
            "entry {} of node {}'s access journal has hash {found}, not the {} anchored in etcd at {when}: the journal was rewritten or replaced",
            anchor.seq, anchor.node, anchor.hash
        ),
        other => format!("{other:?}"),
    }
}

/// Keeps the store's view of the other nodes' holds current: known while read from etcd
/// within `max_age`, unknown (retention deletes nothing) otherwise.
async fn holds_loop(
    shared: Arc<Shared>,
    store: vigie_store::Store,
    me: String,
    max_age: Duration,
    shutdown: CancellationToken,
) {
    let mut was_known = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            // Often: retention waits for a read begun after it started deciding.
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let snap = shared.holds();
        let fresh = snap.as_ref().filter(|s| s.read_at.elapsed() <= max_age);
        match fresh {
            Some(s) => {
                let holds = s
                    .holds
                    .iter()
                    .filter(|h| h.node != me && h.active)
                    .map(|h| vigie_store::Hold {
                        id: h.id,
                        camera: h.camera.clone(),
                        stream: h.stream.clone(),
                        start: Time90k(h.start_90k),
                        end: Time90k(h.end_90k),
                        procedure: h.procedure.clone(),
                        reason: format!("hold {} placed on node {}", h.id, h.node),
                        created_by: h.created_by.clone(),
                        created_at: Time90k(0),
                        released: None,
                    })
                    .collect();
                store.set_external_holds_read_at(
                    vigie_store::ExternalHolds::Known(holds),
                    Some(s.read_at),
                );
                if !was_known {
                    tracing::info!(
                        "the cluster's legal holds are known: retention may delete again"
                    );
                }
                was_known = true;
            }
            None => {
                let why = match snap {
                    None => "never read from etcd since start".to_owned(),
                    Some(s) => format!(
                        "last read from etcd {} s ago (limit cluster.holds_max_age_s = {} s)",
                        s.read_at.elapsed().as_secs(),
                        max_age.as_secs()
                    ),
                };
                if was_known {
                    tracing::warn!(reason = %why, "the cluster's legal holds are not known: retention deletes nothing until etcd answers");
                }
                store.set_external_holds(vigie_store::ExternalHolds::Unknown(why));
                was_known = false;
            }
        }
    }
}

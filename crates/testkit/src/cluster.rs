//! Several real `vigie` nodes forming one cluster over an [`EtcdCluster`](crate::etcd::EtcdCluster):
//! one generated `[cluster]` section per node (name, advertise URL, site, capacity, a short lease
//! TTL), one camera list shared by all nodes (the same TOML, pointed at camsim), and the views the
//! cluster tests check: `vigie cluster status --json`, `vigie cluster drain`, and what each node
//! actually recorded (its own index, through its API).
//!
//! Owns: the node processes (through [`Vigie`]) and their configs. Does not: start etcd or
//! camsim (the test does, so it controls their faults), decide anything about assignment.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jiff::Timestamp;
use serde::Deserialize;

use crate::process::{Vigie, VigieBuilder, free_port};

/// The commune every generated camera belongs to.
pub const COMMUNE_TOML: &str = "[[communes]]\nid = \"test\"\nname = \"Test\"\nretention_days = 7\n";

/// One camera of the shared list.
#[derive(Clone, Debug)]
pub struct CameraDef {
    pub id: String,
    pub url: String,
    /// `site = "…"`: recorded only by nodes of that site.
    pub site: Option<String>,
}

impl CameraDef {
    pub fn new(id: impl Into<String>, url: impl Into<String>) -> Self {
        CameraDef {
            id: id.into(),
            url: url.into(),
            site: None,
        }
    }
    pub fn site(mut self, site: &str) -> Self {
        self.site = Some(site.to_owned());
        self
    }
}

/// The `[[communes]]` + `[[cameras]]` TOML every node reads (one `main` stream per camera, short
/// connect and stall timeouts so a moved camera reconnects quickly).
pub fn cameras_toml(cameras: &[CameraDef]) -> String {
    let mut s = COMMUNE_TOML.to_owned();
    for c in cameras {
        s.push_str(&format!(
            "[[cameras]]\nid = \"{}\"\nname = \"Camera {}\"\ncommune = \"test\"\n",
            c.id, c.id
        ));
        if let Some(site) = &c.site {
            s.push_str(&format!("site = \"{site}\"\n"));
        }
        s.push_str(&format!(
            "  [[cameras.streams]]\n  name = \"main\"\n  url = \"{}\"\n  connect_timeout_s = 3\n  stall_timeout_s = 3\n",
            c.url
        ));
    }
    s
}

/// One node of the cluster to start.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub site: Option<String>,
    pub capacity_streams: u32,
}

impl NodeSpec {
    pub fn new(name: impl Into<String>) -> Self {
        NodeSpec {
            name: name.into(),
            site: None,
            capacity_streams: 400,
        }
    }
    pub fn site(mut self, site: &str) -> Self {
        self.site = Some(site.to_owned());
        self
    }
    pub fn capacity(mut self, streams: u32) -> Self {
        self.capacity_streams = streams;
        self
    }
}

/// What every node of a test cluster shares.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The `vigie` binary.
    pub bin: PathBuf,
    /// etcd client URLs.
    pub endpoints: Vec<String>,
    pub lease_ttl_s: u32,
    pub prefix: String,
    pub cameras: Vec<CameraDef>,
    /// Lines of the `[recording]` table. Default: 10 s segments are set by the builder; the
    /// index of the segment being written is refreshed every second so listings lag live by
    /// ~2 s instead of ~13 s (tests wait less; durability is unchanged).
    pub recording_toml: String,
    /// Any other TOML added to every node's config (e.g. `[retention]`).
    pub extra_toml: String,
    /// `storage.min_free_bytes` of every node.
    pub min_free_bytes: String,
    /// The cluster secret every node signs its internal requests with (`[cluster]
    /// secret_file`, written to a temporary file); `None`: no secret (internal routes closed).
    /// Default: 64 random hex digits.
    pub secret: Option<String>,
    /// HTTPS on every node with this certificate and key (PEM): advertise URLs are
    /// `https://`, and the certificate is also every node's `cluster.ca_file` (a self-signed
    /// certificate for 127.0.0.1). `None`: plain HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// 64 hex digits from the process's random hasher keys (a test secret, not a production one).
pub fn random_secret() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut s = String::new();
    for i in 0..4u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        s.push_str(&format!("{:016x}", h.finish()));
    }
    s
}

impl ClusterConfig {
    pub fn new(bin: impl Into<PathBuf>, endpoints: Vec<String>, cameras: Vec<CameraDef>) -> Self {
        ClusterConfig {
            bin: bin.into(),
            endpoints,
            lease_ttl_s: 2,
            prefix: "/vigie".to_owned(),
            cameras,
            recording_toml: "flush_interval_ms = 500\nindex_interval_ms = 1000".to_owned(),
            extra_toml: String::new(),
            min_free_bytes: "1MiB".to_owned(),
            secret: Some(random_secret()),
            tls: None,
        }
    }
}

/// One running (or stopped, or killed) node.
pub struct ClusterNode {
    pub spec: NodeSpec,
    pub vigie: Vigie,
}

impl ClusterNode {
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

/// `vigie cluster status --json`.
#[derive(Clone, Debug, Deserialize)]
pub struct ClusterStatus {
    #[serde(default)]
    pub controller: Option<String>,
    #[serde(default)]
    pub nodes: Vec<NodeStatus>,
    /// camera id → node name.
    #[serde(default)]
    pub assignments: BTreeMap<String, String>,
    #[serde(default)]
    pub unassigned: Vec<String>,
    /// Cameras recorded by more than one node now (a handover, or a partition).
    #[serde(default)]
    pub duplicates: BTreeMap<String, Vec<String>>,
}

/// One node in [`ClusterStatus`].
#[derive(Clone, Debug, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub capacity_streams: Option<u64>,
    #[serde(default)]
    pub advertise_url: Option<String>,
    #[serde(default)]
    pub alive: bool,
    #[serde(default)]
    pub draining: bool,
    /// The cameras the node says it records.
    #[serde(default)]
    pub cameras: Vec<String>,
    #[serde(default)]
    pub heartbeat_age_s: Option<f64>,
}

impl ClusterStatus {
    /// The cameras assigned to `node`.
    pub fn cameras_of(&self, node: &str) -> Vec<String> {
        self.assignments
            .iter()
            .filter(|(_, n)| n.as_str() == node)
            .map(|(c, _)| c.clone())
            .collect()
    }

    pub fn node(&self, name: &str) -> Option<&NodeStatus> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Settled on `cams`: a controller, nothing unassigned, every camera assigned to an alive
    /// node that is not draining and reports recording it, and no alive node reporting a camera
    /// that is not its own.
    pub fn settled(&self, cams: &[String]) -> bool {
        if self.controller.is_none() || !self.unassigned.is_empty() {
            return false;
        }
        let placed = cams.iter().all(|c| {
            self.assignments.get(c).is_some_and(|n| {
                self.node(n)
                    .is_some_and(|s| s.alive && !s.draining && s.cameras.contains(c))
            })
        });
        let no_stray = self.nodes.iter().filter(|n| n.alive).all(|n| {
            n.cameras
                .iter()
                .all(|c| self.assignments.get(c) == Some(&n.name))
        });
        placed && no_stray
    }
}

/// One segment as a node's index lists it (`recordings?segments=1`).
#[derive(Clone, Debug)]
pub struct Seg {
    pub id: u64,
    pub start: Timestamp,
    pub end: Timestamp,
    pub frames: u64,
    /// Still being written.
    pub open: bool,
}

/// N `vigie run` processes sharing one etcd cluster and one camera list.
pub struct VigieCluster {
    pub cfg: ClusterConfig,
    pub nodes: Vec<ClusterNode>,
    /// Holds the secret file of [`ClusterConfig::secret`].
    secret_dir: tempfile::TempDir,
}

impl VigieCluster {
    /// Starts one node per spec, all at once (so that they register together rather than the
    /// first one taking every camera); returns when every API listens.
    pub fn start(cfg: ClusterConfig, specs: Vec<NodeSpec>) -> anyhow::Result<VigieCluster> {
        let mut c = VigieCluster::new(cfg)?;
        let prepared: Vec<(NodeSpec, VigieBuilder)> = specs
            .into_iter()
            .map(|s| c.builder(&s).map(|b| (s, b)))
            .collect::<anyhow::Result<_>>()?;
        let started: Vec<anyhow::Result<ClusterNode>> = std::thread::scope(|scope| {
            let handles: Vec<_> = prepared
                .into_iter()
                .map(|(spec, b)| {
                    scope.spawn(move || {
                        let name = spec.name.clone();
                        b.start()
                            .with_context(|| format!("starting node {name}"))
                            .map(|vigie| ClusterNode { spec, vigie })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("node start panicked")))
                })
                .collect()
        });
        for n in started {
            c.nodes.push(n?);
        }
        Ok(c)
    }

    /// A cluster with no node yet (its secret file written).
    pub fn new(cfg: ClusterConfig) -> anyhow::Result<VigieCluster> {
        let secret_dir = tempfile::tempdir()?;
        if let Some(secret) = &cfg.secret {
            std::fs::write(secret_dir.path().join("cluster-secret"), secret)?;
        }
        Ok(VigieCluster {
            cfg,
            nodes: Vec::new(),
            secret_dir,
        })
    }

    fn builder(&self, spec: &NodeSpec) -> anyhow::Result<VigieBuilder> {
        if self.nodes.iter().any(|n| n.spec.name == spec.name) {
            bail!("node {} already exists", spec.name);
        }
        let port = free_port()?;
        let b = VigieBuilder::new(&self.cfg.bin)
            .port(port)
            .min_free_bytes(&self.cfg.min_free_bytes)
            .recording_toml(&self.cfg.recording_toml)
            .toml(&cameras_toml(&self.cfg.cameras))
            .toml(&self.cluster_toml(spec, port))
            .toml(&self.cfg.extra_toml);
        match &self.cfg.tls {
            Some((cert, key)) => b.tls(cert, key),
            None => Ok(b),
        }
    }

    /// The `[cluster]` section of a node.
    pub fn cluster_toml(&self, spec: &NodeSpec, port: u16) -> String {
        let endpoints: Vec<String> = self
            .cfg
            .endpoints
            .iter()
            .map(|e| format!("{e:?}"))
            .collect();
        let mut s = format!(
            "[cluster]\netcd = [{}]\nnode = \"{}\"\nadvertise_url = \"{}://127.0.0.1:{port}\"\ncapacity_streams = {}\nlease_ttl_s = {}\nprefix = \"{}\"\n",
            endpoints.join(", "),
            spec.name,
            if self.cfg.tls.is_some() {
                "https"
            } else {
                "http"
            },
            spec.capacity_streams,
            self.cfg.lease_ttl_s,
            self.cfg.prefix
        );
        if let Some(site) = &spec.site {
            s.push_str(&format!("site = \"{site}\"\n"));
        }
        if let Some((cert, _)) = &self.cfg.tls {
            s.push_str(&format!("ca_file = {:?}\n", cert.display().to_string()));
        }
        if self.cfg.secret.is_some() {
            s.push_str(&format!(
                "secret_file = {:?}\n",
                self.secret_dir
                    .path()
                    .join("cluster-secret")
                    .display()
                    .to_string()
            ));
        }
        s
    }

    /// Starts one more node (a join); returns its index.
    pub fn add_node(&mut self, spec: NodeSpec) -> anyhow::Result<usize> {
        let vigie = self
            .builder(&spec)?
            .start()
            .with_context(|| format!("starting node {}", spec.name))?;
        self.nodes.push(ClusterNode { spec, vigie });
        Ok(self.nodes.len() - 1)
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.spec.name == name)
    }

    /// The node called `name` (panics in tests when absent).
    pub fn node(&self, name: &str) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.spec.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn node_mut(&mut self, name: &str) -> &mut ClusterNode {
        self.nodes
            .iter_mut()
            .find(|n| n.spec.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Camera ids of the shared list.
    pub fn camera_ids(&self) -> Vec<String> {
        self.cfg.cameras.iter().map(|c| c.id.clone()).collect()
    }

    /// Runs `vigie <args> --config <a node's config>`; returns (success, stdout, stderr).
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
        let node = self.nodes.first().context("no node")?;
        let out = tokio::process::Command::new(&self.cfg.bin)
            .args(args)
            .arg("--config")
            .arg(&node.vigie.config_path)
            .kill_on_drop(true)
            .output()
            .await?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// `vigie cluster status --json` (bounded: 20 s).
    pub async fn status(&self) -> anyhow::Result<ClusterStatus> {
        let (ok, out, err) = tokio::time::timeout(
            Duration::from_secs(20),
            self.cli(&["cluster", "status", "--json"]),
        )
        .await
        .context("vigie cluster status took over 20 s")??;
        if !ok {
            bail!("vigie cluster status failed: {err}{out}");
        }
        serde_json::from_str(&out).with_context(|| format!("cluster status output: {out}"))
    }

    /// Polls the status until `pred` holds; errors after `timeout` with the last status and the
    /// nodes' log tails.
    pub async fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&ClusterStatus) -> bool,
    ) -> anyhow::Result<ClusterStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.status().await {
                Ok(s) if pred(&s) => return Ok(s),
                Ok(s) => format!("{s:#?}"),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "cluster: {what} not reached within {} s; last status: {last}\n{}",
                    timeout.as_secs(),
                    self.log_tails(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until every node whose process runs is registered (alive) and the status is
    /// [`ClusterStatus::settled`] on every camera.
    pub async fn wait_settled(&self, timeout: Duration) -> anyhow::Result<ClusterStatus> {
        let cams = self.camera_ids();
        let running: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.vigie.pid().is_some())
            .map(|n| n.spec.name.clone())
            .collect();
        // The status alone cannot tell "settled" from "the controller has not yet seen the
        // nodes that just registered": also require every live node that is not draining to
        // hold a camera (the tests have more cameras than nodes) and the same assignment over
        // two readings a lease TTL apart.
        let stable_for = Duration::from_secs(u64::from(self.cfg.lease_ttl_s.max(1)));
        let mut since: Option<(Instant, BTreeMap<String, String>)> = None;
        self.wait_status("every node registered, every camera placed", timeout, |s| {
            let ok = running.iter().all(|n| s.node(n).is_some_and(|x| x.alive))
                && s.settled(&cams)
                && s.nodes
                    .iter()
                    .filter(|n| n.alive && !n.draining)
                    .all(|n| !n.cameras.is_empty());
            if !ok {
                since = None;
                return false;
            }
            match &since {
                Some((t, a)) if *a == s.assignments => t.elapsed() >= stable_for,
                _ => {
                    since = Some((Instant::now(), s.assignments.clone()));
                    false
                }
            }
        })
        .await
    }

    /// `vigie cluster drain NODE --timeout-s N`; returns (success, output).
    pub async fn drain(&self, node: &str, timeout_s: u32) -> anyhow::Result<(bool, String)> {
        let t = timeout_s.to_string();
        let (ok, out, err) = tokio::time::timeout(
            Duration::from_secs(u64::from(timeout_s) + 30),
            self.cli(&["cluster", "drain", node, "--timeout-s", &t]),
        )
        .await
        .context("vigie cluster drain did not return")??;
        Ok((ok, format!("{out}{err}")))
    }

    /// The last `n` lines of every node's log.
    pub fn log_tails(&self, n: usize) -> String {
        let mut s = String::new();
        for node in &self.nodes {
            let log = node.vigie.log();
            let lines: Vec<&str> = log.lines().collect();
            s.push_str(&format!("--- node {} (last {n} lines)\n", node.spec.name));
            for l in &lines[lines.len().saturating_sub(n)..] {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

/// The spans of camera `cam` (stream `main`) that `v` has recorded in `[start, end)`, from its
/// index through its API. A camera the node does not know is "nothing recorded".
pub async fn spans_on(
    v: &Vigie,
    cam: &str,
    start: Timestamp,
    end: Timestamp,
) -> anyhow::Result<Vec<(Timestamp, Timestamp)>> {
    let (status, body) = v
        .get(&format!(
            "/api/v1/cameras/{cam}/streams/main/recordings?start={start}&end={end}&local=1"
        ))
        .await?;
    if status == 404 {
        return Ok(Vec::new());
    }
    if status != 200 {
        bail!("recordings of {cam} answered {status}: {body}");
    }
    let mut out = Vec::new();
    for s in body["spans"].as_array().context("no spans")? {
        let a: Timestamp = s["start"].as_str().context("start")?.parse()?;
        let b: Timestamp = s["end"].as_str().context("end")?.parse()?;
        out.push((a, b));
    }
    Ok(out)
}

/// The segments of camera `cam` (stream `main`) that `v` holds overlapping `[start, end)`.
pub async fn segments_on(
    v: &Vigie,
    cam: &str,
    start: Timestamp,
    end: Timestamp,
) -> anyhow::Result<Vec<Seg>> {
    let (status, body) = v
        .get(&format!(
            "/api/v1/cameras/{cam}/streams/main/recordings?start={start}&end={end}&segments=1&local=1"
        ))
        .await?;
    if status == 404 {
        return Ok(Vec::new());
    }
    if status != 200 {
        bail!("recordings of {cam} answered {status}: {body}");
    }
    let mut out = Vec::new();
    for s in body["segments"].as_array().context("no segments")? {
        out.push(Seg {
            id: s["id"].as_u64().context("id")?,
            start: s["start"].as_str().context("start")?.parse()?,
            end: s["end"].as_str().context("end")?.parse()?,
            frames: s["frames"].as_u64().context("frames")?,
            open: s["open"].as_bool().unwrap_or(false),
        });
    }
    Ok(out)
}

/// Seconds covered by spans.
pub fn covered_s(spans: &[(Timestamp, Timestamp)]) -> f64 {
    spans
        .iter()
        .map(|(a, b)| b.duration_since(*a).as_secs_f64())
        .sum()
}

/// Holes in the union of `intervals` inside `[start, end)` longer than `tolerance_s`:
/// (hole start, hole length in seconds).
pub fn holes(
    intervals: &[(Timestamp, Timestamp)],
    start: Timestamp,
    end: Timestamp,
    tolerance_s: f64,
) -> Vec<(Timestamp, f64)> {
    let mut v: Vec<(Timestamp, Timestamp)> = intervals.to_vec();
    v.sort();
    let mut out = Vec::new();
    let mut t = start;
    for (a, b) in v {
        if a > t {
            let len = a.min(end).duration_since(t).as_secs_f64();
            if len > tolerance_s {
                out.push((t, len));
            }
        }
        if b > t {
            t = b;
        }
        if t >= end {
            break;
        }
    }
    if t < end {
        let len = end.duration_since(t).as_secs_f64();
        if len > tolerance_s {
            out.push((t, len));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn holes_of_overlapping_and_separate_intervals() {
        let iv = [(ts(0), ts(10)), (ts(8), ts(20)), (ts(25), ts(30))];
        assert!(holes(&iv[..2], ts(0), ts(20), 0.0).is_empty());
        let h = holes(&iv, ts(0), ts(32), 0.04);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[0], (ts(20), 5.0));
        assert_eq!(h[1], (ts(30), 2.0));
        assert_eq!(holes(&[], ts(0), ts(1), 0.0), vec![(ts(0), 1.0)]);
    }

    #[test]
    fn cluster_section_and_camera_list_parse_as_toml() {
        let cfg = ClusterConfig::new(
            "/bin/true",
            vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
            vec![CameraDef::new("cam-00", "rtsp://127.0.0.1:9/c00").site("nord")],
        );
        let c = VigieCluster::new(cfg).unwrap();
        let t = c.cluster_toml(&NodeSpec::new("rec-a").site("nord"), 8081);
        let v: toml::Value = t.parse().unwrap();
        assert_eq!(v["cluster"]["node"].as_str(), Some("rec-a"));
        assert_eq!(v["cluster"]["etcd"].as_array().map(Vec::len), Some(2));
        let cams: toml::Value = cameras_toml(&c.cfg.cameras).parse().unwrap();
        assert_eq!(cams["cameras"][0]["site"].as_str(), Some("nord"));
    }
}

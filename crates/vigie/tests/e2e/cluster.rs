//! Cluster mode with a real etcd (Debian `etcd-server`, one member on free loopback ports,
//! killed on drop) and two real `vigie run` nodes recording camsim cameras: assignment,
//! failover after kill -9, drain (CLI and SIGTERM) with make-before-break, recording through
//! an etcd outage, and legal holds shared through etcd. The 3-member etcd / 3-node tests live
//! with the test harness of `vigie-testkit` (cluster_e2e).

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use vigie_camsim::ServerHandle;
use vigie_testkit::process::free_port;
use vigie_testkit::{Vigie, VigieBuilder};

const BIN: &str = env!("CARGO_BIN_EXE_vigie");
const BASELINE: &str = "h264-baseline-640x360-25fps-gop50.h264";
const COMMUNE: &str = "[[communes]]\nid = \"test\"\nname = \"Test\"\nretention_days = 7\n";

/// One etcd member on free loopback ports, its data in a temporary directory. Stopped (and
/// started again on the same ports and data) on demand; killed on drop.
struct Etcd {
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    /// Serves clients over TLS and requires a client certificate (files in `dir`).
    tls: bool,
}

impl Etcd {
    fn start() -> Etcd {
        Self::start_with(false)
    }

    fn start_with(tls: bool) -> Etcd {
        let mut e = Etcd {
            dir: tempfile::tempdir().unwrap(),
            client_port: free_port().unwrap(),
            peer_port: free_port().unwrap(),
            child: None,
            tls,
        };
        if tls {
            e.make_certificates();
        }
        e.spawn();
        e
    }

    /// A CA, the server's certificate (127.0.0.1) and a client certificate, as PEM files.
    fn make_certificates(&self) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let write =
            |name: &str, pem: String| std::fs::write(self.dir.path().join(name), pem).unwrap();
        write("ca.pem", ca_cert.pem());
        for (name, sans) in [
            ("server", vec!["127.0.0.1".to_owned()]),
            ("client", vec!["vigie".to_owned()]),
        ] {
            let key = KeyPair::generate().unwrap();
            let params = CertificateParams::new(sans).unwrap();
            let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// `etcdctl` with this member's endpoint (and TLS files).
    fn etcdctl(&self) -> Command {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3").args(["--endpoints", &self.url()]);
        if self.tls {
            c.arg(format!("--cacert={}", self.file("ca.pem")))
                .arg(format!("--cert={}", self.file("client.pem")))
                .arg(format!("--key={}", self.file("client.key")));
        }
        c
    }

    fn spawn(&mut self) {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .unwrap();
        let mut cmd = Command::new("etcd");
        if self.tls {
            cmd.arg(format!("--cert-file={}", self.file("server.pem")))
                .arg(format!("--key-file={}", self.file("server.key")))
                .arg(format!("--trusted-ca-file={}", self.file("ca.pem")))
                .arg("--client-cert-auth");
        }
        let child = cmd
            .arg("--name=t")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=t={peer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("etcd (Debian etcd-server) must be installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let healthy = TcpStream::connect(("127.0.0.1", self.client_port)).is_ok()
                && self
                    .etcdctl()
                    .args(["endpoint", "health"])
                    .output()
                    .is_ok_and(|o| o.status.success());
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn camsim(n: usize) -> ServerHandle {
    let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    let mounts: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), BASELINE)).collect();
    vigie_testkit::sim::start_embedded(&mounts).await
}

fn cameras_toml(sim: &ServerHandle, n: usize, site: Option<&str>) -> String {
    (0..n)
        .map(|i| {
            let site = site.map(|s| format!("site = \"{s}\"\n")).unwrap_or_default();
            format!(
                "[[cameras]]\nid = \"cam-{i}\"\nname = \"Camera {i}\"\ncommune = \"test\"\n{site}  [[cameras.streams]]\n  name = \"main\"\n  url = \"{}\"\n",
                sim.url(&format!("s{i}"))
            )
        })
        .collect()
}

fn node_builder(etcd: &Etcd, name: &str, cams: &str, cluster_extra: &str) -> VigieBuilder {
    VigieBuilder::new(BIN)
        .toml(&format!(
            "[cluster]\netcd = [\"{}\"]\nnode = \"{name}\"\nadvertise_url = \"http://{name}.invalid:8080\"\ncapacity_streams = 100\nlease_ttl_s = 2\ndrain_timeout_s = 10\n{cluster_extra}",
            etcd.url()
        ))
        .toml(COMMUNE)
        .toml(cams)
}

fn node(etcd: &Etcd, name: &str, cams: &str) -> Vigie {
    node_builder(etcd, name, cams, "").start().unwrap()
}

/// `vigie cluster status --json` through `v`'s configuration.
fn status(v: &Vigie) -> Value {
    let (ok, out) = v.command(&["cluster", "status", "--json"]).unwrap();
    assert!(ok, "cluster status failed: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn node_cameras(s: &Value, node: &str) -> Vec<String> {
    s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node)
        .map(|n| {
            n["cameras"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn node_alive(s: &Value, node: &str) -> bool {
    s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["name"] == node && n["alive"] == true)
}

fn assignments(s: &Value) -> BTreeMap<String, String> {
    s["assignments"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

/// Steady state: every camera assigned, each recorded by exactly its assigned node.
fn steady(s: &Value, n: usize, nodes: &[&str]) -> bool {
    let a = assignments(s);
    if a.len() != n || !s["duplicates"].as_object().is_some_and(|d| d.is_empty()) {
        return false;
    }
    let mut recorded = 0;
    for node in nodes {
        if !node_alive(s, node) {
            return false;
        }
        let cams = node_cameras(s, node);
        // Enough cameras for every node: each gets some.
        if n >= nodes.len() && cams.is_empty() {
            return false;
        }
        if cams
            .iter()
            .any(|c| a.get(c).map(String::as_str) != Some(*node))
        {
            return false;
        }
        if a.values().filter(|o| o == node).count() != cams.len() {
            return false;
        }
        recorded += cams.len();
    }
    recorded == n
}

async fn wait_status(
    v: &Vigie,
    what: &str,
    timeout: Duration,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let s = tokio::task::block_in_place(|| status(v));
        if f(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {timeout:?}; last status: {s:#}\nnode log:\n{}",
            v.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn window() -> (String, String) {
    let now = Timestamp::now();
    (
        (now - SignedDuration::from_hours(1)).to_string(),
        (now + SignedDuration::from_hours(1)).to_string(),
    )
}

/// Spans of `cam` on `v` once they reach `until` (the index lags live by up to ~13 s).
async fn spans_until(
    v: &Vigie,
    cam: &str,
    until: Timestamp,
    timeout: Duration,
) -> Vec<(Timestamp, Timestamp)> {
    let (a, b) = window();
    let deadline = Instant::now() + timeout;
    loop {
        let spans = v.spans(cam, "main", &a, &b).await.unwrap();
        if spans.last().is_some_and(|(_, e)| *e >= until) {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "{cam}: spans {spans:?} do not reach {until} within {timeout:?}\nlog:\n{}",
            v.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// True when the union of `spans` covers [from, to] without a gap (spans closer than
/// 0.5 s count as contiguous: segment boundaries).
fn covers(spans: &[(Timestamp, Timestamp)], from: Timestamp, to: Timestamp) -> bool {
    let mut s: Vec<_> = spans.to_vec();
    s.sort();
    let mut reached = from;
    for (a, b) in s {
        if a > reached + SignedDuration::from_millis(500) {
            break;
        }
        if b > reached {
            reached = b;
        }
    }
    reached >= to
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_and_sigterm_hand_cameras_over_make_before_break() {
    let etcd = Etcd::start();
    let sim = camsim(4).await;
    let cams = cameras_toml(&sim, 4, None);
    let mut a = node(&etcd, "rec-a", &cams);
    let b = node(&etcd, "rec-b", &cams);
    let s = wait_status(&a, "4 cameras over 2 nodes", Duration::from_secs(60), |s| {
        steady(s, 4, &["rec-a", "rec-b"])
    })
    .await;
    let of_b = node_cameras(&s, "rec-b");
    assert!(!of_b.is_empty(), "{s:#}");
    // Let rec-b record a while, so that its footage of each camera is indexed.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let (ok, out) = tokio::task::block_in_place(|| {
        b.command(&["cluster", "drain", "rec-b", "--timeout-s", "60"])
    })
    .unwrap();
    assert!(ok, "drain failed: {out}\nrec-b log:\n{}", b.log());
    assert!(out.contains("records nothing"), "{out}");
    let t_drained = Timestamp::now();
    let s = status(&a);
    assert!(node_cameras(&s, "rec-b").is_empty(), "{s:#}");
    assert!(steady(&s, 4, &["rec-a"]), "{s:#}");
    assert!(
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == "rec-b" && n["draining"] == true),
        "{s:#}"
    );

    // Make-before-break: for each moved camera, rec-a's recording began before rec-b's ended.
    for cam in &of_b {
        let on_b = spans_until(
            &b,
            cam,
            t_drained - SignedDuration::from_secs(30),
            Duration::from_secs(30),
        )
        .await;
        let on_a = spans_until(&a, cam, t_drained, Duration::from_secs(60)).await;
        let b_end = on_b.iter().map(|(_, e)| *e).max().unwrap();
        let a_start = on_a.iter().map(|(s, _)| *s).min().unwrap();
        assert!(
            a_start < b_end,
            "{cam}: gap in the handover: rec-b stopped at {b_end}, rec-a started at {a_start}"
        );
        let mut all = on_a.clone();
        all.extend(on_b.iter().copied());
        assert!(
            covers(&all, on_b[0].0, t_drained),
            "{cam}: a gap: b {on_b:?} a {on_a:?}"
        );
    }

    // Undrained, rec-b gets its share back; then SIGTERM of rec-a drains it before it exits.
    let (ok, out) = b.command(&["cluster", "undrain", "rec-b"]).unwrap();
    assert!(ok, "{out}");
    wait_status(&a, "rec-b back in service", Duration::from_secs(60), |s| {
        steady(s, 4, &["rec-a", "rec-b"]) && !node_cameras(s, "rec-b").is_empty()
    })
    .await;
    tokio::task::block_in_place(|| a.stop()).unwrap();
    let log = a.log();
    assert!(
        log.contains("drained: every camera is recorded by another node"),
        "{log}"
    );
    wait_status(
        &b,
        "rec-b records all 4 after rec-a's SIGTERM",
        Duration::from_secs(30),
        |s| !node_alive(s, "rec-a") && steady(s, 4, &["rec-b"]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_another_camera_list_is_refused() {
    let etcd = Etcd::start();
    let sim = camsim(2).await;
    let a = node(&etcd, "rec-a", &cameras_toml(&sim, 2, None));
    wait_status(&a, "rec-a registered", Duration::from_secs(30), |s| {
        node_alive(s, "rec-a")
    })
    .await;
    let err = match node_builder(&etcd, "rec-b", &cameras_toml(&sim, 1, None), "").start() {
        Ok(_) => panic!("a node with another camera list started"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("differs from the cluster's"), "{err}");
    // Same name as a live node: refused too (after waiting a lease TTL for it to expire).
    let err = match node_builder(&etcd, "rec-a", &cameras_toml(&sim, 2, None), "").start() {
        Ok(_) => panic!("a second rec-a started"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("already registered"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_reach_etcd_over_tls_with_client_certificates() {
    let etcd = Etcd::start_with(true);
    let sim = camsim(2).await;
    let cams = cameras_toml(&sim, 2, None);
    let tls = format!(
        "etcd_ca_file = {:?}\netcd_cert_file = {:?}\netcd_key_file = {:?}\n",
        etcd.file("ca.pem"),
        etcd.file("client.pem"),
        etcd.file("client.key")
    );
    let a = node_builder(&etcd, "rec-a", &cams, &tls).start().unwrap();
    let b = node_builder(&etcd, "rec-b", &cams, &tls).start().unwrap();
    wait_status(
        &a,
        "2 cameras over 2 nodes through TLS",
        Duration::from_secs(60),
        |s| steady(s, 2, &["rec-a", "rec-b"]),
    )
    .await;
    // The keys are in etcd, read back by etcdctl with the same certificates.
    let out = etcd
        .etcdctl()
        .args(["get", "--prefix", "--keys-only", "/vigie/c/nodes/"])
        .output()
        .unwrap();
    let keys = String::from_utf8_lossy(&out.stdout);
    assert!(
        keys.contains("/vigie/c/nodes/rec-a") && keys.contains("/vigie/c/nodes/rec-b"),
        "{keys}"
    );
    drop(b);
    // Without the client certificate etcd refuses the node: it says so and records nothing new.
    let no_cert = format!("etcd_ca_file = {:?}\n", etcd.file("ca.pem"));
    // No default admin: `vigie user add` of a cluster node writes etcd, which refuses it too
    // (the node itself starts without etcd).
    let c = node_builder(&etcd, "rec-c", &cams, &no_cert)
        .without_default_admin()
        .start()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let s = status(&a);
    assert!(!node_alive(&s, "rec-c"), "{s:#}");
    assert!(c.log().contains("etcd unreachable"), "{}", c.log());
}

/// Benchmark (not a test; `--run-ignored ignored-only`): etcd writes per second in steady state
/// for 2 nodes recording 20 cameras, from etcd's own counter of committed Raft proposals (every
/// put, transaction, lease grant), over 60 s. Reported in docs/BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn bench_etcd_write_rate_in_steady_state() {
    let etcd = Etcd::start();
    let n = 20;
    let sim = camsim(n).await;
    let cams = cameras_toml(&sim, n, None);
    let a = node_builder(&etcd, "rec-a", &cams, "").start().unwrap();
    let _b = node_builder(&etcd, "rec-b", &cams, "").start().unwrap();
    wait_status(
        &a,
        "20 cameras over 2 nodes",
        Duration::from_secs(90),
        |s| steady(s, n, &["rec-a", "rec-b"]),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let proposals = || async {
        let text = reqwest::get(format!("{}/metrics", etcd.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| l.starts_with("etcd_server_proposals_committed_total "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap()
    };
    let p0 = proposals().await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let p1 = proposals().await;
    let rate = (p1 - p0) / t0.elapsed().as_secs_f64();
    let s = status(&a);
    assert!(steady(&s, n, &["rec-a", "rec-b"]), "{s:#}");
    eprintln!(
        "BENCH etcd committed proposals: {rate:.2}/s (2 nodes, {n} cameras, lease_ttl_s 2, 60 s)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_nobody_can_take_over_times_out_with_a_clear_message() {
    let etcd = Etcd::start();
    let sim = camsim(1).await;
    let a = node(&etcd, "rec-a", &cameras_toml(&sim, 1, None));
    wait_status(&a, "cam-0 on rec-a", Duration::from_secs(60), |s| {
        steady(s, 1, &["rec-a"])
    })
    .await;
    let (ok, out) = tokio::task::block_in_place(|| {
        a.command(&["cluster", "drain", "rec-a", "--timeout-s", "3"])
    })
    .unwrap();
    assert!(!ok, "a drain with nowhere to go succeeded: {out}");
    assert!(
        out.contains("drain of rec-a timed out") && out.contains("cam-0"),
        "{out}"
    );
    // Still recorded (never unrecorded for a drain), and undrain puts it back in service.
    let s = status(&a);
    assert_eq!(node_cameras(&s, "rec-a"), ["cam-0"], "{s:#}");
    let (ok, out) = a.command(&["cluster", "undrain", "rec-a"]).unwrap();
    assert!(ok, "{out}");
    wait_status(
        &a,
        "rec-a no longer draining",
        Duration::from_secs(30),
        |s| steady(s, 1, &["rec-a"]) && s["nodes"][0]["draining"] == false,
    )
    .await;
}

/// `vigie_cluster_journal_anchors_total` of a node.
async fn anchors_published(v: &Vigie) -> u64 {
    let (_, m) = v.get_text("/metrics").await.unwrap();
    m.lines()
        .find(|l| l.starts_with("vigie_cluster_journal_anchors_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A node anchors its access journal's head in etcd; a journal replaced while the node was
/// stopped verifies on its own (a fresh chain) but does not hold the anchored entry: the node
/// raises a tamper alarm when it comes back, and `vigie audit verify` fails.
#[tokio::test(flavor = "multi_thread")]
async fn a_journal_replaced_while_its_node_was_stopped_is_caught_by_its_etcd_anchor() {
    let etcd = Etcd::start();
    let sim = camsim(1).await;
    let mut a = node(&etcd, "rec-a", &cameras_toml(&sim, 1, None));
    wait_status(&a, "rec-a recording", Duration::from_secs(30), |s| {
        node_cameras(s, "rec-a").len() == 1
    })
    .await;
    // Anchored at the first tick; something journaled after it (a user created), then
    // anchored again (at most ANCHOR_MIN_INTERVAL = 10 s after the previous anchor).
    let deadline = Instant::now() + Duration::from_secs(30);
    while anchors_published(&a).await < 1 {
        assert!(Instant::now() < deadline, "no anchor\n{}", a.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let st = a
        .http()
        .post(format!("{}/api/v1/users", a.base_url()))
        .bearer_auth(a.admin_token().unwrap())
        .json(&serde_json::json!({"name": "anchored", "role": "operator", "password": "Anchored-pw-8841", "communes": "all"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, 201);
    let deadline = Instant::now() + Duration::from_secs(30);
    while anchors_published(&a).await < 2 {
        assert!(Instant::now() < deadline, "no second anchor\n{}", a.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // `audit verify` runs with the node stopped (the journal is its database).
    a.kill9().unwrap();
    let (ok, out) = a.command(&["audit", "verify"]).unwrap();
    assert!(ok, "intact journal refused: {out}");
    assert!(out.contains("is in the journal"), "{out}");

    // Its journal replaced by an empty one while stopped (as someone with the disk could).
    let journal_dir = a.work_dir().join("data").join("journal");
    assert!(journal_dir.is_dir(), "{}", journal_dir.display());
    std::fs::remove_dir_all(&journal_dir).unwrap();
    a.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let alarm = loop {
        if let Ok((200, j)) = a.get("/api/v1/audit?action=tamper-alarm").await
            && let Some(e) = j["entries"].as_array().and_then(|e| e.first())
        {
            break e.clone();
        }
        assert!(Instant::now() < deadline, "no tamper alarm\n{}", a.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let why = alarm["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("rec-a") && why.contains("anchored in etcd"),
        "{alarm}"
    );
    a.kill9().unwrap();
    let (ok, out) = a.command(&["audit", "verify"]).unwrap();
    assert!(!ok, "a replaced journal verified: {out}");
    assert!(out.contains("TAMPER ALARM"), "{out}");
}

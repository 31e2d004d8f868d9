//! What the cluster tests share (`cluster_mp4`, `cluster_export`, `cluster_serve`,
//! `cluster_live`): a real etcd, real
//! `vigie` nodes sharing a cluster secret and camsim cameras ([`rig`]), a recorder killed over
//! ([`kill_over`]) and what each holder recorded once the killed one is back ([`holders`]).

use std::time::{Duration, Instant};

use jiff::Timestamp;
use vigie_camsim::ServerHandle;
use vigie_testkit::cluster::{CameraDef, ClusterConfig, NodeSpec, VigieCluster, spans_on};
use vigie_testkit::etcd::EtcdCluster;
use vigie_testkit::sim::BASELINE;

pub const BIN: &str = env!("CARGO_BIN_EXE_vigie");
/// camsim's frame rate.
pub const FPS: f64 = 25.0;

/// Dropped in this order (nodes, camsim, etcd), also on panic.
pub struct Rig {
    pub c: VigieCluster,
    _sim: ServerHandle,
    _etcd: EtcdCluster,
}

impl Rig {
    /// The cluster secret every node signs its internal requests with.
    pub fn secret(&self) -> String {
        self.c.cfg.secret.clone().expect("a cluster secret")
    }
}

/// One etcd member, `nodes`, `n_cams` camsim cameras (`cam-0`…), settled; `None` without etcd.
pub async fn rig(nodes: &[&str], n_cams: usize) -> Option<Rig> {
    rig_with(nodes, n_cams, |_| {}).await
}

/// [`rig`] with the cluster's configuration changed by `tweak` first (e.g. HTTPS).
pub async fn rig_with(
    nodes: &[&str],
    n_cams: usize,
    tweak: impl FnOnce(&mut ClusterConfig),
) -> Option<Rig> {
    let etcd = EtcdCluster::start_or_skip(1).expect("etcd")?;
    let mounts: Vec<String> = (0..n_cams).map(|i| format!("c{i}")).collect();
    let sim = vigie_testkit::sim::start_embedded(
        &mounts
            .iter()
            .map(|m| (m.as_str(), BASELINE))
            .collect::<Vec<_>>(),
    )
    .await;
    let cams = (0..n_cams)
        .map(|i| CameraDef::new(format!("cam-{i}"), sim.url(&mounts[i])))
        .collect();
    let mut cfg = ClusterConfig::new(BIN, etcd.endpoints(), cams);
    tweak(&mut cfg);
    let specs = nodes.iter().map(|n| NodeSpec::new(*n)).collect();
    let c = tokio::task::block_in_place(|| VigieCluster::start(cfg, specs)).expect("nodes");
    c.wait_settled(Duration::from_secs(60))
        .await
        .expect("settled");
    Some(Rig {
        c,
        _sim: sim,
        _etcd: etcd,
    })
}

/// GET with the node's admin token; (status, headers, body).
pub async fn get(
    v: &vigie_testkit::Vigie,
    path: &str,
    extra: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, bytes::Bytes) {
    let mut r = reqwest::Client::new()
        .get(format!("{}{path}", v.base_url()))
        .bearer_auth(v.admin_token().expect("admin token"));
    for (k, val) in extra {
        r = r.header(*k, *val);
    }
    let resp = r.send().await.expect("request");
    let s = resp.status().as_u16();
    let h = resp.headers().clone();
    (s, h, resp.bytes().await.expect("body"))
}

pub fn secs(spans: &[(Timestamp, Timestamp)]) -> f64 {
    spans
        .iter()
        .map(|(a, b)| b.duration_since(*a).as_secs_f64())
        .sum()
}

/// Kills `node` (-9) and waits for its camera `cam` to be recorded by another node: returns
/// the instant of the kill and the new owner.
pub async fn kill_over(r: &mut Rig, node: &str, cam: &str) -> (Timestamp, String) {
    let kill = Timestamp::now();
    r.c.node_mut(node).vigie.kill9().unwrap();
    let st =
        r.c.wait_status("the camera moved", Duration::from_secs(30), |s| {
            s.assignments.get(cam).is_some_and(|n| n != node)
                && s.nodes
                    .iter()
                    .any(|n| n.alive && n.cameras.iter().any(|c| c == cam))
        })
        .await
        .unwrap();
    (kill, st.assignments[cam].clone())
}

/// What the killed node `a` and the new `owner` recorded of `cam` in `[start, end)` (their own
/// indexes), once `a` answers again: one span each, laid end to end but for the failover gap.
/// Returns (spans on `a`, spans on `owner`, the gap in seconds, the frames camsim sent over the
/// range minus the gap).
pub async fn holders(
    r: &Rig,
    a: &str,
    owner: &str,
    cam: &str,
    start: Timestamp,
    end: Timestamp,
) -> (
    Vec<(Timestamp, Timestamp)>,
    Vec<(Timestamp, Timestamp)>,
    f64,
    i64,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (on_a, on_owner) = loop {
        let on_a = spans_on(&r.c.node(a).vigie, cam, start, end).await;
        let o = spans_on(&r.c.node(owner).vigie, cam, start, end)
            .await
            .unwrap();
        if let Ok(on_a) = on_a
            && !on_a.is_empty()
        {
            break (on_a, o);
        }
        assert!(Instant::now() < deadline, "{a} does not answer again");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let a_end = on_a.last().unwrap().1;
    let o_start = on_owner.first().unwrap().0;
    assert!(
        a_end <= o_start,
        "a failover: no overlap {on_a:?} {on_owner:?}"
    );
    let gap_s = o_start.duration_since(a_end).as_secs_f64();
    assert!(
        on_a.len() == 1 && on_owner.len() == 1,
        "one span each: {on_a:?} {on_owner:?}"
    );
    let range_s = end.duration_since(start).as_secs_f64();
    let covered = secs(&on_a) + secs(&on_owner);
    assert!(
        (covered + gap_s - range_s).abs() < 0.1,
        "the spans cover the range but the gap: {on_a:?} {on_owner:?}"
    );
    let expected = ((range_s - gap_s) * FPS).round() as i64;
    (on_a, on_owner, gap_s, expected)
}

//! Cluster II (issue 15), item 1: users, rights, sessions and API tokens are the cluster's (in
//! etcd), whichever node they are created, used or revoked on. A real etcd (one member), three
//! real `vigie` nodes, three camsim cameras, one test (cluster tests are slow):
//!
//! * a user created on one node logs in on another; a session opened on one node works on a
//!   third;
//! * re-scoped on one node, the user is refused (403) a camera outside the new scope on another;
//! * an API token revoked on one node stops working on another; a user disabled on one node is
//!   refused on another and its live WebSocket there is closed (4401). The delays are measured
//!   (printed) and checked against the documented bound (docs/CLUSTER.md: copy read every
//!   0.5 s, live rights checked every 1 s) with room for a loaded machine;
//! * the CLI (`vigie user …`) acts on the cluster while the nodes run.
//!
//! Run: `cargo nextest run -p vigie --all-features -E 'test(/^cluster_users/)'`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vigie_testkit::cluster::{CameraDef, VigieCluster};
use vigie_testkit::etcd::EtcdCluster;
use vigie_testkit::live::{LiveClient, LiveEvent};
use vigie_testkit::sim::BASELINE;

use crate::cluster_common::rig;

const BIN: &str = env!("CARGO_BIN_EXE_vigie");
const PASSWORD: &str = "olga's long passphrase";
/// A change made on one node is refused on another within this (docs: ≤ 0.5 s + one read;
/// the margin is for a machine shared by several builds).
const HTTP_BOUND: Duration = Duration::from_secs(2);
/// A live view on another node is closed within this (docs: ≤ 0.5 s + one read + 1 s).
const LIVE_BOUND: Duration = Duration::from_secs(3);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn base(c: &VigieCluster, node: &str) -> String {
    c.node(node).vigie.base_url()
}

/// A request as the cluster's default admin (the token `node`'s bootstrap created: tokens are
/// the cluster's, any node's works everywhere).
async fn admin(
    c: &VigieCluster,
    node: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let token = c.node(node).vigie.admin_token().expect("admin token");
    let mut req = client()
        .request(method, format!("{}{path}", base(c, node)))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Logs in on `node`; returns the `vigie_session=…` cookie pair.
async fn login(c: &VigieCluster, node: &str, user: &str) -> Result<String, u16> {
    let resp = client()
        .post(format!("{}/api/v1/session", base(c, node)))
        .json(&json!({ "username": user, "password": PASSWORD }))
        .send()
        .await
        .expect("login");
    if resp.status().as_u16() != 200 {
        return Err(resp.status().as_u16());
    }
    let set = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie");
    Ok(set.split(';').next().unwrap_or_default().trim().to_owned())
}

/// GET `path` on `node` with this header; the status.
async fn get_as(c: &VigieCluster, node: &str, path: &str, header: (&str, &str)) -> u16 {
    client()
        .get(format!("{}{path}", base(c, node)))
        .header(header.0, header.1)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

/// Polls `GET path` on `node` every 20 ms until it answers `want`; the time it took.
async fn until_status(
    c: &VigieCluster,
    node: &str,
    path: &str,
    header: (&str, &str),
    want: u16,
    since: Instant,
) -> Duration {
    let deadline = since + Duration::from_secs(15);
    loop {
        let st = get_as(c, node, path, header).await;
        if st == want {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{node} still answers {st} (not {want}) for {path} 15 s after the change"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A camera's recordings of the last minute on the answering node (`local=1`: no fan-out).
fn recordings(cam: &str) -> String {
    let now = jiff::Timestamp::now();
    let start = now - jiff::SignedDuration::from_secs(60);
    format!("/api/v1/cameras/{cam}/streams/main/recordings?start={start}&end={now}&local=1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_users_are_shared_and_revocations_propagate_to_every_node() {
    // One camera per node (the harness waits until every node records one).
    let Some(rig) = rig(&["rec-a", "rec-b", "rec-c"], 3).await else {
        return;
    };
    let c = &rig.c;
    let status = c.status().await.expect("status");
    // W: the node recording cam-1 (its live view is served there); D: another node, where the
    // revocations are made.
    let w = status.assignments["cam-1"].clone();
    let d = ["rec-a", "rec-b", "rec-c"]
        .into_iter()
        .find(|n| *n != w)
        .expect("another node")
        .to_owned();

    // Created on rec-a, logs in on rec-b; a session opened on rec-a works on rec-c.
    let (st, body) = admin(
        c,
        "rec-a",
        reqwest::Method::POST,
        "/api/v1/users",
        Some(
            json!({ "name": "olga", "role": "operator", "password": PASSWORD, "communes": "all" }),
        ),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let on_b = login(c, "rec-b", "olga").await.expect("login on rec-b");
    let on_a = login(c, "rec-a", "olga").await.expect("login on rec-a");
    for (sess, node) in [(&on_a, "rec-c"), (&on_b, "rec-a"), (&on_b, "rec-c")] {
        assert_eq!(
            get_as(c, node, &recordings("cam-0"), ("cookie", sess)).await,
            200,
            "a session opened elsewhere refused on {node}"
        );
    }
    // The session ids are stored hashed: the cookie value is not in etcd's answer to the CLI
    // (`vigie user list` reads the same keys) — checked on the keys' format in unit tests.

    // Re-scoped on rec-a (cam-1 only): rec-b refuses cam-0 (403), still serves cam-1.
    let t0 = Instant::now();
    let (st, body) = admin(
        c,
        "rec-a",
        reqwest::Method::PATCH,
        "/api/v1/users/olga",
        Some(json!({ "cameras": ["cam-1"] })),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let rescope = until_status(c, "rec-b", &recordings("cam-0"), ("cookie", &on_b), 403, t0).await;
    assert_eq!(
        get_as(c, "rec-b", &recordings("cam-1"), ("cookie", &on_b)).await,
        200
    );

    // An API token created on rec-c, revoked on D, refused on W.
    let (st, tok) = admin(
        c,
        "rec-c",
        reqwest::Method::POST,
        "/api/v1/tokens",
        Some(json!({ "user": "olga", "name": "script" })),
    )
    .await;
    assert_eq!(st, 201, "{tok}");
    let bearer = format!("Bearer {}", tok["token"].as_str().expect("token"));
    let tok_id = tok["id"].as_str().expect("token id").to_owned();
    assert_eq!(
        get_as(c, &w, &recordings("cam-1"), ("authorization", &bearer)).await,
        200
    );
    let t0 = Instant::now();
    let (st, body) = admin(
        c,
        &d,
        reqwest::Method::DELETE,
        &format!("/api/v1/tokens/{tok_id}"),
        None,
    )
    .await;
    assert!(st == 200 || st == 204, "revoke: {st} {body}");
    let revoke = until_status(
        c,
        &w,
        &recordings("cam-1"),
        ("authorization", &bearer),
        401,
        t0,
    )
    .await;

    // A live view of cam-1 on W with olga's session; olga disabled on D: W refuses her
    // session, and closes her live view with 4401.
    let mut live = LiveClient::connect_as(
        c.node(&w).vigie.port,
        "cam-1",
        "main",
        None,
        Some(("cookie".into(), on_a.clone())),
    )
    .await
    .expect("live view");
    assert!(matches!(
        live.next(Duration::from_secs(10)).await.expect("init"),
        LiveEvent::Init { .. }
    ));
    let t0 = Instant::now();
    let (st, body) = admin(
        c,
        &d,
        reqwest::Method::PATCH,
        "/api/v1/users/olga",
        Some(json!({ "disabled": true })),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let watch = tokio::spawn(async move {
        loop {
            match live.next(Duration::from_secs(15)).await {
                Ok(LiveEvent::Closed { code, reason }) => return Ok((code, reason, t0.elapsed())),
                Ok(_) => {}
                Err(e) => return Err(format!("{e:#}")),
            }
        }
    });
    let disable = until_status(c, &w, &recordings("cam-1"), ("cookie", &on_a), 401, t0).await;
    let (code, reason, closed) = watch.await.expect("watch").expect("live view closed");
    assert_eq!(code, 4401, "{reason}");
    eprintln!(
        "measured: re-scope {rescope:?}, token revocation {revoke:?}, disable {disable:?} (HTTP, \
         another node), live view closed {closed:?} after the disable"
    );
    for (what, d) in [
        ("re-scope", rescope),
        ("revocation", revoke),
        ("disable", disable),
    ] {
        assert!(d < HTTP_BOUND, "{what} took {d:?} to apply on another node");
    }
    assert!(closed < LIVE_BOUND, "live view closed after {closed:?}");
    assert_eq!(login(c, "rec-c", "olga").await, Err(401));

    // The CLI acts on the cluster while the nodes run: sees her disabled, enables her, and
    // she logs in again on another node.
    let (ok, out, err) = c.cli(&["user", "list"]).await.expect("cli");
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("olga "))
        .unwrap_or_else(|| panic!("olga not listed by the CLI: {out}"));
    assert!(line.contains("disabled"), "{line}");
    let (ok, _, err) = c.cli(&["user", "enable", "olga"]).await.expect("cli");
    assert!(ok, "{err}");
    let again = login(c, "rec-c", "olga").await.expect("login after enable");
    assert_eq!(
        get_as(c, "rec-b", &recordings("cam-1"), ("cookie", &again)).await,
        200
    );
    let (ok, _, err) = c.cli(&["user", "delete", "olga"]).await.expect("cli");
    assert!(ok, "{err}");
    let t0 = Instant::now();
    until_status(
        c,
        "rec-b",
        &recordings("cam-1"),
        ("cookie", &again),
        401,
        t0,
    )
    .await;
}

/// The `[cluster]` section of a converted single node (no secret: internal routes closed, not
/// needed here).
fn cluster_section(endpoints: &[String], node: &str, port: u16) -> String {
    let etcd: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
    format!(
        "\n[cluster]\netcd = [{}]\nnode = \"{node}\"\nadvertise_url = \"http://127.0.0.1:{port}\"\ncapacity_streams = 400\nlease_ttl_s = 2\n",
        etcd.join(", ")
    )
}

/// Migration: two single nodes, each with its own local users, become a cluster. The first
/// to start seeds etcd with its users and tokens (its token keeps working, on both nodes); the
/// second finds users in etcd, uses them (its local-only token stops working, the first's
/// user logs in there) and reports its local users that differ.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_users_the_first_node_seeds_etcd_and_the_next_uses_the_clusters() {
    let Some(etcd) = EtcdCluster::start_or_skip(1).expect("etcd") else {
        return;
    };
    let sim = vigie_testkit::sim::start_embedded(&[("c0", BASELINE)]).await;
    let cams = vigie_testkit::cluster::cameras_toml(&[CameraDef::new("cam-0", sim.url("c0"))]);
    let start = || {
        tokio::task::block_in_place(|| {
            vigie_testkit::process::VigieBuilder::new(BIN)
                .toml(&cams)
                .start()
        })
        .expect("single node")
    };
    let mut one = start();
    let mut two = start();
    // A user of the first installation only.
    let (st, body) = {
        let r = one
            .http()
            .post(format!("{}/api/v1/users", one.base_url()))
            .json(&json!({ "name": "ines", "role": "operator", "password": PASSWORD, "communes": "all" }))
            .send()
            .await
            .expect("create");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    assert_eq!(st, 201, "{body}");
    for (v, node) in [(&mut one, "rec-1"), (&mut two, "rec-2")] {
        tokio::task::block_in_place(|| v.stop()).expect("stop");
        let mut cfg = std::fs::read_to_string(&v.config_path).expect("config");
        cfg.push_str(&cluster_section(&etcd.endpoints(), node, v.port));
        std::fs::write(&v.config_path, cfg).expect("config");
    }
    let token_one = format!("Bearer {}", one.admin_token().expect("token"));
    let token_two = format!("Bearer {}", two.admin_token().expect("token"));
    let get = |port: u16, bearer: String| async move {
        client()
            .get(format!("http://127.0.0.1:{port}/api/v1/cameras"))
            .header("authorization", bearer)
            .send()
            .await
            .expect("request")
            .status()
            .as_u16()
    };

    tokio::task::block_in_place(|| one.spawn()).expect("rec-1 clustered");
    assert!(
        one.log().contains("copied this node's users"),
        "{}",
        one.log()
    );
    assert_eq!(get(one.port, token_one.clone()).await, 200);

    tokio::task::block_in_place(|| two.spawn()).expect("rec-2 clustered");
    let log = two.log();
    let warning = log
        .lines()
        .find(|l| l.contains("differs from the cluster's users"))
        .unwrap_or_else(|| panic!("no warning about differing local users: {log}"));
    // Same name, its own (salted) password hash: reported; nothing is local-only.
    assert!(
        warning.contains("differing=[\"e2e-admin\"]") && warning.contains("local_only=[]"),
        "{warning}"
    );
    assert_eq!(get(two.port, token_one).await, 200, "the cluster's token");
    assert_eq!(
        get(two.port, token_two).await,
        401,
        "a token only rec-2 had"
    );
    let resp = client()
        .post(format!("http://127.0.0.1:{}/api/v1/session", two.port))
        .json(&json!({ "username": "ines", "password": PASSWORD }))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status().as_u16(), 200, "rec-1's user on rec-2");
    // Its CLI lists the cluster's users.
    let (ok, out) = tokio::task::block_in_place(|| two.command(&["user", "list"])).expect("cli");
    assert!(ok && out.contains("ines"), "{out}");
    drop((one, two));
    drop(sim);
    drop(etcd);
}

//! Cluster II (issue 15): any node serves every camera. A real etcd ([`vigie_testkit::etcd`]),
//! real `vigie` nodes sharing a cluster secret ([`vigie_testkit::cluster`]), camsim cameras.
//!
//! * The internal routes (`/internal/v1/…`) answer only requests signed with the cluster secret:
//!   no signature, a user's token, another secret, a replay, a stale timestamp or a tampered
//!   identity are refused; a signed request gets the node's spans, playback entries and
//!   segment bytes (with `Range`), and the remote node journals the carried user.
//! * `cameras` and `recordings` answer the same JSON from every node.
//!
//! One cluster per test, reused for every assertion (cluster tests are slow). Run:
//! `cargo nextest run -p vigie --all-features -E 'test(/^cluster_serve/)'`.

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use vigie_api::internal::{CarriedIdentity, ClusterKey};
use vigie_core::config::Secret;
use vigie_testkit::cluster::{CameraDef, spans_on};

use crate::cluster_common::{Rig, rig};

const BIN: &str = env!("CARGO_BIN_EXE_vigie");

fn identity(user: &str) -> CarriedIdentity {
    CarriedIdentity {
        user: user.into(),
        role: vigie_auth::Role::Investigator,
        scope: vigie_auth::Scope::all(),
        actor: format!("{user} (test)"),
        request_id: format!("req-{}", Timestamp::now().as_nanosecond()),
    }
}

fn now_s() -> i64 {
    Timestamp::now().as_second()
}

/// GET `url` with the given headers (no user credentials).
async fn get(
    url: &str,
    headers: &[(&str, String)],
    range: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, bytes::Bytes) {
    let mut r = reqwest::Client::new().get(url);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    if let Some(range) = range {
        r = r.header("range", range);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    (status, h, resp.bytes().await.expect("body"))
}

fn json(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into()))
}

/// One cluster (1 etcd member, 3 nodes, 3 cameras) for every assertion: the internal routes
/// first, then the listings across a kill -9 and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_serve_internal_routes_are_signed_and_listings_are_the_same_on_every_node() {
    let Some(mut r) = rig(&["rec-a", "rec-b", "rec-c"], 3).await else {
        return;
    };
    internal_routes(&r).await;
    listings(&mut r).await;
}

async fn internal_routes(r: &Rig) {
    let key = ClusterKey::new("rec-a", &Secret::new(r.secret()));
    let b = &r.c.node("rec-b").vigie;
    let base = b.base_url();
    let who = "/internal/v1/whoami";

    // No signature; a user's (admin) token; signed with another secret: refused.
    let (s, _, body) = get(&format!("{base}{who}"), &[], None).await;
    assert_eq!(s, 401, "{}", json(&body));
    let admin = format!("Bearer {}", b.admin_token().expect("admin token"));
    let (s, _, _) = get(
        &format!("{base}{who}"),
        &[("authorization", admin.clone())],
        None,
    )
    .await;
    assert_eq!(s, 401, "a user's token does not open internal routes");
    let forged = ClusterKey::new(
        "rec-a",
        &Secret::new("not the cluster secret, but long enough"),
    );
    let h = forged.sign("GET", who, &identity("mallory"), now_s());
    let (s, _, _) = get(&format!("{base}{who}"), &h, None).await;
    assert_eq!(s, 401, "another secret");

    // Signed: accepted once, the identity carried; the same request replayed: refused.
    let h = key.sign("GET", who, &identity("alice"), now_s());
    let (s, _, body) = get(&format!("{base}{who}"), &h, None).await;
    let v = json(&body);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["node"], "rec-b");
    assert_eq!(v["from"], "rec-a");
    assert_eq!(v["identity"]["user"], "alice");
    let (s, _, body) = get(&format!("{base}{who}"), &h, None).await;
    assert_eq!(s, 401, "replayed: {}", json(&body));
    assert!(
        json(&body).to_string().contains("replayed"),
        "{}",
        json(&body)
    );
    // A signature for another path, a stale timestamp, a tampered identity: refused.
    let h = key.sign(
        "GET",
        "/internal/v1/whoami?x=1",
        &identity("alice"),
        now_s(),
    );
    assert_eq!(get(&format!("{base}{who}"), &h, None).await.0, 401);
    let h = key.sign("GET", who, &identity("alice"), now_s() - 120);
    assert_eq!(get(&format!("{base}{who}"), &h, None).await.0, 401);
    let mut h = key.sign("GET", who, &identity("alice"), now_s());
    let other = key.sign("GET", who, &identity("root"), now_s());
    h[3] = other[3].clone();
    assert_eq!(get(&format!("{base}{who}"), &h, None).await.0, 401);
    // The refusals are logged without the secret.
    assert!(b.log().contains("internal request refused"));
    assert!(
        !b.log().contains(&r.secret()),
        "the secret never reaches the log"
    );

    // The footage routes: the camera rec-b records, its last seconds.
    let status = r.c.status().await.expect("status");
    let cam = status
        .cameras_of("rec-b")
        .into_iter()
        .next()
        .expect("rec-b records a camera");
    let t0 = Timestamp::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (start, end) = loop {
        let spans = spans_on(
            b,
            &cam,
            t0 - SignedDuration::from_secs(120),
            t0 + SignedDuration::from_secs(60),
        )
        .await
        .unwrap();
        if let Some((a, e)) = spans.last()
            && e.duration_since(*a).as_secs_f64() >= 4.0
        {
            break (*e - SignedDuration::from_secs(4), *e);
        }
        assert!(
            Instant::now() < deadline,
            "rec-b records nothing of {cam}: {spans:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let t90k = |t: Timestamp| vigie_core::Time90k::from_timestamp(t).0;
    let path = format!(
        "/internal/v1/cameras/{cam}/streams/main/spans?start_90k={}&end_90k={}",
        t90k(start),
        t90k(end)
    );
    let (s, _, body) = get(&format!("{base}{path}"), &[], None).await;
    assert_eq!(s, 401, "spans without a signature");
    let h = key.sign("GET", &path, &identity("alice"), now_s());
    let (s, _, body2) = get(&format!("{base}{path}"), &h, None).await;
    let spans = json(&body2);
    assert_eq!(s, 200, "{spans} {}", json(&body));
    assert_eq!(spans["spans"].as_array().map(Vec::len), Some(1), "{spans}");

    let path = format!(
        "/internal/v1/cameras/{cam}/streams/main/plan?start_90k={}&end_90k={}",
        t90k(start),
        t90k(end)
    );
    let h = key.sign("GET", &path, &identity("alice"), now_s());
    let (s, _, body) = get(&format!("{base}{path}"), &h, None).await;
    let plan = json(&body);
    assert_eq!(s, 200, "{plan}");
    let pieces = plan["pieces"].as_array().expect("pieces");
    assert!(!pieces.is_empty(), "{plan}");
    // Summaries only: [samples, key frames, stts runs, chunks, stsc runs, payload, media].
    let frames: u64 = pieces
        .iter()
        .map(|p| p["summary"][0].as_u64().unwrap_or(0))
        .sum();
    // 4 s at 25 fps, from the key frame at or before the start (GOP 2 s).
    assert!((100..=160).contains(&frames), "{frames} samples in 4 s");
    assert!(plan["skip_90k"].as_u64().is_some() && plan["sample_entries"][0].is_string());
    assert!(pieces[0].get("samples").is_none(), "no tables in the plan");

    // The first piece's tables, asked for on their own.
    let p0 = &pieces[0];
    let seg = p0["segment"].as_u64().unwrap();
    let path = format!(
        "/internal/v1/cameras/{cam}/streams/main/segments/{seg}/tables?first={}&samples={}",
        p0["first_sample"], p0["summary"][0]
    );
    let (s, _, _) = get(&format!("{base}{path}"), &[], None).await;
    assert_eq!(s, 401, "tables without a signature");
    let h = key.sign("GET", &path, &identity("alice"), now_s());
    let (s, _, body) = get(&format!("{base}{path}"), &h, None).await;
    let tables = json(&body);
    assert_eq!(s, 200, "{tables}");
    assert_eq!(
        tables["samples"].as_array().map(Vec::len) as Option<usize>,
        p0["summary"][0].as_u64().map(|n| n as usize),
        "{tables}"
    );
    assert_eq!(tables["samples"][0][2], 1, "the plan starts on a key frame");
    let p0 = &tables;

    // Bytes of the first piece's segment: whole, and the first chunk by Range.
    let len = pieces[0]["bytes"].as_u64().unwrap();
    let path = format!("/internal/v1/cameras/{cam}/streams/main/segments/{seg}");
    let (s, _, _) = get(&format!("{base}{path}"), &[], None).await;
    assert_eq!(s, 401, "segment bytes without a signature");
    let h = key.sign("GET", &path, &identity("alice"), now_s());
    let (s, hd, whole) = get(&format!("{base}{path}"), &h, None).await;
    assert_eq!(s, 200);
    assert!(whole.len() as u64 >= len, "{} < {len}", whole.len());
    assert_eq!(&whole[4..8], b"ftyp", "a segment file starts with ftyp");
    assert_eq!(hd["accept-ranges"], "bytes");
    let off = p0["chunks"][0][0].as_u64().unwrap();
    let n: u64 = p0["samples"]
        .as_array()
        .unwrap()
        .iter()
        .take(p0["chunks"][0][1].as_u64().unwrap() as usize)
        .map(|s| s[1].as_u64().unwrap())
        .sum();
    let h = key.sign("GET", &path, &identity("alice"), now_s());
    let range = format!("bytes={off}-{}", off + n - 1);
    let (s, hd, part) = get(&format!("{base}{path}"), &h, Some(&range)).await;
    assert_eq!(s, 206);
    assert_eq!(part.len() as u64, n);
    assert_eq!(&part[..], &whole[off as usize..(off + n) as usize]);
    assert!(
        hd["content-range"]
            .to_str()
            .unwrap()
            .starts_with(&format!("bytes {off}-"))
    );
    // The first sample of a chunk is a length-prefixed NAL (AVC format), its length inside.
    let nal_len = u32::from_be_bytes([part[0], part[1], part[2], part[3]]) as u64;
    assert!(
        nal_len > 0 && nal_len + 4 <= n,
        "NAL length {nal_len} in a {n}-byte chunk"
    );

    // rec-b journaled the access for the carried user, naming the node it came through
    // (`local=1`: rec-b's own journal, not the merged one).
    let (s, j) = b
        .get(&format!(
            "/api/v1/audit?camera={cam}&action=playback&local=1"
        ))
        .await
        .unwrap();
    assert_eq!(s, 200, "{j}");
    let entries = j["entries"].as_array().cloned().unwrap_or_default();
    assert!(
        entries
            .iter()
            .any(|e| e["actor"] == "alice (test)" && e.to_string().contains("rec-a")),
        "no journal entry for alice via rec-a: {j}"
    );
}

/// `cameras` without what is this node's own (`recorded_here`, `compliance`).
fn shared_view(mut v: Value) -> Value {
    if let Some(cams) = v["cameras"].as_array_mut() {
        for c in cams {
            if let Some(o) = c.as_object_mut() {
                o.remove("recorded_here");
            }
            if let Some(streams) = c["streams"].as_array_mut() {
                for s in streams {
                    if let Some(o) = s.as_object_mut() {
                        o.remove("compliance");
                    }
                }
            }
        }
    }
    v
}

/// Polls `path` on `nodes` until every node answers 200 with the same JSON (after `view`) and
/// `pred` holds on it; panics after 30 s with the answers.
async fn same_on(
    r: &Rig,
    nodes: &[&str],
    path: &str,
    view: impl Fn(Value) -> Value,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut answers = Vec::new();
        for n in nodes {
            let (s, v) = r.c.node(n).vigie.get(path).await.unwrap();
            answers.push((n, s, view(v)));
        }
        let first = &answers[0].2;
        if answers.iter().all(|(_, s, v)| *s == 200 && v == first) && pred(first) {
            return first.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{path}: the nodes do not answer the same (or not what is expected): {answers:#?}\n{}",
            r.c.log_tails(20)
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}

async fn listings(r: &mut Rig) {
    let all = ["rec-a", "rec-b", "rec-c"];
    // Every node lists every camera with its recorder and the status it published.
    let cams = same_on(r, &all, "/api/v1/cameras", shared_view, |v| {
        v["cameras"].as_array().is_some_and(|c| {
            c.len() == 3
                && c.iter().all(|c| {
                    c["recorder"].is_string()
                        && c["recording_on"].as_array().map(Vec::len) == Some(1)
                        && c["streams"][0]["status"]["state"] == "online"
                        && c["streams"][0]["status"]["recorder"] == c["recorder"]
                })
        })
    })
    .await;
    let cam = cams["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["recorder"] == "rec-a")
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .expect("rec-a records a camera");

    // rec-a records `cam` long enough to publish its coverage (10 s heartbeats), then dies.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let kill = Timestamp::now();
    r.c.node_mut("rec-a").vigie.kill9().unwrap();
    let st =
        r.c.wait_status(
            "the camera of the killed node moved",
            Duration::from_secs(30),
            |s| {
                s.assignments.get(&cam).is_some_and(|n| n != "rec-a")
                    && s.nodes.iter().any(|n| n.alive && n.cameras.contains(&cam))
            },
        )
        .await
        .unwrap();
    let owner = st.assignments[&cam].clone();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let start = kill - SignedDuration::from_secs(20);
    let end = Timestamp::now() - SignedDuration::from_secs(5);
    let path = format!("/api/v1/cameras/{cam}/streams/main/recordings?start={start}&end={end}");
    // rec-a down: its footage is `unavailable` (named), the new owner's is a span; the same
    // answer from both survivors.
    let down = same_on(
        r,
        &["rec-b", "rec-c"],
        &path,
        |v| v,
        |v| {
            v["unavailable"]
                .as_array()
                .is_some_and(|u| !u.is_empty() && u.iter().all(|u| u["node"] == "rec-a"))
                && v["spans"].as_array().is_some_and(|s| !s.is_empty())
        },
    )
    .await;
    let unavailable = down["unavailable"].as_array().unwrap();
    assert_eq!(
        unavailable[0]["start"], down["start"],
        "rec-a's footage is unavailable from the window's start: {down:#}"
    );
    let spans = down["spans"].as_array().unwrap();
    let last_span_end: Timestamp = spans.last().unwrap()["end"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        last_span_end >= end - SignedDuration::from_secs(1),
        "the new owner {owner} records up to the window's end: {down:#}"
    );

    // rec-a back: its footage is available again and merged; the same on all three nodes.
    r.c.node_mut("rec-a").vigie.spawn().unwrap();
    let back = same_on(
        r,
        &all,
        &path,
        |v| v,
        |v| {
            v["unavailable"].as_array().is_some_and(Vec::is_empty)
                && v["spans"]
                    .as_array()
                    .and_then(|s| s.first())
                    .is_some_and(|s| s["start"] == v["start"])
        },
    )
    .await;
    // The failover gap (kill → first frame on the new owner) is the only hole.
    let gaps = back["gaps"].as_array().unwrap();
    assert!(gaps.len() <= 1, "{back:#}");
    for g in gaps {
        assert!(
            g["duration_s"].as_f64().unwrap() < 10.0,
            "failover gap ≤ 10 s: {back:#}"
        );
    }
}

/// Benchmark (ignored; numbers in docs/BENCHMARKS.md): `recordings` of one camera through the
/// node recording it and through another node (which asks the owner over the internal route),
/// same run, alternated. Run: `cargo nextest run -p vigie --all-features --run-ignored
/// ignored-only -E 'test(/cluster_serve_bench/)' --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: prints numbers, asserts nothing about time"]
async fn cluster_serve_bench_recordings_through_the_owner_and_another_node() {
    let Some(r) = rig(&["rec-a", "rec-b", "rec-c"], 3).await else {
        return;
    };
    let st = r.c.status().await.unwrap();
    let cam = st
        .cameras_of("rec-a")
        .into_iter()
        .next()
        .expect("a camera on rec-a");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let end = Timestamp::now() - SignedDuration::from_secs(5);
    let start = end - SignedDuration::from_secs(25);
    let path = format!("/api/v1/cameras/{cam}/streams/main/recordings?start={start}&end={end}");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut times: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let mut answers: std::collections::BTreeMap<&str, Value> = Default::default();
    for i in 0..200 {
        let node = if i % 2 == 0 { "rec-a" } else { "rec-b" };
        let v = &r.c.node(node).vigie;
        let t = Instant::now();
        let resp = v
            .http()
            .get(format!("{}{path}", v.base_url()))
            .send()
            .await
            .unwrap();
        let ttfb = t.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(resp.status().as_u16(), 200);
        let body: Value = resp.json().await.unwrap();
        if i >= 20 {
            times.entry(node).or_default().push(ttfb);
        }
        answers.insert(node, body);
    }
    assert_eq!(answers["rec-a"], answers["rec-b"], "the same answer");
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * p).round() as usize]
    };
    for (node, mut v) in times {
        let role = if node == "rec-a" {
            "owner"
        } else {
            "non-owner"
        };
        println!(
            "recordings via {node} ({role}): n={} median {:.2} ms p90 {:.2} ms max {:.2} ms",
            v.len(),
            pct(&mut v, 0.5),
            pct(&mut v, 0.9),
            pct(&mut v, 1.0)
        );
    }
    println!("loadavg before: {load}");
}

/// A single node (no `[cluster]`) has no cluster secret: its internal routes refuse every
/// request, signed or not, and its listings are unchanged (no `unavailable`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_serve_a_single_node_refuses_every_internal_request() {
    let sim = vigie_testkit::sim::start_baseline(&["c0"]).await;
    let cams = vigie_testkit::cluster::cameras_toml(&[CameraDef::new("cam-0", sim.url("c0"))]);
    let v =
        tokio::task::block_in_place(|| vigie_testkit::VigieBuilder::new(BIN).toml(&cams).start())
            .expect("vigie");
    let key = ClusterKey::new("rec-a", &Secret::new("0123456789abcdef0123456789abcdef"));
    let who = "/internal/v1/whoami";
    let h = key.sign("GET", who, &identity("alice"), now_s());
    let (s, _, body) = get(&format!("{}{who}", v.base_url()), &h, None).await;
    assert_eq!(s, 403, "{}", json(&body));
    let (s, _, _) = get(&format!("{}{who}", v.base_url()), &[], None).await;
    assert_eq!(s, 403);
    let now = Timestamp::now();
    let (s, r) = v
        .get(&format!(
            "/api/v1/cameras/cam-0/streams/main/recordings?start={}&end={now}",
            now - SignedDuration::from_secs(60)
        ))
        .await
        .unwrap();
    assert_eq!(s, 200, "{r}");
    assert!(
        r.get("unavailable").is_none(),
        "single node: no `unavailable`: {r}"
    );
    let (s, c) = v.get("/api/v1/cameras").await.unwrap();
    assert_eq!(s, 200);
    assert_eq!(c["cameras"][0]["recorder"], Value::Null);
    assert_eq!(c["cameras"][0]["recorded_here"], true);
}

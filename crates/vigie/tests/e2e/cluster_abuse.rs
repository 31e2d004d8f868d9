//! The cluster attacked as a hostile user would (one rig: a real etcd, three real `vigie`
//! nodes sharing a cluster secret, two camsim cameras; one test, cluster tests are slow):
//!
//! * a supervisor scoped to `cam-0`, on a node that does not record `cam-1`: every route of
//!   `cam-1` (recordings, `video.mp4` with and without `Range`, `snapshot.jpg?at=`, the live
//!   WebSocket, `POST /api/v1/exports`) is refused 403 as on one node, the answers name neither
//!   the node holding `cam-1` nor its spans, and the merged `audit` leaves out `cam-1`'s
//!   entries (they are there for an unscoped admin: the filter is tested, not an empty
//!   journal);
//! * the internal routes from outside: no signature, another secret, a signature made for
//!   another path or method, a stale timestamp, a replay to the same node, and a request
//!   signed for one node replayed to another: all 401 (no write route exists: a signed
//!   `POST`/`DELETE` is 405), and none of them is journaled as a footage access.
//!
//! Run: `cargo nextest run -p vigie --all-features -E 'test(/cluster_abuse/)'`.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::{Value, json};
use vigie_api::internal::{CarriedIdentity, ClusterKey};
use vigie_core::config::Secret;
use vigie_testkit::cluster::spans_on;
use vigie_testkit::live::LiveClient;

use crate::cluster_common::rig;

const NODES: [&str; 3] = ["rec-a", "rec-b", "rec-c"];

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// A request to `base` with these headers; (status, body as text).
async fn call(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, String)],
    body: Option<&Value>,
) -> (u16, String) {
    let mut r = client().request(method, url);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    if let Some(b) = body {
        r = r.json(b);
    }
    let resp = r.send().await.expect("request");
    let s = resp.status().as_u16();
    (s, resp.text().await.unwrap_or_default())
}

async fn get(url: &str, headers: &[(&str, String)]) -> (u16, String) {
    call(reqwest::Method::GET, url, headers, None).await
}

fn identity(user: &str) -> CarriedIdentity {
    CarriedIdentity {
        user: user.into(),
        role: vigie_auth::Role::Admin,
        scope: vigie_auth::Scope::all(),
        actor: user.into(),
        request_id: format!("req-{}", Timestamp::now().as_nanosecond()),
    }
}

fn now_s() -> i64 {
    Timestamp::now().as_second()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_abuse_scoped_users_and_forged_internal_requests_are_refused_on_every_node() {
    let Some(r) = rig(&NODES, 3).await else {
        return;
    };
    let c = &r.c;
    let st = c.status().await.expect("status");
    let holder = st.assignments["cam-1"].clone();
    // The node the attacker talks to: not the one recording cam-1 (its routes relay there).
    let serving = NODES
        .iter()
        .find(|n| **n != holder)
        .expect("another node")
        .to_string();
    let s_base = c.node(&serving).vigie.base_url();
    let h_base = c.node(&holder).vigie.base_url();
    let admin = vec![(
        "authorization",
        format!(
            "Bearer {}",
            c.node(&serving).vigie.admin_token().expect("admin token")
        ),
    )];

    // Some footage of both cameras.
    let start = Timestamp::now();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let spans = spans_on(&c.node(&holder).vigie, "cam-1", start, Timestamp::now())
            .await
            .unwrap_or_default();
        if spans
            .iter()
            .any(|(a, b)| b.duration_since(*a).as_secs_f64() >= 4.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{holder} records nothing of cam-1"
        );
    }
    let end = Timestamp::now();
    let mid = start + Duration::from_secs(2);
    let window = format!("start={start}&end={end}");

    // A supervisor (every right but user management) scoped to cam-0; its token.
    let (s, body) = call(
        reqwest::Method::POST,
        &format!("{s_base}/api/v1/users"),
        &admin,
        Some(&json!({ "name": "sara", "role": "supervisor",
            "password": "sara's long passphrase", "communes": "all", "cameras": ["cam-0"] })),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let (s, body) = call(
        reqwest::Method::POST,
        &format!("{s_base}/api/v1/tokens"),
        &admin,
        Some(&json!({ "user": "sara", "name": "attack" })),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let tok: Value = serde_json::from_str(&body).expect("token json");
    let sara = vec![(
        "authorization",
        format!("Bearer {}", tok["token"].as_str().expect("token")),
    )];

    // The admin watches cam-1 through `serving` (journaled on the holder under the admin):
    // the merged audit has cam-1 entries to leave out.
    let cam1 = format!("{s_base}/api/v1/cameras/cam-1/streams/main");
    let (s, _) = get(&format!("{cam1}/video.mp4?{window}"), &admin).await;
    assert_eq!(s, 200, "the admin's cam-1 video.mp4 through {serving}");

    // Refused exactly as on one node (403), and nothing about cam-1 in the answers.
    let leaks = |what: &str, body: &str| {
        assert!(
            !body.contains(&holder) && !body.contains("spans") && !body.contains("_90k"),
            "{what}: the refusal tells something about cam-1: {body}"
        );
    };
    let (s, body) = get(
        &format!("{s_base}/api/v1/cameras/cam-0/streams/main/recordings?{window}"),
        &sara,
    )
    .await;
    assert_eq!(s, 200, "sara's own camera: {body}");
    for (what, path, range) in [
        ("recordings", format!("{cam1}/recordings?{window}"), None),
        ("video.mp4", format!("{cam1}/video.mp4?{window}"), None),
        (
            "video.mp4 Range",
            format!("{cam1}/video.mp4?{window}"),
            Some("bytes=0-99"),
        ),
        ("snapshot", format!("{cam1}/snapshot.jpg?at={mid}"), None),
    ] {
        let mut h = sara.clone();
        if let Some(r) = range {
            h.push(("range", r.to_owned()));
        }
        let (s, body) = get(&path, &h).await;
        assert_eq!(s, 403, "{what} of cam-1 for sara on {serving}: {body}");
        leaks(what, &body);
    }
    let (s, body) = call(
        reqwest::Method::POST,
        &format!("{s_base}/api/v1/exports"),
        &sara,
        Some(&json!({ "camera": "cam-1", "stream": "main",
            "start": start.to_string(), "end": end.to_string(),
            "reason": "curiosité", "procedure": "2026/00001", "requester": "personne" })),
    )
    .await;
    assert_eq!(s, 403, "export of cam-1 for sara: {body}");
    leaks("export", &body);
    let live = LiveClient::connect_as(
        c.node(&serving).vigie.port,
        "cam-1",
        "main",
        None,
        Some(sara[0].0.to_owned()).map(|k| (k, sara[0].1.clone())),
    )
    .await;
    let err = format!(
        "{:#}",
        live.err().expect("sara's live view of cam-1 refused")
    );
    assert!(err.contains("403"), "live of cam-1 refused with 403: {err}");

    // The merged audit: cam-1's entries (the admin's playback, journaled on the holder) for
    // the admin, none for sara.
    let audit = |who: Vec<(&'static str, String)>| {
        let url = format!("{s_base}/api/v1/audit?limit=1000");
        async move {
            let (s, body) = get(&url, &who).await;
            assert_eq!(s, 200, "{body}");
            serde_json::from_str::<Value>(&body).expect("audit json")
        }
    };
    let of_cam1 = |v: &Value| {
        v["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .filter(|e| e["camera"] == "cam-1")
            .count()
    };
    let a = audit(admin.clone()).await;
    assert!(of_cam1(&a) > 0, "the admin sees cam-1's entries: {a}");
    let s_view = audit(sara.clone()).await;
    assert_eq!(of_cam1(&s_view), 0, "sara sees cam-1's entries: {s_view}");
    assert!(
        !s_view.to_string().contains("\"cam-1\""),
        "sara's audit names cam-1: {s_view}"
    );

    // The internal routes from outside (at the holder, which has cam-1's footage).
    let key = ClusterKey::new(&serving, "", &Secret::new(r.secret()));
    let t90k = |t: Timestamp| vigie_core::Time90k::from_timestamp(t).0;
    let spans_pq = format!(
        "/internal/v1/cameras/cam-1/streams/main/spans?start_90k={}&end_90k={}",
        t90k(start),
        t90k(end)
    );
    let plan_pq = format!(
        "/internal/v1/cameras/cam-1/streams/main/plan?start_90k={}&end_90k={}",
        t90k(start),
        t90k(end)
    );
    // A real plan, to name a real segment.
    let h = key.sign("GET", &h_base, &plan_pq, &identity("probe"), now_s());
    let (s, body) = get(&format!("{h_base}{plan_pq}"), &h).await;
    assert_eq!(s, 200, "{body}");
    let plan: Value = serde_json::from_str(&body).expect("plan");
    let seg = plan["pieces"][0]["segment"].as_u64().expect("a segment");
    let seg_pq = format!("/internal/v1/cameras/cam-1/streams/main/segments/{seg}");
    let mallory = identity("mallory");
    let refused = |what: &'static str, s: u16, body: String| {
        assert_eq!(s, 401, "{what}: {body}");
        assert!(!body.contains("ftyp") && !body.contains("mdat"), "{what}");
    };
    let (s, body) = get(&format!("{h_base}{seg_pq}"), &[]).await;
    refused("no signature", s, body);
    let (s, body) = get(&format!("{h_base}{seg_pq}"), &sara).await;
    refused("a user's token", s, body);
    let forged = ClusterKey::new(
        &serving,
        "",
        &Secret::new("not the cluster secret, long enough"),
    );
    let h = forged.sign("GET", &h_base, &seg_pq, &mallory, now_s());
    let (s, body) = get(&format!("{h_base}{seg_pq}"), &h).await;
    refused("another secret", s, body);
    let h = key.sign("GET", &h_base, &spans_pq, &mallory, now_s());
    let (s, body) = get(&format!("{h_base}{seg_pq}"), &h).await;
    refused("signed for another path", s, body);
    let h = key.sign("HEAD", &h_base, &seg_pq, &mallory, now_s());
    let (s, body) = get(&format!("{h_base}{seg_pq}"), &h).await;
    refused("signed for another method", s, body);
    let h = key.sign("GET", &h_base, &seg_pq, &mallory, now_s() - 120);
    let (s, body) = get(&format!("{h_base}{seg_pq}"), &h).await;
    refused("a stale timestamp", s, body);
    let mut h = key.sign("GET", &h_base, &seg_pq, &mallory, now_s());
    h[0].1 = "rec-z".into(); // another sender under the same signature
    let (s, body) = get(&format!("{h_base}{seg_pq}"), &h).await;
    refused("another sender", s, body);
    // No write route: a signed POST or DELETE of an internal path is not allowed.
    for m in [reqwest::Method::POST, reqwest::Method::DELETE] {
        let h = key.sign(m.as_str(), &h_base, &seg_pq, &mallory, now_s());
        let (s, body) = call(m.clone(), &format!("{h_base}{seg_pq}"), &h, None).await;
        assert_eq!(s, 405, "{m} {seg_pq}: {body}");
    }
    // Signed for the holder, used once there, then replayed to the holder and to the third
    // node (inside the time window, a nonce the third node never saw).
    let third = NODES
        .iter()
        .find(|n| **n != holder && **n != serving)
        .expect("a third node")
        .to_string();
    let t_base = c.node(&third).vigie.base_url();
    let who_pq = "/internal/v1/whoami";
    let h = key.sign("GET", &h_base, who_pq, &identity("replayed"), now_s());
    let (s, body) = get(&format!("{h_base}{who_pq}"), &h).await;
    assert_eq!(s, 200, "the genuine request: {body}");
    let (s, body) = get(&format!("{h_base}{who_pq}"), &h).await;
    refused("replayed to the same node", s, body);
    let (s, body) = get(&format!("{t_base}{who_pq}"), &h).await;
    refused("signed for one node, replayed to another", s, body);
    let h = key.sign("GET", &h_base, &seg_pq, &identity("replayed"), now_s());
    let (s, body) = get(&format!("{t_base}{seg_pq}"), &h).await;
    refused(
        "a segment request signed for one node, sent to another",
        s,
        body,
    );

    // None of the refused requests was journaled as an access (on any node).
    for n in NODES {
        let url = format!(
            "{}/api/v1/audit?local=1&limit=10000",
            c.node(n).vigie.base_url()
        );
        let (s, body) = get(&url, &admin).await;
        assert_eq!(s, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("audit json");
        for e in v["entries"].as_array().expect("entries") {
            let actor = e["actor"].as_str().unwrap_or_default();
            assert!(
                !(actor.starts_with("mallory")
                    || actor.starts_with("replayed")
                    || (actor.starts_with("sara") && e["camera"] == "cam-1")),
                "{n} journaled a refused request: {e}"
            );
        }
    }
}

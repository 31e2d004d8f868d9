//! Cluster II (issue 15, item 6): one journal across nodes. A real etcd (1 member), three real
//! `vigie` nodes sharing a cluster secret, three camsim cameras.
//!
//! * Accesses journaled on rec-a and rec-b (legal holds placed there) appear in `audit` read
//!   from rec-c, merged in time order, each labelled with its node; paged with the per-node
//!   cursor; the CSV and the legal register (`register.csv`) carry a `node` column, and the
//!   register lists every node's recordings.
//! * The internal journal route refuses an unsigned request and a user's token.
//! * `vigie audit verify` run on rec-b checks every node's chain against its etcd anchor: OK on
//!   an intact cluster; with rec-a stopped and its journal rolled back to an older copy (a
//!   truncation its own signed head cannot see: the copy is self-consistent), it fails naming
//!   rec-a as unverifiable while rec-a is down, and as truncated once rec-a is back.
//!
//! Run: `cargo nextest run -p vigie --all-features -E 'test(/^cluster_journal/)'`.

use std::path::Path;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use vigie_api::internal::{CarriedIdentity, ClusterKey};
use vigie_core::config::Secret;
use vigie_testkit::process::Vigie;

use crate::cluster_common::{Rig, rig};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

fn journal_dir(v: &Vigie) -> std::path::PathBuf {
    v.work_dir().join("data").join("journal")
}

async fn anchors_published(v: &Vigie) -> u64 {
    let (_, m) = v.get_text("/metrics").await.unwrap_or_default();
    m.lines()
        .find(|l| l.starts_with("vigie_cluster_journal_anchors_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Places a hold on `cam` through `v` (journaled there as `hold-place`).
async fn hold(v: &Vigie, cam: &str, procedure: &str) {
    let now = Timestamp::now();
    let r = v
        .http()
        .post(format!("{}/api/v1/holds", v.base_url()))
        .json(&serde_json::json!({
            "camera": cam, "stream": "main",
            "start": (now - SignedDuration::from_secs(60)).to_string(),
            "end": (now - SignedDuration::from_secs(30)).to_string(),
            "procedure": procedure, "reason": "cluster journal test",
        }))
        .send()
        .await
        .unwrap();
    let st = r.status();
    assert!(
        st.is_success(),
        "{st}: {}",
        r.text().await.unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_journal_audit_merges_every_node_and_verify_catches_a_truncated_node() {
    // As many cameras as nodes: a settled cluster has a camera on every node.
    let Some(mut r) = rig(&["rec-a", "rec-b", "rec-c"], 3).await else {
        return;
    };

    // An older copy of rec-a's journal, taken while it is stopped (what a rollback restores).
    let snapshot = tempfile::tempdir().unwrap();
    {
        let a = &mut r.c.node_mut("rec-a").vigie;
        a.kill9().unwrap();
        copy_dir(&journal_dir(a), snapshot.path());
        a.spawn().unwrap();
    }
    r.c.wait_settled(Duration::from_secs(60))
        .await
        .expect("settled again");

    // Accesses journaled on rec-a, then on rec-b.
    let anchored_before = anchors_published(&r.c.node("rec-a").vigie).await;
    hold(&r.c.node("rec-a").vigie, "cam-0", "PROC-A").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    hold(&r.c.node("rec-b").vigie, "cam-1", "PROC-B").await;

    merged_reads(&r).await;
    forged_requests_refused(&r).await;

    // rec-a anchors its head (with the hold) in etcd: at most 10 s after the change.
    let deadline = Instant::now() + Duration::from_secs(30);
    while anchors_published(&r.c.node("rec-a").vigie).await <= anchored_before {
        assert!(Instant::now() < deadline, "rec-a anchored nothing");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (ok, out) =
        r.c.node("rec-b")
            .vigie
            .command(&["audit", "verify"])
            .unwrap();
    eprintln!("--- audit verify, intact:\n{out}");
    assert!(ok, "an intact cluster's journals refused:\n{out}");
    for n in ["rec-a", "rec-b", "rec-c"] {
        assert!(out.contains(&format!("node {n}: OK")), "{n}:\n{out}");
    }
    assert!(out.contains("node rec-a: etcd anchor held"), "{out}");

    // rec-a stopped, its journal rolled back to the older copy (self-consistent: its own signed
    // head agrees). While it is down, `audit verify` on rec-b cannot vouch for it.
    {
        let a = &mut r.c.node_mut("rec-a").vigie;
        a.kill9().unwrap();
        let dir = journal_dir(a);
        std::fs::remove_dir_all(&dir).unwrap();
        copy_dir(snapshot.path(), &dir);
    }
    let (ok, out) =
        r.c.node("rec-b")
            .vigie
            .command(&["audit", "verify"])
            .unwrap();
    eprintln!("--- audit verify, rec-a down:\n{out}");
    assert!(!ok, "a down node's journal passed:\n{out}");
    assert!(out.contains("node rec-a: UNVERIFIABLE"), "{out}");
    assert!(out.contains("node rec-c: OK"), "{out}");
    journal_page_names_nodes(&r.c.node("rec-b").vigie, "rec-a").await;

    // rec-a back: its chain ends before its anchor (or, once its agent checked the anchor, it
    // holds the tamper alarm saying so): `audit verify` on rec-b names it.
    r.c.node_mut("rec-a").vigie.spawn().unwrap();
    r.c.wait_settled(Duration::from_secs(60))
        .await
        .expect("rec-a back");
    let (ok, out) =
        r.c.node("rec-b")
            .vigie
            .command(&["audit", "verify"])
            .unwrap();
    eprintln!("--- audit verify, rec-a back:\n{out}");
    assert!(!ok, "a truncated journal passed:\n{out}");
    assert!(out.contains("node rec-a: FAILED"), "{out}");
    assert!(
        out.contains("entries were removed"),
        "the truncation is not named:\n{out}"
    );
    assert!(out.contains("node rec-c: OK"), "{out}");
    assert!(
        out.contains("access journal verification failed: rec-a"),
        "{out}"
    );
}

/// The journal page in Chromium on `v`: a node column (sequence numbers are per node) holding
/// the nodes that answered, and a message naming `down`, whose entries are missing.
async fn journal_page_names_nodes(v: &Vigie, down: &str) {
    use vigie_testkit::process::{ADMIN_PASSWORD, ADMIN_USER};
    let b = vigie_testkit::browser::Browser::start().await.unwrap();
    b.set_window_size(1400, 900).await.unwrap();
    b.sign_in(&v.base_url(), ADMIN_USER, ADMIN_PASSWORD)
        .await
        .unwrap();
    b.set_hash("#/journal").await.unwrap();
    let got = b
        .wait_js(
            "the journal table with its node column and the unavailable node's message",
            "const th = [...document.querySelectorAll('.page table th')].map((e) => e.textContent);
             const msg = document.querySelector('.page .msg.error');
             if (!th.length || !msg) return null;
             const nodes = [...document.querySelectorAll('.page table tbody tr')]
               .map((tr) => tr.cells[0].textContent);
             return { th, nodes: [...new Set(nodes)].sort(), msg: msg.textContent };",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let strings = |k: &str| -> Vec<&str> {
        got[k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect()
    };
    assert_eq!(strings("th").first(), Some(&"Nœud"), "{got}");
    let nodes = strings("nodes");
    assert!(
        nodes.contains(&"rec-b") && nodes.contains(&"rec-c") && !nodes.contains(&down),
        "{got}"
    );
    assert!(got["msg"].as_str().unwrap().contains(down), "{got}");
    b.close().await.unwrap();
}

/// `audit` and the register read from rec-c hold rec-a's and rec-b's entries, merged by time
/// and labelled.
async fn merged_reads(r: &Rig) {
    let c = &r.c.node("rec-c").vigie;
    let (st, v) = c.get("/api/v1/audit?action=hold-place").await.unwrap();
    assert_eq!(st, 200, "{v}");
    let entries = v["entries"].as_array().expect("entries");
    let mine: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["node"].as_str().unwrap_or(""),
                e["procedure"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(mine, [("rec-a", "PROC-A"), ("rec-b", "PROC-B")], "{v}");
    assert_eq!(v["unavailable_nodes"], serde_json::json!([]), "{v}");

    // Every node's entries, oldest first, each with its node; then page by page.
    let (_, all) = c.get("/api/v1/audit?limit=10000").await.unwrap();
    let all = all["entries"].as_array().expect("entries").clone();
    let times: Vec<i64> = all
        .iter()
        .map(|e| e["time_90k"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "not in time order");
    for n in ["rec-a", "rec-b", "rec-c"] {
        assert!(all.iter().any(|e| e["node"] == n), "no entry of {n}");
    }
    let mut paged: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..all.len() + 2 {
        let q = match &after {
            None => "/api/v1/audit?limit=7".to_owned(),
            Some(a) => format!("/api/v1/audit?limit=7&after={a}"),
        };
        let (st, v) = c.get(&q).await.unwrap();
        assert_eq!(st, 200, "{v}");
        paged.extend(v["entries"].as_array().unwrap().iter().cloned());
        match v["next_after"].as_str() {
            Some(a) => after = Some(a.to_owned()),
            None => break,
        }
    }
    let key = |e: &Value| (e["node"].to_string(), e["seq"].as_u64());
    // Entries journaled meanwhile (rec-c's own reads are not journaled, but other nodes may
    // journal) can only add to the end.
    assert!(paged.len() >= all.len(), "{} < {}", paged.len(), all.len());
    assert_eq!(
        paged[..all.len()].iter().map(key).collect::<Vec<_>>(),
        all.iter().map(key).collect::<Vec<_>>(),
        "pages differ from the whole"
    );

    // CSV: a node column.
    let (st, csv) = c
        .get_text("/api/v1/audit?action=hold-place&format=csv")
        .await
        .unwrap();
    assert_eq!(st, 200, "{csv}");
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().ends_with(",node"), "{csv}");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(
        rows[0].contains("PROC-A") && rows[0].ends_with(",rec-a"),
        "{csv}"
    );
    assert!(
        rows[1].contains("PROC-B") && rows[1].ends_with(",rec-b"),
        "{csv}"
    );

    // The legal register: both holds, in time order, with their node.
    let (st, reg) = c.get_text("/api/v1/register.csv").await.unwrap();
    assert_eq!(st, 200, "{reg}");
    assert!(reg.lines().next().unwrap().ends_with(",node"), "{reg}");
    let holds: Vec<&str> = reg.lines().filter(|l| l.starts_with("hold,")).collect();
    assert_eq!(holds.len(), 2, "{reg}");
    assert!(
        holds[0].contains("PROC-A") && holds[0].ends_with(",rec-a"),
        "{reg}"
    );
    assert!(
        holds[1].contains("PROC-B") && holds[1].ends_with(",rec-b"),
        "{reg}"
    );
    assert!(!reg.contains("-unavailable,"), "{reg}");
    // Every node's recordings (each from its own index), labelled.
    for n in ["rec-a", "rec-b", "rec-c"] {
        assert!(
            reg.lines()
                .any(|l| l.starts_with("recording,cam-") && l.ends_with(&format!(",{n}"))),
            "no recording row of {n}:\n{reg}"
        );
    }

    // `local=1`: rec-c's own journal only (no hold was placed there).
    let (_, v) = c
        .get("/api/v1/audit?action=hold-place&local=1")
        .await
        .unwrap();
    assert_eq!(v["entries"], serde_json::json!([]), "{v}");
}

/// The internal journal route answers only signed requests.
async fn forged_requests_refused(r: &Rig) {
    let a = &r.c.node("rec-a").vigie;
    let path = "/internal/v1/journal/entries?limit=5";
    let url = format!("{}{path}", a.base_url());
    let http = reqwest::Client::new();
    let st = http.get(&url).send().await.unwrap().status();
    assert_eq!(st, 401, "an unsigned request");
    let st = http
        .get(&url)
        .bearer_auth(a.admin_token().unwrap())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, 401, "a user's token");
    let st = http
        .get(format!("{}/internal/v1/journal/verify", a.base_url()))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, 401, "an unsigned verify");
    // Signed with the cluster secret: the entries, whole.
    let key = ClusterKey::new("rec-c", "", &Secret::new(r.secret()));
    let who = CarriedIdentity {
        user: "auditor".into(),
        role: vigie_auth::Role::Admin,
        scope: vigie_auth::Scope::all(),
        actor: "auditor".into(),
        request_id: "req-journal-test".into(),
    };
    let mut req = http.get(&url);
    for (k, v) in key.sign(
        "GET",
        &a.base_url(),
        path,
        &who,
        Timestamp::now().as_second(),
    ) {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["node"], "rec-a", "{v}");
    assert_eq!(v["entries"].as_array().map(Vec::len), Some(5), "{v}");
    assert_eq!(v["more"], true, "{v}");
    assert!(
        v["entries"][0]["hash"]
            .as_str()
            .is_some_and(|h| h.len() == 64),
        "{v}"
    );
}

//! Cluster II (issue 15 item 5): exports across nodes. A real etcd, three real `vigie` nodes
//! sharing a cluster secret, camsim cameras. The camera recorded by rec-a is killed over to
//! another node (kill -9 of rec-a) in the middle of the export's range; the export is asked of
//! the third node:
//!
//! * while rec-a is down: refused at admission (409 naming rec-a); with
//!   `"unavailable": "skip"` it is made from what is reachable and its manifest lists rec-a's
//!   part under `unavailable` (and `vigie verify` accepts it);
//! * rec-a back: one package whose master holds both holders' footage: `vigie verify` (the real
//!   binary) says VALID, `ffmpeg -xerror` decodes the master, `ffprobe -count_frames` = camsim's
//!   frames over the range minus the measured failover gap (25 fps, ±3 as in `cluster_mp4`),
//!   the signed manifest names both recorders with their stretches, in order;
//! * its `player.html` (headless Chromium, `file://`) plays it, says VALID and names both
//!   recorders;
//! * rec-a journaled what it served under the requesting user, via the third node.
//!
//! Run: `cargo nextest run -p vigie --all-features -E 'test(/^cluster_export/)'`.

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use vigie_testkit::Vigie;
use vigie_testkit::media::{ffmpeg_decodes, ffprobe};

use crate::cluster_common::{BIN, get, holders, kill_over, rig};
use crate::export::{open_player, post, unzip};

/// Asks for an export of `cam` over `[start, end)`; (status, answer).
async fn export(
    v: &Vigie,
    cam: &str,
    start: Timestamp,
    end: Timestamp,
    extra: &[(&str, Value)],
) -> (u16, Value) {
    let mut body = json!({
        "camera": cam, "stream": "main",
        "start": start.to_string(), "end": end.to_string(),
        "reason": "réquisition judiciaire", "procedure": "2026/00777",
        "requester": "OPJ Martin",
    });
    for (k, val) in extra {
        body[*k] = val.clone();
    }
    post(v, &body.to_string()).await
}

/// Waits for job `id` to be done; its package, written under the node's work directory, and
/// the package's `manifest.json`.
async fn package(v: &Vigie, id: &str, name: &str) -> (std::path::PathBuf, Value) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (code, j) = v.get(&format!("/api/v1/exports/{id}")).await.unwrap();
        assert_eq!(code, 200, "{j}");
        match j["status"].as_str().unwrap() {
            "done" => break,
            "failed" => panic!("export failed: {j}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "export not done: {j}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (s, _, body) = get(v, &format!("/api/v1/exports/{id}/package"), &[]).await;
    assert_eq!(s, 200);
    let zip = v.work_dir().join(format!("{name}.zip"));
    std::fs::write(&zip, &body).unwrap();
    let dir = v.work_dir().join(name);
    unzip(&zip, &dir);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    (zip, manifest)
}

/// `vigie verify PACKAGE` (the real binary): (valid, its report).
fn verify(package: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(BIN)
        .arg("verify")
        .arg(package)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn utc(v: &Value) -> Timestamp {
    v["utc"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_export_a_range_split_by_a_failover_verifies_and_names_both_recorders() {
    let Some(mut r) = rig(&["rec-a", "rec-b", "rec-c"], 3).await else {
        return;
    };
    let st = r.c.status().await.expect("status");
    let cam = st
        .cameras_of("rec-a")
        .into_iter()
        .next()
        .expect("rec-a records a camera");

    // rec-a records ~25 s, then dies; its camera moves to another node.
    let t0 = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(25)).await;
    let (kill, owner) = kill_over(&mut r, "rec-a", &cam).await;
    let server = if owner == "rec-b" { "rec-c" } else { "rec-b" };
    let start = t0 + SignedDuration::from_secs(2);
    let end = kill + SignedDuration::from_secs(20);

    // rec-a down: an export of a range it holds part of is refused at admission, naming it
    // (a few seconds on: the new owner has recorded some of the range).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let srv = &r.c.node(server).vigie;
    let now = Timestamp::now() - SignedDuration::from_secs(1);
    let (s, v) = export(srv, &cam, start, now, &[]).await;
    assert_eq!(s, 409, "{v}");
    assert!(v.to_string().contains("rec-a"), "names the node: {v}");
    // Allowed: what is reachable is exported, rec-a's part listed as unavailable.
    let (s, job) = export(
        srv,
        &cam,
        start,
        now,
        &[
            ("unavailable", json!("skip")),
            ("reason", json!("partielle")),
        ],
    )
    .await;
    assert_eq!(s, 202, "{job}");
    let (zip, m) = package(srv, job["id"].as_str().unwrap(), "partial").await;
    let (ok, report) = verify(&zip);
    assert!(ok, "vigie verify: {report}");
    let unavailable = m["unavailable"].as_array().expect("`unavailable` listed");
    assert!(
        unavailable.iter().any(|u| u["node"] == "rec-a"),
        "{unavailable:?}"
    );
    assert!(
        m["recorders"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["node"] == owner.as_str())),
        "only the reachable recorder: {m}"
    );

    // The range's end is recorded by the new owner; rec-a back.
    let wait = end.duration_since(Timestamp::now()).as_secs_f64() + 2.0;
    tokio::time::sleep(Duration::from_secs_f64(wait.max(0.0))).await;
    r.c.node_mut("rec-a").vigie.spawn().unwrap();
    let (on_a, on_owner, gap_s, expected) = holders(&r, "rec-a", &owner, &cam, start, end).await;
    let range_s = end.duration_since(start).as_secs_f64();

    // The export from the third node, once it sees rec-a live again.
    let srv = &r.c.node(server).vigie;
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let (s, v) = export(srv, &cam, start, end, &[]).await;
        if s == 202 {
            break v;
        }
        assert!(s == 409 && Instant::now() < deadline, "{s} {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let export_id = job["id"].as_str().unwrap().to_owned();
    let (zip, m) = package(srv, &export_id, "full").await;

    // `vigie verify`, the real binary.
    let (ok, report) = verify(&zip);
    assert!(ok, "vigie verify: {report}");
    assert!(report.contains("VALID"), "{report}");

    // The master decodes and holds every recorded frame.
    let dir = srv.work_dir().join("full");
    let master = dir.join(m["video"]["file"].as_str().unwrap());
    ffmpeg_decodes(&master).expect("ffmpeg -xerror decodes the master");
    let p = ffprobe(&master).expect("ffprobe");
    assert_eq!((p.width, p.height), (640, 360));
    assert!(
        (p.frames as i64 - expected).abs() <= 3,
        "{} frames, want camsim's {range_s:.2} s minus the failover gap {gap_s:.2} s at 25 fps = {expected} ± 3",
        p.frames
    );
    assert_eq!(m["video"]["frames"].as_u64(), Some(p.frames), "{m}");

    // The signed manifest names both recorders, in order, with their stretches.
    let rec = m["recorders"].as_array().expect("recorders");
    let nodes: Vec<&str> = rec.iter().map(|r| r["node"].as_str().unwrap()).collect();
    assert_eq!(nodes, ["rec-a", owner.as_str()], "{m}");
    let (a0, a1) = (utc(&rec[0]["start"]), utc(&rec[0]["end"]));
    let (o0, o1) = (utc(&rec[1]["start"]), utc(&rec[1]["end"]));
    let near = |x: Timestamp, y: Timestamp| x.duration_since(y).as_secs_f64().abs() < 0.1;
    assert!(near(a0, start) && near(a1, on_a[0].1), "{rec:?} {on_a:?}");
    assert!(
        near(o0, on_owner[0].0) && near(o1, end),
        "{rec:?} {on_owner:?}"
    );
    assert!(m.get("unavailable").is_none(), "{m}");
    assert_eq!(m["recorded_spans"].as_array().map(Vec::len), Some(2), "{m}");
    eprintln!(
        "cluster_export: {} frames (expected {expected}), failover gap {gap_s:.2} s, made by {server} from rec-a and {owner}",
        p.frames
    );

    // The package's offline player plays it, says VALID and names both recorders.
    let b = vigie_testkit::browser::Browser::start_with_args(&["--allow-file-access-from-files"])
        .await
        .unwrap();
    b.set_script_timeout(Duration::from_secs(30)).await.unwrap();
    let p = open_player(&b, &dir.join("player.html")).await;
    assert_eq!(p["verdict"], "valid", "{p}");
    assert!(p["currentTime"].as_f64().unwrap_or(0.0) > 0.5, "{p}");
    let summary = b
        .eval(
            "return document.getElementById('summary').innerText",
            vec![],
        )
        .await
        .unwrap();
    let summary = summary.as_str().unwrap_or_default();
    assert!(
        summary.contains("Recorders")
            && summary.contains("rec-a:")
            && summary.contains(&format!("{owner}:")),
        "{summary}"
    );

    // rec-a journaled what it served, under the user, via the third node, for this export.
    let (s, j) =
        r.c.node("rec-a")
            .vigie
            .get(&format!("/api/v1/audit?camera={cam}&action=playback"))
            .await
            .unwrap();
    assert_eq!(s, 200);
    assert!(
        j["entries"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["actor"] == job["operator"]
                && e["details"]["via_node"] == server
                && e["details"]["request_id"] == format!("export-{export_id}").as_str())),
        "rec-a journaled no access via {server} for export {export_id}: {j}"
    );
}

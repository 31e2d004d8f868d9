//! Cluster II (issue 15 item 3): one MP4 across nodes. A real etcd, three real `vigie` nodes
//! sharing a cluster secret, camsim cameras. A camera recorded by rec-a is killed over to
//! another node (kill -9 of rec-a) in the middle of a 2-minute range; `video.mp4` of the range
//! asked from a third node is one file laid out from both holders' plans and read from both:
//!
//! * while rec-a is down, its part is unavailable: 409 with the reachable spans (`gaps=error`);
//! * rec-a back: `ffmpeg -xerror` decodes the file; `ffprobe -count_frames` = camsim's frames
//!   over the range minus the measured failover gap (25 fps), within ±3 frames: one frame at
//!   each of the file's two ends (the first and last frames straddle the range's bounds, as for
//!   single-node files, see the export test's ±1) and one at each side of the failover (each
//!   node's span ends or begins within a frame of its first/last frame);
//! * `Range` requests return the same bytes as the full file, `If-None-Match` gets 304;
//! * both holders journal the access under the user, via the serving node;
//! * headless Chromium plays it and seeks into the part after the failover.
//!
//! Run: `cargo nextest run -p vigie --all-features -E 'test(/^cluster_mp4/)'`.

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use vigie_testkit::cluster::segments_on;
use vigie_testkit::media::{ffmpeg_decodes, ffprobe};

use crate::cluster_common::{BIN, get, holders, kill_over, rig, rig_with};

/// The `vigie` binary the benchmark's nodes run: this build's, or `VIGIE_BENCH_BIN`
/// (e.g. a release build: `cargo build --release -p vigie --all-features`).
fn bench_bin() -> String {
    std::env::var("VIGIE_BENCH_BIN").unwrap_or_else(|_| BIN.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_mp4_a_range_split_by_a_failover_is_one_seekable_mp4_from_a_third_node() {
    let Some(mut r) = rig(&["rec-a", "rec-b", "rec-c"], 3).await else {
        return;
    };
    let st = r.c.status().await.expect("status");
    let cam = st
        .cameras_of("rec-a")
        .into_iter()
        .next()
        .expect("rec-a records a camera");

    // rec-a records a minute, then dies; its camera moves to another node.
    let t0 = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (kill, owner) = kill_over(&mut r, "rec-a", &cam).await;
    let server = if owner == "rec-b" { "rec-c" } else { "rec-b" };
    let start = t0 + SignedDuration::from_secs(2);
    let end = kill + SignedDuration::from_secs(60);
    let video = |gaps: &str| {
        format!("/api/v1/cameras/{cam}/streams/main/video.mp4?start={start}&end={end}{gaps}")
    };

    // rec-a down: the part only it holds cannot be served (409 with the reachable spans).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (s, _, body) = get(&r.c.node(server).vigie, &video(""), &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    assert_eq!(s, 409, "{v}");
    assert!(v.to_string().contains("rec-a"), "names the node: {v}");

    // The range's end is recorded by the new owner; rec-a back.
    let wait = end.duration_since(Timestamp::now()).as_secs_f64() + 3.0;
    tokio::time::sleep(Duration::from_secs_f64(wait.max(0.0))).await;
    r.c.node_mut("rec-a").vigie.spawn().unwrap();

    // What each holder recorded (its own index), measured once rec-a answers again.
    let (_, _, gap_s, expected) = holders(&r, "rec-a", &owner, &cam, start, end).await;
    let range_s = end.duration_since(start).as_secs_f64();

    // The file from the third node: rec-a's part, then the new owner's, gaps skipped; once
    // the serving node sees rec-a live again (its listing has nothing `unavailable`: before,
    // `gaps=skip` serves only the reachable part).
    let srv = &r.c.node(server).vigie;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, v) = srv
            .get(&format!(
                "/api/v1/cameras/{cam}/streams/main/recordings?start={start}&end={end}"
            ))
            .await
            .unwrap();
        if s == 200
            && v["unavailable"].as_array().is_some_and(Vec::is_empty)
            && v["spans"].as_array().map(Vec::len) == Some(2)
        {
            break;
        }
        assert!(Instant::now() < deadline, "{server} lists {s} {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The segment holding the range's end closed (an open segment grows, and with it the
    // ETag, as on a single node): the file is then the same from request to request.
    loop {
        let segs = segments_on(&r.c.node(&owner).vigie, &cam, start, end)
            .await
            .unwrap();
        if segs.last().is_some_and(|s| !s.open) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{owner}'s last segment stays open"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let (h, full) = loop {
        let (s, h, body) = get(srv, &video("&gaps=skip"), &[]).await;
        if s == 200 {
            break (h, body);
        }
        assert!(
            Instant::now() < deadline,
            "video.mp4 from {server}: {s} {}",
            String::from_utf8_lossy(&body)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert!(
        h["x-vigie-gaps"].to_str().unwrap().starts_with("skipped"),
        "{h:?}"
    );
    assert_eq!(h["content-length"], full.len().to_string().as_str());
    let path = srv.work_dir().join("cluster.mp4");
    std::fs::write(&path, &full).unwrap();
    ffmpeg_decodes(&path).expect("ffmpeg -xerror decodes the file");
    let p = ffprobe(&path).expect("ffprobe");
    assert_eq!((p.width, p.height), (640, 360));
    assert!(
        (p.frames as i64 - expected).abs() <= 3,
        "{} frames, want camsim's {range_s:.2} s minus the failover gap {gap_s:.2} s at 25 fps = {expected} ± 3",
        p.frames
    );
    eprintln!(
        "cluster_mp4: {} bytes, {} frames (expected {expected}), failover gap {gap_s:.2} s, served by {server} from rec-a and {owner}",
        full.len(),
        p.frames
    );

    // Range requests: the same bytes as the full file (the `moov`, the boundary area around
    // the middle, the end), the same ETag; If-None-Match → 304.
    let n = full.len() as u64;
    for (a, b) in [
        (0, 999),
        (n / 2 - 300_000, n / 2 + 300_000),
        (n - 5000, n - 1),
    ] {
        let range = format!("bytes={a}-{b}");
        let (s, h, part) = get(srv, &video("&gaps=skip"), &[("range", &range)]).await;
        assert_eq!(s, 206, "{range}");
        assert_eq!(h["etag"].to_str().unwrap(), etag);
        assert!(
            part[..] == full[a as usize..=b as usize],
            "{range}: bytes differ from the full file"
        );
    }
    let (s, _, _) = get(srv, &video("&gaps=skip"), &[("if-none-match", &etag)]).await;
    assert_eq!(s, 304);
    // Another node serves the same file (same ETag).
    let (s, h, _) = get(
        &r.c.node("rec-a").vigie,
        &video("&gaps=skip"),
        &[("range", "bytes=0-0")],
    )
    .await;
    assert_eq!(s, 206);
    assert_eq!(
        h["etag"].to_str().unwrap(),
        etag,
        "the same file from rec-a"
    );

    // Both holders journaled what they served, for the admin, via the serving node.
    for holder in ["rec-a", owner.as_str()] {
        let (s, j) =
            r.c.node(holder)
                .vigie
                .get(&format!("/api/v1/audit?camera={cam}&action=playback"))
                .await
                .unwrap();
        assert_eq!(s, 200);
        assert!(
            j["entries"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e.to_string().contains(server))),
            "{holder} journaled no access via {server}: {j}"
        );
    }

    // Chromium plays the file and seeks into the part after the failover.
    let url = format!("{}{}", srv.base_url(), video("&gaps=skip"));
    let b = vigie_testkit::browser::Browser::start().await.unwrap();
    b.set_script_timeout(Duration::from_secs(60)).await.unwrap();
    b.goto(&format!("{}/api/v1/health", srv.base_url()))
        .await
        .unwrap();
    let v = b
        .execute_async(
            r#"const [url, done] = arguments;
               const v = document.createElement('video');
               v.id = 'under-test';
               v.muted = true; v.preload = 'auto';
               document.body.appendChild(v);
               v.onerror = () => done({error: String(v.error && v.error.message)});
               v.addEventListener('loadeddata', () => done({
                   readyState: v.readyState, width: v.videoWidth, duration: v.duration}),
                   {once: true});
               v.src = url;"#,
            vec![url.into()],
        )
        .await
        .unwrap();
    assert!(v["readyState"].as_u64().unwrap_or(0) >= 2, "{v}");
    let d = v["duration"].as_f64().unwrap();
    assert!(
        (d - (range_s - gap_s)).abs() < 0.5,
        "duration {d} s, want {:.2}",
        range_s - gap_s
    );
    let target = d - 20.0; // inside the new owner's part
    let v = b
        .execute_async(
            r#"const [t, done] = arguments;
               const v = document.getElementById('under-test');
               v.addEventListener('seeked', () => done({currentTime: v.currentTime,
                   readyState: v.readyState}), {once: true});
               v.currentTime = t;"#,
            vec![target.into()],
        )
        .await
        .unwrap();
    let t = v["currentTime"].as_f64().unwrap();
    assert!((t - target).abs() < 0.05, "seeked to {t}, asked {target}");
    let v = b
        .execute_async(
            r#"const done = arguments[0];
               const v = document.getElementById('under-test');
               const t0 = v.currentTime;
               v.play().then(() => setTimeout(() => done({t0, t1: v.currentTime}), 1000),
                             e => done({error: String(e)}));"#,
            vec![],
        )
        .await
        .unwrap();
    assert!(
        v["t1"].as_f64().unwrap_or(0.0) > v["t0"].as_f64().unwrap_or(0.0) + 0.3,
        "it plays: {v}"
    );
}

/// Benchmark (ignored; numbers in docs/BENCHMARKS.md): `video.mp4` of one camera's last
/// minute through the node recording it and through another node (which lays the file out
/// from the owner's plan and reads its tables and `mdat` over the signed internal routes),
/// same run, alternated: time to the response headers and to the first body byte, and the
/// throughput of the whole file. Run: `cargo nextest run -p vigie --all-features
/// --run-ignored ignored-only -E 'test(/cluster_mp4_bench/)' --no-capture`; `VIGIE_BENCH_BIN`
/// (the nodes' binary), `VIGIE_BENCH_RANGE_S` (the file's length, 60 s) and
/// `VIGIE_BENCH_REQUESTS` (per node, 30; the first 5 dropped) change it.
/// `VIGIE_BENCH_UPLINK_MBIT=N` (root, `tc`): each node's answers leave through its own uplink
/// of N Mbit/s, as if each node were a machine on its own network link (loopback traffic is
/// classified by the node's HTTP port as source port: an HTB class per node); the owner's
/// answers to the client and to the relaying node share the owner's uplink, as on a network.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: prints numbers, asserts nothing about time"]
async fn cluster_mp4_bench_video_through_the_owner_and_another_node() {
    let Some(r) = rig_with(&["rec-a", "rec-b", "rec-c"], 3, |cfg| {
        cfg.bin = bench_bin().into()
    })
    .await
    else {
        return;
    };
    let _uplinks = std::env::var("VIGIE_BENCH_UPLINK_MBIT")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map(|mbit| {
            let ports: Vec<u16> = ["rec-a", "rec-b", "rec-c"]
                .iter()
                .map(|n| {
                    let url = r.c.node(n).vigie.base_url();
                    url.rsplit(':').next().unwrap().parse().unwrap()
                })
                .collect();
            Uplinks::set(&ports, mbit)
        });
    let st = r.c.status().await.unwrap();
    let cam = st
        .cameras_of("rec-a")
        .into_iter()
        .next()
        .expect("a camera on rec-a");
    let per_node: usize = std::env::var("VIGIE_BENCH_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
        .max(6);
    let secs: i64 = std::env::var("VIGIE_BENCH_RANGE_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    tokio::time::sleep(Duration::from_secs(secs as u64 + 8)).await;
    let end = Timestamp::now() - SignedDuration::from_secs(5);
    let start = end - SignedDuration::from_secs(secs);
    let path = format!("/api/v1/cameras/{cam}/streams/main/video.mp4?start={start}&end={end}");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    type Times = Vec<(f64, f64, f64, f64)>;
    let mut times: std::collections::BTreeMap<&str, Times> = Default::default();
    let mut bodies: std::collections::BTreeMap<&str, bytes::Bytes> = Default::default();
    let mut len = 0;
    for i in 0..2 * per_node {
        let node = if i % 2 == 0 { "rec-a" } else { "rec-b" };
        let v = &r.c.node(node).vigie;
        let t = Instant::now();
        let mut resp = reqwest::Client::new()
            .get(format!("{}{path}", v.base_url()))
            .bearer_auth(v.admin_token().unwrap())
            .send()
            .await
            .unwrap();
        let headers_ms = t.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(resp.status().as_u16(), 200, "{node}");
        let mut body = Vec::new();
        let mut first_ms = None;
        while let Some(c) = resp.chunk().await.unwrap() {
            first_ms.get_or_insert(t.elapsed().as_secs_f64() * 1000.0);
            body.extend_from_slice(&c);
        }
        let total_s = t.elapsed().as_secs_f64();
        len = body.len();
        if i >= 10 {
            let first = first_ms.unwrap_or(0.0);
            times.entry(node).or_default().push((
                headers_ms,
                first,
                body.len() as f64 / total_s / 1e6,
                body.len() as f64 / (total_s - first / 1000.0) / 1e6,
            ));
        }
        bodies.insert(node, body.into());
    }
    assert!(bodies["rec-a"] == bodies["rec-b"], "the same bytes");
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * p).round() as usize]
    };
    for (node, v) in times {
        let role = if node == "rec-a" {
            "owner"
        } else {
            "non-owner"
        };
        let mut h: Vec<f64> = v.iter().map(|t| t.0).collect();
        let mut f: Vec<f64> = v.iter().map(|t| t.1).collect();
        let mut m: Vec<f64> = v.iter().map(|t| t.2).collect();
        let mut after: Vec<f64> = v.iter().map(|t| t.3).collect();
        println!(
            "video.mp4 ({len} bytes, {secs} s) via {node} ({role}): n={} headers median {:.2} ms p90 {:.2} ms; first byte median {:.2} ms p90 {:.2} ms; throughput (whole request) median {:.1} MB/s min {:.1} MB/s; after the first byte median {:.1} MB/s",
            v.len(),
            pct(&mut h, 0.5),
            pct(&mut h, 0.9),
            pct(&mut f, 0.5),
            pct(&mut f, 0.9),
            pct(&mut m, 0.5),
            pct(&mut m, 0.0),
            pct(&mut after, 0.5),
        );
    }
    println!("loadavg before: {load}");
}

/// Per-node uplinks on loopback (HTB classes keyed by source port); removed on drop.
struct Uplinks;

impl Uplinks {
    fn set(ports: &[u16], mbit: u32) -> Uplinks {
        let tc = |args: &str| {
            let out = std::process::Command::new("tc")
                .args(args.split_whitespace())
                .output()
                .expect("tc (iproute2)");
            assert!(
                out.status.success(),
                "tc {args}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let _ = std::process::Command::new("tc")
            .args(["qdisc", "del", "dev", "lo", "root"])
            .output();
        tc("qdisc add dev lo root handle 1: htb default 99");
        tc("class add dev lo parent 1: classid 1:99 htb rate 50gbit quantum 200000");
        for (i, p) in ports.iter().enumerate() {
            let id = 10 + i;
            tc(&format!(
                "class add dev lo parent 1: classid 1:{id} htb rate {mbit}mbit ceil {mbit}mbit burst 256k cburst 256k quantum 65536"
            ));
            tc(&format!(
                "filter add dev lo parent 1: protocol ip prio 1 u32 match ip sport {p} 0xffff flowid 1:{id}"
            ));
        }
        println!("uplinks: {mbit} Mbit/s per node (source ports {ports:?})");
        Uplinks
    }
}

impl Drop for Uplinks {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tc")
            .args(["qdisc", "del", "dev", "lo", "root"])
            .output();
    }
}

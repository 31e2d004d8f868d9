//! Cluster II (issue 15), live and stills through any node, and the UI of a cluster: a real
//! etcd, three real `vigie` nodes sharing a cluster secret, camsim cameras.
//!
//! * The internal live route refuses what no node signed (401) and a node that does not record
//!   the camera says so (409).
//! * A viewer connected to a node that does not record the camera gets its live view relayed
//!   from the recorder (media that ffmpeg decodes); a still asked of such a node is a valid
//!   JPEG rendered by the recorder, which journals both under the user, naming the node.
//! * kill -9 of the recorder: the same WebSockets (on both other nodes) keep delivering once
//!   the camera has failed over, on one continuous decode timeline that ffmpeg decodes whole.
//! * Chromium on a node that does not record the camera: the cameras page names the recorder,
//!   the live wall plays it, and with the old recorder down the timeline shades its footage
//!   `unavailable`.
//!
//! Run: `cargo nextest run -p vigie --all-features -E 'test(/^cluster_live/)'`.

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use vigie_api::internal::{CarriedIdentity, ClusterKey};
use vigie_core::config::Secret;
use vigie_testkit::browser::Browser;
use vigie_testkit::cluster::spans_on;
use vigie_testkit::live::{LiveClient, LiveEvent};
use vigie_testkit::media::{ffmpeg_decodes, ffprobe};
use vigie_testkit::process::{ADMIN_PASSWORD, ADMIN_USER};

use crate::cluster_common::{Rig, rig, rig_with};

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// The HTTP status of a WebSocket upgrade to `url` with these headers (101: accepted).
async fn upgrade_status(url: &str, headers: &[(&'static str, String)]) -> u16 {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(*k, v.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut ws, resp)) => {
            let _ = ws.close(None).await;
            resp.status().as_u16()
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("upgrade {url}: {e}"),
    }
}

fn identity(user: &str) -> CarriedIdentity {
    CarriedIdentity {
        user: user.into(),
        role: vigie_auth::Role::Operator,
        scope: vigie_auth::Scope::all(),
        actor: format!("{user} (test)"),
        request_id: format!("req-{}", Timestamp::now().as_nanosecond()),
    }
}

/// What one viewer received: the events in order.
struct Viewer {
    node: String,
    client: LiveClient,
    events: Vec<LiveEvent>,
}

impl Viewer {
    fn media(&self) -> Vec<&Value> {
        self.events
            .iter()
            .filter_map(|e| match e {
                LiveEvent::Media { meta, .. } => Some(meta),
                _ => None,
            })
            .collect()
    }
    /// Media segments received after the first `streaming` notice naming `node`.
    fn media_from(&self, node: &str) -> Option<usize> {
        let at = self
            .client
            .notices
            .iter()
            .find(|(_, n)| n["state"] == "streaming" && n["node"] == node)?;
        Some(self.media().len() - at.0)
    }
    async fn read_for(&mut self, d: Duration) {
        let got = self.client.collect_for(d).await.expect("live events");
        assert!(
            !got.iter().any(|e| matches!(e, LiveEvent::Closed { .. })),
            "the viewer on {} was closed: {:?}",
            self.node,
            got.last()
        );
        self.events.extend(got);
    }
    /// Checks the protocol (init first, the first media a key frame, continuous decode times)
    /// and decodes everything received with ffmpeg; returns the number of frames.
    fn check_decodes(&self, dir: &std::path::Path) -> u64 {
        // A `drop` (a viewer or an encoder that fell behind) is followed by a key frame.
        let mut it = self
            .events
            .iter()
            .filter(|e| !matches!(e, LiveEvent::Drop { .. }));
        let Some(LiveEvent::Init { .. }) = it.next() else {
            panic!("{}: the first event is not an init", self.node)
        };
        let media = self.media();
        assert!(!media.is_empty(), "{}: no media", self.node);
        assert_eq!(
            media[0]["key"], true,
            "{}: first media not a key frame",
            self.node
        );
        for w in media.windows(2) {
            assert_eq!(
                w[0]["dts_90k"].as_u64().unwrap() + w[0]["duration_90k"].as_u64().unwrap(),
                w[1]["dts_90k"].as_u64().unwrap(),
                "{}: decode times not continuous: {} then {}",
                self.node,
                w[0],
                w[1]
            );
        }
        // One file per init segment (a new init only if the codec parameters changed).
        let mut files: Vec<Vec<u8>> = Vec::new();
        let mut frames = 0;
        for e in &self.events {
            match e {
                LiveEvent::Init { data, .. } => files.push(data.to_vec()),
                LiveEvent::Media { meta, data } => {
                    files.last_mut().unwrap().extend_from_slice(data);
                    frames += meta["frames"].as_u64().unwrap();
                }
                _ => {}
            }
        }
        for (i, f) in files.iter().enumerate() {
            let p = dir.join(format!("live-{}-{i}.mp4", self.node));
            std::fs::write(&p, f).unwrap();
            ffmpeg_decodes(&p).unwrap_or_else(|e| panic!("{}: {e:#}", self.node));
        }
        frames
    }
}

fn via_node<'a>(r: &'a Rig, name: &str) -> &'a vigie_testkit::Vigie {
    &r.c.node(name).vigie
}

/// Some node journaled `action` on `cam` for a view or still asked through node `via`.
async fn journal_any(r: &Rig, cam: &str, action: &str, via: &str) {
    let mut seen = Vec::new();
    for n in ["rec-a", "rec-b", "rec-c"] {
        let v = &r.c.node(n).vigie;
        let (s, j) = v
            .get(&format!("/api/v1/audit?camera={cam}&action={action}"))
            .await
            .unwrap();
        assert_eq!(s, 200, "{j}");
        if j["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["details"]["via_node"] == via && n != via)
        {
            return;
        }
        seen.push(j);
    }
    panic!("no node journaled {action} of {cam} via {via}: {seen:?}");
}

async fn journal_has(v: &vigie_testkit::Vigie, cam: &str, action: &str, via: &str) -> Value {
    let (s, j) = v
        .get(&format!("/api/v1/audit?camera={cam}&action={action}"))
        .await
        .unwrap();
    assert_eq!(s, 200, "{j}");
    let hit = j["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["details"]["via_node"] == via)
        .cloned();
    hit.unwrap_or_else(|| panic!("no {action} entry of {cam} via {via}: {j}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_live_and_stills_through_any_node_follow_a_failover() {
    let Some(mut r) = rig(&["rec-a", "rec-b", "rec-c"], 3).await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let status = r.c.status().await.unwrap();
    let cam = "cam-0".to_owned();
    let rec = status.assignments[&cam].clone();
    let others: Vec<String> = ["rec-a", "rec-b", "rec-c"]
        .iter()
        .map(|s| s.to_string())
        .filter(|n| *n != rec)
        .collect();
    let recorder = &r.c.node(&rec).vigie;
    let live_path = format!("/internal/v1/cameras/{cam}/streams/main/live");

    // The internal live route: nothing, a user's token, another secret → 401; a signed request
    // to a node that does not record the camera → 409.
    let ws_url = |v: &vigie_testkit::Vigie| {
        format!(
            "{}{live_path}",
            v.base_url().replacen("http://", "ws://", 1)
        )
    };
    assert_eq!(upgrade_status(&ws_url(recorder), &[]).await, 401);
    let token = format!("Bearer {}", recorder.admin_token().unwrap());
    assert_eq!(
        upgrade_status(&ws_url(recorder), &[("authorization", token)]).await,
        401
    );
    let now_s = Timestamp::now().as_second();
    let forged = ClusterKey::new(
        &others[0],
        &Secret::new("not the cluster secret, long enough"),
    );
    let h = forged.sign("GET", &live_path, &identity("mallory"), now_s);
    assert_eq!(upgrade_status(&ws_url(recorder), &h).await, 401);
    let key = ClusterKey::new(&others[0], &Secret::new(r.secret()));
    let h = key.sign("GET", &live_path, &identity("alice"), now_s);
    let other = &r.c.node(&others[1]).vigie;
    assert_eq!(upgrade_status(&ws_url(other), &h).await, 409);

    // A viewer on each node that does not record the camera.
    let mut viewers = Vec::new();
    for n in &others {
        let v = &r.c.node(n).vigie;
        let client = LiveClient::connect(port_of(&v.base_url()), &cam, "main", None)
            .await
            .unwrap();
        viewers.push(Viewer {
            node: n.clone(),
            client,
            events: Vec::new(),
        });
    }
    for v in &mut viewers {
        let deadline = Instant::now() + Duration::from_secs(20);
        // Relayed from the recorder (the camera may move meanwhile on a loaded machine: the
        // cluster's balance is not the point here).
        let relayed = |v: &Viewer| {
            v.client
                .notices
                .iter()
                .any(|(_, n)| n["state"] == "streaming")
                && v.media().len() >= 25
        };
        while !relayed(v) && Instant::now() < deadline {
            v.read_for(Duration::from_secs(1)).await;
        }
        assert!(
            relayed(v),
            "{}: no media relayed from {rec}: notices {:?}, {} media",
            v.node,
            v.client.notices,
            v.media().len()
        );
    }

    // The H.264 fallback still applies on the node the user called: re-encoded there from the
    // relayed frames.
    let port = port_of(&via_node(&r, &others[0]).base_url());
    let auth = vigie_testkit::process::credentials_for_port(port)
        .map(|c| ("authorization".to_owned(), format!("Bearer {}", c.token)));
    let mut t = Viewer {
        node: format!("{}-h264", others[0]),
        client: LiveClient::connect_query(port, &cam, "main", "transcode=h264", None, auth)
            .await
            .unwrap(),
        events: Vec::new(),
    };
    // The encoder starts at the first relayed key frame: wait for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(30);
    while t.media().len() < 10 {
        assert!(
            Instant::now() < deadline,
            "transcoded view: {} media in 30 s",
            t.media().len()
        );
        t.read_for(Duration::from_secs(1)).await;
    }
    let Some(LiveEvent::Init { meta, .. }) = t
        .events
        .iter()
        .find(|e| !matches!(e, LiveEvent::Drop { .. }))
    else {
        panic!("transcoded view: no init: {:?}", t.events.first())
    };
    assert!(
        meta["codec"].as_str().unwrap().starts_with("avc1"),
        "{meta}"
    );
    t.check_decodes(tmp.path());
    t.client.close().await;

    // A still from a node that does not record the camera: a JPEG of the camera's size,
    // rendered and journaled by the recorder.
    let via = &r.c.node(&others[0]).vigie;
    let resp = via
        .http()
        .get(format!(
            "{}/api/v1/cameras/{cam}/streams/main/snapshot.jpg",
            via.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "image/jpeg");
    let jpeg = resp.bytes().await.unwrap();
    assert_eq!(&jpeg[..2], &[0xff, 0xd8], "not a JPEG");
    let p = tmp.path().join("still.jpg");
    std::fs::write(&p, &jpeg).unwrap();
    let probe = ffprobe(&p).unwrap();
    assert_eq!(
        (probe.codec.as_str(), probe.width, probe.height),
        ("mjpeg", 640, 360)
    );
    journal_any(&r, &cam, "still", &others[0]).await;
    journal_any(&r, &cam, "live-start", &others[1]).await;

    // The camera's recorder now (it may have moved since the start on a loaded machine).
    let rec = r.c.status().await.unwrap().assignments[&cam].clone();
    viewers.retain(|v| v.node != rec);
    let others: Vec<String> = ["rec-a", "rec-b", "rec-c"]
        .iter()
        .map(|s| s.to_string())
        .filter(|n| *n != rec)
        .collect();

    // kill -9 of the recorder: both sockets stay open and resume from the new recorder.
    let killed_at = Timestamp::now();
    r.c.node_mut(&rec).vigie.kill9().unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut new_rec = None;
    for v in &mut viewers {
        loop {
            v.read_for(Duration::from_secs(1)).await;
            let resumed = v
                .client
                .notices
                .iter()
                .rev()
                .find(|(_, n)| n["state"] == "streaming" && n["node"] != rec.as_str());
            if let Some((_, n)) = resumed {
                let node = n["node"].as_str().unwrap().to_owned();
                if v.media_from(&node).is_some_and(|m| m >= 25) {
                    new_rec = Some(node);
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{}: no media after the failover: notices {:?}",
                v.node,
                v.client.notices
            );
        }
        assert!(
            v.client
                .notices
                .iter()
                .any(|(_, n)| n["state"] == "following" && n["from"] == rec.as_str()),
            "{}: the relay did not say it was following: {:?}",
            v.node,
            v.client.notices
        );
        let frames = v.check_decodes(tmp.path());
        eprintln!(
            "{}: {frames} frames decoded across the failover; notices {:?}",
            v.node, v.client.notices
        );
    }
    let new_rec = new_rec.unwrap();
    assert_ne!(new_rec, rec);

    // Stills of the past through the node that does not record the camera now: an instant the
    // new recorder holds is rendered there; one only the dead node holds is a clear 502.
    let serving = others.iter().find(|n| **n != new_rec).unwrap_or(&others[0]);
    let v = &r.c.node(serving).vigie;
    let holder = &r.c.node(&new_rec).vigie;
    let deadline = Instant::now() + Duration::from_secs(30);
    let at = loop {
        let spans = spans_on(
            holder,
            &cam,
            killed_at - SignedDuration::from_secs(60),
            Timestamp::now() + SignedDuration::from_secs(60),
        )
        .await
        .unwrap();
        // Its last span: the one it started at the failover (it may hold a short one from the
        // first assignment, before the cluster settled).
        if let Some((a, e)) = spans.last()
            && *a >= killed_at - SignedDuration::from_secs(1)
            && e.duration_since(*a).as_secs_f64() >= 4.0
        {
            break *a + SignedDuration::from_secs(2);
        }
        assert!(
            Instant::now() < deadline,
            "{new_rec} holds nothing of {cam}: {spans:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let still_at = |at: Timestamp| {
        let url = format!(
            "{}/api/v1/cameras/{cam}/streams/main/snapshot.jpg?at={at}",
            v.base_url()
        );
        async move {
            let resp = v.http().get(url).send().await.unwrap();
            (resp.status().as_u16(), resp.bytes().await.unwrap())
        }
    };
    let (s, body) = still_at(at).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    std::fs::write(&p, &body).unwrap();
    assert_eq!(ffprobe(&p).unwrap().width, 640);
    journal_has(holder, &cam, "still", serving).await;
    let (s, body) = still_at(killed_at - SignedDuration::from_secs(5)).await;
    let err: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(s, 502, "{err}");
    assert_eq!(err["error"]["code"], "node_unavailable", "{err}");
    assert!(err.to_string().contains(&rec), "{err}");

    // Chromium on the node that does not record the camera now.
    ui(v, &cam, &rec, &new_rec, killed_at).await;
    for v in viewers {
        v.client.close().await;
    }
}

/// Nodes serving HTTPS (advertise URLs `https://`, the cluster CA in `cluster.ca_file`): a
/// viewer (wss://) on a node that does not record the camera gets the live view relayed over
/// wss:// from the recorder, and a still rendered there over HTTPS.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_live_relays_over_https_between_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = vigie_testkit::process::self_signed_cert(tmp.path()).unwrap();
    let Some(r) = rig_with(&["rec-a", "rec-b", "rec-c"], 3, |c| {
        c.tls = Some((cert, key))
    })
    .await
    else {
        eprintln!("skipped: etcd is not installed");
        return;
    };
    let cam = "cam-0";
    let rec = r.c.status().await.unwrap().assignments[cam].clone();
    let via = ["rec-a", "rec-b", "rec-c"]
        .into_iter()
        .find(|n| *n != rec)
        .unwrap();
    let v = &r.c.node(via).vigie;
    assert!(v.base_url().starts_with("https://"), "{}", v.base_url());
    let client = LiveClient::connect(port_of(&v.base_url()), cam, "main", None)
        .await
        .unwrap();
    let mut viewer = Viewer {
        node: via.to_owned(),
        client,
        events: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while viewer.media_from(&rec).is_none_or(|n| n < 25) {
        assert!(
            Instant::now() < deadline,
            "no media relayed from {rec} over wss: notices {:?}\n{}",
            viewer.client.notices,
            v.log()
        );
        viewer.read_for(Duration::from_secs(1)).await;
    }
    let frames = viewer.check_decodes(tmp.path());
    assert!(frames >= 25, "{frames}");
    viewer.client.close().await;
    journal_any(&r, cam, "live-start", via).await;

    // A still through the same node, rendered by the recorder over HTTPS.
    let resp = v
        .http()
        .get(format!(
            "{}/api/v1/cameras/{cam}/streams/main/snapshot.jpg",
            v.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let jpeg = resp.bytes().await.unwrap();
    assert_eq!(&jpeg[..2], &[0xff, 0xd8], "not a JPEG");
    journal_has(&r.c.node(&rec).vigie, cam, "still", via).await;
}

/// The UI on `v`: the recorder column, the live wall through the relay, the unavailable shade
/// of the footage `down` holds.
async fn ui(v: &vigie_testkit::Vigie, cam: &str, down: &str, recorder: &str, killed_at: Timestamp) {
    let b = Browser::start().await.unwrap();
    b.set_window_size(1400, 900).await.unwrap();
    let eval = |code: &'static str, args: Vec<Value>| {
        let b = &b;
        async move {
            b.eval(code, args)
                .await
                .unwrap_or_else(|e| panic!("{e:#}\n{code}"))
        }
    };
    let wait = |what: &'static str, code: &'static str, args: Vec<Value>| {
        let b = &b;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let got = b.eval(code, args.clone()).await.unwrap_or(Value::Null);
                if !got.is_null() && got != json!(false) {
                    return got;
                }
                if Instant::now() > deadline {
                    let page = b
                        .eval("return document.body.innerText.slice(0, 2000)", vec![])
                        .await
                        .unwrap_or_default();
                    panic!("timed out waiting for {what}; last {got}; page:\n{page}");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    b.goto_anonymous(&format!("{}/", v.base_url()))
        .await
        .unwrap();
    wait(
        "the login form",
        "return document.querySelector('#username') !== null",
        vec![],
    )
    .await;
    eval(
        "const [u, p] = arguments;
         document.querySelector('#username').value = u;
         document.querySelector('#password').value = p;
         document.querySelector('#login-submit').click(); return true;",
        vec![json!(ADMIN_USER), json!(ADMIN_PASSWORD)],
    )
    .await;
    wait(
        "the app",
        "return document.querySelector('header.hdr') !== null",
        vec![],
    )
    .await;

    // The cameras page names the node recording the camera.
    eval("location.hash = '#/cameras'; return true;", vec![]).await;
    let shown = wait(
        "the recorder column",
        "const el = document.querySelector(`article[data-camera='${arguments[0]}'] .recorder`);
         return el && el.dataset.recorder ? {nodes: el.dataset.recorder, text: el.innerText} : null;",
        vec![json!(cam)],
    )
    .await;
    assert_eq!(shown["nodes"], recorder, "{shown}");
    assert!(
        shown["text"].as_str().unwrap().contains(recorder),
        "{shown}"
    );

    // The live wall plays the camera through this node.
    eval(
        "location.hash = '#/live?cams=' + arguments[0] + '&layout=1'; return true;",
        vec![json!(cam)],
    )
    .await;
    let live = wait(
        "the live tile to play",
        "const t = window.vigie.live && window.vigie.live.tiles[0];
         return t && t.state.state === 'playing' && t.video.currentTime > 1 ? t.state : null;",
        vec![],
    )
    .await;
    assert!(
        live["recorders"].to_string().contains(recorder),
        "the tile does not name the recorder: {live}"
    );

    // The playback timeline shades what the dead node holds as unavailable.
    eval(
        "location.hash = '#/playback/' + arguments[0]; return true;",
        vec![json!(cam)],
    )
    .await;
    let shade = wait(
        "the unavailable shade",
        "const el = document.querySelector(`.tl-row[data-camera='${arguments[0]}'] .tl-unavailable`);
         if (!el) return null;
         const r = el.getBoundingClientRect();
         return {node: el.dataset.node, start: el.dataset.start, end: el.dataset.end, width: r.width,
                 color: getComputedStyle(el).backgroundImage};",
        vec![json!(cam)],
    )
    .await;
    assert_eq!(shade["node"], down, "{shade}");
    assert!(shade["width"].as_f64().unwrap() >= 1.0, "{shade}");
    let end: Timestamp = shade["end"].as_str().unwrap().parse().unwrap();
    assert!(
        end <= killed_at + SignedDuration::from_secs(60)
            && end >= killed_at - SignedDuration::from_secs(60),
        "the unavailable span ends near the kill ({killed_at}): {shade}"
    );
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    b.screenshot_to(&shots.join("cluster-timeline-unavailable.png"))
        .await
        .unwrap();
    b.close().await.unwrap();
}

//! RTSP/RTP behaviour checked with the in-test client: timing, looping, status codes, auth,
//! RTCP, many mounts.

mod common;

use std::time::Duration;

use common::*;
use vigie_camsim::auth::{REALM, digest_response};
use vigie_camsim::{Auth, MountConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_and_sequence_continue_across_loops() {
    // 250 frames at 10x speed: one loop per second.
    let f = fixture(BASELINE);
    let server = start(vec![MountConfig::new("cam", f.clone()).with_speed(10.0)]).await;
    let mut c = Client::connect(&server.url("cam")).await.unwrap();
    let play = c.play().await.unwrap();
    let info = play.header("RTP-Info").unwrap().to_owned();
    assert!(
        info.starts_with(&format!("url={}/trackID=0;seq=", server.url("cam"))),
        "{info}"
    );
    let aus = read_aus(&mut c, Duration::from_millis(2600)).await;
    assert!(
        aus.len() >= 520,
        "only {} frames in 2.6 s at 10x",
        aus.len()
    );
    // The first packet matches RTP-Info.
    assert!(
        info.contains(&format!(";seq={};", aus[0].first_seq)),
        "{info}"
    );
    assert!(info.ends_with(&format!(";rtptime={}", aus[0].ts)), "{info}");
    // Every frame advances by exactly 90000/25 ticks, across loop boundaries too.
    assert!(
        ts_deltas(&aus).iter().all(|&d| d == 3600),
        "{:?}",
        ts_deltas(&aus)
    );
    // Key frames every 50 frames, each with SPS+PPS in band; the loop point is a key frame.
    for (i, au) in aus.iter().enumerate() {
        assert_eq!(au.key(), i % 50 == 0, "frame {i}");
        if au.key() {
            assert_eq!(&au.nal_types[..2], &[7, 8]);
        }
    }
    assert_eq!(aus[250].sps, aus[0].sps);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_time_pacing() {
    let server = start(vec![MountConfig::new("cam", fixture(BASELINE))]).await;
    let mut c = Client::connect(&server.url("cam")).await.unwrap();
    c.play().await.unwrap();
    let aus = read_aus(&mut c, Duration::from_secs(2)).await;
    assert!(
        (45..=52).contains(&aus.len()),
        "{} frames in 2 s at 25 fps",
        aus.len()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_and_malformed_input() {
    let server = start(vec![MountConfig::new("cam", fixture(BASELINE))]).await;
    let url = server.url("cam");
    let mut c = Client::connect(&url).await.unwrap();
    let r = c.request("OPTIONS", "*", &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("Public").unwrap().contains("DESCRIBE"));
    let other = url.replace("/cam", "/nope");
    assert_eq!(
        c.request("DESCRIBE", &other, &[]).await.unwrap().status,
        404
    );
    assert_eq!(c.request("PLAY", &url, &[]).await.unwrap().status, 455);
    let track = format!("{url}/trackID=0");
    let bad_transports = [
        "RTP/AVP;multicast",
        "RTP/SAVP;unicast;client_port=1-2",
        "junk",
    ];
    for t in bad_transports {
        let r = c
            .request("SETUP", &track, &[("Transport", t)])
            .await
            .unwrap();
        assert_eq!(r.status, 461, "{t}");
    }
    assert_eq!(c.request("SETUP", &track, &[]).await.unwrap().status, 461);
    let r = c
        .request(
            "SETUP",
            &format!("{url}/trackID=7"),
            &[("Transport", "RTP/AVP/TCP;interleaved=0-1")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(c.request("RECORD", &url, &[]).await.unwrap().status, 501);
    let r = c
        .request("PLAY", &url, &[("Session", "DEADBEEF")])
        .await
        .unwrap();
    assert_eq!(r.status, 454);
    // Malformed request line, with CSeq: 400 echoing it, connection stays usable.
    c.send_raw(b"this is not rtsp\r\nCSeq: 77\r\n\r\n")
        .await
        .unwrap();
    let r = c.read_response().await.unwrap();
    assert_eq!((r.status, r.header("CSeq")), (400, Some("77")));
    c.send_raw(b"\xff\xfe\xfd\r\n\r\n").await.unwrap();
    assert_eq!(c.read_response().await.unwrap().status, 400);
    c.send_raw(b"DESCRIBE rtsp://x/cam RTSP/1.0\r\n\r\n")
        .await
        .unwrap(); // no CSeq
    assert_eq!(c.read_response().await.unwrap().status, 400);
    // Interleaved RTCP from the client is ignored.
    c.send_raw(b"$\x01\x00\x04abcd").await.unwrap();
    assert_eq!(
        c.request("GET_PARAMETER", &url, &[]).await.unwrap().status,
        200
    );
    // A header block that never ends: 400 then close.
    c.send_raw(&vec![b'A'; 20_000]).await.unwrap();
    assert_eq!(c.read_response().await.unwrap().status, 400);
    assert!(c.read_response().await.is_err());
    // Unparseable Content-Length: 400 then close.
    let mut c = Client::connect(&url).await.unwrap();
    c.send_raw(b"SET_PARAMETER rtsp://x/cam RTSP/1.0\r\nCSeq: 1\r\nContent-Length: -4\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(c.read_response().await.unwrap().status, 400);
    assert!(c.read_response().await.is_err());
    // The server still works.
    let mut c = Client::connect(&url).await.unwrap();
    c.play().await.unwrap();
    assert!(
        !read_aus(&mut c, Duration::from_millis(500))
            .await
            .is_empty()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_challenge_and_response() {
    let server = start(vec![
        MountConfig::new("cam", fixture(BASELINE)).with_auth(Auth::digest("admin", "pw")),
    ])
    .await;
    let url = server.url("cam");
    let mut c = Client::connect(&url).await.unwrap();
    assert_eq!(c.request("OPTIONS", &url, &[]).await.unwrap().status, 200);
    let r = c.request("DESCRIBE", &url, &[]).await.unwrap();
    assert_eq!(r.status, 401);
    let challenge = r.header("WWW-Authenticate").unwrap().to_owned();
    assert!(challenge.starts_with(&format!("Digest realm=\"{REALM}\", nonce=\"")));
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    let auth = |pw: &str, method: &str, uri: &str| {
        let resp = digest_response("admin", REALM, pw, method, uri, &nonce, None);
        format!(
            "Digest username=\"admin\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\""
        )
    };
    c.authorization = Some(auth("bad", "DESCRIBE", &url));
    assert_eq!(c.request("DESCRIBE", &url, &[]).await.unwrap().status, 401);
    c.authorization = Some(auth("pw", "DESCRIBE", &url));
    let r = c.request("DESCRIBE", &url, &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.contains("a=rtpmap:96 H264/90000"));
    // The response is bound to the method.
    assert_eq!(c.request("SETUP", &url, &[]).await.unwrap().status, 401);
    assert_eq!(server.mount("cam").unwrap().stats().auth_failures, 3);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtcp_sender_reports() {
    let server = start(vec![MountConfig::new("cam", fixture(BASELINE))]).await;
    let mut c = Client::connect(&server.url("cam")).await.unwrap();
    c.play().await.unwrap();
    let sr = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Item::Data(1, d) = c.next_item().await.unwrap() {
                return d;
            }
        }
    })
    .await
    .expect("no RTCP within 2 s");
    assert_eq!((sr[0] >> 6, sr[1]), (2, 200));
    let sender_ssrc = u32::from_be_bytes([sr[4], sr[5], sr[6], sr[7]]);
    let p = c.next_rtp().await.unwrap();
    assert_eq!(p.ssrc, sender_ssrc);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_mounts_independent_sessions() {
    let f = fixture(BASELINE);
    let template = MountConfig::new("x", f);
    let server = start(MountConfig::copies("cam", 20, &template)).await;
    assert_eq!(server.mounts().len(), 20);
    let mut ssrcs = std::collections::HashSet::new();
    let mut clients = Vec::new();
    for i in 1..=20 {
        let mut c = Client::connect(&server.url(&format!("cam{i}")))
            .await
            .unwrap();
        c.play().await.unwrap();
        clients.push(c);
    }
    for c in &mut clients {
        let aus = read_aus(c, Duration::from_millis(300)).await;
        assert!(!aus.is_empty());
        assert!(aus[0].key(), "a session starts with a key frame");
        ssrcs.insert(c.next_rtp().await.unwrap().ssrc);
    }
    assert_eq!(ssrcs.len(), 20);
    for m in server.mounts() {
        let s = m.stats();
        assert_eq!(s.sessions_active, 1, "{}", m.name());
        assert!(s.frames > 0 && s.bytes > 0 && s.packets >= s.frames);
    }
    drop(clients);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server
            .mounts()
            .iter()
            .all(|m| m.stats().sessions_active == 0)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_mounts_are_rejected() {
    let f = fixture(BASELINE);
    let addr = "127.0.0.1:0".parse().unwrap();
    for names in [vec!["a", "a"], vec![""], vec!["a b"], vec!["/x"]] {
        let mounts = names
            .iter()
            .map(|n| MountConfig::new(*n, f.clone()))
            .collect();
        assert!(
            vigie_camsim::Server::start(addr, mounts).await.is_err(),
            "{names:?}"
        );
    }
}

//! Every fault of `MountControl`, observed by a client.

mod common;

use std::time::Duration;

use common::*;
use tokio::time::Instant;
use vigie_camsim::{Garbage, MountConfig, ServerHandle};

async fn playing(server: &ServerHandle, mount: &str) -> Client {
    let mut c = Client::connect(&server.url(mount)).await.unwrap();
    c.play().await.unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_sessions_closes_connections() {
    let f = fixture(BASELINE);
    let server = start(vec![
        MountConfig::new("a", f.clone()),
        MountConfig::new("b", f),
    ])
    .await;
    let mut a = playing(&server, "a").await;
    let mut b = playing(&server, "b").await;
    assert!(
        !read_aus(&mut a, Duration::from_millis(300))
            .await
            .is_empty()
    );
    server.mount("a").unwrap().drop_sessions();
    let t0 = Instant::now();
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(2), a.next_item()).await {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => break e,
            Err(_) => panic!("connection not closed 2 s after drop_sessions"),
        }
    };
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    assert!(t0.elapsed() < Duration::from_millis(500));
    // Other mounts are unaffected; the dropped mount accepts new sessions.
    assert!(
        !read_aus(&mut b, Duration::from_millis(300))
            .await
            .is_empty()
    );
    let mut a2 = playing(&server, "a").await;
    assert!(
        !read_aus(&mut a2, Duration::from_millis(300))
            .await
            .is_empty()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_for_answers_503_then_recovers() {
    let server = start(vec![MountConfig::new("cam", fixture(BASELINE))]).await;
    let mut before = playing(&server, "cam").await;
    let cam = server.mount("cam").unwrap();
    cam.refuse_for(Duration::from_millis(1200));
    let url = server.url("cam");
    let mut c = Client::connect(&url).await.unwrap();
    let r = c.request("DESCRIBE", &url, &[]).await.unwrap();
    assert_eq!(r.status, 503);
    assert!(
        c.read_response().await.is_err(),
        "connection must be closed after 503"
    );
    // ffmpeg fails too.
    let o = run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-i",
            &url,
            "-t",
            "1",
            "-f",
            "null",
            "-",
        ],
        Duration::from_secs(20),
    )
    .await;
    assert!(!o.status.success());
    // A session that was already playing keeps going.
    assert!(
        !read_aus(&mut before, Duration::from_millis(200))
            .await
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let mut c = playing(&server, "cam").await;
    assert!(
        !read_aus(&mut c, Duration::from_millis(300))
            .await
            .is_empty()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_stops_media_but_keeps_the_connection() {
    let server = start(vec![MountConfig::new("cam", fixture(BASELINE))]).await;
    let mut c = playing(&server, "cam").await;
    let cam = server.mount("cam").unwrap();
    let before = read_aus(&mut c, Duration::from_millis(400)).await;
    cam.stall_for(Duration::from_millis(1500));
    let after = read_aus(&mut c, Duration::from_millis(2000)).await;
    let mut all = before.clone();
    all.extend(after);
    // Longest silence between consecutive frames, and the timestamp step across it.
    let (i, gap) = all
        .windows(2)
        .map(|w| w[1].arrival - w[0].arrival)
        .enumerate()
        .max_by_key(|(_, g)| *g)
        .unwrap();
    assert!(gap >= Duration::from_millis(1300), "longest gap {gap:?}");
    // The frames that fell in the stall were skipped: timestamps jump by about the stall.
    let jump = all[i + 1].ts.wrapping_sub(all[i].ts);
    assert!((120_000..=150_000).contains(&jump), "timestamp jump {jump}");
    assert!(ts_deltas(&all).iter().filter(|&&d| d != 3600).count() == 1);
    assert_eq!(cam.stats().sessions_active, 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_jump_once() {
    let server = start(vec![MountConfig::new("cam", fixture(BASELINE))]).await;
    let mut c = playing(&server, "cam").await;
    let mut aus = read_aus(&mut c, Duration::from_millis(200)).await;
    server.mount("cam").unwrap().timestamp_jump(9_000_000);
    aus.extend(read_aus(&mut c, Duration::from_millis(800)).await);
    let d = ts_deltas(&aus);
    let jumps: Vec<_> = d.iter().filter(|&&x| x != 3600).collect();
    assert_eq!(jumps, vec![&(9_000_000 + 3600)], "{d:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_fixture_sends_new_sps_in_band() {
    let server = start(vec![MountConfig::new("cam", fixture(BASELINE))]).await;
    let mut c = playing(&server, "cam").await;
    let before = read_aus(&mut c, Duration::from_millis(500)).await;
    let new = fixture(RES_CHANGE);
    server.mount("cam").unwrap().switch_fixture(new.clone());
    let after = read_aus(&mut c, Duration::from_millis(500)).await;
    // Frames of the old fixture sent between the end of the first read and the switch are read
    // with `after` (many of them on a loaded machine): the switch is where the SPS changes.
    let all: Vec<_> = before.iter().chain(after.iter()).collect();
    let at = all
        .iter()
        .position(|a| !a.sps.is_empty() && a.sps != before[0].sps)
        .expect("the new fixture's SPS was sent");
    assert!(at >= before.len(), "the SPS changed before the switch");
    assert!(
        all[..at]
            .iter()
            .all(|a| a.sps.is_empty() || a.sps == before[0].sps),
        "only the old fixture before the switch"
    );
    // Continuous sequence numbers and timestamps across the switch…
    let (last, first) = (all[at - 1], all[at]);
    assert_eq!(
        first.first_seq,
        last.first_seq.wrapping_add(last.packets as u16)
    );
    assert_eq!(first.ts.wrapping_sub(last.ts), 3600);
    // …and the next frame is the new fixture's key frame with its SPS/PPS first.
    assert!(first.key());
    assert_eq!(&first.nal_types[..2], &[7, 8]);
    assert_eq!(first.sps, vec![new.parameter_sets().sps.clone()]);
    let sps = vigie_camsim::h26x::sps_dimensions(vigie_camsim::Codec::H264, &first.sps[0]);
    assert_eq!(sps, Some((640, 360)));
    // A later DESCRIBE describes the new fixture.
    let mut d = Client::connect(&server.url("cam")).await.unwrap();
    let r = d
        .request("DESCRIBE", &server.url("cam"), &[])
        .await
        .unwrap();
    assert!(r.body.contains("profile-level-id=4D401E"), "{}", r.body);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_divisor_lowers_the_frame_rate() {
    let server = start(vec![MountConfig::new("cam", fixture(BASELINE))]).await;
    let cam = server.mount("cam").unwrap();
    cam.set_frame_divisor(5);
    let mut c = playing(&server, "cam").await;
    let aus = read_aus(&mut c, Duration::from_millis(2000)).await;
    assert!(
        (8..=12).contains(&aus.len()),
        "{} frames in 2 s at 25/5 fps",
        aus.len()
    );
    assert!(
        ts_deltas(&aus).iter().all(|&d| d == 5 * 3600),
        "{:?}",
        ts_deltas(&aus)
    );
    cam.set_frame_divisor(1);
    read_aus(&mut c, Duration::from_millis(100)).await;
    let aus = read_aus(&mut c, Duration::from_millis(1000)).await;
    assert!(
        aus.len() >= 22,
        "{} frames in 1 s after restoring",
        aus.len()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_rtp_then_media_continues() {
    let server = start(vec![MountConfig::new("cam", fixture(BASELINE))]).await;
    let mut c = playing(&server, "cam").await;
    read_aus(&mut c, Duration::from_millis(200)).await;
    server.mount("cam").unwrap().send_garbage(Garbage::Rtp);
    let mut invalid = 0;
    let mut valid_after = 0;
    let end = Instant::now() + Duration::from_millis(800);
    while Instant::now() < end {
        if let Item::Data(0, d) = c.next_item().await.unwrap() {
            match parse_rtp(0, d) {
                None => invalid += 1,
                Some(_) if invalid > 0 => valid_after += 1,
                Some(_) => {}
            }
        }
    }
    assert_eq!(
        invalid, 4,
        "2048 bytes of garbage in 512-byte interleaved frames"
    );
    assert!(valid_after > 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_raw_breaks_framing() {
    let server = start(vec![MountConfig::new("cam", fixture(BASELINE))]).await;
    let mut c = playing(&server, "cam").await;
    read_aus(&mut c, Duration::from_millis(200)).await;
    server.mount("cam").unwrap().send_garbage(Garbage::Raw);
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(2), c.next_item()).await {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => break e,
            Err(_) => panic!("no garbage within 2 s"),
        }
    };
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_everything() {
    let server = start(vec![MountConfig::new("cam", fixture(BASELINE))]).await;
    let mut c = playing(&server, "cam").await;
    let addr = server.local_addr();
    assert_eq!(server.connections(), 1);
    server.shutdown().await;
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(2), c.next_item()).await {
            Ok(Ok(_)) => continue,
            Ok(Err(_)) => break true,
            Err(_) => break false,
        }
    };
    assert!(closed);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

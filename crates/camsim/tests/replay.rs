//! Replay of a mount's recording card over RTSP (ONVIF Profile G): `Require: onvif-replay` and
//! `Range: clock=START-END` on PLAY, checked with the in-test client.

mod common;

use std::time::Duration;

use common::*;
use vigie_camsim::MountConfig;
use vigie_camsim::card::{format_clock, now_ms, parse_clock_range};

async fn setup_replay(c: &mut Client) {
    let url = c.url.clone();
    let d = c
        .request(
            "DESCRIBE",
            &url,
            &[("Accept", "application/sdp"), ("Require", "onvif-replay")],
        )
        .await
        .unwrap();
    assert_eq!(d.status, 200);
    let track = format!("{}trackID=0", d.header("Content-Base").unwrap());
    let s = c
        .request(
            "SETUP",
            &track,
            &[
                ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1"),
                ("Require", "onvif-replay"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    c.session = Some(
        s.header("Session")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_sends_the_frames_of_the_range_from_a_key_frame_and_ends() {
    let server = start(vec![
        MountConfig::new("cam", fixture(BASELINE)).with_card(Duration::from_secs(600)),
    ])
    .await;
    let cam = server.mount("cam").unwrap();
    // The live stream is cut: the card keeps recording.
    cam.refuse_for(Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (from, until) = cam.card_coverage_ms().unwrap();
    assert!(until - from >= 2000, "{from} {until}");
    // 1.5 s of the card: 37 frames at 25 fps (those ending by the end: 37 × 40 ms = 1.48 s).
    let start = from + 300;
    let end = start + 1_500;
    cam.refuse_for(Duration::ZERO);
    let mut c = Client::connect(&server.url("cam")).await.unwrap();
    setup_replay(&mut c).await;
    let range = format!("clock={}-{}", format_clock(start), format_clock(end));
    let p = c
        .request(
            "PLAY",
            &server.url("cam"),
            &[("Require", "onvif-replay"), ("Range", &range)],
        )
        .await
        .unwrap();
    assert_eq!(p.status, 200, "{p:?}");
    assert_eq!(
        parse_clock_range(p.header("Range").unwrap()),
        Some((start, Some(end)))
    );
    let rtptime: u32 = p
        .header("RTP-Info")
        .unwrap()
        .rsplit("rtptime=")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // (timestamp, first NAL type) of each access unit, until the camera closes the connection
    // after the last frame.
    let mut aus: Vec<(u32, u8)> = Vec::new();
    let mut new_au = true;
    while let Ok(Ok(p)) = tokio::time::timeout(Duration::from_secs(10), c.next_rtp()).await {
        if new_au {
            let t = p.payload[0] & 0x1f;
            aus.push((p.ts, if t == 28 { p.payload[1] & 0x1f } else { t }));
        }
        new_au = p.marker;
    }
    assert_eq!(aus.len(), 37);
    assert_eq!(
        aus[0],
        (rtptime, 7),
        "the replay starts on a key frame (SPS first)"
    );
    assert!(aus.windows(2).all(|w| w[1].0.wrapping_sub(w[0].0) == 3600));
    let st = cam.stats();
    assert_eq!((st.replayed_frames, st.replay_sessions), (37, 1));
    assert_eq!(st.sessions_total, 0, "a replay is not a live session");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_without_a_card_or_outside_it_are_refused() {
    let server = start(vec![
        MountConfig::new("card", fixture(BASELINE)).with_card(Duration::from_secs(600)),
        MountConfig::new("nocard", fixture(BASELINE)),
    ])
    .await;
    let now = now_ms();
    let ok = format!("clock={}-", format_clock(now - 1000));
    for (mount, range, status) in [
        ("nocard", ok.as_str(), 551),
        ("card", "clock=garbage", 457),
        ("card", "npt=0-", 457),
        // Before the card existed.
        (
            "card",
            &*format!(
                "clock={}-{}",
                format_clock(now - 90_000),
                format_clock(now - 60_000)
            ),
            457,
        ),
    ] {
        let mut c = Client::connect(&server.url(mount)).await.unwrap();
        setup_replay(&mut c).await;
        let p = c
            .request(
                "PLAY",
                &server.url(mount),
                &[("Require", "onvif-replay"), ("Range", range)],
            )
            .await
            .unwrap();
        assert_eq!(p.status, status, "{mount} {range}: {p:?}");
    }
    assert_eq!(server.mount("card").unwrap().stats().replayed_frames, 0);
    server.shutdown().await;
}

//! Filling a gap from the camera's own recording (ONVIF Profile G), end to end: the real binary,
//! camsim's simulated card behind its ONVIF device, a 30 s outage of the camera's live stream
//! while 20 other cameras record.

use std::time::{Duration, Instant};

use vigie_camsim::onvif::recording::OnvifRecording;
use vigie_camsim::{Auth, Fixture, MountConfig, OnvifConfig, OnvifProfile, OnvifServer};
use vigie_testkit::VigieBuilder;
use vigie_testkit::media::{ffmpeg_decodes, ffprobe};

const BIN: &str = env!("CARGO_BIN_EXE_vigie");
const COMMUNE: &str = "[[communes]]\nid = \"test\"\nname = \"Test\"\n";
const USER: &str = "edge-op";
const PASS: &str = "Card-pw-5521";
const OTHERS: usize = 20;

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Per other camera: (frames camsim sent, frames Vigie stored, reconnects, overflows).
async fn others(v: &vigie_testkit::Vigie, sim: &vigie_camsim::ServerHandle) -> Vec<[f64; 4]> {
    let (code, text) = v.get_text("/metrics").await.unwrap();
    assert_eq!(code, 200, "{text}");
    (1..=OTHERS)
        .map(|i| {
            let cam = format!("o{i}");
            [
                sim.mount(&cam).unwrap().stats().frames as f64,
                metric(
                    &text,
                    &format!("vigie_writer_frames_total{{camera=\"{cam}\""),
                ),
                metric(
                    &text,
                    &format!("vigie_stream_reconnects_total{{camera=\"{cam}\""),
                ),
                metric(
                    &text,
                    &format!("vigie_writer_overflows_total{{camera=\"{cam}\""),
                ),
            ]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_30_s_outage_is_filled_from_the_cameras_card_without_loss_elsewhere() {
    let fixture = Fixture::embedded("h264-baseline-640x360-25fps-gop50.h264").unwrap();
    let mut mounts = vec![
        MountConfig::new("door/main", fixture.clone())
            .with_auth(Auth::digest(USER, PASS))
            .with_card(Duration::from_secs(3600)),
    ];
    for i in 1..=OTHERS {
        mounts.push(MountConfig::new(format!("o{i}"), fixture.clone()));
    }
    let sim = vigie_testkit::sim::start(mounts).await;
    let onvif = OnvifServer::start(
        "127.0.0.1:0".parse().unwrap(),
        OnvifConfig {
            auth: Some((USER.into(), PASS.into())),
            profiles: vec![OnvifProfile::for_mount("main", &sim, "door/main").unwrap()],
            ptz: false,
            discovery: None,
            recordings: vec![OnvifRecording::for_mount("main", &sim, "door/main").unwrap()],
        },
    )
    .await
    .unwrap();
    // The gap shows in the index once the first segment after the outage is indexed: sooner
    // with a 2 s index interval (the default is 10 s).
    let mut b = VigieBuilder::new(BIN)
        .recording_toml("index_interval_ms = 2000")
        .toml(COMMUNE)
        .toml(&format!(
        "[[cameras]]\nid = \"door\"\nname = \"Door\"\ncommune = \"test\"\nonvif = \"{}\"\nusername = \"{USER}\"\npassword = \"{PASS}\"\nedge_fill = {{ window_s = 600, min_gap_s = 5 }}\n  [[cameras.streams]]\n  name = \"main\"\n  connect_timeout_s = 3\n  stall_timeout_s = 3\n",
        onvif.device_url()
    ));
    for i in 1..=OTHERS {
        b = b.toml(&format!(
            "[[cameras]]\nid = \"o{i}\"\nname = \"Other {i}\"\ncommune = \"test\"\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"{}\"\n",
            sim.url(&format!("o{i}"))
        ));
    }
    let v = b.start().unwrap();
    let door = sim.mount("door/main").unwrap();
    let t_start = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(5);

    // Everything records for a few seconds.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let now = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1);
        let spans = v
            .spans("door", "main", &t_start.to_string(), &now.to_string())
            .await
            .unwrap();
        let (_, text) = v.get_text("/metrics").await.unwrap();
        let online = (1..=OTHERS)
            .all(|i| metric(&text, &format!("vigie_stream_online{{camera=\"o{i}\"")) == 1.0);
        if online
            && spans
                .first()
                .is_some_and(|(a, b)| b.duration_since(*a).as_secs_f64() >= 4.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not recording: {spans:?}\n{}",
            v.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let before = others(&v, &sim).await;

    // The roadside link of the door camera goes down for 30 s: its sessions drop and
    // reconnections are refused; its card keeps recording.
    door.refuse_for(Duration::from_secs(30));
    door.drop_sessions();
    let cut = Instant::now();

    // It comes back; the gap gets filled from the card.
    let deadline = cut + Duration::from_secs(85);
    let fill = loop {
        let (st, body) = v.get_text("/api/v1/register.csv").await.unwrap();
        assert_eq!(st, 200, "{body}");
        let rows: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("edge-fill,"))
            .collect();
        if let Some(row) = rows.first() {
            assert_eq!(rows.len(), 1, "{body}");
            let f: Vec<&str> = row.split(',').collect();
            assert_eq!((f[1], f[2]), ("door", "main"), "{row}");
            let a: jiff::Timestamp = f[4].parse().unwrap();
            let b: jiff::Timestamp = f[5].parse().unwrap();
            break (a, b);
        }
        assert!(
            Instant::now() < deadline,
            "no edge fill in the register after {:?}:\n{body}\n{}",
            cut.elapsed(),
            v.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let fill_s = fill.1.duration_since(fill.0).as_secs_f64();
    // The outage, plus the reconnection backoff after 30 s of refusals.
    assert!(
        (29.0..=75.0).contains(&fill_s),
        "filled {fill_s} s: {fill:?}"
    );
    let replayed = door.stats().replayed_frames;
    assert_eq!(door.stats().replay_sessions, 1);

    // The timeline has no gap from the start to after the outage.
    let until = fill.1 + jiff::SignedDuration::from_secs(3);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let spans = v
            .spans("door", "main", &t_start.to_string(), &until.to_string())
            .await
            .unwrap();
        if spans.len() == 1 && spans[0].1 >= until {
            break;
        }
        assert!(
            spans.len() <= 1 || Instant::now() < deadline,
            "the timeline has gaps: {spans:?} (filled {fill:?})"
        );
        assert!(Instant::now() < deadline, "{spans:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The filled span plays: decodes cleanly, with every frame the card replayed. (The
    // register gives times to the millisecond: 1 ms inside them is still inside the first and
    // last 40 ms frames of the fill, and outside the live footage around it.)
    let ms = jiff::SignedDuration::from_millis(1);
    let path = format!(
        "/api/v1/cameras/door/streams/main/video.mp4?start={}&end={}",
        fill.0 + ms,
        fill.1 - ms
    );
    let (st, _, body) = vigie_testkit::playback::fetch(&v, &path, &[])
        .await
        .unwrap();
    assert_eq!(st, 200, "{path}: {}", String::from_utf8_lossy(&body));
    let file = v.work_dir().join("filled.mp4");
    std::fs::write(&file, &body).unwrap();
    ffmpeg_decodes(&file).unwrap();
    let p = ffprobe(&file).unwrap();
    assert_eq!(p.frames, replayed, "{path}: {p:?}");
    assert_eq!((p.width, p.height), (640, 360));

    // The other 20 streams lost nothing meanwhile: what camsim sent, Vigie stored (up to
    // the frames still in flight at either sample), without reconnecting or overflowing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = others(&v, &sim).await;
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let sent = a[0] - b[0];
        let stored = a[1] - b[1];
        assert!(sent >= 25.0 * 30.0, "o{}: camsim sent only {sent}", i + 1);
        assert!(
            (sent - stored).abs() <= 75.0,
            "o{}: sent {sent} frames, stored {stored}",
            i + 1
        );
        assert_eq!(
            (a[2], a[3]),
            (b[2], b[3]),
            "o{}: reconnects/overflows",
            i + 1
        );
    }

    // Counted in /metrics, journaled, the password nowhere.
    let (_, text) = v.get_text("/metrics").await.unwrap();
    assert_eq!(
        metric(&text, "vigie_edge_fills_total{camera=\"door\""),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "vigie_edge_fill_frames_total{camera=\"door\""),
        replayed as f64
    );
    assert!(!v.log().contains(PASS), "password in the log");
}

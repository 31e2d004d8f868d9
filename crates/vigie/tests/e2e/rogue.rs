//! Hostile cameras against the real binary: one camsim rogue camera per mode (endless RTSP
//! header, huge `Content-Length`, endless FU-A access unit, flood of tiny RTP packets, 1 MiB
//! `sprop-parameter-sets`, 1 Hz clock rate, Basic challenge on plain RTSP) next to healthy
//! cameras. Each rogue session ends with a clear `last_error` in `/api/v1/cameras`, the password
//! is never sent in clear, the resident memory stays bounded while the attacks repeat, and the
//! healthy streams receive and record every frame camsim sent them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use vigie_camsim::{Auth, Fixture, MountConfig, Rogue};
use vigie_testkit::{Vigie, VigieBuilder};

const BIN: &str = env!("CARGO_BIN_EXE_vigie");
const BASELINE: &str = "h264-baseline-640x360-25fps-gop50.h264";
const COMMUNE: &str = "[[communes]]\nid = \"test\"\nname = \"Test\"\n";
const HEALTHY: [&str; 2] = ["healthy-1", "healthy-2"];

fn fixture() -> Arc<Fixture> {
    Fixture::embedded(BASELINE).expect("embedded fixture")
}

fn camera_toml(id: &str, url: &str, extra: &str) -> String {
    format!(
        "[[cameras]]\nid = \"{id}\"\nname = \"Camera {id}\"\ncommune = \"test\"\nclass = \"traffic\"\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"{url}\"\n  connect_timeout_s = 5\n  stall_timeout_s = 5\n{extra}"
    )
}

/// The start of the `last_error` each rogue camera must show.
fn expected(mode: Rogue) -> &'static str {
    match mode {
        Rogue::EndlessHeader => "camera exceeded a per-stream limit: RTSP header longer than",
        Rogue::HugeContentLength | Rogue::HugeSprop => {
            "camera exceeded a per-stream limit: RTSP message of"
        }
        Rogue::EndlessFuA => "camera exceeded a per-stream limit: access unit larger than",
        Rogue::TinyPacketFlood => "camera exceeded a per-stream limit: access unit of more than",
        Rogue::AbsurdClockRate => "RTP clock rate 1 Hz is outside",
    }
}

async fn frames_total(v: &Vigie, cam: &str) -> u64 {
    v.stream_status(cam, "main").await.unwrap()["frames_total"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn rogue_cameras_are_bounded_and_healthy_ones_lose_nothing() {
    let mut mounts: Vec<MountConfig> = HEALTHY
        .iter()
        .map(|n| MountConfig::new(*n, fixture()))
        .collect();
    for mode in Rogue::ALL {
        mounts.push(MountConfig::new(mode.name(), fixture()).with_rogue(mode));
    }
    mounts.push(MountConfig::new("basic", fixture()).with_auth(Auth::basic("viewer", "s3cret-pw")));
    let sim = vigie_testkit::sim::start(mounts).await;

    let mut b = VigieBuilder::new(BIN).toml(COMMUNE);
    for n in HEALTHY {
        b = b.toml(&camera_toml(n, &sim.url(n), ""));
    }
    for mode in Rogue::ALL {
        b = b.toml(&camera_toml(mode.name(), &sim.url(mode.name()), ""));
    }
    b = b.toml(&camera_toml(
        "basic",
        &sim.url("basic"),
        "  username = \"viewer\"\n  password = \"s3cret-pw\"\n",
    ));
    let mut v = b.start().unwrap();
    let rss_start = v.rss_bytes().unwrap_or(0);

    // Every rogue session ends with its clear error, and is retried (the attack repeats).
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut rss_max = rss_start;
    let mut pending: Vec<&str> = Rogue::ALL.iter().map(|m| m.name()).collect();
    pending.push("basic");
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no clear error yet for {pending:?}:\n{}",
            v.log()
        );
        rss_max = rss_max.max(v.rss_bytes().unwrap_or(0));
        let mut still = Vec::new();
        for cam in pending {
            let st = v.stream_status(cam, "main").await.unwrap();
            let err = st["last_error"].as_str().unwrap_or("");
            let want = match Rogue::ALL.iter().find(|m| m.name() == cam) {
                Some(m) => expected(*m),
                None => "refused to send the password in clear",
            };
            if err.is_empty() || st["reconnects"].as_u64().unwrap_or(0) < 2 {
                still.push(cam);
                continue;
            }
            assert!(
                err.starts_with(want),
                "{cam}: {err:?} should start with {want:?}"
            );
            assert_eq!(st["online"], false, "{cam}: {st}");
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A while more under repeated attacks: the memory stays bounded.
    for _ in 0..20 {
        rss_max = rss_max.max(v.rss_bytes().unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "RSS at start {:.1} MiB, max under attack {:.1} MiB",
        mib(rss_start),
        mib(rss_max)
    );
    // Each attack sends 64 MiB (a client without bounds holds that per rogue session); the
    // caps hold each stream to ~8 MiB plus buffers.
    assert!(
        rss_max < rss_start + (160 << 20),
        "RSS grew from {:.1} to {:.1} MiB",
        mib(rss_start),
        mib(rss_max)
    );
    assert_eq!(
        sim.mount("basic").unwrap().stats().basic_credentials,
        0,
        "the password was sent in clear"
    );
    assert!(!v.log().contains("s3cret-pw"), "password in the log");

    // Healthy cameras: freeze them, let the last frames arrive, compare with what camsim sent.
    for n in HEALTHY {
        sim.mount(n).unwrap().stall_for(Duration::from_secs(3600));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in HEALTHY {
        let sent = sim.mount(n).unwrap().stats().frames;
        assert!(sent >= 250, "{n}: only {sent} frames sent");
        let got = frames_total(&v, n).await;
        assert_eq!(got, sent, "{n}: frames lost");
        let st = v.stream_status(n, "main").await.unwrap();
        assert_eq!(st["reconnects"], 0, "{n}: {st}");
    }
    // And recorded: after a clean stop, the index holds every frame received.
    let received: Vec<u64> = {
        let mut r = Vec::new();
        for n in HEALTHY {
            r.push(frames_total(&v, n).await);
        }
        r
    };
    v.stop().unwrap();
    v.spawn().unwrap();
    let now = Timestamp::now();
    let (a, b) = (
        (now - SignedDuration::from_hours(1)).to_string(),
        (now + SignedDuration::from_hours(1)).to_string(),
    );
    for (n, want) in HEALTHY.iter().zip(received) {
        let (status, body) = v
            .get(&format!(
                "/api/v1/cameras/{n}/streams/main/recordings?start={a}&end={b}&segments=1"
            ))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let recorded: u64 = body["segments"]
            .as_array()
            .expect("segments")
            .iter()
            .map(|s| s["frames"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(recorded, want, "{n}: frames received but not recorded");
    }
    v.stop().unwrap();
    sim.shutdown().await;
}

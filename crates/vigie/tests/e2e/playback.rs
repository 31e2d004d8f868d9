//! End-to-end tests of `video.mp4`: the real `vigie` binary records a camsim camera, then
//! virtual MP4s of recorded ranges are checked with ffmpeg/ffprobe (frames, duration, first
//! displayed frame), HTTP range and conditional semantics (RFC 9110), bad input, gaps, the
//! subtitle track, and playback in headless Chromium.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rand::Rng;
use vigie_camsim::ServerHandle;
use vigie_testkit::media::{ffmpeg_decodes, ffprobe};
use vigie_testkit::playback::{fetch, video_path};
use vigie_testkit::{Vigie, VigieBuilder};

use crate::playback_common::{check_standard_ranges, wait_segments};

const BIN: &str = env!("CARGO_BIN_EXE_vigie");
const COMMUNE: &str = "[[communes]]\nid = \"test\"\nname = \"Test\"\n";

async fn camsim() -> ServerHandle {
    vigie_testkit::sim::start_baseline(&["a"]).await
}

fn start_vigie(url: &str) -> Vigie {
    VigieBuilder::new(BIN)
        .segment_seconds(10)
        .toml(COMMUNE)
        .toml(&format!(
            "[[cameras]]\nid = \"cam\"\nname = \"Camera\"\ncommune = \"test\"\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"{url}\"\n"
        ))
        .start()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn camsim_ranges_http_semantics_gaps_and_errors() {
    let sim = camsim().await;
    let mut v = start_vigie(&sim.url("a"));
    let segs = wait_segments(&v, "cam", 3, Duration::from_secs(45)).await;

    // Acceptance ranges: one segment, three segments, mid-GOP starts.
    check_standard_ranges(&v, "cam", &segs).await;

    // A 6 s range inside the recording for the HTTP checks.
    let start = segs[1].start + SignedDuration::from_millis(1_020);
    let path = video_path("cam", start, 6.0, "");
    let (st, h, full) = fetch(&v, &path, &[]).await.unwrap();
    assert_eq!(st, 200);
    let len = full.len() as u64;
    assert_eq!(h["content-length"], len.to_string().as_str());
    assert_eq!(h["content-type"], "video/mp4");
    assert_eq!(h["accept-ranges"], "bytes");
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && !etag.starts_with("W/"), "{etag}");
    let disp = h["content-disposition"].to_str().unwrap();
    assert!(
        disp.contains("filename=\"cam_main_") && disp.ends_with(".mp4\""),
        "{disp}"
    );
    // The same request again gives the same bytes and tag.
    let (_, h2, again) = fetch(&v, &path, &[]).await.unwrap();
    assert_eq!(
        (h2["etag"].to_str().unwrap(), &again),
        (etag.as_str(), &full)
    );

    // HEAD: same headers, no body.
    let head = v
        .http()
        .head(format!("{}{}", v.base_url(), path))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 200);
    for k in [
        "content-length",
        "etag",
        "content-type",
        "accept-ranges",
        "content-disposition",
    ] {
        assert_eq!(head.headers().get(k), h.get(k), "HEAD header {k}");
    }
    assert!(head.bytes().await.unwrap().is_empty());

    // Random byte ranges reassemble the body; each is a 206 with the right Content-Range.
    let mut rng = rand::thread_rng();
    let mut pos = 0u64;
    let mut assembled = Vec::with_capacity(full.len());
    while pos < len {
        let n = rng.gen_range(1..=len.min(300_000));
        let last = (pos + n - 1).min(len - 1);
        let (st, h, part) = fetch(&v, &path, &[("range", &format!("bytes={pos}-{last}"))])
            .await
            .unwrap();
        assert_eq!(st, 206);
        assert_eq!(
            h["content-range"],
            format!("bytes {pos}-{last}/{len}").as_str()
        );
        assert_eq!(part.len() as u64, last - pos + 1);
        assembled.extend_from_slice(&part);
        pos = last + 1;
    }
    assert!(
        assembled == full,
        "reassembled ranges differ from the full body"
    );
    for _ in 0..10 {
        let a = rng.gen_range(0..len);
        let b = rng.gen_range(a..len);
        let (st, _, part) = fetch(&v, &path, &[("range", &format!("bytes={a}-{b}"))])
            .await
            .unwrap();
        assert_eq!(st, 206);
        assert!(part[..] == full[a as usize..=b as usize], "bytes={a}-{b}");
    }
    // Suffix and open-ended ranges.
    let (st, _, part) = fetch(&v, &path, &[("range", "bytes=-100")]).await.unwrap();
    assert_eq!((st, &part[..]), (206, &full[full.len() - 100..]));
    let (st, _, part) = fetch(&v, &path, &[("range", "bytes=1000-")]).await.unwrap();
    assert_eq!((st, &part[..]), (206, &full[1000..]));
    // Unsatisfiable → 416 with Content-Range: bytes */len.
    let (st, h, _) = fetch(&v, &path, &[("range", &format!("bytes={len}-"))])
        .await
        .unwrap();
    assert_eq!(st, 416);
    assert_eq!(h["content-range"], format!("bytes */{len}").as_str());
    // Several ranges: the whole representation (documented).
    let (st, _, body) = fetch(&v, &path, &[("range", "bytes=0-10,20-30")])
        .await
        .unwrap();
    assert_eq!((st, body.len() as u64), (200, len));
    // If-None-Match → 304; a stale tag → 200.
    let (st, h, body) = fetch(&v, &path, &[("if-none-match", &etag)]).await.unwrap();
    assert_eq!((st, body.len()), (304, 0));
    assert_eq!(h["etag"], etag.as_str());
    let (st, _, _) = fetch(&v, &path, &[("if-none-match", "\"stale\"")])
        .await
        .unwrap();
    assert_eq!(st, 200);
    // If-Range: current tag → 206; stale tag → 200 with the full body.
    let (st, _, part) = fetch(&v, &path, &[("range", "bytes=0-99"), ("if-range", &etag)])
        .await
        .unwrap();
    assert_eq!((st, part.len()), (206, 100));
    let (st, _, body) = fetch(
        &v,
        &path,
        &[("range", "bytes=0-99"), ("if-range", "\"stale\"")],
    )
    .await
    .unwrap();
    assert_eq!((st, body.len() as u64), (200, len));
    assert!(body == full);

    // ts=1: a wall-clock subtitle track in local time (Europe/Paris by default).
    let (st, _, body) = fetch(&v, &video_path("cam", start, 3.0, "&ts=1"), &[])
        .await
        .unwrap();
    assert_eq!(st, 200);
    let work = tempfile::tempdir().unwrap();
    let ts_file = work.path().join("ts.mp4");
    std::fs::write(&ts_file, &body).unwrap();
    ffmpeg_decodes(&ts_file).unwrap();
    let srt = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(&ts_file)
        .args(["-map", "0:s:0", "-f", "srt", "-"])
        .output()
        .unwrap();
    let srt = String::from_utf8_lossy(&srt.stdout).into_owned();
    let local = start
        .to_zoned(jiff::tz::TimeZone::get("Europe/Paris").unwrap())
        .strftime("%Y-%m-%d %H:%M:%S %:z")
        .to_string();
    assert!(srt.contains(&local), "no cue {local:?} in:\n{srt}");
    assert!(srt.matches(" --> ").count() >= 3, "{srt}");

    // Bad input: clear JSON errors.
    let now = Timestamp::now();
    for (p, code, err) in [
        (video_path("nope", start, 2.0, ""), 404, "not_found"),
        (
            format!(
                "/api/v1/cameras/cam/streams/main/video.mp4?start={start}&end={}",
                start - SignedDuration::from_secs(5)
            ),
            400,
            "bad_request",
        ),
        (
            "/api/v1/cameras/cam/streams/main/video.mp4?start=yesterday&duration=3".into(),
            400,
            "bad_request",
        ),
        (
            format!("/api/v1/cameras/cam/streams/main/video.mp4?start={start}"),
            400,
            "bad_request",
        ),
        (
            video_path("cam", now - SignedDuration::from_hours(30), 60.0, ""),
            404,
            "not_found",
        ),
    ] {
        let (st, j) = v.get(&p).await.unwrap();
        assert_eq!(st, code, "{p}: {j}");
        assert_eq!(j["error"]["code"], err, "{p}: {j}");
        assert!(!j["error"]["message"].as_str().unwrap().is_empty(), "{j}");
    }

    // A gap: stop recording for a few seconds.
    v.stop().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    v.spawn().unwrap();
    let first_span_end = {
        let (a, b) = (
            now - SignedDuration::from_hours(1),
            now + SignedDuration::from_hours(1),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let spans = v
                .spans("cam", "main", &a.to_string(), &b.to_string())
                .await
                .unwrap();
            if spans.len() == 2 && spans[1].1.duration_since(spans[1].0).as_secs_f64() > 4.0 {
                break spans[0].1;
            }
            assert!(std::time::Instant::now() < deadline, "{spans:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let gap_start = first_span_end - SignedDuration::from_secs(3);
    let gap_path = format!(
        "/api/v1/cameras/cam/streams/main/video.mp4?start={gap_start}&end={}",
        Timestamp::now() - SignedDuration::from_secs(1)
    );
    let (st, j) = v.get(&gap_path).await.unwrap();
    assert_eq!(st, 409, "{j}");
    assert_eq!(j["error"]["code"], "conflict");
    let spans = j["error"]["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2, "{j}");
    assert!(spans[0]["end"].as_str().unwrap() < spans[1]["start"].as_str().unwrap());
    let (st, h, body) = fetch(&v, &format!("{gap_path}&gaps=skip"), &[])
        .await
        .unwrap();
    assert_eq!(st, 200);
    let gaps = h["x-vigie-gaps"].to_str().unwrap();
    assert!(gaps.starts_with("skipped; spans="), "{gaps}");
    assert_eq!(gaps.matches('/').count(), 2, "{gaps}");
    let skip_file = work.path().join("skip.mp4");
    std::fs::write(&skip_file, &body).unwrap();
    ffmpeg_decodes(&skip_file).unwrap();
    let p = ffprobe(&skip_file).unwrap();
    let listed: f64 = spans
        .iter()
        .map(|s| s["duration_s"].as_f64().unwrap())
        .sum();
    assert!(
        (p.duration_s - listed).abs() < 0.1,
        "{} vs {listed}",
        p.duration_s
    );
    v.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_plays_and_seeks_video_mp4() {
    let sim = camsim().await;
    let mut v = start_vigie(&sim.url("a"));
    let segs = wait_segments(&v, "cam", 1, Duration::from_secs(40)).await;
    let start = segs[0].start + SignedDuration::from_millis(500);
    let secs = segs[1].start.duration_since(start).as_secs_f64().floor();
    assert!(secs >= 4.0, "{segs:?}");
    let url = format!("{}{}", v.base_url(), video_path("cam", start, secs, ""));

    let b = vigie_testkit::browser::Browser::start().await.unwrap();
    b.set_script_timeout(Duration::from_secs(30)).await.unwrap();
    // A page of the server's origin without videos of its own (the UI at `/` has some);
    // `goto` logs the browser in first, so video.mp4 gets the session cookie.
    b.goto(&format!("{}/api/v1/health", v.base_url()))
        .await
        .unwrap();
    let r = b
        .execute_async(
            r#"const [url, done] = arguments;
               const v = document.createElement('video');
               v.id = 'under-test';
               v.muted = true; v.preload = 'auto';
               document.body.appendChild(v);
               v.onerror = () => done({error: String(v.error && v.error.message)});
               v.addEventListener('canplaythrough', () => done({
                   readyState: v.readyState, width: v.videoWidth, height: v.videoHeight,
                   duration: v.duration}), {once: true});
               v.src = url;"#,
            vec![url.clone().into()],
        )
        .await
        .unwrap();
    assert_eq!(r["readyState"], 4, "{r}");
    assert_eq!(
        (r["width"].as_u64(), r["height"].as_u64()),
        (Some(640), Some(360)),
        "{r}"
    );
    let d = r["duration"].as_f64().unwrap();
    assert!((d - secs).abs() <= 0.04, "duration {d} vs {secs}");
    let r = b
        .execute_async(
            r#"const [t, done] = arguments;
               const v = document.getElementById('under-test');
               v.addEventListener('seeked', () => done({currentTime: v.currentTime,
                   readyState: v.readyState}), {once: true});
               v.currentTime = t;"#,
            vec![(secs / 2.0).into()],
        )
        .await
        .unwrap();
    let t = r["currentTime"].as_f64().unwrap();
    assert!(
        (t - secs / 2.0).abs() < 0.05,
        "seeked to {t}, asked {}",
        secs / 2.0
    );
    assert!(r["readyState"].as_u64().unwrap() >= 2, "{r}");
    // It plays: currentTime advances.
    let r = b
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
        r["t1"].as_f64().unwrap_or(0.0) > r["t0"].as_f64().unwrap_or(0.0) + 0.3,
        "{r}"
    );
    let shot = v.work_dir().join("chromium-video.png");
    b.screenshot_to(&shot).await.unwrap();
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    b.close().await.unwrap();
    v.stop().unwrap();
}

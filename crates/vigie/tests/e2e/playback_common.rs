//! Shared by the video.mp4 e2e tests (camsim and GStreamer cameras): record until enough
//! segments exist, then check ranges inside one segment, across three, starting mid-GOP.

use std::time::Duration;

use jiff::SignedDuration;
use vigie_testkit::Vigie;
use vigie_testkit::playback::{ListedSegment, check_range, segments};

/// Waits until `cam` has at least `n` closed segments of 10 s (segment_seconds = 10) in one
/// span and returns them.
pub async fn wait_segments(
    v: &Vigie,
    cam: &str,
    n: usize,
    timeout: Duration,
) -> Vec<ListedSegment> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let segs = segments(v, cam).await.unwrap();
        // Closed = a later one exists.
        if segs.len() > n {
            return segs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} segments after {timeout:?}: {segs:?}\n{}",
            segs.len(),
            v.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The three acceptance ranges: inside one segment (mid-GOP start), across three segments
/// (mid-GOP start), and a start one frame after a key frame.
pub async fn check_standard_ranges(v: &Vigie, cam: &str, segs: &[ListedSegment]) {
    let work = tempfile::tempdir().unwrap();
    // Inside segment 1: frame 75 (GOP 50: key frame at 50), 4 s.
    let s1 = &segs[1];
    assert!(
        s1.end.duration_since(s1.start).as_secs_f64() > 7.5,
        "segment too short: {s1:?}"
    );
    check_range(v, cam, s1, 75, 4.0, work.path()).await.unwrap();
    // Across segments 0, 1 and 2: from 1 s before the end of segment 0 (mid-GOP) to 1 s into
    // segment 2.
    let s0 = &segs[0];
    let len0 = s0.end.duration_since(s0.start).as_secs_f64();
    let f0 = ((len0 - 1.0) * 25.0).floor() as u32;
    let start0 = s0.start + SignedDuration::from_micros(i64::from(f0) * 40_000 + 20_000);
    let to = segs[2].start + SignedDuration::from_secs(1);
    let secs = (to.duration_since(start0).as_secs_f64() * 25.0).round() / 25.0;
    check_range(v, cam, s0, f0, secs, work.path())
        .await
        .unwrap();
    // One frame after a key frame at the very start of a segment.
    check_range(v, cam, &segs[2], 1, 2.0, work.path())
        .await
        .unwrap();
}

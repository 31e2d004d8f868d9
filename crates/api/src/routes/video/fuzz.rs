//! Fuzzing of the query and header parsers of `video.mp4` (`start`, `end`, `duration`, `gaps`,
//! `ts`, `Range`, `If-None-Match`) and of the shared time window (`params::WindowQuery`, used by
//! the listings): any input gives a value within bounds or a 400, never a panic or an overflow.
//! Longer run: `PROPTEST_CASES=100000 cargo test -p vigie-api --lib fuzz --release`
//! (docs/FUZZING.md).

use proptest::prelude::*;

use super::*;
use crate::params::WindowQuery;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// RFC 3339-shaped strings (often valid, with extreme years and offsets), edge values, noise.
fn time() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        "-?[0-9]{1,6}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})",
        Just("9999-12-31T23:59:59.999999999Z".to_owned()),
        Just("-009999-01-01T00:00:00Z".to_owned()),
        Just("0000-01-01T00:00:00+25:59".to_owned()),
        Just("2026-11-28T21:00:00Z".to_owned()),
        "\\PC{0,40}",
    ])
}

fn number() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        Just("1e308".to_owned()),
        Just("-0".to_owned()),
        Just("NaN".to_owned()),
        Just("inf".to_owned()),
        Just("0.0000000001".to_owned()),
        Just("18446744073709551616".to_owned()),
        any::<f64>().prop_map(|f| f.to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        "\\PC{0,12}",
    ])
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_video_query(
        start in time(),
        end in time(),
        duration in number(),
        gaps in prop::option::of("skip|refuse|\\PC{0,8}"),
        ts in prop::option::of("0|1|true|false|\\PC{0,4}"),
    ) {
        let q = VideoQuery { start, end, duration, gaps, ts, transcode: None };
        if let Ok((a, b, _, _)) = parse_query(&q) {
            prop_assert!(a < b);
            prop_assert!((b - a).0 <= MAX_RANGE_SECS * 90_000);
            let _ = filename("cam", "main", a, b);
        }
    }

    #[test]
    fn fuzz_window_query(start in time(), end in time()) {
        if let Ok(w) = (WindowQuery { start, end }).window() {
            prop_assert!(w.start < w.end);
            let _ = (w.start.to_rfc3339(), w.end.to_rfc3339());
        }
    }

    #[test]
    fn fuzz_range_header(
        value in prop_oneof![
            "bytes= ?[0-9]{0,22} ?- ?[0-9]{0,22}",
            "bytes=-?[0-9]{0,25}",
            "\\PC{0,30}",
        ],
        len in prop_oneof![Just(0u64), Just(1), Just(u64::MAX), any::<u64>()],
    ) {
        if let RangeAnswer::Partial(a, b) = parse_range(&value, len) {
            prop_assert!(a < b && b <= len, "{value:?} of {len}: {a}..{b}");
        }
    }

    #[test]
    fn fuzz_if_none_match(value in "\\PC{0,60}", etag in "\\PC{0,20}") {
        let _ = none_match(&value, &etag);
    }
}

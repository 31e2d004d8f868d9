//! Fuzzing of the configuration loader ([`Config::from_toml_str`]) and of the parsers it and the
//! API share ([`ByteSize::parse`], [`Time90k::parse_rfc3339`]): random text, a valid file with
//! keys set to absurd values (huge numbers, negative numbers, wrong types, very long strings),
//! and deep nesting. The loader must return a configuration or an error naming the problem,
//! never panic, overflow the stack or hang.
//!
//! The suite runs a few hundred cases per property; the longer run is in docs/FUZZING.md:
//! `PROPTEST_CASES=100000 cargo test -p vigie-core --test fuzz_config --release`.

use proptest::prelude::*;
use vigie_core::Time90k;
use vigie_core::config::{ByteSize, Config};

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"
[storage]
data_dir = "/var/lib/vigie"
min_free_bytes = "20GiB"
[retention]
max_days = 30
[recording]
segment_seconds = 60
fragment_ms = 1000
flush_interval_ms = 2000
index_interval_ms = 10000
writer_queue_bytes = "16MiB"
[[communes]]
id = "versailles"
name = "Versailles"
authorisation = "2024/78/0123"
authorisation_expires = "2029-06-30"
retention_days = 15
[[cameras]]
id = "versailles-gare-rd"
name = "Gare Rive Droite"
commune = "versailles"
class = "close-up"
retention_days = 10
  [[cameras.streams]]
  name = "main"
  url = "rtsp://10.1.2.3/Streaming/Channels/101"
  username = "recorder"
  password = "secret"
  transport = "tcp"
  connect_timeout_s = 10
  stall_timeout_s = 10
"#;

fn env(_: &str) -> Option<String> {
    None
}

/// Loads `text`; a loaded configuration is exercised the way `vigie run` uses it.
fn load(text: &str) {
    if let Ok(c) = Config::from_toml_str(text, "fuzz", &env) {
        for (key, cam, s) in c.streams() {
            let _ = key.to_string();
            let _ = c.retention_days(cam);
            let r = s.resolve(&env).expect("a valid configuration resolves");
            let _ = r.url.as_str();
        }
        let _ = c.authorisation_warnings("2030-01-01".parse().unwrap(), 60);
    }
}

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

/// `key = value` lines of GOOD whose value can be replaced.
fn value_lines() -> Vec<usize> {
    GOOD.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(" = "))
        .map(|(i, _)| i)
        .collect()
}

fn absurd_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("18446744073709551615".to_owned()),
        Just("-9223372036854775808".to_owned()),
        Just("9223372036854775807".to_owned()),
        Just("4294967296".to_owned()),
        Just("-1".to_owned()),
        Just("0".to_owned()),
        Just("1e308".to_owned()),
        Just("nan".to_owned()),
        Just("inf".to_owned()),
        Just("\"99999999999999999999999TiB\"".to_owned()),
        Just("\"1.8e19GiB\"".to_owned()),
        Just("\"-5MiB\"".to_owned()),
        Just("\"\"".to_owned()),
        Just("\"rtsp://\"".to_owned()),
        Just("\"rtsp://a:b@[::1]:99999/x\"".to_owned()),
        Just("true".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
        (1usize..100_000).prop_map(|n| format!("\"{}\"", "x".repeat(n))),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<u64>().prop_map(|v| format!("\"{v}GiB\"")),
        "[ -~]{0,40}".prop_map(|s| format!("{s:?}")),
    ]
}

#[test]
fn the_template_is_valid() {
    Config::from_toml_str(GOOD, "t", &env).unwrap();
}

/// Thousands of nested arrays or inline tables: the TOML parser's recursion limit must turn
/// this into an error, not a stack overflow (which aborts the process).
#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for depth in [100, 10_000, 200_000] {
        let arrays = format!("x = {}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(Config::from_toml_str(&arrays, "t", &env).is_err());
        let tables = format!("x = {}{}", "{a=".repeat(depth), "}".repeat(depth));
        assert!(Config::from_toml_str(&tables, "t", &env).is_err());
        let dotted = format!("{} = 1", vec!["a"; depth].join("."));
        assert!(Config::from_toml_str(&dotted, "t", &env).is_err());
        let headers = format!("[{}]", vec!["a"; depth].join("."));
        assert!(Config::from_toml_str(&headers, "t", &env).is_err());
    }
}

/// Huge sizes saturate instead of wrapping, and are rejected where they make no sense.
#[test]
fn huge_sizes_do_not_wrap() {
    assert_eq!(
        ByteSize::parse("99999999999999999999999TiB").unwrap().0,
        u64::MAX
    );
    assert!(ByteSize::parse("-5MiB").is_err());
    assert!(ByteSize::parse("").is_err());
    let text = GOOD.replace("\"16MiB\"", "\"16EB\"");
    assert!(Config::from_toml_str(&text, "t", &env).is_err());
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_random_text(text in "\\PC{0,400}") {
        load(&text);
    }

    #[test]
    fn fuzz_random_bytes(data in prop::collection::vec(any::<u8>(), 0..400)) {
        load(&String::from_utf8_lossy(&data));
    }

    #[test]
    fn fuzz_absurd_values(
        edits in prop::collection::vec((any::<prop::sample::Index>(), absurd_value()), 1..4),
    ) {
        let lines = value_lines();
        let mut text: Vec<String> = GOOD.lines().map(str::to_owned).collect();
        for (i, v) in edits {
            let l = lines[i.index(lines.len())];
            let key = text[l].split(" = ").next().unwrap_or("").to_owned();
            text[l] = format!("{key} = {v}");
        }
        load(&text.join("\n"));
    }

    #[test]
    fn fuzz_mutated_file(
        edits in prop::collection::vec((any::<prop::sample::Index>(), "[ -~\\n]{0,8}"), 1..6),
    ) {
        let mut text = GOOD.to_owned();
        for (i, ins) in edits {
            let mut at = i.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.insert_str(at, &ins);
        }
        load(&text);
    }

    #[test]
    fn fuzz_byte_sizes(s in "[0-9.]{0,30}[a-zA-Z ]{0,4}") {
        let _ = ByteSize::parse(&s);
    }

    #[test]
    fn fuzz_times(s in prop_oneof![
        "\\PC{0,60}",
        "[0-9]{1,7}-[0-9]{1,3}-[0-9]{1,3}T[0-9]{1,3}:[0-9]{1,3}:[0-9]{1,3}(\\.[0-9]{1,20})?(Z|[+-][0-9]{2}:[0-9]{2})",
    ]) {
        if let Ok(t) = Time90k::parse_rfc3339(&s) {
            // Formatting what was parsed must work, and re-parse within a millisecond.
            let back = Time90k::parse_rfc3339(&t.to_rfc3339()).unwrap();
            prop_assert!((back.0 - t.0).abs() <= 90);
        }
    }

    #[test]
    fn fuzz_time_extremes(v in prop_oneof![Just(i64::MIN), Just(i64::MAX), any::<i64>()]) {
        let _ = Time90k(v).to_rfc3339();
    }
}

//! Measurement (issue 16, docs/BENCHMARKS.md "Restart"): decoding a minute's sample table in the
//! journal form (v1, index format 2) against the packed form (format 3), interleaved so both
//! see the same machine load. Prints sizes and the median of 31 rounds of 2,000 decodes each.
//!
//! `cargo run --release -p vigie-store --example table_decode`

use std::time::Instant;

use vigie_store::SampleInfo;
use vigie_store::sampletable::{decode_samples_into, encode_samples, encode_samples_v1};

/// The benchmarks' minute: 1500 frames at 2 Mbit/s, GOP 50, sizes ±20 %, 10 % of durations
/// off by one tick (crates/footage/benches/playback.rs).
fn minute() -> Vec<SampleInfo> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let p_size = 2000u64 * 1000 / 8 / 25 * 50 / 54;
    (0..1500)
        .map(|i| {
            let key = i % 50 == 0;
            let base = if key { p_size * 5 } else { p_size };
            let jitter = next() % (base * 2 / 5 + 1);
            SampleInfo {
                duration_90k: match next() % 20 {
                    0 => 3599,
                    1 => 3601,
                    _ => 3600,
                },
                bytes: (base * 4 / 5 + jitter) as u32,
                is_key: key,
            }
        })
        .collect()
}

fn main() {
    let samples = minute();
    let tables = [
        ("v1 (journal form)", encode_samples_v1(&samples)),
        ("packed", encode_samples(&samples)),
    ];
    let mut out = Vec::new();
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..31 {
        for (i, (_, t)) in tables.iter().enumerate() {
            let start = Instant::now();
            for _ in 0..2_000 {
                assert!(decode_samples_into(std::hint::black_box(t), &mut out));
            }
            times[i].push(start.elapsed().as_secs_f64() / 2_000.0 * 1e6);
        }
    }
    for (i, (name, t)) in tables.iter().enumerate() {
        times[i].sort_by(f64::total_cmp);
        println!(
            "{name}: {} B, decode median {:.2} µs (min {:.2}) per 1500-frame table",
            t.len(),
            times[i][15],
            times[i][0]
        );
    }
}

//! Fuzz-style harness for `vigie verify`'s reading of a package: the zip (central directory,
//! entries, names), `manifest.json`, `SHA256SUMS`, the signatures and the key file (issue 12
//! item 3). Stable toolchain, no coverage guidance: structured random inputs from a seeded
//! generator (reproducible from the seed printed on failure):
//! - mutations of a valid signed package (bit flips, truncation, inserted and repeated bytes);
//! - zips built from a pool of hostile entry names (traversal, absolute, backslash, escapes,
//!   bidi, duplicates, very long, not UTF-8) and hostile contents (manifests with wrong types,
//!   huge lists, escapes; random SUMS lines, signatures and keys);
//! - random bytes ending in a crafted end-of-central-directory record (zip32 and zip64).
//!
//! Checked for every input: no panic; the report prints no raw control or bidi character; an
//! input that was never signed by the key is never VALID.
//!
//! Bounded run in the suite (300 inputs). Longer run, e.g. 100 000 inputs from a new seed:
//!
//! ```sh
//! FUZZ_VERIFY_ITERS=100000 FUZZ_VERIFY_SEED=$RANDOM cargo nextest run --release -p vigie-export --test fuzz_verify
//! ```
//!
//! A failing input is saved as `target/fuzz-verify/crash-<seed>-<n>.zip`: copy it into
//! `crates/export/tests/fuzz_regressions/` (the test `regressions_stay_fixed` replays every file
//! there) before fixing the bug.

mod common;

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vigie_export::{InstallationKey, verify};

fn iterations() -> usize {
    std::env::var("FUZZ_VERIFY_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn seed() -> u64 {
    std::env::var("FUZZ_VERIFY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_2026)
}

const NAMES: &[&str] = &[
    "manifest.json",
    "manifest.sig",
    "signing-key.pub",
    "SHA256SUMS",
    "SHA256SUMS.sig",
    "player.html",
    "LISEZ-MOI.txt",
    common::MP4,
    "../../../../tmp/evil",
    "/etc/passwd",
    "..\\..\\evil.bat",
    "a/./b",
    "C:/evil",
    "x\u{1b}[2K\r\u{1b}[1AVALID",
    "bidi\u{202e}gpj.exe",
    "nul\u{0}byte",
    "dir/",
    "",
];

fn random_string(rng: &mut StdRng) -> String {
    let pool: &[&str] = &[
        "a",
        "é",
        "\u{1b}[31m",
        "\r",
        "\n",
        "\u{202e}",
        "\u{2066}",
        "\\",
        "\"",
        "=",
        "..",
        "/",
        "\u{0}",
        "🦀",
        "  ",
        "VALID",
    ];
    (0..rng.gen_range(0..12))
        .map(|_| pool[rng.gen_range(0..pool.len())])
        .collect()
}

fn random_json(rng: &mut StdRng, depth: u32) -> serde_json::Value {
    use serde_json::{Value, json};
    match rng.gen_range(0..if depth > 3 { 5 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.r#gen::<bool>()),
        2 => json!(rng.r#gen::<i64>()),
        3 => json!(rng.r#gen::<f64>()),
        4 => json!(random_string(rng)),
        5 => Value::Array(
            (0..rng.gen_range(0..4))
                .map(|_| random_json(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let mut m = serde_json::Map::new();
            for k in ["name", "sha256", "bytes", "files", "signature", "export_id"] {
                if rng.gen_bool(0.5) {
                    m.insert(k.into(), random_json(rng, depth + 1));
                }
            }
            Value::Object(m)
        }
    }
}

/// A manifest with some fields replaced by random values of any type.
fn hostile_manifest(rng: &mut StdRng, valid: &[u8]) -> Vec<u8> {
    let mut m: serde_json::Value = serde_json::from_slice(valid).unwrap();
    for _ in 0..rng.gen_range(1..4) {
        let field = [
            "files",
            "signature",
            "camera",
            "procedure",
            "actual",
            "export_id",
        ][rng.gen_range(0..6)];
        m[field] = random_json(rng, 0);
    }
    if rng.gen_bool(0.2) {
        // Many listed files (bounded by the verifier).
        m["files"] = serde_json::Value::Array(
            (0..rng.gen_range(0..20_000))
                .map(|i| serde_json::json!({"name": format!("f{i}"), "sha256": "00", "bytes": 1}))
                .collect(),
        );
    }
    serde_json::to_vec(&m).unwrap()
}

fn structured(rng: &mut StdRng, valid: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for _ in 0..rng.gen_range(0..12) {
        let name: Vec<u8> = match rng.gen_range(0..10) {
            0 => (0..rng.gen_range(1..300)).map(|_| rng.r#gen()).collect(),
            1 => "n".repeat(rng.gen_range(1..2000)).into_bytes(),
            _ => NAMES[rng.gen_range(0..NAMES.len())].as_bytes().to_vec(),
        };
        let data: Vec<u8> = match rng.gen_range(0..6) {
            0 => valid[rng.gen_range(0..valid.len())].1.clone(),
            1 => {
                let m = valid.iter().find(|(n, _)| n == "manifest.json").unwrap();
                hostile_manifest(rng, &m.1)
            }
            2 => format!(
                "{}  {}\n{}\n",
                "0".repeat(rng.gen_range(0..70)),
                random_string(rng),
                random_string(rng)
            )
            .into_bytes(),
            3 => random_string(rng).into_bytes(),
            _ => (0..rng.gen_range(0..500)).map(|_| rng.r#gen()).collect(),
        };
        entries.push((name, data));
    }
    common::write_zip(&entries)
}

fn mutated(rng: &mut StdRng, valid: &[u8]) -> Vec<u8> {
    let mut b = valid.to_vec();
    for _ in 0..rng.gen_range(1..6) {
        if b.is_empty() {
            break;
        }
        match rng.gen_range(0..5) {
            0 | 1 => {
                let i = rng.gen_range(0..b.len());
                b[i] ^= 1 << rng.gen_range(0..8);
            }
            2 => {
                let n = rng.gen_range(0..b.len());
                b.truncate(n);
            }
            3 => {
                let i = rng.gen_range(0..b.len());
                let junk: Vec<u8> = (0..rng.gen_range(1..64)).map(|_| rng.r#gen()).collect();
                b.splice(i..i, junk);
            }
            _ => {
                let i = rng.gen_range(0..b.len());
                let j = (i + rng.gen_range(1..256)).min(b.len());
                let copy = b[i..j].to_vec();
                b.splice(j..j, copy);
            }
        }
    }
    b
}

/// Random bytes, then an end record with random counts, sizes and offsets (sometimes zip64).
fn crafted_end(rng: &mut StdRng) -> Vec<u8> {
    let mut b: Vec<u8> = (0..rng.gen_range(0..400)).map(|_| rng.r#gen()).collect();
    if rng.gen_bool(0.5) {
        let at = b.len() as u64;
        b.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
        b.extend((0..28).map(|_| rng.r#gen::<u8>()));
        for _ in 0..3 {
            b.extend_from_slice(&rng.r#gen::<u64>().to_le_bytes());
        }
        b.extend_from_slice(&[0u8; 8]);
        b.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&at.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
    }
    b.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    b.extend_from_slice(&[0, 0, 0, 0]);
    let max = rng.gen_bool(0.5);
    let f16 = |rng: &mut StdRng| if max { 0xFFFF } else { rng.r#gen::<u16>() };
    let (a, c) = (f16(rng), f16(rng));
    b.extend_from_slice(&a.to_le_bytes());
    b.extend_from_slice(&c.to_le_bytes());
    let f32v = |rng: &mut StdRng| {
        if max {
            0xFFFF_FFFF
        } else {
            rng.gen_range(0..600u32)
        }
    };
    let (s, o) = (f32v(rng), f32v(rng));
    b.extend_from_slice(&s.to_le_bytes());
    b.extend_from_slice(&o.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b
}

fn no_raw_controls(text: &str) -> Result<(), String> {
    match text.chars().find(|&c| {
        c != '\n'
            && (c.is_control()
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c))
    }) {
        Some(c) => Err(format!("raw {c:?} printed")),
        None => Ok(()),
    }
}

/// Verifies `bytes` as a package; `Err` describes a finding.
fn check_one(
    path: &Path,
    bytes: &[u8],
    key: &InstallationKey,
    must_fail: bool,
) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| e.to_string())?;
    let result = std::panic::catch_unwind(|| verify(path, Some(&key.public())));
    match result {
        Err(_) => Err("verify panicked".into()),
        Ok(Err(_)) => Ok(()), // not a zip at all: a clean error
        Ok(Ok(r)) => {
            let text = r.to_string();
            no_raw_controls(&text)?;
            if must_fail && r.ok() {
                return Err(format!("an unsigned input was VALID:\n{text}"));
            }
            Ok(())
        }
    }
}

fn crash_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-verify")
}

#[test]
fn random_packages_never_panic_nor_fake_a_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let key = InstallationKey::from_seed_for_test([9; 32]);
    let pkg = common::package(dir.path(), &key);
    let valid_bytes = std::fs::read(&pkg).unwrap();
    let valid = common::entries(&pkg);
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let input = dir.path().join("input.zip");
    let mut findings = Vec::new();
    for n in 0..iterations() {
        let (bytes, must_fail) = match n % 3 {
            0 => (mutated(&mut rng, &valid_bytes), false),
            1 => (structured(&mut rng, &valid), true),
            _ => (crafted_end(&mut rng), true),
        };
        if let Err(why) = check_one(&input, &bytes, &key, must_fail) {
            std::fs::create_dir_all(crash_dir()).unwrap();
            let saved = crash_dir().join(format!("crash-{seed}-{n}.zip"));
            std::fs::write(&saved, &bytes).unwrap();
            findings.push(format!("input {n} ({}): {why}", saved.display()));
        }
    }
    assert!(
        findings.is_empty(),
        "seed {seed}: {} finding(s):\n{}",
        findings.len(),
        findings.join("\n")
    );
}

/// Every input kept in `tests/fuzz_regressions/` (crashes once found, hostile samples).
#[test]
fn regressions_stay_fixed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let key = InstallationKey::from_seed_for_test([9; 32]);
    let tmp = tempfile::tempdir().unwrap();
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "zip") {
            let bytes = std::fs::read(&p).unwrap();
            check_one(&tmp.path().join("r.zip"), &bytes, &key, true)
                .unwrap_or_else(|why| panic!("{}: {why}", p.display()));
            n += 1;
        }
    }
    assert!(n > 0, "no regression input in {}", dir.display());
}

//! Abuse cases of issue 11 (items 5, 6, 7 and part of 10) against the real binary:
//! - the access journal's truncation is not forgotten after a restart (tamper alarm kept and
//!   reported by `vigie audit verify` and `GET /api/v1/audit/verify`), a deleted head and a
//!   deleted prefix dressed up as a purge are reported;
//! - `vigie verify` cannot be made to print a fake VALID (escaped names), rejects unsafe and
//!   duplicate entry names, does not follow symlinks in folder mode, and pins a key with `--key`;
//! - CSV cells that a spreadsheet would run as formulas are neutralised (journal CSV, register);
//! - camera credentials in a URL's query string are redacted and do not feed the journaled
//!   configuration hash; the register is streamed.
//!
//! The journal is tampered with as an attacker with file access would: with the vigie process
//! stopped, through sled directly (the database format is public).

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use vigie_testkit::{Vigie, VigieBuilder};

const BIN: &str = env!("CARGO_BIN_EXE_vigie");

/// One commune, one camera at `url`.
fn camera(url: &str) -> String {
    format!(
        "[[communes]]\nid = \"versailles\"\nname = \"Versailles\"\nauthorisation = \"2024/78/0123\"\n\
         [[cameras]]\nid = \"gare\"\nname = \"Gare\"\ncommune = \"versailles\"\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"{url}\"\n"
    )
}

/// A camera nobody answers for (the journal tests need no footage).
const DEAD_URL: &str = "rtsp://127.0.0.1:9/none";

/// Opens the (stopped) Vigie's journal database with sled, as an attacker would.
fn with_db<T>(v: &Vigie, f: impl FnOnce(&sled::Tree, &sled::Tree) -> T) -> T {
    let db = sled::Config::new()
        .path(v.data_dir.join("journal"))
        .open()
        .unwrap();
    let entries = db.open_tree("entries").unwrap();
    let meta = db.open_tree("meta").unwrap();
    let out = f(&entries, &meta);
    db.flush().unwrap();
    out
}

fn seqs(entries: &sled::Tree) -> Vec<u64> {
    entries
        .iter()
        .keys()
        .map(|k| u64::from_be_bytes(k.unwrap().as_ref().try_into().unwrap()))
        .collect()
}

fn entry(entries: &sled::Tree, seq: u64) -> Value {
    serde_json::from_slice(&entries.get(seq.to_be_bytes()).unwrap().unwrap()).unwrap()
}

/// Starts and stops `n` times so the journal holds a few entries (service start/stop).
fn cycles(v: &mut Vigie, n: usize) {
    for _ in 0..n {
        v.spawn().unwrap();
        v.stop().unwrap();
    }
}

async fn api_verify(v: &Vigie) -> Value {
    let (code, body) = v.get("/api/v1/audit/verify").await.unwrap();
    assert_eq!(code, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_journal_raises_a_tamper_alarm_that_restarts_do_not_erase() {
    let mut v = VigieBuilder::new(BIN)
        .toml(&camera(DEAD_URL))
        .start()
        .unwrap();
    v.stop().unwrap();
    cycles(&mut v, 2);
    let (ok, out) = v.command(&["audit", "verify"]).unwrap();
    assert!(ok, "{out}");

    // Someone with file access removes the two newest entries.
    let removed = with_db(&v, |entries, _| {
        let s = seqs(entries);
        assert!(s.len() >= 6, "{s:?}");
        let last: Vec<u64> = s[s.len() - 2..].to_vec();
        for seq in &last {
            entries.remove(seq.to_be_bytes()).unwrap();
        }
        last
    });

    // At the next start the head disagrees with the chain: a tamper alarm, reported by the API.
    v.spawn().unwrap();
    let r = api_verify(&v).await;
    assert_eq!(
        r["ok"], false,
        "truncation not reported after a restart: {r}"
    );
    let alarms = r["alarms"].as_array().expect("alarms listed").clone();
    assert_eq!(alarms.len(), 1, "{r}");
    assert!(
        alarms[0]["problem"].as_str().unwrap().contains("removed"),
        "{r}"
    );
    assert!(
        alarms[0]["problem"]
            .as_str()
            .unwrap()
            .contains(&removed[1].to_string()),
        "the alarm names the lost head entry: {r}"
    );
    let (code, list) = v.get("/api/v1/audit?action=tamper-alarm").await.unwrap();
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["entries"].as_array().unwrap().len(), 1, "{list}");
    v.stop().unwrap();

    // More starts overwrite the head again and again: the alarm stays.
    cycles(&mut v, 2);
    let (ok, out) = v.command(&["audit", "verify"]).unwrap();
    assert!(!ok, "the alarm was forgotten: {out}");
    assert!(out.contains("TAMPER"), "{out}");
    assert!(out.contains("removed"), "{out}");
    // No second alarm for the same event: after the alarm the head agrees again.
    v.spawn().unwrap();
    let r = api_verify(&v).await;
    assert_eq!(r["alarms"].as_array().unwrap().len(), 1, "{r}");
    assert!(r["first_broken"].is_null(), "{r}");
    v.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_head_is_reported_and_alarmed() {
    let mut v = VigieBuilder::new(BIN)
        .toml(&camera(DEAD_URL))
        .start()
        .unwrap();
    v.stop().unwrap();
    with_db(&v, |_, meta| {
        assert!(meta.remove(b"head").unwrap().is_some(), "no head key");
    });
    // `vigie audit verify` on the stopped installation: a journal without its head is broken.
    let (ok, out) = v.command(&["audit", "verify"]).unwrap();
    assert!(!ok, "a missing head passed verification: {out}");
    assert!(out.contains("head"), "{out}");
    // And after a start, the API reports it too.
    v.spawn().unwrap();
    let r = api_verify(&v).await;
    assert_eq!(r["ok"], false, "{r}");
    assert!(r.to_string().contains("head"), "{r}");
    v.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_prefix_does_not_pass_as_a_purge() {
    let mut v = VigieBuilder::new(BIN)
        .toml(&camera(DEAD_URL))
        .start()
        .unwrap();
    v.stop().unwrap();
    cycles(&mut v, 1);
    // The oldest three entries are deleted and the "purge start" rewritten to match, as if
    // the journal retention had removed them (they are minutes old, not years).
    with_db(&v, |entries, meta| {
        let e2 = entry(entries, 2);
        for seq in 0..3u64 {
            entries.remove(seq.to_be_bytes()).unwrap();
        }
        meta.insert(
            b"genesis",
            serde_json::to_vec(&(3u64, e2["hash"].as_str().unwrap())).unwrap(),
        )
        .unwrap();
    });
    let (ok, out) = v.command(&["audit", "verify"]).unwrap();
    assert!(!ok, "a deleted prefix passed as a purge: {out}");
    assert!(out.contains("purge"), "{out}");
}

/// A zip with these (name, content) entries, written as is (names not checked).
fn raw_zip(path: &Path, entries: &[(&str, &[u8])]) {
    let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, data) in entries {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap();
}

/// Copies a zip adding entry `name` (raw name bytes, patched after writing so that duplicate
/// and unsafe names get through the writer's own checks).
fn zip_with_extra(src: &Path, dst: &Path, placeholder: &str, real_name: &[u8], data: &[u8]) {
    assert_eq!(placeholder.len(), real_name.len());
    let mut z = zip::ZipArchive::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..z.len() {
        let mut f = z.by_index(i).unwrap();
        let n = f.name().to_owned();
        let mut b = Vec::new();
        f.read_to_end(&mut b).unwrap();
        w.start_file(n, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(&b).unwrap();
    }
    w.start_file(placeholder, zip::write::SimpleFileOptions::default())
        .unwrap();
    w.write_all(data).unwrap();
    let mut bytes = w.finish().unwrap().into_inner();
    // The name appears twice: local header and central directory.
    let mut patched = 0;
    let p = placeholder.as_bytes();
    let mut i = 0;
    while i + p.len() <= bytes.len() {
        if &bytes[i..i + p.len()] == p {
            bytes[i..i + p.len()].copy_from_slice(real_name);
            patched += 1;
            i += p.len();
        } else {
            i += 1;
        }
    }
    assert_eq!(patched, 2, "placeholder found {patched} times");
    std::fs::write(dst, bytes).unwrap();
}

fn vigie_verify(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).arg("verify").args(args).output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn assert_no_raw_controls(out: &str) {
    for c in out.chars() {
        assert!(
            c == '\n'
                || !(c.is_control()
                    || ('\u{202a}'..='\u{202e}').contains(&c)
                    || ('\u{2066}'..='\u{2069}').contains(&c)),
            "raw control character {c:?} printed: {out:?}"
        );
    }
}

#[test]
fn verify_escapes_names_and_rejects_unsafe_entries() {
    let dir = tempfile::tempdir().unwrap();
    // A fake VALID line drawn with terminal escapes over the real verdict, and a bidi override.
    let evil = "x\u{1b}[2K\r\u{1b}[1AVALID \u{2014} intact and signed\u{202e}gpj.exe";
    let pkg = dir.path().join("evil.zip");
    raw_zip(&pkg, &[(evil, b"hello"), ("manifest.json", b"{}")]);
    let (ok, out) = vigie_verify(&[pkg.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert_no_raw_controls(&out);
    assert!(
        out.contains("\\u{1b}[2K"),
        "the name is shown escaped: {out:?}"
    );
    assert!(out.contains("INVALID"), "{out}");

    // Unsafe names are named as such.
    for name in ["../../etc/cron.d/x", "/etc/passwd", "a\\..\\b.txt"] {
        let pkg = dir.path().join("unsafe.zip");
        raw_zip(&pkg, &[(name, b"x")]);
        let (ok, out) = vigie_verify(&[pkg.to_str().unwrap()]);
        assert!(!ok, "{out}");
        assert!(out.contains("unsafe"), "{name}: {out}");
    }
}

async fn wait_recording(v: &Vigie, secs: f64) -> Timestamp {
    let (wa, wb) = (
        (Timestamp::now() - SignedDuration::from_hours(1)).to_string(),
        (Timestamp::now() + SignedDuration::from_hours(1)).to_string(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let spans = v.spans("gare", "main", &wa, &wb).await.unwrap();
        if let Some(&(a, b)) = spans.first()
            && b.duration_since(a).as_secs_f64() >= secs
        {
            return a;
        }
        assert!(Instant::now() < deadline, "not enough recording: {spans:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn export(v: &Vigie, body: &Value) -> Vec<u8> {
    let r = v
        .http()
        .post(format!("{}/api/v1/exports", v.base_url()))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let job: Value = r.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, j) = v.get(&format!("/api/v1/exports/{id}")).await.unwrap();
        match j["status"].as_str().unwrap() {
            "done" => break,
            "failed" => panic!("export failed: {j}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "export not done: {j}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    v.http()
        .get(format!("{}/api/v1/exports/{id}/package", v.base_url()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

/// One real package: `--key`, duplicates, symlinks; and the CSV formula cells of its journal
/// entries and of the register.
#[tokio::test(flavor = "multi_thread")]
async fn verify_pins_keys_rejects_duplicates_and_symlinks_and_csv_cells_are_neutralised() {
    let sim = vigie_testkit::sim::start_baseline(&["a"]).await;
    let mut v = VigieBuilder::new(BIN)
        .toml(&camera(&sim.url("a")))
        .start()
        .unwrap();
    let work = v.work_dir().to_owned();
    let first = wait_recording(&v, 6.0).await;
    let body = json!({
        "camera": "gare", "stream": "main",
        "start": (first + SignedDuration::from_secs(1)).to_string(),
        "end": (first + SignedDuration::from_secs(4)).to_string(),
        "reason": "+cmd|' /C calc'!A0", "procedure": "=HYPERLINK(\"http://evil/\",\"ok\")",
        "requester": "@SUM(1+1)*cmd|' /C calc'!A0",
    });
    let pkg = work.join("package.zip");
    std::fs::write(&pkg, export(&v, &body).await).unwrap();
    let pkg_s = pkg.to_str().unwrap().to_owned();

    // --key: the right key → VALID, another key → INVALID.
    let (_, key_out) = v.command(&["key", "show"]).unwrap();
    let key_hex = key_out
        .lines()
        .find_map(|l| l.strip_prefix("Ed25519 public key (hex): "))
        .unwrap()
        .trim()
        .to_owned();
    let (ok, out) = vigie_verify(&[&pkg_s, "--key", &key_hex]);
    assert!(ok, "{out}");
    assert!(out.contains("VALID") && !out.contains("INVALID"), "{out}");
    // A valid Ed25519 key that is not the installation's.
    let other_key = vigie_export::InstallationKey::from_seed_for_test([0x11; 32]).public_hex();
    assert_ne!(other_key, key_hex);
    let (ok, out) = vigie_verify(&[&pkg_s, "--key", &other_key]);
    assert!(!ok, "a package signed by another key passed --key: {out}");
    assert!(out.contains("INVALID"), "{out}");
    let (ok, out) = vigie_verify(&[&pkg_s, "--key", "not-hex"]);
    assert!(!ok, "{out}");

    // A second entry with the name of the master (unzip would overwrite the first with it).
    let z = zip::ZipArchive::new(std::fs::File::open(&pkg).unwrap()).unwrap();
    let mp4_name = z
        .file_names()
        .find(|n| n.ends_with(".mp4"))
        .unwrap()
        .to_owned();
    let placeholder: String = mp4_name
        .chars()
        .enumerate()
        .map(|(i, c)| if i == 0 { 'Z' } else { c })
        .collect();
    let dup = work.join("dup.zip");
    zip_with_extra(
        &pkg,
        &dup,
        &placeholder,
        mp4_name.as_bytes(),
        b"forged video",
    );
    let (ok, out) = vigie_verify(&[dup.to_str().unwrap()]);
    assert!(!ok, "a duplicate entry passed: {out}");
    assert!(out.contains("duplicate"), "{out}");

    // Folder mode: the master replaced by a symlink to an identical file outside the folder.
    let folder = work.join("unzipped");
    zip::ZipArchive::new(std::fs::File::open(&pkg).unwrap())
        .unwrap()
        .extract(&folder)
        .unwrap();
    let (ok, out) = vigie_verify(&[folder.to_str().unwrap()]);
    assert!(ok, "{out}");
    let outside = work.join("outside.mp4");
    std::fs::rename(folder.join(&mp4_name), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, folder.join(&mp4_name)).unwrap();
    let (ok, out) = vigie_verify(&[folder.to_str().unwrap()]);
    assert!(!ok, "a symlink was followed: {out}");
    assert!(out.contains("symlink"), "{out}");

    // CSV: the export's procedure/reason/requester are formulas; neither the journal CSV nor
    // the register may hand them to a spreadsheet as such.
    let login = v
        .anonymous_client_builder()
        .unwrap()
        .build()
        .unwrap()
        .post(format!("{}/api/v1/session", v.base_url()))
        .json(&json!({ "username": "=2+5", "password": "wrong" }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 401);
    let (code, csv) = v.get_text("/api/v1/audit?format=csv").await.unwrap();
    assert_eq!(code, 200, "{csv}");
    let (code, reg) = v.get_text("/api/v1/register.csv").await.unwrap();
    assert_eq!(code, 200, "{reg}");
    for (what, text) in [("journal", &csv), ("register", &reg)] {
        let mut rdr = csv_cells(text);
        assert!(
            rdr.iter().any(|c| c.starts_with("'=HYPERLINK")),
            "{what}: procedure not neutralised:\n{text}"
        );
        rdr.retain(|c| {
            c.starts_with('=') || c.starts_with('+') || c.starts_with('@') || c.starts_with('\t')
        });
        assert!(rdr.is_empty(), "{what}: formula cells {rdr:?}");
    }
    assert!(csv.contains("'=2+5"), "login name not neutralised:\n{csv}");
    assert!(reg.contains("'@SUM"), "requester not neutralised:\n{reg}");
    v.stop().unwrap();
}

/// Every cell of a CSV document (quotes removed).
fn csv_cells(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' | '\n' if !quoted => out.push(std::mem::take(&mut cell)),
            '\r' if !quoted => {}
            c => cell.push(c),
        }
    }
    out.push(cell);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn url_credentials_are_redacted_and_kept_out_of_the_configuration_hash() {
    let url = |pw: &str| {
        format!("rtsp://admin:{pw}@127.0.0.1:9/s?user=admin&Password={pw}q&token={pw}t&x=1")
    };
    let mut v = VigieBuilder::new(BIN)
        .toml(&camera(&url("hunter2")))
        .start()
        .unwrap();
    let (_, cams) = v.get_text("/api/v1/cameras").await.unwrap();
    assert!(!cams.contains("hunter2"), "credentials shown: {cams}");
    assert!(cams.contains("x=1"), "{cams}");
    let (_, journal) = v.get_text("/api/v1/audit").await.unwrap();
    assert!(!journal.contains("hunter2"), "{journal}");
    v.stop().unwrap();

    // The password changes, nothing else: the configuration hash does not (a hash of a secret
    // would let anyone with the journal test password guesses offline).
    let cfg = std::fs::read_to_string(&v.config_path).unwrap();
    std::fs::write(&v.config_path, cfg.replace("hunter2", "tiger77")).unwrap();
    v.spawn().unwrap();
    let (_, loads) = v.get("/api/v1/audit?action=config-load").await.unwrap();
    assert_eq!(
        loads["entries"].as_array().unwrap().len(),
        1,
        "a new configuration hash for a password change: {loads}"
    );

    // The register is streamed (chunked), not built in memory with a length.
    let r = v
        .http()
        .get(format!("{}/api/v1/register.csv", v.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers().get("content-length").is_none(),
        "register not streamed: {:?}",
        r.headers()
    );
    let text = r.text().await.unwrap();
    assert!(text.starts_with("section,camera"), "{text}");
    v.stop().unwrap();
}

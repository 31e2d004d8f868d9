//! Issue 11 item 6: a package cannot make `verify` print a fake VALID, nor hide a second
//! entry, nor slip a symlink into folder mode; `--key` pins the expected key.

mod common;

use std::path::Path;

use vigie_export::{InstallationKey, verify};

fn no_raw_controls(text: &str) {
    for c in text.chars() {
        assert!(
            c == '\n'
                || !(c.is_control()
                    || ('\u{202a}'..='\u{202e}').contains(&c)
                    || ('\u{2066}'..='\u{2069}').contains(&c)),
            "raw {c:?} in {text:?}"
        );
    }
}

#[test]
fn names_and_manifest_fields_are_escaped_when_printed() {
    let dir = tempfile::tempdir().unwrap();
    let key = InstallationKey::from_seed_for_test([1; 32]);
    let pkg = common::package(dir.path(), &key);
    let mut e: Vec<(Vec<u8>, Vec<u8>)> = common::entries(&pkg)
        .into_iter()
        .map(|(n, d)| (n.into_bytes(), d))
        .collect();
    // A manifest field and an extra entry carrying escapes (the manifest no longer matches its
    // signature: the verdict is INVALID, and must be readable as such).
    for (n, d) in &mut e {
        if n == b"manifest.json" {
            let s = String::from_utf8(d.clone())
                .unwrap()
                .replace("2026/0042", "\\u001b[2K\\r\\u001b[1AVALID \\u202e");
            *d = s.into_bytes();
        }
    }
    e.push((
        "x\u{1b}[2K\r\u{1b}[1AVALID \u{2014} intact\u{202e}"
            .as_bytes()
            .to_vec(),
        b"x".to_vec(),
    ));
    let bad = dir.path().join("bad.zip");
    std::fs::write(&bad, common::write_zip(&e)).unwrap();
    let r = verify(&bad, None).unwrap();
    assert!(!r.ok());
    let text = r.to_string();
    no_raw_controls(&text);
    assert!(text.contains("\\u{1b}[2K"), "{text}");
    assert!(text.contains("\\u{202e}"), "{text}");
}

#[test]
fn duplicate_entries_are_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let key = InstallationKey::from_seed_for_test([1; 32]);
    let pkg = common::package(dir.path(), &key);
    let mut e: Vec<(Vec<u8>, Vec<u8>)> = common::entries(&pkg)
        .into_iter()
        .map(|(n, d)| (n.into_bytes(), d))
        .collect();
    // A forged master after the real one, and a forged one before it.
    for at_end in [true, false] {
        let mut e2 = e.clone();
        let forged = (common::MP4.as_bytes().to_vec(), b"forged".to_vec());
        if at_end {
            e2.push(forged);
        } else {
            e2.insert(0, forged);
        }
        let bad = dir.path().join("dup.zip");
        std::fs::write(&bad, common::write_zip(&e2)).unwrap();
        let r = verify(&bad, Some(&key.public())).unwrap();
        assert!(!r.ok(), "duplicate passed (at_end {at_end}): {r}");
        assert!(r.to_string().contains("duplicate"), "{r}");
    }
    // The untouched package rewritten the same way stays VALID.
    e.truncate(e.len());
    let same = dir.path().join("same.zip");
    std::fs::write(&same, common::write_zip(&e)).unwrap();
    assert!(verify(&same, Some(&key.public())).unwrap().ok());
}

#[test]
fn unsafe_entry_names_are_invalid() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "../../../../etc/cron.d/evil",
        "/etc/cron.d/evil_abs",
        "..\\..\\evil.bat",
        "ok/../../evil",
        "C:/Windows/evil.dll",
        "bell\u{7}name.txt",
    ] {
        let p = dir.path().join("u.zip");
        std::fs::write(
            &p,
            common::write_zip(&[(name.as_bytes().to_vec(), b"x".to_vec())]),
        )
        .unwrap();
        let r = verify(&p, None).unwrap();
        assert!(r.to_string().contains("unsafe entry name"), "{name:?}: {r}");
    }
}

fn unzip(pkg: &Path, out: &Path) {
    zip::ZipArchive::new(std::fs::File::open(pkg).unwrap())
        .unwrap()
        .extract(out)
        .unwrap();
}

#[test]
fn folder_mode_does_not_follow_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let key = InstallationKey::from_seed_for_test([1; 32]);
    let pkg = common::package(dir.path(), &key);
    let out = dir.path().join("unzipped");
    unzip(&pkg, &out);
    assert!(verify(&out, Some(&key.public())).unwrap().ok());
    // The master moved out and linked back: same bytes, but not the package's file.
    let outside = dir.path().join("elsewhere.mp4");
    std::fs::rename(out.join(common::MP4), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, out.join(common::MP4)).unwrap();
    let r = verify(&out, Some(&key.public())).unwrap();
    assert!(!r.ok(), "symlink followed: {r}");
    assert!(r.to_string().contains("symlink"), "{r}");
}

#[test]
fn an_expected_key_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let key = InstallationKey::from_seed_for_test([1; 32]);
    let other = InstallationKey::from_seed_for_test([2; 32]);
    let pkg = common::package(dir.path(), &key);
    assert!(verify(&pkg, Some(&key.public())).unwrap().ok());
    let r = verify(&pkg, Some(&other.public())).unwrap();
    assert!(!r.ok());
    assert!(r.to_string().contains("INVALID"));
}

//! Issue 11 item 5: truncation, a deleted or forged head and a deleted prefix are reported and
//! never forgotten; the head is signed; purges are checked against the journal retention.
//! The database is tampered with through sled, as someone with file access would.

use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use vigie_audit::{Action, HeadSigner, Journal, JournalOptions, NewEntry, Query};
use vigie_core::{Clock, Duration90k, SimulatedClock, Time90k};

const YEAR_S: i64 = 365 * 86_400;

fn clock() -> Arc<SimulatedClock> {
    Arc::new(SimulatedClock::new(
        Time90k::parse_rfc3339("2026-11-29T10:00:00Z").unwrap(),
    ))
}

fn key(seed: u8) -> Arc<dyn HeadSigner> {
    Arc::new(SigningKey::from_bytes(&[seed; 32]))
}

fn options(seed: u8) -> JournalOptions {
    JournalOptions {
        signer: Some(key(seed)),
        retention: Some(Duration90k::from_secs(YEAR_S)),
    }
}

fn open(dir: &Path, clock: &Arc<SimulatedClock>, seed: u8) -> Journal {
    Journal::open_with(dir, clock.clone(), options(seed)).unwrap()
}

fn fill(j: &Journal, clock: &SimulatedClock, n: u64, step_s: i64) {
    for i in 0..n {
        clock.advance(Duration90k::from_secs(step_s));
        j.append(NewEntry::new(format!("user{i}"), Action::Playback).camera("cam", "main"))
            .unwrap();
    }
}

/// Runs `f` on the closed journal's trees (entries, meta, alarms).
fn tamper(dir: &Path, f: impl FnOnce(&sled::Tree, &sled::Tree, &sled::Tree)) {
    let db = sled::open(dir).unwrap();
    f(
        &db.open_tree("entries").unwrap(),
        &db.open_tree("meta").unwrap(),
        &db.open_tree("alarms").unwrap(),
    );
    db.flush().unwrap();
}

fn entry_hash(entries: &sled::Tree, seq: u64) -> String {
    let e: vigie_audit::Entry =
        serde_json::from_slice(&entries.get(seq.to_be_bytes()).unwrap().unwrap()).unwrap();
    e.hash
}

#[test]
fn truncation_raises_an_alarm_that_later_appends_do_not_erase() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("j");
    let c = clock();
    fill(&open(&dir, &c, 1), &c, 10, 60);
    tamper(&dir, |entries, _, _| {
        for seq in 7..10u64 {
            entries.remove(seq.to_be_bytes()).unwrap();
        }
    });
    let j = open(&dir, &c, 1);
    fill(&j, &c, 5, 60);
    drop(j);
    let j = open(&dir, &c, 1);
    fill(&j, &c, 1, 60);
    let r = j.verify().unwrap();
    assert!(!r.ok(), "{r:?}");
    assert!(
        r.first_broken.is_none(),
        "the chain itself is intact: {r:?}"
    );
    assert_eq!(r.alarms.len(), 1, "{r:?}");
    assert!(r.alarms[0].problem.contains("7..=9 were removed"), "{r:?}");
    let chained = j
        .query(&Query {
            action: Some(Action::TamperAlarm),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(chained.len(), 1);
    assert_eq!(r.alarms[0].entry_seq, Some(chained[0].seq));
    assert_eq!(r.head_key.as_deref().map(str::len), Some(64));
}

#[test]
fn an_alarm_deleted_from_the_alarm_store_is_still_reported_from_the_chain() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("j");
    let c = clock();
    fill(&open(&dir, &c, 1), &c, 5, 60);
    tamper(&dir, |_, meta, _| {
        meta.remove(b"head").unwrap();
    });
    drop(open(&dir, &c, 1));
    tamper(&dir, |_, _, alarms| alarms.clear().unwrap());
    let r = open(&dir, &c, 1).verify().unwrap();
    assert_eq!(r.alarms.len(), 1, "{r:?}");
    assert!(r.alarms[0].problem.contains("head is missing"), "{r:?}");
    assert!(
        r.alarms[0].problem.contains("deleted from the alarm store"),
        "{r:?}"
    );
}

#[test]
fn missing_head_fails_verification() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("j");
    let c = clock();
    fill(&Journal::open(&dir, c.clone()).unwrap(), &c, 5, 60);
    tamper(&dir, |_, meta, _| {
        meta.remove(b"head").unwrap();
    });
    // Verified without reopening through a signer: the missing head alone is a finding.
    let r = Journal::open(&dir, c.clone()).unwrap().verify().unwrap();
    assert!(!r.ok(), "{r:?}");
    assert!(
        r.alarms
            .iter()
            .any(|a| a.problem.contains("head is missing")),
        "{r:?}"
    );
}

#[test]
fn head_rewritten_to_match_a_truncated_chain_needs_the_key() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("j");
    let c = clock();
    fill(&open(&dir, &c, 1), &c, 10, 60);
    // Without the key: the forger rewrites the head to the new last entry, signed by their key,
    // then unsigned.
    for forged_with in [Some(2u8), None] {
        let sub = d.path().join(format!("copy{forged_with:?}"));
        copy_dir(&dir, &sub);
        tamper(&sub, |entries, meta, _| {
            entries.remove(9u64.to_be_bytes()).unwrap();
            let hash = entry_hash(entries, 8);
            let head = match forged_with {
                Some(seed) => {
                    let k = key(seed);
                    let msg = format!("vigie-journal-head/1\n8\n{hash}");
                    serde_json::json!({"seq": 8, "hash": hash,
                        "public_key": hex::encode(k.public().as_bytes()),
                        "signature": hex::encode(k.sign(msg.as_bytes()).to_bytes())})
                }
                None => serde_json::json!([8, hash]),
            };
            meta.insert(b"head", serde_json::to_vec(&head).unwrap())
                .unwrap();
        });
        let r = open(&sub, &c, 1).verify().unwrap();
        assert_eq!(r.alarms.len(), 1, "{forged_with:?}: {r:?}");
        let p = &r.alarms[0].problem;
        assert!(
            p.contains("another key") || p.contains("not signed"),
            "{forged_with:?}: {p}"
        );
    }
    // With the installation key, the same rewrite is undetectable (documented limit).
    tamper(&dir, |entries, meta, _| {
        entries.remove(9u64.to_be_bytes()).unwrap();
        let hash = entry_hash(entries, 8);
        let k = key(1);
        let msg = format!("vigie-journal-head/1\n8\n{hash}");
        let head = serde_json::json!({"seq": 8, "hash": hash,
            "public_key": hex::encode(k.public().as_bytes()),
            "signature": hex::encode(k.sign(msg.as_bytes()).to_bytes())});
        meta.insert(b"head", serde_json::to_vec(&head).unwrap())
            .unwrap();
    });
    let r = open(&dir, &c, 1).verify().unwrap();
    assert!(r.ok(), "{r:?}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn an_unsigned_head_is_an_alarm_not_an_upgrade() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("j");
    let c = clock();
    fill(&open(&dir, &c, 1), &c, 5, 60);
    // Someone truncates the journal and writes an unsigned head in the old `[seq, hash]` form,
    // as if the journal came from a version without signed heads.
    tamper(&dir, |entries, meta, _| {
        entries.remove(4u64.to_be_bytes()).unwrap();
        let hash = entry_hash(entries, 3);
        meta.insert(b"head", serde_json::to_vec(&(3u64, hash)).unwrap())
            .unwrap();
    });
    let j = open(&dir, &c, 1);
    let r = j.verify().unwrap();
    assert_eq!(r.alarms.len(), 1, "{r:?}");
    assert!(r.alarms[0].problem.contains("not signed"), "{r:?}");
    // The alarm's entry signed the head again: the chain and head agree from now on.
    assert!(r.first_broken.is_none(), "{r:?}");
    assert!(r.head_key.is_some(), "{r:?}");
    drop(j);
    assert_eq!(open(&dir, &c, 1).verify().unwrap().alarms.len(), 1);
}

#[test]
fn deleted_prefix_is_not_a_purge_but_a_real_purge_is() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("j");
    let c = clock();
    let j = open(&dir, &c, 1);
    // 20 entries a month apart (20 months).
    fill(&j, &c, 20, 30 * 86_400);
    drop(j);
    let fake = d.path().join("fake");
    copy_dir(&dir, &fake);
    tamper(&fake, |entries, meta, _| {
        let hash = entry_hash(entries, 4);
        for seq in 0..5u64 {
            entries.remove(seq.to_be_bytes()).unwrap();
        }
        meta.insert(b"genesis", serde_json::to_vec(&(5u64, hash)).unwrap())
            .unwrap();
    });
    let r = open(&fake, &c, 1).verify().unwrap();
    let (seq, why) = r.first_broken.clone().expect("deleted prefix passed");
    assert_eq!(seq, 5);
    assert!(why.contains("no journal-purge entry"), "{why}");

    // The retention purge: entries older than a year go, the rest verifies.
    let j = open(&dir, &c, 1);
    let cutoff = c.now() - Duration90k::from_secs(YEAR_S);
    let n = j.purge_before(cutoff, "system").unwrap();
    assert!(n >= 7, "{n}");
    let r = j.verify().unwrap();
    assert!(r.ok(), "{r:?}");
    assert!(r.first_seq >= 7);
    drop(j);

    // A purge of recent entries (someone called it with a short cutoff): reported.
    let young = d.path().join("young");
    copy_dir(&dir, &young);
    let j = open(&young, &c, 1);
    j.purge_before(c.now() - Duration90k::from_secs(60 * 86_400), "system")
        .unwrap();
    let (_, why) = j
        .verify()
        .unwrap()
        .first_broken
        .expect("young purge passed");
    assert!(why.contains("younger than the journal retention"), "{why}");
}

#[test]
fn an_interrupted_purge_still_verifies() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("j");
    let c = clock();
    let j = open(&dir, &c, 1);
    fill(&j, &c, 10, 60);
    let cutoff = c.now() - Duration90k::from_secs(5 * 60 - 1);
    c.advance(Duration90k::from_secs(2 * YEAR_S));
    j.purge_before(cutoff + Duration90k::from_secs(0), "system")
        .unwrap();
    drop(j);
    // A crash between the start of the chain and the deletions: put entries back below it.
    let r = open(&dir, &c, 1).verify().unwrap();
    assert!(r.ok(), "{r:?}");
    let first = r.first_seq;
    tamper(&dir, |entries, _, _| {
        entries
            .insert(0u64.to_be_bytes(), b"leftover".as_slice())
            .unwrap();
    });
    let r = open(&dir, &c, 1).verify().unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.first_seq, first);
}

//! The journal on a real sled database: chaining, tamper detection, queries, purge.

use std::sync::Arc;

use vigie_audit::{Action, Journal, NewEntry, Query};
use vigie_core::{Clock, Duration90k, SimulatedClock, Time90k};

fn journal() -> (tempfile::TempDir, Arc<SimulatedClock>, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(SimulatedClock::new(
        Time90k::parse_rfc3339("2026-11-29T10:00:00Z").unwrap(),
    ));
    let j = Journal::open(&dir.path().join("journal"), clock.clone()).unwrap();
    (dir, clock, j)
}

fn fill(j: &Journal, clock: &SimulatedClock, n: u64) {
    for i in 0..n {
        clock.advance(Duration90k::from_secs(60));
        let action = if i % 2 == 0 {
            Action::Playback
        } else {
            Action::LiveStart
        };
        j.append(
            NewEntry::new(format!("user{}", i % 3), action)
                .camera(&format!("cam{}", i % 4), "main"),
        )
        .unwrap();
    }
}

#[test]
fn entries_chain_and_verify() {
    let (_d, clock, j) = journal();
    fill(&j, &clock, 20);
    let all = j.query(&Query::default()).unwrap();
    assert_eq!(all.len(), 20);
    assert_eq!(all[0].prev_hash, "0".repeat(64));
    for w in all.windows(2) {
        assert_eq!(w[1].prev_hash, w[0].hash);
        assert_eq!(w[1].seq, w[0].seq + 1);
        assert!(w[1].time_90k >= w[0].time_90k);
    }
    let r = j.verify().unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.entries, 20);
}

#[test]
fn edited_entry_is_named() {
    let (_d, clock, j) = journal();
    fill(&j, &clock, 10);
    let raw = j.raw_entries().unwrap();
    let v = raw.get(7u64.to_be_bytes()).unwrap().unwrap();
    let edited = String::from_utf8(v.to_vec())
        .unwrap()
        .replace("user1", "user2");
    raw.insert(7u64.to_be_bytes(), edited.as_bytes()).unwrap();
    let r = j.verify().unwrap();
    let (seq, why) = r.first_broken.unwrap();
    assert_eq!(seq, 7, "{why}");
    assert!(why.contains("modified"), "{why}");
}

#[test]
fn rehashed_edit_breaks_the_next_link() {
    let (_d, clock, j) = journal();
    fill(&j, &clock, 10);
    // A forger who also recomputes the edited entry's hash is caught by the next entry.
    let raw = j.raw_entries().unwrap();
    let mut e: vigie_audit::Entry =
        serde_json::from_slice(&raw.get(4u64.to_be_bytes()).unwrap().unwrap()).unwrap();
    e.actor = "someone-else".into();
    e.hash = e.compute_hash();
    raw.insert(4u64.to_be_bytes(), serde_json::to_vec(&e).unwrap())
        .unwrap();
    let (seq, why) = j.verify().unwrap().first_broken.unwrap();
    assert_eq!(seq, 5, "{why}");
    assert!(why.contains("chain"), "{why}");
}

#[test]
fn removed_entries_are_named() {
    let (_d, clock, j) = journal();
    fill(&j, &clock, 10);
    j.raw_entries().unwrap().remove(3u64.to_be_bytes()).unwrap();
    let (seq, why) = j.verify().unwrap().first_broken.unwrap();
    assert_eq!(seq, 3, "{why}");
    assert!(why.contains("missing"), "{why}");

    let (_d, clock, j) = journal();
    fill(&j, &clock, 10);
    j.raw_entries().unwrap().remove(9u64.to_be_bytes()).unwrap();
    let (seq, why) = j.verify().unwrap().first_broken.unwrap();
    assert_eq!(seq, 9, "{why}");
    assert!(why.contains("removed"), "{why}");
}

#[test]
fn survives_reopen_and_keeps_chaining() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(SimulatedClock::new(Time90k::from_unix_secs(1_800_000_000)));
    {
        let j = Journal::open(&dir.path().join("j"), clock.clone()).unwrap();
        fill(&j, &clock, 5);
    }
    let j = Journal::open(&dir.path().join("j"), clock.clone()).unwrap();
    fill(&j, &clock, 5);
    let r = j.verify().unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.entries, 10);
}

#[test]
fn queries_filter_by_time_actor_camera_action() {
    let (_d, clock, j) = journal();
    let t0 = clock.now();
    fill(&j, &clock, 40); // one entry per minute from t0 + 1 min
    let window = Query {
        start: Some(t0 + Duration90k::from_secs(600)),
        end: Some(t0 + Duration90k::from_secs(1200)),
        ..Default::default()
    };
    let got = j.query(&window).unwrap();
    assert_eq!(got.len(), 10, "minutes 10..20");
    assert!(
        got.iter()
            .all(|e| e.time_90k >= window.start.unwrap().0 && e.time_90k < window.end.unwrap().0)
    );
    let by_actor = j
        .query(&Query {
            actor: Some("user0".into()),
            ..Default::default()
        })
        .unwrap();
    assert!(!by_actor.is_empty() && by_actor.iter().all(|e| e.actor == "user0"));
    let by_cam = j
        .query(&Query {
            camera: Some("cam2".into()),
            action: Some(Action::Playback),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(by_cam.len(), 10);
    let page = j
        .query(&Query {
            after_seq: Some(35),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.first().map(|e| e.seq), Some(36));
    assert_eq!(
        j.query(&Query {
            limit: Some(3),
            ..Default::default()
        })
        .unwrap()
        .len(),
        3
    );
}

#[test]
fn purge_keeps_the_rest_verifiable_and_is_journaled() {
    let (_d, clock, j) = journal();
    let t0 = clock.now();
    fill(&j, &clock, 30);
    let n = j
        .purge_before(t0 + Duration90k::from_secs(10 * 60 + 1), "system")
        .unwrap();
    assert_eq!(n, 10);
    let r = j.verify().unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.first_seq, 10);
    assert_eq!(r.entries, 21);
    let last = j
        .query(&Query {
            action: Some(Action::JournalPurge),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].details["deleted"], 10);
}

/// A head anchored elsewhere (a cluster node's etcd anchor) tells a truncated or replaced
/// journal from an intact one, even when the local chain verifies on its own.
#[test]
fn anchors_catch_truncation_and_replacement_but_not_purges() {
    use vigie_audit::AnchorCheck;
    let (d, clock, j) = journal();
    let t0 = clock.now();
    assert_eq!(j.head().unwrap(), None);
    fill(&j, &clock, 30);
    let (seq, hash) = j.head().unwrap().unwrap();
    assert_eq!(seq, 29);
    assert_eq!(j.check_anchor(seq, &hash).unwrap(), AnchorCheck::Matches);
    assert_eq!(
        j.check_anchor(seq, &"f".repeat(64)).unwrap(),
        AnchorCheck::Differs {
            found: hash.clone()
        }
    );

    // Purged by retention: not checkable, not an alarm.
    j.purge_before(t0 + Duration90k::from_secs(10 * 60 + 1), "system")
        .unwrap();
    let old = j.check_anchor(3, "whatever").unwrap();
    assert_eq!(old, AnchorCheck::Purged { first_seq: 10 });
    assert!(old.ok());

    // The last entries cut off (raw access, as someone with the disk would): the anchor is
    // beyond the end.
    let raw = j.raw_entries().unwrap();
    for s in 25..=30u64 {
        raw.remove(s.to_be_bytes()).unwrap();
    }
    let cut = j.check_anchor(seq, &hash).unwrap();
    assert_eq!(cut, AnchorCheck::Missing { last_seq: Some(24) });
    assert!(!cut.ok());
    drop(raw);
    drop(j);

    // The whole journal replaced by a fresh one: the anchored entry has another hash (or is
    // missing), whatever the new chain's own verification says.
    std::fs::remove_dir_all(d.path().join("journal")).unwrap();
    let fresh = Journal::open(&d.path().join("journal"), clock.clone()).unwrap();
    fill(&fresh, &clock, 31);
    assert!(fresh.verify().unwrap().ok());
    let replaced = fresh.check_anchor(seq, &hash).unwrap();
    assert!(
        matches!(replaced, AnchorCheck::Differs { .. }),
        "{replaced:?}"
    );
    let a = fresh
        .raise_tamper_alarm(format!("anchor {seq} not in the journal"))
        .unwrap();
    assert_eq!(fresh.alarms().unwrap(), vec![a]);
    assert!(!fresh.verify().unwrap().ok());
}

//! Checking a chain of entries read from elsewhere (another cluster node's journal, fetched
//! page by page over its internal route): sequence, links and hashes, a missing prefix
//! accounted for by a `journal-purge` entry, the tamper alarms on record, and a head anchored
//! earlier (`j/<node>` in etcd). Entries are fed one at a time, so memory does not grow with
//! the journal.
//!
//! Does not own: the signed head and the alarm store (they live on the node's disk; its own
//! [`crate::Journal::verify`] checks them), the purge's retention (idem), fetching entries.

use serde::Serialize;

use crate::entry::{Action, Entry, GENESIS_HASH};
use crate::journal::AnchorCheck;

/// Feeds entries oldest first; [`ChainCheck::finish`] says what was found.
#[derive(Debug)]
pub struct ChainCheck {
    anchor: Option<(u64, String)>,
    /// Hash found at the anchored sequence number, once seen.
    anchored_found: Option<String>,
    first_seq: Option<u64>,
    /// `prev_hash` of the first entry (where the chain starts after a purge).
    first_prev: Option<String>,
    last: Option<(u64, String)>,
    entries: u64,
    broken: Option<(u64, String)>,
    purge_accounts: bool,
    alarms: Vec<ChainAlarm>,
}

/// A `tamper-alarm` entry found in the chain.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChainAlarm {
    pub seq: u64,
    pub time_90k: i64,
    pub problem: String,
}

/// What [`ChainCheck`] found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChainReport {
    pub entries: u64,
    pub first_seq: Option<u64>,
    /// The last entry: sequence number and hash.
    pub last: Option<(u64, String)>,
    /// The first broken entry and why.
    pub first_broken: Option<(u64, String)>,
    /// Tamper alarms journaled in the chain.
    pub alarms: Vec<ChainAlarm>,
    /// The anchored head compared with the chain (`None`: no anchor given).
    pub anchor: Option<AnchorCheck>,
}

impl ChainReport {
    /// Intact, holds its anchor, and no tamper alarm on record.
    pub fn ok(&self) -> bool {
        self.first_broken.is_none()
            && self.alarms.is_empty()
            && self.anchor.as_ref().is_none_or(AnchorCheck::ok)
    }
}

impl ChainCheck {
    /// `anchor`: a head (sequence number, hash) anchored earlier, which the chain must hold.
    pub fn new(anchor: Option<(u64, String)>) -> ChainCheck {
        ChainCheck {
            anchor,
            anchored_found: None,
            first_seq: None,
            first_prev: None,
            last: None,
            entries: 0,
            broken: None,
            purge_accounts: false,
            alarms: Vec::new(),
        }
    }

    /// The next entry (oldest first). False once the chain is broken (the rest is not checked).
    pub fn push(&mut self, e: &Entry) -> bool {
        if self.broken.is_some() {
            return false;
        }
        match &self.last {
            None => {
                self.first_seq = Some(e.seq);
                self.first_prev = Some(e.prev_hash.clone());
                if e.seq == 0 && e.prev_hash != GENESIS_HASH {
                    self.broken = Some((0, "entry 0 does not start a chain".into()));
                    return false;
                }
            }
            Some((seq, hash)) => {
                if e.seq != seq + 1 {
                    self.broken = Some((
                        seq + 1,
                        format!(
                            "entry {} is missing (next present entry is {})",
                            seq + 1,
                            e.seq
                        ),
                    ));
                    return false;
                }
                if &e.prev_hash != hash {
                    self.broken = Some((
                        e.seq,
                        format!(
                            "entry {} does not chain to the previous entry (prev_hash mismatch)",
                            e.seq
                        ),
                    ));
                    return false;
                }
            }
        }
        if e.compute_hash() != e.hash {
            self.broken = Some((
                e.seq,
                format!(
                    "entry {} was modified (its hash does not match its content)",
                    e.seq
                ),
            ));
            return false;
        }
        match e.action {
            Action::TamperAlarm => self.alarms.push(ChainAlarm {
                seq: e.seq,
                time_90k: e.time_90k,
                problem: e.reason.clone().unwrap_or_default(),
            }),
            Action::JournalPurge => {
                if let Some(first) = self.first_seq
                    && first > 0
                    && e.details["up_to_seq"].as_u64() == Some(first - 1)
                    && e.details["genesis_hash"].as_str() == self.first_prev.as_deref()
                {
                    self.purge_accounts = true;
                }
            }
            _ => {}
        }
        if let Some((seq, _)) = &self.anchor
            && *seq == e.seq
        {
            self.anchored_found = Some(e.hash.clone());
        }
        self.last = Some((e.seq, e.hash.clone()));
        self.entries += 1;
        true
    }

    pub fn finish(self) -> ChainReport {
        let mut broken = self.broken;
        if broken.is_none()
            && let Some(first) = self.first_seq
            && first > 0
            && !self.purge_accounts
        {
            broken = Some((
                first,
                format!(
                    "entries before {first} are missing and no journal-purge entry accounts for them"
                ),
            ));
        }
        let anchor =
            self.anchor
                .as_ref()
                .map(|(seq, hash)| match (&self.anchored_found, self.first_seq) {
                    (Some(found), _) if found == hash => AnchorCheck::Matches,
                    (Some(found), _) => AnchorCheck::Differs {
                        found: found.clone(),
                    },
                    (None, Some(first)) if *seq < first => AnchorCheck::Purged { first_seq: first },
                    (None, _) => AnchorCheck::Missing {
                        last_seq: self.last.as_ref().map(|(s, _)| *s),
                    },
                });
        ChainReport {
            entries: self.entries,
            first_seq: self.first_seq,
            last: self.last,
            first_broken: broken,
            alarms: self.alarms,
            anchor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Journal, NewEntry};
    use std::sync::Arc;
    use vigie_core::{SimulatedClock, Time90k};

    fn journal(n: u64) -> (tempfile::TempDir, Vec<Entry>) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(SimulatedClock::new(Time90k(1_000)));
        let j = Journal::open(dir.path(), clock).unwrap();
        let entries = (0..n)
            .map(|i| {
                j.append(NewEntry::new(format!("u{i}"), Action::Playback))
                    .unwrap()
            })
            .collect();
        (dir, entries)
    }

    fn check(entries: &[Entry], anchor: Option<(u64, String)>) -> ChainReport {
        let mut c = ChainCheck::new(anchor);
        for e in entries {
            c.push(e);
        }
        c.finish()
    }

    #[test]
    fn an_intact_chain_holds_its_anchor_and_every_cut_or_edit_is_named() {
        let (_d, e) = journal(6);
        let r = check(&e, Some((3, e[3].hash.clone())));
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.anchor, Some(AnchorCheck::Matches));
        assert_eq!(r.last.as_ref().map(|l| l.0), Some(5));

        // Truncated: ends before the anchor.
        let r = check(&e[..3], Some((4, e[4].hash.clone())));
        assert_eq!(r.anchor, Some(AnchorCheck::Missing { last_seq: Some(2) }));
        assert!(!r.ok());

        // A middle entry removed; an entry edited; the anchored entry with another hash.
        let mut cut = e.clone();
        cut.remove(2);
        assert_eq!(check(&cut, None).first_broken.map(|b| b.0), Some(2));
        let mut edited = e.clone();
        edited[4].actor = "someone else".into();
        assert_eq!(check(&edited, None).first_broken.map(|b| b.0), Some(4));
        let r = check(&e, Some((2, "f".repeat(64))));
        assert!(
            matches!(r.anchor, Some(AnchorCheck::Differs { .. })),
            "{r:?}"
        );

        // A missing prefix not accounted for by a purge.
        let r = check(&e[2..], None);
        assert_eq!(r.first_broken.map(|b| b.0), Some(2));

        // A tamper alarm on record fails the check.
        let mut alarm = e[5].clone();
        alarm.seq = 6;
        alarm.prev_hash = e[5].hash.clone();
        alarm.action = Action::TamperAlarm;
        alarm.reason = Some("entries were removed".into());
        alarm.hash = alarm.compute_hash();
        let mut with_alarm = e.clone();
        with_alarm.push(alarm);
        let r = check(&with_alarm, None);
        assert!(r.first_broken.is_none() && !r.ok(), "{r:?}");
        assert_eq!(r.alarms[0].seq, 6);
    }
}

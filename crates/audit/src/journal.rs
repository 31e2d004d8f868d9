//! The journal database: append (serialized, flushed before returning), query by time window and
//! filters, verify the chain, purge past the retention.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use vigie_core::dblock::{LOCK_WAIT, is_lock_conflict, retry_while_locked};
use vigie_core::{Clock, Time90k};

use crate::AuditError;
use crate::entry::{Action, Entry, GENESIS_HASH, NewEntry};

/// Key of the newest entry (seq, hash) as last written: detects removal of the newest entries.
const META_HEAD: &[u8] = b"head";
/// (first seq, its prev_hash) after a purge: where verification starts.
const META_GENESIS: &[u8] = b"genesis";

/// The access journal. Cheap to clone.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    entries: sled::Tree,
    meta: sled::Tree,
    clock: Arc<dyn Clock>,
    head: Mutex<Head>,
}

#[derive(Clone, Debug)]
struct Head {
    next_seq: u64,
    last_hash: String,
    last_time_90k: i64,
}

/// Filters for [`Journal::query`]. All optional; `limit` defaults to 1000.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub start: Option<Time90k>,
    pub end: Option<Time90k>,
    pub actor: Option<String>,
    pub camera: Option<String>,
    pub action: Option<Action>,
    /// Only entries with `seq > after_seq` (pagination).
    pub after_seq: Option<u64>,
    pub limit: Option<usize>,
}

/// Outcome of [`Journal::verify`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Entries checked.
    pub entries: u64,
    /// First sequence number checked (greater than 0 after a purge).
    pub first_seq: u64,
    /// The first broken entry and what is wrong with it; `None` when the chain is intact.
    pub first_broken: Option<(u64, String)>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.first_broken.is_none()
    }
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn seq_of(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

impl Journal {
    /// Opens (or creates) the journal in `dir`.
    pub fn open(dir: &Path, clock: Arc<dyn Clock>) -> Result<Journal, AuditError> {
        let db = retry_while_locked(
            LOCK_WAIT,
            || sled::Config::new().path(dir).cache_capacity(8 << 20).open(),
            |e| matches!(e, sled::Error::Io(io) if is_lock_conflict(io)),
        )?;
        let entries = db.open_tree("entries")?;
        let meta = db.open_tree("meta")?;
        let head = match entries.last()? {
            Some((k, v)) => {
                let seq = seq_of(&k).unwrap_or(0);
                let e: Entry = serde_json::from_slice(&v)
                    .map_err(|source| AuditError::Decode { seq, source })?;
                Head {
                    next_seq: seq + 1,
                    last_hash: e.hash,
                    last_time_90k: e.time_90k,
                }
            }
            None => {
                let (seq, hash) = Self::read_genesis(&meta)?;
                Head {
                    next_seq: seq,
                    last_hash: hash,
                    last_time_90k: i64::MIN,
                }
            }
        };
        if let Some(v) = meta.get(META_HEAD)? {
            let recorded: (u64, String) = serde_json::from_slice(&v).unwrap_or((0, String::new()));
            if recorded.0 + 1 != head.next_seq || recorded.1 != head.last_hash {
                tracing::error!(
                    recorded_head_seq = recorded.0,
                    found_next_seq = head.next_seq,
                    "the access journal's newest entries were removed or altered; run `vigie audit verify`"
                );
            }
        }
        tracing::info!(next_seq = head.next_seq, head_hash = %head.last_hash, "access journal opened");
        Ok(Journal {
            inner: Arc::new(Inner {
                db,
                entries,
                meta,
                clock,
                head: Mutex::new(head),
            }),
        })
    }

    fn read_genesis(meta: &sled::Tree) -> Result<(u64, String), AuditError> {
        Ok(match meta.get(META_GENESIS)? {
            Some(v) => serde_json::from_slice(&v).unwrap_or((0, GENESIS_HASH.to_owned())),
            None => (0, GENESIS_HASH.to_owned()),
        })
    }

    /// Appends an entry and flushes it to disk before returning it.
    pub fn append(&self, new: NewEntry) -> Result<Entry, AuditError> {
        let mut head = self.inner.head.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.inner.clock.now().0.max(head.last_time_90k);
        let mut e = Entry {
            seq: head.next_seq,
            time_90k: now,
            actor: new.actor,
            action: new.action.unwrap_or(Action::ConfigLoad),
            camera: new.camera,
            stream: new.stream,
            start_90k: new.start_90k,
            end_90k: new.end_90k,
            reason: new.reason,
            procedure: new.procedure,
            remote_addr: new.remote_addr,
            details: new.details,
            prev_hash: head.last_hash.clone(),
            hash: String::new(),
        };
        e.hash = e.compute_hash();
        let bytes = serde_json::to_vec(&e).map_err(AuditError::Encode)?;
        let head_bytes = serde_json::to_vec(&(e.seq, &e.hash)).map_err(AuditError::Encode)?;
        self.inner.entries.insert(key(e.seq), bytes)?;
        self.inner.meta.insert(META_HEAD, head_bytes)?;
        self.inner.db.flush()?;
        head.next_seq = e.seq + 1;
        head.last_hash = e.hash.clone();
        head.last_time_90k = now;
        Ok(e)
    }

    /// Appends, logging a failure instead of returning it. Only for system events (service
    /// start/stop, retention) that have no caller to report to; user actions use
    /// [`Journal::append`] and fail when it fails (no untraced access).
    pub fn append_or_log(&self, new: NewEntry) {
        if let Err(e) = self.append(new) {
            tracing::error!(error = %e, "cannot write to the access journal");
        }
    }

    /// Entries matching `q`, oldest first.
    pub fn query(&self, q: &Query) -> Result<Vec<Entry>, AuditError> {
        let limit = q.limit.unwrap_or(1000);
        let from = match (q.start, q.after_seq) {
            (_, Some(s)) => s.saturating_add(1),
            (Some(t), None) => self.first_seq_at_or_after(t)?,
            (None, None) => 0,
        };
        let mut out = Vec::new();
        for item in self.inner.entries.range(key(from)..) {
            let (k, v) = item?;
            let seq = seq_of(&k).unwrap_or(0);
            let e: Entry =
                serde_json::from_slice(&v).map_err(|source| AuditError::Decode { seq, source })?;
            if q.end.is_some_and(|end| e.time_90k >= end.0) {
                break;
            }
            if q.start.is_some_and(|s| e.time_90k < s.0)
                || q.actor.as_ref().is_some_and(|a| &e.actor != a)
                || q.camera
                    .as_ref()
                    .is_some_and(|c| e.camera.as_ref() != Some(c))
                || q.action.is_some_and(|a| e.action != a)
            {
                continue;
            }
            out.push(e);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Binary search on sequence numbers: entry times never decrease (see `append`).
    fn first_seq_at_or_after(&self, t: Time90k) -> Result<u64, AuditError> {
        let (mut lo, mut hi) = match (self.inner.entries.first()?, self.inner.entries.last()?) {
            (Some((a, _)), Some((b, _))) => (seq_of(&a).unwrap_or(0), seq_of(&b).unwrap_or(0) + 1),
            _ => return Ok(0),
        };
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let time = match self.inner.entries.range(key(mid)..).next() {
                Some(item) => {
                    let (_, v) = item?;
                    serde_json::from_slice::<Entry>(&v)
                        .map(|e| e.time_90k)
                        .unwrap_or(i64::MIN)
                }
                None => i64::MAX,
            };
            if time < t.0 {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Checks the whole chain; names the first broken entry.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        let (first_seq, mut prev_hash) = Self::read_genesis(&self.inner.meta)?;
        let mut expected = first_seq;
        let mut n = 0u64;
        let broken = |seq: u64, why: String, n: u64| VerifyReport {
            entries: n,
            first_seq,
            first_broken: Some((seq, why)),
        };
        for item in self.inner.entries.iter() {
            let (k, v) = item?;
            let Some(seq) = seq_of(&k) else {
                return Ok(broken(expected, "an entry has a malformed key".into(), n));
            };
            if seq != expected {
                return Ok(broken(
                    expected,
                    format!("entry {expected} is missing (next present entry is {seq})"),
                    n,
                ));
            }
            let e: Entry = match serde_json::from_slice(&v) {
                Ok(e) => e,
                Err(err) => {
                    return Ok(broken(
                        seq,
                        format!("entry {seq} is not a valid entry: {err}"),
                        n,
                    ));
                }
            };
            if e.seq != seq {
                return Ok(broken(
                    seq,
                    format!("entry {seq} claims sequence number {}", e.seq),
                    n,
                ));
            }
            if e.prev_hash != prev_hash {
                return Ok(broken(
                    seq,
                    format!(
                        "entry {seq} does not chain to the previous entry (prev_hash mismatch)"
                    ),
                    n,
                ));
            }
            if e.compute_hash() != e.hash {
                return Ok(broken(
                    seq,
                    format!("entry {seq} was modified (its hash does not match its content)"),
                    n,
                ));
            }
            prev_hash = e.hash;
            expected = seq + 1;
            n += 1;
        }
        if let Some(v) = self.inner.meta.get(META_HEAD)? {
            let recorded: (u64, String) =
                serde_json::from_slice(&v).unwrap_or((u64::MAX, String::new()));
            if recorded.0.saturating_add(1) != expected || recorded.1 != prev_hash {
                return Ok(broken(
                    expected,
                    format!(
                        "the newest entries were removed: the journal head was entry {} but the chain ends before entry {expected}",
                        recorded.0
                    ),
                    n,
                ));
            }
        }
        Ok(VerifyReport {
            entries: n,
            first_seq,
            first_broken: None,
        })
    }

    /// Deletes entries older than `before` (journal retention, 3 years by default), keeps the
    /// chain verifiable from the first remaining entry, and journals the purge.
    pub fn purge_before(&self, before: Time90k, actor: &str) -> Result<u64, AuditError> {
        let mut deleted = 0u64;
        let mut last_deleted = None;
        for item in self.inner.entries.iter() {
            let (k, v) = item?;
            let seq = seq_of(&k).unwrap_or(0);
            let e: Entry =
                serde_json::from_slice(&v).map_err(|source| AuditError::Decode { seq, source })?;
            if e.time_90k >= before.0 {
                break;
            }
            last_deleted = Some((seq, e.hash));
        }
        let Some((last_seq, last_hash)) = last_deleted else {
            return Ok(0);
        };
        // Genesis first, so a crash mid-purge leaves a chain that verifies from a later start.
        let genesis =
            serde_json::to_vec(&(last_seq + 1, &last_hash)).map_err(AuditError::Encode)?;
        self.inner.meta.insert(META_GENESIS, genesis)?;
        let keys: Vec<_> = self
            .inner
            .entries
            .range(..key(last_seq + 1))
            .keys()
            .collect::<Result<_, _>>()?;
        for k in keys {
            self.inner.entries.remove(k)?;
            deleted += 1;
        }
        self.inner.db.flush()?;
        self.append(
            NewEntry::new(actor, Action::JournalPurge)
                .reason("journal retention")
                .details(serde_json::json!({ "deleted": deleted, "up_to_seq": last_seq, "before_90k": before.0 })),
        )?;
        Ok(deleted)
    }

    /// Raw access for tests that tamper with the store.
    #[doc(hidden)]
    pub fn raw_entries(&self) -> &sled::Tree {
        &self.inner.entries
    }

    /// Flushes everything (also done after every append).
    pub fn flush(&self) -> Result<(), AuditError> {
        self.inner.db.flush()?;
        Ok(())
    }
}

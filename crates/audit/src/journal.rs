//! The journal database: append (serialized, flushed before returning), query by time window and
//! filters, verify the chain, purge past the retention.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use vigie_core::dblock::{LOCK_WAIT, is_lock_conflict, retry_while_locked};
use vigie_core::{Clock, Duration90k, Time90k};

use crate::AuditError;
use crate::entry::{Action, Entry, GENESIS_HASH, NewEntry};

/// Key of the newest entry as last written ([`StoredHead`], signed when a signer is given):
/// detects removal of the newest entries. Written in the same transaction as the entry.
const META_HEAD: &[u8] = b"head";
/// (first seq, its prev_hash) after a purge: where verification starts.
const META_GENESIS: &[u8] = b"genesis";
/// Domain separation of the head signature (never valid as an evidence-package signature).
const HEAD_CONTEXT: &str = "vigie-journal-head/1";

/// Signs the journal head. The audit crate owns no key: the binary passes one in (the
/// installation's Ed25519 key, the one that signs evidence packages).
pub trait HeadSigner: Send + Sync {
    fn sign(&self, message: &[u8]) -> Signature;
    fn public(&self) -> VerifyingKey;
}

impl HeadSigner for SigningKey {
    fn sign(&self, message: &[u8]) -> Signature {
        Signer::sign(self, message)
    }
    fn public(&self) -> VerifyingKey {
        self.verifying_key()
    }
}

/// How a journal is opened: [`Journal::open_with`].
#[derive(Clone, Default)]
pub struct JournalOptions {
    /// Signs the head at every append; without it the head is unsigned and its signature is
    /// not checked (tests, tools).
    pub signer: Option<Arc<dyn HeadSigner>>,
    /// The journal retention: a purge may only have removed entries older than this at the
    /// time of the purge. `None`: not checked.
    pub retention: Option<Duration90k>,
}

/// The head as stored under [`META_HEAD`]. Older versions stored a bare `[seq, hash]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredHead {
    seq: u64,
    hash: String,
    /// Hex Ed25519 public key and signature of [`head_message`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
}

fn head_message(seq: u64, hash: &str) -> Vec<u8> {
    format!("{HEAD_CONTEXT}\n{seq}\n{hash}").into_bytes()
}

fn parse_head(bytes: &[u8]) -> Option<StoredHead> {
    if let Ok(h) = serde_json::from_slice::<StoredHead>(bytes) {
        return Some(h);
    }
    let (seq, hash): (u64, String) = serde_json::from_slice(bytes).ok()?;
    Some(StoredHead {
        seq,
        hash,
        public_key: None,
        signature: None,
    })
}

/// Outcome of comparing the stored head with the chain.
#[derive(Debug, PartialEq)]
enum HeadCheck {
    /// Empty journal, no head.
    Fresh,
    /// Agrees (and its signature is valid, when a signer is known).
    Agrees,
}

/// Compares the stored head with the chain's last entry (`chain_end`: seq and hash). `Err` is
/// the tamper finding, worded for an operator.
fn check_head(
    stored: Option<&[u8]>,
    chain_end: Option<(u64, &str)>,
    signer: Option<&dyn HeadSigner>,
) -> Result<HeadCheck, String> {
    let Some(bytes) = stored else {
        return match chain_end {
            None => Ok(HeadCheck::Fresh),
            Some((seq, _)) => Err(format!(
                "the journal head is missing although the journal holds entries up to {seq}: it was deleted"
            )),
        };
    };
    let Some(head) = parse_head(bytes) else {
        return Err("the journal head is unreadable: it was overwritten".into());
    };
    match chain_end {
        None => {
            return Err(format!(
                "the journal head was entry {} but the journal holds no entry: all were removed",
                head.seq
            ));
        }
        Some((seq, _)) if seq < head.seq => {
            return Err(format!(
                "the journal head was entry {} but the journal now ends at entry {seq}: entries {}..={} were removed",
                head.seq,
                seq + 1,
                head.seq
            ));
        }
        Some((seq, _)) if seq > head.seq => {
            return Err(format!(
                "the journal ends at entry {seq}, past its head (entry {}): entries were added behind the journal's back",
                head.seq
            ));
        }
        Some((seq, hash)) if hash != head.hash => {
            return Err(format!(
                "entry {seq} differs from the journal head: the newest entries were rewritten"
            ));
        }
        Some(_) => {}
    }
    let Some(signer) = signer else {
        return Ok(HeadCheck::Agrees);
    };
    let (Some(key_hex), Some(sig_hex)) = (&head.public_key, &head.signature) else {
        // No silent "upgrade" of an unsigned head: anyone with file access could present a
        // rewritten journal as one written before heads were signed.
        return Err(
            "the journal head is not signed (a journal written by a version without signed heads, or a replaced head)"
                .into(),
        );
    };
    let ours = signer.public();
    if *key_hex != hex::encode(ours.as_bytes()) {
        return Err(format!(
            "the journal head is signed by another key ({key_hex}), not this installation's"
        ));
    }
    let sig = hex::decode(sig_hex)
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok());
    match sig {
        Some(sig)
            if ours
                .verify_strict(&head_message(head.seq, &head.hash), &sig)
                .is_ok() =>
        {
            Ok(HeadCheck::Agrees)
        }
        _ => Err("the journal head's signature is invalid: the head was forged".into()),
    }
}

/// A tamper alarm: raised at start when the journal disagrees with its head; never removed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TamperAlarm {
    pub id: u64,
    /// When it was raised.
    pub time_90k: i64,
    /// The chained `tamper-alarm` entry that journals it.
    pub entry_seq: Option<u64>,
    pub problem: String,
}

/// The access journal. Cheap to clone.
///
/// sled refuses every write after one failed (e.g. `ENOSPC`) until the database is opened
/// again: a failed append therefore closes the journal and reopens it (at most once a second,
/// at the next use), so that once there is room again footage access resumes without a restart.
/// While it is closed, every operation fails (footage access answers 503: no untraced access).
#[derive(Clone)]
pub struct Journal {
    shared: Arc<Shared>,
}

struct Shared {
    dir: std::path::PathBuf,
    clock: Arc<dyn Clock>,
    options: JournalOptions,
    current: std::sync::RwLock<Option<Opened>>,
    last_open_attempt: Mutex<Option<std::time::Instant>>,
}

/// The journal as opened once: what a reopen replaces.
#[derive(Clone)]
struct Opened {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    entries: sled::Tree,
    meta: sled::Tree,
    /// Tamper alarms by id: a separate tree nothing but [`Journal::raise_alarm`] writes.
    alarms: sled::Tree,
    clock: Arc<dyn Clock>,
    options: JournalOptions,
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

/// What the journal says of a head anchored elsewhere ([`Journal::check_anchor`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum AnchorCheck {
    /// The anchored entry is in the chain with the anchored hash.
    Matches,
    /// The anchored entry is older than the oldest kept (journal retention purged it): the
    /// anchor can no longer be checked, which is not an alarm.
    Purged {
        /// The oldest entry kept.
        first_seq: u64,
    },
    /// The journal ends before the anchored entry: it was truncated (or replaced).
    Missing {
        /// The journal's last entry, if any.
        last_seq: Option<u64>,
    },
    /// The anchored entry is there with another hash: it was rewritten.
    Differs {
        /// The hash found in the journal.
        found: String,
    },
}

impl AnchorCheck {
    /// Not a sign of tampering.
    pub fn ok(&self) -> bool {
        matches!(self, AnchorCheck::Matches | AnchorCheck::Purged { .. })
    }
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
    /// Every tamper alarm ever raised (from the alarm store and from the chain).
    pub alarms: Vec<TamperAlarm>,
    /// Hex public key whose signature of the head was checked; `None`: not checked (no key).
    pub head_key: Option<String>,
}

impl VerifyReport {
    /// Intact chain, agreeing head and no tamper alarm ever.
    pub fn ok(&self) -> bool {
        self.first_broken.is_none() && self.alarms.is_empty()
    }
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn seq_of(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

impl Journal {
    /// Opens (or creates) the journal in `dir` without a signing key (tests, tools).
    pub fn open(dir: &Path, clock: Arc<dyn Clock>) -> Result<Journal, AuditError> {
        Self::open_with(dir, clock, JournalOptions::default())
    }

    /// Opens (or creates) the journal in `dir`. A head that disagrees with the chain (newest
    /// entries removed or rewritten, head deleted, unsigned or forged) raises a
    /// [`TamperAlarm`] before anything else is appended.
    pub fn open_with(
        dir: &Path,
        clock: Arc<dyn Clock>,
        options: JournalOptions,
    ) -> Result<Journal, AuditError> {
        let opened = Opened::open_with(dir, clock.clone(), options.clone(), LOCK_WAIT)?;
        Ok(Journal {
            shared: Arc::new(Shared {
                dir: dir.to_owned(),
                clock,
                options,
                current: std::sync::RwLock::new(Some(opened)),
                last_open_attempt: Mutex::new(None),
            }),
        })
    }

    /// The open journal, reopening it first when a failed write closed it (at most one attempt
    /// a second: each costs a sled open).
    fn opened(&self) -> Result<Opened, AuditError> {
        let sh = &self.shared;
        if let Some(o) = sh
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok(o.clone());
        }
        let mut cur = sh.current.write().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = cur.as_ref() {
            return Ok(o.clone());
        }
        {
            let mut last = sh
                .last_open_attempt
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return Err(closed());
            }
            *last = Some(std::time::Instant::now());
        }
        // Readers still holding the old handles (a streamed register) keep sled's lock for a
        // moment: wait a little, not the full start-up wait (requests are waiting).
        match Opened::open_with(
            &sh.dir,
            sh.clock.clone(),
            sh.options.clone(),
            Duration::from_millis(500),
        ) {
            Ok(o) => {
                tracing::warn!(
                    "access journal reopened after a failed write: footage access resumes"
                );
                *cur = Some(o.clone());
                Ok(o)
            }
            Err(e) => {
                tracing::error!(error = %e, "the access journal cannot be reopened yet");
                Err(e)
            }
        }
    }

    /// Closes the journal after a failed write (sled refuses every write after one failed):
    /// the next use reopens it.
    fn close_after(&self, e: &AuditError) {
        if matches!(e, AuditError::Db(sled::Error::Io(_))) {
            tracing::error!(error = %e, "access journal write failed: closing it; it is reopened at the next use (footage access refused meanwhile)");
            *self
                .shared
                .current
                .write()
                .unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// Appends an entry and flushes it to disk before returning it. The entry and the new
    /// head are written in one transaction (a crash cannot leave them disagreeing).
    pub fn append(&self, new: NewEntry) -> Result<Entry, AuditError> {
        let r = self.opened()?.append(new);
        if let Err(e) = &r {
            self.close_after(e);
        }
        r
    }

    /// Appends, logging a failure instead of returning it. Only for system events (service
    /// start/stop, retention) that have no caller to report to; user actions use
    /// [`Journal::append`] and fail when it fails (no untraced access).
    pub fn append_or_log(&self, new: NewEntry) {
        if let Err(e) = self.append(new) {
            tracing::error!(error = %e, "cannot write to the access journal");
        }
    }

    /// Entries matching `q`, oldest first, at most `q.limit` (1000 by default).
    pub fn query(&self, q: &Query) -> Result<Vec<Entry>, AuditError> {
        self.opened()?.query(q)
    }

    /// Entries matching `q` (its `limit` ignored), oldest first, read lazily from the
    /// database: bounded memory however many match (the legal register streams this).
    pub fn scan(&self, q: &Query) -> Result<Scan, AuditError> {
        self.opened()?.scan(q)
    }

    /// Every tamper alarm ever raised, oldest first.
    pub fn alarms(&self) -> Result<Vec<TamperAlarm>, AuditError> {
        self.opened()?.alarms()
    }

    /// Checks the whole chain, the signed head and the purges (see [`VerifyReport`]).
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        self.opened()?.verify()
    }

    /// Deletes the entries older than `before` (journal retention), journaling the purge
    /// first. Returns how many were deleted.
    pub fn purge_before(&self, before: Time90k, actor: &str) -> Result<u64, AuditError> {
        let r = self.opened()?.purge_before(before, actor);
        if let Err(e) = &r {
            self.close_after(e);
        }
        r
    }

    /// Raw access for tests that tamper with the store.
    #[doc(hidden)]
    pub fn raw_entries(&self) -> Result<sled::Tree, AuditError> {
        Ok(self.opened()?.raw_entries())
    }

    /// The chain's head: the last entry's sequence number and hash (`None`: empty journal).
    /// A cluster node anchors it outside the machine (etcd), so that a journal truncated or
    /// rewritten while the node was stopped is caught (see [`Journal::check_anchor`]).
    pub fn head(&self) -> Result<Option<(u64, String)>, AuditError> {
        Ok(self.opened()?.head())
    }

    /// Compares the journal with a head anchored elsewhere earlier (see [`AnchorCheck`]).
    pub fn check_anchor(&self, seq: u64, hash: &str) -> Result<AnchorCheck, AuditError> {
        self.opened()?.check_anchor(seq, hash)
    }

    /// Raises a tamper alarm found outside the journal's own checks (e.g. an anchor that the
    /// journal no longer holds): kept in the alarm store and journaled as `tamper-alarm`.
    pub fn raise_tamper_alarm(&self, problem: String) -> Result<TamperAlarm, AuditError> {
        self.opened()?.raise_alarm(problem)
    }

    /// Flushes everything (also done after every append).
    pub fn flush(&self) -> Result<(), AuditError> {
        self.opened()?.flush()
    }
}

fn closed() -> AuditError {
    AuditError::Db(sled::Error::Unsupported(
        "the access journal is closed after a failed write (full disk?); it is reopened at the next use".into(),
    ))
}

impl Opened {
    fn open_with(
        dir: &Path,
        clock: Arc<dyn Clock>,
        options: JournalOptions,
        lock_wait: Duration,
    ) -> Result<Opened, AuditError> {
        let db = retry_while_locked(
            lock_wait,
            || sled::Config::new().path(dir).cache_capacity(8 << 20).open(),
            |e| matches!(e, sled::Error::Io(io) if is_lock_conflict(io)),
        )?;
        let entries = db.open_tree("entries")?;
        let meta = db.open_tree("meta")?;
        let alarms = db.open_tree("alarms")?;
        let (head, chain_end) = match entries.last()? {
            Some((k, v)) => {
                let seq = seq_of(&k).unwrap_or(0);
                let e: Entry = serde_json::from_slice(&v)
                    .map_err(|source| AuditError::Decode { seq, source })?;
                (
                    Head {
                        next_seq: seq + 1,
                        last_hash: e.hash.clone(),
                        last_time_90k: e.time_90k,
                    },
                    Some((seq, e.hash)),
                )
            }
            None => {
                let (seq, hash) = Self::read_genesis(&meta)?;
                (
                    Head {
                        next_seq: seq,
                        last_hash: hash,
                        last_time_90k: i64::MIN,
                    },
                    None,
                )
            }
        };
        let stored = meta.get(META_HEAD)?;
        let check = check_head(
            stored.as_deref(),
            chain_end.as_ref().map(|(s, h)| (*s, h.as_str())),
            options.signer.as_deref(),
        );
        tracing::info!(next_seq = head.next_seq, head_hash = %head.last_hash, "access journal opened");
        let j = Opened {
            inner: Arc::new(Inner {
                db,
                entries,
                meta,
                alarms,
                clock,
                options,
                head: Mutex::new(head),
            }),
        };
        if let Err(problem) = check {
            // Not fatal: recording must not stop because the alarm cannot be written (a full
            // disk); the head still disagrees, so the next start raises it again.
            if let Err(e) = j.raise_alarm(problem.clone()) {
                tracing::error!(error = %e, problem = %problem, "cannot record the journal tamper alarm");
            }
        }
        Ok(j)
    }

    fn read_genesis(meta: &sled::Tree) -> Result<(u64, String), AuditError> {
        Ok(match meta.get(META_GENESIS)? {
            Some(v) => serde_json::from_slice(&v).unwrap_or((0, GENESIS_HASH.to_owned())),
            None => (0, GENESIS_HASH.to_owned()),
        })
    }

    /// The head record for entry `seq`, signed when a signer is known.
    fn head_bytes(&self, seq: u64, hash: &str) -> Result<Vec<u8>, AuditError> {
        let (public_key, signature) = match &self.inner.options.signer {
            Some(s) => (
                Some(hex::encode(s.public().as_bytes())),
                Some(hex::encode(s.sign(&head_message(seq, hash)).to_bytes())),
            ),
            None => (None, None),
        };
        serde_json::to_vec(&StoredHead {
            seq,
            hash: hash.to_owned(),
            public_key,
            signature,
        })
        .map_err(AuditError::Encode)
    }

    /// Records a tamper alarm: in the alarm tree first (durable even if the chain cannot be
    /// written), then as a chained `tamper-alarm` entry. Nothing deletes either.
    fn raise_alarm(&self, problem: String) -> Result<TamperAlarm, AuditError> {
        let id = match self.inner.alarms.last()? {
            Some((k, _)) => seq_of(&k).unwrap_or(0) + 1,
            None => 0,
        };
        tracing::error!(
            alarm = id,
            problem = %problem,
            "ACCESS JOURNAL TAMPERING DETECTED: the journal disagrees with its signed head or its anchor; run `vigie audit verify`"
        );
        let mut alarm = TamperAlarm {
            id,
            time_90k: self.inner.clock.now().0,
            entry_seq: None,
            problem: problem.clone(),
        };
        let store = |a: &TamperAlarm| -> Result<(), AuditError> {
            let bytes = serde_json::to_vec(a).map_err(AuditError::Encode)?;
            self.inner.alarms.insert(key(a.id), bytes)?;
            self.inner.db.flush()?;
            Ok(())
        };
        store(&alarm)?;
        let e = self.append(
            NewEntry::new("system", Action::TamperAlarm)
                .reason(problem)
                .details(serde_json::json!({ "alarm_id": id })),
        )?;
        alarm.entry_seq = Some(e.seq);
        store(&alarm)?;
        Ok(alarm)
    }

    fn head(&self) -> Option<(u64, String)> {
        let h = self.inner.head.lock().unwrap_or_else(|p| p.into_inner());
        (h.next_seq > 0).then(|| (h.next_seq - 1, h.last_hash.clone()))
    }

    fn check_anchor(&self, seq: u64, hash: &str) -> Result<AnchorCheck, AuditError> {
        if let Some(v) = self.inner.entries.get(key(seq))? {
            let e: Entry = serde_json::from_slice(&v).map_err(AuditError::Encode)?;
            return Ok(if e.hash == hash {
                AnchorCheck::Matches
            } else {
                AnchorCheck::Differs { found: e.hash }
            });
        }
        let first = self.inner.entries.first()?.and_then(|(k, _)| seq_of(&k));
        let last = self.inner.entries.last()?.and_then(|(k, _)| seq_of(&k));
        // Older than the oldest kept: purged by retention (purges are chained and checked by
        // `verify`); otherwise the journal stops short of it.
        Ok(match first {
            Some(f) if seq < f => AnchorCheck::Purged { first_seq: f },
            _ => AnchorCheck::Missing { last_seq: last },
        })
    }

    /// Appends an entry and flushes it to disk before returning it. The entry and the new
    /// head are written in one transaction (a crash cannot leave them disagreeing).
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
        let head_bytes = self.head_bytes(e.seq, &e.hash)?;
        (&self.inner.entries, &self.inner.meta)
            .transaction(|(entries, meta)| {
                entries.insert(&key(e.seq), bytes.as_slice())?;
                meta.insert(META_HEAD, head_bytes.as_slice())?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|err| match err {
                sled::transaction::TransactionError::Storage(s) => AuditError::Db(s),
                sled::transaction::TransactionError::Abort(()) => {
                    AuditError::Db(sled::Error::Unsupported("transaction aborted".into()))
                }
            })?;
        self.inner.db.flush()?;
        head.next_seq = e.seq + 1;
        head.last_hash = e.hash.clone();
        head.last_time_90k = now;
        Ok(e)
    }

    /// Entries matching `q`, oldest first, at most `q.limit` (1000 by default).
    pub fn query(&self, q: &Query) -> Result<Vec<Entry>, AuditError> {
        let limit = q.limit.unwrap_or(1000);
        self.scan(q)?.take(limit).collect()
    }

    /// Entries matching `q` (its `limit` ignored), oldest first, read lazily from the
    /// database: bounded memory however many match (the legal register streams this).
    pub fn scan(&self, q: &Query) -> Result<Scan, AuditError> {
        let from = match (q.start, q.after_seq) {
            (_, Some(s)) => s.saturating_add(1),
            (Some(t), None) => self.first_seq_at_or_after(t)?,
            (None, None) => 0,
        };
        Ok(Scan {
            iter: self.inner.entries.range(key(from)..),
            q: q.clone(),
            done: false,
        })
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

    /// Every tamper alarm in the alarm store.
    pub fn alarms(&self) -> Result<Vec<TamperAlarm>, AuditError> {
        let mut out = Vec::new();
        for item in self.inner.alarms.iter() {
            let (k, v) = item?;
            let id = seq_of(&k).unwrap_or(0);
            out.push(serde_json::from_slice(&v).unwrap_or(TamperAlarm {
                id,
                time_90k: 0,
                entry_seq: None,
                problem: "(an alarm record was overwritten with garbage)".into(),
            }));
        }
        Ok(out)
    }

    /// Checks the whole chain, the head (and its signature when a signer is known), that a
    /// missing prefix was purged by the journal retention, and lists every tamper alarm.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        let (first_seq, genesis_hash) = Self::read_genesis(&self.inner.meta)?;
        let mut prev_hash = genesis_hash.clone();
        let mut expected = first_seq;
        let mut n = 0u64;
        let mut broken: Option<(u64, String)> = None;
        let mut chain_alarms: Vec<TamperAlarm> = Vec::new();
        // The journal-purge entry that accounts for the missing prefix (the last one).
        let mut purge: Option<Entry> = None;
        let mut last: Option<(u64, String)> = None;
        // Entries below the purge start are leftovers of an interrupted purge (deleted by the
        // next one): not part of the chain.
        for item in self.inner.entries.range(key(first_seq)..) {
            let (k, v) = item?;
            let Some(seq) = seq_of(&k) else {
                broken = Some((expected, "an entry has a malformed key".into()));
                break;
            };
            if seq != expected {
                broken = Some((
                    expected,
                    format!("entry {expected} is missing (next present entry is {seq})"),
                ));
                break;
            }
            let e: Entry = match serde_json::from_slice(&v) {
                Ok(e) => e,
                Err(err) => {
                    broken = Some((seq, format!("entry {seq} is not a valid entry: {err}")));
                    break;
                }
            };
            if e.seq != seq {
                broken = Some((seq, format!("entry {seq} claims sequence number {}", e.seq)));
                break;
            }
            if e.prev_hash != prev_hash {
                broken = Some((
                    seq,
                    format!(
                        "entry {seq} does not chain to the previous entry (prev_hash mismatch)"
                    ),
                ));
                break;
            }
            if e.compute_hash() != e.hash {
                broken = Some((
                    seq,
                    format!("entry {seq} was modified (its hash does not match its content)"),
                ));
                break;
            }
            match e.action {
                Action::TamperAlarm => chain_alarms.push(TamperAlarm {
                    id: e.details["alarm_id"].as_u64().unwrap_or(u64::MAX),
                    time_90k: e.time_90k,
                    entry_seq: Some(seq),
                    problem: e.reason.clone().unwrap_or_default(),
                }),
                Action::JournalPurge
                    if first_seq > 0 && e.details["up_to_seq"].as_u64() == Some(first_seq - 1) =>
                {
                    purge = Some(e.clone());
                }
                _ => {}
            }
            prev_hash = e.hash;
            last = Some((seq, prev_hash.clone()));
            expected = seq + 1;
            n += 1;
        }
        if broken.is_none() && first_seq > 0 {
            broken = self.check_purge(first_seq, &genesis_hash, purge.as_ref());
        }
        let mut head_key = None;
        if broken.is_none() {
            let stored = self.inner.meta.get(META_HEAD)?;
            let signer = self.inner.options.signer.as_deref();
            match check_head(
                stored.as_deref(),
                last.as_ref().map(|(s, h)| (*s, h.as_str())),
                signer,
            ) {
                Ok(HeadCheck::Agrees) => {
                    head_key = signer.map(|s| hex::encode(s.public().as_bytes()));
                }
                Ok(HeadCheck::Fresh) => {}
                Err(problem) => broken = Some((expected, problem)),
            }
        }
        // Alarms: the store's, plus any chained one missing from the store (store deleted).
        let mut alarms = self.alarms()?;
        for a in chain_alarms {
            if !alarms.iter().any(|s| s.id == a.id) {
                let mut a = a;
                a.problem
                    .push_str(" (this alarm was deleted from the alarm store)");
                alarms.push(a);
            }
        }
        Ok(VerifyReport {
            entries: n,
            first_seq,
            first_broken: broken,
            alarms,
            head_key,
        })
    }

    /// A prefix is missing (`first_seq` > 0): legitimate only if a journal-purge entry in the
    /// chain accounts for exactly it and removed only entries older than the retention.
    fn check_purge(
        &self,
        first_seq: u64,
        genesis_hash: &str,
        purge: Option<&Entry>,
    ) -> Option<(u64, String)> {
        let Some(p) = purge else {
            return Some((
                first_seq,
                format!(
                    "entries before {first_seq} are missing and no journal-purge entry accounts for them: the oldest entries were deleted, not purged"
                ),
            ));
        };
        if let Some(h) = p.details["genesis_hash"].as_str()
            && h != genesis_hash
        {
            return Some((
                p.seq,
                format!(
                    "the purge start does not match journal-purge entry {}: it was rewritten",
                    p.seq
                ),
            ));
        }
        let Some(before) = p.details["before_90k"].as_i64() else {
            return Some((
                p.seq,
                format!("journal-purge entry {} does not say what it purged", p.seq),
            ));
        };
        if let Some(r) = self.inner.options.retention
            && before > p.time_90k.saturating_sub(r.0)
        {
            return Some((
                p.seq,
                format!(
                    "journal-purge entry {} removed entries younger than the journal retention ({} days)",
                    p.seq,
                    r.0 / (86_400 * vigie_core::TIME_UNITS_PER_SEC)
                ),
            ));
        }
        None
    }

    /// Deletes entries older than `before` (journal retention, 3 years by default), keeps the
    /// chain verifiable from the first remaining entry, and journals the purge.
    ///
    /// Order, so that a crash at any point leaves a verifiable journal: the journal-purge
    /// entry (naming the first kept entry and the hash it chains to), then the new start of
    /// the chain, then the deletions (leftovers below the start are ignored by `verify` and
    /// deleted by the next purge).
    pub fn purge_before(&self, before: Time90k, actor: &str) -> Result<u64, AuditError> {
        let mut to_delete = 0u64;
        let mut last_deleted = None;
        for item in self.inner.entries.iter() {
            let (k, v) = item?;
            let seq = seq_of(&k).unwrap_or(0);
            let e: Entry =
                serde_json::from_slice(&v).map_err(|source| AuditError::Decode { seq, source })?;
            if e.time_90k >= before.0 {
                break;
            }
            to_delete += 1;
            last_deleted = Some((seq, e.hash));
        }
        let Some((last_seq, last_hash)) = last_deleted else {
            return Ok(0);
        };
        let (old_first, _) = Self::read_genesis(&self.inner.meta)?;
        let deleted = to_delete.min((last_seq + 1).saturating_sub(old_first));
        self.append(
            NewEntry::new(actor, Action::JournalPurge)
                .reason("journal retention")
                .details(serde_json::json!({
                    "deleted": deleted,
                    "up_to_seq": last_seq,
                    "before_90k": before.0,
                    "genesis_hash": last_hash,
                })),
        )?;
        let genesis =
            serde_json::to_vec(&(last_seq + 1, &last_hash)).map_err(AuditError::Encode)?;
        self.inner.meta.insert(META_GENESIS, genesis)?;
        self.inner.db.flush()?;
        let keys: Vec<_> = self
            .inner
            .entries
            .range(..key(last_seq + 1))
            .keys()
            .collect::<Result<_, _>>()?;
        for k in keys {
            self.inner.entries.remove(k)?;
        }
        self.inner.db.flush()?;
        Ok(deleted)
    }

    /// Raw access for tests that tamper with the store.
    #[doc(hidden)]
    pub fn raw_entries(&self) -> sled::Tree {
        self.inner.entries.clone()
    }

    /// Flushes everything (also done after every append).
    pub fn flush(&self) -> Result<(), AuditError> {
        self.inner.db.flush()?;
        Ok(())
    }
}

/// Entries of a [`Journal::scan`], read one at a time.
pub struct Scan {
    iter: sled::Iter,
    q: Query,
    done: bool,
}

impl Iterator for Scan {
    type Item = Result<Entry, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let (k, v) = match self.iter.next()? {
                Ok(kv) => kv,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e.into()));
                }
            };
            let seq = seq_of(&k).unwrap_or(0);
            let e: Entry = match serde_json::from_slice(&v) {
                Ok(e) => e,
                Err(source) => {
                    self.done = true;
                    return Some(Err(AuditError::Decode { seq, source }));
                }
            };
            let q = &self.q;
            if q.end.is_some_and(|end| e.time_90k >= end.0) {
                self.done = true;
                return None;
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
            return Some(Ok(e));
        }
        None
    }
}

//! The access journal of Vigie: append-only and hash-chained.
//!
//! French law (CSI L255-1, R252 register, order of 3 August 2007 art. 2) requires every access to
//! footage and every change to be traceable. Each [`Entry`] records who, when, what and why, and
//! carries the SHA-256 of the previous entry (`prev_hash`) and its own (`hash`, over its canonical
//! JSON form including `prev_hash`). Editing an entry breaks its own hash; removing one breaks the
//! sequence and the next entry's `prev_hash`; [`Journal::verify`] names the first broken entry.
//!
//! Owns: the journal's sled database (`<data_dir>/journal/`), appending, querying, verifying and
//! purging past the journal's retention. Does not own: deciding what to journal (the API and the
//! binary call [`Journal::append`]), nor the legal register's layout (built from this and the
//! store by the API).
//!
//! Truncation of the newest entries is detected against the head (sequence and hash), kept in a
//! separate tree, written in the same transaction as each entry and signed with the
//! installation key ([`HeadSigner`], passed in by the binary). A head that disagrees at open
//! raises a [`TamperAlarm`] that nothing overwrites; a missing prefix must be accounted for by a
//! `journal-purge` entry within the journal retention. What this does and does not protect
//! against (someone with the key can rewrite everything): see the crate's README.

mod chain;
mod entry;
mod journal;

pub use chain::{ChainAlarm, ChainCheck, ChainReport};
pub use entry::{Action, Entry, NewEntry};
pub use journal::{
    AnchorCheck, HeadSigner, Journal, JournalOptions, Query, Scan, TamperAlarm, VerifyReport,
};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("journal database: {0}")]
    Db(#[from] sled::Error),
    #[error("journal entry {seq} is not valid JSON: {source}")]
    Decode { seq: u64, source: serde_json::Error },
    #[error("encoding a journal entry: {0}")]
    Encode(serde_json::Error),
}

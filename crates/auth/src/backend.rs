//! Where [`crate::AuthStore`] keeps its records: the [`AuthKv`] trait (three tables of
//! key → JSON value) and its single-node implementation [`SledKv`] (`<data_dir>/access/`).
//!
//! A cluster node plugs in another implementation (etcd, in `vigie-cluster`), so that users,
//! sessions and tokens are the same on every node. The store's logic (rights, expiry,
//! throttling, hashing) is the same whatever the backend.
//!
//! Does not: interpret records (the store does), hash secrets (keys of sessions and tokens
//! arrive already hashed: a backend never sees a session id or a token).

use std::path::Path;

use vigie_core::dblock::{LOCK_WAIT, is_lock_conflict, retry_while_locked};

use crate::AuthError;

/// One of the three tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// user name → user record (role, scope, argon2id hash, disabled, times).
    Users,
    /// SHA-256(session id) → session record.
    Sessions,
    /// SHA-256(token) → token record.
    Tokens,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Users, Table::Sessions, Table::Tokens];
}

/// Records of a table: (key, JSON value), in key order.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Storage of the auth records. Synchronous (the store is called from request handlers and
/// from the CLI); implementations bound their own waits.
pub trait AuthKv: Send + Sync {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, AuthError>;
    fn insert(&self, table: Table, key: &[u8], value: Vec<u8>) -> Result<(), AuthError>;
    fn remove(&self, table: Table, key: &[u8]) -> Result<(), AuthError>;
    /// Inserts only if the key is absent; `false` when it was present (nothing written).
    fn create(&self, table: Table, key: &[u8], value: Vec<u8>) -> Result<bool, AuthError>;
    /// Replaces the value only if it is still `old` (not changed nor removed meanwhile, here or
    /// on another node); `false` when it was not (nothing written). Read-modify-write of a
    /// record goes through this, so that a stale read cannot undo another change (e.g. bring
    /// back a revoked session by refreshing its idle timer).
    fn swap(&self, table: Table, key: &[u8], old: &[u8], new: Vec<u8>) -> Result<bool, AuthError>;
    /// Like [`AuthKv::swap`] of a user record, and only if the user record `guard.0` still has
    /// the value `guard.1`: one atomic step, on every node. The "last enabled admin" check
    /// demotes an admin only while the other enabled admin it found is unchanged, so two
    /// admins demoting each other at once (on two nodes) cannot both succeed.
    fn swap_user_guarded(
        &self,
        key: &[u8],
        old: &[u8],
        new: Vec<u8>,
        guard: (&[u8], &[u8]),
    ) -> Result<bool, AuthError>;
    /// Like [`AuthKv::get`], but the latest value of the shared store (a backend that serves
    /// reads from a copy refreshes it first). Used before changing a record.
    fn get_fresh(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, AuthError> {
        self.get(table, key)
    }
    /// Every record of the table, in key order.
    fn scan(&self, table: Table) -> Result<Records, AuthError>;
    /// Like [`AuthKv::scan`], but the latest records of the shared store. Used where a record
    /// made on another node a moment ago must be found (revoking a token by its id, ending a
    /// user's sessions, the "last enabled admin" check, listings).
    fn scan_fresh(&self, table: Table) -> Result<Records, AuthError> {
        self.scan(table)
    }
    /// Makes the writes so far durable.
    fn flush(&self) -> Result<(), AuthError>;
}

/// The single-node backend: a sled database with one tree per table.
pub struct SledKv {
    db: sled::Db,
    users: sled::Tree,
    sessions: sled::Tree,
    tokens: sled::Tree,
}

impl SledKv {
    /// Opens (creating if needed) the database in `dir` (normally `<data_dir>/access`).
    /// Fails with [`AuthError::InUse`] when another process has it open.
    pub fn open(dir: &Path) -> Result<SledKv, AuthError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| AuthError::Storage(format!("creating {}: {e}", dir.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let db = retry_while_locked(
            LOCK_WAIT,
            || sled::Config::new().path(dir).open(),
            |e| matches!(e, sled::Error::Io(io) if is_lock_conflict(io)),
        )
        .map_err(|e| match &e {
            sled::Error::Io(io) if is_lock_conflict(io) => AuthError::InUse {
                path: dir.display().to_string(),
            },
            _ => AuthError::Storage(format!("opening {}: {e}", dir.display())),
        })?;
        Ok(SledKv {
            users: db.open_tree("users")?,
            sessions: db.open_tree("sessions")?,
            tokens: db.open_tree("tokens")?,
            db,
        })
    }

    fn tree(&self, t: Table) -> &sled::Tree {
        match t {
            Table::Users => &self.users,
            Table::Sessions => &self.sessions,
            Table::Tokens => &self.tokens,
        }
    }
}

impl AuthKv for SledKv {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, AuthError> {
        Ok(self.tree(table).get(key)?.map(|v| v.to_vec()))
    }

    fn insert(&self, table: Table, key: &[u8], value: Vec<u8>) -> Result<(), AuthError> {
        self.tree(table).insert(key, value)?;
        Ok(())
    }

    fn remove(&self, table: Table, key: &[u8]) -> Result<(), AuthError> {
        self.tree(table).remove(key)?;
        Ok(())
    }

    fn create(&self, table: Table, key: &[u8], value: Vec<u8>) -> Result<bool, AuthError> {
        Ok(self
            .tree(table)
            .compare_and_swap(key, None::<&[u8]>, Some(value))?
            .is_ok())
    }

    fn swap(&self, table: Table, key: &[u8], old: &[u8], new: Vec<u8>) -> Result<bool, AuthError> {
        Ok(self
            .tree(table)
            .compare_and_swap(key, Some(old), Some(new))?
            .is_ok())
    }

    fn swap_user_guarded(
        &self,
        key: &[u8],
        old: &[u8],
        new: Vec<u8>,
        guard: (&[u8], &[u8]),
    ) -> Result<bool, AuthError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        let r = self.users.transaction(|tx| {
            let unchanged = |k: &[u8], v: &[u8]| -> Result<bool, _> {
                Ok::<_, ConflictableTransactionError<()>>(tx.get(k)?.as_deref() == Some(v))
            };
            if !unchanged(key, old)? || !unchanged(guard.0, guard.1)? {
                return Ok(false);
            }
            tx.insert(key, new.as_slice())?;
            Ok(true)
        });
        match r {
            Ok(done) => Ok(done),
            Err(TransactionError::Abort(())) => Ok(false),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    fn scan(&self, table: Table) -> Result<Records, AuthError> {
        let mut out = Vec::new();
        for kv in self.tree(table).iter() {
            let (k, v) = kv?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn flush(&self) -> Result<(), AuthError> {
        self.db.flush()?;
        Ok(())
    }
}

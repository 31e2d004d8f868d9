//! Users, sessions and API tokens shared by every node of a cluster: [`EtcdAuthKv`], the etcd
//! backend of `vigie_auth::AuthStore` (docs/CLUSTER.md, "Users, rights and sessions").
//!
//! Keys (under the prefix): `u/users/<name>` (the user record: role, scope, argon2id hash,
//! disabled), `u/sessions/<hex SHA-256 of the session id>`, `u/tokens/<hex SHA-256 of the
//! token>` (never an id or a token in clear), `u/seeded` (who seeded etcd from its local
//! users, and when). No lease: they outlive every node.
//!
//! Reads are served from a copy of `u/` in memory, read again from etcd every
//! [`REFRESH_INTERVAL`] (one range read): a change made on another node (a user disabled or
//! re-scoped, a session ended, a token revoked) is seen here within that interval plus one
//! read. A key missing from the copy is asked to etcd before "no" is answered, so that a
//! session opened or a user created on another node a moment ago is found at once. Writes go
//! to etcd (bounded) before they are acknowledged, then to the copy; read-modify-write goes
//! through a compare-and-swap on the value read, so a stale copy cannot undo another node's
//! change. All etcd work runs on one thread of its own (its own runtime), so the synchronous
//! store can be called from anywhere, the CLI included.
//!
//! While etcd cannot be reached, reads keep the last copy (sessions and tokens known then keep
//! working, a revocation made elsewhere meanwhile is not seen) and writes fail (no login, no
//! user change). Does not: interpret records (`vigie-auth` does), throttle logins (per node).

use std::collections::BTreeMap;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use vigie_auth::{AuthError, AuthKv, Table};
use vigie_core::config::ClusterConfig;

use crate::ClusterError;
use crate::etcd::{REQUEST_TIMEOUT, bounded, connect, now_s};

/// How often each node reads `u/` again: the bound (plus one read, milliseconds) on the time a
/// change made on another node takes to apply here. The live WebSocket checks its credential
/// every second, so a revoked user's live view on another node closes within ≈ 1.5 s.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(500);
/// At most this many reads of etcd per second for keys the copy does not have (a session or
/// token made on another node a moment ago); beyond, the copy answers (the key is then found at
/// the next refresh). Bounds what unauthenticated requests with made-up cookies or tokens cost
/// etcd.
pub const MISS_READS_PER_S: u32 = 50;
/// etcd's default limit of operations in one transaction is 128.
const SEED_CHUNK: usize = 100;

/// The keys of the users' records under one prefix.
#[derive(Debug, Clone)]
pub struct UserKeys {
    prefix: String,
}

impl UserKeys {
    pub fn new(prefix: &str) -> UserKeys {
        UserKeys {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    /// `<prefix>/u/`: everything this module keeps.
    pub fn all(&self) -> String {
        format!("{}/u/", self.prefix)
    }

    pub fn seeded(&self) -> String {
        format!("{}/u/seeded", self.prefix)
    }

    fn table_prefix(&self, t: Table) -> String {
        let name = match t {
            Table::Users => "users",
            Table::Sessions => "sessions",
            Table::Tokens => "tokens",
        };
        format!("{}/u/{name}/", self.prefix)
    }

    /// The etcd key of a record: user names as they are (`[a-z0-9._-]`), the hashed keys of
    /// sessions and tokens in hex.
    pub fn key(&self, t: Table, key: &[u8]) -> String {
        let k = match t {
            Table::Users => String::from_utf8_lossy(key).into_owned(),
            Table::Sessions | Table::Tokens => hex::encode(key),
        };
        format!("{}{k}", self.table_prefix(t))
    }

    /// The table and record key of an etcd key (`None`: not a record, e.g. `u/seeded`).
    pub fn parse(&self, etcd_key: &str) -> Option<(Table, Vec<u8>)> {
        for t in Table::ALL {
            if let Some(rest) = etcd_key.strip_prefix(&self.table_prefix(t)) {
                return match t {
                    Table::Users => Some((t, rest.as_bytes().to_vec())),
                    Table::Sessions | Table::Tokens => Some((t, hex::decode(rest).ok()?)),
                };
            }
        }
        None
    }
}

type Tables = BTreeMap<Table, BTreeMap<Vec<u8>, Vec<u8>>>;

/// What seeding etcd from a node's local users did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedOutcome {
    /// etcd had no user: this node's users and API tokens were copied (sessions are not).
    Seeded { users: usize, tokens: usize },
    /// etcd already holds users (they are the cluster's): the local database is not used.
    /// Names of local users absent from etcd, and of those whose role, scope, password or
    /// disabled flag differ there.
    AlreadyShared {
        local_only: Vec<String>,
        differing: Vec<String>,
    },
    /// Neither etcd nor this node has a user.
    NothingToSeed,
}

enum Op {
    Get(Table, Vec<u8>),
    Put(Table, Vec<u8>, Vec<u8>),
    Delete(Table, Vec<u8>),
    Create(Table, Vec<u8>, Vec<u8>),
    /// Table, key, old value, new value, and a user record (key, value) that must be unchanged.
    Swap(Table, Vec<u8>, Vec<u8>, Vec<u8>, Option<(Vec<u8>, Vec<u8>)>),
    Refresh,
    Seed(String, Vec<(Table, Vec<u8>, Vec<u8>)>),
}

enum Answer {
    Value(Option<Vec<u8>>),
    Done(bool),
    Seed(SeedOutcome),
}

struct Cmd {
    op: Op,
    reply: SyncSender<Result<Answer, String>>,
}

struct Copy {
    tables: RwLock<Tables>,
    /// When `u/` was last read whole (None: never yet).
    read_at: Mutex<Option<Instant>>,
}

/// The etcd backend of the users' store (see the module doc). Dropping it stops its thread.
pub struct EtcdAuthKv {
    copy: Arc<Copy>,
    tx: tokio::sync::mpsc::UnboundedSender<Cmd>,
    /// (start of the current second, misses read from etcd in it).
    misses: Mutex<(Instant, u32)>,
}

impl std::fmt::Debug for EtcdAuthKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdAuthKv").finish_non_exhaustive()
    }
}

impl EtcdAuthKv {
    /// Starts the backend's thread (connection, first read, refreshes). Returns at once; see
    /// [`EtcdAuthKv::wait_loaded`].
    pub fn start(cluster: &ClusterConfig) -> Result<EtcdAuthKv, ClusterError> {
        let copy = Arc::new(Copy {
            tables: RwLock::new(Tables::new()),
            read_at: Mutex::new(None),
        });
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let cfg = cluster.clone();
        let worker_copy = copy.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClusterError::Other(format!("starting the users' etcd runtime: {e}")))?;
        std::thread::Builder::new()
            .name("vigie-users-etcd".into())
            .spawn(move || rt.block_on(worker(cfg, worker_copy, rx)))
            .map_err(|e| ClusterError::Other(format!("starting the users' etcd thread: {e}")))?;
        Ok(EtcdAuthKv {
            copy,
            tx,
            misses: Mutex::new((Instant::now(), 0)),
        })
    }

    /// Reads `u/` now; fails when etcd does not answer (the CLI needs the cluster's users).
    pub fn wait_loaded(&self) -> Result<(), ClusterError> {
        self.call(Op::Refresh)
            .map(|_| ())
            .map_err(|e| ClusterError::Other(e.to_string()))
    }

    /// When `u/` was last read whole (diagnostics).
    pub fn read_age(&self) -> Option<Duration> {
        self.copy
            .read_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }

    /// Copies `local`'s users and tokens to etcd if etcd has no user yet (the first node of a
    /// cluster); otherwise says which local users the cluster does not have or has otherwise.
    /// Two nodes seeding at once: one wins (`u/seeded` is created in a transaction), the other
    /// then finds the users there.
    pub fn seed_from(&self, local: &dyn AuthKv, node: &str) -> Result<SeedOutcome, AuthError> {
        let mut records = Vec::new();
        for t in [Table::Users, Table::Tokens] {
            for (k, v) in local.scan(t)? {
                records.push((t, k, v));
            }
        }
        match self.call(Op::Seed(node.to_owned(), records.clone()))? {
            Answer::Seed(SeedOutcome::AlreadyShared { .. }) => {}
            Answer::Seed(o) => return Ok(o),
            _ => return Err(AuthError::Storage("unexpected answer".into())),
        }
        let mut local_only = Vec::new();
        let mut differing = Vec::new();
        for (t, k, v) in records {
            if t != Table::Users {
                continue;
            }
            let name = String::from_utf8_lossy(&k).into_owned();
            match self.get(Table::Users, &k)? {
                None => local_only.push(name),
                Some(shared) if !same_user(&v, &shared) => differing.push(name),
                Some(_) => {}
            }
        }
        Ok(SeedOutcome::AlreadyShared {
            local_only,
            differing,
        })
    }

    fn call(&self, op: Op) -> Result<Answer, AuthError> {
        let (reply, rx) = sync_channel(1);
        self.tx
            .send(Cmd { op, reply })
            .map_err(|_| AuthError::Storage("the users' etcd thread has stopped".into()))?;
        // The worker bounds each etcd call; this bounds the queue in front of it too.
        match rx.recv_timeout(REQUEST_TIMEOUT * 3) {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => Err(AuthError::Storage(format!("etcd: {e}"))),
            Err(_) => Err(AuthError::Storage(format!(
                "etcd did not answer within {:?}",
                REQUEST_TIMEOUT * 3
            ))),
        }
    }

    fn done(&self, op: Op) -> Result<bool, AuthError> {
        match self.call(op)? {
            Answer::Done(b) => Ok(b),
            _ => Err(AuthError::Storage("unexpected answer".into())),
        }
    }

    fn cached(&self, table: Table, key: &[u8]) -> Option<Vec<u8>> {
        self.copy
            .tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&table)
            .and_then(|t| t.get(key).cloned())
    }
}

/// Counts one read of etcd for a miss; `false` when this second's budget is spent.
fn miss_allowed(m: &mut (Instant, u32)) -> bool {
    if m.0.elapsed() >= Duration::from_secs(1) {
        *m = (Instant::now(), 0);
    }
    if m.1 >= MISS_READS_PER_S {
        return false;
    }
    m.1 += 1;
    true
}

/// Same role, scope, password hash and disabled flag (times aside).
fn same_user(a: &[u8], b: &[u8]) -> bool {
    let (Ok(a), Ok(b)) = (
        serde_json::from_slice::<serde_json::Value>(a),
        serde_json::from_slice::<serde_json::Value>(b),
    ) else {
        return false;
    };
    ["role", "scope", "password_hash", "disabled"]
        .iter()
        .all(|f| a.get(f) == b.get(f))
}

impl AuthKv for EtcdAuthKv {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, AuthError> {
        if let Some(v) = self.cached(table, key) {
            return Ok(Some(v));
        }
        // Not in the copy: perhaps written on another node since the last read.
        if !miss_allowed(&mut self.misses.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(None);
        }
        self.get_fresh(table, key)
    }

    fn get_fresh(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, AuthError> {
        match self.call(Op::Get(table, key.to_vec()))? {
            Answer::Value(v) => Ok(v),
            _ => Err(AuthError::Storage("unexpected answer".into())),
        }
    }

    fn insert(&self, table: Table, key: &[u8], value: Vec<u8>) -> Result<(), AuthError> {
        self.done(Op::Put(table, key.to_vec(), value)).map(|_| ())
    }

    fn remove(&self, table: Table, key: &[u8]) -> Result<(), AuthError> {
        self.done(Op::Delete(table, key.to_vec())).map(|_| ())
    }

    fn create(&self, table: Table, key: &[u8], value: Vec<u8>) -> Result<bool, AuthError> {
        self.done(Op::Create(table, key.to_vec(), value))
    }

    fn swap(&self, table: Table, key: &[u8], old: &[u8], new: Vec<u8>) -> Result<bool, AuthError> {
        self.done(Op::Swap(table, key.to_vec(), old.to_vec(), new, None))
    }

    fn swap_user_guarded(
        &self,
        key: &[u8],
        old: &[u8],
        new: Vec<u8>,
        guard: (&[u8], &[u8]),
    ) -> Result<bool, AuthError> {
        self.done(Op::Swap(
            Table::Users,
            key.to_vec(),
            old.to_vec(),
            new,
            Some((guard.0.to_vec(), guard.1.to_vec())),
        ))
    }

    fn scan(&self, table: Table) -> Result<vigie_auth::Records, AuthError> {
        Ok(self
            .copy
            .tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&table)
            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    fn scan_fresh(&self, table: Table) -> Result<vigie_auth::Records, AuthError> {
        self.call(Op::Refresh)?;
        self.scan(table)
    }

    fn flush(&self) -> Result<(), AuthError> {
        // Acknowledged etcd writes are durable (committed by a quorum).
        Ok(())
    }
}

async fn worker(
    cfg: ClusterConfig,
    copy: Arc<Copy>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Cmd>,
) {
    let keys = UserKeys::new(&cfg.prefix);
    let mut client: Option<Client> = None;
    let mut tick = tokio::time::interval(REFRESH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_warning: Option<Instant> = None;
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return };
                let r = match connected(&cfg, &mut client).await {
                    Ok(c) => apply(c, &keys, &copy, cmd.op).await,
                    Err(e) => Err(e),
                };
                let _ = cmd.reply.send(r.map_err(|e| e.to_string()));
            }
            _ = tick.tick() => {
                let r = match connected(&cfg, &mut client).await {
                    Ok(c) => refresh(c, &keys, &copy).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = r
                    && last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10))
                {
                    last_warning = Some(Instant::now());
                    tracing::warn!(error = %e, "cannot read the cluster's users from etcd (keeping the last copy)");
                }
            }
        }
    }
}

async fn connected<'a>(
    cfg: &ClusterConfig,
    client: &'a mut Option<Client>,
) -> Result<&'a mut Client, ClusterError> {
    if client.is_none() {
        *client = Some(connect(cfg).await?);
    }
    client
        .as_mut()
        .ok_or_else(|| ClusterError::Other("no etcd client".into()))
}

/// Reads all of `u/` and replaces the copy.
async fn refresh(c: &mut Client, keys: &UserKeys, copy: &Copy) -> Result<(), ClusterError> {
    let resp = bounded(c.get(keys.all(), Some(GetOptions::new().with_prefix()))).await?;
    let mut tables = Tables::new();
    for t in Table::ALL {
        tables.insert(t, BTreeMap::new());
    }
    for kv in resp.kvs() {
        let Ok(k) = kv.key_str() else { continue };
        if let Some((t, key)) = keys.parse(k) {
            tables
                .entry(t)
                .or_default()
                .insert(key, kv.value().to_vec());
        }
    }
    *copy.tables.write().unwrap_or_else(|p| p.into_inner()) = tables;
    *copy.read_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    Ok(())
}

fn set(copy: &Copy, t: Table, key: Vec<u8>, value: Option<Vec<u8>>) {
    let mut tables = copy.tables.write().unwrap_or_else(|p| p.into_inner());
    let table = tables.entry(t).or_default();
    match value {
        Some(v) => table.insert(key, v),
        None => table.remove(&key),
    };
}

async fn apply(
    c: &mut Client,
    keys: &UserKeys,
    copy: &Copy,
    op: Op,
) -> Result<Answer, ClusterError> {
    match op {
        Op::Get(t, key) => {
            let resp = bounded(c.get(keys.key(t, &key), None)).await?;
            let v = resp.kvs().first().map(|kv| kv.value().to_vec());
            set(copy, t, key, v.clone());
            Ok(Answer::Value(v))
        }
        Op::Put(t, key, value) => {
            bounded(c.put(keys.key(t, &key), value.clone(), None)).await?;
            set(copy, t, key, Some(value));
            Ok(Answer::Done(true))
        }
        Op::Delete(t, key) => {
            bounded(c.delete(keys.key(t, &key), None)).await?;
            set(copy, t, key, None);
            Ok(Answer::Done(true))
        }
        Op::Create(t, key, value) => {
            let k = keys.key(t, &key);
            let txn = Txn::new()
                .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(k, value.clone(), None)]);
            let ok = bounded(c.txn(txn)).await?.succeeded();
            if ok {
                set(copy, t, key, Some(value));
            }
            Ok(Answer::Done(ok))
        }
        Op::Swap(t, key, old, new, guard) => {
            let k = keys.key(t, &key);
            let mut when = vec![Compare::value(k.clone(), CompareOp::Equal, old)];
            let mut reread = vec![(t, key.clone())];
            if let Some((gk, gv)) = guard {
                when.push(Compare::value(
                    keys.key(Table::Users, &gk),
                    CompareOp::Equal,
                    gv,
                ));
                reread.push((Table::Users, gk));
            }
            let txn = Txn::new()
                .when(when)
                .and_then([TxnOp::put(k, new.clone(), None)])
                .or_else(
                    reread
                        .iter()
                        .map(|(t, key)| TxnOp::get(keys.key(*t, key), None))
                        .collect::<Vec<_>>(),
                );
            let resp = bounded(c.txn(txn)).await?;
            if resp.succeeded() {
                set(copy, t, key, Some(new));
                return Ok(Answer::Done(true));
            }
            // Changed or gone meanwhile: the copy takes what etcd has now.
            let now = resp.op_responses().into_iter().filter_map(|r| match r {
                etcd_client::TxnOpResponse::Get(g) => {
                    Some(g.kvs().first().map(|kv| kv.value().to_vec()))
                }
                _ => None,
            });
            for ((t, key), v) in reread.into_iter().zip(now) {
                set(copy, t, key, v);
            }
            Ok(Answer::Done(false))
        }
        Op::Refresh => {
            refresh(c, keys, copy).await?;
            Ok(Answer::Done(true))
        }
        Op::Seed(node, records) => seed(c, keys, copy, &node, records).await,
    }
}

async fn seed(
    c: &mut Client,
    keys: &UserKeys,
    copy: &Copy,
    node: &str,
    records: Vec<(Table, Vec<u8>, Vec<u8>)>,
) -> Result<Answer, ClusterError> {
    let users_prefix = keys.table_prefix(Table::Users);
    let existing = bounded(c.get(
        users_prefix,
        Some(GetOptions::new().with_prefix().with_count_only()),
    ))
    .await?
    .count();
    let local_users = records.iter().filter(|r| r.0 == Table::Users).count();
    let outcome = if existing > 0 {
        SeedOutcome::AlreadyShared {
            local_only: Vec::new(),
            differing: Vec::new(),
        }
    } else if local_users == 0 {
        SeedOutcome::NothingToSeed
    } else {
        let marker =
            serde_json::json!({ "node": node, "at_s": now_s(), "users": local_users }).to_string();
        let mut chunks = records.chunks(SEED_CHUNK);
        let first: Vec<TxnOp> = chunks
            .next()
            .unwrap_or_default()
            .iter()
            .map(|(t, k, v)| TxnOp::put(keys.key(*t, k), v.clone(), None))
            .chain([TxnOp::put(keys.seeded(), marker.clone(), None)])
            .collect();
        let txn = Txn::new()
            .when([Compare::create_revision(keys.seeded(), CompareOp::Equal, 0)])
            .and_then(first);
        if bounded(c.txn(txn)).await?.succeeded() {
            // The rest, only while the marker is still ours.
            for chunk in chunks {
                let ops: Vec<TxnOp> = chunk
                    .iter()
                    .map(|(t, k, v)| TxnOp::put(keys.key(*t, k), v.clone(), None))
                    .collect();
                let txn = Txn::new()
                    .when([Compare::value(
                        keys.seeded(),
                        CompareOp::Equal,
                        marker.clone(),
                    )])
                    .and_then(ops);
                bounded(c.txn(txn)).await?;
            }
            SeedOutcome::Seeded {
                users: local_users,
                tokens: records.len() - local_users,
            }
        } else {
            // Another node seeded first.
            SeedOutcome::AlreadyShared {
                local_only: Vec::new(),
                differing: Vec::new(),
            }
        }
    };
    refresh(c, keys, copy).await?;
    Ok(Answer::Seed(outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hide_hashed_secrets_in_hex_and_parse_back() {
        let k = UserKeys::new("/vigie/");
        assert_eq!(k.key(Table::Users, b"alice"), "/vigie/u/users/alice");
        let digest = [0xabu8; 32];
        let s = k.key(Table::Sessions, &digest);
        assert_eq!(s, format!("/vigie/u/sessions/{}", "ab".repeat(32)));
        assert_eq!(k.parse(&s), Some((Table::Sessions, digest.to_vec())));
        assert_eq!(
            k.parse(&k.key(Table::Tokens, &[1, 2])),
            Some((Table::Tokens, vec![1, 2]))
        );
        assert_eq!(
            k.parse("/vigie/u/users/bob"),
            Some((Table::Users, b"bob".to_vec()))
        );
        assert_eq!(k.parse(&k.seeded()), None);
        assert_eq!(k.parse("/vigie/u/sessions/not-hex"), None);
        assert_eq!(k.parse("/other/u/users/bob"), None);
    }

    #[test]
    fn misses_read_from_etcd_are_bounded_per_second() {
        let mut m = (Instant::now(), 0);
        let allowed = (0..500).filter(|_| miss_allowed(&mut m)).count();
        assert_eq!(allowed, MISS_READS_PER_S as usize);
        m.0 -= Duration::from_secs(1);
        assert!(miss_allowed(&mut m), "a new second has a new budget");
    }

    #[test]
    fn users_differ_on_rights_or_password_not_on_times() {
        let a = br#"{"name":"a","role":"admin","scope":"*","password_hash":"h","disabled":false,"created_s":1,"updated_s":1}"#;
        let b = br#"{"name":"a","role":"admin","scope":"*","password_hash":"h","disabled":false,"created_s":5,"updated_s":9}"#;
        let c = br#"{"name":"a","role":"operator","scope":"*","password_hash":"h","disabled":false,"created_s":1,"updated_s":1}"#;
        assert!(same_user(a, b));
        assert!(!same_user(a, c));
        assert!(!same_user(a, b"not json"));
    }
}

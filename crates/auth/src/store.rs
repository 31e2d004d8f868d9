//! [`AuthStore`]: users, sessions and API tokens in their own sled database
//! (`<data_dir>/access/`), and the login throttle (in memory).
//!
//! Trees (values are JSON, so fields can be added later):
//! * `users`: user name → user record (role, scope, argon2id PHC hash, disabled, times);
//! * `sessions`: SHA-256(session id) → session record (user, created, last seen);
//! * `tokens`: SHA-256(token) → token record (public id, user, label, created, expiry, last use).
//!
//! Times are unix seconds from the injected [`Clock`] (tests use `SimulatedClock`).

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use vigie_core::config::{AuthConfig, Config};
use vigie_core::{Clock, TIME_UNITS_PER_SEC, Time90k};

use crate::AuthError;
use crate::backend::{AuthKv, SledKv, Table};
use crate::password::{self, check_policy, csrf_token, digest, random_hex, random_token_part};
use crate::roles::{Communes, Permission, Role, Scope, allows};
use crate::throttle::{ACCOUNT_LOCK_S, LockInfo, MAX_LOCKOUT_S, Throttle, ThrottleLimits};

/// Prefix of every API token (lets log scanners and secret detectors recognise them).
pub const TOKEN_PREFIX: &str = "vigie_";
/// `last_seen` of a session is written at most this often.
const TOUCH_EVERY_S: i64 = 15;
/// Per client IP, and per account from any IP, this many times the per-(account, IP) failure
/// limit.
const IP_LIMIT_FACTOR: u32 = 4;

/// Session lifetimes and throttling limits.
#[derive(Debug, Clone, Copy)]
pub struct AuthSettings {
    pub session_idle_s: i64,
    pub session_max_s: i64,
    pub max_failed_logins: u32,
    pub lockout_s: i64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings::from_config(&AuthConfig::default())
    }
}

impl AuthSettings {
    pub fn from_config(c: &AuthConfig) -> Self {
        AuthSettings {
            session_idle_s: i64::from(c.session_idle_minutes) * 60,
            session_max_s: i64::from(c.session_max_hours) * 3600,
            max_failed_logins: c.max_failed_logins,
            lockout_s: i64::from(c.lockout_minutes) * 60,
        }
    }

    /// The pair (account, client IP): `max_failed_logins`, then `lockout_minutes` doubling up
    /// to 1 h.
    fn pair_limits(&self) -> ThrottleLimits {
        ThrottleLimits {
            max_failures: self.max_failed_logins,
            window_s: self.lockout_s,
            lockout_s: self.lockout_s,
            max_lockout_s: MAX_LOCKOUT_S,
        }
    }

    /// A client IP, whatever the account: four times as many failures, same locks.
    fn ip_limits(&self) -> ThrottleLimits {
        ThrottleLimits {
            max_failures: self.max_failed_logins.saturating_mul(IP_LIMIT_FACTOR),
            ..self.pair_limits()
        }
    }

    /// An account, from any IP: four times as many failures, then a fixed 60 s slow-down.
    fn account_limits(&self) -> ThrottleLimits {
        ThrottleLimits {
            max_failures: self.max_failed_logins.saturating_mul(IP_LIMIT_FACTOR),
            window_s: self.lockout_s,
            lockout_s: ACCOUNT_LOCK_S,
            max_lockout_s: ACCOUNT_LOCK_S,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserRecord {
    name: String,
    role: Role,
    scope: Scope,
    password_hash: String,
    #[serde(default)]
    disabled: bool,
    created_s: i64,
    updated_s: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionRecord {
    user: String,
    created_s: i64,
    last_seen_s: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    id: String,
    user: String,
    label: String,
    created_s: i64,
    expires_s: Option<i64>,
    last_used_s: Option<i64>,
}

fn rfc3339(s: i64) -> String {
    Time90k::from_unix_secs(s).to_rfc3339()
}

/// A user as shown to administrators (never the hash).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub role: Role,
    pub scope: Scope,
    pub disabled: bool,
    pub created: String,
    pub updated: String,
}

impl From<&UserRecord> for UserInfo {
    fn from(u: &UserRecord) -> Self {
        UserInfo {
            name: u.name.clone(),
            role: u.role,
            scope: u.scope.clone(),
            disabled: u.disabled,
            created: rfc3339(u.created_s),
            updated: rfc3339(u.updated_s),
        }
    }
}

/// An API token as listed (never the secret).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub user: String,
    pub label: String,
    pub created: String,
    pub expires: Option<String>,
    pub last_used: Option<String>,
    pub expired: bool,
}

/// A freshly created token: `token` is shown once and never again.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub token: String,
    pub info: TokenInfo,
}

/// How a request was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A browser session; mutating requests must carry this CSRF token.
    Session { csrf_token: String },
    /// An API token (no CSRF: browsers never send it on their own).
    Token { id: String },
}

/// An authenticated user, as seen by one request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: String,
    pub role: Role,
    pub scope: Scope,
    pub via: Via,
}

impl Principal {
    /// May this user do `perm`, on `camera` = (camera id, commune id) if given?
    pub fn can(&self, perm: Permission, camera: Option<(&str, &str)>) -> bool {
        allows(self.role, perm)
            && camera.is_none_or(|(cam, commune)| self.scope.covers(cam, commune))
    }

    /// May this caller give `scope` to a user (create it with that scope, or change a user's
    /// scope to it)? Only a scope inside its own ([`Scope::includes`]).
    pub fn may_grant(&self, scope: &Scope) -> Result<(), String> {
        if !allows(self.role, Permission::ManageUsers) {
            return Err(format!("role {} may not manage users", self.role));
        }
        if !self.scope.includes(scope) {
            return Err(format!(
                "{:?} ({}) may not grant a scope beyond its own: {scope}",
                self.user, self.scope
            ));
        }
        Ok(())
    }

    /// May this caller see and manage the account `target` (list it, change it, list, create or
    /// revoke its tokens)? Its scope must be inside the caller's; so only an unrestricted admin
    /// manages unrestricted users (admins included).
    pub fn may_manage(&self, target: &UserInfo) -> Result<(), String> {
        if !allows(self.role, Permission::ManageUsers) {
            return Err(format!("role {} may not manage users", self.role));
        }
        if !self.scope.includes(&target.scope) {
            return Err(format!(
                "user {:?} ({}) is outside the scope of {:?} ({})",
                target.name, target.scope, self.user, self.scope
            ));
        }
        Ok(())
    }

    /// May this caller set the password of, or create an API token for, `target`? On top of
    /// [`Principal::may_manage`]: another admin's credentials are only an unrestricted admin's
    /// business (a scoped admin must not be able to act under a peer admin's name).
    pub fn may_set_credentials(&self, target: &UserInfo) -> Result<(), String> {
        self.may_manage(target)?;
        if target.role == Role::Admin && target.name != self.user && !self.scope.is_unrestricted() {
            return Err(format!(
                "only an admin of all communes may set the password of, or create a token for, another admin ({:?})",
                target.name
            ));
        }
        Ok(())
    }
}

/// The credential a request was authenticated with, kept by long-lived connections (the live
/// WebSocket) to check it again with [`AuthStore::recheck`].
#[derive(Clone)]
pub enum Credential {
    /// A session id (the cookie value).
    Session(String),
    /// An API token (`vigie_…`).
    Token(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.write_str(match self {
            Credential::Session(_) => "Credential::Session(…)",
            Credential::Token(_) => "Credential::Token(…)",
        })
    }
}

/// A new login: `id` goes into the cookie (and nowhere else).
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub csrf_token: String,
    pub principal: Principal,
    /// Seconds until the absolute expiry (the cookie's Max-Age).
    pub max_age_s: i64,
}

/// Changes to a user; `None` leaves a field as is.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub role: Option<Role>,
    pub scope: Option<Scope>,
    pub disabled: Option<bool>,
    pub password: Option<String>,
}

/// Why a login failed, for the journal (the client only ever sees the [`AuthError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    UnknownUser,
    WrongPassword,
    Disabled,
    /// Refused before hashing: the pair (account, client IP), the client IP or the account is
    /// locked, or as many attempts as the limit allows are already in flight. Not journaled one
    /// by one: counted, and reported with the next lockout ([`LockInfo::refused_before`]).
    Locked,
    /// This failure started a lockout (journaled once, with its counters).
    LockoutStarted(Lockout),
}

/// Which throttle key a lockout is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockScope {
    /// The account, from one client IP (long, doubling lock: a stranger only locks themselves).
    AccountFromIp,
    /// One client IP, whatever the account (name spraying).
    Ip,
    /// The account from any IP: a short fixed slow-down ([`crate::throttle::ACCOUNT_LOCK_S`]).
    Account,
}

impl LockScope {
    pub fn as_str(self) -> &'static str {
        match self {
            LockScope::AccountFromIp => "account+ip",
            LockScope::Ip => "ip",
            LockScope::Account => "account",
        }
    }
}

/// A lockout that a failure just started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    pub scope: LockScope,
    pub info: LockInfo,
}

/// A login that passed the throttle ([`AuthStore::begin_login`]) and holds its reservations;
/// dropping it unfinished releases them.
pub struct LoginAttempt {
    store: AuthStore,
    name: String,
    keys: Vec<(LockScope, String, ThrottleLimits)>,
    finished: bool,
}

impl std::fmt::Debug for LoginAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginAttempt")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl LoginAttempt {
    /// Checks the password (argon2id: blocking, ~19 MiB; call it off the async executor and
    /// bound how many run at once) and opens a session. On failure, the [`LoginFailure`] says
    /// why for the journal; the [`AuthError`] is what the client may see.
    pub fn finish(mut self, password: &str) -> Result<NewSession, (AuthError, LoginFailure)> {
        self.finished = true;
        self.store.finish_login(&self.name, password, &self.keys)
    }
}

impl Drop for LoginAttempt {
    fn drop(&mut self) {
        if !self.finished {
            let mut t = self.store.throttle();
            for (_, k, _) in &self.keys {
                t.release(k);
            }
        }
    }
}

/// User names: 1–64 of `[a-z0-9._@-]`, starting with a letter or digit.
pub fn validate_user_name(name: &str) -> Result<(), AuthError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._@-".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "invalid user name {name:?}: use 1-64 of a-z 0-9 . _ @ -, starting with a letter or digit"
        )))
    }
}

impl Scope {
    /// Checks the scope against the configuration: communes and cameras must exist.
    pub fn validate(&self, config: &Config) -> Result<(), AuthError> {
        if let Communes::List(l) = &self.communes {
            if l.is_empty() {
                return Err(AuthError::Invalid(
                    "a scope needs at least one commune (or all communes)".into(),
                ));
            }
            for c in l {
                if !config.communes.iter().any(|x| &x.id == c) {
                    return Err(AuthError::Invalid(format!(
                        "unknown commune {c:?} (not in the configuration)"
                    )));
                }
            }
        }
        if let Some(cams) = &self.cameras {
            if cams.is_empty() {
                return Err(AuthError::Invalid(
                    "an empty camera list would give access to nothing; omit it instead".into(),
                ));
            }
            for c in cams {
                if config.camera(c).is_none() {
                    return Err(AuthError::Invalid(format!(
                        "unknown camera {c:?} (not in the configuration)"
                    )));
                }
            }
        }
        Ok(())
    }
}

struct Inner {
    kv: Arc<dyn AuthKv>,
    clock: Arc<dyn Clock>,
    settings: AuthSettings,
    throttle: Mutex<Throttle>,
    /// Serialises read-modify-write of user records, so that the "last enabled admin" check and
    /// the write it guards are one step (two concurrent demotions cannot both pass it).
    user_writes: Mutex<()>,
}

/// A record as stored: key and JSON value.
type Record = (Vec<u8>, Vec<u8>);

/// The refusal to demote, disable or delete the last enabled admin.
fn last_admin(name: &str) -> AuthError {
    AuthError::Invalid(format!(
        "{name:?} is the last enabled admin: create or enable another admin first"
    ))
}

/// The users, sessions and tokens of one installation. Cheap to clone.
#[derive(Clone)]
pub struct AuthStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AuthStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthStore")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl AuthStore {
    /// Opens (creating if needed) the database in `dir` (normally `<data_dir>/access`).
    /// Fails with [`AuthError::InUse`] when another process has it open.
    pub fn open(
        dir: &Path,
        settings: AuthSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<AuthStore, AuthError> {
        AuthStore::with_backend(Arc::new(SledKv::open(dir)?), settings, clock)
    }

    /// A store over another backend (a cluster node's etcd, see `vigie-cluster`): the same
    /// rules, the records elsewhere.
    pub fn with_backend(
        kv: Arc<dyn AuthKv>,
        settings: AuthSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<AuthStore, AuthError> {
        let store = AuthStore {
            inner: Arc::new(Inner {
                kv,
                clock,
                settings,
                throttle: Mutex::new(Throttle::default()),
                user_writes: Mutex::new(()),
            }),
        };
        store.purge_expired_sessions()?;
        Ok(store)
    }

    pub fn settings(&self) -> AuthSettings {
        self.inner.settings
    }

    fn now_s(&self) -> i64 {
        self.inner.clock.now().0.div_euclid(TIME_UNITS_PER_SEC)
    }

    fn flush(&self) -> Result<(), AuthError> {
        self.inner.kv.flush()
    }

    // ---- users ----

    fn load_user(&self, name: &str) -> Result<Option<UserRecord>, AuthError> {
        match self.inner.kv.get(Table::Users, name.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// Creates a user. The password must pass the policy (≥ 12 characters).
    pub fn add_user(
        &self,
        name: &str,
        role: Role,
        scope: Scope,
        password: &str,
    ) -> Result<UserInfo, AuthError> {
        validate_user_name(name)?;
        check_policy(password)?;
        let now = self.now_s();
        let rec = UserRecord {
            name: name.to_owned(),
            role,
            scope,
            password_hash: password::hash_password(password)?,
            disabled: false,
            created_s: now,
            updated_s: now,
        };
        let created =
            self.inner
                .kv
                .create(Table::Users, name.as_bytes(), serde_json::to_vec(&rec)?)?;
        if !created {
            return Err(AuthError::UserExists(name.to_owned()));
        }
        self.flush()?;
        Ok(UserInfo::from(&rec))
    }

    /// Applies `update` to a user. Disabling a user or changing its password ends its sessions.
    /// Refuses to leave the installation without an enabled admin.
    pub fn update_user(&self, name: &str, update: UserUpdate) -> Result<UserInfo, AuthError> {
        // Hash first (slow), then load, check and write under the lock: the check that another
        // enabled admin remains must see every other change that has been written.
        let new_hash = match &update.password {
            Some(p) => {
                check_policy(p)?;
                Some(password::hash_password(p)?)
            }
            None => None,
        };
        let _writing = self
            .inner
            .user_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Read the latest record and write over exactly it (a change made meanwhile by another
        // node is not undone: the write is refused and the update applied again on top).
        let mut attempts = 0;
        let rec = loop {
            attempts += 1;
            let raw = self
                .inner
                .kv
                .get_fresh(Table::Users, name.as_bytes())?
                .ok_or_else(|| AuthError::NoSuchUser(name.to_owned()))?;
            let mut rec: UserRecord = serde_json::from_slice(&raw)?;
            let was_admin = rec.role == Role::Admin && !rec.disabled;
            if let Some(h) = &new_hash {
                rec.password_hash = h.clone();
            }
            if let Some(r) = update.role {
                rec.role = r;
            }
            if let Some(s) = &update.scope {
                rec.scope = s.clone();
            }
            if let Some(d) = update.disabled {
                rec.disabled = d;
            }
            let still_admin = rec.role == Role::Admin && !rec.disabled;
            // Demoting an admin: written only while another enabled admin stays unchanged.
            let guard = if was_admin && !still_admin {
                Some(
                    self.other_enabled_admin(name)?
                        .ok_or_else(|| last_admin(name))?,
                )
            } else {
                None
            };
            rec.updated_s = self.now_s();
            let new = serde_json::to_vec(&rec)?;
            let written = match &guard {
                Some((k, v)) => {
                    self.inner
                        .kv
                        .swap_user_guarded(name.as_bytes(), &raw, new, (k, v))?
                }
                None => self
                    .inner
                    .kv
                    .swap(Table::Users, name.as_bytes(), &raw, new)?,
            };
            if written {
                break rec;
            }
            if attempts >= 5 {
                return Err(AuthError::Storage(format!(
                    "user {name:?} keeps changing concurrently: try again"
                )));
            }
        };
        if update.password.is_some() || rec.disabled {
            self.end_sessions_of(name)?;
        }
        self.flush()?;
        Ok(UserInfo::from(&rec))
    }

    /// Deletes a user with its sessions and API tokens. Refuses the last enabled admin.
    pub fn delete_user(&self, name: &str) -> Result<UserInfo, AuthError> {
        let _writing = self
            .inner
            .user_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let raw = self
            .inner
            .kv
            .get_fresh(Table::Users, name.as_bytes())?
            .ok_or_else(|| AuthError::NoSuchUser(name.to_owned()))?;
        let rec: UserRecord = serde_json::from_slice(&raw)?;
        let guard = if rec.role == Role::Admin && !rec.disabled {
            Some(
                self.other_enabled_admin(name)?
                    .ok_or_else(|| last_admin(name))?,
            )
        } else {
            None
        };
        // Disabled first (one atomic write that stops every session and token at once, on
        // every node; an admin only while another enabled admin stays unchanged), then its
        // credentials removed, then the record.
        let mut off = rec.clone();
        off.disabled = true;
        let off = serde_json::to_vec(&off)?;
        let written = match &guard {
            _ if rec.disabled => true,
            Some((k, v)) => self
                .inner
                .kv
                .swap_user_guarded(name.as_bytes(), &raw, off, (k, v))?,
            None => self
                .inner
                .kv
                .swap(Table::Users, name.as_bytes(), &raw, off)?,
        };
        if !written {
            return Err(AuthError::Storage(format!(
                "user {name:?} changed concurrently: try again"
            )));
        }
        self.end_sessions_of(name)?;
        for (k, t) in self.token_records()? {
            if t.user == name {
                self.inner.kv.remove(Table::Tokens, &k)?;
            }
        }
        self.inner.kv.remove(Table::Users, name.as_bytes())?;
        self.flush()?;
        Ok(UserInfo::from(&rec))
    }

    /// Another enabled admin than `except`: its key and record as read (the guard of a
    /// demotion), or `None`.
    fn other_enabled_admin(&self, except: &str) -> Result<Option<Record>, AuthError> {
        for (k, v) in self.inner.kv.scan_fresh(Table::Users)? {
            let u: UserRecord = serde_json::from_slice(&v)?;
            if u.name != except && u.role == Role::Admin && !u.disabled {
                return Ok(Some((k, v)));
            }
        }
        Ok(None)
    }

    fn all_users(&self) -> Result<Vec<UserRecord>, AuthError> {
        let mut out = Vec::new();
        for (_, v) in self.inner.kv.scan_fresh(Table::Users)? {
            out.push(serde_json::from_slice(&v)?);
        }
        Ok(out)
    }

    /// Every user, sorted by name.
    pub fn users(&self) -> Result<Vec<UserInfo>, AuthError> {
        Ok(self.all_users()?.iter().map(UserInfo::from).collect())
    }

    pub fn user(&self, name: &str) -> Result<Option<UserInfo>, AuthError> {
        Ok(self.load_user(name)?.as_ref().map(UserInfo::from))
    }

    /// Is there at least one enabled admin? (`vigie run` prints a hint when not.)
    pub fn has_enabled_admin(&self) -> Result<bool, AuthError> {
        Ok(self.other_enabled_admin("")?.is_some())
    }

    // ---- login and sessions ----

    /// Checks a user name and password, with throttling, and opens a session: [`Self::begin_login`]
    /// then [`LoginAttempt::finish`]. Blocking (argon2id): call it off the async executor.
    pub fn login(
        &self,
        name: &str,
        password: &str,
        ip: Option<IpAddr>,
    ) -> Result<NewSession, (AuthError, LoginFailure)> {
        self.begin_login(name, ip)?.finish(password)
    }

    /// The throttle half of a login, cheap and non-blocking: refuses at once when the pair
    /// (account, client IP), the client IP or the account is locked, else reserves a failure on
    /// each (see [`crate::throttle`]) and returns the attempt, to be finished (hashing) by
    /// [`LoginAttempt::finish`]. Dropping the attempt unfinished releases the reservations.
    pub fn begin_login(
        &self,
        name: &str,
        ip: Option<IpAddr>,
    ) -> Result<LoginAttempt, (AuthError, LoginFailure)> {
        let name = name.trim().to_lowercase();
        let name: String = name.chars().take(64).collect();
        let ip_text = ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
        let s = self.inner.settings;
        let mut keys = vec![(
            LockScope::AccountFromIp,
            format!("user+ip:{name}|{ip_text}"),
            s.pair_limits(),
        )];
        if ip.is_some() {
            keys.push((LockScope::Ip, format!("ip:{ip_text}"), s.ip_limits()));
        }
        keys.push((
            LockScope::Account,
            format!("user:{name}"),
            s.account_limits(),
        ));
        let now = self.now_s();
        let mut t = self.throttle();
        for (i, (_, key, limits)) in keys.iter().enumerate() {
            if let Err(left) = t.reserve(key, now, *limits) {
                t.refused(key);
                for (_, k, _) in &keys[..i] {
                    t.release(k);
                }
                return Err((
                    AuthError::Locked {
                        retry_after_s: left.max(1) as u64,
                    },
                    LoginFailure::Locked,
                ));
            }
        }
        drop(t);
        Ok(LoginAttempt {
            store: self.clone(),
            name,
            keys,
            finished: false,
        })
    }

    fn finish_login(
        &self,
        name: &str,
        password: &str,
        keys: &[(LockScope, String, ThrottleLimits)],
    ) -> Result<NewSession, (AuthError, LoginFailure)> {
        let now = self.now_s();
        let s = self.inner.settings;
        let release = |t: &mut Throttle| {
            for (_, k, _) in keys {
                t.release(k);
            }
        };
        let user = match self.load_user(name) {
            Ok(u) => u,
            Err(e) => {
                release(&mut self.throttle());
                return Err((e, LoginFailure::UnknownUser));
            }
        };
        let ok = match &user {
            Some(u) => password::verify_password(password, &u.password_hash),
            None => password::verify_dummy(password),
        };
        // A disabled account fails exactly like a wrong password (same error, same throttling),
        // right password or not: otherwise the answer would tell whether a password is right.
        // Only the journal learns the truth.
        let disabled = user.as_ref().is_some_and(|u| u.disabled);
        let Some(user) = user.filter(|_| ok && !disabled) else {
            let mut t = self.throttle();
            let mut lock: Option<Lockout> = None;
            for (scope, key, limits) in keys {
                if let Some(info) = t.fail(key, now, *limits)
                    && lock.is_none_or(|l| info.lock_s > l.info.lock_s)
                {
                    lock = Some(Lockout {
                        scope: *scope,
                        info,
                    });
                }
            }
            drop(t);
            let why = if disabled {
                LoginFailure::Disabled
            } else if self.load_user(name).ok().flatten().is_some() {
                LoginFailure::WrongPassword
            } else {
                LoginFailure::UnknownUser
            };
            return Err(match lock {
                Some(l) => (
                    AuthError::Locked {
                        retry_after_s: l.info.lock_s as u64,
                    },
                    LoginFailure::LockoutStarted(l),
                ),
                None => (AuthError::InvalidCredentials, why),
            });
        };
        {
            let mut t = self.throttle();
            for (scope, key, _) in keys {
                // The right password clears the pair, not the IP nor the account (another
                // client's failures there are not forgiven by this one's success).
                if *scope == LockScope::AccountFromIp {
                    t.succeed(key);
                } else {
                    t.release(key);
                }
            }
        }
        let _ = self.purge_expired_sessions();
        let id = random_token_part(32);
        let rec = SessionRecord {
            user: user.name.clone(),
            created_s: now,
            last_seen_s: now,
        };
        let stored = serde_json::to_vec(&rec)
            .map_err(AuthError::from)
            .and_then(|v| {
                self.inner
                    .kv
                    .create(Table::Sessions, &digest(&id), v)
                    .and_then(|created| {
                        created
                            .then_some(())
                            .ok_or_else(|| AuthError::Storage("session id collision".into()))
                    })
            });
        if let Err(e) = stored {
            return Err((e, LoginFailure::WrongPassword));
        }
        let csrf = csrf_token(&id);
        Ok(NewSession {
            principal: Principal {
                user: user.name,
                role: user.role,
                scope: user.scope,
                via: Via::Session {
                    csrf_token: csrf.clone(),
                },
            },
            csrf_token: csrf,
            id,
            max_age_s: s.session_max_s,
        })
    }

    fn throttle(&self) -> std::sync::MutexGuard<'_, Throttle> {
        // A panic while holding the lock leaves consistent data: keep going.
        self.inner
            .throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn session_alive(&self, s: &SessionRecord, now: i64) -> bool {
        let st = self.inner.settings;
        now - s.last_seen_s < st.session_idle_s && now - s.created_s < st.session_max_s
    }

    /// The user behind a session cookie value, if the session is alive and its user enabled.
    /// Refreshes the idle timer.
    pub fn session(&self, session_id: &str) -> Result<Principal, AuthError> {
        self.session_use(session_id, true)
    }

    /// Like [`Self::session`]; `refresh_idle = false` for requests the UI makes on its own
    /// (periodic refreshes), which must not keep an unattended session alive.
    pub fn session_use(
        &self,
        session_id: &str,
        refresh_idle: bool,
    ) -> Result<Principal, AuthError> {
        let key = digest(session_id);
        let Some(raw) = self.inner.kv.get(Table::Sessions, &key)? else {
            return Err(AuthError::Unauthenticated("no such session".into()));
        };
        let rec: SessionRecord = serde_json::from_slice(&raw)?;
        let now = self.now_s();
        if !self.session_alive(&rec, now) {
            self.inner.kv.remove(Table::Sessions, &key)?;
            return Err(AuthError::Unauthenticated(
                "session expired: log in again".into(),
            ));
        }
        let user = self.enabled_user(&rec.user)?;
        if refresh_idle && now - rec.last_seen_s >= TOUCH_EVERY_S {
            let touched = SessionRecord {
                last_seen_s: now,
                ..rec
            };
            // Best effort, and only over the record read: a session ended meanwhile (here or
            // on another node) must not come back, and a failed write is no reason to refuse.
            if let Err(e) =
                self.inner
                    .kv
                    .swap(Table::Sessions, &key, &raw, serde_json::to_vec(&touched)?)
            {
                tracing::debug!(error = %e, "session idle timer not refreshed");
            }
        }
        Ok(Principal {
            user: user.name,
            role: user.role,
            scope: user.scope,
            via: Via::Session {
                csrf_token: csrf_token(session_id),
            },
        })
    }

    /// Checks again, without refreshing anything, that a credential still stands: the session
    /// alive (not logged out, idle or past its absolute end, not ended by a password change),
    /// the token not revoked or expired, the user enabled. Returns the user's current rights
    /// (role and scope may have changed since). For long-lived connections (the live
    /// WebSocket): watching is not activity, so it does not keep an idle session alive.
    pub fn recheck(&self, credential: &Credential) -> Result<Principal, AuthError> {
        let now = self.now_s();
        let (user, via) = match credential {
            Credential::Session(id) => {
                let rec: SessionRecord = match self.inner.kv.get(Table::Sessions, &digest(id))? {
                    Some(v) => serde_json::from_slice(&v)?,
                    None => return Err(AuthError::Unauthenticated("session ended".into())),
                };
                if !self.session_alive(&rec, now) {
                    return Err(AuthError::Unauthenticated("session expired".into()));
                }
                (
                    rec.user,
                    Via::Session {
                        csrf_token: csrf_token(id),
                    },
                )
            }
            Credential::Token(token) => {
                let rec: TokenRecord = match self.inner.kv.get(Table::Tokens, &digest(token))? {
                    Some(v) => serde_json::from_slice(&v)?,
                    None => {
                        return Err(AuthError::Unauthenticated("API token revoked".into()));
                    }
                };
                if rec.expires_s.is_some_and(|e| e <= now) {
                    return Err(AuthError::Unauthenticated("API token expired".into()));
                }
                (rec.user, Via::Token { id: rec.id })
            }
        };
        let u = self.enabled_user(&user)?;
        Ok(Principal {
            user: u.name,
            role: u.role,
            scope: u.scope,
            via,
        })
    }

    fn enabled_user(&self, name: &str) -> Result<UserRecord, AuthError> {
        match self.load_user(name)? {
            Some(u) if !u.disabled => Ok(u),
            Some(_) => Err(AuthError::Unauthenticated(format!(
                "account {name:?} is disabled"
            ))),
            None => Err(AuthError::Unauthenticated(format!(
                "account {name:?} no longer exists"
            ))),
        }
    }

    /// Ends a session (logout). Unknown ids are ignored.
    pub fn logout(&self, session_id: &str) -> Result<(), AuthError> {
        self.inner.kv.remove(Table::Sessions, &digest(session_id))
    }

    fn end_sessions_of(&self, user: &str) -> Result<(), AuthError> {
        for (k, v) in self.inner.kv.scan_fresh(Table::Sessions)? {
            let rec: SessionRecord = serde_json::from_slice(&v)?;
            if rec.user == user {
                self.inner.kv.remove(Table::Sessions, &k)?;
            }
        }
        Ok(())
    }

    fn purge_expired_sessions(&self) -> Result<(), AuthError> {
        let now = self.now_s();
        for (k, v) in self.inner.kv.scan(Table::Sessions)? {
            let alive = serde_json::from_slice::<SessionRecord>(&v)
                .map(|s| self.session_alive(&s, now))
                .unwrap_or(false);
            if !alive {
                self.inner.kv.remove(Table::Sessions, &k)?;
            }
        }
        Ok(())
    }

    /// Number of live sessions (diagnostics and tests).
    pub fn session_count(&self) -> usize {
        self.inner.kv.scan(Table::Sessions).map_or(0, |v| v.len())
    }

    // ---- API tokens ----

    /// Creates an API token for `user`. The secret is in the result and is not stored.
    pub fn create_token(
        &self,
        user: &str,
        label: &str,
        expires_days: Option<u32>,
    ) -> Result<NewToken, AuthError> {
        let label = label.trim();
        if label.is_empty() || label.len() > 100 || label.chars().any(char::is_control) {
            return Err(AuthError::Invalid(
                "a token needs a name of 1-100 printable characters".into(),
            ));
        }
        if expires_days.is_some_and(|d| d == 0 || d > 3650) {
            return Err(AuthError::Invalid(
                "expiry must be within 1..=3650 days".into(),
            ));
        }
        if self.load_user(user)?.is_none() {
            return Err(AuthError::NoSuchUser(user.to_owned()));
        }
        let now = self.now_s();
        let existing: Vec<String> = self
            .token_records()?
            .into_iter()
            .map(|(_, t)| t.id)
            .collect();
        let id = loop {
            let id = format!("tok-{}", random_hex(4));
            if !existing.contains(&id) {
                break id;
            }
        };
        let token = format!("{TOKEN_PREFIX}{}", random_token_part(32));
        let rec = TokenRecord {
            id,
            user: user.to_owned(),
            label: label.to_owned(),
            created_s: now,
            expires_s: expires_days.map(|d| now + i64::from(d) * 86_400),
            last_used_s: None,
        };
        self.inner
            .kv
            .insert(Table::Tokens, &digest(&token), serde_json::to_vec(&rec)?)?;
        self.flush()?;
        Ok(NewToken {
            token,
            info: self.token_info(&rec, now),
        })
    }

    fn token_info(&self, t: &TokenRecord, now: i64) -> TokenInfo {
        TokenInfo {
            id: t.id.clone(),
            user: t.user.clone(),
            label: t.label.clone(),
            created: rfc3339(t.created_s),
            expires: t.expires_s.map(rfc3339),
            last_used: t.last_used_s.map(rfc3339),
            expired: t.expires_s.is_some_and(|e| e <= now),
        }
    }

    fn token_records(&self) -> Result<Vec<(Vec<u8>, TokenRecord)>, AuthError> {
        let mut out = Vec::new();
        for (k, v) in self.inner.kv.scan_fresh(Table::Tokens)? {
            out.push((k, serde_json::from_slice(&v)?));
        }
        Ok(out)
    }

    /// Every token, by user then creation.
    pub fn tokens(&self) -> Result<Vec<TokenInfo>, AuthError> {
        let now = self.now_s();
        let mut recs: Vec<TokenRecord> =
            self.token_records()?.into_iter().map(|(_, t)| t).collect();
        recs.sort_by(|a, b| (&a.user, a.created_s).cmp(&(&b.user, b.created_s)));
        Ok(recs.iter().map(|t| self.token_info(t, now)).collect())
    }

    /// Revokes (deletes) a token by its public id.
    pub fn revoke_token(&self, id: &str) -> Result<TokenInfo, AuthError> {
        let now = self.now_s();
        for (k, t) in self.token_records()? {
            if t.id == id {
                self.inner.kv.remove(Table::Tokens, &k)?;
                self.flush()?;
                return Ok(self.token_info(&t, now));
            }
        }
        Err(AuthError::NoSuchToken(id.to_owned()))
    }

    /// The user behind a bearer token, if the token is known, unexpired and its user enabled.
    pub fn token(&self, token: &str) -> Result<Principal, AuthError> {
        if !token.starts_with(TOKEN_PREFIX) {
            return Err(AuthError::Unauthenticated("not a Vigie API token".into()));
        }
        let key = digest(token);
        let Some(raw) = self.inner.kv.get(Table::Tokens, &key)? else {
            return Err(AuthError::Unauthenticated(
                "unknown or revoked API token".into(),
            ));
        };
        let rec: TokenRecord = serde_json::from_slice(&raw)?;
        let now = self.now_s();
        if rec.expires_s.is_some_and(|e| e <= now) {
            return Err(AuthError::Unauthenticated("API token expired".into()));
        }
        let user = self.enabled_user(&rec.user)?;
        if rec.last_used_s.is_none_or(|t| now - t >= 60) {
            let id = rec.id.clone();
            let touched = TokenRecord {
                last_used_s: Some(now),
                ..rec
            };
            // Best effort, and never over a token revoked meanwhile (see `session_use`).
            if let Err(e) =
                self.inner
                    .kv
                    .swap(Table::Tokens, &key, &raw, serde_json::to_vec(&touched)?)
            {
                tracing::debug!(error = %e, "token last use not recorded");
            }
            return Ok(Principal {
                user: user.name,
                role: user.role,
                scope: user.scope,
                via: Via::Token { id },
            });
        }
        Ok(Principal {
            user: user.name,
            role: user.role,
            scope: user.scope,
            via: Via::Token { id: rec.id },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigie_core::{Duration90k, SimulatedClock};

    const PW: &str = "correct horse battery";

    fn store() -> (tempfile::TempDir, AuthStore, Arc<SimulatedClock>) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(SimulatedClock::new(Time90k::from_unix_secs(1_800_000_000)));
        let s = AuthStore::open(
            &dir.path().join("access"),
            AuthSettings::default(),
            clock.clone(),
        )
        .unwrap();
        (dir, s, clock)
    }

    fn mins(m: i64) -> Duration90k {
        Duration90k::from_secs(m * 60)
    }

    #[test]
    fn users_are_created_once_and_passwords_checked() {
        let (_d, s, _) = store();
        assert!(!s.has_enabled_admin().unwrap());
        s.add_user("alice", Role::Admin, Scope::all(), PW).unwrap();
        assert!(s.has_enabled_admin().unwrap());
        assert!(matches!(
            s.add_user("alice", Role::Operator, Scope::all(), PW),
            Err(AuthError::UserExists(_))
        ));
        assert!(matches!(
            s.add_user("bob", Role::Operator, Scope::all(), "short"),
            Err(AuthError::WeakPassword(_))
        ));
        assert!(matches!(
            s.add_user("Bob!", Role::Operator, Scope::all(), PW),
            Err(AuthError::Invalid(_))
        ));
        let sess = s.login("alice", PW, None).unwrap();
        assert_eq!(sess.principal.role, Role::Admin);
        assert_eq!(sess.csrf_token, csrf_token(&sess.id));
        // Names are case-insensitive at login.
        assert!(s.login(" Alice ", PW, None).is_ok());
        let (e, why) = s.login("alice", "wrong password!", None).unwrap_err();
        assert!(matches!(e, AuthError::InvalidCredentials));
        assert_eq!(why, LoginFailure::WrongPassword);
        let (e, why) = s.login("nobody", PW, None).unwrap_err();
        assert!(matches!(e, AuthError::InvalidCredentials));
        assert_eq!(why, LoginFailure::UnknownUser);
        // Nothing secret is stored in clear.
        drop(s);
    }

    #[test]
    fn sessions_expire_idle_and_absolute() {
        let (_d, s, clock) = store();
        s.add_user("op", Role::Operator, Scope::all(), PW).unwrap();
        let sess = s.login("op", PW, None).unwrap();
        assert_eq!(s.session(&sess.id).unwrap().user, "op");
        // Used every 20 minutes: stays alive (idle 30 min)…
        let mut alive_min = 0;
        for _ in 0..60 {
            clock.advance(mins(20));
            if s.session(&sess.id).is_err() {
                break;
            }
            alive_min += 20;
        }
        // …until the absolute 12 h limit.
        assert_eq!(alive_min, 12 * 60 - 20);
        assert!(s.session(&sess.id).is_err());
        let sess = s.login("op", PW, None).unwrap();
        clock.advance(mins(29));
        assert!(s.session(&sess.id).is_ok());
        clock.advance(mins(31));
        assert!(matches!(
            s.session(&sess.id),
            Err(AuthError::Unauthenticated(_))
        ));
        // Logout ends a session; unknown ids are refused.
        let sess = s.login("op", PW, None).unwrap();
        s.logout(&sess.id).unwrap();
        assert!(s.session(&sess.id).is_err());
        assert!(s.session("made-up").is_err());
    }

    #[test]
    fn disabling_a_user_stops_sessions_and_tokens_at_once() {
        let (_d, s, _) = store();
        s.add_user("root", Role::Admin, Scope::all(), PW).unwrap();
        s.add_user("op", Role::Operator, Scope::all(), PW).unwrap();
        let sess = s.login("op", PW, None).unwrap();
        let tok = s.create_token("op", "script", None).unwrap();
        assert!(tok.token.starts_with("vigie_"));
        assert_eq!(s.token(&tok.token).unwrap().user, "op");
        s.update_user(
            "op",
            UserUpdate {
                disabled: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(s.session(&sess.id).is_err());
        assert!(s.token(&tok.token).is_err());
        // Right password of a disabled account: the same answer as a wrong one (no oracle);
        // the journal gets the truth.
        let (e, why) = s.login("op", PW, None).unwrap_err();
        assert!(matches!(e, AuthError::InvalidCredentials), "{e}");
        assert_eq!(why, LoginFailure::Disabled);
        let (e, why) = s.login("op", "wrong password!", None).unwrap_err();
        assert!(matches!(e, AuthError::InvalidCredentials), "{e}");
        assert_eq!(why, LoginFailure::Disabled);
        s.update_user(
            "op",
            UserUpdate {
                disabled: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(s.token(&tok.token).is_ok());
        // The last enabled admin cannot be disabled or demoted.
        let e = s
            .update_user(
                "root",
                UserUpdate {
                    role: Some(Role::Operator),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(e.to_string().contains("last enabled admin"), "{e}");
    }

    #[test]
    fn recheck_sees_logout_revocation_disable_expiry_and_does_not_refresh() {
        let (_d, s, clock) = store();
        s.add_user("root", Role::Admin, Scope::all(), PW).unwrap();
        s.add_user("op", Role::Operator, Scope::all(), PW).unwrap();
        let sess = s.login("op", PW, None).unwrap();
        let cs = Credential::Session(sess.id.clone());
        assert_eq!(s.recheck(&cs).unwrap().user, "op");
        // Rechecking is not activity: the idle timer runs out while a socket is open.
        for _ in 0..4 {
            clock.advance(mins(10));
            let _ = s.recheck(&cs);
        }
        assert!(s.recheck(&cs).is_err(), "idle session must end");
        let sess = s.login("op", PW, None).unwrap();
        let cs = Credential::Session(sess.id.clone());
        s.logout(&sess.id).unwrap();
        assert!(s.recheck(&cs).is_err());
        let t = s.create_token("op", "x", None).unwrap();
        let ct = Credential::Token(t.token.clone());
        assert!(s.recheck(&ct).is_ok());
        s.update_user(
            "op",
            UserUpdate {
                scope: Some(Scope {
                    communes: Communes::List(vec!["nord".into()]),
                    cameras: None,
                }),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(!s.recheck(&ct).unwrap().scope.is_unrestricted());
        s.update_user(
            "op",
            UserUpdate {
                disabled: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(s.recheck(&ct).is_err());
        s.update_user(
            "op",
            UserUpdate {
                disabled: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
        s.revoke_token(&t.info.id).unwrap();
        assert!(s.recheck(&ct).is_err());
    }

    #[test]
    fn concurrent_demotions_leave_an_enabled_admin() {
        let (_d, s, _) = store();
        let names: Vec<String> = (0..6).map(|i| format!("a{i}")).collect();
        for n in &names {
            s.add_user(n, Role::Admin, Scope::all(), PW).unwrap();
        }
        for round in 0..20 {
            // Every admin demoted at the same moment: the "another enabled admin remains" check
            // and the write must be one step.
            let barrier = Arc::new(std::sync::Barrier::new(names.len()));
            let handles: Vec<_> = names
                .iter()
                .map(|n| {
                    let (s, n, b) = (s.clone(), n.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        b.wait();
                        s.update_user(
                            &n,
                            UserUpdate {
                                role: Some(Role::Operator),
                                ..Default::default()
                            },
                        )
                    })
                })
                .collect();
            let ok = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(Result::is_ok)
                .count();
            assert_eq!(ok, names.len() - 1, "round {round}");
            assert!(s.has_enabled_admin().unwrap(), "round {round}");
            for n in &names {
                s.update_user(
                    n,
                    UserUpdate {
                        role: Some(Role::Admin),
                        ..Default::default()
                    },
                )
                .unwrap();
            }
        }
    }

    #[test]
    fn tokens_expire_and_revoke() {
        let (_d, s, clock) = store();
        s.add_user("inv", Role::Investigator, Scope::all(), PW)
            .unwrap();
        let t = s.create_token("inv", "nightly export", Some(2)).unwrap();
        let p = s.token(&t.token).unwrap();
        assert_eq!(
            p.via,
            Via::Token {
                id: t.info.id.clone()
            }
        );
        assert!(s.token("vigie_nope").is_err());
        assert!(s.token("Bearer-ish").is_err());
        clock.advance(Duration90k::from_secs(2 * 86_400));
        assert!(s.token(&t.token).is_err());
        assert!(s.tokens().unwrap()[0].expired);
        let t2 = s.create_token("inv", "cron", None).unwrap();
        assert_eq!(s.tokens().unwrap().len(), 2);
        s.revoke_token(&t2.info.id).unwrap();
        assert!(s.token(&t2.token).is_err());
        assert!(matches!(
            s.revoke_token(&t2.info.id),
            Err(AuthError::NoSuchToken(_))
        ));
        assert!(s.create_token("ghost", "x", None).is_err());
        assert!(s.create_token("inv", "", None).is_err());
    }

    #[test]
    fn password_change_ends_sessions() {
        let (_d, s, _) = store();
        s.add_user("op", Role::Operator, Scope::all(), PW).unwrap();
        let sess = s.login("op", PW, None).unwrap();
        s.update_user(
            "op",
            UserUpdate {
                password: Some("another long passphrase".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(s.session(&sess.id).is_err());
        assert!(s.login("op", PW, None).is_err());
        assert!(s.login("op", "another long passphrase", None).is_ok());
    }

    #[test]
    fn login_throttling_locks_user_then_releases() {
        let (_d, s, clock) = store();
        s.add_user("op", Role::Operator, Scope::all(), PW).unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..4 {
            let (e, _) = s.login("op", "wrong password!", Some(ip)).unwrap_err();
            assert!(matches!(e, AuthError::InvalidCredentials));
        }
        let (e, why) = s.login("op", "wrong password!", Some(ip)).unwrap_err();
        assert!(matches!(e, AuthError::Locked { retry_after_s: 900 }), "{e}");
        assert!(matches!(why, LoginFailure::LockoutStarted(_)), "{why:?}");
        // The right password is refused while locked.
        clock.advance(mins(10));
        let (e, why) = s.login("op", PW, Some(ip)).unwrap_err();
        assert!(matches!(e, AuthError::Locked { retry_after_s: 300 }), "{e}");
        assert_eq!(why, LoginFailure::Locked);
        clock.advance(mins(5));
        assert!(s.login("op", PW, Some(ip)).is_ok());
    }

    #[test]
    fn login_throttling_per_ip_covers_name_spraying() {
        let (_d, s, _) = store();
        s.add_user("op", Role::Operator, Scope::all(), PW).unwrap();
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let mut locked = false;
        for i in 0..20 {
            let (e, _) = s
                .login(&format!("user{i}"), "guess guess guess", Some(ip))
                .unwrap_err();
            locked |= matches!(e, AuthError::Locked { .. });
        }
        assert!(locked, "20 failures from one IP must lock it");
        let (e, _) = s.login("op", PW, Some(ip)).unwrap_err();
        assert!(matches!(e, AuthError::Locked { .. }));
        // Another IP is not affected.
        assert!(
            s.login("op", PW, Some("198.51.100.2".parse().unwrap()))
                .is_ok()
        );
    }

    #[test]
    fn a_stranger_cannot_keep_an_account_locked() {
        let (_d, s, clock) = store();
        s.add_user("admin1", Role::Admin, Scope::all(), PW).unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        let owner: IpAddr = "192.0.2.10".parse().unwrap();
        // The stranger fails until locked out: only their own pair is locked.
        let mut lock = None;
        for _ in 0..5 {
            if let Err((_, LoginFailure::LockoutStarted(l))) =
                s.login("admin1", "wrong password!", Some(stranger))
            {
                lock = Some(l);
            }
        }
        let lock = lock.expect("a lockout");
        assert_eq!(lock.scope, LockScope::AccountFromIp);
        assert_eq!(lock.info.failures, 5);
        assert!(matches!(
            s.login("admin1", PW, Some(stranger)).unwrap_err().1,
            LoginFailure::Locked
        ));
        assert!(
            s.login("admin1", PW, Some(owner)).is_ok(),
            "owner locked out"
        );
        // Strangers from many IPs reach the account-wide limit: a 60 s slow-down, no more.
        for i in 0..20 {
            let ip: IpAddr = format!("198.18.0.{i}").parse().unwrap();
            let _ = s.login("admin1", "wrong password!", Some(ip));
        }
        let (e, why) = s.login("admin1", PW, Some(owner)).unwrap_err();
        assert_eq!(why, LoginFailure::Locked, "{e}");
        assert!(
            matches!(e, AuthError::Locked { retry_after_s } if retry_after_s <= 60),
            "{e}"
        );
        clock.advance(Duration90k::from_secs(61));
        assert!(s.login("admin1", PW, Some(owner)).is_ok());
    }

    #[test]
    fn principal_checks_role_and_scope() {
        let p = Principal {
            user: "op".into(),
            role: Role::Operator,
            scope: Scope {
                communes: Communes::List(vec!["nord".into()]),
                cameras: None,
            },
            via: Via::Token { id: "t".into() },
        };
        assert!(p.can(Permission::Live, Some(("cam-a", "nord"))));
        assert!(!p.can(Permission::Live, Some(("cam-b", "sud"))));
        assert!(!p.can(Permission::Export, Some(("cam-a", "nord"))));
        assert!(p.can(Permission::ViewStatus, None));
        assert!(!p.can(Permission::ManageUsers, None));
    }

    #[test]
    fn second_open_reports_in_use() {
        let (d, _s, clock) = store();
        let e =
            AuthStore::open(&d.path().join("access"), AuthSettings::default(), clock).unwrap_err();
        assert!(matches!(e, AuthError::InUse { .. }), "{e}");
        assert!(e.to_string().contains("Vigie is running"));
    }

    #[test]
    fn secrets_are_not_stored_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access");
        let clock = Arc::new(SimulatedClock::new(Time90k::from_unix_secs(1_800_000_000)));
        let (sid, tok) = {
            let s = AuthStore::open(&path, AuthSettings::default(), clock.clone()).unwrap();
            s.add_user("op", Role::Operator, Scope::all(), PW).unwrap();
            let sess = s.login("op", PW, None).unwrap();
            let t = s.create_token("op", "x", None).unwrap();
            s.flush().unwrap();
            (sess.id, t.token)
        };
        let mut all = Vec::new();
        for e in walk(&path) {
            all.extend(std::fs::read(e).unwrap());
        }
        for secret in [PW, sid.as_str(), tok.as_str()] {
            assert!(
                !all.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} found in the database files"
            );
        }
    }

    fn walk(p: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                out.extend(walk(&e));
            } else {
                out.push(e);
            }
        }
        out
    }
}

#[cfg(test)]
mod backend_tests {
    //! The store over a backend whose reads may be stale (as a cluster node's copy of etcd is
    //! for up to its refresh interval): stale reads must never undo a change made elsewhere.
    use super::*;
    use std::collections::HashMap;
    use vigie_core::{Duration90k, SimulatedClock};

    const PW: &str = "correct horse battery";

    type Snapshot = HashMap<(Table, Vec<u8>), Vec<u8>>;

    /// Sled underneath; while frozen, `get` answers from a snapshot taken at `freeze`.
    /// A backend whose reads may be a frozen copy (a node's stale copy of the shared store),
    /// and on which "another node" may write a user record just before this node's next
    /// write of a user record (two admins demoting each other at once).
    struct StaleKv {
        real: SledKv,
        frozen: Mutex<Option<Snapshot>>,
        before_next_write: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
    }

    impl StaleKv {
        fn new(dir: &std::path::Path) -> StaleKv {
            StaleKv {
                real: SledKv::open(&dir.join("access")).unwrap(),
                frozen: Mutex::new(None),
                before_next_write: Mutex::new(None),
            }
        }
        fn other_node_writes(&self) {
            if let Some((k, v)) = self.before_next_write.lock().unwrap().take() {
                self.real.insert(Table::Users, &k, v).unwrap();
            }
        }
        fn freeze(&self) {
            let mut snap = HashMap::new();
            for t in Table::ALL {
                for (k, v) in self.real.scan(t).unwrap() {
                    snap.insert((t, k), v);
                }
            }
            *self.frozen.lock().unwrap() = Some(snap);
        }
    }

    impl AuthKv for StaleKv {
        fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, AuthError> {
            match &*self.frozen.lock().unwrap() {
                Some(snap) => Ok(snap.get(&(t, key.to_vec())).cloned()),
                None => self.real.get(t, key),
            }
        }
        fn get_fresh(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, AuthError> {
            self.real.get(t, key)
        }
        fn insert(&self, t: Table, key: &[u8], value: Vec<u8>) -> Result<(), AuthError> {
            self.real.insert(t, key, value)
        }
        fn remove(&self, t: Table, key: &[u8]) -> Result<(), AuthError> {
            self.real.remove(t, key)
        }
        fn create(&self, t: Table, key: &[u8], value: Vec<u8>) -> Result<bool, AuthError> {
            self.real.create(t, key, value)
        }
        fn swap(&self, t: Table, key: &[u8], old: &[u8], new: Vec<u8>) -> Result<bool, AuthError> {
            if t == Table::Users {
                self.other_node_writes();
            }
            self.real.swap(t, key, old, new)
        }
        fn swap_user_guarded(
            &self,
            key: &[u8],
            old: &[u8],
            new: Vec<u8>,
            guard: (&[u8], &[u8]),
        ) -> Result<bool, AuthError> {
            self.other_node_writes();
            self.real.swap_user_guarded(key, old, new, guard)
        }
        fn scan(&self, t: Table) -> Result<crate::backend::Records, AuthError> {
            self.real.scan(t)
        }
        fn flush(&self) -> Result<(), AuthError> {
            self.real.flush()
        }
    }

    #[test]
    fn a_stale_read_never_revives_a_session_or_token_nor_undoes_a_user_change() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(SimulatedClock::new(Time90k::from_unix_secs(1_800_000_000)));
        let kv = Arc::new(StaleKv::new(dir.path()));
        let s =
            AuthStore::with_backend(kv.clone(), AuthSettings::default(), clock.clone()).unwrap();
        s.add_user("root", Role::Admin, Scope::all(), PW).unwrap();
        s.add_user("op", Role::Operator, Scope::all(), PW).unwrap();
        let sess = s.login("op", PW, None).unwrap();
        let tok = s.create_token("op", "script", None).unwrap();
        // This node's copy still shows the session and the token; "another node" ends both.
        kv.freeze();
        s.logout(&sess.id).unwrap();
        s.revoke_token(&tok.info.id).unwrap();
        // A request here within the staleness is served from the copy (that is the bound),
        // and the idle-timer / last-use refreshes it makes must not write the records back.
        clock.advance(Duration90k::from_secs(120));
        assert!(s.session(&sess.id).is_ok());
        assert!(s.token(&tok.token).is_ok());
        *kv.frozen.lock().unwrap() = None;
        assert!(s.session(&sess.id).is_err(), "session revived");
        assert!(s.token(&tok.token).is_err(), "token revived");
        // A user change over a stale copy applies on top of the latest record.
        kv.freeze();
        let off = UserUpdate {
            disabled: Some(true),
            ..Default::default()
        };
        s.update_user("op", off).unwrap();
        let nord = Scope {
            communes: Communes::List(vec!["nord".into()]),
            cameras: None,
        };
        let u = s
            .update_user(
                "op",
                UserUpdate {
                    scope: Some(nord),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(u.disabled, "re-scoping re-enabled a disabled user");
    }

    #[test]
    fn deleting_a_user_ends_its_sessions_and_tokens_but_not_the_last_admin() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(SimulatedClock::new(Time90k::from_unix_secs(1_800_000_000)));
        let s =
            AuthStore::open(&dir.path().join("access"), AuthSettings::default(), clock).unwrap();
        s.add_user("root", Role::Admin, Scope::all(), PW).unwrap();
        s.add_user("op", Role::Operator, Scope::all(), PW).unwrap();
        let sess = s.login("op", PW, None).unwrap();
        let tok = s.create_token("op", "script", None).unwrap();
        let keep = s.create_token("root", "keep", None).unwrap();
        assert_eq!(s.delete_user("op").unwrap().name, "op");
        assert!(s.session(&sess.id).is_err());
        assert!(s.token(&tok.token).is_err());
        assert!(s.token(&keep.token).is_ok());
        assert_eq!(s.tokens().unwrap().len(), 1);
        assert!(s.user("op").unwrap().is_none());
        assert!(matches!(s.delete_user("op"), Err(AuthError::NoSuchUser(_))));
        let e = s.delete_user("root").unwrap_err();
        assert!(e.to_string().contains("last enabled admin"), "{e}");
        // The name can be used again.
        s.add_user("op", Role::Operator, Scope::all(), PW).unwrap();
    }

    /// Two admins, each disabling (or deleting) the other on a different node at the same
    /// moment: both checks see another enabled admin, but only one write may pass, else
    /// nobody can administer the installation any more.
    #[test]
    fn two_admins_demoting_each_other_at_once_leave_one_enabled() {
        for delete in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let clock = Arc::new(SimulatedClock::new(Time90k::from_unix_secs(1_800_000_000)));
            let kv = Arc::new(StaleKv::new(dir.path()));
            let s = AuthStore::with_backend(kv.clone(), AuthSettings::default(), clock).unwrap();
            s.add_user("a", Role::Admin, Scope::all(), PW).unwrap();
            s.add_user("b", Role::Admin, Scope::all(), PW).unwrap();
            // "Another node" disables b between this node's check (b enabled) and its write.
            let raw_b = kv.real.get(Table::Users, b"b").unwrap().unwrap();
            let mut b: UserRecord = serde_json::from_slice(&raw_b).unwrap();
            b.disabled = true;
            *kv.before_next_write.lock().unwrap() =
                Some((b"b".to_vec(), serde_json::to_vec(&b).unwrap()));
            let r = if delete {
                s.delete_user("a").map(|_| ())
            } else {
                s.update_user(
                    "a",
                    UserUpdate {
                        disabled: Some(true),
                        ..Default::default()
                    },
                )
                .map(|_| ())
            };
            assert!(r.is_err(), "delete {delete}: the last admin went too");
            let a = s.user("a").unwrap().expect("a kept");
            assert!(!a.disabled, "delete {delete}: no enabled admin left");
            assert!(s.has_enabled_admin().unwrap());
        }
    }
}

#[cfg(test)]
mod reopen_tests {
    use super::*;
    use vigie_core::SimulatedClock;

    #[test]
    fn reopens_after_drop_in_the_same_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access");
        let clock = Arc::new(SimulatedClock::new(Time90k::from_unix_secs(1_800_000_000)));
        for i in 0..3 {
            let s = AuthStore::open(&path, AuthSettings::default(), clock.clone()).unwrap();
            assert_eq!(s.users().unwrap().len(), i);
            s.add_user(
                &format!("u{i}"),
                Role::Operator,
                Scope::all(),
                "long enough password",
            )
            .unwrap();
        }
    }
}

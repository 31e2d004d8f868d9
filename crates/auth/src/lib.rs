//! Users and rights of Vigie: named users with one role each, scoped to communes (or all) and
//! optionally to cameras; argon2id password hashes; browser sessions; API tokens for scripts;
//! login throttling.
//!
//! Owns: the rights table ([`allows`]), scopes ([`Scope`]), the user/session/token store
//! ([`AuthStore`], its own sled database in `<data_dir>/access/`, or any [`AuthKv`] backend:
//! a cluster node's is etcd, in `vigie-cluster`), and throttling.
//!
//! Does not own: HTTP (cookies, headers, status codes live in `vigie-api`), the access journal
//! (`vigie-audit`).
//!
//! # Roles
//!
//! | permission | admin | supervisor | operator | investigator | auditor |
//! |---|---|---|---|---|---|
//! | `ViewStatus` (cameras, status, health details, metrics) | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | `Live` | ✓ | ✓ | ✓ | | |
//! | `Playback` (recordings, video.mp4) | ✓ | ✓ | ✓ | ✓ | |
//! | `Still` (snapshot.jpg) | ✓ | ✓ | ✓ | ✓ | |
//! | `Export` (create, download) | ✓ | ✓ | | ✓ | |
//! | `Hold` (place; release one's own) | ✓ | ✓ | | ✓ | |
//! | `ReleaseAnyHold` (release another user's hold) | ✓ | ✓ | | | |
//! | `ViewEvidence` (lists of holds and exports) | ✓ | ✓ | | ✓ | ✓ |
//! | `Audit` (journal, register) | ✓ | ✓ | | | ✓ |
//! | `ManageUsers` (users, tokens) | ✓ | | | | |
//! | `Ptz` (steer a dome, presets) | ✓ | ✓ | ✓ | | |
//!
//! Camera-related permissions also need the camera inside the user's [`Scope`]
//! ([`Principal::can`]).
//!
//! # Secrets at rest
//!
//! Only hashes are stored: argon2id PHC strings for passwords, SHA-256 for session ids and API
//! tokens (a leaked backup of `access/` cannot be replayed). The CSRF token of a session is
//! derived from its id and never stored.
//!
//! # Sessions and tokens
//!
//! A session ends after `session_idle_s` without use or `session_max_s` after login. An API
//! token (`vigie_…`, shown once) has its user's rights, an optional expiry, and can be revoked.
//! Every check reloads the user: disabling a user, or changing its role or scope, applies to its
//! sessions and tokens at once. Changing a password ends the user's sessions (not its tokens).
//! Long-lived connections (the live WebSocket) call [`AuthStore::recheck`] every second.
//!
//! # Managing users within a scope
//!
//! [`Principal::may_grant`], [`Principal::may_manage`] and [`Principal::may_set_credentials`]:
//! an admin grants, sees and manages only users whose scope is inside its own
//! ([`Scope::includes`]); so only an unrestricted admin manages unrestricted users; another
//! admin's password and tokens are an unrestricted admin's business. The CLI has no caller (it
//! runs as the machine's operator, with the database closed to the server) and is unrestricted.

pub mod backend;
mod password;
mod roles;
mod store;
mod throttle;

pub use backend::{AuthKv, Records, SledKv, Table};
pub use password::{
    MIN_PASSWORD_CHARS, check_policy, constant_time_eq, csrf_token, hash_password, random_password,
    verify_password,
};
pub use roles::{Communes, Permission, Role, Scope, allows};
pub use store::{
    AuthSettings, AuthStore, Credential, LockScope, Lockout, LoginAttempt, LoginFailure,
    NewSession, NewToken, Principal, TokenInfo, UserInfo, UserUpdate, Via, validate_user_name,
};
pub use throttle::{ACCOUNT_LOCK_S, LockInfo, MAX_LOCKOUT_S};

/// Errors of the users-and-rights store.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong user name or password (deliberately not saying which).
    #[error("wrong user name or password")]
    InvalidCredentials,
    /// A disabled account. Not what a login answers (a disabled account fails like a wrong
    /// password, so that the answer reveals nothing about the password).
    #[error("account {0:?} is disabled")]
    Disabled(String),
    /// Too many failed logins: try again in `retry_after_s` seconds.
    #[error("too many failed logins: try again in {retry_after_s} s")]
    Locked { retry_after_s: u64 },
    /// No valid session or token (unknown, expired, revoked, or its user disabled).
    #[error("{0}")]
    Unauthenticated(String),
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error("no user {0:?}")]
    NoSuchUser(String),
    #[error("no API token {0:?}")]
    NoSuchToken(String),
    #[error("{0}")]
    WeakPassword(String),
    /// A malformed name, role, scope or label.
    #[error("{0}")]
    Invalid(String),
    /// Another process (normally `vigie run`) has the database open.
    #[error(
        "the user database {path} is in use by another process: Vigie is running; stop it or use the API (/api/v1/users, /api/v1/tokens)"
    )]
    InUse { path: String },
    #[error("user database: {0}")]
    Storage(String),
    #[error("password hashing: {0}")]
    Hash(String),
}

impl From<sled::Error> for AuthError {
    fn from(e: sled::Error) -> Self {
        AuthError::Storage(e.to_string())
    }
}

impl From<serde_json::Error> for AuthError {
    fn from(e: serde_json::Error) -> Self {
        AuthError::Storage(format!("corrupt record: {e}"))
    }
}

//! The one door to the access journal: every journaled event of the API goes through
//! [`record`], which appends to the hash-chained [`vigie_audit::Journal`] of the [`AppState`].
//! A user action whose entry cannot be written fails (no untraced access).
//!
//! [`Event`] and [`access`] are the users-and-rights events (logins, failures, lockouts,
//! logouts, user and token changes) turned into journal entries. No secret (password, token,
//! session id, CSRF token) is ever part of an entry.

use std::net::IpAddr;

use vigie_audit::{Action, NewEntry};
use vigie_auth::{LoginFailure, Role};

use crate::{ApiError, AppState};

/// Appends one entry to the access journal (off the async executor: it fsyncs).
pub async fn record(state: &AppState, entry: NewEntry) -> Result<(), ApiError> {
    let journal = state.journal.clone();
    tokio::task::spawn_blocking(move || journal.append(entry))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map(|_| ())
        .map_err(|e| {
            tracing::error!(error = %e, "cannot write to the access journal");
            ApiError::Unavailable(format!("the access journal cannot be written: {e}"))
        })
}

/// How long a repeated access (same user, same representation) is covered by its first entry.
const DEDUPE_WINDOW: vigie_core::Duration90k =
    vigie_core::Duration90k(3600 * vigie_core::TIME_UNITS_PER_SEC);

/// Journals `entry` unless an entry with the same `dedupe_key` was journaled within the last
/// hour by this process (e.g. the range requests of one video player). Fails like [`record`].
pub async fn record_once(
    state: &AppState,
    dedupe_key: String,
    entry: NewEntry,
) -> Result<(), ApiError> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static SEEN: Mutex<Option<HashMap<String, vigie_core::Time90k>>> = Mutex::new(None);
    let now = state.clock.now();
    {
        let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
        let map = seen.get_or_insert_with(HashMap::new);
        if map.len() > 10_000 {
            map.retain(|_, t| now - *t < DEDUPE_WINDOW);
        }
        if map
            .get(&dedupe_key)
            .is_some_and(|t| now - *t < DEDUPE_WINDOW)
        {
            return Ok(());
        }
    }
    record(state, entry).await?;
    SEEN.lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(dedupe_key, now);
    Ok(())
}

/// A users-and-rights event.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    LoginSucceeded {
        user: &'a str,
        ip: Option<IpAddr>,
    },
    /// `user` is the name as typed (it may not exist).
    LoginFailed {
        user: &'a str,
        ip: Option<IpAddr>,
        why: LoginFailure,
    },
    Logout {
        user: &'a str,
    },
    UserCreated {
        by: &'a str,
        user: &'a str,
        role: Role,
    },
    /// `what` lists the changed fields (never a password).
    UserChanged {
        by: &'a str,
        user: &'a str,
        what: String,
    },
    TokenCreated {
        by: &'a str,
        user: &'a str,
        id: &'a str,
    },
    TokenRevoked {
        by: &'a str,
        id: &'a str,
    },
}

/// Journals a users-and-rights event (and logs it, without secrets).
pub async fn access(state: &AppState, event: Event<'_>) -> Result<(), ApiError> {
    use serde_json::json;
    let remote = |e: NewEntry, ip: &Option<IpAddr>| match ip {
        Some(ip) => e.remote(ip.to_string()),
        None => e,
    };
    let entry = match &event {
        Event::LoginSucceeded { user, ip } => {
            tracing::info!(target: "vigie_access", %user, ?ip, "login");
            remote(NewEntry::new(*user, Action::Login), ip)
        }
        Event::LoginFailed { user, ip, why } => {
            // A name that does not exist is often a password typed in the wrong field: the
            // log gets only its length (the journal, readable by auditors only, keeps it).
            if *why == LoginFailure::UnknownUser {
                tracing::warn!(target: "vigie_access", user_len = user.len(), ?ip, ?why, "login failed");
            } else {
                tracing::warn!(target: "vigie_access", %user, ?ip, ?why, "login failed");
            }
            match why {
                // One entry per lockout, with its counters (the attempts refused while locked
                // are not journaled one by one: they are counted into the next lockout's entry).
                LoginFailure::LockoutStarted(l) => {
                    remote(NewEntry::new(*user, Action::Lockout), ip).details(json!({
                        "why": "LockoutStarted",
                        "scope": l.scope.as_str(),
                        "lock_s": l.info.lock_s,
                        "failures": l.info.failures,
                        "repeat": l.info.repeat,
                        "refused_during_previous_lock": l.info.refused_before,
                    }))
                }
                _ => remote(NewEntry::new(*user, Action::LoginFailed), ip)
                    .details(json!({ "why": format!("{why:?}") })),
            }
        }
        Event::Logout { user } => NewEntry::new(*user, Action::Logout),
        Event::UserCreated { by, user, role } => NewEntry::new(*by, Action::UserAdd)
            .details(json!({ "user": user, "role": role.as_str() })),
        Event::UserChanged { by, user, what } => {
            NewEntry::new(*by, Action::UserChange).details(json!({ "user": user, "changed": what }))
        }
        Event::TokenCreated { by, user, id } => {
            NewEntry::new(*by, Action::TokenCreate).details(json!({ "user": user, "token_id": id }))
        }
        Event::TokenRevoked { by, id } => {
            NewEntry::new(*by, Action::TokenRevoke).details(json!({ "token_id": id }))
        }
    };
    if !matches!(
        event,
        Event::LoginFailed { .. } | Event::LoginSucceeded { .. }
    ) {
        tracing::info!(target: "vigie_access", event = ?event, "access");
    }
    record(state, entry).await
}

//! `POST /api/v1/session` (log in), `GET /api/v1/session` (who am I), `DELETE /api/v1/session`
//! (log out).
//!
//! Login answers `{user, role, scope, csrf_token}` and sets the `vigie_session` cookie
//! (HttpOnly, SameSite=Strict, Path=/, Max-Age = the absolute session lifetime; Secure under
//! built-in TLS or with `server.behind_tls_proxy`). Wrong credentials → 401; too many failures
//! → 429 with `Retry-After`; too many logins hashing at once → 503 with `Retry-After`; a
//! disabled account → the same 401 as a wrong password, right password or not (no password
//! oracle; the journal records why).
//!
//! Order of a login (see [`vigie_auth`]'s throttle and [`crate::limits::LoginGate`]): the
//! throttle reserves a failure first (locked → 429 at once, no hashing, no journal entry), then
//! a hashing slot is taken, then the password is hashed. Failures are journaled; a lockout is
//! journaled once, with its counters.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use vigie_auth::{Permission, Via, allows};

use crate::access::{ClientIp, Principal, SESSION_COOKIE, session_cookie};
use crate::journal::{self, Event};
use crate::{ApiError, AppState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    username: String,
    password: String,
}

fn cookie(state: &AppState, value: &str, max_age_s: i64) -> Result<HeaderValue, ApiError> {
    let secure = if state.config.server.tls_cert.is_some() || state.config.server.behind_tls_proxy {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .map_err(|e| ApiError::Internal(format!("cookie: {e}")))
}

fn describe(p: &vigie_auth::Principal) -> Value {
    let permissions: Vec<String> = Permission::ALL
        .into_iter()
        .filter(|perm| allows(p.role, *perm))
        .map(|perm| format!("{perm:?}"))
        .collect();
    let mut v = json!({
        "user": p.user,
        "role": p.role,
        "scope": p.scope,
        "permissions": permissions,
    });
    match &p.via {
        Via::Session { csrf_token } => {
            v["via"] = "session".into();
            v["csrf_token"] = csrf_token.as_str().into();
        }
        Via::Token { id } => {
            v["via"] = "token".into();
            v["token_id"] = id.as_str().into();
        }
    }
    v
}

pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let LoginBody { username, password } = body;
    let user: String = username.trim().to_lowercase().chars().take(64).collect();
    // 1. The throttle, before any hashing: a locked key (or as many attempts in flight as
    //    could lock it) is refused at once, and not journaled one attempt at a time.
    let attempt = match state.auth.begin_login(&username, ip) {
        Ok(a) => a,
        Err((e, why)) => {
            tracing::debug!(target: "vigie_access", user_len = user.len(), ?ip, ?why, "login refused before hashing");
            return Err(e.into());
        }
    };
    // 2. A hashing slot (bounded; 503 at once when the queue is full). Dropping `attempt` on
    //    the way out releases its reservations.
    let permit = state.limits.login.enter().await?;
    // 3. The hash, off the executor.
    let result = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        attempt.finish(&password)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    match result {
        Ok(session) => {
            journal::access(
                &state,
                Event::LoginSucceeded {
                    user: &session.principal.user,
                    ip,
                },
            )
            .await?;
            let mut resp = Json(describe(&session.principal)).into_response();
            resp.headers_mut().insert(
                header::SET_COOKIE,
                cookie(&state, &session.id, session.max_age_s)?,
            );
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(resp)
        }
        Err((e, why)) => {
            // The failure is answered even if the journal cannot take it.
            let _ = journal::access(
                &state,
                Event::LoginFailed {
                    user: &user,
                    ip,
                    why,
                },
            )
            .await;
            Err(e.into())
        }
    }
}

pub async fn whoami(p: Principal) -> Json<Value> {
    Json(describe(&p))
}

pub async fn logout(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(id) = session_cookie(&headers) else {
        return Err(ApiError::BadRequest(
            "no session to end: API tokens are revoked with DELETE /api/v1/tokens/{id}".into(),
        ));
    };
    state.auth.logout(id)?;
    journal::access(&state, Event::Logout { user: &p.user }).await?;
    let mut resp = Json(json!({ "logged_out": p.user })).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie(&state, "", 0)?);
    Ok(resp)
}

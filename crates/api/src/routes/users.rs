//! User and API-token administration (admin only, see [`crate::access::rule`]), within the
//! caller's scope: an admin grants only scopes inside its own, sees and manages only users whose
//! scope is inside its own (so only an admin of all communes manages unrestricted users), and
//! only an admin of all communes sets another admin's password or creates tokens for it
//! ([`vigie_auth::Principal::may_manage`] and friends). Out of scope → 403.
//!
//! * `GET /api/v1/users` → `{users: [{name, role, scope, disabled, created, updated}]}`
//! * `POST /api/v1/users` `{name, role, password, communes: "all" | [ids], cameras?: [ids]}` → 201
//! * `PATCH /api/v1/users/{name}` `{role?, password?, disabled?, communes?, cameras?: "all" | [ids]}`
//! * `DELETE /api/v1/users/{name}` → `{deleted: {…}}` (its sessions and tokens with it; not
//!   oneself, not another admin unless unrestricted, not the last enabled admin)
//! * `GET /api/v1/tokens` → `{tokens: [{id, user, label, created, expires, last_used, expired}]}`
//! * `POST /api/v1/tokens` `{user, name, expires_days?}` → 201 `{token, id, …}` (the token is
//!   shown this once)
//! * `DELETE /api/v1/tokens/{id}` → `{revoked: {…}}`

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use vigie_auth::{Communes, Role, Scope, UserInfo, UserUpdate};

use crate::access::Principal;
use crate::journal::{self, Event};
use crate::{ApiError, AppState};

/// `"all"` or a list of ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum AllOrList {
    Word(String),
    List(Vec<String>),
}

impl AllOrList {
    fn into_list(self, what: &str) -> Result<Option<Vec<String>>, ApiError> {
        match self {
            AllOrList::Word(w) if w == "all" => Ok(None),
            AllOrList::Word(w) => Err(ApiError::BadRequest(format!(
                "`{what}` must be \"all\" or a list of ids, not {w:?}"
            ))),
            AllOrList::List(l) => Ok(Some(l)),
        }
    }
}

fn parse_role(s: &str) -> Result<Role, ApiError> {
    s.parse().map_err(ApiError::BadRequest)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUserBody {
    name: String,
    role: String,
    password: String,
    communes: AllOrList,
    cameras: Option<AllOrList>,
}

/// The user `name`, if the caller may manage it (404 unknown, 403 outside its scope).
fn managed_user(state: &AppState, p: &Principal, name: &str) -> Result<UserInfo, ApiError> {
    let user = state
        .auth
        .user(name)?
        .ok_or_else(|| ApiError::NotFound(format!("no user {name:?}")))?;
    p.may_manage(&user).map_err(ApiError::Forbidden)?;
    Ok(user)
}

pub async fn list(State(state): State<AppState>, p: Principal) -> Result<Json<Value>, ApiError> {
    let users: Vec<UserInfo> = state
        .auth
        .users()?
        .into_iter()
        .filter(|u| p.may_manage(u).is_ok())
        .collect();
    Ok(Json(json!({ "users": users })))
}

pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    body: Result<Json<NewUserBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body?;
    let role = parse_role(&b.role)?;
    let scope = Scope {
        communes: match b.communes.into_list("communes")? {
            None => Communes::All,
            Some(l) => Communes::List(l),
        },
        cameras: match b.cameras {
            None => None,
            Some(c) => c.into_list("cameras")?,
        },
    };
    scope.validate(&state.config)?;
    p.may_grant(&scope).map_err(ApiError::Forbidden)?;
    let auth = state.auth.clone();
    let name = b.name.clone();
    let info = tokio::task::spawn_blocking(move || auth.add_user(&name, role, scope, &b.password))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    journal::access(
        &state,
        Event::UserCreated {
            by: &p.actor(),
            user: &info.name,
            role,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchUserBody {
    role: Option<String>,
    password: Option<String>,
    disabled: Option<bool>,
    communes: Option<AllOrList>,
    cameras: Option<AllOrList>,
}

pub async fn patch(
    State(state): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
    body: Result<Json<PatchUserBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(b) = body?;
    let current = managed_user(&state, &p, &name)?;
    let mut changed = Vec::new();
    let mut update = UserUpdate::default();
    if let Some(r) = &b.role {
        update.role = Some(parse_role(r)?);
        changed.push("role");
    }
    if b.communes.is_some() || b.cameras.is_some() {
        let mut scope = current.scope.clone();
        if let Some(c) = b.communes {
            scope.communes = match c.into_list("communes")? {
                None => Communes::All,
                Some(l) => Communes::List(l),
            };
            changed.push("communes");
        }
        if let Some(c) = b.cameras {
            scope.cameras = c.into_list("cameras")?;
            changed.push("cameras");
        }
        scope.validate(&state.config)?;
        p.may_grant(&scope).map_err(ApiError::Forbidden)?;
        update.scope = Some(scope);
    }
    if let Some(d) = b.disabled {
        update.disabled = Some(d);
        changed.push(if d { "disabled" } else { "enabled" });
    }
    if b.password.is_some() {
        p.may_set_credentials(&current)
            .map_err(ApiError::Forbidden)?;
        update.password = b.password;
        changed.push("password");
    }
    if changed.is_empty() {
        return Err(ApiError::BadRequest("nothing to change".into()));
    }
    let auth = state.auth.clone();
    let info = tokio::task::spawn_blocking(move || auth.update_user(&name, update))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    journal::access(
        &state,
        Event::UserChanged {
            by: &p.actor(),
            user: &info.name,
            what: changed.join(","),
        },
    )
    .await?;
    Ok(Json(
        serde_json::to_value(info).map_err(|e| ApiError::Internal(e.to_string()))?,
    ))
}

pub async fn delete_user(
    State(state): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let current = managed_user(&state, &p, &name)?;
    // Deleting an account removes its credentials: the same rule as setting them.
    p.may_set_credentials(&current)
        .map_err(ApiError::Forbidden)?;
    if current.name == p.user {
        return Err(ApiError::BadRequest(
            "an admin cannot delete its own account (another admin can)".into(),
        ));
    }
    let auth = state.auth.clone();
    let info = tokio::task::spawn_blocking(move || auth.delete_user(&name))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    journal::access(
        &state,
        Event::UserChanged {
            by: &p.actor(),
            user: &info.name,
            what: "deleted".into(),
        },
    )
    .await?;
    Ok(Json(json!({ "deleted": info })))
}

pub async fn tokens(State(state): State<AppState>, p: Principal) -> Result<Json<Value>, ApiError> {
    let visible: Vec<String> = state
        .auth
        .users()?
        .into_iter()
        .filter(|u| p.may_manage(u).is_ok())
        .map(|u| u.name)
        .collect();
    let tokens: Vec<_> = state
        .auth
        .tokens()?
        .into_iter()
        .filter(|t| visible.contains(&t.user))
        .collect();
    Ok(Json(json!({ "tokens": tokens })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTokenBody {
    user: String,
    name: String,
    expires_days: Option<u32>,
}

pub async fn create_token(
    State(state): State<AppState>,
    p: Principal,
    body: Result<Json<NewTokenBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body?;
    let target = managed_user(&state, &p, &b.user)?;
    p.may_set_credentials(&target)
        .map_err(ApiError::Forbidden)?;
    let t = state.auth.create_token(&b.user, &b.name, b.expires_days)?;
    journal::access(
        &state,
        Event::TokenCreated {
            by: &p.actor(),
            user: &t.info.user,
            id: &t.info.id,
        },
    )
    .await?;
    let mut v = serde_json::to_value(&t.info).map_err(|e| ApiError::Internal(e.to_string()))?;
    v["token"] = t.token.into();
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(v),
    )
        .into_response())
}

pub async fn revoke_token(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let owner = state
        .auth
        .tokens()?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no API token {id:?}")))?
        .user;
    // A token whose user no longer exists can be revoked by an unrestricted admin only.
    match state.auth.user(&owner)? {
        Some(u) => p.may_manage(&u).map_err(ApiError::Forbidden)?,
        None if p.scope.is_unrestricted() => {}
        None => {
            return Err(ApiError::Forbidden(format!(
                "token {id:?} belongs to no current user: only an admin of all communes may revoke it"
            )));
        }
    }
    let info = state.auth.revoke_token(&id)?;
    journal::access(
        &state,
        Event::TokenRevoked {
            by: &p.actor(),
            id: &info.id,
        },
    )
    .await?;
    Ok(Json(json!({ "revoked": info })))
}

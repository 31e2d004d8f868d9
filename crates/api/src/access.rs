//! Authentication and rights for every route, in one place.
//!
//! [`enforce`] is a route layer: it runs for every matched route, finds the rule of the route
//! in [`rule`] (read from the one route table, where each operation carries its [`Rule`]), authenticates the request (bearer API
//! token, else the `vigie_session` cookie), checks CSRF on cookie-authenticated mutations, the
//! role's permission, the camera scope for `/api/v1/cameras/{cam}/…` routes, and the `Origin`
//! of WebSocket upgrades. Handlers then get the caller with the [`Principal`] extractor.
//!
//! Answers: 401 without valid credentials; 403 when the role lacks the permission, the camera
//! is outside the user's scope, the CSRF header is missing, or a WebSocket comes from another
//! origin; 404 for an unknown camera (whatever the scope).
//!
//! Routes missing from the table are admin-only (fail closed). The credential itself is also
//! made available ([`Credential`]) so that a long-lived connection can check it again.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{
    ConnectInfo, FromRequestParts, MatchedPath, OptionalFromRequestParts, Path, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use vigie_auth::{Permission, Via};

use crate::{ApiError, AppState};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "vigie_session";
/// Header carrying the CSRF token on cookie-authenticated mutations.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Who may call a route. Each operation of the route table (`crate::routes`) carries one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone (credentials, if valid, are still made available to the handler).
    Public,
    /// Any authenticated user.
    Authenticated,
    /// Users whose role has the permission. Lists answered by such routes hold only what lies
    /// inside the caller's scope (cameras, users, holds, exports, journal entries).
    Perm(Permission),
    /// Users whose role has the permission and whose scope covers the `{cam}` of the path.
    CameraPerm(Permission),
    /// Users whose role has the permission; the handler then checks the scope of what the
    /// request names or touches (the camera of the body, of the hold or export; the user or
    /// scope being managed) and answers 403 outside it.
    ResourcePerm(Permission),
    /// `/metrics`: loopback clients when no `server.metrics_token` is set; the metrics token as
    /// a bearer; or a user with `ViewStatus` (then only the series of cameras in its scope).
    Metrics,
}

impl Rule {
    /// The permission the rule needs, if any.
    pub fn permission(self) -> Option<Permission> {
        match self {
            Rule::Perm(p) | Rule::CameraPerm(p) | Rule::ResourcePerm(p) => Some(p),
            Rule::Metrics => Some(Permission::ViewStatus),
            Rule::Public | Rule::Authenticated => None,
        }
    }
}

/// One row of the rights table: an HTTP method on a route template and who may call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    pub method: Method,
    pub path: &'static str,
    pub rule: Rule,
}

/// The rights table, read from the one route table (the same list builds the router and the
/// OpenAPI description): every documented operation with its [`Rule`]. The permission matrix
/// test walks it.
pub fn rights_table() -> &'static [RouteRule] {
    static TABLE: std::sync::OnceLock<Vec<RouteRule>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut out = Vec::new();
        for d in crate::routes::routes() {
            for o in &d.ops {
                if let Ok(method) = Method::from_bytes(o.method.to_ascii_uppercase().as_bytes()) {
                    out.push(RouteRule {
                        method,
                        path: d.path,
                        rule: o.rule,
                    });
                }
            }
        }
        out
    })
}

/// The rule of a method on a route template. HEAD follows GET. A method the route does not
/// serve (axum answers 405) is admin-only; a route missing from the table too (fail closed).
pub fn rule(method: &Method, route: &str) -> Rule {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    let mut known_path = false;
    for r in rights_table() {
        if r.path == route {
            known_path = true;
            if r.method == method {
                return r.rule;
            }
        }
    }
    if !known_path {
        tracing::warn!(%method, route, "route missing from the rights table: admin only");
    }
    Rule::Perm(Permission::ManageUsers)
}

/// The authenticated caller of a request. Extracting it from a request without valid
/// credentials answers 401.
#[derive(Debug, Clone)]
pub struct Principal(pub vigie_auth::Principal);

impl std::ops::Deref for Principal {
    type Target = vigie_auth::Principal;
    fn deref(&self) -> &vigie_auth::Principal {
        &self.0
    }
}

impl Principal {
    /// Checks a permission on an optional camera (by id); unknown camera → 404, out of scope
    /// or not allowed → 403.
    pub fn require(
        &self,
        state: &AppState,
        perm: Permission,
        camera: Option<&str>,
    ) -> Result<(), ApiError> {
        let cam = match camera {
            Some(id) => {
                let c = state
                    .config
                    .camera(id)
                    .ok_or_else(|| ApiError::NotFound(format!("no camera {id:?}")))?;
                Some((c.id.as_str(), c.commune.as_str()))
            }
            None => None,
        };
        if !vigie_auth::allows(self.role, perm) {
            return Err(ApiError::Forbidden(format!(
                "role {} may not do this ({perm:?})",
                self.role
            )));
        }
        if !self.can(perm, cam) {
            return Err(ApiError::Forbidden(format!(
                "camera {:?} is outside the scope of user {:?}",
                camera.unwrap_or_default(),
                self.user
            )));
        }
        Ok(())
    }

    /// A name for the journal: the user, plus the token id for API tokens.
    pub fn actor(&self) -> String {
        match &self.via {
            Via::Token { id } => format!("{} (token {id})", self.user),
            Via::Session { .. } => self.user.clone(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthenticated("authentication required".into()))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        _: &S,
    ) -> Result<Option<Self>, std::convert::Infallible> {
        Ok(parts.extensions.get::<Principal>().cloned())
    }
}

/// The client's IP address (from the TCP connection; not from forwarded headers).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// The value of the session cookie, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

enum Credentials<'a> {
    None,
    Bearer(&'a str),
    Cookie(&'a str),
}

fn credentials(headers: &HeaderMap) -> Result<Credentials<'_>, ApiError> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v
            .to_str()
            .map_err(|_| ApiError::Unauthenticated("malformed Authorization header".into()))?;
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::Unauthenticated(
                    "the Authorization header must be `Bearer <API token>`".into(),
                )
            })?;
        return Ok(Credentials::Bearer(token.trim()));
    }
    Ok(match session_cookie(headers) {
        Some(c) => Credentials::Cookie(c),
        None => Credentials::None,
    })
}

/// Authenticates from the headers: `Ok(None)` when no credentials are given.
fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(vigie_auth::Principal, vigie_auth::Credential)>, ApiError> {
    match credentials(headers)? {
        Credentials::None => Ok(None),
        Credentials::Bearer(t) => Ok(Some((
            state.auth.token(t)?,
            vigie_auth::Credential::Token(t.to_owned()),
        ))),
        // The UI's periodic refreshes say so and do not keep an idle session alive.
        Credentials::Cookie(c) => Ok(Some((
            state.auth.session_use(c, !is_background(headers))?,
            vigie_auth::Credential::Session(c.to_owned()),
        ))),
    }
}

/// The credential of an authenticated request (session id or API token), for connections that
/// outlive the request and must stop when it no longer stands (the live WebSocket checks it
/// every second with [`vigie_auth::AuthStore::recheck`]). Present whenever [`Principal`] is.
#[derive(Debug, Clone)]
pub struct Credential(pub vigie_auth::Credential);

impl<S: Send + Sync> FromRequestParts<S> for Credential {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Credential>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthenticated("authentication required".into()))
    }
}

/// Header the UI sets on requests it makes on its own (timers), not on user actions.
pub const BACKGROUND_HEADER: &str = "x-vigie-background";

fn is_background(headers: &HeaderMap) -> bool {
    headers
        .get(BACKGROUND_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1")
}

fn is_mutation(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Cookie-authenticated mutations must echo the session's CSRF token.
fn check_csrf(
    p: &vigie_auth::Principal,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Via::Session { csrf_token } = &p.via else {
        return Ok(());
    };
    if !is_mutation(method) {
        return Ok(());
    }
    match headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        Some(v) if vigie_auth::constant_time_eq(v.trim(), csrf_token) => Ok(()),
        _ => Err(ApiError::CsrfMissing),
    }
}

/// A WebSocket upgrade must come from the page's own origin (cross-site WebSocket hijacking):
/// when an `Origin` header is present, its host and port must equal `Host`.
fn check_ws_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_ws = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !is_ws {
        return Ok(());
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(()); // not a browser: nothing to hijack
    };
    let origin = origin.to_str().unwrap_or("");
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (authority, host) {
        (Some(a), Some(h)) if a.eq_ignore_ascii_case(h) => Ok(()),
        _ => Err(ApiError::Forbidden(format!(
            "WebSocket from origin {origin:?} refused: it must match the host"
        ))),
    }
}

fn metrics_token_given(state: &AppState, headers: &HeaderMap) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (&state.config.server.metrics_token, given) {
        (Some(expected), Some(t)) => vigie_auth::constant_time_eq(t.trim(), expected.expose()),
        _ => false,
    }
}

fn metrics_allowed(
    state: &AppState,
    parts: &Parts,
    principal: Option<&vigie_auth::Principal>,
) -> bool {
    if principal.is_some_and(|p| p.can(Permission::ViewStatus, None)) {
        return true;
    }
    match &state.config.server.metrics_token {
        Some(_) => metrics_token_given(state, &parts.headers),
        None => parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .is_some_and(|c| c.0.ip().is_loopback()),
    }
}

/// The route layer (see the module docs).
pub async fn enforce(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match check(&state, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn check(state: &AppState, req: Request) -> Result<Request, ApiError> {
    let (mut parts, body) = req.into_parts();
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let rule = rule(&parts.method, &route);
    // The metrics token is not a user token: don't try it as one.
    let authenticated = if rule == Rule::Metrics && metrics_token_given(state, &parts.headers) {
        Ok(None)
    } else {
        authenticate(state, &parts.headers)
    };
    let (authenticated, credential) = match authenticated {
        Ok(Some((p, c))) => (Ok(Some(p)), Some(c)),
        Ok(None) => (Ok(None), None),
        Err(e) => (Err(e), None),
    };
    let principal = match rule {
        Rule::Public => authenticated.ok().flatten(),
        Rule::Metrics => {
            let p = authenticated.ok().flatten();
            if !metrics_allowed(state, &parts, p.as_ref()) {
                return Err(ApiError::Unauthenticated(
                    "/metrics needs the metrics token, a user with status rights, or a local client".into(),
                ));
            }
            p
        }
        Rule::Authenticated | Rule::Perm(_) | Rule::CameraPerm(_) | Rule::ResourcePerm(_) => {
            let p = authenticated?.ok_or_else(|| {
                ApiError::Unauthenticated(
                    "authentication required: log in (POST /api/v1/session) or send `Authorization: Bearer <API token>`".into(),
                )
            })?;
            check_csrf(&p, &parts.method, &parts.headers)?;
            let p = Principal(p);
            match rule {
                Rule::Perm(perm) | Rule::ResourcePerm(perm) => p.require(state, perm, None)?,
                Rule::CameraPerm(perm) => {
                    let Path(params) = <Path<HashMap<String, String>> as FromRequestParts<
                        AppState,
                    >>::from_request_parts(&mut parts, state)
                    .await
                    .map_err(|e| ApiError::BadRequest(e.body_text()))?;
                    let cam = params.get("cam").ok_or_else(|| {
                        ApiError::Internal(format!("route {route} has no {{cam}}"))
                    })?;
                    p.require(state, perm, Some(cam))?;
                }
                _ => {}
            }
            Some(p.0)
        }
    };
    check_ws_origin(&parts.headers)?;
    if let Some(p) = principal {
        parts.extensions.insert(Principal(p));
        if let Some(c) = credential {
            parts.extensions.insert(Credential(c));
        }
    }
    Ok(Request::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn every_footage_route_needs_a_footage_permission() {
        for (route, perm) in [
            (
                "/api/v1/cameras/{cam}/streams/{stream}/recordings",
                Permission::Playback,
            ),
            (
                "/api/v1/cameras/{cam}/streams/{stream}/video.mp4",
                Permission::Playback,
            ),
            (
                "/api/v1/cameras/{cam}/streams/{stream}/live",
                Permission::Live,
            ),
            (
                "/api/v1/cameras/{cam}/streams/{stream}/snapshot.jpg",
                Permission::Still,
            ),
        ] {
            assert_eq!(rule(&Method::GET, route), Rule::CameraPerm(perm), "{route}");
        }
        assert_eq!(rule(&Method::POST, "/api/v1/session"), Rule::Public);
        assert_eq!(
            rule(&Method::DELETE, "/api/v1/session"),
            Rule::Authenticated
        );
        assert_eq!(
            rule(&Method::GET, "/api/v1/holds"),
            Rule::Perm(Permission::ViewEvidence)
        );
        assert_eq!(
            rule(&Method::POST, "/api/v1/holds"),
            Rule::ResourcePerm(Permission::Hold)
        );
        assert_eq!(
            rule(
                &Method::HEAD,
                "/api/v1/cameras/{cam}/streams/{stream}/video.mp4"
            ),
            Rule::CameraPerm(Permission::Playback)
        );
        assert_eq!(
            rule(&Method::GET, "/api/v1/something-new"),
            Rule::Perm(Permission::ManageUsers)
        );
        // A method the route does not serve: admin only (axum then answers 405).
        assert_eq!(rule(&Method::PUT, "/"), Rule::Perm(Permission::ManageUsers));
        // Every user-management operation needs ManageUsers; only the login is public
        // among the mutations.
        for r in rights_table() {
            if r.path.starts_with("/api/v1/users") || r.path.starts_with("/api/v1/tokens") {
                assert_eq!(r.rule.permission(), Some(Permission::ManageUsers), "{r:?}");
            }
            if r.method != Method::GET && r.rule == Rule::Public {
                assert_eq!((r.method.as_str(), r.path), ("POST", "/api/v1/session"));
            }
        }
    }

    #[test]
    fn cookies_and_origins() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; vigie_session=xyz; c=d"),
        );
        assert_eq!(session_cookie(&h), Some("xyz"));
        h.insert(header::COOKIE, HeaderValue::from_static("vigie_session="));
        assert_eq!(session_cookie(&h), None);

        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(check_ws_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(check_ws_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(check_ws_origin(&h).is_err());
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(check_ws_origin(&h).is_err());
    }
}

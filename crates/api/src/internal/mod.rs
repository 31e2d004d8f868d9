//! The internal routes between cluster nodes, `/internal/v1/…`: what a node needs from another
//! to serve a camera it does not hold (its spans of a stream, its playback entries for a range,
//! byte ranges of its segment files). Refused to anyone but a cluster node: every request must
//! be signed with the cluster secret ([`auth`]); user credentials are not accepted there.
//!
//! A user's rights are checked once, at the node the user called; the internal request carries
//! the identity ([`auth::CarriedIdentity`]) and the remote node journals accesses to footage
//! under it, naming the calling node.
//!
//! Does not own: the handlers' bodies beyond parameter checks (the local store answers), the
//! HTTP client side (the binary).

pub mod auth;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, AppState};

pub use auth::{CarriedIdentity, ClusterKey, InternalAuth, Refusal, Verified};

/// Prefix of every internal route.
pub const PREFIX: &str = "/internal/v1";

/// The identity a node carries to another for the user it serves (a new request id).
pub fn identity_of(who: &crate::access::Principal) -> CarriedIdentity {
    CarriedIdentity {
        user: who.user.clone(),
        role: who.role,
        scope: who.scope.clone(),
        actor: who.actor(),
        request_id: hex::encode(rand::random::<[u8; 8]>()),
    }
}

/// The route layer of the internal routes: verifies the signature (401 otherwise, 503 when the
/// replay cache is full) and hands the [`Verified`] sender and identity to the handler.
pub async fn enforce(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(auth) = state.internal.clone() else {
        tracing::warn!(path = %req.uri().path(), "internal request refused: no cluster secret here");
        return ApiError::Forbidden(Refusal::NotConfigured.to_string()).into_response();
    };
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let now_s = state
        .clock
        .now()
        .0
        .div_euclid(vigie_core::TIME_UNITS_PER_SEC);
    let headers = req.headers().clone();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    match auth.verify(req.method().as_str(), &pq, &header, now_s) {
        Ok(v) => {
            req.extensions_mut().insert(v);
            next.run(req).await
        }
        Err(Refusal::CacheFull) => ApiError::Busy {
            message: Refusal::CacheFull.to_string(),
            retry_after_s: 1,
        }
        .into_response(),
        Err(e) => {
            let peer = req
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip().to_string());
            tracing::warn!(path = %req.uri().path(), ?peer, reason = %e, "internal request refused");
            ApiError::Unauthenticated(format!("internal request refused: {e}")).into_response()
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Verified {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Verified>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthenticated("not a signed internal request".into()))
    }
}

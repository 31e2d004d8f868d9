//! Route table. Each submodule owns one resource.

mod audit;
mod cameras;
mod exports;
mod health;
mod holds;
mod index;
mod live;
mod metrics;
mod recordings;
mod session;
mod snapshot;
mod users;
mod video;

use axum::Router;
use axum::routing::get;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index::page))
        .route("/api/v1/health", get(health::health))
        .route("/api/v1/cameras", get(cameras::list))
        .route(
            "/api/v1/cameras/{cam}/streams/{stream}/recordings",
            get(recordings::list),
        )
        .route(
            "/api/v1/cameras/{cam}/streams/{stream}/live",
            get(live::live),
        )
        .route(
            "/api/v1/cameras/{cam}/streams/{stream}/snapshot.jpg",
            get(snapshot::snapshot),
        )
        .route("/live.html", get(index::live_page))
        .route("/assets/{file}", get(index::asset))
        .route(
            "/api/v1/cameras/{cam}/streams/{stream}/video.mp4",
            get(video::video),
        )
        .route("/metrics", get(metrics::metrics))
        // Users and rights. Every route's rights are in crate::access::rule (add new ones there).
        .route(
            "/api/v1/session",
            get(session::whoami)
                .post(session::login)
                .delete(session::logout),
        )
        .route("/api/v1/users", get(users::list).post(users::create))
        .route("/api/v1/users/{name}", axum::routing::patch(users::patch))
        .route(
            "/api/v1/tokens",
            get(users::tokens).post(users::create_token),
        )
        .route(
            "/api/v1/tokens/{id}",
            axum::routing::delete(users::revoke_token),
        )
        // Legal holds and the access journal.
        .route("/api/v1/holds", get(holds::list).post(holds::place))
        .route("/api/v1/holds/{id}", get(holds::get_one))
        .route(
            "/api/v1/holds/{id}/release",
            axum::routing::post(holds::release),
        )
        // Evidence exports and the installation's public signing key.
        .route("/api/v1/exports", get(exports::list).post(exports::create))
        .route("/api/v1/exports/{id}", get(exports::get_one))
        .route("/api/v1/exports/{id}/package", get(exports::package))
        .route("/api/v1/signing-key", get(exports::signing_key))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/audit/verify", get(audit::verify))
        .route("/api/v1/register.csv", get(audit::register))
        .fallback(not_found)
}

async fn not_found(uri: axum::http::Uri) -> crate::ApiError {
    crate::ApiError::NotFound(format!("no route for {}", uri.path()))
}

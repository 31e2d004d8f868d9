//! Route table. Each submodule owns one resource.

mod cameras;
mod health;
mod index;
mod metrics;
mod recordings;

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
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
}

async fn not_found(uri: axum::http::Uri) -> crate::ApiError {
    crate::ApiError::NotFound(format!("no route for {}", uri.path()))
}

//! The HTTP API of Vigie (axum), versioned under `/api/v1`, plus `/metrics` and the static page.
//!
//! Owns: routing, request parsing (times, ids), the JSON shapes of responses, and the mapping of
//! every error to an HTTP status ([`error`], the one place where that happens).
//!
//! Does not own: recording (store), camera sessions (ingest) or process wiring (the binary). The
//! state it serves from is [`AppState`], built by the binary.

pub mod access;
#[cfg(feature = "gst")]
pub mod burnin;
pub mod csvsafe;
pub mod error;
pub mod exports;
#[cfg(feature = "gst")]
pub mod gst_elements;
pub mod journal;
pub mod live;
mod params;
pub mod playback;
pub mod quality;
mod routes;
pub mod server;
#[cfg(feature = "gst")]
pub mod still;

use std::sync::Arc;

use axum::Router;
use vigie_core::config::Config;
use vigie_core::{Clock, StreamKey};
use vigie_ingest::StatusCell;
use vigie_store::Store;

pub use error::ApiError;

/// One recorded stream as the API sees it: its key and its live status.
#[derive(Clone)]
pub struct StreamEntry {
    pub key: StreamKey,
    pub status: Arc<StatusCell>,
    /// Live view: fed by ingest through a [`live::TeeSink`], read by WebSocket viewers.
    pub live: Arc<live::LiveHub>,
    /// Quality-floor compliance, updated by the binary's quality monitor.
    pub compliance: Arc<quality::ComplianceCell>,
}

/// Everything the handlers read. Cheap to clone (shared behind `Arc`).
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub streams: Arc<Vec<StreamEntry>>,
    pub clock: Arc<dyn Clock>,
    /// The access journal: every access to footage and every change goes through
    /// [`journal::record`].
    pub journal: vigie_audit::Journal,
    /// Users, sessions, API tokens and login throttling; every route is checked by
    /// [`access::enforce`].
    pub auth: vigie_auth::AuthStore,
    /// Evidence export jobs and the installation signing key.
    pub exports: exports::Exports,
}

impl AppState {
    pub(crate) fn stream(&self, camera: &str, stream: &str) -> Result<&StreamEntry, ApiError> {
        if self.config.camera(camera).is_none() {
            return Err(ApiError::NotFound(format!("no camera {camera:?}")));
        }
        self.streams
            .iter()
            .find(|s| s.key.camera == camera && s.key.stream == stream)
            .ok_or_else(|| {
                ApiError::NotFound(format!("camera {camera:?} has no stream {stream:?}"))
            })
    }
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    routes::router()
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::enforce,
        ))
        .with_state(state)
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

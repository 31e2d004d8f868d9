//! The HTTP API of Vigie (axum), versioned under `/api/v1`, plus `/metrics` and the static page.
//!
//! Owns: routing, access control on every route ([`access`]), request parsing (times, ids), the
//! representations of responses (JSON, CSV, the live WebSocket, streamed bodies), journaling
//! each access to footage ([`journal`]), the HTTP server and its bounds ([`server`],
//! [`limits`]), and the mapping of every error to an HTTP status ([`error`], the one place
//! where that happens, including the errors of the services).
//!
//! Does not own: recording (store), camera sessions (ingest), process wiring (the binary), nor
//! any feature behind the routes. Footage, live frames, stills and export jobs are reached
//! through the service traits of `vigie-service` held by [`AppState`] (built by the binary);
//! the store is used directly only for node-local administration (legal holds, storage
//! health and statistics).

pub mod access;
pub mod csvsafe;
pub mod error;
pub mod internal;
pub mod journal;
pub mod limits;
pub mod masks;
mod params;
mod routes;
pub mod server;

/// The GStreamer elements stills and burned-in copies need (moved to `vigie-decode`).
#[cfg(feature = "gst")]
pub use vigie_decode::gst_elements;

use std::sync::Arc;

use axum::Router;
use vigie_core::config::Config;
use vigie_core::{Clock, StreamKey};
use vigie_ingest::StatusCell;
use vigie_quality::ComplianceCell;
use vigie_service::{ExportJobs, Footage, LiveSource, Stills};
use vigie_store::Store;

pub use error::ApiError;

/// One recorded stream as the API sees it: its key and its live status.
#[derive(Clone)]
pub struct StreamEntry {
    pub key: StreamKey,
    pub status: Arc<StatusCell>,
    /// Quality-floor compliance, updated by [`vigie_quality::monitor`].
    pub compliance: Arc<ComplianceCell>,
}

/// Everything the handlers read. Cheap to clone (shared behind `Arc`).
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// Node-local storage administration: legal holds, storage health and statistics.
    pub store: Store,
    /// Recorded footage (recordings listing, video.mp4, export checks).
    pub footage: Arc<dyn Footage>,
    /// Live frames (the live view, the latest still).
    pub live: Arc<dyn LiveSource>,
    /// JPEG stills (snapshot.jpg).
    pub stills: Arc<dyn Stills>,
    pub streams: Arc<Vec<StreamEntry>>,
    pub clock: Arc<dyn Clock>,
    /// The access journal: every access to footage and every change goes through
    /// [`journal::record`].
    pub journal: vigie_audit::Journal,
    /// Users, sessions, API tokens and login throttling; every route is checked by
    /// [`access::enforce`].
    pub auth: vigie_auth::AuthStore,
    /// Evidence export jobs and the installation signing key.
    pub exports: Arc<dyn ExportJobs>,
    /// Process-wide bounds (login hashing gate).
    pub limits: Arc<limits::Limits>,
    /// The cluster this node belongs to; `None`: a single node.
    pub cluster: Option<Arc<dyn ClusterInfo>>,
    /// PTZ of the ONVIF cameras (operator lock included).
    pub ptz: Arc<dyn vigie_service::ptz::PtzControl>,
    /// Camera events received since start, per (camera, kind), for `/metrics`.
    pub camera_events: Arc<CameraEventCounts>,
    /// The H.264 fallback (`live?transcode=h264`, `video.mp4?…&transcode=h264`).
    pub transcodes: Arc<dyn vigie_service::Transcodes>,
    /// Checks the signatures of the internal routes (`/internal/v1/…`); `None` (a single node,
    /// or a cluster node without a secret): every internal request is refused.
    pub internal: Option<Arc<internal::InternalAuth>>,
    /// Whether each camera's privacy masks are confirmed on the camera.
    pub masks: Arc<masks::CameraMasks>,
}

/// What the API shows of the cluster (implemented by the binary over `vigie-cluster`).
pub trait ClusterInfo: Send + Sync {
    /// This node's name.
    fn node(&self) -> &str;
    /// The node the assignment gives `camera` to (`None`: unassigned).
    fn recorder_of(&self, camera: &str) -> Option<String>;
    /// True when this node records `camera` now (also during a handover).
    fn records_here(&self, camera: &str) -> bool;
    /// The `vigie_cluster_*` series (Prometheus text).
    fn metrics_text(&self) -> String;
    /// The nodes recording `camera` now, from their published status (sorted; two during a
    /// handover or a partition).
    fn recording_on(&self, camera: &str) -> Vec<String>;
    /// The status of `camera`'s streams as published by the node recording it (`None`: nobody
    /// records it): (node, stream name → status JSON).
    fn published_status(
        &self,
        camera: &str,
    ) -> Option<(
        String,
        std::collections::BTreeMap<String, serde_json::Value>,
    )>;
    /// The footage of `key` in `[start, end)` held by the other nodes that hold any of the
    /// camera (their coverage in etcd), asked over the internal routes on behalf of `who`;
    /// those that cannot be asked (down, no answer) are [`NodeFootage::Unavailable`].
    fn remote_spans(
        &self,
        key: &StreamKey,
        start: vigie_core::Time90k,
        end: vigie_core::Time90k,
        who: internal::CarriedIdentity,
    ) -> vigie_service::BoxFuture<'_, Vec<NodeFootage>>;
    /// The other nodes that keep an access journal (every live member, and every node whose
    /// journal head is anchored in etcd, `j/<node>`), and whether each can be asked now
    /// (a live registration). Used to merge `audit` and the register across nodes.
    fn journal_nodes(&self) -> Vec<JournalNode> {
        Vec::new()
    }
    /// A signed `GET` of `path_and_query` (an internal route) on `node`, on behalf of `who`:
    /// its JSON answer, or why it could not be had (bounded in time).
    fn internal_json(
        &self,
        node: &str,
        path_and_query: String,
        who: internal::CarriedIdentity,
    ) -> vigie_service::BoxFuture<'_, Result<serde_json::Value, String>> {
        let _ = (node, path_and_query, who);
        Box::pin(async { Err("not a cluster node".to_owned()) })
    }
    /// A live view of `key` for one viewer (rights already checked here) that follows the
    /// camera to whichever node records it: frames relayed from the recorder's internal live
    /// route (or from this node's own hub when it records the camera), into a hub of its own.
    /// `None`: serve the local hub (no relay in this build).
    fn live_relay(&self, key: &StreamKey, who: internal::CarriedIdentity) -> Option<LiveRelay> {
        let _ = (key, who);
        None
    }
    /// A JPEG still of `key` at `at` (default: the latest picture) rendered by `node` (over its
    /// internal route, on behalf of `who`, who is journaled there).
    fn remote_still(
        &self,
        node: &str,
        key: &StreamKey,
        at: Option<vigie_core::Time90k>,
        who: internal::CarriedIdentity,
    ) -> vigie_service::BoxFuture<'_, Result<Vec<u8>, ApiError>> {
        let _ = (key, at, who);
        let node = node.to_owned();
        Box::pin(async move {
            Err(ApiError::Unavailable(format!(
                "this node cannot ask node {node} for a still"
            )))
        })
    }
}

/// Another node's access journal (see [`ClusterInfo::journal_nodes`]).
#[derive(Clone, Debug, PartialEq)]
pub struct JournalNode {
    pub node: String,
    /// Registered under a live lease (it can be asked).
    pub up: bool,
}

/// One viewer's live view relayed from the camera's recorder ([`ClusterInfo::live_relay`]).
pub struct LiveRelay {
    /// The viewer subscribes to this hub (fed by the relay only).
    pub hub: Arc<vigie_live::LiveHub>,
    /// Keeps the relay running: dropping it (the viewer left) stops it.
    pub guard: Box<dyn std::any::Any + Send + Sync>,
}

/// One other node's footage of a stream in a window (see [`ClusterInfo::remote_spans`]).
#[derive(Clone, Debug, PartialEq)]
pub enum NodeFootage {
    /// The node answered with its spans.
    Spans {
        node: String,
        spans: Vec<vigie_store::Span>,
    },
    /// The node holds footage of the camera in `[start, end)` (from its coverage) but could not
    /// be asked.
    Unavailable {
        node: String,
        start: vigie_core::Time90k,
        end: vigie_core::Time90k,
        /// The node was recording the camera at its last report: its footage goes on after
        /// `end`, up to the next copy another node holds, at most until this instant.
        open_until: Option<vigie_core::Time90k>,
        reason: String,
    },
}

/// What a node that could not be asked may hold: the node, the start, the furthest end
/// (`open_until` when it was recording at its last report) and why it could not be asked.
pub type UnavailablePart = (String, vigie_core::Time90k, vigie_core::Time90k, String);

impl NodeFootage {
    /// The part a node that could not be asked may hold; `None` for a node that answered.
    pub fn unavailable_part(self) -> Option<UnavailablePart> {
        match self {
            NodeFootage::Spans { .. } => None,
            NodeFootage::Unavailable {
                node,
                start,
                end,
                open_until,
                reason,
            } => Some((node, start, open_until.unwrap_or(end).max(end), reason)),
        }
    }
}

/// Counts of camera events (ONVIF alarms) received since start, per (camera, kind), and the
/// state of each camera's event subscription (shown in `GET /api/v1/cameras`).
#[derive(Debug, Default)]
pub struct CameraEventCounts {
    counts: std::sync::Mutex<std::collections::BTreeMap<(String, String), u64>>,
    /// camera → (subscribed, last error)
    status: std::sync::Mutex<std::collections::BTreeMap<String, (bool, Option<String>)>>,
    /// (camera, stream) → footage filled from the camera's own recording (ONVIF Profile G).
    edge: std::sync::Mutex<std::collections::BTreeMap<(String, String), EdgeFillCounts>>,
}

/// Totals of the gaps of one stream filled from its camera's recording since start.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EdgeFillCounts {
    /// Fills that stored footage.
    pub fills: u64,
    /// Fills that failed (camera refused, nothing held, replay error).
    pub failures: u64,
    pub segments: u64,
    pub frames: u64,
    pub seconds: f64,
}

impl CameraEventCounts {
    pub fn add(&self, camera: &str, kind: &str) {
        let mut g = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *g.entry((camera.to_owned(), kind.to_owned())).or_default() += 1;
    }
    pub fn snapshot(&self) -> Vec<((String, String), u64)> {
        let g = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        g.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
    /// The subscription of `camera` is up (the last error is kept for the record).
    pub fn subscribed(&self, camera: &str) {
        let mut g = self.status.lock().unwrap_or_else(|p| p.into_inner());
        g.entry(camera.to_owned()).or_default().0 = true;
    }
    /// The subscription of `camera` failed with `error` (no credentials in it).
    pub fn failed(&self, camera: &str, error: String) {
        let mut g = self.status.lock().unwrap_or_else(|p| p.into_inner());
        *g.entry(camera.to_owned()).or_default() = (false, Some(error));
    }
    /// Counts a gap of `camera`/`stream` filled from the camera's recording.
    pub fn edge_filled(
        &self,
        camera: &str,
        stream: &str,
        segments: u64,
        frames: u64,
        seconds: f64,
    ) {
        let mut g = self.edge.lock().unwrap_or_else(|p| p.into_inner());
        let c = g.entry((camera.to_owned(), stream.to_owned())).or_default();
        c.fills += 1;
        c.segments += segments;
        c.frames += frames;
        c.seconds += seconds;
    }
    /// Counts a failed fill.
    pub fn edge_failed(&self, camera: &str, stream: &str) {
        let mut g = self.edge.lock().unwrap_or_else(|p| p.into_inner());
        g.entry((camera.to_owned(), stream.to_owned()))
            .or_default()
            .failures += 1;
    }
    /// Edge fill totals per (camera, stream).
    pub fn edge_snapshot(&self) -> Vec<((String, String), EdgeFillCounts)> {
        let g = self.edge.lock().unwrap_or_else(|p| p.into_inner());
        g.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
    /// (subscribed, last error) of `camera`'s event subscription, if it has one.
    pub fn status(&self, camera: &str) -> Option<(bool, Option<String>)> {
        let g = self.status.lock().unwrap_or_else(|p| p.into_inner());
        g.get(camera).cloned()
    }
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

/// The whole HTTP surface: the routes behind [`access::enforce`], the request timeout of
/// non-streaming routes, and the security headers on every response.
pub fn router(state: AppState) -> Router {
    let timeout = std::time::Duration::from_secs(u64::from(state.config.server.request_timeout_s));
    routes::router()
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::enforce,
        ))
        // Internal routes: signed by a cluster node, never a user's credentials.
        .merge(
            routes::internal_router().route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                internal::enforce,
            )),
        )
        .route_layer(axum::middleware::from_fn(move |req, next| {
            request_timeout(timeout, req, next)
        }))
        .with_state(state)
        .layer(axum::middleware::from_fn(security_headers))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// Routes without the request timeout: answers that are streams meant to last (video, live
/// view, package download), and the auditors' long reads over the whole journal (its
/// verification, the legal register), which may legitimately take longer on a large journal.
/// The connection's idle timeout still applies to all of them.
pub fn is_streaming_route(route: &str) -> bool {
    matches!(
        route,
        "/api/v1/cameras/{cam}/streams/{stream}/video.mp4"
            | "/api/v1/cameras/{cam}/streams/{stream}/live"
            | "/api/v1/exports/{id}/package"
            | "/api/v1/audit/verify"
            | "/api/v1/register.csv"
            | "/internal/v1/cameras/{cam}/streams/{stream}/segments/{id}"
            | "/internal/v1/cameras/{cam}/streams/{stream}/live"
    )
}

/// Answers 503 when a non-streaming request (reading its body included) takes longer than
/// `server.request_timeout_s` to produce its response head. Work already handed to a blocking
/// thread finishes in the background; the client is not kept waiting.
async fn request_timeout(
    timeout: std::time::Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let streaming = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .is_some_and(|m| is_streaming_route(m.as_str()));
    if streaming {
        return next.run(req).await;
    }
    let path = req.uri().path().to_owned();
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(%path, timeout_s = timeout.as_secs(), "request timed out");
            ApiError::Busy {
                message: format!(
                    "the request took longer than {} s (server.request_timeout_s)",
                    timeout.as_secs()
                ),
                retry_after_s: 5,
            }
            .into_response()
        }
    }
}

/// The Content-Security-Policy of every response. The UI is same-origin modules and a
/// stylesheet, with no inline script or style; video plays from same-origin URLs or Media
/// Source blobs; the live view is a same-origin WebSocket.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
     connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'self'";

/// Security headers on every response (pages, API, errors): CSP, no framing, no MIME sniffing,
/// no referrer to other sites.
async fn security_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

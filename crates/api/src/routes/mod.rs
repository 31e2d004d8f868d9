//! Route table. Each submodule owns one resource.

mod audit;
mod audit_cluster;
mod cameras;
mod events;
mod exports;
mod health;
mod holds;
mod index;
mod internal;
mod internal_journal;
mod internal_live;
mod live;
mod live_transcode;
mod metrics;
mod ptz;
mod recordings;
mod session;
mod snapshot;
mod users;
mod video;
mod video_transcode;

use axum::Router;
use axum::routing::{MethodRouter, delete, get, patch, post};
use serde_json::{Value, json};

use crate::AppState;
use crate::access::Rule;
use vigie_auth::Permission::*;

/// One documented operation of a route.
pub struct Op {
    pub method: &'static str,
    /// Who may call it (checked by [`crate::access::enforce`] before the handler runs).
    pub rule: Rule,
    pub summary: &'static str,
    /// Query parameters (all optional strings unless the summary says otherwise).
    pub query: &'static [&'static str],
    /// Status codes it may answer.
    pub responses: &'static [u16],
}

/// A route: its path template, its documented operations, and the handlers. The router and
/// the OpenAPI description are both built from [`routes`], so they cannot drift apart; the
/// e2e test `openapi_matches_the_router` checks every documented method is served and every
/// other method answers 405.
pub struct RouteDef {
    pub path: &'static str,
    pub ops: Vec<Op>,
    pub make: fn() -> MethodRouter<AppState>,
}

const fn op(
    method: &'static str,
    rule: Rule,
    summary: &'static str,
    query: &'static [&'static str],
    responses: &'static [u16],
) -> Op {
    Op {
        method,
        rule,
        summary,
        query,
        responses,
    }
}

pub fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef {
            path: "/",
            ops: vec![op(
                "get",
                Rule::Public,
                "The operator UI (public, no footage).",
                &[],
                &[200],
            )],
            make: || get(index::page),
        },
        RouteDef {
            path: "/live.html",
            ops: vec![op(
                "get",
                Rule::Public,
                "A minimal live player page (public).",
                &["camera", "stream"],
                &[200],
            )],
            make: || get(index::live_page),
        },
        RouteDef {
            path: "/assets/{file}",
            ops: vec![op(
                "get",
                Rule::Public,
                "UI assets (public).",
                &[],
                &[200, 404],
            )],
            make: || get(index::asset),
        },
        RouteDef {
            path: "/metrics",
            ops: vec![op(
                "get",
                Rule::Metrics,
                "Prometheus metrics (loopback, metrics token or a user with status rights).",
                &[],
                &[200, 401],
            )],
            make: || get(metrics::metrics),
        },
        RouteDef {
            path: "/api/v1/health",
            ops: vec![op(
                "get",
                Rule::Public,
                "Liveness and readiness; details for authenticated users.",
                &[],
                &[200, 503],
            )],
            make: || get(health::health),
        },
        RouteDef {
            path: "/api/v1/session",
            ops: vec![
                op(
                    "get",
                    Rule::Authenticated,
                    "Who am I (user, role, scope, permissions, CSRF token).",
                    &[],
                    &[200, 401],
                ),
                op(
                    "post",
                    Rule::Public,
                    "Log in with {username, password}; sets the session cookie.",
                    &[],
                    &[200, 400, 401, 403, 429, 503],
                ),
                op(
                    "delete",
                    Rule::Authenticated,
                    "Log out.",
                    &[],
                    &[200, 401, 403],
                ),
            ],
            make: || {
                get(session::whoami)
                    .post(session::login)
                    .delete(session::logout)
            },
        },
        RouteDef {
            path: "/api/v1/cameras",
            ops: vec![op(
                "get",
                Rule::Perm(ViewStatus),
                "Cameras in the caller's scope, streams, live status and quality compliance; in a cluster, the node recording each camera (`recorder`, `recorded_here`).",
                &[],
                &[200, 401, 403],
            )],
            make: || get(cameras::list),
        },
        RouteDef {
            path: "/api/v1/cameras/{cam}/streams/{stream}/recordings",
            ops: vec![op(
                "get",
                Rule::CameraPerm(Playback),
                "Spans of continuous recording and gaps in [start, end) (RFC 3339); segments=1 lists segments.",
                &["start", "end", "segments"],
                &[200, 400, 401, 403, 404],
            )],
            make: || get(recordings::list),
        },
        RouteDef {
            path: "/api/v1/cameras/{cam}/streams/{stream}/video.mp4",
            ops: vec![op(
                "get",
                Rule::CameraPerm(Playback),
                "Seekable progressive MP4 of a range (Range, HEAD, ETag, If-None-Match, If-Range); gaps=skip; ts=1 adds a wall-clock subtitle track; transcode=h264: a streamed fragmented H.264 MP4 (the fallback; no Range, 503 when busy).",
                &["start", "end", "duration", "gaps", "ts", "transcode"],
                &[200, 206, 304, 400, 401, 403, 404, 409, 416, 501, 503],
            )],
            make: || get(video::video),
        },
        RouteDef {
            path: "/api/v1/cameras/{cam}/streams/{stream}/live",
            ops: vec![op(
                "get",
                Rule::CameraPerm(Live),
                "Live view: WebSocket upgrade, fMP4 init then media segments (see docs/API.md); transcode=h264: the H.264 fallback (close code 4503 when busy); in a cluster relayed from the camera's recorder, following it when it moves (close code 4502: no node gives the view).",
                &["transcode"],
                &[101, 400, 401, 403, 404],
            )],
            make: || get(live::live),
        },
        RouteDef {
            path: "/api/v1/cameras/{cam}/streams/{stream}/snapshot.jpg",
            ops: vec![op(
                "get",
                Rule::CameraPerm(Still),
                "JPEG still at `at` (default latest); 501 without the gst feature; in a cluster rendered by the node holding the picture (502: that node is down).",
                &["at"],
                &[200, 400, 401, 403, 404, 501, 502],
            )],
            make: || get(snapshot::snapshot),
        },
        RouteDef {
            path: "/api/v1/cameras/{cam}/events",
            ops: vec![op(
                "get",
                Rule::CameraPerm(Playback),
                "The camera's own events (ONVIF motion, tampering, video-loss, digital-input) in [start, end), oldest first; type=K filters a kind; stream=S (default the first stream).",
                &["start", "end", "type", "stream"],
                &[200, 400, 401, 403, 404],
            )],
            make: || get(events::list),
        },
        RouteDef {
            path: "/api/v1/cameras/{cam}/ptz",
            ops: vec![op(
                "get",
                Rule::CameraPerm(Ptz),
                "PTZ position, motion, and who holds the camera's PTZ (ONVIF cameras).",
                &[],
                &[200, 401, 403, 404, 502],
            )],
            make: || get(ptz::status),
        },
        RouteDef {
            path: "/api/v1/cameras/{cam}/ptz/move",
            ops: vec![op(
                "post",
                Rule::CameraPerm(Ptz),
                "Continuous move {pan, tilt, zoom} (velocities in [-1, 1]; stops by itself after 10 s); takes the camera's PTZ lock (30 s after the last command); 409 names the holder; journaled.",
                &[],
                &[200, 400, 401, 403, 404, 409, 502],
            )],
            make: || post(ptz::move_),
        },
        RouteDef {
            path: "/api/v1/cameras/{cam}/ptz/stop",
            ops: vec![op(
                "post",
                Rule::CameraPerm(Ptz),
                "Stop moving (lock and journal as for move).",
                &[],
                &[200, 401, 403, 404, 409, 502],
            )],
            make: || post(ptz::stop),
        },
        RouteDef {
            path: "/api/v1/cameras/{cam}/ptz/lock",
            ops: vec![op(
                "delete",
                Rule::CameraPerm(Ptz),
                "Hand over the camera's PTZ before the lock expires (only the holder's call has an effect).",
                &[],
                &[204, 401, 403, 404],
            )],
            make: || delete(ptz::release),
        },
        RouteDef {
            path: "/api/v1/cameras/{cam}/ptz/presets",
            ops: vec![op(
                "get",
                Rule::CameraPerm(Ptz),
                "The camera's PTZ presets [{token, name}].",
                &[],
                &[200, 401, 403, 404, 502],
            )],
            make: || get(ptz::presets),
        },
        RouteDef {
            path: "/api/v1/cameras/{cam}/ptz/presets/{preset}",
            ops: vec![
                op(
                    "post",
                    Rule::CameraPerm(Ptz),
                    "Go to the preset with this token (lock and journal as for move).",
                    &[],
                    &[200, 400, 401, 403, 404, 409, 502],
                ),
                op(
                    "put",
                    Rule::CameraPerm(Ptz),
                    "Store the current position as a preset with this name; answers its token (lock and journal as for move).",
                    &[],
                    &[201, 400, 401, 403, 404, 409, 502],
                ),
            ],
            make: || post(ptz::goto_preset).put(ptz::set_preset),
        },
        RouteDef {
            path: "/api/v1/users",
            ops: vec![
                op(
                    "get",
                    Rule::Perm(ManageUsers),
                    "Users (admin).",
                    &[],
                    &[200, 401, 403],
                ),
                op(
                    "post",
                    Rule::ResourcePerm(ManageUsers),
                    "Create a user (admin).",
                    &[],
                    &[201, 400, 401, 403, 409],
                ),
            ],
            make: || get(users::list).post(users::create),
        },
        RouteDef {
            path: "/api/v1/users/{name}",
            ops: vec![
                op(
                    "patch",
                    Rule::ResourcePerm(ManageUsers),
                    "Change a user's role, scope, password or disabled flag (admin).",
                    &[],
                    &[200, 400, 401, 403, 404],
                ),
                op(
                    "delete",
                    Rule::ResourcePerm(ManageUsers),
                    "Delete a user with its sessions and API tokens (admin).",
                    &[],
                    &[200, 400, 401, 403, 404],
                ),
            ],
            make: || patch(users::patch).delete(users::delete_user),
        },
        RouteDef {
            path: "/api/v1/tokens",
            ops: vec![
                op(
                    "get",
                    Rule::Perm(ManageUsers),
                    "API tokens (admin).",
                    &[],
                    &[200, 401, 403],
                ),
                op(
                    "post",
                    Rule::ResourcePerm(ManageUsers),
                    "Create an API token, shown once (admin).",
                    &[],
                    &[201, 400, 401, 403, 404],
                ),
            ],
            make: || get(users::tokens).post(users::create_token),
        },
        RouteDef {
            path: "/api/v1/tokens/{id}",
            ops: vec![op(
                "delete",
                Rule::ResourcePerm(ManageUsers),
                "Revoke an API token (admin).",
                &[],
                &[200, 401, 403, 404],
            )],
            make: || delete(users::revoke_token),
        },
        RouteDef {
            path: "/api/v1/holds",
            ops: vec![
                op(
                    "get",
                    Rule::Perm(ViewEvidence),
                    "Legal holds in the caller's scope.",
                    &[],
                    &[200, 401, 403],
                ),
                op(
                    "post",
                    Rule::ResourcePerm(Hold),
                    "Place a legal hold {camera, stream, start, end, procedure, reason}.",
                    &[],
                    &[201, 400, 401, 403, 404],
                ),
            ],
            make: || get(holds::list).post(holds::place),
        },
        RouteDef {
            path: "/api/v1/holds/{id}",
            ops: vec![op(
                "get",
                Rule::ResourcePerm(ViewEvidence),
                "One legal hold.",
                &[],
                &[200, 401, 403, 404],
            )],
            make: || get(holds::get_one),
        },
        RouteDef {
            path: "/api/v1/holds/{id}/release",
            ops: vec![op(
                "post",
                Rule::ResourcePerm(Hold),
                "Release a hold {reason}.",
                &[],
                &[200, 400, 401, 403, 404, 409],
            )],
            make: || post(holds::release),
        },
        RouteDef {
            path: "/api/v1/exports",
            ops: vec![
                op(
                    "get",
                    Rule::Perm(ViewEvidence),
                    "Evidence export jobs in the caller's scope.",
                    &[],
                    &[200, 401, 403],
                ),
                op(
                    "post",
                    Rule::ResourcePerm(Export),
                    "Create an evidence export {camera, stream, start, end, reason, procedure, requester, ts?, stills?, burn_in?}; several cameras in one package: streams: [{camera, stream}, …] instead of camera and stream.",
                    &[],
                    &[200, 202, 400, 401, 403, 404, 409, 429, 501, 507],
                ),
            ],
            make: || get(exports::list).post(exports::create),
        },
        RouteDef {
            path: "/api/v1/exports/{id}",
            ops: vec![op(
                "get",
                Rule::ResourcePerm(ViewEvidence),
                "An export job: status, progress, hashes.",
                &[],
                &[200, 401, 403, 404],
            )],
            make: || get(exports::get_one),
        },
        RouteDef {
            path: "/api/v1/exports/{id}/package",
            ops: vec![op(
                "get",
                Rule::ResourcePerm(Export),
                "The export package (zip); journaled. 410 once deleted (hold released or lifetime over).",
                &[],
                &[200, 401, 403, 404, 409, 410],
            )],
            make: || get(exports::package),
        },
        RouteDef {
            path: "/api/v1/signing-key",
            ops: vec![op(
                "get",
                Rule::Public,
                "The installation's Ed25519 public key (public).",
                &[],
                &[200],
            )],
            make: || get(exports::signing_key),
        },
        RouteDef {
            path: "/api/v1/audit",
            ops: vec![op(
                "get",
                Rule::Perm(Audit),
                "The access journal with filters; format=csv. In a cluster: every node's journal merged by time, each entry with its `node`, `next_after` a cursor (node:seq,…), nodes that cannot be asked in `unavailable_nodes`; local=1: this node's only.",
                &[
                    "start", "end", "actor", "camera", "action", "after", "limit", "format",
                    "local",
                ],
                &[200, 400, 401, 403],
            )],
            make: || get(audit::list),
        },
        RouteDef {
            path: "/api/v1/audit/verify",
            ops: vec![op(
                "get",
                Rule::Perm(Audit),
                "Verify the journal's hash chain.",
                &[],
                &[200, 401, 403],
            )],
            make: || get(audit::verify),
        },
        RouteDef {
            path: "/api/v1/register.csv",
            ops: vec![op(
                "get",
                Rule::Perm(Audit),
                "The legal register (CSV). In a cluster: every node's journal facts merged by time, a `node` column, a `journal-unavailable` row per node that cannot be asked; local=1: this node's only.",
                &["start", "end", "local"],
                &[200, 400, 401, 403],
            )],
            make: || get(audit::register),
        },
        RouteDef {
            path: "/api/v1/openapi.json",
            ops: vec![op(
                "get",
                Rule::Public,
                "This OpenAPI description (public).",
                &[],
                &[200],
            )],
            make: || get(openapi_json),
        },
    ]
}

/// The internal routes between cluster nodes (not in the public route table nor the OpenAPI
/// description; signed requests only, see [`crate::internal`]).
pub fn internal_router() -> Router<AppState> {
    Router::new()
        .route("/internal/v1/whoami", get(internal::whoami))
        .route(
            "/internal/v1/cameras/{cam}/streams/{stream}/spans",
            get(internal::spans),
        )
        .route(
            "/internal/v1/cameras/{cam}/streams/{stream}/plan",
            get(internal::plan),
        )
        .route(
            "/internal/v1/cameras/{cam}/streams/{stream}/segments/{id}",
            get(internal::segment),
        )
        .route(
            "/internal/v1/journal/entries",
            get(internal_journal::entries),
        )
        .route("/internal/v1/journal/verify", get(internal_journal::verify))
        .route(
            "/internal/v1/register/recordings",
            get(internal_journal::register_recordings),
        )
        .route(
            "/internal/v1/cameras/{cam}/streams/{stream}/segments/{id}/tables",
            get(internal::tables),
        )
        .route(
            "/internal/v1/cameras/{cam}/streams/{stream}/live",
            get(internal_live::live),
        )
        .route(
            "/internal/v1/cameras/{cam}/streams/{stream}/still.jpg",
            get(internal_live::still),
        )
}

pub fn router() -> Router<AppState> {
    // Every operation carries its rights (`Op::rule`), enforced by crate::access::enforce.
    routes()
        .into_iter()
        .fold(Router::new(), |r, d| r.route(d.path, (d.make)()))
        .fallback(not_found)
}

/// The OpenAPI 3.1 description of every route, built from [`routes`].
pub fn openapi() -> Value {
    let mut paths = serde_json::Map::new();
    for d in routes() {
        let path_params: Vec<Value> = d
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let mut item = serde_json::Map::new();
        for o in &d.ops {
            let mut params = path_params.clone();
            params.extend(o.query.iter().map(|q| json!({ "name": q, "in": "query", "required": false, "schema": { "type": "string" } })));
            let responses: serde_json::Map<String, Value> = o
                .responses
                .iter()
                .map(|c| (c.to_string(), json!({ "description": status_text(*c) })))
                .collect();
            item.insert(
                o.method.to_owned(),
                json!({ "summary": o.summary, "parameters": params, "responses": responses,
                        "x-vigie-rule": format!("{:?}", o.rule) }),
            );
        }
        paths.insert(d.path.to_owned(), Value::Object(item));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Vigie API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Video-protection recorder. Authentication: session cookie `vigie_session` (+ `X-CSRF-Token` on mutations) or `Authorization: Bearer <API token>`. Errors: `{\"error\": {\"code\", \"message\"}}`. Times: RFC 3339.",
        },
        "components": { "securitySchemes": {
            "bearer": { "type": "http", "scheme": "bearer" },
            "cookie": { "type": "apiKey", "in": "cookie", "name": "vigie_session" },
        }},
        "security": [ { "bearer": [] }, { "cookie": [] } ],
        "paths": paths,
    })
}

fn status_text(code: u16) -> &'static str {
    axum::http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

async fn openapi_json() -> axum::Json<Value> {
    axum::Json(openapi())
}

async fn not_found(uri: axum::http::Uri) -> crate::ApiError {
    crate::ApiError::NotFound(format!("no route for {}", uri.path()))
}

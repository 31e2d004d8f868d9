//! API errors and their one mapping to HTTP status codes and the JSON error body
//! `{"error": {"code": "...", "message": "..."}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or inconsistent request parameters.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// Storage or a dependency is not ready.
    #[error("{0}")]
    Unavailable(String),
    /// A feature this build lacks (e.g. the `gst` cargo feature for stills).
    #[error("{0}")]
    NotImplemented(String),
    #[error(transparent)]
    Store(#[from] vigie_store::StoreError),
    /// The request conflicts with what is recorded (gaps, a codec change): the body lists the
    /// spans (`[{start, end, duration_s}]`) the client can ask for instead.
    #[error("{message}")]
    Conflict {
        message: String,
        spans: Vec<vigie_store::Span>,
    },
    /// A `Range` header no byte of the representation satisfies (answered with
    /// `Content-Range: bytes */<total_len>`).
    #[error("range not satisfiable: the representation is {total_len} bytes long")]
    RangeNotSatisfiable { total_len: u64 },
    /// No (valid) session cookie or bearer token.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but the role or the scope does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// A mutating request authenticated by the session cookie without a matching
    /// `X-CSRF-Token` header.
    #[error(
        "missing or wrong X-CSRF-Token header (required on POST, PUT, PATCH and DELETE with a session cookie)"
    )]
    CsrfMissing,
    /// Login throttling: answered with `Retry-After: <retry_after_s>`.
    #[error("too many failed logins: try again in {retry_after_s} s")]
    TooManyRequests { retry_after_s: u64 },
    /// A bound on what one user or the installation may consume is reached (export jobs):
    /// answered 429 with `Retry-After`.
    #[error("{message}")]
    LimitReached { message: String, retry_after_s: u64 },
    /// The server is saturated for a moment (login hashing queue full, a request that took
    /// longer than `server.request_timeout_s`): answered 503 with `Retry-After`.
    #[error("{message}")]
    Busy { message: String, retry_after_s: u64 },
    /// Not enough disk (export quota, free-space floor): answered 507.
    #[error("{0}")]
    InsufficientStorage(String),
    /// It existed and was deleted (an export package past its lifetime): answered 410.
    #[error("{0}")]
    Gone(String),
    /// The thing to create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Internal(String),
    /// Another operator steers this camera (answered 409 with `holder` and `expires_in_s`).
    #[error("{message}")]
    PtzLocked {
        message: String,
        holder: String,
        expires_in_s: u64,
    },
    /// A camera (ONVIF) failed or refused: answered 502 with its reason.
    #[error("{0}")]
    BadGateway(String),
    /// Another cluster node that holds what was asked is down or did not answer: 502
    /// `node_unavailable` with the node and why.
    #[error("{0}")]
    NodeUnavailable(String),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, "not_implemented"),
            ApiError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
            ApiError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            ApiError::RangeNotSatisfiable { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable")
            }
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::CsrfMissing => (StatusCode::FORBIDDEN, "csrf"),
            ApiError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
            }
            ApiError::LimitReached { .. } => (StatusCode::TOO_MANY_REQUESTS, "limit_reached"),
            ApiError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            ApiError::InsufficientStorage(_) => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
            }
            ApiError::Gone(_) => (StatusCode::GONE, "gone"),
            ApiError::AlreadyExists(_) => (StatusCode::CONFLICT, "already_exists"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::PtzLocked { .. } => (StatusCode::CONFLICT, "ptz_locked"),
            ApiError::BadGateway(_) => (StatusCode::BAD_GATEWAY, "camera_error"),
            ApiError::NodeUnavailable(_) => (StatusCode::BAD_GATEWAY, "node_unavailable"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        // Saturation answers come in floods: not one error log line each.
        if status.is_server_error() && !matches!(self, ApiError::Busy { .. }) {
            tracing::error!(error = %self, "request failed");
        }
        let mut body =
            serde_json::json!({ "error": { "code": code, "message": self.to_string() } });
        if let ApiError::Conflict { spans, .. } = &self {
            body["error"]["spans"] = spans
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "start": s.start.to_rfc3339(),
                        "end": s.end.to_rfc3339(),
                        "duration_s": (s.end - s.start).as_secs_f64(),
                    })
                })
                .collect();
        }
        if let ApiError::PtzLocked {
            holder,
            expires_in_s,
            ..
        } = &self
        {
            body["error"]["holder"] = holder.as_str().into();
            body["error"]["expires_in_s"] = (*expires_in_s).into();
        }
        let mut resp = (status, Json(body)).into_response();
        if let ApiError::RangeNotSatisfiable { total_len } = &self
            && let Ok(v) = axum::http::HeaderValue::from_str(&format!("bytes */{total_len}"))
        {
            resp.headers_mut()
                .insert(axum::http::header::CONTENT_RANGE, v);
        }
        if let ApiError::TooManyRequests { retry_after_s }
        | ApiError::LimitReached { retry_after_s, .. }
        | ApiError::Busy { retry_after_s, .. } = &self
        {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*retry_after_s),
            );
        }
        resp
    }
}

/// PTZ errors: 404 no ONVIF/PTZ, 409 held by another operator, 502 the camera failed.
impl From<vigie_service::ptz::PtzError> for ApiError {
    fn from(e: vigie_service::ptz::PtzError) -> Self {
        use vigie_service::ptz::PtzError as P;
        match e {
            P::NotOnvif(_) | P::NoPtz(_) => ApiError::NotFound(e.to_string()),
            P::Locked {
                ref holder,
                expires_in_s,
                ..
            } => ApiError::PtzLocked {
                holder: holder.clone(),
                expires_in_s,
                message: e.to_string(),
            },
            P::Camera(m) => ApiError::BadGateway(m),
        }
    }
}

/// Turns axum's query-string rejections into our JSON 400.
impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

/// Users-and-rights errors. Messages never carry secrets.
impl From<vigie_auth::AuthError> for ApiError {
    fn from(e: vigie_auth::AuthError) -> Self {
        use vigie_auth::AuthError as A;
        match e {
            A::InvalidCredentials | A::Unauthenticated(_) => {
                ApiError::Unauthenticated(e.to_string())
            }
            A::Disabled(_) => ApiError::Forbidden(e.to_string()),
            A::Locked { retry_after_s } => ApiError::TooManyRequests { retry_after_s },
            A::UserExists(_) => ApiError::AlreadyExists(e.to_string()),
            A::NoSuchUser(_) | A::NoSuchToken(_) => ApiError::NotFound(e.to_string()),
            A::WeakPassword(_) | A::Invalid(_) => ApiError::BadRequest(e.to_string()),
            A::InUse { .. } | A::Storage(_) | A::Hash(_) => ApiError::Internal(e.to_string()),
        }
    }
}

/// Malformed JSON bodies are a 400 with serde's message.
impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

/// Export admission and registration errors: 429 over a job limit, 409 while an identical
/// request is being created, 507 over the quota or the free-space floor.
impl From<vigie_export::jobs::JobError> for ApiError {
    fn from(e: vigie_export::jobs::JobError) -> Self {
        use vigie_export::jobs::JobError as J;
        match e {
            J::LimitReached {
                message,
                retry_after_s,
            } => ApiError::LimitReached {
                message,
                retry_after_s,
            },
            J::Conflict(message) => ApiError::Conflict {
                message,
                spans: Vec::new(),
            },
            J::InsufficientStorage(m) => ApiError::InsufficientStorage(m),
            J::Internal(m) => ApiError::Internal(m),
        }
    }
}

/// Footage errors: 404 nothing recorded, 409 gaps or a codec change (with the spans).
impl From<vigie_footage::FootageError> for ApiError {
    fn from(e: vigie_footage::FootageError) -> Self {
        use vigie_footage::FootageError as F;
        match e {
            F::NoRecording { .. } => ApiError::NotFound(e.to_string()),
            F::Conflict { message, spans } => ApiError::Conflict { message, spans },
            F::Store(e) => ApiError::Store(e),
        }
    }
}

/// H.264 fallback refusals: 503 + `Retry-After` when the bound is reached, 503 when turned
/// off, 501 when built without GStreamer.
impl From<vigie_service::TranscodeError> for ApiError {
    fn from(e: vigie_service::TranscodeError) -> Self {
        use vigie_service::TranscodeError as T;
        match e {
            T::Busy { .. } => ApiError::Busy {
                message: e.to_string(),
                retry_after_s: 10,
            },
            T::Off => ApiError::Unavailable(e.to_string()),
            T::NotBuilt => ApiError::NotImplemented(e.to_string()),
        }
    }
}

impl ApiError {
    /// The WebSocket close code of an error met after the upgrade (the live view): 4000 + the
    /// HTTP status it would have had (4503 busy or off, 4501 not built).
    pub fn close_code(&self) -> u16 {
        4000 + self.status_and_code().0.as_u16()
    }
}

/// Still errors: 404 nothing recorded, 501 not built, 503 anything else (with why).
impl From<vigie_decode::StillError> for ApiError {
    fn from(e: vigie_decode::StillError) -> Self {
        use vigie_decode::StillError as S;
        match e {
            S::NoRecording(m) => ApiError::NotFound(m),
            S::Store(e) => ApiError::Store(e),
            S::Unavailable(m) => ApiError::Unavailable(m),
            S::NotBuilt => ApiError::NotImplemented(S::NotBuilt.to_string()),
            other => ApiError::Unavailable(format!("cannot make the still: {other}")),
        }
    }
}

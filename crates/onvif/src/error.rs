//! The client's error: what failed (the ONVIF operation), at which device (its URL, never a
//! password), and why, in words an operator can act on.

use std::time::Duration;

/// Errors of the ONVIF client. Every variant names the operation (`op`, e.g. `GetProfiles`) and
/// the device or service URL (`url`, credentials never included).
#[derive(Debug, thiserror::Error)]
pub enum OnvifError {
    /// The configured URL is not an `http://` URL.
    #[error("ONVIF device URL {url:?} is invalid: {reason}")]
    BadUrl {
        /// The URL as given (with any user-info removed).
        url: String,
        /// Why.
        reason: String,
    },
    /// The camera refused the credentials (SOAP fault `ter:NotAuthorized`, HTTP 401), or the
    /// operation needs credentials and none were configured.
    #[error("ONVIF {op} at {url}: the camera refused the credentials ({reason})")]
    Auth {
        /// Operation.
        op: &'static str,
        /// Service URL.
        url: String,
        /// The camera's reason.
        reason: String,
    },
    /// The camera answered with a SOAP fault.
    #[error("ONVIF {op} at {url}: the camera answered a SOAP fault {code}: {reason}")]
    Fault {
        /// Operation.
        op: &'static str,
        /// Service URL.
        url: String,
        /// The fault's code and subcodes, e.g. `Sender/ter:InvalidArgVal/ter:NoProfile`.
        code: String,
        /// The fault's reason text.
        reason: String,
    },
    /// No complete answer within the timeout.
    #[error("ONVIF {op} at {url}: no answer within {timeout:?}")]
    Timeout {
        /// Operation.
        op: &'static str,
        /// Service URL.
        url: String,
        /// The timeout.
        timeout: Duration,
    },
    /// Connection refused, reset, DNS failure…
    #[error("ONVIF {op} at {url}: {reason}")]
    Http {
        /// Operation.
        op: &'static str,
        /// Service URL.
        url: String,
        /// The transport error, in words (never carries credentials: they travel in the body).
        reason: String,
    },
    /// An HTTP error status without a SOAP fault.
    #[error("ONVIF {op} at {url}: HTTP status {status}")]
    Status {
        /// Operation.
        op: &'static str,
        /// Service URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The answer is not XML, not a SOAP envelope, or lacks what the operation returns.
    #[error("ONVIF {op} at {url}: malformed answer: {reason}")]
    Malformed {
        /// Operation.
        op: &'static str,
        /// Service URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The answer exceeds the client's bound.
    #[error("ONVIF {op} at {url}: answer larger than {limit_bytes} bytes")]
    TooLarge {
        /// Operation.
        op: &'static str,
        /// Service URL.
        url: String,
        /// The bound.
        limit_bytes: usize,
    },
    /// The device does not offer the service the operation belongs to (PTZ, events).
    #[error("ONVIF {op} at {url}: the camera does not offer the {service} service")]
    NotSupported {
        /// Operation.
        op: &'static str,
        /// Device URL.
        url: String,
        /// `PTZ`, `events`.
        service: &'static str,
    },
    /// WS-Discovery could not open or use its UDP socket.
    #[error("WS-Discovery: {0}")]
    Discovery(#[source] std::io::Error),
}

impl OnvifError {
    /// True for refused credentials.
    pub fn is_auth(&self) -> bool {
        matches!(self, OnvifError::Auth { .. })
    }
}

/// Result alias.
pub type Result<T, E = OnvifError> = std::result::Result<T, E>;

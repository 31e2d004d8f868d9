//! Classification and sanitizing of session errors.
//!
//! retina's [`retina::Error`] is opaque apart from its text and `status_code()`. Errors tied to one
//! packet or frame (depacketization: "FU-A has start bit unset", loss, an odd RTCP packet) are
//! [`Severity::Packet`]: the session keeps reading. Errors of the connection or the RTSP
//! conversation (read/write errors, EOF, framing, error responses, timeouts) are
//! [`Severity::Session`]: the session ends and is retried with backoff.
//!
//! Every text that leaves this crate (status, logs, `SessionEnded` reasons) goes through
//! [`sanitize`], which strips URL userinfo and any occurrence of the password.

use crate::params::first_line;

/// Whether an error ends the session.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Drop the packet/frame, keep the session.
    Packet,
    /// End the session, reconnect after backoff.
    Session,
}

/// Why a session ended or could not start. Its `Display` is short, single-line and safe to show.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("authentication failed ({status}): check the stream's username and password")]
    Auth { status: u16 },
    #[error("server answered {status} to {what}: {detail}")]
    Status {
        status: u16,
        what: String,
        detail: String,
    },
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("timed out after {secs} s during {phase}")]
    Timeout { secs: u32, phase: &'static str },
    #[error("stall: no frame for {0} s")]
    Stall(u32),
    #[error("server closed the session")]
    Eof,
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    Media(String),
    /// The camera broke a per-stream bound ([`crate::guard::StreamLimits`]).
    #[error("camera exceeded a per-stream limit: {0}")]
    Limit(String),
    /// The camera asked for Basic authentication on plain RTSP and the stream does not allow it.
    #[error(
        "refused to send the password in clear: the camera asks for Basic authentication over plain RTSP (set allow_basic_auth = true on this stream to allow it)"
    )]
    BasicAuthRefused,
}

const SESSION_PREFIXES: &[&str] = &[
    "Error reading from RTSP peer",
    "Error writing to RTSP peer",
    "Unable to connect",
    "RTSP framing error",
    "Error receiving UDP packet",
    "Received interleaved data on unassigned channel",
    "Internal error",
    "Failed precondition",
    "Invalid argument",
    "Unsupported",
    "Timeout",
];

/// Classifies an error yielded by a playing session.
pub fn classify(e: &retina::Error) -> Severity {
    if e.status_code().is_some() {
        return Severity::Session;
    }
    let text = e.to_string();
    let first = first_line(&text);
    if SESSION_PREFIXES.iter().any(|p| first.starts_with(p)) {
        Severity::Session
    } else {
        Severity::Packet
    }
}

/// Converts a retina error into an [`IngestError`] with a short, credential-free message.
/// `what` names the step, e.g. "DESCRIBE".
pub fn from_retina(e: &retina::Error, what: &str, secret: Option<&str>) -> IngestError {
    let text = sanitize(&e.to_string(), secret);
    // retina puts a hex dump of the buffered bytes after "; buffered:" on the next lines.
    let first = first_line(&text)
        .trim_end_matches(':')
        .trim_end_matches("; buffered")
        .trim_end()
        .to_owned();
    if let Some(status) = e.status_code() {
        if status == 401 || status == 403 {
            return IngestError::Auth { status };
        }
        // "404 response to DESCRIBE CSeq=2: Not Found" → keep the description part.
        let detail = first
            .split_once(": ")
            .map(|(_, d)| d.to_owned())
            .unwrap_or(first);
        return IngestError::Status {
            status,
            what: what.to_owned(),
            detail,
        };
    }
    if first.contains("Authentication requested and no credentials supplied")
        || first.contains("Received Unauthorized after trying digest auth")
    {
        return IngestError::Auth { status: 401 };
    }
    if let Some(rest) = first.strip_prefix("Unable to connect to RTSP server: ") {
        return IngestError::Connect(rest.to_owned());
    }
    if first.starts_with("Error reading from RTSP peer") && first.contains("EOF") {
        return IngestError::Eof;
    }
    IngestError::Protocol(format!("{what}: {first}"))
}

/// Removes credentials from a message: userinfo in any `scheme://user:pass@host` and any
/// occurrence of `secret`.
pub fn sanitize(msg: &str, secret: Option<&str>) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace, or end; userinfo ends at its last '@'.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '>')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => out.push_str(&authority[at + 1..]),
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    match secret {
        Some(s) if !s.is_empty() => out.replace(s, "***"),
        _ => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_strips_userinfo_and_secret() {
        assert_eq!(
            sanitize(
                "failed rtsp://admin:hunter2@10.0.0.1:554/s1 and http://x@y/z",
                None
            ),
            "failed rtsp://10.0.0.1:554/s1 and http://y/z"
        );
        assert_eq!(
            sanitize("password hunter2 leaked", Some("hunter2")),
            "password *** leaked"
        );
        assert_eq!(sanitize("no url here", Some("")), "no url here");
        assert_eq!(sanitize("rtsp://host", None), "rtsp://host");
    }

    #[test]
    fn messages_are_single_line() {
        assert_eq!(
            IngestError::Auth { status: 401 }.to_string(),
            "authentication failed (401): check the stream's username and password"
        );
        assert_eq!(
            IngestError::Stall(10).to_string(),
            "stall: no frame for 10 s"
        );
    }
}

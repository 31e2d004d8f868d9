//! Parsing of common query parameters: time windows given as RFC 3339 `start`/`end`.

use serde::Deserialize;
use vigie_core::Time90k;

use crate::ApiError;

#[derive(Debug, Deserialize)]
pub struct WindowQuery {
    pub start: Option<String>,
    pub end: Option<String>,
}

/// A validated half-open window `[start, end)`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Time90k,
    pub end: Time90k,
}

impl WindowQuery {
    /// Both bounds are required, must parse as RFC 3339, and `start < end`.
    pub fn window(&self) -> Result<Window, ApiError> {
        let parse = |name: &str, v: &Option<String>| -> Result<Time90k, ApiError> {
            let v = v.as_deref().ok_or_else(|| {
                ApiError::BadRequest(format!("missing query parameter `{name}` (RFC 3339 time)"))
            })?;
            Time90k::parse_rfc3339(v).map_err(|e| ApiError::BadRequest(format!("`{name}`: {e}")))
        };
        let start = parse("start", &self.start)?;
        let end = parse("end", &self.end)?;
        if end <= start {
            return Err(ApiError::BadRequest(format!(
                "`end` ({}) must be after `start` ({})",
                end.to_rfc3339(),
                start.to_rfc3339()
            )));
        }
        Ok(Window { start, end })
    }
}

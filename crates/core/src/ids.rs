//! Identifiers of communes, cameras and streams.
//!
//! Ids appear in URLs, file paths and metric labels, so they are restricted to a safe alphabet
//! (`[a-z0-9][a-z0-9_-]*`, at most 64 bytes); validation lives in [`validate_id`].

use std::fmt;

/// Maximum length of any id, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Checks that `id` is usable in a path segment, a URL and a Prometheus label without escaping.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!(
            "is {} bytes long; the maximum is {MAX_ID_LEN}",
            id.len()
        ));
    }
    let mut chars = id.chars();
    let first = chars.next().unwrap_or('-');
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(format!(
            "{id:?} must start with a lowercase letter or a digit"
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "{id:?} contains {bad:?}; use only lowercase letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

/// A camera's stream, e.g. `versailles-gare-rd/main`: the unit that is recorded and indexed.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct StreamKey {
    pub camera: String,
    pub stream: String,
}

impl StreamKey {
    pub fn new(camera: impl Into<String>, stream: impl Into<String>) -> Self {
        Self {
            camera: camera.into(),
            stream: stream.into(),
        }
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.camera, self.stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("versailles-gare_rd2").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id("-x").is_err());
        assert!(validate_id("Gare").is_err());
        assert!(validate_id("a/b").is_err());
        assert!(validate_id("..").is_err());
        assert!(validate_id(&"a".repeat(65)).is_err());
    }
}

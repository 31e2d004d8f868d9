//! Journal entries: what is recorded, and how an entry's hash is computed.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vigie_core::Time90k;

/// What happened. Serialized in kebab-case (`live-start`, `export-create`, …).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Action {
    Login,
    LoginFailed,
    Lockout,
    Logout,
    LiveStart,
    LiveStop,
    Playback,
    Still,
    ExportCreate,
    ExportDownload,
    /// An export package deleted (its hold released, or its lifetime over).
    ExportDelete,
    HoldPlace,
    HoldRelease,
    /// Footage destroyed by retention (age or free-space floor).
    RetentionDelete,
    /// Recording stopped on a disk full of held footage.
    RecordingBlocked,
    ConfigLoad,
    UserAdd,
    UserChange,
    TokenCreate,
    TokenRevoke,
    /// A stream fell below its camera class's quality floor.
    QualityAlert,
    /// A stream is back above its quality floor.
    QualityClear,
    /// Journal entries older than the journal retention were purged.
    JournalPurge,
    /// The recorder started or stopped.
    ServiceStart,
    ServiceStop,
    /// The journal found at start disagreed with its signed head (entries removed or
    /// rewritten, head deleted or forged). Kept forever; reported by every verification.
    TamperAlarm,
    /// A PTZ command (move, stop, preset) sent to a camera.
    Ptz,
    /// A camera's own alarm (ONVIF tampering, video loss) raised or cleared.
    CameraAlarm,
    /// A camera's privacy masks (CSI L251-3) differ from the last set known at start.
    MasksChanged,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        // Static names, kept in sync with the serde names by the `names_match_serde` test.
        match self {
            Action::Login => "login",
            Action::LoginFailed => "login-failed",
            Action::Lockout => "lockout",
            Action::Logout => "logout",
            Action::LiveStart => "live-start",
            Action::LiveStop => "live-stop",
            Action::Playback => "playback",
            Action::Still => "still",
            Action::ExportCreate => "export-create",
            Action::ExportDownload => "export-download",
            Action::ExportDelete => "export-delete",
            Action::HoldPlace => "hold-place",
            Action::HoldRelease => "hold-release",
            Action::RetentionDelete => "retention-delete",
            Action::RecordingBlocked => "recording-blocked",
            Action::ConfigLoad => "config-load",
            Action::UserAdd => "user-add",
            Action::UserChange => "user-change",
            Action::TokenCreate => "token-create",
            Action::TokenRevoke => "token-revoke",
            Action::QualityAlert => "quality-alert",
            Action::QualityClear => "quality-clear",
            Action::JournalPurge => "journal-purge",
            Action::ServiceStart => "service-start",
            Action::ServiceStop => "service-stop",
            Action::TamperAlarm => "tamper-alarm",
            Action::Ptz => "ptz",
            Action::CameraAlarm => "camera-alarm",
            Action::MasksChanged => "masks-changed",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// What a caller supplies; the journal adds sequence, time and hashes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NewEntry {
    /// User name, `system`, or `token:<id>` style identity; never a secret.
    pub actor: String,
    pub action: Option<Action>,
    pub camera: Option<String>,
    pub stream: Option<String>,
    /// Footage range concerned, if any.
    pub start_90k: Option<i64>,
    pub end_90k: Option<i64>,
    /// Why (free text), e.g. the reason given for an export.
    pub reason: Option<String>,
    /// Judicial procedure number, for exports and holds.
    pub procedure: Option<String>,
    /// Client address for HTTP actions.
    pub remote_addr: Option<String>,
    /// Anything else (export id, file hash, requester, bytes…).
    #[serde(default)]
    pub details: serde_json::Value,
}

impl NewEntry {
    pub fn new(actor: impl Into<String>, action: Action) -> Self {
        NewEntry {
            actor: actor.into(),
            action: Some(action),
            ..Default::default()
        }
    }
    pub fn camera(mut self, camera: &str, stream: &str) -> Self {
        self.camera = Some(camera.to_owned());
        self.stream = Some(stream.to_owned());
        self
    }
    pub fn range(mut self, start: Time90k, end: Time90k) -> Self {
        self.start_90k = Some(start.0);
        self.end_90k = Some(end.0);
        self
    }
    pub fn reason(mut self, r: impl Into<String>) -> Self {
        self.reason = Some(r.into());
        self
    }
    pub fn procedure(mut self, p: impl Into<String>) -> Self {
        self.procedure = Some(p.into());
        self
    }
    pub fn remote(mut self, addr: impl Into<String>) -> Self {
        self.remote_addr = Some(addr.into());
        self
    }
    pub fn details(mut self, d: serde_json::Value) -> Self {
        self.details = d;
        self
    }
}

/// A journaled entry. Field order is the canonical order used for hashing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    /// Wall-clock time of the entry (never earlier than the previous entry's).
    pub time_90k: i64,
    pub actor: String,
    pub action: Action,
    pub camera: Option<String>,
    pub stream: Option<String>,
    pub start_90k: Option<i64>,
    pub end_90k: Option<i64>,
    pub reason: Option<String>,
    pub procedure: Option<String>,
    pub remote_addr: Option<String>,
    pub details: serde_json::Value,
    /// Hex SHA-256 of the previous entry (64 zeros for the first one ever).
    pub prev_hash: String,
    /// Hex SHA-256 of this entry's canonical JSON with `hash` set to the empty string.
    pub hash: String,
}

impl Entry {
    pub fn time(&self) -> Time90k {
        Time90k(self.time_90k)
    }

    /// Recomputes the hash from the other fields.
    pub fn compute_hash(&self) -> String {
        let mut unhashed = self.clone();
        unhashed.hash = String::new();
        // Serialization of a struct is deterministic (field order, no maps with random order:
        // `details` objects are serde_json maps, which are sorted by key).
        let bytes = serde_json::to_vec(&unhashed).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }
}

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_serde() {
        for a in [
            Action::Login,
            Action::LoginFailed,
            Action::Lockout,
            Action::Logout,
            Action::LiveStart,
            Action::LiveStop,
            Action::Playback,
            Action::Still,
            Action::ExportCreate,
            Action::ExportDownload,
            Action::ExportDelete,
            Action::HoldPlace,
            Action::HoldRelease,
            Action::RetentionDelete,
            Action::RecordingBlocked,
            Action::ConfigLoad,
            Action::UserAdd,
            Action::UserChange,
            Action::TokenCreate,
            Action::TokenRevoke,
            Action::QualityAlert,
            Action::QualityClear,
            Action::JournalPurge,
            Action::ServiceStart,
            Action::ServiceStop,
            Action::TamperAlarm,
            Action::Ptz,
            Action::CameraAlarm,
            Action::MasksChanged,
        ] {
            assert_eq!(
                serde_json::to_value(a).unwrap(),
                serde_json::Value::String(a.as_str().into())
            );
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        assert_eq!(Action::parse("nope"), None);
    }
}

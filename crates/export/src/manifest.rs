//! `manifest.json`: what the package holds and where it comes from.
//!
//! Written pretty-printed (UTF-8, `\n` line ends); the signature in `manifest.sig` is over its
//! exact bytes, so a verifier must never re-serialise it. Times are given twice: RFC 3339 UTC
//! (`…Z`) and local time with its offset in [`Manifest::timezone`] (e.g. `Europe/Paris`).
//! The caller fills everything except [`Manifest::files`] and [`Manifest::signature`], which
//! [`crate::write_package`] sets.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`crate::FORMAT`].
    pub format: String,
    pub export_id: String,
    pub software: Software,
    pub exported_at: Instant,
    /// The logged-in user who made the export.
    pub operator: String,
    /// Who asked for it (e.g. the officer and service of the requisition).
    pub requester: String,
    /// Judicial procedure number.
    pub procedure: String,
    pub reason: String,
    pub camera: CameraInfo,
    pub stream: String,
    /// IANA time zone of the `local` times.
    pub timezone: String,
    /// The range asked for.
    pub requested: Range,
    /// The range the video covers: first recorded instant to last, inside the requested range.
    pub actual: Range,
    /// Continuous recording inside the requested range (the video concatenates them).
    pub recorded_spans: Vec<Range>,
    /// Parts of the requested range with no recording (not in the video).
    pub gaps: Vec<Gap>,
    pub video: VideoInfo,
    /// Cluster only (absent on a single node, and in packages made before 2026-12-04): the
    /// recorder (node) each stretch of the video was read from, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recorders: Vec<Recorder>,
    /// Cluster only: parts of the requested range whose footage is held by nodes that could not
    /// be reached, left out because the request allowed it (`"unavailable": "skip"`); without
    /// that the export fails instead. Also listed in `gaps` (not in the video).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<Unavailable>,
    /// Every file of the package except `manifest.json`, its signature, `player.html` (which
    /// embeds this manifest) and the `SHA256SUMS` pair.
    pub files: Vec<FileEntry>,
    pub signature: SignatureInfo,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Software {
    pub name: String,
    pub version: String,
}

/// One instant in UTC and in local time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instant {
    /// RFC 3339 UTC, e.g. `2026-11-28T21:00:00.040Z`.
    pub utc: String,
    /// Local time with its UTC offset, e.g. `2026-11-28T22:00:00.040+01:00`.
    pub local: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Range {
    pub start: Instant,
    pub end: Instant,
    pub duration_s: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    pub start: Instant,
    pub end: Instant,
    pub duration_s: f64,
}

/// One stretch of the video and the recorder (cluster node) it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recorder {
    /// The node's name (`[cluster] node`).
    pub node: String,
    pub start: Instant,
    pub end: Instant,
    pub duration_s: f64,
}

/// A part of the requested range held by a node that could not be reached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unavailable {
    pub node: String,
    pub start: Instant,
    pub end: Instant,
    pub duration_s: f64,
    /// Why it could not be reached (e.g. `down`).
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CameraInfo {
    pub id: String,
    pub name: String,
    pub commune: CommuneInfo,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommuneInfo {
    pub id: String,
    pub name: String,
    /// Prefectoral authorisation number, if declared.
    pub authorisation: Option<String>,
    /// Its expiry date (`YYYY-MM-DD`), if declared.
    pub authorisation_expires: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VideoInfo {
    /// Name of the master MP4 in the package.
    pub file: String,
    /// `stream copy (no re-encoding)`.
    pub processing: String,
    /// RFC 6381 codec string(s) of the stream, e.g. `avc1.42c01e`.
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// Frames presented (after the edit list), what `ffprobe -count_frames` reports.
    pub frames: u64,
    /// Presented duration.
    pub duration_s: f64,
    /// Whether the MP4 carries a wall-clock subtitle track (local time).
    pub timestamp_track: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    /// `master` (the MP4), `derived` (a still or working copy made from the master),
    /// `public-key`, `readme`.
    pub role: String,
    pub bytes: u64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// For derived files: the SHA-256 of the master they were made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derived_from_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureInfo {
    /// `Ed25519`.
    pub algorithm: String,
    /// `manifest.sig`: signature of the exact bytes of `manifest.json`.
    pub file: String,
    /// `base64` (standard alphabet, padded, one line).
    pub encoding: String,
    /// `signing-key.pub`.
    pub public_key_file: String,
    /// The installation's public key (also published at `GET /api/v1/signing-key`).
    pub public_key_hex: String,
}

impl Default for SignatureInfo {
    fn default() -> Self {
        SignatureInfo {
            algorithm: "Ed25519".into(),
            file: crate::MANIFEST_SIG.into(),
            encoding: "base64".into(),
            public_key_file: crate::PUBLIC_KEY.into(),
            public_key_hex: String::new(),
        }
    }
}

/// `manifest.json` of a multi-camera package ([`crate::FORMAT_MULTI`]): one requisition, one
/// requested range, one master MP4 per camera (`cameras`, in the order asked), one signature
/// over all. The fields shared with [`Manifest`] mean the same; what is per camera in a
/// single-camera manifest (camera, stream, actual range, spans, gaps, video) is in each
/// [`CameraExport`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MultiManifest {
    /// [`crate::FORMAT_MULTI`].
    pub format: String,
    pub export_id: String,
    pub software: Software,
    pub exported_at: Instant,
    pub operator: String,
    pub requester: String,
    pub procedure: String,
    pub reason: String,
    pub timezone: String,
    /// The range asked for, the same for every camera.
    pub requested: Range,
    pub cameras: Vec<CameraExport>,
    /// Every file of the package except `manifest.json`, its signature, `player.html` and the
    /// `SHA256SUMS` pair: each camera's master (role `master`), the key and the readme.
    pub files: Vec<FileEntry>,
    pub signature: SignatureInfo,
}

/// One camera of a [`MultiManifest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CameraExport {
    pub camera: CameraInfo,
    pub stream: String,
    /// First recorded instant to last of this camera, inside the requested range.
    pub actual: Range,
    pub recorded_spans: Vec<Range>,
    pub gaps: Vec<Gap>,
    /// Its master MP4 (`video.file`, listed in `files` with role `master`).
    pub video: VideoInfo,
    /// As in [`Manifest::recorders`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recorders: Vec<Recorder>,
    /// As in [`Manifest::unavailable`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<Unavailable>,
}

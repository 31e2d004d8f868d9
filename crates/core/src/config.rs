//! The configuration schema (TOML) and its validation.
//!
//! Cameras and streams are configuration as code: one TOML file, checked entirely at load time by
//! [`Config::from_toml_str`]. Every error names the offending key (`cameras[1].streams[0].url`) so
//! `vigie check-config` can point at the line to fix. Passwords are held in [`Secret`], which never
//! prints its content.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::ids::{StreamKey, validate_id};

/// The legal ceiling on retention (Code de la sécurité intérieure, L252-5): 30 days.
pub const LEGAL_MAX_RETENTION_DAYS: u32 = 30;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{source_name}: {message}")]
    Syntax {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: {} problem(s):\n{}", .problems.len(), .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        source_name: String,
        problems: Vec<Problem>,
    },
}

/// One validation problem: the key path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    pub storage: StorageConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub recording: RecordingConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub holds: HoldsConfig,
    #[serde(default)]
    pub exports: ExportsConfig,
    #[serde(default)]
    pub live: LiveConfig,
    #[serde(default)]
    pub communes: Vec<Commune>,
    #[serde(default)]
    pub cameras: Vec<Camera>,
    /// `[cluster]`: absent = a single node, exactly as without it (no etcd).
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: this node's place in a cluster of recorders coordinated by etcd (see
/// docs/CLUSTER.md). Every node reads the same `[[cameras]]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd endpoints, `http://host:port` or `https://host:port`.
    pub etcd: Vec<String>,
    /// CA certificate (PEM) that signed the etcd servers' certificates (https endpoints).
    pub etcd_ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for etcd client-certificate authentication.
    pub etcd_cert_file: Option<PathBuf>,
    pub etcd_key_file: Option<PathBuf>,
    /// This node's unique name, `[a-z0-9-]{1,32}`.
    pub node: String,
    /// Where the other nodes reach this node's HTTP API.
    pub advertise_url: String,
    /// This node's site: it records the cameras of that site and those without a site. A node
    /// without a site records only cameras without a site.
    pub site: Option<String>,
    /// How many streams this node is sized for (assignment weight).
    pub capacity_streams: u32,
    /// TTL of this node's etcd lease, in seconds: how long a dead node keeps its cameras.
    #[serde(default = "default_lease_ttl_s")]
    pub lease_ttl_s: u32,
    /// Prefix of every etcd key of this cluster.
    #[serde(default = "default_cluster_prefix")]
    pub prefix: String,
    /// Bound on a drain at SIGTERM before the process exits anyway, in seconds.
    #[serde(default = "default_drain_timeout_s")]
    pub drain_timeout_s: u32,
    /// Retention deletes nothing when the cluster's legal holds were last read from etcd longer
    /// ago than this, in seconds (a hold placed elsewhere may be unknown here).
    #[serde(default = "default_holds_max_age_s")]
    pub holds_max_age_s: u32,
    /// Environment variable holding the cluster secret: the key every node signs and checks
    /// its internal requests to the others with (`/internal/v1/…`, see docs/CLUSTER.md).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the cluster secret (its content, surrounding whitespace trimmed); give
    /// either this or `secret_env`. Without either, this node refuses every internal request
    /// and asks no other node (it serves only what it holds).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the other nodes' HTTPS certificates, for internal
    /// requests to an `https://` advertise URL (without it only `http://` ones work).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// Shortest cluster secret accepted, in bytes (`openssl rand -hex 32` gives 64).
pub const MIN_CLUSTER_SECRET_BYTES: usize = 32;

impl ClusterConfig {
    /// The cluster secret from `secret_env` or `secret_file` (`Ok(None)` when neither is
    /// given). Refused when unreadable, unset or shorter than [`MIN_CLUSTER_SECRET_BYTES`];
    /// errors never contain the secret.
    pub fn secret(
        &self,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Secret>, String> {
        let raw = match (&self.secret_env, &self.secret_file) {
            (Some(_), Some(_)) => {
                return Err(
                    "give either cluster.secret_env or cluster.secret_file, not both".into(),
                );
            }
            (Some(var), None) => getenv(var).ok_or_else(|| {
                format!("cluster.secret_env: environment variable {var} is not set")
            })?,
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("cluster.secret_file: cannot read {}: {e}", path.display()))?,
            (None, None) => return Ok(None),
        };
        let s = raw.trim();
        if s.len() < MIN_CLUSTER_SECRET_BYTES {
            return Err(format!(
                "the cluster secret is {} bytes long; at least {MIN_CLUSTER_SECRET_BYTES} are needed (e.g. `openssl rand -hex 32`)",
                s.len()
            ));
        }
        Ok(Some(Secret::new(s)))
    }
}

fn default_lease_ttl_s() -> u32 {
    5
}
fn default_cluster_prefix() -> String {
    "/vigie".into()
}
fn default_drain_timeout_s() -> u32 {
    60
}
fn default_holds_max_age_s() -> u32 {
    120
}

/// `[a-z0-9-]{1,32}`: node and site names (used in etcd keys and metric labels).
pub fn validate_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 32 {
        return Err(format!("{name:?} must be 1 to 32 characters long"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "{name:?} contains {bad:?}; use only lowercase letters, digits and '-'"
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the HTTP API and UI. Default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// PEM certificate chain and private key: when both are given, Vigie serves HTTPS (rustls)
    /// and the session cookie is marked `Secure`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// When set, `GET /metrics` also accepts `Authorization: Bearer <metrics_token>`, and is no
    /// longer open to unauthenticated local clients. Unset: open to loopback clients only.
    pub metrics_token: Option<Secret>,
    /// IANA time zone for local wall-clock times shown to people (e.g. the `ts=1` subtitle
    /// track of video.mp4). Default `Europe/Paris`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Vigie is reached through a reverse proxy that terminates TLS: the session cookie is
    /// marked `Secure` although Vigie itself serves plain HTTP. Default false.
    #[serde(default)]
    pub behind_tls_proxy: bool,
    /// Seconds a client gets to send a request's headers (and, on HTTP/1.1, how long an idle
    /// keep-alive connection waits for its next request); a TLS handshake gets as long (1..=300).
    /// Default 10.
    #[serde(default = "default_header_read_timeout_s")]
    pub header_read_timeout_s: u32,
    /// A connection that neither sends nor receives a byte for this long is closed
    /// (10..=3600). Upgraded WebSocket connections are exempt. Default 120.
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: u32,
    /// Longest time a request may take to be answered (its body read and its response headers
    /// produced) before a 503 (1..=3600). Not applied to `video.mp4`, the live WebSocket,
    /// package downloads, `audit/verify` and `register.csv`. Default 30.
    #[serde(default = "default_request_timeout_s")]
    pub request_timeout_s: u32,
    /// Most HTTP connections open at once (16..=65536); further ones are closed at accept.
    /// Kept well below the process's file-descriptor limit so recording always has descriptors
    /// (Vigie lowers it at start when the limit is too small). Default 512.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Most HTTP connections open at once from one client IP (1..=65536; at most
    /// `max_connections` in effect),
    /// so that one stranger cannot take every connection. Behind a reverse proxy every client
    /// has the proxy's address: raise it to `max_connections`. Default 128.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: u32,
}

fn default_max_connections_per_ip() -> u32 {
    128
}

fn default_header_read_timeout_s() -> u32 {
    10
}
fn default_idle_timeout_s() -> u32 {
    120
}
fn default_request_timeout_s() -> u32 {
    30
}
fn default_max_connections() -> u32 {
    512
}

fn default_timezone() -> String {
    "Europe/Paris".into()
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            tls_cert: None,
            tls_key: None,
            metrics_token: None,
            timezone: default_timezone(),
            behind_tls_proxy: false,
            header_read_timeout_s: default_header_read_timeout_s(),
            idle_timeout_s: default_idle_timeout_s(),
            request_timeout_s: default_request_timeout_s(),
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Where segment files and the index live.
    pub data_dir: PathBuf,
    /// Free-space floor: when free space falls below it, the oldest footage is deleted first.
    #[serde(default = "default_min_free")]
    pub min_free_bytes: ByteSize,
    /// sled's page cache for the segment index (default 64 MiB; sled's own default, 1 GiB, is
    /// what a walk of a large index would leave resident).
    #[serde(default = "default_index_cache")]
    pub index_cache_bytes: ByteSize,
    /// Throttle of the background verification of the recorded history after a start, in index
    /// entries (one `stat` each) per second (default 2000).
    #[serde(default = "default_verify_entries_per_s")]
    pub verify_entries_per_s: u32,
}

fn default_min_free() -> ByteSize {
    ByteSize(1 << 30)
}

fn default_index_cache() -> ByteSize {
    // vigie_store::index::DEFAULT_CACHE_BYTES (docs/BENCHMARKS.md "Restart": what a walk of
    // the index leaves resident is ~3.6 times this).
    ByteSize(8 << 20)
}

fn default_verify_entries_per_s() -> u32 {
    2000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Ceiling for every commune and camera, in days; at most 30 (legal ceiling).
    #[serde(default = "default_max_days")]
    pub max_days: u32,
    /// Seconds between retention passes (age and free-space floor). Default 60.
    #[serde(default = "default_check_interval_s")]
    pub check_interval_s: u32,
    /// How long the access journal is kept, in days (default 1095 = 3 years; at least 365).
    #[serde(default = "default_journal_days")]
    pub journal_days: u32,
}

fn default_journal_days() -> u32 {
    1095
}

fn default_check_interval_s() -> u32 {
    60
}

fn default_max_days() -> u32 {
    LEGAL_MAX_RETENTION_DAYS
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_days: default_max_days(),
            check_interval_s: default_check_interval_s(),
            journal_days: default_journal_days(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingConfig {
    /// Target segment length in seconds (10..=300). Segments start on a key frame.
    #[serde(default = "default_segment_seconds")]
    pub segment_seconds: u32,
    /// Target fragment length in milliseconds (200..=5000): bounds what a process crash may lose
    /// (crates/store/README.md, "Durability policy").
    #[serde(default = "default_fragment_ms")]
    pub fragment_ms: u32,
    /// How often written fragments are made durable, in milliseconds (0 = every fragment): with
    /// `fragment_ms`, bounds what a power cut may lose (crates/store/README.md, "Durability
    /// policy": store-wide `syncfs` epochs, `fdatasync` fallbacks). Each sync
    /// makes the next write dirty the file's last, partly written page again: at 2 s that is
    /// ~0.5 % more bytes to the disk at 3 Mbit/s, at 1 s ~1 % (device write amplification
    /// 1.011 against 1.020 at 50 streams; docs/BENCHMARKS.md, "Writer pool").
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u32,
    /// How often the index entry of a segment being written is updated, in milliseconds (always
    /// right after an fsync, so it never points past durable bytes; 0 = at every fsync). The
    /// entry carries the segment's whole sample table (up to ~4.5 KB for 60 s at 25 fps), which
    /// sled rewrites at each update: at every 1 s fsync that was ~0.8 % of the video bytes
    /// written again at 2 Mbit/s, ~0.15 % every 10 s (device write amplification at 200 streams
    /// 1.0215 → 1.0153; docs/BENCHMARKS.md, "Ingest"). A new segment is indexed at its first
    /// fsync and a closing one at once; after a crash, recovery indexes the durable complete
    /// fragments past the indexed length from the file, so this costs nothing in durability,
    /// only in how soon the newest seconds appear in listings and `video.mp4` (≤ this interval
    /// + `flush_interval_ms` + `fragment_ms` behind live).
    #[serde(default = "default_index_interval_ms")]
    pub index_interval_ms: u32,
    /// Bound of the queue between a stream's RTSP reader and its writer, in bytes. When a slow
    /// disk lets it overflow, the segment ends with reason `writer-overflow` and recording
    /// resumes at the next key frame; the socket is never blocked.
    #[serde(default = "default_writer_queue_bytes")]
    pub writer_queue_bytes: ByteSize,
}

fn default_segment_seconds() -> u32 {
    60
}
fn default_fragment_ms() -> u32 {
    1000
}
fn default_flush_interval_ms() -> u32 {
    2000
}
fn default_index_interval_ms() -> u32 {
    10_000
}
fn default_writer_queue_bytes() -> ByteSize {
    ByteSize(16 << 20)
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            segment_seconds: default_segment_seconds(),
            fragment_ms: default_fragment_ms(),
            flush_interval_ms: default_flush_interval_ms(),
            index_interval_ms: default_index_interval_ms(),
            writer_queue_bytes: default_writer_queue_bytes(),
        }
    }
}

/// `[auth]`: sessions and login throttling (users themselves live in `data_dir/access/`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// A session unused for this long ends (1..=1440). Default 30.
    #[serde(default = "default_session_idle_minutes")]
    pub session_idle_minutes: u32,
    /// A session ends this long after login, used or not (1..=720). Default 12.
    #[serde(default = "default_session_max_hours")]
    pub session_max_hours: u32,
    /// Failed logins (per user name; four times as many per client IP) within
    /// `lockout_minutes` that lock further attempts (1..=100). Default 5.
    #[serde(default = "default_max_failed_logins")]
    pub max_failed_logins: u32,
    /// First lockout length, doubled on each repeat up to 24 h (1..=1440). Default 15.
    #[serde(default = "default_lockout_minutes")]
    pub lockout_minutes: u32,
    /// Password hashes (argon2id, 19 MiB each) computed at once for logins (1..=64). Default 2.
    #[serde(default = "default_max_concurrent_logins")]
    pub max_concurrent_logins: u32,
    /// Logins waiting for a hashing slot beyond which further ones are answered 503 at once
    /// (0..=1024). Default 16.
    #[serde(default = "default_max_queued_logins")]
    pub max_queued_logins: u32,
}

fn default_max_concurrent_logins() -> u32 {
    2
}
fn default_max_queued_logins() -> u32 {
    16
}

/// `[live]`: the H.264 fallback for browsers that cannot decode a camera's H.265 (live view and
/// playback re-encoded by the server, see docs/API.md "H.264 fallback").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    /// Transcodes (live views and playback responses re-encoded to H.264) running at once
    /// (0..=64; 0 turns the fallback off). Each costs about one core at 720p (see
    /// docs/BENCHMARKS.md); beyond it a request is refused with 503 / close code 4503. Default 2.
    #[serde(default = "default_live_max_transcodes")]
    pub max_transcodes: u32,
    /// Target bitrate of the fallback's H.264 (100..=20000 kbit/s). Default 2000.
    #[serde(default = "default_live_transcode_bitrate_kbps")]
    pub transcode_bitrate_kbps: u32,
}

fn default_live_max_transcodes() -> u32 {
    2
}
fn default_live_transcode_bitrate_kbps() -> u32 {
    2000
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            max_transcodes: default_live_max_transcodes(),
            transcode_bitrate_kbps: default_live_transcode_bitrate_kbps(),
        }
    }
}

/// `[exports]`: bounds on evidence export jobs and the packages they leave on disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportsConfig {
    /// Export jobs running at once, each on its own dedicated thread (1..=16). Default 2.
    #[serde(default = "default_exports_max_running")]
    pub max_running: u32,
    /// Export jobs queued or running per user (1..=100). Default 2.
    #[serde(default = "default_exports_max_per_user")]
    pub max_concurrent_per_user: u32,
    /// Export jobs queued or running in total (1..=1000). Default 8.
    #[serde(default = "default_exports_max_queued")]
    pub max_queued: u32,
    /// Disk quota of the export packages kept (and of the jobs under way, by estimate). Default
    /// "20GiB".
    #[serde(default = "default_exports_quota")]
    pub quota_bytes: ByteSize,
    /// An export is refused (and a running one fails) when it would leave less than this free
    /// on the exports file system. Default: `storage.min_free_bytes` + 2 GiB.
    pub min_free_bytes: Option<ByteSize>,
    /// A package is deleted this many days after it was written (1..=365), or as soon as its
    /// legal hold is released; the deletion is journaled and listed in the register. Default 7.
    #[serde(default = "default_exports_lifetime_days")]
    pub package_lifetime_days: u32,
    /// Seconds between passes deleting expired packages (1..=3600). Default 60.
    #[serde(default = "default_exports_check_interval_s")]
    pub check_interval_s: u32,
}

fn default_exports_max_running() -> u32 {
    2
}
fn default_exports_max_per_user() -> u32 {
    2
}
fn default_exports_max_queued() -> u32 {
    8
}
fn default_exports_quota() -> ByteSize {
    ByteSize(20 << 30)
}
fn default_exports_lifetime_days() -> u32 {
    7
}
fn default_exports_check_interval_s() -> u32 {
    60
}

impl Default for ExportsConfig {
    fn default() -> Self {
        ExportsConfig {
            max_running: default_exports_max_running(),
            max_concurrent_per_user: default_exports_max_per_user(),
            max_queued: default_exports_max_queued(),
            quota_bytes: default_exports_quota(),
            min_free_bytes: None,
            package_lifetime_days: default_exports_lifetime_days(),
            check_interval_s: default_exports_check_interval_s(),
        }
    }
}

impl Config {
    /// The free-space floor of exports: `exports.min_free_bytes`, else `storage.min_free_bytes`
    /// + 2 GiB (exports must never push recording into its own floor).
    pub fn exports_min_free_bytes(&self) -> u64 {
        self.exports
            .min_free_bytes
            .map_or(self.storage.min_free_bytes.0.saturating_add(2 << 30), |b| {
                b.0
            })
    }
}

fn default_session_idle_minutes() -> u32 {
    30
}
fn default_session_max_hours() -> u32 {
    12
}
fn default_max_failed_logins() -> u32 {
    5
}
fn default_lockout_minutes() -> u32 {
    15
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            session_idle_minutes: default_session_idle_minutes(),
            session_max_hours: default_session_max_hours(),
            max_failed_logins: default_max_failed_logins(),
            lockout_minutes: default_lockout_minutes(),
            max_concurrent_logins: default_max_concurrent_logins(),
            max_queued_logins: default_max_queued_logins(),
        }
    }
}

/// `[holds]`: limits on legal holds (placed directly or by exports).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldsConfig {
    /// Longest `[start, end)` one hold may cover, in days (1..=366). A hold covers footage
    /// that exists (its end is not in the future), so this bounds how far back one hold
    /// reaches. Default 31.
    #[serde(default = "default_hold_max_span_days")]
    pub max_span_days: u32,
}

fn default_hold_max_span_days() -> u32 {
    31
}

impl Default for HoldsConfig {
    fn default() -> Self {
        HoldsConfig {
            max_span_days: default_hold_max_span_days(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commune {
    pub id: String,
    pub name: String,
    /// Prefectoral authorisation number.
    pub authorisation: Option<String>,
    pub authorisation_expires: Option<jiff::civil::Date>,
    /// Retention for this commune's cameras, in days (≤ `retention.max_days`).
    pub retention_days: Option<u32>,
}

/// The camera class of the order of 3 August 2007; its quality floor is `vigie_quality::floor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CameraClass {
    /// ≥ 704×576 and ≥ 12 fps.
    CloseUp,
    /// ≥ 352×288 and ≥ 6 fps.
    #[default]
    Wide,
    /// No floor.
    Traffic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Camera {
    pub id: String,
    pub name: String,
    pub commune: String,
    #[serde(default)]
    pub class: CameraClass,
    /// Retention for this camera, in days (≤ its commune's and ≤ `retention.max_days`).
    pub retention_days: Option<u32>,
    /// Cluster site: only nodes of this site record the camera (any node when unset).
    pub site: Option<String>,
    #[serde(default)]
    pub streams: Vec<StreamConfig>,
    /// The camera's ONVIF device service (`http://host/onvif/device_service`): PTZ, events, and
    /// stream URLs taken from its media profiles for streams without `url`.
    pub onvif: Option<String>,
    /// ONVIF user (also the RTSP user of streams that name none).
    pub username: Option<String>,
    /// ONVIF password (prefer `password_env`).
    pub password: Option<Secret>,
    /// Name of an environment variable holding the ONVIF password.
    pub password_env: Option<String>,
    /// Fill gaps of a recorded stream from the camera's own recording (ONVIF Profile G);
    /// default off. Needs `onvif`.
    pub edge_fill: Option<EdgeFillConfig>,
    /// Privacy masks (`[[cameras.masks]]`, see [`crate::masks`]): pushed to the camera through
    /// ONVIF Media2 where it can, and painted by Vigie on what it renders itself.
    #[serde(default)]
    pub masks: Vec<crate::masks::Mask>,
}

/// `[cameras.edge_fill]` (or `edge_fill = { … }`): when a stream of the camera comes back after
/// an outage, Vigie asks the camera for its recording of the gap and stores it in the stream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeFillConfig {
    /// Gaps are filled only within this many seconds before now (60..=86400, default 3600).
    #[serde(default = "default_edge_window_s")]
    pub window_s: u32,
    /// Shorter gaps are left alone (1..=window_s, default 5).
    #[serde(default = "default_edge_min_gap_s")]
    pub min_gap_s: u32,
    /// The stream filled (a recorded stream of the camera; default its first recorded one).
    pub stream: Option<String>,
    /// The camera's recording token to replay (default: the one whose source is the stream's
    /// profile token, else the one holding most of the gap).
    pub recording: Option<String>,
}

fn default_edge_window_s() -> u32 {
    3600
}
fn default_edge_min_gap_s() -> u32 {
    5
}

impl Camera {
    /// The stream `edge_fill` fills: its `stream`, else the first recorded stream.
    pub fn edge_fill_stream(&self) -> Option<&StreamConfig> {
        let e = self.edge_fill.as_ref()?;
        match &e.stream {
            Some(n) => self.streams.iter().find(|s| &s.name == n),
            None => self.streams.iter().find(|s| s.declared_role().records()),
        }
    }
}

/// Where a stream without `url` gets its URL: the camera's ONVIF device, one of its media
/// profiles (`GetStreamUri`, asked again at every connection attempt).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnvifStream {
    /// The device service URL.
    pub device_url: String,
    /// Which profile.
    pub profile: ProfileRef,
}

/// A media profile by token or by its position in `GetProfiles` (0: the main stream, 1: the
/// sub-stream, by the cameras' convention).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProfileRef {
    Token(String),
    Index(usize),
}

impl fmt::Display for ProfileRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProfileRef::Token(t) => write!(f, "profile {t:?}"),
            ProfileRef::Index(i) => write!(f, "profile #{}", i + 1),
        }
    }
}

/// A camera's ONVIF access with its credentials resolved.
#[derive(Clone)]
pub struct OnvifAccess {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

impl fmt::Debug for OnvifAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnvifAccess")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Camera {
    /// The ONVIF access (`None` without `onvif`). The URL must be `http://` without
    /// credentials (they are configured apart so they never print).
    pub fn onvif_access(
        &self,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<OnvifAccess>, String> {
        let Some(u) = &self.onvif else {
            return Ok(None);
        };
        let url = url::Url::parse(u).map_err(|e| format!("not a valid URL: {e}"))?;
        if url.scheme() != "http" {
            return Err(format!("scheme must be http://, not {}://", url.scheme()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "credentials in the URL are refused: give username and password_env".into(),
            );
        }
        if url.host_str().is_none_or(|h| h.is_empty()) {
            return Err("URL has no host".into());
        }
        let password =
            match (&self.password, &self.password_env) {
                (Some(_), Some(_)) => {
                    return Err("give either password or password_env, not both".into());
                }
                (Some(p), None) => Some(p.clone()),
                (None, Some(var)) => Some(Secret::new(getenv(var).ok_or_else(|| {
                    format!("password_env: environment variable {var} is not set")
                })?)),
                (None, None) => None,
            };
        if password.is_some() && self.username.is_none() {
            return Err("a password is given without a username".into());
        }
        Ok(Some(OnvifAccess {
            url: url.to_string(),
            username: self.username.clone(),
            password,
        }))
    }

    /// Resolves one of this camera's streams: its own `url`, or (without one) the ONVIF
    /// profile it names (`profile`, else `main` → the first profile, `sub` → the second).
    /// Streams without credentials of their own use the camera's.
    pub fn resolve_stream(
        &self,
        s: &StreamConfig,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(ResolvedSource, Option<OnvifStream>), String> {
        if !s.url.is_empty() {
            if s.profile.is_some() {
                return Err("give either url or profile, not both".into());
            }
            let mut r = s.resolve(getenv)?;
            if r.username.is_none()
                && r.password.is_none()
                && let Ok(Some(a)) = self.onvif_access(getenv)
            {
                r.username = a.username;
                r.password = a.password;
            }
            return Ok((r, None));
        }
        let access = self
            .onvif_access(getenv)
            .map_err(|e| format!("onvif: {e}"))?
            .ok_or("no url, and the camera has no onvif device to take it from")?;
        let profile = match (&s.profile, s.name.as_str()) {
            (Some(t), _) => ProfileRef::Token(t.clone()),
            (None, "main") => ProfileRef::Index(0),
            (None, "sub") => ProfileRef::Index(1),
            (None, n) => {
                return Err(format!(
                    "no url: name the ONVIF profile (profile = \"TOKEN\"); only streams named main or sub default to the first or second profile, not {n:?}"
                ));
            }
        };
        // Until the camera answers, the status shows where the URL will come from.
        let mut placeholder = url::Url::parse(&access.url).map_err(|e| e.to_string())?;
        placeholder.set_fragment(Some(&match &profile {
            ProfileRef::Token(t) => format!("profile={t}"),
            ProfileRef::Index(i) => format!("profile-index={i}"),
        }));
        let mut stream_creds = s.clone();
        stream_creds.url = "rtsp://placeholder.invalid/".into();
        let mut r = stream_creds.resolve(getenv)?;
        r.url = placeholder;
        if r.username.is_none() && r.password.is_none() {
            r.username = access.username;
            r.password = access.password;
        }
        Ok((
            r,
            Some(OnvifStream {
                device_url: access.url,
                profile,
            }),
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Tcp,
    Udp,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    pub name: String,
    /// `rtsp://host[:port]/path`. Credentials inside the URL are accepted but better given as
    /// `username` + `password_env`. May be left out on a camera with `onvif`: the URL then
    /// comes from the camera's media profile (see `profile`).
    #[serde(default)]
    pub url: String,
    /// ONVIF media profile token whose stream URI this stream records (only without `url`;
    /// default: `main` → the first profile, `sub` → the second).
    pub profile: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Name of an environment variable holding the password.
    pub password_env: Option<String>,
    #[serde(default)]
    pub transport: Transport,
    /// Seconds allowed for connect + DESCRIBE/SETUP/PLAY. Default 10.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_s: u32,
    /// Seconds without a frame before the session is declared stalled and restarted. Default 10.
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout_s: u32,
    /// Allow answering a `WWW-Authenticate: Basic` challenge on plain RTSP, which sends the
    /// password in clear (base64) to whatever answers at the camera's address. Default false:
    /// such a session ends with an error instead (Digest is used when offered).
    #[serde(default)]
    pub allow_basic_auth: bool,
    /// What the stream is for ([`StreamRole`]): `record`, `live` or `both`. Absent: `record`;
    /// and when no stream of the camera has the live role, its first stream serves live too
    /// ([`Camera::live_stream`]). A `live` stream is not recorded.
    #[serde(default)]
    pub role: Option<StreamRole>,
}

/// What a stream is for: recorded (`record`, typically the main stream), shown on the live wall
/// (`live`, typically a sub-stream of lower resolution; not recorded), or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamRole {
    Record,
    Live,
    Both,
}

impl StreamRole {
    pub fn records(self) -> bool {
        matches!(self, StreamRole::Record | StreamRole::Both)
    }
    pub fn serves_live(self) -> bool {
        matches!(self, StreamRole::Live | StreamRole::Both)
    }
}

impl StreamConfig {
    /// The declared role, `record` when absent (see [`Camera::role`] for the effective one).
    pub fn declared_role(&self) -> StreamRole {
        self.role.unwrap_or(StreamRole::Record)
    }
}

impl Camera {
    /// The stream the live wall shows: the one with the live role (`live` or `both`), else the
    /// first stream.
    pub fn live_stream(&self) -> Option<&StreamConfig> {
        self.streams
            .iter()
            .find(|s| s.declared_role().serves_live())
            .or_else(|| self.streams.first())
    }
    /// The main stream: the first one recorded (the enlarged live tile, playback, exports).
    pub fn record_stream(&self) -> Option<&StreamConfig> {
        self.streams.iter().find(|s| s.declared_role().records())
    }
    /// The effective role of the stream `name`: its declared role, plus live for the first
    /// stream of a camera that declares no live stream.
    pub fn role(&self, name: &str) -> Option<StreamRole> {
        let s = self.streams.iter().find(|s| s.name == name)?;
        let live = self.live_stream().is_some_and(|l| l.name == name);
        Some(match (s.declared_role().records(), live) {
            (true, true) => StreamRole::Both,
            (true, false) => StreamRole::Record,
            _ => StreamRole::Live,
        })
    }
    /// True if the stream `name` is recorded.
    pub fn records(&self, name: &str) -> bool {
        self.streams
            .iter()
            .any(|s| s.name == name && s.declared_role().records())
    }
}

/// Credentials never print: the URL is redacted ([`redact_url`]), passwords are [`Secret`]s.
/// The journaled configuration hash is computed over this form, so a password (in the URL or
/// not) never feeds it (a hash of a secret can be brute-forced offline).
impl fmt::Debug for StreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamConfig")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("profile", &self.profile)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("password_env", &self.password_env)
            .field("transport", &self.transport)
            .field("connect_timeout_s", &self.connect_timeout_s)
            .field("stall_timeout_s", &self.stall_timeout_s)
            .field("role", &self.role)
            .finish()
    }
}

fn default_connect_timeout() -> u32 {
    10
}
fn default_stall_timeout() -> u32 {
    10
}

/// A commune's authorisation that expired or expires soon (see
/// [`Config::authorisation_warnings`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuthorisationWarning {
    pub commune: String,
    pub authorisation: Option<String>,
    pub expires: jiff::civil::Date,
    pub days_left: i64,
}

impl fmt::Display for AuthorisationWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = self.authorisation.as_deref().unwrap_or("(no number)");
        if self.days_left < 0 {
            write!(
                f,
                "commune {}: prefectoral authorisation {what} EXPIRED on {} ({} days ago)",
                self.commune, self.expires, -self.days_left
            )
        } else {
            write!(
                f,
                "commune {}: prefectoral authorisation {what} expires on {} (in {} days)",
                self.commune, self.expires, self.days_left
            )
        }
    }
}

/// A secret string: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A size in bytes, written in TOML as an integer or a string like `"20GiB"`, `"500MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let num: f64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size like \"20GiB\""))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "k" | "kB" | "KB" => 1_000,
            "KiB" => 1 << 10,
            "M" | "MB" => 1_000_000,
            "MiB" => 1 << 20,
            "G" | "GB" => 1_000_000_000,
            "GiB" => 1 << 30,
            "T" | "TB" => 1_000_000_000_000,
            "TiB" => 1 << 40,
            u => {
                return Err(format!(
                    "unknown unit {u:?} in {s:?} (use B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)"
                ));
            }
        };
        Ok(ByteSize((num * mult as f64) as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// A stream's connection details with the credentials resolved (from the URL, `password` or
/// `password_env`) and removed from the URL.
#[derive(Clone)]
pub struct ResolvedSource {
    /// The URL without credentials.
    pub url: url::Url,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub transport: Transport,
    pub connect_timeout_s: u32,
    pub stall_timeout_s: u32,
    /// See [`StreamConfig::allow_basic_auth`].
    pub allow_basic_auth: bool,
}

impl fmt::Debug for ResolvedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedSource")
            .field("url", &redact_url(self.url.as_str()))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("transport", &self.transport)
            .finish()
    }
}

/// True for a query parameter that carries a credential (cameras accept `?user=…&password=…`,
/// `?token=…`, `?auth=…`; matched case-insensitively).
pub(crate) fn is_credential_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "user"
            | "username"
            | "usr"
            | "login"
            | "u"
            | "password"
            | "pass"
            | "passwd"
            | "pwd"
            | "p"
            | "pw"
            | "token"
            | "key"
            | "apikey"
            | "api_key"
            | "auth"
            | "authorization"
            | "secret"
            | "sig"
            | "signature"
            | "session"
            | "sessionid"
            | "sid"
            | "credentials"
    ) || ["pass", "pwd", "token", "secret", "auth", "key"]
        .iter()
        .any(|w| n.contains(w))
}

/// Returns `url` as a string with any user name and password removed, and the value of every
/// credential-like query parameter ([`is_credential_param`]) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            if u.query().is_some() {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if is_credential_param(&k) {
                            "***".to_owned()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                if pairs.is_empty() {
                    u.set_query(None);
                } else {
                    u.query_pairs_mut().clear().extend_pairs(pairs);
                }
            }
            u.to_string()
        }
        Err(_) => "<unparsable url>".to_owned(),
    }
}

impl StreamConfig {
    /// Resolves credentials. `getenv` is injected so tests need not touch the process environment.
    pub fn resolve(
        &self,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ResolvedSource, String> {
        let mut url = url::Url::parse(&self.url).map_err(|e| format!("not a valid URL: {e}"))?;
        if url.scheme() != "rtsp" && url.scheme() != "rtsps" {
            return Err(format!(
                "scheme must be rtsp:// or rtsps://, not {}://",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(|h| h.is_empty()) {
            return Err("URL has no host".into());
        }
        let mut username = (!url.username().is_empty()).then(|| url.username().to_owned());
        let mut password = url.password().map(Secret::new);
        let _ = url.set_username("");
        let _ = url.set_password(None);
        if let Some(u) = &self.username {
            username = Some(u.clone());
        }
        match (&self.password, &self.password_env) {
            (Some(_), Some(_)) => {
                return Err("give either password or password_env, not both".into());
            }
            (Some(p), None) => password = Some(p.clone()),
            (None, Some(var)) => match getenv(var) {
                Some(p) => password = Some(Secret::new(p)),
                None => {
                    return Err(format!(
                        "password_env: environment variable {var} is not set"
                    ));
                }
            },
            (None, None) => {}
        }
        if password.is_some() && username.is_none() {
            return Err("a password is given without a username".into());
        }
        Ok(ResolvedSource {
            url,
            username,
            password,
            transport: self.transport,
            connect_timeout_s: self.connect_timeout_s,
            stall_timeout_s: self.stall_timeout_s,
            allow_basic_auth: self.allow_basic_auth,
        })
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string(), &|k| {
            std::env::var(k).ok()
        })
    }

    /// Parses and validates; `source_name` is used in error messages.
    pub fn from_toml_str(
        text: &str,
        source_name: &str,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            source_name: source_name.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let problems = config.problems(getenv);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                source_name: source_name.to_owned(),
                problems,
            })
        }
    }

    fn problems(&self, getenv: &dyn Fn(&str) -> Option<String>) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut add = |key: String, message: String| p.push(Problem { key, message });
        let max = self.retention.max_days;
        if max == 0 || max > LEGAL_MAX_RETENTION_DAYS {
            add(
                "retention.max_days".into(),
                format!(
                    "{max} days is not allowed: the legal ceiling is {LEGAL_MAX_RETENTION_DAYS} days \
                     (Code de la sécurité intérieure, L252-5); use 1..={LEGAL_MAX_RETENTION_DAYS}"
                ),
            );
        }
        if !((1 << 20)..=(64u64 << 30)).contains(&self.storage.index_cache_bytes.0) {
            add(
                "storage.index_cache_bytes".into(),
                "must be between 1MiB and 64GiB".into(),
            );
        }
        let r = &self.recording;
        if r.writer_queue_bytes.0 < (1 << 20) {
            add(
                "recording.writer_queue_bytes".into(),
                "must be at least 1MiB".into(),
            );
        }
        // Per stream: an absurd bound (e.g. "16EB") is no bound at all on a stream's memory.
        if r.writer_queue_bytes.0 > (1 << 30) {
            add(
                "recording.writer_queue_bytes".into(),
                "must be at most 1GiB".into(),
            );
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            add(
                "server.tls_cert".into(),
                "tls_cert and tls_key must be given together".into(),
            );
        }
        if self
            .server
            .metrics_token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 16)
        {
            add(
                "server.metrics_token".into(),
                "must be at least 16 characters".into(),
            );
        }
        // Every numeric setting with a plain allowed range: one table, one message.
        let a = &self.auth;
        let ranges: [(&str, u64, RangeInclusive<u64>); 26] = [
            (
                "retention.journal_days",
                self.retention.journal_days.into(),
                365..=3650,
            ),
            (
                "retention.check_interval_s",
                self.retention.check_interval_s.into(),
                1..=3600,
            ),
            (
                "storage.verify_entries_per_s",
                self.storage.verify_entries_per_s.into(),
                1..=1_000_000,
            ),
            (
                "recording.segment_seconds",
                r.segment_seconds.into(),
                10..=300,
            ),
            ("recording.fragment_ms", r.fragment_ms.into(), 200..=5000),
            (
                "recording.flush_interval_ms",
                r.flush_interval_ms.into(),
                0..=60_000,
            ),
            (
                "recording.index_interval_ms",
                r.index_interval_ms.into(),
                0..=60_000,
            ),
            (
                "holds.max_span_days",
                self.holds.max_span_days.into(),
                1..=366,
            ),
            (
                "auth.session_idle_minutes",
                a.session_idle_minutes.into(),
                1..=1440,
            ),
            (
                "auth.session_max_hours",
                a.session_max_hours.into(),
                1..=720,
            ),
            (
                "auth.max_failed_logins",
                a.max_failed_logins.into(),
                1..=100,
            ),
            ("auth.lockout_minutes", a.lockout_minutes.into(), 1..=1440),
            (
                "auth.max_concurrent_logins",
                a.max_concurrent_logins.into(),
                1..=64,
            ),
            (
                "auth.max_queued_logins",
                a.max_queued_logins.into(),
                0..=1024,
            ),
            (
                "server.header_read_timeout_s",
                self.server.header_read_timeout_s.into(),
                1..=300,
            ),
            (
                "server.idle_timeout_s",
                self.server.idle_timeout_s.into(),
                10..=3600,
            ),
            (
                "server.request_timeout_s",
                self.server.request_timeout_s.into(),
                1..=3600,
            ),
            (
                "server.max_connections",
                self.server.max_connections.into(),
                16..=65536,
            ),
            (
                "server.max_connections_per_ip",
                self.server.max_connections_per_ip.into(),
                1..=65536,
            ),
            (
                "exports.max_running",
                self.exports.max_running.into(),
                1..=16,
            ),
            (
                "live.max_transcodes",
                self.live.max_transcodes.into(),
                0..=64,
            ),
            (
                "live.transcode_bitrate_kbps",
                self.live.transcode_bitrate_kbps.into(),
                100..=20000,
            ),
            (
                "exports.max_concurrent_per_user",
                self.exports.max_concurrent_per_user.into(),
                1..=100,
            ),
            (
                "exports.max_queued",
                self.exports.max_queued.into(),
                1..=1000,
            ),
            (
                "exports.package_lifetime_days",
                self.exports.package_lifetime_days.into(),
                1..=365,
            ),
            (
                "exports.check_interval_s",
                self.exports.check_interval_s.into(),
                1..=3600,
            ),
        ];
        for (key, v, range) in ranges {
            if !range.contains(&v) {
                add(key.into(), outside(v, &range));
            }
        }
        if self.exports.max_concurrent_per_user > self.exports.max_queued {
            add(
                "exports.max_concurrent_per_user".into(),
                format!(
                    "{} is above exports.max_queued ({})",
                    self.exports.max_concurrent_per_user, self.exports.max_queued
                ),
            );
        }
        if self.exports.quota_bytes.0 == 0 {
            add(
                "exports.quota_bytes".into(),
                "must be above 0 (no export could be made)".into(),
            );
        }
        if let Err(e) = jiff::tz::TimeZone::get(&self.server.timezone) {
            add(
                "server.timezone".into(),
                format!("unknown time zone {:?}: {e}", self.server.timezone),
            );
        }
        let check_retention = |key: String,
                               days: Option<u32>,
                               cap: u32,
                               cap_name: &str,
                               add: &mut dyn FnMut(String, String)| {
            if let Some(d) = days {
                if d == 0 {
                    add(key, "must be at least 1 day".into());
                } else if d > cap {
                    add(key, format!("{d} days exceeds {cap_name} ({cap} days)"));
                }
            }
        };
        let mut commune_ids = HashSet::new();
        for (i, c) in self.communes.iter().enumerate() {
            if let Err(e) = validate_id(&c.id) {
                add(format!("communes[{i}].id"), e);
            }
            if !commune_ids.insert(c.id.as_str()) {
                add(
                    format!("communes[{i}].id"),
                    format!("duplicate commune id {:?}", c.id),
                );
            }
            check_retention(
                format!("communes[{i}].retention_days"),
                c.retention_days,
                max.min(LEGAL_MAX_RETENTION_DAYS),
                "retention.max_days",
                &mut add,
            );
        }
        if let Some(c) = &self.cluster {
            for (key, problem) in cluster_problems(c) {
                add(key, problem);
            }
        }
        let mut camera_ids = HashSet::new();
        for (i, cam) in self.cameras.iter().enumerate() {
            if let Err(e) = validate_id(&cam.id) {
                add(format!("cameras[{i}].id"), e);
            }
            if let Some(site) = &cam.site
                && let Err(e) = validate_node_name(site)
            {
                add(format!("cameras[{i}].site"), e);
            }
            if !camera_ids.insert(cam.id.as_str()) {
                add(
                    format!("cameras[{i}].id"),
                    format!("duplicate camera id {:?}", cam.id),
                );
            }
            match self.communes.iter().find(|c| c.id == cam.commune) {
                None => add(
                    format!("cameras[{i}].commune"),
                    format!(
                        "unknown commune {:?}; declare it under [[communes]]",
                        cam.commune
                    ),
                ),
                Some(c) => {
                    let cap = c
                        .retention_days
                        .unwrap_or(max)
                        .min(max)
                        .min(LEGAL_MAX_RETENTION_DAYS);
                    check_retention(
                        format!("cameras[{i}].retention_days"),
                        cam.retention_days,
                        cap,
                        "its commune's retention",
                        &mut add,
                    );
                }
            }
            if let Err(e) = cam.onvif_access(getenv) {
                add(format!("cameras[{i}].onvif"), e);
            }
            if let Some(e) = &cam.edge_fill {
                let at = format!("cameras[{i}].edge_fill");
                if cam.onvif.is_none() {
                    add(
                        at.clone(),
                        "needs the camera's onvif device (the recording is found and replayed over ONVIF)".into(),
                    );
                }
                if !(60..=86_400).contains(&e.window_s) {
                    add(
                        format!("{at}.window_s"),
                        format!("{} is outside 60..=86400", e.window_s),
                    );
                }
                if e.min_gap_s == 0 || e.min_gap_s > e.window_s {
                    add(
                        format!("{at}.min_gap_s"),
                        format!("{} is outside 1..=window_s ({})", e.min_gap_s, e.window_s),
                    );
                }
                match (&e.stream, cam.edge_fill_stream()) {
                    (Some(n), None) => add(format!("{at}.stream"), format!("no stream {n:?}")),
                    (_, Some(st)) if !st.declared_role().records() => add(
                        format!("{at}.stream"),
                        format!("stream {:?} is not recorded (role = \"live\")", st.name),
                    ),
                    (None, None) => add(at.clone(), "the camera has no recorded stream".into()),
                    _ => {}
                }
            }
            for (j, e) in crate::masks::problems(&cam.masks) {
                match j {
                    Some(j) => add(format!("cameras[{i}].masks[{j}]"), e),
                    None => add(format!("cameras[{i}].masks"), e),
                }
            }
            if cam.streams.is_empty() {
                add(
                    format!("cameras[{i}].streams"),
                    "a camera needs at least one [[cameras.streams]]".into(),
                );
            }
            if !cam.streams.is_empty() && !cam.streams.iter().any(|s| s.declared_role().records()) {
                add(
                    format!("cameras[{i}].streams"),
                    format!(
                        "camera {:?} has no stream to record: every stream has role = \"live\"; give the main stream role = \"record\" (or \"both\")",
                        cam.id
                    ),
                );
            }
            let live: Vec<&str> = cam
                .streams
                .iter()
                .filter(|s| s.declared_role().serves_live())
                .map(|s| s.name.as_str())
                .collect();
            if live.len() > 1 {
                add(
                    format!("cameras[{i}].streams"),
                    format!(
                        "camera {:?} has {} streams with the live role ({}): the live wall shows one; give the others role = \"record\"",
                        cam.id,
                        live.len(),
                        live.join(", ")
                    ),
                );
            }
            let mut names = HashSet::new();
            for (j, s) in cam.streams.iter().enumerate() {
                let key = format!("cameras[{i}].streams[{j}]");
                if let Err(e) = validate_id(&s.name) {
                    add(format!("{key}.name"), e);
                }
                if !names.insert(s.name.as_str()) {
                    add(
                        format!("{key}.name"),
                        format!("duplicate stream name {:?}", s.name),
                    );
                }
                if let Err(e) = cam.resolve_stream(s, getenv) {
                    add(format!("{key}.url"), e);
                }
                for (name, v, range) in [
                    ("connect_timeout_s", s.connect_timeout_s, 1..=120),
                    ("stall_timeout_s", s.stall_timeout_s, 1..=300),
                ] {
                    if !range.contains(&v) {
                        add(format!("{key}.{name}"), outside(v, &range));
                    }
                }
            }
        }
        p
    }

    /// The camera list as the cluster compares it between nodes: a SHA-256 over each camera's
    /// id, site and streams (name, URL without credentials, transport, recorded), in configuration
    /// order. Names, communes and retention do not take part (they do not change who records
    /// what).
    pub fn cameras_hash(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for cam in &self.cameras {
            h.update(format!("cam {:?} site {:?}\n", cam.id, cam.site));
            for s in &cam.streams {
                h.update(format!(
                    "  stream {:?} {:?} {:?} recorded {}\n",
                    s.name,
                    redact_url(&s.url),
                    s.transport,
                    cam.records(&s.name)
                ));
            }
        }
        hex::encode(h.finalize())
    }

    /// Every configured stream, in configuration order.
    pub fn streams(&self) -> impl Iterator<Item = (StreamKey, &Camera, &StreamConfig)> {
        self.cameras.iter().flat_map(|c| {
            c.streams
                .iter()
                .map(move |s| (StreamKey::new(&c.id, &s.name), c, s))
        })
    }

    pub fn camera(&self, id: &str) -> Option<&Camera> {
        self.cameras.iter().find(|c| c.id == id)
    }

    /// Communes whose prefectoral authorisation has expired or expires within `warn_days` of
    /// `today`, with the number of days left (negative when expired).
    pub fn authorisation_warnings(
        &self,
        today: jiff::civil::Date,
        warn_days: i64,
    ) -> Vec<AuthorisationWarning> {
        self.communes
            .iter()
            .filter_map(|c| {
                let expires = c.authorisation_expires?;
                let days_left = (expires - today).get_days() as i64;
                (days_left <= warn_days).then(|| AuthorisationWarning {
                    commune: c.id.clone(),
                    authorisation: c.authorisation.clone(),
                    expires,
                    days_left,
                })
            })
            .collect()
    }

    /// Effective retention of a camera in days: the smallest of the legal ceiling,
    /// `retention.max_days`, its commune's and its own.
    pub fn retention_days(&self, camera: &Camera) -> u32 {
        let commune = self
            .communes
            .iter()
            .find(|c| c.id == camera.commune)
            .and_then(|c| c.retention_days);
        [
            Some(LEGAL_MAX_RETENTION_DAYS),
            Some(self.retention.max_days),
            commune,
            camera.retention_days,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(LEGAL_MAX_RETENTION_DAYS)
    }
}

/// The message for a setting outside its allowed range.
fn outside<T: std::fmt::Display>(v: T, range: &RangeInclusive<T>) -> String {
    format!("{v} is outside {}..={}", range.start(), range.end())
}

/// Problems of a `[cluster]` section (keys under `cluster.`).
fn cluster_problems(c: &ClusterConfig) -> Vec<(String, String)> {
    let mut p = Vec::new();
    if c.etcd.is_empty() {
        p.push((
            "cluster.etcd".into(),
            "give at least one etcd endpoint, e.g. [\"http://127.0.0.1:2379\"]".into(),
        ));
    }
    let mut https = false;
    for (i, e) in c.etcd.iter().enumerate() {
        match url::Url::parse(e) {
            Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {
                https |= u.scheme() == "https";
                if !u.username().is_empty() || u.password().is_some() {
                    p.push((
                        format!("cluster.etcd[{i}]"),
                        "must not carry credentials (use etcd_cert_file/etcd_key_file)".into(),
                    ));
                }
            }
            _ => p.push((
                format!("cluster.etcd[{i}]"),
                format!("{e:?} is not an http:// or https:// endpoint with a host"),
            )),
        }
    }
    if !https && (c.etcd_ca_file.is_some() || c.etcd_cert_file.is_some()) {
        p.push((
            "cluster.etcd_ca_file".into(),
            "TLS files are given but no etcd endpoint is https://".into(),
        ));
    }
    if c.etcd_cert_file.is_some() != c.etcd_key_file.is_some() {
        p.push((
            "cluster.etcd_cert_file".into(),
            "etcd_cert_file and etcd_key_file must be given together".into(),
        ));
    }
    if let Err(e) = validate_node_name(&c.node) {
        p.push(("cluster.node".into(), e));
    }
    if c.secret_env.is_some() && c.secret_file.is_some() {
        p.push((
            "cluster.secret_env".into(),
            "give either secret_env or secret_file, not both".into(),
        ));
    }
    if let Some(site) = &c.site
        && let Err(e) = validate_node_name(site)
    {
        p.push(("cluster.site".into(), e));
    }
    match url::Url::parse(&c.advertise_url) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {}
        _ => p.push((
            "cluster.advertise_url".into(),
            format!(
                "{:?} is not an http:// or https:// URL with a host",
                c.advertise_url
            ),
        )),
    }
    for (key, v, range) in [
        ("capacity_streams", c.capacity_streams, 1..=100_000),
        ("lease_ttl_s", c.lease_ttl_s, 2..=60),
        ("drain_timeout_s", c.drain_timeout_s, 1..=3600),
        ("holds_max_age_s", c.holds_max_age_s, 10..=86_400),
    ] {
        if !range.contains(&v) {
            p.push((format!("cluster.{key}"), outside(v, &range)));
        }
    }
    let prefix_ok = c.prefix.starts_with('/')
        && c.prefix.len() > 1
        && !c.prefix.ends_with('/')
        && c.prefix
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "/-_".contains(ch));
    if !prefix_ok {
        p.push((
            "cluster.prefix".into(),
            format!(
                "{:?} must start with '/', not end with '/', and use only letters, digits, '/', '-', '_'",
                c.prefix
            ),
        ));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"
[storage]
data_dir = "/var/lib/vigie"
min_free_bytes = "20GiB"
[retention]
max_days = 30
[[communes]]
id = "versailles"
name = "Versailles"
authorisation = "2024/78/0123"
authorisation_expires = "2029-06-30"
retention_days = 15
[[cameras]]
id = "versailles-gare-rd"
name = "Gare Rive Droite — parvis"
commune = "versailles"
class = "close-up"
  [[cameras.streams]]
  name = "main"
  url = "rtsp://10.1.2.3/Streaming/Channels/101"
  username = "recorder"
  password_env = "VIGIE_CAM_VERSAILLES_GARE"
  transport = "tcp"
"#;

    fn env(k: &str) -> Option<String> {
        (k == "VIGIE_CAM_VERSAILLES_GARE").then(|| "s3cret".to_owned())
    }

    #[test]
    fn good_config() {
        let c = Config::from_toml_str(GOOD, "t", &env).unwrap();
        assert_eq!(c.storage.min_free_bytes, ByteSize(20 << 30));
        assert_eq!(c.retention_days(&c.cameras[0]), 15);
        let (key, _, s) = c.streams().next().unwrap();
        assert_eq!(key.to_string(), "versailles-gare-rd/main");
        let r = s.resolve(&env).unwrap();
        assert_eq!(r.password.unwrap().expose(), "s3cret");
        assert!(!format!("{:?}", c).contains("s3cret"));
    }

    #[test]
    fn timezone_defaults_to_paris_and_is_validated() {
        let c = Config::from_toml_str(GOOD, "t", &env).unwrap();
        assert_eq!(c.server.timezone, "Europe/Paris");
        let text = GOOD.replace("[server]\n", "[server]\ntimezone = \"America/Cayenne\"\n");
        let c = Config::from_toml_str(&text, "t", &env).unwrap();
        assert_eq!(c.server.timezone, "America/Cayenne");
        let text = GOOD.replace("[server]\n", "[server]\ntimezone = \"Mars/Olympus\"\n");
        let err = Config::from_toml_str(&text, "t", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.timezone"), "{err}");
    }

    #[test]
    fn auth_section_is_optional_and_validated() {
        let c = Config::from_toml_str(GOOD, "t", &env).unwrap();
        assert_eq!(c.auth.session_idle_minutes, 30);
        assert_eq!(c.auth.max_failed_logins, 5);
        let text = format!("{GOOD}\n[auth]\nsession_idle_minutes = 10\nlockout_minutes = 1\n");
        let c = Config::from_toml_str(&text, "t", &env).unwrap();
        assert_eq!(
            (c.auth.session_idle_minutes, c.auth.lockout_minutes),
            (10, 1)
        );
        let text = format!("{GOOD}\n[auth]\nmax_failed_logins = 0\nsession_max_hours = 1000\n");
        let err = Config::from_toml_str(&text, "t", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.max_failed_logins"), "{err}");
        assert!(err.contains("auth.session_max_hours"), "{err}");
        let text = GOOD.replace("[server]\n", "[server]\nmetrics_token = \"short\"\n");
        let err = Config::from_toml_str(&text, "t", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.metrics_token"), "{err}");
        assert!(!err.contains("short"), "{err}");
    }

    #[test]
    fn holds_max_span_defaults_to_31_days_and_is_validated() {
        let c = Config::from_toml_str(GOOD, "t", &env).unwrap();
        assert_eq!(c.holds.max_span_days, 31);
        let c = Config::from_toml_str(&format!("{GOOD}\n[holds]\nmax_span_days = 7\n"), "t", &env)
            .unwrap();
        assert_eq!(c.holds.max_span_days, 7);
        for bad in ["0", "367"] {
            let text = format!("{GOOD}\n[holds]\nmax_span_days = {bad}\n");
            let err = Config::from_toml_str(&text, "t", &env)
                .unwrap_err()
                .to_string();
            assert!(err.contains("holds.max_span_days"), "{err}");
        }
    }

    #[test]
    fn index_interval_defaults_to_10_s_and_is_bounded() {
        let c = Config::from_toml_str(GOOD, "t", &env).unwrap();
        assert_eq!(c.recording.index_interval_ms, 10_000);
        assert_eq!(c.recording.flush_interval_ms, 2_000);
        let text = format!("{GOOD}\n[recording]\nindex_interval_ms = 0\n");
        let c = Config::from_toml_str(&text, "t", &env).unwrap();
        assert_eq!(c.recording.index_interval_ms, 0);
        let text = format!("{GOOD}\n[recording]\nindex_interval_ms = 60001\n");
        let err = Config::from_toml_str(&text, "t", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("recording.index_interval_ms"), "{err}");
    }

    #[test]
    fn retention_above_ceiling_is_refused() {
        let text = GOOD.replace("max_days = 30", "max_days = 31");
        let err = Config::from_toml_str(&text, "t", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("retention.max_days"), "{err}");
        assert!(err.contains("legal ceiling"), "{err}");
        let text = GOOD.replace("retention_days = 15", "retention_days = 45");
        let err = Config::from_toml_str(&text, "t", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("communes[0].retention_days"), "{err}");
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::from_toml_str(GOOD, "t", &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cameras[0].streams[0].url: password_env: environment variable VIGIE_CAM_VERSAILLES_GARE is not set"), "{err}");
        let text = GOOD.replace("commune = \"versailles\"", "commune = \"paris\"");
        let err = Config::from_toml_str(&text, "t", &env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cameras[0].commune: unknown commune \"paris\""),
            "{err}"
        );
        let text = GOOD.replace("transport = \"tcp\"", "transport = \"sctp\"");
        let err = Config::from_toml_str(&text, "t", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sctp"), "{err}");
        let text = GOOD.replace("rtsp://10.1.2.3", "http://10.1.2.3");
        let err = Config::from_toml_str(&text, "t", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cameras[0].streams[0].url: scheme"), "{err}");
        let text = GOOD.replace("[retention]", "[retention]\nmax_dayz = 3");
        let err = Config::from_toml_str(&text, "t", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_dayz"), "{err}");
    }

    #[test]
    fn onvif_streams_take_their_url_from_profiles_and_the_cameras_credentials() {
        let toml = |cam_extra: &str, stream_extra: &str| {
            format!(
                "[storage]\ndata_dir = \"/tmp/x\"\n[[communes]]\nid = \"c\"\nname = \"C\"\n[[cameras]]\nid = \"dome\"\nname = \"Dome\"\ncommune = \"c\"\n{cam_extra}\n  [[cameras.streams]]\n  name = \"main\"\n  [[cameras.streams]]\n  name = \"sub\"\n  [[cameras.streams]]\n  name = \"third\"\n{stream_extra}\n"
            )
        };
        let env = |k: &str| (k == "DOME_PW").then(|| "s3cret".to_owned());
        let ok = Config::from_toml_str(
            &toml(
                "onvif = \"http://10.0.0.9/onvif/device_service\"\nusername = \"op\"\npassword_env = \"DOME_PW\"",
                "  profile = \"prof3\"",
            ),
            "test",
            &env,
        )
        .unwrap();
        let cam = &ok.cameras[0];
        let (r, o) = cam.resolve_stream(&cam.streams[1], &env).unwrap();
        assert_eq!(o.unwrap().profile, ProfileRef::Index(1));
        assert_eq!(r.username.as_deref(), Some("op"));
        assert_eq!(r.password.as_ref().map(Secret::expose), Some("s3cret"));
        let (_, o) = cam.resolve_stream(&cam.streams[2], &env).unwrap();
        assert_eq!(o.unwrap().profile, ProfileRef::Token("prof3".into()));
        // No onvif: streams without url are refused, naming the key.
        let err = Config::from_toml_str(&toml("", ""), "test", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cameras[0].streams[0].url: no url"), "{err}");
        // A third stream needs its profile named.
        let err = Config::from_toml_str(
            &toml("onvif = \"http://10.0.0.9/onvif/device_service\"", ""),
            "test",
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("cameras[0].streams[2].url: no url: name the ONVIF profile"),
            "{err}"
        );
        // Credentials in the ONVIF URL are refused and not echoed.
        let err = Config::from_toml_str(
            &toml(
                "onvif = \"http://op:pw9@10.0.0.9/onvif/device_service\"",
                "",
            ),
            "test",
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("cameras[0].onvif: credentials in the URL are refused"),
            "{err}"
        );
        assert!(!err.contains("pw9"), "{err}");
    }

    #[test]
    fn edge_fill_is_off_by_default_and_validated() {
        let toml = |cam_extra: &str| {
            format!(
                "[storage]\ndata_dir = \"/tmp/x\"\n[[communes]]\nid = \"c\"\nname = \"C\"\n[[cameras]]\nid = \"dome\"\nname = \"Dome\"\ncommune = \"c\"\n{cam_extra}\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"rtsp://10.0.0.9/main\"\n  [[cameras.streams]]\n  name = \"sub\"\n  url = \"rtsp://10.0.0.9/sub\"\n  role = \"live\"\n"
            )
        };
        let env = |_: &str| None;
        let onvif = "onvif = \"http://10.0.0.9/onvif/device_service\"\n";
        let c = Config::from_toml_str(&toml(onvif), "test", &env).unwrap();
        assert!(c.cameras[0].edge_fill.is_none());
        let c = Config::from_toml_str(&toml(&format!("{onvif}edge_fill = {{}}")), "test", &env)
            .unwrap();
        let e = c.cameras[0].edge_fill.as_ref().unwrap();
        assert_eq!((e.window_s, e.min_gap_s), (3600, 5));
        assert_eq!(c.cameras[0].edge_fill_stream().unwrap().name, "main");
        for (extra, want) in [
            (
                "edge_fill = {}",
                "cameras[0].edge_fill: needs the camera's onvif device",
            ),
            (
                "edge_fill = { window_s = 10 }",
                "cameras[0].edge_fill.window_s: 10 is outside 60..=86400",
            ),
            (
                "edge_fill = { window_s = 600, min_gap_s = 601 }",
                "cameras[0].edge_fill.min_gap_s: 601 is outside 1..=window_s (600)",
            ),
            (
                "edge_fill = { stream = \"nope\" }",
                "cameras[0].edge_fill.stream: no stream \"nope\"",
            ),
            (
                "edge_fill = { stream = \"sub\" }",
                "stream \"sub\" is not recorded",
            ),
            ("edge_fill = { windows = 60 }", "unknown field `windows`"),
        ] {
            let cam = if extra.contains("stream") || extra.contains("window") {
                format!("{onvif}{extra}")
            } else {
                extra.to_owned()
            };
            let err = Config::from_toml_str(&toml(&cam), "test", &env)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{extra}: {err}");
        }
    }

    #[test]
    fn credentials_in_url_are_extracted_and_redacted() {
        let s = StreamConfig {
            name: "main".into(),
            url: "rtsp://admin:hunter2@cam.example:554/s".into(),
            profile: None,
            username: None,
            password: None,
            password_env: None,
            transport: Transport::Tcp,
            connect_timeout_s: 10,
            stall_timeout_s: 10,
            allow_basic_auth: false,
            role: None,
        };
        let r = s.resolve(&|_| None).unwrap();
        assert_eq!(r.url.as_str(), "rtsp://cam.example:554/s");
        assert_eq!(r.username.as_deref(), Some("admin"));
        assert!(!format!("{r:?}").contains("hunter2"));
        assert_eq!(redact_url("rtsp://admin:hunter2@cam/s"), "rtsp://cam/s");
        // Query-string credentials, any case; other parameters kept.
        let r = redact_url(
            "rtsp://cam/s?user=admin&PassWord=hunter2&pwd=h3&Token=t0k&x=1&channel=2&auth=z&api_key=k",
        );
        for secret in ["admin", "hunter2", "h3", "t0k", "=z", "=k"] {
            assert!(!r.contains(secret), "{secret} in {r}");
        }
        assert!(r.contains("x=1") && r.contains("channel=2"), "{r}");
        assert!(r.contains("PassWord=***"), "{r}");
        // The configuration's Debug form (hashed into the journal) holds no credential.
        let s = StreamConfig {
            name: "main".into(),
            url: "rtsp://admin:hunter2@cam/s?password=hunter3".into(),
            profile: None,
            username: None,
            password: Some(Secret::new("hunter4")),
            password_env: None,
            transport: Transport::Tcp,
            connect_timeout_s: 10,
            stall_timeout_s: 10,
            allow_basic_auth: false,
            role: None,
        };
        let dbg = format!("{s:?} {:?}", s.resolve(&|_| None).unwrap());
        assert!(!dbg.contains("hunter"), "{dbg}");
    }

    #[test]
    fn stream_roles_default_validate_and_choose_the_wall_and_main_streams() {
        let sub = |role: &str| {
            GOOD.to_owned()
                + &format!(
                    "  [[cameras.streams]]\n  name = \"sub\"\n  url = \"rtsp://10.1.2.3/Streaming/Channels/102\"\n{role}"
                )
        };
        // No role anywhere: every stream recorded, the first one on the wall (as before roles).
        let c = Config::from_toml_str(&sub(""), "t", &env).unwrap();
        let cam = &c.cameras[0];
        assert_eq!(cam.role("main"), Some(StreamRole::Both));
        assert_eq!(cam.role("sub"), Some(StreamRole::Record));
        assert_eq!(cam.live_stream().unwrap().name, "main");
        assert_eq!(cam.record_stream().unwrap().name, "main");
        // A sub-stream for the wall: not recorded; the main one stays the recorded one.
        let c = Config::from_toml_str(&sub("  role = \"live\"\n"), "t", &env).unwrap();
        let cam = &c.cameras[0];
        assert_eq!(cam.role("main"), Some(StreamRole::Record));
        assert_eq!(cam.role("sub"), Some(StreamRole::Live));
        assert!(cam.records("main") && !cam.records("sub"));
        assert_eq!(cam.live_stream().unwrap().name, "sub");
        assert_eq!(cam.record_stream().unwrap().name, "main");
        // Nonsense is refused, naming the camera and saying what to do.
        let text = sub("  role = \"live\"\n").replace(
            "  password_env = \"VIGIE_CAM_VERSAILLES_GARE\"\n",
            "  password_env = \"VIGIE_CAM_VERSAILLES_GARE\"\n  role = \"live\"\n",
        );
        let err = Config::from_toml_str(&text, "t", &env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cameras[0].streams") && err.contains("no stream to record"),
            "{err}"
        );
        let text = sub("  role = \"both\"\n").replace(
            "  password_env = \"VIGIE_CAM_VERSAILLES_GARE\"\n",
            "  password_env = \"VIGIE_CAM_VERSAILLES_GARE\"\n  role = \"live\"\n",
        );
        let err = Config::from_toml_str(&text, "t", &env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("2 streams with the live role (main, sub)"),
            "{err}"
        );
        let err = Config::from_toml_str(&sub("  role = \"wall\"\n"), "t", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("wall") && err.contains("record"), "{err}");
    }

    #[test]
    fn authorisation_expiry_warnings() {
        let c = Config::from_toml_str(GOOD, "t", &env).unwrap();
        let d = |s: &str| -> jiff::civil::Date { s.parse().unwrap() };
        assert!(c.authorisation_warnings(d("2029-01-01"), 60).is_empty());
        let w = c.authorisation_warnings(d("2029-06-01"), 60);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].days_left, 29);
        assert!(w[0].to_string().contains("expires on 2029-06-30"));
        let w = c.authorisation_warnings(d("2029-07-10"), 60);
        assert_eq!(w[0].days_left, -10);
        assert!(w[0].to_string().contains("EXPIRED"));
    }

    #[test]
    fn index_cache_and_verify_rate_default_and_are_validated() {
        let c = Config::from_toml_str(GOOD, "t", &env).unwrap();
        assert_eq!(c.storage.index_cache_bytes, ByteSize(8 << 20));
        assert_eq!(c.storage.verify_entries_per_s, 2000);
        let text = GOOD.replace(
            "[storage]\n",
            "[storage]\nindex_cache_bytes = \"256MiB\"\nverify_entries_per_s = 500\n",
        );
        let c = Config::from_toml_str(&text, "t", &env).unwrap();
        assert_eq!(c.storage.index_cache_bytes, ByteSize(256 << 20));
        assert_eq!(c.storage.verify_entries_per_s, 500);
        for (line, key) in [
            ("index_cache_bytes = \"1kB\"", "storage.index_cache_bytes"),
            ("verify_entries_per_s = 0", "storage.verify_entries_per_s"),
        ] {
            let text = GOOD.replace("[storage]\n", &format!("[storage]\n{line}\n"));
            let err = Config::from_toml_str(&text, "t", &env)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn resource_limits_have_defaults_and_are_validated() {
        let c = Config::from_toml_str(GOOD, "t", &env).unwrap();
        assert_eq!(c.server.max_connections, 512);
        assert_eq!(c.server.header_read_timeout_s, 10);
        assert!(!c.server.behind_tls_proxy);
        assert_eq!(c.auth.max_concurrent_logins, 2);
        assert_eq!(c.exports.max_concurrent_per_user, 2);
        assert_eq!(c.exports.package_lifetime_days, 7);
        assert_eq!(c.exports_min_free_bytes(), (20u64 << 30) + (2 << 30));
        assert_eq!(c.live.max_transcodes, 2);
        assert_eq!(c.live.transcode_bitrate_kbps, 2000);
        let bad = GOOD.replace(
            "[retention]",
            "[live]\nmax_transcodes = 65\ntranscode_bitrate_kbps = 5\n[exports]\nmax_running = 0\nmax_concurrent_per_user = 9\nmax_queued = 3\nquota_bytes = 0\n\
             package_lifetime_days = 0\n[auth]\nmax_concurrent_logins = 0\n[retention]",
        );
        let bad = bad.replace(
            "listen = \"127.0.0.1:8080\"",
            "listen = \"127.0.0.1:8080\"\nmax_connections = 1\nrequest_timeout_s = 0",
        );
        let e = Config::from_toml_str(&bad, "t", &env)
            .unwrap_err()
            .to_string();
        for key in [
            "live.max_transcodes",
            "live.transcode_bitrate_kbps",
            "exports.max_running",
            "exports.max_concurrent_per_user",
            "exports.quota_bytes",
            "exports.package_lifetime_days",
            "auth.max_concurrent_logins",
            "server.max_connections",
            "server.request_timeout_s",
        ] {
            assert!(e.contains(key), "{key} not reported: {e}");
        }
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("20GiB").unwrap(), ByteSize(20 << 30));
        assert_eq!(ByteSize::parse("500MB").unwrap(), ByteSize(500_000_000));
        assert_eq!(ByteSize::parse("1.5GiB").unwrap(), ByteSize(3 << 29));
        assert!(ByteSize::parse("lots").is_err());
        assert!(ByteSize::parse("5 parsecs").is_err());
    }

    #[test]
    fn masks_are_polygons_in_the_picture_and_each_mistake_is_named() {
        let with = |masks: &str| {
            GOOD.replace(
                "class = \"close-up\"\n",
                &format!("class = \"close-up\"\n{masks}\n"),
            )
        };
        let mask = |name: &str, points: &str| {
            format!("  [[cameras.masks]]\n  name = \"{name}\"\n  points = {points}\n")
        };
        let ok = Config::from_toml_str(
            &with(
                &(mask("porte 12", "[[0.1,0.2],[0.3,0.2],[0.3,0.6]]")
                    + &mask("fenêtres", "[[0.5,0.5],[0.9,0.5],[0.9,0.9],[0.5,0.9]]")),
            ),
            "t",
            &env,
        )
        .unwrap();
        let masks = &ok.cameras[0].masks;
        assert_eq!(masks.len(), 2);
        assert_eq!(masks[0].name, "porte 12");
        assert_eq!(masks[0].points[2], [0.3, 0.6]);
        // No masks: an empty list.
        let plain = Config::from_toml_str(GOOD, "t", &env).unwrap();
        assert!(plain.cameras[0].masks.is_empty());
        let err = |masks: String| {
            Config::from_toml_str(&with(&masks), "t", &env)
                .unwrap_err()
                .to_string()
        };
        let e = err(mask("p", "[[0.1,0.2],[0.3,0.2]]"));
        assert!(
            e.contains(
                "cameras[0].masks[0]: mask \"p\" has 2 point(s): a polygon needs at least 3"
            ),
            "{e}"
        );
        let e = err(mask("p", "[[0.1,0.2],[1.3,0.2],[0.3,0.6]]"));
        assert!(
            e.contains("cameras[0].masks[0]: mask \"p\" point 2 [1.3, 0.2] is outside the picture"),
            "{e}"
        );
        let e = err(mask("p", "[[0.1,0.2],[0.3,-0.2],[0.3,0.6]]"));
        assert!(e.contains("point 2 [0.3, -0.2] is outside"), "{e}");
        let e = err(mask("p", "[[0.1,0.1],[0.2,0.2],[0.3,0.3]]"));
        assert!(
            e.contains("cameras[0].masks[0]: mask \"p\" is degenerate"),
            "{e}"
        );
        let e = err(mask("", "[[0.1,0.2],[0.3,0.2],[0.3,0.6]]"));
        assert!(e.contains("cameras[0].masks[0]: name is empty"), "{e}");
        let tri = "[[0.1,0.2],[0.3,0.2],[0.3,0.6]]";
        let e = err(mask("a", tri) + &mask("a", tri));
        assert!(
            e.contains("cameras[0].masks[1]: mask name \"a\" is used twice"),
            "{e}"
        );
        let many: String = (0..=crate::masks::MAX_MASKS_PER_CAMERA)
            .map(|i| mask(&format!("m{i}"), tri))
            .collect();
        let e = err(many);
        assert!(
            e.contains("cameras[0].masks: 17 masks: at most 16 per camera"),
            "{e}"
        );
        let long: String = format!(
            "[{}]",
            (0..17)
                .map(|i| {
                    let a = f64::from(i) * std::f64::consts::TAU / 17.0;
                    format!("[{},{}]", 0.5 + 0.4 * a.cos(), 0.5 + 0.4 * a.sin())
                })
                .collect::<Vec<_>>()
                .join(",")
        );
        let e = err(mask("round", &long));
        assert!(
            e.contains("mask \"round\" has 17 points: at most 16"),
            "{e}"
        );
        // A misspelt key is refused too.
        let e = err("  [[cameras.masks]]\n  name = \"x\"\n  pointz = [[0.1,0.2]]\n".into());
        assert!(e.contains("pointz"), "{e}");
    }
}

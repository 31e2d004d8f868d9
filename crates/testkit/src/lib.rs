//! Vigie's test kit: support for the end-to-end tests (`crates/vigie/tests/e2e/`, one test
//! binary of the `vigie` package, which start the real binary), for ingest's tests against
//! GStreamer's RTSP server, and for `vigie-bench soak`.
//!
//! Owns: starting and stopping the `vigie` binary on a temporary data directory, talking to its
//! HTTP API, and validating media files with independent tools (ffmpeg, ffprobe). With feature
//! `gst`, [`gst_server`] provides GStreamer's RTSP server as an independent camera. [`etcd`]
//! runs a real etcd cluster and [`cluster`] several Vigie nodes on it (the cluster tests and
//! `vigie-bench failover`).

pub mod browser;
pub mod cluster;
pub mod etcd;
#[cfg(feature = "gst")]
pub mod gst_server;
pub mod live;
pub mod media;
pub mod playback;
pub mod process;
pub mod sim;
pub mod soak;
pub mod tmpfs;

pub use process::{Vigie, VigieBuilder};

/// Where the committed fixtures live.
pub fn fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

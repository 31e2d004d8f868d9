//! Test support for Vigie's end-to-end tests (the `tests/e2e/*.rs` targets of the `vigie`
//! package, which start the real binary).
//!
//! Owns: starting and stopping the `vigie` binary on a temporary data directory, talking to its
//! HTTP API, and validating media files with independent tools (ffmpeg, ffprobe). With feature
//! `gst`, [`gst_server`] provides GStreamer's RTSP server as an independent camera.

pub mod browser;
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
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

//! Decoding recorded video with GStreamer: the one crate of Vigie that links GStreamer, and
//! only with its `gst` cargo feature.
//!
//! Owns: JPEG stills of the picture shown at an instant ([`still`], for `snapshot.jpg` and the
//! derived stills of evidence exports), the burned-in working copy of an export ([`burnin`]),
//! the privacy masks painted on both ([`masks`], attachable to any raw-video pad),
//! the H.264 fallback for browsers without an H.265 decoder ([`transcode`]: live frames or a
//! recorded range re-encoded, and the bound on concurrent transcodes),
//! and the list of GStreamer elements these need with their Debian packages
//! ([`gst_elements`], checked at start).
//!
//! Does not own: where frames come from (the store, the live hub) or what the results are for
//! (HTTP answers, export packages). Without the `gst` feature the modules are absent,
//! [`AVAILABLE`] is `false` and callers answer "not built" ([`StillError::NotBuilt`]).

#[cfg(feature = "gst")]
pub mod burnin;
#[cfg(feature = "gst")]
pub mod gst_elements;
#[cfg(feature = "gst")]
pub mod masks;
#[cfg(feature = "gst")]
mod samples;
#[cfg(feature = "gst")]
pub mod still;
pub mod transcode;

/// Whether this build can decode (the `gst` cargo feature).
pub const AVAILABLE: bool = cfg!(feature = "gst");

/// Why a still (or a burned-in copy) could not be made.
#[derive(Debug, thiserror::Error)]
pub enum StillError {
    #[error("{0}")]
    NoRecording(String),
    #[error("GStreamer: {0}")]
    Gst(String),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] vigie_store::StoreError),
    #[error("stored codec parameters are unusable: {0}")]
    Params(String),
    /// The decode could not run (its task failed, or the decoder slots are closed).
    #[error("{0}")]
    Unavailable(String),
    /// This build has no decoder (built without the `gst` cargo feature).
    #[error("decoding needs the `gst` cargo feature (GStreamer)")]
    NotBuilt,
}

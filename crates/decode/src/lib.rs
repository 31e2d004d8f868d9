//! Decoding recorded video with GStreamer: the one crate of Vigie that links GStreamer, and
//! only with its `gst` cargo feature.
//!
//! Owns: JPEG stills of the picture shown at an instant ([`still`], for `snapshot.jpg` and the
//! derived stills of evidence exports), the burned-in working copy of an export ([`burnin`]),
//! and the list of GStreamer elements these need with their Debian packages
//! ([`gst_elements`], checked at start).
//!
//! Does not own: where frames come from (the store, the live hub) or what the results are for
//! (HTTP answers, export packages). Without the `gst` feature the modules are absent and
//! [`AVAILABLE`] is `false`; callers answer "not built" themselves.

#[cfg(feature = "gst")]
pub mod burnin;
#[cfg(feature = "gst")]
pub mod gst_elements;
#[cfg(feature = "gst")]
pub mod still;

/// Whether this build can decode (the `gst` cargo feature).
pub const AVAILABLE: bool = cfg!(feature = "gst");

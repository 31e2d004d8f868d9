//! Error type of the camsim library (loading fixtures, parsing the manifest, starting the server).

use std::path::PathBuf;

/// Errors returned by the camsim library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A fixture or manifest file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The Annex-B stream is unusable (no NAL units, no key frame, missing parameter sets…).
    #[error("invalid fixture {name}: {reason}")]
    InvalidFixture {
        /// Fixture name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The file extension does not say whether the stream is H.264 or H.265.
    #[error(
        "cannot tell the codec of {0} from its extension (expected .h264/.264 or .h265/.265/.hevc)"
    )]
    UnknownCodec(PathBuf),
    /// The fixtures manifest could not be parsed.
    #[error("parsing manifest {path}: {source}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// The TOML error.
        source: toml::de::Error,
    },
    /// A fixture name is not listed in the manifest.
    #[error("fixture {0} is not listed in the manifest")]
    NotInManifest(String),
    /// Two mounts share a name, or a mount name is empty / malformed.
    #[error("invalid mount {0:?}: names must be non-empty, unique, and made of [A-Za-z0-9._/-]")]
    InvalidMount(String),
    /// The listening socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: std::net::SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result alias for camsim.
pub type Result<T, E = Error> = std::result::Result<T, E>;

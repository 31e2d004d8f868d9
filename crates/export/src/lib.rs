//! Evidence packages of Vigie: what police receive on a judicial requisition.
//!
//! A package is one zip file holding (see README "Evidence exports"):
//!
//! | file | what |
//! |---|---|
//! | `<camera>_<stream>_<start>_<end>.mp4` | the master: native stream copy of the exact range (faststart, edit list), zip method *stored*; one per camera in a multi-camera package ([`FORMAT_MULTI`]) |
//! | `manifest.json` | camera, commune, ranges in UTC and local time, gaps, codec, operator, requester, procedure, reason, software version, SHA-256 + size of every other evidence file |
//! | `manifest.sig` | Ed25519 signature of the exact bytes of `manifest.json`, base64 (one line) |
//! | `signing-key.pub` | the installation's public key: a comment line with its hex, then PEM (SPKI) |
//! | `derive-still-NN-<UTC>.jpg` | optional derived files, listed with the master's SHA-256 |
//! | `LISEZ-MOI.txt` | how to verify (French, then English) |
//! | `player.html` | offline player: plays the MP4, shows the manifest, recomputes the SHA-256 |
//! | `SHA256SUMS` | `sha256sum -c` list of every file above (player.html included) |
//! | `SHA256SUMS.sig` | Ed25519 signature of `SHA256SUMS`, base64 |
//!
//! `player.html` embeds a copy of the manifest (so it works from `file://`), hence it cannot be
//! listed in `manifest.json`; it is covered by `SHA256SUMS` and its signature instead.
//!
//! Modules: [`key`] (the installation key), [`manifest`] (the document), [`package`] (writing),
//! [`verify`] (checking a package), and [`jobs`]: the export jobs of an installation (admission
//! and its bounds, planning the range in the store, assembling the manifest, writing the
//! package on a worker thread, journaling the outcome, deleting packages when due). No HTTP
//! here: the API validates a request and hands it to [`jobs::Exports`]. Derived stills and the
//! burned-in copy are decoded by `vigie-decode` (this crate's `gst` feature).

pub mod jobs;
pub mod key;
pub mod manifest;
pub mod package;
mod player;
pub mod verify;
mod zipdir;

pub use key::{InstallationKey, parse_public_key};
pub use manifest::{Manifest, MultiManifest};
pub use package::{
    ExtraFile, MasterReader, MultiPackageSpec, MultiWritten, PackageSpec, Written,
    write_multi_package, write_package,
};
pub use verify::{Check, VerifyReport, escape, safe_entry_name, verify};

/// File names inside a package.
pub const MANIFEST: &str = "manifest.json";
pub const MANIFEST_SIG: &str = "manifest.sig";
pub const PUBLIC_KEY: &str = "signing-key.pub";
pub const PLAYER: &str = "player.html";
pub const README: &str = "LISEZ-MOI.txt";
pub const SUMS: &str = "SHA256SUMS";
pub const SUMS_SIG: &str = "SHA256SUMS.sig";

/// Identifies the package layout in `manifest.json` (`format`).
pub const FORMAT: &str = "vigie-evidence-package/1";

/// The layout of a multi-camera package (one master MP4 per camera, one manifest
/// ([`manifest::MultiManifest`]) and one signature over all). Single-camera packages keep
/// [`FORMAT`], unchanged.
pub const FORMAT_MULTI: &str = "vigie-evidence-package/2";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("zip: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("signing key {path}: {message}")]
    Key { path: String, message: String },
    #[error("manifest: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
}

impl ExportError {
    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        ExportError::Io {
            path: path.to_string(),
            source,
        }
    }
}

/// A new export id: UTC date-time plus 32 random bits, e.g. `20261128T210000Z-3fa2b1c9`.
/// Only `[0-9A-Za-z-]`, so it is safe as a directory name.
pub fn new_export_id(now_unix_secs: i64) -> String {
    use rand::RngCore;
    let days = now_unix_secs.div_euclid(86_400);
    let secs = now_unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z-{:08x}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        rand::rngs::OsRng.next_u32()
    )
}

/// True for an id [`new_export_id`] could have made (path-safe).
pub fn valid_export_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Lowercase hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_ids_are_dated_and_path_safe() {
        let id = new_export_id(1_795_899_600); // 2026-11-28T21:00:00Z
        assert!(id.starts_with("20261128T210000Z-"), "{id}");
        assert!(valid_export_id(&id));
        assert!(!valid_export_id("../etc"));
        assert!(!valid_export_id(""));
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}

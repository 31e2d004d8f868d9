//! The fixtures manifest (`fixtures/fixtures.toml`, written by `fixtures/generate.sh`): which
//! files exist and at what frame rate to serve them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fixture::Fixture;
use crate::h26x::Codec;

/// File name of the manifest inside a fixtures directory.
pub const MANIFEST_FILE: &str = "fixtures.toml";

/// Parsed `fixtures.toml`.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// One entry per `[[fixture]]`.
    #[serde(rename = "fixture", default)]
    pub fixtures: Vec<ManifestEntry>,
}

/// One `[[fixture]]` of the manifest.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    /// File name, relative to the manifest's directory.
    pub name: String,
    /// `h264` or `h265`.
    pub codec: Codec,
    /// Width of the first picture.
    pub width: u32,
    /// Height of the first picture.
    pub height: u32,
    /// Frame rate the file was encoded for.
    pub fps: f64,
    /// Key-frame interval in frames.
    pub gop: u32,
    /// Number of frames in the file.
    pub frames: u32,
    /// Free-form remark.
    #[serde(default)]
    pub note: Option<String>,
}

impl Manifest {
    /// Reads `DIR/fixtures.toml`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Manifest> {
        let path = dir.as_ref().join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        Manifest::parse(&text, &path)
    }

    /// Parses manifest text (`path` is only used in error messages).
    pub fn parse(text: &str, path: &Path) -> Result<Manifest> {
        toml::from_str(text).map_err(|source| Error::Manifest {
            path: PathBuf::from(path),
            source,
        })
    }

    /// The entry for a file name.
    pub fn get(&self, name: &str) -> Option<&ManifestEntry> {
        self.fixtures.iter().find(|f| f.name == name)
    }

    /// Loads `DIR/NAME` at the frame rate the manifest gives for it.
    pub fn load_fixture(&self, dir: impl AsRef<Path>, name: &str) -> Result<Arc<Fixture>> {
        let entry = self
            .get(name)
            .ok_or_else(|| Error::NotInManifest(name.to_owned()))?;
        Fixture::load(dir.as_ref().join(&entry.name), entry.fps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::fixtures_dir;

    #[test]
    fn repository_manifest_matches_files() {
        let dir = fixtures_dir();
        let m = Manifest::load(&dir).unwrap();
        assert!(m.fixtures.len() >= 6);
        for e in &m.fixtures {
            let f = m.load_fixture(&dir, &e.name).unwrap();
            assert_eq!(f.codec(), e.codec, "{}", e.name);
            assert_eq!(f.frames().len() as u32, e.frames, "{}", e.name);
            assert_eq!(f.dimensions(), Some((e.width, e.height)), "{}", e.name);
            assert_eq!(
                f.frames().iter().filter(|a| a.key).count() as u32,
                e.frames / e.gop
            );
            assert_eq!(
                e.frames % e.gop,
                0,
                "{}: loops must end on a GOP boundary",
                e.name
            );
        }
        assert!(matches!(
            m.load_fixture(&dir, "missing.h264"),
            Err(Error::NotInManifest(_))
        ));
    }

    #[test]
    fn bad_manifest() {
        assert!(Manifest::parse("[[fixture]]\nname = 3", Path::new("x")).is_err());
        assert!(
            Manifest::parse("", Path::new("x"))
                .unwrap()
                .fixtures
                .is_empty()
        );
    }
}

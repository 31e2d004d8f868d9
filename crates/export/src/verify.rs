//! Verifying a package (the zip, or the folder it was unzipped into).
//!
//! Checks, each reported as one [`Check`] naming the file at fault:
//! 1. `manifest.sig` is a valid Ed25519 signature of the exact bytes of `manifest.json` by the
//!    key in `signing-key.pub` (and that key is the one the manifest declares);
//! 2. when the installation's key is given: the package's key is that key (otherwise anyone
//!    could re-sign an altered package with a key of their own);
//! 3. every file listed in the manifest is present with the listed size and SHA-256;
//! 4. `SHA256SUMS.sig` signs `SHA256SUMS`, and every file it lists (player.html included)
//!    matches;
//! 5. no other file is in the package;
//! 6. the zip is unambiguous: no two entries with one name (an unzip would keep only one of
//!    them), no unsafe entry name (absolute, `..`, backslash, control character: an unzip
//!    could write outside its folder), no symlink entry; in folder mode symlinks and other
//!    non-regular files are refused, never followed;
//! 7. with an expected key (`--key HEX`, or the installation's key with `--config`): the package
//!    is signed by it.
//!
//! A multi-camera package (format 2, `cameras` in the manifest) gets the same checks: every
//! camera's master is a file of the manifest, so each is hashed; in addition each camera's
//! `video.file` must be listed as a master.
//!
//! The verdict is VALID only if every check passes. Everything printed that comes from the
//! package (names, manifest fields, error texts) goes through [`escape`]: a package cannot
//! draw its own "VALID" line with terminal escape sequences or reorder text with bidi
//! overrides.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::{ExportError, MANIFEST, MANIFEST_SIG, PUBLIC_KEY, SUMS, SUMS_SIG};

/// One check and its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// What was checked, usually a file name (`manifest.json (signature)`, `…mp4`).
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

/// The outcome of [`verify`].
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    pub package: PathBuf,
    pub checks: Vec<Check>,
    /// The package's public key (hex), when readable.
    pub public_key_hex: Option<String>,
    /// Export id, camera, procedure and actual range from the manifest, when readable.
    pub summary: Option<String>,
}

impl VerifyReport {
    /// True when every check passed (and there was at least one).
    pub fn ok(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }
    fn check(&mut self, what: impl Into<String>, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            what: what.into(),
            ok,
            detail: detail.into(),
        });
    }
}

/// Makes an untrusted string safe to print on a terminal: control characters (ESC, CR, BEL,
/// …), bidi overrides and isolates, and other invisible format characters become visible
/// `\u{..}` escapes; a backslash becomes `\\` so an escape cannot be faked.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let invisible = matches!(c,
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}'
            | '\u{061c}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}');
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() || invisible {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "package: {}",
            escape(&self.package.display().to_string())
        )?;
        if let Some(s) = &self.summary {
            writeln!(f, "{}", escape(s))?;
        }
        if let Some(k) = &self.public_key_hex {
            writeln!(f, "signing key (Ed25519): {k}")?;
        }
        for c in &self.checks {
            let mark = if c.ok { "ok  " } else { "FAIL" };
            writeln!(f, "  [{mark}] {}: {}", escape(&c.what), escape(&c.detail))?;
        }
        if self.ok() {
            write!(
                f,
                "VALID — intègre et signé / intact and signed ({} checks passed)",
                self.checks.len()
            )
        } else {
            let names: Vec<String> = self.failures().map(|c| escape(&c.what)).collect();
            write!(
                f,
                "INVALID — paquet altéré ou incomplet / package altered or incomplete: {}",
                names.join(", ")
            )
        }
    }
}

/// Where the files are read from.
enum Source {
    Zip(zip::ZipArchive<std::fs::File>),
    Dir(PathBuf),
}

/// At most this many entries (a package has about ten): bounds the work on a hostile zip.
const MAX_ENTRIES: usize = 10_000;

/// True for an entry name an unzip may write without leaving its folder or hiding text: not
/// empty, not absolute, no `..` or `.` component, no backslash (a separator on Windows), no
/// control character.
pub fn safe_entry_name(name: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(name) else {
        return false;
    };
    let unsafe_name = s.is_empty()
        || s.starts_with('/')
        || s.contains('\\')
        || s.chars().any(char::is_control)
        || s.split('/').any(|c| c == ".." || c == ".")
        // A Windows drive (`C:`).
        || (s.len() >= 2 && s.as_bytes()[1] == b':');
    !unsafe_name
}

impl Source {
    /// The names present, with a failed check for each duplicate, unsafe or non-regular entry.
    fn names(
        &mut self,
        path: &Path,
        r: &mut VerifyReport,
    ) -> Result<BTreeSet<String>, ExportError> {
        match self {
            Source::Zip(z) => {
                // The zip reader keeps one entry per name: count the central directory itself.
                match crate::zipdir::central_directory_names(path, MAX_ENTRIES) {
                    Ok(raw) => {
                        let mut seen = std::collections::BTreeMap::<&[u8], usize>::new();
                        for n in &raw {
                            *seen.entry(n.as_slice()).or_default() += 1;
                        }
                        for (n, count) in seen {
                            let shown = String::from_utf8_lossy(n).into_owned();
                            if count > 1 {
                                r.check(
                                    &shown,
                                    false,
                                    format!("duplicate entry: {count} entries have this name (an unzip keeps only one of them)"),
                                );
                            }
                            if !safe_entry_name(n) {
                                r.check(
                                    &shown,
                                    false,
                                    "unsafe entry name (absolute, `..`, backslash or control character): an unzip could write outside its folder",
                                );
                            }
                        }
                    }
                    Err(e) => r.check("zip central directory", false, e),
                }
                for i in 0..z.len().min(MAX_ENTRIES) {
                    if let Ok(f) = z.by_index_raw(i)
                        && f.is_symlink()
                    {
                        let name = f.name().to_owned();
                        r.check(
                            name,
                            false,
                            "a symlink entry (an unzip would create a link)",
                        );
                    }
                }
                Ok(z.file_names()
                    .take(MAX_ENTRIES)
                    .map(str::to_owned)
                    .collect())
            }
            Source::Dir(d) => {
                let mut out = BTreeSet::new();
                for e in std::fs::read_dir(&*d).map_err(|e| ExportError::io(d.display(), e))? {
                    let e = e.map_err(|e| ExportError::io(d.display(), e))?;
                    let name = e.file_name().to_string_lossy().into_owned();
                    // DirEntry::file_type does not follow symlinks.
                    match e.file_type() {
                        Ok(t) if t.is_symlink() => r.check(
                            &name,
                            false,
                            "a symlink (not followed: the package's files must be in the folder)",
                        ),
                        Ok(t) if !t.is_file() => r.check(&name, false, "not a regular file"),
                        Ok(_) => {}
                        Err(err) => r.check(&name, false, format!("unreadable: {err}")),
                    }
                    out.insert(name);
                    if out.len() > MAX_ENTRIES {
                        return Err(ExportError::Invalid(format!(
                            "more than {MAX_ENTRIES} files in the folder"
                        )));
                    }
                }
                Ok(out)
            }
        }
    }

    /// Streams a file through `f`; `Ok(None)` if absent.
    fn with_reader<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut dyn Read) -> std::io::Result<T>,
    ) -> Result<Option<T>, String> {
        match self {
            Source::Zip(z) => {
                let mut file = match z.by_name(name) {
                    Ok(file) => file,
                    Err(zip::result::ZipError::FileNotFound) => return Ok(None),
                    Err(e) => return Err(e.to_string()),
                };
                f(&mut file).map(Some).map_err(|e| e.to_string())
            }
            Source::Dir(d) => {
                if !crate::package::safe_name(name) {
                    return Err(format!("unsafe file name {name:?}"));
                }
                let path = d.join(name);
                // Never follow a symlink, never open a FIFO or device (it could block or
                // serve anything): a regular file, and the one opened is the one checked.
                let before = match std::fs::symlink_metadata(&path) {
                    Ok(m) => m,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e.to_string()),
                };
                if !before.file_type().is_file() {
                    return Err("not a regular file (symlinks are not followed)".into());
                }
                let mut file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
                let after = file.metadata().map_err(|e| e.to_string())?;
                {
                    use std::os::unix::fs::MetadataExt;
                    if (before.dev(), before.ino()) != (after.dev(), after.ino()) {
                        return Err("replaced while being verified".into());
                    }
                }
                f(&mut file).map(Some).map_err(|e| e.to_string())
            }
        }
    }

    fn read_small(&mut self, name: &str) -> Result<Option<Vec<u8>>, String> {
        self.with_reader(name, |r| {
            let mut v = Vec::new();
            r.take(64 << 20).read_to_end(&mut v)?;
            Ok(v)
        })
    }

    fn hash(&mut self, name: &str) -> Result<Option<(String, u64)>, String> {
        self.with_reader(name, |r| {
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                total += n as u64;
            }
            Ok((hex::encode(h.finalize()), total))
        })
    }
}

/// The lines of the summary naming where a cluster export's footage came from (`recorders`)
/// and what could not be reached (`unavailable`); empty for other manifests (single node, or
/// made before these fields existed).
fn sources(m: &serde_json::Value, indent: &str) -> String {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_owned();
    let mut out = String::new();
    for (field, label) in [
        ("recorders", "recorded by"),
        ("unavailable", "NOT in the video, held by unreachable node"),
    ] {
        for x in m[field].as_array().into_iter().flatten().take(MAX_ENTRIES) {
            out.push_str(&format!(
                "\n{indent}{label} {}: {} → {}",
                s(&x["node"]),
                s(&x["start"]["utc"]),
                s(&x["end"]["utc"]),
            ));
        }
    }
    out
}

fn check_sig(key: &VerifyingKey, message: &[u8], sig_text: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(sig_text).map_err(|_| "not text".to_owned())?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    let sig = Signature::from_slice(&raw).map_err(|e| format!("not a signature: {e}"))?;
    key.verify_strict(message, &sig)
        .map_err(|_| "the signature does not match: the file was altered".to_owned())
}

/// Verifies the package at `path` (a zip file or a directory). With `expected_key` (the
/// installation's public key), also checks the package was signed by it. `Err` only when the
/// package cannot be opened at all; everything else is a failed [`Check`].
pub fn verify(
    path: &Path,
    expected_key: Option<&VerifyingKey>,
) -> Result<VerifyReport, ExportError> {
    let mut src = if path.is_dir() {
        Source::Dir(path.to_owned())
    } else {
        let f = std::fs::File::open(path).map_err(|e| ExportError::io(path.display(), e))?;
        Source::Zip(zip::ZipArchive::new(f)?)
    };
    let mut r = VerifyReport {
        package: path.to_owned(),
        ..Default::default()
    };
    let names = src.names(path, &mut r)?;
    let mut covered: BTreeSet<String> = [MANIFEST, MANIFEST_SIG, SUMS, SUMS_SIG]
        .iter()
        .map(|s| s.to_string())
        .collect();

    // The key.
    let key = match src.read_small(PUBLIC_KEY) {
        Ok(Some(b)) => match crate::key::parse_public_key(&String::from_utf8_lossy(&b)) {
            Ok(k) => Some(k),
            Err(e) => {
                r.check(PUBLIC_KEY, false, format!("unreadable public key: {e}"));
                None
            }
        },
        Ok(None) => {
            r.check(PUBLIC_KEY, false, "missing");
            None
        }
        Err(e) => {
            r.check(PUBLIC_KEY, false, format!("unreadable: {e}"));
            None
        }
    };
    r.public_key_hex = key.map(|k| hex::encode(k.as_bytes()));
    if let Some(want) = expected_key {
        let same = key.as_ref() == Some(want);
        r.check(
            format!("{PUBLIC_KEY} (installation key)"),
            same,
            if same {
                "the package is signed with the expected key".to_owned()
            } else if let Some(k) = &key {
                format!(
                    "signed with key {}, but the expected key is {}",
                    hex::encode(k.as_bytes()),
                    hex::encode(want.as_bytes())
                )
            } else {
                format!(
                    "no readable key in the package; the expected key is {}",
                    hex::encode(want.as_bytes())
                )
            },
        );
    }

    // The manifest and its signature.
    let manifest_bytes = match src.read_small(MANIFEST) {
        Ok(Some(b)) => Some(b),
        Ok(None) => {
            r.check(MANIFEST, false, "missing");
            None
        }
        Err(e) => {
            r.check(MANIFEST, false, format!("unreadable: {e}"));
            None
        }
    };
    if let (Some(m), Some(k)) = (&manifest_bytes, &key) {
        let what = format!("{MANIFEST} (signature {MANIFEST_SIG})");
        match src.read_small(MANIFEST_SIG) {
            Ok(Some(sig)) => match check_sig(k, m, &sig) {
                Ok(()) => r.check(what, true, "valid Ed25519 signature"),
                Err(e) => r.check(what, false, e),
            },
            Ok(None) => r.check(what, false, format!("{MANIFEST_SIG} is missing")),
            Err(e) => r.check(what, false, format!("{MANIFEST_SIG} unreadable: {e}")),
        }
    }
    let manifest: Option<serde_json::Value> = match &manifest_bytes {
        Some(m) => match serde_json::from_slice(m) {
            Ok(v) => Some(v),
            Err(e) => {
                r.check(MANIFEST, false, format!("not valid JSON: {e}"));
                None
            }
        },
        None => None,
    };

    // Every file the manifest lists.
    if let Some(m) = &manifest {
        let s = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_owned();
        if let Some(cams) = m["cameras"].as_array() {
            // A multi-camera package (format 2): one line per camera.
            let mut text = format!(
                "export {} — {} cameras, procedure {}, requested {} → {}",
                s(&m["export_id"]),
                cams.len(),
                s(&m["procedure"]),
                s(&m["requested"]["start"]["utc"]),
                s(&m["requested"]["end"]["utc"]),
            );
            for c in cams.iter().take(MAX_ENTRIES) {
                text.push_str(&format!(
                    "\n  camera {} ({}), stream {}: {} → {}, {}",
                    s(&c["camera"]["id"]),
                    s(&c["camera"]["name"]),
                    s(&c["stream"]),
                    s(&c["actual"]["start"]["utc"]),
                    s(&c["actual"]["end"]["utc"]),
                    s(&c["video"]["file"]),
                ));
                text.push_str(&sources(c, "    "));
            }
            r.summary = Some(text);
            // Every camera's video must be one of the masters the manifest lists (and so is
            // hashed below): a camera without its file is an incomplete exhibit.
            let masters: BTreeSet<String> = m["files"]
                .as_array()
                .map(|f| {
                    f.iter()
                        .filter(|f| f["role"] == "master")
                        .map(|f| s(&f["name"]))
                        .collect()
                })
                .unwrap_or_default();
            if cams.is_empty() {
                r.check(MANIFEST, false, "a multi-camera manifest lists no camera");
            }
            for c in cams.iter().take(MAX_ENTRIES) {
                let file = s(&c["video"]["file"]);
                if !masters.contains(&file) {
                    r.check(
                        &file,
                        false,
                        format!(
                            "the video of camera {} is not listed as a master file",
                            s(&c["camera"]["id"])
                        ),
                    );
                }
            }
        } else {
            r.summary = Some(format!(
                "export {} — camera {} ({}), procedure {}, {} → {}{}",
                s(&m["export_id"]),
                s(&m["camera"]["id"]),
                s(&m["camera"]["name"]),
                s(&m["procedure"]),
                s(&m["actual"]["start"]["utc"]),
                s(&m["actual"]["end"]["utc"]),
                sources(m, "  "),
            ));
        }
        if let (Some(k), Some(declared)) = (&key, m["signature"]["public_key_hex"].as_str())
            && declared != hex::encode(k.as_bytes())
        {
            r.check(
                PUBLIC_KEY,
                false,
                format!("the manifest declares key {declared}, the key file holds another"),
            );
        }
        match m["files"].as_array() {
            Some(files) if files.len() > MAX_ENTRIES => {
                r.check(MANIFEST, false, format!("lists {} files", files.len()))
            }
            Some(files) if !files.is_empty() => {
                for f in files {
                    let name = s(&f["name"]);
                    let want_hash = s(&f["sha256"]);
                    let want_bytes = f["bytes"].as_u64();
                    covered.insert(name.clone());
                    match src.hash(&name) {
                        Ok(Some((h, n))) if h == want_hash && Some(n) == want_bytes => {
                            r.check(&name, true, format!("SHA-256 {h}, {n} bytes"))
                        }
                        Ok(Some((h, n))) => r.check(
                            &name,
                            false,
                            format!(
                                "altered: SHA-256 {h} ({n} bytes), the manifest says {want_hash} ({} bytes)",
                                want_bytes.unwrap_or(0)
                            ),
                        ),
                        Ok(None) => r.check(&name, false, "listed in the manifest but missing"),
                        Err(e) => r.check(&name, false, format!("altered or unreadable: {e}")),
                    }
                }
            }
            _ => r.check(MANIFEST, false, "lists no file"),
        }
    }

    // SHA256SUMS (covers player.html, which embeds the manifest) and its signature.
    match (src.read_small(SUMS), src.read_small(SUMS_SIG)) {
        (Ok(Some(sums)), Ok(Some(sig))) => {
            if let Some(k) = &key {
                let what = format!("{SUMS} (signature {SUMS_SIG})");
                match check_sig(k, &sums, &sig) {
                    Ok(()) => r.check(what, true, "valid Ed25519 signature"),
                    Err(e) => r.check(what, false, e),
                }
            }
            let text = String::from_utf8_lossy(&sums).into_owned();
            for line in text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(MAX_ENTRIES)
            {
                let Some((h, name)) = line.split_once("  ") else {
                    r.check(SUMS, false, format!("malformed line {line:?}"));
                    continue;
                };
                // Files also in the manifest were checked above.
                if covered.contains(name) && name != MANIFEST && name != MANIFEST_SIG {
                    continue;
                }
                covered.insert(name.to_owned());
                let what = format!("{name} (SHA256SUMS)");
                match src.hash(name) {
                    Ok(Some((got, _))) if got == h => r.check(what, true, format!("SHA-256 {got}")),
                    Ok(Some((got, _))) => {
                        r.check(what, false, format!("altered: SHA-256 {got}, listed {h}"))
                    }
                    Ok(None) => r.check(what, false, "listed but missing"),
                    Err(e) => r.check(what, false, format!("altered or unreadable: {e}")),
                }
            }
        }
        (s, g) => {
            for (name, v) in [(SUMS, s), (SUMS_SIG, g)] {
                match v {
                    Ok(Some(_)) => {}
                    Ok(None) => r.check(name, false, "missing"),
                    Err(e) => r.check(name, false, format!("unreadable: {e}")),
                }
            }
        }
    }

    // Nothing else.
    for n in names.difference(&covered) {
        r.check(n, false, "not listed in the manifest nor in SHA256SUMS");
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::manifest::*;
    use crate::{InstallationKey, PackageSpec, write_package};
    use vigie_mp4::SampleInfo;
    use vigie_mp4::progressive::{Chunk, Input, build};

    const MP4: &str = "cam_main_20261128T210000Z_20261128T210006Z.mp4";

    fn instant(s: &str) -> Instant {
        Instant {
            utc: s.into(),
            local: s.into(),
        }
    }

    fn manifest() -> Manifest {
        let range = Range {
            start: instant("2026-11-28T21:00:00Z"),
            end: instant("2026-11-28T21:00:06Z"),
            duration_s: 6.0,
        };
        Manifest {
            format: crate::FORMAT.into(),
            export_id: "20261128T220000Z-00000001".into(),
            software: Software {
                name: "Vigie".into(),
                version: "test".into(),
            },
            exported_at: instant("2026-11-28T22:00:00Z"),
            operator: "alice".into(),
            requester: "OPJ Martin".into(),
            procedure: "2026/0042".into(),
            reason: "réquisition".into(),
            camera: CameraInfo {
                id: "cam".into(),
                name: "Gare".into(),
                commune: CommuneInfo {
                    id: "c".into(),
                    name: "Commune".into(),
                    authorisation: Some("2024/1".into()),
                    authorisation_expires: None,
                },
            },
            stream: "main".into(),
            timezone: "Europe/Paris".into(),
            requested: range.clone(),
            actual: range.clone(),
            recorded_spans: vec![range],
            gaps: vec![],
            video: VideoInfo {
                file: MP4.into(),
                processing: "stream copy".into(),
                codec: "avc1.42c01e".into(),
                width: 640,
                height: 360,
                frames: 10,
                duration_s: 0.4,
                timestamp_track: false,
            },
            recorders: vec![],
            unavailable: vec![],
            files: vec![],
            signature: SignatureInfo::default(),
        }
    }

    /// A small virtual MP4 over fake samples written to `dir/<name>.bin`.
    fn small_mp4(dir: &Path, name: &str, seed: u32) -> vigie_mp4::progressive::VirtualMp4 {
        let seg = dir.join(format!("{name}.bin"));
        let data: Vec<u8> = (0..1000u32).map(|i| ((i + seed) % 251) as u8).collect();
        std::fs::write(&seg, &data).unwrap();
        build(&Input {
            sample_entries: vec![bytes::Bytes::from_static(b"\0\0\0\x08avc1")],
            width: 640,
            height: 360,
            files: vec![seg],
            samples: (0..10)
                .map(|i| SampleInfo {
                    duration_90k: 3600,
                    bytes: 100,
                    is_key: i == 0,
                })
                .collect(),
            chunks: vec![Chunk {
                file: 0,
                offset: 0,
                first_sample: 0,
                samples: 10,
                description: 0,
            }],
            skip_90k: 0,
            duration_90k: 36_000,
            cues: vec![],
        })
        .unwrap()
    }

    const MP4_B: &str = "quai_main_20261128T210000Z_20261128T210006Z.mp4";

    /// A two-camera package (format 2).
    fn multi_package(dir: &Path, key: &InstallationKey) -> PathBuf {
        let single = manifest();
        let cam = |m: &Manifest, id: &str, file: &str| CameraExport {
            camera: CameraInfo {
                id: id.into(),
                ..m.camera.clone()
            },
            stream: "main".into(),
            actual: m.actual.clone(),
            recorded_spans: m.recorded_spans.clone(),
            gaps: vec![],
            video: VideoInfo {
                file: file.into(),
                ..m.video.clone()
            },
            recorders: vec![],
            unavailable: vec![],
        };
        let manifest = MultiManifest {
            format: crate::FORMAT_MULTI.into(),
            export_id: single.export_id.clone(),
            software: single.software.clone(),
            exported_at: single.exported_at.clone(),
            operator: single.operator.clone(),
            requester: single.requester.clone(),
            procedure: single.procedure.clone(),
            reason: single.reason.clone(),
            timezone: single.timezone.clone(),
            requested: single.requested.clone(),
            cameras: vec![cam(&single, "cam", MP4), cam(&single, "quai", MP4_B)],
            files: vec![],
            signature: SignatureInfo::default(),
        };
        let (a, b) = (small_mp4(dir, "a", 0), small_mp4(dir, "b", 7));
        let out = dir.join("multi.zip");
        let mut last = (0, 0);
        let w = crate::write_multi_package(
            &out,
            crate::MultiPackageSpec {
                manifest,
                mp4s: vec![&a, &b],
                reader: None,
            },
            key,
            &mut |x, y| last = (x, y),
        )
        .unwrap();
        assert_eq!(last, (a.total_len + b.total_len, a.total_len + b.total_len));
        assert_eq!(w.masters.len(), 2);
        assert_ne!(w.masters[0].0, w.masters[1].0);
        let masters: Vec<&str> = w
            .manifest
            .files
            .iter()
            .filter(|f| f.role == "master")
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(masters, [MP4, MP4_B]);
        out
    }

    #[test]
    fn a_multi_camera_package_verifies_and_names_any_altered_master() {
        let dir = tempfile::tempdir().unwrap();
        let key = InstallationKey::from_seed_for_test([5; 32]);
        let pkg = multi_package(dir.path(), &key);
        let r = verify(&pkg, Some(&key.public())).unwrap();
        assert!(r.ok(), "{r}");
        for name in [MP4, MP4_B] {
            assert!(r.checks.iter().any(|c| c.what == name && c.ok), "{r}");
        }
        let text = r.to_string();
        assert!(
            text.contains("2 cameras") && text.contains("camera quai"),
            "{text}"
        );
        let m: serde_json::Value = serde_json::from_slice(
            &Source::Zip(zip::ZipArchive::new(std::fs::File::open(&pkg).unwrap()).unwrap())
                .read_small(MANIFEST)
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(m["format"], crate::FORMAT_MULTI);
        assert_eq!(m["cameras"].as_array().unwrap().len(), 2);
        let names: Vec<String> = zip::ZipArchive::new(std::fs::File::open(&pkg).unwrap())
            .unwrap()
            .file_names()
            .map(str::to_owned)
            .collect();
        assert_eq!(names.len(), 9, "{names:?}");
        // Either master altered: INVALID, naming that file and only that one's hash.
        for name in [MP4, MP4_B] {
            let bad = dir.path().join("bad.zip");
            rezip(&pkg, &bad, |n, v| {
                if n == name {
                    let i = v.len() / 2;
                    v[i] ^= 0x01;
                }
            });
            let r = verify(&bad, None).unwrap();
            assert!(!r.ok(), "{name}: {r}");
            let failed: Vec<&str> = r
                .failures()
                .map(|c| c.what.as_str())
                .filter(|w| w.ends_with(".mp4"))
                .collect();
            assert_eq!(failed, [name], "{r}");
        }
        // A master removed from the package: named as missing.
        let bad = dir.path().join("missing.zip");
        {
            let mut z = zip::ZipArchive::new(std::fs::File::open(&pkg).unwrap()).unwrap();
            let mut w = zip::ZipWriter::new(std::fs::File::create(&bad).unwrap());
            for i in 0..z.len() {
                let f = z.by_index_raw(i).unwrap();
                if f.name() != MP4_B {
                    w.raw_copy_file(f).unwrap();
                }
            }
            w.finish().unwrap();
        }
        let r = verify(&bad, None).unwrap();
        assert!(
            r.failures()
                .any(|c| c.what == MP4_B && c.detail.contains("missing")),
            "{r}"
        );
        // The player and readme name both cameras.
        let mut z = zip::ZipArchive::new(std::fs::File::open(&pkg).unwrap()).unwrap();
        let mut readme = String::new();
        z.by_name(crate::README)
            .unwrap()
            .read_to_string(&mut readme)
            .unwrap();
        assert!(readme.contains(MP4) && readme.contains(MP4_B), "{readme}");
        let mut player = String::new();
        z.by_name(crate::PLAYER)
            .unwrap()
            .read_to_string(&mut player)
            .unwrap();
        assert!(player.contains("M.cameras"), "multi-camera player expected");
    }

    /// A package of a small virtual MP4 (fake samples in a temporary file).
    fn package(dir: &Path, key: &InstallationKey) -> PathBuf {
        let seg = dir.join("segment.bin");
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        std::fs::File::create(&seg)
            .unwrap()
            .write_all(&data)
            .unwrap();
        let input = Input {
            sample_entries: vec![bytes::Bytes::from_static(b"\0\0\0\x08avc1")],
            width: 640,
            height: 360,
            files: vec![seg],
            samples: (0..10)
                .map(|i| SampleInfo {
                    duration_90k: 3600,
                    bytes: 100,
                    is_key: i == 0,
                })
                .collect(),
            chunks: vec![Chunk {
                file: 0,
                offset: 0,
                first_sample: 0,
                samples: 10,
                description: 0,
            }],
            skip_90k: 0,
            duration_90k: 36_000,
            cues: vec![],
        };
        let mp4 = build(&input).unwrap();
        let out = dir.join("package.zip");
        let mut last = (0, 0);
        let w = write_package(
            &out,
            PackageSpec {
                manifest: manifest(),
                mp4: &mp4,
                extra: vec![crate::ExtraFile {
                    name: "derive-still-0.jpg".into(),
                    role: "derived".into(),
                    bytes: b"not really a jpeg".to_vec(),
                    derived_from_master: true,
                    description: None,
                }],
                reader: None,
            },
            key,
            &mut |a, b| last = (a, b),
        )
        .unwrap();
        assert_eq!(last, (mp4.total_len, mp4.total_len));
        assert_eq!(w.mp4_bytes, mp4.total_len);
        assert_eq!(w.manifest.files[0].sha256, w.mp4_sha256);
        assert_eq!(
            w.manifest.files[1].derived_from_sha256.as_deref(),
            Some(w.mp4_sha256.as_str())
        );
        assert!(!dir.join("package.zip.partial").exists());
        out
    }

    /// Copies the zip, passing each entry's bytes through `edit`.
    fn rezip(src: &Path, dst: &Path, edit: impl Fn(&str, &mut Vec<u8>)) {
        let mut z = zip::ZipArchive::new(std::fs::File::open(src).unwrap()).unwrap();
        let mut w = zip::ZipWriter::new(std::fs::File::create(dst).unwrap());
        for i in 0..z.len() {
            let mut f = z.by_index(i).unwrap();
            let name = f.name().to_owned();
            let mut v = Vec::new();
            f.read_to_end(&mut v).unwrap();
            edit(&name, &mut v);
            w.start_file(name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(&v).unwrap();
        }
        w.finish().unwrap();
    }

    /// Serves a master's file parts from memory (as a cluster node reads them from others).
    struct MemReader(Vec<u8>);

    impl crate::MasterReader for MemReader {
        fn read(
            &self,
            mp4: &vigie_mp4::progressive::VirtualMp4,
            start: u64,
            end: u64,
            send: &mut dyn FnMut(bytes::Bytes) -> bool,
        ) -> std::io::Result<()> {
            mp4.for_each_slice(start, end, |s| match s {
                vigie_mp4::progressive::Slice::Mem(m) => send(m),
                vigie_mp4::progressive::Slice::File { offset, len, .. } => {
                    send(bytes::Bytes::copy_from_slice(
                        &self.0[offset as usize..(offset + len) as usize],
                    ))
                }
            })
        }
    }

    #[test]
    fn a_cluster_package_read_through_its_reader_verifies_and_names_its_recorders() {
        let dir = tempfile::tempdir().unwrap();
        let key = InstallationKey::from_seed_for_test([3; 32]);
        // The master's data is nowhere on disk: only the reader has it.
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 253) as u8).collect();
        let mut mp4 = small_mp4(dir.path(), "gone", 0);
        mp4.files = vec![dir.path().join("on-another-node")];
        let at = |s: &str| instant(s);
        let mut m = manifest();
        // A single-node manifest has neither field (its bytes are unchanged).
        let single = serde_json::to_string(&m).unwrap();
        assert!(!single.contains("recorders") && !single.contains("unavailable"));
        m.recorders = vec![
            Recorder {
                node: "rec-a".into(),
                start: at("2026-11-28T21:00:00Z"),
                end: at("2026-11-28T21:00:03Z"),
                duration_s: 3.0,
            },
            Recorder {
                node: "rec-b".into(),
                start: at("2026-11-28T21:00:04Z"),
                end: at("2026-11-28T21:00:06Z"),
                duration_s: 2.0,
            },
        ];
        m.unavailable = vec![Unavailable {
            node: "rec-c".into(),
            start: at("2026-11-28T21:00:03Z"),
            end: at("2026-11-28T21:00:04Z"),
            duration_s: 1.0,
            reason: "down".into(),
        }];
        let out = dir.path().join("cluster.zip");
        // Without the reader the master cannot be read.
        let spec = |m: &Manifest, reader| PackageSpec {
            manifest: m.clone(),
            mp4: &mp4,
            extra: vec![],
            reader,
        };
        assert!(write_package(&out, spec(&m, None), &key, &mut |_, _| {}).is_err());
        let reader = MemReader(data.clone());
        let w = write_package(&out, spec(&m, Some(&reader)), &key, &mut |_, _| {}).unwrap();
        assert_eq!(w.manifest.recorders.len(), 2);
        assert_eq!(w.mp4_bytes, mp4.total_len);
        let r = verify(&out, Some(&key.public())).unwrap();
        assert!(r.ok(), "{r}");
        let text = r.to_string();
        assert!(
            text.contains("recorded by rec-a: 2026-11-28T21:00:00Z"),
            "{text}"
        );
        assert!(text.contains("recorded by rec-b"), "{text}");
        assert!(text.contains("unreachable node rec-c"), "{text}");
    }

    #[test]
    fn signed_package_verifies_and_any_altered_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let key = InstallationKey::from_seed_for_test([1; 32]);
        let pkg = package(dir.path(), &key);
        let r = verify(&pkg, Some(&key.public())).unwrap();
        assert!(r.ok(), "{r}");
        assert!(r.to_string().contains("VALID"));
        assert!(r.checks.iter().any(|c| c.what == MP4 && c.ok));
        assert!(r.checks.iter().any(|c| c.what.starts_with("player.html")));

        // One byte flipped in each file in turn: the verdict names that file.
        let names: Vec<String> = zip::ZipArchive::new(std::fs::File::open(&pkg).unwrap())
            .unwrap()
            .file_names()
            .map(str::to_owned)
            .collect();
        assert_eq!(names.len(), 9, "{names:?}");
        for name in &names {
            let bad = dir.path().join("bad.zip");
            rezip(&pkg, &bad, |n, v| {
                if n == name {
                    let i = v.len() / 2;
                    v[i] ^= 0x01;
                }
            });
            let r = verify(&bad, None).unwrap();
            assert!(!r.ok(), "{name}: {r}");
            let failed: Vec<&str> = r.failures().map(|c| c.what.as_str()).collect();
            assert!(
                failed.iter().any(|w| w.starts_with(name.as_str())
                    || (name == MANIFEST_SIG && w.contains(MANIFEST_SIG))
                    || (name == SUMS_SIG && w.contains(SUMS_SIG))
                    || (name == PUBLIC_KEY && w.contains("signature"))),
                "{name}: failures {failed:?}\n{r}"
            );
            assert!(r.to_string().contains("INVALID"), "{r}");
        }

        // A raw byte flip in the stored MP4 (zip CRC no longer matches) also fails.
        let mut raw = std::fs::read(&pkg).unwrap();
        let at = raw.len() / 4;
        raw[at] ^= 0xff;
        let bad = dir.path().join("raw.zip");
        std::fs::write(&bad, &raw).unwrap();
        assert!(!verify(&bad, None).unwrap().ok());

        // An extra file is reported.
        let bad = dir.path().join("extra.zip");
        rezip(&pkg, &bad, |_, _| {});
        {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&bad)
                .unwrap();
            let mut w = zip::ZipWriter::new_append(f).unwrap();
            w.start_file("extra.txt", zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(b"hello").unwrap();
            w.finish().unwrap();
        }
        let r = verify(&bad, None).unwrap();
        assert!(r.failures().any(|c| c.what == "extra.txt"), "{r}");
    }

    #[test]
    fn wrong_installation_key_or_resigned_package_fails() {
        let dir = tempfile::tempdir().unwrap();
        let key = InstallationKey::from_seed_for_test([1; 32]);
        let other = InstallationKey::from_seed_for_test([2; 32]);
        let pkg = package(dir.path(), &key);
        // Valid on its own, but not this installation's key.
        assert!(verify(&pkg, None).unwrap().ok());
        let r = verify(&pkg, Some(&other.public())).unwrap();
        assert!(!r.ok());
        assert!(
            r.failures().any(|c| c.what.contains("installation key")),
            "{r}"
        );
        // Someone swaps in their own key file: the manifest's declared key no longer matches.
        let bad = dir.path().join("swapped.zip");
        let pubfile = crate::key::public_key_file(&other.public());
        rezip(&pkg, &bad, |n, v| {
            if n == PUBLIC_KEY {
                *v = pubfile.clone().into_bytes();
            }
        });
        assert!(!verify(&bad, None).unwrap().ok());
    }

    #[test]
    fn unzipped_folder_verifies_too() {
        let dir = tempfile::tempdir().unwrap();
        let key = InstallationKey::from_seed_for_test([3; 32]);
        let pkg = package(dir.path(), &key);
        let out = dir.path().join("unzipped");
        zip::ZipArchive::new(std::fs::File::open(&pkg).unwrap())
            .unwrap()
            .extract(&out)
            .unwrap();
        let r = verify(&out, Some(&key.public())).unwrap();
        assert!(r.ok(), "{r}");
        let f = out.join(MP4);
        let mut b = std::fs::read(&f).unwrap();
        b[10] ^= 1;
        std::fs::write(&f, b).unwrap();
        let r = verify(&out, None).unwrap();
        assert_eq!(
            r.failures().map(|c| c.what.as_str()).collect::<Vec<_>>(),
            [MP4]
        );
    }
}

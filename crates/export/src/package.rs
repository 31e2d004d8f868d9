//! Writing a package: the master MP4 (one per camera in a multi-camera package) streamed from
//! the segment files into the zip (method *stored*, hashed on the way), then the key, the readme and any derived file, the manifest
//! (listing their hashes) and its signature, the offline player, and the signed `SHA256SUMS`.
//!
//! The zip is written to `<path>.partial` and renamed to `path` once complete and fsynced, so a
//! crash never leaves a package that looks finished.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use base64::Engine;
use sha2::{Digest, Sha256};
use vigie_mp4::progressive::VirtualMp4;
use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

use crate::key::{InstallationKey, public_key_file};
use crate::manifest::{FileEntry, Manifest, MultiManifest, SignatureInfo};
use crate::{ExportError, MANIFEST, MANIFEST_SIG, PLAYER, PUBLIC_KEY, README, SUMS, SUMS_SIG};

/// Reads from segment files in chunks of this size.
const CHUNK: u64 = 1 << 20;

/// A file added next to the master (e.g. a derived still): its bytes and manifest entry data.
#[derive(Clone, Debug)]
pub struct ExtraFile {
    /// Name in the package (`derive-…` for derived files).
    pub name: String,
    /// `derived`, …
    pub role: String,
    pub bytes: Vec<u8>,
    /// Set for derived files: they carry the master's hash.
    pub derived_from_master: bool,
    pub description: Option<String>,
}

/// Reads the bytes of a master whose sample data is not all in local files (a cluster export:
/// parts held by other nodes). Without one, [`VirtualMp4::read`] reads the local files.
pub trait MasterReader: Send + Sync {
    /// Bytes `[start, end)` of `mp4`, in order, to `send` until it returns false.
    fn read(
        &self,
        mp4: &VirtualMp4,
        start: u64,
        end: u64,
        send: &mut dyn FnMut(bytes::Bytes) -> bool,
    ) -> std::io::Result<()>;
}

/// What to write.
pub struct PackageSpec<'a> {
    /// Everything but `files` and `signature` (set here). `video.file` is the MP4's name.
    pub manifest: Manifest,
    pub mp4: &'a VirtualMp4,
    pub extra: Vec<ExtraFile>,
    /// How the master's bytes are read (`None`: local files).
    pub reader: Option<&'a dyn MasterReader>,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Written {
    pub manifest: Manifest,
    pub mp4_sha256: String,
    pub mp4_bytes: u64,
    /// SHA-256 and size of the zip itself.
    pub package_sha256: String,
    pub package_bytes: u64,
}

struct HashingWriter<'w, W: Write> {
    inner: &'w mut W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the whole virtual MP4 to `out`, calling `progress(written, total)` after each chunk;
/// returns (hex SHA-256, bytes). A segment file shorter than planned is an error.
pub fn write_mp4(
    mp4: &VirtualMp4,
    reader: Option<&dyn MasterReader>,
    out: &mut impl Write,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(String, u64), ExportError> {
    let mut w = HashingWriter {
        inner: out,
        hash: Sha256::new(),
        bytes: 0,
    };
    let total = mp4.total_len;
    let mut write_err = None;
    let mut send = |b: bytes::Bytes| match w.write_all(&b) {
        Ok(()) => {
            progress(w.bytes, total);
            true
        }
        Err(e) => {
            write_err = Some(e);
            false
        }
    };
    match reader {
        None => mp4.read(0, total, CHUNK as usize, send),
        Some(r) => r.read(mp4, 0, total, &mut send),
    }
    .map_err(|e| ExportError::io("reading the recording", e))?;
    if let Some(e) = write_err {
        return Err(ExportError::io("package", e));
    }
    if w.bytes != total {
        return Err(ExportError::Invalid(format!(
            "wrote {} bytes of a {total}-byte MP4",
            w.bytes
        )));
    }
    Ok((hex::encode(w.hash.finalize()), w.bytes))
}

fn entry(name: &str, role: &str, bytes: &[u8]) -> FileEntry {
    FileEntry {
        name: name.to_owned(),
        role: role.to_owned(),
        bytes: bytes.len() as u64,
        sha256: crate::sha256_hex(bytes),
        derived_from_sha256: None,
        description: None,
    }
}

/// Writes the package to `path` (via `path.partial`), signing with `key`.
pub fn write_package(
    path: &Path,
    spec: PackageSpec<'_>,
    key: &InstallationKey,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Written, ExportError> {
    let PackageSpec {
        manifest,
        mp4,
        extra,
        reader,
    } = spec;
    let masters = [(manifest.video.file.clone(), mp4)];
    let (manifest, hashes, package_sha256, package_bytes) =
        write_any(path, manifest, &masters, reader, extra, key, progress)?;
    let (mp4_sha256, mp4_bytes) = hashes.into_iter().next().unwrap_or_default();
    Ok(Written {
        manifest,
        mp4_sha256,
        mp4_bytes,
        package_sha256,
        package_bytes,
    })
}

/// What to write for a multi-camera package: the manifest (everything but `files` and
/// `signature`) and each camera's MP4, in the order of `manifest.cameras` (whose `video.file`
/// names them).
pub struct MultiPackageSpec<'a> {
    pub manifest: MultiManifest,
    pub mp4s: Vec<&'a VirtualMp4>,
    /// How the masters' bytes are read (`None`: local files).
    pub reader: Option<&'a dyn MasterReader>,
}

/// What was written for a multi-camera package.
#[derive(Clone, Debug)]
pub struct MultiWritten {
    pub manifest: MultiManifest,
    /// (SHA-256, bytes) of each camera's master, in the order of `manifest.cameras`.
    pub masters: Vec<(String, u64)>,
    pub package_sha256: String,
    pub package_bytes: u64,
}

/// Writes a multi-camera package ([`crate::FORMAT_MULTI`]) to `path` (via `path.partial`):
/// every camera's master, then the same files as a single-camera package, one manifest and one
/// signature covering all. `progress(written, total)` counts the bytes of all masters.
pub fn write_multi_package(
    path: &Path,
    spec: MultiPackageSpec<'_>,
    key: &InstallationKey,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<MultiWritten, ExportError> {
    let MultiPackageSpec {
        manifest,
        mp4s,
        reader,
    } = spec;
    if manifest.cameras.len() != mp4s.len() || mp4s.is_empty() {
        return Err(ExportError::Invalid(format!(
            "{} cameras in the manifest, {} MP4s",
            manifest.cameras.len(),
            mp4s.len()
        )));
    }
    let masters: Vec<(String, &VirtualMp4)> = manifest
        .cameras
        .iter()
        .map(|c| c.video.file.clone())
        .zip(mp4s)
        .collect();
    let (manifest, masters, package_sha256, package_bytes) =
        write_any(path, manifest, &masters, reader, Vec::new(), key, progress)?;
    Ok(MultiWritten {
        manifest,
        masters,
        package_sha256,
        package_bytes,
    })
}

/// What the writer needs of a manifest document, single- or multi-camera.
trait Document: serde::Serialize {
    fn set_files(&mut self, files: Vec<FileEntry>, signature: SignatureInfo);
    fn readme(&self, key_hex: &str) -> String;
    fn player(&self, manifest_bytes: &[u8], signature_b64: &str) -> String;
}

impl Document for Manifest {
    fn set_files(&mut self, files: Vec<FileEntry>, signature: SignatureInfo) {
        self.files = files;
        self.signature = signature;
    }
    fn readme(&self, key_hex: &str) -> String {
        crate::player::readme(self, key_hex)
    }
    fn player(&self, manifest_bytes: &[u8], signature_b64: &str) -> String {
        crate::player::player_html(self, manifest_bytes, signature_b64)
    }
}

impl Document for MultiManifest {
    fn set_files(&mut self, files: Vec<FileEntry>, signature: SignatureInfo) {
        self.files = files;
        self.signature = signature;
    }
    fn readme(&self, key_hex: &str) -> String {
        crate::player::readme_multi(self, key_hex)
    }
    fn player(&self, manifest_bytes: &[u8], signature_b64: &str) -> String {
        crate::player::player_multi_html(self, manifest_bytes, signature_b64)
    }
}

/// What [`write_any`] returns: the completed manifest, each master's (SHA-256, bytes), and the
/// package's SHA-256 and size.
type WrittenAny<D> = (D, Vec<(String, u64)>, String, u64);

/// The zip, written to `path.partial`, renamed when complete.
fn write_any<D: Document>(
    path: &Path,
    manifest: D,
    masters: &[(String, &VirtualMp4)],
    reader: Option<&dyn MasterReader>,
    extra: Vec<ExtraFile>,
    key: &InstallationKey,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<WrittenAny<D>, ExportError> {
    let partial = path.with_extension("zip.partial");
    let file = File::create(&partial).map_err(|e| ExportError::io(partial.display(), e))?;
    let r = write_zip(
        BufWriter::with_capacity(1 << 20, file),
        manifest,
        masters,
        reader,
        extra,
        key,
        progress,
    );
    let (manifest, hashes) = match r {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, path).map_err(|e| ExportError::io(path.display(), e))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    let (package_sha256, package_bytes) = hash_file(path)?;
    Ok((manifest, hashes, package_sha256, package_bytes))
}

/// Hex SHA-256 and length of a file.
pub fn hash_file(path: &Path) -> Result<(String, u64), ExportError> {
    let mut f = File::open(path).map_err(|e| ExportError::io(path.display(), e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK as usize];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| ExportError::io(path.display(), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(h.finalize()), total))
}

fn write_zip<D: Document>(
    out: BufWriter<File>,
    mut manifest: D,
    masters: &[(String, &VirtualMp4)],
    reader: Option<&dyn MasterReader>,
    extra: Vec<ExtraFile>,
    key: &InstallationKey,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(D, Vec<(String, u64)>), ExportError> {
    for (i, (name, _)) in masters.iter().enumerate() {
        if !safe_name(name) || is_reserved(name) || masters[..i].iter().any(|(n, _)| n == name) {
            return Err(ExportError::Invalid(format!("bad MP4 name {name:?}")));
        }
    }
    let mut zip = zip::ZipWriter::new(out);
    let stored_for = |len: u64| {
        SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .large_file(len >= u64::from(u32::MAX))
            .unix_permissions(0o644)
    };
    let stored = stored_for(0);
    let text = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .unix_permissions(0o644);

    let grand_total: u64 = masters.iter().map(|(_, m)| m.total_len).sum();
    let mut done_before = 0u64;
    let mut sums: Vec<(String, String)> = Vec::new();
    let mut files = Vec::new();
    let mut hashes = Vec::new();
    for (name, mp4) in masters {
        zip.start_file(name.as_str(), stored_for(mp4.total_len))?;
        let (sha, bytes) = write_mp4(mp4, reader, &mut zip, &mut |w, _| {
            progress(done_before + w, grand_total)
        })?;
        done_before += bytes;
        sums.push((sha.clone(), name.clone()));
        files.push(FileEntry {
            name: name.clone(),
            role: "master".into(),
            bytes,
            sha256: sha.clone(),
            derived_from_sha256: None,
            description: Some("enregistrement natif (copie du flux, sans réencodage) / native recording (stream copy, no re-encoding)".into()),
        });
        hashes.push((sha, bytes));
    }
    // Derived files refer to the first (in a single-camera package, the only) master.
    let mp4_sha256 = hashes.first().map(|h| h.0.clone()).unwrap_or_default();

    let mut add = |zip: &mut zip::ZipWriter<BufWriter<File>>,
                   name: &str,
                   bytes: &[u8],
                   opts: SimpleFileOptions|
     -> Result<(), ExportError> {
        zip.start_file(name, opts)?;
        zip.write_all(bytes)
            .map_err(|e| ExportError::io("package", e))?;
        sums.push((crate::sha256_hex(bytes), name.to_owned()));
        Ok(())
    };

    for x in &extra {
        if !safe_name(&x.name) || is_reserved(&x.name) || masters.iter().any(|(n, _)| *n == x.name)
        {
            return Err(ExportError::Invalid(format!("bad file name {:?}", x.name)));
        }
        let opts = if x.name.ends_with(".jpg") || x.name.ends_with(".mp4") {
            stored
        } else {
            text
        };
        add(&mut zip, &x.name, &x.bytes, opts)?;
        let mut e = entry(&x.name, &x.role, &x.bytes);
        if x.derived_from_master {
            e.derived_from_sha256 = Some(mp4_sha256.clone());
        }
        e.description = x.description.clone();
        files.push(e);
    }

    let pub_file = public_key_file(&key.public());
    add(&mut zip, PUBLIC_KEY, pub_file.as_bytes(), text)?;
    files.push(entry(PUBLIC_KEY, "public-key", pub_file.as_bytes()));
    let readme = manifest.readme(&key.public_hex());
    add(&mut zip, README, readme.as_bytes(), text)?;
    files.push(entry(README, "readme", readme.as_bytes()));

    manifest.set_files(
        files,
        SignatureInfo {
            public_key_hex: key.public_hex(),
            ..SignatureInfo::default()
        },
    );
    let mut manifest_bytes = serde_json::to_vec_pretty(&manifest)?;
    manifest_bytes.push(b'\n');
    let b64 = base64::engine::general_purpose::STANDARD;
    let sig = format!("{}\n", b64.encode(key.sign(&manifest_bytes).to_bytes()));
    add(&mut zip, MANIFEST, &manifest_bytes, text)?;
    add(&mut zip, MANIFEST_SIG, sig.as_bytes(), text)?;
    let player = manifest.player(&manifest_bytes, sig.trim());
    add(&mut zip, PLAYER, player.as_bytes(), text)?;

    // `sha256sum -c SHA256SUMS` format: "<hex>  <name>".
    let sums_text: String = sums.iter().map(|(h, n)| format!("{h}  {n}\n")).collect();
    let sums_sig = format!(
        "{}\n",
        b64.encode(key.sign(sums_text.as_bytes()).to_bytes())
    );
    zip.start_file(SUMS, text)?;
    zip.write_all(sums_text.as_bytes())
        .map_err(|e| ExportError::io("package", e))?;
    zip.start_file(SUMS_SIG, text)?;
    zip.write_all(sums_sig.as_bytes())
        .map_err(|e| ExportError::io("package", e))?;

    let out = zip.finish()?;
    let file = out
        .into_inner()
        .map_err(|e| ExportError::io("package", e.into_error()))?;
    file.sync_all().map_err(|e| ExportError::io("package", e))?;
    Ok((manifest, hashes))
}

/// A plain file name: no directory, no hidden file, printable ASCII without quotes.
pub(crate) fn safe_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 200
        && !n.starts_with('.')
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'+'))
}

fn is_reserved(n: &str) -> bool {
    [
        MANIFEST,
        MANIFEST_SIG,
        PUBLIC_KEY,
        PLAYER,
        README,
        SUMS,
        SUMS_SIG,
    ]
    .contains(&n)
}

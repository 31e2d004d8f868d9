//! The installation signing key (Ed25519).
//!
//! Created at the first start in `<data_dir>/keys/signing.key` (PKCS#8 PEM, mode 0600, directory
//! 0700, written to a temporary file, fsynced, then renamed), loaded afterwards. The private key
//! is never logged, printed or returned; only the public key leaves this module, as hex (32
//! bytes) and as PEM (SubjectPublicKeyInfo, readable by OpenSSL).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::ExportError;

/// The key pair of one installation.
pub struct InstallationKey {
    signing: SigningKey,
    path: PathBuf,
}

impl std::fmt::Debug for InstallationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallationKey")
            .field("path", &self.path)
            .field("public", &self.public_hex())
            .finish_non_exhaustive()
    }
}

/// `<data_dir>/keys/signing.key`.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("signing.key")
}

impl InstallationKey {
    /// Loads the key of the installation whose data directory is `data_dir`, creating it on the
    /// first call. Returns the key and whether it was created.
    pub fn load_or_create(data_dir: &Path) -> Result<(InstallationKey, bool), ExportError> {
        let path = key_path(data_dir);
        if path.exists() {
            return Ok((Self::load_file(&path)?, false));
        }
        let dir = data_dir.join("keys");
        std::fs::create_dir_all(&dir).map_err(|e| ExportError::io(dir.display(), e))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| ExportError::io(dir.display(), e))?;
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        let signing = SigningKey::from_bytes(&seed);
        seed.fill(0);
        let pem = signing
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| key_err(&path, e))?;
        let tmp = dir.join("signing.key.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| ExportError::io(tmp.display(), e))?;
        f.write_all(pem.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| ExportError::io(tmp.display(), e))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(|e| ExportError::io(path.display(), e))?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok((InstallationKey { signing, path }, true))
    }

    /// Loads an existing key (no creation): for `vigie verify --config` and `vigie key show`.
    pub fn load(data_dir: &Path) -> Result<InstallationKey, ExportError> {
        Self::load_file(&key_path(data_dir))
    }

    fn load_file(path: &Path) -> Result<InstallationKey, ExportError> {
        let text = std::fs::read_to_string(path).map_err(|e| ExportError::io(path.display(), e))?;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                "the signing key is readable by other users: chmod 600 it"
            );
        }
        let signing = SigningKey::from_pkcs8_pem(&text).map_err(|e| key_err(path, e))?;
        Ok(InstallationKey {
            signing,
            path: path.to_owned(),
        })
    }

    /// A key from a seed (tests only: never for an installation).
    pub fn from_seed_for_test(seed: [u8; 32]) -> InstallationKey {
        InstallationKey {
            signing: SigningKey::from_bytes(&seed),
            path: PathBuf::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn public(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The public key as 64 lowercase hex digits.
    pub fn public_hex(&self) -> String {
        hex::encode(self.public().as_bytes())
    }

    /// The public key as PEM (`-----BEGIN PUBLIC KEY-----`, SPKI), as OpenSSL reads it.
    pub fn public_pem(&self) -> String {
        public_pem(&self.public())
    }

    /// Signs `message` (Ed25519, deterministic).
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.signing.sign(message)
    }
}

fn key_err(path: &Path, e: impl std::fmt::Display) -> ExportError {
    ExportError::Key {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// PEM (SPKI) of a public key.
pub fn public_pem(key: &VerifyingKey) -> String {
    key.to_public_key_pem(LineEnding::LF)
        .unwrap_or_else(|e| format!("(cannot encode the public key: {e})\n"))
}

/// The content of `signing-key.pub`: a comment line with the hex, then the PEM.
pub fn public_key_file(key: &VerifyingKey) -> String {
    format!(
        "Vigie installation signing key (Ed25519), hex: {}\n{}",
        hex::encode(key.as_bytes()),
        public_pem(key)
    )
}

/// Parses a public key given as PEM (SPKI, with or without text around it, e.g. a
/// `signing-key.pub`) or as 64 hex digits.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    if let Some(begin) = text.find("-----BEGIN PUBLIC KEY-----") {
        let rest = &text[begin..];
        let end = rest
            .find("-----END PUBLIC KEY-----")
            .ok_or("PEM without its END line")?;
        let pem = &rest[..end + "-----END PUBLIC KEY-----".len()];
        return VerifyingKey::from_public_key_pem(pem).map_err(|e| format!("PEM: {e}"));
    }
    let hex_text = text.trim();
    let bytes = hex::decode(hex_text).map_err(|e| format!("not PEM and not hex: {e}"))?;
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("an Ed25519 key has 32 bytes, not {}", bytes.len()))?;
    VerifyingKey::from_bytes(&arr).map_err(|e| format!("not an Ed25519 key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, created) = InstallationKey::load_or_create(dir.path()).unwrap();
        assert!(created);
        let mode = std::fs::metadata(key_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (k2, created) = InstallationKey::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(k1.public_hex(), k2.public_hex());
        assert_eq!(
            InstallationKey::load(dir.path()).unwrap().public_hex(),
            k1.public_hex()
        );
        // Debug never shows the private key.
        let dbg = format!("{k1:?}");
        assert!(dbg.contains(&k1.public_hex()) && !dbg.contains("signing:"));
    }

    #[test]
    fn public_key_round_trips_through_hex_pem_and_the_key_file() {
        let k = InstallationKey::from_seed_for_test([7; 32]);
        let pk = k.public();
        assert_eq!(parse_public_key(&k.public_hex()).unwrap(), pk);
        assert_eq!(parse_public_key(&k.public_pem()).unwrap(), pk);
        assert_eq!(parse_public_key(&public_key_file(&pk)).unwrap(), pk);
        assert!(k.public_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
        assert!(parse_public_key("zz").is_err());
        assert!(parse_public_key("abcd").is_err());
    }
}

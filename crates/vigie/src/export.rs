//! `vigie verify PACKAGE` and `vigie key show`: checking an evidence package and printing the
//! installation's public signing key. The logic is in `vigie-export`; this prints and sets the
//! exit status.

use std::path::Path;

use anyhow::Context;
use vigie_core::config::Config;
use vigie_export::InstallationKey;

/// Verifies a package (zip or unzipped folder); with a configuration, also checks that it was
/// signed by this installation's key, with `key` (hex or PEM) that it was signed by that key.
/// Prints the report (untrusted text escaped); `Ok(false)` when INVALID.
pub fn verify(package: &Path, config: Option<&Config>, key: Option<&str>) -> anyhow::Result<bool> {
    let expected = match (config, key) {
        (_, Some(k)) => Some(
            vigie_export::parse_public_key(k)
                .map_err(|e| anyhow::anyhow!("--key: not an Ed25519 public key: {e}"))?,
        ),
        (Some(c), None) => Some(
            InstallationKey::load(&c.storage.data_dir)
                .with_context(|| {
                    format!(
                        "loading the installation key of {}",
                        c.storage.data_dir.display()
                    )
                })?
                .public(),
        ),
        (None, None) => None,
    };
    let report = vigie_export::verify(package, expected.as_ref()).with_context(|| {
        format!(
            "opening {}",
            vigie_export::escape(&package.display().to_string())
        )
    })?;
    println!("{report}");
    if expected.is_none() && report.ok() {
        println!(
            "note: without --config or --key, the key was not compared with the installation's: compare the key above with GET /api/v1/signing-key (or `vigie key show`)"
        );
    }
    Ok(report.ok())
}

/// Prints the installation's public key (hex and PEM), creating the key pair if Vigie never ran.
pub fn key_show(config: &Config) -> anyhow::Result<()> {
    let (key, created) = InstallationKey::load_or_create(&config.storage.data_dir)
        .context("loading the installation signing key")?;
    if created {
        eprintln!(
            "created the installation signing key {}",
            key.path().display()
        );
    }
    println!("Ed25519 public key (hex): {}", key.public_hex());
    print!("{}", key.public_pem());
    Ok(())
}

//! `vigie verify PACKAGE` and `vigie key show`: checking an evidence package and printing the
//! installation's public signing key. The logic is in `vigie-export`; this prints and sets the
//! exit status.

use std::path::Path;

use anyhow::Context;
use vigie_core::config::Config;
use vigie_export::InstallationKey;

/// Verifies a package (zip or unzipped folder); with a configuration, also checks that it was
/// signed by this installation's key. Prints the report; `Ok(false)` when INVALID.
pub fn verify(package: &Path, config: Option<&Config>) -> anyhow::Result<bool> {
    let expected = match config {
        Some(c) => Some(
            InstallationKey::load(&c.storage.data_dir)
                .with_context(|| {
                    format!(
                        "loading the installation key of {}",
                        c.storage.data_dir.display()
                    )
                })?
                .public(),
        ),
        None => None,
    };
    let report = vigie_export::verify(package, expected.as_ref())
        .with_context(|| format!("opening {}", package.display()))?;
    println!("{report}");
    if expected.is_none() && report.ok() {
        println!(
            "note: without --config, the key was not compared with the installation's: compare the key above with GET /api/v1/signing-key (or `vigie key show`)"
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

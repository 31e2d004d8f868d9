//! `vigie camera import`: the operator's inventory spreadsheet (CSV) → `[[cameras]]` entries.
//! The reading, checks and TOML are `vigie_core::inventory`'s; this module reads and writes the
//! files and prints the report.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use vigie_core::inventory::{self, ImportOptions};

#[derive(Subcommand)]
pub enum CameraCommand {
    /// Turn the camera inventory (CSV: id, name, commune, class, address, onvif, rtsp_main,
    /// rtsp_sub, username, password_env; `,` `;` or tab, UTF-8 or Windows-1252) into
    /// validated `[[cameras]]` entries to append to the configuration. Nothing is written if a
    /// line is bad (each is reported with its line number) unless --skip-bad.
    Import {
        /// The inventory (CSV, with a header line).
        inventory: PathBuf,
        /// The existing configuration: its communes, and the camera ids already taken.
        #[arg(long, short, env = "VIGIE_CONFIG")]
        config: PathBuf,
        /// Write the entries to this file (which must not exist) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// CSV of two columns: the commune as the inventory writes it (name, INSEE code…) and
        /// the commune id of the configuration.
        #[arg(long, value_name = "CSV")]
        commune_map: Option<PathBuf>,
        /// Import the good lines, report the bad ones (instead of writing nothing).
        #[arg(long)]
        skip_bad: bool,
        /// The separator (`,` `;` or `tab`); detected from the header line by default.
        #[arg(long, value_name = "CHAR")]
        delimiter: Option<String>,
    },
}

pub fn camera(command: CameraCommand) -> anyhow::Result<()> {
    match command {
        CameraCommand::Import {
            inventory,
            config,
            out,
            commune_map,
            skip_bad,
            delimiter,
        } => import(
            &inventory,
            &config,
            out.as_deref(),
            commune_map.as_deref(),
            skip_bad,
            delimiter.as_deref(),
        ),
    }
}

fn import(
    inventory_path: &Path,
    config: &Path,
    out: Option<&Path>,
    commune_map: Option<&Path>,
    skip_bad: bool,
    delimiter: Option<&str>,
) -> anyhow::Result<()> {
    let delimiter = match delimiter {
        None => None,
        Some("tab" | "\\t" | "\t") => Some(b'\t'),
        Some(d) if d.len() == 1 && matches!(d, "," | ";" | "|") => Some(d.as_bytes()[0]),
        Some(d) => anyhow::bail!("--delimiter {d:?}: use `,`, `;`, `|` or `tab`"),
    };
    let bytes = std::fs::read(inventory_path)
        .with_context(|| format!("reading {}", inventory_path.display()))?;
    let existing =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let commune_map = match commune_map {
        Some(p) => inventory::parse_commune_map(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )?,
        None => Default::default(),
    };
    if let Some(o) = out
        && o.exists()
    {
        anyhow::bail!(
            "{} exists: give another --out (the import never overwrites a file)",
            o.display()
        );
    }
    let opts = ImportOptions {
        delimiter,
        skip_bad,
        commune_map,
    };
    let r = inventory::import(&bytes, &existing, &opts)
        .with_context(|| format!("importing {}", inventory_path.display()))?;
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    for e in &r.skipped {
        eprintln!("skipped: {e}");
    }
    let sep = match r.delimiter {
        b';' => "';'".to_owned(),
        b'\t' => "tab".to_owned(),
        d => format!("'{}'", char::from(d)),
    };
    match out {
        Some(o) => {
            // Written whole or not at all, and never over a file (a link fails if `o` exists).
            let tmp = o.with_extension("toml.partial");
            std::fs::write(&tmp, &r.toml).with_context(|| format!("writing {}", tmp.display()))?;
            let linked = std::fs::hard_link(&tmp, o);
            let _ = std::fs::remove_file(&tmp);
            linked.with_context(|| format!("writing {}", o.display()))?;
            eprintln!(
                "{}: {} camera(s) imported (separator {sep}, {}){} → {}; append it to {} and run `vigie check-config`",
                inventory_path.display(),
                r.cameras,
                r.encoding,
                if r.skipped.is_empty() {
                    String::new()
                } else {
                    format!(", {} line(s) skipped", r.skipped.len())
                },
                o.display(),
                config.display()
            );
        }
        None => {
            print!("{}", r.toml);
            eprintln!(
                "{}: {} camera(s) imported (separator {sep}, {}){}",
                inventory_path.display(),
                r.cameras,
                r.encoding,
                if r.skipped.is_empty() {
                    String::new()
                } else {
                    format!(", {} line(s) skipped", r.skipped.len())
                },
            );
        }
    }
    Ok(())
}

//! `vigie`: the video-protection recorder binary.
//!
//! Owns the command line, process wiring (config → store → ingest → API), signals and graceful
//! shutdown. Everything else lives in the library crates; see docs/ARCHITECTURE.md.

mod audit;
#[cfg(feature = "cluster")]
mod audit_cluster;
mod camera;
#[cfg(feature = "cluster")]
mod cluster;
#[cfg(feature = "cluster")]
mod cluster_export;
#[cfg(feature = "cluster")]
mod cluster_footage;
#[cfg(feature = "cluster")]
mod cluster_live;
#[cfg(feature = "cluster")]
mod cluster_users;
mod demo;
mod edge;
mod export;
mod masks;
// Per-camera start/stop is used by cluster mode only; a single node starts everything.
mod onvif;
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
mod recording;
mod run;
mod users;

#[cfg(test)]
mod architecture_tests;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "vigie",
    version,
    about = "Vigie — video-protection recorder (RTSP → segmented MP4, time-indexed)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Record the cameras of a configuration file and serve the HTTP API.
    Run {
        /// The TOML configuration (see config/example.toml).
        #[arg(long, short, env = "VIGIE_CONFIG")]
        config: PathBuf,
    },
    /// Cluster of recorders sharing the cameras through etcd (see docs/CLUSTER.md).
    #[cfg(feature = "cluster")]
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Start the embedded demo: simulated cameras from the fixtures, recorded locally.
    Demo {
        /// Where the demo stores its recordings and index.
        #[arg(long, default_value = "vigie-demo-data")]
        data_dir: PathBuf,
        /// Address of the HTTP API and status page.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
    /// Validate a configuration file; errors name the key at fault. Exit status 1 if invalid.
    CheckConfig {
        /// The TOML configuration to check.
        config: PathBuf,
    },
    /// Rebuild the index from the segment files alone (run while Vigie is stopped).
    Reindex {
        #[arg(long, short, env = "VIGIE_CONFIG")]
        config: PathBuf,
    },
    /// Users and their rights (run with Vigie stopped, or use the API /api/v1/users).
    User {
        #[command(subcommand)]
        command: users::UserCommand,
        #[arg(long, short, env = "VIGIE_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// API tokens for scripts (run with Vigie stopped, or use the API /api/v1/tokens).
    Token {
        #[command(subcommand)]
        command: users::TokenCommand,
        #[arg(long, short, env = "VIGIE_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// Verify an evidence package (zip or unzipped folder): hashes and signatures. Prints
    /// VALID or INVALID (naming the file at fault); exit status 1 if invalid.
    Verify {
        /// The package (`vigie-export-….zip`) or the folder it was unzipped into.
        package: PathBuf,
        /// Also check that the package was signed by this installation's key.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The public key the package must be signed with (64 hex digits, as printed by
        /// `vigie key show` or GET /api/v1/signing-key, or a PEM file's text): another key
        /// makes the package INVALID.
        #[arg(long, value_name = "HEX", conflicts_with = "config")]
        key: Option<String>,
    },
    /// Cameras: import the operator's inventory (CSV) as `[[cameras]]` entries; probe an ONVIF
    /// camera; discover the ONVIF devices of the local network segment.
    Camera {
        #[command(subcommand)]
        command: camera::CameraCommand,
    },
    /// The installation's evidence signing key.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// The access journal (run with Vigie stopped, or use the API).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Print the public key (hex and PEM); creates the key pair if Vigie never ran.
    Show {
        #[arg(long, short, env = "VIGIE_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain; names the first edited or removed entry; exit status 1 if broken.
    Verify {
        #[arg(long, short, env = "VIGIE_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        #[cfg(feature = "cluster")]
        Command::Cluster { command } => cluster::command(command),
        Command::Run { config } => load(&config).and_then(|c| run::block_on(run::run(c, None))),
        Command::Demo { data_dir, listen } => run::block_on(demo::demo(data_dir, listen)),
        Command::Reindex { config } => load(&config).and_then(|c| reindex(&c)),
        Command::User { command, config } => {
            need_config(config).and_then(|c| users::user(&c, command))
        }
        Command::Token { command, config } => {
            need_config(config).and_then(|c| users::token(&c, command))
        }
        Command::Verify {
            package,
            config,
            key,
        } => config
            .as_deref()
            .map(load)
            .transpose()
            .and_then(|c| export::verify(&package, c.as_ref(), key.as_deref()))
            .and_then(|ok| {
                if ok {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("the package is INVALID"))
                }
            }),
        Command::Camera { command } => camera::camera(command),
        Command::Key {
            command: KeyCommand::Show { config },
        } => load(&config).and_then(|c| export::key_show(&c)),
        Command::Audit {
            command: AuditCommand::Verify { config },
        } => load(&config).and_then(|c| audit::verify(&c)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("VIGIE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn need_config(path: Option<PathBuf>) -> anyhow::Result<vigie_core::config::Config> {
    let path =
        path.context("--config FILE (or VIGIE_CONFIG) is required to find the data directory")?;
    load(&path)
}

fn load(path: &std::path::Path) -> anyhow::Result<vigie_core::config::Config> {
    Ok(vigie_core::config::Config::load(path)?)
}

fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let c = load(path)?;
    let streams = c.streams().count();
    println!(
        "{}: OK — {} commune(s), {} camera(s), {} stream(s), retention ceiling {} days, data in {}",
        path.display(),
        c.communes.len(),
        c.cameras.len(),
        streams,
        c.retention.max_days,
        c.storage.data_dir.display()
    );
    if let Some(cluster) = &c.cluster {
        // The secret is read as `vigie run` would (never printed).
        match cluster
            .secret(&|v| std::env::var(v).ok())
            .map_err(|e| anyhow::anyhow!("{e}"))?
        {
            Some(_) => println!("cluster secret: OK"),
            None => println!(
                "warning: [cluster] has no secret_env or secret_file: this node will refuse every internal request and list only the footage it holds"
            ),
        }
    }
    Ok(())
}

fn reindex(c: &vigie_core::config::Config) -> anyhow::Result<()> {
    let report = vigie_store::Store::reindex(&run::store_config(c))
        .with_context(|| format!("reindexing {}", c.storage.data_dir.display()))?;
    println!(
        "reindexed {}: {} file(s) indexed, {} repaired (cut back to their last complete fragment), {} deleted (no complete fragment)",
        c.storage.data_dir.display(),
        report.files_indexed,
        report.files_repaired,
        report.files_deleted
    );
    for p in &report.problems {
        println!("  problem: {p}");
    }
    Ok(())
}

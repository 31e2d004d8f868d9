//! `vigie user …` and `vigie token …`: user and API-token management from the command line,
//! on the user database `<data_dir>/access/` (opened directly: run them with Vigie stopped;
//! while it runs they say so, and the same operations are in the API, `/api/v1/users` and
//! `/api/v1/tokens`). Changes are journaled in the access journal with actor `cli`. On a
//! cluster node (`[cluster]`) they act on the cluster's users in etcd, Vigie running or not
//! (then the local journal, held by `vigie run`, cannot record them: a warning says so).
//!
//! Also: opening the user database for `vigie run`, its start-up hint when there is no admin,
//! and the demo's first admin (random password printed once).

use std::io::BufRead;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use vigie_audit::{Action, NewEntry};
use vigie_auth::{AuthSettings, AuthStore, Communes, Role, Scope, UserUpdate};
use vigie_core::config::Config;
use vigie_core::{Clock, SystemClock};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user (the password is asked twice, or read from standard input).
    Add {
        name: String,
        /// admin, supervisor, operator, investigator or auditor.
        #[arg(long)]
        role: Role,
        #[command(flatten)]
        communes: CommunesArg,
        /// Narrow the scope to these cameras (comma-separated ids).
        #[arg(long, value_delimiter = ',')]
        cameras: Option<Vec<String>>,
        /// Read the password from the first line of standard input (for scripts).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's password (ends its sessions).
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user: it cannot log in, and its sessions and tokens stop working at once.
    Disable { name: String },
    /// Enable a disabled user again.
    Enable { name: String },
    /// Delete a user with its sessions and API tokens.
    Delete { name: String },
    /// List users.
    List,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct CommunesArg {
    /// The communes the user may see (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    communes: Option<Vec<String>>,
    /// Every commune.
    #[arg(long)]
    all_communes: bool,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create an API token for a user (`Authorization: Bearer …`); printed once.
    Create {
        #[arg(long)]
        user: String,
        /// A label saying what the token is for.
        #[arg(long)]
        name: String,
        #[arg(long)]
        expires_days: Option<u32>,
    },
    /// Revoke a token by its id (`tok-…`, see `vigie token list`).
    Revoke { id: String },
    /// List tokens (never their secret).
    List,
}

/// Opens the user database of a configuration for a CLI command: `<data_dir>/access/`, or the
/// cluster's users in etcd when the configuration has a `[cluster]` section.
pub fn open_auth(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<AuthStore> {
    open_for(config, clock, false)
}

/// Opens the user database for `vigie run` (a cluster node first seeds etcd from its local
/// users if etcd has none).
pub fn open_auth_to_run(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<AuthStore> {
    open_for(config, clock, true)
}

fn open_for(config: &Config, clock: Arc<dyn Clock>, run: bool) -> anyhow::Result<AuthStore> {
    #[cfg(feature = "cluster")]
    if let Some(c) = &config.cluster {
        use crate::cluster_users::{Opener, open};
        return open(
            config,
            c,
            clock,
            if run { Opener::Run } else { Opener::Cli },
        );
    }
    let _ = run;
    let dir = config.storage.data_dir.join("access");
    Ok(AuthStore::open(
        &dir,
        AuthSettings::from_config(&config.auth),
        clock,
    )?)
}

/// Logs a hint when no enabled admin exists (a fresh install has no user and no password).
pub fn startup_hint(auth: &AuthStore) {
    match auth.has_enabled_admin() {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "no users yet: create the first admin with `vigie user add NAME --role admin --all-communes` (with Vigie stopped)"
        ),
        Err(e) => tracing::error!(error = %e, "cannot read the user database"),
    }
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_owned());
    }
    let a = rpassword::prompt_password("Password (12 characters or more): ")
        .context("reading the password (use --password-stdin without a terminal)")?;
    vigie_auth::check_policy(&a)?;
    let b = rpassword::prompt_password("Same password again: ")?;
    if !vigie_auth::constant_time_eq(&a, &b) {
        bail!("the two passwords differ");
    }
    Ok(a)
}

fn journal(config: &Config, entry: NewEntry) -> anyhow::Result<()> {
    match crate::audit::open_journal(config, Arc::new(SystemClock)) {
        Ok(j) => {
            j.append(entry).context("writing to the access journal")?;
            Ok(())
        }
        // A cluster node's users live in etcd and are changed while the node runs (its journal
        // is then open in `vigie run`): the change is made, the local journal cannot record it.
        Err(e) if config.cluster.is_some() => {
            eprintln!("warning: not recorded in this node's access journal ({e:#})");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

pub fn user(config: &Config, cmd: UserCommand) -> anyhow::Result<()> {
    let auth = open_auth(config, Arc::new(SystemClock))?;
    match cmd {
        UserCommand::Add {
            name,
            role,
            communes,
            cameras,
            password_stdin,
        } => {
            let scope = Scope {
                communes: match communes.communes {
                    Some(l) if !communes.all_communes => Communes::List(l),
                    _ => Communes::All,
                },
                cameras,
            };
            scope.validate(config)?;
            vigie_auth::validate_user_name(&name)?;
            if auth.user(&name)?.is_some() {
                bail!("user {name:?} already exists");
            }
            let password = read_password(password_stdin)?;
            let info = auth.add_user(&name, role, scope, &password)?;
            journal(
                config,
                NewEntry::new("cli", Action::UserAdd).details(serde_json::json!({
                    "user": info.name, "role": info.role.as_str(), "scope": info.scope.to_string(),
                })),
            )?;
            println!("user {} created: {}, {}", info.name, info.role, info.scope);
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            if auth.user(&name)?.is_none() {
                bail!("no user {name:?}");
            }
            let password = read_password(password_stdin)?;
            auth.update_user(
                &name,
                UserUpdate {
                    password: Some(password),
                    ..Default::default()
                },
            )?;
            changed(config, &name, "password")?;
            println!("password of {name} changed; its sessions are ended");
        }
        UserCommand::Disable { name } => {
            set_disabled(config, &auth, &name, true)?;
            println!("user {name} disabled: its sessions and tokens no longer work");
        }
        UserCommand::Enable { name } => {
            set_disabled(config, &auth, &name, false)?;
            println!("user {name} enabled");
        }
        UserCommand::Delete { name } => {
            let info = auth.delete_user(&name)?;
            journal(
                config,
                NewEntry::new("cli", Action::UserChange)
                    .details(serde_json::json!({ "user": info.name, "changed": "deleted" })),
            )?;
            println!("user {name} deleted, with its sessions and API tokens");
        }
        UserCommand::List => {
            let users = auth.users()?;
            if users.is_empty() {
                println!(
                    "no users yet: create the first admin with `vigie user add NAME --role admin --all-communes`"
                );
                return Ok(());
            }
            println!(
                "{:<24} {:<13} {:<9} {:<26} SCOPE",
                "NAME", "ROLE", "STATUS", "CREATED"
            );
            for u in users {
                println!(
                    "{:<24} {:<13} {:<9} {:<26} {}",
                    u.name,
                    u.role.as_str(),
                    if u.disabled { "disabled" } else { "active" },
                    u.created,
                    u.scope
                );
            }
        }
    }
    Ok(())
}

fn set_disabled(
    config: &Config,
    auth: &AuthStore,
    name: &str,
    disabled: bool,
) -> anyhow::Result<()> {
    auth.update_user(
        name,
        UserUpdate {
            disabled: Some(disabled),
            ..Default::default()
        },
    )?;
    changed(config, name, if disabled { "disabled" } else { "enabled" })
}

fn changed(config: &Config, name: &str, what: &str) -> anyhow::Result<()> {
    journal(
        config,
        NewEntry::new("cli", Action::UserChange)
            .details(serde_json::json!({ "user": name, "changed": what })),
    )
}

pub fn token(config: &Config, cmd: TokenCommand) -> anyhow::Result<()> {
    let auth = open_auth(config, Arc::new(SystemClock))?;
    match cmd {
        TokenCommand::Create {
            user,
            name,
            expires_days,
        } => {
            let t = auth.create_token(&user, &name, expires_days)?;
            journal(
                config,
                NewEntry::new("cli", Action::TokenCreate)
                    .details(serde_json::json!({ "user": user, "token_id": t.info.id })),
            )?;
            eprintln!(
                "token {} for user {} ({:?}), expires {}; store it now, it is not shown again:",
                t.info.id,
                t.info.user,
                t.info.label,
                t.info.expires.as_deref().unwrap_or("never")
            );
            println!("{}", t.token);
        }
        TokenCommand::Revoke { id } => {
            let t = auth.revoke_token(&id)?;
            journal(
                config,
                NewEntry::new("cli", Action::TokenRevoke)
                    .details(serde_json::json!({ "token_id": t.id, "user": t.user })),
            )?;
            println!("token {} of user {} revoked", t.id, t.user);
        }
        TokenCommand::List => {
            println!(
                "{:<14} {:<20} {:<26} {:<26} {:<26} LABEL",
                "ID", "USER", "CREATED", "EXPIRES", "LAST USED"
            );
            for t in auth.tokens()? {
                let expires = match (&t.expires, t.expired) {
                    (Some(e), true) => format!("{e} (expired)"),
                    (Some(e), false) => e.clone(),
                    (None, _) => "never".into(),
                };
                println!(
                    "{:<14} {:<20} {:<26} {:<26} {:<26} {}",
                    t.id,
                    t.user,
                    t.created,
                    expires,
                    t.last_used.as_deref().unwrap_or("-"),
                    t.label
                );
            }
        }
    }
    Ok(())
}

/// The demo's first admin: when its user database is empty, creates `admin` with a random
/// password and prints it (once; it is not stored anywhere in clear).
pub fn demo_first_admin(config: &Config) -> anyhow::Result<()> {
    let auth = open_auth(config, Arc::new(SystemClock))?;
    if !auth.users()?.is_empty() {
        return Ok(());
    }
    let password = vigie_auth::random_password();
    auth.add_user("admin", Role::Admin, Scope::all(), &password)?;
    println!(
        "Demo user created: admin / {password}  (shown once; change it with `vigie user passwd`)"
    );
    Ok(())
}

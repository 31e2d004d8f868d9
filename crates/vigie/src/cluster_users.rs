//! Users, sessions and API tokens of a cluster node: the `AuthStore` over etcd
//! ([`vigie_cluster::users::EtcdAuthKv`]) instead of `<data_dir>/access/`, and the migration of
//! a node's local users into etcd (docs/CLUSTER.md, "Users, rights and sessions").
//!
//! Does not: manage users (`users.rs` and the API do, unchanged), throttle logins (per node,
//! in the store).

use std::sync::Arc;

use anyhow::Context;
use vigie_auth::{AuthSettings, AuthStore, SledKv};
use vigie_cluster::users::{EtcdAuthKv, SeedOutcome};
use vigie_core::Clock;
use vigie_core::config::{ClusterConfig, Config};

/// Why the store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opener {
    /// `vigie run`: first seeds etcd from this node's local users if etcd has none; starts
    /// even while etcd is down (nobody can log in until it answers; recording is not affected).
    Run,
    /// A CLI command: needs etcd now (it reads and writes the cluster's users).
    Cli,
}

pub fn open(
    config: &Config,
    cluster: &ClusterConfig,
    clock: Arc<dyn Clock>,
    opener: Opener,
) -> anyhow::Result<AuthStore> {
    let kv = EtcdAuthKv::start(cluster).context("starting the users' etcd client")?;
    match opener {
        Opener::Cli => kv.wait_loaded().context(
            "reading the cluster's users from etcd ([cluster] etcd): user and token commands of a cluster node need etcd",
        )?,
        Opener::Run => {
            seed(config, cluster, &kv);
            // The first read, so that the start-up checks (is there an admin?) see the
            // cluster's users; without etcd the node starts anyway (reads retry every 0.5 s).
            if let Err(e) = kv.wait_loaded() {
                tracing::warn!(error = %e, "the cluster's users are not readable from etcd yet: nobody can log in until it answers");
            }
        }
    }
    Ok(AuthStore::with_backend(
        Arc::new(kv),
        AuthSettings::from_config(&config.auth),
        clock,
    )?)
}

/// The first node of a cluster copies its local users and API tokens into etcd; a node
/// joining a cluster that has users keeps its local database untouched and unused (it is used
/// again if `[cluster]` is removed), and says which of its local users differ.
fn seed(config: &Config, cluster: &ClusterConfig, kv: &EtcdAuthKv) {
    let dir = config.storage.data_dir.join("access");
    if !dir.exists() {
        return;
    }
    let local = match SledKv::open(&dir) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the local user database to seed the cluster's users");
            return;
        }
    };
    match kv.seed_from(&local, &cluster.node) {
        Ok(SeedOutcome::Seeded { users, tokens }) => tracing::info!(
            users,
            tokens,
            "copied this node's users and API tokens into etcd: they are now the cluster's"
        ),
        Ok(SeedOutcome::AlreadyShared {
            local_only,
            differing,
        }) => {
            if !local_only.is_empty() || !differing.is_empty() {
                tracing::warn!(
                    ?local_only,
                    ?differing,
                    "this node's local user database differs from the cluster's users in etcd; the cluster's are used (create or change the missing users with `vigie user` on any node)"
                );
            }
        }
        Ok(SeedOutcome::NothingToSeed) => {}
        Err(e) => tracing::warn!(
            error = %e,
            "could not seed the cluster's users from this node (etcd unreachable?); they are read from etcd when it answers"
        ),
    }
}

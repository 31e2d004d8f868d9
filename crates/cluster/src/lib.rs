//! Vigie's cluster: several recorders share the cameras through etcd (docs/CLUSTER.md).
//!
//! - [`assign`]: camera → node assignment as pure functions (rendezvous hashing weighted by
//!   capacity, sites, bounded movement).
//! - [`model`]: the etcd key layout and the records stored there.
//! - `agent` (feature `etcd`): a node's membership (lease + keep-alive), the controller
//!   election (a lease-bound key created in a transaction), the controller's assignment
//!   writes, which cameras this node records (make-before-break handovers), status and holds
//!   publishing. Recording never waits for etcd: while etcd cannot be reached the node keeps
//!   what it records.
//! - `users` (feature `etcd`): users, sessions and API tokens in etcd, the cluster's backend
//!   of `vigie_auth::AuthStore` (a copy read every 0.5 s, writes through).
//! - `admin` (feature `etcd`): `vigie cluster status` / `drain` / `undrain`.
//!
//! Does not: start or stop recording itself (the binary implements [`agent::Recorder`]),
//! touch footage, serve HTTP.

#[cfg(feature = "etcd")]
pub mod admin;
#[cfg(feature = "etcd")]
pub mod agent;
pub mod assign;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod model;
pub mod shared;
#[cfg(feature = "etcd")]
pub mod users;

/// A node rewrites its status at least this often (the heartbeat `vigie cluster status` shows
/// as lag); changes are written at once.
pub const STATUS_HEARTBEAT_S: u64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[cfg(feature = "etcd")]
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("reading {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// This node's camera list differs from a live node's: refused.
    #[error(
        "this node's camera list (hash {mine}) differs from the cluster's (node {other} has {theirs}): every node must read the same [[cameras]] (ids, sites, streams); fix the configuration or stop the other nodes first"
    )]
    CamerasDiffer {
        mine: String,
        other: String,
        theirs: String,
    },
    #[error(
        "node name {0:?} is already registered by another live process (its lease did not expire): each node needs its own [cluster] node name"
    )]
    NameTaken(String),
    #[error("{0}")]
    Other(String),
}

//! Connecting to etcd (endpoints, TLS, time bounds) and the few calls every part uses, each
//! bounded in time so that nothing in Vigie ever waits on an unreachable etcd for long.
//!
//! Does not: decide anything about the cluster.

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};
use vigie_core::config::ClusterConfig;

use crate::ClusterError;

/// Bound of one etcd request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);

fn read(path: &std::path::Path) -> Result<Vec<u8>, ClusterError> {
    std::fs::read(path).map_err(|source| ClusterError::Io {
        path: path.to_owned(),
        source,
    })
}

/// A client for the configured endpoints. The connection is made lazily: this succeeds even
/// while etcd is down (calls then fail within [`REQUEST_TIMEOUT`]).
pub async fn connect(c: &ClusterConfig) -> Result<Client, ClusterError> {
    let mut opts = ConnectOptions::new()
        .with_timeout(REQUEST_TIMEOUT)
        .with_connect_timeout(Duration::from_secs(1))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    if c.etcd.iter().any(|e| e.starts_with("https://")) {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &c.etcd_ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&c.etcd_cert_file, &c.etcd_key_file) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        opts = opts.with_tls(tls);
    }
    bounded(Client::connect(&c.etcd, Some(opts))).await
}

/// Runs an etcd call with a time bound (the client's own timeout does not cover every case,
/// e.g. a connection attempt to an address that drops packets).
pub async fn bounded<T>(
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_millis(500), f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(ClusterError::Timeout(REQUEST_TIMEOUT)),
    }
}

/// Every key under `prefix` with its value.
pub async fn get_prefix(
    client: &Client,
    prefix: &str,
) -> Result<Vec<(String, Vec<u8>)>, ClusterError> {
    let mut c = client.clone();
    let resp = bounded(c.get(prefix, Some(GetOptions::new().with_prefix()))).await?;
    Ok(resp
        .kvs()
        .iter()
        .filter_map(|kv| Some((kv.key_str().ok()?.to_owned(), kv.value().to_vec())))
        .collect())
}

/// Seconds since the epoch by this host's clock (records carry it for information; no
/// decision compares clocks of two hosts, see docs/CLUSTER.md "Clock skew").
pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

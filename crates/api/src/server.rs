//! Serving the router over plain HTTP or, when `server.tls_cert` and `server.tls_key` are set,
//! HTTPS with rustls (ring provider; TLS 1.2 and 1.3; ALPN h2 and http/1.1). Either way the
//! client's socket address is available to handlers (login throttling per IP, `/metrics` for
//! local clients).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;

/// How long open connections get to finish after shutdown is asked, under TLS.
const TLS_GRACE: Duration = Duration::from_secs(5);

/// PEM files of the server certificate chain and its private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Loads the TLS configuration (fails early, before the server starts, on a bad file).
pub async fn load_tls(files: &TlsFiles) -> std::io::Result<axum_server::tls_rustls::RustlsConfig> {
    // One process-wide provider; a second install (tests) is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
        .await
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "loading TLS certificate {} and key {}: {e}",
                    files.cert.display(),
                    files.key.display()
                ),
            )
        })
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        None => {
            axum::serve(listener, make)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(config) => {
            let handle = axum_server::Handle::new();
            let h = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                h.graceful_shutdown(Some(TLS_GRACE));
            });
            let std_listener = listener.into_std()?;
            axum_server::from_tcp_rustls(std_listener, config)
                .handle(handle)
                .serve(make)
                .await
        }
    }
}

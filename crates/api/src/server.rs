//! Serving the router over plain HTTP or, when `server.tls_cert` and `server.tls_key` are set,
//! HTTPS with rustls (ring provider; TLS 1.2 and 1.3; ALPN h2 and http/1.1). Either way the
//! client's socket address is available to handlers (login throttling per IP, `/metrics` for
//! local clients).
//!
//! Owns the accept loop and its bounds, the same for both paths (one loop, hyper's automatic
//! HTTP/1.1 + HTTP/2 connection builder):
//! * **Connection limit** (`server.max_connections`): a semaphore taken at accept; beyond it a
//!   new connection is closed at once. The permit lives with the connection's socket, so an
//!   upgraded WebSocket keeps holding it until it closes. This bounds the file descriptors
//!   strangers can hold, below the process limit (the binary raises `RLIMIT_NOFILE` and keeps a
//!   reserve for recording; see `vigie run`).
//! * **Per-IP connection limit** (`server.max_connections_per_ip`): one client address cannot
//!   take every slot, so the operators (and the health check) still get in during a flood.
//! * **Header-read timeout** (`server.header_read_timeout_s`): a client must send a request's
//!   headers within it (slowloris), and on HTTP/1.1 an idle keep-alive connection waiting for
//!   its next request is closed after it too; a TLS handshake gets as long.
//! * **Idle timeout** (`server.idle_timeout_s`): a connection that neither reads nor writes a
//!   byte for that long is closed (a stalled body, an idle HTTP/2 connection). Once upgraded to
//!   a WebSocket the connection leaves this loop and is exempt (the live view sends on its own).
//! * Request timeouts of non-streaming routes are a router layer ([`crate::router`]).
//!
//! Shutdown: stop accepting, ask every connection to finish gracefully, wait up to
//! [`GRACE`], return.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tower::ServiceExt;

/// How long open connections get to finish after shutdown is asked.
const GRACE: Duration = Duration::from_secs(5);
/// Minimum interval between two log lines about refused connections or accept errors.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// PEM files of the server certificate chain and its private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The bounds of the accept loop (from `[server]`).
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl ServeLimits {
    pub fn from_config(s: &vigie_core::config::ServerConfig) -> ServeLimits {
        ServeLimits {
            max_connections: s.max_connections as usize,
            max_connections_per_ip: s.max_connections_per_ip as usize,
            header_read_timeout: Duration::from_secs(u64::from(s.header_read_timeout_s)),
            idle_timeout: Duration::from_secs(u64::from(s.idle_timeout_s)),
        }
    }
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

/// A connection's socket (plain or TLS) with its slot of the connection limit and the time of
/// its last byte in either direction.
struct Guarded {
    inner: Box<dyn Io>,
    _slot: OwnedSemaphorePermit,
    _ip_slot: IpSlot,
    last_activity_ms: Arc<AtomicU64>,
    epoch: Instant,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Guarded {
    fn touch(&self) {
        self.last_activity_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Open connections per client IP.
type PerIp = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// A connection's place in its IP's count (given back on drop).
struct IpSlot {
    ip: IpAddr,
    table: PerIp,
}

impl IpSlot {
    fn take(table: &PerIp, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
        let n = t.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            ip,
            table: table.clone(),
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

/// Rate-limited warnings (a flood must not flood the log).
struct Throttled {
    last: Option<Instant>,
    count: u64,
}

impl Throttled {
    fn note(&mut self, what: &str, detail: &dyn std::fmt::Display) {
        self.count += 1;
        if self.last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            tracing::warn!(count = self.count, "{what}: {detail}");
            self.last = Some(Instant::now());
            self.count = 0;
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, within `limits`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(c.get_inner()));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_ip: PerIp = Arc::default();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let (closing_tx, closing_rx) = watch::channel(false);
    // Every connection task holds a sender; when all are gone, `recv` returns None.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let epoch = Instant::now();
    let mut refused = Throttled {
        last: None,
        count: 0,
    };
    let mut accept_errors = Throttled {
        last: None,
        count: 0,
    };
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE/ENFILE: out of descriptors. Back off instead of spinning; the
                    // connection limit normally prevents this.
                    accept_errors.note("accepting an HTTP connection failed", &e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(ip_slot) = IpSlot::take(&per_ip, addr.ip(), limits.max_connections_per_ip) else {
            refused.note(
                "HTTP connection refused: server.max_connections_per_ip reached",
                &addr,
            );
            drop(tcp);
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused.note(
                "HTTP connection refused: server.max_connections reached",
                &addr,
            );
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let conn = Connection {
            builder: builder.clone(),
            app: app.clone(),
            acceptor: acceptor.clone(),
            limits,
            closing: closing_rx.clone(),
            _alive: alive_tx.clone(),
            epoch,
        };
        tokio::spawn(conn.run(tcp, addr, slot, ip_slot));
    }
    drop(listener);
    let _ = closing_tx.send(true);
    drop(alive_tx);
    if tokio::time::timeout(GRACE, alive_rx.recv()).await.is_err() {
        tracing::info!(
            "some HTTP connections were still open {} s after shutdown was asked: closing them",
            GRACE.as_secs()
        );
    }
    Ok(())
}

/// One accepted connection and what it needs.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    limits: ServeLimits,
    closing: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
    epoch: Instant,
}

impl Connection {
    async fn run(
        mut self,
        tcp: tokio::net::TcpStream,
        addr: SocketAddr,
        slot: OwnedSemaphorePermit,
        ip_slot: IpSlot,
    ) {
        let inner: Box<dyn Io> = match &self.acceptor {
            None => Box::new(tcp),
            Some(acceptor) => {
                match tokio::time::timeout(self.limits.header_read_timeout, acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(s)) => Box::new(s),
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%addr, "TLS handshake timed out");
                        return;
                    }
                }
            }
        };
        let last_activity_ms = Arc::new(AtomicU64::new(self.epoch.elapsed().as_millis() as u64));
        let io = Guarded {
            inner,
            _slot: slot,
            _ip_slot: ip_slot,
            last_activity_ms: last_activity_ms.clone(),
            epoch: self.epoch,
        };
        let app = self.app.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(addr));
                app.clone().oneshot(req)
            });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let idle_ms = self.limits.idle_timeout.as_millis() as u64;
        let mut tick =
            tokio::time::interval((self.limits.idle_timeout / 4).max(Duration::from_secs(1)));
        let mut closing = *self.closing.borrow();
        if closing {
            conn.as_mut().graceful_shutdown();
        }
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%addr, error = %e, "HTTP connection ended with an error");
                    }
                    return;
                }
                changed = self.closing.changed(), if !closing => {
                    closing = true;
                    if changed.is_ok() {
                        conn.as_mut().graceful_shutdown();
                    }
                }
                _ = tick.tick() => {
                    let now = self.epoch.elapsed().as_millis() as u64;
                    if now.saturating_sub(last_activity_ms.load(Ordering::Relaxed)) >= idle_ms {
                        tracing::debug!(%addr, "idle HTTP connection closed (server.idle_timeout_s)");
                        return;
                    }
                }
            }
        }
    }
}

//! The RTSP server: binds the listener, owns the mount table, spawns one task per connection
//! (see [`crate::session`]) and hands out [`MountControl`]s and a [`ServerHandle`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::auth::Auth;
use crate::error::{Error, Result};
use crate::faults::{MountControl, MountState};
use crate::fixture::Fixture;
use crate::rogue::Rogue;
use crate::session::serve_connection;

/// Smallest accepted pacing factor.
pub const MIN_SPEED: f64 = 0.01;
/// Largest accepted pacing factor.
pub const MAX_SPEED: f64 = 1000.0;

/// One simulated camera: `rtsp://HOST:PORT/<name>` serving `fixture`.
#[derive(Clone, Debug)]
pub struct MountConfig {
    /// URL path, e.g. `cam1` or `site/cam1` (`[A-Za-z0-9._-]` segments separated by `/`).
    pub name: String,
    /// What to serve, looped forever.
    pub fixture: Arc<Fixture>,
    /// Credentials required for every method but OPTIONS (`None`: open).
    pub auth: Option<Auth>,
    /// Pacing factor: 1.0 is real time, 4.0 sends four times faster (RTP timestamps still
    /// advance by the nominal frame duration per frame).
    pub speed: f64,
    /// Behave like an attacker's device (see [`crate::rogue`]); `None`: a well-behaved camera.
    pub rogue: Option<Rogue>,
    /// A recording card keeping this much footage ([`crate::card`]); `None`: no card.
    pub card: Option<Duration>,
    /// The card's replays start at the key frame before the requested start.
    pub card_from_key_frame_before: bool,
}

impl MountConfig {
    /// An open, real-time mount.
    pub fn new(name: impl Into<String>, fixture: Arc<Fixture>) -> MountConfig {
        MountConfig {
            name: name.into(),
            fixture,
            auth: None,
            speed: 1.0,
            rogue: None,
            card: None,
            card_from_key_frame_before: false,
        }
    }

    /// Gives the mount a recording card keeping `capacity` of footage (ONVIF Profile G replay,
    /// see [`crate::card`]).
    pub fn with_card(mut self, capacity: Duration) -> MountConfig {
        self.card = Some(capacity);
        self
    }

    /// A card like [`MountConfig::with_card`] whose replays start, as a real camera's do, at
    /// the key frame at or before the requested start ([`crate::card::Card::from_key_frame_before`]).
    pub fn with_card_from_key_frame_before(mut self, capacity: Duration) -> MountConfig {
        self.card = Some(capacity);
        self.card_from_key_frame_before = true;
        self
    }

    /// Makes the mount rogue (see [`crate::rogue`]).
    pub fn with_rogue(mut self, rogue: Rogue) -> MountConfig {
        self.rogue = Some(rogue);
        self
    }

    /// Requires these credentials.
    pub fn with_auth(mut self, auth: Auth) -> MountConfig {
        self.auth = Some(auth);
        self
    }

    /// Sets the pacing factor (values ≤ 0 or not finite mean 1.0; others are clamped to
    /// [`MIN_SPEED`, `MAX_SPEED`]).
    pub fn with_speed(mut self, speed: f64) -> MountConfig {
        self.speed = speed;
        self
    }

    /// `n` mounts `<prefix>1` … `<prefix>n` of the same fixture (and settings).
    pub fn copies(prefix: &str, n: usize, template: &MountConfig) -> Vec<MountConfig> {
        (1..=n)
            .map(|i| MountConfig {
                name: format!("{prefix}{i}"),
                ..template.clone()
            })
            .collect()
    }
}

pub(crate) struct Shared {
    pub mounts: HashMap<String, Arc<MountState>>,
    /// Digest nonce (one per server run).
    pub nonce: String,
}

/// Entry point: `Server::start(addr, mounts)`.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Binds `listen` (port 0 picks a free port) and serves `mounts` until
    /// [`ServerHandle::shutdown`] (or the handle is dropped). Must be called within a tokio
    /// runtime.
    pub async fn start(listen: SocketAddr, mounts: Vec<MountConfig>) -> Result<ServerHandle> {
        let mut table = HashMap::new();
        for m in mounts {
            if !valid_mount_name(&m.name) || table.contains_key(&m.name) {
                return Err(Error::InvalidMount(m.name));
            }
            let speed = if m.speed.is_finite() && m.speed > 0.0 {
                m.speed.clamp(MIN_SPEED, MAX_SPEED)
            } else {
                1.0
            };
            let mut state = MountState::new(m.name.clone(), m.fixture, m.auth, speed);
            state.rogue = m.rogue;
            state.card = m.card.map(|c| crate::card::Card {
                from_key_frame_before: m.card_from_key_frame_before,
                ..crate::card::Card::new(c)
            });
            table.insert(m.name, Arc::new(state));
        }
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| Error::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
        let shared = Arc::new(Shared {
            mounts: table,
            nonce: format!("{:032x}", rand::random::<u128>()),
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let live = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            shutdown_rx,
            live.clone(),
        ));
        info!(%addr, mounts = shared.mounts.len(), "camsim listening");
        Ok(ServerHandle {
            addr,
            shared,
            shutdown_tx,
            accept: Some(accept),
            live,
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    live: Arc<AtomicUsize>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    let rx = shutdown.clone();
                    let live = live.clone();
                    live.fetch_add(1, Relaxed);
                    tokio::spawn(async move {
                        serve_connection(shared, stream, peer, rx).await;
                        live.fetch_sub(1, Relaxed);
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off rather than spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

fn valid_mount_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('/').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

/// A running server. Dropping it stops the server (like [`ServerHandle::shutdown`] without
/// waiting).
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    accept: Option<JoinHandle<()>>,
    live: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("mounts", &self.mounts.len())
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `rtsp://IP:PORT/<mount>` (a wildcard listen address is replaced by loopback).
    pub fn url(&self, mount: &str) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("rtsp://{}/{mount}", SocketAddr::new(ip, self.addr.port()))
    }

    /// Control of one mount.
    pub fn mount(&self, name: &str) -> Option<MountControl> {
        self.shared
            .mounts
            .get(name)
            .map(|s| MountControl { state: s.clone() })
    }

    /// All mounts, sorted by name.
    pub fn mounts(&self) -> Vec<MountControl> {
        let mut v: Vec<_> = self
            .shared
            .mounts
            .values()
            .map(|s| MountControl { state: s.clone() })
            .collect();
        v.sort_by(|a, b| a.name().cmp(b.name()));
        v
    }

    /// Number of open client connections.
    pub fn connections(&self) -> usize {
        self.live.load(Relaxed)
    }

    /// Stops accepting, closes every connection and waits (up to 5 s) for them to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(a) = self.accept.take() {
            let _ = a.await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.live.load(Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_names() {
        assert!(valid_mount_name("cam1"));
        assert!(valid_mount_name("site-a/cam_1.main"));
        assert!(!valid_mount_name(""));
        assert!(!valid_mount_name("/cam"));
        assert!(!valid_mount_name("cam/"));
        assert!(!valid_mount_name("a b"));
        assert!(!valid_mount_name("a//b"));
    }
}

//! A live-view WebSocket client for the e2e tests (tokio-tungstenite), speaking the protocol
//! documented in `vigie_live`: text announcements (`init`, `media`, `drop`) each followed,
//! for `init` and `media`, by one binary message.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// One thing received from the server.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// An `init` announcement and the init segment (ftyp + moov).
    Init {
        meta: serde_json::Value,
        data: Bytes,
    },
    /// A `media` announcement and its media segment (moof + mdat).
    Media {
        meta: serde_json::Value,
        data: Bytes,
    },
    /// `{"type":"drop","frames":N}`.
    Drop { frames: u64 },
    /// The server closed the socket (code, reason).
    Closed { code: u16, reason: String },
}

impl LiveEvent {
    pub fn is_key_media(&self) -> bool {
        matches!(self, LiveEvent::Media { meta, .. } if meta["key"] == true)
    }
}

pub struct LiveClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: Option<serde_json::Value>,
    /// The `{"type":"recorder",…}` messages of a cluster node's relay (which node sends the
    /// frames; `following` while the camera moves), with the count of media segments received
    /// before each.
    pub notices: Vec<(usize, serde_json::Value)>,
    media_seen: usize,
}

impl LiveClient {
    /// Connects to `/api/v1/cameras/{cam}/streams/{stream}/live`. `recv_buffer` sets a small
    /// socket receive buffer (to make a slow reader feel back-pressure quickly).
    pub async fn connect(
        port: u16,
        cam: &str,
        stream: &str,
        recv_buffer: Option<u32>,
    ) -> anyhow::Result<LiveClient> {
        let auth = crate::process::credentials_for_port(port)
            .map(|c| ("authorization".to_owned(), format!("Bearer {}", c.token)));
        Self::connect_as(port, cam, stream, recv_buffer, auth).await
    }

    /// Like [`LiveClient::connect`], authenticated by this one header (e.g. `("authorization",
    /// "Bearer vigie_…")` or `("cookie", "vigie_session=…")`), or by nothing.
    pub async fn connect_as(
        port: u16,
        cam: &str,
        stream: &str,
        recv_buffer: Option<u32>,
        auth: Option<(String, String)>,
    ) -> anyhow::Result<LiveClient> {
        Self::connect_query(port, cam, stream, "", recv_buffer, auth).await
    }

    /// Like [`LiveClient::connect_as`], with a query string (e.g. `transcode=h264`).
    pub async fn connect_query(
        port: u16,
        cam: &str,
        stream: &str,
        query: &str,
        recv_buffer: Option<u32>,
        auth: Option<(String, String)>,
    ) -> anyhow::Result<LiveClient> {
        let sock = tokio::net::TcpSocket::new_v4()?;
        if let Some(n) = recv_buffer {
            sock.set_recv_buffer_size(n)?;
        }
        let tcp = sock
            .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .await?;
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        // wss:// to a Vigie serving HTTPS, trusting its certificate.
        let tls = crate::process::tls_root_for_port(port)
            .map(|pem| tls_connector(&pem))
            .transpose()?;
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        let url =
            format!("{scheme}://127.0.0.1:{port}/api/v1/cameras/{cam}/streams/{stream}/live{q}");
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)?;
        if let Some((name, value)) = auth {
            req.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())?,
                value.parse()?,
            );
        }
        let (ws, resp) = tokio_tungstenite::client_async_tls_with_config(req, tcp, None, tls)
            .await
            .context("WebSocket handshake")?;
        if resp.status().as_u16() != 101 {
            bail!("handshake answered {}", resp.status());
        }
        Ok(LiveClient {
            ws,
            pending: None,
            notices: Vec::new(),
            media_seen: 0,
        })
    }

    /// The next event, waiting at most `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<LiveEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .context("no live message in time")?;
            let Some(msg) = msg else {
                bail!("the socket ended without a close frame");
            };
            match msg? {
                Message::Text(t) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str())?;
                    match v["type"].as_str() {
                        Some("init") | Some("media") => self.pending = Some(v),
                        Some("recorder") => self.notices.push((self.media_seen, v)),
                        Some("drop") => {
                            return Ok(LiveEvent::Drop {
                                frames: v["frames"].as_u64().context("drop.frames")?,
                            });
                        }
                        _ => bail!("unknown text message {v}"),
                    }
                }
                Message::Binary(data) => {
                    let meta = self
                        .pending
                        .take()
                        .context("binary message without announcement")?;
                    return Ok(if meta["type"] == "init" {
                        LiveEvent::Init { meta, data }
                    } else {
                        self.media_seen += 1;
                        LiveEvent::Media { meta, data }
                    });
                }
                Message::Close(c) => {
                    let (code, reason) = c
                        .map(|c| (u16::from(c.code), c.reason.as_str().to_owned()))
                        .unwrap_or((1005, String::new()));
                    return Ok(LiveEvent::Closed { code, reason });
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// Reads events for `d` (or until the socket closes).
    pub async fn collect_for(&mut self, d: Duration) -> anyhow::Result<Vec<LiveEvent>> {
        let end = tokio::time::Instant::now() + d;
        let mut out = Vec::new();
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(out);
            }
            match self.next(left).await {
                Ok(e) => {
                    let closed = matches!(e, LiveEvent::Closed { .. });
                    out.push(e);
                    if closed {
                        return Ok(out);
                    }
                }
                Err(_) if tokio::time::Instant::now() >= end => return Ok(out),
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The `mdat` payload of a media segment (moof + mdat): the frames' bytes.
pub fn mdat_payload(segment: &[u8]) -> Option<&[u8]> {
    let mut pos = 0usize;
    while pos + 8 <= segment.len() {
        let size = u32::from_be_bytes(segment[pos..pos + 4].try_into().ok()?) as usize;
        let (hdr, size) = if size == 1 {
            (
                16,
                u64::from_be_bytes(segment.get(pos + 8..pos + 16)?.try_into().ok()?) as usize,
            )
        } else {
            (8, size)
        };
        if &segment[pos + 4..pos + 8] == b"mdat" {
            return segment.get(pos + hdr..pos + size);
        }
        if size < 8 {
            return None;
        }
        pos += size;
    }
    None
}

/// A rustls connector trusting only the certificates of `pem`.
fn tls_connector(pem: &[u8]) -> anyhow::Result<tokio_tungstenite::Connector> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(
        config,
    )))
}

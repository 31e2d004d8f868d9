//! Live views through any node of a cluster (issue 15): one relay per viewer, feeding a hub of
//! its own with the frames of the camera's current source, and following the camera when it
//! moves (failover, drain, rebalance). The viewer's socket (vigie-api `routes/live.rs`) muxes
//! the relay hub's frames with its own `LiveMuxer`, so its decode timeline stays continuous
//! across a move and a new init segment is sent only when the codec parameters differ; its
//! options (the H.264 fallback, privacy masks) apply on this node; its rights are checked here
//! every second as for a local view.
//!
//! The source is this node's own hub when it records the camera, else the node the assignment
//! gives the camera to, else any node publishing that it records it, reached over the signed
//! internal route `/internal/v1/cameras/{cam}/streams/{stream}/live` (frames in the format of
//! `vigie_live::wire`; the signature headers on the upgrade request). When the source ends
//! (node killed, camera moved, connection silent for [`SILENT_AFTER`]) the relay picks again
//! every [`RETRY_EVERY`] and tells the viewer once a second with a text message
//! `{"type":"recorder","state":"following","node":null,"from":…,"reason":…}` (the browser's
//! player keeps its socket); the first frame of a new source is announced with
//! `{"type":"recorder","state":"streaming","node":…}`. With no source delivering for
//! `follow_timeout` the viewer is closed with [`CLOSE_NO_RECORDER`] and the last reason.
//!
//! Does not own: the recorder's side (vigie-api `routes/internal_live.rs`), rights, the
//! journal of the view (the API journals `live-start`/`live-stop` here; each recorder journals
//! the relayed view under the carried identity). Internal live connections are `ws://`, or
//! `wss://` to a node whose `advertise_url` is https (verified against `cluster.ca_file`, like
//! the other internal requests; without it the viewer gets a clear reason).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use vigie_api::internal::{CarriedIdentity, ClusterKey};
use vigie_cluster::shared::Shared;
use vigie_core::StreamKey;
use vigie_live::{LiveHub, LiveItem, wire};

/// Close code when no node could give the camera's live view for `follow_timeout` (like a
/// 502 Bad Gateway).
pub const CLOSE_NO_RECORDER: u16 = 4502;
/// A remote source that sends nothing (not even its once-a-second ping) for this long is taken
/// for dead.
pub const SILENT_AFTER: Duration = Duration::from_secs(3);
/// Pause between two attempts to find a source.
pub const RETRY_EVERY: Duration = Duration::from_millis(250);
/// Bound on connecting to a remote source (TCP + WebSocket handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What every relay of this node needs.
pub struct RelayContext {
    pub shared: Arc<Shared>,
    pub key: Option<ClusterKey>,
    pub live: Arc<dyn vigie_service::LiveSource>,
    /// How long a viewer waits for the camera to be recorded somewhere again.
    pub follow_timeout: Duration,
    /// TLS to nodes whose advertise URL is `https://` (roots: `cluster.ca_file`); `None`
    /// without a CA file, when only `http://` nodes can be relayed from.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// The TLS client configuration of the relay: the certificates of `ca_pem` as the only roots
/// (as for the other internal requests).
pub fn relay_tls(ca_pem: &[u8]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert?)?;
    }
    anyhow::ensure!(!roots.is_empty(), "no certificate in it");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Starts the relay of one viewer: its hub, and the guard that stops it when dropped.
pub fn start(
    ctx: Arc<RelayContext>,
    key: &StreamKey,
    who: CarriedIdentity,
) -> vigie_api::LiveRelay {
    let hub = LiveHub::new(key.clone());
    let cancel = CancellationToken::new();
    let span = tracing::info_span!("live_relay", camera = %key.camera, stream = %key.stream, user = %who.user);
    tokio::spawn(run(ctx, hub.clone(), key.clone(), who, cancel.clone()).instrument(span));
    vigie_api::LiveRelay {
        hub,
        guard: Box::new(cancel.drop_guard()),
    }
}

/// How one source ended.
enum Ended {
    /// The viewer left or this node stops: the relay stops.
    Stop,
    /// Look for a source again; the reason, and whether frames were delivered.
    Follow { reason: String, delivered: bool },
}

/// Where the frames come from.
#[derive(Clone, Debug, PartialEq)]
enum Source {
    Local,
    Remote { node: String, url: String },
}

impl Source {
    fn node<'a>(&'a self, me: &'a str) -> &'a str {
        match self {
            Source::Local => me,
            Source::Remote { node, .. } => node,
        }
    }
}

/// The candidates, best first: this node when it records the camera, the assigned node, the
/// nodes publishing that they record it.
fn candidates(shared: &Shared, camera: &str) -> Vec<Source> {
    let me = shared.node();
    if shared.records_here(camera) {
        return vec![Source::Local];
    }
    let view = shared.view();
    let state = shared.state();
    let mut nodes: Vec<String> = view.assignment.get(camera).cloned().into_iter().collect();
    for s in state.statuses.values() {
        if s.recording.contains_key(camera) && !nodes.contains(&s.node) {
            nodes.push(s.node.clone());
        }
    }
    nodes
        .into_iter()
        .filter(|n| n != me)
        .filter_map(|n| {
            view.members.get(&n).map(|m| Source::Remote {
                url: m.advertise_url.clone(),
                node: n,
            })
        })
        .collect()
}

fn notice(state: &str, node: Option<&str>, from: Option<&str>, reason: Option<&str>) -> String {
    serde_json::json!({ "type": "recorder", "state": state, "node": node, "from": from, "reason": reason })
        .to_string()
}

async fn run(
    ctx: Arc<RelayContext>,
    hub: Arc<LiveHub>,
    key: StreamKey,
    who: CarriedIdentity,
    cancel: CancellationToken,
) {
    // The viewer subscribes once its WebSocket upgrade is done: start then, or its first
    // notice and the first frames would reach nobody (and it would wait a GOP for a key frame).
    let t0 = Instant::now();
    while hub.viewers() == 0 {
        if cancel.is_cancelled() || t0.elapsed() > CONNECT_TIMEOUT {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let me = ctx.shared.node().to_owned();
    // Since when no source delivers frames, and the node that delivered last.
    let mut since = Instant::now();
    let mut from: Option<String> = None;
    let mut last_notice: Option<Instant> = None;
    loop {
        let cands = candidates(&ctx.shared, &key.camera);
        let mut reason = format!("no node records camera {} now", key.camera);
        for src in cands {
            let node = src.node(&me).to_owned();
            let ended = match &src {
                Source::Local => local(&ctx, &hub, &key, &cancel).await,
                Source::Remote { node, url } => {
                    remote(&ctx, &hub, &key, &who, node, url, &cancel).await
                }
            };
            let Ended::Follow {
                reason: r,
                delivered,
            } = ended
            else {
                return;
            };
            if delivered {
                tracing::info!(node = %node, reason = %r, "live source ended: following the camera");
                since = Instant::now();
                from = Some(node.clone());
                last_notice = None;
            } else {
                tracing::debug!(node = %node, reason = %r, "live source unavailable");
            }
            reason = format!("node {node}: {r}");
            if cancel.is_cancelled() {
                return;
            }
        }
        // No source delivers now.
        if since.elapsed() > ctx.follow_timeout {
            let why = format!(
                "no node gave the live view of {} for {} s: {reason}",
                key.camera,
                ctx.follow_timeout.as_secs()
            );
            tracing::warn!(%why, "live relay gives up");
            hub.end_viewers(CLOSE_NO_RECORDER, &why);
            return;
        }
        if last_notice.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            hub.notice(notice("following", None, from.as_deref(), Some(&reason)));
            last_notice = Some(Instant::now());
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RETRY_EVERY) => {}
        }
    }
}

/// Relays this node's own hub until it ends, the camera leaves this node, or the viewer goes.
async fn local(
    ctx: &RelayContext,
    hub: &LiveHub,
    key: &StreamKey,
    cancel: &CancellationToken,
) -> Ended {
    let Some(src) = ctx.live.hub(key) else {
        return Ended::Follow {
            reason: format!("no live view of {key} here"),
            delivered: false,
        };
    };
    let Some((queue, backlog)) = src.subscribe() else {
        return Ended::Stop; // this node is stopping
    };
    let mut delivered = false;
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let me = ctx.shared.node().to_owned();
    let deliver = |f: vigie_live::LiveFrame, delivered: &mut bool| {
        if !*delivered {
            hub.notice(notice("streaming", Some(&me), None, None));
        }
        *delivered = true;
        hub.relay(f);
    };
    for f in backlog {
        deliver(f, &mut delivered);
    }
    let ended = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ended::Stop,
            _ = check.tick() => {
                if !ctx.shared.records_here(&key.camera) {
                    break Ended::Follow { reason: "the camera left this node".into(), delivered };
                }
            }
            items = queue.next_batch() => {
                let mut end = None;
                for item in items {
                    match item {
                        LiveItem::Frame(f) => deliver(f, &mut delivered),
                        LiveItem::End { code, reason } => {
                            end = Some(if code == vigie_live::CLOSE_GOING_AWAY {
                                Ended::Stop
                            } else {
                                Ended::Follow { reason, delivered }
                            });
                            break;
                        }
                        LiveItem::Dropped(_) | LiveItem::Notice(_) => {}
                    }
                }
                if let Some(e) = end {
                    break e;
                }
            }
        }
    };
    queue.leave();
    if matches!(ended, Ended::Stop) && !cancel.is_cancelled() {
        hub.end_viewers(vigie_live::CLOSE_GOING_AWAY, "server shutting down");
    }
    ended
}

/// Relays another node's hub over its internal live route.
#[allow(clippy::too_many_arguments)]
async fn remote(
    ctx: &RelayContext,
    hub: &LiveHub,
    key: &StreamKey,
    who: &CarriedIdentity,
    node: &str,
    url: &str,
    cancel: &CancellationToken,
) -> Ended {
    let fail = |reason: String| Ended::Follow {
        reason,
        delivered: false,
    };
    let Some(signer) = &ctx.key else {
        return fail(
            "this node has no cluster secret ([cluster] secret_env or secret_file)".into(),
        );
    };
    let base = url.trim_end_matches('/');
    let (scheme, authority) = if let Some(a) = base.strip_prefix("http://") {
        ("ws", a)
    } else if let Some(a) = base.strip_prefix("https://") {
        if ctx.tls.is_none() {
            return fail(format!(
                "its advertise URL {url} is https:// and this node has no cluster.ca_file to \
                 verify it"
            ));
        }
        ("wss", a)
    } else {
        return fail(format!(
            "its advertise URL {url} is not http:// or https://"
        ));
    };
    let pq = format!(
        "/internal/v1/cameras/{}/streams/{}/live",
        key.camera, key.stream
    );
    let mut req = match format!("{scheme}://{authority}{pq}").into_client_request() {
        Ok(r) => r,
        Err(e) => return fail(format!("bad advertise URL {url}: {e}")),
    };
    let now_s = jiff::Timestamp::now().as_second();
    for (k, v) in signer.sign("GET", &pq, who, now_s) {
        match v.parse() {
            Ok(v) => {
                req.headers_mut().insert(k, v);
            }
            Err(_) => return fail(format!("header {k} cannot be sent")),
        }
    }
    let connector = ctx.tls.clone().map(tokio_tungstenite::Connector::Rustls);
    let connect = tokio_tungstenite::connect_async_tls_with_config(req, None, true, connector);
    let mut ws = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Err(_) => return fail(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned())
                .unwrap_or_default();
            return fail(format!("answered {}: {body}", resp.status()));
        }
        Ok(Err(e)) => return fail(format!("unreachable: {e}")),
        Ok(Ok((ws, _))) => ws,
    };
    tracing::info!(node, "relaying the live view from another node");
    let mut params = None;
    let mut delivered = false;
    let mut silent = Box::pin(tokio::time::sleep(SILENT_AFTER));
    let ended = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ended::Stop,
            _ = &mut silent => {
                break Ended::Follow { reason: format!("silent for {} s", SILENT_AFTER.as_secs()), delivered };
            }
            msg = ws.next() => {
                silent.as_mut().reset(tokio::time::Instant::now() + SILENT_AFTER);
                match msg {
                    None => break Ended::Follow { reason: "connection closed".into(), delivered },
                    Some(Err(e)) => break Ended::Follow { reason: format!("connection lost: {e}"), delivered },
                    Some(Ok(Message::Binary(b))) => match wire::parse_frame(b, params.as_ref()) {
                        Ok(f) => {
                            if !delivered {
                                hub.notice(notice("streaming", Some(node), None, None));
                            }
                            delivered = true;
                            hub.relay(f);
                        }
                        Err(e) => break Ended::Follow { reason: format!("bad frame: {e}"), delivered },
                    },
                    Some(Ok(Message::Text(t))) => match wire::parse_text(t.as_str()) {
                        Ok(wire::TextMessage::Params(p)) => params = Some(p),
                        Ok(wire::TextMessage::Drop(n)) => tracing::debug!(frames = n, "the source skipped frames"),
                        Err(e) => break Ended::Follow { reason: format!("bad message: {e}"), delivered },
                    },
                    Some(Ok(Message::Close(c))) => {
                        let (code, reason) = c
                            .map(|c| (u16::from(c.code), c.reason.as_str().to_owned()))
                            .unwrap_or((1005, String::new()));
                        break Ended::Follow { reason: format!("closed {code} {reason}"), delivered };
                    }
                    Some(Ok(_)) => {} // pings (answered by tungstenite), pongs
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    let _ = ws.flush().await;
    ended
}

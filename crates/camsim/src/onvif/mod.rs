//! camsim's ONVIF side: a simulated ONVIF device (SOAP 1.2 over HTTP) in front of camsim's
//! RTSP mounts, for Vigie's ONVIF client and the tests.
//!
//! - Device service (`/onvif/device_service`): `GetSystemDateAndTime` (no credentials needed,
//!   as ONVIF requires), `GetDeviceInformation`, `GetCapabilities`, `GetServices`.
//! - Media (`/onvif/media`): `GetProfiles` (one profile per configured RTSP mount, e.g. `main`
//!   and `sub`, with codec, resolution and frame rate), `GetStreamUri`.
//! - PTZ (`/onvif/ptz`): `GetNodes`, `GetStatus`, `ContinuousMove` (velocity integrated over
//!   time, optional `Timeout`), `Stop`, `AbsoluteMove`, `RelativeMove`, `GetPresets`,
//!   `SetPreset`, `GotoPreset`, `RemovePreset` ([`ptz`]). The position is reported by
//!   `GetStatus` and the control API; with a [`ptz_view::PtzView`] attached
//!   ([`OnvifHandle::attach_ptz_view`]) the mount's picture follows the pan (one pre-encoded GOP
//!   per pan position: camsim still never re-encodes).
//! - Events (`/onvif/events`): `GetEventProperties`, `CreatePullPointSubscription`, then on the
//!   subscription's address `PullMessages` (long poll), `Renew` and `Unsubscribe` ([`events`];
//!   how long a subscription lives and whether a pull extends it: [`events::SubscriptionPolicy`]).
//! - Media2 (`/onvif/media2`): privacy masks (`GetMasks`, `CreateMask`, `SetMask`,
//!   `DeleteMask`), reported by `GET /control/masks` ([`media2`]); switchable off.
//! - WS-Security `UsernameToken` digest authentication on everything but
//!   `GetSystemDateAndTime`; a bad or missing token, a plain-text password or a replayed nonce
//!   answers a `ter:NotAuthorized` SOAP fault (HTTP 400).
//! - Fault injection ([`OnvifFault`]): malformed XML, non-XML garbage, or no answer.
//! - Control API for tests and scripts (JSON, no credentials: camsim is a test tool):
//!   `GET /control/ptz` → `{"pan","tilt","zoom","moving","commands","view"}` (`view`: index of
//!   the picture shown by an attached PTZ view, or null);
//!   `POST /control/events/{motion|tampering|video-loss|digital-input}?state=true|false`;
//!   `POST /control/fault/{none|malformed|garbage|silent}`; `GET /control/stats`.
//! - WS-Discovery on UDP ([`discovery`]).

pub mod discovery;
pub mod events;
pub mod media2;
pub mod ptz;
pub mod ptz_view;
pub mod soap;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info};

use crate::error::{Error, Result};
use crate::server::ServerHandle;
use events::{Event, EventBus, EventKind};
use ptz::{PtzHead, PtzPosition, PtzRefusal};
use soap::{Verifier, child, envelope, esc, fault, text};

/// One media profile of the simulated device.
#[derive(Clone, Debug)]
pub struct OnvifProfile {
    /// Profile token (and name), e.g. `main`, `sub`.
    pub token: String,
    /// The RTSP URL `GetStreamUri` answers.
    pub stream_uri: String,
    /// `H264` or `H265`.
    pub encoding: &'static str,
    /// Width, height in pixels (0 when unknown).
    pub resolution: (u32, u32),
    /// Frames per second.
    pub fps: f64,
}

impl OnvifProfile {
    /// A profile serving camsim mount `mount` of `rtsp` (`None` if no such mount).
    pub fn for_mount(token: &str, rtsp: &ServerHandle, mount: &str) -> Option<OnvifProfile> {
        let m = rtsp.mount(mount)?;
        let f = m.fixture();
        Some(OnvifProfile {
            token: token.to_owned(),
            stream_uri: rtsp.url(mount),
            encoding: match f.codec() {
                crate::Codec::H264 => "H264",
                crate::Codec::H265 => "H265",
            },
            resolution: f.dimensions().unwrap_or((0, 0)),
            fps: f.fps(),
        })
    }
}

/// What the simulated device offers.
#[derive(Clone, Debug, Default)]
pub struct OnvifConfig {
    /// Credentials (user, password) required by every operation but `GetSystemDateAndTime`;
    /// `None`: open device.
    pub auth: Option<(String, String)>,
    /// Media profiles, in `GetProfiles` order (the first is the main stream).
    pub profiles: Vec<OnvifProfile>,
    /// Offer the PTZ service.
    pub ptz: bool,
    /// Answer WS-Discovery probes on this UDP address (`0.0.0.0:3702` joins the multicast group).
    pub discovery: Option<SocketAddr>,
}

/// Injected misbehaviour of the SOAP side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnvifFault {
    /// Behave.
    None = 0,
    /// Answer 200 with a truncated, unparseable envelope.
    Malformed = 1,
    /// Answer 200 with bytes that are not XML at all.
    Garbage = 2,
    /// Never answer (the connection stays open until the client gives up).
    Silent = 3,
}

impl std::str::FromStr for OnvifFault {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<OnvifFault, String> {
        Ok(match s {
            "none" => OnvifFault::None,
            "malformed" => OnvifFault::Malformed,
            "garbage" => OnvifFault::Garbage,
            "silent" => OnvifFault::Silent,
            _ => {
                return Err(format!(
                    "unknown ONVIF fault {s:?} (none, malformed, garbage, silent)"
                ));
            }
        })
    }
}

/// Counters of the simulated device.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct OnvifStats {
    /// SOAP requests received.
    pub requests: u64,
    /// Requests refused for their credentials.
    pub auth_failures: u64,
    /// Open PullPoint subscriptions.
    pub subscriptions: u64,
    /// Events raised.
    pub events_raised: u64,
    /// PullPoint subscriptions created so far.
    pub subscriptions_created: u64,
    /// Successful `Renew`s so far.
    pub renews: u64,
}

struct Device {
    config: OnvifConfig,
    verifier: Option<Verifier>,
    base_url: String,
    ptz: Mutex<PtzHead>,
    /// 1 + the index of the view shown by an attached [`ptz_view::PtzView`] (0: none).
    ptz_view: AtomicU64,
    /// Demand HTTP Digest (RFC 2617, `qop=auth`) on every request instead of WS-UsernameToken.
    http_digest: std::sync::atomic::AtomicBool,
    /// The HTTP Digest nonce (one per device run).
    http_nonce: String,
    events: EventBus,
    fault: AtomicU8,
    media2: media2::Media2,
    requests: AtomicU64,
    auth_failures: AtomicU64,
    uuid: String,
}

/// Starts the simulated device.
#[derive(Debug)]
pub struct OnvifServer;

impl OnvifServer {
    /// Binds `listen` (port 0: a free port) for HTTP, and the discovery socket if configured.
    pub async fn start(listen: SocketAddr, config: OnvifConfig) -> Result<OnvifHandle> {
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
        let host = if addr.ip().is_unspecified() {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
        } else {
            addr
        };
        let uuid = format!("{:032x}", rand::random::<u128>());
        let device = Arc::new(Device {
            verifier: config.auth.as_ref().map(|(u, p)| Verifier::new(u, p)),
            base_url: format!("http://{host}"),
            ptz: Mutex::new(PtzHead::default()),
            ptz_view: AtomicU64::new(0),
            http_digest: std::sync::atomic::AtomicBool::new(false),
            http_nonce: format!("{:032x}", rand::random::<u128>()),
            events: EventBus::default(),
            fault: AtomicU8::new(0),
            media2: media2::Media2::default(),
            requests: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            uuid: uuid.clone(),
            config,
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let discovery_addr = match device.config.discovery {
            Some(bind) => Some(
                discovery::start(
                    bind,
                    format!("{}/onvif/device_service", device.base_url),
                    uuid,
                    shutdown_rx.clone(),
                )
                .await
                .map_err(|source| Error::Bind { addr: bind, source })?,
            ),
            None => None,
        };
        let app = Router::new()
            .route("/control/ptz", get(control_ptz))
            .route("/control/stats", get(control_stats))
            .route("/control/events/{kind}", post(control_event))
            .route("/control/fault/{mode}", post(control_fault))
            .route("/control/masks", get(control_masks))
            .route("/control/media2/{state}", post(control_media2))
            .fallback(post(soap_endpoint))
            .with_state(device.clone());
        let rx_for_views = shutdown_rx.clone();
        let mut rx = shutdown_rx;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|v| *v).await;
                })
                .await;
        });
        info!(%addr, ?discovery_addr, "camsim ONVIF device listening");
        Ok(OnvifHandle {
            addr: host,
            discovery_addr,
            device,
            shutdown_tx,
            shutdown_rx: rx_for_views,
        })
    }
}

/// A running simulated device; dropping it stops it.
pub struct OnvifHandle {
    addr: SocketAddr,
    discovery_addr: Option<SocketAddr>,
    device: Arc<Device>,
    shutdown_tx: watch::Sender<bool>,
    shutdown_rx: watch::Receiver<bool>,
}

impl std::fmt::Debug for OnvifHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnvifHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl OnvifHandle {
    /// The HTTP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    /// `http://IP:PORT/onvif/device_service`.
    pub fn device_url(&self) -> String {
        format!("{}/onvif/device_service", self.device.base_url)
    }
    /// `http://IP:PORT` (the control API lives under `/control/`).
    pub fn base_url(&self) -> String {
        self.device.base_url.clone()
    }
    /// The WS-Discovery UDP address, if discovery is on.
    pub fn discovery_addr(&self) -> Option<SocketAddr> {
        self.discovery_addr
    }
    /// The simulated head's position now, and whether it moves.
    pub fn ptz_position(&self) -> (PtzPosition, bool) {
        lock(&self.device.ptz).status(Instant::now())
    }
    /// Makes `view.mount`'s picture follow the head's pan from now on (until shutdown). Call it
    /// within a Tokio runtime (it spawns the watcher).
    pub fn attach_ptz_view(&self, view: ptz_view::PtzView) {
        tokio::spawn(ptz_view::watch(
            self.device.clone(),
            view,
            self.shutdown_rx.clone(),
        ));
    }
    /// Index of the picture an attached PTZ view shows now (`None` without one).
    pub fn ptz_view(&self) -> Option<usize> {
        shown_view(&self.device)
    }
    /// PTZ commands received (moves, stops, preset recalls).
    pub fn ptz_commands(&self) -> u64 {
        lock(&self.device.ptz).commands
    }
    /// Raises (state `true`) or clears an alarm.
    pub fn raise(&self, kind: EventKind, state: bool) {
        raise(&self.device, kind, state);
    }
    /// Makes the SOAP side misbehave (or behave again with [`OnvifFault::None`]).
    pub fn set_fault(&self, f: OnvifFault) {
        self.device.fault.store(f as u8, Relaxed);
    }
    /// The Media2 privacy masks the device holds (as the client sent them).
    pub fn masks(&self) -> Vec<media2::StoredMask> {
        self.device.media2.masks()
    }
    /// Offers the Media2 service (masks) or not (a Media ver10-only camera).
    pub fn set_media2(&self, on: bool) {
        self.device.media2.enabled.store(on, Relaxed);
    }
    /// Demands HTTP Digest authentication (`WWW-Authenticate: Digest … qop="auth"`) on every
    /// request, `GetSystemDateAndTime` included, instead of the WS-UsernameToken (as cameras
    /// whose WS-Security is off do). Needs [`OnvifConfig::auth`].
    pub fn require_http_digest(&self, on: bool) {
        self.device.http_digest.store(on, Relaxed);
    }
    /// How event subscriptions live from now on (e.g. a camera that expires a subscription
    /// that is pulled but not renewed).
    pub fn set_subscription_policy(&self, policy: events::SubscriptionPolicy) {
        self.device.events.set_policy(policy);
    }
    /// Counters.
    pub fn stats(&self) -> OnvifStats {
        stats(&self.device)
    }
    /// Stops serving.
    pub fn shutdown(&self) {
        let _ = self.shutdown_tx.send(true);
    }
}

impl Drop for OnvifHandle {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string())
}

fn raise(d: &Device, kind: EventKind, state: bool) {
    info!(event = kind.name(), state, "camsim ONVIF: raising event");
    d.events.raise(Event {
        kind,
        state,
        utc: now_rfc3339(),
    });
}

fn shown_view(d: &Device) -> Option<usize> {
    match d.ptz_view.load(Relaxed) {
        0 => None,
        v => Some((v - 1) as usize),
    }
}

fn stats(d: &Device) -> OnvifStats {
    OnvifStats {
        requests: d.requests.load(Relaxed),
        auth_failures: d.auth_failures.load(Relaxed),
        subscriptions: d.events.subscriptions() as u64,
        events_raised: d.events.raised.load(Relaxed),
        subscriptions_created: d.events.created.load(Relaxed),
        renews: d.events.renewed.load(Relaxed),
    }
}

async fn control_ptz(State(d): State<Arc<Device>>) -> Response {
    let mut h = lock(&d.ptz);
    let (p, moving) = h.status(Instant::now());
    axum::Json(serde_json::json!({
        "pan": p.pan, "tilt": p.tilt, "zoom": p.zoom, "moving": moving, "commands": h.commands,
        "view": shown_view(&d),
    }))
    .into_response()
}

async fn control_stats(State(d): State<Arc<Device>>) -> Response {
    axum::Json(stats(&d)).into_response()
}

#[derive(serde::Deserialize)]
struct EventQuery {
    state: Option<bool>,
}

async fn control_event(
    State(d): State<Arc<Device>>,
    Path(kind): Path<String>,
    Query(q): Query<EventQuery>,
) -> Response {
    match kind.parse::<EventKind>() {
        Ok(k) => {
            raise(&d, k, q.state.unwrap_or(true));
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::NOT_FOUND, e).into_response(),
    }
}

async fn control_masks(State(d): State<Arc<Device>>) -> Response {
    axum::Json(serde_json::json!({
        "media2": d.media2.is_enabled(),
        "masks": d.media2.masks(),
    }))
    .into_response()
}

async fn control_media2(State(d): State<Arc<Device>>, Path(state): Path<String>) -> Response {
    match state.as_str() {
        "on" | "off" => {
            d.media2.enabled.store(state == "on", Relaxed);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => (StatusCode::NOT_FOUND, "on or off").into_response(),
    }
}

async fn control_fault(State(d): State<Arc<Device>>, Path(mode): Path<String>) -> Response {
    match mode.parse::<OnvifFault>() {
        Ok(f) => {
            d.fault.store(f as u8, Relaxed);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::NOT_FOUND, e).into_response(),
    }
}

fn xml(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/soap+xml; charset=utf-8")],
        body,
    )
        .into_response()
}

fn sender_fault(sub: &str, reason: &str) -> Response {
    xml(StatusCode::BAD_REQUEST, fault("Sender", &[sub], reason))
}

async fn soap_endpoint(
    State(d): State<Arc<Device>>,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    d.requests.fetch_add(1, Relaxed);
    let http_digest = d.http_digest.load(Relaxed);
    if http_digest && let Some((user, pass)) = &d.config.auth {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !crate::Auth::digest(user, pass).check(given, "POST", &d.http_nonce) {
            if given.is_some() {
                d.auth_failures.fetch_add(1, Relaxed);
            }
            return (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    format!(
                        "Digest realm=\"{}\", qop=\"auth\", nonce=\"{}\", algorithm=MD5",
                        crate::auth::REALM,
                        d.http_nonce
                    ),
                )],
                "401 Unauthorized",
            )
                .into_response();
        }
    }
    match d.fault.load(Relaxed) {
        1 => {
            return xml(
                StatusCode::OK,
                format!(
                    r#"<?xml version="1.0"?><s:Envelope xmlns:s="{}"><s:Body><tds:GetDeviceInformationResponse><tds:Manufacturer>Vig"#,
                    soap::NS_SOAP
                ),
            );
        }
        2 => return xml(StatusCode::OK, "HTTP/1.1 200 OK but \u{1} not XML {".into()),
        3 => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        _ => {}
    }
    let Ok(s) = std::str::from_utf8(&body) else {
        return sender_fault("ter:WellFormed", "the request is not UTF-8");
    };
    let doc = match roxmltree::Document::parse(s) {
        Ok(doc) => doc,
        Err(e) => return sender_fault("ter:WellFormed", &format!("the request is not XML: {e}")),
    };
    let req = match soap::parse(&doc) {
        Ok(r) => r,
        Err(e) => return sender_fault("ter:WellFormed", &e),
    };
    let op = req.op.tag_name().name();
    debug!(path = uri.path(), op, "camsim ONVIF request");
    if op != "GetSystemDateAndTime"
        && !http_digest
        && let Some(v) = &d.verifier
        && let Err(refusal) = v.check(req.token.as_ref())
    {
        d.auth_failures.fetch_add(1, Relaxed);
        return sender_fault("ter:NotAuthorized", refusal.reason());
    }
    let path = uri.path();
    let result = if let Some(id) = path.strip_prefix("/onvif/events/sub/") {
        subscription_op(&d, id, op, req.op).await
    } else if path == "/onvif/media2" {
        media2::operation(&d.media2, op, req.op)
    } else {
        operation(&d, op, req.op)
    };
    match result {
        Ok(body) => xml(StatusCode::OK, envelope(&body)),
        Err(Fault::Sender(sub, reason)) => sender_fault(sub, &reason),
        Err(Fault::NotSupported(op)) => xml(
            StatusCode::BAD_REQUEST,
            fault(
                "Receiver",
                &["ter:ActionNotSupported"],
                &format!("camsim does not implement {op}"),
            ),
        ),
    }
}

enum Fault {
    Sender(&'static str, String),
    NotSupported(String),
}

fn invalid(reason: impl Into<String>) -> Fault {
    Fault::Sender("ter:InvalidArgVal", reason.into())
}

fn profile<'a>(
    d: &'a Device,
    op: roxmltree::Node<'_, '_>,
) -> std::result::Result<&'a OnvifProfile, Fault> {
    let token = text(child(op, "ProfileToken"));
    d.config
        .profiles
        .iter()
        .find(|p| p.token == token)
        .ok_or_else(|| Fault::Sender("ter:NoProfile", format!("no profile {token:?}")))
}

fn ptz_enabled(d: &Device) -> std::result::Result<(), Fault> {
    if d.config.ptz {
        Ok(())
    } else {
        Err(Fault::NotSupported("PTZ".into()))
    }
}

/// `<PanTilt x= y=/>` and `<Zoom x=/>` under `n` (absent axes are 0 / untouched).
fn vector(
    n: Option<roxmltree::Node<'_, '_>>,
) -> std::result::Result<(PtzPosition, bool, bool), Fault> {
    let Some(n) = n else {
        return Ok((PtzPosition::default(), false, false));
    };
    let num = |e: roxmltree::Node<'_, '_>, a: &str| -> std::result::Result<f64, Fault> {
        match e.attribute(a) {
            None => Ok(0.0),
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| invalid(format!("{a}={v:?} is not a number"))),
        }
    };
    let mut p = PtzPosition::default();
    let pt = child(n, "PanTilt");
    if let Some(e) = pt {
        p.pan = num(e, "x")?;
        p.tilt = num(e, "y")?;
    }
    let z = child(n, "Zoom");
    if let Some(e) = z {
        p.zoom = num(e, "x")?;
    }
    Ok((p, pt.is_some(), z.is_some()))
}

/// `PT1.5S`-style durations (seconds only, with optional minutes/hours).
fn xs_duration(s: &str) -> Option<Duration> {
    let rest = s.trim().strip_prefix("PT")?;
    let mut total = 0.0;
    let mut num = String::new();
    for c in rest.chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'H' | 'M' | 'S' => {
                let v: f64 = num.parse().ok()?;
                total += v * match c {
                    'H' => 3600.0,
                    'M' => 60.0,
                    _ => 1.0,
                };
                num.clear();
            }
            _ => return None,
        }
    }
    (num.is_empty() && total.is_finite()).then(|| Duration::from_secs_f64(total.min(86_400.0)))
}

fn position_xml(p: PtzPosition) -> String {
    format!(
        r#"<tt:PanTilt x="{}" y="{}" space="http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionGenericSpace"/><tt:Zoom x="{}" space="http://www.onvif.org/ver10/tptz/ZoomSpaces/PositionGenericSpace"/>"#,
        p.pan, p.tilt, p.zoom
    )
}

fn service_urls(d: &Device) -> [(&'static str, String); 4] {
    [
        ("device", format!("{}/onvif/device_service", d.base_url)),
        ("media", format!("{}/onvif/media", d.base_url)),
        ("ptz", format!("{}/onvif/ptz", d.base_url)),
        ("events", format!("{}/onvif/events", d.base_url)),
    ]
}

fn operation(
    d: &Device,
    op: &str,
    el: roxmltree::Node<'_, '_>,
) -> std::result::Result<String, Fault> {
    let now = Instant::now();
    let [dev, media, ptz_url, ev] = service_urls(d);
    Ok(match op {
        "GetSystemDateAndTime" => {
            let t = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
            format!(
                "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings><tt:UTCDateTime><tt:Time><tt:Hour>{}</tt:Hour><tt:Minute>{}</tt:Minute><tt:Second>{}</tt:Second></tt:Time><tt:Date><tt:Year>{}</tt:Year><tt:Month>{}</tt:Month><tt:Day>{}</tt:Day></tt:Date></tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>",
                t.hour(),
                t.minute(),
                t.second(),
                t.year(),
                t.month(),
                t.day()
            )
        }
        "GetDeviceInformation" => format!(
            "<tds:GetDeviceInformationResponse><tds:Manufacturer>Vigie</tds:Manufacturer><tds:Model>camsim</tds:Model><tds:FirmwareVersion>{}</tds:FirmwareVersion><tds:SerialNumber>{}</tds:SerialNumber><tds:HardwareId>camsim-1</tds:HardwareId></tds:GetDeviceInformationResponse>",
            env!("CARGO_PKG_VERSION"),
            &d.uuid[..12]
        ),
        "GetCapabilities" => {
            let ptz = if d.config.ptz {
                format!("<tt:PTZ><tt:XAddr>{}</tt:XAddr></tt:PTZ>", ptz_url.1)
            } else {
                String::new()
            };
            format!(
                "<tds:GetCapabilitiesResponse><tds:Capabilities><tt:Device><tt:XAddr>{}</tt:XAddr></tt:Device><tt:Events><tt:XAddr>{}</tt:XAddr><tt:WSSubscriptionPolicySupport>false</tt:WSSubscriptionPolicySupport><tt:WSPullPointSupport>true</tt:WSPullPointSupport><tt:WSPausableSubscriptionManagerInterfaceSupport>false</tt:WSPausableSubscriptionManagerInterfaceSupport></tt:Events><tt:Media><tt:XAddr>{}</tt:XAddr><tt:StreamingCapabilities><tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP><tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>{ptz}</tds:Capabilities></tds:GetCapabilitiesResponse>",
                dev.1, ev.1, media.1
            )
        }
        "GetServices" => {
            let mut s = String::from("<tds:GetServicesResponse>");
            let ns = [
                ("device", "http://www.onvif.org/ver10/device/wsdl"),
                ("media", "http://www.onvif.org/ver10/media/wsdl"),
                ("ptz", "http://www.onvif.org/ver20/ptz/wsdl"),
                ("events", "http://www.onvif.org/ver10/events/wsdl"),
            ];
            for (name, url) in [&dev, &media, &ptz_url, &ev] {
                if *name == "ptz" && !d.config.ptz {
                    continue;
                }
                let n = ns.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v);
                s.push_str(&format!(
                    "<tds:Service><tds:Namespace>{n}</tds:Namespace><tds:XAddr>{url}</tds:XAddr><tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>"
                ));
            }
            if d.media2.is_enabled() {
                s.push_str(&format!(
                    "<tds:Service><tds:Namespace>{}</tds:Namespace><tds:XAddr>{}/onvif/media2</tds:XAddr><tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>",
                    media2::NS_MEDIA2,
                    d.base_url
                ));
            }
            s.push_str("</tds:GetServicesResponse>");
            s
        }
        "GetProfiles" => {
            let mut s = String::from("<trt:GetProfilesResponse>");
            for p in &d.config.profiles {
                let ptz = if d.config.ptz {
                    "<tt:PTZConfiguration token=\"ptz0\"><tt:Name>ptz0</tt:Name><tt:UseCount>1</tt:UseCount><tt:NodeToken>node0</tt:NodeToken><tt:DefaultContinuousPanTiltVelocitySpace>http://www.onvif.org/ver10/tptz/PanTiltSpaces/VelocityGenericSpace</tt:DefaultContinuousPanTiltVelocitySpace><tt:DefaultPTZTimeout>PT10S</tt:DefaultPTZTimeout></tt:PTZConfiguration>"
                } else {
                    ""
                };
                s.push_str(&format!(
                    "<trt:Profiles token=\"{t}\" fixed=\"true\"><tt:Name>{t}</tt:Name><tt:VideoSourceConfiguration token=\"vsc0\"><tt:Name>vsc0</tt:Name><tt:UseCount>2</tt:UseCount><tt:SourceToken>vs0</tt:SourceToken><tt:Bounds x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\"/></tt:VideoSourceConfiguration><tt:VideoEncoderConfiguration token=\"vec-{t}\"><tt:Name>vec-{t}</tt:Name><tt:UseCount>1</tt:UseCount><tt:Encoding>{e}</tt:Encoding><tt:Resolution><tt:Width>{w}</tt:Width><tt:Height>{h}</tt:Height></tt:Resolution><tt:Quality>5</tt:Quality><tt:RateControl><tt:FrameRateLimit>{f}</tt:FrameRateLimit><tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>2048</tt:BitrateLimit></tt:RateControl><tt:SessionTimeout>PT60S</tt:SessionTimeout></tt:VideoEncoderConfiguration>{ptz}</trt:Profiles>",
                    t = esc(&p.token),
                    w = p.resolution.0,
                    h = p.resolution.1,
                    e = p.encoding,
                    f = p.fps.round() as u32,
                ));
            }
            s.push_str("</trt:GetProfilesResponse>");
            s
        }
        "GetStreamUri" => {
            let p = profile(d, el)?;
            format!(
                "<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>{}</tt:Uri><tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetStreamUriResponse>",
                esc(&p.stream_uri)
            )
        }
        "GetNodes" => {
            ptz_enabled(d)?;
            "<tptz:GetNodesResponse><tptz:PTZNode token=\"node0\" FixedHomePosition=\"false\"><tt:Name>camsim head</tt:Name><tt:MaximumNumberOfPresets>64</tt:MaximumNumberOfPresets><tt:HomeSupported>false</tt:HomeSupported></tptz:PTZNode></tptz:GetNodesResponse>".into()
        }
        "GetStatus" => {
            ptz_enabled(d)?;
            profile(d, el)?;
            let (p, moving) = lock(&d.ptz).status(now);
            let st = if moving { "MOVING" } else { "IDLE" };
            format!(
                "<tptz:GetStatusResponse><tptz:PTZStatus><tt:Position>{}</tt:Position><tt:MoveStatus><tt:PanTilt>{st}</tt:PanTilt><tt:Zoom>{st}</tt:Zoom></tt:MoveStatus><tt:UtcTime>{}</tt:UtcTime></tptz:PTZStatus></tptz:GetStatusResponse>",
                position_xml(p),
                now_rfc3339()
            )
        }
        "ContinuousMove" => {
            ptz_enabled(d)?;
            profile(d, el)?;
            let (v, _, _) = vector(child(el, "Velocity"))?;
            let timeout = match child(el, "Timeout") {
                Some(t) => Some(
                    xs_duration(&text(Some(t)))
                        .ok_or_else(|| invalid("Timeout is not an xs:duration like PT5S"))?,
                ),
                None => None,
            };
            lock(&d.ptz).continuous(now, v, timeout);
            "<tptz:ContinuousMoveResponse/>".into()
        }
        "Stop" => {
            ptz_enabled(d)?;
            profile(d, el)?;
            let flag = |n: &str| child(el, n).is_none_or(|e| text(Some(e)) != "false");
            lock(&d.ptz).stop(now, flag("PanTilt"), flag("Zoom"));
            "<tptz:StopResponse/>".into()
        }
        "AbsoluteMove" => {
            ptz_enabled(d)?;
            profile(d, el)?;
            let (p, has_pt, has_z) = vector(child(el, "Position"))?;
            let mut h = lock(&d.ptz);
            let (cur, _) = h.status(now);
            let to = PtzPosition {
                pan: if has_pt { p.pan } else { cur.pan },
                tilt: if has_pt { p.tilt } else { cur.tilt },
                zoom: if has_z { p.zoom } else { cur.zoom },
            };
            h.absolute(now, to);
            "<tptz:AbsoluteMoveResponse/>".into()
        }
        "RelativeMove" => {
            ptz_enabled(d)?;
            profile(d, el)?;
            let (p, _, _) = vector(child(el, "Translation"))?;
            lock(&d.ptz).relative(now, p);
            "<tptz:RelativeMoveResponse/>".into()
        }
        "GetPresets" => {
            ptz_enabled(d)?;
            profile(d, el)?;
            let mut s = String::from("<tptz:GetPresetsResponse>");
            for p in lock(&d.ptz).presets() {
                s.push_str(&format!(
                    "<tptz:Preset token=\"{}\"><tt:Name>{}</tt:Name><tt:PTZPosition>{}</tt:PTZPosition></tptz:Preset>",
                    esc(&p.token),
                    esc(&p.name),
                    position_xml(p.position)
                ));
            }
            s.push_str("</tptz:GetPresetsResponse>");
            s
        }
        "SetPreset" => {
            ptz_enabled(d)?;
            profile(d, el)?;
            let name = text(child(el, "PresetName"));
            if name.chars().count() > 64 {
                return Err(invalid("PresetName is longer than 64 characters"));
            }
            let token = child(el, "PresetToken").map(|t| text(Some(t)));
            let t = lock(&d.ptz)
                .set_preset(now, &name, token.as_deref().filter(|t| !t.is_empty()))
                .map_err(|r| match r {
                    PtzRefusal::NoSuchPreset => {
                        Fault::Sender("ter:NoToken", "no such preset".into())
                    }
                    PtzRefusal::TooManyPresets => {
                        Fault::Sender("ter:TooManyPresets", "the preset table is full".into())
                    }
                })?;
            format!(
                "<tptz:SetPresetResponse><tptz:PresetToken>{}</tptz:PresetToken></tptz:SetPresetResponse>",
                esc(&t)
            )
        }
        "GotoPreset" => {
            ptz_enabled(d)?;
            profile(d, el)?;
            let token = text(child(el, "PresetToken"));
            lock(&d.ptz)
                .goto_preset(now, &token)
                .map_err(|_| Fault::Sender("ter:NoToken", format!("no preset {token:?}")))?;
            "<tptz:GotoPresetResponse/>".into()
        }
        "GetEventProperties" => {
            let mut topics = String::new();
            for k in EventKind::ALL {
                // tns1:A/B/C → <tns1:A><B><C wstop:topic="true"/></B></tns1:A>
                let path: Vec<&str> = k.topic().trim_start_matches("tns1:").split('/').collect();
                let mut t = String::new();
                for (i, p) in path.iter().enumerate() {
                    let name = if i == 0 {
                        format!("tns1:{p}")
                    } else {
                        (*p).to_owned()
                    };
                    if i + 1 == path.len() {
                        t.push_str(&format!("<{name} wstop:topic=\"true\"/>"));
                    } else {
                        t.push_str(&format!("<{name}>"));
                    }
                }
                for (i, p) in path.iter().enumerate().rev().skip(1) {
                    let name = if i == 0 {
                        format!("tns1:{p}")
                    } else {
                        (*p).to_owned()
                    };
                    t.push_str(&format!("</{name}>"));
                }
                topics.push_str(&t);
            }
            format!(
                "<tev:GetEventPropertiesResponse><tev:TopicNamespaceLocation>http://www.onvif.org/onvif/ver10/topics/topicns.xml</tev:TopicNamespaceLocation><wsnt:FixedTopicSet>true</wsnt:FixedTopicSet><wstop:TopicSet>{topics}</wstop:TopicSet><wsnt:TopicExpressionDialect>http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet</wsnt:TopicExpressionDialect></tev:GetEventPropertiesResponse>"
            )
        }
        "CreatePullPointSubscription" => {
            let id = d.events.subscribe(now).ok_or_else(|| {
                Fault::Sender("ter:TooManySubscriptions", "too many subscriptions".into())
            })?;
            let t = jiff::Timestamp::now();
            let ttl = d.events.policy().ttl;
            let end = t + jiff::SignedDuration::from_millis(ttl.as_millis() as i64);
            format!(
                "<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference><wsa:Address>{}/onvif/events/sub/{id}</wsa:Address></tev:SubscriptionReference><wsnt:CurrentTime>{}</wsnt:CurrentTime><wsnt:TerminationTime>{}</wsnt:TerminationTime></tev:CreatePullPointSubscriptionResponse>",
                d.base_url,
                t.round(jiff::Unit::Second).unwrap_or(t),
                end.round(jiff::Unit::Second).unwrap_or(end)
            )
        }
        other => return Err(Fault::NotSupported(other.to_owned())),
    })
}

async fn subscription_op(
    d: &Device,
    id: &str,
    op: &str,
    el: roxmltree::Node<'_, '_>,
) -> std::result::Result<String, Fault> {
    let no_sub = || Fault::Sender("ter:InvalidArgVal", format!("no subscription {id:?}"));
    let id: u64 = id.parse().map_err(|_| no_sub())?;
    match op {
        "PullMessages" => {
            let timeout = xs_duration(&text(child(el, "Timeout")))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(30));
            let limit: usize = text(child(el, "MessageLimit")).parse().unwrap_or(100);
            let msgs = d
                .events
                .pull(id, limit.clamp(1, 1000), timeout)
                .await
                .ok_or_else(no_sub)?;
            let now = now_rfc3339();
            let mut s = format!(
                "<tev:PullMessagesResponse><tev:CurrentTime>{now}</tev:CurrentTime><tev:TerminationTime>{now}</tev:TerminationTime>"
            );
            for m in msgs {
                let (src_name, src_val, data_name) = m.kind.items();
                s.push_str(&format!(
                    "<wsnt:NotificationMessage><wsnt:Topic Dialect=\"http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet\">{}</wsnt:Topic><wsnt:Message><tt:Message UtcTime=\"{}\" PropertyOperation=\"Changed\"><tt:Source><tt:SimpleItem Name=\"{src_name}\" Value=\"{src_val}\"/></tt:Source><tt:Data><tt:SimpleItem Name=\"{data_name}\" Value=\"{}\"/></tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage>",
                    m.kind.topic(),
                    m.utc,
                    m.state
                ));
            }
            s.push_str("</tev:PullMessagesResponse>");
            Ok(s)
        }
        "Unsubscribe" => {
            if d.events.unsubscribe(id) {
                Ok("<wsnt:UnsubscribeResponse/>".into())
            } else {
                Err(no_sub())
            }
        }
        "Renew" => {
            // TerminationTime: a duration (`PT60S`) or an absolute time; absent = the default.
            let asked = child(el, "TerminationTime").map(|t| text(Some(t)));
            let asked = match asked.as_deref() {
                None | Some("") => None,
                Some(v) => Some(
                    xs_duration(v)
                        .or_else(|| {
                            let at: jiff::Timestamp = v.parse().ok()?;
                            let d = at.duration_since(jiff::Timestamp::now());
                            Duration::try_from(d).ok()
                        })
                        .ok_or_else(|| {
                            Fault::Sender(
                                "ter:InvalidArgVal",
                                format!("unreadable TerminationTime {v:?}"),
                            )
                        })?,
                ),
            };
            let life = d
                .events
                .renew(id, Instant::now(), asked)
                .ok_or_else(no_sub)?;
            let t = jiff::Timestamp::now();
            let end = t + jiff::SignedDuration::from_millis(life.as_millis() as i64);
            Ok(format!(
                "<wsnt:RenewResponse><wsnt:TerminationTime>{}</wsnt:TerminationTime><wsnt:CurrentTime>{}</wsnt:CurrentTime></wsnt:RenewResponse>",
                end.round(jiff::Unit::Millisecond).unwrap_or(end),
                t.round(jiff::Unit::Millisecond).unwrap_or(t)
            ))
        }
        other => Err(Fault::NotSupported(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xs_durations() {
        assert_eq!(xs_duration("PT5S"), Some(Duration::from_secs(5)));
        assert_eq!(xs_duration("PT0.5S"), Some(Duration::from_millis(500)));
        assert_eq!(xs_duration("PT1M2S"), Some(Duration::from_secs(62)));
        assert_eq!(xs_duration("5"), None);
        assert_eq!(xs_duration("PTxS"), None);
        assert_eq!(xs_duration("PT5"), None);
    }
}

//! ONVIF wiring of the binary: stream URLs taken from a camera's media profiles (the ingest
//! [`UrlSource`]), and the `vigie camera probe` / `vigie camera discover` commands. The
//! protocol itself is `vigie-onvif`'s.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use vigie_core::config::{OnvifAccess, OnvifStream, ProfileRef};
use vigie_ingest::UrlSource;
use vigie_onvif::{Credentials, Device, Options};

#[derive(Subcommand)]
pub enum OnvifCommand {
    /// Print what an ONVIF camera offers: device information, media profiles (codec,
    /// resolution, stream URI), PTZ (status, presets), event topics.
    Probe {
        /// The device service URL, e.g. http://192.0.2.10/onvif/device_service.
        url: String,
        /// ONVIF user name.
        #[arg(long)]
        user: Option<String>,
        /// Name of the environment variable holding the password (never on the command line).
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        /// Per-request timeout in seconds.
        #[arg(long, default_value_t = 10)]
        timeout_s: u64,
    },
    /// List the ONVIF devices answering a WS-Discovery probe on the local network segment.
    Discover {
        /// How long to collect answers.
        #[arg(long, default_value_t = 3)]
        timeout_s: u64,
        /// Where to send the probe (default: the multicast group 239.255.255.250:3702; a
        /// unicast address probes one device).
        #[arg(long, value_name = "ADDR")]
        target: Option<SocketAddr>,
    },
}

pub fn credentials(access: &OnvifAccess) -> Option<Credentials> {
    access.username.as_ref().map(|u| Credentials {
        username: u.clone(),
        password: access
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default(),
    })
}

/// A stream's URL from its camera's ONVIF profile, asked at every connection attempt.
pub struct ProfileUrl {
    pub access: OnvifAccess,
    pub stream: OnvifStream,
    pub timeout: Duration,
}

impl ProfileUrl {
    async fn find(&self) -> vigie_onvif::Result<Result<url::Url, String>> {
        let dev = Device::connect(
            &self.access.url,
            credentials(&self.access),
            Options {
                timeout: self.timeout,
            },
        )
        .await?;
        let profiles = dev.profiles().await?;
        let token = match &self.stream.profile {
            ProfileRef::Token(t) => profiles.iter().find(|p| &p.token == t),
            ProfileRef::Index(i) => profiles.get(*i),
        }
        .map(|p| p.token.clone());
        let Some(token) = token else {
            let have: Vec<&str> = profiles.iter().map(|p| p.token.as_str()).collect();
            return Ok(Err(format!(
                "ONVIF: the camera at {} has no {} (its profiles: {have:?})",
                self.access.url, self.stream.profile
            )));
        };
        let uri = dev.stream_uri(&token).await?;
        Ok(url::Url::parse(&uri).map_err(|e| format!("ONVIF: stream URI of {token:?}: {e}")))
    }
}

impl UrlSource for ProfileUrl {
    fn url(&self) -> std::pin::Pin<Box<dyn Future<Output = Result<url::Url, String>> + Send + '_>> {
        Box::pin(async move {
            match self.find().await {
                Ok(r) => r,
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// PTZ through the ONVIF device of every camera that has one.
pub fn ptz_service(config: &vigie_core::config::Config) -> vigie_service::ptz::OnvifPtz {
    let getenv = |k: &str| std::env::var(k).ok();
    let cameras = config
        .cameras
        .iter()
        .filter_map(|c| {
            let access = c.onvif_access(&getenv).ok().flatten()?;
            Some((
                c.id.clone(),
                vigie_service::ptz::PtzCamera {
                    credentials: credentials(&access),
                    url: access.url,
                    timeout: Duration::from_secs(5),
                },
            ))
        })
        .collect();
    vigie_service::ptz::OnvifPtz::new(cameras)
}

pub fn camera(command: OnvifCommand) -> anyhow::Result<()> {
    crate::run::block_on(async move {
        match command {
            OnvifCommand::Probe {
                url,
                user,
                password_env,
                timeout_s,
            } => {
                probe(
                    &url,
                    user,
                    password_env,
                    Duration::from_secs(timeout_s.max(1)),
                )
                .await
            }
            OnvifCommand::Discover { timeout_s, target } => {
                discover(target, Duration::from_secs(timeout_s.max(1))).await
            }
        }
    })
}

async fn probe(
    url: &str,
    user: Option<String>,
    password_env: Option<String>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let password = match &password_env {
        Some(v) => Some(
            std::env::var(v)
                .with_context(|| format!("--password-env: environment variable {v} is not set"))?,
        ),
        None => None,
    };
    if password.is_some() && user.is_none() {
        anyhow::bail!("--password-env needs --user");
    }
    let creds = user.map(|u| Credentials {
        username: u,
        password: password.unwrap_or_default(),
    });
    let dev = Device::connect(url, creds, Options { timeout }).await?;
    let info = dev.device_information().await?;
    println!("device      {url}");
    println!(
        "            {} {} (firmware {}, serial {}, hardware {})",
        info.manufacturer, info.model, info.firmware_version, info.serial_number, info.hardware_id
    );
    println!(
        "clock       camera {:+} s from this host",
        dev.clock_offset().as_secs()
    );
    let profiles = dev.profiles().await?;
    println!("profiles    {}", profiles.len());
    for (i, p) in profiles.iter().enumerate() {
        let res = p
            .resolution
            .map_or("?".to_owned(), |(w, h)| format!("{w}x{h}"));
        let fps = p.fps.map_or("?".to_owned(), |f| format!("{f}"));
        let uri = match dev.stream_uri(&p.token).await {
            Ok(u) => vigie_core::config::redact_url(&u),
            Err(e) => format!("(no stream URI: {e})"),
        };
        let role = match i {
            0 => " [stream main]",
            1 => " [stream sub]",
            _ => "",
        };
        println!(
            "  {:<10} {} {res} {fps} fps{}{role}\n             {uri}",
            p.token,
            if p.encoding.is_empty() {
                "?"
            } else {
                &p.encoding
            },
            if p.ptz { " ptz" } else { "" },
        );
    }
    match (dev.has_ptz(), profiles.iter().find(|p| p.ptz)) {
        (true, Some(p)) => {
            println!("ptz         yes (profile {})", p.token);
            if let Ok(st) = dev.ptz_status(&p.token).await
                && let Some(pos) = st.position
            {
                println!(
                    "            position pan {:.3} tilt {:.3} zoom {:.3}{}",
                    pos.pan,
                    pos.tilt,
                    pos.zoom,
                    if st.moving { " (moving)" } else { "" }
                );
            }
            match dev.ptz_presets(&p.token).await {
                Ok(ps) => {
                    println!("presets     {}", ps.len());
                    for pr in ps {
                        println!("  {:<10} {}", pr.token, pr.name);
                    }
                }
                Err(e) => println!("presets     ({e})"),
            }
        }
        _ => println!("ptz         no"),
    }
    if dev.has_events() {
        match dev.event_topics().await {
            Ok(t) => {
                println!("events      {} topic(s)", t.len());
                for topic in t {
                    println!(
                        "  {topic}  [{}]",
                        vigie_onvif::EventKind::of_topic(&topic).as_str()
                    );
                }
            }
            Err(e) => println!("events      ({e})"),
        }
    } else {
        println!("events      no");
    }
    Ok(())
}

async fn discover(target: Option<SocketAddr>, timeout: Duration) -> anyhow::Result<()> {
    let target = target.unwrap_or(vigie_onvif::discovery::MULTICAST);
    let found = vigie_onvif::discover(target, timeout).await?;
    println!(
        "{} ONVIF device(s) answered a probe to {target} within {} s",
        found.len(),
        timeout.as_secs()
    );
    for d in found {
        println!(
            "{}  {}  ({} from {})",
            d.xaddrs.join(" "),
            d.name().unwrap_or_else(|| "(no name)".into()),
            d.endpoint,
            d.from.ip()
        );
    }
    Ok(())
}

/// What the event subscriber of one camera needs.
pub struct EventSink {
    pub camera: String,
    /// The camera's streams: each event is stored with each (events concern the whole camera).
    pub streams: Vec<String>,
    pub store: vigie_store::Store,
    pub journal: vigie_audit::Journal,
    pub counts: std::sync::Arc<vigie_api::CameraEventCounts>,
}

/// Keeps a PullPoint subscription on an ONVIF camera until `shutdown`: stores its events per
/// stream, counts them for `/metrics`, journals its alarms (tampering, video loss). A failure
/// is logged and retried with backoff (5 s doubling to 60 s); recording does not depend on it.
pub async fn event_loop(
    access: OnvifAccess,
    sink: EventSink,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut delay = Duration::from_secs(5);
    loop {
        let run = subscribe(&access, &sink, &shutdown);
        let r = tokio::select! {
            r = run => r,
            _ = shutdown.cancelled() => return,
        };
        match r {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(camera = %sink.camera, retry_in_s = delay.as_secs(), "camera events: {e}");
                sink.counts.failed(&sink.camera, e.to_string());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

/// The life asked for an event subscription at each `Renew`.
const RENEW_ASK: Duration = Duration::from_secs(60);

async fn subscribe(
    access: &OnvifAccess,
    sink: &EventSink,
    shutdown: &tokio_util::sync::CancellationToken,
) -> vigie_onvif::Result<()> {
    let dev = Device::connect(&access.url, credentials(access), Options::default()).await?;
    if !dev.has_events() {
        tracing::info!(camera = %sink.camera, "the camera offers no events");
        return Ok(());
    }
    let pp = dev.pull_point().await?;
    // Many cameras extend a subscription on each pull, others only on `Renew`: renew at half
    // the life the camera stated (60 s asked; 60 s assumed when it did not say), and never
    // wait longer in a pull than a third of it.
    let mut life = pp.lifetime().unwrap_or(RENEW_ASK);
    let mut renewed_at = tokio::time::Instant::now();
    let mut renew_supported = true;
    tracing::info!(camera = %sink.camera, life_s = life.as_secs_f64(), "subscribed to the camera's events");
    sink.counts.subscribed(&sink.camera);
    loop {
        if renew_supported && renewed_at.elapsed() >= life / 2 {
            match pp.renew(RENEW_ASK).await {
                Ok(granted) => {
                    life = granted.unwrap_or(RENEW_ASK);
                    renewed_at = tokio::time::Instant::now();
                }
                Err(vigie_onvif::OnvifError::Fault { code, .. })
                    if code.contains("ActionNotSupported") =>
                {
                    // The camera keeps subscriptions alive by pulls only.
                    tracing::info!(camera = %sink.camera, "the camera does not renew subscriptions ({code}); relying on pulls");
                    renew_supported = false;
                }
                Err(e) => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), pp.unsubscribe()).await;
                    return Err(e);
                }
            }
        }
        let wait = (life / 3).clamp(Duration::from_secs(1), Duration::from_secs(10));
        let evs = tokio::select! {
            r = pp.pull(wait, 100) => match r {
                Ok(evs) => evs,
                Err(e) => {
                    // The subscription is gone (camera rebooted, subscription expired): a new one.
                    let _ = tokio::time::timeout(Duration::from_secs(2), pp.unsubscribe()).await;
                    return Err(e);
                }
            },
            _ = shutdown.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_secs(2), pp.unsubscribe()).await;
                return Ok(());
            }
        };
        for ev in evs {
            let at = ev.utc.map_or_else(
                || vigie_core::Time90k::from_timestamp(jiff::Timestamp::now()),
                vigie_core::Time90k::from_timestamp,
            );
            let kind = ev.kind.as_str();
            sink.counts.add(&sink.camera, kind);
            for s in &sink.streams {
                let rec = vigie_store::CameraEvent {
                    camera: sink.camera.clone(),
                    stream: s.clone(),
                    at,
                    kind: kind.to_owned(),
                    active: ev.active,
                    topic: ev.topic.clone(),
                };
                if let Err(e) = sink.store.record_event(&rec) {
                    tracing::warn!(camera = %sink.camera, "storing a camera event: {e}");
                }
            }
            tracing::info!(camera = %sink.camera, kind, active = ?ev.active, topic = %ev.topic, "camera event");
            if ev.kind.is_alarm() {
                let mut entry =
                    vigie_audit::NewEntry::new("camera", vigie_audit::Action::CameraAlarm)
                        .range(at, at)
                        .details(serde_json::json!({
                            "type": kind,
                            "active": ev.active,
                            "topic": ev.topic,
                        }));
                entry.camera = Some(sink.camera.clone());
                sink.journal.append_or_log(entry);
            }
        }
    }
}

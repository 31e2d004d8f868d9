//! One ONVIF device: connecting (clock offset from `GetSystemDateAndTime`, service addresses
//! from `GetCapabilities`), device information, media profiles and their stream URIs. The PTZ
//! and event operations live in [`crate::ptz`] and [`crate::events`] on the same [`Device`].

use std::time::Duration;

use tracing::debug;

use crate::error::{OnvifError, Result};
use crate::soap::{self, Credentials, child, children, esc, find, text, with_body};

/// Client options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Per-request timeout (connect + answer). Default 10 s.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(10),
        }
    }
}

/// What `GetDeviceInformation` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Firmware version.
    pub firmware_version: String,
    /// Serial number.
    pub serial_number: String,
    /// Hardware id.
    pub hardware_id: String,
}

/// One media profile (`GetProfiles`), the unit a stream URI and PTZ commands refer to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// Token (what operations take).
    pub token: String,
    /// Name.
    pub name: String,
    /// `H264`, `H265`, `JPEG`… (empty if the profile has no video encoder).
    pub encoding: String,
    /// Width × height in pixels, if given.
    pub resolution: Option<(u32, u32)>,
    /// Frame rate limit, if given.
    pub fps: Option<f64>,
    /// Whether the profile carries a PTZ configuration (PTZ commands need one).
    pub ptz: bool,
}

/// Service addresses (`XAddr`s) of a device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Services {
    /// Device management (the configured URL unless the camera says otherwise).
    pub device: String,
    /// Media (ver10).
    pub media: Option<String>,
    /// PTZ.
    pub ptz: Option<String>,
    /// Events.
    pub events: Option<String>,
}

/// A connected ONVIF device.
#[derive(Debug)]
pub struct Device {
    pub(crate) http: reqwest::Client,
    pub(crate) url: String,
    pub(crate) creds: Option<Credentials>,
    /// Camera clock minus ours (the digest's `Created` must be in the camera's time).
    pub(crate) clock_offset: jiff::SignedDuration,
    pub(crate) services: Services,
    pub(crate) timeout: Duration,
    /// HTTP Digest state, for cameras that demand it.
    pub(crate) http_digest: crate::http_digest::HttpDigest,
}

/// Checks a device URL: `http://host[:port]/path`, no user-info (credentials are configured
/// apart, so they never show in logs or errors).
pub fn check_url(url: &str) -> Result<url::Url> {
    let bad = |reason: &str| OnvifError::BadUrl {
        url: redact(url),
        reason: reason.to_owned(),
    };
    let u = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if u.scheme() != "http" {
        return Err(bad("only http:// is supported (ONVIF over TLS is not)"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad(
            "credentials in the URL are refused: give username and password_env",
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(u)
}

/// The URL without user-info.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(unparseable URL)".into(),
    }
}

impl Device {
    /// Connects: reads the camera's clock (no credentials needed) and its service addresses.
    pub async fn connect(url: &str, creds: Option<Credentials>, opts: Options) -> Result<Device> {
        let u = check_url(url)?;
        let http = reqwest::Client::builder()
            .connect_timeout(opts.timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| OnvifError::Http {
                op: "connect",
                url: u.to_string(),
                reason: e.to_string(),
            })?;
        let mut dev = Device {
            http,
            url: u.to_string(),
            creds,
            clock_offset: jiff::SignedDuration::ZERO,
            services: Services {
                device: u.to_string(),
                ..Services::default()
            },
            timeout: opts.timeout,
            http_digest: Default::default(),
        };
        // A camera that cannot tell its time still works if its clock is right: keep going.
        match dev.system_time().await {
            Ok(t) => {
                dev.clock_offset = t.duration_since(jiff::Timestamp::now());
                debug!(url = %dev.url, offset_s = dev.clock_offset.as_secs(), "camera clock");
            }
            Err(e @ (OnvifError::Timeout { .. } | OnvifError::Http { .. })) => return Err(e),
            Err(e) => debug!(error = %e, "GetSystemDateAndTime failed; assuming a synced clock"),
        }
        dev.services = dev.capabilities().await?;
        Ok(dev)
    }

    /// What HTTP Digest needs, when credentials are set.
    pub(crate) fn digest(&self) -> Option<(&crate::http_digest::HttpDigest, &soap::Credentials)> {
        self.creds.as_ref().map(|c| (&self.http_digest, c))
    }

    /// The device service URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The service addresses found at connection.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Whether the camera offers PTZ.
    pub fn has_ptz(&self) -> bool {
        self.services.ptz.is_some()
    }

    /// Whether the camera offers events.
    pub fn has_events(&self) -> bool {
        self.services.events.is_some()
    }

    /// Camera clock minus the local clock, as measured at connection.
    pub fn clock_offset(&self) -> jiff::SignedDuration {
        self.clock_offset
    }

    /// Sends `body` to `url` as operation `op` (authenticated when credentials are set).
    pub(crate) async fn call(&self, op: &'static str, url: &str, body: &str) -> Result<String> {
        let created = (jiff::Timestamp::now() + self.clock_offset)
            .round(jiff::Unit::Second)
            .unwrap_or_else(|_| jiff::Timestamp::now());
        let env = soap::request(body, self.creds.as_ref(), &created.to_string());
        soap::call(&self.http, op, url, env, self.timeout, self.digest()).await
    }

    /// `GetSystemDateAndTime` (the camera's UTC clock).
    pub async fn system_time(&self) -> Result<jiff::Timestamp> {
        const OP: &str = "GetSystemDateAndTime";
        // Sent without credentials: ONVIF lets anyone read the clock, and the digest needs it.
        let env = soap::request("<tds:GetSystemDateAndTime/>", None, "");
        let a = soap::call(&self.http, OP, &self.url, env, self.timeout, self.digest()).await?;
        with_body(OP, &self.url, &a, |b| {
            let utc = find(b, "UTCDateTime").ok_or("no UTCDateTime")?;
            let date = child(utc, "Date").ok_or("no Date")?;
            let time = child(utc, "Time").ok_or("no Time")?;
            let n = |p: roxmltree::Node<'_, '_>, k: &str| -> Result<i64, String> {
                text(child(p, k))
                    .parse::<i64>()
                    .map_err(|_| format!("{k} is not a number"))
            };
            let civil = jiff::civil::DateTime::new(
                i16::try_from(n(date, "Year")?).map_err(|_| "bad Year")?,
                i8::try_from(n(date, "Month")?).map_err(|_| "bad Month")?,
                i8::try_from(n(date, "Day")?).map_err(|_| "bad Day")?,
                i8::try_from(n(time, "Hour")?).map_err(|_| "bad Hour")?,
                i8::try_from(n(time, "Minute")?).map_err(|_| "bad Minute")?,
                i8::try_from(n(time, "Second")?).map_err(|_| "bad Second")?,
                0,
            )
            .map_err(|e| e.to_string())?;
            civil
                .to_zoned(jiff::tz::TimeZone::UTC)
                .map(|z| z.timestamp())
                .map_err(|e| e.to_string())
        })
    }

    /// `GetCapabilities` → service addresses.
    async fn capabilities(&self) -> Result<Services> {
        const OP: &str = "GetCapabilities";
        let a = self
            .call(
                OP,
                &self.url,
                "<tds:GetCapabilities><tds:Category>All</tds:Category></tds:GetCapabilities>",
            )
            .await?;
        let dev_url = self.url.clone();
        with_body(OP, &self.url, &a, |b| {
            let caps = find(b, "Capabilities").ok_or("no Capabilities")?;
            let xaddr = |name: &str| {
                child(caps, name)
                    .map(|s| text(child(s, "XAddr")))
                    .filter(|s| !s.is_empty())
            };
            Ok(Services {
                device: xaddr("Device").unwrap_or(dev_url),
                media: xaddr("Media"),
                ptz: xaddr("PTZ"),
                events: xaddr("Events"),
            })
        })
    }

    /// `GetDeviceInformation`.
    pub async fn device_information(&self) -> Result<DeviceInfo> {
        const OP: &str = "GetDeviceInformation";
        let a = self
            .call(OP, &self.services.device, "<tds:GetDeviceInformation/>")
            .await?;
        with_body(OP, &self.services.device, &a, |b| {
            let r = child(b, "GetDeviceInformationResponse")
                .ok_or("no GetDeviceInformationResponse")?;
            Ok(DeviceInfo {
                manufacturer: text(child(r, "Manufacturer")),
                model: text(child(r, "Model")),
                firmware_version: text(child(r, "FirmwareVersion")),
                serial_number: text(child(r, "SerialNumber")),
                hardware_id: text(child(r, "HardwareId")),
            })
        })
    }

    pub(crate) fn media_url(&self, op: &'static str) -> Result<&str> {
        self.services
            .media
            .as_deref()
            .ok_or_else(|| OnvifError::NotSupported {
                op,
                url: self.url.clone(),
                service: "media",
            })
    }

    /// `GetProfiles` (Media ver10), in the camera's order (by convention the main stream first).
    pub async fn profiles(&self) -> Result<Vec<Profile>> {
        const OP: &str = "GetProfiles";
        let url = self.media_url(OP)?.to_owned();
        let a = self.call(OP, &url, "<trt:GetProfiles/>").await?;
        with_body(OP, &url, &a, |b| {
            let r = child(b, "GetProfilesResponse").ok_or("no GetProfilesResponse")?;
            let mut out = Vec::new();
            for p in children(r, "Profiles") {
                let token = p.attribute("token").unwrap_or("").to_owned();
                if token.is_empty() {
                    return Err("a profile has no token".into());
                }
                let vec = child(p, "VideoEncoderConfiguration");
                let resolution = vec.and_then(|v| child(v, "Resolution")).and_then(|r| {
                    Some((
                        text(child(r, "Width")).parse().ok()?,
                        text(child(r, "Height")).parse().ok()?,
                    ))
                });
                let fps = vec
                    .and_then(|v| child(v, "RateControl"))
                    .and_then(|r| text(child(r, "FrameRateLimit")).parse::<f64>().ok())
                    .filter(|f| f.is_finite() && *f > 0.0);
                out.push(Profile {
                    name: text(child(p, "Name")),
                    encoding: text(vec.and_then(|v| child(v, "Encoding"))),
                    resolution,
                    fps,
                    ptz: child(p, "PTZConfiguration").is_some(),
                    token,
                });
            }
            Ok(out)
        })
    }

    /// `GetStreamUri` for RTP over RTSP (unicast) of `profile`.
    pub async fn stream_uri(&self, profile: &str) -> Result<String> {
        const OP: &str = "GetStreamUri";
        let url = self.media_url(OP)?.to_owned();
        let body = format!(
            "<trt:GetStreamUri><trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream><tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport></trt:StreamSetup><trt:ProfileToken>{}</trt:ProfileToken></trt:GetStreamUri>",
            esc(profile)
        );
        let a = self.call(OP, &url, &body).await?;
        with_body(OP, &url, &a, |b| {
            let uri = text(find(b, "MediaUri").and_then(|m| child(m, "Uri")));
            if uri.is_empty() {
                return Err("no MediaUri/Uri".into());
            }
            if !uri.starts_with("rtsp://") && !uri.starts_with("rtsps://") {
                return Err(format!("the stream URI {uri:?} is not rtsp://"));
            }
            Ok(uri)
        })
    }
}

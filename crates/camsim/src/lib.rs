//! # vigie-camsim — a camera simulator
//!
//! A small pure-Rust RTSP 1.0 server (RFC 2326) that serves H.264 / H.265 fixture files as live
//! IP cameras: RTP over TCP (interleaved) or UDP (RFC 3550), H.264 payload format RFC 6184 and
//! H.265 RFC 7798 (packetization mode 1: single NAL units + FU-A / FU fragments), RTCP sender
//! reports, Basic/Digest authentication, looping forever with continuous sequence numbers and
//! timestamps, at real time or faster, and faults on demand. Used by Vigie's end-to-end tests
//! (in process), by `vigie demo` (embedded fixtures), and as a load generator (`camsim` binary).
//!
//! ```no_run
//! # async fn demo() -> vigie_camsim::Result<()> {
//! use std::time::Duration;
//! use vigie_camsim::{Auth, Fixture, MountConfig, Server};
//!
//! let fixture = Fixture::embedded("h264-baseline-640x360-25fps-gop50.h264").unwrap();
//! let mounts = vec![
//!     MountConfig::new("cam1", fixture.clone()),
//!     MountConfig::new("cam2", fixture).with_auth(Auth::digest("admin", "secret")),
//! ];
//! let server = Server::start("127.0.0.1:0".parse().unwrap(), mounts).await?;
//! println!("{}", server.url("cam1")); // rtsp://127.0.0.1:PORT/cam1
//! let cam1 = server.mount("cam1").unwrap();
//! cam1.stall_for(Duration::from_secs(3)); // no media for 3 s
//! cam1.drop_sessions(); // clients see EOF
//! println!("{:?}", cam1.stats());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Behaviour
//! - Each PLAY starts at the first frame of the fixture (a key frame carrying its parameter
//!   sets) and loops forever; RTP timestamps advance by the frame duration at 90 kHz
//!   (`90000 / fps`), across loops too; sequence numbers, timestamps and SSRC start random.
//! - Every method but OPTIONS needs the mount's credentials (401 + `WWW-Authenticate`
//!   otherwise). Malformed request → 400, unknown mount → 404, unsupported transport → 461,
//!   unknown session → 454, unknown method → 501. Nothing a client sends can panic the server.
//! - One RTP session per RTSP connection. TCP sessions end with their connection; UDP sessions
//!   time out after 60 s without an RTSP request (keepalive: GET_PARAMETER / SET_PARAMETER /
//!   OPTIONS). RTCP from clients is ignored (read and discarded over TCP, never read over UDP).
//! - Payloads are built once per fixture and shared ([`bytes::Bytes`]); per frame a session
//!   writes only the 16-byte interleave+RTP headers and issues one vectored write.
//! - A client that stops reading a TCP session blocks only its own connection task.
//! - Rogue modes ([`Rogue`], [`MountConfig::with_rogue`], `--rogue MOUNT=MODE`) make a mount
//!   behave like an attacker's device: endless RTSP header, huge `Content-Length`, an access
//!   unit of endless FU-A fragments, a flood of tiny RTP packets, absurd SDP (1 MiB
//!   `sprop-parameter-sets`, 1 Hz clock rate). A Basic-only mount ([`Auth::basic`]) counts the
//!   requests that carried a password in clear ([`MountStats::basic_credentials`]).
//!
//! ## ONVIF
//! [`onvif`] puts a simulated ONVIF device (device, media, PTZ, events, WS-UsernameToken digest,
//! WS-Discovery, malformed answers on demand) in front of the RTSP mounts: [`OnvifServer`].
//!
//! ## Modules
//! [`annexb`] (byte stream → NAL units), [`h26x`] (NAL types, access units, SPS size),
//! [`packetize`] (RTP payloads), [`fixture`] / [`manifest`] (loading), [`sdp`], [`rogue`], [`rtsp`]
//! (messages), [`auth`], [`rtp`] (headers, sender reports), `faults` ([`MountControl`]),
//! `session` (one connection), `server` ([`Server`], [`ServerHandle`]).

pub mod annexb;
pub mod auth;
mod error;
mod faults;
pub mod fixture;
pub mod h26x;
pub mod manifest;
pub mod onvif;
pub mod packetize;
pub mod rogue;
pub mod rtp;
pub mod rtsp;
pub mod sdp;
mod server;
mod session;

pub use auth::{Auth, AuthScheme};
pub use error::{Error, Result};
pub use faults::{Garbage, MountControl, MountStats};
pub use fixture::{AccessUnit, Fixture, ParameterSets, fixtures_dir};
pub use h26x::Codec;
pub use manifest::{Manifest, ManifestEntry};
pub use onvif::events::{EventKind, SubscriptionPolicy};
pub use onvif::ptz::PtzPosition;
pub use onvif::ptz_view::PtzView;
pub use onvif::{OnvifConfig, OnvifFault, OnvifHandle, OnvifProfile, OnvifServer, OnvifStats};
pub use rogue::Rogue;
pub use server::{MAX_SPEED, MIN_SPEED, MountConfig, Server, ServerHandle};
pub use session::{SESSION_TIMEOUT, SR_INTERVAL};

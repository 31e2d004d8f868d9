//! # vigie-onvif — a small ONVIF client
//!
//! What Vigie needs from an ONVIF camera, over SOAP 1.2 on HTTP with WS-UsernameToken digest
//! authentication (and HTTP Digest when a camera answers `401` with a Digest challenge): device information, media profiles and their RTSP stream URIs (main and sub
//! streams), PTZ (continuous move, stop, absolute / relative moves, presets), events over a
//! PullPoint subscription (motion, tampering, video loss, digital inputs), and WS-Discovery.
//!
//! ```no_run
//! # async fn demo() -> vigie_onvif::Result<()> {
//! use vigie_onvif::{Credentials, Device, Options};
//! let creds = Credentials { username: "admin".into(), password: "secret".into() };
//! let cam = Device::connect("http://192.0.2.10/onvif/device_service", Some(creds),
//!                           Options::default()).await?;
//! for p in cam.profiles().await? {
//!     println!("{} {} {:?} {}", p.token, p.encoding, p.resolution, cam.stream_uri(&p.token).await?);
//! }
//! # Ok(()) }
//! ```
//!
//! Why not a crate from crates.io: `onvif` there is an empty placeholder (0.0.0), `onvif-rs`
//! says "do not use yet", and `oxvif` (the most complete) pulls a second HTTP stack (reqwest
//! 0.13 with aws-lc-rs), a second `rand`, `base64` and `sha1`, and axum, and breaks its API at
//! each release. This client is ~1,000 lines on `roxmltree` (parsing, matching elements by
//! local name since cameras choose their own prefixes) and the reqwest 0.12 already in the tree.
//!
//! Errors ([`OnvifError`]) name the operation and the service URL, never the password; SOAP
//! faults, refused credentials, timeouts and malformed answers are distinct variants; nothing a
//! camera sends can panic the client (answers are bounded to [`soap::MAX_ANSWER_BYTES`]).
//!
//! Modules: [`soap`] (envelopes, digest, transport, faults), [`device`] (connect, information,
//! profiles, stream URIs), [`ptz`], [`events`], [`discovery`], [`media2`] (privacy masks). Later work fits here: Profile G
//! replay (a `recording` module: FindRecordings / GetReplayUri on the search and replay
//! services found by `GetServices`), Media2 privacy masks (a `media2` module), both on
//! the device's SOAP call.

pub mod device;
pub mod discovery;
mod error;
pub mod events;
mod http_digest;
pub mod media2;
pub mod ptz;
pub mod soap;

pub use device::{Device, DeviceInfo, Options, Profile, Services, check_url};
pub use discovery::{Discovered, discover};
pub use error::{OnvifError, Result};
pub use events::{CameraEvent, EventKind, PullPoint};
pub use media2::{Media2, OnvifMask};
pub use ptz::{Preset, PtzStatus, PtzVector};
pub use soap::Credentials;

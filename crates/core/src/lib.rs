//! Shared vocabulary of Vigie, with no I/O of its own.
//!
//! Owns: identifiers ([`ids`]), 90 kHz media and wall-clock time ([`time`]), the clock abstraction
//! that makes time testable ([`clock`]), the frames and codec parameters that flow from ingest to
//! the store ([`frame`]), the configuration schema with its validation ([`config`]), the camera
//! inventory import ([`inventory`]: CSV in, `[[cameras]]` out), and waiting
//! out a database lock being released ([`dblock`]).
//!
//! Does not own: networking, files, the index or HTTP. Every other crate depends on this one and
//! this one depends on none of them.

pub mod clock;
pub mod config;
pub mod dblock;
pub mod frame;
pub mod ids;
pub mod inventory;
pub mod masks;
pub mod time;

pub use clock::{Clock, SimulatedClock, SystemClock};
pub use frame::{Codec, Frame, FrameSink, StreamEvent, VideoParams};
pub use ids::StreamKey;
pub use time::{Duration90k, TIME_UNITS_PER_SEC, Time90k};

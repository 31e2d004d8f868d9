//! What ingest hands to the store and to live viewers: frames as [`Bytes`] plus their codec
//! parameters.
//!
//! The frame payload is the MP4 sample form (each NAL unit prefixed by its 4-byte big-endian
//! length, parameter sets not inline), exactly as retina yields it, so the store writes it with no
//! conversion and no copy.

use std::sync::Arc;

use bytes::Bytes;

use crate::time::Time90k;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    H264,
    H265,
}

impl Codec {
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "h265",
        }
    }
}

/// Codec parameters of a stream, as needed to write an MP4 sample description.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VideoParams {
    pub codec: Codec,
    /// RFC 6381 codec string, e.g. `avc1.4d401f`.
    pub rfc6381_codec: String,
    pub width: u16,
    pub height: u16,
    /// Pixel aspect ratio (h_spacing, v_spacing), (1, 1) when unknown.
    pub pixel_aspect_ratio: (u32, u32),
    /// The whole `avc1`/`hvc1` sample entry box (with its `avcC`/`hvcC`), ready for `stsd`.
    pub sample_entry: Bytes,
}

/// One video frame (access unit).
#[derive(Clone, Debug)]
pub struct Frame {
    /// Length-prefixed NAL units. Shared, never copied, between the writer and live viewers.
    pub data: Bytes,
    /// True for a random-access (IDR/IRAP) frame: a segment may start here.
    pub is_key: bool,
    /// Presentation time on the session's media timeline in 90 kHz units (RTP timestamp unwrapped,
    /// starting near 0 at the session start). Only differences within one session are meaningful.
    pub media_90k: i64,
    /// Host wall-clock time at which the frame was fully received.
    pub recv: Time90k,
    /// Codec parameters in force for this frame. A different `Arc` (by content) means a change.
    pub params: Arc<VideoParams>,
    /// Identifies the RTSP session the frame came from; a new value is a discontinuity.
    pub session_id: u64,
}

/// The events of one stream, from ingest to the store, in order.
#[derive(Clone, Debug)]
pub enum StreamEvent {
    Frame(Frame),
    /// The session ended (error, stall, camera gone, shutdown): close the open segment.
    SessionEnded {
        session_id: u64,
        reason: String,
    },
}

/// Where ingest delivers a stream's events. Implementations must never block or wait on I/O:
/// `push` is called from the RTSP read loop. A sink that cannot keep up drops and records why
/// (see the store's writer queue), it never applies back-pressure to the socket.
pub trait FrameSink: Send + Sync + 'static {
    fn push(&self, event: StreamEvent);
}

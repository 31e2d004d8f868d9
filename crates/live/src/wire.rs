//! The frames of a live stream between cluster nodes (`/internal/v1/…/live`, a WebSocket): the
//! recorder sends the frames of its [`LiveHub`](crate::LiveHub) as they are published, the
//! node a user called relays them into a hub of its own ([`LiveHub::relay`](crate::LiveHub::relay))
//! and muxes them for its viewers with its own [`LiveMuxer`](crate::LiveMuxer). Frames rather
//! than fMP4 fragments, so that the serving node's muxer keeps one continuous decode timeline
//! (and sends a new init only when the codec parameters change) when the camera moves to
//! another recorder, and applies its own options (the H.264 fallback, its privacy masks).
//!
//! Messages, recorder → relay:
//! * text `{"type":"params","params":{…VideoParams…}}` before the first frame and whenever the
//!   codec parameters change;
//! * binary: one frame, [`FRAME_HEADER_BYTES`] of header (version 1, flags bit 0 = key frame,
//!   duration in 90 kHz units u32, media time i64, wall-clock time (90 kHz since the epoch)
//!   i64, session id u64, all big-endian) then the frame's length-prefixed NAL units;
//! * text `{"type":"drop","frames":N}`: N frames were skipped, the next one is a key frame;
//! * a WebSocket ping every second (a relay that hears nothing for a few seconds reconnects);
//! * a close frame when the stream stops (the live protocol's codes).
//!
//! Does not own: the WebSocket itself (the API serves it, the binary's relay connects to it).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use vigie_core::{Frame, Time90k, VideoParams};

use crate::LiveFrame;

/// Length of a frame message's header.
pub const FRAME_HEADER_BYTES: usize = 30;
const VERSION: u8 = 1;

/// Why a relay message cannot be read (the sending node is not a Vigie of this version).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("frame message of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("frame message version {0} (expected {VERSION})")]
    Version(u8),
    #[error("a frame came before the codec parameters")]
    NoParams,
    #[error("text message is not a relay message: {0}")]
    Text(String),
}

/// The text message announcing codec parameters.
pub fn params_message(p: &VideoParams) -> String {
    serde_json::json!({ "type": "params", "params": p }).to_string()
}

/// One frame as a binary message.
pub fn frame_message(lf: &LiveFrame) -> Bytes {
    let mut b = BytesMut::with_capacity(FRAME_HEADER_BYTES + lf.frame.data.len());
    b.put_u8(VERSION);
    b.put_u8(u8::from(lf.frame.is_key));
    b.put_u32(lf.duration_90k);
    b.put_i64(lf.frame.media_90k);
    b.put_i64(lf.wall.0);
    b.put_u64(lf.frame.session_id);
    b.put_slice(&lf.frame.data);
    b.freeze()
}

/// A text message of the relay protocol.
#[derive(Debug, PartialEq)]
pub enum TextMessage {
    Params(Arc<VideoParams>),
    Drop(u64),
}

/// Reads a text message.
pub fn parse_text(t: &str) -> Result<TextMessage, WireError> {
    let v: serde_json::Value =
        serde_json::from_str(t).map_err(|e| WireError::Text(e.to_string()))?;
    match v["type"].as_str() {
        Some("params") => serde_json::from_value(v["params"].clone())
            .map(|p| TextMessage::Params(Arc::new(p)))
            .map_err(|e| WireError::Text(format!("params: {e}"))),
        Some("drop") => Ok(TextMessage::Drop(v["frames"].as_u64().unwrap_or(0))),
        other => Err(WireError::Text(format!("unknown type {other:?}"))),
    }
}

/// Reads a frame message with the parameters announced before it; the frame's bytes are a
/// slice of `msg` (no copy).
pub fn parse_frame(msg: Bytes, params: Option<&Arc<VideoParams>>) -> Result<LiveFrame, WireError> {
    if msg.len() < FRAME_HEADER_BYTES {
        return Err(WireError::Short(msg.len()));
    }
    if msg[0] != VERSION {
        return Err(WireError::Version(msg[0]));
    }
    let params = params.ok_or(WireError::NoParams)?.clone();
    let u32_at = |i: usize| u32::from_be_bytes([msg[i], msg[i + 1], msg[i + 2], msg[i + 3]]);
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&msg[i..i + 8]);
        u64::from_be_bytes(a)
    };
    let wall = Time90k(u64_at(14) as i64);
    Ok(LiveFrame {
        duration_90k: u32_at(2),
        wall,
        frame: Frame {
            is_key: msg[1] & 1 == 1,
            media_90k: u64_at(6) as i64,
            recv: wall,
            session_id: u64_at(22),
            params,
            data: msg.slice(FRAME_HEADER_BYTES..),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigie_core::Codec;

    #[test]
    fn a_frame_and_its_params_survive_the_wire_and_garbage_is_refused() {
        let params = Arc::new(VideoParams {
            codec: Codec::H264,
            rfc6381_codec: "avc1.42C01E".into(),
            width: 640,
            height: 360,
            pixel_aspect_ratio: (1, 1),
            sample_entry: Bytes::from_static(b"\0\0\0\x10avc1 entry"),
        });
        let TextMessage::Params(p) = parse_text(&params_message(&params)).unwrap() else {
            panic!("not params")
        };
        assert_eq!(*p, *params);
        let lf = LiveFrame {
            duration_90k: 3600,
            wall: Time90k(1_795_899_600 * 90_000 + 3600),
            frame: Frame {
                data: Bytes::from_static(b"\0\0\0\x03abc"),
                is_key: true,
                media_90k: -5,
                recv: Time90k(0),
                params: params.clone(),
                session_id: u64::MAX - 1,
            },
        };
        let back = parse_frame(frame_message(&lf), Some(&p)).unwrap();
        assert_eq!(back.duration_90k, 3600);
        assert_eq!(back.wall, lf.wall);
        assert_eq!(back.frame.data, lf.frame.data);
        assert!(back.frame.is_key);
        assert_eq!(back.frame.media_90k, -5);
        assert_eq!(back.frame.session_id, u64::MAX - 1);
        assert_eq!(
            parse_frame(frame_message(&lf), None).unwrap_err(),
            WireError::NoParams
        );
        assert_eq!(
            parse_frame(Bytes::from_static(b"short"), Some(&p)).unwrap_err(),
            WireError::Short(5)
        );
        let mut bad = frame_message(&lf).to_vec();
        bad[0] = 9;
        assert_eq!(
            parse_frame(Bytes::from(bad), Some(&p)).unwrap_err(),
            WireError::Version(9)
        );
        assert_eq!(
            parse_text(r#"{"type":"drop","frames":7}"#).unwrap(),
            TextMessage::Drop(7)
        );
        assert!(parse_text("{}").is_err() && parse_text("nope").is_err());
    }
}

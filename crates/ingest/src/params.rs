//! Conversion of retina's [`VideoParameters`] into Vigie's [`VideoParams`].

use bytes::Bytes;
use retina::codec::{VideoParameters, VideoParametersCodec};
use vigie_core::{Codec, VideoParams};

/// Builds the codec parameters the store needs (sample entry box, dimensions, codec string).
pub fn video_params(p: &VideoParameters) -> Result<VideoParams, String> {
    let codec = match p.codec_params() {
        VideoParametersCodec::H264 { .. } => Codec::H264,
        VideoParametersCodec::H265 { .. } => Codec::H265,
        _ => return Err(format!("unsupported video codec {}", p.rfc6381_codec())),
    };
    let (w, h) = p.pixel_dimensions();
    let width = u16::try_from(w).map_err(|_| format!("width {w} out of range"))?;
    let height = u16::try_from(h).map_err(|_| format!("height {h} out of range"))?;
    if width == 0 || height == 0 {
        return Err(format!("invalid dimensions {w}x{h}"));
    }
    let sample_entry = p.mp4_sample_entry().build().map_err(|e| {
        format!(
            "cannot build MP4 sample entry: {}",
            first_line(&e.to_string())
        )
    })?;
    Ok(VideoParams {
        codec,
        rfc6381_codec: p.rfc6381_codec().to_owned(),
        width,
        height,
        pixel_aspect_ratio: p.pixel_aspect_ratio().unwrap_or((1, 1)),
        sample_entry: Bytes::from(sample_entry),
    })
}

pub(crate) fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

//! Privacy masks painted by Vigie on the pictures it renders itself (JPEG stills, burned-in
//! copies, and any other pipeline with a raw-video pad, such as the H.264 fallback's
//! `identity name=masks`): each polygon of the camera's [`MaskSet`] is filled with opaque black.
//!
//! Owns: the fill (a scanline polygon fill on the mapped raw buffer, every component at its own
//! resolution, so chroma-subsampled, planar, semi-planar and packed 8-bit formats are all
//! covered) and [`attach`], a buffer probe on a raw-video pad. Does not own: which masks a
//! camera has (the configuration, `vigie_core::masks`) nor the camera-side masks (ONVIF Media2).
//!
//! Fails closed: a buffer whose format cannot be painted (more than 8 bits per component, or
//! unmappable) is dropped, never passed unmasked.

use std::sync::Arc;

use gstreamer as gst;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use vigie_core::masks::Mask;

/// The masks of one camera, ready to paint.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MaskSet {
    pub masks: Vec<Mask>,
}

impl MaskSet {
    /// The set of `masks` (a camera's `[[cameras.masks]]`).
    pub fn new(masks: Vec<Mask>) -> Arc<MaskSet> {
        Arc::new(MaskSet { masks })
    }

    /// No mask: nothing to paint (and [`attach`] adds no probe).
    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }
}

/// Why a buffer could not be painted.
#[derive(Debug, thiserror::Error)]
pub enum PaintError {
    #[error("video format {0} has more than 8 bits per component: masks cannot be painted")]
    Depth(String),
    #[error("cannot map the video frame: {0}")]
    Map(String),
}

/// Paints `set` on a raw frame described by `info`, in place.
pub fn paint(
    buffer: &mut gst::BufferRef,
    info: &gst_video::VideoInfo,
    set: &MaskSet,
) -> Result<(), PaintError> {
    if set.is_empty() {
        return Ok(());
    }
    let finfo = info.format_info();
    if finfo.depth().iter().any(|&d| d > 8) {
        return Err(PaintError::Depth(format!("{:?}", info.format())));
    }
    let mut frame = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, info)
        .map_err(|e| PaintError::Map(e.to_string()))?;
    let mut spans = Vec::with_capacity(8);
    for c in 0..finfo.n_components() as u8 {
        let black: u8 = if finfo.has_alpha() && c == 3 {
            255
        } else if finfo.is_yuv() {
            if c == 0 { 16 } else { 128 }
        } else {
            0
        };
        let plane = info.comp_plane(c);
        let pstride = info.comp_pstride(c).max(1) as usize;
        let poffset = info.comp_poffset(c) as usize;
        let (cw, ch) = (info.comp_width(c), info.comp_height(c));
        let stride = frame
            .plane_stride()
            .get(plane as usize)
            .copied()
            .unwrap_or(0)
            .max(0) as usize;
        let data = frame
            .plane_data_mut(plane)
            .map_err(|e| PaintError::Map(e.to_string()))?;
        for m in &set.masks {
            for y in m.rows(ch) {
                m.spans(y, cw, ch, &mut spans);
                let row = y as usize * stride;
                for &(x0, x1) in &spans {
                    for x in x0..x1 {
                        if let Some(p) = data.get_mut(row + x as usize * pstride + poffset) {
                            *p = black;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Adds a buffer probe on `pad` (a raw-video pad: `video/x-raw`, any 8-bit format) that paints
/// `set` on every picture passing it. Works on a source or sink pad; for an element such as
/// the fallback's `identity name=masks`, pass `element.static_pad("src")`. No-op for an empty
/// set. Returns the probe id (to remove it), `None` when nothing was added.
pub fn attach(pad: &gst::Pad, set: Arc<MaskSet>) -> Option<gst::PadProbeId> {
    if set.is_empty() {
        return None;
    }
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(caps) = pad.current_caps() else {
            tracing::error!("privacy masks: no caps on the pad; picture dropped");
            return gst::PadProbeReturn::Drop;
        };
        let vinfo = match gst_video::VideoInfo::from_caps(&caps) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "privacy masks: not raw video; picture dropped");
                return gst::PadProbeReturn::Drop;
            }
        };
        let Some(buffer) = info.buffer_mut() else {
            return gst::PadProbeReturn::Ok;
        };
        match paint(buffer.make_mut(), &vinfo, &set) {
            Ok(()) => gst::PadProbeReturn::Ok,
            Err(e) => {
                tracing::error!(error = %e, "privacy masks: picture dropped");
                gst::PadProbeReturn::Drop
            }
        }
    })
}

/// [`attach`] on the source pad of `element` (e.g. `identity name=masks`).
pub fn attach_to_element(element: &gst::Element, set: Arc<MaskSet>) -> Option<gst::PadProbeId> {
    let pad = element.static_pad("src")?;
    attach(&pad, set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> Arc<MaskSet> {
        MaskSet::new(vec![Mask {
            name: "porte".into(),
            points: vec![[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]],
        }])
    }

    /// Paints an all-white frame of `format` and returns (inside, outside) first-component
    /// values, read back through the frame's own layout.
    fn painted(format: gst_video::VideoFormat) -> (Vec<u8>, Vec<u8>) {
        gst::init().unwrap();
        let info = gst_video::VideoInfo::builder(format, 64, 48)
            .build()
            .unwrap();
        let mut buf = gst::Buffer::with_size(info.size()).unwrap();
        buf.get_mut().unwrap().map_writable().unwrap().fill(235);
        paint(buf.get_mut().unwrap(), &info, &set()).unwrap();
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(&buf, &info).unwrap();
        let stride = frame.plane_stride()[0] as usize;
        let ps = info.comp_pstride(0) as usize;
        let po = info.comp_poffset(0) as usize;
        let d = frame.plane_data(0).unwrap();
        let at = |x: usize, y: usize| d[y * stride + x * ps + po];
        let inside = vec![at(32, 24), at(20, 14), at(44, 33)];
        let outside = vec![at(2, 2), at(60, 40), at(32, 5), at(5, 24)];
        (inside, outside)
    }

    #[test]
    fn masks_are_black_in_every_8_bit_layout_and_the_rest_untouched() {
        use gst_video::VideoFormat as F;
        for f in [
            F::I420,
            F::Nv12,
            F::Rgb,
            F::Bgrx,
            F::Yuy2,
            F::Y444,
            F::Gray8,
        ] {
            let (inside, outside) = painted(f);
            let black = if gst_video::VideoFormatInfo::from_format(f).is_yuv() {
                16
            } else {
                0
            };
            assert!(
                inside.iter().all(|&v| v == black),
                "{f:?} inside {inside:?}"
            );
            assert!(
                outside.iter().all(|&v| v == 235),
                "{f:?} outside {outside:?}"
            );
        }
    }

    #[test]
    fn deep_formats_are_refused_not_passed_unmasked() {
        gst::init().unwrap();
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::I42010le, 64, 48)
            .build()
            .unwrap();
        let mut buf = gst::Buffer::with_size(info.size()).unwrap();
        let e = paint(buf.get_mut().unwrap(), &info, &set()).unwrap_err();
        assert!(e.to_string().contains("more than 8 bits"), "{e}");
    }
}

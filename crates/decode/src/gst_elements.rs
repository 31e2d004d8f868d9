//! Every GStreamer element Vigie uses (stills, burned-in copies, the H.264 fallback), with the Debian 12 package
//! that provides it: the one list that `.ci/run`, the README, the test
//! `every_gstreamer_element_is_installed` and the start-up check of `vigie run` follow.
//! A missing element otherwise shows only when a user asks for a still or a burned-in copy
//! (`no element "textoverlay"`); here it is named with its package at start.

use gstreamer as gst;

/// (element, Debian package). Keep in sync with `still.rs` and `burnin.rs`.
pub const GST_ELEMENTS: &[(&str, &str)] = &[
    // Core elements.
    ("capsfilter", "libgstreamer1.0-0"),
    ("filesink", "libgstreamer1.0-0"),
    // The H.264 fallback: where privacy masks attach.
    ("identity", "libgstreamer1.0-0"),
    // Base plugins.
    ("appsrc", "gstreamer1.0-plugins-base"),
    ("appsink", "gstreamer1.0-plugins-base"),
    ("videoconvert", "gstreamer1.0-plugins-base"),
    // Decoders (FFmpeg).
    ("avdec_h264", "gstreamer1.0-libav"),
    ("avdec_h265", "gstreamer1.0-libav"),
    // Parsers.
    ("h264parse", "gstreamer1.0-plugins-bad"),
    ("h265parse", "gstreamer1.0-plugins-bad"),
    // Stills.
    ("jpegenc", "gstreamer1.0-plugins-good"),
    // Burned-in copies: text (Pango, not pulled in by --no-install-recommends), encoder, muxer.
    ("textoverlay", "gstreamer1.0-x"),
    ("x264enc", "gstreamer1.0-plugins-ugly"),
    ("mp4mux", "gstreamer1.0-plugins-good"),
];

/// The elements of [`GST_ELEMENTS`] GStreamer cannot find, with their package; `Err` when
/// GStreamer itself cannot start.
pub fn missing_elements() -> Result<Vec<(&'static str, &'static str)>, String> {
    missing_from(GST_ELEMENTS)
}

fn missing_from(
    list: &[(&'static str, &'static str)],
) -> Result<Vec<(&'static str, &'static str)>, String> {
    gst::init().map_err(|e| e.to_string())?;
    Ok(list
        .iter()
        .copied()
        .filter(|(name, _)| gst::ElementFactory::find(name).is_none())
        .collect())
}

/// Logs a warning per missing element, naming the package to install (`vigie run` at start).
pub fn log_missing() {
    match missing_elements() {
        Ok(missing) if missing.is_empty() => {
            tracing::info!(
                elements = GST_ELEMENTS.len(),
                "every GStreamer element Vigie uses is installed"
            );
        }
        Ok(missing) => {
            for (element, package) in missing {
                tracing::warn!(
                    element,
                    package,
                    "GStreamer element {element} is missing: stills or burned-in copies will fail; install the Debian package {package}"
                );
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "GStreamer cannot start: stills and burned-in copies will fail")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_gstreamer_element_is_installed() {
        let missing = missing_elements().expect("GStreamer starts");
        assert!(
            missing.is_empty(),
            "missing GStreamer elements (install these Debian packages): {}",
            missing
                .iter()
                .map(|(e, p)| format!("{e} → apt-get install {p}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    /// The check does see a missing element (and keeps its package name).
    #[test]
    fn a_missing_element_is_named_with_its_package() {
        let missing = missing_from(&[
            ("textoverlay", "x"),
            ("vigie_no_such_element", "gstreamer1.0-nope"),
        ])
        .unwrap();
        assert_eq!(missing, [("vigie_no_such_element", "gstreamer1.0-nope")]);
    }

    /// Every element of the burned-in copy's pipeline and of the still decoder is listed.
    #[test]
    fn the_pipelines_use_only_listed_elements() {
        let listed = |n: &str| GST_ELEMENTS.iter().any(|(e, _)| *e == n);
        for (parse, dec) in [("h264parse", "avdec_h264"), ("h265parse", "avdec_h265")] {
            for part in crate::burnin::pipeline_description(parse, dec).split('!') {
                let name = part.split_whitespace().next().unwrap_or("");
                assert!(
                    listed(name),
                    "{name} is in the burn-in pipeline but not in GST_ELEMENTS"
                );
            }
        }
        for codec in [vigie_core::Codec::H264, vigie_core::Codec::H265] {
            let desc = crate::transcode::pipeline_description(codec, &Default::default());
            for part in desc.split('!') {
                let name = part.split_whitespace().next().unwrap_or("");
                assert!(
                    listed(name),
                    "{name} is in the transcode pipeline but not in GST_ELEMENTS"
                );
            }
        }
        // The still decoder makes its elements one by one: `make("…")`.
        let still = include_str!("still.rs");
        for part in still.split("make(\"").skip(1) {
            let name: String = part.chars().take_while(|c| *c != '"').collect();
            assert!(
                listed(&name),
                "{name} is made in still.rs but not in GST_ELEMENTS"
            );
        }
        assert!(still.contains("avdec_h264") && listed("avdec_h264") && listed("jpegenc"));
    }
}

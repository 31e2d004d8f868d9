//! Every GStreamer element Vigie uses (stills, burned-in copies), with the Debian 12 package
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
    gst::init().map_err(|e| e.to_string())?;
    Ok(GST_ELEMENTS
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
        Err(e) => tracing::warn!(error = %e, "GStreamer cannot start: stills and burned-in copies will fail"),
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

    /// Every element named in the burned-in copy's pipeline and the still decoder is listed.
    #[test]
    fn the_pipelines_use_only_listed_elements() {
        let listed = |n: &str| GST_ELEMENTS.iter().any(|(e, _)| *e == n);
        for src in [include_str!("burnin.rs"), include_str!("still.rs")] {
            for (element, _) in [
                ("textoverlay", ()),
                ("x264enc", ()),
                ("mp4mux", ()),
                ("filesink", ()),
                ("videoconvert", ()),
                ("jpegenc", ()),
                ("h264parse", ()),
                ("avdec_h264", ()),
            ] {
                if src.contains(element) {
                    assert!(listed(element), "{element}");
                }
            }
            // Any `make("…")` / `! name` in the sources must be listed.
            for part in src.split("make(\"").skip(1) {
                let name: String = part.chars().take_while(|c| *c != '"').collect();
                assert!(listed(&name), "{name} used in the code but not in GST_ELEMENTS");
            }
            for part in src.split("! ").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                // Caps (`video/x-raw,…`) are not elements.
                let caps = part[name.len()..].starts_with('/');
                if !name.is_empty() && !caps {
                    assert!(listed(&name), "{name} used in a pipeline but not in GST_ELEMENTS");
                }
            }
        }
    }
}

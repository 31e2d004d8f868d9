//! Fixtures: an Annex-B file loaded once, split into access units and pre-packetized into RTP
//! payloads shared (as [`Bytes`]) by every session that serves it; plus the small set of fixtures
//! embedded in the binary so `vigie demo` works without the repository.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::annexb::split_nal_units;
use crate::error::{Error, Result};
use crate::h26x::{Codec, ParamKind, group_access_units, sps_dimensions};
use crate::packetize::{MAX_PAYLOAD, RtpPayload, packetize_access_unit};

/// One coded picture of a fixture.
#[derive(Clone, Debug)]
pub struct AccessUnit {
    /// NAL units (without start codes), in decoding order; key frames start with their
    /// parameter sets (inserted at load time if the file did not repeat them).
    pub nals: Vec<Bytes>,
    /// Random-access picture (H.264 IDR, H.265 IRAP).
    pub key: bool,
    /// Pre-built RTP payloads; the last one has the marker bit.
    pub payloads: Vec<RtpPayload>,
    /// Sum of the RTP payload sizes.
    pub payload_bytes: usize,
}

/// Parameter sets (NAL units with their headers, no start codes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParameterSets {
    /// H.265 VPS (`None` for H.264).
    pub vps: Option<Bytes>,
    /// Sequence parameter set.
    pub sps: Bytes,
    /// Picture parameter set.
    pub pps: Bytes,
}

/// A fixture stream ready to serve: immutable, shared with `Arc`.
#[derive(Debug)]
pub struct Fixture {
    name: String,
    codec: Codec,
    fps: f64,
    frame_duration_90k: u32,
    frames: Vec<AccessUnit>,
    params: ParameterSets,
    dimensions: Option<(u32, u32)>,
}

impl Fixture {
    /// Loads an Annex-B file; the codec comes from the extension (`.h264`/`.264`,
    /// `.h265`/`.265`/`.hevc`). `fps` is the frame rate to serve it at (see [`crate::Manifest`]).
    pub fn load(path: impl AsRef<Path>, fps: f64) -> Result<Arc<Fixture>> {
        let path = path.as_ref();
        let codec = codec_from_path(path)?;
        let data = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Fixture::from_annexb(name, Bytes::from(data), codec, fps)
    }

    /// Builds a fixture from an Annex-B byte stream held in memory.
    ///
    /// Access units before the first key frame and NAL-only units without a picture are dropped;
    /// key frames that do not carry their parameter sets get the last ones seen prepended, so that
    /// every key frame (in particular the loop point and a mid-file parameter change) is
    /// self-contained in band.
    pub fn from_annexb(
        name: impl Into<String>,
        data: Bytes,
        codec: Codec,
        fps: f64,
    ) -> Result<Arc<Fixture>> {
        let name = name.into();
        let invalid = |reason: &str| Error::InvalidFixture {
            name: name.clone(),
            reason: reason.to_owned(),
        };
        if !(fps.is_finite() && (0.1..=1000.0).contains(&fps)) {
            return Err(invalid("fps must be between 0.1 and 1000"));
        }
        let nals = split_nal_units(&data);
        if nals.is_empty() {
            return Err(invalid("no NAL units (not an Annex-B stream?)"));
        }
        let mut cur = ParamSlots::default();
        let mut first_params: Option<ParameterSets> = None;
        let mut frames = Vec::new();
        for au in group_access_units(codec, nals) {
            let mut has_vcl = false;
            let mut key = false;
            let mut in_au = ParamSlots::default();
            for nal in &au {
                let Some(t) = codec.nal_type(nal) else {
                    continue;
                };
                has_vcl |= codec.is_vcl(t);
                key |= codec.is_key(t);
                if let Some(kind) = codec.param_kind(t) {
                    cur.set(kind, nal.clone());
                    in_au.set(kind, nal.clone());
                }
            }
            if !has_vcl || (!key && frames.is_empty()) {
                continue;
            }
            let mut nals = au;
            if key {
                // Prepend the missing parameter sets, in VPS, SPS, PPS order.
                let mut missing = Vec::new();
                for kind in [ParamKind::Vps, ParamKind::Sps, ParamKind::Pps] {
                    if in_au.get(kind).is_none()
                        && let Some(p) = cur.get(kind)
                    {
                        missing.push(p.clone());
                    }
                }
                if !missing.is_empty() {
                    missing.extend(nals);
                    nals = missing;
                }
                if first_params.is_none() {
                    first_params = Some(cur.to_sets(codec).ok_or_else(|| {
                        invalid("the first key frame has no SPS/PPS (and VPS for H.265) before it")
                    })?);
                }
            }
            let payloads = packetize_access_unit(codec, &nals, MAX_PAYLOAD);
            let payload_bytes = payloads.iter().map(|p| p.data.len()).sum();
            frames.push(AccessUnit {
                nals,
                key,
                payloads,
                payload_bytes,
            });
        }
        let params = first_params.ok_or_else(|| invalid("no key frame"))?;
        let dimensions = sps_dimensions(codec, &params.sps);
        Ok(Arc::new(Fixture {
            name,
            codec,
            fps,
            frame_duration_90k: (90_000.0 / fps).round().max(1.0) as u32,
            frames,
            params,
            dimensions,
        }))
    }

    /// A fixture embedded in the binary (`include_bytes!`), parsed on first use. Available:
    /// see [`Fixture::embedded_names`].
    pub fn embedded(name: &str) -> Option<Arc<Fixture>> {
        let i = EMBEDDED.iter().position(|e| e.0 == name)?;
        let (name, data, codec, fps) = EMBEDDED[i];
        let f = EMBEDDED_CACHE[i].get_or_init(|| {
            // The embedded files are generated and checked by fixtures/generate.sh and parsed in
            // this crate's tests, so a failure here is a build defect, not bad input.
            Fixture::from_annexb(name, Bytes::from_static(data), codec, fps)
                .unwrap_or_else(|e| panic!("embedded fixture {name} is invalid: {e}"))
        });
        Some(f.clone())
    }

    /// The fixture cut at its key frames: one fixture per GOP (`<name>#<i>`), each starting with
    /// its key frame and its parameter sets. A PTZ view serves one of them (see
    /// [`crate::onvif::ptz_view`]).
    pub fn gops(&self) -> Vec<Arc<Fixture>> {
        let mut starts: Vec<usize> = (0..self.frames.len())
            .filter(|&i| self.frames[i].key)
            .collect();
        starts.push(self.frames.len());
        starts
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                Arc::new(Fixture {
                    name: format!("{}#{i}", self.name),
                    codec: self.codec,
                    fps: self.fps,
                    frame_duration_90k: self.frame_duration_90k,
                    frames: self.frames[w[0]..w[1]].to_vec(),
                    params: self.params.clone(),
                    dimensions: self.dimensions,
                })
            })
            .collect()
    }

    /// Names of the embedded fixtures.
    pub fn embedded_names() -> impl Iterator<Item = &'static str> {
        EMBEDDED.iter().map(|e| e.0)
    }

    /// File name (or the name given to [`Fixture::from_annexb`]).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// H.264 or H.265.
    pub fn codec(&self) -> Codec {
        self.codec
    }
    /// Frames per second it is served at.
    pub fn fps(&self) -> f64 {
        self.fps
    }
    /// Duration of one frame in 90 kHz units (rounded).
    pub fn frame_duration_90k(&self) -> u32 {
        self.frame_duration_90k
    }
    /// The access units, starting with a key frame.
    pub fn frames(&self) -> &[AccessUnit] {
        &self.frames
    }
    /// Parameter sets of the first key frame (the ones the SDP describes).
    pub fn parameter_sets(&self) -> &ParameterSets {
        &self.params
    }
    /// Width and height from the first SPS, if it could be parsed.
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        self.dimensions
    }
    /// Total RTP payload bytes of one loop.
    pub fn payload_bytes(&self) -> usize {
        self.frames.iter().map(|f| f.payload_bytes).sum()
    }
    /// Average bitrate (payload bits per second) at the nominal frame rate.
    pub fn bitrate_bps(&self) -> u64 {
        (self.payload_bytes() as f64 * 8.0 * self.fps / self.frames.len().max(1) as f64) as u64
    }
}

/// Codec from a file extension.
pub fn codec_from_path(path: &Path) -> Result<Codec> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "h264" | "264" | "avc" => Ok(Codec::H264),
        "h265" | "265" | "hevc" => Ok(Codec::H265),
        _ => Err(Error::UnknownCodec(path.to_owned())),
    }
}

/// The repository's `fixtures/` directory (where `generate.sh` and `fixtures.toml` live), as
/// seen from this crate's source tree. Handy for tests in other crates.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

#[derive(Default)]
struct ParamSlots {
    vps: Option<Bytes>,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
}

impl ParamSlots {
    fn set(&mut self, kind: ParamKind, nal: Bytes) {
        match kind {
            ParamKind::Vps => self.vps = Some(nal),
            ParamKind::Sps => self.sps = Some(nal),
            ParamKind::Pps => self.pps = Some(nal),
        }
    }
    fn get(&self, kind: ParamKind) -> Option<&Bytes> {
        match kind {
            ParamKind::Vps => self.vps.as_ref(),
            ParamKind::Sps => self.sps.as_ref(),
            ParamKind::Pps => self.pps.as_ref(),
        }
    }
    fn to_sets(&self, codec: Codec) -> Option<ParameterSets> {
        if codec == Codec::H265 && self.vps.is_none() {
            return None;
        }
        Some(ParameterSets {
            vps: self.vps.clone(),
            sps: self.sps.clone()?,
            pps: self.pps.clone()?,
        })
    }
}

type Embedded = (&'static str, &'static [u8], Codec, f64);

static EMBEDDED: [Embedded; 4] = [
    (
        "h264-baseline-640x360-25fps-gop50.h264",
        include_bytes!("../../../fixtures/h264-baseline-640x360-25fps-gop50.h264"),
        Codec::H264,
        25.0,
    ),
    (
        "h264-main-1280x720-15fps-gop30.h264",
        include_bytes!("../../../fixtures/h264-main-1280x720-15fps-gop30.h264"),
        Codec::H264,
        15.0,
    ),
    (
        "h265-main-1280x720-25fps-gop50.h265",
        include_bytes!("../../../fixtures/h265-main-1280x720-25fps-gop50.h265"),
        Codec::H265,
        25.0,
    ),
    (
        "h264-ptz-pan5-640x360-25fps-gop50.h264",
        include_bytes!("../../../fixtures/h264-ptz-pan5-640x360-25fps-gop50.h264"),
        Codec::H264,
        25.0,
    ),
];

static EMBEDDED_CACHE: [OnceLock<Arc<Fixture>>; 4] = [const { OnceLock::new() }; 4];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_fixtures_parse() {
        let expect = [
            ("h264-baseline-640x360-25fps-gop50.h264", (640, 360), 250, 5),
            ("h264-main-1280x720-15fps-gop30.h264", (1280, 720), 150, 5),
            ("h265-main-1280x720-25fps-gop50.h265", (1280, 720), 250, 5),
            ("h264-ptz-pan5-640x360-25fps-gop50.h264", (640, 360), 250, 5),
        ];
        for (name, dims, frames, keys) in expect {
            let f = Fixture::embedded(name).unwrap();
            assert_eq!(f.dimensions(), Some(dims), "{name}");
            assert_eq!(f.frames().len(), frames, "{name}");
            assert_eq!(f.frames().iter().filter(|a| a.key).count(), keys, "{name}");
            assert!(f.frames()[0].key);
            assert!(f.frames().iter().all(|a| a.payloads.last().unwrap().marker));
        }
        assert!(Fixture::embedded("nope").is_none());
    }

    #[test]
    fn gops_cut_a_fixture_at_its_key_frames() {
        let f = Fixture::embedded("h264-ptz-pan5-640x360-25fps-gop50.h264").unwrap();
        let gops = f.gops();
        assert_eq!(gops.len(), 5);
        for (i, g) in gops.iter().enumerate() {
            assert_eq!(g.frames().len(), 50, "gop {i}");
            assert!(g.frames()[0].key, "gop {i} starts with its key frame");
            assert_eq!(g.frames().iter().filter(|a| a.key).count(), 1);
            assert_eq!(g.dimensions(), Some((640, 360)));
            assert_eq!(g.name(), format!("{}#{i}", f.name()));
        }
        let total: usize = gops.iter().map(|g| g.frames().len()).sum();
        assert_eq!(total, f.frames().len());
    }

    #[test]
    fn res_change_has_two_sps() {
        let f = Fixture::load(fixtures_dir().join("h264-res-change.h264"), 25.0).unwrap();
        assert_eq!(f.frames().len(), 200);
        assert_eq!(f.dimensions(), Some((640, 360)));
        let sps: Vec<_> = f
            .frames()
            .iter()
            .flat_map(|a| a.nals.iter())
            .filter(|n| n[0] & 0x1f == 7)
            .map(|n| sps_dimensions(Codec::H264, n).unwrap())
            .collect();
        assert!(sps.contains(&(640, 360)) && sps.contains(&(320, 180)));
        assert!(f.frames()[100].key);
    }

    #[test]
    fn inserts_missing_parameter_sets() {
        // SPS/PPS only before the first IDR; the second IDR must get them prepended.
        let baseline = Fixture::embedded("h264-baseline-640x360-25fps-gop50.h264").unwrap();
        let mut data = Vec::new();
        for (i, au) in baseline.frames().iter().take(60).enumerate() {
            for n in &au.nals {
                let t = n[0] & 0x1f;
                if i > 0 && (t == 7 || t == 8) {
                    continue;
                }
                data.extend_from_slice(&[0, 0, 0, 1]);
                data.extend_from_slice(n);
            }
        }
        let f = Fixture::from_annexb("t", Bytes::from(data), Codec::H264, 25.0).unwrap();
        assert_eq!(f.frames().len(), 60);
        let types: Vec<u8> = f.frames()[50].nals.iter().map(|n| n[0] & 0x1f).collect();
        assert_eq!(&types[..2], &[7, 8]);
        assert_eq!(*types.last().unwrap(), 5);
    }

    #[test]
    fn rejects_garbage() {
        for data in [&b""[..], b"hello", &[0, 0, 1, 0x41, 0x9a, 0, 0, 1, 0x67]] {
            assert!(
                Fixture::from_annexb("g", Bytes::copy_from_slice(data), Codec::H264, 25.0).is_err()
            );
        }
        assert!(Fixture::from_annexb("g", Bytes::new(), Codec::H264, 0.0).is_err());
    }
}

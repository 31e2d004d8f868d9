//! Rogue modes: a mount that behaves like an attacker's device put in a camera's place, to test
//! that a client bounds what one camera can make it buffer and never sends a password in clear.
//!
//! Set with [`crate::MountConfig::with_rogue`] or `camsim --rogue MOUNT=MODE`. Each burst is
//! bounded ([`BURST_BYTES`]) so that a client without bounds sees the attack without camsim
//! running forever; it stops early when the client closes the connection. The Basic-challenge
//! mode is a mount with [`crate::Auth::basic`]; [`crate::MountStats::basic_credentials`] counts
//! the requests that carried Basic credentials (a password in clear).

use std::str::FromStr;

use bytes::Bytes;

use crate::packetize::RtpPayload;

/// How much a rogue burst sends at most before giving up (a client with a sane bound closes
/// the connection long before).
pub const BURST_BYTES: usize = 64 << 20;

/// Frames sent normally before a media attack starts (2 s at 25 fps): the client is recording.
pub const FRAMES_BEFORE_ATTACK: u64 = 50;

/// What a rogue mount does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rogue {
    /// Answers DESCRIBE with a status line and header lines that never end.
    EndlessHeader,
    /// Answers DESCRIBE with `Content-Length: 1099511627776` (1 TiB) and streams the body.
    HugeContentLength,
    /// After [`FRAMES_BEFORE_ATTACK`] frames, one access unit of endless FU-A fragments: a start
    /// fragment then middle fragments, never an end fragment nor a marker bit.
    EndlessFuA,
    /// After [`FRAMES_BEFORE_ATTACK`] frames, a flood of tiny RTP packets (a 2-byte filler NAL
    /// unit each) of one timestamp without a marker bit: one access unit that never ends.
    TinyPacketFlood,
    /// SDP whose `sprop-parameter-sets` is 1 MiB long.
    HugeSprop,
    /// SDP with an RTP clock rate of 1 Hz (`a=rtpmap:96 H264/1`).
    AbsurdClockRate,
}

impl Rogue {
    /// Every mode, for tests and help texts.
    pub const ALL: [Rogue; 6] = [
        Rogue::EndlessHeader,
        Rogue::HugeContentLength,
        Rogue::EndlessFuA,
        Rogue::TinyPacketFlood,
        Rogue::HugeSprop,
        Rogue::AbsurdClockRate,
    ];

    /// The mode's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Rogue::EndlessHeader => "endless-header",
            Rogue::HugeContentLength => "huge-content-length",
            Rogue::EndlessFuA => "endless-fu-a",
            Rogue::TinyPacketFlood => "tiny-packet-flood",
            Rogue::HugeSprop => "huge-sprop",
            Rogue::AbsurdClockRate => "absurd-clock-rate",
        }
    }

    /// True for the modes that attack the media (after PLAY), not the RTSP conversation.
    pub fn is_media(self) -> bool {
        matches!(self, Rogue::EndlessFuA | Rogue::TinyPacketFlood)
    }
}

impl FromStr for Rogue {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Rogue::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Rogue::ALL.iter().map(|r| r.name()).collect();
                format!("unknown rogue mode {s:?} (one of: {})", names.join(", "))
            })
    }
}

/// Rewrites a DESCRIBE SDP for the SDP modes.
pub(crate) fn rogue_sdp(mode: Rogue, sdp: String) -> String {
    match mode {
        Rogue::HugeSprop => {
            let blob = "Z".repeat(1 << 20);
            sdp.replacen(
                "sprop-parameter-sets=",
                &format!("sprop-parameter-sets={blob},"),
                1,
            )
            .replacen("sprop-sps=", &format!("sprop-sps={blob}"), 1)
        }
        Rogue::AbsurdClockRate => sdp.replacen("/90000", "/1", 1),
        _ => sdp,
    }
}

/// One batch of the media attack's payloads (`first` for the first batch of the burst).
pub(crate) fn attack_batch(mode: Rogue, h265: bool, first: bool) -> Vec<RtpPayload> {
    match mode {
        Rogue::EndlessFuA => {
            let (start, middle): (Vec<u8>, Vec<u8>) = if h265 {
                // FU (type 49) header, then FU header with S (0x80) / none, type 19 (IDR).
                (vec![49 << 1, 1, 0x80 | 19], vec![49 << 1, 1, 19])
            } else {
                // FU-A indicator (NRI 3, type 28), FU header S (0x80) / none, type 5 (IDR).
                (vec![0x7c, 0x85], vec![0x7c, 0x05])
            };
            (0..64)
                .map(|i| {
                    let mut d = if first && i == 0 {
                        start.clone()
                    } else {
                        middle.clone()
                    };
                    d.resize(1400, 0x5a);
                    RtpPayload {
                        data: Bytes::from(d),
                        marker: false,
                    }
                })
                .collect()
        }
        Rogue::TinyPacketFlood => {
            // Filler data NAL units: H.264 type 12, H.265 type 38.
            let nal = if h265 {
                Bytes::from_static(&[38 << 1, 1, 0xff])
            } else {
                Bytes::from_static(&[12, 0xff])
            };
            (0..256)
                .map(|_| RtpPayload {
                    data: nal.clone(),
                    marker: false,
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in Rogue::ALL {
            assert_eq!(r.name().parse::<Rogue>().unwrap(), r);
        }
        assert!("nope".parse::<Rogue>().is_err());
    }

    #[test]
    fn sdp_modes() {
        let sdp = "a=rtpmap:96 H264/90000\r\na=fmtp:96 sprop-parameter-sets=AA,BB\r\n".to_owned();
        assert!(rogue_sdp(Rogue::AbsurdClockRate, sdp.clone()).contains("H264/1\r\n"));
        assert!(rogue_sdp(Rogue::HugeSprop, sdp).len() > 1 << 20);
    }
}

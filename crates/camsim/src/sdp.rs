//! SDP (RFC 4566) for DESCRIBE: one video media section, payload type 96, with the H.264
//! (RFC 6184 §8.1) or H.265 (RFC 7798 §7.1) `a=fmtp` parameters of the fixture's first key frame.

use std::fmt::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::fixture::Fixture;
use crate::h26x::Codec;

/// Dynamic RTP payload type used for video.
pub const PAYLOAD_TYPE: u8 = 96;

/// Control URL of the (only) track, relative to the `Content-Base`.
pub const TRACK_CONTROL: &str = "trackID=0";

/// Builds the SDP for a mount serving `fixture`. `session_id` goes in the `o=` line.
pub fn build_sdp(mount: &str, fixture: &Fixture, session_id: u64) -> String {
    let mut s = String::with_capacity(512);
    let p = fixture.parameter_sets();
    // Writing into a String cannot fail.
    let _ = write!(
        s,
        "v=0\r\n\
         o=- {session_id} 1 IN IP4 0.0.0.0\r\n\
         s=camsim {mount}\r\n\
         c=IN IP4 0.0.0.0\r\n\
         t=0 0\r\n\
         a=tool:vigie-camsim\r\n\
         a=type:broadcast\r\n\
         a=control:*\r\n\
         a=range:npt=now-\r\n\
         m=video 0 RTP/AVP {PAYLOAD_TYPE}\r\n\
         b=AS:{kbps}\r\n\
         a=rtpmap:{PAYLOAD_TYPE} {enc}/90000\r\n",
        kbps = fixture.bitrate_bps().div_ceil(1000),
        enc = fixture.codec().encoding_name(),
    );
    match fixture.codec() {
        Codec::H264 => {
            let pli = p.sps.get(1..4).map(hex_upper).unwrap_or_default();
            let _ = write!(
                s,
                "a=fmtp:{PAYLOAD_TYPE} packetization-mode=1;profile-level-id={pli};sprop-parameter-sets={},{}\r\n",
                STANDARD.encode(&p.sps),
                STANDARD.encode(&p.pps),
            );
        }
        Codec::H265 => {
            let _ = write!(s, "a=fmtp:{PAYLOAD_TYPE} ");
            if let Some(vps) = &p.vps {
                let _ = write!(s, "sprop-vps={};", STANDARD.encode(vps));
            }
            let _ = write!(
                s,
                "sprop-sps={};sprop-pps={}\r\n",
                STANDARD.encode(&p.sps),
                STANDARD.encode(&p.pps)
            );
        }
    }
    if let Some((w, h)) = fixture.dimensions() {
        let _ = write!(s, "a=x-dimensions:{w},{h}\r\n");
    }
    let _ = write!(
        s,
        "a=framerate:{}\r\na=control:{TRACK_CONTROL}\r\n",
        fixture.fps()
    );
    s
}

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_sdp() {
        let f = Fixture::embedded("h264-baseline-640x360-25fps-gop50.h264").unwrap();
        let sdp = build_sdp("cam1", &f, 42);
        assert!(sdp.starts_with("v=0\r\no=- 42 1 IN IP4"));
        assert!(sdp.contains("m=video 0 RTP/AVP 96\r\n"));
        assert!(sdp.contains("a=rtpmap:96 H264/90000\r\n"));
        assert!(sdp.contains(
            "a=fmtp:96 packetization-mode=1;profile-level-id=42C01E;sprop-parameter-sets="
        ));
        assert!(sdp.contains("a=range:npt=now-\r\n"));
        assert!(sdp.contains("a=control:trackID=0\r\n"));
        assert!(sdp.contains("a=x-dimensions:640,360\r\n"));
        let fmtp = sdp.lines().find(|l| l.starts_with("a=fmtp")).unwrap();
        let sprop = fmtp.split("sprop-parameter-sets=").nth(1).unwrap();
        let mut sets = sprop.split(',');
        let sps = STANDARD.decode(sets.next().unwrap()).unwrap();
        assert_eq!(&sps[..], &f.parameter_sets().sps[..]);
        assert_eq!(sps[0] & 0x1f, 7);
        let pps = STANDARD.decode(sets.next().unwrap()).unwrap();
        assert_eq!(pps[0] & 0x1f, 8);
        assert!(sdp.lines().all(|l| !l.is_empty()));
    }

    #[test]
    fn h265_sdp() {
        let f = Fixture::embedded("h265-main-1280x720-25fps-gop50.h265").unwrap();
        let sdp = build_sdp("cam/h265", &f, 1);
        assert!(sdp.contains("a=rtpmap:96 H265/90000\r\n"));
        let fmtp = sdp.lines().find(|l| l.starts_with("a=fmtp:96 ")).unwrap();
        let get = |k: &str| {
            let v = fmtp[10..]
                .split(';')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .unwrap();
            STANDARD.decode(v).unwrap()
        };
        assert_eq!((get("sprop-vps")[0] >> 1) & 0x3f, 32);
        assert_eq!((get("sprop-sps")[0] >> 1) & 0x3f, 33);
        assert_eq!((get("sprop-pps")[0] >> 1) & 0x3f, 34);
    }
}

//! RTP payloads for H.264 (RFC 6184) and H.265 (RFC 7798), built once per fixture.
//!
//! Packetization mode 1 (non-interleaved): a NAL unit that fits in [`MAX_PAYLOAD`] bytes goes as a
//! single-NAL-unit packet (a zero-copy slice of the fixture); a larger one is split into FU-A
//! (H.264, type 28) or FU (H.265, type 49) fragments, each copied once into its own [`Bytes`].
//! The marker bit is set on the last packet of each access unit. No aggregation packets.

use bytes::{BufMut, Bytes, BytesMut};

use crate::h26x::Codec;

/// Largest RTP payload produced (bytes), leaving room for IP/UDP/RTP headers in a 1500-byte MTU.
pub const MAX_PAYLOAD: usize = 1400;

/// One pre-built RTP payload; only the 12-byte RTP header is written per send.
#[derive(Clone, Debug)]
pub struct RtpPayload {
    /// Payload bytes (shared by all sessions).
    pub data: Bytes,
    /// RTP marker bit: last packet of an access unit.
    pub marker: bool,
}

/// Packetizes one access unit (its NAL units, in order) into RTP payloads of at most `max` bytes.
pub fn packetize_access_unit(codec: Codec, nals: &[Bytes], max: usize) -> Vec<RtpPayload> {
    let mut out = Vec::new();
    for nal in nals {
        packetize_nal(codec, nal, max, &mut out);
    }
    if let Some(last) = out.last_mut() {
        last.marker = true;
    }
    out
}

fn packetize_nal(codec: Codec, nal: &Bytes, max: usize, out: &mut Vec<RtpPayload>) {
    let hlen = codec.nal_header_len();
    if nal.len() <= max || nal.len() <= hlen {
        out.push(RtpPayload {
            data: nal.clone(),
            marker: false,
        });
        return;
    }
    // FU overhead: H.264 FU indicator + FU header (2); H.265 payload header + FU header (3).
    let overhead = hlen + 1;
    let chunk = max.saturating_sub(overhead).max(1);
    let body = &nal[hlen..];
    let n = body.len().div_ceil(chunk);
    for (i, piece) in body.chunks(chunk).enumerate() {
        let start = i == 0;
        let end = i + 1 == n;
        let mut b = BytesMut::with_capacity(overhead + piece.len());
        match codec {
            Codec::H264 => {
                let t = nal[0] & 0x1f;
                b.put_u8((nal[0] & 0xe0) | 28); // FU indicator: F, NRI, type 28
                b.put_u8(u8::from(start) << 7 | u8::from(end) << 6 | t);
            }
            Codec::H265 => {
                let t = (nal[0] >> 1) & 0x3f;
                b.put_u8((nal[0] & 0x81) | (49 << 1)); // F, type 49, LayerId high bit
                b.put_u8(nal[1]); // LayerId low bits, TID
                b.put_u8(u8::from(start) << 7 | u8::from(end) << 6 | t);
            }
        }
        b.put_slice(piece);
        out.push(RtpPayload {
            data: b.freeze(),
            marker: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reassembles FU-A / FU fragments to check the round trip.
    fn depacketize(codec: Codec, pkts: &[RtpPayload]) -> Vec<Vec<u8>> {
        let mut nals = Vec::new();
        let mut cur: Option<Vec<u8>> = None;
        for p in pkts {
            let d = &p.data[..];
            match (codec, codec.nal_type(d).unwrap()) {
                (Codec::H264, 28) => {
                    let (s, e, t) = (d[1] & 0x80 != 0, d[1] & 0x40 != 0, d[1] & 0x1f);
                    if s {
                        cur = Some(vec![(d[0] & 0xe0) | t]);
                    }
                    cur.as_mut().unwrap().extend_from_slice(&d[2..]);
                    if e {
                        nals.push(cur.take().unwrap());
                    }
                }
                (Codec::H265, 49) => {
                    let (s, e, t) = (d[2] & 0x80 != 0, d[2] & 0x40 != 0, d[2] & 0x3f);
                    if s {
                        cur = Some(vec![(d[0] & 0x81) | (t << 1), d[1]]);
                    }
                    cur.as_mut().unwrap().extend_from_slice(&d[3..]);
                    if e {
                        nals.push(cur.take().unwrap());
                    }
                }
                _ => nals.push(d.to_vec()),
            }
        }
        nals
    }

    fn nal(header: &[u8], len: usize) -> Bytes {
        let mut v = header.to_vec();
        v.extend((0..len).map(|i| (i % 251) as u8));
        Bytes::from(v)
    }

    #[test]
    fn h264_fu_a() {
        let small = nal(&[0x67], 20);
        let big = nal(&[0x65], 3000);
        let pkts = packetize_access_unit(Codec::H264, &[small.clone(), big.clone()], 1400);
        // 3000 body bytes / 1398 per fragment = 3 fragments.
        assert_eq!(pkts.len(), 4);
        assert!(pkts.iter().all(|p| p.data.len() <= 1400));
        assert_eq!(pkts[1].data[0], 0x60 | 28);
        assert_eq!(pkts[1].data[1], 0x80 | 5);
        assert_eq!(pkts[2].data[1], 5);
        assert_eq!(pkts[3].data[1], 0x40 | 5);
        assert_eq!(
            pkts.iter().map(|p| p.marker).collect::<Vec<_>>(),
            vec![false, false, false, true]
        );
        assert_eq!(
            depacketize(Codec::H264, &pkts),
            vec![small.to_vec(), big.to_vec()]
        );
        // Zero-copy for single NAL packets.
        assert_eq!(pkts[0].data.as_ptr(), small.as_ptr());
    }

    #[test]
    fn h265_fu() {
        let big = nal(&[0x26, 0x01], 4000); // IDR_W_RADL (19)
        let pkts = packetize_access_unit(Codec::H265, std::slice::from_ref(&big), 1400);
        assert_eq!(pkts.len(), 3); // 3998 / 1397
        assert!(pkts.iter().all(|p| p.data.len() <= 1400));
        assert_eq!(Codec::H265.nal_type(&pkts[0].data), Some(49));
        assert_eq!(pkts[0].data[1], 0x01);
        assert_eq!(pkts[0].data[2], 0x80 | 19);
        assert_eq!(pkts[2].data[2], 0x40 | 19);
        assert!(pkts[2].marker && !pkts[0].marker);
        assert_eq!(depacketize(Codec::H265, &pkts), vec![big.to_vec()]);
    }

    #[test]
    fn exact_fit_is_single() {
        let n = nal(&[0x41], 1399);
        let pkts = packetize_access_unit(Codec::H264, std::slice::from_ref(&n), 1400);
        assert_eq!(pkts.len(), 1);
        assert!(pkts[0].marker);
    }
}

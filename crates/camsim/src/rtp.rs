//! RTP fixed headers and RTCP sender reports (RFC 3550), written into caller-owned buffers.

use std::time::{SystemTime, UNIX_EPOCH};

/// Size of the RTP fixed header (no CSRC, no extension).
pub const RTP_HEADER_LEN: usize = 12;

/// Writes a 12-byte RTP header (V=2, no padding/extension/CSRC).
pub fn write_rtp_header(
    out: &mut [u8; RTP_HEADER_LEN],
    payload_type: u8,
    marker: bool,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
) {
    out[0] = 0x80;
    out[1] = (u8::from(marker) << 7) | (payload_type & 0x7f);
    out[2..4].copy_from_slice(&seq.to_be_bytes());
    out[4..8].copy_from_slice(&timestamp.to_be_bytes());
    out[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// Current wall-clock time as a 64-bit NTP timestamp (seconds since 1900 in the high 32 bits).
pub fn ntp_now() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() + 2_208_988_800;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// Appends a compound RTCP packet: a sender report (no report blocks) followed by an SDES with a
/// CNAME item, as RFC 3550 §6.1 requires.
pub fn write_sender_report(
    out: &mut Vec<u8>,
    ssrc: u32,
    ntp: u64,
    rtp_timestamp: u32,
    packet_count: u32,
    octet_count: u32,
    cname: &str,
) {
    // SR: header + 24 bytes of sender info → length 6 (in 32-bit words minus one).
    out.extend_from_slice(&[0x80, 200, 0, 6]);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&ntp.to_be_bytes());
    out.extend_from_slice(&rtp_timestamp.to_be_bytes());
    out.extend_from_slice(&packet_count.to_be_bytes());
    out.extend_from_slice(&octet_count.to_be_bytes());
    // SDES: one chunk (SSRC, CNAME item, end item), padded to a 32-bit boundary.
    let cname = &cname.as_bytes()[..cname.len().min(255)];
    let chunk_len = 4 + 2 + cname.len() + 1;
    let padded = chunk_len.div_ceil(4) * 4;
    let words = (4 + padded) / 4 - 1;
    out.extend_from_slice(&[0x81, 202]);
    out.extend_from_slice(&(words as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.push(1); // CNAME
    out.push(cname.len() as u8);
    out.extend_from_slice(cname);
    out.resize(out.len() + (padded - chunk_len) + 1, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header() {
        let mut h = [0u8; 12];
        write_rtp_header(&mut h, 96, true, 0x1234, 0xdeadbeef, 0x01020304);
        assert_eq!(
            h,
            [0x80, 0xe0, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]
        );
        write_rtp_header(&mut h, 96, false, 1, 2, 3);
        assert_eq!(h[1], 96);
    }

    #[test]
    fn sender_report_layout() {
        let mut v = Vec::new();
        write_sender_report(&mut v, 7, 0x0102030405060708, 99, 10, 1000, "camsim");
        assert_eq!(v.len() % 4, 0);
        assert_eq!(&v[..4], &[0x80, 200, 0, 6]);
        let sdes = &v[28..];
        assert_eq!(sdes[1], 202);
        let words = u16::from_be_bytes([sdes[2], sdes[3]]) as usize;
        assert_eq!((words + 1) * 4, sdes.len());
        assert_eq!(&sdes[8..8 + 2 + 6], b"\x01\x06camsim");
        assert!(ntp_now() >> 32 > 3_900_000_000);
    }
}

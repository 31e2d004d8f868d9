//! H.264 / H.265 bitstream knowledge camsim needs: NAL unit types, access-unit boundaries,
//! key frames, parameter sets, and the picture size from an SPS.
//!
//! Access units are found with the usual rules (ITU-T H.264 §7.4.1.2.3, H.265 §7.4.2.4.4): a new
//! AU starts at an AUD / parameter set / prefix SEI, or at a VCL NAL unit that begins a new
//! picture (`first_mb_in_slice == 0` / `first_slice_segment_in_pic_flag == 1`) once the current AU
//! already has a VCL NAL unit.

use bytes::Bytes;

/// Video codec of a fixture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// H.264 / AVC (RTP payload format RFC 6184).
    H264,
    /// H.265 / HEVC (RTP payload format RFC 7798).
    H265,
}

impl Codec {
    /// The encoding name used in SDP `a=rtpmap` (`H264` or `H265`).
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::H264 => "H264",
            Codec::H265 => "H265",
        }
    }

    /// NAL unit type of a NAL unit (first byte(s) of `nal`); `None` if it is too short.
    pub fn nal_type(self, nal: &[u8]) -> Option<u8> {
        match self {
            Codec::H264 => nal.first().map(|b| b & 0x1f),
            Codec::H265 if nal.len() >= 2 => Some((nal[0] >> 1) & 0x3f),
            Codec::H265 => None,
        }
    }

    /// Length of the NAL unit header (1 for H.264, 2 for H.265).
    pub fn nal_header_len(self) -> usize {
        match self {
            Codec::H264 => 1,
            Codec::H265 => 2,
        }
    }

    /// True for VCL (coded slice) NAL units.
    pub fn is_vcl(self, t: u8) -> bool {
        match self {
            Codec::H264 => (1..=5).contains(&t),
            Codec::H265 => t < 32,
        }
    }

    /// True for NAL units of a random-access picture (H.264 IDR; H.265 IRAP: BLA/IDR/CRA).
    pub fn is_key(self, t: u8) -> bool {
        match self {
            Codec::H264 => t == 5,
            Codec::H265 => (16..=23).contains(&t),
        }
    }

    /// Which parameter set a NAL unit type is, if any.
    pub fn param_kind(self, t: u8) -> Option<ParamKind> {
        match (self, t) {
            (Codec::H264, 7) | (Codec::H265, 33) => Some(ParamKind::Sps),
            (Codec::H264, 8) | (Codec::H265, 34) => Some(ParamKind::Pps),
            (Codec::H265, 32) => Some(ParamKind::Vps),
            _ => None,
        }
    }

    /// True if a NAL unit of this type, when it follows a VCL NAL unit, opens a new access unit
    /// regardless of its content (AUD, parameter sets, prefix SEI, …).
    fn starts_new_au(self, t: u8) -> bool {
        match self {
            // 6 SEI, 7 SPS, 8 PPS, 9 AUD, 14..=18 prefix/reserved
            Codec::H264 => matches!(t, 6..=9 | 14..=18),
            // 32..=35 VPS/SPS/PPS/AUD, 39 prefix SEI, 41..=44 and 48..=55 reserved/unspecified
            Codec::H265 => matches!(t, 32..=35 | 39 | 41..=44 | 48..=55),
        }
    }

    /// True if this VCL NAL unit is the first slice of a picture.
    fn first_slice_of_picture(self, nal: &[u8]) -> bool {
        match self {
            // first_mb_in_slice is ue(v): it is 0 iff the first bit is 1.
            Codec::H264 => nal.get(1).is_some_and(|b| b & 0x80 != 0),
            // first_slice_segment_in_pic_flag is the first bit after the 2-byte header.
            Codec::H265 => nal.get(2).is_some_and(|b| b & 0x80 != 0),
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Codec::H264 => "h264",
            Codec::H265 => "h265",
        })
    }
}

/// Parameter-set kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// H.265 video parameter set.
    Vps,
    /// Sequence parameter set.
    Sps,
    /// Picture parameter set.
    Pps,
}

/// Groups NAL units into access units (each a non-empty list of NAL units).
pub fn group_access_units(codec: Codec, nals: Vec<Bytes>) -> Vec<Vec<Bytes>> {
    let mut aus: Vec<Vec<Bytes>> = Vec::new();
    let mut cur: Vec<Bytes> = Vec::new();
    let mut cur_has_vcl = false;
    for nal in nals {
        let Some(t) = codec.nal_type(&nal) else {
            continue;
        };
        let vcl = codec.is_vcl(t);
        let new_au = cur_has_vcl
            && ((vcl && codec.first_slice_of_picture(&nal)) || (!vcl && codec.starts_new_au(t)));
        if new_au {
            aus.push(std::mem::take(&mut cur));
            cur_has_vcl = false;
        }
        cur_has_vcl |= vcl;
        cur.push(nal);
    }
    if !cur.is_empty() {
        aus.push(cur);
    }
    aus
}

/// Removes emulation-prevention bytes (`00 00 03` → `00 00`) from a NAL unit.
pub fn unescape_rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// MSB-first bit reader with Exp-Golomb decoding; every read fails cleanly past the end.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }
    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }
    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.pos += n;
        (self.pos <= self.data.len() * 8).then_some(())
    }
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some(((1u64 << zeros) - 1 + u64::from(self.bits(zeros)?)) as u32)
    }
    fn se(&mut self) -> Option<i32> {
        let k = self.ue()?;
        Some(if k % 2 == 1 {
            k.div_ceil(2) as i32
        } else {
            -((k / 2) as i32)
        })
    }
}

/// Picture width and height (after cropping) from an SPS NAL unit (with its header).
/// Returns `None` if the SPS cannot be parsed.
pub fn sps_dimensions(codec: Codec, sps: &[u8]) -> Option<(u32, u32)> {
    let rbsp = unescape_rbsp(sps);
    match codec {
        Codec::H264 => h264_sps_dimensions(rbsp.get(1..)?),
        Codec::H265 => h265_sps_dimensions(rbsp.get(2..)?),
    }
}

fn h264_sps_dimensions(d: &[u8]) -> Option<(u32, u32)> {
    let mut r = BitReader::new(d);
    let profile_idc = r.bits(8)?;
    r.skip(16)?; // constraint flags + level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            r.bit()?; // separate_colour_plane_flag
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let n = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..n {
                if r.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i32, 8i32);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256) % 256;
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            let n = r.ue()?;
            for _ in 0..n.min(255) {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let w_mbs = r.ue()?.checked_add(1)?;
    let h_map = r.ue()?.checked_add(1)?;
    let frame_mbs_only = r.bit()?;
    if frame_mbs_only == 0 {
        r.bit()?;
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut cl, mut cr, mut ct, mut cb) = (0, 0, 0, 0);
    if r.bit()? == 1 {
        cl = r.ue()?;
        cr = r.ue()?;
        ct = r.ue()?;
        cb = r.ue()?;
    }
    let (sub_w, sub_h): (u64, u64) = match chroma_format_idc {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let fmo = u64::from(frame_mbs_only);
    let (crop_x, crop_y) = if chroma_format_idc == 0 {
        (1, 2 - fmo)
    } else {
        (sub_w, sub_h * (2 - fmo))
    };
    let (cl, cr, ct, cb) = (u64::from(cl), u64::from(cr), u64::from(ct), u64::from(cb));
    let width = (u64::from(w_mbs) * 16).checked_sub(crop_x * (cl + cr))?;
    let height = ((2 - fmo) * u64::from(h_map) * 16).checked_sub(crop_y * (ct + cb))?;
    let (width, height) = (u32::try_from(width).ok()?, u32::try_from(height).ok()?);
    Some((width, height))
}

fn h265_sps_dimensions(d: &[u8]) -> Option<(u32, u32)> {
    let mut r = BitReader::new(d);
    r.bits(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.bits(3)? as usize;
    r.bit()?; // sps_temporal_id_nesting_flag
    // profile_tier_level(1, max_sub_layers_minus1)
    r.skip(88)?; // general profile space/tier/idc, compat flags, constraint flags
    r.skip(8)?; // general_level_idc
    let mut present = [(0u32, 0u32); 8];
    for p in present.iter_mut().take(max_sub_layers_minus1) {
        *p = (r.bit()?, r.bit()?);
    }
    if max_sub_layers_minus1 > 0 {
        r.skip(2 * (8 - max_sub_layers_minus1))?;
    }
    for &(profile, level) in present.iter().take(max_sub_layers_minus1) {
        if profile == 1 {
            r.skip(88)?;
        }
        if level == 1 {
            r.skip(8)?;
        }
    }
    r.ue()?; // sps_seq_parameter_set_id
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc == 3 {
        r.bit()?;
    }
    let mut width = r.ue()?;
    let mut height = r.ue()?;
    if r.bit()? == 1 {
        let (sub_w, sub_h) = match chroma_format_idc {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let (l, rr, t, b) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        width = width.checked_sub(l.checked_add(rr)?.checked_mul(sub_w)?)?;
        height = height.checked_sub(t.checked_add(b)?.checked_mul(sub_h)?)?;
    }
    Some((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_h264_access_units() {
        let n = |b: &'static [u8]| Bytes::from_static(b);
        let nals = vec![
            n(&[0x67, 0x42]),       // SPS
            n(&[0x68, 0xce]),       // PPS
            n(&[0x06, 0x05]),       // SEI
            n(&[0x65, 0x88]),       // IDR, first_mb = 0
            n(&[0x41, 0x9a]),       // P, first_mb = 0 → new AU
            n(&[0x41, 0x40, 0x00]), // P, first_mb != 0 → same AU (second slice)
            n(&[0x09, 0xf0]),       // AUD → new AU
            n(&[0x41, 0x9a]),
        ];
        let aus = group_access_units(Codec::H264, nals);
        assert_eq!(aus.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 2, 2]);
    }

    #[test]
    fn groups_h265_access_units() {
        let n = |b: &'static [u8]| Bytes::from_static(b);
        let nals = vec![
            n(&[0x40, 0x01, 0x0c]), // VPS
            n(&[0x42, 0x01, 0x01]), // SPS
            n(&[0x44, 0x01, 0xc1]), // PPS
            n(&[0x28, 0x01, 0xaf]), // IDR_N_LP (20), first slice
            n(&[0x02, 0x01, 0xd0]), // TRAIL_R, first slice → new AU
            n(&[0x02, 0x01, 0x50]), // TRAIL_R, not first → same AU
        ];
        let aus = group_access_units(Codec::H265, nals);
        assert_eq!(aus.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 2]);
        assert!(Codec::H265.is_key(20));
        assert!(!Codec::H265.is_key(1));
    }

    #[test]
    fn unescapes() {
        assert_eq!(
            unescape_rbsp(&[1, 0, 0, 3, 1, 0, 0, 3]),
            vec![1, 0, 0, 1, 0, 0]
        );
    }

    #[test]
    fn exp_golomb() {
        // 1 | 010 | 011 | 00100 | 00101 → 0, 1, 2, 3, 4 ; se: k=1→1, k=2→-1
        let mut r = BitReader::new(&[0b1010_0110, 0b0100_0010, 0b1000_0000]);
        assert_eq!(r.ue(), Some(0));
        assert_eq!(r.ue(), Some(1));
        assert_eq!(r.ue(), Some(2));
        assert_eq!(r.ue(), Some(3));
        assert_eq!(r.ue(), Some(4));
        let mut r = BitReader::new(&[0b0100_1100]);
        assert_eq!(r.se(), Some(1));
        assert_eq!(r.se(), Some(-1));
        assert_eq!(BitReader::new(&[0]).ue(), None);
    }

    #[test]
    fn garbage_sps_does_not_panic() {
        for len in 0..40 {
            let v: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = sps_dimensions(Codec::H264, &v);
            let _ = sps_dimensions(Codec::H265, &v);
            let _ = sps_dimensions(Codec::H264, &vec![0xff; len]);
            let _ = sps_dimensions(Codec::H265, &vec![0xff; len]);
        }
    }
}

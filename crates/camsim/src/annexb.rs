//! Annex-B byte-stream splitting (ITU-T H.264/H.265 Annex B): start codes → NAL units.
//!
//! The NAL units returned are zero-copy slices of the input [`Bytes`], without start codes and
//! without trailing zero bytes.

use bytes::Bytes;

/// Splits an Annex-B byte stream into NAL units (3- or 4-byte start codes; leading garbage before
/// the first start code and empty NAL units are skipped).
pub fn split_nal_units(data: &Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut starts = Vec::new(); // offsets of the first byte after each start code
    let d = &data[..];
    let mut i = 0;
    while i + 3 <= d.len() {
        if d[i] == 0 && d[i + 1] == 0 && d[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else if d[i + 2] > 1 {
            // Neither d[i+1] nor d[i+2] can start a start code ending at i+2… skip ahead.
            i += 3;
        } else {
            i += 1;
        }
    }
    for (k, &s) in starts.iter().enumerate() {
        let mut end = match starts.get(k + 1) {
            Some(&next) => next - 3,
            None => d.len(),
        };
        // Trailing zero bytes belong to the next (4-byte) start code or are trailing_zero_8bits.
        while end > s && d[end - 1] == 0 {
            end -= 1;
        }
        if end > s {
            out.push(data.slice(s..end));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_3_and_4_byte_start_codes() {
        let data = Bytes::from_static(&[
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 0, 1, 0x65, 4, 5, 6, 0, 0,
        ]);
        let nals = split_nal_units(&data);
        assert_eq!(nals.len(), 3);
        assert_eq!(&nals[0][..], &[0x67, 1, 2]);
        assert_eq!(&nals[1][..], &[0x68, 3]);
        assert_eq!(&nals[2][..], &[0x65, 4, 5, 6]);
    }

    #[test]
    fn keeps_emulation_prevention_and_skips_garbage() {
        let data = Bytes::from_static(&[9, 9, 0, 0, 1, 0x41, 0, 0, 3, 1, 7, 0, 0, 1]);
        let nals = split_nal_units(&data);
        assert_eq!(nals.len(), 1);
        assert_eq!(&nals[0][..], &[0x41, 0, 0, 3, 1, 7]);
    }

    #[test]
    fn empty_and_no_start_code() {
        assert!(split_nal_units(&Bytes::new()).is_empty());
        assert!(split_nal_units(&Bytes::from_static(&[1, 2, 3, 4, 5])).is_empty());
    }

    #[test]
    fn start_code_after_skip_heuristic() {
        // 0x02 right before a start code must not make us miss it.
        let data = Bytes::from_static(&[0, 0, 1, 0x61, 2, 0, 0, 1, 0x62, 5]);
        let nals = split_nal_units(&data);
        assert_eq!(nals.len(), 2);
        assert_eq!(&nals[1][..], &[0x62, 5]);
    }
}

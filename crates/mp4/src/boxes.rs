//! A tiny ISO-BMFF box writer: big-endian fields into a `Vec<u8>`, box sizes back-patched when a
//! box is closed, and the header boxes both MP4 layouts write (`mvhd`, `tkhd`, `mdhd`, `hdlr`,
//! `dinf`): the fragmented segments ([`crate::write`], version 0, no duration) and the virtual
//! progressive MP4 ([`crate::progressive`], version 1, 64-bit durations).

/// Writes nested boxes into a buffer. `start*` opens a box (size placeholder), `end` closes the
/// innermost open box and patches its 32-bit size.
///
/// [`BoxWriter::outside`] declares bytes that belong to the box stream at the current position
/// but are not in the buffer (the lazily generated tables of the virtual progressive MP4):
/// enclosing boxes count them in their sizes.
#[derive(Debug, Default)]
pub struct BoxWriter {
    buf: Vec<u8>,
    /// Open boxes: (position of the size field in `buf`, virtual offset of the box start).
    open: Vec<(usize, u64)>,
    /// Bytes declared with [`BoxWriter::outside`] so far.
    outside: u64,
}

impl BoxWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(cap: usize) -> Self {
        BoxWriter {
            buf: Vec::with_capacity(cap),
            open: Vec::new(),
            outside: 0,
        }
    }

    /// Opens a plain box.
    pub fn start(&mut self, fourcc: &[u8; 4]) -> &mut Self {
        self.open.push((self.buf.len(), self.virtual_len()));
        self.buf.extend_from_slice(&[0, 0, 0, 0]);
        self.buf.extend_from_slice(fourcc);
        self
    }

    /// Opens a full box (version + 24-bit flags).
    pub fn start_full(&mut self, fourcc: &[u8; 4], version: u8, flags: u32) -> &mut Self {
        self.start(fourcc);
        self.u32((u32::from(version) << 24) | (flags & 0x00ff_ffff))
    }

    /// Closes the innermost open box. Boxes written here are small (headers, tables); a box
    /// larger than 4 GiB gets its size saturated, which callers avoid by construction.
    pub fn end(&mut self) -> &mut Self {
        if let Some((pos, start)) = self.open.pop() {
            let size = u32::try_from(self.virtual_len() - start).unwrap_or(u32::MAX);
            self.patch_u32(pos, size);
        }
        self
    }

    /// Declares `n` bytes at the current position that live outside the buffer.
    pub fn outside(&mut self, n: u64) -> &mut Self {
        self.outside += n;
        self
    }

    /// Length of the box stream so far: the buffer plus the bytes declared outside.
    pub fn virtual_len(&self) -> u64 {
        self.buf.len() as u64 + self.outside
    }

    /// Writes a whole box with `body` as its content.
    pub fn boxed(&mut self, fourcc: &[u8; 4], body: impl FnOnce(&mut Self)) -> &mut Self {
        self.start(fourcc);
        body(self);
        self.end()
    }

    /// Writes a whole full box with `body` as its content.
    pub fn full_boxed(
        &mut self,
        fourcc: &[u8; 4],
        version: u8,
        flags: u32,
        body: impl FnOnce(&mut Self),
    ) -> &mut Self {
        self.start_full(fourcc, version, flags);
        body(self);
        self.end()
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.buf.resize(self.buf.len() + n, 0);
        self
    }
    /// A string prefixed by its length as a big-endian u16 (truncated to 65535 bytes at a char
    /// boundary).
    pub fn str16(&mut self, s: &str) -> &mut Self {
        let mut end = s.len().min(u16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(end as u16).bytes(&s.as_bytes()[..end])
    }

    /// The unity matrix used by `mvhd` and `tkhd`.
    pub fn unity_matrix(&mut self) -> &mut Self {
        for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
            self.u32(v);
        }
        self
    }

    pub fn patch_u32(&mut self, pos: usize, v: u32) {
        if let Some(dst) = self.buf.get_mut(pos..pos + 4) {
            dst.copy_from_slice(&v.to_be_bytes());
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Returns the buffer. All boxes must have been closed.
    pub fn into_inner(self) -> Vec<u8> {
        debug_assert!(self.open.is_empty(), "unclosed boxes");
        self.buf
    }
}

/// The 90 kHz timescale every Vigie track uses.
const TIMESCALE: u32 = crate::write::TIMESCALE;

/// Creation and modification times (0: unknown), then `timescale` and `duration_90k`, in the
/// width `version` gives them (0: 32-bit, 1: 64-bit). `extra_u32` sits between the times and
/// the duration in `tkhd` (track id, reserved), not in `mvhd`/`mdhd`.
fn times(w: &mut BoxWriter, version: u8, middle: &[u32], duration_90k: u64) {
    if version == 1 {
        w.u64(0).u64(0);
    } else {
        w.u32(0).u32(0);
    }
    for &m in middle {
        w.u32(m);
    }
    if version == 1 {
        w.u64(duration_90k);
    } else {
        w.u32(u32::try_from(duration_90k).unwrap_or(u32::MAX));
    }
}

/// `mvhd`: movie header.
pub(crate) fn write_mvhd(w: &mut BoxWriter, version: u8, duration_90k: u64, next_track_id: u32) {
    w.full_boxed(b"mvhd", version, 0, |w| {
        times(w, version, &[TIMESCALE], duration_90k);
        w.u32(0x0001_0000).u16(0x0100).zeros(10); // rate, volume, reserved
        w.unity_matrix().zeros(24).u32(next_track_id);
    });
}

/// `tkhd`: track header (`flags`: enabled 1, in movie 2, in preview 4).
pub(crate) fn write_tkhd(
    w: &mut BoxWriter,
    version: u8,
    flags: u32,
    track_id: u32,
    duration_90k: u64,
    (width, height): (u16, u16),
) {
    w.full_boxed(b"tkhd", version, flags, |w| {
        times(w, version, &[track_id, 0], duration_90k); // track id, reserved
        w.zeros(8).u16(0).u16(0).u16(0).u16(0); // reserved, layer, group, volume, reserved
        w.unity_matrix();
        w.u32(u32::from(width) << 16).u32(u32::from(height) << 16);
    });
}

/// `mdhd` (language `und`) and `hdlr` (`handler`, NUL-terminated `name`).
pub(crate) fn write_mdhd_hdlr(
    w: &mut BoxWriter,
    version: u8,
    duration_90k: u64,
    handler: &[u8; 4],
    name: &[u8],
) {
    w.full_boxed(b"mdhd", version, 0, |w| {
        times(w, version, &[TIMESCALE], duration_90k);
        w.u16(0x55c4).u16(0); // 'und'
    });
    w.full_boxed(b"hdlr", 0, 0, |w| {
        w.u32(0).bytes(handler).zeros(12).bytes(name);
    });
}

/// `dinf` with one self-contained `url ` entry.
pub(crate) fn write_dinf(w: &mut BoxWriter) {
    w.boxed(b"dinf", |w| {
        w.full_boxed(b"dref", 0, 0, |w| {
            w.u32(1).full_boxed(b"url ", 0, 1, |_| {});
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_sizes_are_patched() {
        let mut w = BoxWriter::new();
        w.boxed(b"moov", |w| {
            w.full_boxed(b"mvhd", 1, 0x20000, |w| {
                w.u32(7);
            });
        });
        let b = w.into_inner();
        assert_eq!(b.len(), 8 + 16);
        assert_eq!(&b[0..8], &[0, 0, 0, 24, b'm', b'o', b'o', b'v']);
        assert_eq!(
            &b[8..20],
            &[0, 0, 0, 16, b'm', b'v', b'h', b'd', 1, 2, 0, 0]
        );
    }

    #[test]
    fn outside_bytes_count_in_enclosing_sizes() {
        let mut w = BoxWriter::new();
        w.boxed(b"moov", |w| {
            w.boxed(b"stsz", |w| {
                w.u32(1).outside(100);
            });
            w.u8(9);
        });
        assert_eq!(w.virtual_len(), 8 + 8 + 4 + 100 + 1);
        let b = w.into_inner();
        assert_eq!(b.len(), 8 + 8 + 4 + 1);
        assert_eq!(u32::from_be_bytes(b[0..4].try_into().unwrap()), 121);
        assert_eq!(u32::from_be_bytes(b[8..12].try_into().unwrap()), 112);
    }
}

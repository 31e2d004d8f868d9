//! Writing a Vigie segment file: a fragmented MP4 made of an init segment (`ftyp` + `moov`), then
//! one `moof` + `mdat` per fragment, then (when the segment is closed cleanly or recovered) a
//! trailer box holding the wall-clock duration and the end reason.
//!
//! Vigie's own metadata lives in two `uuid` boxes that players skip:
//! * [`META_UUID`] inside `moov`: camera, stream, segment id, wall-clock start, session id, codec
//!   string and pixel aspect ratio (everything needed to rebuild the index from the file alone);
//! * [`TRAILER_UUID`] at the top level after the last fragment: wall duration and end reason.

use vigie_core::VideoParams;

use crate::boxes::{BoxWriter, write_dinf, write_mdhd_hdlr, write_mvhd, write_tkhd};

/// `uuid` user type of the Vigie metadata box inside `moov`.
pub const META_UUID: [u8; 16] = *b"vigie-seg-meta-1";
/// `uuid` user type of the Vigie trailer box written when a segment is closed.
pub const TRAILER_UUID: [u8; 16] = *b"vigie-seg-close1";
/// Media timescale of every Vigie track.
pub const TIMESCALE: u32 = 90_000;
/// The only track's id.
pub const TRACK_ID: u32 = 1;

/// Sample flags of a sync (key) sample: `sample_depends_on = 2` (depends on no other).
pub const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// Sample flags of a non-sync sample: `sample_depends_on = 1`, `sample_is_non_sync_sample = 1`.
pub const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;

const META_VERSION: u8 = 1;
const TRAILER_VERSION: u8 = 1;

/// What makes a segment file self-describing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentMeta {
    pub camera: String,
    pub stream: String,
    pub segment_id: u64,
    /// Wall-clock start of the segment, 90 kHz units since the Unix epoch.
    pub start_90k: i64,
    /// RTSP session the frames came from (segments of one session are contiguous).
    pub session_id: u64,
}

/// Written after the last fragment when a segment is closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentTrailer {
    /// Wall-clock duration (media duration slewed toward the host clock, see vigie-store).
    pub wall_duration_90k: i64,
    pub end_reason: String,
}

/// One sample (frame) of a fragment.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SampleInfo {
    pub duration_90k: u32,
    pub bytes: u32,
    pub is_key: bool,
}

impl SampleInfo {
    pub fn flags(&self) -> u32 {
        if self.is_key {
            SYNC_SAMPLE_FLAGS
        } else {
            NON_SYNC_SAMPLE_FLAGS
        }
    }
}

fn write_ftyp(w: &mut BoxWriter) {
    w.boxed(b"ftyp", |w| {
        w.bytes(b"iso6")
            .u32(0)
            .bytes(b"iso6")
            .bytes(b"isom")
            .bytes(b"mp41")
            .bytes(b"avc1");
    });
}

/// The init segment: `ftyp` + `moov` with one video track whose `stsd` holds
/// `params.sample_entry` verbatim, `mvex`/`trex`, and the Vigie metadata box.
pub fn init_segment(params: &VideoParams, meta: &SegmentMeta) -> Vec<u8> {
    let mut w = BoxWriter::with_capacity(768 + params.sample_entry.len());
    write_ftyp(&mut w);
    w.boxed(b"moov", |w| {
        write_mvhd(w, 0, 0, TRACK_ID + 1);
        w.boxed(b"trak", |w| {
            write_tkhd(w, 0, 0x7, TRACK_ID, 0, (params.width, params.height));
            w.boxed(b"mdia", |w| {
                write_mdhd_hdlr(w, 0, 0, b"vide", b"VideoHandler\0");
                w.boxed(b"minf", |w| {
                    w.full_boxed(b"vmhd", 0, 1, |w| {
                        w.zeros(8);
                    });
                    write_dinf(w);
                    w.boxed(b"stbl", |w| {
                        w.full_boxed(b"stsd", 0, 0, |w| {
                            w.u32(1).bytes(&params.sample_entry);
                        });
                        w.full_boxed(b"stts", 0, 0, |w| {
                            w.u32(0);
                        });
                        w.full_boxed(b"stsc", 0, 0, |w| {
                            w.u32(0);
                        });
                        w.full_boxed(b"stsz", 0, 0, |w| {
                            w.u32(0).u32(0);
                        });
                        w.full_boxed(b"stco", 0, 0, |w| {
                            w.u32(0);
                        });
                    });
                });
            });
        });
        w.boxed(b"mvex", |w| {
            w.full_boxed(b"trex", 0, 0, |w| {
                w.u32(TRACK_ID).u32(1).u32(0).u32(0).u32(0);
            });
        });
        w.boxed(b"uuid", |w| {
            w.bytes(&META_UUID).u8(META_VERSION);
            w.u64(meta.segment_id)
                .i64(meta.start_90k)
                .u64(meta.session_id);
            w.u32(params.pixel_aspect_ratio.0)
                .u32(params.pixel_aspect_ratio.1);
            w.str16(&meta.camera)
                .str16(&meta.stream)
                .str16(&params.rfc6381_codec);
        });
    });
    w.into_inner()
}

/// Length of the `mdat` header for a payload of `payload_len` bytes (8, or 16 with largesize).
pub fn mdat_header_len(payload_len: u64) -> usize {
    if payload_len + 8 > u64::from(u32::MAX) {
        16
    } else {
        8
    }
}

/// `moof` (mfhd, traf(tfhd default-base-is-moof, tfdt v1, trun)) followed by the `mdat` header
/// for `samples`. The caller writes the sample bytes right after it, in order.
pub fn fragment_header(
    sequence: u32,
    base_media_decode_time_90k: u64,
    samples: &[SampleInfo],
) -> Vec<u8> {
    let payload: u64 = samples.iter().map(|s| u64::from(s.bytes)).sum();
    let mut w = BoxWriter::with_capacity(120 + 12 * samples.len());
    w.start(b"moof");
    w.full_boxed(b"mfhd", 0, 0, |w| {
        w.u32(sequence);
    });
    let mut data_offset_pos = 0;
    w.boxed(b"traf", |w| {
        w.full_boxed(b"tfhd", 0, 0x02_0000, |w| {
            w.u32(TRACK_ID);
        });
        w.full_boxed(b"tfdt", 1, 0, |w| {
            w.u64(base_media_decode_time_90k);
        });
        // data-offset, sample-duration, sample-size, sample-flags present.
        w.full_boxed(b"trun", 0, 0x0701, |w| {
            w.u32(samples.len() as u32);
            data_offset_pos = w.len();
            w.i32(0);
            for s in samples {
                w.u32(s.duration_90k).u32(s.bytes).u32(s.flags());
            }
        });
    });
    w.end();
    let moof_len = w.len();
    let hdr = mdat_header_len(payload);
    w.patch_u32(data_offset_pos, (moof_len + hdr) as u32);
    if hdr == 8 {
        w.u32((payload + 8) as u32).bytes(b"mdat");
    } else {
        w.u32(1).bytes(b"mdat").u64(payload + 16);
    }
    w.into_inner()
}

/// The trailer box written after the last fragment of a closed segment.
pub fn trailer_box(t: &SegmentTrailer) -> Vec<u8> {
    let mut w = BoxWriter::with_capacity(64 + t.end_reason.len());
    w.boxed(b"uuid", |w| {
        w.bytes(&TRAILER_UUID)
            .u8(TRAILER_VERSION)
            .i64(t.wall_duration_90k)
            .str16(&t.end_reason);
    });
    w.into_inner()
}

/// The `prft` (producer reference time) box: wall clock of the fragment's first sample, as an
/// NTP timestamp, with its media time. Optional; players ignore it.
pub fn prft_box(wall_90k: i64, media_time_90k: u64) -> Vec<u8> {
    // NTP epoch is 1900-01-01: 2_208_988_800 s before the Unix epoch.
    let secs = wall_90k.div_euclid(90_000) + 2_208_988_800;
    let frac = ((wall_90k.rem_euclid(90_000) as u64) << 32) / 90_000;
    let ntp = ((secs.max(0) as u64) << 32) | frac;
    let mut w = BoxWriter::with_capacity(32);
    w.full_boxed(b"prft", 1, 0, |w| {
        w.u32(TRACK_ID).u64(ntp).u64(media_time_90k);
    });
    w.into_inner()
}

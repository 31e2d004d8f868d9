//! ISO-BMFF (MP4) for Vigie, hand-written because it is the product's core format.
//!
//! * [`boxes`]: [`BoxWriter`], a small big-endian box writer with size back-patching;
//! * [`write`]: the self-describing fragmented segment file — [`init_segment`] (`ftyp` + `moov`
//!   with the stream's sample entry and a Vigie metadata `uuid` box), [`fragment_header`]
//!   (`moof` + the `mdat` header; the caller writes the frames' bytes after it without copying),
//!   [`trailer_box`] (wall duration and end reason of a closed segment);
//! * [`progressive`]: the virtual progressive MP4 for any time range ([`progressive::build`]):
//!   `moov` built from the index, `mdat` as byte ranges of the segment files;
//! * [`parse`]: a tolerant reader for crash recovery and reindexing that never panics and reports
//!   where the last complete fragment ends.
//!
//! Does not own: files, durability or the index (vigie-store); RTSP (vigie-ingest).

pub mod boxes;
pub mod parse;
pub mod progressive;
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod testutil;
pub mod write;

pub use boxes::BoxWriter;
pub use parse::{ParsedFragment, ParsedInit, ParsedSegment, parse_segment, parse_segment_bytes};
pub use write::{
    SampleInfo, SegmentMeta, SegmentTrailer, fragment_header, init_segment, mdat_header_len,
    prft_box, trailer_box,
};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod progressive_tests;

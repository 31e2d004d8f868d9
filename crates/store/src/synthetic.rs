//! Synthetic index entries (no files) for benchmarks and tests of playback planning: inserts
//! segments with realistic sample and fragment tables straight into the index.

use vigie_core::{StreamKey, Time90k, VideoParams};
use vigie_mp4::SampleInfo;

use crate::index::SegmentEntry;
use crate::sampletable::{FragmentLoc, FragmentTableEncoder, SampleTableEncoder};
use crate::{Store, StoreError};

/// A segment to index without writing its file.
#[derive(Clone, Debug)]
pub struct SyntheticSegment {
    pub start: Time90k,
    /// Wall duration; `None` = the media duration.
    pub wall_duration_90k: Option<i64>,
    pub samples: Vec<SampleInfo>,
    /// Samples per fragment (the last fragment takes the rest).
    pub samples_per_fragment: u32,
    /// `moof` + `mdat` header length of each fragment.
    pub fragment_header_len: u32,
    pub init_len: u32,
    pub session_id: u64,
}

/// Pre-encoded tables of a [`SyntheticSegment`], reusable for many inserts.
#[derive(Clone, Debug)]
pub struct EncodedSynthetic {
    template: SegmentEntry,
}

impl Store {
    /// Encodes `seg` once for [`Store::insert_synthetic`] (params stored in the index).
    #[doc(hidden)]
    pub fn encode_synthetic(
        &self,
        key: &StreamKey,
        params: &VideoParams,
        seg: &SyntheticSegment,
    ) -> Result<EncodedSynthetic, StoreError> {
        self.encode_synthetic_as(key, params, seg, false)
    }

    /// [`Store::encode_synthetic`] with the sample table in the journal form (v1), as entries
    /// written before index format 3 hold it: benchmarks compare the two, tests read old
    /// entries.
    #[doc(hidden)]
    pub fn encode_synthetic_v1(
        &self,
        key: &StreamKey,
        params: &VideoParams,
        seg: &SyntheticSegment,
    ) -> Result<EncodedSynthetic, StoreError> {
        self.encode_synthetic_as(key, params, seg, true)
    }

    fn encode_synthetic_as(
        &self,
        key: &StreamKey,
        params: &VideoParams,
        seg: &SyntheticSegment,
        journal_form: bool,
    ) -> Result<EncodedSynthetic, StoreError> {
        let stream_id = self.inner.index()?.stream_id(key)?;
        let params_id = self.inner.index()?.put_params(params)?;
        let mut frags = FragmentTableEncoder::default();
        let mut end = u64::from(seg.init_len);
        for group in seg.samples.chunks(seg.samples_per_fragment.max(1) as usize) {
            let loc = FragmentLoc {
                offset: end,
                header_len: seg.fragment_header_len,
                samples: group.len() as u32,
            };
            frags.push(end, &loc);
            end += u64::from(seg.fragment_header_len)
                + group.iter().map(|s| u64::from(s.bytes)).sum::<u64>();
        }
        let media: i64 = seg.samples.iter().map(|s| i64::from(s.duration_90k)).sum();
        let table = SampleTableEncoder::of(&seg.samples);
        Ok(EncodedSynthetic {
            template: SegmentEntry {
                head: crate::index::EntryHead {
                    id: 0,
                    stream_id,
                    start_90k: seg.start.0,
                    wall_duration_90k: seg.wall_duration_90k.unwrap_or(media),
                    media_duration_90k: media,
                    bytes: end,
                    frames: seg.samples.len() as u32,
                    key_frames: seg.samples.iter().filter(|s| s.is_key).count() as u32,
                    width: params.width,
                    height: params.height,
                    codec: params.codec,
                    params_id,
                    session_id: seg.session_id,
                    open: false,
                    end_reason: Some("rotation".into()),
                    counts: crate::sampletable::counts(&table, &frags),
                },
                init_len: seg.init_len,
                sample_table: if journal_form {
                    table.buf
                } else {
                    table.packed_prefix(table.buf.len())
                },
                fragment_table: if journal_form {
                    frags.buf
                } else {
                    frags.packed_prefix(frags.buf.len())
                },
            },
        })
    }

    /// Inserts one index entry from `enc`, starting at `start`; returns the segment id.
    #[doc(hidden)]
    pub fn insert_synthetic(
        &self,
        enc: &EncodedSynthetic,
        start: Time90k,
    ) -> Result<u64, StoreError> {
        let mut e = enc.template.clone();
        e.id = self.inner.alloc_segment_id()?;
        e.start_90k = start.0;
        self.inner.index()?.put_segment(&e)?;
        Ok(e.id)
    }

    /// Inserts one index entry per `(template, start)` in one sled batch per tree (benchmarks
    /// generating millions of entries); returns the segment ids, in order.
    #[doc(hidden)]
    pub fn insert_synthetic_many(
        &self,
        items: &[(&EncodedSynthetic, Time90k)],
    ) -> Result<Vec<u64>, StoreError> {
        let index = self.inner.index()?;
        let (mut segs, mut by_id) = (sled::Batch::default(), sled::Batch::default());
        let mut ids = Vec::with_capacity(items.len());
        for (enc, start) in items {
            let mut e = enc.template.clone();
            e.id = self
                .inner
                .next_segment_id
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            e.start_90k = start.0;
            let key = crate::index::seg_key(e.stream_id, e.start_90k, e.id);
            segs.insert(&key[..], postcard::to_allocvec(&e)?);
            by_id.insert(
                &e.id.to_be_bytes()[..],
                &crate::index::ByIdRow::encode(&key, e.bytes, e.open)[..],
            );
            ids.push(e.id);
        }
        index.segments.apply_batch(segs)?;
        index.by_id.apply_batch(by_id)?;
        if let Some(last) = ids.last() {
            index.set_next_segment_id(last + 1)?;
        }
        Ok(ids)
    }

    /// Where the file of a synthetic segment lives, and its indexed length (to create it).
    #[doc(hidden)]
    pub fn synthetic_file(
        &self,
        key: &StreamKey,
        enc: &EncodedSynthetic,
        id: u64,
        start: Time90k,
    ) -> (std::path::PathBuf, u64) {
        (
            self.inner.layout.segment_path(key, id, start),
            enc.template.bytes,
        )
    }

    /// Flushes the index to disk (benchmarks: before timing reads).
    #[doc(hidden)]
    pub fn flush_index(&self) -> Result<(), StoreError> {
        self.inner.index()?.db.flush()?;
        Ok(())
    }
}

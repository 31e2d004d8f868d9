//! Synthetic index entries for benchmarks and tests of playback planning: inserts segments with
//! realistic sample and fragment tables straight into the index, and creates their files as
//! sparse files (with the tables box when the tables are in the file, index format 4).

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
    /// Tables in the file (index format 4): the bytes the file holds after its last fragment
    /// (tables box, close trailer) and where they start.
    tail: Option<(u64, Vec<u8>)>,
}

/// Where a synthetic segment's tables go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tables {
    /// Journal form in the entry (indexes written before format 3).
    JournalInEntry,
    /// Packed in the entry (format 3; open segments and recovered ones since).
    PackedInEntry,
    /// Packed in the segment file, the entry refers to them (what the writer does since
    /// format 4).
    InFile,
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
        self.encode_synthetic_as(key, params, seg, Tables::InFile)
    }

    /// [`Store::encode_synthetic`] with the packed tables in the index entry, as entries
    /// written with index format 3 hold them.
    #[doc(hidden)]
    pub fn encode_synthetic_inline(
        &self,
        key: &StreamKey,
        params: &VideoParams,
        seg: &SyntheticSegment,
    ) -> Result<EncodedSynthetic, StoreError> {
        self.encode_synthetic_as(key, params, seg, Tables::PackedInEntry)
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
        self.encode_synthetic_as(key, params, seg, Tables::JournalInEntry)
    }

    fn encode_synthetic_as(
        &self,
        key: &StreamKey,
        params: &VideoParams,
        seg: &SyntheticSegment,
        tables: Tables,
    ) -> Result<EncodedSynthetic, StoreError> {
        let journal_form = tables == Tables::JournalInEntry;
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
        let media_end = end;
        let mut tail = None;
        let mut sample_table = if journal_form {
            table.buf.clone()
        } else {
            table.packed_prefix(table.buf.len())
        };
        let mut fragment_table = if journal_form {
            frags.buf.clone()
        } else {
            frags.packed_prefix(frags.buf.len())
        };
        if tables == Tables::InFile
            && let Some((mut bytes, r)) =
                crate::filetables::tables_box(media_end, &sample_table, &fragment_table)
        {
            bytes.extend(vigie_mp4::trailer_box(&vigie_mp4::SegmentTrailer {
                wall_duration_90k: seg.wall_duration_90k.unwrap_or(media),
                end_reason: "rotation".into(),
            }));
            end = media_end + bytes.len() as u64;
            tail = Some((media_end, bytes));
            sample_table = r;
            fragment_table = Vec::new();
        }
        Ok(EncodedSynthetic {
            tail,
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
                sample_table,
                fragment_table,
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

    /// Inserts one index entry per `(template, start)` in one sled batch per tree, grouped by block (benchmarks
    /// generating millions of entries); returns the segment ids, in order.
    #[doc(hidden)]
    pub fn insert_synthetic_many(
        &self,
        items: &[(&EncodedSynthetic, Time90k)],
    ) -> Result<Vec<u64>, StoreError> {
        let index = self.inner.index()?;
        let mut ids = Vec::with_capacity(items.len());
        let mut entries = Vec::with_capacity(items.len());
        for (enc, start) in items {
            let mut e = enc.template.clone();
            e.id = self
                .inner
                .next_segment_id
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            e.start_90k = start.0;
            ids.push(e.id);
            entries.push(e);
        }
        index.put_segments_bulk(&entries)?;
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

    /// Creates the file of a synthetic segment: a sparse file of its indexed length (no media
    /// bytes) and, when `with_tables`, the tables box and trailer at its end, which playback
    /// reads (start-up and verification read only the length: benchmarks of those may leave
    /// them as a hole). Returns the path.
    #[doc(hidden)]
    pub fn create_synthetic_file(
        &self,
        key: &StreamKey,
        enc: &EncodedSynthetic,
        id: u64,
        start: Time90k,
        with_tables: bool,
    ) -> Result<std::path::PathBuf, StoreError> {
        use std::os::unix::fs::FileExt;
        let (path, bytes) = self.synthetic_file(key, enc, id, start);
        let f = std::fs::File::create(&path).map_err(StoreError::io("creating", &path))?;
        f.set_len(bytes).map_err(StoreError::io("sizing", &path))?;
        if with_tables && let Some((at, tail)) = &enc.tail {
            f.write_all_at(tail, *at)
                .map_err(StoreError::io("writing", &path))?;
        }
        Ok(path)
    }

    /// Flushes the index to disk (benchmarks: before timing reads).
    #[doc(hidden)]
    pub fn flush_index(&self) -> Result<(), StoreError> {
        self.inner.index()?.db.flush()?;
        Ok(())
    }
}

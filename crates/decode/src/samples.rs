//! Reading a recorded range's samples back from the segment files, in presentation order, for
//! the pipelines that re-encode a range (the burned-in copy of an export, the H.264 fallback).
//!
//! Owns: walking a [`vigie_mp4::progressive::Input`]'s chunks, one read per chunk (the file of
//! the previous chunk kept open), and handing each sample out as a zero-copy slice with its
//! presentation time. Does not own what is done with the samples (caps, encoders, pacing).

use std::os::unix::fs::FileExt;

use bytes::Bytes;
use vigie_mp4::SampleInfo;
use vigie_mp4::progressive::Input;

use crate::StillError;

/// One sample of the range.
pub(crate) struct Sample<'a> {
    /// Index of the sample description (codec parameters) the sample uses.
    pub description: u32,
    pub info: &'a SampleInfo,
    /// The access unit as stored (length-prefixed NAL units).
    pub data: Bytes,
    /// Presentation time from the start of the range's first sample, 90 kHz.
    pub pts_90k: u64,
}

/// Calls `each` with every sample of `input` in order; stops at the first error (of a read or
/// of `each`).
pub(crate) fn for_each_sample(
    input: &Input,
    mut each: impl FnMut(Sample<'_>) -> Result<(), StillError>,
) -> Result<(), StillError> {
    let mut pts_90k = 0u64;
    let mut open: Option<(u32, std::fs::File)> = None;
    for chunk in &input.chunks {
        let path = input
            .files
            .get(chunk.file as usize)
            .ok_or_else(|| StillError::Params(format!("no file #{}", chunk.file)))?;
        let io = |source| StillError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = match open {
            Some((f, ref file)) if f == chunk.file => file,
            _ => {
                let file = std::fs::File::open(path).map_err(io)?;
                &open.insert((chunk.file, file)).1
            }
        };
        let first = chunk.first_sample as usize;
        let samples = input
            .samples
            .get(first..first + chunk.samples as usize)
            .ok_or_else(|| StillError::Params("chunk outside the sample list".into()))?;
        let len: u64 = samples.iter().map(|s| u64::from(s.bytes)).sum();
        let mut data = vec![0u8; len as usize];
        file.read_exact_at(&mut data, chunk.offset).map_err(io)?;
        let data = Bytes::from(data);
        let mut at = 0usize;
        for info in samples {
            let end = at + info.bytes as usize;
            each(Sample {
                description: chunk.description,
                info,
                data: data.slice(at..end),
                pts_90k,
            })?;
            at = end;
            pts_90k += u64::from(info.duration_90k);
        }
    }
    Ok(())
}

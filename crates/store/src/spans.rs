//! Spans of continuous recording: merging segments into spans (one rule, with
//! [`SPAN_MERGE_TOLERANCE_90K`]) and the gaps between them. Used by listings, playback plans
//! and exports; owns no I/O.

use serde::Serialize;
use vigie_core::Time90k;

use crate::SegmentInfo;

/// A stretch of continuous recording.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Span {
    pub start: Time90k,
    pub end: Time90k,
}

/// Segments closer than this are merged into one span (covers jitter of the start estimate after
/// a timestamp jump; any real gap is longer).
pub const SPAN_MERGE_TOLERANCE_90K: i64 = 9_000;

/// Builds spans from segments given one at a time in start order (listings stream the index
/// through it: memory bounded by the spans, not the segments).
#[derive(Debug)]
pub struct SpanMerger {
    start: Time90k,
    end: Time90k,
    out: Vec<Span>,
}

impl SpanMerger {
    /// Spans clipped to [start, end).
    pub fn new(start: Time90k, end: Time90k) -> Self {
        SpanMerger {
            start,
            end,
            out: Vec::new(),
        }
    }

    /// Adds the segment [seg_start, seg_end).
    pub fn push(&mut self, seg_start: Time90k, seg_end: Time90k) {
        let (a, b) = (seg_start.max(self.start), seg_end.min(self.end));
        if b <= a {
            return;
        }
        match self.out.last_mut() {
            Some(last) if a.0 <= last.end.0 + SPAN_MERGE_TOLERANCE_90K => {
                last.end = last.end.max(b)
            }
            _ => self.out.push(Span { start: a, end: b }),
        }
    }

    pub fn finish(self) -> Vec<Span> {
        self.out
    }
}

/// Merges segments (sorted by start) into spans clipped to [start, end).
pub fn merge_spans(segments: &[SegmentInfo], start: Time90k, end: Time90k) -> Vec<Span> {
    let mut m = SpanMerger::new(start, end);
    for s in segments {
        m.push(s.start, s.end());
    }
    m.finish()
}

/// Merges (start, end) pairs sorted by start into spans clipped to [start, end).
pub fn merge_ranges(
    ranges: impl Iterator<Item = (Time90k, Time90k)>,
    start: Time90k,
    end: Time90k,
) -> Vec<Span> {
    let mut m = SpanMerger::new(start, end);
    for (a, b) in ranges {
        m.push(a, b);
    }
    m.finish()
}

/// Parts of `[start, end)` not covered by `spans` (sorted, inside the window).
pub fn gaps(spans: &[Span], start: Time90k, end: Time90k) -> Vec<(Time90k, Time90k)> {
    let mut out = Vec::new();
    let mut t = start;
    for s in spans {
        if s.start > t {
            out.push((t, s.start.min(end)));
        }
        t = t.max(s.end);
    }
    if t < end {
        out.push((t, end));
    }
    out
}

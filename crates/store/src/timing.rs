//! Wall-clock time of segments.
//!
//! * **Start of a run** (first segment of a session, or after a gap): the minimum over the
//!   segment's first fragment of `recv − (media_90k − first media_90k)`. Each term is "when the
//!   first frame would have been received had this frame arrived without delay"; receive
//!   buffering only ever makes a frame late, so the minimum cancels it.
//! * **Within a run** segments are contiguous: the next segment starts exactly where the
//!   previous one ends (`start + duration_90k`).
//! * **Drift**: the camera's clock (RTP timestamps) and the host's (NTP) disagree slightly. Each
//!   segment's host-clock estimate of its start (the same minimum, over all its frames) is
//!   compared with its contiguous start; the wall duration is the media duration corrected by
//!   that error, but by at most ±500 ppm of the media duration (±30 ms per minute). So the
//!   wall-clock timeline follows the host clock in the long run without ever jumping, and a
//!   single late burst of frames cannot move it by more than the bound.

/// Bound of the slew, in parts per million of the media duration.
pub const MAX_SLEW_PPM: i64 = 500;

/// Tracks `min(recv − (media − first_media_90k))` over a segment's frames.
#[derive(Copy, Clone, Debug)]
pub struct StartEstimator {
    first_media_90k: i64,
    min: i64,
}

impl StartEstimator {
    pub fn new(first_media_90k: i64, first_recv: i64) -> Self {
        StartEstimator {
            first_media_90k,
            min: first_recv,
        }
    }
    pub fn observe(&mut self, media: i64, recv: i64) {
        self.min = self
            .min
            .min(recv.saturating_sub(media.saturating_sub(self.first_media_90k)));
    }
    pub fn estimate(&self) -> i64 {
        self.min
    }
}

/// Wall duration of a segment that starts at `start` (contiguous or estimated), whose host-clock
/// start estimate is `estimated_start`, and whose frames last `media_duration` in RTP time.
pub fn wall_duration(start: i64, estimated_start: i64, media_duration: i64) -> i64 {
    let bound = media_duration.saturating_mul(MAX_SLEW_PPM) / 1_000_000;
    let err = estimated_start.saturating_sub(start);
    media_duration.saturating_add(err.clamp(-bound, bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimator_cancels_buffering() {
        // Frames every 3600 ticks, the first three delivered late in a burst.
        let mut e = StartEstimator::new(1000, 50_000);
        e.observe(4600, 50_010);
        e.observe(8200, 50_020);
        e.observe(11_800, 50_000 + 3 * 3600 - 9_000);
        assert_eq!(e.estimate(), 50_000 - 9_000);
    }

    #[test]
    fn slew_is_bounded() {
        let minute = 60 * vigie_core::TIME_UNITS_PER_SEC;
        assert_eq!(wall_duration(0, 0, minute), minute);
        assert_eq!(wall_duration(0, 100, minute), minute + 100);
        assert_eq!(wall_duration(0, 1_000_000, minute), minute + 2_700);
        assert_eq!(wall_duration(0, -1_000_000, minute), minute - 2_700);
    }
}

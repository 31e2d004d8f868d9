//! The simulated recording card (SD card) of a mount, for ONVIF Profile G replay.
//!
//! A mount with a card ([`crate::MountConfig::with_card`]) records continuously from the moment
//! the server starts, whatever happens to its live sessions (a stall, a refusal or dropped
//! sessions cut the live stream, not the card), keeping the last `capacity` of footage: so the
//! card holds what the live stream did not deliver during a fault. Its content is the mount's
//! fixture, looped.
//!
//! Replay (RTSP `PLAY` with `Require: onvif-replay` and `Range: clock=START-END`, see
//! `session`): the camera answers with the range it can serve, clipped to the card's coverage,
//! and sends the frames at wall-clock instants `START + k × frame duration` that lie entirely
//! in the range (`START + (k + 1) × duration ≤ END`), so a replay of a gap never overlaps the
//! footage after it. Simplification (documented in the crate README): the card's frame grid
//! is anchored at the requested start and its first frame is a key frame (the fixture's first
//! frame), so a replayed range starts decodable exactly where it was asked — a real camera
//! starts on the I-frame at or before START, which [`Card::from_key_frame_before`]
//! (`MountConfig::with_card_from_key_frame_before`) simulates: one grid from the card's start,
//! replay from the key frame at or before START, the answered range starting there. The PLAY answer's `Range: clock=` start and
//! `RTP-Info: rtptime` map RTP timestamps to wall-clock time (RFC 2326 §12.33: `rtptime` is the
//! timestamp of the range's start). This module owns the coverage arithmetic and the `clock=`
//! syntax; it does no I/O.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Replays are paced this many times faster than the mount's live speed.
pub const REPLAY_SPEEDUP: f64 = 4.0;

/// A mount's card: when it started recording and how much it keeps.
#[derive(Clone, Copy, Debug)]
pub struct Card {
    /// Unix milliseconds of the first recorded instant.
    pub since_ms: i64,
    /// Footage kept, in milliseconds.
    pub capacity_ms: i64,
    /// Like a real camera: the card's frames lie on one grid from `since_ms` (the fixture
    /// looped), and a replay starts at the key frame at or before START (the answered range
    /// says so). `false` (the default): the grid is anchored at START.
    pub from_key_frame_before: bool,
}

/// What a replay request gets: the clipped range and its number of frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayPlan {
    /// Unix milliseconds of the first frame.
    pub start_ms: i64,
    /// Unix milliseconds the replay ends at (exclusive).
    pub end_ms: i64,
    /// Frames sent: those lying entirely in `[start_ms, end_ms)`.
    pub frames: u64,
    /// Position in the fixture of the first frame sent.
    pub first_pos: usize,
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Card {
    /// A card recording from now on, keeping `capacity`.
    pub fn new(capacity: Duration) -> Card {
        Card {
            since_ms: now_ms(),
            capacity_ms: capacity.as_millis().min(i64::MAX as u128) as i64,
            from_key_frame_before: false,
        }
    }

    /// `[from, until)` in Unix milliseconds held at `now` (empty when `from >= until`).
    pub fn coverage(&self, now: i64) -> (i64, i64) {
        (self.since_ms.max(now - self.capacity_ms), now)
    }

    /// Clips `[start, end)` to the coverage at `now`; `None` when nothing is left. `frame_90k`
    /// is the fixture's frame duration.
    pub fn plan(&self, start: i64, end: i64, now: i64, frame_90k: u32) -> Option<ReplayPlan> {
        self.plan_keyed(start, end, now, frame_90k, &[true])
    }

    /// [`Card::plan`] for a fixture whose key frames are `keys` (one flag per frame, looped):
    /// with [`Card::from_key_frame_before`] the replay starts at the key frame of the card's
    /// grid at or before the start.
    pub fn plan_keyed(
        &self,
        start: i64,
        end: i64,
        now: i64,
        frame_90k: u32,
        keys: &[bool],
    ) -> Option<ReplayPlan> {
        let (from, until) = self.coverage(now);
        let (mut s, e) = (start.max(from), end.min(until));
        if s >= e || frame_90k == 0 || keys.is_empty() {
            return None;
        }
        let mut first_pos = 0;
        if self.from_key_frame_before {
            // Frame k of the card is at since + k·d (d in µs to stay exact at 90 kHz).
            let d_us = i128::from(frame_90k) * 1000 / 90;
            let mut k = ((i128::from(s - self.since_ms) * 1000) / d_us.max(1)) as usize;
            while k > 0 && !keys[k % keys.len()] {
                k -= 1;
            }
            if !keys[k % keys.len()] {
                return None;
            }
            first_pos = k % keys.len();
            s = self.since_ms + (k as i128 * d_us / 1000) as i64;
        }
        // Frames at s + k·d (d = frame_90k / 90 ms) ending by e: floor((e−s)/d).
        let span_90k = (e - s) as u128 * 90;
        let frames = (span_90k / u128::from(frame_90k)) as u64;
        if frames == 0 {
            return None;
        }
        Some(ReplayPlan {
            start_ms: s,
            end_ms: e,
            frames,
            first_pos,
        })
    }
}

/// Parses an RTSP `Range: clock=START-END` value (RFC 2326 §3.7 absolute time,
/// `YYYYMMDDThhmmss[.fraction]Z`; END may be empty: to the end of the recording) into Unix
/// milliseconds. `None` on anything else.
pub fn parse_clock_range(v: &str) -> Option<(i64, Option<i64>)> {
    let r = v.trim().strip_prefix("clock=")?;
    let r = r.split(';').next()?.trim();
    let (a, b) = r.split_once('-')?;
    let start = parse_clock(a)?;
    let end = if b.trim().is_empty() {
        None
    } else {
        Some(parse_clock(b)?)
    };
    Some((start, end))
}

/// `YYYYMMDDThhmmss[.fff]Z` → Unix milliseconds.
pub fn parse_clock(s: &str) -> Option<i64> {
    let s = s.trim().strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let (hms, frac) = match time.split_once('.') {
        Some((h, f)) => (h, Some(f)),
        None => (time, None),
    };
    if date.len() != 8
        || hms.len() != 6
        || !date.bytes().chain(hms.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let n = |s: &str| s.parse::<i32>().ok();
    let dt = jiff::civil::DateTime::new(
        n(&date[..4])? as i16,
        n(&date[4..6])? as i8,
        n(&date[6..])? as i8,
        n(&hms[..2])? as i8,
        n(&hms[2..4])? as i8,
        n(&hms[4..])? as i8,
        0,
    )
    .ok()?;
    let secs = dt
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()?
        .timestamp()
        .as_second();
    let ms = match frac {
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let mut f3 = f.to_owned();
            f3.truncate(3);
            while f3.len() < 3 {
                f3.push('0');
            }
            f3.parse::<i64>().ok()?
        }
        Some(_) => return None,
        None => 0,
    };
    Some(secs * 1000 + ms)
}

/// Unix milliseconds → `YYYYMMDDThhmmss.fffZ`.
pub fn format_clock(ms: i64) -> String {
    let ts = jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.strftime("%Y%m%dT%H%M%S.%3fZ").to_string()
}

/// Unix milliseconds → `xs:dateTime` (`2026-12-04T13:00:00.000Z`).
pub fn format_xs(ms: i64) -> String {
    let ts = jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.strftime("%Y-%m-%dT%H:%M:%S.%3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_ranges_parse_and_format_round_trip() {
        let (a, b) = parse_clock_range("clock=20261204T130000.250Z-20261204T130030Z").unwrap();
        assert_eq!(b.unwrap() - a, 29_750);
        assert_eq!(format_clock(a), "20261204T130000.250Z");
        assert_eq!(parse_clock(&format_clock(a)), Some(a));
        assert_eq!(
            parse_clock_range("clock=20261204T130000Z-"),
            Some((a - 250, None))
        );
        for bad in [
            "npt=0-",
            "clock=2026-12-04T13:00:00Z-",
            "clock=20261304T130000Z-",
            "clock=20261204T130000-20261204T130030Z",
            "clock=20261204T130000.x5Z-",
            "clock=",
            "clock=\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}T130000Z-",
        ] {
            assert_eq!(parse_clock_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn plans_are_clipped_to_the_coverage_and_count_frames_before_the_end() {
        let card = Card {
            since_ms: 1_000_000,
            capacity_ms: 3_600_000,
            from_key_frame_before: false,
        };
        // 25 fps (3600 ticks): 30 s → 750 frames.
        let p = card.plan(1_010_000, 1_040_000, 1_100_000, 3_600).unwrap();
        assert_eq!(
            (p.start_ms, p.end_ms, p.frames),
            (1_010_000, 1_040_000, 750)
        );
        // Before the card started, after now: clipped.
        let p = card.plan(0, 2_000_000, 1_001_000, 3_600).unwrap();
        assert_eq!((p.start_ms, p.end_ms, p.frames), (1_000_000, 1_001_000, 25));
        // A frame that would end after END is not sent; less than a frame is nothing.
        assert_eq!(
            card.plan(1_000_000, 1_000_079, 1_100_000, 3_600)
                .unwrap()
                .frames,
            1
        );
        assert_eq!(card.plan(1_000_000, 1_000_039, 1_100_000, 3_600), None);
        // Older than the capacity, or empty.
        assert_eq!(card.plan(1_000_000, 1_001_000, 10_000_000, 3_600), None);
        assert_eq!(card.plan(1_050_000, 1_050_000, 1_100_000, 3_600), None);
        assert_eq!(card.plan(1_050_000, 1_040_000, 1_100_000, 3_600), None);
        // Like a real camera: from the key frame at or before the start (25 fps, a key frame
        // every 50 frames = 2 s on the card's grid from since_ms).
        let real = Card {
            from_key_frame_before: true,
            ..card
        };
        let keys: Vec<bool> = (0..250).map(|i| i % 50 == 0).collect();
        let p = real
            .plan_keyed(1_013_100, 1_020_000, 1_100_000, 3_600, &keys)
            .unwrap();
        assert_eq!((p.start_ms, p.first_pos, p.frames), (1_012_000, 50, 200));
        // On a key frame exactly: starts there; the grid loops over the fixture.
        let p = real
            .plan_keyed(1_012_000, 1_014_000, 1_100_000, 3_600, &keys)
            .unwrap();
        assert_eq!((p.start_ms, p.first_pos, p.frames), (1_012_000, 50, 50));
        let p = real
            .plan_keyed(1_021_000, 1_022_000, 1_100_000, 3_600, &keys)
            .unwrap();
        assert_eq!((p.start_ms, p.first_pos), (1_020_000, 0));
    }
}

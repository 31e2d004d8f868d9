//! Time in Vigie: 90 kHz units everywhere.
//!
//! [`Time90k`] is a wall-clock instant (90 kHz ticks since the Unix epoch, UTC); [`Duration90k`]
//! is a span in the same unit. 90 kHz is the RTP clock rate of video, so media timestamps convert
//! without rounding, and an `i64` covers ±3 million years.

use std::fmt;
use std::ops::{Add, Sub};

/// Ticks per second.
pub const TIME_UNITS_PER_SEC: i64 = 90_000;

/// A wall-clock instant: 90 kHz ticks since 1970-01-01T00:00:00Z.
#[derive(
    Copy,
    Clone,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Time90k(pub i64);

/// A duration in 90 kHz ticks.
#[derive(
    Copy,
    Clone,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Duration90k(pub i64);

#[derive(Debug, thiserror::Error)]
#[error(
    "invalid time {input:?}: {reason} (expected RFC 3339, e.g. 2026-11-28T21:00:00Z or 2026-11-28T22:00:00+01:00)"
)]
pub struct TimeParseError {
    pub input: String,
    pub reason: String,
}

impl Time90k {
    pub const MIN: Time90k = Time90k(i64::MIN);
    pub const MAX: Time90k = Time90k(i64::MAX);

    pub fn from_unix_secs(secs: i64) -> Self {
        Time90k(secs.saturating_mul(TIME_UNITS_PER_SEC))
    }

    pub fn from_timestamp(ts: jiff::Timestamp) -> Self {
        let ns = ts.as_nanosecond();
        // 90 kHz tick = 100_000/9 ns; floor division keeps ordering for negative times too.
        Time90k((ns * 9).div_euclid(100_000) as i64)
    }

    pub fn to_timestamp(self) -> jiff::Timestamp {
        let ns = (self.0 as i128) * 100_000 / 9;
        jiff::Timestamp::from_nanosecond(ns).unwrap_or(if self.0 < 0 {
            jiff::Timestamp::MIN
        } else {
            jiff::Timestamp::MAX
        })
    }

    /// Parses RFC 3339 (`2026-11-28T21:00:00Z`, `2026-11-28T22:00:00.5+01:00`).
    pub fn parse_rfc3339(s: &str) -> Result<Self, TimeParseError> {
        let ts: jiff::Timestamp = s.trim().parse().map_err(|e: jiff::Error| TimeParseError {
            input: s.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self::from_timestamp(ts))
    }

    /// Formats as RFC 3339 in UTC with millisecond precision.
    pub fn to_rfc3339(self) -> String {
        format!("{:.3}", self.to_timestamp())
    }

    pub fn unix_secs_f64(self) -> f64 {
        self.0 as f64 / TIME_UNITS_PER_SEC as f64
    }
}

impl fmt::Display for Time90k {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Duration90k {
    pub fn from_secs(secs: i64) -> Self {
        Duration90k(secs.saturating_mul(TIME_UNITS_PER_SEC))
    }
    pub fn from_millis(ms: i64) -> Self {
        Duration90k(ms.saturating_mul(90))
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / TIME_UNITS_PER_SEC as f64
    }
    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_nanos((self.0.max(0) as u64).saturating_mul(100_000) / 9)
    }
}

impl Add<Duration90k> for Time90k {
    type Output = Time90k;
    fn add(self, d: Duration90k) -> Time90k {
        Time90k(self.0.saturating_add(d.0))
    }
}

impl Sub<Duration90k> for Time90k {
    type Output = Time90k;
    fn sub(self, d: Duration90k) -> Time90k {
        Time90k(self.0.saturating_sub(d.0))
    }
}

impl Sub<Time90k> for Time90k {
    type Output = Duration90k;
    fn sub(self, t: Time90k) -> Duration90k {
        Duration90k(self.0.saturating_sub(t.0))
    }
}

impl Add for Duration90k {
    type Output = Duration90k;
    fn add(self, d: Duration90k) -> Duration90k {
        Duration90k(self.0.saturating_add(d.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = Time90k::parse_rfc3339("2026-11-28T21:00:00Z").unwrap();
        assert_eq!(t.0, 1_795_899_600 * 90_000);
        assert_eq!(t.to_rfc3339(), "2026-11-28T21:00:00.000Z");
        let t2 = Time90k::parse_rfc3339("2026-11-28T22:00:00+01:00").unwrap();
        assert_eq!(t, t2);
        let t3 = Time90k::parse_rfc3339("2026-11-28T21:00:00.5Z").unwrap();
        assert_eq!((t3 - t).0, 45_000);
        assert!(Time90k::parse_rfc3339("yesterday").is_err());
        assert!(Time90k::parse_rfc3339("2026-13-01T00:00:00Z").is_err());
    }

    #[test]
    fn std_duration() {
        assert_eq!(
            Duration90k(90_000).to_std(),
            std::time::Duration::from_secs(1)
        );
        assert_eq!(Duration90k(-5).to_std(), std::time::Duration::ZERO);
    }
}

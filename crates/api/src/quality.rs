//! Quality floors (order of 3 August 2007): each stream's measured resolution and frame rate
//! against its camera class's floor, with hysteresis so a passing hiccup raises no alert.
//!
//! [`ComplianceCell`] is what the API shows (in `/api/v1/cameras` and `/metrics`);
//! [`QualityMonitor`] is the state machine the binary feeds once a second from each stream's
//! live status; each transition it reports is journaled (`quality-alert` / `quality-clear`) by
//! the binary, and the legal register lists them.

use std::sync::Mutex;

use serde::Serialize;
use vigie_core::config::QualityFloor;
use vigie_core::{Duration90k, Time90k};

/// How long a stream must stay below (or back above) its floor before the state changes.
pub const HYSTERESIS: Duration90k = Duration90k(5 * 90_000);

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Compliance {
    /// `ok`, `below-floor`, `no-floor` (traffic cameras) or `unknown` (no measurement yet).
    pub state: &'static str,
    pub floor: Option<QualityFloor>,
    /// Why the stream is below its floor.
    pub reason: Option<String>,
    /// When the current state began.
    pub since: Option<Time90k>,
}

/// The current compliance of one stream.
#[derive(Debug)]
pub struct ComplianceCell(Mutex<Compliance>);

impl ComplianceCell {
    pub fn new(floor: Option<QualityFloor>) -> Self {
        let state = if floor.is_some() {
            "unknown"
        } else {
            "no-floor"
        };
        ComplianceCell(Mutex::new(Compliance {
            state,
            floor,
            reason: None,
            since: None,
        }))
    }
    pub fn snapshot(&self) -> Compliance {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn set(&self, c: Compliance) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = c;
    }
    pub fn below_floor(&self) -> bool {
        self.snapshot().state == "below-floor"
    }
}

/// A change of compliance to journal.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Fell below the floor (reason).
    Alert(String),
    /// Back at or above the floor.
    Clear,
}

/// Hysteresis state machine for one stream.
#[derive(Debug)]
pub struct QualityMonitor {
    floor: Option<QualityFloor>,
    below: bool,
    known: bool,
    /// Since when the measurements disagree with `below`.
    pending_since: Option<Time90k>,
}

impl QualityMonitor {
    pub fn new(floor: Option<QualityFloor>) -> Self {
        QualityMonitor {
            floor,
            below: false,
            known: false,
            pending_since: None,
        }
    }

    /// Feeds one measurement (only while the stream is online: an offline stream is an outage,
    /// not a quality problem). Updates `cell`; returns a transition to journal, if any.
    pub fn observe(
        &mut self,
        now: Time90k,
        width: u16,
        height: u16,
        fps: f64,
        cell: &ComplianceCell,
    ) -> Option<Transition> {
        let floor = self.floor?;
        let why = floor.check(width, height, fps);
        if !self.known {
            // First measurement: wait for a full window before judging, like any change.
            self.known = true;
            self.pending_since = Some(now);
            cell.set(Compliance {
                state: "ok",
                floor: Some(floor),
                reason: None,
                since: Some(now),
            });
            self.below = false;
        }
        if why.is_some() == self.below {
            self.pending_since = None;
            return None;
        }
        let since = *self.pending_since.get_or_insert(now);
        if now - since < HYSTERESIS {
            return None;
        }
        self.pending_since = None;
        self.below = why.is_some();
        match why {
            Some(reason) => {
                cell.set(Compliance {
                    state: "below-floor",
                    floor: Some(floor),
                    reason: Some(reason.clone()),
                    since: Some(since),
                });
                Some(Transition::Alert(reason))
            }
            None => {
                cell.set(Compliance {
                    state: "ok",
                    floor: Some(floor),
                    reason: None,
                    since: Some(since),
                });
                Some(Transition::Clear)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigie_core::config::CameraClass;

    #[test]
    fn alerts_and_clears_with_hysteresis() {
        let floor = CameraClass::CloseUp.floor();
        let cell = ComplianceCell::new(floor);
        assert_eq!(cell.snapshot().state, "unknown");
        let mut m = QualityMonitor::new(floor);
        let t = |s: i64| Time90k::from_unix_secs(1_800_000_000 + s);
        assert_eq!(m.observe(t(0), 1280, 720, 25.0, &cell), None);
        assert_eq!(cell.snapshot().state, "ok");
        // A 3 s dip raises nothing.
        for s in 1..=3 {
            assert_eq!(m.observe(t(s), 1280, 720, 5.0, &cell), None);
        }
        assert_eq!(m.observe(t(4), 1280, 720, 25.0, &cell), None);
        // Below for 5 s: alert, dated from the first bad measurement.
        for s in 10..15 {
            assert_eq!(m.observe(t(s), 1280, 720, 5.0, &cell), None);
        }
        let tr = m.observe(t(15), 1280, 720, 5.0, &cell).unwrap();
        assert!(
            matches!(&tr, Transition::Alert(r) if r.contains("frame rate")),
            "{tr:?}"
        );
        assert!(cell.below_floor());
        assert_eq!(cell.snapshot().since, Some(t(10)));
        assert_eq!(m.observe(t(16), 1280, 720, 5.0, &cell), None);
        // Back up for 5 s: clear.
        for s in 20..25 {
            assert_eq!(m.observe(t(s), 1280, 720, 25.0, &cell), None);
        }
        assert_eq!(
            m.observe(t(25), 1280, 720, 25.0, &cell),
            Some(Transition::Clear)
        );
        assert_eq!(cell.snapshot().state, "ok");
    }

    #[test]
    fn traffic_cameras_have_no_floor() {
        let cell = ComplianceCell::new(None);
        let mut m = QualityMonitor::new(None);
        assert_eq!(m.observe(Time90k(0), 10, 10, 0.5, &cell), None);
        assert_eq!(cell.snapshot().state, "no-floor");
    }
}

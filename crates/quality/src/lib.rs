//! Quality floors (order of 3 August 2007), all in one place: the floor of each camera class
//! ([`floor`], [`QualityFloor::check`]), each stream's measured resolution and frame rate
//! against it with hysteresis so a passing hiccup raises no alert ([`QualityMonitor`]), and the
//! loop that feeds it ([`monitor`]).
//!
//! [`ComplianceCell`] is what the API shows (in `/api/v1/cameras` and `/metrics`);
//! [`monitor`] feeds each stream's [`QualityMonitor`] once a second from its live status and
//! journals each transition (`quality-alert` / `quality-clear`); the legal register lists them.
//! The camera class itself is configuration ([`vigie_core::config::CameraClass`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use vigie_audit::{Action, Journal, NewEntry};
use vigie_core::config::CameraClass;
use vigie_core::{Clock, Duration90k, StreamKey, Time90k};
use vigie_ingest::StatusCell;

/// The minimum quality the technical order of 3 August 2007 sets for a camera class.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct QualityFloor {
    pub min_width: u16,
    pub min_height: u16,
    pub min_fps: f64,
}

/// The class's floor; `None` for `traffic` (no floor).
pub fn floor(class: CameraClass) -> Option<QualityFloor> {
    match class {
        CameraClass::CloseUp => Some(QualityFloor {
            min_width: 704,
            min_height: 576,
            min_fps: 12.0,
        }),
        CameraClass::Wide => Some(QualityFloor {
            min_width: 352,
            min_height: 288,
            min_fps: 6.0,
        }),
        CameraClass::Traffic => None,
    }
}

impl QualityFloor {
    /// Why `(width, height, fps)` is below this floor, or `None` when it is not. The picture
    /// may be in either orientation (a portrait 576×704 stream meets a 704×576 floor).
    pub fn check(&self, width: u16, height: u16, fps: f64) -> Option<String> {
        let (long, short) = (width.max(height), width.min(height));
        let mut why = Vec::new();
        if long < self.min_width || short < self.min_height {
            why.push(format!(
                "resolution {width}×{height} below {}×{}",
                self.min_width, self.min_height
            ));
        }
        if fps + 0.05 < self.min_fps {
            why.push(format!(
                "frame rate {fps:.1} fps below {} fps",
                self.min_fps
            ));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// How long a stream must stay below (or back above) its floor before the state changes.
pub const HYSTERESIS: Duration90k = Duration90k(5 * vigie_core::TIME_UNITS_PER_SEC);

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

/// One stream as the monitor sees it: its live status (read) and its compliance (written).
#[derive(Clone)]
pub struct Watched {
    pub key: StreamKey,
    pub status: Arc<StatusCell>,
    pub compliance: Arc<ComplianceCell>,
}

/// The quality-floor monitor: once a second, each online stream's measured resolution and
/// frame rate go through its [`QualityMonitor`]; transitions are logged and journaled. Runs
/// until `shutdown`.
pub async fn monitor(
    entries: Vec<Watched>,
    clock: Arc<dyn Clock>,
    journal: Journal,
    shutdown: CancellationToken,
) {
    let mut monitors: Vec<QualityMonitor> = entries
        .iter()
        .map(|e| QualityMonitor::new(e.compliance.snapshot().floor))
        .collect();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = clock.now();
        for (e, m) in entries.iter().zip(monitors.iter_mut()) {
            let st = e.status.snapshot();
            let (Some(w), Some(h)) = (st.width, st.height) else {
                continue;
            };
            if !st.online {
                continue;
            }
            let Some(t) = m.observe(now, w, h, st.fps, &e.compliance) else {
                continue;
            };
            let c = e.compliance.snapshot();
            let details = serde_json::json!({
                "width": w, "height": h, "fps": (st.fps * 10.0).round() / 10.0, "floor": c.floor,
            });
            let entry = match &t {
                Transition::Alert(reason) => {
                    tracing::warn!(camera = %e.key.camera, stream = %e.key.stream, %reason, "stream below its quality floor");
                    NewEntry::new("system", Action::QualityAlert).reason(reason.clone())
                }
                Transition::Clear => {
                    tracing::info!(camera = %e.key.camera, stream = %e.key.stream, "stream back above its quality floor");
                    NewEntry::new("system", Action::QualityClear)
                }
            };
            let mut entry = entry.camera(&e.key.camera, &e.key.stream).details(details);
            if let Some(since) = c.since {
                entry.start_90k = Some(since.0);
            }
            let j = journal.clone();
            let _ = tokio::task::spawn_blocking(move || j.append_or_log(entry)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_floors() {
        let close = floor(CameraClass::CloseUp).unwrap();
        assert_eq!(close.check(1280, 720, 25.0), None);
        assert!(
            close
                .check(640, 360, 25.0)
                .unwrap()
                .contains("resolution 640×360")
        );
        assert!(
            close
                .check(1280, 720, 5.0)
                .unwrap()
                .contains("frame rate 5.0 fps below 12")
        );
        assert_eq!(close.check(576, 704, 12.0), None);
        let wide = floor(CameraClass::Wide).unwrap();
        assert_eq!(wide.check(640, 360, 6.0), None);
        assert!(wide.check(320, 180, 25.0).is_some());
        assert!(floor(CameraClass::Traffic).is_none());
    }

    #[test]
    fn alerts_and_clears_with_hysteresis() {
        let floor = floor(CameraClass::CloseUp);
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

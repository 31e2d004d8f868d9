//! The simulated pan/tilt/zoom head: a position that integrates the continuous-move velocity
//! over (monotonic) time, absolute and relative moves, presets. Owns no I/O; the SOAP handlers
//! and the control API read and drive it.
//!
//! Coordinates are ONVIF's generic spaces: pan and tilt in [-1, 1], zoom in [0, 1]. A velocity
//! of 1.0 moves [`UNITS_PER_S`] per second (so a full pan sweep takes 4 s).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Distance covered per second at velocity 1.0.
pub const UNITS_PER_S: f64 = 0.5;
/// At most this many presets (like a real dome's table).
pub const MAX_PRESETS: usize = 64;

/// A pan/tilt/zoom position.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct PtzPosition {
    /// Pan, -1 (left) … 1 (right).
    pub pan: f64,
    /// Tilt, -1 (down) … 1 (up).
    pub tilt: f64,
    /// Zoom, 0 (wide) … 1 (tele).
    pub zoom: f64,
}

impl PtzPosition {
    fn clamped(self) -> PtzPosition {
        let c = |v: f64, lo: f64| if v.is_finite() { v.clamp(lo, 1.0) } else { 0.0 };
        PtzPosition {
            pan: c(self.pan, -1.0),
            tilt: c(self.tilt, -1.0),
            zoom: c(self.zoom, 0.0),
        }
    }
}

/// A stored preset.
#[derive(Clone, Debug, PartialEq)]
pub struct Preset {
    /// Token (camsim's: `1`, `2`, …).
    pub token: String,
    /// Operator's name.
    pub name: String,
    /// Where it points.
    pub position: PtzPosition,
}

/// Why a PTZ request was refused (mapped to SOAP faults by the caller).
#[derive(Debug, PartialEq, Eq)]
pub enum PtzRefusal {
    /// `GotoPreset` / `SetPreset` with a token that is not stored.
    NoSuchPreset,
    /// [`MAX_PRESETS`] reached.
    TooManyPresets,
}

/// The head's state.
#[derive(Debug)]
pub struct PtzHead {
    pos: PtzPosition,
    /// Continuous velocity (pan, tilt, zoom), each in [-1, 1].
    vel: PtzPosition,
    /// When `pos` was last brought up to date.
    since: Instant,
    /// A continuous move's `Timeout`: the velocity drops to 0 then.
    until: Option<Instant>,
    presets: BTreeMap<u32, Preset>,
    next_token: u32,
    /// Commands received (moves, stops, gotos), for tests.
    pub commands: u64,
}

impl Default for PtzHead {
    fn default() -> Self {
        PtzHead {
            pos: PtzPosition::default(),
            vel: PtzPosition::default(),
            since: Instant::now(),
            until: None,
            presets: BTreeMap::new(),
            next_token: 1,
            commands: 0,
        }
    }
}

impl PtzHead {
    /// Integrates the velocity up to `now` (or to the move's timeout, whichever is first).
    fn advance(&mut self, now: Instant) {
        let end = self.until.map_or(now, |u| u.min(now));
        let dt = end.saturating_duration_since(self.since).as_secs_f64();
        self.pos = PtzPosition {
            pan: self.pos.pan + self.vel.pan * UNITS_PER_S * dt,
            tilt: self.pos.tilt + self.vel.tilt * UNITS_PER_S * dt,
            zoom: self.pos.zoom + self.vel.zoom * UNITS_PER_S * dt,
        }
        .clamped();
        self.since = now;
        if self.until.is_some_and(|u| u <= now) {
            self.vel = PtzPosition::default();
            self.until = None;
        }
    }

    /// The position at `now`, and whether the head is moving.
    pub fn status(&mut self, now: Instant) -> (PtzPosition, bool) {
        self.advance(now);
        (self.pos, self.vel != PtzPosition::default())
    }

    /// `ContinuousMove`: velocities clamped to [-1, 1]; `timeout` stops it by itself.
    pub fn continuous(&mut self, now: Instant, vel: PtzPosition, timeout: Option<Duration>) {
        self.advance(now);
        self.commands += 1;
        let c = |v: f64| {
            if v.is_finite() {
                v.clamp(-1.0, 1.0)
            } else {
                0.0
            }
        };
        self.vel = PtzPosition {
            pan: c(vel.pan),
            tilt: c(vel.tilt),
            zoom: c(vel.zoom),
        };
        self.until = timeout.map(|t| now + t);
    }

    /// `Stop` (pan/tilt and/or zoom).
    pub fn stop(&mut self, now: Instant, pan_tilt: bool, zoom: bool) {
        self.advance(now);
        self.commands += 1;
        if pan_tilt {
            self.vel.pan = 0.0;
            self.vel.tilt = 0.0;
        }
        if zoom {
            self.vel.zoom = 0.0;
        }
    }

    /// `AbsoluteMove`: jumps there (a real head takes a moment; tests want a settled answer).
    pub fn absolute(&mut self, now: Instant, to: PtzPosition) {
        self.advance(now);
        self.commands += 1;
        self.vel = PtzPosition::default();
        self.pos = to.clamped();
    }

    /// `RelativeMove` by a translation.
    pub fn relative(&mut self, now: Instant, by: PtzPosition) {
        self.advance(now);
        self.commands += 1;
        self.vel = PtzPosition::default();
        self.pos = PtzPosition {
            pan: self.pos.pan + by.pan,
            tilt: self.pos.tilt + by.tilt,
            zoom: self.pos.zoom + by.zoom,
        }
        .clamped();
    }

    /// The presets, by token.
    pub fn presets(&self) -> Vec<Preset> {
        self.presets.values().cloned().collect()
    }

    /// `SetPreset`: stores the current position under `token` (a new one when `None`).
    pub fn set_preset(
        &mut self,
        now: Instant,
        name: &str,
        token: Option<&str>,
    ) -> Result<String, PtzRefusal> {
        self.advance(now);
        let key = match token {
            Some(t) => {
                let k: u32 = t.parse().map_err(|_| PtzRefusal::NoSuchPreset)?;
                if !self.presets.contains_key(&k) {
                    return Err(PtzRefusal::NoSuchPreset);
                }
                k
            }
            None => {
                if self.presets.len() >= MAX_PRESETS {
                    return Err(PtzRefusal::TooManyPresets);
                }
                let k = self.next_token;
                self.next_token += 1;
                k
            }
        };
        let name = if name.is_empty() {
            format!("Preset {key}")
        } else {
            name.to_owned()
        };
        self.presets.insert(
            key,
            Preset {
                token: key.to_string(),
                name,
                position: self.pos,
            },
        );
        Ok(key.to_string())
    }

    /// `GotoPreset`.
    pub fn goto_preset(&mut self, now: Instant, token: &str) -> Result<(), PtzRefusal> {
        let p = token
            .parse::<u32>()
            .ok()
            .and_then(|k| self.presets.get(&k))
            .map(|p| p.position)
            .ok_or(PtzRefusal::NoSuchPreset)?;
        self.absolute(now, p);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuous_velocity_integrates_over_time_and_stops_at_its_timeout() {
        let t0 = Instant::now();
        let mut h = PtzHead {
            since: t0,
            ..PtzHead::default()
        };
        h.continuous(
            t0,
            PtzPosition {
                pan: 1.0,
                tilt: -0.5,
                zoom: 0.0,
            },
            Some(Duration::from_secs(1)),
        );
        let (p, moving) = h.status(t0 + Duration::from_millis(500));
        assert!(moving);
        assert!((p.pan - 0.25).abs() < 1e-9, "{p:?}");
        assert!((p.tilt + 0.125).abs() < 1e-9, "{p:?}");
        // The timeout ends the move at 1 s even when read later.
        let (p, moving) = h.status(t0 + Duration::from_secs(3));
        assert!(!moving);
        assert!((p.pan - 0.5).abs() < 1e-9, "{p:?}");
        // Clamped to the space.
        h.continuous(
            t0 + Duration::from_secs(3),
            PtzPosition {
                pan: 5.0,
                tilt: 0.0,
                zoom: -1.0,
            },
            None,
        );
        let (p, _) = h.status(t0 + Duration::from_secs(60));
        assert_eq!((p.pan, p.zoom), (1.0, 0.0));
        h.stop(t0 + Duration::from_secs(60), true, true);
        assert!(!h.status(t0 + Duration::from_secs(61)).1);
    }

    #[test]
    fn presets_store_and_recall_positions() {
        let t = Instant::now();
        let mut h = PtzHead::default();
        h.absolute(
            t,
            PtzPosition {
                pan: 0.3,
                tilt: 0.2,
                zoom: 0.5,
            },
        );
        let tok = h.set_preset(t, "Carrefour", None).unwrap();
        h.relative(
            t,
            PtzPosition {
                pan: -1.0,
                tilt: 0.0,
                zoom: 0.0,
            },
        );
        assert!((h.status(t).0.pan + 0.7).abs() < 1e-9);
        h.goto_preset(t, &tok).unwrap();
        assert!((h.status(t).0.pan - 0.3).abs() < 1e-9);
        assert_eq!(h.goto_preset(t, "99"), Err(PtzRefusal::NoSuchPreset));
        assert_eq!(h.goto_preset(t, "x"), Err(PtzRefusal::NoSuchPreset));
        assert_eq!(h.presets()[0].name, "Carrefour");
    }
}

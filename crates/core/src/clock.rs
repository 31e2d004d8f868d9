//! The clock abstraction: everything that asks "what time is it" goes through [`Clock`], so
//! retention, rotation and status can be tested with a [`SimulatedClock`].

use std::sync::atomic::{AtomicI64, Ordering};

use crate::time::{Duration90k, Time90k};

pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> Time90k;
}

/// The host clock (expected to be NTP-synchronised).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Time90k {
        Time90k::from_timestamp(jiff::Timestamp::now())
    }
}

/// A clock that only moves when told to. For tests.
#[derive(Debug, Default)]
pub struct SimulatedClock(AtomicI64);

impl SimulatedClock {
    pub fn new(start: Time90k) -> Self {
        SimulatedClock(AtomicI64::new(start.0))
    }
    pub fn set(&self, t: Time90k) {
        self.0.store(t.0, Ordering::SeqCst);
    }
    pub fn advance(&self, d: Duration90k) {
        self.0.fetch_add(d.0, Ordering::SeqCst);
    }
}

impl Clock for SimulatedClock {
    fn now(&self) -> Time90k {
        Time90k(self.0.load(Ordering::SeqCst))
    }
}

/// A clock offset from the host clock by a fixed amount; used by `vigie run --clock-offset`
/// in retention tests of the real binary.
#[derive(Debug)]
pub struct OffsetClock(pub Duration90k);

impl Clock for OffsetClock {
    fn now(&self) -> Time90k {
        SystemClock.now() + self.0
    }
}

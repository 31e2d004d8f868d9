//! Login throttling: failures counted per key (a user name, a client IP) within a sliding
//! window; reaching the limit locks the key for the lockout duration, doubled on each repeated
//! lockout (capped at [`MAX_LOCKOUT_S`]). A success clears the key. While a key is locked every
//! attempt is refused, the right password included, and does not extend the lock.
//!
//! State is in memory only: a restart clears it (documented; the journal keeps the failures).

use std::collections::HashMap;

/// Longest lockout, however often it repeats: 24 h.
pub const MAX_LOCKOUT_S: i64 = 24 * 3600;
/// Above this many tracked keys, idle ones are forgotten (bounds memory under a spray attack).
const MAX_KEYS: usize = 50_000;

#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    /// Failures within `window_s` that trigger a lockout.
    pub max_failures: u32,
    /// Sliding window for counting failures, in seconds.
    pub window_s: i64,
    /// First lockout, in seconds (doubles on each repeat).
    pub lockout_s: i64,
}

#[derive(Debug, Default)]
struct Entry {
    /// Times of recent failures (unix seconds), oldest first.
    failures: Vec<i64>,
    locked_until_s: i64,
    /// Lockouts so far without a success in between (sets the doubling).
    lockouts: u32,
    last_failure_s: i64,
}

#[derive(Debug, Default)]
pub struct Throttle {
    entries: HashMap<String, Entry>,
}

impl Throttle {
    /// Seconds left if `key` is locked at `now_s`.
    pub fn locked(&self, key: &str, now_s: i64) -> Option<i64> {
        self.entries
            .get(key)
            .map(|e| e.locked_until_s - now_s)
            .filter(|left| *left > 0)
    }

    /// Records a failure; returns the lockout length in seconds if this failure triggers one.
    pub fn fail(&mut self, key: &str, now_s: i64, limits: ThrottleLimits) -> Option<i64> {
        if self.entries.len() >= MAX_KEYS {
            self.prune(now_s, limits);
        }
        let e = self.entries.entry(key.to_owned()).or_default();
        // A day without failures (nor lock) forgets earlier lockouts.
        if now_s - e.last_failure_s.max(e.locked_until_s) > MAX_LOCKOUT_S {
            e.lockouts = 0;
        }
        e.last_failure_s = now_s;
        e.failures.retain(|t| now_s - t < limits.window_s);
        e.failures.push(now_s);
        if e.failures.len() as u32 >= limits.max_failures.max(1) {
            let factor = 1i64 << e.lockouts.min(16);
            let lock = (limits.lockout_s.max(1) * factor).min(MAX_LOCKOUT_S);
            e.locked_until_s = now_s + lock;
            e.lockouts += 1;
            e.failures.clear();
            Some(lock)
        } else {
            None
        }
    }

    /// A successful login clears the key.
    pub fn succeed(&mut self, key: &str) {
        self.entries.remove(key);
    }

    fn prune(&mut self, now_s: i64, limits: ThrottleLimits) {
        self.entries
            .retain(|_, e| e.locked_until_s > now_s || now_s - e.last_failure_s < limits.window_s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: ThrottleLimits = ThrottleLimits {
        max_failures: 5,
        window_s: 900,
        lockout_s: 900,
    };

    #[test]
    fn locks_after_max_failures_and_doubles() {
        let mut t = Throttle::default();
        let k = "user:alice";
        for i in 0..4 {
            assert_eq!(t.fail(k, 1000 + i, L), None);
            assert_eq!(t.locked(k, 1000 + i), None);
        }
        assert_eq!(t.fail(k, 1004, L), Some(900));
        assert_eq!(t.locked(k, 1004), Some(900));
        assert_eq!(t.locked(k, 1500), Some(404));
        assert_eq!(t.locked(k, 1904), None);
        // Repeat: twice as long.
        for i in 0..4 {
            assert_eq!(t.fail(k, 2000 + i, L), None);
        }
        assert_eq!(t.fail(k, 2004, L), Some(1800));
        // A success clears everything.
        t.succeed(k);
        assert_eq!(t.locked(k, 2005), None);
        for i in 0..4 {
            assert_eq!(t.fail(k, 3000 + i, L), None);
        }
        assert_eq!(t.fail(k, 3004, L), Some(900));
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let mut t = Throttle::default();
        let k = "ip:10.0.0.1";
        for i in 0..20 {
            // One failure every 5 minutes: never 5 within 15 minutes.
            assert_eq!(t.fail(k, i * 300, L), None, "failure {i}");
        }
    }

    #[test]
    fn lockout_is_capped() {
        let mut t = Throttle::default();
        let mut now = 0;
        let mut last = 0;
        for _ in 0..12 {
            for _ in 0..5 {
                if let Some(l) = t.fail("k", now, L) {
                    last = l;
                }
            }
            now += last + 1;
        }
        assert_eq!(last, MAX_LOCKOUT_S);
    }
}

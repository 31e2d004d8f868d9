//! Login throttling: failures counted per key within a sliding window; reaching the limit locks
//! the key. Keys (built by [`crate::AuthStore`]) are the pair (account, client IP), the client
//! IP alone and the account alone, each with its own [`ThrottleLimits`].
//!
//! Three rules make it bounded under attack:
//! * **Reserve before hashing.** An attempt first [`Throttle::reserve`]s a failure on each of
//!   its keys (refused when the failures already counted plus the attempts in flight reach the
//!   limit), and only then hashes the password. Hundreds of parallel attempts cannot all pass
//!   the lockout check while the first ones are still hashing: at most `max_failures` failures
//!   are ever counted before a lock.
//! * **Locked attempts are cheap.** A locked key refuses at once (no hashing) and only counts
//!   the refusal; the count is reported with the next lockout of the key
//!   ([`LockInfo::refused_before`]), so the journal gets one entry per lockout, not one per
//!   attempt.
//! * **Nobody can keep someone else's account locked.** The long, doubling lock is on the pair
//!   (account, IP): a stranger only locks *themselves* out of that account. The account-wide
//!   key locks for a short fixed time only ([`ACCOUNT_LOCK_S`], a slow-down that bounds a
//!   distributed guessing attack), and lockouts are capped at [`MAX_LOCKOUT_S`].
//!
//! State is in memory only: a restart clears it (documented; the journal keeps the failures).

use std::collections::HashMap;

/// Longest lockout of a (account, IP) pair or of an IP, however often it repeats: 1 h.
pub const MAX_LOCKOUT_S: i64 = 3600;
/// Account-wide lock (any IP) after many failures: a fixed 60 s slow-down, never longer.
pub const ACCOUNT_LOCK_S: i64 = 60;
/// Above this many tracked keys, idle ones are forgotten (bounds memory under a spray attack).
const MAX_KEYS: usize = 50_000;

#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    /// Failures within `window_s` that trigger a lockout.
    pub max_failures: u32,
    /// Sliding window for counting failures, in seconds.
    pub window_s: i64,
    /// First lockout, in seconds (doubles on each repeat up to `max_lockout_s`).
    pub lockout_s: i64,
    /// Cap of the doubling.
    pub max_lockout_s: i64,
}

/// A lockout that just started (journaled once, with these counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockInfo {
    /// Its length in seconds.
    pub lock_s: i64,
    /// Failures within the window that triggered it.
    pub failures: u32,
    /// How many lockouts of this key in a row (1 = the first), which set its length.
    pub repeat: u32,
    /// Attempts refused on this key since its previous lockout started (while locked, or
    /// because as many attempts as the limit were already in flight).
    pub refused_before: u64,
}

#[derive(Debug, Default)]
struct Entry {
    /// Times of recent failures (unix seconds), oldest first.
    failures: Vec<i64>,
    /// Attempts reserved and not yet finished (hashing).
    pending: u32,
    locked_until_s: i64,
    /// Lockouts so far without a success in between (sets the doubling).
    lockouts: u32,
    last_failure_s: i64,
    /// Attempts refused (locked, or in-flight limit) since the last lockout started.
    refused: u64,
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

    /// Counts an attempt refused because `key` is locked.
    pub fn refused(&mut self, key: &str) {
        if let Some(e) = self.entries.get_mut(key) {
            e.refused = e.refused.saturating_add(1);
        }
    }

    /// Reserves one attempt on `key` before its password is hashed. Refused (with the seconds
    /// to wait) when the key is locked, or when the failures in the window plus the attempts
    /// already in flight reach the limit (they could all fail). A reservation ends with
    /// [`Throttle::fail`] or [`Throttle::release`].
    pub fn reserve(&mut self, key: &str, now_s: i64, limits: ThrottleLimits) -> Result<(), i64> {
        if let Some(left) = self.locked(key, now_s) {
            return Err(left);
        }
        if self.entries.len() >= MAX_KEYS {
            self.prune(now_s, limits);
        }
        let e = self.entries.entry(key.to_owned()).or_default();
        e.failures.retain(|t| now_s - t < limits.window_s);
        if e.failures.len() as u32 + e.pending >= limits.max_failures.max(1) {
            return Err(1);
        }
        e.pending += 1;
        Ok(())
    }

    /// Ends a reservation without a failure (the password was right, or the attempt was
    /// abandoned before hashing).
    pub fn release(&mut self, key: &str) {
        if let Some(e) = self.entries.get_mut(key) {
            e.pending = e.pending.saturating_sub(1);
        }
    }

    /// Records a failure (ending a reservation if there is one); returns the lockout if this
    /// failure triggers one.
    pub fn fail(&mut self, key: &str, now_s: i64, limits: ThrottleLimits) -> Option<LockInfo> {
        if self.entries.len() >= MAX_KEYS {
            self.prune(now_s, limits);
        }
        let e = self.entries.entry(key.to_owned()).or_default();
        e.pending = e.pending.saturating_sub(1);
        // A day without failures (nor lock) forgets earlier lockouts.
        if now_s - e.last_failure_s.max(e.locked_until_s) > 24 * 3600 {
            e.lockouts = 0;
        }
        e.last_failure_s = now_s;
        e.failures.retain(|t| now_s - t < limits.window_s);
        e.failures.push(now_s);
        let failures = e.failures.len() as u32;
        if failures >= limits.max_failures.max(1) && e.locked_until_s <= now_s {
            let factor = 1i64 << e.lockouts.min(16);
            let lock = (limits.lockout_s.max(1) * factor).min(limits.max_lockout_s.max(1));
            e.locked_until_s = now_s + lock;
            e.lockouts += 1;
            e.failures.clear();
            let refused_before = std::mem::take(&mut e.refused);
            Some(LockInfo {
                lock_s: lock,
                failures,
                repeat: e.lockouts,
                refused_before,
            })
        } else {
            None
        }
    }

    /// A successful login clears the key (its reservation included).
    pub fn succeed(&mut self, key: &str) {
        if let Some(e) = self.entries.get_mut(key) {
            e.pending = e.pending.saturating_sub(1);
            if e.pending == 0 {
                self.entries.remove(key);
            } else {
                e.failures.clear();
                e.lockouts = 0;
            }
        }
    }

    fn prune(&mut self, now_s: i64, limits: ThrottleLimits) {
        self.entries.retain(|_, e| {
            e.pending > 0 || e.locked_until_s > now_s || now_s - e.last_failure_s < limits.window_s
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: ThrottleLimits = ThrottleLimits {
        max_failures: 5,
        window_s: 900,
        lockout_s: 900,
        max_lockout_s: MAX_LOCKOUT_S,
    };

    #[test]
    fn locks_after_max_failures_and_doubles() {
        let mut t = Throttle::default();
        let k = "user:alice";
        for i in 0..4 {
            assert_eq!(t.fail(k, 1000 + i, L), None);
            assert_eq!(t.locked(k, 1000 + i), None);
        }
        assert_eq!(t.fail(k, 1004, L).map(|l| l.lock_s), Some(900));
        assert_eq!(t.locked(k, 1004), Some(900));
        assert_eq!(t.locked(k, 1500), Some(404));
        t.refused(k);
        t.refused(k);
        assert_eq!(t.locked(k, 1904), None);
        // Repeat: twice as long, and the refusals of the first lock are reported.
        for i in 0..4 {
            assert_eq!(t.fail(k, 2000 + i, L), None);
        }
        let again = t.fail(k, 2004, L).unwrap();
        assert_eq!(again.lock_s, 1800);
        assert_eq!(again.repeat, 2);
        assert_eq!(again.refused_before, 2);
        // A success clears everything.
        t.succeed(k);
        assert_eq!(t.locked(k, 2005), None);
        for i in 0..4 {
            assert_eq!(t.fail(k, 3000 + i, L), None);
        }
        assert_eq!(t.fail(k, 3004, L).map(|l| l.lock_s), Some(900));
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
                    last = l.lock_s;
                }
            }
            now += last + 1;
        }
        assert_eq!(last, MAX_LOCKOUT_S);
    }

    #[test]
    fn reservations_bound_attempts_in_flight() {
        let mut t = Throttle::default();
        let k = "user+ip:op|192.0.2.1";
        // Five attempts in flight at once: the sixth is refused before hashing.
        for _ in 0..5 {
            assert_eq!(t.reserve(k, 100, L), Ok(()));
        }
        assert_eq!(t.reserve(k, 100, L), Err(1));
        // They all fail: exactly one lockout, with five failures.
        let locks: Vec<_> = (0..5).filter_map(|_| t.fail(k, 100, L)).collect();
        assert_eq!(locks.len(), 1);
        assert_eq!(locks[0].failures, 5);
        assert_eq!(t.reserve(k, 101, L), Err(899));
        // A released reservation frees its place.
        let k2 = "ip:192.0.2.2";
        for _ in 0..5 {
            t.reserve(k2, 100, L).unwrap();
        }
        t.release(k2);
        assert_eq!(t.reserve(k2, 100, L), Ok(()));
    }
}

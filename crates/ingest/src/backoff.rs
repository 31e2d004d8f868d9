//! Reconnect delays: exponential backoff with jitter.
//!
//! The first [`BackoffConfig::fast_retries`] retries wait about [`BackoffConfig::min`] (a camera
//! that blips for a few seconds is back on record within about a second of its return), then each
//! further failure doubles the delay up to [`BackoffConfig::max`]; every delay is multiplied by a random factor in
//! `[1 - jitter, 1 + jitter]` and then clamped to `[min × (1 - jitter), max]`, so a thousand cameras that dropped
//! together (switch reboot) do not reconnect in lock-step. A session that ran well for
//! [`BackoffConfig::healthy_after`] resets the sequence (see [`Backoff::reset`]).

use std::time::Duration;

use rand::{Rng, RngCore, SeedableRng};

/// Backoff parameters. The defaults are 5 retries at 1 s, then doubling up to 30 s, ±20 % jitter,
/// reset after 30 s of good streaming.
#[derive(Clone, Debug, PartialEq)]
pub struct BackoffConfig {
    /// Delay of the fast retries (every delay is at least `min × (1 - jitter)`).
    pub min: Duration,
    /// Upper bound of every delay.
    pub max: Duration,
    /// Relative jitter in `[0, 1)`: 0.2 means each delay is scaled by a factor in `[0.8, 1.2]`.
    pub jitter: f64,
    /// A session that delivered frames for at least this long resets the backoff.
    pub healthy_after: Duration,
    /// Failures retried after `min` before the delay starts doubling.
    pub fast_retries: u32,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            min: Duration::from_secs(1),
            max: Duration::from_secs(30),
            jitter: 0.2,
            healthy_after: Duration::from_secs(30),
            fast_retries: 5,
        }
    }
}

/// The backoff state of one stream.
pub struct Backoff {
    cfg: BackoffConfig,
    /// Number of consecutive failures since the last reset.
    failures: u32,
    rng: Box<dyn RngCore + Send + Sync>,
}

impl std::fmt::Debug for Backoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backoff")
            .field("cfg", &self.cfg)
            .field("failures", &self.failures)
            .finish()
    }
}

impl Backoff {
    /// A backoff seeded from the OS random source.
    pub fn new(cfg: BackoffConfig) -> Self {
        Self::with_rng(cfg, Box::new(rand::rngs::StdRng::from_entropy()))
    }

    /// A deterministic backoff (tests).
    pub fn with_seed(cfg: BackoffConfig, seed: u64) -> Self {
        Self::with_rng(cfg, Box::new(rand::rngs::StdRng::seed_from_u64(seed)))
    }

    pub fn with_rng(cfg: BackoffConfig, rng: Box<dyn RngCore + Send + Sync>) -> Self {
        Backoff {
            cfg,
            failures: 0,
            rng,
        }
    }

    pub fn config(&self) -> &BackoffConfig {
        &self.cfg
    }

    /// Consecutive failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let min = self.cfg.min.as_secs_f64();
        let max = self.cfg.max.as_secs_f64().max(min);
        let exp = self
            .failures
            .saturating_sub(self.cfg.fast_retries.saturating_sub(1))
            .min(30) as i32;
        self.failures = self.failures.saturating_add(1);
        let base = (min * 2f64.powi(exp)).min(max);
        let j = self.cfg.jitter.clamp(0.0, 0.99);
        let factor = if j > 0.0 {
            self.rng.gen_range(1.0 - j..=1.0 + j)
        } else {
            1.0
        };
        Duration::from_secs_f64((base * factor).clamp(min * (1.0 - j), max))
    }

    /// Forgets past failures: the next delay is about `min` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BackoffConfig {
        BackoffConfig::default()
    }

    #[test]
    fn grows_exponentially_within_bounds() {
        let mut b = Backoff::with_seed(cfg(), 7);
        let delays: Vec<f64> = (0..12).map(|_| b.next_delay().as_secs_f64()).collect();
        for d in &delays {
            assert!((0.8..=30.0).contains(d), "{delays:?}");
        }
        // Bases 1 (five fast retries), 2, 4, 8, 16, 30, 30 ... with ±20 %.
        for d in &delays[..5] {
            assert!(*d <= 1.2, "{delays:?}");
        }
        let delays = &delays[4..];
        assert!((1.6..=2.4).contains(&delays[1]), "{delays:?}");
        assert!((3.2..=4.8).contains(&delays[2]), "{delays:?}");
        assert!((6.4..=9.6).contains(&delays[3]), "{delays:?}");
        assert!((12.8..=19.2).contains(&delays[4]), "{delays:?}");
        for d in &delays[5..] {
            assert!((24.0..=30.0).contains(d), "{delays:?}");
        }
        assert_eq!(b.failures(), 12);
    }

    #[test]
    fn jitter_varies_and_is_deterministic_with_a_seed() {
        let run = |seed| {
            let mut b = Backoff::with_seed(cfg(), seed);
            (0..10).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        // Fast retries spread too (not all identical).
        let capped: Vec<_> = run(3)[..5].to_vec();
        assert!(capped.windows(2).any(|w| w[0] != w[1]), "{capped:?}");
    }

    #[test]
    fn no_jitter_is_exact() {
        let mut b = Backoff::with_seed(
            BackoffConfig {
                jitter: 0.0,
                ..cfg()
            },
            0,
        );
        let secs: Vec<u64> = (0..11).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(secs, [1, 1, 1, 1, 1, 2, 4, 8, 16, 30, 30]);
        let mut b = Backoff::with_seed(
            BackoffConfig {
                jitter: 0.0,
                fast_retries: 0,
                ..cfg()
            },
            0,
        );
        let secs: Vec<u64> = (0..7).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::with_seed(
            BackoffConfig {
                jitter: 0.0,
                ..cfg()
            },
            0,
        );
        for _ in 0..5 {
            b.next_delay();
        }
        b.reset();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn huge_failure_counts_do_not_overflow() {
        let mut b = Backoff::with_seed(cfg(), 0);
        for _ in 0..10_000 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(30));
        }
    }
}

//! Bounds on what strangers can make the server do at once, outside any one handler: the login
//! hashing gate ([`LoginGate`]). (Export jobs are bounded by [`vigie_export::jobs`]; connections,
//! header and request timeouts by [`crate::server`].)
//!
//! Why a gate for logins: each attempt hashes with argon2id (19 MiB, tens of milliseconds of
//! CPU). Unbounded, a few hundred parallel attempts from one stranger take every blocking
//! thread and hundreds of MiB, and starve the journal and retention that share the blocking
//! pool. The gate lets `auth.max_concurrent_logins` hashes run, `auth.max_queued_logins` wait,
//! and answers 503 at once beyond (the throttle has already refused locked keys before this).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vigie_core::config::Config;

use crate::ApiError;

/// Process-wide limits shared by the handlers.
#[derive(Debug)]
pub struct Limits {
    pub login: LoginGate,
}

impl Limits {
    pub fn new(config: &Config) -> Limits {
        Limits {
            login: LoginGate::new(
                config.auth.max_concurrent_logins as usize,
                config.auth.max_queued_logins as usize,
            ),
        }
    }
}

/// At most `running` password hashes at once, `waiting` more queued.
#[derive(Debug)]
pub struct LoginGate {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    /// Attempts answered 503 because the queue was full (for `/metrics` and tests).
    pub refused: AtomicUsize,
}

/// Decrements the waiting count however the wait ends (granted, or the client went away).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LoginGate {
    pub fn new(running: usize, waiting: usize) -> LoginGate {
        LoginGate {
            slots: Arc::new(Semaphore::new(running.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting: waiting,
            refused: AtomicUsize::new(0),
        }
    }

    /// A hashing slot, waiting in the queue if needed; 503 with `Retry-After: 1` at once when
    /// the queue is full.
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::Busy {
                message: "too many logins in progress: try again in a moment".into(),
                retry_after_s: 1,
            });
        }
        let _w = Waiting(&self.waiting);
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ApiError::Internal(format!("login gate: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_gate_queues_then_refuses() {
        let g = Arc::new(LoginGate::new(1, 1));
        let first = g.enter().await.unwrap();
        let g2 = g.clone();
        let queued = tokio::spawn(async move { g2.enter().await.map(drop) });
        while g.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        let third = g.enter().await;
        assert!(matches!(third, Err(ApiError::Busy { .. })), "{third:?}");
        drop(first);
        queued.await.unwrap().unwrap();
        assert_eq!(g.waiting.load(Ordering::Acquire), 0);
        assert_eq!(g.refused.load(Ordering::Relaxed), 1);
    }
}

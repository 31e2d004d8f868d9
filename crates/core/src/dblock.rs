//! Waiting out a database lock that its last holder is letting go of.
//!
//! sled locks its database file for as long as any handle on it lives, and some of those
//! handles live on sled's own I/O threads: a log write it handed to its thread pool holds the
//! file until that thread has finished with it, a moment after the last `Db` the caller held
//! was dropped (sled's own test build blocks on the lock for this reason). So reopening a
//! database right after closing it, as a restart or `vigie reindex` after a shutdown does, can
//! meet a lock that is about to go. [`retry_while_locked`] retries for [`LOCK_WAIT`] before
//! reporting the lock; a second Vigie on the same `data_dir` is still refused, a few seconds
//! later.
//!
//! Not here: opening the databases (each crate opens its own) or what a held lock means to the
//! user (each crate's error says which database and why).

use std::time::{Duration, Instant};

/// How long an open waits for a lock held elsewhere before it gives up.
pub const LOCK_WAIT: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(20);

/// True for the error sled returns when another handle holds the database's file lock.
pub fn is_lock_conflict(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Other && e.to_string().starts_with("could not acquire lock")
}

/// Calls `open` until it succeeds, fails for another reason than `locked`, or `wait` has
/// passed (then returns the last lock error).
pub fn retry_while_locked<T, E>(
    wait: Duration,
    mut open: impl FnMut() -> Result<T, E>,
    locked: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let deadline = Instant::now() + wait;
    loop {
        match open() {
            Err(e) if locked(&e) && Instant::now() < deadline => std::thread::sleep(POLL),
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn lock_err() -> io::Error {
        io::Error::other("could not acquire lock on \"/x/db\": Os { code: 11 }")
    }

    #[test]
    fn a_lock_released_in_time_is_waited_for() {
        let mut tries = 0;
        let r = retry_while_locked(
            Duration::from_secs(5),
            || {
                tries += 1;
                if tries < 4 {
                    Err(lock_err())
                } else {
                    Ok(tries)
                }
            },
            is_lock_conflict,
        );
        assert_eq!(r.unwrap(), 4);
    }

    #[test]
    fn a_held_lock_is_reported_after_the_wait_and_other_errors_at_once() {
        let t = Instant::now();
        let e = retry_while_locked(
            Duration::from_millis(100),
            || Err::<(), _>(lock_err()),
            is_lock_conflict,
        )
        .unwrap_err();
        assert!(is_lock_conflict(&e));
        assert!(t.elapsed() >= Duration::from_millis(100));
        let mut tries = 0;
        let e = retry_while_locked(
            Duration::from_secs(5),
            || {
                tries += 1;
                Err::<(), _>(io::Error::other("disk on fire"))
            },
            is_lock_conflict,
        )
        .unwrap_err();
        assert_eq!((tries, e.to_string().as_str()), (1, "disk on fire"));
    }
}

//! The writer threads: every stream's [`Recorder`] runs on one of a few shared threads, not on a
//! thread of its own.
//!
//! A thread owns up to [`STREAMS_PER_THREAD`] streams (more once [`MAX_THREADS`] threads run).
//! It wakes once per tick (a quarter of `fragment_ms`, so a complete fragment waits at most that
//! long before it is written), drains each of its streams' queues, and takes part in group
//! commit ([`SyncEpochs`]): once per `flush_interval_ms` one of the store's writer threads runs a
//! sync epoch, one `syncfs` per filesystem holding segment files, instead of one `fdatasync`
//! per file; every thread then marks durable what its streams had written before that epoch
//! started ([`Recorder::group_step`]). Senders wake a thread early only for control messages
//! and for a queue past half full.
//!
//! Why: with a thread per stream, 50 streams meant 50 threads each woken about five times a
//! second and 50 `fdatasync`s (each a device cache flush) a second: about 40 % of Vigie's CPU
//! (docs/BENCHMARKS.md, "Writer pool"). The cost is isolation: a write that blocks holds up the
//! other streams of its thread, whose queues (`writer_queue_bytes` each) absorb the delay; they
//! share the disk anyway.
//!
//! Why epochs are store-wide and not per thread: a `syncfs` flushes every file of the
//! filesystem, and each flush of a file's partly written last page makes the next write dirty
//! that page again (4 KiB more to the disk). Threads syncing on their own schedules would flush
//! each file up to once per thread per interval once their phases drift apart; one epoch per
//! interval flushes it once, and costs one `syncfs` whatever the number of threads.
//!
//! A thread exits when its last stream has ended; [`Pool::add`] starts threads as needed.
//! A panic while handling one stream ends that stream's writer only.
//!
//! Not here: what a recorder does with a message, segments, files and the index (`writer`).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::{Flow, Msg, Recorder, syncfs_reports_errors};

/// Streams per writer thread before another thread is started.
pub const STREAMS_PER_THREAD: usize = 32;
/// Most writer threads per store.
pub const MAX_THREADS: usize = 8;
/// Messages handled per stream per pass, so that one busy stream cannot starve the others.
const MAX_BATCH: usize = 1024;

/// One stream on a writer thread.
pub(crate) struct Slot {
    rec: Recorder,
    rx: mpsc::Receiver<Msg>,
    span: tracing::Span,
    on_exit: Box<dyn FnOnce() + Send>,
}

enum Drained {
    /// The queue is empty.
    Idle,
    /// [`MAX_BATCH`] messages handled, more are waiting.
    More,
    Ended,
}

impl Slot {
    /// `on_exit` runs on the writer thread once the recorder has ended.
    pub fn new(
        rec: Recorder,
        rx: mpsc::Receiver<Msg>,
        span: tracing::Span,
        on_exit: Box<dyn FnOnce() + Send>,
    ) -> Slot {
        Slot {
            rec,
            rx,
            span,
            on_exit,
        }
    }

    fn drain(&mut self) -> Drained {
        let _e = self.span.enter();
        for _ in 0..MAX_BATCH {
            match self.rx.try_recv() {
                Ok(msg) => {
                    if self.rec.handle(msg) == Flow::Ended {
                        return Drained::Ended;
                    }
                }
                Err(TryRecvError::Empty) => return Drained::Idle,
                // Cannot happen while the store holds the stream's `WriterSlot` sender, but a
                // queue nobody can send to has ended all the same.
                Err(TryRecvError::Disconnected) => {
                    self.rec.handle(Msg::Stop);
                    return Drained::Ended;
                }
            }
        }
        Drained::More
    }

    /// The recorder has ended: drop it (its files, and its hold on the store, which must be
    /// gone before `on_exit` tells [`crate::Store::shutdown`] so that the index can be
    /// reopened at once), then run `on_exit`.
    fn end(self) {
        let Slot { rec, on_exit, .. } = self;
        rec.ended();
        drop(rec);
        on_exit();
    }
}

/// What a thread shares with [`Pool::add`].
#[derive(Default)]
struct Inbox {
    /// Streams handed to the thread, not yet picked up.
    new: Vec<Slot>,
    /// Streams assigned to the thread (picked up or not).
    streams: usize,
    /// The thread has ended: nothing may be added any more.
    exited: bool,
}

struct Worker {
    inbox: Arc<Mutex<Inbox>>,
    thread: Thread,
}

/// Sync paths this machine cannot produce on demand, forced for tests
/// ([`crate::Store::set_sync_fault_for_test`]).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncFault {
    /// The real thing.
    None = 0,
    /// Every `syncfs` reports an I/O error (it is not called): writers must `fdatasync`
    /// their own files.
    SyncfsFails = 1,
    /// Behave as on a kernel before 5.8, whose `syncfs` cannot report errors: no epochs,
    /// every writer thread syncs its own files.
    OldKernel = 2,
}

/// The store's sync epochs (group commit across writer threads). Epoch `e` is one `syncfs` of
/// every filesystem that holds segment files, started after `started` became `e`; it covers
/// every byte written before that. A writer that has written since its last sync takes a mark
/// and waits for epoch [`SyncEpochs::next_to_start`] as read after its writes; when
/// [`SyncEpochs::completed`] reaches it, the mark is durable.
pub(crate) struct SyncEpochs {
    started: AtomicU64,
    completed: AtomicU64,
    /// The last epoch whose `syncfs` failed somewhere: marks waiting on it or an earlier one
    /// are synced file by file instead ([`SyncEpochs::failed_since`]).
    failed: AtomicU64,
    /// A directory on each filesystem holding segment files, to call `syncfs` on.
    devices: Mutex<BTreeMap<u64, File>>,
    /// When the next epoch is due (only the thread that takes it runs the epoch).
    next_due: Mutex<Instant>,
    interval: Duration,
    syncfs_calls: AtomicU64,
    /// A [`SyncFault`], for tests.
    fault: AtomicU8,
}

impl SyncEpochs {
    fn new(interval: Duration) -> SyncEpochs {
        SyncEpochs {
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            devices: Mutex::new(BTreeMap::new()),
            next_due: Mutex::new(Instant::now() + interval),
            interval,
            syncfs_calls: AtomicU64::new(0),
            fault: AtomicU8::new(SyncFault::None as u8),
        }
    }

    /// Remembers a directory of filesystem `dev` (the first one seen), to sync it.
    pub fn register(&self, dev: u64, dir: &Path) {
        let mut d = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        if d.contains_key(&dev) {
            return;
        }
        match File::open(dir) {
            Ok(f) => {
                d.insert(dev, f);
            }
            // Without it, this filesystem's files wait for an epoch that does not sync them:
            // harmless only because a failed open is also a failed epoch (see `run`).
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot open a segment directory for syncfs");
                self.failed.store(u64::MAX, Ordering::SeqCst);
            }
        }
    }

    /// The first epoch that starts after this call.
    pub fn next_to_start(&self) -> u64 {
        self.started.load(Ordering::SeqCst) + 1
    }

    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::SeqCst)
    }

    /// True if an epoch at or after `epoch` failed: the mark must be synced on its own.
    pub fn failed_since(&self, epoch: u64) -> bool {
        self.failed.load(Ordering::SeqCst) >= epoch
    }

    pub fn syncfs_calls(&self) -> u64 {
        self.syncfs_calls.load(Ordering::Relaxed)
    }

    #[cfg(any(test, feature = "test-support"))]
    pub fn set_fault(&self, fault: SyncFault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
    }

    fn fault(&self) -> u8 {
        self.fault.load(Ordering::Relaxed)
    }

    /// Whether writers sync by epochs: `syncfs` reports errors on this kernel, and
    /// `flush_interval_ms` is not 0 (then recorders sync every fragment themselves).
    fn grouped(&self) -> bool {
        syncfs_reports_errors()
            && !self.interval.is_zero()
            && self.fault() != SyncFault::OldKernel as u8
    }

    /// Runs an epoch if one is due and no other thread took it.
    fn run_if_due(&self, now: Instant) {
        {
            let Ok(mut due) = self.next_due.try_lock() else {
                return;
            };
            if now < *due {
                return;
            }
            *due = now + self.interval;
        }
        let epoch = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        // Not holding the lock across `syncfs`: a writer creating a file would wait for it. The
        // descriptors stay open: entries are never removed while `self` lives.
        let fds: Vec<(u64, std::os::fd::RawFd)> = self
            .devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(dev, dir)| (*dev, dir.as_raw_fd()))
            .collect();
        for (dev, fd) in fds {
            self.syncfs_calls.fetch_add(1, Ordering::Relaxed);
            let res = if self.fault() == SyncFault::SyncfsFails as u8 {
                Err(nix::errno::Errno::EIO)
            } else {
                nix::unistd::syncfs(fd)
            };
            if let Err(e) = res {
                tracing::warn!(error = %e, dev, "syncfs failed: writers sync each file on its own");
                self.failed.fetch_max(epoch, Ordering::SeqCst);
            }
        }
        self.completed.store(epoch, Ordering::SeqCst);
    }
}

/// A store's writer threads.
pub(crate) struct Pool {
    workers: Mutex<Vec<Worker>>,
    tick: Duration,
    flush_interval: Duration,
    pub epochs: Arc<SyncEpochs>,
}

static THREAD_NO: AtomicU64 = AtomicU64::new(0);

fn lock(m: &Mutex<Inbox>) -> MutexGuard<'_, Inbox> {
    // A panic never happens while an inbox is locked; recover the data if it did.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pool {
    pub fn new(fragment_ms: u32, flush_interval_ms: u32) -> Pool {
        Pool {
            workers: Mutex::new(Vec::new()),
            tick: Duration::from_millis(u64::from(fragment_ms.max(4) / 4)),
            flush_interval: Duration::from_millis(u64::from(flush_interval_ms)),
            epochs: Arc::new(SyncEpochs::new(Duration::from_millis(u64::from(
                flush_interval_ms,
            )))),
        }
    }

    /// Hands `slot` to the least loaded thread, starting a thread when every running one has
    /// [`STREAMS_PER_THREAD`] streams (up to [`MAX_THREADS`]). Returns the thread to unpark.
    pub fn add(&self, slot: Slot) -> std::io::Result<Thread> {
        let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        workers.retain(|w| !lock(&w.inbox).exited);
        let total: usize = workers.iter().map(|w| lock(&w.inbox).streams).sum();
        let want = (total + 1)
            .div_ceil(STREAMS_PER_THREAD)
            .clamp(1, MAX_THREADS);
        if workers.len() >= want
            && let Some(w) = workers.iter().min_by_key(|w| lock(&w.inbox).streams)
        {
            let mut inbox = lock(&w.inbox);
            // `retain` above saw it running and only the thread itself sets `exited`, under
            // this lock, when it has no stream at all; it has at least the ones counted.
            if !inbox.exited {
                inbox.new.push(slot);
                inbox.streams += 1;
                drop(inbox);
                w.thread.unpark();
                return Ok(w.thread.clone());
            }
        }
        let inbox = Arc::new(Mutex::new(Inbox {
            new: vec![slot],
            streams: 1,
            exited: false,
        }));
        let (tick, flush) = (self.tick, self.flush_interval);
        let inbox2 = inbox.clone();
        let epochs = self.epochs.clone();
        let thread = std::thread::Builder::new()
            .name(format!(
                "writer-{}",
                THREAD_NO.fetch_add(1, Ordering::Relaxed)
            ))
            .spawn(move || run(&inbox2, &epochs, tick, flush))?
            .thread()
            .clone();
        workers.push(Worker {
            inbox,
            thread: thread.clone(),
        });
        Ok(thread)
    }
}

/// A writer thread's loop: see the module documentation.
fn run(inbox: &Mutex<Inbox>, epochs: &SyncEpochs, tick: Duration, flush_interval: Duration) {
    let mut slots: Vec<Slot> = Vec::new();
    let mut next_flush = Instant::now() + flush_interval;
    loop {
        {
            let mut ib = lock(inbox);
            slots.append(&mut ib.new);
            if slots.is_empty() {
                ib.exited = true;
                return;
            }
        }
        let mut busy = false;
        let mut i = 0;
        while i < slots.len() {
            let drained =
                catch_unwind(AssertUnwindSafe(|| slots[i].drain())).unwrap_or_else(|_| {
                    let _e = slots[i].span.enter();
                    tracing::error!("writer panicked: the stream stops recording");
                    Drained::Ended
                });
            match drained {
                Drained::Idle => i += 1,
                Drained::More => {
                    busy = true;
                    i += 1;
                }
                Drained::Ended => {
                    slots.swap_remove(i).end();
                    lock(inbox).streams -= 1;
                }
            }
        }
        let now = Instant::now();
        // Not grouped with `flush_interval_ms = 0` either: recorders then sync every fragment
        // themselves, and `flush_alone` only updates their index entries.
        let grouped = epochs.grouped();
        let flush_alone = !grouped && now >= next_flush;
        if grouped {
            epochs.run_if_due(now);
        }
        for s in &mut slots {
            let _e = s.span.enter();
            let step = catch_unwind(AssertUnwindSafe(|| {
                if grouped {
                    s.rec.group_step(epochs);
                } else if flush_alone {
                    s.rec.flush_alone();
                }
            }));
            if step.is_err() {
                tracing::error!("writer panicked while syncing");
            }
        }
        if flush_alone {
            next_flush = now + flush_interval;
        }
        if !busy {
            // Grouped: epochs are checked at every pass, so due at most one tick late.
            let wait = if grouped {
                tick
            } else {
                tick.min(next_flush.saturating_duration_since(Instant::now()))
            };
            std::thread::park_timeout(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mark waits for the first epoch that starts after it; one due epoch runs one `syncfs`
    /// per registered filesystem, and none runs before the interval has passed again.
    #[test]
    fn an_epoch_covers_marks_taken_before_it_starts() {
        let dir = tempfile::tempdir().unwrap();
        let e = SyncEpochs::new(Duration::from_secs(2));
        e.register(7, dir.path());
        e.register(7, dir.path()); // known filesystem: not opened again
        let wait_for = e.next_to_start();
        assert!(e.completed() < wait_for);
        e.run_if_due(Instant::now()); // not due for 2 s
        assert_eq!((e.completed(), e.syncfs_calls()), (0, 0));
        let later = Instant::now() + Duration::from_secs(3);
        e.run_if_due(later);
        assert!(e.completed() >= wait_for);
        assert!(!e.failed_since(wait_for));
        assert_eq!(e.syncfs_calls(), 1);
        // A mark taken now needs the next epoch, which is not due until 2 s after this one.
        let next = e.next_to_start();
        assert!(next > e.completed());
        e.run_if_due(later + Duration::from_secs(1));
        assert!(e.completed() < next);
        e.run_if_due(later + Duration::from_secs(2));
        assert!(e.completed() >= next);
        assert_eq!(e.syncfs_calls(), 2);
    }
}

//! The writer threads: every stream's [`Recorder`] runs on one of a few shared threads, not on a
//! thread of its own.
//!
//! A thread owns up to [`STREAMS_PER_THREAD`] streams (more once [`MAX_THREADS`] threads run).
//! It wakes once per tick (a quarter of `fragment_ms`, so a complete fragment waits at most that
//! long before it is written), drains each of its streams' queues, and once per
//! `flush_interval_ms` makes everything its streams wrote durable with [`sync_group`]: one
//! `syncfs` per filesystem instead of one `fdatasync` per file. Senders wake a thread early
//! only for control messages and for a queue past half full.
//!
//! Why: with a thread per stream, 50 streams meant 50 threads each woken about five times a
//! second and 50 `fdatasync`s (each a device cache flush) a second: about 40 % of Vigie's CPU
//! (docs/BENCHMARKS.md, "Writer pool"). The cost is isolation: a write that blocks holds up the
//! other streams of its thread, whose queues (`writer_queue_bytes` each) absorb the delay; they
//! share the disk anyway.
//!
//! A thread exits when its last stream has ended; [`Pool::add`] starts threads as needed.
//! A panic while handling one stream ends that stream's writer only.
//!
//! Not here: what a recorder does with a message, segments, files and the index (`writer`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::{Flow, Msg, Recorder, sync_group};

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

/// A store's writer threads.
pub(crate) struct Pool {
    workers: Mutex<Vec<Worker>>,
    tick: Duration,
    flush_interval: Duration,
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
        let thread = std::thread::Builder::new()
            .name(format!(
                "writer-{}",
                THREAD_NO.fetch_add(1, Ordering::Relaxed)
            ))
            .spawn(move || run(&inbox2, tick, flush))?
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
fn run(inbox: &Mutex<Inbox>, tick: Duration, flush_interval: Duration) {
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
        if now >= next_flush {
            let mut recs: Vec<&mut Recorder> = slots.iter_mut().map(|s| &mut s.rec).collect();
            if catch_unwind(AssertUnwindSafe(|| sync_group(&mut recs))).is_err() {
                tracing::error!("writer panicked while syncing");
            }
            next_flush = now + flush_interval;
        }
        if !busy {
            let wait = tick.min(next_flush.saturating_duration_since(Instant::now()));
            std::thread::park_timeout(wait);
        }
    }
}

//! The ingest runtime: the threads that run the RTSP sessions, woken at most once per tick.
//!
//! Reading each RTP packet as soon as it arrives costs a thread wake-up per packet burst: tokio's
//! I/O driver sleeps in `epoll_wait`, and every TCP segment that reaches a session's socket wakes
//! it (edge-triggered readiness), whether or not the session is waiting for data. Delaying the
//! reads inside the session task does not help: the driver thread is still woken per packet
//! (measured at N = 50: 940 context switches/s instead of 500–780).
//!
//! Here each ingest thread runs a current-thread tokio runtime whose park hook, each time the
//! thread has nothing left to do, first sleeps (outside `epoll_wait`, so arriving packets do not
//! wake it) until the next tick of a process-wide grid of period `tick`. Meanwhile the kernel
//! queues the packets in the sockets' receive buffers; at the tick one `epoll_wait` returns
//! every socket with data, and each session reads and handles everything buffered in one go (one
//! `readv` per 64 KiB, one clock read per batch, no timer or cancellation poll per frame). A
//! thread thus wakes about 1 / `tick` times a second whatever the number of streams.
//!
//! Measured with `vigie run` recording 50 camsim streams (half 2, half 4 Mbit/s, 25 fps), CPU of
//! the threads running the sessions, % of one core, interleaved runs on the shared 2-vCPU VM:
//! tokio workers as before 3.7–4.7 (250–740 context switches/s); this runtime with a 47 ms tick
//! 3.4–4.0, 97 ms 2.7–3.1 (~60 context switches/s, mostly preemptions), 197 ms 2.5–3.6. The
//! rest is per-byte and per-packet work (the kernel's copy to user space, retina's copy of each
//! frame out of its ring buffer, its Annex B scan, RTP parsing) that no batching removes.
//!
//! Costs, with the default 91 ms tick ([`DEFAULT_TICK`]):
//! * Frames reach the writer and the live view up to one tick later (the live-view latency
//!   budget is 2 s).
//! * A frame's `recv` time is taken when it is handled, up to one tick after it arrived. The
//!   writer takes a run's wall-clock start as the minimum of `recv − media offset` over the first
//!   fragment's frames (~1 s), and the drift over each segment from the same minimum over all its
//!   frames; that cancels a delay that varies from frame to frame, not a constant one. So the
//!   tick must not share a period with the camera's frame interval: with a 100 ms tick, every
//!   frame of a 10 fps camera would be handled the same time after its arrival (up to 100 ms,
//!   a bias of the whole run). 91 ms was chosen by computing, for every tick from 40 to 130 ms
//!   and the usual frame intervals (20 to 200 ms: 50 to 5 fps), how long after its arrival the
//!   earliest-handled frame of the first second is, in the worst phase: with 91 ms, at most
//!   2–6 ms from 50 to 15 fps, 10–12 ms at 12.5–8 fps, 19 ms at 5 fps (97 ms: 23 ms at 20 fps,
//!   70 ms at 10 fps; real frame timing has jitter, which only spreads the phases further).
//! * Timers (stall, connect timeouts, RTSP keep-alives) fire up to one tick late; they are
//!   seconds long.
//! * Each socket holds one tick of data: 49 KB at 4 Mbit/s, plus a key-frame burst (~100–200 KB
//!   at 1080p). Over TCP that is lossless: when the receive buffer (128 KiB at first, auto-tuned
//!   up to `net.ipv4.tcp_rmem`'s maximum as the batches grow) is full the camera waits, and it
//!   is emptied every tick. UDP has no such back-pressure, and retina binds its UDP sockets with
//!   the default `net.core.rmem_default` buffer (208 KiB here), in which a 1.4 KB datagram takes
//!   ~2.3 KB: one tick plus a 1080p key frame could overflow it, so UDP sessions are not run here
//!   ([`crate::spawn_stream`] runs them on the caller's runtime, reading packets as they arrive).
//!
//! A thread that was busy for a whole tick does not sleep before parking (it is behind and data
//! is waiting), so the pacing never costs throughput under load.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// The default tick (see the module documentation for why 91 ms).
pub const DEFAULT_TICK: Duration = Duration::from_millis(91);

/// Streams per ingest thread: at a 91 ms tick one thread spends ~0.06 % of a core per 2–4 Mbit/s
/// stream (3 % for 50), so 200 streams keep it around an eighth of a core, with room for
/// higher bit rates; more threads each cost only their ~10 wake-ups a second.
pub const STREAMS_PER_THREAD: usize = 200;

/// How many ingest threads to start for `streams` streams: one per [`STREAMS_PER_THREAD`],
/// at least 1, at most one per core.
pub fn threads_for(streams: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    streams.div_ceil(STREAMS_PER_THREAD).clamp(1, cores.max(1))
}

/// Threads running ingest sessions (see the module documentation). The threads stop when the
/// last reference is dropped (each stream task spawned by [`crate::spawn_stream`] holds one
/// until it ends); tasks still running on them are then dropped.
#[derive(Debug)]
pub struct IngestRuntime {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stop: CancellationToken,
    tick: Duration,
}

impl IngestRuntime {
    /// Starts `threads` (at least 1) ingest threads, each waking at most once per `tick`
    /// (zero: whenever a packet arrives, as a plain runtime would).
    pub fn start(threads: usize, tick: Duration) -> std::io::Result<IngestRuntime> {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("ingest-{i}"))
                .spawn(move || {
                    let mut b = tokio::runtime::Builder::new_current_thread();
                    b.enable_all();
                    if !tick.is_zero() {
                        b.on_thread_park(move || pace(tick))
                            .on_thread_unpark(|| AWAKE_SINCE.set(Some(Instant::now())));
                    }
                    match b.build() {
                        Ok(rt) => {
                            let _ = tx.send(Ok(rt.handle().clone()));
                            rt.block_on(stop.cancelled());
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                })?;
            let handle = rx
                .recv()
                .map_err(|_| std::io::Error::other("ingest thread ended at start-up"))??;
            handles.push(handle);
        }
        Ok(IngestRuntime {
            handles,
            next: AtomicUsize::new(0),
            stop,
            tick,
        })
    }

    /// The runtime of the next thread, round-robin.
    pub fn handle(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    pub fn threads(&self) -> usize {
        self.handles.len()
    }

    pub fn tick(&self) -> Duration {
        self.tick
    }
}

impl Drop for IngestRuntime {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

thread_local! {
    /// When this ingest thread last woke up.
    static AWAKE_SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The park hook: sleeps until the next tick, unless the thread has been busy for a whole tick.
fn pace(tick: Duration) {
    let now = Instant::now();
    if AWAKE_SINCE
        .get()
        .is_some_and(|t| now.duration_since(t) >= tick)
    {
        return;
    }
    std::thread::sleep(next_tick(now, tick) - now);
}

/// The first instant after `now` on a process-wide grid of period `tick`: all ingest threads
/// wake together, and one wake-up serves every stream of a thread.
fn next_tick(now: Instant, tick: Duration) -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let tick_ns = tick.as_nanos().max(1);
    let since = now.saturating_duration_since(epoch).as_nanos();
    let k = since / tick_ns + 1;
    let ns = u64::try_from(k.saturating_mul(tick_ns)).unwrap_or(u64::MAX);
    epoch + Duration::from_nanos(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_on_a_grid() {
        let tick = Duration::from_millis(47);
        let t0 = next_tick(Instant::now(), tick);
        let t1 = next_tick(t0, tick);
        assert_eq!(t1 - t0, tick);
        assert_eq!(next_tick(t0 + Duration::from_millis(1), tick), t1);
        assert_eq!(next_tick(t1 - Duration::from_millis(1), tick), t1);
    }

    #[test]
    fn thread_count() {
        assert_eq!(threads_for(0), 1);
        assert_eq!(threads_for(50), 1);
        assert!(threads_for(100_000) <= std::thread::available_parallelism().unwrap().get());
    }

    #[test]
    fn runs_tasks() {
        let rt = IngestRuntime::start(2, DEFAULT_TICK).unwrap();
        assert_eq!(rt.threads(), 2);
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..4 {
            let tx = tx.clone();
            rt.handle().spawn(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                tx.send(i).unwrap();
            });
        }
        let mut got: Vec<i32> = (0..4)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, vec![0, 1, 2, 3]);
    }
}

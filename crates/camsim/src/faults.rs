//! Per-mount shared state: the fixture being served, the fault switches flipped by
//! [`MountControl`] and read by every session of the mount, and the sent-media counters.
//!
//! Everything a session reads per frame is an atomic; the only lock guards the current fixture
//! and is taken when it changes (a generation counter tells sessions to look).

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::auth::Auth;
use crate::fixture::Fixture;
use crate::rogue::Rogue;

/// What [`MountControl::send_garbage`] sends to each playing session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Garbage {
    /// Interleaved frames (TCP) or datagrams (UDP) on the RTP channel whose content is random
    /// bytes that are not valid RTP (version 0): tests the client's RTP parser.
    Rtp,
    /// Raw random bytes on the RTSP connection outside any `$` framing (TCP only; UDP sessions
    /// get [`Garbage::Rtp`]): the client sees a malformed RTSP message.
    Raw,
}

/// Counters of what a mount has sent, summed over its sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MountStats {
    /// Frames (access units) sent.
    pub frames: u64,
    /// RTP packets sent.
    pub packets: u64,
    /// RTP bytes sent (12-byte headers + payloads; no interleave/UDP/IP overhead).
    pub bytes: u64,
    /// Sessions currently playing.
    pub sessions_active: u64,
    /// Sessions that started playing since the server started.
    pub sessions_total: u64,
    /// RTSP requests answered 401.
    pub auth_failures: u64,
    /// RTSP requests that carried `Authorization: Basic` (a password in clear).
    pub basic_credentials: u64,
    /// Frames sent by replay sessions (from the card; not in `frames`).
    pub replayed_frames: u64,
    /// Replay sessions that started playing.
    pub replay_sessions: u64,
}

pub(crate) struct MountState {
    pub name: String,
    pub auth: Option<Auth>,
    pub speed: f64,
    fixture: Mutex<Arc<Fixture>>,
    pub fixture_gen: AtomicU64,
    pub drop_tx: watch::Sender<u64>,
    epoch: Instant,
    refuse_until_ms: AtomicU64,
    stall_until_ms: AtomicU64,
    pub ts_offset: AtomicI64,
    pub divisor: AtomicU32,
    /// Generation counter and kind (0 = Rtp, 1 = Raw) of the last garbage request.
    pub garbage_gen: AtomicU64,
    pub garbage_kind: AtomicU32,
    pub frames: AtomicU64,
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub sessions_active: AtomicU64,
    pub sessions_total: AtomicU64,
    pub auth_failures: AtomicU64,
    pub basic_credentials: AtomicU64,
    pub rogue: Option<Rogue>,
    /// The simulated recording card ([`crate::card`]), if the mount has one.
    pub card: Option<crate::card::Card>,
    pub replayed_frames: AtomicU64,
    pub replay_sessions: AtomicU64,
}

impl MountState {
    pub fn new(name: String, fixture: Arc<Fixture>, auth: Option<Auth>, speed: f64) -> Self {
        MountState {
            name,
            auth,
            speed,
            fixture: Mutex::new(fixture),
            fixture_gen: AtomicU64::new(0),
            drop_tx: watch::Sender::new(0),
            epoch: Instant::now(),
            refuse_until_ms: AtomicU64::new(0),
            stall_until_ms: AtomicU64::new(0),
            ts_offset: AtomicI64::new(0),
            divisor: AtomicU32::new(1),
            garbage_gen: AtomicU64::new(0),
            garbage_kind: AtomicU32::new(0),
            frames: AtomicU64::new(0),
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            sessions_active: AtomicU64::new(0),
            sessions_total: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            basic_credentials: AtomicU64::new(0),
            rogue: None,
            card: None,
            replayed_frames: AtomicU64::new(0),
            replay_sessions: AtomicU64::new(0),
        }
    }

    pub fn fixture(&self) -> Arc<Fixture> {
        match self.fixture.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn until(&self, d: Duration) -> u64 {
        self.now_ms().saturating_add(d.as_millis() as u64)
    }

    pub fn refusing(&self) -> bool {
        self.now_ms() < self.refuse_until_ms.load(Relaxed)
    }

    pub fn stalled(&self) -> bool {
        let until = self.stall_until_ms.load(Relaxed);
        until != 0 && self.now_ms() < until
    }
}

/// Runtime control of one mount: inject faults, read counters. Cheap to clone.
#[derive(Clone)]
pub struct MountControl {
    pub(crate) state: Arc<MountState>,
}

impl std::fmt::Debug for MountControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountControl")
            .field("name", &self.state.name)
            .finish_non_exhaustive()
    }
}

impl MountControl {
    /// Mount name (the URL path).
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The fixture currently served.
    pub fn fixture(&self) -> Arc<Fixture> {
        self.state.fixture()
    }

    /// Closes every connection that uses this mount now (clients see EOF). New connections are
    /// accepted as usual.
    pub fn drop_sessions(&self) {
        self.state.drop_tx.send_modify(|g| *g += 1);
    }

    /// For `d`, any request on this mount is answered `503 Service Unavailable` and the
    /// connection is closed. Sessions already playing continue.
    pub fn refuse_for(&self, d: Duration) {
        self.state
            .refuse_until_ms
            .store(self.state.until(d), Relaxed);
    }

    /// For `d`, playing sessions keep their connection but receive no media; the frames that
    /// fall in the stall are skipped (as if the camera's network froze), so media resumes with a
    /// timestamp gap of about `d`, possibly in the middle of a GOP.
    pub fn stall_for(&self, d: Duration) {
        self.state
            .stall_until_ms
            .store(self.state.until(d), Relaxed);
    }

    /// Adds `ticks_90k` (may be negative) to the RTP timestamps of every current and future
    /// session of this mount, once: the next frame jumps, the following ones continue from there.
    pub fn timestamp_jump(&self, ticks_90k: i64) {
        self.state.ts_offset.fetch_add(ticks_90k, Relaxed);
    }

    /// Serves another fixture from the next frame on: playing sessions continue with
    /// continuous sequence numbers and timestamps, starting at the new fixture's first key frame
    /// (which carries its SPS/PPS in band). The SDP of later DESCRIBEs describes the new one.
    pub fn switch_fixture(&self, fixture: Arc<Fixture>) {
        match self.state.fixture.lock() {
            Ok(mut g) => *g = fixture,
            Err(p) => *p.into_inner() = fixture,
        }
        self.state.fixture_gen.fetch_add(1, Relaxed);
    }

    /// Sends only every `n`-th frame (and every key frame) with its original timestamp, so a
    /// 25 fps fixture with `n = 5` is seen as 5 fps. `n <= 1` restores the full rate.
    pub fn set_frame_divisor(&self, n: u32) {
        self.state.divisor.store(n.max(1), Relaxed);
    }

    /// Makes every playing session send a burst of garbage once (see [`Garbage`]); sessions
    /// then continue sending media.
    pub fn send_garbage(&self, kind: Garbage) {
        self.state
            .garbage_kind
            .store(u32::from(kind == Garbage::Raw), Relaxed);
        self.state.garbage_gen.fetch_add(1, Relaxed);
    }

    /// The mount's recording card, if any: `[from, until)` it holds now, in Unix milliseconds.
    pub fn card_coverage_ms(&self) -> Option<(i64, i64)> {
        self.state.card.map(|c| c.coverage(crate::card::now_ms()))
    }

    /// Counters so far.
    pub fn stats(&self) -> MountStats {
        let s = &self.state;
        MountStats {
            frames: s.frames.load(Relaxed),
            packets: s.packets.load(Relaxed),
            bytes: s.bytes.load(Relaxed),
            sessions_active: s.sessions_active.load(Relaxed),
            sessions_total: s.sessions_total.load(Relaxed),
            auth_failures: s.auth_failures.load(Relaxed),
            basic_credentials: s.basic_credentials.load(Relaxed),
            replayed_frames: s.replayed_frames.load(Relaxed),
            replay_sessions: s.replay_sessions.load(Relaxed),
        }
    }
}

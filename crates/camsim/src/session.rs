//! One RTSP connection: answers requests, owns the (single) RTP session set up on it, and paces
//! the media (TCP interleaved or UDP) in the same task, so responses and media never interleave
//! mid-message and no lock is needed.
//!
//! Per frame, a session only writes 16-byte headers (`$` prefix + RTP header) into a reusable
//! buffer and hands them with the shared payload [`bytes::Bytes`] to one vectored write.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::faults::MountState;
use crate::fixture::Fixture;
use crate::h26x::Codec;
use crate::packetize::RtpPayload;
use crate::rogue::{self, Rogue};
use crate::rtp::{RTP_HEADER_LEN, ntp_now, write_rtp_header, write_sender_report};
use crate::rtsp::{Parsed, Request, Response, TransportSpec, parse, parse_transport, url_path};
use crate::sdp::{PAYLOAD_TYPE, TRACK_CONTROL, build_sdp};
use crate::server::Shared;

/// Session timeout announced in the `Session` header; UDP sessions with no RTSP request for
/// this long are closed (TCP sessions live as long as their connection).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// Interval between RTCP sender reports.
pub const SR_INTERVAL: Duration = Duration::from_secs(5);
/// If a session falls further behind its schedule than this (CPU starvation), it skips ahead
/// instead of bursting the backlog.
const MAX_LAG: Duration = Duration::from_millis(500);
/// Packets per vectored write (two slices each).
const BATCH: usize = 32;

const PUBLIC: &str = "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER, SET_PARAMETER";

enum Transport {
    Tcp { rtp_channel: u8, rtcp_channel: u8 },
    Udp { rtp: UdpSocket, rtcp: UdpSocket },
}

struct Play {
    fixture: Arc<Fixture>,
    fixture_gen: u64,
    garbage_gen: u64,
    pos: usize,
    frame_counter: u64,
    /// Media time (90 kHz, since PLAY) of the next frame.
    ticks: u64,
    anchor: Instant,
    anchor_ticks: u64,
    next_sr: Instant,
    sent_any: bool,
    /// A rogue media attack was sent (once per session).
    attacked: bool,
    /// A replay of the card ([`crate::card`]): frames left to send; the connection closes
    /// after the last one.
    replay_left: Option<u64>,
}

struct Session {
    id: String,
    track_url: String,
    transport: Transport,
    ssrc: u32,
    seq: u16,
    ts_base: u32,
    packets: u32,
    octets: u32,
    play: Option<Play>,
}

struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    local: SocketAddr,
    writer: OwnedWriteHalf,
    mount: Option<Arc<MountState>>,
    drop_rx: Option<watch::Receiver<u64>>,
    session: Option<Session>,
    close: bool,
    last_request: Instant,
    /// Reusable buffers: per-packet headers for vectored writes, UDP datagram / RTCP assembly.
    headers: Vec<u8>,
    scratch: Vec<u8>,
}

/// Decrements the mount's active-session gauge when a playing session ends.
struct ActiveGuard(Arc<MountState>);
impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.sessions_active.fetch_sub(1, Relaxed);
    }
}

pub(crate) async fn serve_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let (mut reader, writer) = stream.into_split();
    let mut conn = Conn {
        shared,
        peer,
        local,
        writer,
        mount: None,
        drop_rx: None,
        session: None,
        close: false,
        last_request: Instant::now(),
        headers: Vec::with_capacity(BATCH * 16),
        scratch: Vec::with_capacity(1500),
    };
    let mut inbuf = BytesMut::with_capacity(4096);
    let mut _active: Option<ActiveGuard> = None;
    debug!(%peer, "connection");
    let result: std::io::Result<()> = async {
        loop {
            let wake = conn.next_wake();
            let was_playing = conn.playing();
            if inbuf.capacity() - inbuf.len() < 1024 {
                inbuf.reserve(4096);
            }
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                _ = drop_signal(&mut conn.drop_rx) => {
                    info!(%peer, mount = conn.mount_name(), "dropping connection (fault)");
                    break;
                }
                r = reader.read_buf(&mut inbuf) => {
                    if r? == 0 {
                        break;
                    }
                    conn.handle_input(&mut inbuf).await?;
                }
                _ = sleep_until_opt(wake) => conn.on_timer().await?,
            }
            if !was_playing
                && conn.playing()
                && !conn.replaying()
                && let Some(m) = &conn.mount
            {
                m.sessions_active.fetch_add(1, Relaxed);
                m.sessions_total.fetch_add(1, Relaxed);
                _active = Some(ActiveGuard(m.clone()));
            }
            if conn.close {
                break;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        debug!(%peer, error = %e, "connection ended with error");
    }
    let _ = conn.writer.shutdown().await;
    debug!(%peer, "connection closed");
}

async fn drop_signal(rx: &mut Option<watch::Receiver<u64>>) {
    match rx {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Conn {
    fn playing(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.play.is_some())
    }

    /// The session replays the card (not counted as a live session).
    fn replaying(&self) -> bool {
        self.session
            .as_ref()
            .and_then(|s| s.play.as_ref())
            .is_some_and(|p| p.replay_left.is_some())
    }

    fn mount_name(&self) -> &str {
        self.mount.as_ref().map_or("", |m| m.name.as_str())
    }

    fn speed(&self) -> f64 {
        self.mount.as_ref().map_or(1.0, |m| m.speed)
    }

    fn frame_deadline(&self, p: &Play) -> Instant {
        let speed = if p.replay_left.is_some() {
            self.speed() * crate::card::REPLAY_SPEEDUP
        } else {
            self.speed()
        };
        let secs = (p.ticks - p.anchor_ticks) as f64 / 90_000.0 / speed;
        p.anchor + Duration::from_secs_f64(secs)
    }

    fn next_wake(&self) -> Option<Instant> {
        let s = self.session.as_ref()?;
        let frame = s.play.as_ref().map(|p| self.frame_deadline(p));
        let idle = matches!(s.transport, Transport::Udp { .. })
            .then(|| self.last_request + SESSION_TIMEOUT);
        match (frame, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    async fn on_timer(&mut self) -> std::io::Result<()> {
        let now = Instant::now();
        if let Some(s) = &self.session
            && matches!(s.transport, Transport::Udp { .. })
            && now >= self.last_request + SESSION_TIMEOUT
        {
            info!(peer = %self.peer, mount = self.mount_name(), "UDP session timed out");
            self.close = true;
            return Ok(());
        }
        // Send every frame that is due (normally one), skipping ahead if badly late.
        loop {
            let Some(p) = self.session.as_ref().and_then(|s| s.play.as_ref()) else {
                return Ok(());
            };
            let deadline = self.frame_deadline(p);
            if deadline > now {
                return Ok(());
            }
            if now - deadline > MAX_LAG
                && let Some(p) = self.session.as_mut().and_then(|s| s.play.as_mut())
            {
                p.anchor = now;
                p.anchor_ticks = p.ticks;
            }
            self.send_frame().await?;
            if self.close {
                return Ok(());
            }
        }
    }

    async fn handle_input(&mut self, inbuf: &mut BytesMut) -> std::io::Result<()> {
        loop {
            match parse(inbuf) {
                Parsed::Incomplete => return Ok(()),
                Parsed::Skip(n) | Parsed::Interleaved { len: n, .. } => {
                    // Client RTCP (receiver reports) and stray line breaks: ignored.
                    inbuf.advance(n);
                }
                Parsed::Malformed { len, cseq } => {
                    debug!(peer = %self.peer, "malformed request");
                    self.respond(Response::new(400), cseq.as_deref()).await?;
                    if len == 0 {
                        self.close = true;
                        return Ok(());
                    }
                    inbuf.advance(len);
                }
                Parsed::Request(req, len) => {
                    inbuf.advance(len);
                    self.last_request = Instant::now();
                    self.handle_request(req).await?;
                }
            }
            if self.close {
                return Ok(());
            }
        }
    }

    async fn respond(&mut self, resp: Response, cseq: Option<&str>) -> std::io::Result<()> {
        let mut resp = resp;
        if let Some(s) = &self.session
            && resp.status != 454
        {
            resp.headers.push((
                "Session",
                format!("{};timeout={}", s.id, SESSION_TIMEOUT.as_secs()),
            ));
        }
        self.writer.write_all(&resp.serialize(cseq)).await
    }

    /// Finds the mount a URL refers to: the whole path, or the path minus a last
    /// (track control) segment.
    fn resolve(&self, uri: &str) -> Option<(Arc<MountState>, bool)> {
        let path = url_path(uri)?;
        if let Some(m) = self.shared.mounts.get(path) {
            return Some((m.clone(), false));
        }
        let (base, _track) = path.rsplit_once('/')?;
        self.shared.mounts.get(base).map(|m| (m.clone(), true))
    }

    async fn handle_request(&mut self, req: Request) -> std::io::Result<()> {
        let cseq = req.header("CSeq").map(str::to_owned);
        debug!(peer = %self.peer, method = %req.method, uri = %req.uri, "request");
        let Some(cseq) = cseq else {
            return self.respond(Response::new(400), None).await;
        };
        let cseq = Some(cseq.as_str());
        if req.method == "OPTIONS" && req.uri == "*" {
            return self
                .respond(Response::new(200).header("Public", PUBLIC), cseq)
                .await;
        }
        let Some((mount, is_track)) = self.resolve(&req.uri) else {
            return self.respond(Response::new(404), cseq).await;
        };
        if let Some(cur) = &self.mount
            && !Arc::ptr_eq(cur, &mount)
            && self.session.is_some()
        {
            return self.respond(Response::new(459), cseq).await;
        }
        if self.mount.is_none() {
            self.drop_rx = Some(mount.drop_tx.subscribe());
            self.mount = Some(mount.clone());
        }
        if mount.refusing() {
            info!(peer = %self.peer, mount = %mount.name, "refusing (fault)");
            self.respond(Response::new(503), cseq).await?;
            self.close = true;
            return Ok(());
        }
        if req
            .header("Authorization")
            .and_then(|v| v.trim().get(..5))
            .is_some_and(|s| s.eq_ignore_ascii_case("basic"))
        {
            mount.basic_credentials.fetch_add(1, Relaxed);
        }
        if req.method != "OPTIONS"
            && let Some(auth) = &mount.auth
            && !auth.check(req.header("Authorization"), &req.method, &self.shared.nonce)
        {
            mount.auth_failures.fetch_add(1, Relaxed);
            let challenge = auth.challenge(&self.shared.nonce);
            return self
                .respond(
                    Response::new(401).header("WWW-Authenticate", challenge),
                    cseq,
                )
                .await;
        }
        // Requests naming a session must name ours.
        if let Some(sid) = req.header("Session") {
            let sid = sid.split(';').next().unwrap_or("").trim();
            if self.session.as_ref().is_none_or(|s| s.id != sid) {
                return self.respond(Response::new(454), cseq).await;
            }
        }
        match req.method.as_str() {
            "OPTIONS" => {
                self.respond(Response::new(200).header("Public", PUBLIC), cseq)
                    .await
            }
            "DESCRIBE" => {
                if let Some(mode @ (Rogue::EndlessHeader | Rogue::HugeContentLength)) = mount.rogue
                {
                    self.rogue_describe(mode, cseq).await?;
                    self.close = true;
                    return Ok(());
                }
                let fixture = mount.fixture();
                let mut sdp = build_sdp(&mount.name, &fixture, rand::random::<u32>().into());
                if let Some(mode) = mount.rogue {
                    sdp = rogue::rogue_sdp(mode, sdp);
                }
                let base = format!("{}/", req.uri.trim_end_matches('/'));
                let resp = Response::new(200)
                    .header("Content-Base", base)
                    .body("application/sdp", sdp);
                self.respond(resp, cseq).await
            }
            "SETUP" => self.setup(&req, is_track, cseq).await,
            "PLAY" => self.play(&req, cseq).await,
            "TEARDOWN" => {
                self.respond(Response::new(200), cseq).await?;
                self.session = None;
                self.close = true;
                Ok(())
            }
            "GET_PARAMETER" | "SET_PARAMETER" => self.respond(Response::new(200), cseq).await,
            _ => {
                self.respond(Response::new(501).header("Public", PUBLIC), cseq)
                    .await
            }
        }
    }

    async fn setup(
        &mut self,
        req: &Request,
        is_track: bool,
        cseq: Option<&str>,
    ) -> std::io::Result<()> {
        if is_track && url_path(&req.uri).and_then(|p| p.rsplit('/').next()) != Some(TRACK_CONTROL)
        {
            return self.respond(Response::new(404), cseq).await;
        }
        if self.playing() {
            return self.respond(Response::new(455), cseq).await;
        }
        let Some(spec) = req.header("Transport").and_then(parse_transport) else {
            return self.respond(Response::new(461), cseq).await;
        };
        let (transport, reply) = match spec {
            TransportSpec::Tcp {
                rtp_channel,
                rtcp_channel,
            } => (
                Transport::Tcp {
                    rtp_channel,
                    rtcp_channel,
                },
                format!("RTP/AVP/TCP;unicast;interleaved={rtp_channel}-{rtcp_channel}"),
            ),
            TransportSpec::Udp {
                rtp_port,
                rtcp_port,
            } => {
                let Ok((rtp, rtcp)) = bind_udp_pair(self.local.ip()).await else {
                    return self.respond(Response::new(500), cseq).await;
                };
                let dest_rtp = SocketAddr::new(self.peer.ip(), rtp_port);
                let dest_rtcp = SocketAddr::new(self.peer.ip(), rtcp_port);
                if rtp.connect(dest_rtp).await.is_err() || rtcp.connect(dest_rtcp).await.is_err() {
                    return self.respond(Response::new(461), cseq).await;
                }
                let (sp, sq) = (
                    rtp.local_addr().map_or(0, |a| a.port()),
                    rtcp.local_addr().map_or(0, |a| a.port()),
                );
                (
                    Transport::Udp { rtp, rtcp },
                    format!(
                        "RTP/AVP;unicast;client_port={rtp_port}-{rtcp_port};server_port={sp}-{sq}"
                    ),
                )
            }
        };
        let session = match self.session.take() {
            Some(mut s) => {
                s.transport = transport;
                s.track_url = req.uri.clone();
                s
            }
            None => Session {
                id: format!("{:016X}", rand::random::<u64>()),
                track_url: req.uri.clone(),
                transport,
                ssrc: rand::random(),
                seq: rand::random(),
                ts_base: rand::random(),
                packets: 0,
                octets: 0,
                play: None,
            },
        };
        let reply = format!("{reply};ssrc={:08X};mode=\"PLAY\"", session.ssrc);
        self.session = Some(session);
        self.respond(Response::new(200).header("Transport", reply), cseq)
            .await
    }

    async fn play(&mut self, req: &Request, cseq: Option<&str>) -> std::io::Result<()> {
        let Some(mount) = self.mount.clone() else {
            return self.respond(Response::new(455), cseq).await;
        };
        let replay = req
            .header("Require")
            .is_some_and(|v| v.split(',').any(|t| t.trim() == "onvif-replay"));
        if replay {
            return self.play_replay(req, &mount, cseq).await;
        }
        let Some(s) = self.session.as_mut() else {
            return self.respond(Response::new(455), cseq).await;
        };
        if s.play.is_none() {
            let now = Instant::now();
            s.play = Some(Play {
                fixture: mount.fixture(),
                fixture_gen: mount.fixture_gen.load(Relaxed),
                garbage_gen: mount.garbage_gen.load(Relaxed),
                pos: 0,
                frame_counter: 0,
                ticks: 0,
                anchor: now,
                anchor_ticks: 0,
                next_sr: now,
                sent_any: false,
                attacked: false,
                replay_left: None,
            });
            info!(peer = %self.peer, mount = %mount.name, "play");
        }
        let ticks = s.play.as_ref().map_or(0, |p| p.ticks);
        let rtptime = rtp_timestamp(s.ts_base, ticks, &mount);
        let info = format!("url={};seq={};rtptime={}", s.track_url, s.seq, rtptime);
        let resp = Response::new(200)
            .header("Range", "npt=now-")
            .header("RTP-Info", info);
        self.respond(resp, cseq).await
    }

    /// PLAY of a replay session: `Require: onvif-replay` and `Range: clock=START-END` on a
    /// mount with a card. Answers 551 (option not supported) without a card, 457 (invalid
    /// range) when the range is unreadable or outside the card, else the clipped range and the
    /// RTP timestamp of its first frame, then sends its frames faster than real time and closes
    /// the connection after the last one.
    async fn play_replay(
        &mut self,
        req: &Request,
        mount: &Arc<MountState>,
        cseq: Option<&str>,
    ) -> std::io::Result<()> {
        let Some(card) = mount.card else {
            return self
                .respond(
                    Response::new(551).header("Unsupported", "onvif-replay"),
                    cseq,
                )
                .await;
        };
        let fixture = mount.fixture();
        let now = crate::card::now_ms();
        let plan = req
            .header("Range")
            .and_then(crate::card::parse_clock_range)
            .and_then(|(a, b)| {
                let keys: Vec<bool> = fixture.frames().iter().map(|f| f.key).collect();
                card.plan_keyed(
                    a,
                    b.unwrap_or(now),
                    now,
                    fixture.frame_duration_90k(),
                    &keys,
                )
            });
        let Some(plan) = plan else {
            return self.respond(Response::new(457), cseq).await;
        };
        let Some(s) = self.session.as_mut() else {
            return self.respond(Response::new(455), cseq).await;
        };
        if s.play.is_some() {
            return self.respond(Response::new(455), cseq).await;
        }
        let start = Instant::now();
        s.play = Some(Play {
            fixture,
            fixture_gen: mount.fixture_gen.load(Relaxed),
            garbage_gen: mount.garbage_gen.load(Relaxed),
            pos: plan.first_pos,
            frame_counter: 0,
            ticks: 0,
            anchor: start,
            anchor_ticks: 0,
            next_sr: start,
            sent_any: false,
            attacked: false,
            replay_left: Some(plan.frames),
        });
        mount.replay_sessions.fetch_add(1, Relaxed);
        info!(peer = %self.peer, mount = %mount.name, start_ms = plan.start_ms, end_ms = plan.end_ms, frames = plan.frames, "replay");
        let rtptime = s.ts_base;
        let info = format!("url={};seq={};rtptime={}", s.track_url, s.seq, rtptime);
        let range = format!(
            "clock={}-{}",
            crate::card::format_clock(plan.start_ms),
            crate::card::format_clock(plan.end_ms)
        );
        let resp = Response::new(200)
            .header("Range", range)
            .header("RTP-Info", info)
            .header("Require", "onvif-replay");
        self.respond(resp, cseq).await
    }

    /// Sends the next frame of a replay session (no faults apply: the card is read locally).
    async fn send_replay_frame(&mut self, mount: &MountState) -> std::io::Result<()> {
        let Some(s) = self.session.as_mut() else {
            return Ok(());
        };
        let Some(p) = s.play.as_mut() else {
            return Ok(());
        };
        let Some(left) = p.replay_left else {
            return Ok(());
        };
        if left == 0 {
            self.close = true;
            return Ok(());
        }
        let fixture = p.fixture.clone();
        let Some(frame) = fixture.frames().get(p.pos) else {
            p.pos = 0;
            return Ok(());
        };
        let ts = s.ts_base.wrapping_add(p.ticks as u32);
        p.ticks += u64::from(fixture.frame_duration_90k());
        p.pos = (p.pos + 1) % fixture.frames().len();
        p.frame_counter += 1;
        p.replay_left = Some(left - 1);
        let Transport::Tcp { rtp_channel, .. } = s.transport else {
            // Over UDP, as for live (a lost datagram is a lost frame for the client).
            if let Transport::Udp { rtp, .. } = &s.transport {
                write_frame_udp(
                    rtp,
                    &mut self.scratch,
                    &frame.payloads,
                    &mut s.seq,
                    ts,
                    s.ssrc,
                )
                .await;
            }
            mount.replayed_frames.fetch_add(1, Relaxed);
            if left == 1 {
                self.close = true;
            }
            return Ok(());
        };
        write_frame_tcp(
            &mut self.writer,
            &mut self.headers,
            &frame.payloads,
            rtp_channel,
            &mut s.seq,
            ts,
            s.ssrc,
        )
        .await?;
        mount.replayed_frames.fetch_add(1, Relaxed);
        if left == 1 {
            self.close = true;
        }
        Ok(())
    }

    /// Sends the next frame of the session (or skips it, per faults) and advances the clock.
    async fn send_frame(&mut self) -> std::io::Result<()> {
        let Some(mount) = self.mount.clone() else {
            return Ok(());
        };
        let Some(s) = self.session.as_mut() else {
            return Ok(());
        };
        let Some(p) = s.play.as_mut() else {
            return Ok(());
        };
        if p.replay_left.is_some() {
            return self.send_replay_frame(&mount).await;
        }
        let fixture_gen = mount.fixture_gen.load(Relaxed);
        if fixture_gen != p.fixture_gen {
            p.fixture = mount.fixture();
            p.fixture_gen = fixture_gen;
            p.pos = 0;
            info!(mount = %mount.name, fixture = p.fixture.name(), "session switches fixture");
        }
        let fixture = p.fixture.clone();
        let Some(frame) = fixture.frames().get(p.pos) else {
            p.pos = 0;
            return Ok(());
        };
        let divisor = u64::from(mount.divisor.load(Relaxed).max(1));
        let send = !mount.stalled() && (frame.key || p.frame_counter % divisor == 0);
        let ts = rtp_timestamp(s.ts_base, p.ticks, &mount);
        let garbage_gen = mount.garbage_gen.load(Relaxed);
        let garbage = garbage_gen != p.garbage_gen;
        p.garbage_gen = garbage_gen;
        p.ticks += u64::from(fixture.frame_duration_90k());
        p.pos = (p.pos + 1) % fixture.frames().len();
        p.frame_counter += 1;
        let sr_due = send && (!p.sent_any || Instant::now() >= p.next_sr);
        if sr_due {
            p.sent_any = true;
            p.next_sr = Instant::now() + SR_INTERVAL;
        }

        let attack = match mount.rogue {
            Some(mode)
                if mode.is_media()
                    && !p.attacked
                    && p.frame_counter > rogue::FRAMES_BEFORE_ATTACK =>
            {
                p.attacked = true;
                Some((mode, fixture.codec() == Codec::H265))
            }
            _ => None,
        };
        if garbage {
            let raw = mount.garbage_kind.load(Relaxed) == 1;
            self.send_garbage(raw).await?;
        }
        if let Some((mode, h265)) = attack {
            // The frame's timestamp for the whole burst: one access unit that never ends.
            self.send_attack(mode, h265, ts, &mount).await?;
        }
        if !send {
            return Ok(());
        }
        let Some(s) = self.session.as_mut() else {
            return Ok(());
        };
        let bytes = match &s.transport {
            Transport::Tcp { rtp_channel, .. } => {
                write_frame_tcp(
                    &mut self.writer,
                    &mut self.headers,
                    &frame.payloads,
                    *rtp_channel,
                    &mut s.seq,
                    ts,
                    s.ssrc,
                )
                .await?
            }
            Transport::Udp { rtp, .. } => {
                write_frame_udp(
                    rtp,
                    &mut self.scratch,
                    &frame.payloads,
                    &mut s.seq,
                    ts,
                    s.ssrc,
                )
                .await
            }
        };
        let npk = frame.payloads.len() as u64;
        s.packets = s.packets.wrapping_add(npk as u32);
        s.octets = s.octets.wrapping_add(frame.payload_bytes as u32);
        mount.frames.fetch_add(1, Relaxed);
        mount.packets.fetch_add(npk, Relaxed);
        mount.bytes.fetch_add(bytes as u64, Relaxed);
        if sr_due {
            self.send_sender_report(ts).await?;
        }
        Ok(())
    }

    async fn send_sender_report(&mut self, ts: u32) -> std::io::Result<()> {
        let Some(s) = self.session.as_ref() else {
            return Ok(());
        };
        self.scratch.clear();
        if let Transport::Tcp { rtcp_channel, .. } = s.transport {
            self.scratch.extend_from_slice(&[b'$', rtcp_channel, 0, 0]);
        }
        let start = self.scratch.len();
        write_sender_report(
            &mut self.scratch,
            s.ssrc,
            ntp_now(),
            ts,
            s.packets,
            s.octets,
            "camsim@vigie",
        );
        match &s.transport {
            Transport::Tcp { .. } => {
                let len = (self.scratch.len() - start) as u16;
                self.scratch[2..4].copy_from_slice(&len.to_be_bytes());
                self.writer.write_all(&self.scratch).await
            }
            Transport::Udp { rtcp, .. } => {
                let _ = rtcp.send(&self.scratch).await;
                Ok(())
            }
        }
    }

    /// Answers DESCRIBE like an attacker: a header that never ends, or a 1 TiB body. Both are
    /// bounded by [`rogue::BURST_BYTES`] and stop when the client closes the connection.
    async fn rogue_describe(&mut self, mode: Rogue, cseq: Option<&str>) -> std::io::Result<()> {
        info!(peer = %self.peer, mount = self.mount_name(), mode = mode.name(), "rogue DESCRIBE answer");
        let cseq = cseq.unwrap_or("0");
        let head = match mode {
            Rogue::HugeContentLength => format!(
                "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\nContent-Length: 1099511627776\r\n\r\n"
            ),
            _ => format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n"),
        };
        self.writer.write_all(head.as_bytes()).await?;
        let chunk: Vec<u8> = match mode {
            Rogue::HugeContentLength => b"v=0\r\n".repeat(64 << 10 >> 2),
            _ => b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
                .repeat(800),
        };
        let mut sent = 0;
        while sent < rogue::BURST_BYTES {
            // An error is the client closing the connection: the attack is over.
            if self.writer.write_all(&chunk).await.is_err() {
                return Ok(());
            }
            sent += chunk.len();
        }
        Ok(())
    }

    /// Sends the media attack of `mode` (bounded by [`rogue::BURST_BYTES`]) with timestamp `ts`
    /// and no marker bit. TCP only (UDP sessions are not attacked: the datagrams would be lost
    /// on the client's side without telling anything).
    async fn send_attack(
        &mut self,
        mode: Rogue,
        h265: bool,
        ts: u32,
        mount: &MountState,
    ) -> std::io::Result<()> {
        let Some(s) = self.session.as_mut() else {
            return Ok(());
        };
        let Transport::Tcp { rtp_channel, .. } = s.transport else {
            return Ok(());
        };
        info!(peer = %self.peer, mount = %mount.name, mode = mode.name(), "rogue media attack");
        let mut sent = 0;
        let mut first = true;
        while sent < rogue::BURST_BYTES {
            let batch = rogue::attack_batch(mode, h265, first);
            first = false;
            match write_frame_tcp(
                &mut self.writer,
                &mut self.headers,
                &batch,
                rtp_channel,
                &mut s.seq,
                ts,
                s.ssrc,
            )
            .await
            {
                Ok(n) => {
                    sent += n;
                    mount.packets.fetch_add(batch.len() as u64, Relaxed);
                    mount.bytes.fetch_add(n as u64, Relaxed);
                }
                // The client closed the connection: the attack is over.
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }

    async fn send_garbage(&mut self, raw: bool) -> std::io::Result<()> {
        let Some(s) = self.session.as_ref() else {
            return Ok(());
        };
        info!(peer = %self.peer, mount = self.mount_name(), raw, "sending garbage (fault)");
        let mut junk = vec![0u8; 2048];
        rand::thread_rng().fill_bytes(&mut junk);
        // Never valid RTP (version 0), never a '$' frame start or an 'R'(TSP) response.
        junk[0] = 0x3f;
        match &s.transport {
            Transport::Tcp { rtp_channel, .. } if raw => {
                let _ = rtp_channel;
                self.writer.write_all(&junk).await
            }
            Transport::Tcp { rtp_channel, .. } => {
                for chunk in junk.chunks(512) {
                    let mut frame = vec![b'$', *rtp_channel];
                    frame.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
                    frame.extend_from_slice(chunk);
                    frame[4] = 0x3f;
                    self.writer.write_all(&frame).await?;
                }
                Ok(())
            }
            Transport::Udp { rtp, .. } => {
                for chunk in junk.chunks(512) {
                    let _ = rtp.send(chunk).await;
                }
                Ok(())
            }
        }
    }
}

fn rtp_timestamp(base: u32, ticks: u64, mount: &MountState) -> u32 {
    base.wrapping_add(ticks as u32)
        .wrapping_add(mount.ts_offset.load(Relaxed) as u32)
}

/// Writes one frame as interleaved RTP packets with vectored writes; returns RTP bytes sent.
async fn write_frame_tcp(
    writer: &mut OwnedWriteHalf,
    headers: &mut Vec<u8>,
    payloads: &[RtpPayload],
    channel: u8,
    seq: &mut u16,
    ts: u32,
    ssrc: u32,
) -> std::io::Result<usize> {
    let mut total = 0;
    for batch in payloads.chunks(BATCH) {
        headers.clear();
        for p in batch {
            let len = (RTP_HEADER_LEN + p.data.len()) as u16;
            let mut h = [0u8; RTP_HEADER_LEN];
            write_rtp_header(&mut h, PAYLOAD_TYPE, p.marker, *seq, ts, ssrc);
            *seq = seq.wrapping_add(1);
            headers.extend_from_slice(&[b'$', channel]);
            headers.extend_from_slice(&len.to_be_bytes());
            headers.extend_from_slice(&h);
            total += usize::from(len);
        }
        let mut slices = [IoSlice::new(&[]); 2 * BATCH];
        for (i, p) in batch.iter().enumerate() {
            slices[2 * i] = IoSlice::new(&headers[16 * i..16 * (i + 1)]);
            slices[2 * i + 1] = IoSlice::new(&p.data);
        }
        let mut bufs = &mut slices[..2 * batch.len()];
        while !bufs.is_empty() {
            let n = writer.write_vectored(bufs).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut bufs, n);
        }
    }
    Ok(total)
}

/// Sends one frame as RTP datagrams (header + payload assembled in a reusable buffer).
/// Send errors (e.g. ICMP port unreachable) are ignored, as a camera would.
async fn write_frame_udp(
    sock: &UdpSocket,
    scratch: &mut Vec<u8>,
    payloads: &[RtpPayload],
    seq: &mut u16,
    ts: u32,
    ssrc: u32,
) -> usize {
    let mut total = 0;
    for p in payloads {
        let mut h = [0u8; RTP_HEADER_LEN];
        write_rtp_header(&mut h, PAYLOAD_TYPE, p.marker, *seq, ts, ssrc);
        *seq = seq.wrapping_add(1);
        scratch.clear();
        scratch.extend_from_slice(&h);
        scratch.extend_from_slice(&p.data);
        let _ = sock.send(scratch).await;
        total += scratch.len();
    }
    total
}

/// Binds an even/odd pair of UDP ports (RTP, RTCP) on `ip`, falling back to any two ports.
async fn bind_udp_pair(ip: std::net::IpAddr) -> std::io::Result<(UdpSocket, UdpSocket)> {
    for _ in 0..20 {
        let rtp = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let port = rtp.local_addr()?.port();
        if port % 2 != 0 || port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(ip, port + 1)).await {
            return Ok((rtp, rtcp));
        }
    }
    let rtp = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
    let rtcp = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
    Ok((rtp, rtcp))
}

//! The RTSP guard: a relay between retina and the camera that bounds what a hostile camera can
//! make Vigie hold in memory, and that never lets a camera password leave in clear.
//!
//! A camera on a roadside pole can be swapped for an attacker's device. retina 0.4 keeps
//! reading an RTSP header that never ends, buffers a body of any `Content-Length`, accumulates
//! an access unit of endless FU-A fragments or of endless tiny packets, and answers a
//! `WWW-Authenticate: Basic` challenge with `Authorization: Basic base64(user:password)` — the
//! password in clear on a plain TCP connection. It offers no option against any of these (its
//! RTSP parser has a `max_message_size`, but the client does not expose it). So each session
//! connects to the camera itself, here, and hands retina a URL on a listener of its own (bound
//! on the address the camera connection uses, accepting only that address); the relay parses
//! the framing of both directions and ends the session, with a clear [`IngestError`], when:
//!
//! * an RTSP message from the camera (header + body) exceeds
//!   [`StreamLimits::max_rtsp_message_bytes`], or its header does not end within it;
//! * an access unit on an interleaved RTP channel (packets of one RTP timestamp up to the
//!   marker bit) exceeds [`StreamLimits::max_access_unit_bytes`] or
//!   [`StreamLimits::max_access_unit_packets`];
//! * the camera's 401 offers only Basic authentication, or retina is about to send an
//!   `Authorization: Basic` header, and the stream does not set `allow_basic_auth = true`
//!   ([`IngestError::BasicAuthRefused`]; the request is never forwarded).
//!
//! What it holds per stream is bounded: at most one RTSP message or one interleaved frame
//! (64 KiB) of partial input per direction, plus the read buffer. retina then holds at most one
//! access unit of the cap. Bytes that are not RTSP at all (garbage) are passed to retina, which
//! reports them as before, and the relay closes.
//!
//! Limits: RTP over UDP does not pass through the relay (retina binds its own sockets), so the
//! access-unit caps apply to TCP (interleaved) streams, the default; the RTSP message cap and
//! the Basic refusal apply to both. The relay adds one copy through a loopback socket per byte,
//! and, on the paced ingest threads ([`crate::runtime`]), where it shares the session's thread,
//! the relayed bytes may reach retina one tick later (not measured yet).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::{debug, warn};
use url::Url;

use crate::error::{IngestError, sanitize};

/// Per-stream bounds on what a camera may make Vigie buffer (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// Largest RTSP message (status line, headers and body, e.g. a DESCRIBE answer with its
    /// SDP) accepted from a camera. Default 64 KiB: real answers are a few KiB.
    pub max_rtsp_message_bytes: usize,
    /// Largest access unit (one frame's RTP payloads plus headers). Default 8 MiB: a 4K key
    /// frame is 1–4 MB.
    pub max_access_unit_bytes: usize,
    /// Most RTP packets in one access unit. Default 16 384 (a 8 MiB frame in 512-byte packets):
    /// a flood of tiny packets costs retina per-packet bookkeeping beyond their bytes.
    pub max_access_unit_packets: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_rtsp_message_bytes: 64 << 10,
            max_access_unit_bytes: 8 << 20,
            max_access_unit_packets: 16_384,
        }
    }
}

/// What the guard of one session needs to know about its stream.
#[derive(Clone, Debug)]
pub(crate) struct GuardConfig {
    pub limits: StreamLimits,
    /// The stream's `allow_basic_auth`.
    pub allow_basic_auth: bool,
    /// True when the stream has a password (else a Basic challenge leaks nothing and retina's
    /// own "no credentials" error is the right one).
    pub has_password: bool,
}

/// A running relay. Dropping it lets the relay run a few seconds more (retina's TEARDOWN goes
/// through it), then aborts it.
pub(crate) struct Guard {
    /// The URL to give retina: the camera's path and query on the relay's listener.
    pub url: Url,
    verdict: Arc<Mutex<Option<IngestError>>>,
    task: JoinHandle<()>,
}

impl Guard {
    /// Why the relay ended the session, if it did.
    pub fn verdict(&self) -> Option<IngestError> {
        match self.verdict.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// `e`, or the relay's verdict when it ended the session (retina then only saw an EOF).
    pub fn explain(&self, e: IngestError) -> IngestError {
        self.verdict().unwrap_or(e)
    }
}

/// Time left to the relay after the session for retina's TEARDOWN.
const LINGER: Duration = Duration::from_secs(5);

impl Drop for Guard {
    fn drop(&mut self) {
        let h = self.task.abort_handle();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    tokio::time::sleep(LINGER).await;
                    h.abort();
                });
            }
            Err(_) => h.abort(),
        }
    }
}

/// Connects to the camera of `url` and starts the relay. Connection errors are reported as
/// [`IngestError::Connect`], as retina reported them.
pub(crate) async fn start(url: &Url, cfg: GuardConfig) -> Result<Guard, IngestError> {
    let port = url.port().unwrap_or(554);
    let camera = match url.host() {
        Some(url::Host::Domain(h)) => TcpStream::connect((h, port)).await,
        Some(url::Host::Ipv4(ip)) => TcpStream::connect((ip, port)).await,
        Some(url::Host::Ipv6(ip)) => TcpStream::connect((ip, port)).await,
        None => return Err(IngestError::Connect("URL has no host".into())),
    }
    .map_err(|e| IngestError::Connect(sanitize(&e.to_string(), None)))?;
    let local_err = |e: std::io::Error| IngestError::Connect(format!("local socket: {e}"));
    let _ = camera.set_nodelay(true);
    let camera_ip = camera.peer_addr().map_err(local_err)?.ip();
    let local_ip = camera.local_addr().map_err(local_err)?.ip();
    // Bound on the address the camera connection uses, so that retina's UDP sockets (bound on
    // the RTSP connection's local address) are where the camera sends RTP.
    let listener = TcpListener::bind(SocketAddr::new(local_ip, 0))
        .await
        .map_err(local_err)?;
    let relay_port = listener.local_addr().map_err(local_err)?.port();
    let mut relay_url = url.clone();
    relay_url
        .set_ip_host(local_ip)
        .map_err(|()| IngestError::Connect("cannot build the relay URL".into()))?;
    relay_url
        .set_port(Some(relay_port))
        .map_err(|()| IngestError::Connect("cannot build the relay URL".into()))?;
    let verdict = Arc::new(Mutex::new(None));
    let task = tokio::spawn(relay(
        listener,
        local_ip,
        camera,
        camera_ip,
        cfg,
        verdict.clone(),
    ));
    Ok(Guard {
        url: relay_url,
        verdict,
        task,
    })
}

async fn relay(
    listener: TcpListener,
    local_ip: IpAddr,
    camera: TcpStream,
    camera_ip: IpAddr,
    cfg: GuardConfig,
    verdict: Arc<Mutex<Option<IngestError>>>,
) {
    // Only our own process (connecting from the same address) may use the relay.
    let client = loop {
        match listener.accept().await {
            Ok((s, peer)) if peer.ip() == local_ip => break s,
            Ok((_, peer)) => debug!(%peer, "relay: connection from another address refused"),
            Err(e) => {
                debug!("relay: accept failed: {e}");
                return;
            }
        }
    };
    drop(listener);
    let _ = client.set_nodelay(true);
    let (client_r, client_w) = client.into_split();
    let (camera_r, camera_w) = camera.into_split();
    let up = pump(client_r, camera_w, Direction::ToCamera, &cfg, camera_ip);
    let down = pump(camera_r, client_w, Direction::FromCamera, &cfg, camera_ip);
    let ended = tokio::select! {
        r = up => r,
        r = down => r,
    };
    if let Err(e) = ended {
        warn!("ending the session: {e}");
        match verdict.lock() {
            Ok(mut g) => *g = Some(e),
            Err(p) => *p.into_inner() = Some(e),
        }
    }
    // Returning drops both connections: retina sees EOF, the camera a closed connection.
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Direction {
    /// retina → camera: requests (checked for Basic credentials), RTCP receiver reports.
    ToCamera,
    /// camera → retina: responses (bounded), interleaved RTP (access units bounded).
    FromCamera,
}

/// One access unit in progress on an interleaved channel.
#[derive(Clone, Copy, Debug, Default)]
struct AccessUnit {
    active: bool,
    timestamp: u32,
    bytes: usize,
    packets: usize,
}

/// What the scan of the buffered bytes decided.
enum Scan {
    /// Forward this many bytes (complete units), wait for more.
    Forward(usize),
    /// Forward the first `.0` bytes, then this replacement message, then skip `.2` bytes.
    Replace(usize, Vec<u8>, usize),
    /// Not RTSP: forward everything and close (retina reports the garbage).
    Garbage,
}

/// Read chunk: one `read` per wake-up moves up to this much.
const CHUNK: usize = 64 << 10;

/// Copies `r` to `w`, unit by unit (RTSP messages, interleaved frames), checking each. Returns
/// `Ok` at EOF or on garbage, `Err` with the reason when a limit or the Basic rule is broken.
async fn pump<R, W>(
    mut r: R,
    mut w: W,
    dir: Direction,
    cfg: &GuardConfig,
    camera_ip: IpAddr,
) -> Result<(), IngestError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
    let mut aus: Vec<(u8, AccessUnit)> = Vec::new();
    loop {
        if buf.capacity() - buf.len() < CHUNK / 4 {
            buf.reserve(CHUNK);
        }
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = w.shutdown().await;
                return Ok(());
            }
            Ok(_) => {}
        }
        let mut pos = 0;
        loop {
            match scan(&buf[pos..], dir, cfg, camera_ip, &mut aus)? {
                Scan::Forward(0) => break,
                Scan::Forward(k) => {
                    if w.write_all(&buf[pos..pos + k]).await.is_err() {
                        return Ok(());
                    }
                    pos += k;
                }
                Scan::Replace(k, msg, skip) => {
                    if w.write_all(&buf[pos..pos + k]).await.is_err()
                        || w.write_all(&msg).await.is_err()
                    {
                        return Ok(());
                    }
                    pos += k + skip;
                }
                Scan::Garbage => {
                    let _ = w.write_all(&buf[pos..]).await;
                    let _ = w.shutdown().await;
                    return Ok(());
                }
            }
        }
        buf.drain(..pos);
        // A partial unit is at most one message (capped in `scan`) or one 64 KiB frame; give
        // back the memory of a burst.
        if buf.capacity() > 4 * CHUNK && buf.len() < CHUNK {
            buf.shrink_to(CHUNK);
        }
    }
}

/// Scans the complete units at the start of `b`.
fn scan(
    b: &[u8],
    dir: Direction,
    cfg: &GuardConfig,
    camera_ip: IpAddr,
    aus: &mut Vec<(u8, AccessUnit)>,
) -> Result<Scan, IngestError> {
    let mut p = 0;
    while p < b.len() {
        match b[p] {
            b'$' => {
                if b.len() - p < 4 {
                    break;
                }
                let channel = b[p + 1];
                let len = usize::from(u16::from_be_bytes([b[p + 2], b[p + 3]]));
                if b.len() - p < 4 + len {
                    break;
                }
                if dir == Direction::FromCamera {
                    check_rtp(channel, &b[p + 4..p + 4 + len], &cfg.limits, aus)?;
                }
                p += 4 + len;
            }
            b'\r' | b'\n' => p += 1,
            c if c.is_ascii_uppercase() => {
                let rest = &b[p..];
                let max = cfg.limits.max_rtsp_message_bytes;
                let Some(head_len) = find_head_end(rest) else {
                    if !first_line_is_text(rest) {
                        return Ok(if p == 0 {
                            Scan::Garbage
                        } else {
                            Scan::Forward(p)
                        });
                    }
                    if rest.len() > max {
                        return Err(IngestError::Limit(format!(
                            "RTSP header longer than {max} bytes"
                        )));
                    }
                    break;
                };
                let head = &rest[..head_len];
                if !first_line_is_text(head) {
                    return Ok(if p == 0 {
                        Scan::Garbage
                    } else {
                        Scan::Forward(p)
                    });
                }
                let body_len = content_length(head)?;
                let total = (head_len as u64).saturating_add(body_len);
                if total > max as u64 {
                    return Err(IngestError::Limit(format!(
                        "RTSP message of {total} bytes, more than {max}"
                    )));
                }
                let total = total as usize;
                if rest.len() < total {
                    break;
                }
                match dir {
                    Direction::ToCamera => {
                        if !cfg.allow_basic_auth && sends_basic_credentials(head) {
                            return Err(IngestError::BasicAuthRefused);
                        }
                    }
                    Direction::FromCamera => {
                        if !cfg.allow_basic_auth && cfg.has_password && basic_only_challenge(head) {
                            return Err(IngestError::BasicAuthRefused);
                        }
                        if body_len == 0
                            && let Some(new_head) = add_transport_source(head, camera_ip)
                        {
                            return Ok(Scan::Replace(p, new_head, head_len));
                        }
                    }
                }
                p += total;
            }
            _ => {
                return Ok(if p == 0 {
                    Scan::Garbage
                } else {
                    Scan::Forward(p)
                });
            }
        }
    }
    Ok(Scan::Forward(p))
}

/// Counts an interleaved packet into its channel's access unit.
fn check_rtp(
    channel: u8,
    pkt: &[u8],
    limits: &StreamLimits,
    aus: &mut Vec<(u8, AccessUnit)>,
) -> Result<(), IngestError> {
    // Not RTP version 2 (RTCP is version 2 too; its packet types 200–204 read as a marker bit):
    // retina judges it.
    if pkt.len() < 12 || pkt[0] >> 6 != 2 {
        return Ok(());
    }
    let marker = pkt[1] & 0x80 != 0;
    let ts = u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]);
    let i = match aus.iter().position(|(c, _)| *c == channel) {
        Some(i) => i,
        None => {
            aus.push((channel, AccessUnit::default()));
            aus.len() - 1
        }
    };
    let au = &mut aus[i].1;
    if !au.active || au.timestamp != ts {
        *au = AccessUnit {
            active: true,
            timestamp: ts,
            bytes: 0,
            packets: 0,
        };
    }
    au.bytes += pkt.len();
    au.packets += 1;
    if au.bytes > limits.max_access_unit_bytes {
        return Err(IngestError::Limit(format!(
            "access unit larger than {} bytes",
            limits.max_access_unit_bytes
        )));
    }
    if au.packets > limits.max_access_unit_packets {
        return Err(IngestError::Limit(format!(
            "access unit of more than {} RTP packets",
            limits.max_access_unit_packets
        )));
    }
    if marker {
        au.active = false;
    }
    Ok(())
}

/// Length of the head (through the blank line), if complete.
fn find_head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// True when the bytes up to the first line break (or all of them) are printable ASCII: an
/// RTSP start line, not binary garbage.
fn first_line_is_text(b: &[u8]) -> bool {
    b.iter()
        .take_while(|&&c| c != b'\n')
        .all(|&c| c == b'\r' || c == b'\t' || (0x20..0x7f).contains(&c))
}

fn header_lines(head: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    head.split(|&c| c == b'\n')
        .skip(1)
        .filter_map(|l| std::str::from_utf8(l).ok())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
}

fn content_length(head: &[u8]) -> Result<u64, IngestError> {
    match header_lines(head).find(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
        None => Ok(0),
        Some((_, v)) => v.parse::<u64>().map_err(|_| {
            IngestError::Protocol(format!(
                "invalid Content-Length {:?}",
                v.chars().take(32).collect::<String>()
            ))
        }),
    }
}

fn sends_basic_credentials(head: &[u8]) -> bool {
    header_lines(head).any(|(k, v)| {
        k.eq_ignore_ascii_case("authorization")
            && v.get(..5).is_some_and(|s| s.eq_ignore_ascii_case("basic"))
    })
}

/// A 401 whose challenges are all Basic.
fn basic_only_challenge(head: &[u8]) -> bool {
    if !head.starts_with(b"RTSP/") || head.get(9..12) != Some(&b"401"[..]) {
        return false;
    }
    let schemes: Vec<&str> = header_lines(head)
        .filter(|(k, _)| k.eq_ignore_ascii_case("www-authenticate"))
        .map(|(_, v)| v)
        .collect();
    let is = |v: &str, s: &str| v.get(..s.len()).is_some_and(|x| x.eq_ignore_ascii_case(s));
    schemes.iter().copied().any(|v| is(v, "basic"))
        && !schemes.iter().copied().any(|v| is(v, "digest"))
}

/// A SETUP answer for UDP without `source=`: retina would take the relay's address as the RTP
/// source and filter out the camera's packets; name the camera's address, as retina would
/// without the relay.
fn add_transport_source(head: &[u8], camera_ip: IpAddr) -> Option<Vec<u8>> {
    if !head.starts_with(b"RTSP/") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let mut out = String::with_capacity(text.len() + 32);
    let mut changed = false;
    for line in text.split_inclusive("\r\n") {
        let body = line.trim_end_matches("\r\n");
        match body.split_once(':') {
            Some((k, v))
                if k.trim().eq_ignore_ascii_case("transport")
                    && v.contains("server_port=")
                    && !v.contains("source=") =>
            {
                out.push_str(body);
                out.push_str(&format!(";source={camera_ip}\r\n"));
                changed = true;
            }
            _ => out.push_str(line),
        }
    }
    changed.then(|| out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GuardConfig {
        GuardConfig {
            limits: StreamLimits {
                max_rtsp_message_bytes: 1000,
                max_access_unit_bytes: 3000,
                max_access_unit_packets: 5,
            },
            allow_basic_auth: false,
            has_password: true,
        }
    }

    fn rtp(ts: u32, marker: bool, payload: usize) -> Vec<u8> {
        let mut p = vec![0x80, if marker { 0xe0 } else { 0x60 }, 0, 1];
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 9]);
        p.extend(std::iter::repeat_n(0u8, payload));
        let mut f = vec![b'$', 0];
        f.extend_from_slice(&(p.len() as u16).to_be_bytes());
        f.extend(p);
        f
    }

    fn run(b: &[u8], dir: Direction) -> Result<Scan, IngestError> {
        scan(b, dir, &cfg(), "10.0.0.9".parse().unwrap(), &mut Vec::new())
    }

    #[test]
    fn messages_and_frames_are_forwarded_whole() {
        let mut b = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 4\r\n\r\nabcd".to_vec();
        let msg_len = b.len();
        b.extend(rtp(1, true, 10));
        let frame_end = b.len();
        b.extend_from_slice(b"RTSP/1.0 200 OK\r\nCSeq: 2\r\n");
        match run(&b, Direction::FromCamera).unwrap() {
            Scan::Forward(n) => assert_eq!(n, frame_end),
            _ => panic!("forward expected"),
        }
        match run(&b[..msg_len - 1], Direction::FromCamera).unwrap() {
            Scan::Forward(n) => assert_eq!(n, 0),
            _ => panic!("forward expected"),
        }
    }

    #[test]
    fn oversized_messages_are_refused() {
        let mut endless = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n".to_vec();
        while endless.len() <= 1000 {
            endless.extend_from_slice(b"X-Junk: aaaaaaaa\r\n");
        }
        let e = run(&endless, Direction::FromCamera).err().unwrap();
        assert!(
            e.to_string().contains("RTSP header longer than 1000 bytes"),
            "{e}"
        );
        let huge = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 99999999999999\r\n\r\n";
        let e = run(huge, Direction::FromCamera).err().unwrap();
        assert!(e.to_string().contains("more than 1000"), "{e}");
        let bad = b"RTSP/1.0 200 OK\r\nContent-Length: -1\r\n\r\n";
        assert!(run(bad, Direction::FromCamera).is_err());
    }

    #[test]
    fn access_units_are_bounded_in_bytes_and_packets() {
        let mut aus = Vec::new();
        let c = cfg();
        // Five packets of one timestamp pass, the sixth does not.
        for _ in 0..5 {
            check_rtp(0, &rtp(7, false, 10)[4..], &c.limits, &mut aus).unwrap();
        }
        let e = check_rtp(0, &rtp(7, false, 10)[4..], &c.limits, &mut aus).unwrap_err();
        assert!(e.to_string().contains("more than 5 RTP packets"), "{e}");
        // A marker or a new timestamp starts a new access unit.
        let mut aus = Vec::new();
        for i in 0..20 {
            check_rtp(0, &rtp(i, false, 10)[4..], &c.limits, &mut aus).unwrap();
            check_rtp(0, &rtp(i, true, 10)[4..], &c.limits, &mut aus).unwrap();
        }
        let mut aus = Vec::new();
        check_rtp(0, &rtp(1, false, 1400)[4..], &c.limits, &mut aus).unwrap();
        check_rtp(0, &rtp(1, false, 1400)[4..], &c.limits, &mut aus).unwrap();
        let e = check_rtp(0, &rtp(1, false, 1400)[4..], &c.limits, &mut aus).unwrap_err();
        assert!(e.to_string().contains("larger than 3000 bytes"), "{e}");
    }

    #[test]
    fn basic_credentials_never_leave() {
        let req = b"DESCRIBE rtsp://h/s RTSP/1.0\r\nCSeq: 2\r\nAuthorization: Basic YTpi\r\n\r\n";
        assert!(matches!(
            run(req, Direction::ToCamera),
            Err(IngestError::BasicAuthRefused)
        ));
        let digest = b"DESCRIBE rtsp://h/s RTSP/1.0\r\nCSeq: 2\r\nAuthorization: Digest username=\"a\"\r\n\r\n";
        assert!(run(digest, Direction::ToCamera).is_ok());
        let basic_401 =
            b"RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\nWWW-Authenticate: Basic realm=\"x\"\r\n\r\n";
        assert!(matches!(
            run(basic_401, Direction::FromCamera),
            Err(IngestError::BasicAuthRefused)
        ));
        let both = b"RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\nWWW-Authenticate: Basic realm=\"x\"\r\nWWW-Authenticate: Digest realm=\"x\", nonce=\"n\"\r\n\r\n";
        assert!(run(both, Direction::FromCamera).is_ok());
        let mut allowed = cfg();
        allowed.allow_basic_auth = true;
        let r = scan(
            req,
            Direction::ToCamera,
            &allowed,
            "10.0.0.9".parse().unwrap(),
            &mut Vec::new(),
        );
        assert!(r.is_ok());
    }

    #[test]
    fn garbage_is_passed_on() {
        assert!(matches!(
            run(b"\x16\x03\x01garbage", Direction::FromCamera),
            Ok(Scan::Garbage)
        ));
        assert!(matches!(
            run(b"G\x00\xffarbage", Direction::FromCamera),
            Ok(Scan::Garbage)
        ));
    }

    #[test]
    fn udp_setup_answers_name_the_camera() {
        let head = b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nTransport: RTP/AVP;unicast;client_port=5000-5001;server_port=6000-6001\r\n\r\n";
        match run(head, Direction::FromCamera).unwrap() {
            Scan::Replace(0, new, skip) => {
                assert_eq!(skip, head.len());
                let s = String::from_utf8(new).unwrap();
                assert!(
                    s.contains("server_port=6000-6001;source=10.0.0.9\r\n"),
                    "{s}"
                );
                assert!(s.ends_with("\r\n\r\n"));
            }
            _ => panic!("replace expected"),
        }
    }
}

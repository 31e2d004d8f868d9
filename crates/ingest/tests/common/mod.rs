//! A hand-rolled "bad camera" for fault tests: a plain tokio TCP listener that misbehaves in
//! chosen ways, or speaks just enough RTSP (DESCRIBE/SETUP/PLAY, RTP over TCP interleaved) to
//! stream a few H.264 frames taken from a fixture and then stall.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Accept, send non-RTSP bytes, close.
    Garbage,
    /// Accept and never answer.
    Silent,
    /// Answer every request with 401 Unauthorized (Basic challenge).
    Unauthorized,
    /// Answer DESCRIBE with 404.
    NotFound,
    /// Complete DESCRIBE/SETUP/PLAY, then send: an FU-A fragment without start bit (as when
    /// joining mid-stream), `leading_p` P frames, SPS+PPS+IDR, then `frames` P frames at 25 fps;
    /// then keep the connection open without sending anything (stall).
    Stream { leading_p: usize, frames: usize },
}

pub struct FakeCamera {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCamera {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeCamera {
    pub async fn start(behaviour: Behaviour) -> FakeCamera {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let c = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let b = behaviour.clone();
                tokio::spawn(async move {
                    let _ = serve(sock, b, addr).await;
                });
            }
        });
        FakeCamera {
            addr,
            connections,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("rtsp://{}/stream", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Reads one RTSP request; returns (method, cseq), or None at EOF.
async fn read_request(
    sock: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(String, String)>> {
    loop {
        // Skip interleaved data the client may send (RTCP receiver reports).
        while buf.first() == Some(&b'$') && buf.len() >= 4 {
            let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
            if buf.len() < 4 + len {
                break;
            }
            buf.drain(..4 + len);
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let method = head.split_whitespace().next().unwrap_or("").to_owned();
            let cseq = head
                .lines()
                .find_map(|l| l.strip_prefix("CSeq:").or_else(|| l.strip_prefix("Cseq:")))
                .unwrap_or("0")
                .trim()
                .to_owned();
            return Ok(Some((method, cseq)));
        }
        let mut tmp = [0u8; 4096];
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

async fn serve(mut sock: TcpStream, b: Behaviour, addr: SocketAddr) -> std::io::Result<()> {
    let mut buf = Vec::new();
    match b {
        Behaviour::Garbage => {
            sock.write_all(b"\x16\x03\x01garbage that is not RTSP\r\n\r\n\x00\xff\xfe")
                .await?;
            return Ok(());
        }
        Behaviour::Silent => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        }
        _ => {}
    }
    let base = format!("rtsp://{addr}/stream/");
    loop {
        let Some((method, cseq)) = read_request(&mut sock, &mut buf).await? else {
            return Ok(());
        };
        let resp = match (&b, method.as_str()) {
            (Behaviour::Unauthorized, _) => format!(
                "RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: Basic realm=\"cam\"\r\n\r\n"
            ),
            (Behaviour::NotFound, _) => format!("RTSP/1.0 404 Not Found\r\nCSeq: {cseq}\r\n\r\n"),
            (_, "DESCRIBE") => {
                let sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=fake\r\nt=0 0\r\n\
                           m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
                           a=fmtp:96 packetization-mode=1\r\na=control:trackID=0\r\n";
                format!(
                    "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Base: {base}\r\n\
                     Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                    sdp.len()
                )
            }
            (_, "SETUP") => format!(
                "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=12345678\r\n\
                 Session: FAKE1;timeout=60\r\n\r\n"
            ),
            (Behaviour::Stream { leading_p, frames }, "PLAY") => {
                let r = format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: FAKE1\r\n\r\n");
                sock.write_all(r.as_bytes()).await?;
                stream_frames(&mut sock, *leading_p, *frames).await?;
                continue;
            }
            _ => format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: FAKE1\r\n\r\n"),
        };
        sock.write_all(resp.as_bytes()).await?;
    }
}

/// NAL units of the fixture: SPS, PPS, first IDR slice, following P slices.
pub struct Nals {
    pub sps: Vec<u8>,
    pub pps: Vec<u8>,
    pub idr: Vec<u8>,
    pub p: Vec<Vec<u8>>,
}

pub fn fixture_nals() -> Nals {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/h264-baseline-640x360-25fps-gop50.h264");
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map(|&n| n - 3).unwrap_or(data.len());
        while end > s && data[end - 1] == 0 {
            end -= 1;
        }
        nals.push(data[s..end].to_vec());
    }
    let find = |t: u8| nals.iter().find(|n| n[0] & 0x1f == t).unwrap().clone();
    Nals {
        sps: find(7),
        pps: find(8),
        idr: find(5),
        p: nals
            .iter()
            .filter(|n| n[0] & 0x1f == 1)
            .take(40)
            .cloned()
            .collect(),
    }
}

struct Rtp {
    seq: u16,
}

impl Rtp {
    fn packet(&mut self, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = Vec::with_capacity(12 + payload.len() + 4);
        let len = (12 + payload.len()) as u16;
        p.extend_from_slice(&[b'$', 0]);
        p.extend_from_slice(&len.to_be_bytes());
        p.push(0x80);
        p.push(96 | if marker { 0x80 } else { 0 });
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        p
    }

    /// Single NAL packet or FU-A fragments.
    fn nal(&mut self, ts: u32, last_of_au: bool, nal: &[u8], out: &mut Vec<u8>) {
        const MAX: usize = 1400;
        if nal.len() <= MAX {
            out.extend(self.packet(ts, last_of_au, nal));
            return;
        }
        let hdr = nal[0];
        let body = &nal[1..];
        let chunks: Vec<&[u8]> = body.chunks(MAX).collect();
        for (i, c) in chunks.iter().enumerate() {
            let first = i == 0;
            let last = i == chunks.len() - 1;
            let mut pl = vec![
                (hdr & 0xe0) | 28,
                (hdr & 0x1f) | if first { 0x80 } else { 0 } | if last { 0x40 } else { 0 },
            ];
            pl.extend_from_slice(c);
            out.extend(self.packet(ts, last && last_of_au, &pl));
        }
    }
}

async fn stream_frames(
    sock: &mut TcpStream,
    leading_p: usize,
    frames: usize,
) -> std::io::Result<()> {
    let nals = fixture_nals();
    let mut rtp = Rtp { seq: 1 };
    let mut ts = 0u32;
    let mut out = Vec::new();
    // A continuation fragment without its start: retina reports "FU-A has start bit unset".
    out.extend(rtp.packet(ts, false, &[(nals.p[0][0] & 0xe0) | 28, 0x01, 1, 2, 3]));
    sock.write_all(&out).await?;
    for i in 0..leading_p {
        out.clear();
        ts += 3600;
        rtp.nal(ts, true, &nals.p[i % nals.p.len()], &mut out);
        sock.write_all(&out).await?;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    out.clear();
    ts += 3600;
    rtp.nal(ts, false, &nals.sps, &mut out);
    rtp.nal(ts, false, &nals.pps, &mut out);
    rtp.nal(ts, true, &nals.idr, &mut out);
    sock.write_all(&out).await?;
    for i in 0..frames {
        tokio::time::sleep(Duration::from_millis(40)).await;
        out.clear();
        ts += 3600;
        rtp.nal(ts, true, &nals.p[i % nals.p.len()], &mut out);
        sock.write_all(&out).await?;
    }
    Ok(())
}

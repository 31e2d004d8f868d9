//! Test support: start camsim in process, run ffmpeg/ffprobe with a timeout, and a tiny RTSP
//! client (TCP interleaved only) that exposes raw RTP packets.
#![allow(dead_code)]

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vigie_camsim::{Fixture, MountConfig, Server, ServerHandle};

pub const BASELINE: &str = "h264-baseline-640x360-25fps-gop50.h264";
pub const MAIN720: &str = "h264-main-1280x720-15fps-gop30.h264";
pub const H265: &str = "h265-main-1280x720-25fps-gop50.h265";
pub const RES_CHANGE: &str = "h264-res-change.h264";
pub const BENCH2: &str = "h264-2mbps-25fps.h264";

pub fn fixture(name: &str) -> Arc<Fixture> {
    let dir = vigie_camsim::fixtures_dir();
    vigie_camsim::Manifest::load(&dir)
        .unwrap()
        .load_fixture(&dir, name)
        .unwrap()
}

pub async fn start(mounts: Vec<MountConfig>) -> ServerHandle {
    Server::start("127.0.0.1:0".parse().unwrap(), mounts)
        .await
        .unwrap()
}

/// Runs a command with a timeout, returning its output (killed on timeout).
pub async fn run(cmd: &str, args: &[&str], timeout: Duration) -> Output {
    let child = tokio::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd}: {e}"));
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.unwrap(),
        Err(_) => panic!("{cmd} {args:?} timed out after {timeout:?}"),
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `ffprobe` stream info: (codec_name, width, height).
pub async fn probe(url: &str, transport: &str) -> (String, u32, u32) {
    let o = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-rtsp_transport",
            transport,
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
            url,
        ],
        Duration::from_secs(20),
    )
    .await;
    assert!(o.status.success(), "ffprobe failed: {}", stderr(&o));
    let out = stdout(&o);
    let mut parts = out.trim().split(',');
    (
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().parse().unwrap(),
        parts.next().unwrap().parse().unwrap(),
    )
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Rtp {
    pub channel: u8,
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    pub ssrc: u32,
    pub payload: Bytes,
}

pub enum Item {
    Response(Resp),
    Data(u8, Bytes),
}

/// Minimal RTSP client over TCP with interleaved RTP.
pub struct Client {
    pub stream: TcpStream,
    buf: BytesMut,
    cseq: u32,
    pub session: Option<String>,
    pub url: String,
    pub authorization: Option<String>,
}

impl Client {
    pub async fn connect(url: &str) -> std::io::Result<Client> {
        let host = url
            .strip_prefix("rtsp://")
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        Ok(Client {
            stream: TcpStream::connect(host).await?,
            buf: BytesMut::with_capacity(64 * 1024),
            cseq: 0,
            session: None,
            url: url.to_owned(),
            authorization: None,
        })
    }

    pub async fn send_raw(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(data).await
    }

    pub async fn request(
        &mut self,
        method: &str,
        url: &str,
        extra: &[(&str, &str)],
    ) -> std::io::Result<Resp> {
        self.cseq += 1;
        let mut req = format!("{method} {url} RTSP/1.0\r\nCSeq: {}\r\n", self.cseq);
        if let Some(s) = &self.session {
            req.push_str(&format!("Session: {s}\r\n"));
        }
        if let Some(a) = &self.authorization {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        for (n, v) in extra {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.stream.write_all(req.as_bytes()).await?;
        self.read_response().await
    }

    /// Reads until a response arrives, discarding interleaved data.
    pub async fn read_response(&mut self) -> std::io::Result<Resp> {
        loop {
            match self.next_item().await? {
                Item::Response(r) => return Ok(r),
                Item::Data(..) => {}
            }
        }
    }

    pub async fn next_item(&mut self) -> std::io::Result<Item> {
        loop {
            if let Some(item) = self.try_parse()? {
                return Ok(item);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    fn try_parse(&mut self) -> std::io::Result<Option<Item>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        if self.buf[0] == b'$' {
            if self.buf.len() < 4 {
                return Ok(None);
            }
            let len = u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize;
            if self.buf.len() < 4 + len {
                return Ok(None);
            }
            let ch = self.buf[1];
            self.buf.advance(4);
            return Ok(Some(Item::Data(ch, self.buf.split_to(len).freeze())));
        }
        if !self.buf.starts_with(b"RTSP/1.0 ") && self.buf.len() >= 9 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "garbage on the RTSP connection",
            ));
        }
        let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Ok(None);
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(a, b)| (a.trim().to_owned(), b.trim().to_owned()))
            .collect();
        let clen: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        if self.buf.len() < end + 4 + clen {
            return Ok(None);
        }
        self.buf.advance(end + 4);
        let body = String::from_utf8_lossy(&self.buf.split_to(clen)).into_owned();
        Ok(Some(Item::Response(Resp {
            status,
            headers,
            body,
        })))
    }

    /// DESCRIBE + SETUP (TCP interleaved 0-1) + PLAY. Returns the PLAY response.
    pub async fn play(&mut self) -> std::io::Result<Resp> {
        let url = self.url.clone();
        let d = self
            .request("DESCRIBE", &url, &[("Accept", "application/sdp")])
            .await?;
        assert_eq!(d.status, 200, "DESCRIBE: {d:?}");
        let base = d.header("Content-Base").unwrap().to_owned();
        let track = format!("{base}trackID=0");
        let s = self
            .request(
                "SETUP",
                &track,
                &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
            )
            .await?;
        assert_eq!(s.status, 200, "SETUP: {s:?}");
        self.session = Some(
            s.header("Session")
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned(),
        );
        let p = self
            .request("PLAY", &url, &[("Range", "npt=0.000-")])
            .await?;
        assert_eq!(p.status, 200, "PLAY: {p:?}");
        Ok(p)
    }

    /// Next RTP packet (channel 0); RTCP on channel 1 is returned too when `with_rtcp`.
    pub async fn next_rtp(&mut self) -> std::io::Result<Rtp> {
        loop {
            if let Item::Data(ch, d) = self.next_item().await? {
                if ch != 0 {
                    continue;
                }
                return parse_rtp(ch, d).ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "invalid RTP")
                });
            }
        }
    }
}

pub fn parse_rtp(channel: u8, d: Bytes) -> Option<Rtp> {
    if d.len() < 12 || d[0] >> 6 != 2 {
        return None;
    }
    Some(Rtp {
        channel,
        seq: u16::from_be_bytes([d[2], d[3]]),
        ts: u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
        marker: d[1] & 0x80 != 0,
        ssrc: u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
        payload: d.slice(12..),
    })
}

/// One access unit as received (H.264 view of the NAL types).
#[derive(Debug, Clone)]
pub struct Au {
    pub ts: u32,
    pub first_seq: u16,
    pub packets: usize,
    /// NAL unit types (FU fragments reported once, at their start).
    pub nal_types: Vec<u8>,
    /// SPS NAL units carried as single-NAL packets.
    pub sps: Vec<Bytes>,
    pub arrival: tokio::time::Instant,
}

impl Au {
    pub fn key(&self) -> bool {
        self.nal_types.contains(&5)
    }
}

/// Reads RTP (H.264) for about `dur`, grouping packets into access units by marker bit (it
/// stops after a complete access unit, or when no packet arrives for `dur` + 3 s), and checks
/// that sequence numbers are contiguous and the SSRC constant.
pub async fn read_aus(c: &mut Client, dur: Duration) -> Vec<Au> {
    let end = tokio::time::Instant::now() + dur;
    let mut aus = Vec::new();
    let mut cur: Option<Au> = None;
    let mut last_seq: Option<u16> = None;
    let mut ssrc = None;
    while let Ok(r) = tokio::time::timeout(dur + Duration::from_secs(3), c.next_rtp()).await {
        let p = r.expect("RTP");
        if let Some(s) = last_seq {
            assert_eq!(p.seq, s.wrapping_add(1), "sequence gap");
        }
        last_seq = Some(p.seq);
        assert_eq!(*ssrc.get_or_insert(p.ssrc), p.ssrc);
        let au = cur.get_or_insert_with(|| Au {
            ts: p.ts,
            first_seq: p.seq,
            packets: 0,
            nal_types: Vec::new(),
            sps: Vec::new(),
            arrival: tokio::time::Instant::now(),
        });
        assert_eq!(au.ts, p.ts, "timestamp changed inside an access unit");
        au.packets += 1;
        let t = p.payload[0] & 0x1f;
        if t == 28 {
            if p.payload[1] & 0x80 != 0 {
                au.nal_types.push(p.payload[1] & 0x1f);
            }
        } else {
            au.nal_types.push(t);
            if t == 7 {
                au.sps.push(p.payload.clone());
            }
        }
        if p.marker {
            aus.push(cur.take().unwrap());
            if tokio::time::Instant::now() >= end {
                break;
            }
        }
    }
    aus
}

/// Timestamp deltas between consecutive access units.
pub fn ts_deltas(aus: &[Au]) -> Vec<i64> {
    aus.windows(2)
        .map(|w| i64::from(w[1].ts.wrapping_sub(w[0].ts) as i32))
        .collect()
}

//! RTSP 1.0 (RFC 2326) message handling: request parsing from a byte buffer that may also hold
//! interleaved `$` frames, response formatting, `Transport` header parsing and URL paths.
//!
//! Parsing never panics and bounds what it buffers: a header block larger than
//! [`MAX_HEADER_BYTES`] or a body larger than [`MAX_BODY_BYTES`] is malformed.

use std::fmt::Write;

/// Largest request header block accepted.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest request body accepted (GET/SET_PARAMETER).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A parsed RTSP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Method, e.g. `DESCRIBE`.
    pub method: String,
    /// Request URI as sent.
    pub uri: String,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Body (empty if none).
    pub body: Vec<u8>,
}

impl Request {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the front of the input buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Need more bytes.
    Incomplete,
    /// A complete request occupying `len` bytes.
    Request(Request, usize),
    /// An interleaved binary frame (`$`, channel, 16-bit length, data) of `len` bytes in total.
    Interleaved {
        /// Channel number.
        channel: u8,
        /// Total bytes including the 4-byte prefix.
        len: usize,
    },
    /// Stray line breaks between messages: skip this many bytes.
    Skip(usize),
    /// Not a valid request. `len` bytes can be skipped (0: the stream cannot be resynchronised
    /// and the connection should be closed after answering 400).
    Malformed {
        /// Bytes to skip.
        len: usize,
        /// The CSeq, if one could be read.
        cseq: Option<String>,
    },
}

/// Parses the front of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    if buf.is_empty() {
        return Parsed::Incomplete;
    }
    if buf[0] == b'$' {
        if buf.len() < 4 {
            return Parsed::Incomplete;
        }
        let len = 4 + usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if buf.len() < len {
            return Parsed::Incomplete;
        }
        return Parsed::Interleaved {
            channel: buf[1],
            len,
        };
    }
    // Skip stray CR/LF between messages.
    let skip = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if skip > 0 {
        return Parsed::Skip(skip);
    }
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEADER_BYTES {
            return Parsed::Malformed { len: 0, cseq: None };
        }
        return Parsed::Incomplete;
    };
    let head_len = end + 4;
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Parsed::Malformed {
            len: head_len,
            cseq: None,
        };
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut headers = Vec::new();
    let mut ok = true;
    for line in lines {
        match line.split_once(':') {
            Some((n, v)) if !n.trim().is_empty() => {
                headers.push((n.trim().to_owned(), v.trim().to_owned()))
            }
            _ => ok = false,
        }
    }
    let cseq = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("cseq"))
        .map(|(_, v)| v.clone());
    let mut parts = request_line.split(' ').filter(|p| !p.is_empty());
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Malformed {
            len: head_len,
            cseq,
        };
    };
    let content_length = match headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        None => Some(0),
        Some((_, v)) => v.parse::<usize>().ok().filter(|&l| l <= MAX_BODY_BYTES),
    };
    let Some(content_length) = content_length else {
        return Parsed::Malformed { len: 0, cseq };
    };
    if buf.len() < head_len + content_length {
        return Parsed::Incomplete;
    }
    let total = head_len + content_length;
    if !ok
        || !version.starts_with("RTSP/1.")
        || uri.bytes().any(|b| b.is_ascii_control())
        || !method.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
    {
        return Parsed::Malformed { len: total, cseq };
    }
    Parsed::Request(
        Request {
            method: method.to_owned(),
            uri: uri.to_owned(),
            headers,
            body: buf[head_len..total].to_vec(),
        },
        total,
    )
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reason phrase for the status codes camsim uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        454 => "Session Not Found",
        455 => "Method Not Valid in This State",
        459 => "Aggregate Operation Not Allowed",
        461 => "Unsupported Transport",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "RTSP Version Not Supported",
        _ => "Unknown",
    }
}

/// An RTSP response being built.
#[derive(Clone, Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Extra headers (CSeq, Server and Content-Length are added by [`Response::serialize`]).
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: String,
}

impl Response {
    /// A response with no headers and no body.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Sets the body and its Content-Type.
    pub fn body(mut self, content_type: &'static str, body: String) -> Response {
        self.headers.push(("Content-Type", content_type.to_owned()));
        self.body = body;
        self
    }

    /// Wire form.
    pub fn serialize(&self, cseq: Option<&str>) -> Vec<u8> {
        let mut s = String::with_capacity(256 + self.body.len());
        let _ = write!(s, "RTSP/1.0 {} {}\r\n", self.status, reason(self.status));
        if let Some(c) = cseq {
            // Never echo CR/LF from the client.
            let c: String = c.chars().filter(|c| !c.is_control()).collect();
            let _ = write!(s, "CSeq: {c}\r\n");
        }
        s.push_str("Server: vigie-camsim\r\n");
        for (n, v) in &self.headers {
            let _ = write!(s, "{n}: {v}\r\n");
        }
        if !self.body.is_empty() {
            let _ = write!(s, "Content-Length: {}\r\n", self.body.len());
        }
        s.push_str("\r\n");
        s.push_str(&self.body);
        s.into_bytes()
    }
}

/// A transport the client asked for in SETUP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportSpec {
    /// `RTP/AVP/TCP;unicast;interleaved=a-b`.
    Tcp {
        /// RTP channel.
        rtp_channel: u8,
        /// RTCP channel.
        rtcp_channel: u8,
    },
    /// `RTP/AVP[/UDP];unicast;client_port=a-b`.
    Udp {
        /// Client RTP port.
        rtp_port: u16,
        /// Client RTCP port.
        rtcp_port: u16,
    },
}

/// Picks the first supported transport of a `Transport` header (unicast TCP interleaved or UDP).
pub fn parse_transport(header: &str) -> Option<TransportSpec> {
    header.split(',').find_map(|spec| {
        let mut parts = spec.split(';').map(str::trim);
        let proto = parts.next()?.to_ascii_uppercase();
        let params: Vec<&str> = parts.collect();
        if params.iter().any(|p| p.eq_ignore_ascii_case("multicast")) {
            return None;
        }
        let get = |k: &str| {
            params.iter().find_map(|p| {
                let (n, v) = p.split_once('=')?;
                n.trim().eq_ignore_ascii_case(k).then_some(v.trim())
            })
        };
        match proto.as_str() {
            "RTP/AVP/TCP" => {
                let (a, b) = match get("interleaved") {
                    Some(v) => pair::<u8>(v)?,
                    None => (0, 1),
                };
                Some(TransportSpec::Tcp {
                    rtp_channel: a,
                    rtcp_channel: b,
                })
            }
            "RTP/AVP" | "RTP/AVP/UDP" => {
                let (a, b) = pair::<u16>(get("client_port")?)?;
                (a != 0).then_some(TransportSpec::Udp {
                    rtp_port: a,
                    rtcp_port: b,
                })
            }
            _ => None,
        }
    })
}

/// `a-b` or `a` (then b = a + 1).
fn pair<T: std::str::FromStr + Copy + TryFrom<u32> + Into<u32>>(v: &str) -> Option<(T, T)> {
    match v.split_once('-') {
        Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        None => {
            let a: T = v.trim().parse().ok()?;
            let b = T::try_from(a.into() + 1).ok()?;
            Some((a, b))
        }
    }
}

/// The path of an RTSP URL without leading/trailing slashes and query:
/// `rtsp://h:554/cam1/trackID=0?x` → `cam1/trackID=0`. `None` for `*` or non-RTSP URLs.
pub fn url_path(uri: &str) -> Option<&str> {
    let rest = if let Some(r) = uri
        .strip_prefix("rtsp://")
        .or_else(|| uri.strip_prefix("rtsps://"))
        .or_else(|| uri.strip_prefix("rtspu://"))
    {
        r.find('/').map(|i| &r[i..]).unwrap_or("")
    } else if uri.starts_with('/') {
        uri
    } else {
        return None;
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    Some(rest.trim_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_and_interleaved() {
        let mut buf = b"$\x01\x00\x02ab".to_vec();
        buf.extend_from_slice(
            b"DESCRIBE rtsp://h/cam1 RTSP/1.0\r\nCSeq: 2\r\nAccept: application/sdp\r\n\r\n",
        );
        assert_eq!(parse(&buf), Parsed::Interleaved { channel: 1, len: 6 });
        let Parsed::Request(r, len) = parse(&buf[6..]) else {
            panic!()
        };
        assert_eq!(len, buf.len() - 6);
        assert_eq!(r.method, "DESCRIBE");
        assert_eq!(r.uri, "rtsp://h/cam1");
        assert_eq!(r.header("cseq"), Some("2"));
        assert_eq!(parse(&buf[6..20]), Parsed::Incomplete);
        assert_eq!(parse(b"$\x00\x00"), Parsed::Incomplete);
    }

    #[test]
    fn body_and_malformed() {
        let b = b"SET_PARAMETER rtsp://h/c RTSP/1.0\r\nCSeq: 5\r\nContent-Length: 4\r\n\r\nab";
        assert_eq!(parse(b), Parsed::Incomplete);
        let b = b"SET_PARAMETER rtsp://h/c RTSP/1.0\r\nCSeq: 5\r\nContent-Length: 4\r\n\r\nabcdX";
        let Parsed::Request(r, n) = parse(b) else {
            panic!()
        };
        assert_eq!((r.body.as_slice(), n), (&b"abcd"[..], b.len() - 1));
        assert_eq!(
            parse(b"hello world\r\nCSeq: 3\r\n\r\n"),
            Parsed::Malformed {
                len: 24,
                cseq: Some("3".into())
            }
        );
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\n\r\n"),
            Parsed::Malformed { len: 18, .. }
        ));
        assert!(matches!(
            parse(b"OPTIONS * RTSP/1.0\r\nContent-Length: x\r\n\r\n"),
            Parsed::Malformed { len: 0, .. }
        ));
        assert!(matches!(
            parse(&[b'A'; MAX_HEADER_BYTES + 1]),
            Parsed::Malformed { len: 0, .. }
        ));
        assert!(matches!(
            parse(b"\xff\xfe\r\n\r\n"),
            Parsed::Malformed { len: 6, .. }
        ));
        // A bare LF in the URI could inject headers into responses that echo it.
        assert!(matches!(
            parse(b"DESCRIBE rtsp://h/a\nX:1 RTSP/1.0\r\nCSeq: 1\r\n\r\n"),
            Parsed::Malformed { len: 45, .. }
        ));
        assert_eq!(parse(b"\r\nX"), Parsed::Skip(2));
    }

    #[test]
    fn transports() {
        assert_eq!(
            parse_transport("RTP/AVP/TCP;unicast;interleaved=0-1"),
            Some(TransportSpec::Tcp {
                rtp_channel: 0,
                rtcp_channel: 1
            })
        );
        assert_eq!(
            parse_transport("RTP/AVP;unicast;client_port=5000-5001"),
            Some(TransportSpec::Udp {
                rtp_port: 5000,
                rtcp_port: 5001
            })
        );
        assert_eq!(
            parse_transport("RTP/AVP;multicast, RTP/AVP/UDP;unicast;client_port=6000"),
            Some(TransportSpec::Udp {
                rtp_port: 6000,
                rtcp_port: 6001
            })
        );
        assert_eq!(parse_transport("RTP/AVP;unicast"), None);
        assert_eq!(parse_transport("RAW/RAW/UDP;client_port=1-2"), None);
        assert_eq!(parse_transport("RTP/AVP/TCP;interleaved=300-301"), None);
        assert_eq!(parse_transport(""), None);
    }

    #[test]
    fn paths() {
        assert_eq!(url_path("rtsp://127.0.0.1:8554/cam1"), Some("cam1"));
        assert_eq!(
            url_path("rtsp://u:p@h/cam1/trackID=0/"),
            Some("cam1/trackID=0")
        );
        assert_eq!(url_path("rtsp://h"), Some(""));
        assert_eq!(url_path("/a/b?x=1"), Some("a/b"));
        assert_eq!(url_path("*"), None);
    }

    #[test]
    fn response() {
        let r = Response::new(461)
            .header("X", "y")
            .serialize(Some("3\r\nEvil: 1"));
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with("RTSP/1.0 461 Unsupported Transport\r\nCSeq: 3Evil: 1\r\n"));
        assert!(s.ends_with("X: y\r\n\r\n"));
    }
}

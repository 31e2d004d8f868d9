//! RTSP authentication per mount: none, HTTP Basic (RFC 7617) or Digest with MD5 and no `qop` or
//! `qop=auth` (RFC 2617), the two schemes IP cameras use.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest as _, Md5};

/// Realm announced in `WWW-Authenticate`.
pub const REALM: &str = "camsim";

/// Which scheme a mount requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthScheme {
    /// `Authorization: Basic base64(user:pass)`.
    Basic,
    /// `Authorization: Digest username=…, realm=…, nonce=…, uri=…, response=…`.
    Digest,
}

/// Credentials a mount requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    /// Scheme.
    pub scheme: AuthScheme,
    /// Expected user name.
    pub username: String,
    /// Expected password.
    pub password: String,
}

impl Auth {
    /// Basic auth with these credentials.
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Auth {
        Auth {
            scheme: AuthScheme::Basic,
            username: username.into(),
            password: password.into(),
        }
    }

    /// Digest auth with these credentials.
    pub fn digest(username: impl Into<String>, password: impl Into<String>) -> Auth {
        Auth {
            scheme: AuthScheme::Digest,
            username: username.into(),
            password: password.into(),
        }
    }

    /// The `WWW-Authenticate` header value of a 401 answer.
    pub fn challenge(&self, nonce: &str) -> String {
        match self.scheme {
            AuthScheme::Basic => format!("Basic realm=\"{REALM}\""),
            AuthScheme::Digest => format!("Digest realm=\"{REALM}\", nonce=\"{nonce}\""),
        }
    }

    /// Checks an `Authorization` header value for a request with this `method`.
    /// `nonce` is the server nonce the client must echo (Digest).
    pub fn check(&self, header: Option<&str>, method: &str, nonce: &str) -> bool {
        let Some(header) = header else {
            return false;
        };
        let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header, ""));
        match self.scheme {
            AuthScheme::Basic => {
                if !scheme.eq_ignore_ascii_case("basic") {
                    return false;
                }
                let Ok(decoded) = STANDARD.decode(rest.trim()) else {
                    return false;
                };
                let expected = format!("{}:{}", self.username, self.password);
                decoded == expected.as_bytes()
            }
            AuthScheme::Digest => {
                if !scheme.eq_ignore_ascii_case("digest") {
                    return false;
                }
                let p = parse_params(rest);
                let get = |k: &str| {
                    p.iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(k))
                        .map(|(_, v)| v.as_str())
                };
                let (Some(user), Some(realm), Some(n), Some(uri), Some(resp)) = (
                    get("username"),
                    get("realm"),
                    get("nonce"),
                    get("uri"),
                    get("response"),
                ) else {
                    return false;
                };
                if user != self.username || realm != REALM || n != nonce {
                    return false;
                }
                let qop =
                    get("qop").map(|q| (q, get("nc").unwrap_or(""), get("cnonce").unwrap_or("")));
                let expected = digest_response(user, realm, &self.password, method, uri, n, qop);
                expected.eq_ignore_ascii_case(resp)
            }
        }
    }
}

/// RFC 2617 §3.2.2.1 request-digest with MD5: `qop` is `Some((qop, nc, cnonce))` when the client
/// used `qop=auth`, `None` for the RFC 2069-compatible form.
pub fn digest_response(
    user: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<(&str, &str, &str)>,
) -> String {
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    match qop {
        Some((qop, nc, cnonce)) => md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")),
        None => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

fn md5_hex(s: &str) -> String {
    let d = Md5::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses `k=v, k="v, with comma", …` auth parameters.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else {
            break;
        };
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            value = r[..end].to_owned();
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        out.push((key, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_example_vector() {
        // RFC 2617 §3.5.
        let r = digest_response(
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some(("auth", "00000001", "0a4f113b")),
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn digest_check() {
        let a = Auth::digest("admin", "secret");
        let nonce = "abc123";
        let uri = "rtsp://127.0.0.1:8554/cam1";
        let resp = digest_response("admin", REALM, "secret", "DESCRIBE", uri, nonce, None);
        let h = format!(
            "Digest username=\"admin\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\""
        );
        assert!(a.check(Some(&h), "DESCRIBE", nonce));
        assert!(!a.check(Some(&h), "SETUP", nonce));
        assert!(!a.check(Some(&h), "DESCRIBE", "other"));
        let bad = digest_response("admin", REALM, "wrong", "DESCRIBE", uri, nonce, None);
        assert!(!a.check(Some(&h.replace(&resp, &bad)), "DESCRIBE", nonce));
        assert!(!a.check(None, "DESCRIBE", nonce));
        assert!(!a.check(Some("Digest"), "DESCRIBE", nonce));
        assert!(!a.check(Some("Digest username=\"admin"), "DESCRIBE", nonce));
        assert!(
            a.challenge(nonce)
                .starts_with("Digest realm=\"camsim\", nonce=\"abc123\"")
        );
    }

    #[test]
    fn basic_check() {
        let a = Auth::basic("u", "p");
        assert!(a.check(Some("Basic dTpw"), "DESCRIBE", ""));
        assert!(!a.check(Some("Basic dTpx"), "DESCRIBE", ""));
        assert!(!a.check(Some("Basic !!!"), "DESCRIBE", ""));
        assert!(!a.check(Some("Digest dTpw"), "DESCRIBE", ""));
    }

    #[test]
    fn params() {
        let p = parse_params(r#"username="a, b", realm=r, nonce="n""#);
        assert_eq!(
            p,
            vec![
                ("username".into(), "a, b".into()),
                ("realm".into(), "r".into()),
                ("nonce".into(), "n".into())
            ]
        );
    }
}

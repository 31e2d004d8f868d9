//! SOAP 1.2 over HTTP: building request envelopes (with the WS-Security `UsernameToken`
//! digest), posting them with a timeout and a size bound, and turning the answer into either
//! the body's text or an [`OnvifError`] (SOAP faults, refused credentials, malformed XML).
//! Plus the small XML helpers the operations use (matching by local name: cameras pick their
//! own namespace prefixes). Knows nothing of what operations mean.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest as _, Sha1};
use tracing::debug;

use crate::error::{OnvifError, Result};
use crate::http_digest::HttpDigest;

pub(crate) const NS_SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
/// Largest answer read (a GetProfiles of a 16-channel encoder is ~200 KB).
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

const ENVELOPE_OPEN: &str = concat!(
    r#"<?xml version="1.0" encoding="UTF-8"?>"#,
    r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" "#,
    r#"xmlns:tt="http://www.onvif.org/ver10/schema" "#,
    r#"xmlns:tds="http://www.onvif.org/ver10/device/wsdl" "#,
    r#"xmlns:trt="http://www.onvif.org/ver10/media/wsdl" "#,
    r#"xmlns:tptz="http://www.onvif.org/ver20/ptz/wsdl" "#,
    r#"xmlns:tev="http://www.onvif.org/ver10/events/wsdl" "#,
    r#"xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2">"#
);

/// A user name and password for WS-UsernameToken. `Debug` never shows the password.
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password (only its digest leaves the process).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Escapes text for an XML element or attribute.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// The WS-UsernameToken password digest: base64(SHA-1(nonce ‖ created ‖ password)).
pub fn password_digest(nonce: &[u8], created: &str, password: &str) -> String {
    let mut h = Sha1::new();
    h.update(nonce);
    h.update(created.as_bytes());
    h.update(password.as_bytes());
    STANDARD.encode(h.finalize())
}

/// The `wsse:Security` header for `creds` at the camera's time `created` (`…Z`).
fn security_header(creds: &Credentials, created: &str) -> String {
    let nonce: [u8; 16] = rand::random();
    let digest = password_digest(&nonce, created, &creds.password);
    format!(
        concat!(
            r#"<s:Header><wsse:Security s:mustUnderstand="1" "#,
            r#"xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd" "#,
            r#"xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd">"#,
            r#"<wsse:UsernameToken><wsse:Username>{user}</wsse:Username>"#,
            r#"<wsse:Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest">{digest}</wsse:Password>"#,
            r#"<wsse:Nonce EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary">{nonce}</wsse:Nonce>"#,
            r#"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security></s:Header>"#
        ),
        user = esc(&creds.username),
        digest = digest,
        nonce = STANDARD.encode(nonce),
        created = created,
    )
}

/// Builds a request envelope around `body` (an operation element using the envelope's
/// prefixes), authenticated when `creds` is given.
pub fn request(body: &str, creds: Option<&Credentials>, created: &str) -> String {
    let header = creds.map_or(String::new(), |c| security_header(c, created));
    format!("{ENVELOPE_OPEN}{header}<s:Body>{body}</s:Body></s:Envelope>")
}

/// Posts one SOAP request and returns the answer's text once it is known to be a SOAP
/// envelope without a fault.
pub(crate) async fn call(
    http: &reqwest::Client,
    op: &'static str,
    url: &str,
    envelope: String,
    timeout: Duration,
    digest: Option<(&HttpDigest, &Credentials)>,
) -> Result<String> {
    debug!(op, url, "ONVIF request");
    let send = |authorization: Option<String>, envelope: String| async move {
        let mut req = http
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/soap+xml; charset=utf-8",
            )
            .body(envelope);
        if let Some(a) = authorization {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        let resp = req.send().await.map_err(|e| transport(op, url, e))?;
        let status = resp.status();
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut resp = resp;
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport(op, url, e))? {
            if buf.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(OnvifError::TooLarge {
                    op,
                    url: url.to_owned(),
                    limit_bytes: MAX_ANSWER_BYTES,
                });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok((status, challenge, buf))
    };
    let fut = async {
        // HTTP Digest: up front when the device challenged before, else on its 401 (once).
        let up_front = digest.and_then(|(d, c)| d.authorization(c, url));
        let answered_up_front = up_front.is_some();
        let (status, challenge, buf) = send(up_front, envelope.clone()).await?;
        if status != reqwest::StatusCode::UNAUTHORIZED {
            return Ok((status, buf));
        }
        let retry = match (digest, challenge.as_deref()) {
            (Some((d, c)), Some(ch)) => d.on_challenge(ch, c, url),
            _ => None,
        };
        match retry {
            // A fresh nonce after a stale one, or the first challenge: one more try.
            Some(a) => {
                let (status, _, buf) = send(Some(a), envelope).await?;
                if status == reqwest::StatusCode::UNAUTHORIZED {
                    return Err(OnvifError::Auth {
                        op,
                        url: url.to_owned(),
                        reason: "the camera refused the credentials (HTTP Digest)".into(),
                    });
                }
                Ok((status, buf))
            }
            None if answered_up_front => Err(OnvifError::Auth {
                op,
                url: url.to_owned(),
                reason: "the camera refused the credentials (HTTP Digest)".into(),
            }),
            None => Ok((status, buf)),
        }
    };
    let (status, buf) =
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| OnvifError::Timeout {
                op,
                url: url.to_owned(),
                timeout,
            })??;
    let malformed = |reason: String| OnvifError::Malformed {
        op,
        url: url.to_owned(),
        reason,
    };
    let text = match String::from_utf8(buf) {
        Ok(t) => t,
        Err(_) if !status.is_success() => return Err(status_error(op, url, status)),
        Err(_) => return Err(malformed("the answer is not UTF-8".into())),
    };
    let doc = match roxmltree::Document::parse(&text) {
        Ok(d) => d,
        Err(_) if status == reqwest::StatusCode::UNAUTHORIZED => {
            return Err(OnvifError::Auth {
                op,
                url: url.to_owned(),
                reason: "HTTP 401".into(),
            });
        }
        Err(_) if !status.is_success() => return Err(status_error(op, url, status)),
        Err(e) => return Err(malformed(format!("not XML: {e}"))),
    };
    let root = doc.root_element();
    if root.tag_name().name() != "Envelope" || root.tag_name().namespace() != Some(NS_SOAP) {
        if !status.is_success() {
            return Err(status_error(op, url, status));
        }
        return Err(malformed(format!(
            "the root element is {:?}, not a SOAP 1.2 Envelope",
            root.tag_name().name()
        )));
    }
    let Some(body) = child(root, "Body") else {
        return Err(malformed("the envelope has no Body".into()));
    };
    if let Some(f) = child(body, "Fault") {
        return Err(fault_error(op, url, f));
    }
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(OnvifError::Auth {
            op,
            url: url.to_owned(),
            reason: "HTTP 401".into(),
        });
    }
    if !status.is_success() {
        return Err(status_error(op, url, status));
    }
    drop(doc);
    Ok(text)
}

fn status_error(op: &'static str, url: &str, status: reqwest::StatusCode) -> OnvifError {
    if status == reqwest::StatusCode::UNAUTHORIZED {
        OnvifError::Auth {
            op,
            url: url.to_owned(),
            reason: "HTTP 401".into(),
        }
    } else {
        OnvifError::Status {
            op,
            url: url.to_owned(),
            status: status.as_u16(),
        }
    }
}

fn transport(op: &'static str, url: &str, e: reqwest::Error) -> OnvifError {
    // reqwest's Display names the URL, which never holds credentials here (they are refused
    // in device URLs and travel in the envelope); the chain says why.
    let mut reason = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        src = s.source();
    }
    OnvifError::Http {
        op,
        url: url.to_owned(),
        reason,
    }
}

/// A SOAP 1.2 fault (or a SOAP 1.1-style one, which some cameras send) as an error; refused
/// credentials become [`OnvifError::Auth`].
fn fault_error(op: &'static str, url: &str, f: roxmltree::Node<'_, '_>) -> OnvifError {
    let mut codes = Vec::new();
    if let Some(code) = child(f, "Code") {
        let mut cur = Some(code);
        while let Some(c) = cur {
            let v = text(child(c, "Value"));
            if !v.is_empty() {
                codes.push(v);
            }
            cur = child(c, "Subcode");
        }
    } else {
        let v = text(child(f, "faultcode"));
        if !v.is_empty() {
            codes.push(v);
        }
    }
    let reason = child(f, "Reason")
        .and_then(|r| child(r, "Text"))
        .map(|t| text(Some(t)))
        .or_else(|| child(f, "faultstring").map(|t| text(Some(t))))
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "(no reason given)".into());
    let local = |c: &String| c.rsplit(':').next().unwrap_or("").to_owned();
    if codes.iter().any(|c| {
        matches!(
            local(c).as_str(),
            "NotAuthorized" | "FailedAuthentication" | "InvalidSecurity" | "InvalidSecurityToken"
        )
    }) {
        return OnvifError::Auth {
            op,
            url: url.to_owned(),
            reason,
        };
    }
    OnvifError::Fault {
        op,
        url: url.to_owned(),
        code: if codes.is_empty() {
            "(none)".into()
        } else {
            codes.join("/")
        },
        reason,
    }
}

/// The first child element with this local name.
pub(crate) fn child<'a, 'i>(
    n: roxmltree::Node<'a, 'i>,
    name: &str,
) -> Option<roxmltree::Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

/// Every child element with this local name.
pub(crate) fn children<'a, 'i>(
    n: roxmltree::Node<'a, 'i>,
    name: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    n.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

/// The first descendant element (or `n` itself) with this local name.
pub(crate) fn find<'a, 'i>(
    n: roxmltree::Node<'a, 'i>,
    name: &str,
) -> Option<roxmltree::Node<'a, 'i>> {
    n.descendants()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

/// Trimmed text of an element ("" when absent).
pub(crate) fn text(n: Option<roxmltree::Node<'_, '_>>) -> String {
    n.and_then(|n| n.text()).unwrap_or("").trim().to_owned()
}

/// Parses an answer already checked by [`call`] and hands its `Body` to `f`; `f`'s `Err` is
/// the reason the answer is malformed.
pub(crate) fn with_body<T>(
    op: &'static str,
    url: &str,
    answer: &str,
    f: impl FnOnce(roxmltree::Node<'_, '_>) -> Result<T, String>,
) -> Result<T> {
    let malformed = |reason: String| OnvifError::Malformed {
        op,
        url: url.to_owned(),
        reason,
    };
    let doc = roxmltree::Document::parse(answer).map_err(|e| malformed(e.to_string()))?;
    let body = child(doc.root_element(), "Body").ok_or_else(|| malformed("no Body".into()))?;
    f(body).map_err(malformed)
}

/// Formats a duration as `xs:duration` (`PT1.5S`).
pub(crate) fn xs_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("PT{}S", ms / 1000)
    } else {
        format!("PT{}.{:03}S", ms / 1000, ms % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of the ONVIF Application Programmer's Guide.
    #[test]
    fn digest_matches_the_onvif_programmers_guide_example() {
        let nonce = STANDARD.decode("LKqI6G/AikKCQrN0zqZFlg==").unwrap();
        assert_eq!(
            password_digest(&nonce, "2010-09-16T07:50:45Z", "userpassword"),
            "tuOSpGlFlIXsozq4HFNeeGeFLEI="
        );
    }

    #[test]
    fn requests_escape_the_user_name_and_never_carry_the_password() {
        let c = Credentials {
            username: "a<b&\"".into(),
            password: "s3cr3t-pw".into(),
        };
        let r = request(
            "<tds:GetDeviceInformation/>",
            Some(&c),
            "2026-01-01T00:00:00Z",
        );
        assert!(!r.contains("s3cr3t-pw"));
        assert!(!format!("{c:?}").contains("s3cr3t-pw"));
        let doc = roxmltree::Document::parse(&r).unwrap();
        assert_eq!(text(find(doc.root_element(), "Username")), "a<b&\"");
        assert!(find(doc.root_element(), "GetDeviceInformation").is_some());
    }

    #[test]
    fn xs_durations() {
        assert_eq!(xs_duration(Duration::from_secs(5)), "PT5S");
        assert_eq!(xs_duration(Duration::from_millis(1500)), "PT1.500S");
    }
}

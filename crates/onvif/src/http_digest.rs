//! HTTP Digest authentication (RFC 7616 / 2617) of the SOAP requests, for cameras that demand it
//! at the HTTP level besides or instead of WS-UsernameToken (many do, e.g. after a firmware
//! update that turned WS-Security off).
//!
//! Owns the last challenge a device sent (so later requests authenticate up front, with the
//! nonce count advancing) and the answer to a `401`. The digest arithmetic is the
//! `digest_auth` crate's. Not the WS-Security token (that is [`crate::soap`]).

use std::sync::Mutex;

use crate::soap::Credentials;

/// Per-device state: the last Digest challenge, if the device sent one.
#[derive(Default)]
pub(crate) struct HttpDigest {
    challenge: Mutex<Option<digest_auth::WwwAuthenticateHeader>>,
}

impl std::fmt::Debug for HttpDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let known = self.challenge.lock().map(|g| g.is_some()).unwrap_or(false);
        f.debug_struct("HttpDigest")
            .field("challenged", &known)
            .finish()
    }
}

impl HttpDigest {
    /// The `Authorization` value for a POST to `url` when a challenge is known.
    pub(crate) fn authorization(&self, creds: &Credentials, url: &str) -> Option<String> {
        let mut g = self.challenge.lock().unwrap_or_else(|p| p.into_inner());
        let ch = g.as_mut()?;
        answer(ch, creds, url)
    }

    /// Takes a `WWW-Authenticate` value from a `401`: `Some(Authorization)` to retry with when
    /// it is a Digest challenge we can answer, `None` otherwise (Basic is never answered on
    /// plain HTTP: it would send the password in clear).
    pub(crate) fn on_challenge(
        &self,
        www_authenticate: &str,
        creds: &Credentials,
        url: &str,
    ) -> Option<String> {
        if !www_authenticate
            .trim_start()
            .get(..6)
            .is_some_and(|s| s.eq_ignore_ascii_case("digest"))
        {
            return None;
        }
        let mut ch = digest_auth::parse(www_authenticate).ok()?;
        let a = answer(&mut ch, creds, url);
        *self.challenge.lock().unwrap_or_else(|p| p.into_inner()) = Some(ch);
        a
    }
}

fn answer(
    ch: &mut digest_auth::WwwAuthenticateHeader,
    creds: &Credentials,
    url: &str,
) -> Option<String> {
    let path = url::Url::parse(url).ok().map(|u| u.path().to_owned())?;
    let ctx = digest_auth::AuthContext::new_post(
        creds.username.as_str(),
        creds.password.as_str(),
        path,
        None::<&[u8]>,
    );
    ch.respond(&ctx).ok().map(|h| h.to_header_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            username: "admin".into(),
            password: "s3cret".into(),
        }
    }

    #[test]
    fn a_digest_challenge_is_answered_and_kept_for_the_next_requests() {
        let d = HttpDigest::default();
        assert!(
            d.authorization(&creds(), "http://cam/onvif/device_service")
                .is_none()
        );
        let a = d
            .on_challenge(
                r#"Digest realm="cam", qop="auth", nonce="abc123""#,
                &creds(),
                "http://cam/onvif/device_service",
            )
            .unwrap();
        assert!(a.starts_with("Digest "), "{a}");
        assert!(a.contains(r#"username="admin""#), "{a}");
        assert!(a.contains(r#"uri="/onvif/device_service""#), "{a}");
        assert!(a.contains("nc=00000001"), "{a}");
        assert!(!a.contains("s3cret"), "the password is never sent");
        let b = d.authorization(&creds(), "http://cam/onvif/media").unwrap();
        assert!(b.contains("nc=00000002"), "{b}");
        assert!(b.contains(r#"uri="/onvif/media""#), "{b}");
    }

    #[test]
    fn basic_and_garbage_challenges_are_not_answered() {
        let d = HttpDigest::default();
        for ch in ["Basic realm=\"cam\"", "", "Digest", "Negotiate abc"] {
            assert!(
                d.on_challenge(ch, &creds(), "http://cam/x").is_none(),
                "{ch:?}"
            );
        }
    }
}

//! Node-to-node authentication of the internal routes (`/internal/v1/…`): a shared cluster
//! secret, an HMAC-SHA256 signature over the request, a ±30 s clock window and a bounded cache
//! of the nonces seen inside that window (replay protection).
//!
//! What is signed (one line each, in order): the version tag `vigie-internal-1`, the method,
//! the receiving node's `advertise_url` (the audience: a request signed for one node is refused
//! by every other, so one captured inside the window cannot be replayed to another node, whose
//! nonce cache never saw it), the path and query exactly as sent, the Unix time in seconds, a 128-bit random nonce, the
//! sending node's name and the carried identity (base64url of its JSON). Internal routes are
//! `GET` only, so there is no body to sign. A request is refused (401) when a header is
//! missing, the signature does not match (constant-time comparison), the time is outside the
//! window, or the nonce was already seen; the nonce is only remembered once the signature is
//! good, so nobody without the secret can fill the cache. A full cache refuses (503) rather
//! than forget a nonce still inside the window.
//!
//! The carried identity ([`CarriedIdentity`]) is the user the calling node authenticated and
//! authorised: rights are checked once, at the node the user called; the remote node trusts
//! the identity because the signature covers it, and journals it.
//!
//! Does not own: the secret's configuration (`[cluster] secret_env|secret_file`, read by the
//! binary), the routes themselves ([`super::routes`]), HTTP clients (the binary signs with
//! [`ClusterKey::sign`]).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Header names of a signed internal request.
pub const NODE_HEADER: &str = "x-vigie-node";
pub const TIMESTAMP_HEADER: &str = "x-vigie-timestamp";
pub const NONCE_HEADER: &str = "x-vigie-nonce";
pub const IDENTITY_HEADER: &str = "x-vigie-identity";
pub const SIGNATURE_HEADER: &str = "x-vigie-signature";

/// How far the sender's clock may be from ours (NTP keeps nodes within milliseconds).
pub const MAX_SKEW_S: i64 = 30;
/// Most nonces remembered (each one for at most the window, 2 × [`MAX_SKEW_S`]): ~1,000
/// internal requests per second sustained.
pub const NONCE_CACHE_ENTRIES: usize = 65_536;

const TAG: &str = "vigie-internal-1";

/// The user on whose behalf a node calls another (checked by the calling node), for the remote
/// node's journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CarriedIdentity {
    pub user: String,
    pub role: vigie_auth::Role,
    pub scope: vigie_auth::Scope,
    /// The journal's name for the user at the calling node (user, plus token id).
    pub actor: String,
    /// Identifies the user's request at the calling node (same value in both journals).
    pub request_id: String,
}

/// Why an internal request is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error(
        "this node has no cluster secret ([cluster] secret_env or secret_file): internal routes are closed"
    )]
    NotConfigured,
    #[error("missing or malformed header {0}")]
    Missing(&'static str),
    #[error("bad signature")]
    BadSignature,
    #[error("timestamp {ts} is more than {MAX_SKEW_S} s away from this node's clock ({now})")]
    Skew { ts: i64, now: i64 },
    #[error("nonce already used (replayed request)")]
    Replayed,
    #[error("too many internal requests in the replay window; retry")]
    CacheFull,
}

/// This node's name and the cluster secret: signs outgoing internal requests.
#[derive(Clone)]
pub struct ClusterKey {
    node: String,
    key: Vec<u8>,
    /// This node's `advertise_url`: the audience its incoming requests must be signed for.
    advertise_url: String,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterKey({}, ***)", self.node)
    }
}

/// The audience line of a node's advertise URL (a trailing `/` is not significant).
fn audience(advertise_url: &str) -> &str {
    advertise_url.trim_end_matches('/')
}

#[allow(clippy::too_many_arguments)] // the signed fields, one each
fn mac(
    key: &[u8],
    method: &str,
    to: &str,
    path_and_query: &str,
    ts: i64,
    nonce: &str,
    node: &str,
    identity: &str,
) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    for part in [
        TAG,
        method,
        audience(to),
        path_and_query,
        &ts.to_string(),
        nonce,
        node,
        identity,
    ] {
        m.update(part.as_bytes());
        m.update(b"\n");
    }
    m
}

impl ClusterKey {
    /// `advertise_url`: this node's (`[cluster] advertise_url`), the audience of the requests
    /// it accepts; "" for a key that only signs (`vigie audit verify`).
    pub fn new(node: &str, advertise_url: &str, secret: &vigie_core::config::Secret) -> ClusterKey {
        ClusterKey {
            node: node.to_owned(),
            key: secret.expose().as_bytes().to_vec(),
            advertise_url: advertise_url.to_owned(),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The headers of a signed request `method path_and_query` to the node advertised at `to`
    /// (its `advertise_url`, the base of the request's URL) sent at `now_s` (Unix seconds) on
    /// behalf of `identity`, with a fresh random nonce.
    pub fn sign(
        &self,
        method: &str,
        to: &str,
        path_and_query: &str,
        identity: &CarriedIdentity,
        now_s: i64,
    ) -> Vec<(&'static str, String)> {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        self.sign_with_nonce(method, to, path_and_query, identity, now_s, &nonce)
    }

    /// [`ClusterKey::sign`] with a given nonce (tests of replays).
    pub fn sign_with_nonce(
        &self,
        method: &str,
        to: &str,
        path_and_query: &str,
        identity: &CarriedIdentity,
        now_s: i64,
        nonce: &str,
    ) -> Vec<(&'static str, String)> {
        let identity = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(identity).unwrap_or_default());
        let sig = mac(
            &self.key,
            method,
            to,
            path_and_query,
            now_s,
            nonce,
            &self.node,
            &identity,
        )
        .finalize()
        .into_bytes();
        vec![
            (NODE_HEADER, self.node.clone()),
            (TIMESTAMP_HEADER, now_s.to_string()),
            (NONCE_HEADER, nonce.to_owned()),
            (IDENTITY_HEADER, identity),
            (SIGNATURE_HEADER, hex::encode(sig)),
        ]
    }
}

/// An authenticated internal request: the node that sent it and the user it acts for.
#[derive(Clone, Debug)]
pub struct Verified {
    pub node: String,
    pub identity: CarriedIdentity,
}

#[derive(Default)]
struct Nonces {
    seen: HashSet<String>,
    /// In insertion order, with their timestamps, to forget them once out of the window.
    order: VecDeque<(i64, String)>,
}

/// Checks incoming internal requests (one per process, in the API state).
pub struct InternalAuth {
    key: ClusterKey,
    nonces: Mutex<Nonces>,
    capacity: usize,
}

impl std::fmt::Debug for InternalAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InternalAuth({:?})", self.key)
    }
}

impl InternalAuth {
    pub fn new(key: ClusterKey) -> InternalAuth {
        Self::with_capacity(key, NONCE_CACHE_ENTRIES)
    }

    pub fn with_capacity(key: ClusterKey, capacity: usize) -> InternalAuth {
        InternalAuth {
            key,
            nonces: Mutex::new(Nonces::default()),
            capacity,
        }
    }

    /// The key this node signs its own internal requests with.
    pub fn key(&self) -> &ClusterKey {
        &self.key
    }

    /// Verifies a request (see the module docs); `header` reads one header value.
    pub fn verify(
        &self,
        method: &str,
        path_and_query: &str,
        header: &dyn Fn(&str) -> Option<String>,
        now_s: i64,
    ) -> Result<Verified, Refusal> {
        let get = |name: &'static str, max: usize| {
            header(name)
                .filter(|v| !v.is_empty() && v.len() <= max)
                .ok_or(Refusal::Missing(name))
        };
        let node = get(NODE_HEADER, 32)?;
        let ts_text = get(TIMESTAMP_HEADER, 20)?;
        let nonce = get(NONCE_HEADER, 64)?;
        let identity_b64 = get(IDENTITY_HEADER, 8192)?;
        let sig = get(SIGNATURE_HEADER, 64)?;
        let ts: i64 = ts_text
            .parse()
            .map_err(|_| Refusal::Missing(TIMESTAMP_HEADER))?;
        let sig = hex::decode(&sig).map_err(|_| Refusal::BadSignature)?;
        mac(
            &self.key.key,
            method,
            &self.key.advertise_url,
            path_and_query,
            ts,
            &nonce,
            &node,
            &identity_b64,
        )
        .verify_slice(&sig)
        .map_err(|_| Refusal::BadSignature)?;
        if (ts - now_s).abs() > MAX_SKEW_S {
            return Err(Refusal::Skew { ts, now: now_s });
        }
        let identity: CarriedIdentity = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&identity_b64)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(Refusal::Missing(IDENTITY_HEADER))?;
        let mut n = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        // Forget what the window no longer accepts (a replay of it fails the time check).
        while n
            .order
            .front()
            .is_some_and(|(t, _)| *t < now_s - MAX_SKEW_S)
        {
            if let Some((_, old)) = n.order.pop_front() {
                n.seen.remove(&old);
            }
        }
        if n.seen.contains(&nonce) {
            return Err(Refusal::Replayed);
        }
        if n.seen.len() >= self.capacity {
            return Err(Refusal::CacheFull);
        }
        n.seen.insert(nonce.clone());
        n.order.push_back((ts, nonce));
        Ok(Verified { node, identity })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const ME: &str = "http://10.0.0.2:8080";

    fn key(secret: &str) -> ClusterKey {
        ClusterKey::new("rec-a", ME, &vigie_core::config::Secret::new(secret))
    }

    fn identity() -> CarriedIdentity {
        CarriedIdentity {
            user: "alice".into(),
            role: vigie_auth::Role::Operator,
            scope: vigie_auth::Scope::all(),
            actor: "alice".into(),
            request_id: "r1".into(),
        }
    }

    fn check(
        auth: &InternalAuth,
        headers: &[(&'static str, String)],
        method: &str,
        pq: &str,
        now: i64,
    ) -> Result<Verified, Refusal> {
        let h: HashMap<&str, String> = headers.iter().cloned().collect();
        auth.verify(method, pq, &|n| h.get(n).cloned(), now)
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const PQ: &str = "/internal/v1/cameras/c1/streams/main/spans?start=a&end=b";

    #[test]
    fn a_signed_request_passes_once_and_every_forgery_or_replay_is_refused() {
        let auth = InternalAuth::new(key(SECRET));
        let now = 1_800_000_000;
        let h = key(SECRET).sign("GET", ME, PQ, &identity(), now);
        let v = check(&auth, &h, "GET", PQ, now + 5).unwrap();
        assert_eq!(v.node, "rec-a");
        assert_eq!(v.identity, identity());
        // The same request again: replayed.
        assert_eq!(
            check(&auth, &h, "GET", PQ, now + 6).unwrap_err(),
            Refusal::Replayed
        );
        // Another path, method or identity under the same signature: refused.
        let h = key(SECRET).sign("GET", ME, PQ, &identity(), now);
        assert_eq!(
            check(
                &auth,
                &h,
                "GET",
                "/internal/v1/cameras/c2/streams/main/spans?start=a&end=b",
                now
            )
            .unwrap_err(),
            Refusal::BadSignature
        );
        assert_eq!(
            check(&auth, &h, "DELETE", PQ, now).unwrap_err(),
            Refusal::BadSignature
        );
        let mut forged = h.clone();
        let mut admin = identity();
        admin.role = vigie_auth::Role::Admin;
        let other = key(SECRET).sign("GET", ME, PQ, &admin, now);
        forged[3] = other[3].clone(); // identity swapped under the first signature
        assert_eq!(
            check(&auth, &forged, "GET", PQ, now).unwrap_err(),
            Refusal::BadSignature
        );
        // Signed for another node (its advertise URL): refused here, even unused; the same
        // URL with a trailing `/` is the same audience.
        let h = key(SECRET).sign("GET", "http://10.0.0.3:8080", PQ, &identity(), now);
        assert_eq!(
            check(&auth, &h, "GET", PQ, now).unwrap_err(),
            Refusal::BadSignature
        );
        let h = key(SECRET).sign("GET", "http://10.0.0.2:8080/", PQ, &identity(), now);
        check(&auth, &h, "GET", PQ, now).unwrap();
        // Another secret.
        let h = key("another secret, long enough for us").sign("GET", ME, PQ, &identity(), now);
        assert_eq!(
            check(&auth, &h, "GET", PQ, now).unwrap_err(),
            Refusal::BadSignature
        );
        // No headers at all.
        assert_eq!(
            check(&auth, &[], "GET", PQ, now).unwrap_err(),
            Refusal::Missing(NODE_HEADER)
        );
        // Outside the window, either way.
        let h = key(SECRET).sign("GET", ME, PQ, &identity(), now - 31);
        assert!(matches!(
            check(&auth, &h, "GET", PQ, now),
            Err(Refusal::Skew { .. })
        ));
        let h = key(SECRET).sign("GET", ME, PQ, &identity(), now + 31);
        assert!(matches!(
            check(&auth, &h, "GET", PQ, now),
            Err(Refusal::Skew { .. })
        ));
        // The timestamp cannot be moved into the window: it is signed.
        let mut h = key(SECRET).sign("GET", ME, PQ, &identity(), now - 100);
        h[1].1 = now.to_string();
        assert_eq!(
            check(&auth, &h, "GET", PQ, now).unwrap_err(),
            Refusal::BadSignature
        );
    }

    #[test]
    fn the_nonce_cache_is_bounded_and_forgets_what_the_window_refuses() {
        let auth = InternalAuth::with_capacity(key(SECRET), 3);
        let now = 1_800_000_000;
        for i in 0..3 {
            let h = key(SECRET).sign_with_nonce("GET", ME, PQ, &identity(), now, &format!("n{i}"));
            check(&auth, &h, "GET", PQ, now).unwrap();
        }
        let h = key(SECRET).sign_with_nonce("GET", ME, PQ, &identity(), now, "n3");
        assert_eq!(
            check(&auth, &h, "GET", PQ, now).unwrap_err(),
            Refusal::CacheFull
        );
        // A forged request does not take a place either (checked before the cache).
        // Later, the old nonces are out of the window: forgotten, and their replays refused by
        // the time check.
        let later = now + MAX_SKEW_S + 1;
        let h = key(SECRET).sign_with_nonce("GET", ME, PQ, &identity(), later, "n4");
        check(&auth, &h, "GET", PQ, later).unwrap();
        let old = key(SECRET).sign_with_nonce("GET", ME, PQ, &identity(), now, "n0");
        assert!(matches!(
            check(&auth, &old, "GET", PQ, later),
            Err(Refusal::Skew { .. })
        ));
    }
}

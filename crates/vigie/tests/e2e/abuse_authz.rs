//! Abuse cases of authorisation against the real binary (issue 11: items 1, 2, 4 and the
//! authorisation parts of 10), and the permission matrix generated from the route table.
//!
//! Each test is what an attacker tried: a scoped admin widening its own scope or touching an
//! unrestricted admin; a legal hold ending decades ahead; a live view that outlives its rights;
//! `/metrics` of other communes; a disabled account used as a password oracle; someone else's
//! hold released; two concurrent demotions leaving no admin.
//!
//! `VIGIE_ABUSE_BIN=/path/to/an/older/vigie` runs them against another build (how their
//! failure before the fixes was shown).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigie_api::access::{Rule, rights_table};
use vigie_auth::{Permission, Role};
use vigie_camsim::ServerHandle;
use vigie_testkit::live::{LiveClient, LiveEvent};
use vigie_testkit::{Vigie, VigieBuilder};

const PW: &str = "a long enough password";

fn bin() -> String {
    std::env::var("VIGIE_ABUSE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_vigie").to_owned())
}

/// Two communes, one camera each: `cam-n` (nord) and `cam-s` (sud).
fn two_communes(sim: &ServerHandle) -> String {
    let mut t = String::from(
        "[[communes]]\nid = \"nord\"\nname = \"Nord\"\n[[communes]]\nid = \"sud\"\nname = \"Sud\"\n",
    );
    for (id, commune, mount) in [("cam-n", "nord", "n"), ("cam-s", "sud", "s")] {
        t.push_str(&format!(
            "[[cameras]]\nid = \"{id}\"\nname = \"Camera {id}\"\ncommune = \"{commune}\"\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"{}\"\n",
            sim.url(mount)
        ));
    }
    t
}

async fn start(extra_toml: &str) -> (ServerHandle, Vigie) {
    let sim = vigie_testkit::sim::start_baseline(&["n", "s"]).await;
    let v = VigieBuilder::new(bin())
        .toml(&two_communes(&sim))
        .toml(extra_toml)
        .start()
        .unwrap();
    (sim, v)
}

fn anon(v: &Vigie) -> reqwest::Client {
    v.anonymous_client_builder().unwrap().build().unwrap()
}

/// Sends a request with the given bearer token (or none); returns (status, JSON or text body).
async fn call(
    v: &Vigie,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    call_h(
        v,
        token.map(|t| ("authorization", format!("Bearer {t}"))),
        method,
        path,
        body,
    )
    .await
}

async fn call_h(
    v: &Vigie,
    header: Option<(&str, String)>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    call_hs(v, header.into_iter().collect(), method, path, body).await
}

async fn call_hs(
    v: &Vigie,
    headers: Vec<(&str, String)>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut r = anon(v).request(method.parse().unwrap(), format!("{}{}", v.base_url(), path));
    for (k, val) in headers {
        r = r.header(k, val);
    }
    if let Some(b) = body {
        r = r.json(b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// Creates a user with the default (unrestricted) admin and returns a fresh API token for it.
async fn user(v: &Vigie, name: &str, role: &str, communes: Value) -> String {
    let admin = v.admin_token();
    let (st, b) = call(
        v,
        admin,
        "POST",
        "/api/v1/users",
        Some(&json!({ "name": name, "role": role, "password": PW, "communes": communes })),
    )
    .await;
    assert_eq!(st, 201, "creating {name}: {b}");
    token_for(v, name).await.0
}

/// A new token for `user`, made by the default admin: (token, id).
async fn token_for(v: &Vigie, user: &str) -> (String, String) {
    let (st, b) = call(
        v,
        v.admin_token(),
        "POST",
        "/api/v1/tokens",
        Some(&json!({ "user": user, "name": "abuse" })),
    )
    .await;
    assert_eq!(st, 201, "token for {user}: {b}");
    (
        b["token"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    )
}

/// Logs in: (cookie pair `vigie_session=…`, CSRF token).
async fn login(v: &Vigie, user: &str) -> (String, String) {
    let (st, b, cookie) = login_raw(v, user, PW).await;
    assert_eq!(st, 200, "login {user}: {b}");
    (cookie, b["csrf_token"].as_str().unwrap().to_owned())
}

async fn login_raw(v: &Vigie, user: &str, password: &str) -> (u16, Value, String) {
    let resp = anon(v)
        .post(format!("{}/api/v1/session", v.base_url()))
        .json(&json!({ "username": user, "password": password }))
        .send()
        .await
        .unwrap();
    let st = resp.status().as_u16();
    let cookie = resp
        .headers()
        .get("set-cookie")
        .map(|c| {
            c.to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .trim()
                .to_owned()
        })
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    (
        st,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        cookie,
    )
}

async fn wait_recorded(v: &Vigie, cam: &str, secs: f64) -> Timestamp {
    let now = Timestamp::now();
    let (a, b) = (
        (now - SignedDuration::from_hours(1)).to_string(),
        (now + SignedDuration::from_hours(1)).to_string(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let spans = v.spans(cam, "main", &a, &b).await.unwrap();
        if let Some((s, e)) = spans.first()
            && e.duration_since(*s).as_secs_f64() >= secs
        {
            return *s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{cam}: nothing recorded"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn names(list: &Value, key: &str, field: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {list}"))
        .iter()
        .map(|x| x[field].as_str().unwrap_or_default().to_owned())
        .collect()
}

// ---- item 1: a scoped admin stays in its scope ----

#[tokio::test(flavor = "multi_thread")]
async fn scoped_admin_cannot_leave_its_scope() {
    let (sim, v) = start("").await;
    let root = v.admin_token().unwrap().to_owned();
    let adm_n = user(&v, "adm-n", "admin", json!(["nord"])).await;
    let peer = user(&v, "adm-n2", "admin", json!(["nord"])).await;
    let _ = peer;
    user(&v, "op-s", "operator", json!(["sud"])).await;
    user(&v, "op-n", "operator", json!(["nord"])).await;
    let (_, root_token_id) = token_for(&v, vigie_testkit::process::ADMIN_USER).await;
    let t = Some(adm_n.as_str());

    // The issue's reproduction, with a browser session and its CSRF header: widen its own scope.
    let (cookie, csrf) = login(&v, "adm-n").await;
    let (st, b) = call_hs(
        &v,
        vec![("cookie", cookie.clone()), ("x-csrf-token", csrf.clone())],
        "PATCH",
        "/api/v1/users/adm-n",
        Some(&json!({ "communes": "all" })),
    )
    .await;
    assert_eq!(st, 403, "a scoped admin widened its own scope: {b}");
    let (st, b) = call(&v, t, "GET", "/api/v1/cameras", None).await;
    assert_eq!(st, 200);
    assert_eq!(names(&b, "cameras", "id"), ["cam-n"], "{b}");
    // Nor by camera list, nor to another commune.
    for body in [
        json!({ "communes": ["nord", "sud"] }),
        json!({ "communes": ["sud"] }),
    ] {
        let (st, b) = call(&v, t, "PATCH", "/api/v1/users/adm-n", Some(&body)).await;
        assert_eq!(st, 403, "{body}: {b}");
    }
    // Users it creates or changes get at most its scope.
    for communes in [json!("all"), json!(["sud"]), json!(["nord", "sud"])] {
        let (st, b) = call(
            &v,
            t,
            "POST",
            "/api/v1/users",
            Some(&json!({ "name": "mole", "role": "operator", "password": PW, "communes": communes })),
        )
        .await;
        assert_eq!(st, 403, "created a user with communes {communes}: {b}");
    }
    let (st, b) = call(
        &v,
        t,
        "PATCH",
        "/api/v1/users/op-n",
        Some(&json!({ "communes": "all" })),
    )
    .await;
    assert_eq!(st, 403, "widened an operator beyond its own scope: {b}");
    // Inside its scope it works.
    let (st, b) = call(
        &v,
        t,
        "POST",
        "/api/v1/users",
        Some(&json!({ "name": "op-n3", "role": "operator", "password": PW, "communes": ["nord"] })),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    let (st, b) = call(
        &v,
        t,
        "PATCH",
        "/api/v1/users/op-n",
        Some(&json!({ "cameras": ["cam-n"] })),
    )
    .await;
    assert_eq!(st, 200, "{b}");

    // Users outside its scope: invisible, untouchable, no tokens for them.
    let (st, b) = call(&v, t, "GET", "/api/v1/users", None).await;
    assert_eq!(st, 200);
    let listed = names(&b, "users", "name");
    for hidden in [vigie_testkit::process::ADMIN_USER, "op-s"] {
        assert!(
            !listed.iter().any(|n| n == hidden),
            "{hidden} listed: {listed:?}"
        );
    }
    assert!(listed.iter().any(|n| n == "op-n"), "{listed:?}");
    for (method, path, body) in [
        (
            "PATCH",
            format!("/api/v1/users/{}", vigie_testkit::process::ADMIN_USER),
            json!({ "password": "taken over by a scoped admin" }),
        ),
        (
            "PATCH",
            format!("/api/v1/users/{}", vigie_testkit::process::ADMIN_USER),
            json!({ "disabled": true }),
        ),
        (
            "PATCH",
            "/api/v1/users/op-s".into(),
            json!({ "role": "supervisor" }),
        ),
        (
            "POST",
            "/api/v1/tokens".into(),
            json!({ "user": vigie_testkit::process::ADMIN_USER, "name": "backdoor" }),
        ),
        (
            "POST",
            "/api/v1/tokens".into(),
            json!({ "user": "op-s", "name": "backdoor" }),
        ),
        // A peer admin of the same scope: no password reset, no token in its name.
        (
            "PATCH",
            "/api/v1/users/adm-n2".into(),
            json!({ "password": "taken over by a peer admin" }),
        ),
        (
            "POST",
            "/api/v1/tokens".into(),
            json!({ "user": "adm-n2", "name": "backdoor" }),
        ),
    ] {
        let (st, b) = call(&v, t, method, &path, Some(&body)).await;
        assert_eq!(st, 403, "{method} {path} {body}: {b}");
    }
    let (st, b) = call(
        &v,
        t,
        "DELETE",
        &format!("/api/v1/tokens/{root_token_id}"),
        None,
    )
    .await;
    assert_eq!(st, 403, "revoked the unrestricted admin's token: {b}");
    let (st, b) = call(&v, t, "GET", "/api/v1/tokens", None).await;
    assert_eq!(st, 200);
    let owners = names(&b, "tokens", "user");
    assert!(
        owners
            .iter()
            .all(|u| u != "op-s" && u != vigie_testkit::process::ADMIN_USER),
        "{owners:?}"
    );
    // The unrestricted admin's token still works, and it still manages everyone.
    let (st, _) = call(&v, Some(&root), "GET", "/api/v1/users", None).await;
    assert_eq!(st, 200);
    let (st, b) = call(
        &v,
        Some(&root),
        "PATCH",
        "/api/v1/users/adm-n",
        Some(&json!({ "communes": ["nord", "sud"] })),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    sim.shutdown().await;
}

// ---- item 2: a legal hold covers footage that exists ----

#[tokio::test(flavor = "multi_thread")]
async fn legal_holds_cannot_reach_into_the_future_nor_span_too_long() {
    let (sim, v) = start("").await;
    let inv = user(&v, "inv-n", "investigator", json!(["nord"])).await;
    let now = Timestamp::now();
    let at = |d: SignedDuration| (now + d).to_string();
    let hold = |start: String, end: String| {
        json!({ "camera": "cam-n", "stream": "main", "start": start, "end": end,
                "procedure": "PV 2026/123", "reason": "abuse test" })
    };
    let cases = [
        // The issue's reproduction.
        (
            hold(
                at(SignedDuration::from_secs(-10)),
                "2090-12-31T00:00:00Z".into(),
            ),
            "in the future",
        ),
        (
            hold(
                at(SignedDuration::from_secs(-10)),
                at(SignedDuration::from_mins(2)),
            ),
            "in the future",
        ),
        // Longer than holds.max_span_days (default 31).
        (
            hold(
                at(SignedDuration::from_hours(-40 * 24)),
                at(SignedDuration::from_secs(-60)),
            ),
            "max_span_days",
        ),
        (
            hold(
                at(SignedDuration::from_secs(-10)),
                at(SignedDuration::from_secs(-20)),
            ),
            "after",
        ),
    ];
    for (body, why) in cases {
        let (st, b) = call(&v, Some(&inv), "POST", "/api/v1/holds", Some(&body)).await;
        assert_eq!(st, 400, "hold {body} accepted: {b}");
        let msg = b["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(why), "{msg:?} should say {why:?}");
    }
    // What exists can be held (the end may be a few seconds ahead: clock tolerance).
    let (st, b) = call(
        &v,
        Some(&inv),
        "POST",
        "/api/v1/holds",
        Some(&hold(
            at(SignedDuration::from_hours(-30 * 24)),
            at(SignedDuration::from_secs(2)),
        )),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    // Exports place holds under the same rule: a future end is refused before anything.
    let (st, b) = call(
        &v,
        Some(&inv),
        "POST",
        "/api/v1/exports",
        Some(&json!({ "camera": "cam-n", "stream": "main",
            "start": at(SignedDuration::from_secs(-10)), "end": "2090-12-31T00:00:00Z",
            "reason": "r", "procedure": "p", "requester": "q" })),
    )
    .await;
    assert_eq!(st, 400, "{b}");
    let (_, holds) = call(&v, Some(&inv), "GET", "/api/v1/holds", None).await;
    assert_eq!(holds["holds"].as_array().unwrap().len(), 1, "{holds}");
    sim.shutdown().await;
}

// ---- item 4: the live view ends with its rights ----

/// Opens a live view with this header and waits for its init segment.
async fn open_live(v: &Vigie, cam: &str, auth: (String, String)) -> LiveClient {
    let mut c = LiveClient::connect_as(v.port, cam, "main", None, Some(auth))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.next(left).await.unwrap() {
            LiveEvent::Init { .. } => return c,
            LiveEvent::Closed { code, reason } => panic!("closed at once: {code} {reason}"),
            _ => {}
        }
    }
}

/// Reads until the server closes the socket; the close must come (frames may arrive before).
async fn expect_closed(c: &mut LiveClient, what: &str, want_code: u16) -> String {
    // A liveness bound, not a measurement: the server re-checks every second.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "live view still open 20 s after {what}");
        match c.next(left).await {
            Ok(LiveEvent::Closed { code, reason }) => {
                assert_eq!(code, want_code, "{what}: closed with {code} {reason:?}");
                assert!(!reason.is_empty(), "{what}: a close needs a reason");
                return reason;
            }
            Ok(_) => {}
            Err(e) => panic!(
                "live view after {what}: {e:#} (still streaming, or cut without a close frame)"
            ),
        }
    }
}

fn bearer(t: &str) -> (String, String) {
    ("authorization".into(), format!("Bearer {t}"))
}

fn cookie(c: &str) -> (String, String) {
    ("cookie".into(), c.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn live_view_is_closed_when_its_rights_are_withdrawn() {
    let (sim, v) = start("").await;
    wait_recorded(&v, "cam-n", 1.0).await;
    let root = v.admin_token().map(str::to_owned);
    let root = root.as_deref();
    let patch = |who: &'static str, body: Value| {
        let v = &v;
        async move {
            let (st, b) = call(
                v,
                root,
                "PATCH",
                &format!("/api/v1/users/{who}"),
                Some(&body),
            )
            .await;
            assert_eq!(st, 200, "{who} {b}");
        }
    };
    let tok = user(&v, "watcher", "operator", json!(["nord"])).await;

    // Logout.
    let (ck, csrf) = login(&v, "watcher").await;
    let mut c = open_live(&v, "cam-n", cookie(&ck)).await;
    let (st, _) = call_hs(
        &v,
        vec![("cookie", ck.clone()), ("x-csrf-token", csrf)],
        "DELETE",
        "/api/v1/session",
        None,
    )
    .await;
    assert_eq!(st, 200);
    expect_closed(&mut c, "logout", 4401).await;

    // Password change (ends the sessions).
    let (ck, _) = login(&v, "watcher").await;
    let mut c = open_live(&v, "cam-n", cookie(&ck)).await;
    patch(
        "watcher",
        json!({ "password": "a brand new long password" }),
    )
    .await;
    expect_closed(&mut c, "password change", 4401).await;
    patch("watcher", json!({ "password": PW })).await;

    // Token revocation.
    let (t2, t2_id) = token_for(&v, "watcher").await;
    let mut c = open_live(&v, "cam-n", bearer(&t2)).await;
    let (st, _) = call(&v, root, "DELETE", &format!("/api/v1/tokens/{t2_id}"), None).await;
    assert_eq!(st, 200);
    expect_closed(&mut c, "token revocation", 4401).await;

    // Account disabled (both a session and a token).
    let (ck, _) = login(&v, "watcher").await;
    let mut c1 = open_live(&v, "cam-n", cookie(&ck)).await;
    let mut c2 = open_live(&v, "cam-n", bearer(&tok)).await;
    patch("watcher", json!({ "disabled": true })).await;
    expect_closed(&mut c1, "disable (session)", 4401).await;
    expect_closed(&mut c2, "disable (token)", 4401).await;
    patch("watcher", json!({ "disabled": false })).await;

    // The camera leaves the scope; the role loses Live.
    let mut c = open_live(&v, "cam-n", bearer(&tok)).await;
    patch("watcher", json!({ "communes": ["sud"] })).await;
    let reason = expect_closed(&mut c, "scope change", 4403).await;
    assert!(reason.contains("cam-n"), "{reason}");
    let mut c = open_live(&v, "cam-s", bearer(&tok)).await;
    patch("watcher", json!({ "role": "investigator" })).await;
    expect_closed(&mut c, "role change", 4403).await;

    // Others keep watching: an unrelated viewer is not closed.
    let mut keep = open_live(&v, "cam-n", bearer(root.unwrap())).await;
    let events = keep.collect_for(Duration::from_secs(3)).await.unwrap();
    assert!(
        !events.iter().any(|e| matches!(e, LiveEvent::Closed { .. })),
        "{events:?}"
    );
    keep.close().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn live_view_is_closed_when_its_session_expires() {
    // One idle minute: the live view is not activity, so the session ends while watching.
    let (sim, v) = start("[auth]\nsession_idle_minutes = 1\n").await;
    wait_recorded(&v, "cam-n", 1.0).await;
    user(&v, "sleepy", "operator", json!(["nord"])).await;
    let (ck, _) = login(&v, "sleepy").await;
    let mut c = open_live(&v, "cam-n", cookie(&ck)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(100);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !left.is_zero(),
            "live view still open 100 s into a 60 s idle session"
        );
        match c.next(left).await {
            Ok(LiveEvent::Closed { code, reason }) => {
                assert_eq!(code, 4401, "{reason}");
                assert!(reason.contains("expired"), "{reason}");
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("{e:#}"),
        }
    }
    let (st, _) = call_h(&v, Some(("cookie", ck)), "GET", "/api/v1/cameras", None).await;
    assert_eq!(st, 401);
    sim.shutdown().await;
}

// ---- item 10: metrics, disabled accounts, hold releases, concurrent demotions ----

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_scoped_to_the_callers_communes() {
    let (sim, v) = start("").await;
    let op = user(&v, "op-n", "operator", json!(["nord"])).await;
    let (st, b) = call(&v, Some(&op), "GET", "/metrics", None).await;
    assert_eq!(st, 200);
    let text = b.as_str().unwrap();
    assert!(text.contains("camera=\"cam-n\""), "{text}");
    assert!(
        !text.contains("cam-s"),
        "a nord operator sees sud's series:\n{text}"
    );
    // The monitoring system (loopback, no metrics token configured) sees every stream.
    let (st, b) = call(&v, None, "GET", "/metrics", None).await;
    assert_eq!(st, 200);
    assert!(b.as_str().unwrap().contains("camera=\"cam-s\""));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disabled_account_is_not_a_password_oracle() {
    let (sim, v) = start("").await;
    user(&v, "dora", "operator", json!("all")).await;
    let (st, b) = call(
        &v,
        v.admin_token(),
        "PATCH",
        "/api/v1/users/dora",
        Some(&json!({ "disabled": true })),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let (right_st, right_body, right_cookie) = login_raw(&v, "dora", PW).await;
    let (wrong_st, wrong_body, _) = login_raw(&v, "dora", "not the password at all").await;
    assert!(right_cookie.is_empty());
    assert_eq!(
        (right_st, &right_body),
        (wrong_st, &wrong_body),
        "the right password of a disabled account must get the wrong-password answer"
    );
    assert_eq!(right_st, 401);
    // The journal keeps the truth.
    let (_, j) = call(
        &v,
        v.admin_token(),
        "GET",
        "/api/v1/audit?action=login-failed",
        None,
    )
    .await;
    assert!(
        j["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "dora" && e["details"]["why"] == "Disabled"),
        "{j}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_its_creator_or_a_supervisor_releases_a_hold() {
    let (sim, v) = start("").await;
    let a = user(&v, "inv-a", "investigator", json!(["nord"])).await;
    let b = user(&v, "inv-b", "investigator", json!(["nord"])).await;
    let sup = user(&v, "sup-n", "supervisor", json!(["nord"])).await;
    let place = |tok: String| {
        let v = &v;
        async move {
            let now = Timestamp::now();
            let (st, h) = call(
                v,
                Some(&tok),
                "POST",
                "/api/v1/holds",
                Some(&json!({ "camera": "cam-n", "stream": "main",
                    "start": (now - SignedDuration::from_mins(5)).to_string(),
                    "end": now.to_string(), "procedure": "PV 1", "reason": "r" })),
            )
            .await;
            assert_eq!(st, 201, "{h}");
            h["id"].as_u64().unwrap()
        }
    };
    let release = |tok: String, id: u64| {
        let v = &v;
        async move {
            call(
                v,
                Some(&tok),
                "POST",
                &format!("/api/v1/holds/{id}/release"),
                Some(&json!({ "reason": "case closed" })),
            )
            .await
        }
    };
    let h1 = place(a.clone()).await;
    let (st, body) = release(b.clone(), h1).await;
    assert_eq!(st, 403, "another investigator released the hold: {body}");
    let (st, body) = release(a.clone(), h1).await;
    assert_eq!(st, 200, "its creator releases it: {body}");
    let h2 = place(a.clone()).await;
    let (st, body) = release(sup.clone(), h2).await;
    assert_eq!(st, 200, "a supervisor releases it: {body}");
    // The journal says who released and who had placed it.
    let (_, j) = call(
        &v,
        v.admin_token(),
        "GET",
        "/api/v1/audit?action=hold-release",
        None,
    )
    .await;
    let e = j["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["details"]["hold_id"] == h2)
        .cloned()
        .unwrap_or_else(|| panic!("{j}"));
    assert!(e["actor"].as_str().unwrap().starts_with("sup-n"), "{e}");
    assert!(
        e["details"]["placed_by"]
            .as_str()
            .unwrap_or_default()
            .starts_with("inv-a"),
        "{e}"
    );
    sim.shutdown().await;
}

async fn set_role(base_url: String, token: String, name: String, role: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .patch(format!("{base_url}/api/v1/users/{name}"))
        .bearer_auth(token)
        .json(&json!({ "role": role }))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_demotions_never_leave_no_admin() {
    let (sim, v) = start("").await;
    // Six admins of all communes; in each round they all demote themselves at the same moment.
    const N: usize = 6;
    let mut admins = vec![(
        vigie_testkit::process::ADMIN_USER.to_owned(),
        v.admin_token().unwrap().to_owned(),
    )];
    for i in 1..N {
        let name = format!("adm-{i}");
        let t = user(&v, &name, "admin", json!("all")).await;
        admins.push((name, t));
    }
    for round in 0..30 {
        let mut tasks = tokio::task::JoinSet::new();
        for (name, token) in &admins {
            tasks.spawn(set_role(
                v.base_url(),
                token.clone(),
                name.clone(),
                "operator",
            ));
        }
        let results = tasks.join_all().await;
        let passed = results.iter().filter(|r| r.0 == 200).count();
        let mut remaining = Vec::new();
        for (name, token) in &admins {
            let (st, me) = call(&v, Some(token), "GET", "/api/v1/session", None).await;
            if st == 200 && me["role"] == "admin" {
                remaining.push((name.clone(), token.clone()));
            }
        }
        assert_eq!(
            remaining.len(),
            1,
            "round {round}: {passed} of {N} concurrent demotions passed, leaving {} enabled admins: {results:?}",
            remaining.len()
        );
        assert!(
            results
                .iter()
                .filter(|r| r.0 != 200)
                .all(|r| r.1.to_string().contains("last enabled admin")),
            "{results:?}"
        );
        // The survivor promotes the others back for the next round.
        let (survivor, token) = &remaining[0];
        for (name, _) in &admins {
            if name != survivor {
                let (st, b) = set_role(v.base_url(), token.clone(), name.clone(), "admin").await;
                assert_eq!(st, 200, "{b}");
            }
        }
    }
    sim.shutdown().await;
}

// ---- the permission matrix, from the route table and README's rights table ----

/// README's "Users and rights" table: role → the permissions it documents.
fn documented_rights() -> Vec<(Role, Vec<Permission>)> {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
    )
    .unwrap();
    let section = readme
        .split("## Users and rights")
        .nth(1)
        .expect("README has a Users and rights section");
    let rows: Vec<Vec<String>> = section
        .lines()
        .skip_while(|l| !l.starts_with("| role |"))
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect();
    assert!(rows.len() > 2, "no rights table in README");
    let column = |h: &str| -> Permission {
        use Permission::*;
        match h {
            "status" => ViewStatus,
            "live" => Live,
            "playback, video.mp4" => Playback,
            "stills" => Still,
            "exports" => Export,
            "holds" => Hold,
            "release others' holds" => ReleaseAnyHold,
            "holds/exports lists" => ViewEvidence,
            "journal, register" => Audit,
            "users, tokens" => ManageUsers,
            "ptz" => Ptz,
            other => panic!("README rights table: unknown column {other:?}"),
        }
    };
    let perms: Vec<Permission> = rows[0][1..].iter().map(|h| column(h)).collect();
    for p in Permission::ALL {
        assert!(
            perms.contains(&p),
            "README's rights table has no column for {p:?}"
        );
    }
    rows[2..]
        .iter()
        .map(|r| {
            let role: Role = r[0].trim_matches('`').parse().unwrap();
            let granted = r[1..]
                .iter()
                .zip(&perms)
                .filter(|(c, _)| c.as_str() == "✓")
                .map(|(_, p)| *p)
                .collect();
            (role, granted)
        })
        .collect()
}

/// How to call one operation of the route table: the path and body for a camera (or resource)
/// inside the caller's scope, and outside it when the route touches one.
struct Case {
    path_in: String,
    body_in: Option<Value>,
    out: Option<(String, Option<Value>)>,
    /// A permission needed on top of the route's (releasing a hold placed by someone else).
    extra: Option<Permission>,
}

struct Fixtures {
    hold_n: u64,
    hold_s: u64,
    export_n: String,
    export_s: String,
    token_n: String,
    token_s: String,
    t0: Timestamp,
}

fn case(method: &str, path: &str, f: &Fixtures) -> Case {
    let cam = |c: &str| {
        path.replace("{cam}", c)
            .replace("{stream}", "main")
            .replace("{file}", "app.js")
            .replace("{preset}", "1")
    };
    let simple = |p: String, body: Option<Value>| Case {
        path_in: p,
        body_in: body,
        out: None,
        extra: None,
    };
    let pair = |a: String, b: String, body_a: Option<Value>, body_b: Option<Value>| Case {
        path_in: a,
        body_in: body_a,
        out: Some((b, body_b)),
        extra: None,
    };
    let t0 = f.t0.to_string();
    let hold_body = |c: &str| {
        json!({ "camera": c, "stream": "main", "start": t0, "end": "2090-01-01T00:00:00Z",
                "procedure": "matrix", "reason": "matrix" })
    };
    let user_body = |communes: Value| json!({ "name": "matrix-new", "role": "operator", "password": "short", "communes": communes });
    match (method, path) {
        (_, p) if p.contains("{cam}") => {
            let q = match p.rsplit('/').next() {
                Some("recordings") => {
                    "?start=2020-01-01T00:00:00Z&end=2090-01-01T00:00:00Z".to_owned()
                }
                Some("video.mp4") => format!("?start={t0}&duration=1"),
                _ => String::new(),
            };
            pair(
                format!("{}{q}", cam("cam-n")),
                format!("{}{q}", cam("cam-s")),
                None,
                None,
            )
        }
        ("POST", "/api/v1/session") => simple(path.into(), Some(json!({}))),
        ("POST", "/api/v1/users") => pair(
            path.into(),
            path.into(),
            Some(user_body(json!(["nord"]))),
            Some(user_body(json!(["sud"]))),
        ),
        ("PATCH", "/api/v1/users/{name}") => pair(
            "/api/v1/users/target-n".into(),
            "/api/v1/users/target-s".into(),
            Some(json!({})),
            Some(json!({})),
        ),
        // Users of their own: the scoped admin really deletes `gone-n`.
        ("DELETE", "/api/v1/users/{name}") => pair(
            "/api/v1/users/gone-n".into(),
            "/api/v1/users/gone-s".into(),
            None,
            None,
        ),
        ("POST", "/api/v1/tokens") => pair(
            path.into(),
            path.into(),
            Some(json!({ "user": "target-n", "name": "" })),
            Some(json!({ "user": "target-s", "name": "" })),
        ),
        ("DELETE", "/api/v1/tokens/{id}") => pair(
            format!("/api/v1/tokens/{}", f.token_n),
            format!("/api/v1/tokens/{}", f.token_s),
            None,
            None,
        ),
        ("POST", "/api/v1/holds") => pair(
            path.into(),
            path.into(),
            Some(hold_body("cam-n")),
            Some(hold_body("cam-s")),
        ),
        ("GET", "/api/v1/holds/{id}") => pair(
            format!("/api/v1/holds/{}", f.hold_n),
            format!("/api/v1/holds/{}", f.hold_s),
            None,
            None,
        ),
        ("POST", "/api/v1/holds/{id}/release") => Case {
            extra: Some(Permission::ReleaseAnyHold),
            ..pair(
                format!("/api/v1/holds/{}/release", f.hold_n),
                format!("/api/v1/holds/{}/release", f.hold_s),
                Some(json!({ "reason": "matrix" })),
                Some(json!({ "reason": "matrix" })),
            )
        },
        ("POST", "/api/v1/exports") => pair(
            path.into(),
            path.into(),
            Some(json!({ "camera": "cam-n", "stream": "main" })),
            Some(json!({ "camera": "cam-s", "stream": "main" })),
        ),
        ("GET", p) if p.starts_with("/api/v1/exports/{id}") => pair(
            p.replace("{id}", &f.export_n),
            p.replace("{id}", &f.export_s),
            None,
            None,
        ),
        ("GET", p) if !p.contains('{') || p == "/assets/{file}" => simple(cam("-"), None),
        ("DELETE", "/api/v1/session") => simple(path.into(), None),
        _ => panic!(
            "{method} {path} is in the route table but the permission matrix has no case for it: add one"
        ),
    }
}

fn granted(st: u16) -> bool {
    st != 401 && st != 403
}

/// Raw WebSocket upgrade: the HTTP status of the answer (101 when accepted).
async fn ws_status(v: &Vigie, path: &str, token: Option<&str>) -> u16 {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", v.port))
        .await
        .unwrap();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        v.port
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let k = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf[n..]))
            .await
            .expect("WebSocket answer")
            .unwrap();
        assert!(k > 0, "connection closed");
        n += k;
    }
    String::from_utf8_lossy(&buf[9..12]).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn permission_matrix_from_the_route_table() {
    // The code's rights table agrees with the documented one.
    let documented = documented_rights();
    for (role, perms) in &documented {
        for p in Permission::ALL {
            assert_eq!(
                vigie_auth::allows(*role, p),
                perms.contains(&p),
                "README and vigie_auth::allows disagree on {role} {p:?}"
            );
        }
    }
    assert_eq!(documented.len(), Role::ALL.len());

    let (sim, v) = start("").await;
    let t0 = wait_recorded(&v, "cam-n", 3.0).await;
    let t0s = wait_recorded(&v, "cam-s", 3.0).await;
    let root = v.admin_token().map(str::to_owned);
    let root = root.as_deref();

    // One user per role, all scoped to commune "nord" (the admin too); targets in and out.
    let mut tokens = Vec::new();
    for (role, _) in &documented {
        tokens.push(user(&v, &format!("{role}-n"), role.as_str(), json!(["nord"])).await);
    }
    user(&v, "target-n", "operator", json!(["nord"])).await;
    user(&v, "target-s", "operator", json!(["sud"])).await;
    user(&v, "gone-n", "operator", json!(["nord"])).await;
    user(&v, "gone-s", "operator", json!(["sud"])).await;
    let token_n = token_for(&v, "target-n").await.1;
    let token_s = token_for(&v, "target-s").await.1;
    let mut holds = Vec::new();
    let mut exports = Vec::new();
    for (cam, t) in [("cam-n", t0), ("cam-s", t0s)] {
        let range = json!({ "camera": cam, "stream": "main", "start": t.to_string(),
            "end": (t + SignedDuration::from_secs(1)).to_string(),
            "procedure": "matrix", "reason": "matrix" });
        let (st, h) = call(&v, root, "POST", "/api/v1/holds", Some(&range)).await;
        assert_eq!(st, 201, "{h}");
        holds.push(h["id"].as_u64().unwrap());
        let mut e = range.clone();
        e["requester"] = json!("matrix");
        let (st, x) = call(&v, root, "POST", "/api/v1/exports", Some(&e)).await;
        assert_eq!(st, 202, "{x}");
        exports.push(x["id"].as_str().unwrap().to_owned());
    }
    let f = Fixtures {
        hold_n: holds[0],
        hold_s: holds[1],
        export_n: exports[0].clone(),
        export_s: exports[1].clone(),
        token_n,
        token_s,
        t0,
    };

    let table = rights_table();
    assert!(table.len() > 20, "{table:?}");
    let mut report = String::new();
    let mut failures = Vec::new();
    for r in table {
        let method = r.method.as_str();
        let c = case(method, r.path, &f);
        let ws = r.path.ends_with("/live");
        let send = |path: String, body: Option<Value>, token: Option<String>| {
            let v = &v;
            async move {
                if ws {
                    (ws_status(v, &path, token.as_deref()).await, Value::Null)
                } else {
                    call(v, token.as_deref(), method, &path, body.as_ref()).await
                }
            }
        };
        // No credentials.
        let (st, _) = send(c.path_in.clone(), c.body_in.clone(), None).await;
        let want_anon = matches!(r.rule, Rule::Public | Rule::Metrics);
        if granted(st) != want_anon || (!want_anon && st != 401) {
            failures.push(format!("{method} {} without credentials: {st}", r.path));
        }
        report.push_str(&format!("{method:6} {:55} anon={st:3}", r.path));
        for ((role, perms), token) in documented.iter().zip(&tokens) {
            let has = |p: Permission| perms.contains(&p);
            let may = r.rule.permission().is_none_or(has) && c.extra.is_none_or(has);
            let (st, body) = send(c.path_in.clone(), c.body_in.clone(), Some(token.clone())).await;
            if granted(st) != may {
                failures.push(format!(
                    "{method} {} as {role} (in scope): {st}, want {}: {body}",
                    c.path_in,
                    if may { "granted" } else { "403" }
                ));
            }
            // Lists hold nothing from outside the scope.
            if method == "GET" && (200..300).contains(&st) && !ws {
                let text = body.to_string();
                for other in ["cam-s", "target-s", f.export_s.as_str()] {
                    if text.contains(other) {
                        failures.push(format!(
                            "{method} {} as {role}-n shows {other:?} (outside its scope)",
                            c.path_in
                        ));
                    }
                }
            }
            report.push_str(&format!(" {role}={st:3}"));
            if let Some((path_out, body_out)) = &c.out {
                let (st, body) =
                    send(path_out.clone(), body_out.clone(), Some(token.clone())).await;
                if st != 403 {
                    failures.push(format!(
                        "{method} {path_out} as {role} (out of scope): {st}, want 403: {body}"
                    ));
                }
                report.push_str(&format!("/{st:3}"));
            }
        }
        report.push('\n');
    }
    eprintln!("permission matrix (in scope/out of scope):\n{report}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    sim.shutdown().await;
}

//! End-to-end tests of the operator web UI in headless Chromium, against the real binary
//! recording camsim cameras: log in through the form, the live wall plays (MSE), the cameras
//! page groups by commune, the playback timeline shows the spans and the gap of a camera outage,
//! a click on the timeline seeks to that instant (within 1 s), keyboard control, the fr/en switch
//! remembered per user, holds, journal and users pages, an operator limited to one commune sees
//! only its cameras and gets 403 elsewhere, and an export made from the UI (in/out marks, reason,
//! procedure, requester) is downloaded and accepted by `vigie verify`.
//!
//! Screenshots of every page are written to `<target>/ui-screenshots/*.png`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use vigie_camsim::ServerHandle;
use vigie_testkit::browser::Browser;
use vigie_testkit::browser::fantoccini::{self, Locator};
use vigie_testkit::process::{ADMIN_PASSWORD, ADMIN_USER};
use vigie_testkit::{Vigie, VigieBuilder};

const BIN: &str = env!("CARGO_BIN_EXE_vigie");
const OPERATOR: &str = "op-nord";
const OPERATOR_PW: &str = "operator password, long enough";

async fn camsim(mounts: &[&str]) -> ServerHandle {
    vigie_testkit::sim::start_baseline(mounts).await
}

/// Communes "nord" (cam-n, cam-n2) and "sud" (cam-s).
fn config(sim: &ServerHandle) -> String {
    let mut t = String::from(
        "[[communes]]\nid = \"nord\"\nname = \"Ville-Nord\"\n[[communes]]\nid = \"sud\"\nname = \"Ville-Sud\"\n",
    );
    for (id, name, commune, mount) in [
        ("cam-n", "Gare routière", "nord", "n"),
        ("cam-n2", "Place du marché", "nord", "n2"),
        ("cam-s", "Rond-point sud", "sud", "s"),
    ] {
        t.push_str(&format!(
            "[[cameras]]\nid = \"{id}\"\nname = \"{name}\"\ncommune = \"{commune}\"\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"{}\"\n",
            sim.url(mount)
        ));
    }
    t
}

fn window() -> (String, String) {
    let now = Timestamp::now();
    (
        (now - SignedDuration::from_hours(1)).to_string(),
        (now + SignedDuration::from_hours(1)).to_string(),
    )
}

/// Waits until `cam` has `n` spans, the last one at least `secs` long.
async fn wait_spans(v: &Vigie, cam: &str, n: usize, secs: f64) -> Vec<(Timestamp, Timestamp)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (a, b) = window();
        let spans = v.spans(cam, "main", &a, &b).await.unwrap();
        if spans.len() >= n
            && spans
                .last()
                .is_some_and(|(s, e)| e.duration_since(*s).as_secs_f64() >= secs)
        {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "{cam}: wanted {n} spans, the last ≥ {secs} s: {spans:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn shots_dir() -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("ui-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ms(t: Timestamp) -> f64 {
    t.as_millisecond() as f64
}

/// The browser on one Vigie, with helpers.
struct Ui {
    b: Browser,
    base: String,
}

impl Ui {
    async fn start(v: &Vigie) -> Ui {
        let b = Browser::start().await.unwrap();
        b.set_window_size(1600, 1000).await.unwrap();
        b.set_script_timeout(Duration::from_secs(60)).await.unwrap();
        Ui {
            b,
            base: v.base_url(),
        }
    }
    async fn js(&self, code: &str, args: Vec<Value>) -> Value {
        self.b
            .eval(code, args)
            .await
            .unwrap_or_else(|e| panic!("js failed: {e:#}\n{code}"))
    }
    /// Polls `code` (a function body) until it returns something other than null/false.
    async fn wait(&self, what: &str, code: &str, timeout_s: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(timeout_s);
        let mut last;
        loop {
            match self.b.eval(code, vec![]).await {
                Ok(v) if !v.is_null() && v != json!(false) => return v,
                Ok(v) => last = v,
                Err(e) => last = json!(format!("{e:#}")),
            }
            if Instant::now() > deadline {
                let page = self
                    .b
                    .eval("return document.body.innerText.slice(0, 3000)", vec![])
                    .await
                    .unwrap_or_default();
                panic!("timed out waiting for {what} (last: {last})\npage text:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    async fn shot(&self, name: &str) {
        // Let pending paints finish.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let path = shots_dir().join(format!("{name}.png"));
        self.b.screenshot_to(&path).await.unwrap();
        eprintln!("screenshot: {}", path.display());
    }
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.b
            .webdriver()
            .unwrap()
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }
    async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }
    async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }
    /// Goes to a hash route and waits for its page.
    async fn route(&self, hash: &str, page: &str) {
        self.js("location.hash = arguments[0];", vec![json!(hash)])
            .await;
        self.wait(
            &format!("page {page}"),
            &format!("return document.querySelector('main[data-page={page}]') !== null"),
            20,
        )
        .await;
    }
    async fn login(&self, user: &str, password: &str) {
        self.b
            .goto_anonymous(&format!("{}/", self.base))
            .await
            .unwrap();
        self.fill("#username", user).await;
        self.fill("#password", password).await;
        self.click("#login-submit").await;
        self.wait(
            "the app after login",
            "return document.querySelector('header.hdr') !== null && document.querySelector('main[data-page]') !== null",
            20,
        )
        .await;
    }
    async fn logout(&self) {
        self.click("header .logout").await;
        self.wait(
            "the login form",
            "return document.querySelector('#username') !== null",
            20,
        )
        .await;
    }
    /// An in-page fetch with the session cookie: (status, body text).
    async fn fetch_status(&self, url: &str) -> u16 {
        let v = self
            .b
            .execute_async(
                "const [u, done] = arguments; fetch(u).then(r => done(r.status), e => done(String(e)));",
                vec![json!(url)],
            )
            .await
            .unwrap();
        v.as_u64().unwrap_or_else(|| panic!("fetch {url}: {v}")) as u16
    }
    /// Clicks the playback timeline at wall-clock time `t_ms` on the row of `cam`; returns the
    /// instant the page computed from the pointer position.
    async fn click_timeline(&self, cam: &str, t_ms: f64) -> f64 {
        let p = self
            .js(
                "const [cam, t] = arguments; const tl = window.vigie.playback.timeline;
                 tl.el.scrollIntoView({block: 'center'});
                 const row = document.querySelector(`.tl-row[data-camera='${cam}']`).getBoundingClientRect();
                 return {x: tl.xForTime(t), y: row.top + row.height / 2};",
                vec![json!(cam), json!(t_ms)],
            )
            .await;
        self.js("window.vigie.lastTimelineClick = null;", vec![])
            .await;
        self.b
            .click_at(p["x"].as_f64().unwrap(), p["y"].as_f64().unwrap())
            .await
            .unwrap();
        self.wait(
            "the timeline click",
            "return window.vigie.lastTimelineClick",
            10,
        )
        .await
        .as_f64()
        .unwrap()
    }
    /// Waits until the first player shows a picture; returns (wall-clock time from the MP4 URL's
    /// `start` + currentTime, in ms since the epoch; the player state).
    async fn player_time(&self) -> (f64, Value) {
        let s = self
            .wait(
                "the player to settle",
                "const s = window.vigie.playback.state(); const p = s.players[0];
                 return p.url && !p.loading && p.readyState >= 2 && !p.error ? s : null;",
                30,
            )
            .await;
        let p = &s["players"][0];
        let url = p["url"].as_str().unwrap();
        let start = url
            .split(['?', '&'])
            .find_map(|kv| kv.strip_prefix("start="))
            .unwrap();
        let start: Timestamp = start.parse().unwrap();
        (ms(start) + p["currentTime"].as_f64().unwrap() * 1000.0, s)
    }
}

async fn setup() -> (ServerHandle, Vigie) {
    let sim = camsim(&["n", "n2", "s"]).await;
    let v = VigieBuilder::new(BIN).toml(&config(&sim)).start().unwrap();
    (sim, v)
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_ui_live_playback_admin_pages_and_scopes() {
    let (sim, v) = setup().await;
    wait_spans(&v, "cam-n", 1, 6.0).await;
    let ui = Ui::start(&v).await;

    // Log in through the form (French by default).
    ui.b.goto_anonymous(&format!("{}/", v.base_url()))
        .await
        .unwrap();
    ui.find("#username").await;
    let title = ui
        .js(
            "return document.querySelector('#login-title').textContent",
            vec![],
        )
        .await;
    assert_eq!(title, "Connexion");
    ui.shot("login").await;
    // A wrong password is refused with a message.
    ui.fill("#username", ADMIN_USER).await;
    ui.fill("#password", "not the password").await;
    ui.click("#login-submit").await;
    ui.wait(
        "the refusal",
        "const m = document.querySelector('.login-msg'); return m && m.textContent.includes('incorrect') ? m.textContent : null",
        20,
    )
    .await;
    ui.login(ADMIN_USER, ADMIN_PASSWORD).await;

    // Live wall: the admin lands on it; every tile plays moving video.
    ui.wait(
        "the live wall",
        "return document.querySelector('main[data-page=live] .wall') !== null",
        20,
    )
    .await;
    let tiles = ui
        .js("return window.vigie.live.tiles.map(t => t.camera)", vec![])
        .await;
    assert_eq!(tiles, json!(["cam-n", "cam-n2", "cam-s"]), "default wall");
    let t0 = ui
        .wait(
            "a live tile playing",
            "const v = document.querySelector('.tile[data-slot=\"0\"] video');
             return v && v.currentTime > 0.5 && v.readyState >= 2 ? v.currentTime : null",
            30,
        )
        .await
        .as_f64()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let live = ui
        .js(
            "const v = document.querySelector('.tile[data-slot=\"0\"] video');
             const s = window.vigie.live.tiles[0].state;
             return {t: v.currentTime, w: v.videoWidth, clock: document.querySelector('.tile[data-slot=\"0\"] .tile-clock').textContent,
                     name: document.querySelector('.tile[data-slot=\"0\"] .tile-name').textContent, state: s.state, lat: s.latencyMs};",
            vec![],
        )
        .await;
    eprintln!("live tile: {live}");
    assert!(
        live["t"].as_f64().unwrap() - t0 > 1.0,
        "live video does not move: {t0} then {live}"
    );
    assert_eq!(live["w"], 640);
    assert_eq!(live["name"], "Gare routière");
    assert!(
        live["clock"].as_str().unwrap().len() == 8,
        "tile clock {live}"
    );
    // All three tiles play.
    ui.wait(
        "three tiles playing",
        "const vs = [...document.querySelectorAll('.tile video')]; return vs.length === 3 && vs.every(v => v.currentTime > 0.3)",
        30,
    )
    .await;
    ui.shot("live-wall").await;
    // Click a tile to enlarge it, Escape to go back; layouts.
    ui.click(".tile[data-slot=\"1\"]").await;
    ui.wait(
        "the enlarged tile",
        "const t = document.querySelectorAll('.wall .tile'); return t.length === 1 && t[0].dataset.slot === '1'",
        10,
    )
    .await;
    ui.b.press_key('\u{e00c}').await.unwrap(); // Escape
    ui.wait(
        "the wall back",
        "return document.querySelectorAll('.wall .tile').length === 4",
        10,
    )
    .await;
    ui.click("button[aria-label='Disposition à 9 vignette(s)']")
        .await;
    ui.wait(
        "the 3×3 wall",
        "return document.querySelectorAll('.wall .tile').length === 9",
        10,
    )
    .await;
    ui.click("button[aria-label='Disposition à 4 vignette(s)']")
        .await;

    // Cameras page, grouped by commune, with status.
    ui.route("#/cameras", "cameras").await;
    let communes = ui
        .wait(
            "camera cards",
            "const s = [...document.querySelectorAll('section.commune')];
             const c = s.map(x => [x.dataset.commune, [...x.querySelectorAll('.card')].map(c => c.dataset.camera)]);
             return c.length === 2 && document.querySelectorAll('.dot.on').length >= 3 ? c : null",
            20,
        )
        .await;
    assert_eq!(
        communes,
        json!([["nord", ["cam-n", "cam-n2"]], ["sud", ["cam-s"]]])
    );
    ui.shot("cameras").await;

    // A camera outage of ~5 s on cam-n: two spans with a gap.
    let mount = sim.mount("n").unwrap();
    mount.refuse_for(Duration::from_secs(5));
    mount.drop_sessions();
    let spans = wait_spans(&v, "cam-n", 2, 8.0).await;
    let (s0, e0) = spans[spans.len() - 2];
    let (s1, _) = spans[spans.len() - 1];
    let api_gap = s1.duration_since(e0).as_secs_f64();
    assert!((api_gap - 5.0).abs() <= 2.5, "gap {api_gap} s: {spans:?}");

    // Playback of cam-n with cam-s in sync; the timeline shows both spans and the gap.
    ui.route("#/playback/cam-n?with=cam-s", "playback").await;
    let tl = ui
        .wait(
            "the spans and the gap on the timeline",
            "const row = document.querySelector(\".tl-row[data-camera='cam-n']\");
             if (!row) return null;
             const get = (sel) => [...row.querySelectorAll(sel)].map(e => [Date.parse(e.dataset.start), Date.parse(e.dataset.end)]);
             const spans = get('.tl-span'), gaps = get('.tl-gap');
             return spans.length >= 2 ? {spans, gaps} : null;",
            30,
        )
        .await;
    let ui_spans: Vec<(f64, f64)> = tl["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap()))
        .collect();
    let ui_gaps: Vec<(f64, f64)> = tl["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap()))
        .collect();
    assert!(
        ui_spans
            .iter()
            .any(|(a, b)| (a - ms(s0)).abs() < 1.0 && (b - ms(e0)).abs() < 1.0),
        "span {s0}–{e0} not on the timeline: {ui_spans:?}"
    );
    assert!(
        ui_gaps
            .iter()
            .any(|(a, b)| (a - ms(e0)).abs() < 1.0 && (b - ms(s1)).abs() < 1.0),
        "gap {e0}–{s1} not on the timeline: {ui_gaps:?}"
    );
    // Zoom on the last minutes so the gap is visible (zoom buttons + the API for the range).
    ui.click("button.zoom-in").await;
    ui.js(
        "const [a, b] = arguments; window.vigie.playback.timeline.setView(a, b);",
        vec![
            json!(ms(s0) - 20_000.0),
            json!(ms(Timestamp::now()) + 20_000.0),
        ],
    )
    .await;
    let gap_px = ui
        .js(
            "const [a] = arguments; const g = [...document.querySelectorAll(\".tl-row[data-camera='cam-n'] .tl-gap\")]
               .find(e => Math.abs(Date.parse(e.dataset.start) - a) < 1); return g ? g.getBoundingClientRect().width : null",
            vec![json!(ms(e0))],
        )
        .await;
    assert!(
        gap_px.as_f64().unwrap_or(0.0) >= 10.0,
        "gap width {gap_px} px"
    );

    // Clicking the timeline seeks there: the picture shown is within 1 s of the clicked instant.
    let target = ms(s0) + (ms(e0) - ms(s0)) / 2.0;
    let clicked = ui.click_timeline("cam-n", target).await;
    assert!(
        (clicked - target).abs() < 2000.0,
        "clicked {clicked}, aimed at {target}"
    );
    let (shown, state) = ui.player_time().await;
    eprintln!("clicked {clicked}, video shows {shown}: {state}");
    assert!(
        (shown - clicked).abs() < 1000.0,
        "video at {shown}, clicked {clicked} (Δ {} ms): {state}",
        shown - clicked
    );
    // The synchronised camera follows.
    ui.wait(
        "the second camera in sync",
        "const s = window.vigie.playback.state(); const [a, b] = s.players;
         return b.wall !== null && a.wall !== null && Math.abs(a.wall - b.wall) < 1000",
        30,
    )
    .await;
    // Keyboard: space plays (time advances), space pauses, → steps one frame, + speeds up.
    ui.js(
        "document.activeElement && document.activeElement.blur()",
        vec![],
    )
    .await;
    ui.b.press_key(' ').await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (after, st) = ui.player_time().await;
    assert_eq!(st["playing"], true, "{st}");
    assert!(after - shown > 500.0, "not playing: {shown} → {after}");
    ui.b.press_key(' ').await.unwrap();
    ui.b.press_key('+').await.unwrap();
    let st = ui.js("return window.vigie.playback.state()", vec![]).await;
    assert_eq!(
        (st["playing"].clone(), st["rate"].clone()),
        (json!(false), json!(2))
    );
    let (paused, _) = ui.player_time().await;
    ui.b.press_key('\u{e014}').await.unwrap(); // →: next frame
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (stepped, _) = ui.player_time().await;
    assert!(
        (stepped - paused - 40.0).abs() < 25.0,
        "frame step: {paused} → {stepped}"
    );
    // Aria labels on every control.
    let unlabelled = ui
        .js(
            "return [...document.querySelectorAll('main button, main select, main input')]
               .filter(e => !(e.getAttribute('aria-label') || e.textContent.trim() || e.labels && e.labels.length))
               .map(e => e.outerHTML.slice(0, 80))",
            vec![],
        )
        .await;
    assert_eq!(unlabelled, json!([]), "controls without a label");
    ui.js("window.scrollTo(0, 0)", vec![]).await;
    ui.shot("playback").await;

    // Holds (one placed through the API), release from the UI.
    let (st, body) = {
        let r = v
            .http()
            .post(format!("{}/api/v1/holds", v.base_url()))
            .json(&json!({"camera": "cam-n", "stream": "main", "start": s0.to_string(), "end": e0.to_string(),
                          "procedure": "PV-2026-0042", "reason": "réquisition test"}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(st, 201, "{body}");
    ui.route("#/holds", "holds").await;
    ui.wait(
        "the hold listed",
        "return document.querySelector('main').innerText.includes('PV-2026-0042')",
        20,
    )
    .await;
    ui.shot("holds").await;
    ui.fill("main form.inline input", "procédure close").await;
    ui.click("main form.inline button").await;
    ui.b.webdriver().unwrap().accept_alert().await.unwrap();
    ui.wait(
        "the hold released",
        "return document.querySelector('main').innerText.includes('levé par e2e-admin')",
        20,
    )
    .await;

    // Journal: the playback and the hold are there; filter by action.
    ui.route("#/journal", "journal").await;
    ui.wait(
        "journal entries",
        "const t = document.querySelector('main').innerText; return t.includes('hold-release') && t.includes('playback')",
        20,
    )
    .await;
    ui.shot("journal").await;
    ui.find("select[name=action]")
        .await
        .select_by_value("hold-place")
        .await
        .unwrap();
    ui.click("form.filters button[type=submit]").await;
    ui.wait(
        "the filtered journal",
        "const a = [...document.querySelectorAll('main td .action')].map(e => e.textContent);
         return a.length >= 1 && a.every(x => x === 'hold-place')",
        20,
    )
    .await;

    // Users: create an operator limited to commune "nord" through the form.
    ui.route("#/users", "users").await;
    ui.click("main details.panel summary").await;
    ui.fill("form.user-form input[name=name]", OPERATOR).await;
    ui.find("form.user-form select[name=role]")
        .await
        .select_by_value("operator")
        .await
        .unwrap();
    ui.fill("form.user-form input[name=password]", OPERATOR_PW)
        .await;
    ui.click("form.user-form input[name=commune][value=nord]")
        .await;
    ui.click("form.user-form button[type=submit]").await;
    ui.wait(
        "the new user listed",
        &format!("return document.querySelector('main table').innerText.includes('{OPERATOR}')"),
        20,
    )
    .await;
    ui.shot("users").await;

    // Language: English, remembered for this user after a reload.
    ui.click("header .lang button[lang=en]").await;
    ui.wait(
        "English",
        "return document.querySelector('header nav').innerText.includes('Live wall')",
        10,
    )
    .await;
    ui.b.webdriver().unwrap().refresh().await.unwrap();
    ui.wait(
        "English after a reload",
        "const n = document.querySelector('header nav'); return n && n.innerText.includes('Users') && document.documentElement.lang === 'en'",
        20,
    )
    .await;
    ui.shot("users-en").await;
    ui.click("header .lang button[lang=fr]").await;
    ui.logout().await;

    // The operator of "nord": no camera of "sud" anywhere, 403 on its URLs.
    ui.login(OPERATOR, OPERATOR_PW).await;
    let nav = ui.js("return [...document.querySelectorAll('header nav a')].map(a => a.getAttribute('href'))", vec![]).await;
    assert_eq!(
        nav,
        json!(["#/cameras", "#/live", "#/playback"]),
        "operator menu"
    );
    let tiles = ui
        .wait(
            "the operator's wall",
            "const t = window.vigie.live && window.vigie.live.tiles; return t && t.length ? t.map(x => x.camera) : null",
            20,
        )
        .await;
    assert_eq!(tiles, json!(["cam-n", "cam-n2"]));
    ui.route("#/cameras", "cameras").await;
    let cams = ui
        .wait(
            "the operator's cameras",
            "const c = [...document.querySelectorAll('.card')].map(c => c.dataset.camera); return c.length ? c : null",
            20,
        )
        .await;
    assert_eq!(cams, json!(["cam-n", "cam-n2"]));
    let text = ui
        .js("return document.querySelector('main').innerText", vec![])
        .await;
    assert!(!text.as_str().unwrap().contains("Rond-point sud"), "{text}");
    let (a, b) = window();
    for path in [
        format!("/api/v1/cameras/cam-s/streams/main/recordings?start={a}&end={b}"),
        format!("/api/v1/cameras/cam-s/streams/main/video.mp4?start={s0}&end={e0}"),
        "/api/v1/cameras/cam-s/streams/main/snapshot.jpg".to_owned(),
        "/api/v1/cameras/cam-s/streams/main/live".to_owned(),
    ] {
        assert_eq!(ui.fetch_status(&path).await, 403, "{path}");
    }
    assert_eq!(
        ui.fetch_status(&format!(
            "/api/v1/cameras/cam-n/streams/main/recordings?start={a}&end={b}"
        ))
        .await,
        200
    );
    // The playback page of a camera out of scope shows nothing of it.
    ui.route("#/playback/cam-s", "playback").await;
    let text = ui
        .js("return document.querySelector('main').innerText", vec![])
        .await;
    assert!(!text.as_str().unwrap().contains("Rond-point sud"), "{text}");
    assert_eq!(
        ui.js(
            "return document.querySelectorAll('main video').length",
            vec![]
        )
        .await,
        0
    );
    // Admin pages are refused.
    ui.route("#/users", "forbidden").await;
    ui.b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn export_from_the_ui_is_downloaded_and_verified() {
    let (_sim, v) = setup().await;
    let spans = wait_spans(&v, "cam-n", 1, 14.0).await;
    let (s0, _) = spans[0];
    let ui = Ui::start(&v).await;
    ui.login(ADMIN_USER, ADMIN_PASSWORD).await;
    let t1 = ms(s0) + 3000.0;
    ui.route(&format!("#/playback/cam-n?t={}", t1 as i64), "playback")
        .await;
    ui.player_time().await;
    ui.js(
        "const [a, b] = arguments; window.vigie.playback.timeline.setView(a, b);",
        vec![
            json!(ms(s0) - 5_000.0),
            json!(ms(Timestamp::now()) + 5_000.0),
        ],
    )
    .await;
    // In and out marks: click the timeline, then I / O.
    let in_clicked = ui.click_timeline("cam-n", t1).await;
    let (in_shown, _) = ui.player_time().await;
    ui.b.press_key('i').await.unwrap();
    let out_clicked = ui.click_timeline("cam-n", t1 + 5000.0).await;
    let (out_shown, _) = ui.player_time().await;
    ui.b.press_key('o').await.unwrap();
    let marks = ui.js("return window.vigie.playback.marks", vec![]).await;
    let (m_in, m_out) = (
        marks["in"].as_f64().unwrap(),
        marks["out"].as_f64().unwrap(),
    );
    assert!(
        (m_in - in_clicked).abs() < 1000.0 && (m_in - in_shown).abs() < 1.0,
        "in mark {m_in} vs {in_clicked}"
    );
    assert!(
        (m_out - out_clicked).abs() < 1000.0 && (m_out - out_shown).abs() < 1.0,
        "out mark {m_out} vs {out_clicked}"
    );
    // The form: procedure, requester, reason.
    ui.fill("form.export-form [name=procedure]", "PV 2026/001234")
        .await;
    ui.fill(
        "form.export-form [name=requester]",
        "OPJ Martin, commissariat de Ville-Nord",
    )
    .await;
    ui.fill(
        "form.export-form [name=reason]",
        "Réquisition judiciaire : vol à l’arraché",
    )
    .await;
    ui.click("form.export-form button[type=submit]").await;
    ui.wait(
        "the export job",
        "return document.querySelector('.export-job') !== null",
        20,
    )
    .await;
    ui.js(
        "document.querySelector('.export-panel').scrollIntoView({block: 'end'})",
        vec![],
    )
    .await;
    ui.shot("playback-export").await;
    let href = ui
        .wait(
            "the export ready",
            "const a = document.querySelector('.export-job a.download'); return a ? a.getAttribute('href') : null",
            120,
        )
        .await;
    let href = href.as_str().unwrap().to_owned();
    let id = href
        .trim_start_matches("/api/v1/exports/")
        .trim_end_matches("/package")
        .to_owned();
    // The job has exactly the marks and the form's fields.
    let (st, job) = v.get(&format!("/api/v1/exports/{id}")).await.unwrap();
    assert_eq!(st, 200, "{job}");
    let js: Timestamp = job["start"].as_str().unwrap().parse().unwrap();
    let je: Timestamp = job["end"].as_str().unwrap().parse().unwrap();
    assert!(
        (ms(js) - m_in).abs() <= 1.0 && (ms(je) - m_out).abs() <= 1.0,
        "{job} vs marks {marks}"
    );
    assert_eq!(job["procedure"], "PV 2026/001234");
    assert_eq!(job["requester"], "OPJ Martin, commissariat de Ville-Nord");
    assert_eq!(job["reason"], "Réquisition judiciaire : vol à l’arraché");
    assert_eq!(job["operator"], ADMIN_USER);
    // Download it with the browser's session, as the link does.
    let r =
        ui.b.execute_async(
            "const [u, done] = arguments;
             fetch(u).then(r => r.arrayBuffer().then(b => {
               const a = new Uint8Array(b); let s = '';
               for (const x of a) s += x.toString(16).padStart(2, '0');
               done({status: r.status, type: r.headers.get('content-type'), hex: s});
             }), e => done({error: String(e)}));",
            vec![json!(href)],
        )
        .await
        .unwrap();
    assert_eq!(r["status"], 200, "{}", r["error"]);
    assert_eq!(r["type"], "application/zip");
    let zip = hex::decode(r["hex"].as_str().unwrap()).unwrap();
    let path = v.work_dir().join(format!("vigie-export-{id}.zip"));
    std::fs::write(&path, &zip).unwrap();
    let (ok, out) = v.command(&["verify", path.to_str().unwrap()]).unwrap();
    eprintln!("vigie verify: {out}");
    assert!(ok, "vigie verify refused the package: {out}");
    // The exports page lists it, ready, with its hashes.
    ui.route("#/exports", "exports").await;
    let row = ui
        .wait(
            "the export listed",
            &format!(
                "const s = document.querySelector(\"main [data-export='{id}']\");
                      return s ? s.closest('tr').innerText : null"
            ),
            20,
        )
        .await;
    let row = row.as_str().unwrap();
    assert!(
        row.contains("prêt") && row.contains("PV 2026/001234"),
        "{row}"
    );
    let sha = job["sha256"].as_str().unwrap();
    let shown = ui
        .js(
            "return [...document.querySelectorAll('main code.hash')].map(c => c.title)",
            vec![],
        )
        .await;
    assert!(
        shown.as_array().unwrap().iter().any(|x| x == sha),
        "{shown} lacks {sha}"
    );
    ui.shot("exports").await;
    ui.b.close().await.unwrap();
}

/// Two cameras played in sync: the export form offers both (ticked), and one request makes
/// one package with a master per camera, which `vigie verify` accepts.
#[tokio::test(flavor = "multi_thread")]
async fn multi_camera_export_from_the_synchronised_playback_page() {
    let (_sim, v) = setup().await;
    let a = wait_spans(&v, "cam-n", 1, 14.0).await[0];
    let b = wait_spans(&v, "cam-n2", 1, 14.0).await[0];
    let s0 = a.0.max(b.0);
    let ui = Ui::start(&v).await;
    ui.login(ADMIN_USER, ADMIN_PASSWORD).await;
    let t1 = ms(s0) + 3000.0;
    ui.route(
        &format!("#/playback/cam-n?t={}&with=cam-n2", t1 as i64),
        "playback",
    )
    .await;
    ui.player_time().await;
    let boxes = ui
        .wait(
            "the camera checkboxes",
            "const b = [...document.querySelectorAll('form.export-form input[name=cameras]')];
             return b.length ? b.map(x => [x.value, x.checked]) : null",
            20,
        )
        .await;
    assert_eq!(boxes, json!([["cam-n", true], ["cam-n2", true]]));
    // Marks set through the page's state (the keys I/O are tested above).
    ui.js(
        "const [a, b] = arguments; const m = window.vigie.playback.marks; m.in = a; m.out = b;",
        vec![json!(t1), json!(t1 + 5000.0)],
    )
    .await;
    ui.fill("form.export-form [name=procedure]", "PV 2026/009999")
        .await;
    ui.fill("form.export-form [name=requester]", "OPJ Durand")
        .await;
    ui.fill(
        "form.export-form [name=reason]",
        "Réquisition : deux caméras",
    )
    .await;
    ui.click("form.export-form button[type=submit]").await;
    let href = ui
        .wait(
            "the export ready",
            "const a = document.querySelector('.export-job a.download'); return a ? a.getAttribute('href') : null",
            120,
        )
        .await;
    let id = href
        .as_str()
        .unwrap()
        .trim_start_matches("/api/v1/exports/")
        .trim_end_matches("/package")
        .to_owned();
    let listed = ui
        .wait(
            "both cameras' hashes",
            "const l = [...document.querySelectorAll('.export-job .export-streams li')];
             return l.length ? l.map(x => x.dataset.camera) : null",
            20,
        )
        .await;
    assert_eq!(listed, json!(["cam-n", "cam-n2"]));
    ui.shot("playback-export-multi").await;
    let (st, job) = v.get(&format!("/api/v1/exports/{id}")).await.unwrap();
    assert_eq!(st, 200, "{job}");
    let cams: Vec<&str> = job["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["camera"].as_str().unwrap())
        .collect();
    assert_eq!(cams, ["cam-n", "cam-n2"], "{job}");
    let r = v
        .http()
        .get(format!("{}/api/v1/exports/{id}/package", v.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let path = v.work_dir().join(format!("vigie-export-{id}.zip"));
    std::fs::write(&path, r.bytes().await.unwrap()).unwrap();
    let (ok, out) = v.command(&["verify", path.to_str().unwrap()]).unwrap();
    assert!(ok && out.contains("2 cameras"), "{out}");
    // The exports page lists both cameras, each with its master's hash.
    ui.route("#/exports", "exports").await;
    let hashes = ui
        .wait(
            "the multi-camera export listed",
            &format!(
                "const s = document.querySelector(\"main [data-export='{id}']\");
                 const r = s && s.closest('tr');
                 return r ? [...r.querySelectorAll('.hashes [data-camera]')].map(d => [d.dataset.camera, d.querySelector('code').title]) : null"
            ),
            20,
        )
        .await;
    let want: Vec<Value> = job["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| json!([s["camera"], s["sha256"]]))
        .collect();
    assert_eq!(hashes, json!(want));
    ui.shot("exports-multi").await;
    ui.b.close().await.unwrap();
}

/// Sub-streams where they belong: a camera with a 1280×720 main stream (`record`) and a
/// 640×360 sub-stream (`role = "live"`). The wall's tile asks for the sub-stream and decodes
/// 640×360; the enlarged tile asks for the main one and decodes 1280×720; the sub-stream is not
/// recorded; the camera listing shows the roles.
#[tokio::test(flavor = "multi_thread")]
async fn live_wall_plays_the_sub_stream_and_the_enlarged_tile_the_main_one() {
    let sim = vigie_testkit::sim::start_embedded(&[
        ("m", "h264-main-1280x720-15fps-gop30.h264"),
        ("s", vigie_testkit::sim::BASELINE),
    ])
    .await;
    let toml = format!(
        "[[communes]]\nid = \"nord\"\nname = \"Ville-Nord\"\n\
         [[cameras]]\nid = \"cam-d\"\nname = \"Dôme du carrefour\"\ncommune = \"nord\"\nclass = \"close-up\"\n\
           [[cameras.streams]]\n  name = \"main\"\n  url = \"{}\"\n  role = \"record\"\n\
           [[cameras.streams]]\n  name = \"sub\"\n  url = \"{}\"\n  role = \"live\"\n",
        sim.url("m"),
        sim.url("s")
    );
    let v = VigieBuilder::new(BIN).toml(&toml).start().unwrap();
    // The listing shows the roles.
    let (_, cams) = v.get("/api/v1/cameras").await.unwrap();
    let cam = &cams["cameras"][0];
    assert_eq!(cam["live_stream"], "sub", "{cam}");
    assert_eq!(cam["main_stream"], "main", "{cam}");
    let roles: Vec<(&str, &str, bool)> = cam["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["role"].as_str().unwrap(),
                s["recorded"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(roles, [("main", "record", true), ("sub", "live", false)]);
    wait_spans(&v, "cam-d", 1, 3.0).await;

    let ui = Ui::start(&v).await;
    ui.login(ADMIN_USER, ADMIN_PASSWORD).await;
    // Record which live WebSockets the page opens.
    ui.js(
        "const W = window.WebSocket; window.__ws = [];
         class Spy extends W { constructor(u, p) { super(u, p); window.__ws.push(String(u)); } }
         window.WebSocket = Spy;",
        vec![],
    )
    .await;
    ui.route("#/live?layout=2&cams=cam-d", "live").await;
    let tile = ui
        .wait(
            "the wall's tile playing",
            "const t = window.vigie.live.tiles[0]; const v = t && t.video;
             return v && v.readyState >= 2 && v.currentTime > 0.5 && v.videoWidth > 0
               ? {stream: t.stream, w: v.videoWidth, h: v.videoHeight, ws: window.__ws} : null",
            40,
        )
        .await;
    assert_eq!(tile["stream"], "sub", "{tile}");
    assert_eq!(
        (tile["w"].as_u64(), tile["h"].as_u64()),
        (Some(640), Some(360)),
        "{tile}"
    );
    let ws: Vec<String> = serde_json::from_value(tile["ws"].clone()).unwrap();
    assert!(
        !ws.is_empty()
            && ws
                .iter()
                .all(|u| u.ends_with("/cameras/cam-d/streams/sub/live")),
        "{ws:?}"
    );
    ui.shot("live-wall-substream").await;
    // Enlarged: the main stream.
    ui.click(".tile[data-slot=\"0\"]").await;
    let big = ui
        .wait(
            "the enlarged tile playing the main stream",
            "const t = window.vigie.live.tiles[0]; const v = t && t.video;
             return t && t.enlarged && v && v.readyState >= 2 && v.currentTime > 0.5 && v.videoWidth === 1280
               ? {stream: t.stream, w: v.videoWidth, h: v.videoHeight, ws: window.__ws} : null",
            40,
        )
        .await;
    assert_eq!(big["stream"], "main", "{big}");
    assert_eq!(big["h"], 720, "{big}");
    let ws: Vec<String> = serde_json::from_value(big["ws"].clone()).unwrap();
    assert!(
        ws.last()
            .unwrap()
            .ends_with("/cameras/cam-d/streams/main/live"),
        "{ws:?}"
    );
    ui.shot("live-enlarged-main").await;
    ui.b.close().await.unwrap();
    // The server journaled both live views, each with its stream.
    let (_, j) = v.get("/api/v1/audit?action=live-start").await.unwrap();
    let streams: Vec<&str> = j["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["camera"] == "cam-d")
        .map(|e| e["stream"].as_str().unwrap_or(""))
        .collect();
    assert!(
        streams.contains(&"sub") && streams.contains(&"main"),
        "{streams:?}"
    );
    // The quality floor (close-up: ≥ 704×576) is about recorded footage: the 640×360 live-only
    // sub-stream, watched for well over the 5 s hysteresis, raised no alert and shows none.
    let (_, j) = v.get("/api/v1/audit?action=quality-alert").await.unwrap();
    assert!(
        !j["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["camera"] == "cam-d"),
        "{j}"
    );
    let (_, cams) = v.get("/api/v1/cameras").await.unwrap();
    let streams = cams["cameras"][0]["streams"].as_array().unwrap();
    assert!(streams[1]["compliance"].is_null(), "{}", streams[1]);
    assert_eq!(streams[0]["compliance"]["alert"], false, "{}", streams[0]);
    // The live-only sub-stream is not recorded (the main one is).
    let (a, b) = window();
    assert!(v.spans("cam-d", "sub", &a, &b).await.unwrap().is_empty());
    assert!(!v.spans("cam-d", "main", &a, &b).await.unwrap().is_empty());
    assert!(!v.data_dir.join("recordings/cam-d/sub").exists());
}

//! Headless Chromium (Debian `chromium` + `chromium-driver`) driven over WebDriver with
//! fantoccini, for tests that need a real browser (video.mp4 playback, MSE live view).
//!
//! [`Browser::start`] launches `/usr/bin/chromedriver` on a free port and a fresh Chromium
//! profile; on drop, the driver's whole process group (chromedriver, Chromium and its helper
//! processes) is killed and the profile deleted, so a failed test never leaves a browser behind.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// The WebDriver client crate, for tests that drive pages element by element.
pub use fantoccini;

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A Chromium session. Call [`Browser::close`] to end the session cleanly (drop kills it).
pub struct Browser {
    client: Option<fantoccini::Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start() -> anyhow::Result<Browser> {
        Self::start_with_args(&[]).await
    }

    /// Starts a session with extra Chromium flags (e.g. `--allow-file-access-from-files`, with
    /// which pages opened from `file://` may read files next to them).
    pub async fn start_with_args(extra: &[&str]) -> anyhow::Result<Browser> {
        let port = crate::process::free_port()?;
        let profile = tempfile::tempdir()?;
        // Its own process group, which the Chromium it launches inherits: killing the driver
        // alone left Chromium running (once for 1.5 h after a failed test).
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {CHROMEDRIVER} (apt install chromium-driver)"))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                kill_group(&mut driver);
                bail!("chromedriver did not listen on port {port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--autoplay-policy=no-user-gesture-required",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = fantoccini::ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                kill_group(&mut driver);
                bail!("WebDriver session: {e}");
            }
        };
        Ok(Browser {
            client: Some(client),
            driver,
            _profile: profile,
        })
    }

    fn client(&self) -> anyhow::Result<&fantoccini::Client> {
        self.client.as_ref().context("browser closed")
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.login_for(url).await?;
        self.client()?.goto(url).await.context("goto")?;
        Ok(())
    }

    /// Logs the browser in (session cookie) as the default admin of the Vigie that `url`
    /// points to, if this process started it (see process::VigieBuilder).
    async fn login_for(&self, url: &str) -> anyhow::Result<()> {
        let Some(rest) = url
            .strip_prefix("http://127.0.0.1:")
            .or_else(|| url.strip_prefix("https://127.0.0.1:"))
        else {
            return Ok(());
        };
        let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Some(c) = port
            .parse()
            .ok()
            .and_then(crate::process::credentials_for_port)
        else {
            return Ok(());
        };
        let origin = &url[..url.len() - rest.len() + port.len()];
        self.client()?
            .goto(&format!("{origin}/"))
            .await
            .context("goto (login)")?;
        let status = self
            .execute_async(
                "const [u, p, done] = arguments;
                 fetch('/api/v1/session', {method: 'POST', headers: {'Content-Type': 'application/json'},
                   body: JSON.stringify({username: u, password: p})})
                   .then(r => done(r.status)).catch(e => done(String(e)));",
                vec![json!(c.user), json!(c.password)],
            )
            .await?;
        if status != json!(200) {
            bail!("browser login answered {status}");
        }
        Ok(())
    }

    /// Runs `js` (a function body; use `return`) with `arguments` = `args`.
    pub async fn eval(&self, js: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.client()?.execute(js, args).await.context("execute")
    }

    /// Runs asynchronous `js`: it must call `arguments[arguments.length - 1](result)`.
    pub async fn execute_async(&self, js: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.client()?
            .execute_async(js, args)
            .await
            .context("execute_async")
    }

    /// Sets the script timeout used by [`Browser::execute_async`].
    pub async fn set_script_timeout(&self, t: Duration) -> anyhow::Result<()> {
        let c = self.client()?;
        let mut timeouts = fantoccini::wd::TimeoutConfiguration::default();
        timeouts.set_script(Some(t));
        c.update_timeouts(timeouts).await.context("timeouts")?;
        Ok(())
    }

    /// The WebDriver client itself (element lookups, typing, clicks).
    pub fn webdriver(&self) -> anyhow::Result<&fantoccini::Client> {
        self.client()
    }

    /// Opens `url` without logging in first (pages that show their own login form).
    pub async fn goto_anonymous(&self, url: &str) -> anyhow::Result<()> {
        self.client()?.goto(url).await.context("goto")?;
        Ok(())
    }

    /// Opens Vigie's UI at `base_url` and signs in through its form as `user`, then waits
    /// (30 s at most) for the application's header.
    pub async fn sign_in(&self, base_url: &str, user: &str, password: &str) -> anyhow::Result<()> {
        self.goto_anonymous(&format!("{}/", base_url.trim_end_matches('/')))
            .await?;
        self.eval(
            "const [u, p] = arguments; document.querySelector('#username').value = u;
             document.querySelector('#password').value = p;
             document.querySelector('#login-submit').click(); return true;",
            vec![json!(user), json!(password)],
        )
        .await?;
        self.wait_js(
            "the app after sign-in",
            "return document.querySelector('header.hdr') !== null",
            Duration::from_secs(30),
        )
        .await?;
        Ok(())
    }

    /// Navigates the single-page UI to `hash` (e.g. `#/live?layout=1&cams=cam-1`).
    pub async fn set_hash(&self, hash: &str) -> anyhow::Result<()> {
        self.eval(
            "location.hash = arguments[0]; return true;",
            vec![json!(hash)],
        )
        .await?;
        Ok(())
    }

    /// Polls `code` (a function body, run every 250 ms) until it returns something other than
    /// null or false, and returns that. After `timeout` the error names `what`, the last
    /// value, the playback page's state (if any) and the start of the page's text.
    pub async fn wait_js(
        &self,
        what: &str,
        code: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.eval(code, vec![]).await.unwrap_or(Value::Null);
            if !last.is_null() && last != json!(false) {
                return Ok(last);
            }
            if Instant::now() > deadline {
                let page = self
                    .eval("return document.body.innerText.slice(0, 2000)", vec![])
                    .await
                    .unwrap_or_default();
                let state = self
                    .eval(
                        "return window.vigie && window.vigie.playback ? window.vigie.playback.state() : null",
                        vec![],
                    )
                    .await
                    .unwrap_or_default();
                bail!(
                    "timed out waiting for {what} (last {last})\nplayback state: {state}\n{page}"
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Sets the window size (for screenshots of whole pages).
    pub async fn set_window_size(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.client()?
            .set_window_size(width, height)
            .await
            .context("window size")?;
        Ok(())
    }

    /// A real mouse click (pointer down and up) at viewport coordinates `(x, y)`.
    pub async fn click_at(&self, x: f64, y: f64) -> anyhow::Result<()> {
        use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
        let mouse = MouseActions::new("mouse".into())
            .then(PointerAction::MoveTo {
                duration: None,
                x: x.round(),
                y: y.round(),
            })
            .then(PointerAction::Down {
                button: MOUSE_BUTTON_LEFT,
            })
            .then(PointerAction::Up {
                button: MOUSE_BUTTON_LEFT,
            });
        self.client()?
            .perform_actions(mouse)
            .await
            .context("click")?;
        Ok(())
    }

    /// Presses and releases one key on whatever has the focus (`'\u{e012}'` is ←, see the
    /// WebDriver key codes).
    pub async fn press_key(&self, key: char) -> anyhow::Result<()> {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let keys = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Up { value: key });
        self.client()?
            .perform_actions(keys)
            .await
            .context("key press")?;
        Ok(())
    }

    /// Writes a PNG screenshot of the page to `path`.
    pub async fn screenshot_to(&self, path: &Path) -> anyhow::Result<()> {
        let png = self.client()?.screenshot().await.context("screenshot")?;
        std::fs::write(path, png)?;
        Ok(())
    }

    /// Ends the WebDriver session and stops chromedriver.
    pub async fn close(mut self) -> anyhow::Result<()> {
        if let Some(c) = self.client.take() {
            c.close().await.context("closing the session")?;
        }
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

/// Kills the driver's process group (the driver leads it: see `start_with_args`), then reaps
/// the driver.
fn kill_group(driver: &mut Child) {
    if let Ok(pid) = i32::try_from(driver.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = driver.kill();
    let _ = driver.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The processes whose process group is `pgid` (from `/proc/<pid>/stat`).
    fn group_members(pgid: u32) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid pgrp …: comm may hold spaces, so split after its ')'.
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.get(2).and_then(|f| f.parse::<u32>().ok()) == Some(pgid) {
                let comm = head.split_once('(').map(|x| x.1).unwrap_or("").to_owned();
                out.push((pid, comm));
            }
        }
        out
    }

    /// A dropped browser (a test that panics never calls `close`) leaves no chromedriver or
    /// Chromium process behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_browser_leaves_no_process_behind() {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            eprintln!(
                "skipped: {CHROMIUM} or {CHROMEDRIVER} missing (apt install chromium chromium-driver)"
            );
            return;
        }
        let b = Browser::start().await.unwrap();
        b.client().unwrap().goto("about:blank").await.unwrap();
        let pgid = b.driver.id();
        let members = group_members(pgid);
        assert!(
            members
                .iter()
                .any(|(_, c)| c.contains("chrom") && !c.contains("driver")),
            "Chromium is not in the driver's process group: {members:?}"
        );
        drop(b);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Killed processes linger as zombies until their parent (gone) is replaced by init.
            let left: Vec<_> = group_members(pgid)
                .into_iter()
                .filter(|(pid, _)| {
                    std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .ok()
                        .and_then(|s| {
                            s.rsplit_once(')')
                                .map(|x| x.1.trim_start().starts_with('Z'))
                        })
                        != Some(true)
                })
                .collect();
            if left.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "left behind: {left:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

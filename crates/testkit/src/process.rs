//! Running the real `vigie` binary: a temporary data directory, a free port, a config file, the
//! child process with its log captured, and helpers for the HTTP API.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The admin every [`VigieBuilder`] creates (with the CLI, before start) unless told not to;
/// its API token is sent by the [`Vigie`] HTTP helpers.
pub const ADMIN_USER: &str = "e2e-admin";
/// Its password (a test fixture, not a secret).
pub const ADMIN_PASSWORD: &str = "e2e admin password, not a secret";

/// Credentials of the default admin of the Vigie listening on a port.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    /// A bearer API token (`vigie_…`).
    pub token: String,
}

fn credentials_registry() -> &'static std::sync::Mutex<std::collections::HashMap<u16, Credentials>>
{
    static R: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<u16, Credentials>>> =
        std::sync::OnceLock::new();
    R.get_or_init(Default::default)
}

fn tls_roots_registry() -> &'static std::sync::Mutex<std::collections::HashMap<u16, Vec<u8>>> {
    static R: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<u16, Vec<u8>>>> =
        std::sync::OnceLock::new();
    R.get_or_init(Default::default)
}

/// The certificate (PEM) of the Vigie started by this process on `port` when it serves
/// HTTPS (for clients that only know the port: the live WebSocket client).
pub fn tls_root_for_port(port: u16) -> Option<Vec<u8>> {
    tls_roots_registry()
        .lock()
        .ok()
        .and_then(|m| m.get(&port).cloned())
}

/// A self-signed certificate for `127.0.0.1` and `localhost` and its key, written as PEM to
/// `dir/cert.pem` and `dir/key.pem` (for [`VigieBuilder::tls`]); returns their paths.
pub fn self_signed_cert(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem())?;
    std::fs::write(&key, ck.key_pair.serialize_pem())?;
    Ok((cert, key))
}

/// The default admin's credentials for the Vigie started by this process on `port` (for
/// clients that only know the port: WebSocket, browser).
pub fn credentials_for_port(port: u16) -> Option<Credentials> {
    credentials_registry()
        .lock()
        .ok()
        .and_then(|m| m.get(&port).cloned())
}

/// Builds the configuration of a Vigie under test. `cameras_toml` holds `[[communes]]` and
/// `[[cameras]]` tables; server and storage sections are generated.
pub struct VigieBuilder {
    bin: PathBuf,
    extra_toml: String,
    segment_seconds: u32,
    min_free_bytes: String,
    data_dir: Option<PathBuf>,
    /// Extra lines of the `[server]` table (e.g. TLS, metrics token).
    server_toml: String,
    /// PEM of the certificate to trust when serving HTTPS.
    tls_root_pem: Option<Vec<u8>>,
    default_admin: bool,
    /// Extra lines of the `[recording]` table (e.g. `index_interval_ms = 1000`).
    recording_toml: String,
    /// The HTTP port, when the caller must know it before start (e.g. a cluster node's
    /// `advertise_url`); a free port otherwise.
    port: Option<u16>,
}

impl VigieBuilder {
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        VigieBuilder {
            bin: bin.into(),
            extra_toml: String::new(),
            segment_seconds: 10,
            min_free_bytes: "1MiB".to_owned(),
            data_dir: None,
            server_toml: String::new(),
            tls_root_pem: None,
            default_admin: true,
            port: None,
            recording_toml: String::new(),
        }
    }
    /// Adds lines to the `[recording]` table.
    pub fn recording_toml(mut self, s: &str) -> Self {
        self.recording_toml.push_str(s);
        self.recording_toml.push('\n');
        self
    }
    /// Listens on this port (from [`free_port`]) instead of one chosen at start.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
    /// Adds lines to the `[server]` table.
    pub fn server_toml(mut self, s: &str) -> Self {
        self.server_toml.push_str(s);
        self.server_toml.push('\n');
        self
    }
    /// Serves HTTPS with this PEM certificate (also trusted by the helpers' client) and key.
    pub fn tls(mut self, cert: &Path, key: &Path) -> anyhow::Result<Self> {
        self.tls_root_pem = Some(std::fs::read(cert)?);
        Ok(self.server_toml(&format!(
            "tls_cert = {:?}\ntls_key = {:?}",
            cert.display().to_string(),
            key.display().to_string()
        )))
    }
    /// Starts with no user at all (no default admin, helpers unauthenticated).
    pub fn without_default_admin(mut self) -> Self {
        self.default_admin = false;
        self
    }
    pub fn toml(mut self, s: &str) -> Self {
        self.extra_toml.push_str(s);
        self.extra_toml.push('\n');
        self
    }
    /// `storage.min_free_bytes` (default "1MiB"), e.g. "1000TB" to make retention's free-space
    /// floor delete every closed segment.
    pub fn min_free_bytes(mut self, s: &str) -> Self {
        self.min_free_bytes = s.to_owned();
        self
    }
    pub fn segment_seconds(mut self, s: u32) -> Self {
        self.segment_seconds = s;
        self
    }
    pub fn data_dir(mut self, d: &Path) -> Self {
        self.data_dir = Some(d.to_owned());
        self
    }
    pub fn start(self) -> anyhow::Result<Vigie> {
        let work = tempfile::tempdir()?;
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| work.path().join("data"));
        let port = match self.port {
            Some(p) => p,
            None => free_port()?,
        };
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n{}[storage]\ndata_dir = {:?}\nmin_free_bytes = {:?}\n[recording]\nsegment_seconds = {}\n{}{}",
            self.server_toml,
            data_dir.display().to_string(),
            self.min_free_bytes,
            self.segment_seconds,
            self.recording_toml,
            self.extra_toml
        );
        let config_path = work.path().join("vigie.toml");
        std::fs::write(&config_path, &config)?;
        if let Some(pem) = &self.tls_root_pem {
            tls_roots_registry()
                .lock()
                .map_err(|_| anyhow::anyhow!("TLS roots registry poisoned"))?
                .insert(port, pem.clone());
        }
        let mut v = Vigie {
            bin: self.bin,
            work,
            data_dir,
            config_path,
            port,
            child: None,
            log_path: PathBuf::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()?,
            scheme: if self.tls_root_pem.is_some() {
                "https"
            } else {
                "http"
            },
            admin_token: None,
        };
        if self.default_admin {
            let token = v.bootstrap_admin()?;
            credentials_registry()
                .lock()
                .map_err(|_| anyhow::anyhow!("credentials registry poisoned"))?
                .insert(
                    port,
                    Credentials {
                        user: ADMIN_USER.into(),
                        password: ADMIN_PASSWORD.into(),
                        token: token.clone(),
                    },
                );
            v.admin_token = Some(token);
        }
        v.http = v.client_builder()?.build()?;
        v.spawn()?;
        Ok(v)
    }
}

/// A running (or stopped) `vigie run` under test.
pub struct Vigie {
    bin: PathBuf,
    work: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub port: u16,
    child: Option<Child>,
    log_path: PathBuf,
    http: reqwest::Client,
    scheme: &'static str,
    admin_token: Option<String>,
}

/// A free loopback TCP port for a server the test starts.
///
/// Picked below the kernel's ephemeral range (32768–60999 on Linux): a port from that range,
/// freed here and bound again by the server a moment later, can meanwhile become the local
/// port of any outgoing connection of the many tests running at once ("Address already in use"
/// seen in CI). Below it only another test's pick can collide, and a port already bound is
/// skipped. Random (clock and process id), so concurrent test processes do not walk in step.
pub fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(std::process::id()) << 32);
    for i in 0..256u64 {
        let mut x = seed
            .wrapping_add(
                NEXT.fetch_add(1, Ordering::Relaxed)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15),
            )
            .wrapping_add(i);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        let port = 20_000 + (x % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Vigie {
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    pub fn base_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// The HTTP client of the helpers: sends the default admin's bearer token (if any) and
    /// trusts the test certificate under TLS.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The default admin's API token (`Authorization: Bearer …`).
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// A client builder with no credentials that trusts this Vigie's certificate (TLS).
    pub fn anonymous_client_builder(&self) -> anyhow::Result<reqwest::ClientBuilder> {
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(20));
        if self.scheme == "https" {
            let cfg = std::fs::read_to_string(&self.config_path)?;
            let cert = cfg
                .lines()
                .find_map(|l| l.strip_prefix("tls_cert = "))
                .context("no tls_cert in the config")?
                .trim_matches('"')
                .to_owned();
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(cert)?)?);
        }
        Ok(b)
    }

    fn client_builder(&self) -> anyhow::Result<reqwest::ClientBuilder> {
        let mut b = self.anonymous_client_builder()?;
        if let Some(t) = &self.admin_token {
            let mut h = reqwest::header::HeaderMap::new();
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))?;
            v.set_sensitive(true);
            h.insert(reqwest::header::AUTHORIZATION, v);
            b = b.default_headers(h);
        }
        Ok(b)
    }

    /// Creates the default admin with the CLI (if absent) and a fresh API token for it.
    fn bootstrap_admin(&self) -> anyhow::Result<String> {
        let mut child = Command::new(&self.bin)
            .args([
                "user",
                "add",
                ADMIN_USER,
                "--role",
                "admin",
                "--all-communes",
                "--password-stdin",
                "--config",
            ])
            .arg(&self.config_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            writeln!(stdin, "{ADMIN_PASSWORD}")?;
        }
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && !text.contains("already exists") {
            bail!("vigie user add failed: {text}");
        }
        let (ok, out) =
            self.command(&["token", "create", "--user", ADMIN_USER, "--name", "e2e"])?;
        if !ok {
            bail!("vigie token create failed: {out}");
        }
        out.lines()
            .find(|l| l.starts_with("vigie_"))
            .map(str::to_owned)
            .context("no token in the output of vigie token create")
    }

    /// Starts (or restarts) `vigie run` and waits until the API answers.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let n = std::fs::read_dir(self.work.path())?.count();
        self.log_path = self.work.path().join(format!("vigie-{n}.log"));
        let log = std::fs::File::create(&self.log_path)?;
        let child = Command::new(&self.bin)
            .args(["run", "--config"])
            .arg(&self.config_path)
            .env("VIGIE_LOG", "info,vigie_store=debug,vigie_ingest=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!(
                    "vigie exited during start-up ({status}); log:\n{}",
                    self.log()
                );
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("vigie did not listen within 30 s; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Process id of the running `vigie`, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Resident memory of the running `vigie` in bytes (from /proc), if any.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// The log of the current (or last) run.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for a clean exit (status 0).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        let pid = c.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = c.try_wait()? {
                if !status.success() {
                    bail!(
                        "vigie exited with {status} after SIGTERM; log:\n{}",
                        self.log()
                    );
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                bail!(
                    "vigie did not stop within 20 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for a clean exit (status 0): a clustered node
    /// drains its cameras first, which takes longer than [`Vigie::stop`] allows.
    pub fn stop_within(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        self.signal("TERM", c.id())?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = c.try_wait()? {
                if !status.success() {
                    bail!(
                        "vigie exited with {status} after SIGTERM; log:\n{}",
                        self.log()
                    );
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                bail!(
                    "vigie did not stop within {} s of SIGTERM; log:\n{}",
                    timeout.as_secs(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: &str, pid: u32) -> anyhow::Result<()> {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()?;
        if !st.success() {
            bail!("kill -{sig} {pid} failed ({st})");
        }
        Ok(())
    }

    /// SIGSTOP: the process freezes with its sockets open (a hung node, not a dead one).
    pub fn pause(&self) -> anyhow::Result<()> {
        let pid = self.pid().context("vigie is not running")?;
        self.signal("STOP", pid)
    }

    /// SIGCONT after [`Vigie::pause`].
    pub fn resume(&self) -> anyhow::Result<()> {
        let pid = self.pid().context("vigie is not running")?;
        self.signal("CONT", pid)
    }

    /// Whether the child still runs (false once it exited, e.g. after `vigie cluster drain`
    /// of a node that then shuts down).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// SIGKILL: the process gets no chance to close anything.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// GET a JSON document; returns (status, body).
    pub async fn get(&self, path_and_query: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        let r = self
            .http
            .get(format!("{}{}", self.base_url(), path_and_query))
            .send()
            .await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Ok((status, v))
    }

    pub async fn get_text(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let r = self
            .http
            .get(format!("{}{}", self.base_url(), path))
            .send()
            .await?;
        Ok((r.status().as_u16(), r.text().await?))
    }

    /// The spans of a stream between two times (RFC 3339).
    pub async fn spans(
        &self,
        cam: &str,
        stream: &str,
        start: &str,
        end: &str,
    ) -> anyhow::Result<Vec<(jiff::Timestamp, jiff::Timestamp)>> {
        let (status, v) = self
            .get(&format!(
                "/api/v1/cameras/{cam}/streams/{stream}/recordings?start={start}&end={end}&local=1"
            ))
            .await?;
        if status != 200 {
            bail!("recordings answered {status}: {v}");
        }
        let mut out = Vec::new();
        for s in v["spans"].as_array().context("no spans array")? {
            let a: jiff::Timestamp = s["start"].as_str().context("start")?.parse()?;
            let b: jiff::Timestamp = s["end"].as_str().context("end")?.parse()?;
            out.push((a, b));
        }
        Ok(out)
    }

    /// The status object of one stream from `/api/v1/cameras`.
    pub async fn stream_status(
        &self,
        cam: &str,
        stream: &str,
    ) -> anyhow::Result<serde_json::Value> {
        let (_, v) = self.get("/api/v1/cameras").await?;
        for c in v["cameras"].as_array().context("cameras")? {
            if c["id"] == cam {
                for s in c["streams"].as_array().context("streams")? {
                    if s["name"] == stream {
                        return Ok(s["status"].clone());
                    }
                }
            }
        }
        bail!("no stream {cam}/{stream} in {v}")
    }

    /// Runs another `vigie` subcommand with this instance's config; returns (success, stdout+stderr).
    pub fn command(&self, args: &[&str]) -> anyhow::Result<(bool, String)> {
        let out = Command::new(&self.bin)
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .output()?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok((out.status.success(), text))
    }

    pub fn append_log_note(&self, note: &str) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log_path)
        {
            let _ = writeln!(f, "--- test: {note}");
        }
    }
}

impl Drop for Vigie {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- vigie log ({}):\n{}",
                self.log_path.display(),
                self.log()
            );
        }
    }
}

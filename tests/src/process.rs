//! Running the real `vigie` binary: a temporary data directory, a free port, a config file, the
//! child process with its log captured, and helpers for the HTTP API.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Builds the configuration of a Vigie under test. `cameras_toml` holds `[[communes]]` and
/// `[[cameras]]` tables; server and storage sections are generated.
pub struct VigieBuilder {
    bin: PathBuf,
    extra_toml: String,
    segment_seconds: u32,
    data_dir: Option<PathBuf>,
}

impl VigieBuilder {
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        VigieBuilder {
            bin: bin.into(),
            extra_toml: String::new(),
            segment_seconds: 10,
            data_dir: None,
        }
    }
    pub fn toml(mut self, s: &str) -> Self {
        self.extra_toml.push_str(s);
        self.extra_toml.push('\n');
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
        let port = free_port()?;
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\ndata_dir = {:?}\nmin_free_bytes = \"1MiB\"\n[recording]\nsegment_seconds = {}\n{}",
            data_dir.display().to_string(),
            self.segment_seconds,
            self.extra_toml
        );
        let config_path = work.path().join("vigie.toml");
        std::fs::write(&config_path, &config)?;
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
        };
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
}

pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Vigie {
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
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
                "/api/v1/cameras/{cam}/streams/{stream}/recordings?start={start}&end={end}"
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

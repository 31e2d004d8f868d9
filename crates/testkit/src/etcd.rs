//! A real etcd cluster for the tests: N members of Debian's `etcd-server` (`/usr/bin/etcd`, 3.4)
//! on free loopback ports in a temporary directory, with the faults the cluster tests need
//! (stop/start a member, `kill -9`, `SIGSTOP`/`SIGCONT`, stop everything and bring it back).
//!
//! Owns: the etcd processes, their data directories and logs, and waiting (bounded) until the
//! cluster answers. Does not: know anything about Vigie (see [`crate::cluster`]). `Drop` kills
//! every member still running, also on panic, and prints their logs when the test failed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::process::free_port;

/// Where Debian's `etcd-server` installs etcd.
pub const ETCD_BIN: &str = "/usr/bin/etcd";

/// Whether etcd can be used here. Without `/usr/bin/etcd`, a test outside CI is skipped with a
/// message on stderr (returns `Ok(false)`); under CI (`CI` set) that is an error, because
/// `.ci/run` installs `etcd-server` and a skipped cluster test would prove nothing.
pub fn etcd_available() -> anyhow::Result<bool> {
    if Path::new(ETCD_BIN).exists() {
        return Ok(true);
    }
    if std::env::var_os("CI").is_some() {
        bail!(
            "{ETCD_BIN} is missing under CI: .ci/run must install the Debian package etcd-server"
        );
    }
    eprintln!(
        "SKIPPED: {ETCD_BIN} not found; install the Debian package etcd-server to run the cluster tests"
    );
    Ok(false)
}

/// One etcd member: its ports, data directory and process.
pub struct EtcdMember {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    data_dir: PathBuf,
    log_dir: PathBuf,
    child: Option<Child>,
    paused: bool,
    runs: u32,
}

impl EtcdMember {
    /// `http://127.0.0.1:<client port>`.
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
    /// Process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
    fn logs(&self) -> String {
        let mut out = String::new();
        for i in 0..self.runs {
            let p = self.log_dir.join(format!("{}-{i}.log", self.name));
            out.push_str(&format!("--- {}\n", p.display()));
            out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
        }
        out
    }
}

/// A running etcd cluster of N members on loopback.
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    token: String,
    members: Vec<EtcdMember>,
}

impl EtcdCluster {
    /// Starts `n` members (1..=7) and waits until every one answers healthy (≤ 30 s).
    pub fn start(n: usize) -> anyhow::Result<EtcdCluster> {
        if !(1..=7).contains(&n) {
            bail!("an etcd cluster of {n} members: 1 to 7");
        }
        let dir = tempfile::Builder::new().prefix("vigie-etcd-").tempdir()?;
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            members.push(EtcdMember {
                name: format!("etcd{i}"),
                client_port: free_port()?,
                peer_port: free_port()?,
                data_dir: dir.path().join(format!("etcd{i}.data")),
                log_dir: dir.path().to_owned(),
                child: None,
                paused: false,
                runs: 0,
            });
        }
        let token = format!(
            "vigie-test-{}-{}",
            std::process::id(),
            members[0].client_port
        );
        let mut c = EtcdCluster {
            dir,
            token,
            members,
        };
        for i in 0..n {
            c.spawn(i)?;
        }
        c.wait_healthy(Duration::from_secs(30))?;
        Ok(c)
    }

    /// Like [`EtcdCluster::start`], or `Ok(None)` when etcd is absent outside CI
    /// ([`etcd_available`]).
    pub fn start_or_skip(n: usize) -> anyhow::Result<Option<EtcdCluster>> {
        if !etcd_available()? {
            return Ok(None);
        }
        Self::start(n).map(Some)
    }

    pub fn members(&self) -> &[EtcdMember] {
        &self.members
    }

    /// The client URLs of every member (what `[cluster] etcd = [...]` lists).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdMember::client_url).collect()
    }

    /// The temporary directory holding data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let initial = self.initial_cluster();
        let token = self.token.clone();
        let m = &mut self.members[i];
        if m.child.is_some() {
            return Ok(());
        }
        let log_path = m.log_dir.join(format!("{}-{}.log", m.name, m.runs));
        m.runs += 1;
        let log = std::fs::File::create(&log_path)?;
        // A restart reuses the data directory: etcd then ignores the --initial-* flags and
        // rejoins as the member it was.
        let child = Command::new(ETCD_BIN)
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--listen-client-urls")
            .arg(m.client_url())
            .arg("--advertise-client-urls")
            .arg(m.client_url())
            .arg("--listen-peer-urls")
            .arg(m.peer_url())
            .arg("--initial-advertise-peer-urls")
            .arg(m.peer_url())
            .arg("--initial-cluster")
            .arg(&initial)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg(&token)
            // Loopback: fast heartbeats and elections keep leader changes short in tests.
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .args(["--quota-backend-bytes", &(256u64 << 20).to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {ETCD_BIN}"))?;
        m.child = Some(child);
        m.paused = false;
        Ok(())
    }

    /// Whether member `i` answers `GET /health` with `{"health":"true"}` (it has a leader and
    /// serves reads).
    pub fn member_healthy(&self, i: usize) -> bool {
        health(self.members[i].client_port)
    }

    /// Waits until every running, unpaused member is healthy; errors (with the logs) after
    /// `timeout`.
    pub fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            let all = (0..self.members.len())
                .filter(|&i| self.members[i].child.is_some() && !self.members[i].paused)
                .all(|i| self.member_healthy(i));
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd not healthy within {} s; logs:\n{}",
                    timeout.as_secs(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Errors if a member that should run has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        for m in &mut self.members {
            if let Some(c) = m.child.as_mut()
                && let Some(st) = c.try_wait()?
            {
                m.child = None;
                bail!("etcd member {} exited ({st}):\n{}", m.name, m.logs());
            }
        }
        Ok(())
    }

    /// SIGTERM to member `i`, waits for its exit (≤ 10 s, then SIGKILL).
    pub fn stop_member(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &mut self.members[i];
        let Some(mut c) = m.child.take() else {
            return Ok(());
        };
        if m.paused {
            signal(c.id(), "CONT")?;
            m.paused = false;
        }
        signal(c.id(), "TERM")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// `kill -9` of member `i`.
    pub fn kill_member(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &mut self.members[i];
        if let Some(mut c) = m.child.take() {
            c.kill()?;
            c.wait()?;
        }
        m.paused = false;
        Ok(())
    }

    /// (Re)starts member `i` on its data directory; does not wait for health.
    pub fn start_member(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)
    }

    /// `SIGSTOP` to member `i` (it keeps its sockets but answers nothing).
    pub fn pause_member(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &mut self.members[i];
        if let Some(c) = &m.child {
            signal(c.id(), "STOP")?;
            m.paused = true;
        }
        Ok(())
    }

    /// `SIGCONT` to member `i`.
    pub fn resume_member(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &mut self.members[i];
        if let Some(c) = &m.child {
            signal(c.id(), "CONT")?;
            m.paused = false;
        }
        Ok(())
    }

    /// Stops every member (the whole coordination service is gone).
    pub fn stop_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.members.len() {
            self.stop_member(i)?;
        }
        Ok(())
    }

    /// Starts every stopped member again and waits until the cluster is healthy (≤ 30 s).
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.members.len() {
            self.spawn(i)?;
        }
        self.wait_healthy(Duration::from_secs(30))
    }

    /// Every member's log.
    pub fn logs(&self) -> String {
        self.members.iter().map(EtcdMember::logs).collect()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                // SIGKILL also ends a stopped (SIGSTOP) process.
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("--- etcd logs:\n{}", self.logs());
        }
    }
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()?;
    if !st.success() {
        bail!("kill -{sig} {pid} failed ({st})");
    }
    Ok(())
}

/// `GET /health` on an etcd client port with a short timeout (plain HTTP/1.0, no client crate).
fn health(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.take(64 * 1024).read_to_string(&mut body);
    body.starts_with("HTTP/1.") && body.contains(" 200 ") && body.contains("\"health\":\"true\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness itself: three members come up healthy; a member killed -9 and restarted
    /// rejoins; the whole cluster stopped is unhealthy, and healthy again once started.
    #[test]
    fn etcd_harness_starts_kills_restarts_and_stops_members() {
        let Some(mut c) = EtcdCluster::start_or_skip(3).unwrap() else {
            return;
        };
        assert_eq!(c.endpoints().len(), 3);
        for i in 0..3 {
            assert!(c.member_healthy(i), "member {i}");
        }
        c.kill_member(1).unwrap();
        assert!(!c.member_healthy(1));
        c.start_member(1).unwrap();
        c.wait_healthy(Duration::from_secs(30)).unwrap();
        c.pause_member(2).unwrap();
        assert!(!c.member_healthy(2), "a stopped process answers nothing");
        c.resume_member(2).unwrap();
        c.wait_healthy(Duration::from_secs(30)).unwrap();
        c.stop_all().unwrap();
        assert!((0..3).all(|i| !c.member_healthy(i)));
        c.start_all().unwrap();
        assert!((0..3).all(|i| c.member_healthy(i)));
        let pids: Vec<u32> = c.members().iter().filter_map(EtcdMember::pid).collect();
        drop(c);
        for pid in pids {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists()
                    || std::fs::read_to_string(format!("/proc/{pid}/status"))
                        .is_ok_and(|s| s.contains("State:\tZ")),
                "etcd {pid} left running"
            );
        }
    }
}

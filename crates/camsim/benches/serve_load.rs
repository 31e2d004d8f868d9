//! Load benchmark (a measurement, never a pass/fail test): 200 mounts of the 2 Mbit/s fixture,
//! 200 TCP clients that only read and count bytes, camsim run as a separate process so its CPU
//! can be measured from /proc. Prints camsim's CPU (% of one core), the throughput the clients
//! received against the nominal one, and camsim's RSS. Run with:
//!
//! ```text
//! cargo bench -p vigie-camsim --bench serve_load
//! CAMSIM_BIN=target/release/camsim cargo bench -p vigie-camsim --bench serve_load
//! ```
//! Env: CAMSIM_STREAMS (default 200), CAMSIM_SECS (default 10), CAMSIM_THREADS (default 1),
//! CAMSIM_FIXTURE (default h264-2mbps-25fps.h264).

// The RTSP client of camsim's tests (which allows the parts this benchmark does not use).
#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32, ticks_per_sec: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let ut: f64 = f[11].parse().unwrap();
    let st: f64 = f[12].parse().unwrap();
    (ut + st) / ticks_per_sec
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes `--bench` (and any filter); there is one measurement, they are ignored.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(two_hundred_streams_cpu());
}

async fn two_hundred_streams_cpu() {
    let streams: usize = env_or("CAMSIM_STREAMS", 200);
    let secs: u64 = env_or("CAMSIM_SECS", 10);
    let threads: usize = env_or("CAMSIM_THREADS", 1);
    let fx: String = env_or("CAMSIM_FIXTURE", BENCH2.to_owned());
    let bin = std::env::var("CAMSIM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_camsim").into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = vigie_camsim::fixtures_dir();
    let mut child = tokio::process::Command::new(&bin)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--fixtures",
            dir.to_str().unwrap(),
            "--mount",
            &format!("cam={fx}"),
            "--copies",
            &streams.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut urls = Vec::new();
    while urls.len() < streams {
        urls.push(lines.next_line().await.unwrap().expect("camsim exited"));
    }
    let tck: f64 = String::from_utf8(
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for url in urls {
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&url).await.unwrap();
            c.play().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match c.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        received.fetch_add(n as u64, Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // warm-up
    let (cpu0, bytes0, t0) = (cpu_secs(pid, tck), received.load(Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (cpu1, bytes1, el) = (
        cpu_secs(pid, tck),
        received.load(Relaxed),
        t0.elapsed().as_secs_f64(),
    );
    let cpu = (cpu1 - cpu0) / el * 100.0;
    let mbit = (bytes1 - bytes0) as f64 * 8.0 / el / 1e6;
    let expected = fixture(&fx).bitrate_bps() as f64 * streams as f64 / 1e6;
    println!(
        "camsim ({bin}, {threads} thread(s)): {streams} streams of {fx}: CPU {cpu:.1}% of one core, \
         clients received {mbit:.0} Mbit/s (nominal {expected:.0} Mbit/s), camsim RSS {} MiB",
        rss_kib(pid) / 1024
    );
    for t in tasks {
        t.abort();
    }
    let _ = child.kill().await;
}

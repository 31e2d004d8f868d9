//! `vigie-bench --restart 1x50,7x50,...`: restart cost against the history kept (issue 16).
//!
//! For each size `DAYSxSTREAMS`:
//! 1. a synthetic index of DAYS days × STREAMS streams of 60 s segments (the playback
//!    benchmark's segments: 1500 frames at 2 Mbit/s, real sample and fragment tables) ending
//!    5 min ago, with every segment file present as a sparse file of its indexed length
//!    (generated once per size under the work directory, reused with `--keep`);
//! 2. index bytes per camera-day (sled's overhead included) and, from one entry, what an entry
//!    is made of;
//! 3. page cache dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`; said when refused);
//! 4. camsim serves STREAMS streams; `vigie run` starts on the data directory; measured: time to
//!    the HTTP API answering (every writer open: the listener binds after the writers start),
//!    time to every stream's writer having written a frame (`vigie_writer_frames_total` > 0 for
//!    each), peak RSS (VmHWM) then and at the end, against an idle Vigie;
//! 5. the background verification of the history: duration and rate (from /metrics), waited
//!    for at most `--restart-verify-wait-s`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use vigie_core::{Codec, StreamKey, SystemClock, Time90k, VideoParams};
use vigie_store::{SampleInfo, Store, StoreConfig, SyntheticSegment};

use super::{Env, Mix, dir_bytes, free_port, proc_kib, start_camsim_with, stop_camsim};

pub struct Size {
    pub days: u32,
    pub streams: usize,
}

pub fn parse_sizes(s: &[String]) -> Result<Vec<Size>> {
    s.iter()
        .map(|v| {
            let (d, n) = v
                .split_once('x')
                .with_context(|| format!("size {v:?}: expected DAYSxSTREAMS"))?;
            Ok(Size {
                days: d.parse().context("days")?,
                streams: n.parse().context("streams")?,
            })
        })
        .collect()
}

pub struct Opts {
    pub verify_rate: u32,
    pub verify_wait_s: u64,
    pub vigie_label: String,
    /// Journal-form tables (entries as written before index format 3).
    pub v1_tables: bool,
    /// Packed tables in the entries (index format 3), not in the segment files.
    pub inline_tables: bool,
    /// `storage.index_cache_bytes` in MiB (`None`: Vigie's default).
    pub index_cache_mib: Option<u64>,
    /// The index as written before format 5 (one item per entry): the start migrates it.
    pub legacy_layout: bool,
    /// Camera fixture served instead of the 2 Mbit/s one.
    pub fixture: Option<String>,
    /// Seconds of recording after the verification before the final reading.
    pub hold_s: u64,
}

/// Deterministic pseudo-random numbers (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn params() -> VideoParams {
    VideoParams {
        codec: Codec::H264,
        rfc6381_codec: "avc1.4d401f".into(),
        width: 1920,
        height: 1080,
        pixel_aspect_ratio: (1, 1),
        sample_entry: bytes::Bytes::from(vec![0u8; 120]),
    }
}

/// One 60 s segment at 2 Mbit/s, 25 fps, GOP 50 (as crates/footage/benches/playback.rs).
fn segment(rng: &mut Rng) -> SyntheticSegment {
    let per_frame = 2000u64 * 1000 / 8 / 25;
    let p_size = per_frame * 50 / 54;
    let samples = (0..1500)
        .map(|i| {
            let key = i % 50 == 0;
            let base = if key { p_size * 5 } else { p_size };
            let jitter = rng.next() % (base * 2 / 5 + 1);
            SampleInfo {
                duration_90k: match rng.next() % 20 {
                    0 => 3599,
                    1 => 3601,
                    _ => 3600,
                },
                bytes: (base * 4 / 5 + jitter) as u32,
                is_key: key,
            }
        })
        .collect();
    SyntheticSegment {
        start: Time90k(0),
        wall_duration_90k: None,
        samples,
        samples_per_fragment: 25,
        fragment_header_len: 380,
        init_len: 900,
        session_id: 1,
    }
}

pub fn key(i: usize) -> StreamKey {
    StreamKey::new(format!("cam{i:04}"), "main")
}

/// Generates the index and the sparse files in `data` (unless already there).
fn generate(
    data: &Path,
    size: &Size,
    v1_tables: bool,
    inline_tables: bool,
    legacy: bool,
) -> Result<()> {
    let marker = data.join(if legacy {
        ".generated-v4-legacy"
    } else if v1_tables {
        ".generated-v1"
    } else if inline_tables {
        ".generated-v3"
    } else {
        ".generated-v5"
    });
    if marker.exists() {
        eprintln!("# reusing {}", data.display());
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(data);
    std::fs::create_dir_all(data)?;
    let store = Store::open(
        StoreConfig::new(data.to_owned(), Default::default(), 0),
        Arc::new(SystemClock),
    )?;
    let seg_90k = 60 * 90_000i64;
    let per_stream = i64::from(size.days) * 1440;
    let end = vigie_core::Clock::now(&SystemClock).0 - 300 * vigie_core::TIME_UNITS_PER_SEC;
    let t0 = end - per_stream * seg_90k;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let templates: Vec<SyntheticSegment> = (0..8).map(|_| segment(&mut rng)).collect();
    let t = Instant::now();
    let mut made_dirs = std::collections::HashSet::new();
    for s in 0..size.streams {
        let encs: Vec<_> = templates
            .iter()
            .map(|tpl| {
                if v1_tables {
                    store.encode_synthetic_v1(&key(s), &params(), tpl)
                } else if inline_tables {
                    store.encode_synthetic_inline(&key(s), &params(), tpl)
                } else {
                    store.encode_synthetic(&key(s), &params(), tpl)
                }
            })
            .collect::<Result<_, _>>()?;
        let stagger = seg_90k * s as i64 / size.streams as i64;
        // One sled batch per 1,440 entries (a day of the stream): generation is dominated by
        // sled's inserts otherwise.
        let mut k = 0;
        while k < per_stream {
            let items: Vec<_> = (k..(k + 1440).min(per_stream))
                .map(|k| {
                    (
                        &encs[(k as usize * 7 + s) % encs.len()],
                        Time90k(t0 + stagger + k * seg_90k),
                    )
                })
                .collect();
            let ids = store.insert_synthetic_many(&items)?;
            for (id, (enc, start)) in ids.into_iter().zip(&items) {
                let (path, _) = store.synthetic_file(&key(s), enc, id, *start);
                let dir = path.parent().context("segment dir")?.to_owned();
                if made_dirs.insert(dir.clone()) {
                    std::fs::create_dir_all(&dir)?;
                }
                // Sparse, the tables box included (a hole: the start and the verification read
                // only the file's length, never the tables; ~3 KB of real blocks per file would
                // not fit 30 d × 200 on this disk).
                store.create_synthetic_file(&key(s), enc, id, *start, false)?;
            }
            k += items.len() as i64;
        }
        if s % 10 == 9 {
            eprintln!(
                "#   {} streams generated ({:.0} s)",
                s + 1,
                t.elapsed().as_secs_f64()
            );
        }
    }
    store.flush_index()?;
    drop(store);
    if legacy {
        let t = Instant::now();
        let ix = vigie_store::index::Index::open(&data.join("index"))?;
        ix.write_legacy_layout_for_test()?;
        eprintln!(
            "# written as one item per entry (format 4) in {:.0} s",
            t.elapsed().as_secs_f64()
        );
    }
    std::fs::write(&marker, b"")?;
    eprintln!(
        "# generated {} segments in {:.0} s",
        per_stream * size.streams as i64,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What one index entry is made of: encoded length, sample table, fragment table.
fn entry_anatomy(index_dir: &Path) -> Result<String> {
    let idx = vigie_store::index::Index::open(index_dir)?;
    let Some(e) = idx.all_segments().next() else {
        return Ok(String::new());
    };
    let e = e?;
    let v = postcard::to_allocvec(&e)?;
    let (st, ft) = (e.sample_table.len(), e.fragment_table.len());
    Ok(format!(
        "entry {} B = sample table {st} B ({}) + fragment table {ft} B + head {} B (+4 B in its block of 32; a 21 B id row)",
        v.len(),
        if let Some(len) = vigie_store::filetables::external_len(&e.sample_table) {
            format!("a reference to {len} B of tables in the segment file")
        } else if vigie_store::sampletable::is_packed(&e.sample_table) {
            "packed".into()
        } else {
            "journal form".into()
        },
        v.len() - st - ft
    ))
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`: Ok(()) or why not.
fn drop_caches() -> std::result::Result<(), String> {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", b"3\n").map_err(|e| e.to_string())
}

/// Raw `/metrics` text.
fn metrics_text(port: u16) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// Rows of one family with a value > 0, and the family's sum.
fn family(text: &str, name: &str) -> (usize, f64) {
    let mut positive = 0;
    let mut sum = 0.0;
    for l in text.lines() {
        let Some(rest) = l.strip_prefix(name) else {
            continue;
        };
        if !rest.starts_with('{') && !rest.starts_with(' ') {
            continue;
        }
        if let Some(v) = l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()) {
            sum += v;
            if v > 0.0 {
                positive += 1;
            }
        }
    }
    (positive, sum)
}

#[derive(Debug, Default)]
pub struct RestartResult {
    pub days: u32,
    pub streams: usize,
    pub segments: u64,
    pub index_bytes: u64,
    pub cache_dropped: Option<String>,
    pub t_http_s: f64,
    pub t_recording_s: Option<f64>,
    pub hwm_recording_kib: u64,
    pub hwm_end_kib: u64,
    pub baseline_kib: u64,
    pub verify_done: bool,
    pub verify_checked: u64,
    pub verify_findings: u64,
    pub verify_s: f64,
    pub notes: Vec<String>,
}

impl RestartResult {
    pub fn line(&self, label: &str) -> String {
        let mib = |k: u64| k as f64 / 1024.0;
        format!(
            "| {label} | {}d × {} | {} | {:.2} | {} | {:.2} s | {} | {:.0} / {:.0} MiB (+{:.0} / +{:.0}) | {} | {}",
            self.days,
            self.streams,
            self.segments,
            self.index_bytes as f64 / 1e6 / (f64::from(self.days.max(1)) * self.streams as f64),
            match &self.cache_dropped {
                None => "dropped".to_owned(),
                Some(e) => format!("not dropped ({e})"),
            },
            self.t_http_s,
            match self.t_recording_s {
                Some(t) => format!("{t:.2} s"),
                None => "never".into(),
            },
            mib(self.hwm_recording_kib),
            mib(self.hwm_end_kib),
            mib(self.hwm_recording_kib.saturating_sub(self.baseline_kib)),
            mib(self.hwm_end_kib.saturating_sub(self.baseline_kib)),
            if self.verify_checked > 0 || self.verify_done {
                format!(
                    "{} entries in {:.0} s ({:.0}/s){}, {} findings",
                    self.verify_checked,
                    self.verify_s,
                    self.verify_checked as f64 / self.verify_s.max(0.001),
                    if self.verify_done { "" } else { ", not done" },
                    self.verify_findings
                )
            } else {
                "n/a".into()
            },
            self.notes.join("; ")
        )
    }
}

pub fn run_size(env: &Env, size: &Size, opts: &Opts, baseline: u64) -> Result<RestartResult> {
    let dir = env
        .work
        .join(format!("restart-{}x{}", size.days, size.streams));
    std::fs::create_dir_all(&dir)?;
    let data = dir.join("data");
    if size.days > 0 {
        generate(
            &data,
            size,
            opts.v1_tables,
            opts.inline_tables,
            opts.legacy_layout,
        )?;
    } else {
        let _ = std::fs::remove_dir_all(&data);
    }
    // (Opening the index would migrate a legacy one before Vigie's start.)
    let anatomy = if size.days > 0 && !opts.legacy_layout {
        entry_anatomy(&data.join("index"))?
    } else {
        String::new()
    };
    let mut r = RestartResult {
        days: size.days,
        streams: size.streams,
        segments: i64::from(size.days) as u64 * 1440 * size.streams as u64,
        index_bytes: dir_bytes(&data.join("index")),
        baseline_kib: baseline,
        ..Default::default()
    };
    if !anatomy.is_empty() {
        r.notes.push(anatomy);
    }
    let cam = start_camsim_with(
        env,
        &dir,
        size.streams,
        Mix::TwoMbps,
        opts.fixture.as_deref(),
    )?;
    // Give camsim a moment to listen before Vigie's sessions try it.
    std::thread::sleep(Duration::from_millis(500));
    r.cache_dropped = drop_caches().err();
    let port = free_port()?;
    let cfg = dir.join("vigie.toml");
    let mut text = super::vigie_config(&dir, port, &cam.urls, env.flush_interval_ms);
    text = text.replacen(
        "min_free_bytes = \"1GiB\"\n",
        &format!(
            "min_free_bytes = \"1GiB\"\nverify_entries_per_s = {}\n",
            opts.verify_rate
        ),
        1,
    );
    if let Some(mib) = opts.index_cache_mib {
        text = text.replacen(
            "min_free_bytes = \"1GiB\"\n",
            &format!("min_free_bytes = \"1GiB\"\nindex_cache_bytes = \"{mib}MiB\"\n"),
            1,
        );
    }
    if opts.vigie_label == "baseline" {
        // The old binary does not know the setting.
        text = text.replacen(
            &format!("verify_entries_per_s = {}\n", opts.verify_rate),
            "",
            1,
        );
    }
    std::fs::write(&cfg, text)?;
    let log = std::fs::File::create(dir.join("vigie.log"))?;
    let started = Instant::now();
    let child = std::process::Command::new(&env.vigie)
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .env("RUST_LOG", "info")
        .spawn()
        .context("starting vigie")?;
    let mut vigie = super::Proc {
        child,
        name: "vigie".into(),
    };
    let pid = vigie.pid();
    let mut hwm = 0;
    loop {
        hwm = hwm.max(proc_kib(pid, "status", "VmHWM"));
        if metrics_text(port).is_ok() {
            break;
        }
        if vigie.wait_for(Duration::from_millis(0)) {
            bail!("vigie exited (see {})", dir.join("vigie.log").display());
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("vigie did not answer within 30 min");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    r.t_http_s = started.elapsed().as_secs_f64();
    loop {
        let text = metrics_text(port)?;
        let (recording, _) = family(&text, "vigie_writer_frames_total");
        if recording >= size.streams {
            r.t_recording_s = Some(started.elapsed().as_secs_f64());
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            r.notes.push(format!(
                "{recording} of {} writers recording after 600 s",
                size.streams
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    r.hwm_recording_kib = proc_kib(pid, "status", "VmHWM").max(hwm);
    // Background verification.
    let wait_end = Instant::now() + Duration::from_secs(opts.verify_wait_s);
    loop {
        let text = metrics_text(port)?;
        let (_, checked) = family(&text, "vigie_history_verify_entries_checked_total");
        let (_, findings) = family(&text, "vigie_history_verify_findings_total");
        let (done, _) = family(&text, "vigie_history_verify_done");
        r.verify_checked = checked as u64;
        r.verify_findings = findings as u64;
        r.verify_s = started.elapsed().as_secs_f64() - r.t_http_s;
        r.verify_done = done > 0;
        if r.verify_done || Instant::now() > wait_end || !text.contains("vigie_history_verify") {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // The verification's own measure of its duration, when the log has it.
    if let Ok(log) = std::fs::read_to_string(dir.join("vigie.log"))
        && let Some(l) = log
            .lines()
            .find(|l| l.contains("background verification of the history done"))
        && let Some(ms) = l
            .split("duration_ms=")
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    {
        r.verify_s = ms / 1e3;
    }
    if opts.hold_s > 0 {
        eprintln!(
            "# holding {} s (pid {pid}); VmRSS {} KiB",
            opts.hold_s,
            proc_kib(pid, "status", "VmRSS")
        );
        std::thread::sleep(Duration::from_secs(opts.hold_s));
    }
    r.hwm_end_kib = proc_kib(pid, "status", "VmHWM");
    // What is resident at the end, and how much of it is anonymous (heap: sled's nodes, the
    // allocator's free lists) rather than file-backed (the binary, mapped libraries).
    let (rss, anon) = (
        proc_kib(pid, "status", "VmRSS"),
        proc_kib(pid, "smaps_rollup", "Anonymous"),
    );
    r.notes.push(format!(
        "at end VmRSS {:.0} MiB (+{:.0}), anonymous {:.0} MiB",
        rss as f64 / 1024.0,
        rss.saturating_sub(baseline) as f64 / 1024.0,
        anon as f64 / 1024.0
    ));
    let _ = stop_camsim(cam);
    if !vigie.stop(Signal::SIGTERM, Duration::from_secs(120)) {
        r.notes.push("vigie had to be killed".into());
    }
    Ok(r)
}

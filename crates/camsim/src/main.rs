//! `camsim`: serve fixture files as live RTSP cameras (see the `vigie_camsim` crate docs).
//!
//! ```text
//! camsim --listen 127.0.0.1:8554 --fixtures fixtures/ \
//!        --mount cam=h264-baseline-640x360-25fps-gop50.h264 --copies 10 \
//!        --auth 'cam=digest:admin:secret' --fault 'cam3:drop-after=10s,every=30s'
//! ```
//! prints one URL per mount on stdout (`rtsp://127.0.0.1:8554/cam1` … `cam10`) and runs until
//! Ctrl-C or SIGTERM (`--stats-json FILE` then writes each mount's counters). Logs go to stderr (`RUST_LOG=debug` for more).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use tracing::info;
use vigie_camsim::{Auth, Fixture, Garbage, Manifest, MountConfig, MountControl, Server};

const AFTER_HELP: &str = "\
FIXTURE is a file name listed in DIR/fixtures.toml (served at its manifest fps), a path to an
Annex-B .h264/.h265 file (served at --fps), or the name of an embedded fixture
(h264-baseline-640x360-25fps-gop50.h264, h264-main-1280x720-15fps-gop30.h264,
h265-main-1280x720-25fps-gop50.h265). Without --mount, the three embedded fixtures are served as
`h264`, `h264-720p` and `h265`.

With --copies N > 1, --mount NAME=FIXTURE creates mounts NAME1 … NAMEN.

--auth MOUNT=SCHEME:USER:PASS   SCHEME is basic or digest; MOUNT is a --mount NAME (all its
                                copies), an exact mount name, or * for all mounts.

--fault MOUNT:KIND-after=DELAY[,OPTION…]   schedule a fault DELAY after start (durations: 10s,
    500ms, 2m, or seconds). MOUNT as for --auth. Options: every=DUR repeats it. Kinds:
      drop                 close every connection of the mount
      refuse  ,for=DUR     answer 503 and close new connections for DUR (default 10s)
      stall   ,for=DUR     send no media for DUR (default 5s)
      ts-jump ,ticks=N     add N (90 kHz, may be negative; default 900000) to RTP timestamps
      switch  ,to=FIXTURE  serve another fixture from the next frame (new SPS/PPS in band)
      divisor ,n=N         send only every Nth frame (and key frames); n=1 restores
      garbage ,kind=rtp|raw  send random bytes as RTP (default) or raw on the RTSP connection
  e.g. --fault cam1:drop-after=10s   --fault 'cam2:stall-after=5s,for=3s,every=20s'

--rogue MOUNT=MODE   the mount behaves like an attacker's device (MOUNT as for --auth; each
    burst is bounded to 64 MiB and stops when the client hangs up). Modes:
      endless-header       DESCRIBE answer whose header lines never end
      huge-content-length  DESCRIBE answer with Content-Length: 1 TiB and a streaming body
      endless-fu-a         after 2 s, an access unit of FU-A fragments that never ends
      tiny-packet-flood    after 2 s, tiny RTP packets of one access unit that never ends
      huge-sprop           SDP with a 1 MiB sprop-parameter-sets
      absurd-clock-rate    SDP with a 1 Hz RTP clock rate
    A Basic-only challenge is --auth MOUNT=basic:USER:PASS.

ONVIF: --onvif ADDR serves a simulated ONVIF device (SOAP 1.2 over HTTP) at
http://ADDR/onvif/device_service whose profiles are --onvif-profile TOKEN=MOUNT (default: `main`
= the first mount, `sub` = the second), with PTZ and events; --onvif-auth USER:PASS requires a
WS-UsernameToken digest; --onvif-discovery UDPADDR answers WS-Discovery probes (0.0.0.0:3702
joins the multicast group); --onvif-ptz-view MOUNT makes MOUNT's picture follow the head's pan
(the embedded PTZ fixture: blue on the left, red on the right); --onvif-event 'KIND-after=DELAY[,every=DUR][,state=false]' raises
motion | tampering | video-loss | digital-input; --onvif-fault none|malformed|garbage|silent.
Control API (JSON): GET /control/ptz, POST /control/events/KIND?state=true, POST
/control/fault/MODE, GET /control/stats.";

/// Camera simulator: serves H.264/H.265 fixture files as live RTSP cameras (looping, N copies,
/// real time or faster, Basic/Digest auth, faults on demand).
#[derive(Parser, Debug)]
#[command(name = "camsim", version, after_help = AFTER_HELP)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8554")]
    listen: SocketAddr,
    /// Directory holding the fixtures and fixtures.toml.
    #[arg(long, default_value = "fixtures")]
    fixtures: PathBuf,
    /// NAME=FIXTURE, repeatable.
    #[arg(long = "mount", value_name = "NAME=FIXTURE")]
    mounts: Vec<String>,
    /// Copies of each --mount (NAME1 … NAMEN when > 1).
    #[arg(long, default_value_t = 1)]
    copies: usize,
    /// Frame rate for fixture files not listed in the manifest.
    #[arg(long, default_value_t = 25.0)]
    fps: f64,
    /// Pacing factor (2 = twice real time).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// MOUNT=basic|digest:USER:PASS, repeatable.
    #[arg(long = "auth", value_name = "MOUNT=SCHEME:USER:PASS")]
    auth: Vec<String>,
    /// MOUNT=MODE, repeatable: the mount behaves like an attacker's device. MODE is one of
    /// endless-header, huge-content-length, endless-fu-a, tiny-packet-flood, huge-sprop,
    /// absurd-clock-rate (a Basic-only challenge is `--auth MOUNT=basic:USER:PASS`).
    #[arg(long = "rogue", value_name = "MOUNT=MODE")]
    rogue: Vec<String>,
    /// `MOUNT:KIND-after=DELAY[,OPTION…]`, repeatable (see below).
    #[arg(long = "fault", value_name = "SPEC")]
    faults: Vec<String>,
    /// Log sent frames/bytes totals every this many seconds (0: never).
    #[arg(long, default_value_t = 0)]
    stats_every: u64,
    /// Runtime threads: 1 runs everything on one thread (load tests); 0 = one per core.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// On exit (Ctrl-C or SIGTERM), write each mount's counters (frames, packets, bytes,
    /// sessions) to FILE as JSON: `{"mounts": {"cam1": {"frames": …}, …}}` (used by benchmarks).
    #[arg(long, value_name = "FILE")]
    stats_json: Option<PathBuf>,
    /// Serve a simulated ONVIF device on this HTTP address (see below).
    #[arg(long, value_name = "ADDR")]
    onvif: Option<SocketAddr>,
    /// TOKEN=MOUNT, repeatable: the ONVIF media profiles (default main=first, sub=second mount).
    #[arg(long = "onvif-profile", value_name = "TOKEN=MOUNT")]
    onvif_profiles: Vec<String>,
    /// USER:PASS required as a WS-UsernameToken digest by the ONVIF device.
    #[arg(long, value_name = "USER:PASS")]
    onvif_auth: Option<String>,
    /// UDP address answering WS-Discovery probes (0.0.0.0:3702 joins the multicast group).
    #[arg(long, value_name = "ADDR")]
    onvif_discovery: Option<SocketAddr>,
    /// `KIND-after=DELAY[,every=DUR][,state=false]`, repeatable: scripted ONVIF alarms.
    #[arg(long = "onvif-event", value_name = "SPEC")]
    onvif_events: Vec<String>,
    /// Misbehaviour of the ONVIF side from the start: none, malformed, garbage, silent.
    #[arg(long, default_value = "none")]
    onvif_fault: String,
    /// MOUNT whose picture follows the simulated head's pan (it serves the embedded PTZ
    /// fixture's five views, blue on the left and red on the right).
    #[arg(long, value_name = "MOUNT")]
    onvif_ptz_view: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if args.threads > 1 {
            b.worker_threads(args.threads);
        }
        b.enable_all().build()?
    };
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let manifest = match Manifest::load(&args.fixtures) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!("no usable manifest ({e}); fixture files are served at --fps");
            None
        }
    };
    let loader = Loader {
        dir: args.fixtures.clone(),
        manifest,
        fps: args.fps,
    };

    // (base name, mount config)
    let mut mounts: Vec<(String, MountConfig)> = Vec::new();
    let specs: Vec<(String, String)> = if args.mounts.is_empty() {
        vec![
            (
                "h264".into(),
                "h264-baseline-640x360-25fps-gop50.h264".into(),
            ),
            (
                "h264-720p".into(),
                "h264-main-1280x720-15fps-gop30.h264".into(),
            ),
            ("h265".into(), "h265-main-1280x720-25fps-gop50.h265".into()),
        ]
    } else {
        args.mounts
            .iter()
            .map(|m| {
                m.split_once('=')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .with_context(|| format!("--mount {m:?}: expected NAME=FIXTURE"))
            })
            .collect::<Result<_>>()?
    };
    for (name, fixture) in specs {
        let f = loader.load(&fixture)?;
        let template = MountConfig::new(name.clone(), f).with_speed(args.speed);
        if args.copies > 1 {
            for m in MountConfig::copies(&name, args.copies, &template) {
                mounts.push((name.clone(), m));
            }
        } else {
            mounts.push((name, template));
        }
    }
    for spec in &args.auth {
        let (target, rest) = spec
            .split_once('=')
            .with_context(|| format!("--auth {spec:?}: expected MOUNT=SCHEME:USER:PASS"))?;
        let mut parts = rest.splitn(3, ':');
        let (Some(scheme), Some(user), Some(pass)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("--auth {spec:?}: expected MOUNT=SCHEME:USER:PASS");
        };
        let auth = match scheme {
            "basic" => Auth::basic(user, pass),
            "digest" => Auth::digest(user, pass),
            _ => bail!("--auth {spec:?}: scheme must be basic or digest"),
        };
        let mut any = false;
        for (base, m) in &mut mounts {
            if target == "*" || target == base || target == m.name {
                m.auth = Some(auth.clone());
                any = true;
            }
        }
        if !any {
            bail!("--auth {spec:?}: no mount named {target}");
        }
    }
    for spec in &args.rogue {
        let (target, mode) = spec
            .split_once('=')
            .with_context(|| format!("--rogue {spec:?}: expected MOUNT=MODE"))?;
        let mode: vigie_camsim::Rogue = mode
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--rogue {spec:?}: {e}"))?;
        let mut any = false;
        for (base, m) in &mut mounts {
            if target == "*" || target == base || target == m.name {
                m.rogue = Some(mode);
                any = true;
            }
        }
        if !any {
            bail!("--rogue {spec:?}: no mount named {target}");
        }
    }
    let faults: Vec<FaultSpec> = args
        .faults
        .iter()
        .map(|s| FaultSpec::parse(s, &loader))
        .collect::<Result<_>>()?;
    let bases: Vec<(String, String)> = mounts
        .iter()
        .map(|(b, m)| (b.clone(), m.name.clone()))
        .collect();
    let server = Server::start(args.listen, mounts.into_iter().map(|(_, m)| m).collect()).await?;
    for (_, name) in &bases {
        println!("{}", server.url(name));
    }
    for f in faults {
        let targets: Vec<MountControl> = bases
            .iter()
            .filter(|(b, n)| f.mount == "*" || &f.mount == b || &f.mount == n)
            .filter_map(|(_, n)| server.mount(n))
            .collect();
        if targets.is_empty() {
            bail!("--fault: no mount named {}", f.mount);
        }
        tokio::spawn(f.run(targets));
    }
    if args.stats_every > 0 {
        let mounts = server.mounts();
        let every = Duration::from_secs(args.stats_every);
        tokio::spawn(async move {
            let mut last = (0u64, 0u64);
            loop {
                tokio::time::sleep(every).await;
                let (mut frames, mut bytes, mut sessions) = (0, 0, 0);
                for m in &mounts {
                    let s = m.stats();
                    frames += s.frames;
                    bytes += s.bytes;
                    sessions += s.sessions_active;
                }
                let secs = every.as_secs_f64();
                info!(
                    sessions,
                    frames,
                    bytes,
                    fps = (frames - last.0) as f64 / secs,
                    mbit_s = (bytes - last.1) as f64 * 8.0 / secs / 1e6,
                    "sent"
                );
                last = (frames, bytes);
            }
        });
    }
    let _onvif = match args.onvif {
        Some(addr) => Some(start_onvif(&args, addr, &server, &bases).await?),
        None => None,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    info!("shutting down");
    let mounts = server.mounts();
    server.shutdown().await;
    if let Some(path) = &args.stats_json {
        std::fs::write(path, stats_json(&mounts))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Starts the simulated ONVIF device and its scripted events.
async fn start_onvif(
    args: &Args,
    addr: SocketAddr,
    server: &vigie_camsim::ServerHandle,
    bases: &[(String, String)],
) -> Result<std::sync::Arc<vigie_camsim::OnvifHandle>> {
    use vigie_camsim::{EventKind, OnvifConfig, OnvifFault, OnvifProfile, OnvifServer};
    let pairs: Vec<(String, String)> = if args.onvif_profiles.is_empty() {
        ["main", "sub"]
            .iter()
            .zip(bases.iter())
            .map(|(t, (_, m))| ((*t).to_owned(), m.clone()))
            .collect()
    } else {
        args.onvif_profiles
            .iter()
            .map(|p| {
                p.split_once('=')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .with_context(|| format!("--onvif-profile {p:?}: expected TOKEN=MOUNT"))
            })
            .collect::<Result<_>>()?
    };
    let mut profiles = Vec::new();
    for (token, mount) in pairs {
        profiles.push(
            OnvifProfile::for_mount(&token, server, &mount)
                .with_context(|| format!("--onvif-profile {token}={mount}: no such mount"))?,
        );
    }
    let auth = match &args.onvif_auth {
        Some(a) => Some(
            a.split_once(':')
                .map(|(u, p)| (u.to_owned(), p.to_owned()))
                .context("--onvif-auth: expected USER:PASS")?,
        ),
        None => None,
    };
    let fault: OnvifFault = args
        .onvif_fault
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--onvif-fault: {e}"))?;
    let mut scripted = Vec::new();
    for spec in &args.onvif_events {
        let ctx = || format!("--onvif-event {spec:?}");
        let mut opts = spec.split(',');
        let (kind, after) = opts
            .next()
            .unwrap_or("")
            .split_once("-after=")
            .with_context(|| format!("{}: expected KIND-after=DELAY", ctx()))?;
        let kind: EventKind = kind
            .parse()
            .map_err(|e: String| anyhow::anyhow!("{}: {e}", ctx()))?;
        let after = parse_duration(after).with_context(ctx)?;
        let (mut every, mut state) = (None, true);
        for o in opts {
            match o.split_once('=') {
                Some(("every", v)) => every = Some(parse_duration(v).with_context(ctx)?),
                Some(("state", v)) => state = v.parse().with_context(ctx)?,
                _ => bail!("{}: unknown option {o:?}", ctx()),
            }
        }
        scripted.push((kind, after, every, state));
    }
    let handle = OnvifServer::start(
        addr,
        OnvifConfig {
            auth,
            profiles,
            ptz: true,
            discovery: args.onvif_discovery,
        },
    )
    .await?;
    handle.set_fault(fault);
    if let Some(mount) = &args.onvif_ptz_view {
        let control = server
            .mount(mount)
            .with_context(|| format!("--onvif-ptz-view {mount}: no such mount"))?;
        handle.attach_ptz_view(vigie_camsim::PtzView::embedded(control));
    }
    println!("{}", handle.device_url());
    let handle = std::sync::Arc::new(handle);
    for (kind, after, every, state) in scripted {
        let h = handle.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            loop {
                h.raise(kind, state);
                match every {
                    Some(e) => tokio::time::sleep(e).await,
                    None => return,
                }
            }
        });
    }
    Ok(handle)
}

/// `{"mounts": {NAME: {"frames": …, "packets": …, "bytes": …, "sessions_total": …}, …}}`.
fn stats_json(mounts: &[MountControl]) -> String {
    let rows: Vec<String> = mounts
        .iter()
        .map(|m| {
            let s = m.stats();
            // Mount names are restricted to [A-Za-z0-9._/-]: no escaping needed.
            format!(
                "\"{}\": {{\"frames\": {}, \"packets\": {}, \"bytes\": {}, \"sessions_total\": {}, \"auth_failures\": {}}}",
                m.name(),
                s.frames,
                s.packets,
                s.bytes,
                s.sessions_total,
                s.auth_failures
            )
        })
        .collect();
    format!("{{\"mounts\": {{{}}}}}\n", rows.join(", "))
}

struct Loader {
    dir: PathBuf,
    manifest: Option<Manifest>,
    fps: f64,
}

impl Loader {
    fn load(&self, name: &str) -> Result<Arc<Fixture>> {
        if let Some(m) = &self.manifest
            && m.get(name).is_some()
        {
            return Ok(m.load_fixture(&self.dir, name)?);
        }
        let path = Path::new(name);
        if path.is_file() {
            return Ok(Fixture::load(path, self.fps)?);
        }
        let in_dir = self.dir.join(name);
        if in_dir.is_file() {
            return Ok(Fixture::load(in_dir, self.fps)?);
        }
        Fixture::embedded(name).with_context(|| {
            format!(
                "fixture {name:?} not found (not in {}, not a file, not embedded)",
                self.dir.display()
            )
        })
    }
}

enum FaultKind {
    Drop,
    Refuse(Duration),
    Stall(Duration),
    TsJump(i64),
    Switch(Arc<Fixture>),
    Divisor(u32),
    Garbage(Garbage),
}

struct FaultSpec {
    mount: String,
    after: Duration,
    every: Option<Duration>,
    kind: FaultKind,
}

impl FaultSpec {
    fn parse(spec: &str, loader: &Loader) -> Result<FaultSpec> {
        let ctx = || format!("--fault {spec:?}");
        let (mount, rest) = spec
            .split_once(':')
            .with_context(|| format!("{}: expected MOUNT:KIND-after=DELAY", ctx()))?;
        let mut opts = rest.split(',');
        let first = opts.next().unwrap_or("");
        let (kind, after) = first
            .split_once("-after=")
            .with_context(|| format!("{}: expected KIND-after=DELAY first", ctx()))?;
        let after = parse_duration(after).with_context(ctx)?;
        let mut kv = std::collections::HashMap::new();
        for o in opts {
            let (k, v) = o
                .split_once('=')
                .with_context(|| format!("{}: option {o:?} is not KEY=VALUE", ctx()))?;
            kv.insert(k.trim(), v.trim());
        }
        let dur = |k: &str, d: u64| -> Result<Duration> {
            kv.get(k)
                .map_or(Ok(Duration::from_secs(d)), |v| parse_duration(v))
        };
        let every = kv
            .get("every")
            .map(|v| parse_duration(v))
            .transpose()
            .with_context(ctx)?;
        let kind = match kind {
            "drop" => FaultKind::Drop,
            "refuse" => FaultKind::Refuse(dur("for", 10).with_context(ctx)?),
            "stall" => FaultKind::Stall(dur("for", 5).with_context(ctx)?),
            "ts-jump" => FaultKind::TsJump(
                kv.get("ticks")
                    .map_or(Ok(900_000), |v| v.parse())
                    .with_context(ctx)?,
            ),
            "switch" => {
                let to = kv
                    .get("to")
                    .with_context(|| format!("{}: switch needs to=FIXTURE", ctx()))?;
                FaultKind::Switch(loader.load(to)?)
            }
            "divisor" => FaultKind::Divisor(
                kv.get("n")
                    .with_context(|| format!("{}: divisor needs n=N", ctx()))?
                    .parse()
                    .with_context(ctx)?,
            ),
            "garbage" => FaultKind::Garbage(match kv.get("kind").copied().unwrap_or("rtp") {
                "rtp" => Garbage::Rtp,
                "raw" => Garbage::Raw,
                k => bail!("{}: garbage kind {k:?} is not rtp or raw", ctx()),
            }),
            k => bail!("{}: unknown fault kind {k:?}", ctx()),
        };
        Ok(FaultSpec {
            mount: mount.to_owned(),
            after,
            every,
            kind,
        })
    }

    async fn run(self, targets: Vec<MountControl>) {
        tokio::time::sleep(self.after).await;
        loop {
            for m in &targets {
                info!(mount = m.name(), "injecting fault");
                match &self.kind {
                    FaultKind::Drop => m.drop_sessions(),
                    FaultKind::Refuse(d) => m.refuse_for(*d),
                    FaultKind::Stall(d) => m.stall_for(*d),
                    FaultKind::TsJump(t) => m.timestamp_jump(*t),
                    FaultKind::Switch(f) => m.switch_fixture(f.clone()),
                    FaultKind::Divisor(n) => m.set_frame_divisor(*n),
                    FaultKind::Garbage(g) => m.send_garbage(*g),
                }
            }
            match self.every {
                Some(e) => tokio::time::sleep(e).await,
                None => return,
            }
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("bad duration {s:?}"))?;
    if !(v.is_finite() && v >= 0.0) {
        bail!("bad duration {s:?}");
    }
    Ok(Duration::from_secs_f64(v * mult))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn fault_specs() {
        let l = Loader {
            dir: PathBuf::from("/nonexistent"),
            manifest: None,
            fps: 25.0,
        };
        let f = FaultSpec::parse("cam1:drop-after=10s", &l).unwrap();
        assert_eq!(
            (f.mount.as_str(), f.after),
            ("cam1", Duration::from_secs(10))
        );
        let f = FaultSpec::parse("cam:stall-after=1s,for=3s,every=20s", &l).unwrap();
        assert!(matches!(f.kind, FaultKind::Stall(d) if d == Duration::from_secs(3)));
        assert_eq!(f.every, Some(Duration::from_secs(20)));
        let f = FaultSpec::parse(
            "cam:switch-after=1s,to=h265-main-1280x720-25fps-gop50.h265",
            &l,
        )
        .unwrap();
        assert!(matches!(f.kind, FaultKind::Switch(_)));
        assert!(FaultSpec::parse("cam:explode-after=1s", &l).is_err());
        assert!(FaultSpec::parse("cam:drop", &l).is_err());
        assert!(FaultSpec::parse("cam:divisor-after=1s", &l).is_err());
        assert!(FaultSpec::parse("cam:garbage-after=1s,kind=raw", &l).is_ok());
    }
}

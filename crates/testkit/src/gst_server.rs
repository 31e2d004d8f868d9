//! An independent RTSP camera for tests: GStreamer's gst-rtsp-server serving a looping Annex-B
//! fixture file (H.264 or H.265) at `rtsp://127.0.0.1:PORT/test`, over TCP and UDP.
//!
//! The server runs its own glib main loop on a thread and binds an OS-chosen port. The media
//! factory is shared, so several clients see the same stream.
//!
//! Timestamps: `multifilesrc loop=true ! h264parse` emits buffers without PTS (and restarts
//! at each loop), which makes every RTP packet carry the same timestamp (DESIGN §6). A pad
//! probe after the parser therefore stamps each access unit with synthesized, monotonic
//! PTS = DTS = n / fps and a duration, which also paces the (synced) RTSP sinks at real time.
//! Fixtures must not contain B-frames.
//!
//! Faults on demand: [`GstRtspServer::set_stalled`] freezes the stream (no RTP, connection kept
//! open) and [`GstRtspServer::disconnect_all`] drops every client. Optional Basic
//! authentication via [`GstServerOptions::credentials`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;
use vigie_core::Codec;

/// The mount path of the stream.
pub const MOUNT: &str = "/test";

/// How to start a [`GstRtspServer`].
#[derive(Clone, Debug)]
pub struct GstServerOptions {
    /// Annex-B elementary stream (no B-frames).
    pub fixture: PathBuf,
    pub codec: Codec,
    pub fps: u32,
    /// When set, clients must authenticate (Basic) with this user name and password.
    pub credentials: Option<(String, String)>,
}

/// A running gst-rtsp-server; stopped on drop.
pub struct GstRtspServer {
    port: u16,
    main_loop: glib::MainLoop,
    context: glib::MainContext,
    server: rtsp::RTSPServer,
    source: Option<glib::SourceId>,
    thread: Option<JoinHandle<()>>,
    stalled: Arc<AtomicBool>,
}

impl std::fmt::Debug for GstRtspServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GstRtspServer")
            .field("port", &self.port)
            .finish()
    }
}

/// Path of a fixture by file name, e.g. `h264-baseline-640x360-25fps-gop50.h264`.
pub fn fixture(name: &str) -> PathBuf {
    crate::fixtures_dir().join(name)
}

/// Writes a short Annex-B test stream (640x360, `fps`, GOP = fps, no B-frames, `secs` seconds)
/// into `dir` with ffmpeg, for when a committed fixture is not wanted.
pub fn generate_fixture(dir: &Path, codec: Codec, fps: u32, secs: u32) -> anyhow::Result<PathBuf> {
    let (name, enc, fmt, extra): (&str, &str, &str, &[&str]) = match codec {
        Codec::H264 => ("gen.h264", "libx264", "h264", &["-bf", "0", "-g"]),
        Codec::H265 => (
            "gen.h265",
            "libx265",
            "hevc",
            &["-x265-params", "bframes=0:log-level=error", "-g"],
        ),
    };
    let out = dir.join(name);
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=640x360:rate={fps}"))
        .args(["-t", &secs.to_string(), "-c:v", enc])
        .args(extra)
        .arg(fps.to_string())
        .args(["-f", fmt])
        .arg(&out)
        .status()
        .context("running ffmpeg")?;
    if !status.success() {
        bail!("ffmpeg failed: {status}");
    }
    Ok(out)
}

impl GstRtspServer {
    /// Serves `fixture` (Annex-B `codec`, `fps` frames per second) without authentication.
    pub fn start(fixture: &Path, codec: Codec, fps: u32) -> anyhow::Result<Self> {
        Self::start_with(GstServerOptions {
            fixture: fixture.to_owned(),
            codec,
            fps,
            credentials: None,
        })
    }

    pub fn start_with(opts: GstServerOptions) -> anyhow::Result<Self> {
        gst::init().context("gst::init")?;
        if opts.fps == 0 {
            bail!("fps must be > 0");
        }
        let fixture = opts
            .fixture
            .canonicalize()
            .with_context(|| format!("fixture {} not found", opts.fixture.display()))?;
        let location = fixture.to_str().context("fixture path is not UTF-8")?;
        if location.contains(['"', ' ', '!', '(', ')']) {
            bail!("fixture path {location:?} has characters unsafe in a launch line");
        }
        let (caps, parse, pay) = match opts.codec {
            Codec::H264 => ("video/x-h264", "h264parse", "rtph264pay"),
            Codec::H265 => ("video/x-h265", "h265parse", "rtph265pay"),
        };
        let launch = format!(
            "( multifilesrc location=\"{location}\" loop=true caps={caps},stream-format=byte-stream \
             ! {parse} name=parse ! {caps},alignment=au \
             ! {pay} name=pay0 pt=96 config-interval=-1 )"
        );

        let server = rtsp::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service("0");
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_launch(&launch);
        factory.set_shared(true);
        factory.set_protocols(
            rtsp::gst_rtsp::RTSPLowerTrans::TCP | rtsp::gst_rtsp::RTSPLowerTrans::UDP,
        );

        let stalled = Arc::new(AtomicBool::new(false));
        let frame_dur = gst::ClockTime::from_nseconds(1_000_000_000 / u64::from(opts.fps));
        let stalled2 = stalled.clone();
        factory.connect_media_configure(move |_factory, media| {
            let element = media.element();
            let Some(bin) = element.downcast_ref::<gst::Bin>() else {
                return;
            };
            let Some(parse) = bin.by_name("parse") else {
                return;
            };
            let Some(pad) = parse.static_pad("src") else {
                return;
            };
            // Next PTS of this media pipeline.
            let next = std::sync::Mutex::new(gst::ClockTime::ZERO);
            let stalled = stalled2.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
                // Freeze: hold the streaming thread (no busy loop, no data) until released or
                // the pipeline shuts down; then shift timestamps by the frozen time.
                if stalled.load(Ordering::SeqCst) {
                    let t0 = Instant::now();
                    while stalled.load(Ordering::SeqCst)
                        && !pad.pad_flags().contains(gst::PadFlags::FLUSHING)
                    {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    *next.lock().unwrap() +=
                        gst::ClockTime::from_nseconds(t0.elapsed().as_nanos() as u64);
                }
                let pts = {
                    let mut n = next.lock().unwrap();
                    let pts = *n;
                    *n += frame_dur;
                    pts
                };
                if let Some(buffer) = info.buffer_mut() {
                    let b = buffer.make_mut();
                    b.set_pts(pts);
                    b.set_dts(pts);
                    b.set_duration(frame_dur);
                }
                gst::PadProbeReturn::Ok
            });
        });

        if let Some((user, pass)) = &opts.credentials {
            let auth = rtsp::RTSPAuth::new();
            let token = rtsp::RTSPToken::builder()
                .field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
                .build();
            let basic = rtsp::RTSPAuth::make_basic(user, pass);
            auth.add_basic(basic.as_str(), &token);
            server.set_auth(Some(&auth));
            let role = gst::Structure::builder("user")
                .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                .build();
            factory.add_role_from_structure(&role);
        }

        server
            .mount_points()
            .context("server has no mount points")?
            .add_factory(MOUNT, factory);

        let context = glib::MainContext::new();
        let main_loop = glib::MainLoop::new(Some(&context), false);
        let source = server
            .attach(Some(&context))
            .context("attaching the RTSP server")?;
        let port = server.bound_port();
        if port <= 0 {
            bail!("RTSP server did not bind a port");
        }
        let ml = main_loop.clone();
        let ctx = context.clone();
        let thread = std::thread::Builder::new()
            .name("gst-rtsp-server".into())
            .spawn(move || {
                ctx.with_thread_default(|| ml.run())
                    .expect("main context acquired by another thread");
            })
            .context("spawning the main loop thread")?;
        Ok(GstRtspServer {
            port: port as u16,
            main_loop,
            context,
            server,
            source: Some(source),
            thread: Some(thread),
            stalled,
        })
    }

    /// `rtsp://127.0.0.1:PORT/test`.
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}{MOUNT}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Freezes (true) or resumes (false) the stream; RTSP connections stay open.
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::SeqCst);
    }

    /// Closes every client connection (a camera dropping its sessions).
    pub fn disconnect_all(&self) {
        let server = self.server.clone();
        self.context.invoke(move || {
            server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
        });
    }
}

impl Drop for GstRtspServer {
    fn drop(&mut self) {
        self.stalled.store(false, Ordering::SeqCst);
        if let Some(source) = self.source.take()
            && let Some(source) = self.context.find_source_by_id(&source)
        {
            // Closes the listening socket.
            source.destroy();
        }
        let server = self.server.clone();
        let ml = self.main_loop.clone();
        self.context.invoke(move || {
            server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
            ml.quit();
        });
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

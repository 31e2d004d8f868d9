//! Vigie's end-to-end tests: one test binary (one link step on a small machine, not one per
//! area), one module per area. Every test starts the real `vigie` binary (`CARGO_BIN_EXE_vigie`)
//! through [`vigie_testkit`] against camsim or GStreamer RTSP cameras, and validates what it
//! writes and serves with independent tools (ffmpeg, ffprobe, openssl, headless Chromium).
//!
//! Run one area with `cargo nextest run -p vigie --all-features -E 'test(/^access::/)'`.
//! Modules that need GStreamer exist only with feature `gst`; the cluster ones (`cluster*`, run
//! them with `-E 'test(/^cluster/)'`) only with feature `cluster`.

mod abuse_authz;
mod abuse_journal;
mod abuse_limits;
mod access;
mod camera_import;
#[cfg(feature = "cluster")]
mod cluster;
mod cluster_common;
#[cfg(feature = "cluster")]
mod cluster_deploy;
#[cfg(feature = "cluster")]
mod cluster_export;
#[cfg(feature = "cluster")]
mod cluster_ha;
#[cfg(feature = "cluster")]
mod cluster_journal;
#[cfg(all(feature = "cluster", feature = "gst", feature = "ui-test-hooks"))]
mod cluster_live;
mod cluster_mp4;
#[cfg(feature = "cluster")]
mod cluster_serve;
#[cfg(feature = "cluster")]
mod cluster_users;
mod disk_full;
mod edge_fill;
mod export;
mod export_multi;
mod faults;
#[cfg(feature = "gst")]
mod h265_fallback;
#[cfg(feature = "gst")]
mod interop_gst;
mod lawful;
mod live;
#[cfg(feature = "gst")]
mod masks;
mod onvif;
mod openapi;
mod playback;
mod playback_common;
#[cfg(feature = "gst")]
mod playback_gst;
mod record;
mod rogue;
mod soak;
#[cfg(feature = "gst")]
mod stills;
mod ui;

//! `GET /metrics`: Prometheus text exposition format (version 0.0.4).
//!
//! Per stream: frames, bytes, reconnects, online, measured fps; per storage directory: free bytes
//! and retention deletions. A user (session or API token) gets the per-stream series of the
//! cameras in its scope only; the metrics token and loopback clients get every stream. Label values are ids, which are restricted to `[a-z0-9_-]`, so they
//! need no escaping; the directory path is escaped.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use vigie_core::StreamKey;

use crate::AppState;
use crate::access::Principal;

pub async fn metrics(
    State(state): State<AppState>,
    principal: Option<Principal>,
) -> impl IntoResponse {
    // A user sees the per-stream series of the cameras in its scope only; the metrics token and
    // local clients (the monitoring system) see every stream.
    let in_scope = |k: &StreamKey| match &principal {
        None => true,
        Some(p) => state.config.camera(&k.camera).is_some_and(|c| {
            p.can(
                vigie_auth::Permission::ViewStatus,
                Some((c.id.as_str(), c.commune.as_str())),
            )
        }),
    };
    let streams: Vec<&crate::StreamEntry> =
        state.streams.iter().filter(|s| in_scope(&s.key)).collect();
    let mut out = String::with_capacity(4096);
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    let event_rows: Vec<(String, f64)> = state
        .camera_events
        .snapshot()
        .into_iter()
        .filter(|((cam, _), _)| in_scope(&StreamKey::new(cam, "")))
        .map(|((cam, kind), n)| (format!("camera=\"{cam}\",kind=\"{kind}\""), n as f64))
        .collect();
    family(
        "vigie_camera_events_total",
        "counter",
        "Camera events (ONVIF motion, tampering, video loss, digital input) received since start.",
        event_rows,
    );
    let edge: Vec<_> = state
        .camera_events
        .edge_snapshot()
        .into_iter()
        .filter(|((cam, stream), _)| in_scope(&StreamKey::new(cam, stream)))
        .map(|((cam, stream), c)| (format!("camera=\"{cam}\",stream=\"{stream}\""), c))
        .collect();
    for (name, help, f) in [
        (
            "vigie_edge_fills_total",
            "Gaps filled from the camera's own recording (ONVIF Profile G replay) since start.",
            (|c: &crate::EdgeFillCounts| c.fills as f64) as fn(&crate::EdgeFillCounts) -> f64,
        ),
        (
            "vigie_edge_fill_failures_total",
            "Gap fills from the camera's recording that failed since start.",
            |c| c.failures as f64,
        ),
        (
            "vigie_edge_fill_segments_total",
            "Segments stored from the camera's recording since start.",
            |c| c.segments as f64,
        ),
        (
            "vigie_edge_fill_frames_total",
            "Frames stored from the camera's recording since start.",
            |c| c.frames as f64,
        ),
        (
            "vigie_edge_fill_seconds_total",
            "Seconds of footage stored from the camera's recording since start.",
            |c| c.seconds,
        ),
    ] {
        family(
            name,
            "counter",
            help,
            edge.iter().map(|(l, c)| (l.clone(), f(c))).collect(),
        );
    }
    let snaps: Vec<_> = streams
        .iter()
        .map(|s| (stream_labels(&s.key), s.status.snapshot()))
        .collect();
    let per = |f: &dyn Fn(&vigie_ingest::StreamStatus) -> f64| {
        snaps
            .iter()
            .map(|(l, s)| (l.clone(), f(s)))
            .collect::<Vec<_>>()
    };
    family(
        "vigie_stream_frames_total",
        "counter",
        "Frames received from the camera.",
        per(&|s| s.frames_total as f64),
    );
    family(
        "vigie_stream_bytes_total",
        "counter",
        "Frame payload bytes received from the camera.",
        per(&|s| s.bytes_total as f64),
    );
    family(
        "vigie_stream_reconnects_total",
        "counter",
        "RTSP sessions restarted after a failure.",
        per(&|s| s.reconnects as f64),
    );
    family(
        "vigie_stream_online",
        "gauge",
        "1 when the stream is delivering frames.",
        per(&|s| if s.online { 1.0 } else { 0.0 }),
    );
    family(
        "vigie_stream_fps",
        "gauge",
        "Measured frame rate over the last seconds.",
        per(&|s| s.fps),
    );
    family(
        "vigie_stream_bitrate_bps",
        "gauge",
        "Measured bit rate over the last seconds.",
        per(&|s| s.bitrate_bps as f64),
    );
    family(
        "vigie_stream_below_quality_floor",
        "gauge",
        "1 while the stream's resolution or frame rate is below its camera class's floor (order of 3 August 2007).",
        streams
            .iter()
            .map(|s| {
                (
                    stream_labels(&s.key),
                    if s.compliance.below_floor() { 1.0 } else { 0.0 },
                )
            })
            .collect(),
    );

    let stats = state.store.stats();
    let writer_rows = |f: &dyn Fn(&vigie_store::WriterStats) -> f64| {
        stats
            .writers
            .iter()
            .filter(|(k, _)| in_scope(k))
            .map(|(k, w)| (stream_labels(k), f(w)))
            .collect::<Vec<_>>()
    };
    family(
        "vigie_writer_frames_total",
        "counter",
        "Frames written to segment files.",
        writer_rows(&|w| w.frames as f64),
    );
    family(
        "vigie_writer_bytes_total",
        "counter",
        "Bytes written to segment files.",
        writer_rows(&|w| w.bytes as f64),
    );
    family(
        "vigie_writer_segments_total",
        "counter",
        "Segments written.",
        writer_rows(&|w| w.segments as f64),
    );
    family(
        "vigie_writer_overflows_total",
        "counter",
        "Times the writer queue overflowed (frames dropped until the next key frame).",
        writer_rows(&|w| w.overflows as f64),
    );
    let dir = format!(
        "dir=\"{}\"",
        escape(&state.config.storage.data_dir.display().to_string())
    );
    family(
        "vigie_storage_free_bytes",
        "gauge",
        "Free bytes in the storage directory.",
        vec![(dir.clone(), stats.free_bytes as f64)],
    );
    family(
        "vigie_storage_total_bytes",
        "gauge",
        "Size of the storage file system.",
        vec![(dir.clone(), stats.total_bytes as f64)],
    );
    family(
        "vigie_storage_segments_deleted_total",
        "counter",
        "Segments deleted by retention (age or free-space floor).",
        vec![(dir.clone(), stats.segments_deleted as f64)],
    );
    family(
        "vigie_storage_bytes_deleted_total",
        "counter",
        "Bytes deleted by retention.",
        vec![(dir.clone(), stats.bytes_deleted as f64)],
    );
    family(
        "vigie_storage_syncs_total",
        "counter",
        "Durability syncs: kind=\"filesystem\" is one syncfs for several streams' segment files, kind=\"file\" one fdatasync of one segment file.",
        vec![
            (
                format!("{dir},kind=\"filesystem\""),
                stats.syncfs_calls as f64,
            ),
            (format!("{dir},kind=\"file\""), stats.fdatasync_calls as f64),
        ],
    );
    // Background verification of the recorded history after a start (issue 16).
    let verify = state.store.verification();
    family(
        "vigie_history_verify_entries_checked_total",
        "counter",
        "Index entries older than this start checked against their files by the background verification.",
        vec![(dir.clone(), verify.entries_checked as f64)],
    );
    family(
        "vigie_history_verify_findings_total",
        "counter",
        "Entries the background verification repaired (file missing or short: entry dropped; open or longer: re-read).",
        vec![(dir.clone(), verify.findings as f64)],
    );
    family(
        "vigie_history_verify_errors_total",
        "counter",
        "Entries the background verification could not check (logged, left as they are).",
        vec![(dir.clone(), verify.errors as f64)],
    );
    family(
        "vigie_history_verify_done",
        "gauge",
        "1 once the background verification of the history is complete.",
        vec![(dir.clone(), if verify.done { 1.0 } else { 0.0 })],
    );
    // What is wrong with the disk (see /api/v1/health `storage.state`): one row per state,
    // 1 for the current one, so an alert can match `state!="ok"`.
    let storage = state.store.storage_health();
    let current = serde_json::to_value(storage.state).unwrap_or_default();
    family(
        "vigie_storage_state",
        "gauge",
        "Storage state: 1 for the current one (ok, below_floor, full, held_full, index_error).",
        ["ok", "below_floor", "full", "held_full", "index_error"]
            .iter()
            .map(|s| {
                (
                    format!("{dir},state=\"{s}\""),
                    if current == *s { 1.0 } else { 0.0 },
                )
            })
            .collect(),
    );
    family(
        "vigie_storage_recording_blocked",
        "gauge",
        "1 while recording is stopped for lack of space or because the index cannot be written.",
        vec![(dir.clone(), f64::from(u8::from(storage.recording_blocked)))],
    );
    let (running, max, refused) = state.transcodes.load();
    family(
        "vigie_transcodes_running",
        "gauge",
        "H.264 fallback transcodes (live views and playback) running now.",
        vec![(String::new(), running as f64)],
    );
    family(
        "vigie_transcodes_max",
        "gauge",
        "The bound on concurrent transcodes ([live] max_transcodes).",
        vec![(String::new(), max as f64)],
    );
    family(
        "vigie_transcodes_refused_total",
        "counter",
        "Transcodes refused since start because the bound was reached (503 / close 4503).",
        vec![(String::new(), refused as f64)],
    );
    if let Some(c) = &state.cluster {
        out.push_str(&c.metrics_text());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

fn stream_labels(k: &vigie_core::StreamKey) -> String {
    format!(
        "camera=\"{}\",stream=\"{}\"",
        escape(&k.camera),
        escape(&k.stream)
    )
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

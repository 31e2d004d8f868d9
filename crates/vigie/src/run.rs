//! `vigie run`: wires configuration, store, ingest and HTTP together and runs until SIGINT or
//! SIGTERM, then shuts down in order: stop accepting requests, end the RTSP sessions, let the
//! writers close their segments, flush the index.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use vigie_core::config::Config;
use vigie_core::{Clock, SystemClock};

pub fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f)
}

pub fn store_config(c: &Config) -> vigie_store::StoreConfig {
    vigie_store::StoreConfig {
        data_dir: c.storage.data_dir.clone(),
        recording: c.recording.clone(),
        min_free_bytes: c.storage.min_free_bytes.0,
        index_cache_bytes: c.storage.index_cache_bytes.0,
        verify_entries_per_s: c.storage.verify_entries_per_s,
    }
}

/// Runs until a shutdown signal. `on_ready` is told the bound HTTP address (the demo prints it).
pub async fn run(
    config: Config,
    on_ready: Option<Box<dyn FnOnce(std::net::SocketAddr) + Send>>,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let fd_limit = raise_fd_limit();
    std::fs::create_dir_all(&config.storage.data_dir).with_context(|| {
        format!(
            "creating data directory {}",
            config.storage.data_dir.display()
        )
    })?;
    let store_cfg = store_config(&config);
    let store = tokio::task::spawn_blocking({
        let clock = clock.clone();
        let clustered = config.cluster.is_some();
        move || {
            if clustered {
                vigie_store::Store::open_clustered(store_cfg, clock)
            } else {
                vigie_store::Store::open(store_cfg, clock)
            }
        }
    })
    .await?
    .with_context(|| format!("opening the store in {}", config.storage.data_dir.display()))?;
    // Every GStreamer element stills and burned-in copies need, checked now (a warning naming
    // the Debian package) rather than at a user's first request.
    #[cfg(feature = "gst")]
    vigie_api::gst_elements::log_missing();
    let journal = crate::audit::open_journal(&config, clock.clone())?;
    crate::audit::journal_start(&journal, &config);
    crate::masks::journal_changes(&config, &journal);
    // Footage the store deleted to start above the free-space floor (before the journal could
    // be opened: it needs the room).
    let startup = vigie_store::RetentionReport {
        deleted: store.take_startup_deletions(),
        ..Default::default()
    };
    crate::audit::journal_retention(&journal, &startup, &mut false);
    // Users and rights (`<data_dir>/access/`, or etcd on a cluster node).
    let auth = crate::users::open_auth_to_run(&config, clock.clone())?;
    crate::users::startup_hint(&auth);
    // Evidence exports: installation signing key (created at the first start) and jobs.
    let exports = vigie_export::jobs::Exports::open(&config.storage.data_dir, &journal, &*clock)
        .context("opening the evidence exports (signing key, jobs)")?;
    let today = clock
        .now()
        .to_timestamp()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    for w in config.authorisation_warnings(today, 60) {
        tracing::warn!("{w}");
    }

    let shutdown = CancellationToken::new();
    let n = config.streams().count() as u32;
    // The RTSP sessions run on their own threads, woken once per tick (see vigie_ingest::runtime).
    let ingest_rt = Arc::new(
        vigie_ingest::IngestRuntime::start(
            vigie_ingest::runtime::threads_for(n as usize),
            vigie_ingest::runtime::DEFAULT_TICK,
        )
        .context("starting the ingest threads")?,
    );
    let recording = Arc::new(crate::recording::Recording::new(
        &config,
        store.clone(),
        clock.clone(),
        ingest_rt.clone(),
        shutdown.clone(),
    )?);
    let mut entries = Vec::new();
    let mut hubs = HashMap::new();
    for (key, status, live) in recording.streams() {
        let class = config
            .camera(&key.camera)
            .map(|c| c.class)
            .unwrap_or_default();
        hubs.insert(key.clone(), live.clone());
        entries.push(vigie_api::StreamEntry {
            key: key.clone(),
            status: status.clone(),
            compliance: Arc::new(vigie_quality::ComplianceCell::new(vigie_quality::floor(
                class,
            ))),
        });
    }
    // The cluster secret signing the internal routes between nodes (refused when unset or
    // too short; never logged). Without one, internal routes are closed.
    let internal = match &config.cluster {
        Some(c) => match c
            .secret(&|v| std::env::var(v).ok())
            .map_err(|e| anyhow::anyhow!("{e}"))?
        {
            Some(secret) => Some(Arc::new(vigie_api::internal::InternalAuth::new(
                vigie_api::internal::ClusterKey::new(&c.node, &secret),
            ))),
            None => {
                tracing::warn!(
                    "[cluster] has no secret_env or secret_file: internal routes are closed and this node serves only the footage it holds"
                );
                None
            }
        },
        None => None,
    };
    // Single node: every camera, now. Cluster: the cameras the cluster assigns here.
    #[cfg(feature = "cluster")]
    let cluster = match &config.cluster {
        Some(_) => Some(
            crate::cluster::start(&config, &recording, &store, &journal, shutdown.clone()).await?,
        ),
        None => None,
    };
    #[cfg(not(feature = "cluster"))]
    if config.cluster.is_some() {
        anyhow::bail!(
            "this build of Vigie has no cluster support: rebuild with `--features cluster` (needs protobuf-compiler and libprotobuf-dev) or remove [cluster]"
        );
    }
    if config.cluster.is_none() {
        for cam in &config.cameras {
            recording.start_now(&cam.id)?;
        }
    }

    // The quality floors of the 2007 order are about recorded footage: a `live`-only
    // sub-stream is low-resolution by design and is not watched.
    let watched = entries
        .iter()
        .filter(|e| {
            config
                .camera(&e.key.camera)
                .is_some_and(|c| c.records(&e.key.stream))
        })
        .map(|e| vigie_quality::Watched {
            key: e.key.clone(),
            status: e.status.clone(),
            compliance: e.compliance.clone(),
        })
        .collect();
    let quality_task = tokio::spawn(vigie_quality::monitor(
        watched,
        clock.clone(),
        journal.clone(),
        shutdown.clone(),
    ));
    let retention_task = tokio::spawn(retention_loop(
        config.clone(),
        store.clone(),
        journal.clone(),
        clock.clone(),
        shutdown.clone(),
    ));

    let live_hubs: Vec<_> = hubs.values().cloned().collect();
    // The services the handlers call: everything is recorded here (see vigie-service).
    let live: Arc<dyn vigie_service::LiveSource> = Arc::new(vigie_service::LocalLive(hubs));
    #[cfg_attr(not(feature = "cluster"), allow(unused_mut))]
    let mut job_ctx = vigie_export::jobs::JobContext {
        config: config.clone(),
        store: store.clone(),
        clock: clock.clone(),
        journal: journal.clone(),
        // A cluster: set below (exports of footage other nodes hold).
        ranges: None,
    };
    // Camera events (ONVIF PullPoint) of every camera with an ONVIF device.
    let camera_events = Arc::new(vigie_api::CameraEventCounts::default());
    let mut event_tasks = Vec::new();
    for cam in &config.cameras {
        if let Ok(Some(access)) = cam.onvif_access(&|k| std::env::var(k).ok()) {
            event_tasks.push(tokio::spawn(crate::onvif::event_loop(
                access,
                crate::onvif::EventSink {
                    camera: cam.id.clone(),
                    streams: cam.streams.iter().map(|s| s.name.clone()).collect(),
                    store: store.clone(),
                    journal: journal.clone(),
                    counts: camera_events.clone(),
                },
                shutdown.clone(),
            )));
        }
    }
    // Gaps filled from the cameras' own recordings (ONVIF Profile G), for cameras that ask.
    let edge_ctx = crate::edge::EdgeContext::new(
        store.clone(),
        journal.clone(),
        clock.clone(),
        camera_events.clone(),
    );
    let mut edge_tasks = Vec::new();
    for cam in &config.cameras {
        let getenv = |k: &str| std::env::var(k).ok();
        let (Some(ec), Some(stream)) = (&cam.edge_fill, cam.edge_fill_stream()) else {
            continue;
        };
        let (Ok(Some(access)), Ok((src, _))) = (
            cam.onvif_access(&getenv),
            cam.resolve_stream(stream, &getenv),
        ) else {
            continue;
        };
        let key = vigie_core::StreamKey::new(&cam.id, &stream.name);
        let Some(status) = entries
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.status.clone())
        else {
            continue;
        };
        edge_tasks.push(tokio::spawn(crate::edge::fill_loop(
            crate::edge::EdgeCamera {
                key,
                config: ec.clone(),
                access,
                profile: stream.profile.clone(),
                rtsp_username: src.username,
                rtsp_password: src.password,
                status,
            },
            edge_ctx.clone(),
            shutdown.clone(),
        )));
    }
    // Privacy masks pushed to the cameras (ONVIF Media2) and checked.
    let mask_status = Arc::new(vigie_api::masks::CameraMasks::default());
    event_tasks.extend(crate::masks::spawn_all(
        &config,
        mask_status.clone(),
        shutdown.clone(),
    ));
    // Cluster: what the API reads of the cluster, and footage from every node holding it.
    let local_footage: Arc<dyn vigie_service::Footage> =
        Arc::new(vigie_service::LocalFootage(store.clone()));
    #[cfg(feature = "cluster")]
    let (cluster_info, footage) = match &cluster {
        Some(c) => {
            let key = internal.as_ref().map(|a| a.key().clone());
            let info = Arc::new(c.info(&config, key.clone(), live.clone())?);
            let ca = match config.cluster.as_ref().and_then(|c| c.ca_file.as_ref()) {
                Some(ca) => Some(
                    std::fs::read(ca)
                        .with_context(|| format!("cluster.ca_file {}", ca.display()))?,
                ),
                None => None,
            };
            let footage = Arc::new(
                crate::cluster_footage::ClusterFootage::new(
                    store.clone(),
                    info.clone(),
                    key,
                    ca.as_deref(),
                )
                .context("the HTTP client of footage requests to other nodes")?,
            );
            // Exports read the other nodes' footage through the same client.
            job_ctx.ranges = Some(Arc::new(crate::cluster_export::ClusterRanges(
                footage.clone(),
            )));
            (
                Some(info as Arc<dyn vigie_api::ClusterInfo>),
                footage as Arc<dyn vigie_service::Footage>,
            )
        }
        None => (None, local_footage),
    };
    #[cfg(not(feature = "cluster"))]
    let footage = local_footage;
    let state = vigie_api::AppState {
        journal: journal.clone(),
        auth: auth.clone(),
        exports: Arc::new(vigie_service::LocalExports {
            jobs: exports.clone(),
            ctx: job_ctx.clone(),
        }),
        footage,
        stills: Arc::new(vigie_service::LocalStills {
            store: store.clone(),
            live: live.clone(),
            clock: clock.clone(),
            masks: config
                .cameras
                .iter()
                .filter(|c| !c.masks.is_empty())
                .map(|c| (c.id.clone(), c.masks.clone()))
                .collect(),
        }),
        live: live.clone(),
        config: config.clone(),
        store: store.clone(),
        streams: Arc::new(entries),
        clock: clock.clone(),
        limits: Arc::new(vigie_api::limits::Limits::new(&config)),
        #[cfg(feature = "cluster")]
        cluster: cluster_info,
        #[cfg(not(feature = "cluster"))]
        cluster: None,
        ptz: Arc::new(crate::onvif::ptz_service(&config)),
        camera_events: camera_events.clone(),
        transcodes: Arc::new(vigie_service::LocalTranscodes::from_config(
            store.clone(),
            &config,
        )),
        internal,
        masks: mask_status,
    };
    // Signal handlers before the listener: a SIGTERM as soon as the port answers (a service
    // manager, a test) must be a clean stop, not the default kill.
    let signals = install_signal_handlers();
    // Export packages past their lifetime or whose hold was released are deleted (journaled).
    let janitor_task = tokio::spawn(vigie_export::jobs::janitor(
        exports,
        job_ctx,
        shutdown.clone().cancelled_owned(),
    ));
    let mut serve_limits = vigie_api::server::ServeLimits::from_config(&config.server);
    serve_limits.max_connections = connection_cap(serve_limits.max_connections, fd_limit, n);
    serve_limits.max_connections_per_ip = serve_limits
        .max_connections_per_ip
        .min(serve_limits.max_connections);
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding the HTTP listener on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    let tls = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => Some(
            vigie_api::server::load_tls(&vigie_api::server::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })
            .await?,
        ),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, streams = n, "Vigie is recording; HTTP API on {scheme}://{addr}/");
    if let Some(f) = on_ready {
        f(addr);
    }
    #[cfg(feature = "cluster")]
    let drain = cluster.as_ref().map(|c| c.drainer(&config));
    #[cfg(not(feature = "cluster"))]
    let drain: Option<Drainer> = None;
    tokio::spawn(wait_for_signal(signals, shutdown.clone(), drain));
    let served = vigie_api::server::serve(
        listener,
        vigie_api::router(state),
        tls,
        serve_limits,
        shutdown.clone().cancelled_owned(),
    )
    .await;
    shutdown.cancel();
    for hub in &live_hubs {
        hub.close("server shutting down");
    }

    tracing::info!("shutting down: ending RTSP sessions and closing segments");
    // A replay in progress ends now (its edge writer closes its segment).
    for t in edge_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    recording.join().await;
    #[cfg(feature = "cluster")]
    if let Some(c) = cluster {
        c.stopped().await;
    }
    store.shutdown().await;
    retention_task.abort();
    for t in event_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
    }
    quality_task.abort();
    janitor_task.abort();
    served.context("HTTP server")?;
    journal.append_or_log(vigie_audit::NewEntry::new(
        "system",
        vigie_audit::Action::ServiceStop,
    ));
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Descriptors kept for recording whatever HTTP clients do: per stream an RTSP socket, the
/// segment file being written and one being closed, plus the index, journal, user database,
/// export workers and the runtime's own.
fn fd_reserve(streams: u32) -> u64 {
    256 + 8 * u64::from(streams)
}

/// Raises the soft limit on open files to the hard limit (systemd's default soft limit of 1024
/// is easily reached by HTTP clients alone) and returns the soft limit in force.
fn raise_fd_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::info!(
                    from = soft,
                    to = hard,
                    "raised the open-file limit (RLIMIT_NOFILE)"
                );
                return Some(hard);
            }
            Err(e) => tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit"),
        }
    }
    Some(soft)
}

/// `server.max_connections`, lowered when the descriptor limit could not hold it and still
/// leave [`fd_reserve`] descriptors to recording.
fn connection_cap(configured: usize, fd_limit: Option<u64>, streams: u32) -> usize {
    let Some(limit) = fd_limit else {
        return configured;
    };
    let room = limit.saturating_sub(fd_reserve(streams)).max(16) as usize;
    if configured > room {
        tracing::warn!(
            configured,
            lowered_to = room,
            fd_limit = limit,
            reserve = fd_reserve(streams),
            "server.max_connections lowered to keep file descriptors for recording (raise LimitNOFILE to allow more)"
        );
        room
    } else {
        tracing::info!(
            max_connections = configured,
            fd_limit = limit,
            reserve = fd_reserve(streams),
            "HTTP connection limit"
        );
        configured
    }
}

/// Retention: a full pass (age, then the free-space floor) 5 s after start and every
/// `retention.check_interval_s`; a free-space pass alone as soon as a writer finds free space
/// below the floor or the index failed (`Store::space_wanted`), and every second while the
/// storage is not `ok` (to reopen the index, or resume once space is back).
async fn retention_loop(
    config: Arc<Config>,
    store: vigie_store::Store,
    journal: vigie_audit::Journal,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let per_stream_days: HashMap<_, _> = config
        .streams()
        .map(|(k, cam, _)| (k, config.retention_days(cam)))
        .collect();
    let policy = vigie_store::RetentionPolicy { per_stream_days };
    let interval = Duration::from_secs(u64::from(config.retention.check_interval_s));
    let mut next_full = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut blocked = false;
    let mut last_state = vigie_store::StorageState::Ok;
    loop {
        let unwell = store.storage_health().state != vigie_store::StorageState::Ok;
        let wake = if unwell {
            next_full.min(tokio::time::Instant::now() + Duration::from_secs(1))
        } else {
            next_full
        };
        let full = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => tokio::time::Instant::now() >= next_full,
            _ = store.space_wanted() => false,
        };
        if full {
            next_full = tokio::time::Instant::now() + interval;
        }
        let s = store.clone();
        let policy = policy.clone();
        let res = tokio::task::spawn_blocking(move || {
            if full {
                s.apply_retention(&policy)
            } else {
                s.free_space_pass()
            }
        })
        .await;
        let health = store.storage_health();
        if health.state != last_state {
            if health.state == vigie_store::StorageState::Ok {
                tracing::info!(free_bytes = health.free_bytes, "storage ok again");
            } else {
                tracing::warn!(state = ?health.state, message = %health.message, "storage state changed");
            }
            // Held-full is journaled by `journal_retention`; an index that cannot be written
            // stops every camera, so it is journaled too (once per change, as far as the
            // journal itself can still write).
            let index_error = vigie_store::StorageState::IndexError;
            if health.state == index_error || last_state == index_error {
                let stopped = health.state == index_error;
                journal.append_or_log(
                    vigie_audit::NewEntry::new("system", vigie_audit::Action::RecordingBlocked)
                        .reason(if stopped {
                            "the index cannot be written: recording stopped"
                        } else {
                            "the index was reopened: recording resumed"
                        })
                        .details(serde_json::json!({
                            "blocked": stopped,
                            "state": health.state,
                            "message": health.message,
                            "free_bytes": health.free_bytes,
                        })),
                );
            }
            last_state = health.state;
        }
        match res {
            Ok(Ok(report)) => {
                tracing::debug!(?report, "retention pass done");
                crate::audit::journal_retention(&journal, &report, &mut blocked);
                if !full {
                    continue;
                }
                // The access journal keeps its own, longer retention (3 years by default).
                let (j, c, days) = (
                    journal.clone(),
                    clock.clone(),
                    config.retention.journal_days,
                );
                match tokio::task::spawn_blocking(move || purge_journal(&j, &*c, days)).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::info!(
                        entries = n,
                        "access journal entries past the journal retention purged"
                    ),
                    Ok(Err(e)) => tracing::error!(error = %e, "purging the access journal failed"),
                    Err(e) => tracing::error!(error = %e, "journal purge task panicked"),
                }
            }
            // Cluster: the other nodes' holds are not known (etcd unreachable): nothing may
            // be deleted; said once per pass, not as a failure.
            Ok(Err(e @ vigie_store::StoreError::HoldsUnknown(_))) => {
                tracing::warn!(reason = %e, "retention pass skipped")
            }
            Ok(Err(e)) => tracing::error!(error = %e, "retention pass failed"),
            Err(e) => tracing::error!(error = %e, "retention task panicked"),
        }
    }
}

/// Purges the access-journal entries older than `journal_days` before now, as the injected
/// clock tells it (never the host clock). Blocking.
fn purge_journal(
    journal: &vigie_audit::Journal,
    clock: &dyn Clock,
    journal_days: u32,
) -> Result<u64, vigie_audit::AuditError> {
    let cutoff = clock.now() - vigie_core::Duration90k::from_secs(i64::from(journal_days) * 86_400);
    journal.purge_before(cutoff, "system")
}

type Signals = Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>;

fn install_signal_handlers() -> Signals {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => Some((t, i)),
        _ => {
            tracing::error!("cannot install signal handlers; stop with kill -9 only");
            None
        }
    }
}

/// What a clustered node does on SIGTERM/SIGINT before stopping: hand its cameras over
/// (bounded in time).
pub type Drainer =
    Box<dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send>;

async fn wait_for_signal(signals: Signals, shutdown: CancellationToken, drain: Option<Drainer>) {
    let Some((mut term, mut int)) = signals else {
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
        _ = shutdown.cancelled() => return,
    }
    if let Some(d) = drain {
        // A second signal stops at once.
        tokio::select! {
            _ = d() => {}
            _ = term.recv() => tracing::warn!("second SIGTERM: stopping without finishing the drain"),
            _ = int.recv() => tracing::warn!("second SIGINT: stopping without finishing the drain"),
        }
    }
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The journal purge follows the injected clock: entries written (by a simulated clock) in
    /// 2040 are past a 30-day retention when that clock says 2040 + 31 days, whatever the host
    /// clock says.
    #[test]
    fn the_journal_purge_reads_the_injected_clock() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = vigie_core::Time90k::parse_rfc3339("2040-01-01T00:00:00Z").unwrap();
        let clock = Arc::new(vigie_core::SimulatedClock::new(t0));
        let journal =
            vigie_audit::Journal::open(&dir.path().join("journal"), clock.clone()).unwrap();
        for _ in 0..3 {
            journal
                .append(vigie_audit::NewEntry::new(
                    "alice",
                    vigie_audit::Action::Login,
                ))
                .unwrap();
        }
        assert_eq!(
            purge_journal(&journal, &*clock, 30).unwrap(),
            0,
            "nothing is 30 days old"
        );
        clock.advance(vigie_core::Duration90k::from_secs(31 * 86_400));
        assert_eq!(purge_journal(&journal, &*clock, 30).unwrap(), 3);
    }
}

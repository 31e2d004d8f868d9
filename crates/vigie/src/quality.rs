//! The quality-floor monitor: once a second, each online stream's measured resolution and
//! frame rate go through its [`QualityMonitor`]; transitions are logged and journaled.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vigie_api::StreamEntry;
use vigie_api::quality::{QualityMonitor, Transition};
use vigie_audit::{Action, Journal, NewEntry};
use vigie_core::Clock;

pub async fn monitor(
    entries: Vec<StreamEntry>,
    clock: Arc<dyn Clock>,
    journal: Journal,
    shutdown: CancellationToken,
) {
    let mut monitors: Vec<QualityMonitor> = entries
        .iter()
        .map(|e| QualityMonitor::new(e.compliance.snapshot().floor))
        .collect();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = clock.now();
        for (e, m) in entries.iter().zip(monitors.iter_mut()) {
            let st = e.status.snapshot();
            let (Some(w), Some(h)) = (st.width, st.height) else {
                continue;
            };
            if !st.online {
                continue;
            }
            let Some(t) = m.observe(now, w, h, st.fps, &e.compliance) else {
                continue;
            };
            let c = e.compliance.snapshot();
            let details = serde_json::json!({
                "width": w, "height": h, "fps": (st.fps * 10.0).round() / 10.0, "floor": c.floor,
            });
            let entry = match &t {
                Transition::Alert(reason) => {
                    tracing::warn!(camera = %e.key.camera, stream = %e.key.stream, %reason, "stream below its quality floor");
                    NewEntry::new("system", Action::QualityAlert).reason(reason.clone())
                }
                Transition::Clear => {
                    tracing::info!(camera = %e.key.camera, stream = %e.key.stream, "stream back above its quality floor");
                    NewEntry::new("system", Action::QualityClear)
                }
            };
            let mut entry = entry.camera(&e.key.camera, &e.key.stream).details(details);
            if let Some(since) = c.since {
                entry.start_90k = Some(since.0);
            }
            let j = journal.clone();
            let _ = tokio::task::spawn_blocking(move || j.append_or_log(entry)).await;
        }
    }
}

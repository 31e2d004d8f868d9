//! Privacy masks on the cameras (CSI L251-3): at start, the configured masks of each camera
//! are compared with the last set known (`masks.json` in the data directory) and a change is
//! journaled (`masks-changed`); then, for every camera with masks, a task pushes them to the
//! camera through ONVIF Media2 (`CreateMask` after removing what differs), reads them back and
//! compares, and keeps checking (every [`RECHECK`]; a camera that rebooted without its masks or
//! was reconfigured by hand gets them again). The outcome is what `GET /api/v1/cameras` shows
//! (`masks.confirmed_on_camera`, `last_error`).
//!
//! Vigie paints the masks itself on what it renders (stills, burned-in copies:
//! `vigie_decode::masks`) whatever the camera does; the recorded master and the live view are
//! the camera's own picture, which only the camera-side mask protects.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use vigie_api::masks::CameraMasks;
use vigie_audit::{Action, Journal, NewEntry};
use vigie_core::config::{Camera, Config, OnvifAccess};
use vigie_core::masks::Mask;
use vigie_onvif::media2::{picture_to_onvif, same_polygon};
use vigie_onvif::{Device, Options};

/// How often confirmed masks are checked again on the camera (6 requests per check: 1,200
/// cameras make 24 requests/s at this period), and the longest wait between retries.
pub const RECHECK: Duration = Duration::from_secs(300);
/// Coordinates read back may differ by this much (cameras round to their grid).
const TOLERANCE: f64 = 2e-3;
/// The file keeping the last known masks per camera.
const STATE_FILE: &str = "masks.json";

/// Journals, per camera, a change of its masks since the last start (first start with masks:
/// a change from none), then saves the current sets.
pub fn journal_changes(config: &Config, journal: &Journal) {
    let path = config.storage.data_dir.join(STATE_FILE);
    let previous: BTreeMap<String, serde_json::Value> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut now = BTreeMap::new();
    for cam in &config.cameras {
        let hash = vigie_core::masks::hash(&cam.masks);
        let before = previous.get(&cam.id);
        let before_hash = before.and_then(|v| v["hash"].as_str());
        let empty = vigie_core::masks::hash(&[]);
        if before_hash.unwrap_or(&empty) != hash {
            let mut e = NewEntry::new("system", Action::MasksChanged)
                .reason("privacy masks of the camera changed in the configuration")
                .details(serde_json::json!({
                    "by": "config",
                    "count": cam.masks.len(),
                    "names": cam.masks.iter().map(|m| m.name.trim()).collect::<Vec<_>>(),
                    "hash": hash,
                    "previous_count": before.and_then(|v| v["count"].as_u64()).unwrap_or(0),
                    "previous_names": before.map(|v| v["names"].clone()).unwrap_or_else(|| serde_json::json!([])),
                    "previous_hash": before_hash,
                    "masks": cam.masks,
                }));
            e.camera = Some(cam.id.clone());
            journal.append_or_log(e);
            tracing::info!(camera = %cam.id, masks = cam.masks.len(), %hash, "privacy masks changed");
        }
        if !cam.masks.is_empty() || before.is_some() {
            now.insert(
                cam.id.clone(),
                serde_json::json!({
                    "hash": hash,
                    "count": cam.masks.len(),
                    "names": cam.masks.iter().map(|m| m.name.trim()).collect::<Vec<_>>(),
                }),
            );
        }
    }
    // Cameras removed from the configuration keep their last entry (journaled if they return
    // with other masks).
    for (id, v) in previous {
        now.entry(id).or_insert(v);
    }
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(&now).unwrap_or_default();
    if let Err(e) = std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, &path)) {
        tracing::warn!(path = %path.display(), "saving the privacy masks state: {e}");
    }
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// Starts the mask keeper of every camera with masks; a camera without ONVIF is flagged at
/// once (its masks are Vigie's only).
pub fn spawn_all(
    config: &Config,
    status: Arc<CameraMasks>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for cam in config.cameras.iter().filter(|c| !c.masks.is_empty()) {
        match cam.onvif_access(&|k| std::env::var(k).ok()) {
            Ok(Some(access)) => tasks.push(tokio::spawn(keep(
                cam.id.clone(),
                access,
                cam.masks.clone(),
                status.clone(),
                shutdown.clone(),
            ))),
            Ok(None) => status.set(&cam.id, Some(false), Some(no_onvif(cam)), now_rfc3339()),
            Err(e) => status.set(
                &cam.id,
                Some(false),
                Some(format!("onvif: {e}")),
                now_rfc3339(),
            ),
        }
    }
    tasks
}

fn no_onvif(cam: &Camera) -> String {
    format!(
        "camera {:?} has no ONVIF device: its masks cannot be pushed to it; Vigie masks its stills and burned-in copies only",
        cam.id
    )
}

/// Pushes and checks `masks` on one camera until `shutdown`.
async fn keep(
    camera: String,
    access: OnvifAccess,
    masks: Vec<Mask>,
    status: Arc<CameraMasks>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut delay = Duration::from_secs(5);
    loop {
        let r = tokio::select! {
            r = push_and_check(&access, &masks) => r,
            _ = shutdown.cancelled() => return,
        };
        let wait = match r {
            Ok(()) => {
                tracing::info!(camera = %camera, masks = masks.len(), "privacy masks confirmed on the camera");
                status.set(&camera, Some(true), None, now_rfc3339());
                delay = Duration::from_secs(5);
                RECHECK
            }
            Err(e) => {
                tracing::warn!(camera = %camera, retry_in_s = delay.as_secs(), "privacy masks not confirmed on the camera: {e}");
                status.set(&camera, Some(false), Some(e), now_rfc3339());
                let d = delay;
                delay = (delay * 2).min(RECHECK);
                d
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Whether `got` holds exactly the polygons of `want` (in any order; each polygon may start at
/// any vertex and run either way).
fn same_set(want: &[Vec<(f64, f64)>], got: &[Vec<(f64, f64)>]) -> bool {
    if want.len() != got.len() {
        return false;
    }
    let mut used = vec![false; got.len()];
    'outer: for w in want {
        for (i, g) in got.iter().enumerate() {
            if !used[i] && same_ring(w, g) {
                used[i] = true;
                continue 'outer;
            }
        }
        return false;
    }
    true
}

fn same_ring(a: &[(f64, f64)], b: &[(f64, f64)]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let n = a.len();
    let mut rev: Vec<(f64, f64)> = b.to_vec();
    rev.reverse();
    (0..n).any(|k| {
        let rot: Vec<_> = b[k..].iter().chain(&b[..k]).copied().collect();
        let rrot: Vec<_> = rev[k..].iter().chain(&rev[..k]).copied().collect();
        same_polygon(a, &rot, TOLERANCE) || same_polygon(a, &rrot, TOLERANCE)
    })
}

/// One push and read-back; `Err` says why the masks are not confirmed (no credential in it).
async fn push_and_check(access: &OnvifAccess, masks: &[Mask]) -> Result<(), String> {
    let dev = Device::connect(
        &access.url,
        crate::onvif::credentials(access),
        Options::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let m2 = dev.media2().await.map_err(|e| e.to_string())?;
    if !m2.supports_masks() {
        return Err("the camera's Media2 service does not support privacy masks".into());
    }
    let want: Vec<Vec<(f64, f64)>> = masks
        .iter()
        .map(|m| m.points.iter().copied().map(picture_to_onvif).collect())
        .collect();
    let configurations = m2
        .video_source_configurations()
        .await
        .map_err(|e| e.to_string())?;
    if configurations.is_empty() {
        return Err("the camera lists no video source configuration to mask".into());
    }
    for vsc in &configurations {
        let held = m2.masks(Some(vsc)).await.map_err(|e| e.to_string())?;
        let polys: Vec<_> = held
            .iter()
            .filter(|m| m.enabled)
            .map(|m| m.points.clone())
            .collect();
        if held.iter().all(|m| m.enabled) && same_set(&want, &polys) {
            continue;
        }
        // What the camera holds differs: the configuration (the authorisation) is the truth.
        for m in &held {
            m2.delete_mask(&m.token).await.map_err(|e| e.to_string())?;
        }
        for w in &want {
            m2.create_mask(vsc, w).await.map_err(|e| e.to_string())?;
        }
        let back = m2.masks(Some(vsc)).await.map_err(|e| e.to_string())?;
        let polys: Vec<_> = back
            .iter()
            .filter(|m| m.enabled)
            .map(|m| m.points.clone())
            .collect();
        if !same_set(&want, &polys) {
            return Err(format!(
                "the camera holds {} enabled mask(s) on {vsc:?} after the push, not the {} configured ones",
                polys.len(),
                want.len()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_back_polygons_match_in_any_order_start_and_direction() {
        let a = vec![(0.0, 0.0), (0.5, 0.0), (0.5, 0.5)];
        let b = vec![(0.1, 0.1), (0.2, 0.1), (0.2, 0.2), (0.1, 0.2)];
        let a_rot = vec![(0.5, 0.0), (0.5, 0.5), (0.0, 0.0)];
        let a_rev = vec![(0.5, 0.5), (0.5, 0.0), (0.0005, 0.0)];
        assert!(same_set(&[a.clone(), b.clone()], &[b.clone(), a_rot]));
        assert!(same_set(std::slice::from_ref(&a), &[a_rev]));
        assert!(!same_set(
            std::slice::from_ref(&a),
            std::slice::from_ref(&b)
        ));
        assert!(!same_set(&[a.clone(), a.clone()], &[a.clone(), b]));
        assert!(!same_set(std::slice::from_ref(&a), &[]));
    }
}

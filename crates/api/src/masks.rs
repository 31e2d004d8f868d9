//! Whether each camera's privacy masks are confirmed on the camera (ONVIF Media2, pushed and
//! read back by the binary), shown in `GET /api/v1/cameras` as
//! `masks: {configured, names, hash, confirmed_on_camera, last_error, applied_by_vigie, unconfirmed}`.
//!
//! Owns only the shared state; the push and the check live in the binary (`vigie::masks`).

use std::collections::BTreeMap;
use std::sync::Mutex;

/// What is known of one camera's masks on the camera itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MaskState {
    /// `None`: not checked yet; `Some(true)`: the camera holds exactly the configured masks.
    pub confirmed_on_camera: Option<bool>,
    /// Why they could not be confirmed (no ONVIF, no Media2, a fault, a mismatch).
    pub last_error: Option<String>,
    /// When last checked (RFC 3339).
    pub checked_at: Option<String>,
}

/// Per camera id.
#[derive(Debug, Default)]
pub struct CameraMasks {
    states: Mutex<BTreeMap<String, MaskState>>,
}

impl CameraMasks {
    /// Records the outcome of a check of `camera` (`error` carries no credential).
    pub fn set(&self, camera: &str, confirmed: Option<bool>, error: Option<String>, at: String) {
        let mut g = self.states.lock().unwrap_or_else(|p| p.into_inner());
        g.insert(
            camera.to_owned(),
            MaskState {
                confirmed_on_camera: confirmed,
                last_error: error,
                checked_at: Some(at),
            },
        );
    }

    /// The state of `camera` (default: not checked).
    pub fn get(&self, camera: &str) -> MaskState {
        let g = self.states.lock().unwrap_or_else(|p| p.into_inner());
        g.get(camera).cloned().unwrap_or_default()
    }
}

/// The `masks` object of a camera in `GET /api/v1/cameras`.
pub fn camera_json(cam: &vigie_core::config::Camera, state: &CameraMasks) -> serde_json::Value {
    let s = state.get(&cam.id);
    let n = cam.masks.len();
    serde_json::json!({
        "configured": n,
        "names": cam.masks.iter().map(|m| m.name.trim()).collect::<Vec<_>>(),
        "hash": vigie_core::masks::hash(&cam.masks),
        "confirmed_on_camera": if n == 0 { None } else { s.confirmed_on_camera },
        "last_error": if n == 0 { None } else { s.last_error },
        "checked_at": s.checked_at,
        // Stills and burned-in copies are masked by Vigie whatever the camera does.
        "applied_by_vigie": n > 0,
        // Flag: masks configured but not (yet) confirmed on the camera.
        "unconfirmed": n > 0 && s.confirmed_on_camera != Some(true),
    })
}

//! What the simulated dome sees: the picture of a camsim mount follows the PTZ head's pan.
//!
//! camsim never re-encodes (that is what keeps it cheap at 1,200 streams), so a move cannot crop
//! a live picture. Instead a PTZ fixture holds one GOP per pan position (see
//! `fixtures/h264-ptz-pan5-640x360-25fps-gop50.h264`: a panorama that is blue on the left and
//! red on the right, seen at pan −1, −0.5, 0, +0.5, +1), and a watcher switches the mount to the
//! GOP of the view nearest to the head's pan whenever that changes
//! ([`MountControl::switch_fixture`]: playing sessions continue at the view's key frame,
//! which carries its parameter sets). A client sees the picture move within ~0.1 s of the
//! head reaching the next view. Tilt and zoom do not change the picture.
//!
//! This module owns the choice of the view and the watcher; the head itself is [`super::ptz`].

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tracing::info;

use crate::faults::MountControl;
use crate::fixture::Fixture;

/// How often the watcher reads the head's position.
const POLL: Duration = Duration::from_millis(100);

/// A mount whose picture follows the head: `views[i]` is seen at pan
/// `-1 + 2 i / (views.len() - 1)`.
#[derive(Clone)]
pub struct PtzView {
    /// The mount to switch (usually the profile `main`'s mount; a `sub` mount can get its own).
    pub mount: MountControl,
    /// One fixture per pan position, left to right (e.g. [`Fixture::gops`] of a PTZ fixture).
    pub views: Vec<Arc<Fixture>>,
}

impl std::fmt::Debug for PtzView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PtzView")
            .field("mount", &self.mount.name())
            .field("views", &self.views.len())
            .finish()
    }
}

impl PtzView {
    /// The embedded five-view dome on `mount`.
    pub fn embedded(mount: MountControl) -> PtzView {
        let views = Fixture::embedded("h264-ptz-pan5-640x360-25fps-gop50.h264")
            .map(|f| f.gops())
            .unwrap_or_default();
        PtzView { mount, views }
    }
}

/// Index of the view nearest to `pan` (in [-1, 1]) among `n` views spread evenly over it.
pub fn view_index(pan: f64, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let pan = if pan.is_finite() {
        pan.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let last = (n - 1) as f64;
    (((pan + 1.0) / 2.0 * last).round() as usize).min(n - 1)
}

/// Runs until `shutdown` turns true: shows the view of the head's pan on the mount.
pub(super) async fn watch(
    device: Arc<super::Device>,
    view: PtzView,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    if view.views.is_empty() {
        return;
    }
    let mut shown: Option<usize> = None;
    loop {
        let (pos, _) = super::lock(&device.ptz).status(Instant::now());
        let i = view_index(pos.pan, view.views.len());
        if shown != Some(i) {
            info!(mount = %view.mount.name(), pan = pos.pan, view = i, "camsim PTZ: the picture follows the head");
            view.mount.switch_fixture(view.views[i].clone());
            device.ptz_view.store(i as u64 + 1, Relaxed);
            shown = Some(i);
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_view_is_shown() {
        assert_eq!(view_index(-1.0, 5), 0);
        assert_eq!(view_index(-0.8, 5), 0);
        assert_eq!(view_index(-0.6, 5), 1);
        assert_eq!(view_index(0.0, 5), 2);
        assert_eq!(view_index(0.3, 5), 3);
        assert_eq!(view_index(1.0, 5), 4);
        assert_eq!(view_index(7.0, 5), 4);
        assert_eq!(view_index(f64::NAN, 5), 2);
        assert_eq!(view_index(0.9, 1), 0);
        assert_eq!(view_index(0.9, 0), 0);
    }
}

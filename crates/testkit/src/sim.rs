//! Simulated cameras for the e2e tests: camsim in the test process, and the TOML of a camera
//! pointing at it.

use std::sync::Arc;

use vigie_camsim::{Fixture, MountConfig, Server, ServerHandle};

/// The fixture most tests record: H.264 constrained baseline, 640×360, 25 fps, GOP 50.
pub const BASELINE: &str = "h264-baseline-640x360-25fps-gop50.h264";

/// An embedded fixture by name (panics in tests if missing).
pub fn embedded(name: &str) -> Arc<Fixture> {
    Fixture::embedded(name).unwrap_or_else(|| panic!("embedded fixture {name}"))
}

/// Starts camsim on a free loopback port with these mounts.
pub async fn start(mounts: Vec<MountConfig>) -> ServerHandle {
    Server::start("127.0.0.1:0".parse().expect("loopback address"), mounts)
        .await
        .expect("starting camsim")
}

/// Starts camsim with one mount per `(mount, embedded fixture)`.
pub async fn start_embedded(mounts: &[(&str, &str)]) -> ServerHandle {
    start(
        mounts
            .iter()
            .map(|(m, f)| MountConfig::new(*m, embedded(f)))
            .collect(),
    )
    .await
}

/// Starts camsim serving [`BASELINE`] on each mount.
pub async fn start_baseline(mounts: &[&str]) -> ServerHandle {
    let f = embedded(BASELINE);
    start(
        mounts
            .iter()
            .map(|m| MountConfig::new(*m, f.clone()))
            .collect(),
    )
    .await
}

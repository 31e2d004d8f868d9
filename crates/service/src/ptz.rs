//! PTZ of ONVIF cameras for operators: the commands ([`PtzCommand`]), one operator at a time
//! per camera (a lock taken by the first command and held [`LOCK_TTL`] after the last one),
//! and the local implementation over `vigie-onvif` ([`OnvifPtz`]: one connected device per
//! camera, reconnected after a failure). Rights and journaling are the API's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vigie_onvif::{Credentials, Device, Options, PtzVector};

use crate::BoxFuture;

/// How long a camera's PTZ stays with its operator after their last command.
pub const LOCK_TTL: Duration = Duration::from_secs(30);
/// A continuous move stops by itself after this long (should the stop be lost).
pub const MOVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What an operator asks a dome to do.
#[derive(Clone, Debug, PartialEq)]
pub enum PtzCommand {
    /// Continuous move at these velocities (each in [-1, 1]).
    Move { pan: f64, tilt: f64, zoom: f64 },
    /// Stop moving.
    Stop,
    /// Go to a stored preset.
    GotoPreset { token: String },
    /// Store the current position as a preset named so.
    SetPreset { name: String },
}

impl PtzCommand {
    /// Short name for the journal.
    pub fn name(&self) -> &'static str {
        match self {
            PtzCommand::Move { .. } => "move",
            PtzCommand::Stop => "stop",
            PtzCommand::GotoPreset { .. } => "goto-preset",
            PtzCommand::SetPreset { .. } => "set-preset",
        }
    }
}

/// Who holds a camera's PTZ.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PtzLock {
    pub holder: String,
    pub expires_in_s: u64,
}

/// A preset as listed.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PtzPreset {
    pub token: String,
    pub name: String,
}

/// The state shown to operators.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PtzState {
    /// (pan, tilt, zoom) if the camera reports it.
    pub position: Option<[f64; 3]>,
    pub moving: bool,
    pub lock: Option<PtzLock>,
}

/// Why a PTZ request failed.
#[derive(Debug, thiserror::Error)]
pub enum PtzError {
    #[error("camera {0:?} has no ONVIF device configured (no `onvif` in its [[cameras]])")]
    NotOnvif(String),
    #[error("camera {0:?} offers no PTZ")]
    NoPtz(String),
    #[error("the PTZ of camera {camera:?} is held by {holder} for {expires_in_s} s more")]
    Locked {
        camera: String,
        holder: String,
        expires_in_s: u64,
    },
    /// The camera failed (the ONVIF error's text: operation, URL, reason; no password).
    #[error("{0}")]
    Camera(String),
}

/// PTZ of the cameras.
pub trait PtzControl: Send + Sync {
    /// Runs `cmd` for `user` if nobody else holds the camera; takes or extends the lock.
    /// Returns the new preset's token for [`PtzCommand::SetPreset`].
    fn command<'a>(
        &'a self,
        camera: &'a str,
        user: &'a str,
        cmd: PtzCommand,
    ) -> BoxFuture<'a, Result<Option<String>, PtzError>>;
    /// Position, motion and lock.
    fn state<'a>(&'a self, camera: &'a str) -> BoxFuture<'a, Result<PtzState, PtzError>>;
    /// Stored presets.
    fn presets<'a>(&'a self, camera: &'a str) -> BoxFuture<'a, Result<Vec<PtzPreset>, PtzError>>;
    /// Releases `user`'s lock on `camera` (no effect if someone else holds it).
    fn release(&self, camera: &str, user: &str);
}

/// A camera's ONVIF access (from the configuration).
#[derive(Clone)]
pub struct PtzCamera {
    pub url: String,
    pub credentials: Option<Credentials>,
    pub timeout: Duration,
}

/// The per-camera operator locks (monotonic time).
#[derive(Default)]
pub struct Locks(Mutex<HashMap<String, (String, Instant)>>);

impl Locks {
    /// Takes or extends `camera` for `user`, or says who holds it.
    pub fn acquire(&self, camera: &str, user: &str, now: Instant) -> Result<(), PtzLock> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((holder, until)) = g.get(camera)
            && holder != user
            && *until > now
        {
            return Err(PtzLock {
                holder: holder.clone(),
                expires_in_s: until.duration_since(now).as_secs().max(1),
            });
        }
        g.insert(camera.to_owned(), (user.to_owned(), now + LOCK_TTL));
        Ok(())
    }

    /// The current holder.
    pub fn holder(&self, camera: &str, now: Instant) -> Option<PtzLock> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.get(camera)
            .filter(|(_, until)| *until > now)
            .map(|(holder, until)| PtzLock {
                holder: holder.clone(),
                expires_in_s: until.duration_since(now).as_secs().max(1),
            })
    }

    /// Releases `user`'s hold.
    pub fn release(&self, camera: &str, user: &str) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.get(camera).is_some_and(|(h, _)| h == user) {
            g.remove(camera);
        }
    }
}

struct Connected {
    device: Arc<Device>,
    profile: String,
}

/// One camera's connection slot: its own lock, so a slow or unreachable camera never holds up
/// the PTZ of the others.
type Slot = tokio::sync::Mutex<Option<Arc<Connected>>>;

/// PTZ through each camera's ONVIF device.
pub struct OnvifPtz {
    cameras: HashMap<String, (PtzCamera, Slot)>,
    locks: Locks,
}

impl OnvifPtz {
    pub fn new(cameras: HashMap<String, PtzCamera>) -> OnvifPtz {
        OnvifPtz {
            cameras: cameras
                .into_iter()
                .map(|(k, c)| (k, (c, tokio::sync::Mutex::new(None))))
                .collect(),
            locks: Locks::default(),
        }
    }

    async fn connected(&self, camera: &str) -> Result<Arc<Connected>, PtzError> {
        let (cfg, slot) = self
            .cameras
            .get(camera)
            .ok_or_else(|| PtzError::NotOnvif(camera.to_owned()))?;
        let mut g = slot.lock().await;
        if let Some(c) = g.as_ref() {
            return Ok(c.clone());
        }
        let dev = Device::connect(
            &cfg.url,
            cfg.credentials.clone(),
            Options {
                timeout: cfg.timeout,
            },
        )
        .await
        .map_err(|e| PtzError::Camera(e.to_string()))?;
        if !dev.has_ptz() {
            return Err(PtzError::NoPtz(camera.to_owned()));
        }
        let profiles = dev
            .profiles()
            .await
            .map_err(|e| PtzError::Camera(e.to_string()))?;
        let profile = profiles
            .iter()
            .find(|p| p.ptz)
            .map(|p| p.token.clone())
            .ok_or_else(|| PtzError::NoPtz(camera.to_owned()))?;
        let c = Arc::new(Connected {
            device: Arc::new(dev),
            profile,
        });
        *g = Some(c.clone());
        Ok(c)
    }

    /// Forgets a device after a failure, so the next request reconnects (the camera may have
    /// rebooted or changed its address book).
    async fn forget(&self, camera: &str) {
        if let Some((_, slot)) = self.cameras.get(camera) {
            *slot.lock().await = None;
        }
    }

    async fn run(&self, camera: &str, cmd: PtzCommand) -> Result<Option<String>, PtzError> {
        let c = self.connected(camera).await?;
        let (d, p) = (&c.device, c.profile.as_str());
        let r = match cmd {
            PtzCommand::Move { pan, tilt, zoom } => d
                .ptz_continuous_move(p, PtzVector { pan, tilt, zoom }, Some(MOVE_TIMEOUT))
                .await
                .map(|()| None),
            PtzCommand::Stop => d.ptz_stop(p).await.map(|()| None),
            PtzCommand::GotoPreset { token } => d.ptz_goto_preset(p, &token).await.map(|()| None),
            PtzCommand::SetPreset { name } => d.ptz_set_preset(p, &name, None).await.map(Some),
        };
        match r {
            Ok(v) => Ok(v),
            Err(e) => {
                // A SOAP fault is the camera's answer (bad token…): keep the connection.
                if !matches!(e, vigie_onvif::OnvifError::Fault { .. }) {
                    self.forget(camera).await;
                }
                Err(PtzError::Camera(e.to_string()))
            }
        }
    }
}

impl PtzControl for OnvifPtz {
    fn command<'a>(
        &'a self,
        camera: &'a str,
        user: &'a str,
        cmd: PtzCommand,
    ) -> BoxFuture<'a, Result<Option<String>, PtzError>> {
        Box::pin(async move {
            if !self.cameras.contains_key(camera) {
                return Err(PtzError::NotOnvif(camera.to_owned()));
            }
            self.locks
                .acquire(camera, user, Instant::now())
                .map_err(|l| PtzError::Locked {
                    camera: camera.to_owned(),
                    holder: l.holder,
                    expires_in_s: l.expires_in_s,
                })?;
            self.run(camera, cmd).await
        })
    }

    fn state<'a>(&'a self, camera: &'a str) -> BoxFuture<'a, Result<PtzState, PtzError>> {
        Box::pin(async move {
            let c = self.connected(camera).await?;
            let st = match c.device.ptz_status(&c.profile).await {
                Ok(s) => s,
                Err(e) => {
                    self.forget(camera).await;
                    return Err(PtzError::Camera(e.to_string()));
                }
            };
            Ok(PtzState {
                position: st.position.map(|p| [p.pan, p.tilt, p.zoom]),
                moving: st.moving,
                lock: self.locks.holder(camera, Instant::now()),
            })
        })
    }

    fn presets<'a>(&'a self, camera: &'a str) -> BoxFuture<'a, Result<Vec<PtzPreset>, PtzError>> {
        Box::pin(async move {
            let c = self.connected(camera).await?;
            match c.device.ptz_presets(&c.profile).await {
                Ok(ps) => Ok(ps
                    .into_iter()
                    .map(|p| PtzPreset {
                        token: p.token,
                        name: p.name,
                    })
                    .collect()),
                Err(e) => {
                    self.forget(camera).await;
                    Err(PtzError::Camera(e.to_string()))
                }
            }
        })
    }

    fn release(&self, camera: &str, user: &str) {
        self.locks.release(camera, user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_operator_at_a_time_until_the_lock_expires() {
        let l = Locks::default();
        let t = Instant::now();
        l.acquire("dome", "alice", t).unwrap();
        l.acquire("dome", "alice", t + Duration::from_secs(5))
            .unwrap();
        let held = l
            .acquire("dome", "bob", t + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(held.holder, "alice");
        assert_eq!(held.expires_in_s, 25);
        // Another camera is free.
        l.acquire("other", "bob", t).unwrap();
        // Expired: bob takes it.
        l.acquire("dome", "bob", t + Duration::from_secs(36))
            .unwrap();
        assert_eq!(
            l.holder("dome", t + Duration::from_secs(37))
                .unwrap()
                .holder,
            "bob"
        );
        // Only the holder releases.
        l.release("dome", "alice");
        assert!(l.holder("dome", t + Duration::from_secs(37)).is_some());
        l.release("dome", "bob");
        assert!(l.holder("dome", t + Duration::from_secs(37)).is_none());
    }
}

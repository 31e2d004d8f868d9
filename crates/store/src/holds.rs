//! Legal holds: time ranges of a stream placed under judicial protection.
//!
//! A segment overlapping an active hold is never deleted, neither by age nor by the free-space
//! floor. When the floor cannot be reached because what is left is held, recording stops (every
//! writer ends its segment with reason `disk-full-held` and drops frames) rather than deleting
//! held footage; it resumes at the next key frame once space is available again.
//!
//! Holds live in the index database (tree `holds`, key = hold id) so that retention checks them
//! in the same place it reads segments. Placing and releasing are the API's to journal.

use serde::{Deserialize, Serialize};
use vigie_core::{StreamKey, Time90k};

use crate::{Inner, StoreError};

/// A legal hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub id: u64,
    pub camera: String,
    pub stream: String,
    pub start: Time90k,
    pub end: Time90k,
    /// Judicial procedure number (required).
    pub procedure: String,
    pub reason: String,
    pub created_by: String,
    pub created_at: Time90k,
    pub released: Option<Release>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub by: String,
    pub at: Time90k,
    pub reason: String,
}

impl Hold {
    pub fn active(&self) -> bool {
        self.released.is_none()
    }
    /// True when this active hold covers some of `[start, end)` of `key`.
    pub fn covers(&self, key: &StreamKey, start: Time90k, end: Time90k) -> bool {
        self.active()
            && self.camera == key.camera
            && self.stream == key.stream
            && self.start < end
            && start < self.end
    }
}

/// What a caller asks for.
#[derive(Clone, Debug)]
pub struct NewHold {
    pub key: StreamKey,
    pub start: Time90k,
    pub end: Time90k,
    pub procedure: String,
    pub reason: String,
    pub created_by: String,
}

fn tree(inner: &Inner) -> Result<sled::Tree, StoreError> {
    Ok(inner.index()?.db.open_tree("holds")?)
}

fn decode(v: &[u8]) -> Result<Hold, StoreError> {
    Ok(postcard::from_bytes(v)?)
}

pub(crate) fn place(inner: &Inner, new: NewHold) -> Result<Hold, StoreError> {
    if new.end <= new.start {
        return Err(StoreError::Invalid(format!(
            "hold end {} is not after its start {}",
            new.end, new.start
        )));
    }
    let t = tree(inner)?;
    let id = inner.index()?.db.generate_id()? + 1;
    let hold = Hold {
        id,
        camera: new.key.camera,
        stream: new.key.stream,
        start: new.start,
        end: new.end,
        procedure: new.procedure,
        reason: new.reason,
        created_by: new.created_by,
        created_at: inner.clock.now(),
        released: None,
    };
    t.insert(id.to_be_bytes(), postcard::to_allocvec(&hold)?)?;
    t.flush()?;
    tracing::info!(hold = id, camera = %hold.camera, stream = %hold.stream, start = %hold.start, end = %hold.end, procedure = %hold.procedure, "legal hold placed");
    Ok(hold)
}

/// Releases an active hold; `Ok(None)` if there is no such hold, an error if already released.
pub(crate) fn release(
    inner: &Inner,
    id: u64,
    by: &str,
    reason: &str,
) -> Result<Option<Hold>, StoreError> {
    let t = tree(inner)?;
    let Some(v) = t.get(id.to_be_bytes())? else {
        return Ok(None);
    };
    let mut hold = decode(&v)?;
    if hold.released.is_some() {
        return Ok(Some(hold));
    }
    hold.released = Some(Release {
        by: by.to_owned(),
        at: inner.clock.now(),
        reason: reason.to_owned(),
    });
    t.insert(id.to_be_bytes(), postcard::to_allocvec(&hold)?)?;
    t.flush()?;
    tracing::info!(hold = id, by, "legal hold released");
    Ok(Some(hold))
}

pub(crate) fn list(inner: &Inner) -> Result<Vec<Hold>, StoreError> {
    tree(inner)?.iter().values().map(|v| decode(&v?)).collect()
}

/// Active holds only (what retention consults).
pub(crate) fn active(inner: &Inner) -> Result<Vec<Hold>, StoreError> {
    Ok(list(inner)?.into_iter().filter(Hold::active).collect())
}

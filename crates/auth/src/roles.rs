//! Roles, permissions and scopes: the one rights table ([`allows`]) and the commune/camera scope
//! of a user ([`Scope`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a user is for. Each user has exactly one role; its rights are [`allows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including user management.
    Admin,
    /// Status, live, playback, stills, exports, holds, journal (within scope).
    Supervisor,
    /// Status, live, playback, stills (within scope).
    Operator,
    /// Status, playback, stills, exports, holds (within scope); no live view.
    Investigator,
    /// Status list, journal and register, lists of holds and exports; no footage at all.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Supervisor,
        Role::Operator,
        Role::Investigator,
        Role::Auditor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Supervisor => "supervisor",
            Role::Operator => "operator",
            Role::Investigator => "investigator",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown role {s:?} (one of: admin, supervisor, operator, investigator, auditor)"
                )
            })
    }
}

/// One kind of action. Routes map to exactly one permission (see the API's route table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Camera list and status, health details, metrics.
    ViewStatus,
    /// Live view (WebSocket).
    Live,
    /// Recordings listing and video.mp4.
    Playback,
    /// JPEG stills (snapshot.jpg).
    Still,
    /// Create evidence exports and download their packages.
    Export,
    /// Place legal holds, and release the holds one placed.
    Hold,
    /// Release a legal hold placed by someone else.
    ReleaseAnyHold,
    /// List holds and exports (their metadata, not the footage).
    ViewEvidence,
    /// Read the access journal and the legal register.
    Audit,
    /// Create, change and disable users; create and revoke API tokens.
    ManageUsers,
    /// Steer a camera (pan, tilt, zoom, presets).
    Ptz,
}

impl Permission {
    pub const ALL: [Permission; 11] = [
        Permission::ViewStatus,
        Permission::Live,
        Permission::Playback,
        Permission::Still,
        Permission::Export,
        Permission::Hold,
        Permission::ReleaseAnyHold,
        Permission::ViewEvidence,
        Permission::Audit,
        Permission::ManageUsers,
        Permission::Ptz,
    ];

    /// Does this permission give access to footage (images or video)?
    pub fn is_footage(self) -> bool {
        matches!(
            self,
            Permission::Live | Permission::Playback | Permission::Still | Permission::Export
        )
    }
}

/// The rights table: may `role` do `perm` (on cameras within its scope)?
///
/// | permission | admin | supervisor | operator | investigator | auditor |
/// |---|---|---|---|---|---|
/// | ViewStatus | ✓ | ✓ | ✓ | ✓ | ✓ |
/// | Live | ✓ | ✓ | ✓ | | |
/// | Playback | ✓ | ✓ | ✓ | ✓ | |
/// | Still | ✓ | ✓ | ✓ | ✓ | |
/// | Export | ✓ | ✓ | | ✓ | |
/// | Hold | ✓ | ✓ | | ✓ | |
/// | ReleaseAnyHold | ✓ | ✓ | | | |
/// | ViewEvidence | ✓ | ✓ | | ✓ | ✓ |
/// | Audit | ✓ | ✓ | | | ✓ |
/// | ManageUsers | ✓ | | | | |
/// | Ptz | ✓ | ✓ | ✓ | | |
pub fn allows(role: Role, perm: Permission) -> bool {
    use Permission::*;
    use Role::*;
    match role {
        Admin => true,
        Supervisor => !matches!(perm, ManageUsers),
        Operator => matches!(perm, ViewStatus | Live | Playback | Still | Ptz),
        Investigator => matches!(
            perm,
            ViewStatus | Playback | Still | Export | Hold | ViewEvidence
        ),
        Auditor => matches!(perm, ViewStatus | ViewEvidence | Audit),
    }
}

/// The communes a user may see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Communes {
    All,
    List(Vec<String>),
}

/// Where a user's rights apply: its communes, optionally narrowed to some cameras (a camera
/// must be both in a listed commune and in `cameras` when that is given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub communes: Communes,
    #[serde(default)]
    pub cameras: Option<Vec<String>>,
}

impl Scope {
    /// Every commune and every camera.
    pub fn all() -> Scope {
        Scope {
            communes: Communes::All,
            cameras: None,
        }
    }

    /// Is the camera `camera_id` of commune `commune_id` inside this scope?
    pub fn covers(&self, camera_id: &str, commune_id: &str) -> bool {
        let commune_ok = match &self.communes {
            Communes::All => true,
            Communes::List(l) => l.iter().any(|c| c == commune_id),
        };
        let camera_ok = self
            .cameras
            .as_ref()
            .is_none_or(|l| l.iter().any(|c| c == camera_id));
        commune_ok && camera_ok
    }

    /// Does this scope reach every camera (all communes, no camera list)?
    pub fn is_unrestricted(&self) -> bool {
        self.communes == Communes::All && self.cameras.is_none()
    }

    /// Is `other` inside this scope, whatever cameras the configuration holds now or later?
    /// Its communes must be among ours (or ours are all), and when we are narrowed to some
    /// cameras it must be narrowed to some of those. Structural on purpose: a scope of "all
    /// communes" also covers communes added later, so it is inside only an unrestricted one.
    pub fn includes(&self, other: &Scope) -> bool {
        let communes_ok = match (&self.communes, &other.communes) {
            (Communes::All, _) => true,
            (Communes::List(_), Communes::All) => false,
            (Communes::List(mine), Communes::List(theirs)) => {
                theirs.iter().all(|c| mine.contains(c))
            }
        };
        let cameras_ok = match (&self.cameras, &other.cameras) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => theirs.iter().all(|c| mine.contains(c)),
        };
        communes_ok && cameras_ok
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.communes {
            Communes::All => f.write_str("all communes")?,
            Communes::List(l) => write!(f, "communes {}", l.join(","))?,
        }
        if let Some(c) = &self.cameras {
            write!(f, "; cameras {}", c.join(","))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_table() {
        use Permission::*;
        // Only admins manage users.
        for r in Role::ALL {
            assert_eq!(allows(r, ManageUsers), r == Role::Admin, "{r}");
            assert!(allows(r, ViewStatus), "{r}");
        }
        // The auditor never reaches footage.
        for p in Permission::ALL {
            if p.is_footage() {
                assert!(!allows(Role::Auditor, p), "auditor {p:?}");
            }
        }
        assert!(allows(Role::Auditor, Audit));
        assert!(allows(Role::Auditor, ViewEvidence));
        assert!(!allows(Role::Auditor, Hold));
        // Investigators: no live.
        assert!(!allows(Role::Investigator, Live));
        assert!(allows(Role::Investigator, Export));
        assert!(allows(Role::Investigator, Playback));
        // Operators: no exports, holds or journal.
        for p in [Export, Hold, Audit, ViewEvidence] {
            assert!(!allows(Role::Operator, p), "operator {p:?}");
        }
        assert!(allows(Role::Operator, Live));
        assert!(allows(Role::Supervisor, Audit));
        assert!(allows(Role::Supervisor, Live));
        // Releasing someone else's hold: supervisors and admins only.
        for r in Role::ALL {
            assert_eq!(
                allows(r, ReleaseAnyHold),
                matches!(r, Role::Admin | Role::Supervisor),
                "{r}"
            );
        }
    }

    #[test]
    fn roles_parse_and_print() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn scope_checks() {
        let all = Scope::all();
        assert!(all.covers("cam-a", "nord"));
        assert!(all.is_unrestricted());
        let nord = Scope {
            communes: Communes::List(vec!["nord".into()]),
            cameras: None,
        };
        assert!(nord.covers("cam-a", "nord"));
        assert!(!nord.covers("cam-b", "sud"));
        let one_cam = Scope {
            communes: Communes::List(vec!["nord".into()]),
            cameras: Some(vec!["cam-a".into()]),
        };
        assert!(one_cam.covers("cam-a", "nord"));
        assert!(!one_cam.covers("cam-c", "nord"));
        // A camera list does not widen the communes.
        assert!(!one_cam.covers("cam-a", "sud"));
        let cams_any_commune = Scope {
            communes: Communes::All,
            cameras: Some(vec!["cam-b".into()]),
        };
        assert!(cams_any_commune.covers("cam-b", "sud"));
        assert!(!cams_any_commune.covers("cam-a", "nord"));
        assert!(!cams_any_commune.is_unrestricted());
        assert_eq!(one_cam.to_string(), "communes nord; cameras cam-a");

        // Inclusion: what a scoped admin may grant or manage.
        assert!(all.includes(&nord) && all.includes(&one_cam) && all.includes(&all));
        assert!(nord.includes(&one_cam) && nord.includes(&nord));
        assert!(
            !nord.includes(&all),
            "a scoped admin cannot grant all communes"
        );
        assert!(!one_cam.includes(&nord), "nor widen a camera list");
        assert!(!nord.includes(&cams_any_commune));
        assert!(!cams_any_commune.includes(&all));
        let both = Scope {
            communes: Communes::List(vec!["nord".into(), "sud".into()]),
            cameras: None,
        };
        assert!(both.includes(&nord) && !nord.includes(&both));
    }
}

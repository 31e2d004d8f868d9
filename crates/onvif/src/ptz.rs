//! PTZ operations on a [`Device`]: continuous move, stop, absolute and relative moves, status,
//! presets (list, go to, set). Coordinates are ONVIF's generic spaces (pan/tilt in [-1, 1],
//! zoom in [0, 1]; velocities in [-1, 1]); values are clamped before they leave.

use std::time::Duration;

use crate::device::Device;
use crate::error::{OnvifError, Result};
use crate::soap::{child, children, esc, find, text, with_body, xs_duration};

/// A pan/tilt/zoom vector: a position, a translation or a velocity.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PtzVector {
    /// Pan (x).
    pub pan: f64,
    /// Tilt (y).
    pub tilt: f64,
    /// Zoom.
    pub zoom: f64,
}

impl PtzVector {
    fn clamped(self, zoom_lo: f64) -> PtzVector {
        let c = |v: f64, lo: f64| if v.is_finite() { v.clamp(lo, 1.0) } else { 0.0 };
        PtzVector {
            pan: c(self.pan, -1.0),
            tilt: c(self.tilt, -1.0),
            zoom: c(self.zoom, zoom_lo),
        }
    }

    fn xml(self) -> String {
        format!(
            r#"<tt:PanTilt x="{}" y="{}"/><tt:Zoom x="{}"/>"#,
            self.pan, self.tilt, self.zoom
        )
    }
}

/// `GetStatus`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PtzStatus {
    /// Where the head points (if the camera reports it).
    pub position: Option<PtzVector>,
    /// Whether pan/tilt or zoom is moving.
    pub moving: bool,
}

/// A stored preset.
#[derive(Clone, Debug, PartialEq)]
pub struct Preset {
    /// Token (what `GotoPreset` takes).
    pub token: String,
    /// Name.
    pub name: String,
    /// Position, if reported.
    pub position: Option<PtzVector>,
}

fn vector(n: Option<roxmltree::Node<'_, '_>>) -> Option<PtzVector> {
    let n = n?;
    let num = |e: Option<roxmltree::Node<'_, '_>>, a: &str| {
        e.and_then(|e| e.attribute(a))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite())
    };
    let pt = child(n, "PanTilt");
    let z = child(n, "Zoom");
    if pt.is_none() && z.is_none() {
        return None;
    }
    Some(PtzVector {
        pan: num(pt, "x").unwrap_or(0.0),
        tilt: num(pt, "y").unwrap_or(0.0),
        zoom: num(z, "x").unwrap_or(0.0),
    })
}

impl Device {
    fn ptz_url(&self, op: &'static str) -> Result<String> {
        self.services
            .ptz
            .clone()
            .ok_or_else(|| OnvifError::NotSupported {
                op,
                url: self.url.clone(),
                service: "PTZ",
            })
    }

    async fn ptz_call(&self, op: &'static str, body: String) -> Result<(String, String)> {
        let url = self.ptz_url(op)?;
        let a = self.call(op, &url, &body).await?;
        Ok((url, a))
    }

    /// `ContinuousMove` at `velocity` (each axis in [-1, 1]); the camera stops by itself after
    /// `timeout` if given (a safety net should the stop be lost).
    pub async fn ptz_continuous_move(
        &self,
        profile: &str,
        velocity: PtzVector,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let v = velocity.clamped(-1.0);
        let t = timeout.map_or(String::new(), |t| {
            format!("<tptz:Timeout>{}</tptz:Timeout>", xs_duration(t))
        });
        self.ptz_call(
            "ContinuousMove",
            format!(
                "<tptz:ContinuousMove><tptz:ProfileToken>{}</tptz:ProfileToken><tptz:Velocity>{}</tptz:Velocity>{t}</tptz:ContinuousMove>",
                esc(profile),
                v.xml()
            ),
        )
        .await
        .map(drop)
    }

    /// `Stop` (pan/tilt and zoom).
    pub async fn ptz_stop(&self, profile: &str) -> Result<()> {
        self.ptz_call(
            "Stop",
            format!(
                "<tptz:Stop><tptz:ProfileToken>{}</tptz:ProfileToken><tptz:PanTilt>true</tptz:PanTilt><tptz:Zoom>true</tptz:Zoom></tptz:Stop>",
                esc(profile)
            ),
        )
        .await
        .map(drop)
    }

    /// `AbsoluteMove` to `position`.
    pub async fn ptz_absolute_move(&self, profile: &str, position: PtzVector) -> Result<()> {
        self.ptz_call(
            "AbsoluteMove",
            format!(
                "<tptz:AbsoluteMove><tptz:ProfileToken>{}</tptz:ProfileToken><tptz:Position>{}</tptz:Position></tptz:AbsoluteMove>",
                esc(profile),
                position.clamped(0.0).xml()
            ),
        )
        .await
        .map(drop)
    }

    /// `RelativeMove` by `translation`.
    pub async fn ptz_relative_move(&self, profile: &str, translation: PtzVector) -> Result<()> {
        let t = PtzVector {
            pan: translation.pan.clamp(-2.0, 2.0),
            tilt: translation.tilt.clamp(-2.0, 2.0),
            zoom: translation.zoom.clamp(-1.0, 1.0),
        };
        let t = if t.pan.is_finite() && t.tilt.is_finite() && t.zoom.is_finite() {
            t
        } else {
            PtzVector::default()
        };
        self.ptz_call(
            "RelativeMove",
            format!(
                "<tptz:RelativeMove><tptz:ProfileToken>{}</tptz:ProfileToken><tptz:Translation>{}</tptz:Translation></tptz:RelativeMove>",
                esc(profile),
                t.xml()
            ),
        )
        .await
        .map(drop)
    }

    /// `GetStatus`.
    pub async fn ptz_status(&self, profile: &str) -> Result<PtzStatus> {
        const OP: &str = "GetStatus";
        let (url, a) = self
            .ptz_call(
                OP,
                format!(
                    "<tptz:GetStatus><tptz:ProfileToken>{}</tptz:ProfileToken></tptz:GetStatus>",
                    esc(profile)
                ),
            )
            .await?;
        with_body(OP, &url, &a, |b| {
            let st = find(b, "PTZStatus").ok_or("no PTZStatus")?;
            let moving = child(st, "MoveStatus").is_some_and(|m| {
                m.children()
                    .filter(|c| c.is_element())
                    .any(|c| text(Some(c)).eq_ignore_ascii_case("MOVING"))
            });
            Ok(PtzStatus {
                position: vector(child(st, "Position")),
                moving,
            })
        })
    }

    /// `GetPresets`.
    pub async fn ptz_presets(&self, profile: &str) -> Result<Vec<Preset>> {
        const OP: &str = "GetPresets";
        let (url, a) = self
            .ptz_call(
                OP,
                format!(
                    "<tptz:GetPresets><tptz:ProfileToken>{}</tptz:ProfileToken></tptz:GetPresets>",
                    esc(profile)
                ),
            )
            .await?;
        with_body(OP, &url, &a, |b| {
            let r = child(b, "GetPresetsResponse").ok_or("no GetPresetsResponse")?;
            Ok(children(r, "Preset")
                .map(|p| Preset {
                    token: p.attribute("token").unwrap_or("").to_owned(),
                    name: text(child(p, "Name")),
                    position: vector(child(p, "PTZPosition")),
                })
                .filter(|p| !p.token.is_empty())
                .collect())
        })
    }

    /// `GotoPreset`.
    pub async fn ptz_goto_preset(&self, profile: &str, token: &str) -> Result<()> {
        self.ptz_call(
            "GotoPreset",
            format!(
                "<tptz:GotoPreset><tptz:ProfileToken>{}</tptz:ProfileToken><tptz:PresetToken>{}</tptz:PresetToken></tptz:GotoPreset>",
                esc(profile),
                esc(token)
            ),
        )
        .await
        .map(drop)
    }

    /// `SetPreset`: stores the current position as `name` (overwriting preset `token` if
    /// given); returns the preset's token.
    pub async fn ptz_set_preset(
        &self,
        profile: &str,
        name: &str,
        token: Option<&str>,
    ) -> Result<String> {
        const OP: &str = "SetPreset";
        let tok = token.map_or(String::new(), |t| {
            format!("<tptz:PresetToken>{}</tptz:PresetToken>", esc(t))
        });
        let (url, a) = self
            .ptz_call(
                OP,
                format!(
                    "<tptz:SetPreset><tptz:ProfileToken>{}</tptz:ProfileToken><tptz:PresetName>{}</tptz:PresetName>{tok}</tptz:SetPreset>",
                    esc(profile),
                    esc(name)
                ),
            )
            .await?;
        with_body(OP, &url, &a, |b| {
            let t = text(find(b, "PresetToken"));
            if t.is_empty() {
                Err("no PresetToken".into())
            } else {
                Ok(t)
            }
        })
    }
}

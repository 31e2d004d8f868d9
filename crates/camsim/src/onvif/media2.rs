//! Media2 privacy masks of the simulated device (`/onvif/media2`): `GetServiceCapabilities`
//! (`Mask="true"`), `GetVideoSourceConfigurations` (one: `vsc0`), `GetMasks`, `CreateMask`,
//! `SetMask`, `DeleteMask`. The masks are kept (bounded) and reported to tests through
//! [`super::OnvifHandle::masks`] and `GET /control/masks`; they do not alter the picture (the
//! fixtures are served pre-encoded).
//!
//! The whole service can be switched off ([`super::OnvifHandle::set_media2`],
//! `POST /control/media2/off`): `GetServices` then omits it and its operations answer
//! `ter:ActionNotSupported`, as on a camera with Media (ver10) only.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use super::soap::{child, esc, text};
use super::{Fault, invalid, lock};

/// Namespace of the Media2 service.
pub const NS_MEDIA2: &str = "http://www.onvif.org/ver20/media/wsdl";
/// The one video source configuration of the simulated device.
pub const VSC_TOKEN: &str = "vsc0";
/// Masks the device holds at most (real cameras: 4–32).
pub const MAX_MASKS: usize = 32;
/// Vertices per mask at most.
pub const MAX_POINTS: usize = 32;

/// A mask held by the device, as the client sent it (ONVIF normalised coordinates: x, y in
/// [-1, 1], y up).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StoredMask {
    pub token: String,
    pub configuration_token: String,
    pub points: Vec<(f64, f64)>,
    pub mask_type: String,
    pub enabled: bool,
}

/// The service's state.
pub(crate) struct Media2 {
    pub(crate) enabled: AtomicBool,
    masks: Mutex<(u64, Vec<StoredMask>)>,
}

impl Default for Media2 {
    fn default() -> Self {
        Media2 {
            enabled: AtomicBool::new(true),
            masks: Mutex::new((0, Vec::new())),
        }
    }
}

impl Media2 {
    pub(crate) fn masks(&self) -> Vec<StoredMask> {
        lock(&self.masks).1.clone()
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled.load(Relaxed)
    }
}

fn tr2(op: &str, inner: &str) -> String {
    format!("<tr2:{op} xmlns:tr2=\"{NS_MEDIA2}\">{inner}</tr2:{op}>")
}

/// Reads a `Mask` element (of `CreateMask` / `SetMask`).
fn parse_mask(m: roxmltree::Node<'_, '_>) -> Result<StoredMask, Fault> {
    let configuration_token = text(child(m, "ConfigurationToken"));
    if configuration_token != VSC_TOKEN {
        return Err(Fault::Sender(
            "ter:NoConfig",
            format!("no video source configuration {configuration_token:?}"),
        ));
    }
    let poly = child(m, "Polygon").ok_or_else(|| invalid("the mask has no Polygon"))?;
    let mut points = Vec::new();
    for p in poly
        .children()
        .filter(|n| n.is_element() && n.tag_name().name() == "Point")
    {
        let num = |a: &str| {
            p.attribute(a)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite() && (-1.0..=1.0).contains(v))
                .ok_or_else(|| invalid(format!("Point {a} is not a number in [-1, 1]")))
        };
        points.push((num("x")?, num("y")?));
        if points.len() > MAX_POINTS {
            return Err(invalid(format!("more than {MAX_POINTS} points")));
        }
    }
    if points.len() < 3 {
        return Err(invalid("a mask polygon needs at least 3 points"));
    }
    let mask_type = text(child(m, "Type"));
    if !matches!(mask_type.as_str(), "Color" | "Pixelated" | "Blurred") {
        return Err(invalid(format!("mask Type {mask_type:?} is not supported")));
    }
    Ok(StoredMask {
        token: m.attribute("token").unwrap_or("").to_owned(),
        configuration_token,
        points,
        mask_type,
        enabled: text(child(m, "Enabled")) != "false",
    })
}

fn mask_xml(m: &StoredMask) -> String {
    let mut s = format!(
        "<tr2:Masks token=\"{}\"><tr2:ConfigurationToken>{}</tr2:ConfigurationToken><tr2:Polygon>",
        esc(&m.token),
        esc(&m.configuration_token)
    );
    for (x, y) in &m.points {
        s.push_str(&format!("<tt:Point x=\"{x}\" y=\"{y}\"/>"));
    }
    s.push_str(&format!(
        "</tr2:Polygon><tr2:Type>{}</tr2:Type><tr2:Color X=\"16\" Y=\"128\" Z=\"128\"/><tr2:Enabled>{}</tr2:Enabled></tr2:Masks>",
        esc(&m.mask_type),
        m.enabled
    ));
    s
}

/// One Media2 operation.
pub(super) fn operation(
    state: &Media2,
    op: &str,
    el: roxmltree::Node<'_, '_>,
) -> Result<String, Fault> {
    if !state.is_enabled() {
        return Err(Fault::NotSupported(format!("Media2 {op}")));
    }
    Ok(match op {
        "GetServiceCapabilities" => tr2(
            "GetServiceCapabilitiesResponse",
            "<tr2:Capabilities SnapshotUri=\"false\" Rotation=\"false\" VideoSourceMode=\"false\" OSD=\"false\" Mask=\"true\" SourceMask=\"false\"><tr2:ProfileCapabilities MaximumNumberOfProfiles=\"2\"/><tr2:StreamingCapabilities RTSPStreaming=\"true\"/></tr2:Capabilities>",
        ),
        "GetVideoSourceConfigurations" => tr2(
            "GetVideoSourceConfigurationsResponse",
            &format!(
                "<tr2:Configurations token=\"{VSC_TOKEN}\"><tt:Name>{VSC_TOKEN}</tt:Name><tt:UseCount>2</tt:UseCount><tt:SourceToken>vs0</tt:SourceToken><tt:Bounds x=\"0\" y=\"0\" width=\"1920\" height=\"1080\"/></tr2:Configurations>"
            ),
        ),
        "GetMasks" => {
            let token = child(el, "Token").map(|t| text(Some(t)));
            let conf = child(el, "ConfigurationToken").map(|t| text(Some(t)));
            let g = lock(&state.masks);
            if let Some(t) = &token
                && !g.1.iter().any(|m| &m.token == t)
            {
                return Err(Fault::Sender("ter:NoConfig", format!("no mask {t:?}")));
            }
            let mut s = String::new();
            for m in g.1.iter().filter(|m| {
                token.as_ref().is_none_or(|t| &m.token == t)
                    && conf.as_ref().is_none_or(|c| &m.configuration_token == c)
            }) {
                s.push_str(&mask_xml(m));
            }
            tr2("GetMasksResponse", &s)
        }
        "CreateMask" => {
            let m = child(el, "Mask").ok_or_else(|| invalid("CreateMask without Mask"))?;
            let mut mask = parse_mask(m)?;
            let mut g = lock(&state.masks);
            if g.1.len() >= MAX_MASKS {
                return Err(Fault::Sender(
                    "ter:MaxMasks",
                    format!("the device holds at most {MAX_MASKS} masks"),
                ));
            }
            g.0 += 1;
            mask.token = format!("mask{}", g.0);
            let t = mask.token.clone();
            g.1.push(mask);
            tr2(
                "CreateMaskResponse",
                &format!("<tr2:Token>{}</tr2:Token>", esc(&t)),
            )
        }
        "SetMask" => {
            let m = child(el, "Mask").ok_or_else(|| invalid("SetMask without Mask"))?;
            let mask = parse_mask(m)?;
            let mut g = lock(&state.masks);
            let slot =
                g.1.iter_mut()
                    .find(|x| x.token == mask.token)
                    .ok_or_else(|| {
                        Fault::Sender("ter:NoConfig", format!("no mask {:?}", mask.token))
                    })?;
            *slot = mask;
            tr2("SetMaskResponse", "")
        }
        "DeleteMask" => {
            let t = text(child(el, "Token"));
            let mut g = lock(&state.masks);
            let before = g.1.len();
            g.1.retain(|m| m.token != t);
            if g.1.len() == before {
                return Err(Fault::Sender("ter:NoConfig", format!("no mask {t:?}")));
            }
            tr2("DeleteMaskResponse", "")
        }
        other => return Err(Fault::NotSupported(format!("Media2 {other}"))),
    })
}

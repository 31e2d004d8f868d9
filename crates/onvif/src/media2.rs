//! Media2 (ONVIF Media Service ver20) privacy masks on a [`Device`]: finding the service
//! (`GetServices`) and its mask support (`GetServiceCapabilities`, `Mask="true"`), the video
//! source configurations masks attach to, and `GetMasks` / `CreateMask` / `SetMask` /
//! `DeleteMask`.
//!
//! Coordinates: ONVIF's normalised space, x and y in [-1, 1], (-1, -1) the bottom-left corner
//! (y up). [`picture_to_onvif`] converts from Vigie's picture fractions ((0, 0) top-left, y
//! down). Does not own: which masks a camera should have (the configuration) or how a mismatch
//! is reported (the binary).

use crate::device::Device;
use crate::error::{OnvifError, Result};
use crate::soap::{child, children, esc, find, text, with_body};

/// Namespace of the Media2 service.
pub const NS_MEDIA2: &str = "http://www.onvif.org/ver20/media/wsdl";
/// Most masks read from one answer (a camera listing more is malformed).
const MAX_MASKS: usize = 256;
/// Most points read per mask.
const MAX_POINTS: usize = 256;

/// A mask as the camera holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct OnvifMask {
    /// The camera's token (what `DeleteMask` / `SetMask` take); empty in a `CreateMask`.
    pub token: String,
    /// The video source configuration it applies to.
    pub configuration_token: String,
    /// Vertices in ONVIF normalised coordinates (x, y in [-1, 1], y up).
    pub points: Vec<(f64, f64)>,
    /// `Color`, `Pixelated`, `Blurred`.
    pub mask_type: String,
    /// Whether the camera applies it.
    pub enabled: bool,
}

/// Picture fractions ((0, 0) top-left, y down, in [0, 1]) → ONVIF normalised ([-1, 1], y up).
pub fn picture_to_onvif([x, y]: [f64; 2]) -> (f64, f64) {
    (x * 2.0 - 1.0, 1.0 - y * 2.0)
}

/// The Media2 service of a device, found by [`Device::media2`].
#[derive(Debug)]
pub struct Media2<'a> {
    dev: &'a Device,
    url: String,
    masks: bool,
}

fn tr2(op: &str, inner: &str) -> String {
    format!("<tr2:{op} xmlns:tr2=\"{NS_MEDIA2}\">{inner}</tr2:{op}>")
}

impl Device {
    /// Finds the Media2 service (`GetServices`) and whether it offers masks
    /// (`GetServiceCapabilities`). [`OnvifError::NotSupported`] when the camera has no Media2.
    pub async fn media2(&self) -> Result<Media2<'_>> {
        const OP: &str = "GetServices";
        let dev_url = self.services().device.clone();
        let a = self
            .call(
                OP,
                &dev_url,
                "<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability></tds:GetServices>",
            )
            .await?;
        let url = with_body(OP, &dev_url, &a, |b| {
            let r = child(b, "GetServicesResponse").ok_or("no GetServicesResponse")?;
            Ok(children(r, "Service")
                .find(|s| text(child(*s, "Namespace")) == NS_MEDIA2)
                .map(|s| text(child(s, "XAddr"))))
        })?;
        let url = match url {
            Some(u) if !u.is_empty() => u,
            Some(_) => {
                return Err(OnvifError::Malformed {
                    op: OP,
                    url: dev_url,
                    reason: "the Media2 service has no XAddr".into(),
                });
            }
            None => {
                return Err(OnvifError::NotSupported {
                    op: OP,
                    url: self.url().to_owned(),
                    service: "Media2",
                });
            }
        };
        if url::Url::parse(&url)
            .map(|u| u.scheme() != "http")
            .unwrap_or(true)
        {
            return Err(OnvifError::Malformed {
                op: OP,
                url: dev_url,
                reason: format!("the Media2 address {url:?} is not an http:// URL"),
            });
        }
        const CAPS: &str = "GetServiceCapabilities";
        let a = self
            .call(CAPS, &url, &tr2("GetServiceCapabilities", ""))
            .await?;
        let masks = with_body(CAPS, &url, &a, |b| {
            let c = find(b, "Capabilities").ok_or("no Capabilities")?;
            Ok(matches!(c.attribute("Mask"), Some("true" | "1")))
        })?;
        Ok(Media2 {
            dev: self,
            url,
            masks,
        })
    }
}

impl Media2<'_> {
    /// The service address.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the camera says it supports masks.
    pub fn supports_masks(&self) -> bool {
        self.masks
    }

    fn need_masks(&self, op: &'static str) -> Result<()> {
        if self.masks {
            Ok(())
        } else {
            Err(OnvifError::NotSupported {
                op,
                url: self.url.clone(),
                service: "Media2 masks",
            })
        }
    }

    /// Tokens of the video source configurations (`GetVideoSourceConfigurations`).
    pub async fn video_source_configurations(&self) -> Result<Vec<String>> {
        const OP: &str = "GetVideoSourceConfigurations";
        let a = self
            .dev
            .call(OP, &self.url, &tr2("GetVideoSourceConfigurations", ""))
            .await?;
        with_body(OP, &self.url, &a, |b| {
            let r = child(b, "GetVideoSourceConfigurationsResponse")
                .ok_or("no GetVideoSourceConfigurationsResponse")?;
            let mut out = Vec::new();
            for c in children(r, "Configurations") {
                let t = c.attribute("token").unwrap_or("");
                if t.is_empty() {
                    return Err("a video source configuration has no token".into());
                }
                out.push(t.to_owned());
            }
            Ok(out)
        })
    }

    /// `GetMasks` of one video source configuration (all of them with `None`).
    pub async fn masks(&self, configuration_token: Option<&str>) -> Result<Vec<OnvifMask>> {
        const OP: &str = "GetMasks";
        self.need_masks(OP)?;
        let inner = configuration_token
            .map(|c| {
                format!(
                    "<tr2:ConfigurationToken>{}</tr2:ConfigurationToken>",
                    esc(c)
                )
            })
            .unwrap_or_default();
        let a = self
            .dev
            .call(OP, &self.url, &tr2("GetMasks", &inner))
            .await?;
        parse_get_masks(&self.url, &a)
    }

    /// `CreateMask`: a black (`Color`) enabled mask on `configuration_token`; the new token.
    pub async fn create_mask(
        &self,
        configuration_token: &str,
        points: &[(f64, f64)],
    ) -> Result<String> {
        const OP: &str = "CreateMask";
        self.need_masks(OP)?;
        let body = tr2(
            "CreateMask",
            &mask_xml("", configuration_token, points).replacen("<tr2:Masks", "<tr2:Mask", 1),
        )
        .replace("</tr2:Masks>", "</tr2:Mask>");
        let a = self.dev.call(OP, &self.url, &body).await?;
        with_body(OP, &self.url, &a, |b| {
            let r = child(b, "CreateMaskResponse").ok_or("no CreateMaskResponse")?;
            let t = text(child(r, "Token"));
            if t.is_empty() {
                return Err("no Token".into());
            }
            Ok(t)
        })
    }

    /// `SetMask`: replaces the polygon of mask `token`.
    pub async fn set_mask(
        &self,
        token: &str,
        configuration_token: &str,
        points: &[(f64, f64)],
    ) -> Result<()> {
        const OP: &str = "SetMask";
        self.need_masks(OP)?;
        let body = tr2(
            "SetMask",
            &mask_xml(token, configuration_token, points).replacen("<tr2:Masks", "<tr2:Mask", 1),
        )
        .replace("</tr2:Masks>", "</tr2:Mask>");
        let a = self.dev.call(OP, &self.url, &body).await?;
        with_body(OP, &self.url, &a, |b| {
            child(b, "SetMaskResponse").ok_or("no SetMaskResponse")?;
            Ok(())
        })
    }

    /// `DeleteMask`.
    pub async fn delete_mask(&self, token: &str) -> Result<()> {
        const OP: &str = "DeleteMask";
        self.need_masks(OP)?;
        let body = tr2(
            "DeleteMask",
            &format!("<tr2:Token>{}</tr2:Token>", esc(token)),
        );
        let a = self.dev.call(OP, &self.url, &body).await?;
        with_body(OP, &self.url, &a, |b| {
            child(b, "DeleteMaskResponse").ok_or("no DeleteMaskResponse")?;
            Ok(())
        })
    }
}

fn mask_xml(token: &str, configuration_token: &str, points: &[(f64, f64)]) -> String {
    let tok = if token.is_empty() {
        String::new()
    } else {
        format!(" token=\"{}\"", esc(token))
    };
    let mut s = format!(
        "<tr2:Masks{tok}><tr2:ConfigurationToken>{}</tr2:ConfigurationToken><tr2:Polygon>",
        esc(configuration_token)
    );
    for (x, y) in points {
        let c = |v: f64| {
            if v.is_finite() {
                v.clamp(-1.0, 1.0)
            } else {
                0.0
            }
        };
        s.push_str(&format!(
            "<tt:Point x=\"{:.6}\" y=\"{:.6}\"/>",
            c(*x),
            c(*y)
        ));
    }
    // Black in YCbCr (the colour space ONVIF's `Color` defaults to).
    s.push_str("</tr2:Polygon><tr2:Type>Color</tr2:Type><tr2:Color X=\"16\" Y=\"128\" Z=\"128\"/><tr2:Enabled>true</tr2:Enabled></tr2:Masks>");
    s
}

/// A `GetMasksResponse` envelope → the masks (bounded; every point a number).
fn parse_get_masks(url: &str, answer: &str) -> Result<Vec<OnvifMask>> {
    with_body("GetMasks", url, answer, |b| {
        let r = child(b, "GetMasksResponse").ok_or("no GetMasksResponse")?;
        let mut out = Vec::new();
        for m in children(r, "Masks") {
            if out.len() >= MAX_MASKS {
                return Err(format!("more than {MAX_MASKS} masks"));
            }
            out.push(parse_mask(m)?);
        }
        Ok(out)
    })
}

fn parse_mask(m: roxmltree::Node<'_, '_>) -> std::result::Result<OnvifMask, String> {
    let poly = child(m, "Polygon").ok_or("a mask has no Polygon")?;
    let mut points = Vec::new();
    for p in children(poly, "Point") {
        if points.len() >= MAX_POINTS {
            return Err(format!("a mask has more than {MAX_POINTS} points"));
        }
        let num = |a: &str| {
            p.attribute(a)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("a mask point's {a} is not a number"))
        };
        points.push((num("x")?, num("y")?));
    }
    Ok(OnvifMask {
        token: m.attribute("token").unwrap_or("").to_owned(),
        configuration_token: text(child(m, "ConfigurationToken")),
        points,
        mask_type: text(child(m, "Type")),
        enabled: text(child(m, "Enabled")) != "false",
    })
}

/// Whether two polygons are the same within `tolerance` (per coordinate, same start and
/// direction: cameras echo what they were sent).
pub fn same_polygon(a: &[(f64, f64)], b: &[(f64, f64)], tolerance: f64) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(p, q)| (p.0 - q.0).abs() <= tolerance && (p.1 - q.1).abs() <= tolerance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picture_fractions_map_to_onvif_space_y_up() {
        assert_eq!(picture_to_onvif([0.0, 0.0]), (-1.0, 1.0));
        assert_eq!(picture_to_onvif([1.0, 1.0]), (1.0, -1.0));
        assert_eq!(picture_to_onvif([0.5, 0.25]), (0.0, 0.5));
        assert!(same_polygon(&[(0.1, 0.2)], &[(0.1000004, 0.2)], 1e-4));
        assert!(!same_polygon(&[(0.1, 0.2)], &[(0.2, 0.2)], 1e-4));
    }

    #[test]
    fn hostile_get_masks_answers_are_malformed_errors_not_panics() {
        let env = |body: &str| {
            format!(
                "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"><s:Body>{body}</s:Body></s:Envelope>"
            )
        };
        let ok = env(
            "<GetMasksResponse><Masks token=\"m1\"><ConfigurationToken>v</ConfigurationToken><Polygon><Point x=\"0.5\" y=\"-0.5\"/><Point x=\"1\" y=\"1\"/><Point x=\"0\" y=\"1\"/></Polygon><Type>Color</Type><Enabled>false</Enabled></Masks></GetMasksResponse>",
        );
        let m = parse_get_masks("http://cam", &ok).unwrap();
        assert_eq!(m[0].token, "m1");
        assert_eq!(m[0].points[0], (0.5, -0.5));
        assert!(!m[0].enabled);
        let many_points: String = (0..300).map(|_| "<Point x=\"0\" y=\"0\"/>").collect();
        let many_masks: String = (0..300).map(|_| "<Masks><Polygon/></Masks>").collect();
        for (body, why) in [
            ("<Nothing/>".to_owned(), "no GetMasksResponse"),
            (
                "<GetMasksResponse><Masks><Polygon><Point x=\"NaN\" y=\"0\"/></Polygon></Masks></GetMasksResponse>".to_owned(),
                "x is not a number",
            ),
            (
                "<GetMasksResponse><Masks><Polygon><Point x=\"0\"/></Polygon></Masks></GetMasksResponse>".to_owned(),
                "y is not a number",
            ),
            ("<GetMasksResponse><Masks/></GetMasksResponse>".to_owned(), "no Polygon"),
            (
                format!("<GetMasksResponse><Masks><Polygon>{many_points}</Polygon></Masks></GetMasksResponse>"),
                "more than 256 points",
            ),
            (format!("<GetMasksResponse>{many_masks}</GetMasksResponse>"), "more than 256 masks"),
        ] {
            let e = parse_get_masks("http://cam", &env(&body)).unwrap_err();
            assert!(matches!(e, OnvifError::Malformed { .. }), "{e:?}");
            assert!(e.to_string().contains(why) && e.to_string().contains("GetMasks"), "{e}");
        }
        let e = parse_get_masks("http://cam", "<not xml").unwrap_err();
        assert!(matches!(e, OnvifError::Malformed { .. }), "{e:?}");
    }
}

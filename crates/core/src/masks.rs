//! Privacy masks (Code de la sécurité intérieure, L251-3: no view of the inside of dwellings nor,
//! specifically, of their entrances): the zones a prefectoral authorisation lists as masked,
//! declared per camera as polygons in normalised picture coordinates (`[0, 1]`, x to the right,
//! y down, (0, 0) the top-left corner).
//!
//! Owns: the configuration shape (`[[cameras.masks]]`), its validation, the geometry Vigie
//! needs to fill a mask on a picture ([`Mask::spans`]), and the stable hash of a camera's
//! set (journaled when it changes). Does not own: pushing masks to cameras (the binary, through
//! `vigie-onvif`), or painting pixels (`vigie-decode::masks`).

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// At most this many masks per camera (cameras offer 4–32; a longer list is a mistake).
pub const MAX_MASKS_PER_CAMERA: usize = 16;
/// At most this many vertices per mask (ONVIF cameras commonly accept 4–16).
pub const MAX_POINTS_PER_MASK: usize = 16;
/// A mask smaller than this fraction of the picture is degenerate (a line, a point, or
/// under one pixel of a 1080p picture: 1/(1920×1080) ≈ 4.8e-7).
pub const MIN_AREA: f64 = 1e-6;

/// One masked zone.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mask {
    /// What the authorisation calls it ("porte 12", "fenêtres n° 3–5").
    pub name: String,
    /// Vertices `[x, y]` in `[0, 1]`, in order (either direction); closed implicitly.
    pub points: Vec<[f64; 2]>,
}

impl Mask {
    /// The polygon's area as a fraction of the picture (shoelace formula).
    pub fn area(&self) -> f64 {
        let n = self.points.len();
        let mut a = 0.0;
        for i in 0..n {
            let [x0, y0] = self.points[i];
            let [x1, y1] = self.points[(i + 1) % n];
            a += x0 * y1 - x1 * y0;
        }
        (a / 2.0).abs()
    }

    /// What is wrong with this mask, if anything.
    pub fn problem(&self) -> Option<String> {
        let name = self.name.trim();
        if name.is_empty() {
            return Some("name is empty: give the zone's name from the authorisation".into());
        }
        if name.chars().count() > 64 {
            return Some(format!("name {name:?} is longer than 64 characters"));
        }
        let n = self.points.len();
        if n < 3 {
            return Some(format!(
                "mask {name:?} has {n} point(s): a polygon needs at least 3"
            ));
        }
        if n > MAX_POINTS_PER_MASK {
            return Some(format!(
                "mask {name:?} has {n} points: at most {MAX_POINTS_PER_MASK}"
            ));
        }
        for (j, [x, y]) in self.points.iter().enumerate() {
            if !(x.is_finite()
                && y.is_finite()
                && (0.0..=1.0).contains(x)
                && (0.0..=1.0).contains(y))
            {
                return Some(format!(
                    "mask {name:?} point {} [{x}, {y}] is outside the picture: coordinates are fractions of the width and height, from 0 to 1",
                    j + 1
                ));
            }
        }
        if self.area() < MIN_AREA {
            return Some(format!(
                "mask {name:?} is degenerate (its points are on a line or its area is under {MIN_AREA} of the picture)"
            ));
        }
        None
    }

    /// The horizontal spans `[x0, x1)` (in pixels) covered on pixel row `y` of a `width` ×
    /// `height` picture, sampling at the pixel centre (even-odd rule). A pixel the polygon
    /// touches only partly is covered when its centre is inside, and the spans are widened by
    /// one pixel each side so that a mask edge never leaves a sliver visible.
    pub fn spans(&self, y: u32, width: u32, height: u32, out: &mut Vec<(u32, u32)>) {
        out.clear();
        let n = self.points.len();
        if n < 3 || width == 0 || height == 0 {
            return;
        }
        let (w, h) = (f64::from(width), f64::from(height));
        let yc = f64::from(y) + 0.5;
        let mut xs: Vec<f64> = Vec::with_capacity(n);
        for i in 0..n {
            let [ax, ay] = self.points[i];
            let [bx, by] = self.points[(i + 1) % n];
            let (ax, ay, bx, by) = (ax * w, ay * h, bx * w, by * h);
            if (ay <= yc && yc < by) || (by <= yc && yc < ay) {
                xs.push(ax + (yc - ay) * (bx - ax) / (by - ay));
            }
        }
        xs.sort_by(f64::total_cmp);
        for pair in xs.chunks_exact(2) {
            let x0 = (pair[0] - 0.5).floor().max(0.0) - 1.0;
            let x1 = (pair[1] - 0.5).ceil() + 1.0;
            let x0 = x0.clamp(0.0, w) as u32;
            let x1 = x1.clamp(0.0, w) as u32;
            if x1 > x0 {
                out.push((x0, x1));
            }
        }
    }

    /// Rows (in pixels) the mask may cover, for a picture `height` high.
    pub fn rows(&self, height: u32) -> std::ops::Range<u32> {
        let h = f64::from(height);
        let (lo, hi) = self
            .points
            .iter()
            .fold((1.0f64, 0.0f64), |(lo, hi), p| (lo.min(p[1]), hi.max(p[1])));
        let a = ((lo * h).floor() - 1.0).clamp(0.0, h) as u32;
        let b = ((hi * h).ceil() + 1.0).clamp(0.0, h) as u32;
        a..b.max(a)
    }
}

/// The problems of a camera's mask list: `(index or None for the list, message)`.
pub fn problems(masks: &[Mask]) -> Vec<(Option<usize>, String)> {
    let mut p = Vec::new();
    if masks.len() > MAX_MASKS_PER_CAMERA {
        p.push((
            None,
            format!(
                "{} masks: at most {MAX_MASKS_PER_CAMERA} per camera",
                masks.len()
            ),
        ));
    }
    for (i, m) in masks.iter().enumerate() {
        if let Some(e) = m.problem() {
            p.push((Some(i), e));
        } else if masks[..i].iter().any(|o| o.name.trim() == m.name.trim()) {
            p.push((
                Some(i),
                format!("mask name {:?} is used twice on this camera", m.name.trim()),
            ));
        }
    }
    p
}

/// A stable hash of a camera's masks (names and points, in order): journaled when it changes,
/// and what the register shows. Empty list → the hash of nothing.
pub fn hash(masks: &[Mask]) -> String {
    let mut h = Sha256::new();
    for m in masks {
        h.update(m.name.trim().as_bytes());
        h.update([0u8]);
        for [x, y] in &m.points {
            h.update(x.to_le_bytes());
            h.update(y.to_le_bytes());
        }
        h.update([1u8]);
    }
    let d = h.finalize();
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, points: &[[f64; 2]]) -> Mask {
        Mask {
            name: name.into(),
            points: points.to_vec(),
        }
    }

    #[test]
    fn spans_cover_the_inside_and_nothing_far_outside() {
        let sq = m(
            "door",
            &[[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]],
        );
        let mut out = Vec::new();
        sq.spans(50, 100, 100, &mut out);
        assert_eq!(out, [(23, 76)]);
        sq.spans(10, 100, 100, &mut out);
        assert!(out.is_empty());
        assert_eq!(sq.rows(100), 24..76);
        assert!((sq.area() - 0.25).abs() < 1e-12);
        // A triangle: its spans narrow towards the apex.
        let tri = m("t", &[[0.5, 0.0], [1.0, 1.0], [0.0, 1.0]]);
        tri.spans(10, 100, 100, &mut out);
        let narrow = out[0].1 - out[0].0;
        tri.spans(90, 100, 100, &mut out);
        assert!(out[0].1 - out[0].0 > narrow + 50);
    }

    #[test]
    fn hash_follows_names_and_points() {
        let a = [m("a", &[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])];
        let b = [m("b", &[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])];
        assert_eq!(hash(&a), hash(&a.clone()));
        assert_ne!(hash(&a), hash(&b));
        assert_ne!(hash(&a), hash(&[]));
    }
}

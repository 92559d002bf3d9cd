//! Lesion presence: is there a region that stands out from the surrounding skin, near the
//! centre, covering a plausible share of the field? And is the scene skin at all?
//!
//! On the 80x60 thumbnail, the field's luminance is split in two by Otsu's threshold: the darker
//! class is the candidate lesion (pigmented lesions, vascular ones included, are darker than the
//! skin around them under a dermatoscope's light), the lighter class is the skin. A lesion is
//! there when the two classes differ enough (`contrast`), the candidate holds the centre of the
//! field (`centre_share`) without being everything (`area`), and the centre carries structure
//! rather than the smooth fill of skin (`centre_texture`). A scene busy with edges (`texture`)
//! or without colour (`saturation`) is not skin.

use serde::Serialize;

use super::analysis::{luma, mean_abs_laplacian, percentile, saturation, Analysis, FOCUS_H, FOCUS_W};

/// The field for lesion presence: inside this radius and not black (a round window's
/// vignette is not a lesion).
const FIELD_RADIUS: f32 = 0.97;
const BLACK: f32 = 0.06;
/// The centre the lesion must hold.
const CENTRE_RADIUS: f32 = 0.35;
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct LesionFigures {
    /// Mean luminance of the skin class minus that of the lesion class, 0..1.
    pub contrast: f32,
    /// Share of the central disc in the lesion class.
    pub centre_share: f32,
    /// Share of the field in the lesion class.
    pub area: f32,
    /// Mean absolute Laplacian (8-bit levels, 160 px wide) inside the central disc divided by
    /// the whole field's: a painted-over or plain centre is smoother than the skin around it.
    pub centre_texture: f32,
    /// Mean absolute Laplacian of the whole frame (8-bit levels, 160 px wide): skin under a
    /// dermatoscope is smooth next to a room or a photo.
    pub texture: f32,
    /// Median colour saturation of the field (0 for a grey image).
    pub saturation: f32,
    /// Share of the field where red is the strongest channel: skin and lesions under a
    /// dermatoscope's white light are red-dominant almost everywhere; a random scene is not.
    pub red_share: f32,
}

impl LesionFigures {
    pub fn rounded(self) -> Self {
        let r = |v: f32| (v * 1000.0).round() / 1000.0;
        LesionFigures {
            contrast: r(self.contrast),
            centre_share: r(self.centre_share),
            area: r(self.area),
            centre_texture: r(self.centre_texture),
            texture: r(self.texture),
            saturation: r(self.saturation),
            red_share: r(self.red_share),
        }
    }
}

pub fn measure(a: &Analysis) -> LesionFigures {
    let field: Vec<usize> = (0..a.thumb.len()).filter(|&i| a.radius[i] < FIELD_RADIUS && luma(a.thumb[i]) > BLACK).collect();
    let texture = a.focus();
    let centre_texture = {
        let r = |x: usize, y: usize| {
            let dx = (x as f32 + 0.5 - FOCUS_W as f32 / 2.0) / (FOCUS_W as f32 / 2.0);
            let dy = (y as f32 + 0.5 - FOCUS_H as f32 / 2.0) / (FOCUS_H as f32 / 2.0);
            (dx * dx + dy * dy).sqrt()
        };
        let centre = mean_abs_laplacian(&a.focus_luma, FOCUS_W, FOCUS_H, |x, y| r(x, y) < CENTRE_RADIUS);
        let all = mean_abs_laplacian(&a.focus_luma, FOCUS_W, FOCUS_H, |x, y| r(x, y) < FIELD_RADIUS);
        if all > 1e-3 {
            centre / all
        } else {
            0.0
        }
    };
    let mut sats: Vec<f32> = field.iter().map(|&i| saturation(a.thumb[i])).collect();
    let saturation = percentile(&mut sats, 0.5);
    let red_share = field
        .iter()
        .filter(|&&i| {
            let p = a.thumb[i];
            p[0] >= p[1].max(p[2]) - 0.02
        })
        .count() as f32
        / field.len().max(1) as f32;
    if field.len() < 50 {
        return LesionFigures { texture, saturation, centre_texture, red_share, ..LesionFigures::default() };
    }
    // Split on luminance: pigmented and vascular lesions are darker than the skin around them.
    // (Weighting in colour saturation, or median-filtering away hairs, measured no better on
    // the validation damage set; see docs/examination.md.)
    let l: Vec<f32> = field.iter().map(|&i| luma(a.thumb[i])).collect();
    let threshold = otsu(&l);
    let (mut dark_sum, mut dark_n, mut light_sum, mut light_n) = (0.0f32, 0u32, 0.0f32, 0u32);
    let (mut centre_dark, mut centre_n) = (0u32, 0u32);
    for (&i, &v) in field.iter().zip(&l) {
        let dark = v < threshold;
        if dark {
            dark_sum += v;
            dark_n += 1;
        } else {
            light_sum += v;
            light_n += 1;
        }
        if a.radius[i] < CENTRE_RADIUS {
            centre_n += 1;
            centre_dark += u32::from(dark);
        }
    }
    let contrast = if dark_n > 0 && light_n > 0 { light_sum / light_n as f32 - dark_sum / dark_n as f32 } else { 0.0 };
    LesionFigures {
        contrast,
        centre_share: centre_dark as f32 / centre_n.max(1) as f32,
        area: dark_n as f32 / field.len() as f32,
        centre_texture,
        texture,
        saturation,
        red_share,
    }
}

/// Otsu's threshold of values in 0..1 (64 bins): the split that maximises the between-class
/// variance.
fn otsu(values: &[f32]) -> f32 {
    const BINS: usize = 64;
    let mut hist = [0u32; BINS];
    for &v in values {
        hist[((v.clamp(0.0, 1.0) * BINS as f32) as usize).min(BINS - 1)] += 1;
    }
    let centre = |b: usize| (b as f32 + 0.5) / BINS as f32;
    let total = values.len() as f64;
    let sum_all: f64 = hist.iter().enumerate().map(|(b, &n)| f64::from(n) * f64::from(centre(b))).sum();
    let (mut w0, mut sum0, mut best, mut at) = (0.0f64, 0.0f64, -1.0f64, 0.5f32);
    for (b, &n) in hist.iter().enumerate().take(BINS - 1) {
        w0 += f64::from(n);
        sum0 += f64::from(n) * f64::from(centre(b));
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let (m0, m1) = (sum0 / w0, (sum_all - sum0) / w1);
        let between = w0 * w1 * (m0 - m1) * (m0 - m1);
        if between > best {
            best = between;
            at = (b + 1) as f32 / BINS as f32;
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otsu_splits_two_clusters_between_them() {
        let v: Vec<f32> = (0..100).map(|i| if i % 2 == 0 { 0.2 } else { 0.8 }).collect();
        let t = otsu(&v);
        assert!(t > 0.2 && t <= 0.8, "{t}");
    }
}

//! The small copies of a frame the checks measure: an 80x60 colour thumbnail of the field and
//! a 160x120 luminance image (focus), made by area averaging (so sensor noise averages out and
//! the result does not depend on the camera's resolution).

/// Width and height of the colour thumbnail.
pub const THUMB_W: usize = 80;
pub const THUMB_H: usize = 60;
/// Width and height of the luminance image the focus is measured on.
pub const FOCUS_W: usize = 160;
pub const FOCUS_H: usize = 120;
/// The field: inside this normalised elliptical radius (leaves out the corners, where a
/// dermatoscope's round window vignettes).
const FIELD_RADIUS: f32 = 0.97;
/// The central disc used for glare.
const GLARE_RADIUS: f32 = 0.6;

pub struct Analysis {
    /// RGB 0..1, row-major, THUMB_W x THUMB_H.
    pub thumb: Vec<[f32; 3]>,
    /// Normalised elliptical radius of each thumbnail pixel (0 at the centre, 1 at the edge
    /// midpoints).
    pub radius: Vec<f32>,
    /// Luminance in 8-bit levels, FOCUS_W x FOCUS_H.
    pub focus_luma: Vec<f32>,
    pub motion: MotionThumb,
    pub signature: Signature,
}

/// What the view looks like, coarsely: the mean colour of a 4x3 grid over the frame, divided
/// by the frame's mean luminance (so a flickering light changes nothing). A few pixels of
/// tremor change it by ~0.005, another lesion or scene by 0.06 or more.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signature([f32; 36]);

impl Default for Signature {
    fn default() -> Self {
        Signature([0.0; 36])
    }
}

impl Signature {
    fn of(thumb: &[[f32; 3]]) -> Signature {
        let mut cells = [0.0f32; 36];
        let (cw, ch) = (THUMB_W / 4, THUMB_H / 3);
        let mut total = 0.0f32;
        for (i, p) in thumb.iter().enumerate() {
            let (x, y) = (i % THUMB_W, i / THUMB_W);
            let cell = (y / ch).min(2) * 4 + (x / cw).min(3);
            for c in 0..3 {
                cells[cell * 3 + c] += p[c];
            }
            total += luma(*p);
        }
        let mean = (total / thumb.len().max(1) as f32).max(1e-3);
        let per_cell = (cw * ch) as f32;
        for v in &mut cells {
            *v /= per_cell * mean;
        }
        Signature(cells)
    }

    /// A view whose every cell reads `v` (tests make views with it).
    #[cfg(test)]
    pub fn uniform(v: f32) -> Signature {
        Signature([v; 36])
    }

    /// Mean absolute difference: 0 for the same view.
    pub fn distance(&self, other: &Signature) -> f32 {
        self.0.iter().zip(&other.0).map(|(a, b)| (a - b).abs()).sum::<f32>() / 36.0
    }
}

pub fn luma(p: [f32; 3]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

pub fn saturation(p: [f32; 3]) -> f32 {
    let max = p[0].max(p[1]).max(p[2]);
    let min = p[0].min(p[1]).min(p[2]);
    (max - min) / (max + 1e-3)
}

impl Analysis {
    pub fn of(image: &image::RgbImage) -> Analysis {
        let focus_rgb = area_average(image, FOCUS_W, FOCUS_H);
        let focus_luma = focus_rgb.iter().map(|&p| luma(p) * 255.0).collect();
        // The thumbnail from the 160x120 copy: exactly 2x2 boxes.
        let mut thumb = vec![[0.0f32; 3]; THUMB_W * THUMB_H];
        for y in 0..THUMB_H {
            for x in 0..THUMB_W {
                let mut acc = [0.0f32; 3];
                for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let p = focus_rgb[(2 * y + dy) * FOCUS_W + 2 * x + dx];
                    for c in 0..3 {
                        acc[c] += p[c] / 4.0;
                    }
                }
                thumb[y * THUMB_W + x] = acc;
            }
        }
        let radius = (0..THUMB_W * THUMB_H)
            .map(|i| {
                let (x, y) = ((i % THUMB_W) as f32 + 0.5, (i / THUMB_W) as f32 + 0.5);
                let dx = (x - THUMB_W as f32 / 2.0) / (THUMB_W as f32 / 2.0);
                let dy = (y - THUMB_H as f32 / 2.0) / (THUMB_H as f32 / 2.0);
                (dx * dx + dy * dy).sqrt()
            })
            .collect();
        let motion = MotionThumb::of(&thumb);
        let signature = Signature::of(&thumb);
        Analysis { thumb, radius, focus_luma, motion, signature }
    }

    fn field(&self) -> impl Iterator<Item = [f32; 3]> + '_ {
        self.thumb.iter().zip(&self.radius).filter(|(_, &r)| r < FIELD_RADIUS).map(|(p, _)| *p)
    }

    /// 95th percentile of the brightest channel in the field: the lit skin (a lesion is
    /// darker, so a median would judge the lesion, not the light; skin is bright in red, so
    /// the brightest channel tells a dim frame from a dark-skinned or red one best).
    pub fn exposure(&self) -> f32 {
        let mut v: Vec<f32> = self.field().map(|p| p[0].max(p[1]).max(p[2])).collect();
        percentile(&mut v, 0.95)
    }

    /// Share of the field with a clipped channel.
    pub fn clipped(&self) -> f32 {
        share(self.field(), |p| p[0].max(p[1]).max(p[2]) >= 0.97)
    }

    /// Share of the central disc that is specular highlight: bright and colourless.
    pub fn glare(&self) -> f32 {
        let centre = self.thumb.iter().zip(&self.radius).filter(|(_, &r)| r < GLARE_RADIUS).map(|(p, _)| *p);
        share(centre, |p| luma(p) > 0.9 && saturation(p) < 0.15)
    }

    /// Mean absolute Laplacian of the 160-px luminance (8-bit levels): falls steeply with blur.
    pub fn focus(&self) -> f32 {
        mean_abs_laplacian(&self.focus_luma, FOCUS_W, FOCUS_H, |_, _| true)
    }
}

/// Mean absolute 4-neighbour Laplacian over the interior pixels that `keep(x, y)` selects.
pub fn mean_abs_laplacian(l: &[f32], w: usize, h: usize, keep: impl Fn(usize, usize) -> bool) -> f32 {
    let (mut sum, mut n) = (0.0f64, 0u32);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            if !keep(x, y) {
                continue;
            }
            let i = y * w + x;
            let lap = 4.0 * l[i] - l[i - 1] - l[i + 1] - l[i - w] - l[i + w];
            sum += f64::from(lap.abs());
            n += 1;
        }
    }
    if n == 0 {
        0.0
    } else {
        (sum / f64::from(n)) as f32
    }
}

fn share(it: impl Iterator<Item = [f32; 3]>, pred: impl Fn([f32; 3]) -> bool) -> f32 {
    let (mut hit, mut n) = (0u32, 0u32);
    for p in it {
        n += 1;
        hit += u32::from(pred(p));
    }
    if n == 0 {
        0.0
    } else {
        hit as f32 / n as f32
    }
}

/// The `q` quantile (0..1) of `v` (reordered); 0 for an empty slice.
pub fn percentile(v: &mut [f32], q: f32) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let k = ((v.len() - 1) as f32 * q).round() as usize;
    let (_, x, _) = v.select_nth_unstable_by(k, f32::total_cmp);
    *x
}

/// Area-averages an RGB8 image to `w` x `h`, RGB 0..1. Each output pixel averages the input
/// pixels whose centres fall in its box (at least one), so any input size works.
pub fn area_average(image: &image::RgbImage, w: usize, h: usize) -> Vec<[f32; 3]> {
    let (iw, ih) = (image.width() as usize, image.height() as usize);
    let raw = image.as_raw();
    let bounds = |n_in: usize, n_out: usize, i: usize| {
        let a = i * n_in / n_out;
        let b = ((i + 1) * n_in / n_out).max(a + 1).min(n_in.max(1));
        (a.min(n_in.saturating_sub(1)), b)
    };
    let mut out = vec![[0.0f32; 3]; w * h];
    if iw == 0 || ih == 0 {
        return out;
    }
    let xb: Vec<(usize, usize)> = (0..w).map(|x| bounds(iw, w, x)).collect();
    for y in 0..h {
        let (y0, y1) = bounds(ih, h, y);
        for (x, &(x0, x1)) in xb.iter().enumerate() {
            let mut acc = [0u32; 3];
            for yy in y0..y1 {
                let row = &raw[(yy * iw + x0) * 3..(yy * iw + x1) * 3];
                for px in row.chunks_exact(3) {
                    acc[0] += u32::from(px[0]);
                    acc[1] += u32::from(px[1]);
                    acc[2] += u32::from(px[2]);
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as f32 * 255.0;
            out[y * w + x] = [acc[0] as f32 / n, acc[1] as f32 / n, acc[2] as f32 / n];
        }
    }
    out
}

/// What motion is judged from: the thumbnail's luminance divided by its mean (so a flickering
/// light is not motion) and its mean gradient.
pub struct MotionThumb {
    luma: Vec<f32>,
    mean_gradient: f32,
}

impl MotionThumb {
    fn of(thumb: &[[f32; 3]]) -> MotionThumb {
        let raw: Vec<f32> = thumb.iter().map(|&p| luma(p)).collect();
        let mean = raw.iter().sum::<f32>() / raw.len() as f32;
        let luma: Vec<f32> = raw.iter().map(|v| v / mean.max(1e-3)).collect();
        let (w, h) = (THUMB_W, THUMB_H);
        let (mut g, mut n) = (0.0f32, 0u32);
        for y in 0..h - 1 {
            for x in 0..w - 1 {
                let i = y * w + x;
                g += ((luma[i + 1] - luma[i]).abs() + (luma[i + w] - luma[i]).abs()) / 2.0;
                n += 1;
            }
        }
        MotionThumb { luma, mean_gradient: g / n.max(1) as f32 }
    }

    /// Displacement since `previous`, in pixels of a 640-px-wide frame: for a small shift v,
    /// |I_t - I_t-1| ~ |grad I| * v, so mean |difference| / mean |gradient| estimates v in
    /// thumbnail pixels.
    pub fn displacement_px(&self, previous: &MotionThumb) -> f32 {
        let diff = self.luma.iter().zip(&previous.luma).map(|(a, b)| (a - b).abs()).sum::<f32>() / self.luma.len() as f32;
        let gradient = (self.mean_gradient + previous.mean_gradient) / 2.0;
        // A frame with no structure at all cannot show motion.
        if gradient < 1e-4 {
            return 0.0;
        }
        diff / gradient * (640.0 / THUMB_W as f32)
    }
}

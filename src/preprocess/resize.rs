//! The separable triangle-filter resize of `docs/preprocessing.md` (crop-resize-v1).
//!
//! Written out rather than taken from the `image` crate because the training pipeline must
//! compute the very same pixels in numpy, and a library's filter can change with its version.

use image::RgbImage;

/// Filter taps for one axis: for each output index, the first source index and its weights.
#[derive(Debug, Clone)]
pub struct AxisWeights {
    taps: Vec<(usize, Vec<f64>)>,
}

impl AxisWeights {
    pub fn new(n_in: usize, n_out: usize) -> Self {
        let s = n_in as f64 / n_out as f64;
        let r = s.max(1.0);
        let last = n_in as i64 - 1;
        let taps = (0..n_out)
            .map(|o| {
                let c = (o as f64 + 0.5) * s - 0.5;
                let lo = ((c - r).floor() as i64).clamp(0, last);
                let hi = ((c + r).ceil() as i64).clamp(0, last);
                let mut w: Vec<f64> = (lo..=hi).map(|i| (1.0 - (i as f64 - c).abs() / r).max(0.0)).collect();
                let sum: f64 = w.iter().sum();
                w.iter_mut().for_each(|x| *x /= sum);
                (lo as usize, w)
            })
            .collect();
        Self { taps }
    }

    fn len(&self) -> usize {
        self.taps.len()
    }
}

/// Resizes `src` with precomputed weights: horizontal pass into f64, vertical pass rounding
/// half up to u8. Every output value is summed in the order docs/preprocessing.md fixes (taps
/// ascending, from 0.0), so the bytes equal the Python reference's; the loops are only arranged
/// so the compiler can vectorise them (the vertical pass accumulates whole rows).
pub fn resize_rgb(src: &RgbImage, horizontal: &AxisWeights, vertical: &AxisWeights) -> RgbImage {
    let sw = src.width() as usize;
    let (dw, dh) = (horizontal.len(), vertical.len());
    let row_len = dw * 3;
    let mut tmp = vec![0f64; src.height() as usize * row_len];
    for (src_row, tmp_row) in src.as_raw().chunks_exact(sw * 3).zip(tmp.chunks_exact_mut(row_len)) {
        for ((start, weights), out) in horizontal.taps.iter().zip(tmp_row.chunks_exact_mut(3)) {
            let mut acc = [0f64; 3];
            for (p, w) in src_row[start * 3..].chunks_exact(3).zip(weights) {
                acc[0] += f64::from(p[0]) * w;
                acc[1] += f64::from(p[1]) * w;
                acc[2] += f64::from(p[2]) * w;
            }
            out.copy_from_slice(&acc);
        }
    }
    let mut acc = vec![0f64; row_len];
    let mut out = vec![0u8; dh * row_len];
    for ((start, weights), out_row) in vertical.taps.iter().zip(out.chunks_exact_mut(row_len)) {
        acc.fill(0.0);
        for (k, w) in weights.iter().enumerate() {
            let tmp_row = &tmp[(start + k) * row_len..(start + k + 1) * row_len];
            for (a, t) in acc.iter_mut().zip(tmp_row) {
                *a += t * w;
            }
        }
        // `as u8` saturates, so this is floor(a + 0.5) clamped to 0..=255 (a is never NaN).
        for (o, a) in out_row.iter_mut().zip(&acc) {
            *o = (a + 0.5) as u8;
        }
    }
    RgbImage::from_raw(dw as u32, dh as u32, out).expect("buffer has the output's size")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resize(src: &RgbImage, w: usize, h: usize) -> RgbImage {
        resize_rgb(src, &AxisWeights::new(src.width() as usize, w), &AxisWeights::new(src.height() as usize, h))
    }

    #[test]
    fn identity_size_is_identity() {
        let img = RgbImage::from_fn(7, 5, |x, y| image::Rgb([(x * 30) as u8, (y * 40) as u8, ((x + y) * 9) as u8]));
        assert_eq!(resize(&img, 7, 5), img);
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(13, 9, image::Rgb([17, 130, 250]));
        for (w, h) in [(256, 192), (4, 3), (3, 5), (26, 18)] {
            assert!(resize(&img, w, h).pixels().all(|p| p.0 == [17, 130, 250]));
        }
    }

    #[test]
    fn downscale_by_two_averages_with_triangle_weights() {
        // 4 -> 2: centre c = 0.5 and 2.5, r = 2, taps at distance 0.5 and 1.5 weigh 3:1.
        let img = RgbImage::from_fn(4, 1, |x, _| image::Rgb([(x * 40) as u8, 0, 0]));
        let out = resize(&img, 2, 1);
        // (0*3 + 40*3 + 80*1) / 7 = 28.57 -> 29 ; (40*1 + 80*3 + 120*3) / 7 = 91.43 -> 91
        assert_eq!([out.get_pixel(0, 0)[0], out.get_pixel(1, 0)[0]], [29, 91]);
    }
}

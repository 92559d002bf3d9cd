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
                // Taps of weight zero at either end add +0.0 to a non-negative sum, which leaves
                // it bit for bit unchanged: dropping them saves work (upscaling has four taps,
                // two of them zero) without changing a single output byte.
                let first = w.iter().position(|&x| x != 0.0).unwrap_or(0);
                let end = w.iter().rposition(|&x| x != 0.0).map_or(w.len(), |i| i + 1);
                (lo as usize + first, w[first..end].to_vec())
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
/// so the compiler can vectorise them (the vertical pass accumulates whole rows), and on x86_64
/// the same code is compiled a second time for AVX2 and picked at run time.
pub fn resize_rgb(src: &RgbImage, horizontal: &AxisWeights, vertical: &AxisWeights) -> RgbImage {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { resize_rgb_avx2(src, horizontal, vertical) };
    }
    resize_rgb_portable(src, horizontal, vertical)
}

/// The same code compiled for AVX2 (wider vectors). Not FMA: a fused multiply-add rounds once
/// where the reference rounds twice, and would change bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn resize_rgb_avx2(src: &RgbImage, horizontal: &AxisWeights, vertical: &AxisWeights) -> RgbImage {
    resize_rgb_portable(src, horizontal, vertical)
}

#[inline(always)]
fn resize_rgb_portable(src: &RgbImage, horizontal: &AxisWeights, vertical: &AxisWeights) -> RgbImage {
    let sw = src.width() as usize;
    let (dw, dh) = (horizontal.len(), vertical.len());
    let row_len = dw * 3;
    // Filled by pushing, not zeroed first: every value is written exactly once.
    let mut tmp = Vec::with_capacity(src.height() as usize * row_len);
    // Each source pixel feeds several outputs: convert a row to f64 once.
    let mut row = vec![0f64; sw * 3];
    for src_row in src.as_raw().chunks_exact(sw * 3) {
        for (r, &p) in row.iter_mut().zip(src_row) {
            *r = f64::from(p);
        }
        for (start, weights) in &horizontal.taps {
            let mut acc = [0f64; 3];
            for (p, w) in row[start * 3..].chunks_exact(3).zip(weights) {
                acc[0] += p[0] * w;
                acc[1] += p[1] * w;
                acc[2] += p[2] * w;
            }
            tmp.extend_from_slice(&acc);
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

    /// The definition written the plain way: every tap (zero weights included), one output
    /// value at a time, no row buffers, no AVX2.
    fn reference(src: &RgbImage, dw: usize, dh: usize) -> Vec<u8> {
        let axis = |n_in: usize, n_out: usize, o: usize| -> Vec<(usize, f64)> {
            let s = n_in as f64 / n_out as f64;
            let r = s.max(1.0);
            let c = (o as f64 + 0.5) * s - 0.5;
            let lo = ((c - r).floor() as i64).clamp(0, n_in as i64 - 1);
            let hi = ((c + r).ceil() as i64).clamp(0, n_in as i64 - 1);
            let w: Vec<(usize, f64)> = (lo..=hi).map(|i| (i as usize, (1.0 - (i as f64 - c).abs() / r).max(0.0))).collect();
            let sum: f64 = w.iter().map(|x| x.1).sum();
            w.into_iter().map(|(i, x)| (i, x / sum)).collect()
        };
        let (sw, sh) = (src.width() as usize, src.height() as usize);
        let mut out = Vec::with_capacity(dw * dh * 3);
        for y in 0..dh {
            for x in 0..dw {
                for ch in 0..3 {
                    let mut v = 0.0;
                    for (sy, wy) in axis(sh, dh, y) {
                        let mut h = 0.0;
                        for (sx, wx) in axis(sw, dw, x) {
                            h += f64::from(src.get_pixel(sx as u32, sy as u32)[ch]) * wx;
                        }
                        v += h * wy;
                    }
                    out.push((v + 0.5).floor().clamp(0.0, 255.0) as u8);
                }
            }
        }
        out
    }

    #[test]
    fn fast_resize_equals_the_plain_definition() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        };
        for (sw, sh, dw, dh) in [(200, 150, 256, 192), (37, 29, 64, 48), (150, 113, 41, 33), (9, 7, 9, 20), (1, 1, 5, 4), (64, 48, 1, 1)] {
            let img = RgbImage::from_fn(sw, sh, |_, _| image::Rgb([next(), next(), next()]));
            assert_eq!(resize(&img, dw, dh).into_raw(), reference(&img, dw, dh), "{sw}x{sh} -> {dw}x{dh}");
        }
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

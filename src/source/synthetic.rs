//! Generated lesion-like frames (a pigmented blob with an irregular border on skin), so the
//! daemon can be demonstrated and tested on a machine with no camera and no images.

use std::time::{Instant, SystemTime};

use image::{Rgb, RgbImage};

use super::{FrameSource, Pacer, SourceEvent, StopFlag};
use crate::config::SyntheticConfig;
use crate::frame::{Frame, FrameOrigin};

pub struct SyntheticSource {
    width: u32,
    height: u32,
    count: u64,
    seq: u64,
    rng: XorShift,
    pacer: Pacer,
}

impl SyntheticSource {
    pub fn new(config: &SyntheticConfig) -> Self {
        Self {
            width: config.width,
            height: config.height,
            count: config.count,
            seq: 0,
            rng: XorShift::new(config.seed),
            pacer: Pacer::new(config.fps),
        }
    }
}

impl FrameSource for SyntheticSource {
    fn next(&mut self, stop: &StopFlag) -> Option<SourceEvent> {
        if self.count > 0 && self.seq >= self.count {
            return Some(SourceEvent::End);
        }
        if !self.pacer.wait(stop) {
            return None;
        }
        let started = Instant::now();
        let image = lesion_like(self.width, self.height, &mut self.rng);
        self.seq += 1;
        Some(SourceEvent::Frame(Frame {
            seq: self.seq,
            captured_at: SystemTime::now(),
            origin: FrameOrigin { kind: "synthetic", name: format!("synthetic-{}", self.seq) },
            image,
            jpeg: None,
            decode_time: started.elapsed(),
        }))
    }
}

/// A small deterministic generator: frames are reproducible from the configured seed.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.next_f32()
    }
}

fn lesion_like(width: u32, height: u32, rng: &mut XorShift) -> RgbImage {
    let skin = [rng.range(200.0, 235.0), rng.range(150.0, 185.0), rng.range(130.0, 160.0)];
    let lesion = [rng.range(70.0, 150.0), rng.range(40.0, 90.0), rng.range(30.0, 70.0)];
    let (w, h) = (width as f32, height as f32);
    let (cx, cy) = (w * rng.range(0.4, 0.6), h * rng.range(0.4, 0.6));
    let radius = w.min(h) * rng.range(0.15, 0.35);
    let aspect = rng.range(0.7, 1.3);
    // A few harmonics make the border irregular, like a real pigmented lesion.
    let harmonics: Vec<(f32, f32, f32)> = (0..4)
        .map(|k| (2.0 + k as f32, rng.range(0.0, 0.12), rng.range(0.0, std::f32::consts::TAU)))
        .collect();
    let mut noise = XorShift::new(rng.0);
    RgbImage::from_fn(width, height, |x, y| {
        let (dx, dy) = ((x as f32 - cx) / aspect, y as f32 - cy);
        let angle = dy.atan2(dx);
        let wobble: f32 = harmonics.iter().map(|(f, a, p)| a * (f * angle + p).sin()).sum();
        let r = (dx * dx + dy * dy).sqrt() / (radius * (1.0 + wobble));
        // Soft edge, darker centre.
        let t = (1.0 - ((r - 0.85) / 0.3).clamp(0.0, 1.0)) * (1.0 - 0.25 * r.min(1.0));
        let grain = noise.range(-6.0, 6.0);
        let px = |i: usize| (skin[i] * (1.0 - t) + lesion[i] * t + grain).clamp(0.0, 255.0) as u8;
        Rgb([px(0), px(1), px(2)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_reproducible_and_bounded() {
        let config = SyntheticConfig { fps: 1000.0, width: 64, height: 48, seed: 7, count: 2 };
        let stop = StopFlag::default();
        let mut a = SyntheticSource::new(&config);
        let mut b = SyntheticSource::new(&config);
        let (Some(SourceEvent::Frame(fa)), Some(SourceEvent::Frame(fb))) = (a.next(&stop), b.next(&stop))
        else {
            panic!("expected frames")
        };
        assert_eq!(fa.image, fb.image);
        assert_eq!(fa.image.dimensions(), (64, 48));
        // The centre is darker than the corner: there is a lesion.
        let luma = |p: &Rgb<u8>| p.0.iter().map(|&c| u32::from(c)).sum::<u32>();
        assert!(luma(fa.image.get_pixel(32, 24)) < luma(fa.image.get_pixel(0, 0)));
        assert!(matches!(a.next(&stop), Some(SourceEvent::Frame(_))));
        assert!(matches!(a.next(&stop), Some(SourceEvent::End)));
    }
}

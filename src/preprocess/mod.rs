//! Preprocessing: a decoded frame in, the model's input tensor out.
//!
//! Crop to the model's aspect, optionally mask the dermatoscope's circle, resize, quantize —
//! exactly as `docs/preprocessing.md` defines it, because the training pipeline implements the
//! same definition in numpy and the model only works on the pixels it was trained on. The
//! golden tests compare both byte for byte.

mod resize;

use std::borrow::Cow;

use image::RgbImage;

pub use resize::{resize_rgb, AxisWeights};

/// The input a model expects, read from the model itself at load time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputSpec {
    pub width: u32,
    pub height: u32,
    pub dtype: InputType,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InputType {
    /// `q = round(pixel / scale) + zero_point`, from the input tensor's quantization parameters.
    U8 { scale: f32, zero_point: i32 },
    /// Raw pixel values 0..255 as float32 (normalisation is inside the network).
    F32,
}

/// A model input, NHWC with N = 1.
#[derive(Debug, Clone, PartialEq)]
pub enum InputTensor {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

impl InputTensor {
    /// The tensor's bytes as the engine receives them (little-endian for f32).
    pub fn sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        match self {
            InputTensor::U8(v) => h.update(v),
            InputTensor::F32(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
        }
        hex::encode(h.finalize())
    }
}

/// Turns frames into input tensors for one model. Keeps the resize weights of the last frame
/// size, since a camera sends the same size every time.
#[derive(Debug)]
pub struct Preprocessor {
    spec: InputSpec,
    circular_mask: bool,
    cached: Option<CachedWeights>,
}

#[derive(Debug)]
struct CachedWeights {
    src: (u32, u32),
    horizontal: AxisWeights,
    vertical: AxisWeights,
}

impl Preprocessor {
    pub fn new(spec: InputSpec, circular_mask: bool) -> Self {
        Self { spec, circular_mask, cached: None }
    }

    pub fn spec(&self) -> &InputSpec {
        &self.spec
    }

    /// Crop, mask and resize: the RGB8 pixels the model will see, before quantization.
    pub fn pixels(&mut self, image: &RgbImage) -> RgbImage {
        let (x0, y0, cw, ch) = centre_crop(image.width(), image.height(), self.spec.width, self.spec.height);
        // A frame that already has the model's aspect (HAM10000's 4:3, most cameras) is not copied.
        let crop = if (x0, y0, cw, ch) == (0, 0, image.width(), image.height()) && !self.circular_mask {
            Cow::Borrowed(image)
        } else {
            let mut crop = image::imageops::crop_imm(image, x0, y0, cw, ch).to_image();
            if self.circular_mask {
                apply_circular_mask(&mut crop);
            }
            Cow::Owned(crop)
        };
        let (dw, dh) = (self.spec.width, self.spec.height);
        let cached = match self.cached.take() {
            Some(c) if c.src == (cw, ch) => c,
            _ => CachedWeights {
                src: (cw, ch),
                horizontal: AxisWeights::new(cw as usize, dw as usize),
                vertical: AxisWeights::new(ch as usize, dh as usize),
            },
        };
        let out = resize_rgb(&crop, &cached.horizontal, &cached.vertical);
        self.cached = Some(cached);
        out
    }

    /// The full preprocessing: pixels, then quantized (or converted) to the model's input type.
    pub fn run(&mut self, image: &RgbImage) -> InputTensor {
        let pixels = self.pixels(image);
        quantize(pixels.as_raw(), self.spec.dtype)
    }
}

/// The centre crop `(x0, y0, width, height)` of a `w` x `h` image to the aspect `mw : mh`, with
/// integer arithmetic so that Python computes the same numbers.
pub fn centre_crop(w: u32, h: u32, mw: u32, mh: u32) -> (u32, u32, u32, u32) {
    let (w64, h64, mw64, mh64) = (u64::from(w), u64::from(h), u64::from(mw), u64::from(mh));
    if w64 * mh64 > h64 * mw64 {
        let cw = ((2 * h64 * mw64 + mh64) / (2 * mh64)).clamp(1, w64) as u32;
        ((w - cw) / 2, 0, cw, h)
    } else if w64 * mh64 < h64 * mw64 {
        let ch = ((2 * w64 * mh64 + mw64) / (2 * mw64)).clamp(1, h64) as u32;
        (0, (h - ch) / 2, w, ch)
    } else {
        (0, 0, w, h)
    }
}

/// Blacks out what lies outside the ellipse inscribed in the image.
pub fn apply_circular_mask(image: &mut RgbImage) {
    let (rx, ry) = (f64::from(image.width()) / 2.0, f64::from(image.height()) / 2.0);
    for (x, y, p) in image.enumerate_pixels_mut() {
        let dx = (f64::from(x) + 0.5 - rx) / rx;
        let dy = (f64::from(y) + 0.5 - ry) / ry;
        if dx * dx + dy * dy > 1.0 {
            p.0 = [0, 0, 0];
        }
    }
}

/// Pixel values to the model's input type.
pub fn quantize(pixels: &[u8], dtype: InputType) -> InputTensor {
    match dtype {
        InputType::U8 { scale, zero_point } if scale == 1.0 && zero_point == 0 => InputTensor::U8(pixels.to_vec()),
        InputType::U8 { scale, zero_point } => {
            // One lookup table for the 256 possible pixel values.
            let table: Vec<u8> = (0..=255u8)
                .map(|v| ((f32::from(v) / scale).round() as i32 + zero_point).clamp(0, 255) as u8)
                .collect();
            InputTensor::U8(pixels.iter().map(|&v| table[usize::from(v)]).collect())
        }
        InputType::F32 => InputTensor::F32(pixels.iter().map(|&v| f32::from(v)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_keeps_model_aspect() {
        assert_eq!(centre_crop(200, 150, 256, 192), (0, 0, 200, 150));
        assert_eq!(centre_crop(1920, 1080, 256, 192), (240, 0, 1440, 1080));
        assert_eq!(centre_crop(480, 640, 256, 192), (0, 140, 480, 360));
        assert_eq!(centre_crop(101, 50, 4, 3), (17, 0, 67, 50));
    }

    #[test]
    fn mask_blacks_out_corners_only() {
        let mut img = RgbImage::from_pixel(40, 30, image::Rgb([200, 150, 100]));
        apply_circular_mask(&mut img);
        assert_eq!(img.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(39, 29).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(20, 15).0, [200, 150, 100]);
        assert_eq!(img.get_pixel(20, 0).0, [200, 150, 100]);
    }

    #[test]
    fn quantization_uses_tensor_parameters() {
        let px = [0u8, 1, 128, 255];
        assert_eq!(quantize(&px, InputType::U8 { scale: 1.0, zero_point: 0 }), InputTensor::U8(px.to_vec()));
        assert_eq!(
            quantize(&px, InputType::U8 { scale: 2.0, zero_point: 10 }),
            InputTensor::U8(vec![10, 11, 74, 138])
        );
        assert_eq!(quantize(&[3], InputType::F32), InputTensor::F32(vec![3.0]));
    }

    #[test]
    fn preprocessor_output_has_model_shape() {
        let spec = InputSpec { width: 256, height: 192, dtype: InputType::U8 { scale: 1.0, zero_point: 0 } };
        let mut pre = Preprocessor::new(spec, false);
        let img = RgbImage::from_fn(640, 480, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 7]));
        let InputTensor::U8(t) = pre.run(&img) else { panic!("u8 input") };
        assert_eq!(t.len(), 256 * 192 * 3);
        // A second frame of another size gets fresh weights, not the cached ones.
        let InputTensor::U8(t2) = pre.run(&RgbImage::from_pixel(300, 300, image::Rgb([9, 9, 9]))) else {
            panic!("u8 input")
        };
        assert!(t2.iter().all(|&v| v == 9));
    }
}

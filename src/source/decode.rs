//! Decoding captured bytes into RGB8 images: JPEG files and MJPEG frames, PNG files, YUYV frames.
//!
//! JPEG goes through libjpeg-turbo (the `mozjpeg` crate) on purpose: it is what Pillow uses, so
//! the daemon sees the same pixels the model was trained and calibrated on (checked by the
//! golden tests). The `image` crate's own JPEG decoder differs by a few levels.

use image::RgbImage;

/// What a frame may cost before it is decoded (`source.max_frame_pixels`,
/// `source.max_frame_bytes`): resolved with the configuration, applied here.
pub use crate::config::DecodeLimits;

impl DecodeLimits {
    fn check_bytes(&self, len: usize) -> Result<(), DecodeError> {
        if len as u64 > self.max_bytes {
            return Err(DecodeError::FileTooLarge { bytes: len as u64, max: self.max_bytes });
        }
        Ok(())
    }

    fn check_pixels(&self, width: u64, height: u64) -> Result<(), DecodeError> {
        if width.saturating_mul(height) > self.max_pixels {
            return Err(DecodeError::TooManyPixels { width, height, max: self.max_pixels });
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty input")]
    Empty,
    #[error("truncated JPEG (no end-of-image marker)")]
    TruncatedJpeg,
    #[error("corrupt JPEG: {0}")]
    Jpeg(String),
    #[error("cannot decode image: {0}")]
    Image(#[from] image::ImageError),
    #[error("frame of {got} bytes does not hold a {width}x{height} YUYV image ({want} bytes)")]
    YuyvSize { got: usize, want: usize, width: u32, height: u32 },
    #[error("header says {width}x{height} pixels, more than source.max_frame_pixels = {max}; not decoded")]
    TooManyPixels { width: u64, height: u64, max: u64 },
    #[error("{bytes} bytes, more than source.max_frame_bytes = {max}; not decoded")]
    FileTooLarge { bytes: u64, max: u64 },
    #[error("image is {width}x{height}; at least 8x8 is needed")]
    TooSmall { width: u32, height: u32 },
}

impl DecodeError {
    /// Refused for its size before decoding (counted apart from corrupt input), or by the
    /// decoder's own allocation limit (which is set from the same pixel limit).
    pub fn is_too_large(&self) -> bool {
        matches!(self, DecodeError::TooManyPixels { .. } | DecodeError::FileTooLarge { .. })
            || matches!(self, DecodeError::Image(image::ImageError::Limits(_)))
    }

    /// The system was short of memory or descriptors while decoding: not the input's fault,
    /// never counted as corrupt.
    pub fn is_resource(&self) -> bool {
        matches!(self, DecodeError::Image(image::ImageError::IoError(e)) if crate::fsread::is_resource_error(e))
    }
}

/// Decodes an encoded image (JPEG, or anything the `image` crate reads, e.g. PNG) within the
/// default [`DecodeLimits`].
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage, DecodeError> {
    decode_image_within(bytes, &DecodeLimits::default())
}

/// Decodes an encoded image, refusing it from its header when it is above `limits`.
pub fn decode_image_within(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    limits.check_bytes(bytes.len())?;
    let image = if bytes.starts_with(&[0xFF, 0xD8]) {
        decode_jpeg_within(bytes, limits)?
    } else {
        let reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(image::ImageError::IoError)?;
        let (width, height) = reader.into_dimensions()?;
        limits.check_pixels(u64::from(width), u64::from(height))?;
        let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(image::ImageError::IoError)?;
        // Belt and braces: the decoder itself refuses to allocate past the limit too.
        let mut decoder_limits = image::Limits::default();
        decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(4));
        reader.limits(decoder_limits);
        reader.decode()?.to_rgb8()
    };
    if image.width() < 8 || image.height() < 8 {
        return Err(DecodeError::TooSmall { width: image.width(), height: image.height() });
    }
    Ok(image)
}

/// Decodes a JPEG within the default [`DecodeLimits`].
pub fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, DecodeError> {
    decode_jpeg_within(bytes, &DecodeLimits::default())
}

/// Decodes a JPEG with libjpeg-turbo. libjpeg only warns about a truncated stream and fills the
/// rest with grey, so a missing end-of-image marker is treated as an error here. The header is
/// read first: a frame above `limits` is refused before anything is allocated for its pixels.
pub fn decode_jpeg_within(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, DecodeError> {
    limits.check_bytes(bytes.len())?;
    let tail = &bytes[bytes.len().saturating_sub(64)..];
    if !tail.windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err(DecodeError::TruncatedJpeg);
    }
    // libjpeg's fatal errors unwind through the FFI boundary (the crate's design); keep them
    // from reaching the caller as a panic.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let decompress = mozjpeg::Decompress::new_mem(bytes)?;
        if let Err(e) = limits.check_pixels(decompress.width() as u64, decompress.height() as u64) {
            return Ok(Err(e));
        }
        let mut started = decompress.rgb()?;
        let (width, height) = (started.width(), started.height());
        let pixels: Vec<u8> = started.read_scanlines::<u8>()?;
        started.finish()?;
        Ok::<_, std::io::Error>(Ok((width, height, pixels)))
    }));
    let (width, height, pixels) = match result {
        Ok(Ok(Ok(decoded))) => decoded,
        Ok(Ok(Err(refused))) => return Err(refused),
        Ok(Err(e)) => return Err(DecodeError::Jpeg(e.to_string())),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "libjpeg error".into());
            return Err(DecodeError::Jpeg(msg));
        }
    };
    let (w, h) = (u32::try_from(width), u32::try_from(height));
    match (w, h) {
        (Ok(w), Ok(h)) => RgbImage::from_raw(w, h, pixels)
            .ok_or_else(|| DecodeError::Jpeg("decoder returned fewer pixels than its size".into())),
        _ => Err(DecodeError::Jpeg("image too large".into())),
    }
}

/// Converts a packed YUYV 4:2:2 frame within the default [`DecodeLimits`].
pub fn yuyv_to_rgb(buf: &[u8], width: u32, height: u32) -> Result<RgbImage, DecodeError> {
    yuyv_to_rgb_within(buf, width, height, &DecodeLimits::default())
}

/// Converts a packed YUYV 4:2:2 frame (BT.601, limited range, as UVC cameras send) to RGB8. The
/// buffer must hold exactly the announced size: anything else is a damaged frame.
pub fn yuyv_to_rgb_within(buf: &[u8], width: u32, height: u32, limits: &DecodeLimits) -> Result<RgbImage, DecodeError> {
    limits.check_pixels(u64::from(width), u64::from(height))?;
    let want = width as usize * height as usize * 2;
    if buf.len() != want || width % 2 != 0 {
        return Err(DecodeError::YuyvSize { got: buf.len(), want, width, height });
    }
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    for quad in buf[..want].chunks_exact(4) {
        let (y0, u, y1, v) = (quad[0], quad[1], quad[2], quad[3]);
        out.extend_from_slice(&ycbcr_to_rgb(y0, u, v));
        out.extend_from_slice(&ycbcr_to_rgb(y1, u, v));
    }
    RgbImage::from_raw(width, height, out)
        .ok_or(DecodeError::YuyvSize { got: buf.len(), want, width, height })
}

fn ycbcr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let c = f32::from(y) - 16.0;
    let d = f32::from(cb) - 128.0;
    let e = f32::from(cr) - 128.0;
    let clamp = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    [
        clamp(1.164_383 * c + 1.596_027 * e),
        clamp(1.164_383 * c - 0.391_762 * d - 0.812_968 * e),
        clamp(1.164_383 * c + 2.017_232 * d),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg_bytes() -> Vec<u8> {
        let img = RgbImage::from_fn(32, 24, |x, y| image::Rgb([(x * 8) as u8, (y * 10) as u8, 90]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .expect("encode");
        out
    }

    #[test]
    fn decodes_a_jpeg() {
        let img = decode_image(&jpeg_bytes()).expect("decodes");
        assert_eq!(img.dimensions(), (32, 24));
        let p = img.get_pixel(31, 0);
        assert!(p[0] > 200 && p[2] > 60 && p[2] < 120, "{p:?}");
    }

    #[test]
    fn truncated_jpeg_is_an_error() {
        let bytes = jpeg_bytes();
        let err = decode_image(&bytes[..bytes.len() / 2]).unwrap_err();
        assert!(matches!(err, DecodeError::TruncatedJpeg), "{err}");
    }

    #[test]
    fn garbage_and_empty_are_errors_not_panics() {
        assert!(matches!(decode_image(&[]), Err(DecodeError::Empty)));
        let mut garbage = vec![0xFF, 0xD8, 0xFF, 0xE0];
        garbage.extend((0..4000u32).map(|i| (i * 7919 % 251) as u8));
        garbage.extend([0xFF, 0xD9]);
        assert!(decode_image(&garbage).is_err());
        assert!(decode_image(b"not an image at all").is_err());
    }

    #[test]
    fn yuyv_grey_and_size_check() {
        // Y=126, U=V=128 is mid grey in limited range.
        let buf = [126u8, 128, 126, 128].repeat(4 * 2 / 2);
        let img = yuyv_to_rgb(&buf, 4, 2).expect("converts");
        for p in img.pixels() {
            assert!(p.0.iter().all(|&c| (127..=129).contains(&c)), "{p:?}");
        }
        assert!(yuyv_to_rgb(&buf[..10], 4, 2).is_err());
        let mut longer = buf.clone();
        longer.extend([0u8; 4]);
        assert!(matches!(yuyv_to_rgb(&longer, 4, 2), Err(DecodeError::YuyvSize { .. })), "a size that does not match");
        let small = DecodeLimits { max_pixels: 7, ..DecodeLimits::default() };
        assert!(matches!(yuyv_to_rgb_within(&buf, 4, 2, &small), Err(DecodeError::TooManyPixels { .. })));
    }

    /// A valid little JPEG whose frame header (SOF0) claims `width` x `height`.
    pub fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
        let mut bytes = jpeg_bytes();
        let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).expect("SOF0");
        bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
        bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
        bytes
    }

    #[test]
    fn a_huge_header_is_refused_before_decoding() {
        let bytes = jpeg_claiming(60000, 60000);
        assert!(bytes.len() < 2000);
        let before = crate::stats::peak_rss_kb();
        let started = std::time::Instant::now();
        let err = decode_image(&bytes).unwrap_err();
        assert!(matches!(err, DecodeError::TooManyPixels { width: 60000, height: 60000, .. }), "{err}");
        assert!(err.is_too_large());
        // Refused from the header: no 10 GB buffer, no minutes of decoding.
        assert!(crate::stats::peak_rss_kb() < before + 100_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // Just under the limit still decodes (as garbage or an error, but not as "too large").
        let limits = DecodeLimits { max_pixels: 60000 * 60000, max_bytes: 1 << 20 };
        let tiny = DecodeLimits { max_pixels: 100, ..limits };
        assert!(matches!(decode_jpeg_within(&jpeg_bytes(), &tiny), Err(DecodeError::TooManyPixels { .. })));
        let small_file = DecodeLimits { max_bytes: 10, ..limits };
        assert!(matches!(decode_image_within(&jpeg_bytes(), &small_file), Err(DecodeError::FileTooLarge { .. })));
    }

    #[test]
    fn a_huge_png_header_is_refused() {
        let mut png = Vec::new();
        image::RgbImage::from_pixel(16, 12, image::Rgb([1, 2, 3]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .expect("png");
        assert!(decode_image(&png).is_ok());
        let tiny = DecodeLimits { max_pixels: 100, ..DecodeLimits::default() };
        assert!(matches!(decode_image_within(&png, &tiny), Err(DecodeError::TooManyPixels { width: 16, height: 12, .. })));
    }
}

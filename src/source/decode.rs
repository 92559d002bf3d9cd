//! Decoding captured bytes into RGB8 images: JPEG files and MJPEG frames, PNG files, YUYV frames.
//!
//! JPEG goes through libjpeg-turbo (the `mozjpeg` crate) on purpose: it is what Pillow uses, so
//! the daemon sees the same pixels the model was trained and calibrated on (checked by the
//! golden tests). The `image` crate's own JPEG decoder differs by a few levels.

use image::RgbImage;

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
    #[error("image is {width}x{height}; at least 8x8 is needed")]
    TooSmall { width: u32, height: u32 },
}

/// Decodes an encoded image (JPEG, or anything the `image` crate reads, e.g. PNG).
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let image = if bytes.starts_with(&[0xFF, 0xD8]) {
        decode_jpeg(bytes)?
    } else {
        image::load_from_memory(bytes)?.to_rgb8()
    };
    if image.width() < 8 || image.height() < 8 {
        return Err(DecodeError::TooSmall { width: image.width(), height: image.height() });
    }
    Ok(image)
}

/// Decodes a JPEG with libjpeg-turbo. libjpeg only warns about a truncated stream and fills the
/// rest with grey, so a missing end-of-image marker is treated as an error here.
pub fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, DecodeError> {
    let tail = &bytes[bytes.len().saturating_sub(64)..];
    if !tail.windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err(DecodeError::TruncatedJpeg);
    }
    // libjpeg's fatal errors unwind through the FFI boundary (the crate's design); keep them
    // from reaching the caller as a panic.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let decompress = mozjpeg::Decompress::new_mem(bytes)?;
        let mut started = decompress.rgb()?;
        let (width, height) = (started.width(), started.height());
        let pixels: Vec<u8> = started.read_scanlines::<u8>()?;
        started.finish()?;
        Ok::<_, std::io::Error>((width, height, pixels))
    }));
    let (width, height, pixels) = match result {
        Ok(Ok(decoded)) => decoded,
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

/// Converts a packed YUYV 4:2:2 frame (BT.601, limited range, as UVC cameras send) to RGB8.
pub fn yuyv_to_rgb(buf: &[u8], width: u32, height: u32) -> Result<RgbImage, DecodeError> {
    let want = width as usize * height as usize * 2;
    if buf.len() < want || width % 2 != 0 {
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
    }
}

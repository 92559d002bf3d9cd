//! Reads just enough of a JPEG stream to encapsulate it honestly: that it is
//! baseline (process 1, 8-bit, the only thing JPEG Baseline 1.2.840.10008.1.2.4.50
//! may carry), its size, and the colour model the decoder will produce, which
//! decides the Photometric Interpretation (PS3.5 8.2.1).

use super::encode::ObjectError;

/// What the DICOM header must say about an encapsulated JPEG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegInfo {
    pub width: u16,
    pub height: u16,
    pub photometric: JpegPhotometric,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpegPhotometric {
    /// YCbCr without chroma subsampling.
    YbrFull,
    /// YCbCr with subsampled chroma (4:2:2, and by PS3.5 8.2.1 also 4:2:0).
    YbrFull422,
    /// Components stored as R, G, B (Adobe transform 0, or component ids R G B).
    Rgb,
}

impl JpegPhotometric {
    pub fn as_str(self) -> &'static str {
        match self {
            JpegPhotometric::YbrFull => "YBR_FULL",
            JpegPhotometric::YbrFull422 => "YBR_FULL_422",
            JpegPhotometric::Rgb => "RGB",
        }
    }
}

struct Component {
    id: u8,
    sampling: u8,
}

pub fn inspect(bytes: &[u8]) -> Result<JpegInfo, ObjectError> {
    let fail = |why: &str| ObjectError::NotBaselineJpeg(why.to_owned());
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return Err(fail("no SOI marker at the start"));
    }
    if !bytes.ends_with(&[0xFF, 0xD9]) {
        return Err(fail(
            "no EOI marker at the end (truncated or trailing data)",
        ));
    }
    let mut jfif = false;
    let mut adobe_transform: Option<u8> = None;
    let mut frame: Option<(u16, u16, Vec<Component>)> = None;
    let mut at = 2;
    loop {
        // Markers may be preceded by fill bytes 0xFF.
        if at >= bytes.len() || bytes[at] != 0xFF {
            return Err(fail("malformed marker segment before the scan"));
        }
        while at < bytes.len() && bytes[at] == 0xFF {
            at += 1;
        }
        let marker = *bytes
            .get(at)
            .ok_or_else(|| fail("stream ends inside a marker"))?;
        at += 1;
        if (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            continue; // standalone markers carry no length
        }
        if at + 2 > bytes.len() {
            return Err(fail("stream ends inside a segment length"));
        }
        let length = u16::from_be_bytes([bytes[at], bytes[at + 1]]) as usize;
        if length < 2 || at + length > bytes.len() {
            return Err(fail("segment length runs past the end of the stream"));
        }
        let segment = &bytes[at + 2..at + length];
        match marker {
            0xE0 if segment.starts_with(b"JFIF\0") => jfif = true,
            0xEE if segment.starts_with(b"Adobe") && segment.len() >= 12 => {
                adobe_transform = Some(segment[11])
            }
            0xC0 => frame = Some(parse_sof(segment)?),
            0xC1 => return Err(fail("extended sequential (SOF1), not baseline")),
            0xC2 | 0xC6 | 0xCA | 0xCE => return Err(fail("progressive JPEG, not baseline")),
            0xC3 | 0xC7 | 0xCB | 0xCF => return Err(fail("lossless JPEG, not baseline")),
            0xC5 => return Err(fail("hierarchical JPEG, not baseline")),
            0xC9 | 0xCD => return Err(fail("arithmetic-coded JPEG, not baseline")),
            0xDA => break,
            _ => {}
        }
        at += length;
    }
    let (width, height, components) =
        frame.ok_or_else(|| fail("no SOF0 frame header before the scan"))?;
    let photometric = photometric(jfif, adobe_transform, &components)?;
    Ok(JpegInfo {
        width,
        height,
        photometric,
    })
}

fn parse_sof(segment: &[u8]) -> Result<(u16, u16, Vec<Component>), ObjectError> {
    let fail = |why: &str| ObjectError::NotBaselineJpeg(why.to_owned());
    if segment.len() < 6 {
        return Err(fail("SOF0 segment too short"));
    }
    if segment[0] != 8 {
        return Err(fail("sample precision is not 8 bits"));
    }
    let height = u16::from_be_bytes([segment[1], segment[2]]);
    let width = u16::from_be_bytes([segment[3], segment[4]]);
    if height == 0 || width == 0 {
        return Err(fail(
            "image height or width is 0 in SOF0 (DNL-defined height is not supported)",
        ));
    }
    let count = segment[5] as usize;
    if count != 3 {
        return Err(fail("not a 3-component colour image"));
    }
    if segment.len() < 6 + 3 * count {
        return Err(fail("SOF0 segment too short for its components"));
    }
    let components = (0..count)
        .map(|i| Component {
            id: segment[6 + 3 * i],
            sampling: segment[7 + 3 * i],
        })
        .collect();
    Ok((width, height, components))
}

/// The colour model follows the conventions libjpeg applies when decoding:
/// an Adobe APP14 transform flag wins, then JFIF (always YCbCr), then
/// component ids 'R','G','B'; anything else is YCbCr.
fn photometric(
    jfif: bool,
    adobe_transform: Option<u8>,
    components: &[Component],
) -> Result<JpegPhotometric, ObjectError> {
    let is_rgb = match adobe_transform {
        Some(0) => true,
        Some(1) => false,
        Some(_) => {
            return Err(ObjectError::NotBaselineJpeg(
                "Adobe YCCK colour transform on a 3-component image".into(),
            ))
        }
        None if jfif => false,
        None => components.iter().map(|c| c.id).eq(*b"RGB"),
    };
    if is_rgb {
        if components
            .iter()
            .any(|c| c.sampling != components[0].sampling)
        {
            return Err(ObjectError::NotBaselineJpeg(
                "RGB JPEG with subsampled components".into(),
            ));
        }
        return Ok(JpegPhotometric::Rgb);
    }
    let subsampled = components
        .iter()
        .any(|c| c.sampling != components[0].sampling);
    Ok(if subsampled {
        JpegPhotometric::YbrFull422
    } else {
        JpegPhotometric::YbrFull
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A syntactically minimal stream: SOI, optional APP, SOF0, SOS, EOI.
    fn stream(app: &[u8], components: &[(u8, u8)]) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        v.extend_from_slice(app);
        let sof_len = 8 + 3 * components.len() as u16;
        v.extend_from_slice(&[0xFF, 0xC0]);
        v.extend_from_slice(&sof_len.to_be_bytes());
        v.extend_from_slice(&[8, 0, 16, 0, 32, components.len() as u8]);
        for (id, s) in components {
            v.extend_from_slice(&[*id, *s, 0]);
        }
        v.extend_from_slice(&[0xFF, 0xDA, 0, 2, 0xFF, 0xD9]);
        v
    }

    const JFIF: &[u8] = &[
        0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0,
    ];

    #[test]
    fn jfif_420_is_ybr_full_422() {
        let info = inspect(&stream(JFIF, &[(1, 0x22), (2, 0x11), (3, 0x11)])).unwrap();
        assert_eq!(
            info,
            JpegInfo {
                width: 32,
                height: 16,
                photometric: JpegPhotometric::YbrFull422
            }
        );
    }

    #[test]
    fn jfif_444_is_ybr_full() {
        let info = inspect(&stream(JFIF, &[(1, 0x11), (2, 0x11), (3, 0x11)])).unwrap();
        assert_eq!(info.photometric, JpegPhotometric::YbrFull);
    }

    #[test]
    fn rgb_component_ids_are_rgb() {
        let info = inspect(&stream(&[], &[(b'R', 0x11), (b'G', 0x11), (b'B', 0x11)])).unwrap();
        assert_eq!(info.photometric, JpegPhotometric::Rgb);
    }

    #[test]
    fn adobe_transform_zero_is_rgb() {
        let adobe = [
            0xFF, 0xEE, 0, 14, b'A', b'd', b'o', b'b', b'e', 0, 100, 0, 0, 0, 0, 0,
        ];
        let info = inspect(&stream(&adobe, &[(1, 0x11), (2, 0x11), (3, 0x11)])).unwrap();
        assert_eq!(info.photometric, JpegPhotometric::Rgb);
    }

    #[test]
    fn progressive_and_grey_and_garbage_are_refused() {
        let mut progressive = stream(JFIF, &[(1, 0x22), (2, 0x11), (3, 0x11)]);
        let sof = progressive
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .unwrap();
        progressive[sof + 1] = 0xC2;
        assert!(inspect(&progressive).is_err());
        assert!(inspect(&stream(JFIF, &[(1, 0x11)])).is_err());
        assert!(inspect(b"not a jpeg").is_err());
        assert!(inspect(&[0xFF, 0xD8, 0xFF, 0xD9]).is_err());
        let mut truncated = stream(JFIF, &[(1, 0x22), (2, 0x11), (3, 0x11)]);
        truncated.truncate(truncated.len() - 2);
        assert!(inspect(&truncated).is_err());
    }

    #[test]
    fn no_prefix_or_corruption_panics() {
        let good = stream(JFIF, &[(1, 0x22), (2, 0x11), (3, 0x11)]);
        for end in 0..good.len() {
            let _ = inspect(&good[..end]);
        }
        for at in 0..good.len() {
            for byte in [0x00, 0xFF, 0xC0, 0xDA, 0x7F] {
                let mut bad = good.clone();
                bad[at] = byte;
                let _ = inspect(&bad);
            }
        }
    }
}

//! The photographic image instance: the frame the assessment was made on, as a
//! Dermoscopic Photography Image or, for archives that lack that SOP class, a
//! VL Photographic Image (PS3.3 A.32.4, A.32.11).

use dicom_core::value::PixelFragmentSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::encode::{
    code_item, cs_multi, da, dt, empty, encode, number, sequence, text, tm, uid, us, Instance,
    ObjectError, TextVr, UtcStamp, EXPLICIT_VR_LITTLE_ENDIAN, JPEG_BASELINE,
};
use super::filing::Filing;
use super::jpeg;
use super::modules::{put_general_equipment, put_general_study, put_patient, put_sop_common};
use super::uid::{uids, Uids};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SopClass {
    /// Dermoscopic Photography Image Storage.
    Dermoscopic,
    /// VL Photographic Image Storage, for archives that refuse the former.
    VlPhotographic,
}

impl SopClass {
    pub fn uid(self) -> &'static str {
        match self {
            SopClass::Dermoscopic => "1.2.840.10008.5.1.4.1.1.77.1.7",
            SopClass::VlPhotographic => "1.2.840.10008.5.1.4.1.1.77.1.4",
        }
    }

    /// The modality each IOD prescribes (Dermoscopic Photography Series: DMS;
    /// VL Photographic: XC, external-camera photography).
    fn modality(self) -> &'static str {
        match self {
            SopClass::Dermoscopic => "DMS",
            SopClass::VlPhotographic => "XC",
        }
    }
}

pub enum Pixels<'a> {
    /// The camera's baseline JPEG, encapsulated unchanged.
    Jpeg(&'a [u8]),
    /// Interleaved 8-bit RGB, for an archive that refused JPEG; the caller
    /// decoded it from the camera's JPEG.
    Rgb {
        pixels: &'a [u8],
        width: u16,
        height: u16,
    },
}

/// Each assessment has its own image series (number 1) and report series
/// (number 2), so a viewer lists an assessment's image before its report.
const IMAGE_SERIES_NUMBER: &str = "1";

pub fn image_instance(
    filing: &Filing,
    sop: SopClass,
    pixels: Pixels,
) -> Result<Instance, ObjectError> {
    let uids = uids(filing);
    let mut object = InMemDicomObject::new_empty();
    put_patient(&mut object, filing)?;
    put_general_study(&mut object, filing, &uids)?;
    put_series(&mut object, filing, sop, &uids)?;
    // General Equipment writes Manufacturer, Model Name, Device Serial Number
    // and Software Versions all non-empty, which also satisfies the type 1
    // Enhanced General Equipment module the Dermoscopic IOD requires.
    put_general_equipment(&mut object, filing)?;
    put_acquisition_and_image(&mut object, filing, sop)?;
    let transfer_syntax = put_pixels(&mut object, filing, pixels)?;
    put_sop_common(&mut object, filing, sop.uid(), &uids.image_instance)?;
    encode(&object, sop.uid(), &uids.image_instance, transfer_syntax)
}

/// General Series (+ the IOD's series specialisation: Modality).
fn put_series(
    object: &mut InMemDicomObject,
    filing: &Filing,
    sop: SopClass,
    uids: &Uids,
) -> Result<(), ObjectError> {
    let captured = UtcStamp::new(
        filing.frame.captured_at,
        "frame captured_at (Series Date/Time)",
    )?;
    object.put(text(
        tags::MODALITY,
        TextVr::Cs,
        "Modality",
        sop.modality(),
    )?);
    object.put(uid(
        tags::SERIES_INSTANCE_UID,
        "Series Instance UID",
        &uids.image_series,
    )?);
    object.put(number(
        tags::SERIES_NUMBER,
        VR::IS,
        IMAGE_SERIES_NUMBER.to_owned(),
    ));
    object.put(da(tags::SERIES_DATE, &captured));
    object.put(tm(tags::SERIES_TIME, &captured));
    object.put(text(
        tags::SERIES_DESCRIPTION,
        TextVr::Lo,
        "Series Description (lesion)",
        &series_description(filing),
    )?);
    // Type 2C, required when the body part is paired: the station does not
    // know the side as a coded value (the free-text site may say it).
    object.put(empty(tags::LATERALITY, VR::CS));
    if sop == SopClass::Dermoscopic {
        put_dermoscopic_frame_of_reference(object, uids)?;
    }
    Ok(())
}

/// Frame of Reference, mandatory in the Dermoscopic IOD so that follow-up
/// images of the same lesion could share one. We have no such tracking: each
/// image gets its own, derived from the assessment like the other UIDs.
fn put_dermoscopic_frame_of_reference(
    object: &mut InMemDicomObject,
    uids: &Uids,
) -> Result<(), ObjectError> {
    object.put(uid(
        tags::FRAME_OF_REFERENCE_UID,
        "Frame of Reference UID",
        &uids.image_frame_of_reference,
    )?);
    object.put(empty(tags::POSITION_REFERENCE_INDICATOR, VR::LO));
    Ok(())
}

/// Dermoscopic Image module (PS3.3 C.8.12.x): the optics, all type 2. The
/// station does not know them (the dermatoscope attachment is not reported
/// to it), so they are present and empty.
fn put_dermoscopic_image(object: &mut InMemDicomObject) {
    object.put(empty(tags::CONTACT_METHOD, VR::CS));
    object.put(empty(tags::LIGHT_SOURCE_POLARIZATION, VR::CS));
    object.put(empty(tags::EMITTER_COLOR_TEMPERATURE, VR::DS));
    object.put(empty(tags::OPTICAL_MAGNIFICATION_FACTOR, VR::DS));
}

/// "Lesion L1" or "Lesion": which lesion of the visit this image shows.
pub(crate) fn series_description(filing: &Filing) -> String {
    match filing.lesion.id {
        Some(id) => format!("Lesion {id}"),
        None => "Lesion".to_owned(),
    }
}

/// General Acquisition, General Image, VL Image, Acquisition Context, and the
/// anatomy of the lesion.
fn put_acquisition_and_image(
    object: &mut InMemDicomObject,
    filing: &Filing,
    sop: SopClass,
) -> Result<(), ObjectError> {
    let captured = UtcStamp::new(
        filing.frame.captured_at,
        "frame captured_at (Content/Acquisition Date/Time)",
    )?;
    object.put(dt(tags::ACQUISITION_DATE_TIME, &captured));
    object.put(da(tags::CONTENT_DATE, &captured));
    object.put(tm(tags::CONTENT_TIME, &captured));
    object.put(number(tags::INSTANCE_NUMBER, VR::IS, "1".to_owned()));
    object.put(empty(tags::PATIENT_ORIENTATION, VR::CS));
    object.put(cs_multi(tags::IMAGE_TYPE, &["ORIGINAL", "PRIMARY"]));
    object.put(text(
        tags::BURNED_IN_ANNOTATION,
        TextVr::Cs,
        "Burned In Annotation",
        "NO",
    )?);
    // A dermoscopic field of view is a few millimetres of skin: no face or
    // other feature that identifies the patient.
    object.put(text(
        tags::RECOGNIZABLE_VISUAL_FEATURES,
        TextVr::Cs,
        "Recognizable Visual Features",
        "NO",
    )?);
    // Type 2: the station records no acquisition context.
    object.put(empty(tags::ACQUISITION_CONTEXT_SEQUENCE, VR::SQ));
    if let Some(comments) = image_comments(filing) {
        object.put(text(
            tags::IMAGE_COMMENTS,
            TextVr::Lt,
            "Image Comments (lesion, body site)",
            &comments,
        )?);
    }
    if let Some(region) = anatomic_region(filing)? {
        object.put(sequence(tags::ANATOMIC_REGION_SEQUENCE, vec![region]));
    }
    if sop == SopClass::Dermoscopic {
        put_dermoscopic_image(object);
    }
    Ok(())
}

/// "Lesion L1; body site: left forearm" — the lesion and the site as the
/// clinician entered them, for a human reading the image in any viewer.
fn image_comments(filing: &Filing) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(id) = filing.lesion.id {
        parts.push(format!("Lesion {id}"));
    }
    if let Some(site) = filing.lesion.body_site {
        parts.push(format!("body site: {site}"));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Anatomic Region Sequence item: the SNOMED CT concept, with the clinician's
/// free text as its meaning when it fits (LO, 64 bytes), else a neutral one.
pub(crate) fn anatomic_region(filing: &Filing) -> Result<Option<InMemDicomObject>, ObjectError> {
    let Some(code) = filing.lesion.body_site_snomed else {
        return Ok(None);
    };
    if code.is_empty() || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ObjectError::InvalidCode {
            attribute: "body site SNOMED CT concept id",
            value: code.to_owned(),
        });
    }
    let meaning = match filing.lesion.body_site {
        Some(site) if !site.is_empty() && site.len() <= 64 && !site.contains('\\') => {
            site.to_owned()
        }
        _ => format!("SNOMED CT {code}"),
    };
    code_item(code, "SCT", &meaning).map(Some)
}

/// Image Pixel module and the compression history; returns the transfer syntax.
fn put_pixels(
    object: &mut InMemDicomObject,
    filing: &Filing,
    pixels: Pixels,
) -> Result<&'static str, ObjectError> {
    let frame = &filing.frame;
    let (photometric, width, height, transfer_syntax, pixel_data) = match pixels {
        Pixels::Jpeg(bytes) => {
            let info = jpeg::inspect(bytes)?;
            // The VL image IODs allow RGB and YBR_FULL_422 for JPEG, not
            // YBR_FULL: a 4:4:4 YCbCr stream cannot be stored as it is.
            if info.photometric == jpeg::JpegPhotometric::YbrFull {
                return Err(ObjectError::JpegNotStorable(
                    "YCbCr without chroma subsampling (YBR_FULL), which the VL image IODs do not allow; decode it and file Pixels::Rgb",
                ));
            }
            if (info.width, info.height) != (frame.width, frame.height) {
                return Err(ObjectError::JpegSizeMismatch {
                    jpeg_width: info.width,
                    jpeg_height: info.height,
                    frame_width: frame.width,
                    frame_height: frame.height,
                });
            }
            // One fragment holding the stream unchanged, padded to even length
            // with a trailing zero (PS3.5 A.4); empty Basic Offset Table.
            let mut fragment = bytes.to_vec();
            if fragment.len() % 2 == 1 {
                fragment.push(0);
            }
            let value = PixelFragmentSequence::new_fragments(vec![fragment]);
            let element = DataElement::new(tags::PIXEL_DATA, VR::OB, value);
            (
                info.photometric.as_str(),
                info.width,
                info.height,
                JPEG_BASELINE,
                element,
            )
        }
        Pixels::Rgb {
            pixels,
            width,
            height,
        } => {
            if width == 0 || height == 0 {
                return Err(ObjectError::EmptyImage { width, height });
            }
            let expected = width as usize * height as usize * 3;
            if pixels.len() != expected {
                return Err(ObjectError::PixelBufferSize {
                    width,
                    height,
                    expected,
                    actual: pixels.len(),
                });
            }
            let mut data = pixels.to_vec();
            if data.len() % 2 == 1 {
                data.push(0); // OB values have even length
            }
            let element = DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(data));
            ("RGB", width, height, EXPLICIT_VR_LITTLE_ENDIAN, element)
        }
    };
    object.put(us(tags::SAMPLES_PER_PIXEL, 3));
    object.put(text(
        tags::PHOTOMETRIC_INTERPRETATION,
        TextVr::Cs,
        "Photometric Interpretation",
        photometric,
    )?);
    object.put(us(tags::PLANAR_CONFIGURATION, 0));
    object.put(us(tags::ROWS, height));
    object.put(us(tags::COLUMNS, width));
    object.put(us(tags::BITS_ALLOCATED, 8));
    object.put(us(tags::BITS_STORED, 8));
    object.put(us(tags::HIGH_BIT, 7));
    object.put(us(tags::PIXEL_REPRESENTATION, 0));
    // Both paths carry JPEG-compressed pixels: RGB is decoded from the camera's
    // JPEG, and once lossy, an image stays marked lossy (PS3.3 C.7.6.1.1.5).
    object.put(text(
        tags::LOSSY_IMAGE_COMPRESSION,
        TextVr::Cs,
        "Lossy Image Compression",
        "01",
    )?);
    object.put(text(
        tags::LOSSY_IMAGE_COMPRESSION_METHOD,
        TextVr::Cs,
        "Lossy Image Compression Method",
        "ISO_10918_1",
    )?);
    if let Pixels::Jpeg(bytes) = pixels {
        let ratio = (width as f64 * height as f64 * 3.0) / bytes.len().max(1) as f64;
        object.put(number(
            tags::LOSSY_IMAGE_COMPRESSION_RATIO,
            VR::DS,
            format_ds(ratio),
        ));
    }
    object.put(pixel_data);
    Ok(transfer_syntax)
}

/// A DS value within its 16 bytes.
fn format_ds(value: f64) -> String {
    let s = format!("{value:.4}");
    if s.len() <= 16 {
        s
    } else {
        format!("{value:.0}")
    }
}

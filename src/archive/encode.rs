//! What the object layer hands out (`Instance`), how it fails (`ObjectError`),
//! and the checked building blocks every module uses: text values within their
//! VR's limits, UTC dates and times, sequences, codes, and data set encoding.

use std::time::{SystemTime, UNIX_EPOCH};

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::mem::InMemElement;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use time::macros::format_description;
use time::OffsetDateTime;

use super::uid::is_valid_uid;

pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";
pub const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";

/// Our implementation class UID for the file meta group (a 2.25 UUID-derived
/// root; fixed so that files written by any station say "lesiond").
const IMPLEMENTATION_CLASS_UID: &str = "2.25.118150476935946290416093395296651316853";
const IMPLEMENTATION_VERSION_NAME: &str = "LESIOND";

/// One composite instance, ready for C-STORE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    /// The data set encoded in `transfer_syntax_uid`, without preamble or file
    /// meta group: what a C-STORE sends in P-DATA.
    pub dataset: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("the frame is not a JPEG the archive can take as JPEG Baseline: {0}")]
    NotBaselineJpeg(String),
    #[error("the JPEG cannot be encapsulated as it is: {0}")]
    JpegNotStorable(&'static str),
    #[error(
        "the JPEG is {jpeg_width}x{jpeg_height} but the frame says {frame_width}x{frame_height}"
    )]
    JpegSizeMismatch {
        jpeg_width: u16,
        jpeg_height: u16,
        frame_width: u16,
        frame_height: u16,
    },
    #[error("the RGB pixel buffer holds {actual} bytes but {width}x{height} interleaved 8-bit RGB needs {expected}")]
    PixelBufferSize {
        width: u16,
        height: u16,
        expected: usize,
        actual: usize,
    },
    #[error("the image is empty ({width}x{height})")]
    EmptyImage { width: u16, height: u16 },
    #[error(
        "{attribute}: {len} bytes, longer than the {max} DICOM allows for VR {vr}"
    )]
    TooLong {
        attribute: &'static str,
        vr: &'static str,
        max: usize,
        len: usize,
        value: String,
    },
    // Never the value in the message: it may be patient data, and messages reach the log.
    #[error("{attribute} contains a backslash or control character, which VR {vr} does not allow")]
    ForbiddenCharacter {
        attribute: &'static str,
        vr: &'static str,
        value: String,
    },
    #[error("{attribute}: {value:?} is not a valid DICOM UID (digits and dots, no leading zeros, at most 64 characters)")]
    InvalidUid {
        attribute: &'static str,
        value: String,
    },
    #[error("patient birth date is not a date in the form YYYYMMDD")]
    InvalidBirthDate(String),
    #[error("patient sex is not one of F, M, O")]
    InvalidSex(String),
    #[error("{attribute}: {value:?} is empty or contains characters other than letters, digits, '-' and '_' (a code value)")]
    InvalidCode {
        attribute: &'static str,
        value: String,
    },
    #[error(
        "the top class index {top} is out of range: the result has {count} class probabilities"
    )]
    TopOutOfRange { top: usize, count: usize },
    #[error("{attribute}: {value} is not a finite number")]
    NotFinite { attribute: &'static str, value: f32 },
    #[error(
        "{attribute}: the time is before 1970 or after 9999 and cannot be written as a DICOM date"
    )]
    TimeOutOfRange { attribute: &'static str },
    #[error("the image instance given to the report does not match {0}")]
    ImageReference(&'static str),
    #[error("transfer syntax {0} is unknown to the DICOM encoder")]
    UnknownTransferSyntax(String),
    #[error("could not encode the data set: {0}")]
    Encode(String),
}

/// Value representations this layer writes, with their length limits in bytes
/// (PS3.5 6.2; UTF-8 may take several bytes per character, and counting bytes
/// is the stricter reading, so validators agree).
#[derive(Clone, Copy)]
pub enum TextVr {
    Cs,
    Sh,
    Lo,
    Pn,
    St,
    Lt,
    Ut,
}

impl TextVr {
    fn vr(self) -> VR {
        match self {
            TextVr::Cs => VR::CS,
            TextVr::Sh => VR::SH,
            TextVr::Lo => VR::LO,
            TextVr::Pn => VR::PN,
            TextVr::St => VR::ST,
            TextVr::Lt => VR::LT,
            TextVr::Ut => VR::UT,
        }
    }
    fn name(self) -> &'static str {
        match self {
            TextVr::Cs => "CS",
            TextVr::Sh => "SH",
            TextVr::Lo => "LO",
            TextVr::Pn => "PN",
            TextVr::St => "ST",
            TextVr::Lt => "LT",
            TextVr::Ut => "UT",
        }
    }
    fn max_len(self) -> usize {
        match self {
            TextVr::Cs => 16,
            TextVr::Sh => 16,
            TextVr::Lo => 64,
            // Per component group; we write one group (alphabetic).
            TextVr::Pn => 64,
            TextVr::St => 1024,
            TextVr::Lt => 10240,
            TextVr::Ut => u32::MAX as usize - 2,
        }
    }
    /// Multi-line texts keep their line breaks; single-line VRs take none.
    fn allows(self, c: char) -> bool {
        match self {
            TextVr::St | TextVr::Lt | TextVr::Ut => {
                !c.is_control() || matches!(c, '\r' | '\n' | '\t' | '\x0c')
            }
            _ => !c.is_control() && c != '\\',
        }
    }
}

/// A checked text value. `attribute` names the attribute in error messages.
pub fn text(
    tag: Tag,
    vr: TextVr,
    attribute: &'static str,
    value: &str,
) -> Result<InMemElement, ObjectError> {
    check_text(vr, attribute, value)?;
    Ok(DataElement::new(tag, vr.vr(), PrimitiveValue::from(value)))
}

pub fn check_text(vr: TextVr, attribute: &'static str, value: &str) -> Result<(), ObjectError> {
    if value.len() > vr.max_len() {
        return Err(ObjectError::TooLong {
            attribute,
            vr: vr.name(),
            max: vr.max_len(),
            len: value.len(),
            value: value.to_owned(),
        });
    }
    if !value.chars().all(|c| vr.allows(c)) {
        return Err(ObjectError::ForbiddenCharacter {
            attribute,
            vr: vr.name(),
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// A type 2 text attribute: present, empty when unknown.
pub fn text_or_empty(
    tag: Tag,
    vr: TextVr,
    attribute: &'static str,
    value: Option<&str>,
) -> Result<InMemElement, ObjectError> {
    match value {
        Some(v) => text(tag, vr, attribute, v),
        None => Ok(empty(tag, vr.vr())),
    }
}

/// A multi-valued code string, e.g. Image Type "ORIGINAL\PRIMARY".
pub fn cs_multi(tag: Tag, values: &[&str]) -> InMemElement {
    let values: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
    DataElement::new(tag, VR::CS, PrimitiveValue::Strs(values.into()))
}

pub fn empty(tag: Tag, vr: VR) -> InMemElement {
    DataElement::empty(tag, vr)
}

pub fn uid(tag: Tag, attribute: &'static str, value: &str) -> Result<InMemElement, ObjectError> {
    if !is_valid_uid(value) {
        return Err(ObjectError::InvalidUid {
            attribute,
            value: value.to_owned(),
        });
    }
    Ok(DataElement::new(tag, VR::UI, PrimitiveValue::from(value)))
}

pub fn us(tag: Tag, value: u16) -> InMemElement {
    DataElement::new(tag, VR::US, PrimitiveValue::from(value))
}

/// IS or DS written from an already formatted number.
pub fn number(tag: Tag, vr: VR, value: String) -> InMemElement {
    DataElement::new(tag, vr, PrimitiveValue::from(value))
}

pub fn sequence(tag: Tag, items: Vec<InMemDicomObject>) -> InMemElement {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

/// One item of a code sequence (Basic Code Sequence Macro, PS3.3 8.8).
pub fn code_item(
    value: &str,
    scheme: &str,
    meaning: &str,
) -> Result<InMemDicomObject, ObjectError> {
    use dicom_dictionary_std::tags;
    Ok(InMemDicomObject::from_element_iter([
        text(
            tags::CODE_VALUE,
            TextVr::Sh,
            "Code Value (0008,0100)",
            value,
        )?,
        text(
            tags::CODING_SCHEME_DESIGNATOR,
            TextVr::Sh,
            "Coding Scheme Designator (0008,0102)",
            scheme,
        )?,
        text(
            tags::CODE_MEANING,
            TextVr::Lo,
            "Code Meaning (0008,0104)",
            meaning,
        )?,
    ]))
}

pub fn da(tag: Tag, stamp: &UtcStamp) -> InMemElement {
    DataElement::new(tag, VR::DA, PrimitiveValue::from(stamp.date()))
}

pub fn tm(tag: Tag, stamp: &UtcStamp) -> InMemElement {
    DataElement::new(tag, VR::TM, PrimitiveValue::from(stamp.time()))
}

pub fn dt(tag: Tag, stamp: &UtcStamp) -> InMemElement {
    DataElement::new(tag, VR::DT, PrimitiveValue::from(stamp.datetime()))
}

/// A moment in UTC, formatted for DA, TM and DT.
pub struct UtcStamp {
    moment: OffsetDateTime,
}

impl UtcStamp {
    pub fn new(at: SystemTime, attribute: &'static str) -> Result<UtcStamp, ObjectError> {
        let out_of_range = || ObjectError::TimeOutOfRange { attribute };
        let since_epoch = at.duration_since(UNIX_EPOCH).map_err(|_| out_of_range())?;
        let moment = OffsetDateTime::from_unix_timestamp_nanos(since_epoch.as_nanos() as i128)
            .map_err(|_| out_of_range())?;
        Ok(UtcStamp { moment })
    }

    pub fn date(&self) -> String {
        self.format(format_description!("[year][month][day]"))
    }

    /// Microsecond resolution: DICOM TM allows six fractional digits.
    pub fn time(&self) -> String {
        self.format(format_description!(
            "[hour][minute][second].[subsecond digits:6]"
        ))
    }

    pub fn datetime(&self) -> String {
        format!("{}{}+0000", self.date(), self.time())
    }

    fn format(&self, description: &[time::format_description::BorrowedFormatItem<'_>]) -> String {
        // Formatting an in-range UTC moment into a String cannot fail; the
        // fallback only keeps this path panic-free.
        self.moment.format(description).unwrap_or_default()
    }
}

/// Encode `object` as a data set in `transfer_syntax_uid`, without file meta.
pub fn encode(
    object: &InMemDicomObject,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    transfer_syntax_uid: &str,
) -> Result<Instance, ObjectError> {
    let ts = TransferSyntaxRegistry
        .get(transfer_syntax_uid)
        .ok_or_else(|| ObjectError::UnknownTransferSyntax(transfer_syntax_uid.to_owned()))?;
    let mut dataset = Vec::new();
    object
        .write_dataset_with_ts(&mut dataset, ts)
        .map_err(|e| ObjectError::Encode(e.to_string()))?;
    Ok(Instance {
        sop_class_uid: sop_class_uid.to_owned(),
        sop_instance_uid: sop_instance_uid.to_owned(),
        transfer_syntax_uid: transfer_syntax_uid.to_owned(),
        dataset,
    })
}

/// A DICOM Part 10 file: 128-byte preamble, "DICM", file meta group, data set.
/// For tests, validation and debugging; the archive itself sends `dataset`.
pub fn to_file_bytes(inst: &Instance) -> Result<Vec<u8>, ObjectError> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(inst.sop_class_uid.as_str())
        .media_storage_sop_instance_uid(inst.sop_instance_uid.as_str())
        .transfer_syntax(inst.transfer_syntax_uid.as_str())
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .build()
        .map_err(|e| ObjectError::Encode(e.to_string()))?;
    let mut file = vec![0u8; 128];
    file.extend_from_slice(b"DICM");
    meta.write(&mut file)
        .map_err(|e| ObjectError::Encode(e.to_string()))?;
    file.extend_from_slice(&inst.dataset);
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_stamp_formats() {
        let at = UNIX_EPOCH + Duration::from_micros(1_764_921_600_123_456);
        let s = UtcStamp::new(at, "test").unwrap();
        assert_eq!(s.date(), "20251205");
        assert_eq!(s.time(), "080000.123456");
        assert_eq!(s.datetime(), "20251205080000.123456+0000");
    }

    #[test]
    fn before_epoch_is_an_error() {
        let at = UNIX_EPOCH - Duration::from_secs(1);
        assert!(matches!(
            UtcStamp::new(at, "t"),
            Err(ObjectError::TimeOutOfRange { .. })
        ));
    }

    #[test]
    fn text_limits() {
        use dicom_dictionary_std::tags;
        assert!(text(tags::ACCESSION_NUMBER, TextVr::Sh, "a", "1234567890123456").is_ok());
        assert!(matches!(
            text(tags::ACCESSION_NUMBER, TextVr::Sh, "a", "12345678901234567"),
            Err(ObjectError::TooLong { .. })
        ));
        assert!(matches!(
            text(tags::PATIENT_ID, TextVr::Lo, "a", "a\\b"),
            Err(ObjectError::ForbiddenCharacter { .. })
        ));
        assert!(text(tags::IMAGE_COMMENTS, TextVr::Lt, "a", "line1\r\nline2").is_ok());
    }

    #[test]
    fn implementation_class_uid_is_valid() {
        assert!(is_valid_uid(IMPLEMENTATION_CLASS_UID));
    }
}

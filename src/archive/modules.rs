//! Modules shared by the image and the report: Patient, General Study,
//! General Equipment and SOP Common (PS3.3 C.7.1.1, C.7.2.1, C.7.5.1, C.12.1).
//! Both instances of one assessment carry identical patient and study values,
//! which the archive requires of instances in one study.

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::encode::{da, empty, text, text_or_empty, tm, uid, ObjectError, TextVr, UtcStamp};
use super::filing::Filing;
use super::uid::Uids;

/// The manufacturer this software writes into every object.
pub const MANUFACTURER: &str = "lesiond";
/// Manufacturer's Model Name: the software is the device.
pub const MODEL_NAME: &str = "lesiond dermatoscope station";

/// UTF-8: patient names and free text may be non-ASCII.
const CHARACTER_SET: &str = "ISO_IR 192";

pub fn put_patient(object: &mut InMemDicomObject, filing: &Filing) -> Result<(), ObjectError> {
    let patient = &filing.patient;
    object.put(text_or_empty(
        tags::PATIENT_NAME,
        TextVr::Pn,
        "Patient's Name (0010,0010)",
        patient.name,
    )?);
    object.put(text(
        tags::PATIENT_ID,
        TextVr::Lo,
        "Patient ID (0010,0020)",
        patient.id,
    )?);
    if let Some(date) = patient.birth_date {
        if !is_yyyymmdd(date) {
            return Err(ObjectError::InvalidBirthDate(date.to_owned()));
        }
    }
    object.put(match patient.birth_date {
        Some(date) => dicom_core::DataElement::new(
            tags::PATIENT_BIRTH_DATE,
            VR::DA,
            dicom_core::PrimitiveValue::from(date),
        ),
        None => empty(tags::PATIENT_BIRTH_DATE, VR::DA),
    });
    if let Some(sex) = patient.sex {
        if !matches!(sex, "F" | "M" | "O") {
            return Err(ObjectError::InvalidSex(sex.to_owned()));
        }
    }
    object.put(text_or_empty(
        tags::PATIENT_SEX,
        TextVr::Cs,
        "Patient's Sex (0010,0040)",
        patient.sex,
    )?);
    Ok(())
}

pub fn put_general_study(
    object: &mut InMemDicomObject,
    filing: &Filing,
    uids: &Uids,
) -> Result<(), ObjectError> {
    let visit = &filing.visit;
    let started = UtcStamp::new(visit.started_at, "visit start (Study Date/Time)")?;
    object.put(uid(
        tags::STUDY_INSTANCE_UID,
        "Study Instance UID (0020,000D)",
        &uids.study,
    )?);
    object.put(da(tags::STUDY_DATE, &started));
    object.put(tm(tags::STUDY_TIME, &started));
    // Type 2: the station has no referring physician.
    object.put(empty(tags::REFERRING_PHYSICIAN_NAME, VR::PN));
    // A short local id for people and DICOMDIRs: the context's first 16 hex digits.
    let study_id: String = visit
        .context_id
        .chars()
        .filter(|c| *c != '-')
        .take(16)
        .collect();
    object.put(text(
        tags::STUDY_ID,
        TextVr::Sh,
        "Study ID (from visit context_id)",
        &study_id,
    )?);
    object.put(text_or_empty(
        tags::ACCESSION_NUMBER,
        TextVr::Sh,
        "Accession Number (0008,0050)",
        visit.accession_number,
    )?);
    Ok(())
}

pub fn put_general_equipment(
    object: &mut InMemDicomObject,
    filing: &Filing,
) -> Result<(), ObjectError> {
    object.put(text(
        tags::MANUFACTURER,
        TextVr::Lo,
        "Manufacturer",
        MANUFACTURER,
    )?);
    // Station Name is SH (16 bytes) and optional: a longer station id still
    // identifies the station in Device Serial Number (LO, 64 bytes).
    if filing.station_id.len() <= 16 {
        object.put(text(
            tags::STATION_NAME,
            TextVr::Sh,
            "Station Name (0008,1010)",
            filing.station_id,
        )?);
    }
    object.put(text(
        tags::MANUFACTURER_MODEL_NAME,
        TextVr::Lo,
        "Manufacturer's Model Name",
        MODEL_NAME,
    )?);
    object.put(text(
        tags::DEVICE_SERIAL_NUMBER,
        TextVr::Lo,
        "Device Serial Number (station id)",
        filing.station_id,
    )?);
    object.put(software_versions(filing)?);
    Ok(())
}

/// Software Versions (LO, multi-valued): lesiond's version, then the model id.
fn software_versions(filing: &Filing) -> Result<dicom_object::mem::InMemElement, ObjectError> {
    let attribute = "Software Versions (0018,1020)";
    super::encode::check_text(TextVr::Lo, attribute, filing.software_version)?;
    super::encode::check_text(TextVr::Lo, attribute, filing.model.id)?;
    let values = vec![
        filing.software_version.to_owned(),
        filing.model.id.to_owned(),
    ];
    Ok(dicom_core::DataElement::new(
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        dicom_core::PrimitiveValue::Strs(values.into()),
    ))
}

/// SOP Common. The instance's creation time is the assessment time, not the
/// wall clock, so that a resend after a crash encodes the identical object.
pub fn put_sop_common(
    object: &mut InMemDicomObject,
    filing: &Filing,
    sop_class_uid: &str,
    sop_instance_uid: &str,
) -> Result<(), ObjectError> {
    let assessed = UtcStamp::new(
        filing.assessed_at,
        "assessed_at (Instance Creation Date/Time)",
    )?;
    object.put(text(
        tags::SPECIFIC_CHARACTER_SET,
        TextVr::Cs,
        "Specific Character Set",
        CHARACTER_SET,
    )?);
    object.put(da(tags::INSTANCE_CREATION_DATE, &assessed));
    object.put(tm(tags::INSTANCE_CREATION_TIME, &assessed));
    object.put(uid(tags::SOP_CLASS_UID, "SOP Class UID", sop_class_uid)?);
    object.put(uid(
        tags::SOP_INSTANCE_UID,
        "SOP Instance UID",
        sop_instance_uid,
    )?);
    object.put(text(
        tags::TIMEZONE_OFFSET_FROM_UTC,
        TextVr::Sh,
        "Timezone Offset From UTC",
        "+0000",
    )?);
    Ok(())
}

fn is_yyyymmdd(date: &str) -> bool {
    let b = date.as_bytes();
    if b.len() != 8 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let month = (b[4] - b'0') * 10 + (b[5] - b'0');
    let day = (b[6] - b'0') * 10 + (b[7] - b'0');
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

#[cfg(test)]
mod tests {
    #[test]
    fn birth_date_shape() {
        assert!(super::is_yyyymmdd("19800229"));
        assert!(!super::is_yyyymmdd("1980-02-29"));
        assert!(!super::is_yyyymmdd("19801301"));
    }
}

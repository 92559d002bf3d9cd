//! The assessment as a Comprehensive SR in the image's study, in its own
//! series, referencing the image it was made on. The tree follows the shape
//! of TID 1500 / IHE AI Results (device observer, algorithm identification,
//! qualitative findings as CODE, probabilities as NUM) without claiming the
//! template, whose root and finding groups it does not match.
//! See NOTES.md for the tree with its codes.

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::encode::{
    code_item, da, empty, encode, number, sequence, text, text_or_empty, tm, uid, Instance,
    ObjectError, TextVr, UtcStamp, EXPLICIT_VR_LITTLE_ENDIAN,
};
use super::filing::Filing;
use super::image::{anatomic_region, series_description};
use super::modules::{
    put_general_equipment, put_general_study, put_patient, put_sop_common, MANUFACTURER, MODEL_NAME,
};
use super::uid::{device_uid, uids, Uids};

/// Comprehensive SR Storage.
pub const COMPREHENSIVE_SR: &str = "1.2.840.10008.5.1.4.1.1.88.33";

/// The report's series number; the image's is 1.
const REPORT_SERIES_NUMBER: &str = "2";

/// Our private coding scheme: concepts the standard has no code for.
const PRIVATE: &str = "99LESIOND";

/// A coded concept: (code value, coding scheme designator, code meaning).
type Code<'a> = (&'a str, &'a str, &'a str);

// Codes from the standard (PS3.16), used with their defined meanings.
const OBSERVER_TYPE: Code = ("121005", "DCM", "Observer Type");
const DEVICE: Code = ("121007", "DCM", "Device");
const DEVICE_OBSERVER_UID: Code = ("121012", "DCM", "Device Observer UID");
const DEVICE_OBSERVER_NAME: Code = ("121013", "DCM", "Device Observer Name");
const DEVICE_OBSERVER_MANUFACTURER: Code = ("121014", "DCM", "Device Observer Manufacturer");
const DEVICE_OBSERVER_MODEL_NAME: Code = ("121015", "DCM", "Device Observer Model Name");
const DEVICE_OBSERVER_SERIAL_NUMBER: Code = ("121016", "DCM", "Device Observer Serial Number");
const ALGORITHM_NAME: Code = ("111001", "DCM", "Algorithm Name");
const ALGORITHM_PARAMETERS: Code = ("111002", "DCM", "Algorithm Parameters");
const ALGORITHM_VERSION: Code = ("111003", "DCM", "Algorithm Version");
const TRACKING_IDENTIFIER: Code = ("112039", "DCM", "Tracking Identifier");
const FINDING_SITE: Code = ("363698007", "SCT", "Finding Site");
const YES: Code = ("373066001", "SCT", "Yes");
const NO: Code = ("373067005", "SCT", "No");
const NO_UNITS: Code = ("1", "UCUM", "no units");

// Private concepts (99LESIOND).
const REPORT_TITLE: Code = (
    "LA-REPORT",
    PRIVATE,
    "Skin lesion assessment (decision support)",
);
const DISCLAIMER: Code = ("DISCLAIMER", PRIVATE, "Decision support, not a diagnosis");
const SOFTWARE_VERSION: Code = ("SW-VERSION", PRIVATE, "lesiond software version");
const BODY_SITE_TEXT: Code = ("BODY-SITE-TEXT", PRIVATE, "Body site as entered");
const ASSESSED_IMAGE: Code = ("ASSESSED-IMAGE", PRIVATE, "Assessed image");
const CLASS_PROBABILITIES: Code = ("CLASS-PROBS", PRIVATE, "Class probabilities");
const MOST_PROBABLE_CLASS: Code = ("TOP-CLASS", PRIVATE, "Most probable class");
const MALIGNANT_CLASS: Code = ("MALIGNANT-CLASS", PRIVATE, "Malignant class");
const MALIGNANT_PROBABILITY: Code = ("P-MALIGNANT", PRIVATE, "Probability of a malignant class");
const REFER: Code = ("REFER", PRIVATE, "Refer for specialist assessment");
const RULE_FIRED: Code = ("RULE-FIRED", PRIVATE, "Referral rule fired");
const OPERATING_POINT: Code = ("OPERATING-POINT", PRIVATE, "Operating point version");
const ABSTAINED: Code = ("ABSTAINED", PRIVATE, "Station abstained");
const ABSTAIN_REASON: Code = ("ABSTAIN-REASON", PRIVATE, "Abstain reason");

pub fn report_instance(filing: &Filing, image: &Instance) -> Result<Instance, ObjectError> {
    let uids = uids(filing);
    // The report must reference the image of this very filing: its UIDs are
    // derived from the same assessment.
    if image.sop_instance_uid != uids.image_instance {
        return Err(ObjectError::ImageReference(
            "the SOP Instance UID this filing derives (not the same assessment)",
        ));
    }
    let mut object = InMemDicomObject::new_empty();
    put_patient(&mut object, filing)?;
    put_general_study(&mut object, filing, &uids)?;
    put_sr_series(&mut object, filing, &uids)?;
    put_general_equipment(&mut object, filing)?;
    put_document_general(&mut object, filing, image, &uids)?;
    put_content(&mut object, filing, image)?;
    put_sop_common(&mut object, filing, COMPREHENSIVE_SR, &uids.report_instance)?;
    put_private_coding_scheme(&mut object)?;
    encode(
        &object,
        COMPREHENSIVE_SR,
        &uids.report_instance,
        EXPLICIT_VR_LITTLE_ENDIAN,
    )
}

/// Coding Scheme Identification (SOP Common): declares the private scheme so a
/// reader can tell whose codes 99LESIOND values are.
fn put_private_coding_scheme(object: &mut InMemDicomObject) -> Result<(), ObjectError> {
    let scheme = InMemDicomObject::from_element_iter([
        text(
            tags::CODING_SCHEME_DESIGNATOR,
            TextVr::Sh,
            "Coding Scheme Designator",
            PRIVATE,
        )?,
        text(
            tags::CODING_SCHEME_NAME,
            TextVr::St,
            "Coding Scheme Name",
            "lesiond private codes",
        )?,
        text(
            tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION,
            TextVr::St,
            "Coding Scheme Responsible Organization",
            MANUFACTURER,
        )?,
    ]);
    object.put(sequence(
        tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE,
        vec![scheme],
    ));
    Ok(())
}

/// SR Document Series (PS3.3 C.17.1).
fn put_sr_series(
    object: &mut InMemDicomObject,
    filing: &Filing,
    uids: &Uids,
) -> Result<(), ObjectError> {
    let assessed = UtcStamp::new(filing.assessed_at, "assessed_at (Series Date/Time)")?;
    object.put(text(tags::MODALITY, TextVr::Cs, "Modality", "SR")?);
    object.put(uid(
        tags::SERIES_INSTANCE_UID,
        "Series Instance UID",
        &uids.report_series,
    )?);
    object.put(number(
        tags::SERIES_NUMBER,
        VR::IS,
        REPORT_SERIES_NUMBER.to_owned(),
    ));
    object.put(da(tags::SERIES_DATE, &assessed));
    object.put(tm(tags::SERIES_TIME, &assessed));
    let description = format!("{} assessment", series_description(filing));
    object.put(text(
        tags::SERIES_DESCRIPTION,
        TextVr::Lo,
        "Series Description (lesion)",
        &description,
    )?);
    // Type 2: the station works without modality performed procedure steps.
    object.put(empty(
        tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
        VR::SQ,
    ));
    Ok(())
}

/// SR Document General (PS3.3 C.17.2). Unverified: no clinician signed it.
fn put_document_general(
    object: &mut InMemDicomObject,
    filing: &Filing,
    image: &Instance,
    uids: &Uids,
) -> Result<(), ObjectError> {
    let assessed = UtcStamp::new(filing.assessed_at, "assessed_at (Content Date/Time)")?;
    object.put(number(tags::INSTANCE_NUMBER, VR::IS, "1".to_owned()));
    object.put(text(
        tags::COMPLETION_FLAG,
        TextVr::Cs,
        "Completion Flag",
        "COMPLETE",
    )?);
    object.put(text(
        tags::VERIFICATION_FLAG,
        TextVr::Cs,
        "Verification Flag",
        "UNVERIFIED",
    )?);
    object.put(da(tags::CONTENT_DATE, &assessed));
    object.put(tm(tags::CONTENT_TIME, &assessed));
    // Type 2: no coded procedure at the station.
    object.put(empty(tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, VR::SQ));
    // The image is the evidence this report was made from (Hierarchical SOP
    // Instance Reference Macro: study > series > instance).
    let instance = image_reference(image)?;
    let series = InMemDicomObject::from_element_iter([
        uid(
            tags::SERIES_INSTANCE_UID,
            "Series Instance UID (image)",
            &uids.image_series,
        )?,
        sequence(tags::REFERENCED_SOP_SEQUENCE, vec![instance]),
    ]);
    let study = InMemDicomObject::from_element_iter([
        uid(tags::STUDY_INSTANCE_UID, "Study Instance UID", &uids.study)?,
        sequence(tags::REFERENCED_SERIES_SEQUENCE, vec![series]),
    ]);
    object.put(sequence(
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        vec![study],
    ));
    if let Some(request) = referenced_request(filing, uids)? {
        object.put(sequence(tags::REFERENCED_REQUEST_SEQUENCE, vec![request]));
    }
    Ok(())
}

/// Referenced Request Sequence (type 1C: required when the evidence was made
/// for a requested procedure). A worklist entry, known by its study UID or
/// accession number, is such a request; the filing carries no order numbers
/// or requested procedure, so those type 2 attributes are empty.
fn referenced_request(
    filing: &Filing,
    uids: &Uids,
) -> Result<Option<InMemDicomObject>, ObjectError> {
    let visit = &filing.visit;
    if visit.study_instance_uid.is_none() && visit.accession_number.is_none() {
        return Ok(None);
    }
    Ok(Some(InMemDicomObject::from_element_iter([
        uid(tags::STUDY_INSTANCE_UID, "Study Instance UID", &uids.study)?,
        empty(tags::REFERENCED_STUDY_SEQUENCE, VR::SQ),
        text_or_empty(
            tags::ACCESSION_NUMBER,
            TextVr::Sh,
            "Accession Number (0008,0050)",
            visit.accession_number,
        )?,
        empty(tags::PLACER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST, VR::LO),
        empty(tags::FILLER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST, VR::LO),
        empty(tags::REQUESTED_PROCEDURE_ID, VR::SH),
        empty(tags::REQUESTED_PROCEDURE_DESCRIPTION, VR::LO),
        empty(tags::REQUESTED_PROCEDURE_CODE_SEQUENCE, VR::SQ),
    ])))
}

/// SR Document Content: the root CONTAINER's attributes sit in the data set
/// itself, its children in Content Sequence.
fn put_content(
    object: &mut InMemDicomObject,
    filing: &Filing,
    image: &Instance,
) -> Result<(), ObjectError> {
    object.put(text(
        tags::VALUE_TYPE,
        TextVr::Cs,
        "Value Type",
        "CONTAINER",
    )?);
    object.put(concept_name(REPORT_TITLE)?);
    object.put(text(
        tags::CONTINUITY_OF_CONTENT,
        TextVr::Cs,
        "Continuity Of Content",
        "SEPARATE",
    )?);
    let mut items = observer_context(filing)?;
    items.push(text_item("CONTAINS", DISCLAIMER, filing.result.disclaimer)?);
    items.extend(algorithm_identification(filing)?);
    items.extend(lesion_identification(filing)?);
    items.push(image_item("CONTAINS", ASSESSED_IMAGE, image)?);
    items.extend(findings(filing)?);
    object.put(sequence(tags::CONTENT_SEQUENCE, items));
    Ok(())
}

/// Observation context: the station is the observer (TID 1002/1004 shape).
fn observer_context(filing: &Filing) -> Result<Vec<InMemDicomObject>, ObjectError> {
    let ctx = "HAS OBS CONTEXT";
    Ok(vec![
        code_valued_item(ctx, OBSERVER_TYPE, DEVICE)?,
        uidref_item(ctx, DEVICE_OBSERVER_UID, &device_uid(filing.station_id))?,
        text_item(ctx, DEVICE_OBSERVER_NAME, filing.station_id)?,
        text_item(ctx, DEVICE_OBSERVER_MANUFACTURER, MANUFACTURER)?,
        text_item(ctx, DEVICE_OBSERVER_MODEL_NAME, MODEL_NAME)?,
        text_item(ctx, DEVICE_OBSERVER_SERIAL_NUMBER, filing.station_id)?,
    ])
}

/// Algorithm identification (TID 4019 shape): the model is the algorithm,
/// the SHA-256 of its weights the version, the operating point its parameters.
fn algorithm_identification(filing: &Filing) -> Result<Vec<InMemDicomObject>, ObjectError> {
    let model = &filing.model;
    let mut items = vec![
        text_item("CONTAINS", ALGORITHM_NAME, model.id)?,
        text_item("CONTAINS", ALGORITHM_VERSION, model.sha256)?,
    ];
    if let Some(operating_point) = model.operating_point {
        items.push(text_item(
            "CONTAINS",
            ALGORITHM_PARAMETERS,
            operating_point,
        )?);
    }
    items.push(text_item(
        "CONTAINS",
        SOFTWARE_VERSION,
        filing.software_version,
    )?);
    Ok(items)
}

/// Which lesion, and where: tracking id, coded site, the site as entered.
fn lesion_identification(filing: &Filing) -> Result<Vec<InMemDicomObject>, ObjectError> {
    let lesion = &filing.lesion;
    let mut items = Vec::new();
    if let Some(id) = lesion.id {
        items.push(text_item("CONTAINS", TRACKING_IDENTIFIER, id)?);
    }
    if let Some(region) = anatomic_region(filing)? {
        let mut item = content_item("CONTAINS", "CODE", FINDING_SITE)?;
        item.put(sequence(tags::CONCEPT_CODE_SEQUENCE, vec![region]));
        items.push(item);
    }
    if let Some(site) = lesion.body_site {
        items.push(text_item("CONTAINS", BODY_SITE_TEXT, site)?);
    }
    Ok(items)
}

/// The model's output and the station's decisions on it.
fn findings(filing: &Filing) -> Result<Vec<InMemDicomObject>, ObjectError> {
    let result = &filing.result;
    let mut items = Vec::new();

    let mut probabilities = content_item("CONTAINS", "CONTAINER", CLASS_PROBABILITIES)?;
    probabilities.put(text(
        tags::CONTINUITY_OF_CONTENT,
        TextVr::Cs,
        "Continuity Of Content",
        "SEPARATE",
    )?);
    let mut per_class = Vec::with_capacity(result.probabilities.len());
    for class in &result.probabilities {
        check_code_value("class code", class.code)?;
        let concept_code = format!("P-{}", class.code);
        let concept_meaning = format!("Probability of {}", class.name);
        let mut num = num_item(
            "CONTAINS",
            (&concept_code, PRIVATE, &concept_meaning),
            class.probability,
            "class probability",
        )?;
        let malignant = if class.malignant { YES } else { NO };
        num.put(sequence(
            tags::CONTENT_SEQUENCE,
            vec![code_valued_item(
                "HAS PROPERTIES",
                MALIGNANT_CLASS,
                malignant,
            )?],
        ));
        per_class.push(num);
    }
    probabilities.put(sequence(tags::CONTENT_SEQUENCE, per_class));
    items.push(probabilities);

    if let Some(top) = result.top {
        let class = result
            .probabilities
            .get(top)
            .ok_or(ObjectError::TopOutOfRange {
                top,
                count: result.probabilities.len(),
            })?;
        items.push(code_valued_item(
            "CONTAINS",
            MOST_PROBABLE_CLASS,
            (class.code, PRIVATE, class.name),
        )?);
    }

    items.push(num_item(
        "CONTAINS",
        MALIGNANT_PROBABILITY,
        result.malignant_probability,
        "malignant probability",
    )?);

    if let Some(refer) = result.refer {
        let mut item = code_valued_item("CONTAINS", REFER, if refer { YES } else { NO })?;
        let mut properties = Vec::new();
        for rule in &result.rules_fired {
            properties.push(text_item("HAS PROPERTIES", RULE_FIRED, rule)?);
        }
        if let Some(operating_point) = filing.model.operating_point {
            properties.push(text_item(
                "HAS PROPERTIES",
                OPERATING_POINT,
                operating_point,
            )?);
        }
        if !properties.is_empty() {
            item.put(sequence(tags::CONTENT_SEQUENCE, properties));
        }
        items.push(item);
    }

    let abstained = result.abstain_reasons.is_some();
    let mut abstain = code_valued_item("CONTAINS", ABSTAINED, if abstained { YES } else { NO })?;
    if let Some(reasons) = &result.abstain_reasons {
        let reasons = reasons
            .iter()
            .map(|reason| text_item("HAS PROPERTIES", ABSTAIN_REASON, reason))
            .collect::<Result<Vec<_>, _>>()?;
        if !reasons.is_empty() {
            abstain.put(sequence(tags::CONTENT_SEQUENCE, reasons));
        }
    }
    items.push(abstain);
    Ok(items)
}

// --- content item building blocks (PS3.3 C.17.3) ---

fn concept_name(concept: Code) -> Result<dicom_object::mem::InMemElement, ObjectError> {
    let (value, scheme, meaning) = concept;
    Ok(sequence(
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        vec![code_item(value, scheme, meaning)?],
    ))
}

fn content_item(
    relationship: &str,
    value_type: &str,
    concept: Code,
) -> Result<InMemDicomObject, ObjectError> {
    let mut item = InMemDicomObject::new_empty();
    item.put(text(
        tags::RELATIONSHIP_TYPE,
        TextVr::Cs,
        "Relationship Type",
        relationship,
    )?);
    item.put(text(
        tags::VALUE_TYPE,
        TextVr::Cs,
        "Value Type",
        value_type,
    )?);
    item.put(concept_name(concept)?);
    Ok(item)
}

fn text_item(
    relationship: &str,
    concept: Code,
    value: &str,
) -> Result<InMemDicomObject, ObjectError> {
    let mut item = content_item(relationship, "TEXT", concept)?;
    item.put(text(
        tags::TEXT_VALUE,
        TextVr::Ut,
        "Text Value (SR TEXT item)",
        value,
    )?);
    Ok(item)
}

fn code_valued_item(
    relationship: &str,
    concept: Code,
    value: Code,
) -> Result<InMemDicomObject, ObjectError> {
    let mut item = content_item(relationship, "CODE", concept)?;
    let (v, scheme, meaning) = value;
    item.put(sequence(
        tags::CONCEPT_CODE_SEQUENCE,
        vec![code_item(v, scheme, meaning)?],
    ));
    Ok(item)
}

fn uidref_item(
    relationship: &str,
    concept: Code,
    value: &str,
) -> Result<InMemDicomObject, ObjectError> {
    let mut item = content_item(relationship, "UIDREF", concept)?;
    item.put(uid(tags::UID, "UID (SR UIDREF item)", value)?);
    Ok(item)
}

/// The image's SOP class and instance: how the evidence list and the IMAGE content item
/// both name it.
fn image_reference(image: &Instance) -> Result<InMemDicomObject, ObjectError> {
    Ok(InMemDicomObject::from_element_iter([
        uid(tags::REFERENCED_SOP_CLASS_UID, "Referenced SOP Class UID (image)", &image.sop_class_uid)?,
        uid(tags::REFERENCED_SOP_INSTANCE_UID, "Referenced SOP Instance UID (image)", &image.sop_instance_uid)?,
    ]))
}

fn image_item(
    relationship: &str,
    concept: Code,
    image: &Instance,
) -> Result<InMemDicomObject, ObjectError> {
    let mut item = content_item(relationship, "IMAGE", concept)?;
    let reference = image_reference(image)?;
    item.put(sequence(tags::REFERENCED_SOP_SEQUENCE, vec![reference]));
    Ok(item)
}

/// A probability in [0, 1], unit "1" (UCUM: no units).
fn num_item(
    relationship: &str,
    concept: Code,
    value: f32,
    attribute: &'static str,
) -> Result<InMemDicomObject, ObjectError> {
    if !value.is_finite() {
        return Err(ObjectError::NotFinite { attribute, value });
    }
    let mut item = content_item(relationship, "NUM", concept)?;
    let (unit, scheme, meaning) = NO_UNITS;
    let measured = InMemDicomObject::from_element_iter([
        number(tags::NUMERIC_VALUE, VR::DS, format!("{:.6}", value as f64)),
        sequence(
            tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
            vec![code_item(unit, scheme, meaning)?],
        ),
    ]);
    item.put(sequence(tags::MEASURED_VALUE_SEQUENCE, vec![measured]));
    Ok(item)
}

/// Class codes become private code values ("P-" + code fits SH's 16 bytes).
fn check_code_value(attribute: &'static str, value: &str) -> Result<(), ObjectError> {
    let ok = !value.is_empty()
        && value.len() <= 14
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ObjectError::InvalidCode {
            attribute,
            value: value.to_owned(),
        })
    }
}

//! The input of the DICOM object layer: everything one assessment files into
//! the archive, already validated by the caller. Borrowed so that filing never
//! copies the frame or the labels.

use std::time::SystemTime;

/// Everything one assessment files into the archive, already validated.
pub struct Filing<'a> {
    /// A UUID string, e.g. "0b7e5c1a-0000-4000-8000-000000000002".
    pub assessment_id: &'a str,
    pub assessed_at: SystemTime,
    /// Station name, e.g. "station-7" (Station Name, Device Serial Number).
    pub station_id: &'a str,
    /// lesiond version, e.g. "0.9.0".
    pub software_version: &'a str,
    pub patient: Patient<'a>,
    pub visit: Visit<'a>,
    pub lesion: Lesion<'a>,
    pub model: Model<'a>,
    pub result: AssessmentResult<'a>,
    pub frame: Frame<'a>,
}

pub struct Patient<'a> {
    pub id: &'a str,
    /// DICOM PN "Family^Given".
    pub name: Option<&'a str>,
    /// YYYYMMDD.
    pub birth_date: Option<&'a str>,
    /// "F", "M" or "O".
    pub sex: Option<&'a str>,
}

pub struct Visit<'a> {
    /// A UUID made when the clinician set the context: one context = one visit = one study.
    pub context_id: &'a str,
    /// When the context was set: Study Date/Time.
    pub started_at: SystemTime,
    pub accession_number: Option<&'a str>,
    /// From a worklist when there is one; else derived from `context_id`.
    pub study_instance_uid: Option<&'a str>,
}

pub struct Lesion<'a> {
    /// e.g. "L1".
    pub id: Option<&'a str>,
    /// Free text, e.g. "left forearm, dorsal".
    pub body_site: Option<&'a str>,
    /// SNOMED CT concept id, e.g. "64033007".
    pub body_site_snomed: Option<&'a str>,
}

pub struct Model<'a> {
    pub id: &'a str,
    /// 64 hex digits.
    pub sha256: &'a str,
    /// e.g. "lesion_mnv2_int8@379b5f1879eb/refer-v1".
    pub operating_point: Option<&'a str>,
}

pub struct AssessmentResult<'a> {
    /// The seven classes in model order (akiec, bcc, bkl, df, mel, nv, vasc).
    pub probabilities: Vec<ClassProbability<'a>>,
    /// Index into `probabilities`; None when abstained.
    pub top: Option<usize>,
    pub malignant_probability: f32,
    /// None: this model has no refer operating point.
    pub refer: Option<bool>,
    /// e.g. ["melanoma"].
    pub rules_fired: Vec<&'a str>,
    /// Some(reasons) when the station abstained (e.g. "out_of_distribution").
    pub abstain_reasons: Option<Vec<&'a str>>,
    /// "Decision support only, not a diagnosis: a clinician must assess every lesion."
    pub disclaimer: &'a str,
}

pub struct ClassProbability<'a> {
    /// e.g. "mel".
    pub code: &'a str,
    /// e.g. "Melanoma".
    pub name: &'a str,
    pub probability: f32,
    pub malignant: bool,
}

pub struct Frame<'a> {
    /// Baseline JPEG bytes as the camera delivered them.
    pub jpeg: &'a [u8],
    pub width: u16,
    pub height: u16,
    pub captured_at: SystemTime,
}

//! From a spooled assessment (the recorder's JSON, `docs/schemas/assessment.schema.json`) and
//! its judged frame to a [`Filing`]: what the DICOM objects are made of. Read loosely (fields
//! added by later versions are ignored), so that an entry spooled by an older or newer daemon
//! is still filed.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Deserialize;

use super::filing::{AssessmentResult, ClassProbability, Filing, Frame, Lesion, Model, Patient, Visit};
use crate::labels::Labels;
use crate::report::context::ExaminationContext;

/// The patient an assessment made without a context is filed under, with
/// `dicom.send_unassigned`: the archive's staff reconcile it by its study.
pub const UNASSIGNED_PATIENT_ID: &str = "LESIOND-UNASSIGNED";

#[derive(Debug, Deserialize)]
pub struct Spooled {
    pub assessment_id: String,
    pub station_id: String,
    assessed_at: String,
    model: SpooledModel,
    abstain: Option<SpooledAbstain>,
    probabilities: BTreeMap<String, f32>,
    top: Vec<SpooledClass>,
    malignant_probability: Option<f32>,
    refer: Option<bool>,
    referral: Option<SpooledReferral>,
    frames: Vec<SpooledFrame>,
    pub context: Option<ExaminationContext>,
    disclaimer: String,
}

#[derive(Debug, Deserialize)]
struct SpooledModel {
    id: String,
    sha256: String,
}

#[derive(Debug, Deserialize)]
struct SpooledAbstain {
    reasons: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct SpooledClass {
    code: String,
}

#[derive(Debug, Deserialize)]
struct SpooledReferral {
    rules_fired: Vec<String>,
    operating_point: String,
}

#[derive(Debug, Deserialize)]
struct SpooledFrame {
    captured_at: String,
    weight: f32,
    focus: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum FiledError {
    #[error("not an assessment this version can file: {0}")]
    Unreadable(String),
}

fn parse_time(what: &str, text: &str) -> Result<SystemTime, FiledError> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| FiledError::Unreadable(format!("{what}: {e}")))
}

/// The context an assessment is filed under: its own, or (with `dicom.send_unassigned`) the
/// placeholder patient in a study of its own.
pub fn context_or_unassigned(spooled: &Spooled) -> ExaminationContext {
    spooled.context.clone().unwrap_or_else(|| ExaminationContext {
        context_id: spooled.assessment_id.clone(),
        set_at: spooled.assessed_at.clone(),
        patient_id: UNASSIGNED_PATIENT_ID.into(),
        patient_name: None,
        birth_date: None,
        sex: None,
        accession_number: None,
        study_instance_uid: None,
        body_site: None,
        body_site_snomed: None,
        lesion_id: None,
    })
}

impl Spooled {
    pub fn parse(json: &[u8]) -> Result<Spooled, FiledError> {
        // serde_json's message may quote a value (patient data): only its category and place.
        serde_json::from_slice(json).map_err(|e| FiledError::Unreadable(format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column())))
    }
}

/// Everything a [`Filing`] borrows, owned: made once per assessment.
pub struct FilingParts<'a> {
    spooled: &'a Spooled,
    context: &'a ExaminationContext,
    assessed_at: SystemTime,
    started_at: SystemTime,
    captured_at: SystemTime,
    labels: &'a Labels,
}

impl<'a> FilingParts<'a> {
    pub fn new(spooled: &'a Spooled, context: &'a ExaminationContext, labels: &'a Labels) -> Result<FilingParts<'a>, FiledError> {
        let assessed_at = parse_time("assessed_at", &spooled.assessed_at)?;
        let started_at = parse_time("context.set_at", &context.set_at)?;
        // The judged frame is the sharpest (highest weight) the examination used: the one the
        // pipeline kept. Published weights are rounded to 3 decimals, so frames nearly as sharp
        // tie; the unrounded focus tells them apart as the pipeline did (weight is focus over
        // the sharpest focus), and of equals both take the last.
        let sharpest = spooled.frames.iter().max_by(|a, b| a.weight.total_cmp(&b.weight).then(a.focus.total_cmp(&b.focus)));
        let captured_at = match sharpest {
            Some(f) => parse_time("frames.captured_at", &f.captured_at)?,
            None => assessed_at,
        };
        Ok(FilingParts { spooled, context, assessed_at, started_at, captured_at, labels })
    }

    pub fn filing(&self, jpeg: &'a [u8], width: u16, height: u16) -> Filing<'_> {
        let s = self.spooled;
        let c = self.context;
        let probabilities: Vec<ClassProbability<'_>> = self
            .labels
            .classes
            .iter()
            .map(|class| ClassProbability {
                code: &class.code,
                name: &class.name,
                probability: s.probabilities.get(&class.code).copied().unwrap_or(0.0),
                malignant: class.malignant,
            })
            .collect();
        let top = match s.abstain {
            Some(_) => None,
            None => s.top.first().and_then(|t| probabilities.iter().position(|p| p.code == t.code)),
        };
        Filing {
            assessment_id: &s.assessment_id,
            assessed_at: self.assessed_at,
            station_id: &s.station_id,
            software_version: env!("CARGO_PKG_VERSION"),
            patient: Patient { id: &c.patient_id, name: c.patient_name.as_deref(), birth_date: c.birth_date.as_deref(), sex: c.sex.as_deref() },
            visit: Visit {
                context_id: &c.context_id,
                started_at: self.started_at,
                accession_number: c.accession_number.as_deref(),
                study_instance_uid: c.study_instance_uid.as_deref(),
            },
            lesion: Lesion { id: c.lesion_id.as_deref(), body_site: c.body_site.as_deref(), body_site_snomed: c.body_site_snomed.as_deref() },
            model: Model { id: &s.model.id, sha256: &s.model.sha256, operating_point: s.referral.as_ref().map(|r| r.operating_point.as_str()) },
            result: AssessmentResult {
                probabilities,
                top,
                malignant_probability: s.malignant_probability.unwrap_or(0.0),
                refer: s.refer,
                rules_fired: s.referral.as_ref().map(|r| r.rules_fired.iter().map(String::as_str).collect()).unwrap_or_default(),
                abstain_reasons: s.abstain.as_ref().map(|a| a.reasons.iter().map(String::as_str).collect()),
                disclaimer: &s.disclaimer,
            },
            frame: Frame { jpeg, width, height, captured_at: self.captured_at },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_golden_assessment_is_read_and_filed_in_model_order() {
        let json = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/payloads/assessment.json")).expect("golden");
        let spooled = Spooled::parse(&json).expect("parse");
        let labels = Labels::parse(include_str!("../../models/labels.json")).expect("labels");
        let context = context_or_unassigned(&spooled);
        assert_eq!(context.patient_id, UNASSIGNED_PATIENT_ID);
        let parts = FilingParts::new(&spooled, &context, &labels).expect("parts");
        let filing = parts.filing(&[], 1, 1);
        let codes: Vec<&str> = filing.result.probabilities.iter().map(|p| p.code).collect();
        assert_eq!(codes, ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]);
        assert_eq!(filing.result.top.map(|i| filing.result.probabilities[i].code), Some("mel"));
        assert_eq!(filing.result.refer, Some(true));
        assert_eq!(filing.result.rules_fired, ["melanoma"]);
        assert!(filing.model.operating_point.is_some_and(|o| o.ends_with("refer-v1")));
    }

    #[test]
    fn an_unreadable_entry_names_no_value() {
        let e = Spooled::parse(br#"{"assessment_id": 7, "context": {"patient_id": "Secret"}}"#).expect_err("bad");
        assert!(!e.to_string().contains("Secret"), "{e}");
    }
}

//! The examination context: whose lesion, which visit, where on the body, which lesion. Set by
//! the `context` command (schema: `docs/schemas/context.schema.json`), carried by every
//! assessment (`context`, `null` when none was set) and filed with it in the clinic's archive.
//!
//! The values are checked here against the DICOM value representations they end up in (a
//! Patient ID is a LO of at most 64 characters, an accession number a SH of at most 16, a name
//! a PN `Family^Given`, a date `YYYYMMDD`), so that what the station accepts is what the
//! archive can store, and a mistake is refused with a reply naming the field, never filed.

use serde::{Deserialize, Serialize};

/// Bump on any change a subscriber could trip over (the `context` object of an assessment
/// follows the assessment's own schema version).
pub const SCHEMA_VERSION: u32 = 1;

/// The context in force, as carried by assessments and kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExaminationContext {
    /// Made when the context is set: one context is one visit (the archive files its
    /// assessments in one study derived from it, unless a worklist gave the study).
    pub context_id: String,
    /// When it was set (RFC 3339 UTC).
    pub set_at: String,
    pub patient_id: String,
    pub patient_name: Option<String>,
    pub birth_date: Option<String>,
    pub sex: Option<String>,
    pub accession_number: Option<String>,
    /// From the worklist entry the accession number was looked up in, when it gave one.
    pub study_instance_uid: Option<String>,
    pub body_site: Option<String>,
    /// The body site's SNOMED CT concept id.
    pub body_site_snomed: Option<String>,
    pub lesion_id: Option<String>,
}

/// What a `context` command asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextChange {
    Set(ContextFields),
    Clear,
}

/// The fields of a `context` command, checked. `patient_id` is `None` only when an
/// `accession_number` is given for the worklist to complete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextFields {
    pub patient_id: Option<String>,
    pub patient_name: Option<String>,
    pub birth_date: Option<String>,
    pub sex: Option<String>,
    pub accession_number: Option<String>,
    pub body_site: Option<String>,
    pub body_site_snomed: Option<String>,
    pub lesion_id: Option<String>,
}

/// Why a context was refused: the field and what is wrong with it (never its value: it may be
/// patient data, and the reply and the log are not the place for it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ContextError {
    pub field: &'static str,
    pub problem: String,
}

fn refuse(field: &'static str, problem: impl Into<String>) -> ContextError {
    ContextError { field, problem: problem.into() }
}

impl ContextFields {
    /// Checks every field; empty strings count as absent.
    pub fn validated(mut self) -> Result<ContextFields, ContextError> {
        for value in [
            &mut self.patient_id,
            &mut self.patient_name,
            &mut self.birth_date,
            &mut self.sex,
            &mut self.accession_number,
            &mut self.body_site,
            &mut self.body_site_snomed,
            &mut self.lesion_id,
        ] {
            if let Some(v) = value.as_mut() {
                *v = v.trim().to_string();
            }
            if value.as_deref().is_some_and(str::is_empty) {
                *value = None;
            }
        }
        text("patient_id", self.patient_id.as_deref(), 64)?;
        text("accession_number", self.accession_number.as_deref(), 16)?;
        text("body_site", self.body_site.as_deref(), 64)?;
        text("lesion_id", self.lesion_id.as_deref(), 16)?;
        if self.patient_id.is_none() && self.accession_number.is_none() {
            return Err(refuse("patient_id", "required (or an accession_number for the worklist to complete)"));
        }
        if let Some(name) = self.patient_name.as_deref() {
            person_name(name)?;
        }
        if let Some(date) = self.birth_date.as_deref() {
            birth_date(date)?;
        }
        if let Some(sex) = self.sex.as_deref() {
            if !matches!(sex, "F" | "M" | "O") {
                return Err(refuse("sex", "must be F, M or O"));
            }
        }
        if let Some(code) = self.body_site_snomed.as_deref() {
            // A SNOMED CT identifier: 6 to 18 digits, no leading zero.
            if !(6..=18).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_digit()) || code.starts_with('0') {
                return Err(refuse("body_site_snomed", "must be a SNOMED CT concept id (6 to 18 digits)"));
            }
        }
        Ok(self)
    }

    /// The context these fields set, made now.
    pub fn into_context(self, context_id: String, set_at: String, study_instance_uid: Option<String>) -> Option<ExaminationContext> {
        Some(ExaminationContext {
            context_id,
            set_at,
            patient_id: self.patient_id?,
            patient_name: self.patient_name,
            birth_date: self.birth_date,
            sex: self.sex,
            accession_number: self.accession_number,
            study_instance_uid,
            body_site: self.body_site,
            body_site_snomed: self.body_site_snomed,
            lesion_id: self.lesion_id,
        })
    }
}

/// A DICOM LO/SH-like value: printable, no backslash (DICOM's value separator), at most `max`
/// characters.
fn text(field: &'static str, value: Option<&str>, max: usize) -> Result<(), ContextError> {
    let Some(v) = value else { return Ok(()) };
    if v.chars().count() > max {
        return Err(refuse(field, format!("at most {max} characters")));
    }
    if v.chars().any(|c| c.is_control() || c == '\\') {
        return Err(refuse(field, "no control characters or backslashes"));
    }
    Ok(())
}

/// A DICOM person name as a clinic's systems write it: `Family^Given^Middle^Prefix^Suffix`,
/// at most 64 characters, one component group (no ideographic or phonetic forms).
fn person_name(name: &str) -> Result<(), ContextError> {
    if name.chars().count() > 64 {
        return Err(refuse("patient_name", "at most 64 characters"));
    }
    if name.chars().any(|c| c.is_control() || c == '\\' || c == '=') {
        return Err(refuse("patient_name", "no control characters, backslashes or '=' (one name, DICOM form Family^Given)"));
    }
    if name.split('^').count() > 5 {
        return Err(refuse("patient_name", "at most five components (Family^Given^Middle^Prefix^Suffix)"));
    }
    if name.split('^').next().is_none_or(|family| family.trim().is_empty()) {
        return Err(refuse("patient_name", "the family name comes first (DICOM form Family^Given)"));
    }
    Ok(())
}

fn birth_date(date: &str) -> Result<(), ContextError> {
    let wrong = || refuse("birth_date", "must be a date YYYYMMDD");
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(wrong());
    }
    let year: i32 = date[..4].parse().map_err(|_| wrong())?;
    let month: u8 = date[4..6].parse().map_err(|_| wrong())?;
    let day: u8 = date[6..].parse().map_err(|_| wrong())?;
    let month = time::Month::try_from(month).map_err(|_| wrong())?;
    time::Date::from_calendar_date(year, month, day).map_err(|_| wrong())?;
    if year < 1850 {
        return Err(wrong());
    }
    Ok(())
}

/// The reply to a `context` command that set one (`reply/context`, its `state`): which context,
/// never what it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContextReply {
    pub context_id: String,
    /// Whether the patient came from the worklist entry of the accession number.
    pub completed_from_worklist: bool,
}

/// What the screen may show of a context: the lesion and the body site always, the patient's
/// identity only with `viewer.show_patient`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScreenContext<'a> {
    pub lesion_id: Option<&'a str>,
    pub body_site: Option<&'a str>,
    pub patient_id: Option<&'a str>,
    pub patient_name: Option<&'a str>,
}

impl ExaminationContext {
    pub fn for_screen(&self, show_patient: bool) -> ScreenContext<'_> {
        ScreenContext {
            lesion_id: self.lesion_id.as_deref(),
            body_site: self.body_site.as_deref(),
            patient_id: show_patient.then_some(self.patient_id.as_str()),
            patient_name: if show_patient { self.patient_name.as_deref() } else { None },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> ContextFields {
        ContextFields {
            patient_id: Some("P-1".into()),
            patient_name: Some("Doe^Jane".into()),
            birth_date: Some("19700131".into()),
            sex: Some("F".into()),
            accession_number: Some("A123".into()),
            body_site: Some("left forearm".into()),
            body_site_snomed: Some("14975008".into()),
            lesion_id: Some("L1".into()),
        }
    }

    #[test]
    fn a_full_context_is_accepted() {
        assert_eq!(fields().validated(), Ok(fields()));
    }

    #[test]
    fn each_wrong_field_is_named_without_its_value() {
        let cases: Vec<(&str, Box<dyn Fn(&mut ContextFields)>)> = vec![
            ("patient_id", Box::new(|f| f.patient_id = Some("x".repeat(65)))),
            ("patient_id", Box::new(|f| f.patient_id = Some("a\\b".into()))),
            ("patient_name", Box::new(|f| f.patient_name = Some("^Jane".into()))),
            ("patient_name", Box::new(|f| f.patient_name = Some("Doe=Jane".into()))),
            ("birth_date", Box::new(|f| f.birth_date = Some("19700231".into()))),
            ("birth_date", Box::new(|f| f.birth_date = Some("1970-01-31".into()))),
            ("sex", Box::new(|f| f.sex = Some("female".into()))),
            ("accession_number", Box::new(|f| f.accession_number = Some("x".repeat(17)))),
            ("body_site_snomed", Box::new(|f| f.body_site_snomed = Some("forearm".into()))),
            ("lesion_id", Box::new(|f| f.lesion_id = Some("L\n1".into()))),
        ];
        for (field, change) in cases {
            let mut f = fields();
            change(&mut f);
            let e = f.validated().expect_err(field);
            assert_eq!(e.field, field);
            assert!(!e.to_string().contains("Jane") && !e.to_string().contains("1970"), "{e}");
        }
    }

    #[test]
    fn patient_id_or_accession_is_required() {
        let none = ContextFields { patient_id: Some("  ".into()), ..ContextFields::default() };
        assert_eq!(none.validated().expect_err("no id").field, "patient_id");
        let accession_only = ContextFields { accession_number: Some("A1".into()), ..ContextFields::default() };
        assert!(accession_only.validated().is_ok());
    }

    #[test]
    fn the_screen_sees_the_patient_only_when_allowed() {
        let c = fields().into_context("id".into(), "t".into(), None).expect("context");
        assert_eq!(c.for_screen(false).patient_id, None);
        assert_eq!(c.for_screen(false).patient_name, None);
        assert_eq!(c.for_screen(false).lesion_id, Some("L1"));
        assert_eq!(c.for_screen(true).patient_name, Some("Doe^Jane"));
    }
}

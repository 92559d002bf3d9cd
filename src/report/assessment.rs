//! An examination's assessment of one lesion, published on `<prefix>/<station>/assessment`
//! (schema: `docs/schemas/assessment.schema.json`; bump [`SCHEMA_VERSION`] on any change a
//! subscriber could trip over). The examination fills it in (`examination::assessment`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::context::ExaminationContext;
use super::{ClassResult, ModelRef};
use crate::config::ExaminationMode;
use crate::frame::FrameOrigin;
use crate::referral::Referral;

/// 5: `context` (issue 26).
pub const SCHEMA_VERSION: u32 = 5;

/// What started an examination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The lesion came into view.
    Auto,
    /// A `capture` command.
    Capture,
}

#[derive(Debug, Serialize)]
pub struct Abstain {
    pub reasons: Vec<String>,
    pub message: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Agreement {
    /// Share of the frames whose own top class is the assessment's.
    pub top_class_share: f32,
    /// Spread of the frames' probability of melanoma.
    pub mel_probability_min: f32,
    pub mel_probability_max: f32,
    pub mel_probability_sd: f32,
}

#[derive(Debug, Serialize)]
pub struct Quality {
    pub frames: usize,
    /// From the first frame used to the last.
    pub span_ms: u64,
    pub focus_max: f32,
    pub focus_relative_min: f32,
    pub motion_px_max: f32,
    pub exposure_median: f32,
    pub glare_max: f32,
}

#[derive(Debug, Serialize)]
pub struct FrameEntry<'a> {
    pub seq: u64,
    pub source: &'a FrameOrigin,
    pub captured_at: String,
    pub weight: f32,
    pub focus: f32,
    pub focus_relative: f32,
    pub motion_px: Option<f32>,
    pub exposure: f32,
    pub glare: f32,
    /// Who saw the lesion in this frame: `checks` (the per-frame lesion check) or `model` (the
    /// check saw none, or one off centre; the model's features found the view typical of a
    /// lesion).
    pub lesion_seen_by: &'static str,
    pub top: &'a str,
    pub top_probability: f32,
}

#[derive(Debug, Serialize)]
pub struct AssessmentPayload<'a> {
    pub schema_version: u32,
    /// Unique per assessment: subscribers drop duplicates (QoS 1 delivers at least once) by it.
    pub assessment_id: &'a str,
    pub station_id: &'a str,
    pub mode: ExaminationMode,
    pub trigger: Trigger,
    /// When the lesion came into view, and when the assessment was made (RFC 3339 UTC).
    pub started_at: String,
    pub assessed_at: String,
    pub model: ModelRef<'a>,
    /// `null`, or why the station gives no answer. The probabilities (if any) are then not to
    /// be relied on.
    pub abstain: Option<Abstain>,
    /// Quality-weighted mean of the frames' calibrated probabilities, per class code (empty
    /// when no frame was classified).
    pub probabilities: BTreeMap<&'a str, f32>,
    /// The three most probable classes, best first, with what they mean.
    pub top: Vec<ClassResult<'a>>,
    /// Sum of the probabilities of the malignant classes (mel, bcc, akiec).
    pub malignant_probability: Option<f32>,
    /// Whether the assessment's probabilities cross the model's refer operating point; `null`
    /// when the station abstains (no answer, no flag either way) or no operating point applies.
    pub refer: Option<bool>,
    /// Which rules fired and the operating point's version (`null` as `refer`).
    pub referral: Option<Referral<'a>>,
    pub agreement: Option<Agreement>,
    pub quality: Quality,
    /// The frames used, in capture order.
    pub frames: Vec<FrameEntry<'a>>,
    /// Whose lesion, which visit, where on the body (`report::context`); `null` when no
    /// context was set. Filled in by the recorder, which holds the context in force.
    pub context: Option<ExaminationContext>,
    pub disclaimer: &'static str,
}


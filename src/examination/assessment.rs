//! One assessment of one lesion, from the good frames of its examination, and what it says in
//! the station's report (`report::assessment`): the weighted mean, the agreement of the frames
//! and their quality.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use crate::checks::FrameChecks;
use crate::classifier::ModelInfo;
use crate::config::ExaminationMode;
use crate::frame::FrameOrigin;
use crate::labels::Labels;
use crate::report::assessment::{Abstain, Agreement, AssessmentPayload, FrameEntry, Quality, Trigger, SCHEMA_VERSION};
use crate::report::{rfc3339, round4, ClassResult, ModelRef, DISCLAIMER};
use crate::referral::OperatingPoint;

/// A classified frame of an examination.
#[derive(Debug, Clone)]
pub struct UsedFrame {
    pub seq: u64,
    pub at: Instant,
    pub captured_at: SystemTime,
    pub origin: FrameOrigin,
    pub checks: FrameChecks,
    /// Calibrated probabilities, in the model's class order.
    pub probabilities: Vec<f32>,
    /// Above the model's out-of-distribution threshold.
    pub out_of_distribution: bool,
    /// The lesion check saw none (or one off centre); the model vouched for the view.
    pub lesion_seen_by_model: bool,
}

#[derive(Debug, Clone)]
pub struct Assessment {
    pub id: String,
    pub trigger: Trigger,
    pub started_at: SystemTime,
    pub assessed_at: SystemTime,
    /// The examination's sharpest focus: each frame's weight is its focus relative to it.
    pub max_focus: f32,
    pub frames: Vec<UsedFrame>,
    /// Why no answer is given (`None`: an answer).
    pub abstain: Option<Vec<String>>,
}

impl Assessment {
    pub fn from_frames(trigger: Trigger, started_at: SystemTime, assessed_at: SystemTime, max_focus: f32, frames: Vec<UsedFrame>) -> Self {
        Assessment { id: uuid::Uuid::new_v4().to_string(), trigger, started_at, assessed_at, max_focus, frames, abstain: None }
    }

    pub fn abstained(trigger: Trigger, started_at: SystemTime, assessed_at: SystemTime, max_focus: f32, frames: Vec<UsedFrame>, reasons: Vec<String>) -> Self {
        Assessment { abstain: Some(reasons), ..Self::from_frames(trigger, started_at, assessed_at, max_focus, frames) }
    }

    /// A frame's weight: its sharpness next to the examination's sharpest (the frames used all
    /// passed the other checks).
    pub fn weight(&self, frame: &UsedFrame) -> f32 {
        if self.max_focus > 0.0 {
            (frame.checks.focus / self.max_focus).clamp(0.05, 1.0)
        } else {
            1.0
        }
    }

    /// The quality-weighted mean of the frames' calibrated probabilities; `None` without frames.
    pub fn probabilities(&self) -> Option<Vec<f32>> {
        let n = self.frames.first()?.probabilities.len();
        let mut mean = vec![0.0f32; n];
        let mut total = 0.0f32;
        for f in &self.frames {
            let w = self.weight(f);
            total += w;
            for (m, p) in mean.iter_mut().zip(&f.probabilities) {
                *m += w * p;
            }
        }
        for m in &mut mean {
            *m /= total.max(1e-9);
        }
        Some(mean)
    }
}

const ABSTAIN_MESSAGE: &str = "No assessment: the station could not get enough good frames of this lesion. \
     Probabilities, if any, are not to be relied on.";

pub fn payload<'a>(
    a: &'a Assessment,
    station_id: &'a str,
    mode: ExaminationMode,
    model: &'a ModelInfo,
    labels: &'a Labels,
    operating_point: Option<&'a OperatingPoint>,
) -> AssessmentPayload<'a> {
    let probabilities = a.probabilities();
    let referral = match (&probabilities, &a.abstain, operating_point) {
        (Some(p), None, Some(op)) => Some(op.decide(p)),
        _ => None,
    };
    let top_of = |p: &[f32]| crate::postprocess::top_k(p, 3);
    let mel = labels.classes.iter().find(|l| l.code == "mel").map(|l| l.index);
    let (prob_map, top, malignant, agreement) = match &probabilities {
        Some(p) => {
            let top: Vec<ClassResult<'a>> = top_of(p)
                .into_iter()
                .map(|i| {
                    let l = &labels.classes[i];
                    ClassResult { code: &l.code, name: &l.name, description: &l.description, malignant: l.malignant, probability: round4(p[i]) }
                })
                .collect();
            let best = top_of(p)[0];
            let share = a.frames.iter().filter(|f| top_of(&f.probabilities)[0] == best).count() as f32 / a.frames.len() as f32;
            let mels: Vec<f32> = mel.map(|m| a.frames.iter().map(|f| f.probabilities[m]).collect()).unwrap_or_default();
            let mean = mels.iter().sum::<f32>() / mels.len().max(1) as f32;
            let sd = (mels.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / mels.len().max(1) as f32).sqrt();
            let agreement = Agreement {
                top_class_share: round4(share),
                mel_probability_min: round4(mels.iter().copied().fold(f32::INFINITY, f32::min).min(1.0)),
                mel_probability_max: round4(mels.iter().copied().fold(0.0, f32::max)),
                mel_probability_sd: round4(sd),
            };
            let malignant: f32 = labels.classes.iter().filter(|l| l.malignant).map(|l| p[l.index]).sum();
            let map = labels.classes.iter().map(|l| (l.code.as_str(), round4(p[l.index]))).collect();
            (map, top, Some(round4(malignant)), Some(agreement))
        }
        None => (BTreeMap::new(), Vec::new(), None, None),
    };
    let span_ms = match (a.frames.first(), a.frames.last()) {
        (Some(f), Some(l)) => l.at.saturating_duration_since(f.at).as_millis() as u64,
        _ => 0,
    };
    let mut exposures: Vec<f32> = a.frames.iter().map(|f| f.checks.exposure).collect();
    let r3 = |v: f32| (v * 1000.0).round() / 1000.0;
    let quality = Quality {
        frames: a.frames.len(),
        span_ms,
        focus_max: r3(a.max_focus),
        focus_relative_min: r3(a.frames.iter().map(|f| a.weight(f)).fold(1.0, f32::min)),
        motion_px_max: r3(a.frames.iter().filter_map(|f| f.checks.motion_px).fold(0.0, f32::max)),
        exposure_median: r3(crate::checks::median(&mut exposures)),
        glare_max: r3(a.frames.iter().map(|f| f.checks.glare).fold(0.0, f32::max)),
    };
    let frames = a
        .frames
        .iter()
        .map(|f| {
            let t = top_of(&f.probabilities)[0];
            FrameEntry {
                seq: f.seq,
                source: &f.origin,
                captured_at: rfc3339(f.captured_at),
                weight: r3(a.weight(f)),
                focus: f.checks.focus,
                focus_relative: r3(if a.max_focus > 0.0 { f.checks.focus / a.max_focus } else { 1.0 }),
                motion_px: f.checks.motion_px,
                exposure: f.checks.exposure,
                glare: f.checks.glare,
                lesion_seen_by: if f.lesion_seen_by_model { "model" } else { "checks" },
                top: &labels.classes[t].code,
                top_probability: round4(f.probabilities[t]),
            }
        })
        .collect();
    AssessmentPayload {
        schema_version: SCHEMA_VERSION,
        assessment_id: &a.id,
        station_id,
        mode,
        trigger: a.trigger,
        started_at: rfc3339(a.started_at),
        assessed_at: rfc3339(a.assessed_at),
        model: ModelRef::of(model),
        abstain: a.abstain.as_ref().map(|reasons| Abstain {
            reasons: reasons.clone(),
            message: if reasons.iter().any(|r| r == crate::abstain::OUT_OF_DISTRIBUTION) {
                crate::abstain::MESSAGE
            } else {
                ABSTAIN_MESSAGE
            },
        }),
        probabilities: prob_map,
        top,
        malignant_probability: malignant,
        refer: referral.as_ref().map(|r| r.refer),
        referral,
        agreement,
        quality,
        frames,
        context: None,
        disclaimer: DISCLAIMER,
    }
}

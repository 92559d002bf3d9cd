//! A frame's classification, published on `<prefix>/<station>/classification` (continuous mode,
//! or `examination.publish_frame_results`). Documented with an example in `docs/mqtt.md`; bump
//! [`SCHEMA_VERSION`] on any change a subscriber could trip over.

use std::time::SystemTime;

use serde::Serialize;

use super::{rfc3339, round4, ClassResult, ModelRef, DISCLAIMER};
use crate::frame::{FrameOrigin, LatencyMs};
use crate::labels::Labels;
use crate::postprocess::Classification;
use crate::referral::Referral;

pub const SCHEMA_VERSION: u32 = 3;

#[derive(Debug, Clone, Serialize)]
pub struct ClassificationPayload<'a> {
    pub schema_version: u32,
    /// Unique per result: subscribers drop duplicates (QoS 1 delivers at least once) by it.
    pub result_id: String,
    pub station_id: &'a str,
    /// The frame's sequence number within this daemon run (gaps = dropped or skipped frames).
    pub seq: u64,
    /// When the frame was captured, RFC 3339 UTC.
    pub captured_at: String,
    pub source: &'a FrameOrigin,
    pub model: ModelRef<'a>,
    /// Calibrated probability per class code.
    pub probabilities: std::collections::BTreeMap<&'a str, f32>,
    /// The three most probable classes, best first.
    pub top: Vec<TopClass<'a>>,
    /// Every class in model order, with what it means.
    pub classes: Vec<ClassResult<'a>>,
    /// Sum of the probabilities of the malignant classes (mel, bcc, akiec).
    pub malignant_probability: f32,
    /// Why this frame gets no answer (`null`: answered): out of distribution, or a failed
    /// per-frame check. Its probabilities are then not to be relied on, and `refer` is `null`.
    pub abstain: Option<crate::abstain::Abstain>,
    /// Whether the probabilities cross the model's refer operating point; `null` when no
    /// operating point applies to this model.
    pub refer: Option<bool>,
    /// Which rules fired and the operating point's version (`null` as `refer`).
    pub referral: Option<Referral<'a>>,
    pub latency_ms: LatencyMs,
    pub disclaimer: &'static str,
}

/// A top-3 entry: the class and its probability (descriptions are in `classes`).
#[derive(Debug, Clone, Serialize)]
pub struct TopClass<'a> {
    pub code: &'a str,
    pub name: &'a str,
    pub malignant: bool,
    pub probability: f32,
}

pub struct PayloadInput<'a> {
    pub station_id: &'a str,
    pub result_id: String,
    pub seq: u64,
    pub captured_at: SystemTime,
    pub origin: &'a FrameOrigin,
    pub model: ModelRef<'a>,
    pub labels: &'a Labels,
    pub classification: &'a Classification,
    pub referral: Option<Referral<'a>>,
    pub abstain: Option<crate::abstain::Abstain>,
    pub latency: LatencyMs,
}

pub fn build(input: PayloadInput<'_>) -> ClassificationPayload<'_> {
    let c = input.classification;
    let class = |i: usize| {
        let l = &input.labels.classes[i];
        ClassResult {
            code: &l.code,
            name: &l.name,
            description: &l.description,
            malignant: l.malignant,
            probability: round4(c.probabilities[i]),
        }
    };
    let malignant_probability = input
        .labels
        .classes
        .iter()
        .filter(|l| l.malignant)
        .map(|l| c.probabilities[l.index])
        .sum::<f32>();
    ClassificationPayload {
        schema_version: SCHEMA_VERSION,
        result_id: input.result_id,
        station_id: input.station_id,
        seq: input.seq,
        captured_at: rfc3339(input.captured_at),
        source: input.origin,
        model: input.model,
        probabilities: input
            .labels
            .classes
            .iter()
            .map(|l| (l.code.as_str(), round4(c.probabilities[l.index])))
            .collect(),
        top: c
            .top
            .iter()
            .map(|&i| {
                let l = &input.labels.classes[i];
                TopClass { code: &l.code, name: &l.name, malignant: l.malignant, probability: round4(c.probabilities[i]) }
            })
            .collect(),
        classes: (0..input.labels.len()).map(class).collect(),
        malignant_probability: round4(malignant_probability),
        abstain: input.abstain,
        refer: input.referral.as_ref().map(|r| r.refer),
        referral: input.referral,
        latency_ms: input.latency,
        disclaimer: DISCLAIMER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RawOutput;

    #[test]
    fn payload_has_the_documented_fields() {
        let labels = Labels::parse(include_str!("../../models/labels.json")).expect("labels");
        let model = ModelRef { id: "m", sha256: "ab", temperature: 1.0 };
        let classification =
            crate::postprocess::classify(&RawOutput::F32(vec![0.0, 0.0, 0.0, 0.0, 3.0, 1.0, 0.0]), 1.0);
        let origin = FrameOrigin { kind: "directory", name: "x.jpg".into() };
        let payload = build(PayloadInput {
            station_id: "s1",
            result_id: "r".into(),
            seq: 3,
            captured_at: SystemTime::UNIX_EPOCH,
            origin: &origin,
            model,
            labels: &labels,
            classification: &classification,
            referral: None,
            abstain: None,
            latency: LatencyMs::default(),
        });
        let v = serde_json::to_value(&payload).expect("serializes");
        assert_eq!(v["schema_version"], 3);
        assert_eq!(v["captured_at"], "1970-01-01T00:00:00Z");
        assert_eq!(v["top"][0]["code"], "mel");
        assert_eq!(v["top"][0]["malignant"], true);
        assert_eq!(v["top"].as_array().map(Vec::len), Some(3));
        assert_eq!(v["classes"].as_array().map(Vec::len), Some(7));
        assert_eq!(v["probabilities"].as_object().map(|o| o.len()), Some(7));
        assert!(v["disclaimer"].as_str().is_some_and(|s| s.contains("not a diagnosis")));
        assert!(v["refer"].is_null() && v["referral"].is_null(), "no operating point, no flag");
        assert!(v["abstain"].is_null(), "answered");
        let total: f64 = v["probabilities"].as_object().expect("map").values().filter_map(|p| p.as_f64()).sum();
        assert!((total - 1.0).abs() < 1e-3);
    }
}

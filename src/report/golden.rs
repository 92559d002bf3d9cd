//! The station's messages, byte for byte, for fixed inputs: a classification, an assessment
//! (answered, with a refer flag, and abstained) and a state; each also checked against its
//! schema (`schemas.rs`). The files under
//! `tests/golden/payloads/` were recorded before the report layer was split out of `publish`
//! (issue 24) and must not change unless a message's schema version changes with them.
//! `LESIOND_RECORD_GOLDEN=1 cargo test --lib golden_payloads` rewrites them.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::checks::{Check, FrameChecks, LesionFigures};
use crate::classifier::ModelInfo;
use crate::config::ExaminationMode;
use crate::examination::assessment::{self, Assessment, UsedFrame};
use crate::frame::{FrameOrigin, LatencyMs};
use crate::labels::Labels;
use crate::report::assessment::Trigger;
use crate::report::classification::{self as payload, PayloadInput};
use crate::report::state::{FrameReport, Progress, StateName, StatePayload, StationState};
use crate::referral::OperatingPoint;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn labels() -> Labels {
    Labels::parse(include_str!("../../models/labels.json")).expect("labels")
}

fn model() -> ModelInfo {
    ModelInfo {
        id: "lesion_mnv2_int8".into(),
        sha256: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
        engine: "tflite".into(),
        temperature: 1.25,
        path: "m.tflite".into(),
        status: crate::classifier::EngineStatus {
            runtime: crate::engine::EngineRuntime { engine: "tflite", library: "TF Lite 2.6.0".into(), threads: 1, xnnpack: None },
            warmup_invoke_ms: 1.0,
        },
        referral: String::new(),
        ood: String::new(),
    }
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_790_000_000_000 + secs * 1000 + 250)
}

fn checks(focus: f32, failed: Vec<Check>) -> FrameChecks {
    FrameChecks { exposure: 0.71, clipped: 0.001, glare: 0.002, focus, motion_px: Some(1.5), lesion: LesionFigures::default(), failed, signature: Default::default() }
}

/// Compares with (or records) `tests/golden/payloads/<name>.json`, and validates it against
/// its schema.
fn golden(name: &str, json: Vec<u8>) {
    let schema = name.split('_').next().unwrap_or(name);
    super::schemas::assert_valid(schema, &json);
    let path = repo().join("tests/golden/payloads").join(format!("{name}.json"));
    if std::env::var_os("LESIOND_RECORD_GOLDEN").is_some() {
        std::fs::write(&path, &json).expect("write golden");
        return;
    }
    let want = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(String::from_utf8_lossy(&json), String::from_utf8_lossy(&want), "{name}: the message changed");
}

#[test]
fn classification_is_unchanged() {
    let labels = labels();
    let model = model();
    let op = OperatingPoint::load(&repo().join("models/operating_point.json"), &labels).expect("operating point");
    let classification = crate::postprocess::classify(&crate::engine::RawOutput::F32(vec![0.2, 0.1, 0.4, -1.0, 2.5, 2.0, -0.5]), 1.25);
    let origin = FrameOrigin { kind: "directory", name: "ISIC_0000001.jpg".into() };
    for (name, abstain) in [("classification", None), ("classification_abstained", crate::abstain::of_image(Some(&checks(30.0, vec![Check::Glare])), None))] {
        let referral = if abstain.is_none() { Some(op.decide(&classification.probabilities)) } else { None };
        let body = payload::build(PayloadInput {
            station_id: "station-7",
            result_id: "6f1d2c3b-0000-4000-8000-000000000001".into(),
            seq: 42,
            captured_at: at(0),
            origin: &origin,
            model: crate::report::ModelRef::of(&model),
            labels: &labels,
            classification: &classification,
            referral,
            abstain,
            latency: LatencyMs { decode: 1.5, preprocess: 2.25, queue: 0.125, inference: 30.0, postprocess: 0.05, total: 33.925 },
        });
        golden(name, serde_json::to_vec(&body).expect("serializes"));
    }
}

fn used(seq: u64, t0: Instant, focus: f32, probabilities: Vec<f32>, by_model: bool) -> UsedFrame {
    UsedFrame {
        seq,
        at: t0 + Duration::from_millis(seq * 200),
        captured_at: at(seq),
        origin: FrameOrigin { kind: "camera", name: "/dev/video0".into() },
        checks: checks(focus, Vec::new()),
        probabilities,
        out_of_distribution: false,
        lesion_seen_by_model: by_model,
    }
}

#[test]
fn assessment_is_unchanged() {
    let labels = labels();
    let model = model();
    let op = OperatingPoint::load(&repo().join("models/operating_point.json"), &labels).expect("operating point");
    let t0 = Instant::now();
    let frames = vec![
        used(3, t0, 40.0, vec![0.02, 0.03, 0.05, 0.01, 0.55, 0.32, 0.02], false),
        used(5, t0, 50.0, vec![0.01, 0.02, 0.04, 0.01, 0.62, 0.28, 0.02], true),
        used(9, t0, 45.0, vec![0.03, 0.02, 0.10, 0.01, 0.30, 0.52, 0.02], false),
    ];
    let answered = Assessment {
        id: "0b7e5c1a-0000-4000-8000-000000000002".into(),
        trigger: Trigger::Auto,
        started_at: at(1),
        assessed_at: at(10),
        max_focus: 50.0,
        frames: frames.clone(),
        abstain: None,
    };
    let body = assessment::payload(&answered, "station-7", ExaminationMode::Auto, &model, &labels, Some(&op));
    golden("assessment", serde_json::to_vec(&body).expect("serializes"));
    let abstained = Assessment {
        id: "0b7e5c1a-0000-4000-8000-000000000003".into(),
        trigger: Trigger::Capture,
        abstain: Some(vec![crate::abstain::OUT_OF_DISTRIBUTION.to_string(), "too_few_good_frames".into()]),
        ..answered
    };
    let body = assessment::payload(&abstained, "station-7", ExaminationMode::Manual, &model, &labels, Some(&op));
    golden("assessment_abstained", serde_json::to_vec(&body).expect("serializes"));
}

#[test]
fn state_is_unchanged() {
    let state = StationState { state: StateName::Assessing, check: None, progress: Some(Progress { frames: 2, needed: 5 }), assessment_id: None, abstained: None };
    let origin = FrameOrigin { kind: "camera", name: "/dev/video0".into() };
    let checks = checks(44.0, vec![Check::Moving]);
    let frame = FrameReport { source: &origin, checks: &checks };
    let mut payload = StatePayload::new("station-7", ExaminationMode::Auto, &state, at(4), Some(frame));
    payload.at = crate::report::rfc3339(at(5));
    golden("state", serde_json::to_vec(&payload).expect("serializes"));
    let idle = StationState::idle(Some(Check::NoLesion));
    let mut payload = StatePayload::new("station-7", ExaminationMode::Auto, &idle, at(4), None);
    payload.at = crate::report::rfc3339(at(5));
    golden("state_idle", serde_json::to_vec(&payload).expect("serializes"));
}

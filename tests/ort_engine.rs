//! The ONNX Runtime engine: on real HAM10000 images through the daemon's own decode and
//! preprocessing, the float ONNX export in ONNX Runtime agrees with TF Lite on the same float
//! weights, and the int8 QDQ export (the one the bench runs) keeps the float model's top class on
//! most images. A missing library or a wrong model file is a clear error.
//! Needs the engine and its library: `scripts/onnxruntime.sh`, then
//! `cargo test --features ort --test ort_engine` (`.ci/run` does both).
#![cfg(all(feature = "ort", feature = "tflite"))]

mod common;

use std::path::PathBuf;

use common::*;
use lesiond::classifier::Classifier;
use lesiond::config::{Config, ConfigOrigin, EngineKind, ModelConfig, DEMO_TOML};
use lesiond::preprocess::Preprocessor;

/// Same float weights, two runtimes: only float rounding differs.
const FLOAT_TOLERANCE: f32 = 1e-3;
/// int8 QDQ against float: 94.7% top-1 agreement on the whole test split (models/README.md);
/// on 24 images at least 20 must agree, which a wrongly quantized graph would not reach.
const QDQ_MIN_SAME_TOP: usize = 20;
const IMAGES: usize = 24;

/// The library that scripts/onnxruntime.sh extracts ($ORT_DYLIB_PATH wins when set).
fn library() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/onnxruntime").join(std::env::consts::ARCH).join("libonnxruntime.so"))
}

fn model(engine: EngineKind, file: &str) -> ModelConfig {
    // The embedded demo config's model section, so that fields added later keep their defaults.
    let base = Config::from_toml_and_env(DEMO_TOML, &ConfigOrigin::Embedded, Vec::new()).expect("demo config");
    let m = repo().join("models");
    ModelConfig {
        engine,
        path: m.join(file),
        labels: m.join("labels.json"),
        calibration: Some(m.join("calibration.json")),
        threads: 1,
        onnxruntime_library: Some(library()),
        ..base.model
    }
}

/// `IMAGES` images spread over the whole data set (by name), not just its first files.
fn spread_images() -> Vec<PathBuf> {
    let all = sample_images(10_000.min(std::fs::read_dir(data_dir().join("images")).expect("images").count()));
    let step = (all.len() / IMAGES).max(1);
    all.into_iter().step_by(step).take(IMAGES).collect()
}

fn probabilities(config: &ModelConfig, images: &[PathBuf]) -> Vec<Vec<f32>> {
    let mut classifier = Classifier::load(config).unwrap_or_else(|e| panic!("{}: {e}", config.path.display()));
    let mut pre = Preprocessor::new(classifier.input_spec(), false);
    images
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).expect("read image");
            let image = lesiond::source::decode::decode_image(&bytes).expect("decode");
            classifier.classify(&pre.run(&image)).expect("classify").0.probabilities
        })
        .collect()
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, &p)| if p > v[best] { i } else { best })
}

fn compare(a: &[Vec<f32>], b: &[Vec<f32>]) -> (usize, f32) {
    let same = a.iter().zip(b).filter(|(x, y)| argmax(x) == argmax(y)).count();
    let max = a.iter().zip(b).flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs())).fold(0.0, f32::max);
    (same, max)
}

// One test function: ONNX Runtime is loaded once per process, and every case below shares it.
#[test]
fn ort_matches_tflite_and_refuses_bad_input() {
    let images = spread_images();
    assert_eq!(images.len(), IMAGES);
    let ort_float = probabilities(&model(EngineKind::Ort, "lesion_mnv2_float.onnx"), &images);
    let tflite_float = probabilities(&model(EngineKind::Tflite, "lesion_mnv2_float.tflite"), &images);
    let ort_int8 = probabilities(&model(EngineKind::Ort, "lesion_mnv2_int8_qdq.onnx"), &images);

    let (same, max) = compare(&ort_float, &tflite_float);
    println!("ort(float onnx) vs tflite(float): top class {same}/{IMAGES}, max |dp| {max:.2e} (tolerance {FLOAT_TOLERANCE:.0e})");
    assert_eq!(same, IMAGES, "top classes differ between ONNX Runtime and TF Lite on the same float weights");
    assert!(max <= FLOAT_TOLERANCE, "probabilities differ by {max} > {FLOAT_TOLERANCE}");

    let (same, max) = compare(&ort_int8, &ort_float);
    println!("ort(int8 qdq) vs ort(float): top class {same}/{IMAGES}, max |dp| {max:.3}");
    assert!(same >= QDQ_MIN_SAME_TOP, "only {same}/{IMAGES} top classes of the int8 QDQ model agree with float");

    // A .tflite given to the ort engine: an error naming the file and the fix.
    let e = Classifier::load(&model(EngineKind::Ort, "lesion_mnv2_int8.tflite")).err().expect("not ONNX").to_string();
    assert!(e.contains("lesion_mnv2_int8.tflite") && e.contains("ONNX"), "{e}");

    // Wrong input tensor type: an error, not a crash.
    use lesiond::engine::ort::OrtEngine;
    use lesiond::engine::Engine;
    use lesiond::preprocess::InputTensor;
    let mut engine = OrtEngine::load(&repo().join("models/lesion_mnv2_int8_qdq.onnx"), 1, Some(&library())).expect("loads");
    assert_eq!(engine.num_classes(), 7);
    assert!(engine.describe().starts_with("onnxruntime "), "{}", engine.describe());
    assert!(engine.infer(&InputTensor::U8(vec![0; 10])).is_err());
    assert!(engine.infer(&InputTensor::F32(vec![0.0; 10])).is_err());
}

#[test]
fn a_missing_runtime_library_is_a_clear_error() {
    // In a child process: the first library a process loads (or fails to) is kept.
    let image = sample_images(1).remove(0);
    let out = lesiond()
        .args(["classify", "--engine", "ort", "--model"])
        .arg(repo().join("models/lesion_mnv2_int8_qdq.onnx"))
        .arg(&image)
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .expect("run lesiond");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("/nonexistent/libonnxruntime.so") && stderr.contains("scripts/onnxruntime.sh"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

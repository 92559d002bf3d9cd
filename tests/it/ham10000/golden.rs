//! The daemon against the Python reference (training/): the same preprocessing bytes and the
//! same engine outputs on real test-split images. This is what catches a daemon that resizes
//! differently from training, or a model export that TF Lite 2.6 silently runs wrong.

use std::path::PathBuf;

use crate::common::*;
use serde_json::Value;

fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join("tests/golden/golden.json")).expect("golden.json"))
        .expect("valid JSON")
}

#[test]
fn resize_matches_the_numpy_reference_byte_for_byte() {
    let _heavy = heavy();
    use lesiond::preprocess::{resize_rgb, AxisWeights};
    use sha2::Digest;
    let text = std::fs::read_to_string(repo().join("tests/golden/resize_cases.json")).expect("resize_cases.json");
    let cases: Value = serde_json::from_str(&text).expect("JSON");
    let cases = cases["cases"].as_array().expect("cases");
    assert!(cases.len() >= 4);
    for case in cases {
        let n = |k: &str| case[k].as_u64().expect(k) as u32;
        let src: Vec<u8> = case["src"].as_array().expect("src").iter().map(|v| v.as_u64().expect("byte") as u8).collect();
        let img = image::RgbImage::from_raw(n("src_width"), n("src_height"), src).expect("image");
        let out = resize_rgb(
            &img,
            &AxisWeights::new(n("src_width") as usize, n("out_width") as usize),
            &AxisWeights::new(n("src_height") as usize, n("out_height") as usize),
        );
        let first: Vec<u64> = out.as_raw().iter().take(24).map(|&b| u64::from(b)).collect();
        let want_first: Vec<u64> = case["out_first_24"].as_array().expect("first").iter().filter_map(Value::as_u64).collect();
        assert_eq!(first, want_first[..first.len().min(want_first.len())], "case {}x{} -> {}x{}", n("src_width"), n("src_height"), n("out_width"), n("out_height"));
        assert_eq!(hex::encode(sha2::Sha256::digest(out.as_raw())), case["out_sha256"].as_str().expect("sha"));
    }
}

#[test]
fn classify_gives_the_reference_input_bytes_outputs_and_top_class() {
    let _heavy = heavy();
    let g = golden();
    let model = g["model"].as_str().expect("model");
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(repo().join(model)).expect("model file")))
    };
    assert_eq!(sha, g["model_sha256"].as_str().expect("sha"), "golden.json belongs to another model: regenerate it (training/)");
    let images = g["images"].as_array().expect("images");
    assert!(images.len() >= 20);
    let data = data_dir();
    let paths: Vec<PathBuf> = images.iter().map(|i| data.join(i["path"].as_str().expect("path"))).collect();
    let out = lesiond()
        .args(["classify", "--json", "--threads", "2", "--model", model])
        .args(&paths)
        .output()
        .expect("classify");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), images.len());
    for (want, got) in images.iter().zip(&lines) {
        let id = want["image_id"].as_str().expect("id");
        assert_eq!(got["input_sha256"], want["input_sha256"], "{id}: preprocessed bytes differ from the Python reference");
        // Same runtime (TF Lite 2.6) as the ctypes reference: identical outputs.
        assert_eq!(got["raw_output"], want["tflite26_output_uint8"], "{id}: engine output");
        // ai-edge-litert's reference kernels agree to one quantization step.
        let close = got["raw_output"].as_array().expect("raw").iter().zip(want["output_uint8"].as_array().expect("out")).all(
            |(a, b)| (a.as_i64().unwrap_or(-9) - b.as_i64().unwrap_or(99)).abs() <= 1,
        );
        assert!(close, "{id}: {} vs {}", got["raw_output"], want["output_uint8"]);
        assert_eq!(got["top"][0]["code"], want["top_class"], "{id}: top class");
        // The out-of-distribution score from the same runtime's outputs (features, the last
        // block's map statistics, logits), computed in Python: the engine's statistics and
        // `ood.rs` end to end.
        let score = got["ood"]["score"].as_f64().expect("an out-of-distribution score");
        let reference = want["tflite26_ood_score"].as_f64().expect("reference score");
        assert!((score - reference).abs() <= 1e-4, "{id}: out-of-distribution score {score} vs Python {reference}");
    }
}

#[test]
fn first_golden_input_matches_the_stored_bytes() {
    let _heavy = heavy();
    // The raw bytes of a few inputs are stored so a mismatch can be diffed, not just detected.
    use lesiond::preprocess::{InputSpec, InputTensor, InputType, Preprocessor};
    let g = golden();
    let data = data_dir();
    let mut checked = 0;
    for img in g["images"].as_array().expect("images") {
        let id = img["image_id"].as_str().expect("id");
        let stored = repo().join(format!("tests/golden/inputs/{id}.rgb"));
        let Ok(want) = std::fs::read(&stored) else { continue };
        let bytes = std::fs::read(data.join(img["path"].as_str().expect("path"))).expect("image");
        let decoded = lesiond::source::decode::decode_image(&bytes).expect("decodes");
        let spec = InputSpec { width: 256, height: 192, dtype: InputType::U8 { scale: 1.0, zero_point: 0 } };
        let InputTensor::U8(got) = Preprocessor::new(spec, false).run(&decoded) else { panic!("u8") };
        let diffs = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(diffs, 0, "{id}: {diffs} bytes differ");
        checked += 1;
    }
    assert!(checked >= 1);
}

//! Postprocessing: raw network output in, calibrated class probabilities and the top three out.

use std::path::{Path, PathBuf};

use crate::engine::RawOutput;

/// How many classes the result lists as its best guesses.
pub const TOP_K: usize = 3;

/// The calibrated view of one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// Dequantized logits, model order.
    pub logits: Vec<f32>,
    /// softmax(logits / T), model order; sums to 1.
    pub probabilities: Vec<f32>,
    /// Indices of the `TOP_K` most probable classes, best first.
    pub top: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    #[error("cannot read calibration file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("calibration file {path} is not valid: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Reads the temperature fitted on the validation split (`models/calibration.json`).
pub fn load_temperature(path: &Path) -> Result<f32, CalibrationError> {
    #[derive(serde::Deserialize)]
    struct Calibration {
        temperature: f32,
    }
    let invalid = |reason: String| CalibrationError::Invalid { path: path.into(), reason };
    let text = crate::fsread::read_to_string(path, "calibration file", crate::fsread::limit::MODEL_JSON)
        .map_err(|e| CalibrationError::Read { path: path.into(), source: e.into() })?;
    let c: Calibration = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    if !(c.temperature.is_finite() && c.temperature > 0.0 && c.temperature < 100.0) {
        return Err(invalid(format!("temperature {} must be in (0, 100)", c.temperature)));
    }
    Ok(c.temperature)
}

pub fn dequantize(raw: &RawOutput) -> Vec<f32> {
    match raw {
        RawOutput::U8 { values, scale, zero_point } => {
            values.iter().map(|&q| scale * (i32::from(q) - zero_point) as f32).collect()
        }
        RawOutput::F32(v) => v.clone(),
    }
}

/// Numerically stable softmax of `logits / temperature`.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let scaled: Vec<f32> = logits.iter().map(|l| l / temperature).collect();
    let max = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = scaled.iter().map(|s| (s - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// Indices of the `k` largest values, largest first; ties keep model order.
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

pub fn classify(raw: &RawOutput, temperature: f32) -> Classification {
    let logits = dequantize(raw);
    let probabilities = softmax(&logits, temperature);
    let top = top_k(&probabilities, TOP_K);
    Classification { logits, probabilities, top }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dequantizes_with_tensor_parameters() {
        let raw = RawOutput::U8 { values: vec![0, 128, 255], scale: 0.5, zero_point: 128 };
        assert_eq!(dequantize(&raw), vec![-64.0, 0.0, 63.5]);
    }

    #[test]
    fn softmax_sums_to_one_and_temperature_flattens() {
        let logits = [2.0, 1.0, 0.1, -3.0];
        let p1 = softmax(&logits, 1.0);
        let p2 = softmax(&logits, 2.0);
        assert!((p1.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((p2.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p2[0] < p1[0] && p2[3] > p1[3]);
        // Large logits do not overflow.
        let p = softmax(&[1000.0, 999.0], 1.0);
        assert!(p.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn top_three_best_first() {
        let c = classify(&RawOutput::F32(vec![0.1, 3.0, -1.0, 2.0, 0.0, 2.5, -2.0]), 1.0);
        assert_eq!(c.top, vec![1, 5, 3]);
    }

    #[test]
    fn temperature_file_is_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.json");
        std::fs::write(&p, r#"{"temperature": 1.5, "fitted_on": "validation"}"#).expect("write");
        assert_eq!(load_temperature(&p).expect("ok"), 1.5);
        std::fs::write(&p, r#"{"temperature": -1}"#).expect("write");
        assert!(load_temperature(&p).unwrap_err().to_string().contains("temperature"));
    }
}

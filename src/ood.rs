//! Out of distribution: is this image like the dermoscopic images the model was trained on?
//!
//! The score (fitted by `python -m lesion_training ood`, shipped in `models/ood.json`) adds two
//! standardised parts, each higher the stranger the image:
//! - the Mahalanobis distance of a feature vector `f`, L2-normalised, to the nearest class mean,
//!   with one shared covariance, in a 256-dimensional PCA: projection and whitening are one
//!   matrix `M`, so `y = M f/|f| - b` and `d = min_k |y - nu_k|^2`. The file names which vector
//!   (`input`): the pooled features (the model's second output) or the per-channel means and
//!   standard deviations of the last block's map (its third output), whichever told painted-out
//!   validation images from real ones better when it was fitted;
//! - the energy of the logits, `-logsumexp(logits)`, with a weight fitted on validation data
//!   (it may be 0: see training/lesion_training/ood.py).
//!
//! Above the threshold the result abstains with `out_of_distribution`. The threshold and the
//! `atypical` cut-off (for a single image's scene checks, `abstain.rs`) are chosen together on
//! the validation split through the daemon (`python -m lesion_training ood-eval`): at most 5 % of
//! the validation images may abstain in all. The parameters belong to one model file (sha256 checked
//! at load, like the refer operating point) and need the output they read; a model without it
//! still classifies, without this score, and `lesiond check` says so.
//!
//! Computed in float64 from the float32 matrix, as the Python reference does, so both agree to
//! far better than the 1e-4 the golden test asks (tests/golden/ood_golden.json).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::engine::Features;

#[derive(Debug, thiserror::Error)]
pub enum OodError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid out-of-distribution file: {reason} (python -m lesion_training ood writes it)")]
    Invalid { path: PathBuf, reason: String },
}

/// `models/ood.json` as written by the training package.
#[derive(Debug, Deserialize)]
struct OodFile {
    version: String,
    model_sha256: String,
    /// Absent in files written before the map statistics existed: the pooled features.
    #[serde(default)]
    input: OodInput,
    feature_dim: usize,
    dims: usize,
    projection_f32_le_base64: String,
    offset: Vec<f64>,
    class_means: Vec<Vec<f64>>,
    maha_mean: f64,
    maha_std: f64,
    energy_mean: f64,
    energy_std: f64,
    energy_weight: f64,
    threshold: f64,
    /// A single image's scene check (no_lesion, not_skin) counts only above this score.
    scene_check_min_score: f64,
}

/// The feature vector the score reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OodInput {
    /// The pooled penultimate features (second output).
    #[default]
    Features,
    /// The last block's map, per-channel means then standard deviations (third output).
    FeatureMapStats,
}

impl OodInput {
    pub fn pick(self, features: Features<'_>) -> Option<&[f32]> {
        match self {
            OodInput::Features => features.pooled,
            OodInput::FeatureMapStats => features.map_stats,
        }
    }

    /// What the model must give, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            OodInput::Features => "the pooled features (second output)",
            OodInput::FeatureMapStats => "the last block's feature map (third output)",
        }
    }
}

/// The fitted score, ready to apply to one image's features and logits.
#[derive(Debug, Clone)]
pub struct OodScorer {
    pub version: String,
    pub model_sha256: String,
    pub threshold: f64,
    pub scene_check_min_score: f64,
    pub input: OodInput,
    feature_dim: usize,
    /// `dims` rows of `feature_dim`, row-major, widened to f64 once at load.
    projection: Vec<f64>,
    offset: Vec<f64>,
    class_means: Vec<Vec<f64>>,
    maha: (f64, f64),
    energy: (f64, f64),
    energy_weight: f64,
}

/// One image's score and whether it is out of distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OodScore {
    pub score: f64,
    pub mahalanobis: f64,
    pub energy: f64,
    pub out_of_distribution: bool,
    /// Above `scene_check_min_score` (chosen on validation): the features find the view less
    /// typical than most validation images, so a failed scene check is believed (`abstain.rs`).
    pub atypical: bool,
}

impl OodScorer {
    pub fn load(path: &Path) -> Result<Self, OodError> {
        let text = crate::fsread::read_to_string(path, "out-of-distribution file", crate::fsread::limit::OOD_JSON)
            .map_err(|e| OodError::Read { path: path.to_path_buf(), source: e.into() })?;
        Self::parse(&text).map_err(|reason| OodError::Invalid { path: path.to_path_buf(), reason })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let f: OodFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(f.projection_f32_le_base64.as_bytes())
            .map_err(|e| format!("projection: {e}"))?;
        if f.dims == 0 || f.feature_dim == 0 || bytes.len() != f.dims * f.feature_dim * 4 {
            return Err(format!("projection has {} bytes, expected {} x {} float32", bytes.len(), f.dims, f.feature_dim));
        }
        if f.offset.len() != f.dims || f.class_means.is_empty() || f.class_means.iter().any(|m| m.len() != f.dims) {
            return Err(format!("offset and class means must have {} values each", f.dims));
        }
        let finite = |v: f64| v.is_finite();
        if !(f.maha_std > 0.0 && f.energy_std > 0.0)
            || ![f.maha_mean, f.energy_mean, f.energy_weight, f.threshold, f.scene_check_min_score].into_iter().all(finite)
            || !f.offset.iter().chain(f.class_means.iter().flatten()).copied().all(finite)
        {
            return Err("standardisation, threshold, offset and means must be finite (standard deviations > 0)".into());
        }
        let projection: Vec<f64> =
            bytes.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect();
        if !projection.iter().all(|v| v.is_finite()) {
            return Err("projection has values that are not finite".into());
        }
        Ok(Self {
            version: f.version,
            model_sha256: f.model_sha256,
            threshold: f.threshold,
            scene_check_min_score: f.scene_check_min_score,
            input: f.input,
            feature_dim: f.feature_dim,
            projection,
            offset: f.offset,
            class_means: f.class_means,
            maha: (f.maha_mean, f.maha_std),
            energy: (f.energy_mean, f.energy_std),
            energy_weight: f.energy_weight,
        })
    }

    /// How many values the score expects in its input vector.
    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }

    /// The score of one image from what the engine gave; `None` when the model lacks the input
    /// this score reads, or it does not have the expected length.
    pub fn score(&self, features: Features<'_>, logits: &[f32]) -> Option<OodScore> {
        self.score_vector(self.input.pick(features)?, logits)
    }

    /// The score of one image's input vector (see [`OodScorer::input`]) and logits.
    pub fn score_vector(&self, features: &[f32], logits: &[f32]) -> Option<OodScore> {
        if features.len() != self.feature_dim || logits.is_empty() {
            return None;
        }
        let norm = features.iter().map(|&f| f64::from(f) * f64::from(f)).sum::<f64>().sqrt().max(1e-12);
        let whitened = self.projection.chunks_exact(self.feature_dim).zip(&self.offset).map(|(row, b)| {
            row.iter().zip(features).map(|(m, f)| m * f64::from(*f)).sum::<f64>() / norm - b
        });
        let whitened: Vec<f64> = whitened.collect();
        let mahalanobis = self
            .class_means
            .iter()
            .map(|mean| whitened.iter().zip(mean).map(|(y, m)| (y - m) * (y - m)).sum::<f64>())
            .fold(f64::INFINITY, f64::min);
        let energy = energy(logits);
        let score = (mahalanobis - self.maha.0) / self.maha.1 + self.energy_weight * (energy - self.energy.0) / self.energy.1;
        Some(OodScore {
            score,
            mahalanobis,
            energy,
            out_of_distribution: score > self.threshold,
            atypical: score > self.scene_check_min_score,
        })
    }
}

/// `-logsumexp(logits)`, stable.
fn energy(logits: &[f32]) -> f64 {
    let max = logits.iter().map(|&l| f64::from(l)).fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits.iter().map(|&l| (f64::from(l) - max).exp()).sum();
    -(max + sum.ln())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(threshold: f64) -> String {
        // 2 features -> 2 dims: M = identity, b = 0, means (0.6,0.8) and (-0.6,0.8).
        let m: Vec<u8> = [1.0f32, 0.0, 0.0, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        serde_json::json!({
            "version": "t", "model_sha256": "ab", "feature_dim": 2, "dims": 2,
            "projection_f32_le_base64": base64::engine::general_purpose::STANDARD.encode(m),
            "offset": [0.0, 0.0], "class_means": [[0.6, 0.8], [-0.6, 0.8]],
            "maha_mean": 0.0, "maha_std": 1.0, "energy_mean": 0.0, "energy_std": 1.0, "energy_weight": 1.0,
            "threshold": threshold, "scene_check_min_score": 0.0
        })
        .to_string()
    }

    #[test]
    fn nearest_class_mean_and_energy() {
        let s = OodScorer::parse(&tiny(0.5)).expect("parses");
        // Normalised first: (6, 8) is (0.6, 0.8), the first mean.
        let r = s.score_vector(&[6.0, 8.0], &[0.0, 0.0]).expect("scores");
        assert!(r.mahalanobis.abs() < 1e-12, "{r:?}");
        assert!((r.energy + std::f64::consts::LN_2).abs() < 1e-12, "{r:?}");
        assert!((r.score - r.energy).abs() < 1e-12 && !r.out_of_distribution, "{r:?}");
        let near = s.score_vector(&[-3.0, 5.0], &[0.0, 0.0]).expect("scores");
        assert!(near.mahalanobis < 0.02, "nearest of the two means: {near:?}");
        let far = s.score_vector(&[0.0, -1.0], &[0.0, 0.0]).expect("scores");
        assert!((far.mahalanobis - 3.6).abs() < 1e-9, "{far:?}");
        assert!(far.out_of_distribution, "{far:?}");
        assert!(s.score_vector(&[1.0], &[0.0]).is_none(), "wrong feature length");
        // The file names the pooled features (the default); an engine without them gives no score.
        assert_eq!(s.input, OodInput::Features);
        let map_only = Features { pooled: None, map_stats: Some(&[6.0, 8.0]) };
        assert!(s.score(map_only, &[0.0, 0.0]).is_none());
        let both = Features { pooled: Some(&[6.0, 8.0]), map_stats: Some(&[0.0, -1.0]) };
        assert_eq!(s.score(both, &[0.0, 0.0]), Some(r));
        let on_map = OodScorer::parse(&tiny(0.5).replace("\"feature_dim\"", "\"input\":\"feature_map_stats\",\"feature_dim\""))
            .expect("parses");
        assert_eq!(on_map.score(both, &[0.0, 0.0]), Some(far));
    }

    fn repo(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    /// The shipped parameters give the Python reference's scores (python -m lesion_training ood
    /// wrote both files): features and logits of validation images and of noise.
    #[test]
    fn the_score_equals_the_python_reference_on_golden_inputs() {
        let scorer = OodScorer::load(&repo("models/ood.json")).expect("models/ood.json");
        let text = std::fs::read_to_string(repo("tests/golden/ood_golden.json")).expect("golden file");
        let golden: serde_json::Value = serde_json::from_str(&text).expect("golden json");
        let cases = golden["cases"].as_array().expect("cases");
        assert!(cases.len() >= 6);
        let floats = |v: &serde_json::Value| -> Vec<f32> {
            v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
        };
        assert_eq!(golden["input"].as_str(), Some("feature_map_stats"), "the shipped score reads the map statistics");
        for case in cases {
            let (pooled, map_stats) = (floats(&case["features"]), floats(&case["feature_map_stats"]));
            let features = Features { pooled: Some(&pooled), map_stats: Some(&map_stats) };
            let got = scorer.score(features, &floats(&case["logits"])).expect("scores");
            for (name, value) in [("score", got.score), ("mahalanobis", got.mahalanobis), ("energy", got.energy)] {
                let want = case[name].as_f64().expect("reference");
                assert!((value - want).abs() <= 1e-4, "{}: {name} {value} vs python {want}", case["name"]);
            }
        }
        let noise = cases.iter().filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with("noise")));
        for case in noise {
            assert!(case["score"].as_f64().expect("score") > scorer.threshold, "noise is out of distribution: {}", case["name"]);
        }
    }

    #[test]
    fn the_shipped_file_is_made_for_the_shipped_model() {
        use sha2::{Digest, Sha256};
        let scorer = OodScorer::load(&repo("models/ood.json")).expect("models/ood.json");
        let model = std::fs::read(repo("models/lesion_mnv2_int8.tflite")).expect("model");
        assert_eq!(scorer.model_sha256, hex::encode(Sha256::digest(&model)));
        assert_eq!((scorer.input, scorer.feature_dim()), (OodInput::FeatureMapStats, 640));
    }

    #[test]
    fn a_broken_file_is_refused_with_the_reason() {
        let bad = tiny(1.0).replace("\"dims\":2", "\"dims\":3");
        assert!(OodScorer::parse(&bad).unwrap_err().contains("projection"));
        let bad = tiny(1.0).replace("\"maha_std\":1.0", "\"maha_std\":0.0");
        assert!(OodScorer::parse(&bad).is_err());
        assert!(OodScorer::parse("{}").is_err());
    }
}

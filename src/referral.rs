//! Whom to refer: the operating point, thresholds on calibrated probabilities above which a
//! result is flagged `refer`.
//!
//! The model's most likely class misses many melanomas, but it ranks them above most benign
//! lesions; a clinic decides whom to refer by a threshold on that ranking, not by the top class.
//! The thresholds are chosen on the validation split, by lesion, for one exact model file
//! (`python -m lesion_training operating-point`, written to `models/operating_point.json` and the
//! model card). They mean nothing for another model, so a file made for another model's sha256
//! is not applied: results then carry no flag (`refer: null`) and `lesiond check` says why.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::labels::Labels;

#[derive(Debug, thiserror::Error)]
pub enum OperatingPointError {
    #[error("cannot read operating point file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("operating point file {path} is not valid: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// One rule: the summed probability of `classes` at or above `threshold` refers.
#[derive(Debug, Clone, PartialEq)]
struct Rule {
    name: String,
    classes: Vec<usize>,
    threshold: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OperatingPoint {
    /// Published with every flag, so that a chart system knows which thresholds made it.
    pub version: String,
    /// The model file the thresholds were chosen for.
    pub model_sha256: String,
    rules: Vec<Rule>,
}

/// The flag and why, for one result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Referral<'a> {
    pub refer: bool,
    /// The rules that fired (`melanoma`, `bcc_akiec`), none when `refer` is false.
    pub rules_fired: Vec<&'a str>,
    pub operating_point: &'a str,
}

/// What the file holds (other keys, the measured rates, are for people and the model card).
#[derive(Deserialize)]
struct File {
    version: String,
    model: FileModel,
    rules: Vec<FileRule>,
}
#[derive(Deserialize)]
struct FileModel {
    sha256: String,
}
#[derive(Deserialize)]
struct FileRule {
    name: String,
    classes: Vec<String>,
    threshold: f32,
}

impl OperatingPoint {
    /// Reads and checks the file against the labels: every class must exist, every threshold
    /// must be a probability.
    pub fn load(path: &Path, labels: &Labels) -> Result<Self, OperatingPointError> {
        let text = crate::fsread::read_to_string(path, "operating point file", crate::fsread::limit::MODEL_JSON)
            .map_err(|e| OperatingPointError::Read { path: path.into(), source: e.into() })?;
        Self::parse(&text, labels).map_err(|reason| OperatingPointError::Invalid { path: path.into(), reason })
    }

    fn parse(text: &str, labels: &Labels) -> Result<Self, String> {
        let file: File = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if file.rules.is_empty() {
            return Err("it has no rules".into());
        }
        let mut rules = Vec::with_capacity(file.rules.len());
        for r in file.rules {
            if !(r.threshold.is_finite() && r.threshold > 0.0 && r.threshold <= 1.0) {
                return Err(format!("rule {}: threshold {} must be in (0, 1]", r.name, r.threshold));
            }
            if r.classes.is_empty() {
                return Err(format!("rule {}: no classes", r.name));
            }
            let classes = r
                .classes
                .iter()
                .map(|code| {
                    labels.classes.iter().find(|l| &l.code == code).map(|l| l.index).ok_or_else(|| format!("rule {}: class {code} is not in the labels", r.name))
                })
                .collect::<Result<Vec<_>, _>>()?;
            rules.push(Rule { name: r.name, classes, threshold: r.threshold });
        }
        Ok(OperatingPoint { version: file.version, model_sha256: file.model.sha256, rules })
    }

    /// The flag for calibrated probabilities in the model's class order.
    pub fn decide(&self, probabilities: &[f32]) -> Referral<'_> {
        let rules_fired: Vec<&str> = self
            .rules
            .iter()
            .filter(|r| r.classes.iter().filter_map(|&i| probabilities.get(i)).sum::<f32>() >= r.threshold)
            .map(|r| r.name.as_str())
            .collect();
        Referral { refer: !rules_fired.is_empty(), rules_fired, operating_point: &self.version }
    }

    /// "melanoma >= 0.0123, bcc_akiec >= 0.0456": for `lesiond check` and the start-up log.
    pub fn describe(&self) -> String {
        self.rules.iter().map(|r| format!("{} >= {}", r.name, r.threshold)).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Labels {
        Labels::parse(include_str!("../models/labels.json")).expect("labels")
    }

    const FILE: &str = r#"{"version": "m@abc/refer-v1", "model": {"id": "m", "sha256": "abc"},
        "rules": [{"name": "melanoma", "classes": ["mel"], "threshold": 0.05},
                  {"name": "bcc_akiec", "classes": ["bcc", "akiec"], "threshold": 0.2}],
        "validation_by_lesion": {}}"#;

    /// Probabilities in model order (akiec, bcc, bkl, df, mel, nv, vasc).
    fn probs(akiec: f32, bcc: f32, mel: f32) -> Vec<f32> {
        let rest = (1.0 - akiec - bcc - mel) / 4.0;
        vec![akiec, bcc, rest, rest, mel, rest, rest]
    }

    #[test]
    fn each_rule_fires_at_its_threshold_and_says_so() {
        let op = OperatingPoint::parse(FILE, &labels()).expect("valid");
        let none = op.decide(&probs(0.05, 0.05, 0.04));
        assert!(!none.refer && none.rules_fired.is_empty());
        assert_eq!(none.operating_point, "m@abc/refer-v1");
        let mel = op.decide(&probs(0.0, 0.0, 0.05));
        assert_eq!((mel.refer, mel.rules_fired.as_slice()), (true, &["melanoma"][..]));
        // bcc and akiec count together: neither alone reaches 0.2.
        let both = op.decide(&probs(0.11, 0.1, 0.5));
        assert_eq!(both.rules_fired, vec!["melanoma", "bcc_akiec"]);
    }

    #[test]
    fn a_bad_file_is_refused_with_the_reason() {
        let l = labels();
        let bad_class = FILE.replace(r#"["mel"]"#, r#"["melanoma"]"#);
        assert!(OperatingPoint::parse(&bad_class, &l).unwrap_err().contains("class melanoma"));
        let bad_threshold = FILE.replace("0.05", "1.5");
        assert!(OperatingPoint::parse(&bad_threshold, &l).unwrap_err().contains("threshold"));
        assert!(OperatingPoint::parse("{}", &l).is_err());
    }

    #[test]
    fn the_shipped_file_is_valid_and_made_for_the_shipped_model() {
        let dir = env!("CARGO_MANIFEST_DIR");
        let op = OperatingPoint::load(&Path::new(dir).join("models/operating_point.json"), &labels()).expect("valid");
        let model = std::fs::read(Path::new(dir).join("models/lesion_mnv2_int8.tflite")).expect("model");
        use sha2::Digest;
        assert_eq!(op.model_sha256, hex::encode(sha2::Sha256::digest(&model)));
        assert!(op.rules.iter().any(|r| r.name == "melanoma"));
    }
}

//! The class list that goes with a model: `models/labels.json`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelClass {
    /// Position in the model's output vector.
    pub index: usize,
    /// Short code: akiec, bcc, bkl, df, mel, nv, vasc.
    pub code: String,
    pub name: String,
    pub description: String,
    /// Whether the class is a malignant lesion type (mel, bcc, akiec).
    pub malignant: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Labels {
    pub classes: Vec<LabelClass>,
}

#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("cannot read labels file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("labels file {path} is not valid: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl Labels {
    pub fn load(path: &Path) -> Result<Labels, LabelsError> {
        let text = crate::fsread::read_to_string(path, "labels file", crate::fsread::limit::MODEL_JSON)
            .map_err(|e| LabelsError::Read { path: path.into(), source: e.into() })?;
        Self::parse(&text).map_err(|reason| LabelsError::Invalid { path: path.into(), reason })
    }

    /// Parses and checks that indices run 0..n in order and codes are unique.
    pub fn parse(text: &str) -> Result<Labels, String> {
        let labels: Labels = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if labels.classes.is_empty() {
            return Err("no classes".into());
        }
        for (i, class) in labels.classes.iter().enumerate() {
            if class.index != i {
                return Err(format!("class {:?} has index {}, expected {i} (list them in output order)", class.code, class.index));
            }
            if class.code.is_empty() || labels.classes[..i].iter().any(|c| c.code == class.code) {
                return Err(format!("class code {:?} is empty or repeated", class.code));
            }
        }
        Ok(labels)
    }

    pub fn len(&self) -> usize {
        self.classes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_labels_are_valid() {
        let labels = Labels::parse(include_str!("../models/labels.json")).expect("valid");
        let codes: Vec<&str> = labels.classes.iter().map(|c| c.code.as_str()).collect();
        assert_eq!(codes, ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]);
        let malignant: Vec<&str> = labels.classes.iter().filter(|c| c.malignant).map(|c| c.code.as_str()).collect();
        assert_eq!(malignant, ["akiec", "bcc", "mel"]);
    }

    #[test]
    fn out_of_order_or_repeated_classes_are_rejected() {
        let one = |i: usize, code: &str| format!(r#"{{"index":{i},"code":"{code}","name":"n","description":"d","malignant":false}}"#);
        let ok = format!(r#"{{"classes":[{},{}]}}"#, one(0, "a"), one(1, "b"));
        assert!(Labels::parse(&ok).is_ok());
        let swapped = format!(r#"{{"classes":[{},{}]}}"#, one(1, "a"), one(0, "b"));
        assert!(Labels::parse(&swapped).unwrap_err().contains("index"));
        let repeated = format!(r#"{{"classes":[{},{}]}}"#, one(0, "a"), one(1, "a"));
        assert!(Labels::parse(&repeated).unwrap_err().contains("repeated"));
        assert!(Labels::parse(r#"{"classes":[]}"#).is_err());
    }
}

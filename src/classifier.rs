//! A model ready to use: the engine, its labels and its calibration, checked against each other
//! at load time so that a mismatch is a start-up error, never a wrong answer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::ModelConfig;
use crate::cputime;
use crate::engine::{self, Engine, EngineError, RawOutput};
use crate::labels::{Labels, LabelsError};
use crate::postprocess::{self, CalibrationError, Classification};
use crate::preprocess::{InputSpec, InputTensor};

/// What identifies the model in every published result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelInfo {
    /// The model file's stem, e.g. `lesion_mnv2_int8`.
    pub id: String,
    pub sha256: String,
    pub engine: String,
    pub temperature: f32,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Labels(#[from] LabelsError),
    #[error(transparent)]
    Calibration(#[from] CalibrationError),
    #[error("model {path} has {model} outputs but {labels} lists {listed} classes: they must belong together")]
    ClassMismatch { path: PathBuf, model: usize, labels: PathBuf, listed: usize },
    #[error("cannot read model file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

pub struct Classifier {
    engine: Box<dyn Engine>,
    labels: Arc<Labels>,
    info: ModelInfo,
}

/// Time spent in the engine and in postprocessing for one frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClassifyTimings {
    pub inference: Duration,
    /// CPU time of the calling thread inside the engine (its worker threads not included).
    pub inference_cpu: Duration,
    pub postprocess: Duration,
}

impl Classifier {
    pub fn load(config: &ModelConfig) -> Result<Self, ClassifierError> {
        let engine = engine::open(config)?;
        let labels = Labels::load(&config.labels)?;
        if labels.len() != engine.num_classes() {
            return Err(ClassifierError::ClassMismatch {
                path: config.path.clone(),
                model: engine.num_classes(),
                labels: config.labels.clone(),
                listed: labels.len(),
            });
        }
        let temperature = match &config.calibration {
            Some(path) => postprocess::load_temperature(path)?,
            None => 1.0,
        };
        let bytes = std::fs::read(&config.path).map_err(|source| ClassifierError::Read { path: config.path.clone(), source })?;
        let sha256 = {
            use sha2::{Digest, Sha256};
            hex::encode(Sha256::digest(&bytes))
        };
        let id = config.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let info = ModelInfo { id, sha256, engine: engine.describe(), temperature, path: config.path.clone() };
        Ok(Self { engine, labels: Arc::new(labels), info })
    }

    pub fn input_spec(&self) -> InputSpec {
        self.engine.input_spec()
    }

    pub fn labels(&self) -> &Arc<Labels> {
        &self.labels
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Engine, then postprocessing, on one preprocessed input.
    pub fn classify(&mut self, input: &InputTensor) -> Result<(Classification, RawOutput, ClassifyTimings), EngineError> {
        let started = Instant::now();
        let cpu_before = cputime::this_thread();
        let raw = self.engine.infer(input)?;
        let inference_cpu = cputime::this_thread().saturating_sub(cpu_before);
        let inference = started.elapsed();
        let started = Instant::now();
        let classification = postprocess::classify(&raw, self.info.temperature);
        let postprocess = started.elapsed();
        Ok((classification, raw, ClassifyTimings { inference, inference_cpu, postprocess }))
    }
}

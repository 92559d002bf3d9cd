//! A model ready to use: the engine, its labels and its calibration, checked against each other
//! at load time so that a mismatch is a start-up error, never a wrong answer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::ModelConfig;
use crate::cputime;
use crate::engine::{self, Engine, EngineError, EngineRuntime, RawOutput};
use crate::labels::{Labels, LabelsError};
use crate::ood::{OodError, OodScore, OodScorer};
use crate::postprocess::{self, CalibrationError, Classification};
use crate::preprocess::{InputSpec, InputTensor};
use crate::referral::{OperatingPoint, OperatingPointError, Referral};

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
    pub status: EngineStatus,
    /// Whether results carry a refer flag, and why not: for `lesiond check` and the log.
    #[serde(skip)]
    pub referral: String,
    /// Whether results can abstain as out of distribution, and why not: for `lesiond check` and
    /// the log.
    #[serde(skip)]
    pub ood: String,
}

/// The engine as it runs, and how long one warm-up invoke took at load (the first invoke pays
/// for allocations and, with XNNPACK, packing the weights): shown by `lesiond check`, logged at
/// start and published in `stats` and the `status` reply.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EngineStatus {
    #[serde(flatten)]
    pub runtime: EngineRuntime,
    pub warmup_invoke_ms: f64,
}

impl std::fmt::Display for EngineStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, warm-up invoke {:.1} ms", self.runtime, self.warmup_invoke_ms)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Labels(#[from] LabelsError),
    #[error(transparent)]
    Calibration(#[from] CalibrationError),
    #[error(transparent)]
    OperatingPoint(#[from] OperatingPointError),
    #[error(transparent)]
    Ood(#[from] OodError),
    #[error("model {path} has {model} outputs but {labels} lists {listed} classes: they must belong together")]
    ClassMismatch { path: PathBuf, model: usize, labels: PathBuf, listed: usize },
    #[error("cannot read model file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

pub struct Classifier {
    engine: Box<dyn Engine>,
    labels: Arc<Labels>,
    info: ModelInfo,
    operating_point: Option<OperatingPoint>,
    ood: Option<OodScorer>,
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
        let mut engine = engine::open(config)?;
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
        let bytes = crate::fsread::read(&config.path, "model file", crate::fsread::limit::MODEL)
            .map_err(|e| ClassifierError::Read { path: config.path.clone(), source: e.into() })?;
        let sha256 = {
            use sha2::{Digest, Sha256};
            hex::encode(Sha256::digest(&bytes))
        };
        let id = config.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        // A file that cannot be read or makes no sense is a start-up error; thresholds made for
        // another model are left out (they would flag the wrong lesions) and said so.
        let (operating_point, referral) = match &config.operating_point {
            None => (None, "no operating point configured: results carry no refer flag".to_string()),
            Some(path) => {
                let op = OperatingPoint::load(path, &labels)?;
                if op.model_sha256 == sha256 {
                    let note = format!("refer when {} ({})", op.describe(), op.version);
                    (Some(op), note)
                } else {
                    let note = format!(
                        "{} was chosen for the model with sha256 {}, not this one: results carry no refer flag (python -m lesion_training operating-point)",
                        path.display(),
                        op.model_sha256
                    );
                    tracing::warn!("{note}");
                    (None, note)
                }
            }
        };
        let warmup_invoke_ms = warm_up(engine.as_mut())?;
        // Same rule as the operating point: parameters fitted on another model's features would
        // flag the wrong images, so they are left out and said so. Checked after the warm-up,
        // which tells whether the model gives features at all.
        let (ood, ood_note) = match &config.ood {
            None => (None, "no out-of-distribution score configured: results never abstain as out of distribution".to_string()),
            Some(path) => {
                let scorer = OodScorer::load(path)?;
                let features = scorer.input.pick(engine.features()).map(<[f32]>::len);
                let note = if scorer.model_sha256 != sha256 {
                    Err(format!(
                        "{} was fitted for the model with sha256 {}, not this one: results never abstain as out of distribution (python -m lesion_training ood)",
                        path.display(),
                        scorer.model_sha256
                    ))
                } else if features != Some(scorer.feature_dim()) {
                    Err(format!(
                        "{} needs {} values from {}, this model gives {}: results never abstain as out of distribution (an export without that output?)",
                        path.display(),
                        scorer.feature_dim(),
                        scorer.input.describe(),
                        features.unwrap_or(0)
                    ))
                } else {
                    Ok(format!("abstain when the out-of-distribution score > {:.4} ({})", scorer.threshold, scorer.version))
                };
                match note {
                    Ok(note) => (Some(scorer), note),
                    Err(note) => {
                        tracing::warn!("{note}");
                        (None, note)
                    }
                }
            }
        };
        let status = EngineStatus { runtime: engine.runtime(), warmup_invoke_ms };
        let info = ModelInfo {
            id,
            sha256,
            engine: engine.describe(),
            temperature,
            path: config.path.clone(),
            status,
            referral,
            ood: ood_note,
        };
        Ok(Self { engine, labels: Arc::new(labels), info, operating_point, ood })
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

    /// The refer flag for calibrated probabilities in model order; `None` when no operating
    /// point applies to this model.
    pub fn refer(&self, probabilities: &[f32]) -> Option<Referral<'_>> {
        self.operating_point.as_ref().map(|op| op.decide(probabilities))
    }

    /// The out-of-distribution score of the frame last classified (its features and logits);
    /// `None` when no score applies to this model.
    pub fn out_of_distribution(&self, raw: &RawOutput) -> Option<OodScore> {
        let scorer = self.ood.as_ref()?;
        scorer.score(self.engine.features(), &postprocess::dequantize(raw))
    }

    /// Whether the model has an out-of-distribution score (so it can say whether a view is
    /// typical of the lesion images it learnt from).
    pub fn scores_views(&self) -> bool {
        self.ood.is_some()
    }

    pub fn operating_point(&self) -> Option<&OperatingPoint> {
        self.operating_point.as_ref()
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

/// One invoke on a blank input, timed: an engine that loads but cannot run is a start-up error,
/// not a failure on the first real frame.
fn warm_up(engine: &mut dyn Engine) -> Result<f64, EngineError> {
    let spec = engine.input_spec();
    let len = spec.width as usize * spec.height as usize * 3;
    let input = match spec.dtype {
        crate::preprocess::InputType::U8 { .. } => InputTensor::U8(vec![0; len]),
        crate::preprocess::InputType::F32 => InputTensor::F32(vec![0.0; len]),
    };
    let started = Instant::now();
    engine.infer(&input)?;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

//! Engines: run the network on one input tensor. The rest of the daemon sees only [`Engine`];
//! the TF Lite engine (`tflitec`, a `.tflite` model) is the default; the tract engine (pure Rust,
//! the model's `.onnx` export) serves builds without a TF Lite C library (ARM); the ort engine
//! (ONNX Runtime, loaded at run time) is the fast one on x86_64 hosts.

#[cfg(feature = "tflite")]
pub mod tflite;
#[cfg(feature = "tract")]
pub mod tract;
#[cfg(feature = "ort")]
pub mod ort;

use std::path::{Path, PathBuf};

use crate::config::{EngineKind, ModelConfig};
use crate::preprocess::{InputSpec, InputTensor};

/// The network's raw output for one frame: logits, quantized or not.
#[derive(Debug, Clone, PartialEq)]
pub enum RawOutput {
    U8 { values: Vec<u8>, scale: f32, zero_point: i32 },
    F32(Vec<f32>),
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("model file {0} not found")]
    Missing(PathBuf),
    #[error("cannot load model {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("model {path} does not fit lesiond: {reason}")]
    Shape { path: PathBuf, reason: String },
    #[error("inference failed: {0}")]
    Invoke(String),
    #[error("engine {0:?} is not built into this binary (enable its cargo feature)")]
    NotBuilt(EngineKind),
}

/// How a loaded engine runs, as the engine itself reports it: for `lesiond check`, the start-up
/// log and the `stats` / `cmd/status` payloads (so a clinic's IT sees what its Pi really runs).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EngineRuntime {
    /// `tflite`, `tract` or `ort`.
    pub engine: &'static str,
    /// The inference library and its version, e.g. `TF Lite 2.20.0-dev0+selfbuilt`.
    pub library: String,
    pub threads: u32,
    /// The TF Lite engine's XNNPACK delegate; `None` for the other engines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xnnpack: Option<XnnpackStatus>,
}

impl std::fmt::Display for EngineRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = if self.threads == 1 { "" } else { "s" };
        write!(f, "engine {}, {}, {} thread{plural}", self.engine, self.library, self.threads)?;
        match &self.xnnpack {
            Some(x) if x.applied => write!(f, ", XNNPACK applied"),
            Some(x) if x.requested => {
                write!(f, ", XNNPACK NOT applied: {}", x.fallback_reason.as_deref().unwrap_or("unknown reason"))
            }
            Some(_) => write!(f, ", XNNPACK off"),
            None => Ok(()),
        }
    }
}

/// Whether the XNNPACK delegate was asked for and whether the interpreter runs with it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct XnnpackStatus {
    pub requested: bool,
    /// The delegate was created and the interpreter was built with it (TF Lite refuses to build
    /// an interpreter whose delegate fails to take the graph).
    pub applied: bool,
    /// Why it was requested but not applied: the engine then runs TF Lite's built-in kernels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
}

/// A loaded network, ready to classify one frame at a time. Not shared between threads: the
/// pipeline owns it on its inference thread.
pub trait Engine: Send {
    /// The input the network expects (size, type, quantization), read from the model.
    fn input_spec(&self) -> InputSpec;
    /// Length of the output vector: the number of classes.
    fn num_classes(&self) -> usize;
    fn infer(&mut self, input: &InputTensor) -> Result<RawOutput, EngineError>;
    /// The pooled penultimate features of the last [`Engine::infer`], dequantized, when the
    /// model exports them as its second output (`[1, F]`, after the logits); `None` for a model
    /// with the logits only. The out-of-distribution score (`ood.rs`) reads them.
    fn features(&self) -> Option<&[f32]> {
        None
    }
    /// A short description for logs and `lesiond check`.
    fn describe(&self) -> String;
    /// Engine, library version, threads and accelerator, from the engine's own state.
    fn runtime(&self) -> EngineRuntime;
}

/// Loads the configured model with the configured engine.
pub fn open(config: &ModelConfig) -> Result<Box<dyn Engine>, EngineError> {
    if !config.path.is_file() {
        return Err(EngineError::Missing(config.path.clone()));
    }
    match config.engine {
        #[cfg(feature = "tflite")]
        EngineKind::Tflite => Ok(Box::new(tflite::TfliteEngine::load(&config.path, config.threads, config.xnnpack)?)),
        #[cfg(not(feature = "tflite"))]
        kind @ EngineKind::Tflite => Err(EngineError::NotBuilt(kind)),
        #[cfg(feature = "tract")]
        EngineKind::Tract => Ok(Box::new(tract::TractEngine::load(&config.path)?)),
        #[cfg(not(feature = "tract"))]
        kind @ EngineKind::Tract => Err(EngineError::NotBuilt(kind)),
        #[cfg(feature = "ort")]
        EngineKind::Ort => Ok(Box::new(ort::OrtEngine::load(&config.path, config.threads, config.onnxruntime_library.as_deref())?)),
        #[cfg(not(feature = "ort"))]
        kind @ EngineKind::Ort => Err(EngineError::NotBuilt(kind)),
    }
}

/// A second output `[1, F]` (F > 0): the features. Its length, or why it does not fit.
pub(crate) fn check_features_shape(path: &Path, output: &[usize]) -> Result<usize, EngineError> {
    match output {
        [1, n] if *n > 0 => Ok(*n),
        other => Err(EngineError::Shape {
            path: path.to_path_buf(),
            reason: format!("second output shape is {other:?}; expected [1, number of features]"),
        }),
    }
}

/// Checks a model's input and output shapes: `[1, H, W, 3]` in, `[1, N]` out.
pub(crate) fn check_shapes(path: &Path, input: &[usize], output: &[usize]) -> Result<(u32, u32, usize), EngineError> {
    let shape_err = |reason: String| EngineError::Shape { path: path.to_path_buf(), reason };
    let (h, w) = match input {
        [1, h, w, 3] if *h > 0 && *w > 0 => (*h, *w),
        other => return Err(shape_err(format!("input shape is {other:?}; expected [1, height, width, 3] (NHWC RGB)"))),
    };
    let n = match output {
        [1, n] if *n > 0 => *n,
        other => return Err(shape_err(format!("output shape is {other:?}; expected [1, number of classes]"))),
    };
    let (w, h) = (u32::try_from(w), u32::try_from(h));
    match (w, h) {
        (Ok(w), Ok(h)) if w <= 4096 && h <= 4096 => Ok((w, h, n)),
        _ => Err(shape_err("input is larger than 4096x4096".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_checks_name_the_problem() {
        let p = Path::new("m.tflite");
        assert_eq!(check_shapes(p, &[1, 192, 256, 3], &[1, 7]).expect("ok"), (256, 192, 7));
        let e = check_shapes(p, &[1, 3, 192, 256], &[1, 7]).unwrap_err().to_string();
        assert!(e.contains("NHWC"), "{e}");
        let e = check_shapes(p, &[1, 192, 256, 3], &[1, 7, 1]).unwrap_err().to_string();
        assert!(e.contains("output shape"), "{e}");
    }
}

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
    /// Not a regular file within the size limit (a directory, a FIFO, a device, too large), or
    /// not readable: the message says what the path is.
    #[error(transparent)]
    File(crate::fsread::ReadError),
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
    /// What the network said about the last [`Engine::infer`]'s image besides the logits,
    /// dequantized, for the out-of-distribution score (`ood.rs`): empty for a model with the
    /// logits only.
    fn features(&self) -> Features<'_> {
        Features::default()
    }
    /// A short description for logs and `lesiond check`.
    fn describe(&self) -> String;
    /// Engine, library version, threads and accelerator, from the engine's own state.
    fn runtime(&self) -> EngineRuntime;
}

/// Loads the configured model with the configured engine.
pub fn open(config: &ModelConfig) -> Result<Box<dyn Engine>, EngineError> {
    // The engines load by path: look at what the path is first, so that a directory or a FIFO
    // is named as such (not "not found", not a hang) and a huge file is refused.
    crate::fsread::check_file(&config.path, "model file", crate::fsread::limit::MODEL).map_err(|e| {
        if e.is_not_found() {
            EngineError::Missing(config.path.clone())
        } else {
            EngineError::File(e)
        }
    })?;
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

/// The outputs after the logits, as the out-of-distribution score reads them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Features<'a> {
    /// The pooled penultimate features: the second output, `[1, F]`.
    pub pooled: Option<&'a [f32]>,
    /// The per-channel means, then the per-channel standard deviations, of the last block's map:
    /// the third output, `[1, H, W, C]` (NHWC; an ONNX export transposes it so in its graph).
    pub map_stats: Option<&'a [f32]>,
}

/// Per-channel mean and standard deviation of an NHWC map, recomputed frame after frame in one
/// reused buffer. In float64, as the Python reference (`ood.map_stats`), from the dequantized
/// float32 values.
#[derive(Debug, Clone)]
pub(crate) struct MapStats {
    channels: usize,
    len: usize,
    sums: Vec<(f64, f64)>,
    /// `channels` means, then `channels` standard deviations (population).
    pub values: Vec<f32>,
}

impl MapStats {
    /// For a third output of shape `[1, H, W, C]`, or why it does not fit.
    pub fn for_shape(path: &Path, shape: &[usize]) -> Result<Self, EngineError> {
        match shape {
            [1, h, w, c] if h * w > 0 && *c > 0 => {
                Ok(Self { channels: *c, len: h * w * c, sums: vec![(0.0, 0.0); *c], values: vec![0.0; 2 * c] })
            }
            other => Err(EngineError::Shape {
                path: path.to_path_buf(),
                reason: format!("third output shape is {other:?}; expected [1, height, width, channels] (a feature map)"),
            }),
        }
    }

    /// How many values one frame's map has (H x W x C).
    pub fn map_len(&self) -> usize {
        self.len
    }

    /// Reads one frame's map, channels last.
    pub fn update(&mut self, values: impl ExactSizeIterator<Item = f32>) -> Result<(), EngineError> {
        if values.len() != self.len {
            return Err(EngineError::Invoke(format!("feature map of {} values; expected {}", values.len(), self.len)));
        }
        self.sums.iter_mut().for_each(|s| *s = (0.0, 0.0));
        for (i, v) in values.enumerate() {
            let v = f64::from(v);
            let s = &mut self.sums[i % self.channels];
            s.0 += v;
            s.1 += v * v;
        }
        let n = (self.len / self.channels) as f64;
        let (means, stds) = self.values.split_at_mut(self.channels);
        for ((&(sum, sq), mean), std) in self.sums.iter().zip(means).zip(stds) {
            let m = sum / n;
            *mean = m as f32;
            *std = (sq / n - m * m).max(0.0).sqrt() as f32;
        }
        Ok(())
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

    #[test]
    fn map_statistics_are_per_channel_means_then_standard_deviations() {
        let p = Path::new("m.tflite");
        // [1, 1, 3, 2]: channel 0 is 1, 3, 5; channel 1 is 10, 20, 30 (channels last).
        let mut stats = MapStats::for_shape(p, &[1, 1, 3, 2]).expect("a map");
        stats.update([1.0f32, 10.0, 3.0, 20.0, 5.0, 30.0].into_iter()).expect("6 values");
        let want = [3.0, 20.0, (8.0f32 / 3.0).sqrt(), (200.0f32 / 3.0).sqrt()];
        for (got, want) in stats.values.iter().zip(want) {
            assert!((got - want).abs() < 1e-5, "{:?}", stats.values);
        }
        // The next frame replaces the last one's figures.
        stats.update([2.0f32; 6].into_iter()).expect("6 values");
        assert_eq!(stats.values, vec![2.0, 2.0, 0.0, 0.0]);
        assert!(stats.update([0.0f32; 4].into_iter()).is_err(), "wrong length");
        assert!(MapStats::for_shape(p, &[1, 640]).unwrap_err().to_string().contains("third output"));
    }
}

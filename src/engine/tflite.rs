//! The TensorFlow Lite engine, through `tflitec` and the TF Lite C library (which one: README,
//! "TF Lite library"; on aarch64 TF Lite 2.20 with the XNNPACK delegate, on x86_64 TF Lite 2.6).

use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use tflitec::interpreter::{Interpreter, Options};
use tflitec::model::Model;
use tflitec::tensor::DataType;

use super::{check_shapes, Engine, EngineError, EngineRuntime, Features, MapStats, RawOutput, XnnpackStatus};
use crate::preprocess::{InputSpec, InputTensor, InputType};

pub struct TfliteEngine {
    // Field order matters: the interpreter borrows the model and is dropped first.
    interpreter: Interpreter<'static>,
    _model: OwnedModel,
    spec: InputSpec,
    classes: usize,
    output_quant: Option<(f32, i32)>,
    /// The second output (pooled features) when the model has one: how to read it, and the
    /// last frame's values.
    features: Option<FeaturesOutput>,
    /// The third output (the last block's map) when the model has one, and its statistics.
    feature_map: Option<(FeaturesOutput, MapStats)>,
    threads: u32,
    xnnpack: XnnpackStatus,
    path: PathBuf,
}

/// The model an interpreter borrows for its whole life. tflitec's `Interpreter<'a>` borrows its
/// `Model<'a>`; to keep both in one engine, the model lives on the heap at a fixed address until
/// this is dropped, which the engine does after dropping the interpreter (field order above).
struct OwnedModel(NonNull<Model<'static>>);

// SAFETY: tflitec declares `Model` Send + Sync; this only owns one.
unsafe impl Send for OwnedModel {}

impl OwnedModel {
    fn new(model: Model<'static>) -> Self {
        Self(NonNull::from(Box::leak(Box::new(model))))
    }

    /// SAFETY (for callers): the reference must not outlive `self`; the engine guarantees it
    /// by dropping the interpreter first.
    fn get(&self) -> &'static Model<'static> {
        // SAFETY: the pointer came from a leaked Box and is freed only in Drop.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for OwnedModel {
    fn drop(&mut self) {
        // SAFETY: created by Box::leak in `new`, freed once, here.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

/// A features (or feature map) output: its element type and quantization, and a buffer reused
/// frame after frame.
struct FeaturesOutput {
    dtype: DataType,
    quant: (f32, i32),
    values: Vec<f32>,
}

impl FeaturesOutput {
    fn new(tensor: &tflitec::tensor::Tensor, len: usize) -> Result<Self, String> {
        let quant = tensor.quantization_parameters().map(|q| (q.scale, q.zero_point)).unwrap_or((1.0, 0));
        let dtype = tensor.data_type();
        if !matches!(dtype, DataType::UInt8 | DataType::Int8 | DataType::Float32) {
            return Err(format!("features output type {dtype:?}; expected int8, uint8 or float32"));
        }
        Ok(FeaturesOutput { dtype, quant, values: vec![0.0; len] })
    }

    fn read(&mut self, tensor: &tflitec::tensor::Tensor) {
        let (scale, zero_point) = self.quant;
        let deq = |q: i32| (q - zero_point) as f32 * scale;
        match self.dtype {
            DataType::UInt8 => self.values.iter_mut().zip(tensor.data::<u8>()).for_each(|(v, &q)| *v = deq(i32::from(q))),
            DataType::Int8 => self.values.iter_mut().zip(tensor.data::<i8>()).for_each(|(v, &q)| *v = deq(i32::from(q))),
            _ => self.values.iter_mut().zip(tensor.data::<f32>()).for_each(|(v, &f)| *v = f),
        }
    }
}

impl TfliteEngine {
    pub fn load(path: &Path, threads: u32, xnnpack: bool) -> Result<Self, EngineError> {
        let load_err = |reason: String| EngineError::Load { path: path.to_path_buf(), reason };
        if xnnpack && !cfg!(feature = "xnnpack") {
            return Err(load_err("model.xnnpack = true needs a build with the `xnnpack` feature".into()));
        }
        let path_str = path.to_str().ok_or_else(|| load_err("path is not UTF-8".into()))?;
        // tflitec unwraps a few C strings (tensor names) and indexes tensors without checking
        // that there are any; a hostile or broken file must not take the daemon down with it.
        let loaded = std::panic::catch_unwind(|| -> Result<Self, EngineError> {
            let model = OwnedModel::new(
                Model::new(path_str).map_err(|e| load_err(format!("{e} (is it a .tflite flatbuffer?)")))?,
            );
            let (interpreter, xnnpack) = build_interpreter(model.get(), threads, xnnpack)
                .map_err(|e| load_err(e.to_string()))?;
            let unsupported = |what: &str, e: tflitec::Error| {
                load_err(format!(
                    "cannot read its {what} tensor ({e}); lesiond takes uint8 or float32 tensors \
                     (an int8 model must be exported with uint8 input and output)"
                ))
            };
            let input = interpreter.input(0).map_err(|e| unsupported("input", e))?;
            let output = interpreter.output(0).map_err(|e| unsupported("output", e))?;
            let (width, height, classes) =
                check_shapes(path, input.shape().dimensions(), output.shape().dimensions())?;
            let dtype = match (input.data_type(), input.quantization_parameters()) {
                (DataType::UInt8, Some(q)) => InputType::U8 { scale: q.scale, zero_point: q.zero_point },
                (DataType::UInt8, None) => InputType::U8 { scale: 1.0, zero_point: 0 },
                (DataType::Float32, _) => InputType::F32,
                (other, _) => return Err(load_err(format!("input type {other:?}; expected uint8 or float32"))),
            };
            let output_quant = match (output.data_type(), output.quantization_parameters()) {
                (DataType::UInt8, Some(q)) => Some((q.scale, q.zero_point)),
                (DataType::Float32, _) => None,
                (other, _) => {
                    return Err(load_err(format!("output type {other:?}; expected quantized uint8 or float32")))
                }
            };
            let features = if interpreter.output_tensor_count() >= 2 {
                let t = interpreter.output(1).map_err(|e| unsupported("second output", e))?;
                let len = super::check_features_shape(path, t.shape().dimensions())?;
                Some(FeaturesOutput::new(&t, len).map_err(load_err)?)
            } else {
                None
            };
            let feature_map = if interpreter.output_tensor_count() >= 3 {
                let t = interpreter.output(2).map_err(|e| unsupported("third output", e))?;
                let stats = MapStats::for_shape(path, t.shape().dimensions())?;
                Some((FeaturesOutput::new(&t, stats.map_len()).map_err(load_err)?, stats))
            } else {
                None
            };
            Ok(Self {
                interpreter,
                _model: model,
                spec: InputSpec { width, height, dtype },
                classes,
                output_quant,
                features,
                feature_map,
                threads,
                xnnpack,
                path: path.to_path_buf(),
            })
        });
        loaded.unwrap_or_else(|_| Err(load_err("the TF Lite library rejected the file".into())))
    }
}

/// Builds the interpreter, with the XNNPACK delegate when asked. TF Lite refuses to build an
/// interpreter whose delegate cannot be created or fails on the graph; then the engine says so
/// and builds one on the built-in kernels instead, rather than leaving the station without a
/// classifier.
fn build_interpreter(
    model: &'static Model<'static>,
    threads: u32,
    xnnpack: bool,
) -> Result<(Interpreter<'static>, XnnpackStatus), tflitec::Error> {
    let build = |with_xnnpack: bool| {
        let interpreter = Interpreter::new(model, Some(options(threads, with_xnnpack)))?;
        interpreter.allocate_tensors()?;
        Ok::<_, tflitec::Error>(interpreter)
    };
    with_fallback(xnnpack, build)
}

/// The XNNPACK decision on its own, so that the fallback can be tested with any builder.
fn with_fallback<T, E: std::fmt::Display>(
    xnnpack: bool,
    build: impl Fn(bool) -> Result<T, E>,
) -> Result<(T, XnnpackStatus), E> {
    if !xnnpack {
        return Ok((build(false)?, XnnpackStatus { requested: false, applied: false, fallback_reason: None }));
    }
    match build(true) {
        Ok(built) => Ok((built, XnnpackStatus { requested: true, applied: true, fallback_reason: None })),
        Err(e) => {
            let reason = format!("the XNNPACK delegate could not be applied ({e})");
            tracing::warn!("{reason}; running TF Lite's built-in kernels instead");
            let built = build(false)?;
            Ok((built, XnnpackStatus { requested: true, applied: false, fallback_reason: Some(reason) }))
        }
    }
}

fn options(threads: u32, xnnpack: bool) -> Options {
    #[cfg_attr(not(feature = "xnnpack"), allow(unused_mut))]
    let mut options = Options { thread_count: threads as i32, ..Options::default() };
    #[cfg(feature = "xnnpack")]
    {
        options.is_xnnpack_enabled = xnnpack;
    }
    #[cfg(not(feature = "xnnpack"))]
    let _ = xnnpack; // refused in `load` already
    options
}

impl Engine for TfliteEngine {
    fn input_spec(&self) -> InputSpec {
        self.spec
    }

    fn num_classes(&self) -> usize {
        self.classes
    }

    fn infer(&mut self, input: &InputTensor) -> Result<RawOutput, EngineError> {
        let err = |e: tflitec::Error| EngineError::Invoke(e.to_string());
        match (input, self.spec.dtype) {
            (InputTensor::U8(data), InputType::U8 { .. }) => self.interpreter.copy(data, 0).map_err(err)?,
            (InputTensor::F32(data), InputType::F32) => self.interpreter.copy(data, 0).map_err(err)?,
            _ => return Err(EngineError::Invoke("input tensor type does not match the model".into())),
        }
        self.interpreter.invoke().map_err(err)?;
        if let Some(features) = &mut self.features {
            features.read(&self.interpreter.output(1).map_err(err)?);
        }
        if let Some((map, stats)) = &mut self.feature_map {
            map.read(&self.interpreter.output(2).map_err(err)?);
            stats.update(map.values.iter().copied())?;
        }
        let output = self.interpreter.output(0).map_err(err)?;
        Ok(match self.output_quant {
            Some((scale, zero_point)) => {
                RawOutput::U8 { values: output.data::<u8>().to_vec(), scale, zero_point }
            }
            None => RawOutput::F32(output.data::<f32>().to_vec()),
        })
    }

    fn features(&self) -> Features<'_> {
        Features {
            pooled: self.features.as_ref().map(|f| f.values.as_slice()),
            map_stats: self.feature_map.as_ref().map(|(_, stats)| stats.values.as_slice()),
        }
    }

    fn describe(&self) -> String {
        let dtype = match self.spec.dtype {
            InputType::U8 { .. } => "uint8",
            InputType::F32 => "float32",
        };
        format!(
            "tflite {} (input 1x{}x{}x3 {dtype}, {} classes, {} threads{})",
            self.path.display(),
            self.spec.height,
            self.spec.width,
            self.classes,
            self.threads,
            match (self.xnnpack.requested, self.xnnpack.applied) {
                (_, true) => ", XNNPACK",
                (true, false) => ", XNNPACK not applied",
                (false, false) => "",
            }
        )
    }

    fn runtime(&self) -> EngineRuntime {
        EngineRuntime {
            engine: "tflite",
            library: format!("TF Lite {}", tflitec::tf_lite_version()),
            threads: self.threads,
            xnnpack: Some(self.xnnpack.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(with_xnnpack: bool) -> Result<&'static str, String> {
        if with_xnnpack {
            Err("failed to create the interpreter".into())
        } else {
            Ok("built-in kernels")
        }
    }

    #[test]
    fn a_delegate_that_fails_falls_back_to_the_builtin_kernels_and_says_why() {
        let (built, status) = with_fallback(true, failing).expect("falls back");
        assert_eq!(built, "built-in kernels");
        assert!(status.requested && !status.applied);
        assert!(status.fallback_reason.as_deref().is_some_and(|r| r.contains("XNNPACK")), "{status:?}");
    }

    #[test]
    fn a_delegate_that_works_is_reported_applied() {
        let (built, status) = with_fallback(true, |x| Ok::<_, String>(x)).expect("builds");
        assert!(built, "built with the delegate");
        assert_eq!(status, XnnpackStatus { requested: true, applied: true, fallback_reason: None });
        let (built, status) = with_fallback(false, |x| Ok::<_, String>(x)).expect("builds");
        assert!(!built && !status.requested && !status.applied);
    }

    #[test]
    fn without_the_delegate_an_error_is_an_error() {
        let e = with_fallback(false, |_| Err::<(), _>("no interpreter".to_string()));
        assert!(e.is_err());
    }
}

//! The TensorFlow Lite engine, through `tflitec` and the TF Lite C library.

use std::path::{Path, PathBuf};

use tflitec::interpreter::{Interpreter, Options};
use tflitec::model::Model;
use tflitec::tensor::DataType;

use super::{check_shapes, Engine, EngineError, RawOutput};
use crate::preprocess::{InputSpec, InputTensor, InputType};

pub struct TfliteEngine {
    // Field order matters: the interpreter is dropped before the model it was built from.
    interpreter: Interpreter,
    _model: Model,
    spec: InputSpec,
    classes: usize,
    output_quant: Option<(f32, i32)>,
    threads: u32,
    xnnpack: bool,
    path: PathBuf,
}

impl TfliteEngine {
    pub fn load(path: &Path, threads: u32, xnnpack: bool) -> Result<Self, EngineError> {
        let load_err = |reason: String| EngineError::Load { path: path.to_path_buf(), reason };
        if xnnpack && !cfg!(feature = "xnnpack") {
            return Err(load_err("model.xnnpack = true needs a build with the `xnnpack` feature".into()));
        }
        let path_str = path.to_str().ok_or_else(|| load_err("path is not UTF-8".into()))?;
        // tflitec unwraps a few C strings (tensor names); a hostile or broken file must not take
        // the daemon down with it.
        let loaded = std::panic::catch_unwind(|| -> Result<Self, EngineError> {
            let model = Model::new(path_str)
                .map_err(|e| load_err(format!("{e} (is it a .tflite flatbuffer?)")))?;
            #[cfg_attr(not(feature = "xnnpack"), allow(unused_mut))]
            let mut options = Options { thread_count: threads as i32, ..Options::default() };
            #[cfg(feature = "xnnpack")]
            {
                options.is_xnnpack_enabled = xnnpack;
            }
            let interpreter = Interpreter::new(&model, Some(options)).map_err(|e| load_err(e.to_string()))?;
            interpreter.allocate_tensors().map_err(|e| load_err(e.to_string()))?;
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
                (DataType::Uint8, Some(q)) => InputType::U8 { scale: q.scale, zero_point: q.zero_point },
                (DataType::Uint8, None) => InputType::U8 { scale: 1.0, zero_point: 0 },
                (DataType::Float32, _) => InputType::F32,
                (other, _) => return Err(load_err(format!("input type {other:?}; expected uint8 or float32"))),
            };
            let output_quant = match (output.data_type(), output.quantization_parameters()) {
                (DataType::Uint8, Some(q)) => Some((q.scale, q.zero_point)),
                (DataType::Float32, _) => None,
                (other, _) => {
                    return Err(load_err(format!("output type {other:?}; expected quantized uint8 or float32")))
                }
            };
            Ok(Self {
                interpreter,
                _model: model,
                spec: InputSpec { width, height, dtype },
                classes,
                output_quant,
                threads,
                xnnpack,
                path: path.to_path_buf(),
            })
        });
        loaded.unwrap_or_else(|_| Err(load_err("the TF Lite library rejected the file".into())))
    }
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
        let output = self.interpreter.output(0).map_err(err)?;
        Ok(match self.output_quant {
            Some((scale, zero_point)) => {
                RawOutput::U8 { values: output.data::<u8>().to_vec(), scale, zero_point }
            }
            None => RawOutput::F32(output.data::<f32>().to_vec()),
        })
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
            if self.xnnpack { ", XNNPACK" } else { "" }
        )
    }
}

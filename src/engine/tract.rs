//! The pure-Rust engine: tract running the model's ONNX export (float32 NHWC in, logits out).
//! It needs no C library, so an ARM build is one self-contained binary plus the `.onnx` file.
//! The ONNX export takes raw 0..255 pixels (normalisation is inside the graph), so the input
//! spec is float32 and the output is [`RawOutput::F32`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

use super::{check_shapes, Engine, EngineError, Features, MapStats, RawOutput};
use crate::preprocess::{InputSpec, InputTensor, InputType};

pub struct TractEngine {
    plan: Arc<TypedRunnableModel>,
    input_shape: [usize; 4],
    spec: InputSpec,
    classes: usize,
    /// The last frame's pooled features, when the model has them as its second output.
    features: Option<Vec<f32>>,
    /// The statistics of the last block's map, when the model has it as its third output.
    feature_map: Option<MapStats>,
    path: PathBuf,
}

impl TractEngine {
    pub fn load(path: &Path) -> Result<Self, EngineError> {
        let load_err = |reason: String| EngineError::Load { path: path.to_path_buf(), reason };
        // tract's parser and optimizer assert on some malformed graphs; a broken file must give
        // an error, not take the daemon down.
        let loaded = std::panic::catch_unwind(|| -> Result<Self, EngineError> {
            let model = tract_onnx::onnx().model_for_path(path).map_err(|e| {
                load_err(format!(
                    "{e} (the tract engine runs the model's ONNX export, e.g. \
                     models/lesion_mnv2_float.onnx, not a .tflite file)"
                ))
            })?;
            let model = model.into_optimized().map_err(|e| load_err(format!("tract cannot run this graph: {e}")))?;
            let fact_shape = |what: &str, fact: TractResult<&TypedFact>| -> Result<(Vec<usize>, DatumType), EngineError> {
                let fact = fact.map_err(|e| load_err(format!("no {what} tensor: {e}")))?;
                let shape = fact.shape.as_concrete().map(<[usize]>::to_vec).ok_or_else(|| {
                    load_err(format!("its {what} shape {:?} is not fixed; export it with a batch of 1", fact.shape))
                })?;
                Ok((shape, fact.datum_type))
            };
            let (input, input_type) = fact_shape("input", model.input_fact(0))?;
            let (output, output_type) = fact_shape("output", model.output_fact(0))?;
            let (width, height, classes) = check_shapes(path, &input, &output)?;
            let feature_map = match model.output_outlets().map(|o| o.len()).unwrap_or(0) {
                n if n >= 3 => Some(MapStats::for_shape(path, &fact_shape("third output", model.output_fact(2))?.0)?),
                _ => None,
            };
            if input_type != f32::datum_type() || output_type != f32::datum_type() {
                return Err(load_err(format!(
                    "input {input_type:?} and output {output_type:?}; the tract engine takes a float32 model"
                )));
            }
            let plan = model.into_runnable().map_err(|e| load_err(e.to_string()))?;
            Ok(Self {
                plan,
                input_shape: [1, height as usize, width as usize, 3],
                spec: InputSpec { width, height, dtype: InputType::F32 },
                classes,
                features: None,
                feature_map,
                path: path.to_path_buf(),
            })
        });
        loaded.unwrap_or_else(|_| Err(load_err("tract rejected the file".into())))
    }
}

impl Engine for TractEngine {
    fn input_spec(&self) -> InputSpec {
        self.spec
    }

    fn num_classes(&self) -> usize {
        self.classes
    }

    fn infer(&mut self, input: &InputTensor) -> Result<RawOutput, EngineError> {
        let err = |e: TractError| EngineError::Invoke(e.to_string());
        let InputTensor::F32(data) = input else {
            return Err(EngineError::Invoke("input tensor type does not match the model (float32)".into()));
        };
        let tensor = Tensor::from_shape(&self.input_shape, data).map_err(err)?;
        let outputs = self.plan.run(tvec!(tensor.into())).map_err(err)?;
        let logits = outputs
            .first()
            .ok_or_else(|| EngineError::Invoke("the model produced no output".into()))?
            .to_plain_array_view::<f32>()
            .map_err(err)?;
        if logits.len() != self.classes {
            return Err(EngineError::Invoke(format!("{} outputs; expected {}", logits.len(), self.classes)));
        }
        let logits = RawOutput::F32(logits.iter().copied().collect());
        // A second output is the pooled features (the out-of-distribution score reads them).
        if let Some(features) = outputs.get(1) {
            let values = features.to_plain_array_view::<f32>().map_err(err)?;
            self.features = Some(values.iter().copied().collect());
        }
        if let (Some(stats), Some(map)) = (&mut self.feature_map, outputs.get(2)) {
            stats.update(map.to_plain_array_view::<f32>().map_err(err)?.iter().copied())?;
        }
        Ok(logits)
    }

    fn features(&self) -> Features<'_> {
        Features { pooled: self.features.as_deref(), map_stats: self.feature_map.as_ref().map(|s| s.values.as_slice()) }
    }

    fn describe(&self) -> String {
        format!(
            "tract {} (input 1x{}x{}x3 float32, {} classes, 1 thread)",
            self.path.display(),
            self.spec.height,
            self.spec.width,
            self.classes
        )
    }

    fn runtime(&self) -> super::EngineRuntime {
        super::EngineRuntime { engine: "tract", library: "tract-onnx 0.23.9".into(), threads: 1, xnnpack: None }
    }
}

// Tests: tests/it/ham10000/engines_agree.rs (agreement with TF Lite on real images, errors on wrong input).

//! The ONNX Runtime engine (`ort` crate): runs the model's ONNX exports — the int8 QDQ model
//! (`models/lesion_mnv2_int8_qdq.onnx`) or the float one — on hosts where ONNX Runtime is much
//! faster than the TF Lite 2.6 library that tflitec ships (docs/benchmarks.md).
//!
//! The runtime is not linked: `libonnxruntime.so` is loaded at start-up from the path in
//! `model.onnxruntime_library`, else `$ORT_DYLIB_PATH`, else next to the executable.
//! `scripts/onnxruntime.sh` extracts it from PyPI's `onnxruntime` wheel (x86_64 and aarch64).
//! Both exports take float32 raw 0..255 pixels and give float32 logits, like the tract engine.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::builder::GraphOptimizationLevel;
use ort::environment::Environment;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef};

use super::{check_shapes, Engine, EngineError, Features, MapStats, RawOutput};
use crate::preprocess::{InputSpec, InputTensor, InputType};

/// The file looked for next to the executable when neither the config nor the environment names one.
const LIBRARY_FILE: &str = "libonnxruntime.so";

pub struct OrtEngine {
    session: Session,
    input_shape: [usize; 4],
    spec: InputSpec,
    classes: usize,
    /// The last frame's pooled features, when the model has them as its second output.
    features: Option<Vec<f32>>,
    /// The statistics of the last block's map, when the model has it as its third output.
    feature_map: Option<MapStats>,
    threads: u32,
    path: PathBuf,
    library: PathBuf,
}

/// Where the runtime library is: the config, the environment, or beside the binary.
pub fn library_path(configured: Option<&Path>) -> PathBuf {
    if let Some(p) = configured {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(LIBRARY_FILE)))
        .unwrap_or_else(|| PathBuf::from(LIBRARY_FILE))
}

/// ONNX Runtime can be loaded, and its environment built, once per process; a later model
/// reload reuses both. The first outcome (the library and environment, or why not) is kept.
fn environment(library: &Path) -> Result<&'static (PathBuf, Environment), String> {
    static LOADED: OnceLock<Result<(PathBuf, Environment), String>> = OnceLock::new();
    let loaded = LOADED.get_or_init(|| {
        if !library.is_file() {
            return Err(format!(
                "ONNX Runtime library {} not found (run scripts/onnxruntime.sh, or set \
                 model.onnxruntime_library / ORT_DYLIB_PATH)",
                library.display()
            ));
        }
        let fail = |e: &dyn std::fmt::Display| format!("cannot load ONNX Runtime from {}: {e}", library.display());
        // ort's loader can panic on a library that is not ONNX Runtime; that must be an error.
        let built = std::panic::catch_unwind(|| -> Result<Environment, String> {
            ort::init_from(library).map_err(|e| fail(&e))?.with_name("lesiond").build().map_err(|e| fail(&e))
        });
        match built {
            Ok(env) => env.map(|env| (library.to_path_buf(), env)),
            Err(_) => Err(fail(&"not a usable ONNX Runtime library")),
        }
    });
    loaded.as_ref().map_err(Clone::clone)
}

impl OrtEngine {
    pub fn load(path: &Path, threads: u32, library: Option<&Path>) -> Result<Self, EngineError> {
        let load_err = |reason: String| EngineError::Load { path: path.to_path_buf(), reason };
        let (library, env) = environment(&library_path(library)).map_err(load_err)?;
        let threads = threads.max(1);
        let session = Session::builder(env)
            .and_then(|b| Ok(b.with_optimization_level(GraphOptimizationLevel::Level3)?))
            .and_then(|b| Ok(b.with_intra_threads(threads as usize)?))
            // Spinning worker threads would bill idle waiting to every frame's CPU time.
            .and_then(|b| Ok(b.with_intra_op_spinning(false)?))
            .and_then(|mut b| b.commit_from_file(path))
            .map_err(|e| {
                load_err(format!(
                    "{e} (the ort engine runs the model's ONNX exports, e.g. \
                     models/lesion_mnv2_int8_qdq.onnx, not a .tflite file)"
                ))
            })?;
        let tensor = |what: &str, outlet: Option<&ort::value::Outlet>| -> Result<(String, Vec<usize>, TensorElementType), EngineError> {
            let outlet = outlet.ok_or_else(|| load_err(format!("the model has no {what}")))?;
            let dtype = outlet.dtype();
            let (Some(shape), Some(ty)) = (dtype.tensor_shape(), dtype.tensor_type()) else {
                return Err(load_err(format!("its {what} is not a tensor")));
            };
            let dims = shape
                .iter()
                .map(|&d| usize::try_from(d))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| load_err(format!("its {what} shape {shape:?} is not fixed; export it with a batch of 1")))?;
            Ok((outlet.name().to_string(), dims, ty))
        };
        let (_, input, input_type) = tensor("input", session.inputs().first())?;
        let (_, output, output_type) = tensor("output", session.outputs().first())?;
        let (width, height, classes) = check_shapes(path, &input, &output)?;
        // A second output is the pooled features (the out-of-distribution score reads them).
        let features = match session.outputs().get(1) {
            Some(outlet) => {
                let (_, shape, ty) = tensor("second output", Some(outlet))?;
                if ty != TensorElementType::Float32 {
                    return Err(load_err(format!("features output {ty:?}; expected float32")));
                }
                Some(vec![0.0; super::check_features_shape(path, &shape)?])
            }
            None => None,
        };
        let feature_map = match session.outputs().get(2) {
            Some(outlet) => {
                let (_, shape, ty) = tensor("third output", Some(outlet))?;
                if ty != TensorElementType::Float32 {
                    return Err(load_err(format!("feature map output {ty:?}; expected float32")));
                }
                Some(MapStats::for_shape(path, &shape)?)
            }
            None => None,
        };
        if input_type != TensorElementType::Float32 || output_type != TensorElementType::Float32 {
            return Err(load_err(format!(
                "input {input_type:?} and output {output_type:?}; the ort engine takes float32 in and out \
                 (a QDQ int8 model keeps float32 at its borders)"
            )));
        }
        Ok(Self {
            session,
            input_shape: [1, height as usize, width as usize, 3],
            spec: InputSpec { width, height, dtype: InputType::F32 },
            classes,
            features,
            feature_map,
            threads,
            path: path.to_path_buf(),
            library: library.clone(),
        })
    }
}

impl Engine for OrtEngine {
    fn input_spec(&self) -> InputSpec {
        self.spec
    }

    fn num_classes(&self) -> usize {
        self.classes
    }

    fn infer(&mut self, input: &InputTensor) -> Result<RawOutput, EngineError> {
        let err = |e: ort::Error| EngineError::Invoke(e.to_string());
        let InputTensor::F32(data) = input else {
            return Err(EngineError::Invoke("input tensor type does not match the model (float32)".into()));
        };
        let tensor = TensorRef::from_array_view((self.input_shape, data.as_slice())).map_err(err)?;
        let outputs = self.session.run(ort::inputs![tensor]).map_err(err)?;
        let (_, logits) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
        if logits.len() != self.classes {
            return Err(EngineError::Invoke(format!("{} outputs; expected {}", logits.len(), self.classes)));
        }
        let logits = logits.to_vec();
        if let Some(features) = &mut self.features {
            let (_, values) = outputs[1].try_extract_tensor::<f32>().map_err(err)?;
            if values.len() != features.len() {
                return Err(EngineError::Invoke(format!("{} features; expected {}", values.len(), features.len())));
            }
            features.copy_from_slice(values);
        }
        if let Some(stats) = &mut self.feature_map {
            let (_, values) = outputs[2].try_extract_tensor::<f32>().map_err(err)?;
            stats.update(values.iter().copied())?;
        }
        Ok(RawOutput::F32(logits))
    }

    fn features(&self) -> Features<'_> {
        Features { pooled: self.features.as_deref(), map_stats: self.feature_map.as_ref().map(|s| s.values.as_slice()) }
    }

    fn describe(&self) -> String {
        format!(
            "onnxruntime {} (input 1x{}x{}x3 float32, {} classes, {} thread{}; library {})",
            self.path.display(),
            self.spec.height,
            self.spec.width,
            self.classes,
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.library.display()
        )
    }

    fn runtime(&self) -> super::EngineRuntime {
        super::EngineRuntime {
            engine: "ort",
            library: format!("ONNX Runtime ({})", self.library.display()),
            threads: self.threads,
            xnnpack: None,
        }
    }
}

// Tests: tests/it/ham10000/engines_agree.rs (agreement with TF Lite on real images, errors on wrong input).

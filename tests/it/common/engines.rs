//! Helpers of the engine agreement tests (`engines_agree.rs`, `ort_engine.rs`): the shipped
//! models under a given engine, real images spread over the data set, and their probabilities
//! through the daemon's own decode, preprocessing and postprocessing.

use std::path::PathBuf;

use lesiond::classifier::Classifier;
use lesiond::config::{Config, ConfigOrigin, EngineKind, ModelConfig, DEMO_TOML};
use lesiond::preprocess::Preprocessor;

use super::{data_dir, repo};

/// A model file of `models/` under `engine`, with the shipped labels and calibration.
pub fn model(engine: EngineKind, file: &str) -> ModelConfig {
    // The embedded demo config's model section, so that fields added later keep their defaults.
    let base = Config::from_toml_and_env(DEMO_TOML, &ConfigOrigin::Embedded, Vec::new()).expect("demo config");
    let m = repo().join("models");
    ModelConfig {
        engine,
        path: m.join(file),
        labels: m.join("labels.json"),
        calibration: Some(m.join("calibration.json")),
        ..base.model
    }
}

/// `n` images spread over the whole data set (by name), not just its first files.
pub fn spread_images(n: usize) -> Vec<PathBuf> {
    let all = sample_images(10_000.min(std::fs::read_dir(data_dir().join("images")).expect("images").count()));
    let step = (all.len() / n).max(1);
    all.into_iter().step_by(step).take(n).collect()
}

/// Probabilities (calibrated softmax) of every image.
pub fn probabilities(config: &ModelConfig, images: &[PathBuf]) -> Vec<Vec<f32>> {
    let mut classifier = Classifier::load(config).unwrap_or_else(|e| panic!("{}: {e}", config.path.display()));
    let mut pre = Preprocessor::new(classifier.input_spec(), false);
    images
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).expect("read image");
            let image = lesiond::source::decode::decode_image(&bytes).expect("decode");
            classifier.classify(&pre.run(&image)).expect("classify").0.probabilities
        })
        .collect()
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, &p)| if p > v[best] { i } else { best })
}

/// (images with the same top class, largest absolute probability difference).
pub fn compare(a: &[Vec<f32>], b: &[Vec<f32>]) -> (usize, f32) {
    let same = a.iter().zip(b).filter(|(x, y)| argmax(x) == argmax(y)).count();
    let max = a.iter().zip(b).flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs())).fold(0.0, f32::max);
    (same, max)
}

/// The first `n` image files of the data set, by name.
pub fn sample_images(n: usize) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir().join("images"))
        .expect("images folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    files.truncate(n);
    assert_eq!(files.len(), n, "not enough images");
    files
}

//! The shipped model's accuracy through the daemon on a few hundred test-split images. This is
//! what catches a silently broken export (e.g. a TF Lite runtime that outputs only the zero
//! point): golden bytes can match while every prediction is wrong.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::*;

#[test]
fn shipped_model_accuracy_on_test_split_images_through_the_daemon() {
    let _heavy = heavy();
    let split = std::fs::read_to_string(repo().join("training/splits/ham10000_split.csv")).expect("split CSV");
    let mut test: Vec<(String, String)> = split
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() == 4 && f[3] == "test").then(|| (f[0].to_string(), f[2].to_string()))
        })
        .collect();
    test.sort();
    // Every fifth test image: ~300, all classes, deterministic.
    let picked: Vec<(String, String)> = test.into_iter().step_by(5).collect();
    assert!(picked.len() >= 250, "{} images", picked.len());
    let data = data_dir();
    let paths: Vec<std::path::PathBuf> = picked.iter().map(|(id, _)| data.join(format!("images/{id}.jpg"))).collect();
    let out = lesiond().args(["classify", "--json", "--threads", "2"]).args(&paths).output().expect("classify");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let predicted: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON")["top"][0]["code"].as_str().expect("code").to_string())
        .collect();
    assert_eq!(predicted.len(), picked.len());

    let correct = picked.iter().zip(&predicted).filter(|((_, dx), p)| dx == *p).count();
    let accuracy = correct as f64 / picked.len() as f64;
    let mut per_class: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for ((_, dx), p) in picked.iter().zip(&predicted) {
        let e = per_class.entry(dx.as_str()).or_default();
        e.1 += 1;
        if dx == p {
            e.0 += 1;
        }
    }
    let balanced = per_class.values().map(|(c, n)| *c as f64 / *n as f64).sum::<f64>() / per_class.len() as f64;
    let distinct: BTreeSet<&String> = predicted.iter().collect();
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("models/metrics.json")).expect("metrics")).expect("JSON");
    let reported = metrics["test"]["int8"]["accuracy"].as_f64().expect("test int8 accuracy");
    eprintln!("{} images: accuracy {accuracy:.3}, balanced {balanced:.3} (model card: {reported:.3}); per class {per_class:?}", picked.len());
    assert!(distinct.len() >= 4, "predictions collapsed to {distinct:?}: a broken export?");
    assert!(accuracy >= reported - 0.06, "accuracy {accuracy:.3} far below the model card's {reported:.3}");
    assert!(balanced >= 0.45, "balanced accuracy {balanced:.3}");
}

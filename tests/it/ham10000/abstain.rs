//! Knowing when not to answer, through the binary (`lesiond classify --json`, the embedded
//! configuration: the int8 model, its checks, its out-of-distribution score and refer point):
//! - every everyday photo shipped in PyPI packages (scikit-image, scikit-learn, matplotlib) and
//!   every synthetic non-skin scene (noise, flat colours, gradients, stripes, text) abstains;
//! - at least 90 % of skin images with the lesion painted out (test split, the data set's masks)
//!   abstain (issue 12's bar for "no lesion"; the rest are near misses: see the model card);
//! - at least 95 % of a fixed sample of test-split images are answered, with a refer flag; the
//!   others carry no flag either way.
//!
//! The scenes come from `python -m lesion_training damage` (numpy + Pillow, the venv
//! `scripts/test.sh` prepares), made once into `target/abstain-scenes`. Needs the data set.

use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::Value;

/// Test-split lesions in the damage set (one image each): its painted-out skin comes from them
/// (about half can be painted out; the same 300 as the model card's measurement).
const LESIONS: usize = 300;

fn scenes() -> PathBuf {
    let dir = repo().join("target/abstain-scenes");
    if ["photos", "painted", "synthetic"].iter().all(|s| dir.join(s).is_dir()) {
        return dir;
    }
    run_generator(&["damage", "--split", "test", "--n", &LESIONS.to_string()], &dir);
    dir
}

fn jpegs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    files
}

/// `lesiond classify --json` lines, one per image.
fn classify(images: &[PathBuf]) -> Vec<Value> {
    let out = lesiond().arg("classify").arg("--json").args(images).output().expect("lesiond classify");
    assert!(out.status.success(), "classify failed: {}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(rows.len(), images.len());
    rows
}

fn name(row: &Value) -> String {
    Path::new(row["image"].as_str().unwrap_or_default()).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn reasons(row: &Value) -> Vec<String> {
    row["abstain"]["reasons"].as_array().map(|a| a.iter().filter_map(|r| r.as_str().map(String::from)).collect()).unwrap_or_default()
}

/// Every test-split image id, in the split file's order.
fn test_split_images() -> Vec<PathBuf> {
    let csv = std::fs::read_to_string(repo().join("training/splits/ham10000_split.csv")).expect("split file");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap_or_else(|| panic!("no {n} column"));
    let (id, split) = (col("image_id"), col("split"));
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.get(split) == Some(&"test"))
        .map(|f| data_dir().join("images").join(format!("{}.jpg", f[id])))
        .collect()
}

#[test]
fn everyday_photos_painted_out_skin_and_synthetic_scenes_abstain() {
    let _heavy = heavy();
    let dir = scenes();
    for (set, least) in [("photos", 1.0), ("synthetic", 1.0), ("painted", 0.9)] {
        let files = jpegs(&dir.join(set));
        assert!(files.len() >= 15, "{set}: only {} images", files.len());
        let rows = classify(&files);
        let answered: Vec<String> = rows.iter().filter(|r| r["abstain"].is_null()).map(name).collect();
        let ood = rows.iter().filter(|r| reasons(r).iter().any(|x| x == "out_of_distribution")).count();
        println!("{set}: {} of {} abstain ({ood} as out of distribution); answered: {answered:?}", rows.len() - answered.len(), rows.len());
        for r in &rows {
            if !r["abstain"].is_null() {
                assert!(r["refer"].is_null() && r["referral"].is_null(), "an abstained result carries no flag: {r}");
                assert!(r["probabilities"].as_object().is_some_and(|p| p.len() == 7), "probabilities kept for the record");
                assert!(r["abstain"]["message"].as_str().is_some_and(|m| m.contains("not to be relied on")));
            }
        }
        let abstained = (rows.len() - answered.len()) as f64 / rows.len() as f64;
        assert!(abstained >= least, "{set}: {:.1} % abstain, below {:.0} %; answered {answered:?}", abstained * 100.0, least * 100.0);
    }
}

#[test]
fn test_split_images_are_answered() {
    let _heavy = heavy();
    // Every 10th test image: about 150, all lesions the model should judge.
    let files: Vec<PathBuf> = test_split_images().into_iter().step_by(10).collect();
    assert!(files.len() >= 140, "{} test images", files.len());
    let rows = classify(&files);
    let abstained: Vec<(String, Vec<String>)> = rows.iter().filter(|r| !r["abstain"].is_null()).map(|r| (name(r), reasons(r))).collect();
    println!("test split: {} of {} abstain: {abstained:?}", abstained.len(), rows.len());
    assert!(abstained.len() * 100 <= rows.len() * 5, "more than 5 % abstain: {abstained:?}");
    for r in rows.iter().filter(|r| r["abstain"].is_null()) {
        assert!(r["refer"].is_boolean(), "an answered image carries the refer flag: {r}");
        assert!(r["ood"]["score"].is_number(), "and its out-of-distribution score: {r}");
    }
}

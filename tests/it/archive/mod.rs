//! The imaging archive (src/archive/): the DICOM objects lesiond makes, checked by dicom3tools'
//! dciodvfy (objects.rs); its network layer against a real Orthanc, over TLS, and a real
//! Modality Worklist (network.rs); the context command completed from a worklist through the
//! daemon (context.rs). End to end through a replayed examination: ham10000::archive.
//!
//! The fixtures here are one assessment as the archive files it, in the variants the objects
//! differ by (a full or a bare patient, an answer or an abstention, with or without a SNOMED
//! body site and a worklist study).

mod context;
mod network;
mod objects;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lesiond::archive::filing::*;

/// The model's seven classes as the report names them: (code, name, malignant).
pub const CLASSES: [(&str, &str, bool); 7] = [
    ("akiec", "Actinic keratosis / intraepithelial carcinoma", true),
    ("bcc", "Basal cell carcinoma", true),
    ("bkl", "Benign keratosis-like lesion", false),
    ("df", "Dermatofibroma", false),
    ("mel", "Melanoma", true),
    ("nv", "Melanocytic nevus", false),
    ("vasc", "Vascular lesion", false),
];

pub const PROBS: [f32; 7] = [0.01, 0.02, 0.05, 0.01, 0.71, 0.19, 0.01];

/// A synthetic 321x241 4:2:0 baseline JPEG (odd sizes: the pixel data needs padding).
pub fn jpeg_420() -> Vec<u8> {
    test_jpeg("gradient-420.jpg")
}

/// tests/data/dicom/<name>: small synthetic JPEGs (4:2:0 and 4:2:2, as MJPEG cameras send).
pub fn test_jpeg(name: &str) -> Vec<u8> {
    let path = crate::common::repo().join("tests/data/dicom").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A baseline JFIF JPEG of a gradient as the `image` crate writes it: 4:4:4, which no VL IOD
/// takes as JPEG.
pub fn gradient_jpeg(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 128]));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&img).expect("encode");
    out
}

pub fn decode_rgb(jpeg: &[u8]) -> (Vec<u8>, u16, u16) {
    let img = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg).expect("decode").to_rgb8();
    let (w, h) = img.dimensions();
    (img.into_raw(), w as u16, h as u16)
}

#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub full_patient: bool,
    pub abstain: bool,
    pub snomed: bool,
    pub worklist: bool,
}

pub const FULL: Variant = Variant { full_patient: true, abstain: false, snomed: true, worklist: true };
pub const BARE: Variant = Variant { full_patient: false, abstain: true, snomed: false, worklist: false };

pub fn all_variants() -> Vec<Variant> {
    let mut v = Vec::new();
    for full_patient in [true, false] {
        for abstain in [false, true] {
            for snomed in [true, false] {
                v.push(Variant { full_patient, abstain, snomed, worklist: full_patient });
            }
        }
    }
    v
}

pub fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(secs * 1000 + 250)
}

pub fn filing<'a>(jpeg: &'a [u8], width: u16, height: u16, v: Variant, probs: &'a [f32; 7]) -> Filing<'a> {
    let probabilities = CLASSES
        .iter()
        .zip(probs.iter())
        .map(|((code, name, malignant), p)| ClassProbability { code, name, probability: *p, malignant: *malignant })
        .collect();
    Filing {
        assessment_id: "0b7e5c1a-0000-4000-8000-000000000002",
        assessed_at: at(1_764_921_605),
        station_id: "station-7",
        software_version: "0.9.0",
        patient: Patient {
            id: "PAT-0042",
            name: v.full_patient.then_some("Müller^Zoë"),
            birth_date: v.full_patient.then_some("19700131"),
            sex: v.full_patient.then_some("F"),
        },
        visit: Visit {
            context_id: "5d1c2e3f-0000-4000-8000-000000000001",
            started_at: at(1_764_921_000),
            accession_number: v.worklist.then_some("ACC123"),
            study_instance_uid: v.worklist.then_some("1.2.826.0.1.3680043.8.498.12345"),
        },
        lesion: Lesion {
            id: v.full_patient.then_some("L1"),
            body_site: v.full_patient.then_some("left forearm, dorsal"),
            body_site_snomed: v.snomed.then_some("14975008"),
        },
        model: Model {
            id: "lesion_mnv2_int8",
            sha256: "379b5f1879eb0c0ffee0c0ffee0c0ffee0c0ffee0c0ffee0c0ffee0c0ffee0c0",
            operating_point: (!v.abstain).then_some("lesion_mnv2_int8@379b5f1879eb/refer-v1"),
        },
        result: AssessmentResult {
            probabilities,
            top: (!v.abstain).then_some(4),
            malignant_probability: probs[0] + probs[1] + probs[4],
            refer: (!v.abstain).then_some(true),
            rules_fired: if v.abstain { vec![] } else { vec!["melanoma"] },
            abstain_reasons: v.abstain.then(|| vec!["out_of_distribution", "too_few_good_frames"]),
            disclaimer: "Decision support only, not a diagnosis: a clinician must assess every lesion.",
        },
        frame: Frame { jpeg, width, height, captured_at: at(1_764_921_600) },
    }
}

/// A fresh folder under the test binary's tmp dir, kept after the run so that a failure's
/// files can be looked at.
pub fn out_dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("archive").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

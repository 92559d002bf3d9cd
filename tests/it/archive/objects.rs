//! The objects apart from the network: JPEG encapsulation, Part 10 files, determinism, UIDs,
//! the report's references, typed refusals; and dciodvfy (dicom3tools, the reference
//! validator) on every variant lesiond can send.

use std::path::Path;
use std::process::Command;

use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use lesiond::archive::encode::{to_file_bytes, Instance, ObjectError};
use lesiond::archive::image::{image_instance, Pixels, SopClass};
use lesiond::archive::sr::report_instance;
use lesiond::archive::uid::{is_valid_uid, uids};

use super::*;
use crate::common::dicom::dicom_program;

fn decode_dataset(inst: &Instance) -> InMemDicomObject {
    let ts = TransferSyntaxRegistry
        .get(&inst.transfer_syntax_uid)
        .unwrap();
    InMemDicomObject::read_dataset_with_ts(inst.dataset.as_slice(), ts).unwrap()
}

fn str_of(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches(['\0', ' '])
        .to_owned()
}

#[test]
fn jpeg_is_encapsulated_byte_for_byte() {
    let jpeg = jpeg_420();
    let f = filing(&jpeg, 321, 241, FULL, &PROBS);
    let inst = image_instance(&f, SopClass::Dermoscopic, Pixels::Jpeg(&jpeg)).unwrap();
    assert_eq!(inst.transfer_syntax_uid, "1.2.840.10008.1.2.4.50");
    let obj = decode_dataset(&inst);
    let pixel = obj.element(tags::PIXEL_DATA).unwrap();
    assert!(
        pixel.value().offset_table().is_none_or(|t| t.is_empty()),
        "basic offset table must be empty"
    );
    let fragments = pixel.value().fragments().unwrap();
    assert_eq!(fragments.len(), 1);
    let fragment = &fragments[0];
    assert_eq!(fragment.len() % 2, 0);
    assert_eq!(&fragment[..jpeg.len()], jpeg.as_slice());
    assert!(fragment[jpeg.len()..].iter().all(|b| *b == 0) && fragment.len() - jpeg.len() <= 1);
    assert_eq!(
        str_of(&obj, tags::PHOTOMETRIC_INTERPRETATION),
        "YBR_FULL_422"
    );
    assert_eq!(str_of(&obj, tags::MODALITY), "DMS");
}

#[test]
fn part10_file_reads_back_with_the_same_dataset() {
    let jpeg = jpeg_420();
    let f = filing(&jpeg, 321, 241, FULL, &PROBS);
    let inst = image_instance(&f, SopClass::VlPhotographic, Pixels::Jpeg(&jpeg)).unwrap();
    let dir = out_dir("part10");
    let path = dir.join("image.dcm");
    std::fs::write(&path, to_file_bytes(&inst).unwrap()).unwrap();
    let file = dicom_object::open_file(&path).unwrap();
    assert_eq!(file.meta().transfer_syntax(), inst.transfer_syntax_uid);
    assert_eq!(
        file.meta().media_storage_sop_instance_uid(),
        inst.sop_instance_uid
    );
    assert_eq!(
        file.meta().media_storage_sop_class_uid(),
        "1.2.840.10008.5.1.4.1.1.77.1.4"
    );
    assert_eq!(str_of(&file, tags::PATIENT_NAME), "Müller^Zoë");
    assert_eq!(str_of(&file, tags::MODALITY), "XC");
    let bytes = to_file_bytes(&inst).unwrap();
    assert!(bytes.ends_with(&inst.dataset));
    assert_eq!(&bytes[128..132], b"DICM");
}

#[test]
fn rgb_pixels_are_stored_uncompressed() {
    let jpeg = jpeg_420();
    let (rgb, w, h) = decode_rgb(&jpeg);
    let f = filing(&jpeg, 321, 241, FULL, &PROBS);
    let inst = image_instance(
        &f,
        SopClass::Dermoscopic,
        Pixels::Rgb {
            pixels: &rgb,
            width: w,
            height: h,
        },
    )
    .unwrap();
    assert_eq!(inst.transfer_syntax_uid, "1.2.840.10008.1.2.1");
    let obj = decode_dataset(&inst);
    assert_eq!(str_of(&obj, tags::PHOTOMETRIC_INTERPRETATION), "RGB");
    let data = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    // 321 x 241 x 3 is odd: one pad byte.
    assert_eq!(data.len(), rgb.len() + 1);
    assert_eq!(&data[..rgb.len()], rgb.as_slice());
}

#[test]
fn same_filing_gives_identical_bytes() {
    let jpeg = jpeg_420();
    let f = filing(&jpeg, 321, 241, FULL, &PROBS);
    let a = image_instance(&f, SopClass::Dermoscopic, Pixels::Jpeg(&jpeg)).unwrap();
    let b = image_instance(&f, SopClass::Dermoscopic, Pixels::Jpeg(&jpeg)).unwrap();
    assert_eq!(a, b);
    assert_eq!(
        report_instance(&f, &a).unwrap(),
        report_instance(&f, &b).unwrap()
    );
}

#[test]
fn uids_are_deterministic_valid_and_distinct() {
    let jpeg = jpeg_420();
    let with_worklist = filing(&jpeg, 321, 241, FULL, &PROBS);
    let without = filing(&jpeg, 321, 241, BARE, &PROBS);
    let a = uids(&with_worklist);
    assert_eq!(a, uids(&with_worklist));
    assert_eq!(
        a.study, "1.2.826.0.1.3680043.8.498.12345",
        "the worklist's study UID wins"
    );
    let b = uids(&without);
    assert!(b.study.starts_with("2.25."), "derived from the context id");
    // Instances and series depend on the assessment only.
    assert_eq!(a.image_instance, b.image_instance);
    assert_eq!(a.report_series, b.report_series);
    let all = [
        &b.study,
        &b.image_series,
        &b.report_series,
        &b.image_instance,
        &b.report_instance,
        &b.image_frame_of_reference,
    ];
    for (i, x) in all.iter().enumerate() {
        assert!(is_valid_uid(x), "{x}");
        for y in &all[i + 1..] {
            assert_ne!(x, y);
        }
    }
    let mut other = filing(&jpeg, 321, 241, BARE, &PROBS);
    other.assessment_id = "0b7e5c1a-0000-4000-8000-000000000003";
    other.visit.context_id = "5d1c2e3f-0000-4000-8000-000000000009";
    let c = uids(&other);
    assert_ne!(c.image_instance, b.image_instance);
    assert_ne!(c.study, b.study);
}

#[test]
fn report_references_the_image_and_shares_the_study() {
    let jpeg = jpeg_420();
    let f = filing(&jpeg, 321, 241, FULL, &PROBS);
    let image = image_instance(&f, SopClass::Dermoscopic, Pixels::Jpeg(&jpeg)).unwrap();
    let report = report_instance(&f, &image).unwrap();
    assert_eq!(report.sop_class_uid, "1.2.840.10008.5.1.4.1.1.88.33");
    let img = decode_dataset(&image);
    let sr = decode_dataset(&report);
    assert_eq!(
        str_of(&img, tags::STUDY_INSTANCE_UID),
        str_of(&sr, tags::STUDY_INSTANCE_UID)
    );
    assert_ne!(
        str_of(&img, tags::SERIES_INSTANCE_UID),
        str_of(&sr, tags::SERIES_INSTANCE_UID)
    );
    assert_eq!(str_of(&sr, tags::MODALITY), "SR");
    let evidence = sr
        .element(tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE)
        .unwrap();
    let study = &evidence.items().unwrap()[0];
    let series = &study
        .element(tags::REFERENCED_SERIES_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0];
    assert_eq!(
        str_of(series, tags::SERIES_INSTANCE_UID),
        str_of(&img, tags::SERIES_INSTANCE_UID)
    );
    let sop = &series
        .element(tags::REFERENCED_SOP_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0];
    assert_eq!(
        str_of(sop, tags::REFERENCED_SOP_INSTANCE_UID),
        image.sop_instance_uid
    );
}

#[test]
fn report_refuses_an_image_of_another_assessment() {
    let jpeg = jpeg_420();
    let f = filing(&jpeg, 321, 241, FULL, &PROBS);
    let mut other = filing(&jpeg, 321, 241, FULL, &PROBS);
    other.assessment_id = "another";
    let image = image_instance(&other, SopClass::Dermoscopic, Pixels::Jpeg(&jpeg)).unwrap();
    assert!(matches!(
        report_instance(&f, &image),
        Err(ObjectError::ImageReference(_))
    ));
}

#[test]
fn refusals_are_typed() {
    let jpeg = jpeg_420();
    let f = filing(&jpeg, 320, 241, FULL, &PROBS);
    assert!(matches!(
        image_instance(&f, SopClass::Dermoscopic, Pixels::Jpeg(&jpeg)),
        Err(ObjectError::JpegSizeMismatch {
            jpeg_width: 321,
            frame_width: 320,
            ..
        })
    ));
    let f = filing(&jpeg, 321, 241, FULL, &PROBS);
    let short = vec![0u8; 10];
    assert!(matches!(
        image_instance(
            &f,
            SopClass::Dermoscopic,
            Pixels::Rgb {
                pixels: &short,
                width: 4,
                height: 4
            }
        ),
        Err(ObjectError::PixelBufferSize {
            expected: 48,
            actual: 10,
            ..
        })
    ));
    // image's encoder writes 4:4:4 YCbCr, which no VL IOD takes as JPEG.
    let full = gradient_jpeg(64, 48);
    let f = filing(&full, 64, 48, FULL, &PROBS);
    let err = image_instance(&f, SopClass::VlPhotographic, Pixels::Jpeg(&full)).unwrap_err();
    assert!(matches!(err, ObjectError::JpegNotStorable(_)), "{err}");
    assert!(err.to_string().contains("Pixels::Rgb"));
    let f = filing(b"not a jpeg", 321, 241, FULL, &PROBS);
    assert!(matches!(
        image_instance(&f, SopClass::Dermoscopic, Pixels::Jpeg(b"not a jpeg")),
        Err(ObjectError::NotBaselineJpeg(_))
    ));
    let mut bad = filing(&jpeg, 321, 241, FULL, &PROBS);
    bad.patient.sex = Some("female");
    assert!(matches!(
        image_instance(&bad, SopClass::Dermoscopic, Pixels::Jpeg(&jpeg)),
        Err(ObjectError::InvalidSex(_))
    ));
    let mut bad = filing(&jpeg, 321, 241, FULL, &PROBS);
    bad.visit.accession_number = Some("ACCESSION-NUMBER-TOO-LONG");
    assert!(matches!(
        image_instance(&bad, SopClass::Dermoscopic, Pixels::Jpeg(&jpeg)),
        Err(ObjectError::TooLong { .. })
    ));
    let mut bad = filing(&jpeg, 321, 241, FULL, &PROBS);
    bad.visit.study_instance_uid = Some("1.2.03");
    assert!(matches!(
        image_instance(&bad, SopClass::Dermoscopic, Pixels::Jpeg(&jpeg)),
        Err(ObjectError::InvalidUid { .. })
    ));
    let mut bad = filing(&jpeg, 321, 241, FULL, &PROBS);
    bad.result.top = Some(7);
    let image = image_instance(&bad, SopClass::Dermoscopic, Pixels::Jpeg(&jpeg)).unwrap();
    assert!(matches!(
        report_instance(&bad, &image),
        Err(ObjectError::TopOutOfRange { top: 7, count: 7 })
    ));
    let mut bad = filing(&jpeg, 321, 241, FULL, &PROBS);
    bad.result.malignant_probability = f32::NAN;
    assert!(matches!(
        report_instance(&bad, &image),
        Err(ObjectError::NotFinite { .. })
    ));
}

// --- dciodvfy

/// Runs dciodvfy on `path`; returns (error lines, warning lines, full output).
fn dciodvfy(path: &Path) -> (Vec<String>, Vec<String>, String) {
    let out = Command::new(dicom_program("dciodvfy")).arg(path).output().expect("dciodvfy");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let errors = text.lines().filter(|l| l.contains("Error")).map(str::to_owned).collect();
    let warnings = text.lines().filter(|l| l.contains("Warning")).map(str::to_owned).collect();
    (errors, warnings, text)
}

fn check(
    name: &str,
    dir: &std::path::Path,
    inst: &Instance,
    failures: &mut Vec<String>,
) {
    let path = dir.join(format!("{name}.dcm"));
    std::fs::write(&path, to_file_bytes(inst).unwrap()).unwrap();
    let (errors, warnings, _) = dciodvfy(&path);
    for w in &warnings {
        eprintln!("{name}: {w}");
    }
    for e in errors {
        failures.push(format!("{name}: {e}"));
    }
}

#[test]
fn every_variant_passes_dciodvfy() {
    let dir = out_dir("validate");
    let jpeg = jpeg_420();
    let (rgb, w, h) = decode_rgb(&jpeg);
    let mut failures = Vec::new();
    for (i, v) in all_variants().into_iter().enumerate() {
        let f = filing(&jpeg, 321, 241, v, &PROBS);
        for sop in [SopClass::Dermoscopic, SopClass::VlPhotographic] {
            let tag = format!("v{i}-{sop:?}");
            let jpeg_inst = image_instance(&f, sop, Pixels::Jpeg(&jpeg)).unwrap();
            check(&format!("{tag}-jpeg"), &dir, &jpeg_inst, &mut failures);
            let rgb_inst = image_instance(
                &f,
                sop,
                Pixels::Rgb {
                    pixels: &rgb,
                    width: w,
                    height: h,
                },
            )
            .unwrap();
            check(&format!("{tag}-rgb"), &dir, &rgb_inst, &mut failures);
            let report = report_instance(&f, &jpeg_inst).unwrap();
            check(&format!("{tag}-sr"), &dir, &report, &mut failures);
        }
    }
    assert!(
        failures.is_empty(),
        "dciodvfy errors (files in {}):\n{}",
        dir.display(),
        failures.join("\n")
    );
}

/// 4:2:2 as some MJPEG cameras send it (the real dermoscopic frames are validated on their
/// way through the daemon: ham10000::archive).
#[test]
fn other_jpegs_pass_dciodvfy() {
    let dir = out_dir("validate-other");
    let inputs = vec![(
        "gradient-422".to_owned(),
        test_jpeg("gradient-422.jpg"),
    )];
    let mut failures = Vec::new();
    for (name, jpeg) in &inputs {
        let (_, w, h) = decode_rgb(jpeg);
        let f = filing(jpeg, w, h, all_variants()[0], &PROBS);
        for sop in [SopClass::Dermoscopic, SopClass::VlPhotographic] {
            let inst = image_instance(&f, sop, Pixels::Jpeg(jpeg)).unwrap();
            check(&format!("{name}-{sop:?}"), &dir, &inst, &mut failures);
        }
    }
    assert!(
        failures.is_empty(),
        "dciodvfy errors (files in {}):\n{}",
        dir.display(),
        failures.join("\n")
    );
}

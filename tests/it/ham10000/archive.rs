//! The imaging archive end to end: the first visits of the generated examination video
//! (tests/it/ham10000/examination.rs) replayed at 15 fps through `lesiond run` with the
//! production configuration plus `[dicom]`, into a real Orthanc (Debian's 1.10), a real
//! mosquitto beside it.
//!
//! Asserts what the archive holds against what went out on MQTT: each assessment exactly once
//! as an image instance and a report, with the patient of the context in force, its result,
//! and the judged frame's pixels (Orthanc's own decoding of what it stored against ours of the
//! frame file); that an archive killed mid-run loses nothing and a replay ends only once the
//! archive has everything; that an archive refusing JPEG gets the same pixels uncompressed;
//! that a wrong called AE title is said plainly and nothing is lost until it is put right.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lesiond::archive::uid::uids;
use serde_json::Value;

use crate::common::dicom::{Orthanc, UNCOMPRESSED_ONLY};
use crate::common::*;

const FPS: f64 = 15.0;
const STATION: &str = "station-1";
const DERMOSCOPIC: &str = "1.2.840.10008.5.1.4.1.1.77.1.7";
const COMPREHENSIVE_SR: &str = "1.2.840.10008.5.1.4.1.1.88.33";
const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const UNASSIGNED: &str = "LESIOND-UNASSIGNED";

const CONTEXT: &str = r#"{"request_id":"c1","patient_id":"P-4711","patient_name":"Doe^Jane","birth_date":"19700131","sex":"F","accession_number":"ACC-1","body_site":"left forearm","body_site_snomed":"14975008","lesion_id":"L1"}"#;
/// What of the context must never reach the log.
const PATIENT_DATA: [&str; 4] = ["P-4711", "Doe", "Jane", "19700131"];

/// A cut of the examination video: its frames from the start through the `visits`-th lesion
/// visit and the idle scene after it (so that the last lesion is taken away and assessed as in
/// a real examination), copied under their own names into `dir`. Returns the frame count.
fn cut(dir: &Path, visits: usize) -> usize {
    let video = exam_video();
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(video.join("manifest.json")).expect("manifest")).expect("JSON");
    let segments = manifest["segments"].as_array().expect("segments");
    let nth_visit = segments.iter().enumerate().filter(|(_, s)| s["kind"] == "visit").nth(visits - 1).map(|(i, _)| i).expect("enough visits");
    let last = segments.get(nth_visit + 1).unwrap_or(&segments[nth_visit])["last"].as_u64().expect("last");
    std::fs::create_dir_all(dir).expect("mkdir");
    for n in segments[0]["first"].as_u64().expect("first")..=last {
        let name = format!("f{n:06}.jpg");
        std::fs::copy(video.join("frames").join(&name), dir.join(&name)).expect("copy frame");
    }
    last as usize
}

/// One idle frame (the video's first: an everyday photo), for a daemon that must make no
/// assessment of its own.
fn idle_folder(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::copy(exam_video().join("frames/f000001.jpg"), dir.join("f000001.jpg")).expect("copy frame");
    dir.to_path_buf()
}

/// The production configuration plus `dicom_section`.
fn write_config(work: &Path, dicom_section: &str) -> PathBuf {
    let shipped = std::fs::read_to_string(repo().join("config/lesiond.toml")).expect("config/lesiond.toml");
    // The shipped file ends with its own (disabled) [dicom] section: the test's replaces it.
    let (before_dicom, _) = shipped.split_once("\n[dicom]\n").expect("config/lesiond.toml ends with [dicom]");
    write_file(work, "lesiond.toml", &format!("{before_dicom}\n{dicom_section}"))
}

/// `lesiond run` on a folder of frames at 15 fps; its log in `work/<run>/lesiond.log`.
fn run_daemon(config: &Path, work: &Path, run: &str, broker: &Broker, frames: &Path, exit_when_done: bool) -> Daemon {
    let log_dir = work.join(run);
    std::fs::create_dir_all(&log_dir).expect("mkdir");
    let port = broker.port.to_string();
    let spool = work.join("spool");
    let env = [
        ("LESIOND_SOURCE__KIND", "directory"),
        ("LESIOND_SOURCE__DIRECTORY__PATH", frames.to_str().expect("utf-8 path")),
        ("LESIOND_SOURCE__DIRECTORY__FPS", "15"),
        ("LESIOND_SOURCE__DIRECTORY__EXIT_WHEN_DONE", if exit_when_done { "true" } else { "false" }),
        ("LESIOND_MQTT__PORT", port.as_str()),
        ("LESIOND_SPOOL__DIR", spool.to_str().expect("utf-8 path")),
    ];
    Daemon::start(config, &env, &log_dir)
}

fn assessments(sub: &Subscriber) -> Vec<Value> {
    sub.on(&format!("{STATION}/assessment")).iter().map(|m| serde_json::from_str(&m.payload).expect("assessment JSON")).collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

/// The log's warnings from the archive: one per failed try to file an assessment.
fn archive_warnings(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("WARN") && l.contains("archive:")).collect()
}

/// The archive's instances by SOP Instance UID: Orthanc id.
fn instances_by_uid(orthanc: &Orthanc) -> HashMap<String, String> {
    let list = orthanc.get_json("/instances?expand");
    let mut by_uid = HashMap::new();
    for i in list.as_array().expect("instances") {
        let uid = i["MainDicomTags"]["SOPInstanceUID"].as_str().expect("SOPInstanceUID").to_string();
        let id = i["ID"].as_str().expect("ID").to_string();
        assert!(by_uid.insert(uid.clone(), id).is_none(), "two instances with SOP Instance UID {uid}");
    }
    by_uid
}

/// The SOP Instance UIDs lesiond gives the image and the report of assessment `id` (they
/// depend on the assessment id only).
fn expected_uids(id: &str) -> (String, String) {
    let mut f = crate::archive::filing(&[], 1, 1, crate::archive::FULL, &crate::archive::PROBS);
    f.assessment_id = id;
    let u = uids(&f);
    (u.image_instance, u.report_instance)
}

/// The SR content item whose concept name has code value `code`, anywhere in the tree.
fn sr_item<'a>(v: &'a Value, code: &str) -> Option<&'a Value> {
    if v["ConceptNameCodeSequence"][0]["CodeValue"] == code {
        return Some(v);
    }
    match v {
        Value::Array(items) => items.iter().find_map(|i| sr_item(i, code)),
        Value::Object(map) => map.values().find_map(|i| sr_item(i, code)),
        _ => None,
    }
}

/// The judged frame: the used frame with the highest weight, as the daemon picks it (the last
/// of equals, `Iterator::max_by`). The published weight is rounded to 3 decimals, so frames
/// nearly as sharp tie in it; the daemon compares unrounded weights, i.e. focus over the
/// sharpest focus, and `focus` is published unrounded.
fn judged_frame(a: &Value) -> &Value {
    let key = |f: &Value| (f["weight"].as_f64().expect("weight"), f["focus"].as_f64().expect("focus"));
    a["frames"].as_array().expect("frames").iter().max_by(|x, y| key(x).partial_cmp(&key(y)).expect("numbers")).expect("a frame")
}

fn frame_name(frame: &Value) -> String {
    frame["source"]["name"].as_str().expect("source.name").to_string()
}

/// An RFC 3339 time as DICOM DT in UTC, the form lesiond writes.
fn dicom_dt(rfc3339: &str) -> String {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).expect("RFC 3339").to_offset(time::UtcOffset::UTC);
    let f = time::macros::format_description!("[year][month][day][hour][minute][second].[subsecond digits:6]");
    format!("{}+0000", t.format(&f).expect("format"))
}

/// Orthanc's rendering of the stored image (`/preview`, PNG).
fn stored_pixels(orthanc: &Orthanc, instance: &str) -> image::RgbImage {
    let png = orthanc.get_bytes(&format!("/instances/{instance}/preview"));
    image::load_from_memory_with_format(&png, image::ImageFormat::Png).expect("PNG preview").to_rgb8()
}

/// `stored` against libjpeg-turbo's decoding of a frame file: (mean, max) absolute
/// difference per channel value.
fn pixel_difference(stored: &image::RgbImage, frame_file: &Path) -> (f64, u8) {
    let frame = lesiond::source::decode::decode_jpeg(&std::fs::read(frame_file).expect("frame")).expect("decode frame");
    assert_eq!(stored.dimensions(), frame.dimensions(), "stored image size");
    let (mut sum, mut max) = (0u64, 0u8);
    for (a, b) in stored.as_raw().iter().zip(frame.as_raw()) {
        let d = a.abs_diff(*b);
        sum += u64::from(d);
        max = max.max(d);
    }
    (sum as f64 / stored.as_raw().len() as f64, max)
}

/// How the stored image compares with the assessment's frames: the judged one's (mean, max)
/// difference, and the smallest mean difference to any other frame it used.
struct PixelCheck {
    judged: (f64, u8),
    nearest_other: f64,
}

/// Checks every assessment against the archive: one image (in `transfer_syntax`) and one
/// report each, of `patient_id`, and the image's pixels are the judged frame's. Returns the
/// pixel comparisons.
fn check_archive(orthanc: &Orthanc, all: &[Value], frames: &Path, patient_id: &str, transfer_syntax: &str) -> Vec<PixelCheck> {
    let by_uid = instances_by_uid(orthanc);
    assert_eq!(by_uid.len(), 2 * all.len(), "the archive holds {} instances for {} assessments", by_uid.len(), all.len());
    let mut diffs = Vec::new();
    for a in all {
        let id = a["assessment_id"].as_str().expect("assessment_id");
        let (image_uid, report_uid) = expected_uids(id);
        let image = by_uid.get(&image_uid).unwrap_or_else(|| panic!("no image instance for assessment {id}"));
        let report = by_uid.get(&report_uid).unwrap_or_else(|| panic!("no report for assessment {id}"));

        let tags = orthanc.get_json(&format!("/instances/{image}/simplified-tags"));
        assert_eq!(tags["SOPClassUID"], DERMOSCOPIC, "{id}");
        assert_eq!(tags["PatientID"], patient_id, "{id}");
        let ts = orthanc.get_bytes(&format!("/instances/{image}/metadata/TransferSyntax"));
        assert_eq!(String::from_utf8_lossy(&ts), transfer_syntax, "{id}");

        let sr = orthanc.get_json(&format!("/instances/{report}/simplified-tags"));
        assert_eq!(sr["SOPClassUID"], COMPREHENSIVE_SR, "{id}");
        assert_eq!(sr["PatientID"], patient_id, "{id}");
        assert_eq!(sr["StudyInstanceUID"], tags["StudyInstanceUID"], "image and report in one study: {id}");
        let yes_no = |code: &str| sr_item(&sr, code).and_then(|i| i["ConceptCodeSequence"][0]["CodeMeaning"].as_str()).map(String::from);
        if a["abstain"].is_null() {
            let top = a["top"][0]["code"].as_str().expect("top class");
            let said = sr_item(&sr, "TOP-CLASS").unwrap_or_else(|| panic!("the report names no top class: {sr}"));
            assert_eq!(said["ConceptCodeSequence"][0]["CodeValue"], top, "{id}: {said}");
            let refer = a["refer"].as_bool().expect("refer");
            assert_eq!(yes_no("REFER").as_deref(), Some(if refer { "Yes" } else { "No" }), "{id}");
            assert_eq!(yes_no("ABSTAINED").as_deref(), Some("No"), "{id}");
        } else {
            assert!(sr_item(&sr, "TOP-CLASS").is_none(), "an abstention names a top class: {id}");
            assert_eq!(yes_no("ABSTAINED").as_deref(), Some("Yes"), "{id}");
        }

        // Image and time are the judged frame's.
        assert_eq!(tags["AcquisitionDateTime"].as_str(), Some(dicom_dt(judged_frame(a)["captured_at"].as_str().expect("captured_at")).as_str()), "{id}");
        let stored = stored_pixels(orthanc, image);
        let judged = frame_name(judged_frame(a));
        let (mean, max) = pixel_difference(&stored, &frames.join(&judged));
        // Frames of one steady hold differ little (the least sharp of a visit's frames was
        // measured 2.6 levels from the sharpest on average): the stored image must be nearest
        // to the judged frame of all the frames the assessment used, and near it in absolute
        // terms. Two JPEG decoders (Orthanc's and libjpeg-turbo) may differ by rounding in
        // upsampling and colour conversion, well under a level on average; here they agree.
        let nearest_other = a["frames"]
            .as_array()
            .expect("frames")
            .iter()
            .filter_map(|f| f["source"]["name"].as_str())
            .filter(|name| *name != judged)
            .map(|name| pixel_difference(&stored, &frames.join(name)).0)
            .fold(f64::INFINITY, f64::min);
        assert!(
            mean < 1.0 && mean < nearest_other,
            "{id}: the stored image is not the judged frame {judged}: mean abs diff {mean:.2} (max {max}), nearest other frame {nearest_other:.2}"
        );
        diffs.push(PixelCheck { judged: (mean, max), nearest_other });
    }
    diffs
}

fn summarize(diffs: &[PixelCheck]) -> String {
    let each: Vec<String> = diffs.iter().map(|d| format!("{:.3} (max {}; nearest other frame {:.2})", d.judged.0, d.judged.1, d.nearest_other)).collect();
    format!("mean abs diff to the judged frame per assessment: [{}]", each.join(", "))
}

#[test]
fn context_set_then_replay_files_each_assessment_once_with_its_patient() {
    let _heavy = heavy();
    let work = tempfile::tempdir().expect("tempdir");
    let frames = work.path().join("cut");
    let n_frames = cut(&frames, 4);
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "lesiond/#");
    let mut orthanc = Orthanc::start("");
    let config = write_config(work.path(), &orthanc.dicom_section(""));

    // Run 1: the clinician sets the context; the daemon stops before anything is examined.
    let mut daemon = run_daemon(&config, work.path(), "run1", &broker, &idle_folder(&work.path().join("idle")), false);
    assert!(wait_until(Duration::from_secs(60), || daemon.log_text().contains("ready:")), "{}", daemon.log_text());
    assert!(publish(&broker, &format!("lesiond/{STATION}/cmd/context"), CONTEXT, &[]));
    let reply = || sub.on(&format!("{STATION}/reply/context")).last().map(|m| serde_json::from_str::<Value>(&m.payload).expect("JSON"));
    assert!(wait_until(Duration::from_secs(10), || reply().is_some()), "no reply to the context command");
    assert_eq!(reply().expect("reply")["ok"], true, "{:?}", reply());
    daemon.signal("-TERM");
    assert!(daemon.wait(Duration::from_secs(30)).is_some_and(|s| s.success()), "{}", daemon.log_text());
    let run1_log = daemon.log_text();

    // Run 2: the replay, under the context kept across the restart; the archive is killed
    // (kill -9) as soon as it holds its first instance, and back 3 s later.
    let started = Instant::now();
    let mut daemon = run_daemon(&config, work.path(), "run2", &broker, &frames, true);
    let spool = work.path().join("spool");
    // Spool entries come and go as they are filed: look at them whenever they are there.
    let mut entry_modes = std::collections::BTreeSet::new();
    let look_at_spool = |modes: &mut std::collections::BTreeSet<u32>| {
        for e in spool_entries(&spool) {
            if let Ok(m) = std::fs::metadata(&e) {
                modes.insert(m.permissions().mode() & 0o777);
            }
        }
    };
    let first_stored = wait_until(Duration::from_secs_f64(n_frames as f64 / FPS + 60.0), || {
        look_at_spool(&mut entry_modes);
        !orthanc.instance_ids().is_empty()
    });
    assert!(first_stored, "nothing reached the archive: {}", daemon.log_text());
    let first_at = started.elapsed();
    orthanc.kill9();
    // The archive stays away for a while on purpose: assessments made meanwhile must wait.
    let down_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < down_until {
        look_at_spool(&mut entry_modes);
        std::thread::sleep(Duration::from_millis(100));
    }
    orthanc.restart();
    let mut exited = None;
    wait_until(Duration::from_secs_f64(n_frames as f64 / FPS + 120.0), || {
        look_at_spool(&mut entry_modes);
        exited = daemon.child.try_wait().expect("try_wait");
        exited.is_some()
    });
    let status = exited.expect("the replay did not finish");
    let run_secs = started.elapsed().as_secs_f64();
    let log = daemon.log_text();
    assert!(status.success(), "lesiond failed: {log}");

    // The daemon ended only once the archive had everything: count it now, without waiting.
    let expected = summary_count(&log, "assessments").expect("summary") as usize;
    let held = orthanc.instance_ids().len();
    assert!(wait_until(Duration::from_secs(5), || assessments(&sub).len() >= expected), "MQTT has {} of {expected} assessments", assessments(&sub).len());
    let all = assessments(&sub);
    assert_eq!(all.len(), expected, "each assessment once on MQTT");
    assert!(expected >= 3, "the cut's 4 visits gave {expected} assessments: {log}");
    assert_eq!(held, 2 * expected, "when the daemon exited the archive held {held} instances for {expected} assessments");
    for a in &all {
        assert_eq!(a["context"]["patient_id"], "P-4711", "an assessment without the context: {a}");
    }
    let diffs = check_archive(&orthanc, &all, &frames, "P-4711", JPEG_BASELINE);
    // The patient as the context gave it, on each image and report.
    let by_uid = instances_by_uid(&orthanc);
    for a in &all {
        let (image_uid, report_uid) = expected_uids(a["assessment_id"].as_str().expect("id"));
        for uid in [&image_uid, &report_uid] {
            let tags = orthanc.get_json(&format!("/instances/{}/simplified-tags", by_uid[uid]));
            assert_eq!(tags["PatientName"], "Doe^Jane", "{tags}");
            assert_eq!(tags["PatientBirthDate"], "19700131");
            assert_eq!(tags["PatientSex"], "F");
            assert_eq!(tags["AccessionNumber"], "ACC-1");
        }
        let image = orthanc.get_json(&format!("/instances/{}/simplified-tags", by_uid[&image_uid]));
        assert!(image["ImageComments"].as_str().is_some_and(|c| c.contains("left forearm") && c.contains("L1")), "{}", image["ImageComments"]);
        assert_eq!(image["AnatomicRegionSequence"][0]["CodeValue"], "14975008");
        assert_eq!(image["AnatomicRegionSequence"][0]["CodingSchemeDesignator"], "SCT");
    }

    // Patient data: never on the retained state topic (any screen or dashboard may show it),
    // never in the log; on disk only 0600 in 0700.
    let states = sub.on(&format!("{STATION}/state"));
    assert!(!states.is_empty(), "no state was published");
    for state in &states {
        for secret in PATIENT_DATA {
            assert!(!state.payload.contains(secret), "the state topic names {secret:?}: {}", state.payload);
        }
    }
    for (run, text) in [("run 1", &run1_log), ("run 2", &log)] {
        for secret in PATIENT_DATA {
            assert!(!text.contains(secret), "the {run} log names {secret:?}");
        }
    }
    let context_dir = work.path().join("context");
    assert_eq!(mode(&context_dir), 0o700, "context dir");
    assert_eq!(mode(&context_dir.join("current.json")), 0o600, "context file");
    assert!(!entry_modes.is_empty(), "no spool entry was ever seen");
    assert_eq!(entry_modes.iter().copied().collect::<Vec<_>>(), [0o600], "spool entry modes");
    assert!(spool_entries(&spool).is_empty(), "everything filed and published, nothing left in the spool");

    let warnings = archive_warnings(&log);
    let filed = log.lines().filter(|l| l.contains("archive: assessment filed")).count();
    println!(
        "replay of {n_frames} frames (4 visits): {expected} assessments ({} abstaining), {held} instances in Orthanc; first instance after {:.1} s, \
         Orthanc killed then and back 3 s later; {} failed tries while it was away (archive: warnings), {filed} filings logged; daemon exited 0 after {run_secs:.1} s",
        all.iter().filter(|a| !a["abstain"].is_null()).count(),
        first_at.as_secs_f64(),
        warnings.len(),
    );
    for w in &warnings {
        println!("  {w}");
    }
    println!("judged frame vs Orthanc preview (JPEG Baseline): {}", summarize(&diffs));
}

#[test]
fn an_archive_that_refuses_jpeg_gets_uncompressed_rgb() {
    let _heavy = heavy();
    let work = tempfile::tempdir().expect("tempdir");
    let frames = work.path().join("cut");
    cut(&frames, 2);
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "lesiond/#");
    let orthanc = Orthanc::start(UNCOMPRESSED_ONLY);
    // No context: filed under the placeholder patient, which send_unassigned allows.
    let config = write_config(work.path(), &orthanc.dicom_section("send_unassigned = true"));
    let mut daemon = run_daemon(&config, work.path(), "run", &broker, &frames, true);
    let status = daemon.wait(Duration::from_secs(180)).expect("the replay did not finish");
    let log = daemon.log_text();
    assert!(status.success(), "lesiond failed: {log}");
    let expected = summary_count(&log, "assessments").expect("summary") as usize;
    assert!(wait_until(Duration::from_secs(5), || assessments(&sub).len() >= expected));
    let all = assessments(&sub);
    assert!(!all.is_empty(), "no assessment: {log}");
    let diffs = check_archive(&orthanc, &all, &frames, UNASSIGNED, EXPLICIT_VR_LE);
    assert_eq!(log.lines().filter(|l| l.contains("archive: assessment filed") && l.contains("uncompressed=true")).count(), all.len(), "{log}");
    println!("{} assessments filed uncompressed; judged frame vs Orthanc preview (Explicit VR LE): {}", all.len(), summarize(&diffs));
}

#[test]
fn a_wrong_called_ae_title_is_a_clear_error_and_nothing_is_lost() {
    let _heavy = heavy();
    let work = tempfile::tempdir().expect("tempdir");
    let frames = work.path().join("cut");
    cut(&frames, 2);
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "lesiond/#");
    let orthanc = Orthanc::start(r#""DicomCheckCalledAet": true"#);
    let right = orthanc.dicom_section("send_unassigned = true");
    let wrong = right.replace(&format!("peer_ae_title = \"{}\"", orthanc.aet), "peer_ae_title = \"NOTTHEPACS\"");
    assert_ne!(right, wrong);

    // The replay under a wrong called AE title: the archive rejects every association.
    let mut daemon = run_daemon(&write_config(work.path(), &wrong), work.path(), "wrong", &broker, &frames, true);
    let finished = wait_until(Duration::from_secs(120), || {
        let log = daemon.log_text();
        log.contains("source finished") && log.contains("called AE title not recognized")
    });
    assert!(finished, "{}", daemon.log_text());
    // Stopped by hand: a replay waits for an archive that may come back.
    daemon.signal("-TERM");
    let signalled = Instant::now();
    let status = daemon.wait(Duration::from_secs(30)).unwrap_or_else(|| panic!("the daemon did not stop on SIGTERM:\n{}", daemon.log_text()));
    let stop_secs = signalled.elapsed().as_secs_f64();
    let log = daemon.log_text();
    assert!(status.success(), "{log}");
    // MQTT acknowledged every result: what only the archive still waits for is not the
    // publisher's to wait for, nor to report as unacknowledged.
    assert!(!log.contains("not yet acknowledged"), "{log}");
    let error = log.lines().find(|l| l.contains("called AE title not recognized")).expect("the error").to_string();
    assert!(error.contains("NOTTHEPACS"), "the error names the AE title it used: {error}");
    let made = summary_count(&log, "assessments").expect("summary") as usize;
    assert!(made > 0, "{log}");
    assert!(wait_until(Duration::from_secs(5), || assessments(&sub).len() >= made));
    assert_eq!(assessments(&sub).len(), made, "MQTT got every assessment while the archive refused");
    assert!(orthanc.instance_ids().is_empty(), "the archive took something under a wrong AE title");
    // MQTT acknowledged them all; the archive's cursor keeps each one in the spool.
    assert_eq!(spool_entries(&work.path().join("spool")).len(), made, "the spool keeps what the archive has not filed");

    // The AE title put right, nothing new to examine: what waited is filed, then the daemon
    // ends. The archive is away when the source ends and back only after: the daemon must wait
    // for it rather than end with assessments unfiled.
    let mut orthanc = orthanc;
    orthanc.kill9();
    let mut daemon = run_daemon(&write_config(work.path(), &right), work.path(), "right", &broker, &idle_folder(&work.path().join("idle")), true);
    let waiting = wait_until(Duration::from_secs(60), || {
        let log = daemon.log_text();
        log.contains("source finished") && log.contains("cannot connect to the archive")
    });
    assert!(waiting, "{}", daemon.log_text());
    assert!(daemon.child.try_wait().expect("try_wait").is_none(), "the daemon ended with the archive away: {}", daemon.log_text());
    orthanc.restart();
    let status = daemon.wait(Duration::from_secs(120)).expect("the daemon did not finish");
    let log_right = daemon.log_text();
    assert!(status.success(), "{log_right}");
    assert_eq!(summary_count(&log_right, "assessments"), Some(0), "the idle frame made an assessment");
    let all = assessments(&sub);
    assert_eq!(orthanc.instance_ids().len(), 2 * all.len(), "{log_right}");
    check_archive(&orthanc, &all, &frames, UNASSIGNED, JPEG_BASELINE);
    assert!(spool_entries(&work.path().join("spool")).is_empty());
    println!("wrong called AE title: {made} assessments kept, stopped {stop_secs:.1} s after SIGTERM; error logged as: {error}");
}

//! The subcommands besides `run`: `classify`, `check` and `cameras`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::classifier::Classifier;
use crate::config::{Config, EngineKind, ModelConfig, SourceKind};
use crate::engine::RawOutput;
use crate::preprocess::Preprocessor;
use crate::source;

#[derive(Debug, Serialize)]
struct ImageResult<'a> {
    image: String,
    probabilities: std::collections::BTreeMap<&'a str, f32>,
    top: Vec<TopEntry<'a>>,
    malignant_probability: f32,
    /// Why there is no answer (`null`: answered): failed per-frame checks, out of distribution.
    abstain: Option<crate::abstain::Abstain>,
    /// Every per-frame check the image failed, whether or not it counts for a single image
    /// (`abstain.rs` says which do).
    checks_failed: Vec<crate::checks::Check>,
    /// The out-of-distribution score and its parts (`null`: none applies to this model).
    ood: Option<crate::ood::OodScore>,
    /// The refer flag at the model's operating point (`null`: none applies to this model, or
    /// the result abstains).
    refer: Option<bool>,
    referral: Option<crate::referral::Referral<'a>>,
    /// sha256 of the exact bytes given to the engine (for comparing with the Python reference).
    input_sha256: String,
    /// The engine's raw output (quantized values for an int8 model).
    raw_output: serde_json::Value,
    model: &'a str,
}

#[derive(Debug, Serialize)]
struct TopEntry<'a> {
    code: &'a str,
    name: &'a str,
    probability: f32,
    malignant: bool,
}

#[derive(Debug, Serialize)]
struct ImageFailure {
    image: String,
    error: String,
}

/// Reads and decodes an image file; the error is the message to print.
fn read_image(path: &Path) -> Result<image::RgbImage, String> {
    let bytes = crate::fsread::read(path, "image", crate::fsread::limit::IMAGE).map_err(|e| e.to_string())?;
    source::decode::decode_image(&bytes).map_err(|e| e.to_string())
}

/// `lesiond checks`: the per-frame checks on each image, one JSON line per image (`error` for
/// one that cannot be read). Returns how many could not be read.
pub fn checks(config: &crate::config::ChecksConfig, images: &[PathBuf]) -> usize {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failures = 0;
    for path in images {
        // Serialized from the structs, not through serde_json::Value: that would widen the f32
        // figures to f64 and print 0.872 as 0.871999979019165.
        #[derive(Serialize)]
        struct CheckedImage<'a> {
            image: String,
            checks: &'a crate::checks::FrameChecks,
            lesion_in_view: bool,
            ms: f64,
        }
        let line = match read_image(path) {
            Ok(image) => {
                let started = std::time::Instant::now();
                let checks = crate::checks::check_image(config, &image);
                let ms = started.elapsed().as_secs_f64() * 1e3;
                let row = CheckedImage { image: path.display().to_string(), checks: &checks, lesion_in_view: checks.lesion_in_view(), ms: (ms * 1000.0).round() / 1000.0 };
                serde_json::to_string(&row).unwrap_or_default()
            }
            Err(e) => {
                failures += 1;
                serde_json::to_string(&ImageFailure { image: path.display().to_string(), error: e }).unwrap_or_default()
            }
        };
        let _ = writeln!(out, "{line}");
    }
    failures
}

/// Classifies image files; one JSON object per image on stdout with `--json`, a line of text
/// otherwise. Returns how many images failed.
pub fn classify(model: &ModelConfig, checks: &crate::config::ChecksConfig, images: &[PathBuf], json: bool) -> Result<usize, crate::classifier::ClassifierError> {
    let mut classifier = Classifier::load(model)?;
    // On stderr, so that --json output stays one object per image.
    eprintln!("lesiond: {}", classifier.info().status);
    let mut preprocessor = Preprocessor::new(classifier.input_spec(), false);
    let labels = classifier.labels().clone();
    let model_id = classifier.info().id.clone();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failures = 0;
    for path in images {
        let outcome = read_image(path).and_then(|image| {
            // The checks a camera frame gets, bar those that need a stream (motion, focus
            // relative to an examination's sharpest frame).
            let checks = crate::checks::check_image(checks, &image);
            let input = preprocessor.run(&image);
            let sha = input.sha256();
            classifier.classify(&input).map(|(c, raw, _)| (c, raw, sha, checks)).map_err(|e| e.to_string())
        });
        let line = match outcome {
            Ok((c, raw, input_sha256, checks)) => {
                let ood = classifier.out_of_distribution(&raw);
                let abstain = crate::abstain::of_image(Some(&checks), ood.as_ref());
                let referral = if abstain.is_none() { classifier.refer(&c.probabilities) } else { None };
                let result = ImageResult {
                    image: path.display().to_string(),
                    probabilities: labels.classes.iter().map(|l| (l.code.as_str(), c.probabilities[l.index])).collect(),
                    top: c
                        .top
                        .iter()
                        .map(|&i| TopEntry {
                            code: &labels.classes[i].code,
                            name: &labels.classes[i].name,
                            probability: c.probabilities[i],
                            malignant: labels.classes[i].malignant,
                        })
                        .collect(),
                    malignant_probability: labels.classes.iter().filter(|l| l.malignant).map(|l| c.probabilities[l.index]).sum(),
                    abstain,
                    checks_failed: checks.failed.clone(),
                    ood,
                    refer: referral.as_ref().map(|r| r.refer),
                    referral,
                    input_sha256,
                    raw_output: match raw {
                        RawOutput::U8 { values, .. } => serde_json::json!(values),
                        RawOutput::F32(v) => serde_json::json!(v),
                    },
                    model: &model_id,
                };
                if json {
                    serde_json::to_string(&result).unwrap_or_default()
                } else {
                    let top: Vec<String> =
                        result.top.iter().map(|t| format!("{} {:.1}%", t.code, t.probability * 100.0)).collect();
                    let refer = match (&result.abstain, &result.referral) {
                        (Some(a), _) => format!("; no answer ({})", a.reasons.join(", ")),
                        (None, Some(r)) if r.refer => format!("; refer ({})", r.rules_fired.join(", ")),
                        _ => String::new(),
                    };
                    format!("{}: {}{refer}", result.image, top.join(", "))
                }
            }
            Err(error) => {
                failures += 1;
                tracing::error!(image = %path.display(), "{error}");
                if json {
                    serde_json::to_string(&ImageFailure { image: path.display().to_string(), error }).unwrap_or_default()
                } else {
                    format!("{}: error: {error}", path.display())
                }
            }
        };
        if writeln!(out, "{line}").is_err() {
            break; // stdout closed (a pipe to `head`)
        }
    }
    Ok(failures)
}

/// One line of `lesiond check`'s report.
fn report(ok: bool, what: &str, detail: &str) -> bool {
    println!("{} {what}: {detail}", if ok { "ok  " } else { "FAIL" });
    ok
}

/// Who else may read or change the secrets and the config file (`fsperm`): a line each, a
/// warning or, for a secret anyone may write, a failure. Returns whether nothing failed.
pub fn check_files(origin: &crate::config::ConfigOrigin, config: &Config) -> bool {
    let found = crate::fsperm::check(origin, config);
    if found.is_empty() {
        return report(true, "files", "the secrets and the config file are not open to others");
    }
    let mut ok = true;
    for f in found {
        match f.severity {
            crate::fsperm::Severity::Warning => println!("WARN files: {}", f.message),
            crate::fsperm::Severity::Error => ok &= report(false, "files", &f.message),
        }
    }
    ok
}

/// Validates a configuration, its model and its source, saying what is wrong. Returns whether
/// everything passed.
pub fn check(config: &Config) -> bool {
    let mut all_ok = report(true, "config", "parsed and valid");
    // Not a failure: the old name still works, but the file should say the new one.
    for moved in &config.moved_keys {
        println!("WARN config: {moved}");
    }
    match Classifier::load(&config.model) {
        Ok(c) => {
            let info = c.info();
            report(true, "model", &format!("{} sha256 {} T={}", info.engine, info.sha256, info.temperature));
            // Not a failure: a model without an operating point still classifies; its results
            // just carry no refer flag, and this line says so.
            report(true, "referral", &info.referral);
            report(true, "abstain", &info.ood);
            report(true, "engine", &info.status.to_string());
        }
        Err(e) => all_ok &= report(false, "model", &e.to_string()),
    }
    all_ok &= match config.source.kind {
        SourceKind::Synthetic => report(true, "source", "synthetic frames"),
        SourceKind::Directory => match source::directory::list_images(&config.source.directory.path) {
            Ok(files) if files.is_empty() => report(false, "source", &format!("{} has no image files", config.source.directory.path.display())),
            Ok(files) => report(true, "source", &format!("{} image files in {}", files.len(), config.source.directory.path.display())),
            Err(e) => report(false, "source", &e.to_string()),
        },
        SourceKind::Camera => check_camera(config),
    };
    all_ok &= check_broker(config);
    check_privacy(config);
    all_ok &= crate::viewer::check_password(&config.viewer).is_none_or(|(ok, detail)| report(ok, "viewer", &detail));
    all_ok
}

#[cfg(feature = "camera")]
fn check_camera(config: &Config) -> bool {
    match source::camera::open_camera(&config.source.camera) {
        Ok(mut camera) => match camera.frame() {
            Ok(frame) => {
                let r = frame.resolution();
                report(true, "camera", &format!("{} delivers {}x{} {}", config.source.camera.device, r.width(), r.height(), frame.source_frame_format()))
            }
            Err(e) => report(false, "camera", &format!("{} opened but gave no frame: {e}", config.source.camera.device)),
        },
        Err(e) => report(false, "camera", &format!("{e} (is it plugged in? is this user in the `video` group?)")),
    }
}

#[cfg(not(feature = "camera"))]
fn check_camera(_config: &Config) -> bool {
    report(false, "camera", &source::SourceError::NoCameraSupport.to_string())
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Warns where patient data (an assessment's examination context, a worklist answer, an
/// archived image) would travel unencrypted to another machine. Warnings, not failures: a
/// clinic may run its broker or archive on a network it trusts, but it should decide so.
fn check_privacy(config: &Config) {
    if config.mqtt.tls.is_none() && !is_loopback(&config.mqtt.host) {
        println!(
            "WARN privacy: assessments carry the examination context (patient id, name, birth date) over MQTT to {} without TLS: configure [mqtt.tls]",
            config.mqtt.host
        );
    }
    let dicom = &config.dicom;
    if dicom.enabled && dicom.tls.is_none() && !is_loopback(&dicom.host) {
        println!("WARN privacy: images and reports with patient data go to the archive at {} without TLS: configure [dicom.tls]", dicom.host);
    }
    if let Some(w) = dicom.worklist.as_ref().filter(|w| w.tls.is_none() && !is_loopback(&w.host)) {
        println!("WARN privacy: worklist answers (patient id, name) come from {} without TLS: configure [dicom.worklist.tls]", w.host);
    }
}

/// `[dicom]`: a C-ECHO to the archive (and to the worklist provider), which proves the address,
/// the AE titles and TLS, not just a port.
pub async fn check_archive(config: &Config) -> bool {
    let mut ok = true;
    if config.dicom.enabled {
        let peer = crate::archive::peer(&config.dicom);
        let target = format!("{}@{}:{}", peer.called_ae, peer.host, peer.port);
        ok &= match crate::archive::association::echo_peer(&peer).await {
            Ok(()) => report(true, "dicom", &format!("the archive {target} answers C-ECHO (calling AE {})", peer.calling_ae)),
            Err(e) => report(false, "dicom", &format!("C-ECHO to the archive {target}: {e}")),
        };
    }
    if let Some(peer) = crate::archive::worklist_peer(&config.dicom) {
        let target = format!("{}@{}:{}", peer.called_ae, peer.host, peer.port);
        ok &= match crate::archive::association::echo_peer(&peer).await {
            Ok(()) => report(true, "worklist", &format!("the worklist provider {target} answers C-ECHO")),
            Err(e) => report(false, "worklist", &format!("C-ECHO to the worklist provider {target}: {e}")),
        };
    }
    ok
}

/// A plain TCP connect to the broker: enough to catch a wrong host or port or a firewall.
fn check_broker(config: &Config) -> bool {
    use std::net::ToSocketAddrs;
    let target = format!("{}:{}", config.mqtt.host, config.mqtt.port);
    let addrs = match target.to_socket_addrs() {
        Ok(a) => a.collect::<Vec<_>>(),
        Err(e) => return report(false, "mqtt", &format!("cannot resolve {target}: {e}")),
    };
    for addr in &addrs {
        if std::net::TcpStream::connect_timeout(addr, std::time::Duration::from_secs(3)).is_ok() {
            return report(true, "mqtt", &format!("broker reachable at {target}"));
        }
    }
    report(false, "mqtt", &format!("nothing accepts connections at {target} (the daemon would keep retrying)"))
}

/// Lists the video devices nokhwa sees.
pub fn cameras() -> Result<(), source::SourceError> {
    #[cfg(feature = "camera")]
    {
        let found = source::camera::list_cameras()?;
        if found.is_empty() {
            println!("no video devices found (is the dermatoscope plugged in? is this user in the `video` group?)");
        }
        for c in found {
            println!("{}\t{}\t{}", c.index, c.name, c.description);
        }
        Ok(())
    }
    #[cfg(not(feature = "camera"))]
    Err(source::SourceError::NoCameraSupport)
}

/// `--engine`: the config's engine names.
pub fn parse_engine(name: &str) -> Result<EngineKind, String> {
    match name {
        "tflite" => Ok(EngineKind::Tflite),
        "tract" => Ok(EngineKind::Tract),
        "ort" => Ok(EngineKind::Ort),
        other => Err(format!("unknown engine {other:?}; expected tflite, tract or ort")),
    }
}

/// The model section `classify` uses: the embedded default's, with `--model` and friends
/// replacing parts of it.
pub fn model_for_classify(base: &ModelConfig, model: Option<&Path>, labels: Option<&Path>, calibration: Option<&Path>, threads: Option<u32>) -> ModelConfig {
    let mut m = base.clone();
    if let Some(p) = model {
        m.path = p.to_path_buf();
        // A model given by hand has no calibration unless one is given too.
        m.calibration = None;
    }
    if let Some(p) = labels {
        m.labels = p.to_path_buf();
    }
    if let Some(p) = calibration {
        m.calibration = Some(p.to_path_buf());
    }
    if let Some(t) = threads {
        m.threads = t.max(1);
    }
    m
}

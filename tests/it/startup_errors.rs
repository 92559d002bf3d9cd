//! Bad input at start: a missing or wrong model and a broken config stop the daemon with a
//! clear message and a non-zero exit, before anything runs.

use crate::common::*;

fn run_with(config: &str) -> (i32, String) {
    let work = tempfile::tempdir().expect("tempdir");
    let path = write_file(work.path(), "lesiond.toml", config);
    let out = lesiond().args(["run", "--config"]).arg(&path).output().expect("run");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// A test config; these tests stop before the spool is used.
fn cfg(source: &str) -> String {
    config_text("s", free_port(), source, &std::env::temp_dir().join("lesiond-startup-errors"))
}

const SOURCE: &str = "[source]\nkind = \"synthetic\"\n";

#[test]
fn missing_model_fails_at_start() {
    let config = cfg(SOURCE).replace("models/lesion_mnv2_int8.tflite", "models/nope.tflite");
    let (code, text) = run_with(&config);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("models/nope.tflite") && text.contains("not found"), "{text}");
}

#[test]
fn a_file_that_is_not_a_model_fails_at_start() {
    let config = cfg(SOURCE).replace("models/lesion_mnv2_int8.tflite", "models/labels.json");
    let (code, text) = run_with(&config);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("cannot load model models/labels.json"), "{text}");
}

#[test]
fn wrong_shape_model_fails_at_start() {
    // A real TFLite model whose output has 5 classes, not 7 (made by training/, see fixtures).
    let config =
        cfg(SOURCE).replace("models/lesion_mnv2_int8.tflite", "tests/fixtures/five_classes.tflite");
    let (code, text) = run_with(&config);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("5 outputs") && text.contains("7 classes"), "{text}");
}

#[test]
fn a_broken_operating_point_fails_at_start() {
    // labels.json is JSON but not an operating point: a start-up error naming the file, not a
    // station that silently never refers.
    let config = cfg(SOURCE).replace("models/operating_point.json", "models/labels.json");
    let (code, text) = run_with(&config);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("operating point file models/labels.json is not valid"), "{text}");
}

#[test]
fn an_operating_point_for_another_model_is_not_applied_and_said_so() {
    // The float model is not the file the thresholds were chosen for: `lesiond check` says
    // there will be no flag (and the daemon would run without one).
    let work = tempfile::tempdir().expect("tempdir");
    let config = cfg(SOURCE).replace("models/lesion_mnv2_int8.tflite", "models/lesion_mnv2_float.tflite");
    let path = write_file(work.path(), "lesiond.toml", &config);
    let out = lesiond().args(["check", "--config"]).arg(&path).output().expect("check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("referral: models/operating_point.json was chosen for the model with sha256"), "{text}");
    assert!(text.contains("results carry no refer flag"), "{text}");
    assert!(text.contains("abstain: models/ood.json was fitted for the model with sha256"), "{text}");
    assert!(text.contains("results never abstain as out of distribution"), "{text}");
}

#[test]
fn a_broken_out_of_distribution_file_fails_at_start() {
    let config = cfg(SOURCE).replace("models/ood.json", "models/labels.json");
    let (code, text) = run_with(&config);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("models/labels.json is not a valid out-of-distribution file"), "{text}");
}

#[test]
fn a_model_without_the_features_output_still_classifies_and_says_it_cannot_abstain() {
    // Like the exports before the score: logits only. The score file is made for this file
    // (its sha256), so what is missing is the output the score reads (the feature map).
    use sha2::Digest;
    let work = tempfile::tempdir().expect("tempdir");
    let model = repo().join("tests/fixtures/logits_only.tflite");
    let sha = hex::encode(sha2::Sha256::digest(std::fs::read(&model).expect("fixture")));
    let mut ood: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("models/ood.json")).expect("ood.json")).expect("JSON");
    ood["model_sha256"] = serde_json::Value::String(sha);
    let ood_path = write_file(work.path(), "ood.json", &ood.to_string());
    let config = cfg(SOURCE)
        .replace("models/lesion_mnv2_int8.tflite", "tests/fixtures/logits_only.tflite")
        .replace("models/ood.json", ood_path.to_str().expect("utf-8 path"));
    let path = write_file(work.path(), "lesiond.toml", &config);
    let out = lesiond().args(["check", "--config"]).arg(&path).output().expect("check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ok   model:"), "{text}");
    assert!(text.contains("needs 640 values from the last block's feature map (third output), this model gives 0"), "{text}");
    let image = generated_images(work.path(), 7, 1, 320, 240).into_iter().next().expect("an image");
    let out = lesiond()
        .args(["classify", "--json", "--model", "tests/fixtures/logits_only.tflite"])
        .arg(&image)
        .output()
        .expect("classify");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON line");
    assert!(row["ood"].is_null() && row["probabilities"].as_object().is_some_and(|p| p.len() == 7), "{row}");
}

#[test]
fn broken_config_fails_with_a_message_naming_the_key() {
    let (code, text) = run_with(&cfg(SOURCE).replace("[mqtt]", "[mqtt]\nhots = \"x\""));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("hots"), "{text}");
    let (code, text) = run_with(&cfg(SOURCE).replace("threads = 1", "threads = \"many\""));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("threads"), "{text}");
    let (code, text) = run_with("this is not toml [");
    assert_eq!(code, 2, "{text}");
}

#[test]
fn missing_source_folder_fails_at_start() {
    let source = "[source]\nkind = \"directory\"\n\n[source.directory]\npath = \"/nonexistent/captures\"\n";
    let (code, text) = run_with(&cfg(source));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("/nonexistent/captures"), "{text}");
}

#[test]
fn check_reports_what_is_wrong() {
    let work = tempfile::tempdir().expect("tempdir");
    let config = cfg(SOURCE).replace("models/lesion_mnv2_int8.tflite", "models/nope.tflite");
    let path = write_file(work.path(), "c.toml", &config);
    let out = lesiond().args(["check", "--config"]).arg(&path).output().expect("check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("FAIL model") && text.contains("FAIL mqtt") && text.contains("ok   source"), "{text}");
}

#[test]
fn check_reports_what_the_engine_runs() {
    let work = tempfile::tempdir().expect("tempdir");
    let path = write_file(work.path(), "c.toml", &cfg(SOURCE));
    let out = lesiond().args(["check", "--config"]).arg(&path).output().expect("check");
    let text = String::from_utf8_lossy(&out.stdout);
    // From the engine itself: the library's TfLiteVersion(), threads, the delegate, one timed
    // invoke (the test build has no `xnnpack` feature; on x86_64 it links TF Lite 2.6).
    let line = text.lines().find(|l| l.starts_with("ok   engine: ")).unwrap_or_else(|| panic!("no engine line: {text}"));
    assert!(line.contains("engine tflite, TF Lite 2.") && line.contains(", 1 thread, XNNPACK off, warm-up invoke "), "{line}");
    if cfg!(target_arch = "x86_64") {
        assert!(line.contains("TF Lite 2.6.0"), "{line}");
    }
}

fn run_with_env(config: &str, env: &[(&str, &str)]) -> (i32, String) {
    let work = tempfile::tempdir().expect("tempdir");
    let path = write_file(work.path(), "lesiond.toml", config);
    let out = lesiond().args(["run", "--config"]).arg(&path).envs(env.iter().copied()).output().expect("run");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_station_screen_on_the_network_without_a_password_refuses_to_start() {
    let (code, text) = run_with_env(&cfg(SOURCE), &[("LESIOND_VIEWER__LISTEN", "0.0.0.0:0")]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("viewer.listen") && text.contains("viewer.token_file"), "{text}");
}

#[test]
fn a_busy_screen_port_is_a_clear_start_up_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, text) = run_with_env(&cfg(SOURCE), &[("LESIOND_VIEWER__LISTEN", &addr)]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&format!("cannot listen on {addr}")) && !text.contains("panicked"), "{text}");
}

#[test]
fn an_unreadable_screen_password_file_is_a_clear_start_up_error() {
    let (code, text) = run_with_env(&cfg(SOURCE), &[("LESIOND_VIEWER__TOKEN_FILE", "/nonexistent/viewer-token")]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("viewer.token_file /nonexistent/viewer-token"), "{text}");
}

/// Caps the address space at 2 GiB: a file read whole (a 4 GiB labels file, /dev/zero) fails the
/// test instead of taking the host's memory.
fn bounded(cmd: &mut std::process::Command) -> (i32, String) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 2 << 30, rlim_max: 2 << 30 };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = std::time::Instant::now();
    let out = cmd.output().expect("run");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "took {:?}: {text}", started.elapsed());
    (out.status.code().unwrap_or(-1), text)
}

fn run_bounded(config: &str, env: &[(&str, &str)]) -> (i32, String) {
    let work = tempfile::tempdir().expect("tempdir");
    let path = write_file(work.path(), "lesiond.toml", config);
    bounded(lesiond().args(["run", "--config"]).arg(&path).envs(env.iter().copied()))
}

fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

#[test]
fn a_device_as_a_password_file_is_refused_without_reading_it() {
    // /dev/zero read whole ran the host out of memory (24 GB).
    let (code, text) = run_bounded(&cfg(SOURCE), &[("LESIOND_VIEWER__TOKEN_FILE", "/dev/zero")]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("viewer.token_file /dev/zero") && text.contains("character device") && text.contains("4 KiB"), "{text}");
    let env = [("LESIOND_MQTT__USERNAME", "u"), ("LESIOND_MQTT__PASSWORD_FILE", "/dev/zero")];
    let (code, text) = run_bounded(&cfg(SOURCE), &env);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("/dev/zero") && text.contains("character device") && text.contains("4 KiB"), "{text}");
}

#[test]
fn a_model_path_that_is_a_directory_or_a_fifo_says_what_it_is() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("model.tflite");
    std::fs::create_dir(&dir).expect("mkdir");
    let config = cfg(SOURCE).replace("models/lesion_mnv2_int8.tflite", &dir.display().to_string());
    let (code, text) = run_bounded(&config, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&dir.display().to_string()) && text.contains("is a directory") && text.contains("256 MiB"), "{text}");
    let fifo = work.path().join("fifo.tflite");
    mkfifo(&fifo);
    let config = cfg(SOURCE).replace("models/lesion_mnv2_int8.tflite", &fifo.display().to_string());
    let (code, text) = run_bounded(&config, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&fifo.display().to_string()) && text.contains("is a FIFO"), "{text}");
}

#[test]
fn oversized_labels_and_config_files_are_refused_before_reading() {
    let work = tempfile::tempdir().expect("tempdir");
    // Sparse: 4 GiB claimed, no disk used.
    let labels = work.path().join("labels.json");
    std::fs::File::create(&labels).and_then(|f| f.set_len(4 << 30)).expect("sparse");
    let config = cfg(SOURCE).replace("models/labels.json", &labels.display().to_string());
    let (code, text) = run_bounded(&config, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&labels.display().to_string()) && text.contains("over the 1 MiB limit for a labels file"), "{text}");
    let big = work.path().join("big.toml");
    std::fs::File::create(&big).and_then(|f| f.set_len(4 << 30)).expect("sparse");
    let (code, text) = bounded(lesiond().args(["run", "--config"]).arg(&big));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains(&big.display().to_string()) && text.contains("1 MiB"), "{text}");
}

#[test]
fn a_world_writable_secret_refuses_to_start_and_check_warns_about_shared_files() {
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().expect("tempdir");
    let token = write_file(work.path(), "token", "a-long-enough-password\n");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let token_s = token.display().to_string();
    let (code, text) = run_with_env(&cfg(SOURCE), &[("LESIOND_VIEWER__TOKEN_FILE", &token_s)]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&format!("viewer.token_file {token_s} is writable by anyone (mode 0666)")), "{text}");
    assert!(!text.contains("a-long-enough-password"), "never the secret: {text}");
    // Readable by others, and a config file others may write: warnings, in `check` too.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = write_file(work.path(), "c.toml", &cfg(SOURCE));
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = lesiond().args(["check", "--config"]).arg(&config).env("LESIOND_VIEWER__TOKEN_FILE", &token_s).output().expect("check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("WARN files: viewer.token_file {token_s} is readable or writable by group or others (mode 0644)")), "{text}");
    assert!(text.contains(&format!("WARN files: config file {} is writable by group or others (mode 0666)", config.display())), "{text}");
}

#[test]
fn a_run_that_lost_results_does_not_exit_zero() {
    // Every spool write fails (a dying SD card, test-only fault): the results are lost, counted,
    // and the finished batch exits 1, not 0.
    let work = tempfile::tempdir().expect("tempdir");
    let folder = image_folder(work.path(), "imgs", 0, 2);
    let source = format!("[source]\nkind = \"directory\"\n\n[source.directory]\npath = \"{}\"\nfps = 0.0\nexit_when_done = true\n", folder.display());
    let config = config_text("s", free_port(), &source, work.path());
    let (code, text) = run_with_env(&config, &[("LESIOND_TEST_FAULT", "spool-write-error:1")]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("2 result(s) could not be written to the spool and were lost"), "{text}");
}

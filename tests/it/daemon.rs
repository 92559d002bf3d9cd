//! End-to-end: the real daemon, the real TF Lite runtime, a real mosquitto, generated
//! lesion-like JPEGs (these tests exercise the daemon, not the model; ham10000::accuracy and
//! ham10000::golden measure the model on HAM10000).

use std::time::Duration;

use crate::common::*;

fn directory_source(dir: &std::path::Path, exit_when_done: bool) -> String {
    format!(
        "[source]\nkind = \"directory\"\n\n[source.directory]\npath = \"{}\"\nfps = 0.0\nexit_when_done = {exit_when_done}\n",
        dir.display()
    )
}

const SYNTHETIC: &str = "[source]\nkind = \"synthetic\"\n\n[source.synthetic]\nfps = 5.0\nwidth = 320\nheight = 240\n";

fn sha256_file(path: &std::path::Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("read")))
}

/// A station that ran examinations leaves its last `state` retained on the broker; once it runs
/// in continuous mode (a reload, or a batch replay) there is no state, and no screen must keep
/// showing the old one.
#[test]
fn continuous_mode_clears_the_retained_state() {
    let work = tempfile::tempdir().expect("tempdir");
    let folder = work.path().join("captures");
    generated_images(&folder, 2, 2, 200, 150);
    let broker = Broker::start();
    let published = std::process::Command::new(find_program("mosquitto_pub"))
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-r", "-t", "lesiond/cs/state", "-m", r#"{"state":"assessed"}"#])
        .args(&broker.client_args)
        .status()
        .expect("mosquitto_pub");
    assert!(published.success());
    let before = Subscriber::start(&broker, "lesiond/cs/state");
    assert!(wait_until(Duration::from_secs(3), || before.on("/state").iter().any(|m| m.retained)), "the old state is retained");

    let config = write_file(work.path(), "lesiond.toml", &config_text("cs", broker.port, &directory_source(&folder, true), work.path()));
    let mut daemon = Daemon::start(&config, &[], work.path());
    let status = daemon.wait(Duration::from_secs(120)).expect("daemon exits after the last image");
    assert!(status.success(), "exit {status:?}\n{}", daemon.log_text());
    let after = Subscriber::start(&broker, "lesiond/cs/state");
    std::thread::sleep(Duration::from_millis(700));
    assert!(after.on("/state").is_empty(), "a retained state is left: {:?}", after.on("/state"));
}

#[test]
fn every_image_gives_exactly_one_well_formed_message_and_corrupt_files_are_skipped() {
    let work = tempfile::tempdir().expect("tempdir");
    let folder = work.path().join("captures");
    let images = generated_images(&folder, 1, 22, 200, 150);
    // A truncated JPEG and an empty file among the good ones.
    let good = std::fs::read(&images[0]).expect("read");
    std::fs::write(folder.join("gen_truncated.jpg"), &good[..good.len() / 3]).expect("write");
    std::fs::write(folder.join("gen_empty.jpg"), b"").expect("write");

    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "lesiond/#");
    let config = write_file(work.path(), "lesiond.toml", &config_text("batch", broker.port, &directory_source(&folder, true), work.path()));
    let mut daemon = Daemon::start(&config, &[], work.path());
    let status = daemon.wait(Duration::from_secs(180)).expect("daemon exits after the last image");
    let log = daemon.log_text();
    assert!(status.success(), "exit {status:?}\n{log}");

    assert!(wait_until(Duration::from_secs(5), || sub.on("/classification").len() >= images.len()));
    std::thread::sleep(Duration::from_millis(300));
    let results = sub.on("lesiond/batch/classification");
    assert_eq!(results.len(), images.len(), "one message per good image\n{log}");

    let model_sha = sha256_file(&repo().join("models/lesion_mnv2_int8.tflite"));
    let mut names = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for m in &results {
        assert!(!m.retained, "classifications are not retained");
        let v: serde_json::Value = serde_json::from_str(&m.payload).expect("JSON payload");
        assert_schema("classification", &v);
        assert_eq!(v["schema_version"], 3);
        assert_eq!(v["station_id"], "batch");
        assert_eq!(v["source"]["kind"], "directory");
        assert_eq!(v["model"]["sha256"], model_sha.as_str());
        // The shipped operating point is made for the shipped model: every answered result
        // carries the flag. These generated "lesions" are made up, and the model may find one out
        // of distribution: then it abstains (continuous mode has no checks) and has no flag.
        if v["abstain"].is_null() {
            assert!(v["refer"].is_boolean(), "refer flag: {v}");
            assert_eq!(v["referral"]["refer"], v["refer"]);
            assert!(v["referral"]["operating_point"].as_str().is_some_and(|s| s.starts_with("lesion_mnv2_int8@")));
        } else {
            assert_eq!(v["abstain"]["reasons"], serde_json::json!(["out_of_distribution"]), "{v}");
            assert!(v["refer"].is_null() && v["referral"].is_null(), "{v}");
        }
        assert!(v["seq"].as_u64().is_some_and(|s| s >= 1));
        assert!(v["captured_at"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(ids.insert(v["result_id"].as_str().expect("result_id").to_string()), "result ids are unique");
        let probs = v["probabilities"].as_object().expect("probabilities");
        assert_eq!(probs.len(), 7);
        let total: f64 = probs.values().filter_map(|p| p.as_f64()).sum();
        assert!((total - 1.0).abs() < 2e-3, "probabilities sum to 1, got {total}");
        let top = v["top"].as_array().expect("top");
        assert_eq!(top.len(), 3);
        assert!(top[0]["probability"].as_f64() >= top[1]["probability"].as_f64());
        assert_eq!(v["classes"].as_array().map(Vec::len), Some(7));
        for stage in ["decode", "preprocess", "queue", "inference", "postprocess", "total"] {
            assert!(v["latency_ms"][stage].as_f64().is_some_and(|ms| ms >= 0.0), "latency {stage}");
        }
        assert!(v["disclaimer"].as_str().is_some_and(|d| d.contains("not a diagnosis")));
        names.push(v["source"]["name"].as_str().expect("name").to_string());
    }
    names.sort();
    let expected: Vec<String> = images.iter().map(|p| p.file_name().expect("name").to_string_lossy().into_owned()).collect();
    assert_eq!(names, expected, "each image exactly once");

    // Corrupt inputs were skipped, logged and counted.
    assert!(log.contains("gen_truncated.jpg") && log.contains("truncated JPEG"), "{log}");
    assert!(log.contains("gen_empty.jpg") && log.contains("empty input"), "{log}");
    assert!(log.contains("skipped as corrupt 2"), "{log}");
    // Online while running, offline (retained) after the clean exit; no frames unless enabled.
    let statuses: Vec<String> = sub.on("lesiond/batch/status").into_iter().map(|m| m.payload).collect();
    let all: Vec<String> = sub.messages.lock().expect("lock").iter().map(|m| format!("{} {} {}", m.retained, m.topic, m.payload.chars().take(30).collect::<String>())).collect();
    assert_eq!(statuses.first().map(String::as_str), Some("online"), "{statuses:?}\n{all:#?}");
    assert_eq!(statuses.last().map(String::as_str), Some("offline"), "{statuses:?}");
    assert_eq!(broker.retained("lesiond/batch/status").as_deref(), Some("offline"));
    assert!(sub.on("/frame").is_empty() && sub.messages.lock().expect("lock").iter().all(|m| !m.topic.contains("/frame/")));
}

#[test]
fn status_is_online_while_running_and_offline_after_sigterm() {
    let work = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "lesiond/#");
    let config = write_file(work.path(), "lesiond.toml", &config_text("live", broker.port, SYNTHETIC, work.path()));
    let mut daemon = Daemon::start(&config, &[], work.path());
    assert!(wait_until(Duration::from_secs(20), || sub.on("live/classification").len() >= 3), "{}", daemon.log_text());
    assert_eq!(broker.retained("lesiond/live/status").as_deref(), Some("online"));

    daemon.signal("-TERM");
    let status = daemon.wait(Duration::from_secs(8)).expect("exits within a few seconds of SIGTERM");
    assert!(status.success(), "exit 0 on SIGTERM: {status:?}\n{}", daemon.log_text());
    assert_eq!(broker.retained("lesiond/live/status").as_deref(), Some("offline"));
    // Every result the daemon counted as acknowledged reached the subscriber.
    let log = daemon.log_text();
    let acked: usize = log
        .split("acknowledged ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("summary line");
    std::thread::sleep(Duration::from_millis(300));
    assert!(sub.on("live/classification").len() >= acked, "{log}");
}

#[test]
fn last_will_says_offline_when_the_daemon_is_killed() {
    let work = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start();
    let config = write_file(work.path(), "lesiond.toml", &config_text("killed", broker.port, SYNTHETIC, work.path()));
    let mut daemon = Daemon::start(&config, &[], work.path());
    assert!(
        wait_until(Duration::from_secs(20), || broker.retained("lesiond/killed/status").as_deref() == Some("online")),
        "{}",
        daemon.log_text()
    );
    daemon.signal("-KILL");
    daemon.wait(Duration::from_secs(5)).expect("killed");
    assert!(
        wait_until(Duration::from_secs(10), || broker.retained("lesiond/killed/status").as_deref() == Some("offline")),
        "the broker publishes the last will"
    );
}

#[test]
fn unreachable_broker_at_start_does_not_crash_the_daemon() {
    let work = tempfile::tempdir().expect("tempdir");
    let port = free_port(); // nothing listens here
    let config = write_file(work.path(), "lesiond.toml", &config_text("nobroker", port, SYNTHETIC, work.path()));
    let mut daemon = Daemon::start(&config, &[], work.path());
    std::thread::sleep(Duration::from_secs(4));
    assert!(daemon.child.try_wait().expect("try_wait").is_none(), "still running\n{}", daemon.log_text());
    let log = daemon.log_text();
    assert!(log.contains("cannot reach the MQTT broker"), "{log}");
    assert!(log.contains("classified"), "the pipeline keeps working: {log}");
    // And when the broker appears, results flow.
    let broker = Broker::start_on(port);
    let sub = Subscriber::start(&broker, "lesiond/#");
    assert!(
        wait_until(Duration::from_secs(40), || !sub.on("nobroker/classification").is_empty()),
        "{}",
        daemon.log_text()
    );
    daemon.signal("-TERM");
    assert!(daemon.wait(Duration::from_secs(8)).expect("exits").success());
}

#[test]
fn env_overrides_reach_the_daemon() {
    // The config names a dead port; LESIOND_MQTT__PORT points at the real broker.
    let work = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start();
    let config = write_file(work.path(), "lesiond.toml", &config_text("envtest", free_port(), SYNTHETIC, work.path()));
    let port = broker.port.to_string();
    let mut daemon = Daemon::start(&config, &[("LESIOND_MQTT__PORT", &port), ("LESIOND_STATION__ID", "fromenv")], work.path());
    assert!(
        wait_until(Duration::from_secs(20), || broker.retained("lesiond/fromenv/status").as_deref() == Some("online")),
        "{}",
        daemon.log_text()
    );
    daemon.signal("-INT");
    assert!(daemon.wait(Duration::from_secs(8)).expect("exits").success());
}

#[test]
fn sighup_reloads_the_configuration() {
    let work = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "lesiond/#");
    let config_path = work.path().join("lesiond.toml");
    std::fs::write(&config_path, config_text("reload", broker.port, SYNTHETIC, work.path())).expect("write");
    let mut daemon = Daemon::start(&config_path, &[], work.path());
    assert!(wait_until(Duration::from_secs(20), || !sub.on("reload/classification").is_empty()));

    // A broken config is rejected and the daemon keeps running the old one.
    std::fs::write(&config_path, "[station\n").expect("write");
    daemon.signal("-HUP");
    assert!(wait_until(Duration::from_secs(5), || daemon.log_text().contains("reload rejected")), "{}", daemon.log_text());
    let before = sub.on("reload/classification").len();
    assert!(wait_until(Duration::from_secs(10), || sub.on("reload/classification").len() > before));

    // A good one with a directory source takes effect. It also renames the station and turns
    // frames on: restart-only keys, which are named in the log and kept as they run (topics and
    // payloads stay consistent).
    let images = work.path().join("imgs");
    generated_images(&images, 7, 2, 200, 150);
    let source = format!("[source]\nkind = \"directory\"\n\n[source.directory]\npath = \"{}\"\n", images.display());
    let renamed = config_text("renamed", broker.port, &source, work.path()).replace("ready_timeout_secs = 2", "ready_timeout_secs = 2\npublish_frames = true");
    std::fs::write(&config_path, renamed).expect("write");
    daemon.signal("-HUP");
    assert!(
        wait_until(Duration::from_secs(20), || sub.on("reload/classification").iter().any(|m| m.payload.contains("\"kind\":\"directory\""))),
        "{}",
        daemon.log_text()
    );
    let log = daemon.log_text();
    assert!(log.contains("[station], [mqtt] changed, but those take effect only at the next restart"), "{log}");
    for m in sub.on("reload/classification") {
        let v: serde_json::Value = serde_json::from_str(&m.payload).expect("JSON");
        assert_eq!(v["station_id"], "reload", "the payload names the station its topic does");
    }
    assert!(sub.on("renamed/classification").is_empty());
    assert!(sub.messages.lock().expect("lock").iter().all(|m| !m.topic.contains("/frame/")), "publish_frames needs a restart");
    daemon.signal("-TERM");
    assert!(daemon.wait(Duration::from_secs(8)).expect("exits").success());
}

//! No result lost: broker outages, daemon restarts during an outage, a damaged spool, commands
//! and stats — against a real mosquitto.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

fn lossless_dir(folder: &std::path::Path) -> String {
    format!(
        "[source]\nkind = \"directory\"\n\n[source.directory]\npath = \"{}\"\nfps = 0.0\nexit_when_done = true\n",
        folder.display()
    )
}

/// Asserts that every result the daemon(s) logged reached the subscriber; returns
/// (sent, received, duplicates).
fn assert_none_lost(logged: &[String], sub: &Subscriber) -> (usize, usize, usize) {
    let (received, dups) = sub.result_ids();
    let missing: Vec<&String> = logged.iter().filter(|id| !received.contains(*id)).collect();
    assert!(missing.is_empty(), "{} of {} results never arrived: {:?}", missing.len(), logged.len(), &missing[..missing.len().min(5)]);
    (logged.len(), received.len(), dups)
}

#[test]
fn broker_killed_mid_stream_loses_no_result() {
    let work = tempfile::tempdir().expect("tempdir");
    let folder = image_folder(work.path(), "imgs", 0, 200);
    let mut broker = Broker::start_persistent();
    let sub = Subscriber::start_persistent(&broker, "lesiond/#", "outage-sub");
    std::thread::sleep(Duration::from_millis(1500)); // let the broker save the subscription
    let config = write_file(work.path(), "c.toml", &config_text("outage", broker.port, &lossless_dir(&folder), work.path()));
    let mut daemon = Daemon::start(&config, &[], work.path());

    assert!(wait_until(Duration::from_secs(60), || sub.on("/classification").len() >= 20), "{}", daemon.log_text());
    broker.kill9();
    std::thread::sleep(Duration::from_secs(4));
    broker.restart();

    let status = daemon.wait(Duration::from_secs(240)).expect("daemon finishes the batch");
    let log = daemon.log_text();
    assert!(status.success(), "{log}");
    assert!(log.contains("lost the MQTT broker"), "the outage happened while streaming: {log}");
    let logged = logged_result_ids(&log);
    assert_eq!(logged.len(), 200, "every frame classified");
    assert!(wait_until(Duration::from_secs(20), || sub.result_ids().0.len() >= 200));
    let (sent, received, dups) = assert_none_lost(&logged, &sub);
    eprintln!("broker outage: sent {sent}, received {received}, duplicates {dups}, lost 0");
}

#[test]
fn daemon_killed_and_restarted_during_an_outage_loses_no_result() {
    let work = tempfile::tempdir().expect("tempdir");
    let first = image_folder(work.path(), "first", 0, 200);
    // Runs 1 and 3 replay the 200 images (run 1 is killed part-way), run 2 ten others.
    let second = image_folder(work.path(), "second", 200, 10);
    let mut broker = Broker::start_persistent();
    let sub = Subscriber::start_persistent(&broker, "lesiond/#", "restart-sub");
    std::thread::sleep(Duration::from_millis(1500));
    let config = write_file(work.path(), "c.toml", &config_text("restart", broker.port, &lossless_dir(&first), work.path()));
    let mut daemon = Daemon::start(&config, &[], work.path());
    assert!(wait_until(Duration::from_secs(60), || sub.on("/classification").len() >= 10), "{}", daemon.log_text());

    // The broker dies; the daemon keeps classifying into the spool, then is killed outright.
    broker.kill9();
    std::thread::sleep(Duration::from_secs(3));
    daemon.signal("-KILL");
    daemon.wait(Duration::from_secs(5)).expect("killed");
    let mut logged = logged_result_ids(&daemon.log_text());
    let spooled = spool_entries(&work.path().join("spool")).len();
    assert!(spooled > 0, "results made during the outage are in the spool");

    // A second daemon on the same spool, still during the outage, then SIGTERM: it must keep
    // everything and exit cleanly.
    let log_dir2 = work.path().join("run2");
    std::fs::create_dir(&log_dir2).expect("mkdir");
    let mut daemon2 = Daemon::start(&config, &[("LESIOND_SOURCE__DIRECTORY__PATH", second.to_str().expect("utf8"))], &log_dir2);
    std::thread::sleep(Duration::from_secs(3));
    daemon2.signal("-TERM");
    assert!(daemon2.wait(Duration::from_secs(10)).expect("exits").success(), "{}", daemon2.log_text());
    logged.extend(logged_result_ids(&daemon2.log_text()));

    // The broker is back; a third run sends the backlog first, then its own batch, and exits
    // once everything is acknowledged.
    broker.restart();
    let log_dir3 = work.path().join("run3");
    std::fs::create_dir(&log_dir3).expect("mkdir");
    let mut daemon3 = Daemon::start(&config, &[], &log_dir3);
    let status = daemon3.wait(Duration::from_secs(120)).expect("third run finishes");
    assert!(status.success(), "{}", daemon3.log_text());
    logged.extend(logged_result_ids(&daemon3.log_text()));
    assert!(logged.len() > 200, "{} results", logged.len());
    assert_eq!(spool_entries(&work.path().join("spool")).len(), 0, "spool drained");
    wait_until(Duration::from_secs(20), || logged.iter().all(|id| sub.result_ids().0.contains(id)));
    let (sent, received, dups) = assert_none_lost(&logged, &sub);
    eprintln!("daemon killed during outage: sent {sent}, received {received}, duplicates {dups}, lost 0");
}

#[test]
fn a_damaged_spool_does_not_stop_the_daemon() {
    let work = tempfile::tempdir().expect("tempdir");
    let spool = work.path().join("spool");
    std::fs::create_dir(&spool).expect("mkdir");
    std::fs::write(spool.join("00000000000000000001.json"), b"\x00\x01garbage").expect("write");
    std::fs::write(spool.join("00000000000000000002.json.tmp"), b"{\"result_id\": \"half").expect("write");
    std::fs::write(spool.join("00000000000000000003.json"), br#"{"result_id":"from-last-run","seq":1}"#).expect("write");
    let folder = image_folder(work.path(), "imgs", 0, 3);
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "lesiond/#");
    let config = write_file(work.path(), "c.toml", &config_text("damaged", broker.port, &lossless_dir(&folder), work.path()));
    let mut daemon = Daemon::start(&config, &[], work.path());
    let status = daemon.wait(Duration::from_secs(60)).expect("finishes");
    let log = daemon.log_text();
    assert!(status.success(), "{log}");
    assert!(log.contains("damaged spool entry") && log.contains("incomplete spool entry"), "{log}");
    assert!(wait_until(Duration::from_secs(5), || sub.result_ids().0.len() == 4));
    assert!(sub.result_ids().0.contains("from-last-run"), "the good entry from the last run is sent");
}

#[test]
fn commands_pause_capture_resume_status_and_refuse_bad_input() {
    let work = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "lesiond/#");
    let source = "[source]\nkind = \"synthetic\"\n\n[source.synthetic]\nfps = 10.0\nwidth = 320\nheight = 240\n";
    let text = config_text("cmd", broker.port, source, work.path()).replace("ready_timeout_secs = 2", "ready_timeout_secs = 2\nstats_interval_secs = 1");
    let config = write_file(work.path(), "c.toml", &text);
    let mut daemon = Daemon::start(&config, &[], work.path());
    assert!(wait_until(Duration::from_secs(20), || sub.on("cmd/classification").len() >= 2), "{}", daemon.log_text());

    let reply = |name: &str| -> Option<serde_json::Value> {
        sub.on(&format!("cmd/reply/{name}")).last().map(|m| serde_json::from_str(&m.payload).expect("JSON reply"))
    };
    assert!(publish(&broker, "lesiond/cmd/cmd/pause", r#"{"request_id":"p1"}"#, &[]));
    assert!(wait_until(Duration::from_secs(5), || reply("pause").is_some()));
    assert_eq!(reply("pause").expect("reply")["request_id"], "p1");
    assert_eq!(reply("pause").expect("reply")["ok"], true);
    // Frames already queued when the command came still finish; then nothing more.
    let mut paused_at = sub.on("cmd/classification").len();
    let settled = wait_until(Duration::from_secs(5), || {
        std::thread::sleep(Duration::from_millis(700));
        let now = sub.on("cmd/classification").len();
        std::mem::replace(&mut paused_at, now) == now
    });
    assert!(settled, "classifications keep coming after pause");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sub.on("cmd/classification").len(), paused_at, "paused: nothing classified");

    assert!(publish(&broker, "lesiond/cmd/cmd/capture", r#"{"request_id":"c1"}"#, &[]));
    assert!(wait_until(Duration::from_secs(5), || sub.on("cmd/classification").len() == paused_at + 1));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(sub.on("cmd/classification").len(), paused_at + 1, "capture takes exactly one frame");

    // Bad input changes nothing and gets an error reply.
    assert!(publish(&broker, "lesiond/cmd/cmd/resume", "{not json", &[]));
    // Unknown commands are not even subscribed to (exact command topics only): no reply.
    assert!(publish(&broker, "lesiond/cmd/cmd/selfdestruct", r#"{"request_id":"x1"}"#, &[]));
    // Another station's command topic is not ours.
    assert!(publish(&broker, "lesiond/other/cmd/resume", "{}", &[]));
    // An empty message is what deleting a retained command sends: not a command.
    assert!(publish(&broker, "lesiond/cmd/cmd/resume", "", &[]));
    assert!(wait_until(Duration::from_secs(5), || reply("resume").is_some()));
    assert_eq!(reply("resume").expect("reply")["ok"], false);
    std::thread::sleep(Duration::from_secs(1));
    assert!(reply("selfdestruct").is_none(), "an unknown command topic reached the station");
    assert_eq!(sub.on("cmd/reply/resume").len(), 1, "the empty message got a reply");
    assert_eq!(sub.on("cmd/classification").len(), paused_at + 1, "still paused");

    assert!(publish(&broker, "lesiond/cmd/cmd/status", r#"{"request_id":"s1"}"#, &[]));
    assert!(wait_until(Duration::from_secs(5), || reply("status").is_some()));
    let status = reply("status").expect("reply");
    for m in sub.on("").into_iter().filter(|m| m.topic.contains("/reply/")) {
        assert_schema("reply", &serde_json::from_str(&m.payload).expect("JSON"));
    }
    assert_eq!(status["state"]["paused"], true, "{status}");
    assert_eq!(status["state"]["connected"], true);
    assert!(status["state"]["frames_classified"].as_u64().is_some_and(|n| n >= 3));

    assert!(publish(&broker, "lesiond/cmd/cmd/resume", "{}", &[]));
    assert!(wait_until(Duration::from_secs(5), || sub.on("cmd/classification").len() > paused_at + 2), "resumed");

    assert!(publish(&broker, "lesiond/cmd/cmd/reload", r#"{"request_id":"r1"}"#, &[]));
    assert!(wait_until(Duration::from_secs(10), || reply("reload").is_some()), "{}", daemon.log_text());
    assert_eq!(reply("reload").expect("reply")["ok"], true);

    // Retained stats with the counters and percentiles.
    let stats: serde_json::Value = serde_json::from_str(&broker.retained("lesiond/cmd/stats").expect("retained stats")).expect("JSON");
    for key in ["frames_captured", "frames_classified", "frames_dropped", "frames_skipped_corrupt", "queue_depth", "uptime_s", "model_id"] {
        assert!(!stats[key].is_null(), "stats.{key}: {stats}");
    }
    assert!(stats["spool"]["depth"].is_u64());
    assert_schema("stats", &stats);
    assert!(stats["latency_ms"]["inference"]["p95"].as_f64().is_some_and(|p| p > 0.0), "{stats}");
    // What runs, as the engine reports it (the test build has no `xnnpack` feature; on x86_64
    // it links TF Lite 2.6).
    let engine = &stats["engine"];
    assert_eq!(engine["engine"], "tflite", "{stats}");
    assert!(engine["library"].as_str().is_some_and(|l| l.starts_with("TF Lite 2.")), "{stats}");
    if cfg!(target_arch = "x86_64") {
        assert_eq!(engine["library"], "TF Lite 2.6.0", "{stats}");
    }
    assert_eq!(engine["xnnpack"], serde_json::json!({"requested": false, "applied": false}), "{stats}");
    assert!(engine["warmup_invoke_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{stats}");
    // The status reply (asked before the reload above, which loads the model again and times a
    // new warm-up invoke) says the same, but for that time.
    for key in ["engine", "library", "threads", "xnnpack"] {
        assert_eq!(status["state"]["engine"][key], engine[key], "the status reply: {status}");
    }
    daemon.signal("-TERM");
    assert!(daemon.wait(Duration::from_secs(8)).expect("exits").success());
}

#[test]
fn mqtt_v5_works_against_mosquitto() {
    let work = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "lesiond/#");
    let source = "[source]\nkind = \"synthetic\"\n\n[source.synthetic]\nfps = 5.0\n";
    let config = write_file(work.path(), "c.toml", &config_text("v5", broker.port, source, work.path()));
    let mut daemon = Daemon::start(&config, &[("LESIOND_MQTT__PROTOCOL", "v5")], work.path());
    assert!(wait_until(Duration::from_secs(20), || sub.on("v5/classification").len() >= 2), "{}", daemon.log_text());
    assert!(publish(&broker, "lesiond/v5/cmd/status", "{}", &[]));
    assert!(wait_until(Duration::from_secs(5), || !sub.on("v5/reply/status").is_empty()));
    daemon.signal("-KILL");
    daemon.wait(Duration::from_secs(5));
    assert!(wait_until(Duration::from_secs(10), || broker.retained("lesiond/v5/status").as_deref() == Some("offline")), "v5 last will");
}

/// How often the daemon's log says it lost or could not reach the broker.
fn reconnects(log: &str) -> usize {
    log.matches("lost the MQTT broker").count()
}

/// Retained messages on command topics (issue 25, attacks 2 and 3): a retained `pause`, a
/// retained 20 KiB message (over rumqttc's old 10 KiB read limit, which broke every
/// (re)connection) and, over MQTT 3.1.1, the deletion of a retained command (an empty message).
/// None of them pauses the station or costs the connection; live commands still work.
fn retained_commands_are_ignored(protocol: &str) {
    let work = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start();
    let station = format!("ret{protocol}");
    let cmd = |name: &str| format!("lesiond/{station}/cmd/{name}");
    assert!(publish(&broker, &cmd("pause"), r#"{"request_id":"retained"}"#, &["-r"]));
    let big = "x".repeat(20 * 1024);
    assert!(publish(&broker, &cmd("status"), &big, &["-r"]));
    let sub = Subscriber::start(&broker, &format!("lesiond/{station}/#"));
    let source = "[source]\nkind = \"synthetic\"\n\n[source.synthetic]\nfps = 10.0\nwidth = 320\nheight = 240\n";
    let text = config_text(&station, broker.port, source, work.path()).replace("ready_timeout_secs = 2", "ready_timeout_secs = 2\nstats_interval_secs = 1");
    let config = write_file(work.path(), "c.toml", &text);
    let mut daemon = Daemon::start(&config, &[("LESIOND_MQTT__PROTOCOL", protocol)], work.path());
    let classified = || sub.on(&format!("{station}/classification")).len();
    assert!(wait_until(Duration::from_secs(20), || classified() >= 3), "not running: {}", daemon.log_text());
    // Not paused by the retained pause: frames keep being classified.
    let before = classified();
    assert!(wait_until(Duration::from_secs(5), || classified() >= before + 5), "paused by a retained command\n{}", daemon.log_text());
    assert!(sub.on(&format!("{station}/reply/pause")).is_empty(), "the retained pause was answered");
    // Deleting the retained pause (an empty retained message, delivered live) pauses nothing.
    assert!(publish(&broker, &cmd("pause"), "", &["-r"]));
    std::thread::sleep(Duration::from_secs(1));
    let before = classified();
    assert!(wait_until(Duration::from_secs(5), || classified() >= before + 5), "paused by deleting a retained command");
    // A live 10 MiB message on a command topic is read and dropped, not the connection.
    let ten = work.path().join("ten");
    std::fs::write(&ten, vec![b'x'; 10 * 1024 * 1024]).expect("write");
    let sent = Command::new(find_program("mosquitto_pub"))
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-t", &cmd("capture"), "-f"])
        .arg(&ten)
        .status()
        .expect("mosquitto_pub");
    assert!(sent.success());
    // Live commands still work, and the connection never dropped.
    assert!(publish(&broker, &cmd("status"), r#"{"request_id":"live"}"#, &[]));
    assert!(wait_until(Duration::from_secs(5), || !sub.on(&format!("{station}/reply/status")).is_empty()), "{}", daemon.log_text());
    let log = daemon.log_text();
    assert_eq!(reconnects(&log), 0, "the connection dropped:\n{log}");
    assert_eq!(sub.on(&format!("{station}/status")).iter().filter(|m| m.payload == "offline").count(), 0, "online/offline flips");
    if protocol == "v311" {
        // Over 3.1.1 the broker sends the retained pause; it is counted and logged once.
        assert!(log.contains("ignored a retained message on a command topic"), "{log}");
        assert!(wait_until(Duration::from_secs(5), || {
            broker.retained(&format!("lesiond/{station}/stats")).and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok()).is_some_and(|s| s["commands_ignored_retained"].as_u64() >= Some(1))
        }));
    }
    daemon.signal("-TERM");
    assert!(daemon.wait(Duration::from_secs(8)).expect("exits").success());
}

#[test]
fn retained_commands_are_ignored_over_mqtt_311() {
    retained_commands_are_ignored("v311");
}

#[test]
fn retained_commands_are_ignored_over_mqtt_5() {
    retained_commands_are_ignored("v5");
}

/// Over MQTT 3.1.1 a retained message over the 16 MiB read limit costs the connection once;
/// the station then stays off its command topics instead of fetching it again at every
/// reconnect (the old code reconnected about twice a second, flipping online/offline).
#[test]
fn a_retained_message_too_large_to_read_costs_one_reconnect_not_a_storm() {
    let work = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start();
    let huge = work.path().join("huge");
    std::fs::write(&huge, vec![b'x'; 17 * 1024 * 1024]).expect("write");
    let sent = Command::new(find_program("mosquitto_pub"))
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-r", "-t", "lesiond/huge/cmd/capture", "-f"])
        .arg(&huge)
        .status()
        .expect("mosquitto_pub");
    assert!(sent.success());
    let sub = Subscriber::start(&broker, "lesiond/huge/#");
    let source = "[source]\nkind = \"synthetic\"\n\n[source.synthetic]\nfps = 10.0\nwidth = 320\nheight = 240\n";
    let config = write_file(work.path(), "c.toml", &config_text("huge", broker.port, source, work.path()));
    let mut daemon = Daemon::start(&config, &[], work.path());
    assert!(wait_until(Duration::from_secs(20), || sub.on("huge/classification").len() >= 3), "{}", daemon.log_text());
    std::thread::sleep(Duration::from_secs(6));
    let log = daemon.log_text();
    assert!(reconnects(&log) <= 1, "{} reconnects:\n{log}", reconnects(&log));
    assert!(log.contains("Commands are off"), "{log}");
    assert!(wait_until(Duration::from_secs(20), || sub.result_ids().0.len() >= 30), "results keep flowing: {:?}", sub.result_ids().0.len());
    // The one reconnect may resend what was in flight then (QoS 1's normal duplicates), no more.
    let (_, dups) = sub.result_ids();
    assert!(dups <= 2, "{dups} duplicate deliveries");
    assert!(reconnects(&daemon.log_text()) <= 1, "{}", daemon.log_text());
    daemon.signal("-TERM");
    assert!(daemon.wait(Duration::from_secs(8)).expect("exits").success());
}

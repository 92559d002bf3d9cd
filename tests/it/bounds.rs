//! Bounded input and memory, and no blocking of the MQTT link: a JPEG whose header claims
//! 60000x60000 pixels, a broker frozen for 20 s under load, and a spool whose fsync takes
//! seconds. Peak RSS is the daemon's own (VmHWM from /proc/self/status, printed in its `stopped:` line;
//! not getrusage, which keeps the test process's peak across fork + exec).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// The acceptance bound for the daemon's peak RSS.
const RSS_LIMIT_KB: u64 = 150 * 1024;

fn lossless_dir(folder: &Path) -> String {
    format!("[source]\nkind = \"directory\"\n\n[source.directory]\npath = \"{}\"\nfps = 0.0\nexit_when_done = true\n", folder.display())
}

#[test]
fn a_huge_jpeg_header_is_skipped_and_named_and_memory_stays_bounded() {
    let work = tempfile::tempdir().expect("tempdir");
    let folder = work.path().join("replay");
    // 30 camera-sized images, and the bomb in the middle of them.
    let images = generated_images(&folder, 3, 30, 640, 480);
    let bomb = jpeg_claiming(60000, 60000);
    assert!(bomb.len() < 1000, "{} bytes", bomb.len());
    std::fs::write(folder.join("gen_003_00015_bomb.jpg"), &bomb).expect("write");

    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "lesiond/#");
    let config = write_file(work.path(), "c.toml", &config_text("bomb", broker.port, &lossless_dir(&folder), work.path()));
    let started = Instant::now();
    let mut daemon = Daemon::start(&config, &[], work.path());
    let status = daemon.wait(Duration::from_secs(180)).expect("the daemon finishes the replay");
    let took = started.elapsed();
    let log = daemon.log_text();
    assert!(status.success(), "{log}");
    assert!(wait_until(Duration::from_secs(5), || sub.on("bomb/classification").len() >= images.len()));
    std::thread::sleep(Duration::from_millis(300));
    let results = sub.on("bomb/classification");
    assert_eq!(results.len(), 30, "every real image classified, the bomb not\n{log}");
    assert!(results.iter().all(|m| !m.payload.contains("_bomb.jpg")), "no result for the bomb");
    let line = log.lines().find(|l| l.contains("gen_003_00015_bomb.jpg")).unwrap_or_else(|| panic!("the bomb is named in the log\n{log}"));
    assert!(line.contains("too large") && line.contains("60000x60000"), "{line}");
    assert_eq!(summary_count(&log, "skipped as too large"), Some(1), "{log}");
    let rss = summary_count(&log, "peak RSS").expect("peak RSS in the summary");
    assert!(rss < RSS_LIMIT_KB, "peak RSS {rss} kB\n{log}");
    eprintln!("60000x60000 header among 30 images: 30 classified, 1 skipped as too large, peak RSS {:.1} MB, run {:.1} s", rss as f64 / 1024.0, took.as_secs_f64());
}

#[test]
fn a_frozen_broker_loses_no_result_and_memory_stays_bounded() {
    let work = tempfile::tempdir().expect("tempdir");
    let folder = image_folder(work.path(), "imgs", 0, 300);
    let broker = Broker::start_persistent();
    let sub = Subscriber::start_persistent(&broker, "lesiond/#", "frozen-sub");
    std::thread::sleep(Duration::from_millis(1500)); // let the broker save the subscription
    let text = config_text("frozen", broker.port, &lossless_dir(&folder), work.path())
        .replace("ready_timeout_secs = 2", "ready_timeout_secs = 2\npublish_frames = true\nstats_interval_secs = 1");
    let config = write_file(work.path(), "c.toml", &text);
    let mut daemon = Daemon::start(&config, &[], work.path());
    assert!(wait_until(Duration::from_secs(60), || sub.on("frozen/classification").len() >= 20), "{}", daemon.log_text());

    let pid = broker.pid().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().expect("kill").success());
    std::thread::sleep(Duration::from_secs(20));
    assert!(Command::new("kill").args(["-CONT", &pid]).status().expect("kill").success());

    let status = daemon.wait(Duration::from_secs(240)).expect("the daemon finishes the batch");
    let log = daemon.log_text();
    assert!(status.success(), "{log}");
    assert!(log.contains("lost the MQTT broker"), "the frozen broker was noticed while streaming\n{log}");
    let logged = logged_result_ids(&log);
    assert_eq!(logged.len(), 300, "every frame classified");
    assert!(wait_until(Duration::from_secs(30), || sub.result_ids().0.len() >= 300), "{} of 300 arrived", sub.result_ids().0.len());
    let (received, dups) = sub.result_ids();
    assert!(logged.iter().all(|id| received.contains(id)), "a result was lost");
    let rss = summary_count(&log, "peak RSS").expect("peak RSS");
    let thumbnails = summary_count(&log, "thumbnails dropped").expect("thumbnails dropped");
    let stats = summary_count(&log, "stats dropped").expect("stats dropped");
    assert!(rss < RSS_LIMIT_KB, "peak RSS {rss} kB\n{log}");
    assert!(thumbnails + stats > 0, "what the frozen broker could not take is counted\n{log}");
    // Thumbnails are QoS 0: those already written to the frozen broker's socket when the
    // connection was given up are gone without a trace; the rest are received or counted.
    let frames = sub.messages.lock().expect("lock").iter().filter(|m| m.topic.contains("/frame/")).count() as u64;
    assert!(frames + thumbnails <= 300 && thumbnails > 0, "thumbnails: {frames} received, {thumbnails} counted as dropped");
    eprintln!(
        "broker frozen 20 s during a 300-frame replay: 300 of 300 results arrived ({dups} duplicates), peak RSS {:.1} MB, thumbnails published {frames} / dropped {thumbnails}, stats dropped {stats}",
        rss as f64 / 1024.0
    );
}

#[test]
fn a_slow_spool_does_not_stall_the_mqtt_link() {
    let work = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "lesiond/#");
    let source = "[source]\nkind = \"synthetic\"\n\n[source.synthetic]\nfps = 5.0\nwidth = 320\nheight = 240\n";
    let text = config_text("slow", broker.port, source, work.path()).replace("fsync = false", "fsync = true");
    let config = write_file(work.path(), "c.toml", &text);
    // Every fsync takes 10 s: longer than 1.5 x keep_alive (5 s), after which mosquitto drops a
    // client it has not heard from.
    let mut daemon = Daemon::start(&config, &[("LESIOND_TEST_FAULT", "spool-fsync-delay-ms:10000")], work.path());
    assert!(wait_until(Duration::from_secs(20), || broker.retained("lesiond/slow/status").as_deref() == Some("online")), "{}", daemon.log_text());
    // Commands are answered at once throughout, although the spool is always in an fsync.
    let mut worst = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let asked = Instant::now();
        assert!(publish(&broker, "lesiond/slow/cmd/status", &format!(r#"{{"request_id":"s{n}"}}"#), &[]));
        let answered = wait_until(Duration::from_secs(15), || {
            sub.on("slow/reply/status").iter().any(|m| m.payload.contains(&format!("\"s{n}\"")))
        });
        assert!(answered, "status s{n} not answered\n{}", daemon.log_text());
        worst = worst.max(asked.elapsed());
        std::thread::sleep(Duration::from_millis(1500));
    }
    // Results still flow and are acknowledged (PUBACK) while every write takes 10 s.
    let acked = sub.on("slow/classification").len();
    assert!(acked >= 2, "{acked} results\n{}", daemon.log_text());
    // Not a shutdown test: a graceful stop would wait for the queued frames' 10 s writes.
    daemon.signal("-KILL");
    daemon.wait(Duration::from_secs(5)).expect("killed");
    let log = daemon.log_text();
    let broker_log = std::fs::read_to_string(broker.dir.path().join("mosquitto.log")).unwrap_or_default();
    assert!(!log.contains("lost the MQTT broker"), "the link dropped\n{log}");
    assert!(!broker_log.contains("exceeded timeout"), "the broker timed the client out\n{broker_log}");
    assert!(worst < Duration::from_secs(3), "a command waited {worst:?} for the spool");
    eprintln!("spool fsync +10 s: {n} status commands answered, slowest {:.2} s; {acked} results published; no disconnect", worst.as_secs_f64());
}

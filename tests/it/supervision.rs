//! Supervision: a stage that panics, hangs or keeps failing, or a publisher that dies, makes the
//! daemon log the cause and exit non-zero (so systemd's Restart=on-failure restarts it) within a
//! bound, without losing a spooled result; a hang stops the watchdog pings.
//!
//! Faults are injected with the test-only `LESIOND_TEST_FAULT` hook (src/fault.rs).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

/// From the fault's log line to the process's exit, at most: the publisher's shutdown grace
/// (4 s) plus the offline status and disconnect (3 s), with room for a loaded CI machine.
const EXIT_BOUND: Duration = Duration::from_secs(12);

fn lossless_dir(folder: &Path) -> String {
    format!("[source]\nkind = \"directory\"\n\n[source.directory]\npath = \"{}\"\nfps = 0.0\nexit_when_done = true\n", folder.display())
}

const SYNTHETIC: &str = "[source]\nkind = \"synthetic\"\n\n[source.synthetic]\nfps = 5.0\nwidth = 320\nheight = 240\n";

/// Runs the daemon until it exits on its own. Returns its exit code, its log, and the time from
/// the first log line containing `cause` to the exit.
fn run_until_exit(config: &Path, env: &[(&str, &str)], work: &Path, cause: &str) -> (Option<i32>, String, Duration) {
    let mut daemon = Daemon::start(config, env, work);
    let mut seen_at = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Ok(Some(status)) = daemon.child.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "the daemon did not exit\n{}", daemon.log_text());
        if seen_at.is_none() && daemon.log_text().contains(cause) {
            seen_at = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = daemon.log_text();
    assert!(log.contains(cause), "the log names the cause {cause:?}\n{log}");
    let took = seen_at.map_or(Duration::ZERO, |at| at.elapsed());
    (status.code(), log, took)
}

/// Every result the daemon logged as classified either reached the subscriber or is still in
/// the spool for the next start. Returns (classified, received, still spooled).
fn assert_no_result_lost(log: &str, sub: &Subscriber, spool: &Path) -> (usize, usize, usize) {
    std::thread::sleep(Duration::from_millis(500));
    let logged = logged_result_ids(log);
    let (received, _) = sub.result_ids();
    let spooled = spooled_result_ids(spool);
    let lost: Vec<&String> = logged.iter().filter(|id| !received.contains(*id) && !spooled.contains(*id)).collect();
    assert!(lost.is_empty(), "{} of {} results lost: {lost:?}\n{log}", lost.len(), logged.len());
    (logged.len(), received.len(), spooled.len())
}

fn check_fault(name: &str, fault: &str, source: impl Fn(&Path) -> String, cause: &str, extra_env: &[(&str, &str)]) -> (String, usize) {
    let work = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "lesiond/#");
    let config = write_file(work.path(), "c.toml", &config_text(name, broker.port, &source(work.path()), work.path()));
    let mut env = vec![("LESIOND_TEST_FAULT", fault)];
    env.extend_from_slice(extra_env);
    let (code, log, took) = run_until_exit(&config, &env, work.path(), cause);
    assert_eq!(code, Some(1), "non-zero exit on {fault}\n{log}");
    assert!(took <= EXIT_BOUND, "exited {took:?} after the fault was logged (bound {EXIT_BOUND:?})\n{log}");
    let (classified, received, spooled) = assert_no_result_lost(&log, &sub, &work.path().join("spool"));
    eprintln!("{fault}: exit code 1, {:.1} s after the cause was logged; classified {classified}, received {received}, still spooled {spooled}, lost 0", took.as_secs_f64());
    (log, classified)
}

#[test]
fn an_inference_panic_exits_non_zero() {
    let (log, classified) = check_fault(
        "ipanic",
        "inference-panic:6",
        |w| lossless_dir(&image_folder(w, "imgs", 0, 12)),
        "inference thread panicked: injected fault",
        &[],
    );
    assert_eq!(classified, 5, "{log}");
}

#[test]
fn a_failing_engine_exits_non_zero() {
    let (log, classified) = check_fault(
        "eerror",
        "engine-error:4",
        |w| lossless_dir(&image_folder(w, "imgs", 0, 12)),
        "the engine failed on 5 frames in a row",
        &[],
    );
    assert_eq!(classified, 3, "{log}");
}

#[test]
fn a_capture_panic_exits_non_zero_after_classifying_what_was_queued() {
    let (log, classified) = check_fault(
        "cpanic",
        "capture-panic:5",
        |w| lossless_dir(&image_folder(w, "imgs", 0, 12)),
        "capture thread panicked: injected fault",
        &[],
    );
    // The five frames the source delivered were all classified and spooled before the exit.
    assert_eq!(classified, 5, "{log}");
}

#[test]
fn a_dead_publisher_exits_non_zero_and_leaves_results_in_the_spool() {
    let (log, classified) = check_fault("pdead", "publisher-panic:3", |_| SYNTHETIC.to_string(), "publisher task panicked: injected fault", &[]);
    assert!(classified >= 3, "{log}");
}

#[test]
fn a_hung_engine_stops_the_watchdog_and_exits_non_zero() {
    let work = tempfile::tempdir().expect("tempdir");
    let notify = NotifySocket::bind(work.path());
    let socket = notify.path.to_str().expect("utf8").to_string();
    let pid_free_env: &[(&str, &str)] = &[
        ("NOTIFY_SOCKET", &socket),
        // 1.5 s watchdog; a stage counts as stuck for the exit after 5 s.
        ("WATCHDOG_USEC", "1500000"),
        ("LESIOND_PIPELINE__STALL_TIMEOUT_SECS", "5"),
    ];
    let (log, classified) = check_fault("hang", "inference-hang:15", |_| SYNTHETIC.to_string(), "the inference thread made no progress", pid_free_env);
    assert_eq!(classified, 14, "{log}");
    let pings = notify.watchdog_pings();
    assert!(pings.len() >= 3, "the watchdog was fed while inference ran: {} pings\n{log}", pings.len());
    let stopping = notify.received.lock().expect("lock").iter().find(|(_, t)| t.contains("STOPPING=1")).map(|(at, _)| *at).expect("STOPPING=1");
    let last = *pings.last().expect("a ping");
    // The daemon gave up 5 s after the last beat; the pings stopped 1.5 s after it (checked
    // every 0.5 s), so the last 3 s or so before STOPPING had none.
    let silent = stopping.duration_since(last);
    assert!(silent >= Duration::from_millis(2500), "the watchdog was still fed {silent:?} before the daemon gave up\n{log}");
    assert!(log.contains("withholding the watchdog ping"), "{log}");
    let received = notify.received.lock().expect("lock").iter().map(|(_, t)| t.clone()).collect::<Vec<_>>();
    assert!(received.iter().any(|t| t.contains("READY=1")) && received.iter().any(|t| t.contains("STOPPING=1")), "{received:?}");
    eprintln!("hang: {} watchdog pings before the hang, none in the last {:.1} s before it gave up", pings.len(), silent.as_secs_f64());
}

#[test]
fn a_reload_feeds_the_watchdog_while_it_loads_the_model() {
    let work = tempfile::tempdir().expect("tempdir");
    let notify = NotifySocket::bind(work.path());
    let socket = notify.path.to_str().expect("utf8").to_string();
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "lesiond/#");
    let config = write_file(work.path(), "c.toml", &config_text("reloadwd", broker.port, SYNTHETIC, work.path()));
    // A 1.2 s watchdog, and a reload whose model load takes 4 s.
    let env = [("NOTIFY_SOCKET", socket.as_str()), ("WATCHDOG_USEC", "1200000"), ("LESIOND_TEST_FAULT", "reload-model-delay-ms:4000")];
    let mut daemon = Daemon::start(&config, &env, work.path());
    assert!(wait_until(Duration::from_secs(20), || sub.on("reloadwd/classification").len() >= 2), "{}", daemon.log_text());
    daemon.signal("-HUP");
    assert!(wait_until(Duration::from_secs(20), || daemon.log_text().contains("configuration reloaded")), "{}", daemon.log_text());
    let received = notify.received.lock().expect("lock").clone();
    let at = |what: &str| received.iter().rev().find(|(_, t)| t.contains(what)).map(|(at, _)| *at);
    let reloading = at("RELOADING=1").expect("RELOADING=1");
    let ready = received.iter().find(|(when, t)| *when > reloading && t.contains("READY=1")).map(|(at, _)| *at).expect("READY=1 after the reload");
    assert!(ready.duration_since(reloading) >= Duration::from_secs(4), "the reload took the injected 4 s");
    let pings: Vec<Instant> = notify.watchdog_pings().into_iter().filter(|p| *p > reloading && *p < ready).collect();
    let mut gaps = vec![pings.first().map_or(Duration::MAX, |p| p.duration_since(reloading))];
    gaps.extend(pings.windows(2).map(|w| w[1].duration_since(w[0])));
    gaps.push(pings.last().map_or(Duration::MAX, |p| ready.duration_since(*p)));
    let worst = gaps.iter().max().copied().unwrap_or(Duration::MAX);
    assert!(worst < Duration::from_millis(1200), "the watchdog went {worst:?} without a ping during the reload ({} pings)", pings.len());
    daemon.signal("-TERM");
    assert!(daemon.wait(Duration::from_secs(10)).expect("exits").success());
    eprintln!("reload with a 4 s model load: {} watchdog pings during it, longest gap {:.2} s (watchdog 1.2 s)", pings.len(), worst.as_secs_f64());
}

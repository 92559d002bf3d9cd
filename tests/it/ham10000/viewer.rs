//! The station screen in a real browser: the daemon replays a generated examination video at
//! 15 fps (the production configuration, a real mosquitto), Debian's headless chromium opens
//! the page (selenium + Debian's chromedriver: `tests/viewer_browser.py`, venv
//! `target/browser-venv` from `tests/requirements-browser.txt`, made by `scripts/test.sh`), and
//! what the page shows is read from its DOM.
//!
//! Asserts: the state shown goes idle -> hold steady / assessing (with its progress) ->
//! assessed, live; the assessment then shown is one published on MQTT, with the same
//! `assessment_id` and top class; the model and "decision support, not a diagnosis" are on
//! the page; stopping the daemon brings up the "Station offline" banner, and starting it again
//! on the same address takes it away (the browser reconnects by itself). Saves screenshots of
//! the states into `docs/screenshots/` (the README shows one). Needs the data set for the
//! video (like tests/it/ham10000/examination.rs, whose video it shares).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

/// The Python with selenium: `LESIOND_BROWSER_PYTHON`, else the venv `scripts/test.sh` makes.
fn browser_python() -> PathBuf {
    std::env::var_os("LESIOND_BROWSER_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo().join("target/browser-venv/bin/python"))
}

/// The browser driver, stopped with SIGTERM (it then quits chromium) if the test fails early.
struct Browser(std::process::Child);

impl Drop for Browser {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        if !wait_until(Duration::from_secs(10), || self.0.try_wait().ok().flatten().is_some()) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

#[test]
fn the_screen_shows_the_examination_live_and_the_assessment_published_on_mqtt() {
    let _heavy = heavy();
    let frames = exam_video().join("frames");
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "lesiond/#");
    let work = tempfile::tempdir().expect("tempdir");
    let port = broker.port.to_string();
    let spool = work.path().join("spool");
    let env = [
        ("LESIOND_SOURCE__KIND", "directory"),
        ("LESIOND_SOURCE__DIRECTORY__PATH", frames.to_str().expect("utf-8 path")),
        ("LESIOND_SOURCE__DIRECTORY__FPS", "15"),
        ("LESIOND_MQTT__PORT", port.as_str()),
        ("LESIOND_SPOOL__DIR", spool.to_str().expect("utf-8 path")),
    ];
    let mut daemon = Daemon::start(&repo().join("config/lesiond.toml"), &env, work.path());
    assert!(wait_until(Duration::from_secs(60), || viewer_addr(&daemon.log_text()).is_some()), "no screen: {}", daemon.log_text());
    let url = format!("http://{}/", viewer_addr(&daemon.log_text()).expect("address"));

    let shots = repo().join("docs/screenshots");
    let browser = Command::new(browser_python())
        .arg(repo().join("tests/viewer_browser.py"))
        .arg(&url)
        .arg(&shots)
        .arg("120")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} (scripts/test.sh makes it; or set LESIOND_BROWSER_PYTHON): {e}", browser_python().display()));
    let mut browser = Browser(browser);
    let mut lines = BufReader::new(browser.0.stdout.take().expect("stdout")).lines();
    let seen: Value = serde_json::from_str(&lines.next().expect("the browser said nothing").expect("read")).expect("JSON");
    eprintln!("the page showed: {}", serde_json::to_string_pretty(&seen).unwrap_or_default());

    // The states, in the order shown: idle, then hold steady or assessing, then assessed.
    let states: Vec<&str> = seen["transitions"].as_array().expect("transitions").iter().map(|t| t["state"].as_str().unwrap_or("")).collect();
    let idle = states.iter().position(|s| *s == "idle").expect("never idle");
    let examining = idle + states[idle..].iter().position(|s| *s == "hold_steady" || *s == "assessing").expect("never hold steady / assessing after idle");
    assert!(states[examining..].contains(&"assessed"), "never assessed after examining: {states:?}");
    assert!(
        seen["transitions"].as_array().expect("transitions").iter().any(|t| t["state"] == "assessing" && t["text"] == "Assessing…" && t["progress"].is_string()),
        "no \"Assessing…\" with its progress: {seen}"
    );
    assert!(seen["transitions"].as_array().expect("t").iter().any(|t| t["state"] == "assessed" && t["text"] == "Assessed"), "{seen}");
    let shown = &seen["shown"];
    assert!(shown.is_object(), "no live assessment with an answer shown: {seen}");
    let id = shown["assessment_id"].as_str().expect("id");
    assert_ne!(Some(id), seen["initial_assessment_id"].as_str(), "the assessment shown was not a live one");

    // The same assessment on MQTT: same id, same top class (by code and name).
    let published = || sub.on("/assessment").into_iter().filter_map(|m| serde_json::from_str::<Value>(&m.payload).ok()).find(|a| a["assessment_id"] == id);
    assert!(wait_until(Duration::from_secs(10), || published().is_some()), "assessment {id} shown but not published on MQTT");
    let a = published().expect("published");
    let top = &a["top"][0];
    assert_eq!(shown["top_code"], top["code"], "top class shown vs published: {a}");
    let name = top["name"].as_str().expect("name");
    assert!(shown["top_text"].as_str().is_some_and(|t| t.starts_with(name)), "shown {} vs published {name}", shown["top_text"]);
    let model = a["model"]["id"].as_str().expect("model id");
    assert!(shown["model"].as_str().is_some_and(|m| m.contains(model)), "model shown {} vs {model}", shown["model"]);
    // The one disclaimer, the same as in every published result.
    assert_eq!(shown["disclaimer"], a["disclaimer"]);
    assert_eq!(shown["disclaimer"], lesiond::report::DISCLAIMER);
    // The flag shown is the published one, in words.
    let refer_text = shown["refer_text"].as_str().expect("refer text");
    match a["refer"].as_bool() {
        Some(true) => assert!(refer_text.starts_with("⚠ REFER"), "published refer, shown {refer_text:?}"),
        Some(false) => assert!(refer_text.starts_with("○ Not flagged"), "published no refer, shown {refer_text:?}"),
        None => panic!("an answered assessment without a refer flag: {a}"),
    }
    assert_eq!(shown["offline_banner"], false);

    // The station goes away: the page says so (and would reconnect by itself).
    daemon.signal("-TERM");
    assert!(daemon.wait(Duration::from_secs(30)).is_some_and(|s| s.success()), "{}", daemon.log_text());
    let after: Value = serde_json::from_str(&lines.next().expect("the browser said nothing more").expect("read")).expect("JSON");
    assert_eq!(after["offline"]["offline_banner"], true, "no offline banner: {after}");
    assert_eq!(after["offline"]["text"], "Station offline", "{after}");

    // The station comes back on the same address: the page reconnects by itself.
    let addr = viewer_addr(&daemon.log_text()).expect("address");
    let restarted = [env.as_slice(), &[("LESIOND_VIEWER__LISTEN", addr.as_str())]].concat();
    let again = tempfile::tempdir().expect("tempdir");
    let _daemon = Daemon::start(&repo().join("config/lesiond.toml"), &restarted, again.path());
    let back: Value = serde_json::from_str(&lines.next().expect("the browser said nothing more").expect("read")).expect("JSON");
    assert_eq!(back["reconnected"]["offline_banner"], false, "still offline after a restart: {back}");
    assert_eq!(back["reconnected"]["connection"], "open", "{back}");
    assert!(browser.0.wait().expect("browser").success());
    for name in ["viewer-idle.png", "viewer-assessing.png", "viewer-assessed.png"] {
        let size = std::fs::metadata(shots.join(name)).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "{name}: {size} bytes");
    }
}

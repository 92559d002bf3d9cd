//! The context command completed from a Modality Worklist, through the daemon: a real
//! mosquitto, dcmtk's wlmscpfs as the worklist, `lesiond run` with `[dicom.worklist]`.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::dicom::{wl_dump, Worklist};
use crate::common::*;

const STUDY_UID: &str = "1.2.826.0.1.3680043.8.498.4711";

/// The context the daemon keeps on disk (`<context dir>/current.json`), if any.
fn kept_context(context_dir: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(context_dir.join("current.json")).ok()?;
    let kept: Value = serde_json::from_str(&text).expect("current.json is JSON");
    Some(kept["context"].clone())
}

/// Publishes a context command and waits for its reply.
fn context_command(broker: &Broker, sub: &Subscriber, station: &str, request_id: &str, fields: &str) -> Value {
    let payload = format!(r#"{{"request_id":"{request_id}",{fields}}}"#);
    assert!(publish(broker, &format!("lesiond/{station}/cmd/context"), &payload, &[]), "publish");
    let topic = format!("{station}/reply/context");
    let reply = || {
        sub.on(&topic).into_iter().map(|m| serde_json::from_str::<Value>(&m.payload).expect("JSON reply")).find(|v| v["request_id"] == request_id)
    };
    // A worklist query takes a connection and a C-FIND: seconds at most.
    assert!(wait_until(Duration::from_secs(20), || reply().is_some()), "no reply to {request_id}");
    reply().expect("reply")
}

#[test]
fn worklist_completes_a_context_from_its_accession_number() {
    let wl = Worklist::start(&[
        wl_dump("ACC-1", "WL-123", "Doe^Jane", STUDY_UID),
        // Two scheduled procedures under one accession number: a broken worklist, and no
        // guessing which patient it is.
        wl_dump("ACC-DUP", "WL-1", "Roe^Anna", "1.2.826.0.1.3680043.8.498.1"),
        wl_dump("ACC-DUP", "WL-2", "Poe^Edgar", "1.2.826.0.1.3680043.8.498.2"),
    ]);
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "lesiond/#");
    let work = tempfile::tempdir().expect("tempdir");
    // One frame and no exit: the daemon keeps running, idle, taking commands.
    let folder = image_folder(work.path(), "captures", 0, 1);
    let source = format!("[source]\nkind = \"directory\"\n\n[source.directory]\npath = \"{}\"\nfps = 0.0\nexit_when_done = false\n", folder.display());
    // No archive: the worklist serves the context command on its own.
    let text = format!("{}\n[dicom]\nenabled = false\n\n{}", config_text("wl", broker.port, &source, work.path()), wl.section());
    let config = write_file(work.path(), "lesiond.toml", &text);
    let mut daemon = Daemon::start(&config, &[], work.path());
    assert!(wait_until(Duration::from_secs(60), || daemon.log_text().contains("ready:")), "{}", daemon.log_text());
    let context_dir = work.path().join("context");

    // Not in the worklist: refused, and nothing set.
    let reply = context_command(&broker, &sub, "wl", "unknown", r#""accession_number":"NOPE-42""#);
    assert_eq!(reply["ok"], false, "{reply}");
    assert!(reply["error"].as_str().is_some_and(|e| e.contains("no worklist entry")), "{reply}");
    assert!(kept_context(&context_dir).is_none(), "an unknown accession number set a context");

    let reply = context_command(&broker, &sub, "wl", "dup", r#""accession_number":"ACC-DUP""#);
    assert_eq!(reply["ok"], false, "{reply}");
    assert!(reply["error"].as_str().is_some_and(|e| e.contains("ambiguous")), "{reply}");
    assert!(kept_context(&context_dir).is_none(), "an ambiguous accession number set a context");

    // Found: the patient comes from the worklist, the body site from the command.
    let reply = context_command(&broker, &sub, "wl", "found", r#""accession_number":"ACC-1","body_site":"left forearm""#);
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["state"]["completed_from_worklist"], true, "{reply}");
    let kept = kept_context(&context_dir).expect("the context is kept");
    assert_eq!(kept["context_id"], reply["state"]["context_id"], "{kept}");
    assert_eq!(kept["patient_id"], "WL-123", "{kept}");
    assert_eq!(kept["patient_name"], "Doe^Jane", "{kept}");
    assert_eq!(kept["accession_number"], "ACC-1", "{kept}");
    assert_eq!(kept["study_instance_uid"], STUDY_UID, "{kept}");
    assert_eq!(kept["body_site"], "left forearm", "{kept}");

    // A failed lookup leaves the context in force as it was.
    let reply = context_command(&broker, &sub, "wl", "dup-again", r#""accession_number":"ACC-DUP""#);
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(kept_context(&context_dir).expect("still kept")["context_id"], kept["context_id"]);

    // The worklist's patient data never reach the log.
    let log = daemon.log_text();
    for secret in ["WL-123", "Doe", "Jane", "WL-1", "Roe", "Poe"] {
        assert!(!log.contains(secret), "the log names {secret:?}:\n{log}");
    }
    daemon.signal("-TERM");
    assert!(daemon.wait(Duration::from_secs(30)).is_some_and(|s| s.success()), "{}", daemon.log_text());
}

//! The messages against their published schemas (`docs/schemas/*.json`): every example the
//! golden tests build (`golden.rs`) is validated here too, and so are a status and the replies;
//! each schema's `schema_version` is the type's constant. A field added to a type and not to
//! its schema (every schema says `additionalProperties: false`), or a schema version bumped on
//! one side only, fails here.

use std::path::PathBuf;

use serde_json::Value;

use super::reply::Reply;
use super::status::StatusPayload;

fn schema(name: &str) -> Value {
    let read = |n: &str| -> Value {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("docs/schemas/{n}.schema.json"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).expect("schema JSON")
    };
    let mut schema = read(name);
    if name == "reply" {
        // The reply's `state` is a status or a context's id: the status inlined (no resolver,
        // no network).
        schema["properties"]["state"]["anyOf"][0] = read("stats");
    }
    schema
}

/// Panics with every violation when `json` does not match `docs/schemas/<name>.schema.json`.
pub(super) fn assert_valid(name: &str, json: &[u8]) {
    let value: Value = serde_json::from_slice(json).expect("a message is JSON");
    let schema = schema(name);
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let errors: Vec<String> = validator.iter_errors(&value).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{name} message does not match its schema: {errors:?}\n{value}");
}

#[test]
fn each_schema_names_its_types_version() {
    for (name, version) in [
        ("classification", super::classification::SCHEMA_VERSION),
        ("assessment", super::assessment::SCHEMA_VERSION),
        ("state", super::state::SCHEMA_VERSION),
        ("stats", super::status::SCHEMA_VERSION),
        ("reply", super::reply::SCHEMA_VERSION),
    ] {
        assert_eq!(schema(name)["properties"]["schema_version"]["const"], Value::from(version), "{name}");
    }
}

fn status() -> StatusPayload<'static> {
    StatusPayload {
        schema_version: super::status::SCHEMA_VERSION,
        station_id: "station-7",
        connected: true,
        paused: false,
        spool: crate::spool::SpoolStats::default(),
        stats: crate::stats::Stats::default().snapshot(),
    }
}

#[test]
fn status_and_replies_match_their_schemas() {
    assert_valid("stats", &serde_json::to_vec(&status()).expect("serializes"));
    let answered = Reply::new("status", Some("req-1".into()), Ok(Some(status())));
    assert_valid("reply", &serde_json::to_vec(&answered).expect("serializes"));
    let done = Reply::<()>::new("pause", None, Ok(None));
    assert_valid("reply", &serde_json::to_vec(&done).expect("serializes"));
    let refused = Reply::<()>::new("reload", Some("r".into()), Err("the model file is missing".into()));
    assert_valid("reply", &serde_json::to_vec(&refused).expect("serializes"));
    let context = super::context::ContextReply { context_id: "9d2f5c0e-5b1a-4f43-a3f4-2f0c8e6f1b7d".into(), completed_from_worklist: true };
    let set = Reply::new("context", Some("c1".into()), Ok(Some(context)));
    assert_valid("reply", &serde_json::to_vec(&set).expect("serializes"));
}

fn a_context() -> super::context::ExaminationContext {
    super::context::ContextFields {
        patient_id: Some("P-4711".into()),
        patient_name: Some("Doe^Jane".into()),
        birth_date: Some("19700131".into()),
        sex: Some("F".into()),
        accession_number: Some("ACC-1".into()),
        body_site: Some("left forearm".into()),
        body_site_snomed: Some("14975008".into()),
        lesion_id: Some("L1".into()),
    }
    .validated()
    .expect("valid")
    .into_context("9d2f5c0e-5b1a-4f43-a3f4-2f0c8e6f1b7d".into(), "2026-12-05T10:00:00Z".into(), None)
    .expect("a context")
}

/// The context as assessments carry it, and the command that sets it, against their schemas:
/// what the parser takes, the schema takes (and a field the parser refuses, the schema too).
#[test]
fn a_context_and_its_command_match_their_schemas() {
    let mut assessment: Value = serde_json::from_slice(&std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/payloads/assessment.json")).expect("golden")).expect("JSON");
    assessment["context"] = serde_json::to_value(a_context()).expect("serializes");
    assert_valid("assessment", &serde_json::to_vec(&assessment).expect("JSON"));
    let command = br#"{"request_id":"c1","patient_id":"P-4711","patient_name":"Doe^Jane","birth_date":"19700131","sex":"F","accession_number":"ACC-1","body_site":"left forearm","body_site_snomed":"14975008","lesion_id":"L1"}"#;
    assert!(crate::commands::parse("context", command).is_ok());
    assert_valid("context", command);
    assert_valid("context", br#"{"clear":true}"#);
    assert_valid("context", br#"{"accession_number":"ACC-1"}"#);
    let schema = schema("context");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    for refused in [&br#"{"patient_id":"P","sex":"female"}"#[..], br#"{"patient_id":"P","birth_date":"1970-01-31"}"#, br#"{"lesion_id":"L1"}"#, br#"{"clear":true,"patient_id":"P"}"#] {
        assert!(crate::commands::parse("context", refused).is_err(), "{}", String::from_utf8_lossy(refused));
        let value: Value = serde_json::from_slice(refused).expect("JSON");
        assert!(!validator.is_valid(&value), "the schema takes what the parser refuses: {}", String::from_utf8_lossy(refused));
    }
}

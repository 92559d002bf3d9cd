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
        // The reply's `state` is a status: inlined (no resolver, no network).
        schema["properties"]["state"] = read("stats");
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
}

//! Remote commands: `<prefix>/<station>/cmd/<name>` in, `<prefix>/<station>/reply/<name>` out.
//!
//! The payload is a JSON object, `{}` or `{"request_id": "..."}` (an empty message is not a
//! command: see `publish/incoming.rs`); the reply echoes the request
//! id. Anything malformed or unknown gets an error reply and changes nothing. Parsing is a pure
//! function so it can be fuzzed.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use serde::{Deserialize, Serialize};

use crate::report::context::{ContextChange, ContextError, ContextFields};

/// Largest command payload accepted.
pub const MAX_PAYLOAD: usize = 4096;
const MAX_REQUEST_ID: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandName {
    /// Stop classifying frames (the camera stays open).
    Pause,
    /// Classify again.
    Resume,
    /// Classify the next frame now, also while paused.
    Capture,
    /// Reload the configuration file, as SIGHUP does.
    Reload,
    /// Reply with the counters and state.
    Status,
    /// Set or clear the examination context: whose lesion, which visit, where on the body.
    Context,
}

impl CommandName {
    /// Every command, in the order their topics are subscribed to. The station subscribes to
    /// each exact `cmd/<name>` topic, never to `cmd/+`: whatever else is published under
    /// `cmd/` (a typo, junk, an oversized retained message) never reaches it.
    pub const ALL: [CommandName; 6] =
        [CommandName::Pause, CommandName::Resume, CommandName::Capture, CommandName::Reload, CommandName::Status, CommandName::Context];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandName::Pause => "pause",
            CommandName::Resume => "resume",
            CommandName::Capture => "capture",
            CommandName::Reload => "reload",
            CommandName::Status => "status",
            CommandName::Context => "context",
        }
    }

    pub fn parse(name: &str) -> Option<CommandName> {
        Some(match name {
            "pause" => CommandName::Pause,
            "resume" => CommandName::Resume,
            "capture" => CommandName::Capture,
            "reload" => CommandName::Reload,
            "status" => CommandName::Status,
            "context" => CommandName::Context,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub name: CommandName,
    pub request_id: Option<String>,
    /// What a `context` command asks for (`None` for the others).
    pub context: Option<ContextChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command {0:?} (known: pause, resume, capture, reload, status, context)")]
    Unknown(String),
    #[error("payload of {0} bytes is over the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("malformed payload: {0}")]
    Malformed(String),
    #[error("context refused: {0}")]
    Context(#[from] ContextError),
}

/// A refused command, with the request id if one could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub request_id: Option<String>,
    pub error: CommandError,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    request_id: Option<String>,
}

/// What a `context` command asks for, from its payload less `request_id`: `{"clear": true}`
/// alone, or the fields (`ContextFields` names them and refuses any other).
fn context_change(mut body: serde_json::Map<String, serde_json::Value>) -> Result<ContextChange, CommandError> {
    body.remove("request_id");
    match body.remove("clear") {
        Some(serde_json::Value::Bool(true)) if body.is_empty() => Ok(ContextChange::Clear),
        Some(serde_json::Value::Bool(true)) => Err(CommandError::Malformed("\"clear\" comes alone (with at most a request_id)".into())),
        Some(_) => Err(CommandError::Malformed("\"clear\" can only be true".into())),
        None => {
            // serde's messages quote the offending value (`invalid type: integer `4711``): a
            // context's fields may be patient data, so a wrong type is refused here, naming the
            // field only (see `report::context`); serde is left only unknown names to refuse.
            if let Some((key, _)) = body.iter().find(|(_, v)| !(v.is_string() || v.is_null())) {
                return Err(CommandError::Malformed(format!("{key}: must be a string")));
            }
            let fields: ContextFields = serde_json::from_value(serde_json::Value::Object(body))
                .map_err(|e| CommandError::Malformed(without_values(&e.to_string())))?;
            Ok(ContextChange::Set(fields.validated()?))
        }
    }
}

/// Parses the command `name` (the last topic level) with its payload.
pub fn parse(name: &str, payload: &[u8]) -> Result<Command, Refused> {
    let refuse = |request_id: Option<String>, error| Refused { request_id, error };
    if payload.len() > MAX_PAYLOAD {
        return Err(refuse(None, CommandError::TooLarge(payload.len())));
    }
    let known = CommandName::parse(name);
    let (request_id, context) = if payload.iter().all(u8::is_ascii_whitespace) {
        (None, None)
    } else {
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| refuse(None, CommandError::Malformed(e.to_string())))?;
        if !value.is_object() {
            return Err(refuse(None, CommandError::Malformed("the payload must be a JSON object".into())));
        }
        // Read the request id on its own first, so that even a refused command is answered with
        // it when possible.
        let loose: Option<String> =
            value.get("request_id").and_then(|r| r.as_str()).map(str::to_owned).filter(|id| valid_request_id(id));
        let (request_id, context) = if known == Some(CommandName::Context) {
            let serde_json::Value::Object(body) = value else {
                return Err(refuse(None, CommandError::Malformed("the payload must be a JSON object".into())));
            };
            let id = body.get("request_id").map(|r| r.as_str().map(str::to_owned).ok_or_else(|| refuse(loose.clone(), CommandError::Malformed("request_id must be a string".into())))).transpose()?;
            let change = context_change(body).map_err(|e| refuse(loose.clone(), e))?;
            (id, Some(change))
        } else {
            let body: Body =
                serde_json::from_value(value).map_err(|e| refuse(loose.clone(), CommandError::Malformed(e.to_string())))?;
            (body.request_id, None)
        };
        match request_id {
            Some(id) if !valid_request_id(&id) => {
                return Err(refuse(None, CommandError::Malformed("request_id must be 1..128 printable characters".into())))
            }
            other => (other, context),
        }
    };
    match known {
        Some(CommandName::Context) if context.is_none() => {
            Err(refuse(request_id, CommandError::Malformed("a context command needs a patient_id (or an accession_number), or \"clear\": true".into())))
        }
        Some(name) => Ok(Command { name, request_id, context }),
        None => Err(refuse(request_id, CommandError::Unknown(name.chars().take(64).collect()))),
    }
}

/// A serde error message without what it quotes of the input (`invalid type: string "..."`):
/// keeps the field names and the expected types.
fn without_values(message: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    for c in message.chars() {
        if c == '"' {
            quoted = !quoted;
            if quoted {
                out.push_str("\"…");
            } else {
                out.push('"');
            }
            continue;
        }
        if !quoted {
            out.push(c);
        }
    }
    out
}

fn valid_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.chars().all(|c| !c.is_control())
}

/// What commands change in the running pipeline: shared with the capture thread.
#[derive(Debug, Default)]
pub struct Control {
    paused: AtomicBool,
    capture_requests: AtomicU32,
    /// `capture` commands not yet seen by the examination (a new assessment of the lesion in
    /// view).
    examination_requests: AtomicU32,
}

impl Control {
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }
    /// Asks for one frame to be classified even while paused.
    pub fn request_capture(&self) {
        self.capture_requests.fetch_add(1, Ordering::SeqCst);
        self.examination_requests.fetch_add(1, Ordering::SeqCst);
    }
    /// Gives back a capture request that a skipped input used up (not a new examination).
    pub fn return_capture(&self) {
        self.capture_requests.fetch_add(1, Ordering::SeqCst);
    }
    /// Whether a `capture` command asked for a new assessment since the last call.
    pub fn take_examination_request(&self) -> bool {
        self.examination_requests.swap(0, Ordering::SeqCst) > 0
    }
    /// Whether the capture thread should take a frame now (consumes a capture request when
    /// paused).
    pub fn should_take_frame(&self) -> bool {
        if !self.is_paused() {
            // A capture request while running is satisfied by the next frame anyway.
            let _ = self.capture_requests.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            return true;
        }
        self.capture_requests.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_commands_with_and_without_request_id() {
        assert_eq!(parse("pause", b""), Ok(Command { name: CommandName::Pause, request_id: None, context: None }));
        assert_eq!(
            parse("status", br#"{"request_id":"r-1"}"#),
            Ok(Command { name: CommandName::Status, request_id: Some("r-1".into()), context: None })
        );
    }

    #[test]
    fn unknown_and_malformed_are_refused_with_the_request_id_when_readable() {
        let r = parse("selfdestruct", br#"{"request_id":"x"}"#).unwrap_err();
        assert_eq!(r.request_id.as_deref(), Some("x"));
        assert!(matches!(r.error, CommandError::Unknown(_)));
        let r = parse("pause", br#"{"request_id":"y","extra":1}"#).unwrap_err();
        assert_eq!(r.request_id.as_deref(), Some("y"));
        assert!(matches!(r.error, CommandError::Malformed(_)));
        assert!(parse("pause", b"{not json").is_err());
        assert!(parse("pause", br#"{"request_id":7}"#).is_err());
        assert!(parse("pause", br#"["pause"]"#).is_err());
        assert!(matches!(parse("pause", &vec![b' '; MAX_PAYLOAD + 1]).unwrap_err().error, CommandError::TooLarge(_)));
    }

    #[test]
    fn context_sets_or_clears_and_refusals_name_the_field_not_the_value() {
        let set = parse("context", br#"{"request_id":"c1","patient_id":"P-77","patient_name":"Doe^Jane","lesion_id":"L1"}"#).expect("set");
        assert_eq!(set.request_id.as_deref(), Some("c1"));
        let Some(ContextChange::Set(fields)) = set.context else { panic!("a set") };
        assert_eq!(fields.patient_id.as_deref(), Some("P-77"));
        assert_eq!(parse("context", br#"{"clear":true}"#).expect("clear").context, Some(ContextChange::Clear));
        assert!(parse("context", br#"{"clear":true,"patient_id":"P"}"#).is_err());
        assert!(parse("context", b"").is_err(), "a context command with nothing in it");
        assert!(parse("context", br#"{"request_id":"x"}"#).is_err());
        let r = parse("context", br#"{"request_id":"c2","patient_id":"P-77","birth_date":"31.01.1970"}"#).expect_err("bad date");
        assert_eq!(r.request_id.as_deref(), Some("c2"));
        assert!(r.error.to_string().contains("birth_date") && !r.error.to_string().contains("1970"), "{}", r.error);
        let r = parse("context", br#"{"patient_id":"P-77","patient_name":["Doe Jane Secret"]}"#).expect_err("bad type");
        assert!(!r.error.to_string().contains("Secret"), "{}", r.error);
        let r = parse("context", br#"{"patient_id":47114711}"#).expect_err("a number");
        assert!(r.error.to_string().contains("patient_id") && !r.error.to_string().contains("4711"), "{}", r.error);
        let r = parse("context", br#"{"patient_id":"P-77","nickname":"Secret"}"#).expect_err("unknown field");
        assert!(!r.error.to_string().contains("Secret"), "{}", r.error);
    }

    #[test]
    fn capture_while_paused_takes_exactly_one_frame() {
        let c = Control::default();
        assert!(c.should_take_frame());
        c.pause();
        assert!(!c.should_take_frame());
        c.request_capture();
        assert!(c.should_take_frame());
        assert!(!c.should_take_frame());
        c.resume();
        assert!(c.should_take_frame());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        // Whatever arrives on a command topic: no panic, and a refusal or a known command.
        #[test]
        fn parser_never_panics_on_arbitrary_input(name in ".{0,40}", payload in proptest::collection::vec(any::<u8>(), 0..600)) {
            match parse(&name, &payload) {
                Ok(cmd) => prop_assert!(CommandName::parse(&name) == Some(cmd.name)),
                Err(r) => prop_assert!(r.request_id.as_ref().is_none_or(|id| id.len() <= 128)),
            }
        }

        #[test]
        fn parser_handles_json_shaped_input(id in ".{0,200}", extra in proptest::option::of("[a-z]{1,8}")) {
            let mut obj = serde_json::json!({ "request_id": id });
            if let Some(k) = &extra {
                obj[k] = serde_json::json!(1);
            }
            let payload = serde_json::to_vec(&obj).expect("json");
            let result = parse("status", &payload);
            let id_ok = !id.is_empty() && id.len() <= 128 && id.chars().all(|c| !c.is_control());
            let extra_ok = extra.as_deref().is_none_or(|k| k == "request_id");
            prop_assert_eq!(result.is_ok(), id_ok && extra_ok);
        }
    }
}

//! Remote commands: `<prefix>/<station>/cmd/<name>` in, `<prefix>/<station>/reply/<name>` out.
//!
//! The payload is a JSON object, `{}` or `{"request_id": "..."}` (an empty message is not a
//! command: see `publish/incoming.rs`); the reply echoes the request
//! id. Anything malformed or unknown gets an error reply and changes nothing. Parsing is a pure
//! function so it can be fuzzed.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use serde::{Deserialize, Serialize};

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
}

impl CommandName {
    /// Every command, in the order their topics are subscribed to. The station subscribes to
    /// each exact `cmd/<name>` topic, never to `cmd/+`: whatever else is published under
    /// `cmd/` (a typo, junk, an oversized retained message) never reaches it.
    pub const ALL: [CommandName; 5] =
        [CommandName::Pause, CommandName::Resume, CommandName::Capture, CommandName::Reload, CommandName::Status];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandName::Pause => "pause",
            CommandName::Resume => "resume",
            CommandName::Capture => "capture",
            CommandName::Reload => "reload",
            CommandName::Status => "status",
        }
    }

    pub fn parse(name: &str) -> Option<CommandName> {
        Some(match name {
            "pause" => CommandName::Pause,
            "resume" => CommandName::Resume,
            "capture" => CommandName::Capture,
            "reload" => CommandName::Reload,
            "status" => CommandName::Status,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub name: CommandName,
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command {0:?} (known: pause, resume, capture, reload, status)")]
    Unknown(String),
    #[error("payload of {0} bytes is over the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("malformed payload: {0}")]
    Malformed(String),
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

/// Parses the command `name` (the last topic level) with its payload.
pub fn parse(name: &str, payload: &[u8]) -> Result<Command, Refused> {
    let refuse = |request_id: Option<String>, error| Refused { request_id, error };
    if payload.len() > MAX_PAYLOAD {
        return Err(refuse(None, CommandError::TooLarge(payload.len())));
    }
    let request_id = if payload.iter().all(u8::is_ascii_whitespace) {
        None
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
        let body: Body =
            serde_json::from_value(value).map_err(|e| refuse(loose.clone(), CommandError::Malformed(e.to_string())))?;
        match body.request_id {
            Some(id) if !valid_request_id(&id) => {
                return Err(refuse(None, CommandError::Malformed("request_id must be 1..128 printable characters".into())))
            }
            other => other,
        }
    };
    match CommandName::parse(name) {
        Some(name) => Ok(Command { name, request_id }),
        None => Err(refuse(request_id, CommandError::Unknown(name.chars().take(64).collect()))),
    }
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
        assert_eq!(parse("pause", b""), Ok(Command { name: CommandName::Pause, request_id: None }));
        assert_eq!(
            parse("status", br#"{"request_id":"r-1"}"#),
            Ok(Command { name: CommandName::Status, request_id: Some("r-1".into()) })
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

//! The reply to a command, published on `<prefix>/<station>/reply/<name>` (schema:
//! `docs/schemas/reply.schema.json`).

use serde::Serialize;

/// Bump on any change a subscriber could trip over.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Reply<T: Serialize> {
    pub schema_version: u32,
    pub command: String,
    /// Echoed from the command, so the sender can match the reply to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the command asked for (the `status` command: the station's status).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<T>,
}

impl<T: Serialize> Reply<T> {
    pub fn new(command: &str, request_id: Option<String>, result: Result<Option<T>, String>) -> Self {
        let (ok, error, state) = match result {
            Ok(state) => (true, None, state),
            Err(e) => (false, Some(e), None),
        };
        Reply { schema_version: SCHEMA_VERSION, command: command.to_string(), request_id, ok, error, state }
    }
}

//! Every message the station emits, as types: what a subscriber (MQTT), the station screen,
//! the spool and, next, an imaging archive receive. One file per message, each with its own
//! schema version (`docs/schemas/*.json` describe the same; `schemas.rs` checks that they agree),
//! plus the parts several messages share: the one disclaimer text, timestamps, the model and
//! class entries.
//!
//! This layer only describes: it does no I/O and knows no destination. The examination builds
//! its assessment and state from these types, the recorder serializes and spools them, and the
//! destinations (MQTT, the screen) carry the bytes. It quotes the lower layers' data types
//! (frame origin, check figures, referral, abstain, the stats snapshot) and imports nothing
//! above them.

pub mod assessment;
pub mod classification;
pub mod context;
pub mod reply;
pub mod state;
pub mod status;
pub mod thumbnail;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod schemas;

use std::time::SystemTime;

use serde::Serialize;

/// The station's one disclaimer, in every result it publishes and on its screen.
pub const DISCLAIMER: &str = "Decision support only, not a diagnosis: a clinician must assess every lesion.";

/// A time as published: RFC 3339, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Rounds to 4 decimals: enough for a probability, and keeps the JSON readable.
pub(crate) fn round4(p: f32) -> f32 {
    (p * 10_000.0).round() / 10_000.0
}

/// Which model made a result.
#[derive(Debug, Clone, Serialize)]
pub struct ModelRef<'a> {
    pub id: &'a str,
    pub sha256: &'a str,
    pub temperature: f32,
}

impl<'a> ModelRef<'a> {
    pub fn of(model: &'a crate::classifier::ModelInfo) -> Self {
        ModelRef { id: &model.id, sha256: &model.sha256, temperature: model.temperature }
    }
}

/// A class with what it means, and its probability.
#[derive(Debug, Clone, Serialize)]
pub struct ClassResult<'a> {
    pub code: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub malignant: bool,
    pub probability: f32,
}

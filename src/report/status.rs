//! The station's status: retained on `<prefix>/<station>/stats` every `stats_interval_secs`, and
//! the `status` command's answer (schemas: `docs/schemas/stats.schema.json`,
//! `status.schema.json`). The counters are the stats module's snapshot.

use serde::Serialize;

use crate::spool::SpoolStats;
use crate::stats::Snapshot;

/// Bump on any change a subscriber could trip over.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct StatusPayload<'a> {
    pub schema_version: u32,
    pub station_id: &'a str,
    pub connected: bool,
    pub paused: bool,
    pub spool: SpoolStats,
    #[serde(flatten)]
    pub stats: Snapshot,
}

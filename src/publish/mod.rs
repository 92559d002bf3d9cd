//! Publishing to the clinic's MQTT broker. Topics (see `docs/mqtt.md`), under
//! `<prefix>/<station>/`:
//! - `assessment`: one JSON assessment per examined lesion, QoS 1, from the spool.
//! - `state`: what the station is doing (idle, hold steady, assessing, ...), retained.
//! - `classification`: one JSON result per classified frame, QoS 1, from the spool (every frame
//!   in continuous mode and batch replays; opt-in per examined frame otherwise).
//! - `status`: `online` / `offline`, retained; `offline` is also the last will.
//! - `stats`: counters, retained, every `mqtt.stats_interval_secs`.
//! - `cmd/<name>` in, `reply/<name>` out: remote commands.
//! - `frame/<result_id>`: a downscaled JPEG, only when `mqtt.publish_frames`.

mod incoming;
mod link;
pub mod outbox;
mod publisher;
mod state_throttle;

pub use link::{tls_client_config, LinkError};
pub use publisher::{start, CommandReply, DaemonRequest, Mode, PublisherHandle, Shared};

use crate::commands::CommandName;
use crate::config::MqttConfig;

/// The MQTT publisher as a destination of the spool: it takes every result.
pub const DESTINATION: crate::spool::Destination =
    crate::spool::Destination { name: "mqtt", kinds: &[crate::spool::EntryKind::Classification, crate::spool::EntryKind::Assessment] };

/// The topic names for one station.
#[derive(Debug, Clone, PartialEq)]
pub struct Topics {
    pub classification: String,
    pub assessment: String,
    pub state: String,
    pub status: String,
    pub stats: String,
    /// The exact command topics subscribed to, `<base>/cmd/<name>` for each known command
    /// (never a wildcard: see [`CommandName::ALL`]).
    pub commands: Vec<String>,
    /// `<base>/cmd/`: a message's command name is what follows it.
    pub command_prefix: String,
    base: String,
}

impl Topics {
    pub fn new(mqtt: &MqttConfig, station_id: &str) -> Self {
        let base = format!("{}/{station_id}", mqtt.topic_prefix);
        Self {
            classification: format!("{base}/classification"),
            assessment: format!("{base}/assessment"),
            state: format!("{base}/state"),
            status: format!("{base}/status"),
            stats: format!("{base}/stats"),
            commands: CommandName::ALL.iter().map(|c| format!("{base}/cmd/{}", c.as_str())).collect(),
            command_prefix: format!("{base}/cmd/"),
            base,
        }
    }

    pub fn frame(&self, result_id: &str) -> String {
        format!("{}/frame/{result_id}", self.base)
    }

    pub fn reply(&self, command: &str) -> String {
        format!("{}/reply/{command}", self.base)
    }
}

pub const STATUS_ONLINE: &str = "online";
pub const STATUS_OFFLINE: &str = "offline";

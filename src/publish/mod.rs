//! Publishing results to the clinic's MQTT broker.
//!
//! Topics (see `docs/mqtt.md`):
//! - `<prefix>/<station>/classification`: one JSON result per classified frame, QoS 1.
//! - `<prefix>/<station>/status`: `online` / `offline`, retained; `offline` is also the last will.
//! - `<prefix>/<station>/frame/<result_id>`: a downscaled JPEG, only when `mqtt.publish_frames`.

pub mod outbox;
pub mod payload;
mod publisher;

pub use publisher::{start, PublisherHandle};

use crate::config::Config;

/// The topic names for one station.
#[derive(Debug, Clone, PartialEq)]
pub struct Topics {
    pub classification: String,
    pub status: String,
    frame_prefix: String,
}

impl Topics {
    pub fn new(config: &Config) -> Self {
        let base = format!("{}/{}", config.mqtt.topic_prefix, config.station.id);
        Self {
            classification: format!("{base}/classification"),
            status: format!("{base}/status"),
            frame_prefix: format!("{base}/frame"),
        }
    }

    pub fn frame(&self, result_id: &str) -> String {
        format!("{}/{result_id}", self.frame_prefix)
    }
}

/// What the pipeline hands to the publisher for one classified frame.
#[derive(Debug)]
pub struct ResultMessage {
    pub result_id: String,
    pub json: Vec<u8>,
    /// A downscaled JPEG of the frame, only when publishing frames is enabled.
    pub frame_jpeg: Option<Vec<u8>>,
}

pub const STATUS_ONLINE: &str = "online";
pub const STATUS_OFFLINE: &str = "offline";

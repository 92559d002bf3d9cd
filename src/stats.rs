//! Counters shared by the stages: what happened to every frame, for logs, `stats` and the
//! shutdown summary.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    /// Frames the source delivered (decoded).
    pub captured: AtomicU64,
    /// Inputs skipped because they could not be decoded (corrupt or empty files, bad frames).
    pub skipped_corrupt: AtomicU64,
    /// Frames dropped because inference was behind (the oldest waiting frame goes).
    pub dropped: AtomicU64,
    /// Frames classified.
    pub classified: AtomicU64,
    /// Frames the engine failed on.
    pub failed: AtomicU64,
    /// Results handed to the MQTT client.
    pub published: AtomicU64,
    /// Results the broker acknowledged (PUBACK).
    pub acknowledged: AtomicU64,
}

impl Stats {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// One line for the log at shutdown.
    pub fn summary(&self) -> String {
        format!(
            "captured {}, classified {}, dropped {}, skipped as corrupt {}, failed {}, published {}, acknowledged {}",
            Self::get(&self.captured),
            Self::get(&self.classified),
            Self::get(&self.dropped),
            Self::get(&self.skipped_corrupt),
            Self::get(&self.failed),
            Self::get(&self.published),
            Self::get(&self.acknowledged),
        )
    }
}

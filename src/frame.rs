//! What travels between the stages: a captured frame and the timings it gathers on the way.

use std::time::{Duration, SystemTime};

use image::RgbImage;

/// Where a frame came from, as published (`"camera"`, `"directory"`, `"synthetic"`) plus a
/// name that identifies it within that source (a file name, a device, a generator seed).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FrameOrigin {
    pub kind: &'static str,
    pub name: String,
}

/// A decoded frame, RGB8, as a source hands it to the pipeline.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Monotonic per daemon run, starting at 1; gaps mean dropped or skipped frames.
    pub seq: u64,
    pub captured_at: SystemTime,
    pub origin: FrameOrigin,
    pub image: RgbImage,
    /// The frame as the source delivered it, when that was a JPEG (an MJPEG camera's frame, a
    /// replayed .jpg): an assessment files its judged frame as is, not re-encoded.
    /// (`Arc<Vec>`: a replayed file's bytes move in without a copy.)
    pub jpeg: Option<std::sync::Arc<Vec<u8>>>,
    /// Time spent reading and decoding this frame.
    pub decode_time: Duration,
}

/// Milliseconds per stage for one frame (published with its classification; the stats keep
/// percentiles of them).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LatencyMs {
    pub decode: f64,
    pub preprocess: f64,
    /// Waiting for the inference thread.
    pub queue: f64,
    pub inference: f64,
    pub postprocess: f64,
    /// Capture to result, all of the above.
    pub total: f64,
}

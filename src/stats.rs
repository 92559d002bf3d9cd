//! Counters and latency windows shared by the stages: what happened to every frame, for the
//! retained `stats` topic, the `status` command and the shutdown summary.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::classifier::{EngineStatus, ModelInfo};
use crate::frame::LatencyMs;

/// How many recent frames the latency percentiles are computed over.
const LATENCY_WINDOW: usize = 1024;

#[derive(Debug)]
pub struct Stats {
    started: Instant,
    /// Frames the source delivered (decoded).
    pub captured: AtomicU64,
    /// Inputs skipped because they could not be decoded (corrupt or empty files, bad frames).
    pub skipped_corrupt: AtomicU64,
    /// Inputs refused before decoding because they were too large (`source.max_frame_pixels`,
    /// `source.max_frame_bytes`): a damaged header must not allocate gigabytes.
    pub skipped_too_large: AtomicU64,
    /// Inputs that could not be read because the system was short of descriptors or memory:
    /// not corrupt; retried after a backoff (a directory replay reads the same file again).
    pub resource_retries: AtomicU64,
    /// Frames dropped because inference was behind (the oldest waiting frame goes).
    pub dropped: AtomicU64,
    /// Frames classified.
    pub classified: AtomicU64,
    /// Frames the engine failed on.
    pub failed: AtomicU64,
    /// Results that could not be written to the spool (lost, and said so).
    pub spool_failed: AtomicU64,
    /// Results handed to the MQTT client.
    pub published: AtomicU64,
    /// Results the broker acknowledged (PUBACK).
    pub acknowledged: AtomicU64,
    /// Thumbnails (`mqtt.publish_frames`) not published: broker away or slow, outbox full.
    pub thumbnails_dropped: AtomicU64,
    /// Stats messages not published (superseded by a newer one, or the outbox full).
    pub stats_dropped: AtomicU64,
    /// Command replies not published because the outbox was full.
    pub replies_dropped: AtomicU64,
    /// Frames the per-frame checks turned away before inference (examination modes).
    pub frames_rejected_by_checks: AtomicU64,
    /// Assessments spooled (abstaining ones included), and of them, abstaining ones.
    pub assessments: AtomicU64,
    pub assessments_abstained: AtomicU64,
    /// State messages not published (superseded by a newer one, or the outbox full).
    pub states_dropped: AtomicU64,
    /// Retained messages on command topics, ignored (commands are never taken from them).
    pub commands_ignored_retained: AtomicU64,
    /// Incoming MQTT messages dropped: oversized, or on a topic that is not a command.
    pub incoming_dropped: AtomicU64,
    /// Frames waiting for the inference thread right now.
    pub queue_depth: AtomicUsize,
    /// The imaging archive (`[dicom]`): assessments filed (image and report stored), attempts
    /// that failed (archive down, association refused, a C-STORE failure; retried), assessments
    /// not filed by rule (no context and `dicom.send_unassigned` off, or no image), and
    /// assessments waiting for it.
    pub archive_stored: AtomicU64,
    pub archive_failed: AtomicU64,
    pub archive_skipped: AtomicU64,
    pub archive_pending: AtomicUsize,
    latencies: Mutex<VecDeque<LatencyMs>>,
    /// Spooled to acknowledged by the broker, ms.
    publish_latencies: Mutex<VecDeque<f64>>,
    model: Mutex<(String, Option<EngineStatus>)>,
    /// From the start of `lesiond run` to READY.
    ready_after: Mutex<Option<std::time::Duration>>,
    /// Where the pipeline threads' CPU went, filled in as they end.
    cpu: Mutex<CpuAccount>,
}

/// CPU time of the pipeline, by who spent it (`lesiond bench` reads it; see src/cputime.rs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CpuAccount {
    /// The capture thread: reading, decoding and preprocessing frames.
    pub capture: std::time::Duration,
    /// The inference thread, all of it.
    pub inference_thread: std::time::Duration,
    /// The inference thread inside the engine call.
    pub invoke_caller: std::time::Duration,
    /// The engine's own worker threads (ONNX Runtime, TF Lite, XNNPACK pools) while the
    /// pipeline ran.
    pub engine_workers: std::time::Duration,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            captured: AtomicU64::new(0),
            skipped_corrupt: AtomicU64::new(0),
            skipped_too_large: AtomicU64::new(0),
            resource_retries: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            classified: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            spool_failed: AtomicU64::new(0),
            published: AtomicU64::new(0),
            acknowledged: AtomicU64::new(0),
            thumbnails_dropped: AtomicU64::new(0),
            stats_dropped: AtomicU64::new(0),
            replies_dropped: AtomicU64::new(0),
            frames_rejected_by_checks: AtomicU64::new(0),
            assessments: AtomicU64::new(0),
            assessments_abstained: AtomicU64::new(0),
            states_dropped: AtomicU64::new(0),
            commands_ignored_retained: AtomicU64::new(0),
            incoming_dropped: AtomicU64::new(0),
            queue_depth: AtomicUsize::new(0),
            archive_stored: AtomicU64::new(0),
            archive_failed: AtomicU64::new(0),
            archive_skipped: AtomicU64::new(0),
            archive_pending: AtomicUsize::new(0),
            latencies: Mutex::new(VecDeque::with_capacity(LATENCY_WINDOW)),
            publish_latencies: Mutex::new(VecDeque::with_capacity(LATENCY_WINDOW)),
            model: Mutex::new((String::new(), None)),
            ready_after: Mutex::new(None),
            cpu: Mutex::new(CpuAccount::default()),
        }
    }
}

/// p50 and p95 of one stage, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
}

/// Latency percentiles per stage over the recent window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageLatencies {
    pub decode: Percentiles,
    pub preprocess: Percentiles,
    pub queue: Percentiles,
    pub inference: Percentiles,
    pub postprocess: Percentiles,
    /// Capture to result, the stages above.
    pub total: Percentiles,
    /// Spooled to acknowledged by the broker (PUBACK).
    pub publish: Percentiles,
}

/// A snapshot of the counters, as published on `stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    pub uptime_s: u64,
    pub model_id: String,
    /// The engine as it runs (library version, threads, XNNPACK, warm-up invoke).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineStatus>,
    pub frames_captured: u64,
    pub frames_classified: u64,
    pub frames_dropped: u64,
    pub frames_skipped_corrupt: u64,
    pub frames_skipped_too_large: u64,
    pub frames_resource_retries: u64,
    pub frames_failed: u64,
    pub results_published: u64,
    pub results_acknowledged: u64,
    pub results_lost_spool_write: u64,
    pub thumbnails_dropped: u64,
    pub stats_dropped: u64,
    pub replies_dropped: u64,
    pub frames_rejected_by_checks: u64,
    pub assessments: u64,
    pub assessments_abstained: u64,
    pub states_dropped: u64,
    pub commands_ignored_retained: u64,
    pub incoming_dropped: u64,
    pub queue_depth: usize,
    pub archive_stored: u64,
    pub archive_failed: u64,
    pub archive_skipped: u64,
    pub archive_pending: usize,
    pub latency_ms: StageLatencies,
}

impl Stats {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn record_latency(&self, l: LatencyMs) {
        let mut w = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
        if w.len() == LATENCY_WINDOW {
            w.pop_front();
        }
        w.push_back(l);
    }

    pub fn record_publish(&self, waited: std::time::Duration) {
        let mut w = self.publish_latencies.lock().unwrap_or_else(|p| p.into_inner());
        if w.len() == LATENCY_WINDOW {
            w.pop_front();
        }
        w.push_back(waited.as_secs_f64() * 1e3);
    }

    pub fn set_ready_after(&self, d: std::time::Duration) {
        *self.ready_after.lock().unwrap_or_else(|p| p.into_inner()) = Some(d);
    }

    pub fn ready_after(&self) -> Option<std::time::Duration> {
        *self.ready_after.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds to the CPU account (threads report as they end; a reload adds a second pipeline).
    pub fn add_cpu(&self, f: impl FnOnce(&mut CpuAccount)) {
        f(&mut self.cpu.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn cpu_account(&self) -> CpuAccount {
        *self.cpu.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_model(&self, info: &ModelInfo) {
        *self.model.lock().unwrap_or_else(|p| p.into_inner()) = (info.id.clone(), Some(info.status.clone()));
    }

    pub fn snapshot(&self) -> Snapshot {
        let latency_ms = {
            let w = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
            let stage = |f: fn(&LatencyMs) -> f64| percentiles(w.iter().map(f).collect());
            StageLatencies {
                decode: stage(|l| l.decode),
                preprocess: stage(|l| l.preprocess),
                queue: stage(|l| l.queue),
                inference: stage(|l| l.inference),
                postprocess: stage(|l| l.postprocess),
                total: stage(|l| l.total),
                publish: percentiles(self.publish_latencies.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect()),
            }
        };
        let (model_id, engine) = self.model.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Snapshot {
            uptime_s: self.started.elapsed().as_secs(),
            model_id,
            engine,
            frames_captured: Self::get(&self.captured),
            frames_classified: Self::get(&self.classified),
            frames_dropped: Self::get(&self.dropped),
            frames_skipped_corrupt: Self::get(&self.skipped_corrupt),
            frames_skipped_too_large: Self::get(&self.skipped_too_large),
            frames_resource_retries: Self::get(&self.resource_retries),
            frames_failed: Self::get(&self.failed),
            results_published: Self::get(&self.published),
            results_acknowledged: Self::get(&self.acknowledged),
            results_lost_spool_write: Self::get(&self.spool_failed),
            thumbnails_dropped: Self::get(&self.thumbnails_dropped),
            stats_dropped: Self::get(&self.stats_dropped),
            replies_dropped: Self::get(&self.replies_dropped),
            frames_rejected_by_checks: Self::get(&self.frames_rejected_by_checks),
            assessments: Self::get(&self.assessments),
            assessments_abstained: Self::get(&self.assessments_abstained),
            states_dropped: Self::get(&self.states_dropped),
            commands_ignored_retained: Self::get(&self.commands_ignored_retained),
            incoming_dropped: Self::get(&self.incoming_dropped),
            queue_depth: self.queue_depth.load(Ordering::Relaxed),
            archive_stored: Self::get(&self.archive_stored),
            archive_failed: Self::get(&self.archive_failed),
            archive_skipped: Self::get(&self.archive_skipped),
            archive_pending: self.archive_pending.load(Ordering::Relaxed),
            latency_ms,
        }
    }

    /// One line for the log at shutdown.
    pub fn summary(&self) -> String {
        format!(
            "captured {}, classified {}, dropped {}, turned away by the checks {}, assessments {} ({} abstaining), skipped as corrupt {}, skipped as too large {}, retried for want of resources {}, lost to the spool {}, failed {}, published {}, acknowledged {}, thumbnails dropped {}, stats dropped {}, replies dropped {}, peak RSS {} kB",
            Self::get(&self.captured),
            Self::get(&self.classified),
            Self::get(&self.dropped),
            Self::get(&self.frames_rejected_by_checks),
            Self::get(&self.assessments),
            Self::get(&self.assessments_abstained),
            Self::get(&self.skipped_corrupt),
            Self::get(&self.skipped_too_large),
            Self::get(&self.resource_retries),
            Self::get(&self.spool_failed),
            Self::get(&self.failed),
            Self::get(&self.published),
            Self::get(&self.acknowledged),
            Self::get(&self.thumbnails_dropped),
            Self::get(&self.stats_dropped),
            Self::get(&self.replies_dropped),
            peak_rss_kb(),
        )
    }
}

/// The process's peak resident set size so far, in kB: `VmHWM` from /proc/self/status (0 where
/// unavailable). Not getrusage's ru_maxrss: that keeps the parent's peak across fork + exec, so a
/// daemon started by a big process would report the parent's memory.
pub fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().trim_end_matches("kB").trim().parse().ok())))
        .flatten()
        .unwrap_or(0)
}

/// Nearest-rank percentiles; zeros for an empty window.
pub fn percentiles(mut values: Vec<f64>) -> Percentiles {
    if values.is_empty() {
        return Percentiles::default();
    }
    values.sort_by(f64::total_cmp);
    let rank = |q: f64| values[((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    Percentiles { p50: rank(0.50), p95: rank(0.95) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let p = percentiles((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p95), (50.0, 95.0));
        assert_eq!(percentiles(vec![]), Percentiles::default());
        assert_eq!(percentiles(vec![7.0]).p95, 7.0);
    }

    #[test]
    fn latency_window_is_bounded() {
        // Five windows' worth, increasing: a bounded window holds only the last one.
        let s = Stats::default();
        let n = 5 * LATENCY_WINDOW;
        for i in 0..n {
            s.record_latency(LatencyMs { total: i as f64, ..Default::default() });
            s.record_publish(std::time::Duration::from_millis(i as u64));
        }
        assert_eq!(s.latencies.lock().expect("lock").len(), LATENCY_WINDOW);
        assert_eq!(s.publish_latencies.lock().expect("lock").len(), LATENCY_WINDOW);
        let snap = s.snapshot();
        // The median of the last window, nearest rank: (n - W) + W/2 - 1. An unbounded window
        // would give about n/2.
        let want = (n - LATENCY_WINDOW + LATENCY_WINDOW / 2 - 1) as f64;
        assert_eq!(snap.latency_ms.total.p50, want);
        assert_eq!(snap.latency_ms.publish.p50, want);
    }
}

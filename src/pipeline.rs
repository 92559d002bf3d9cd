//! The pipeline threads: source -> preprocess -> [bounded queue] -> engine -> postprocess ->
//! publisher channel.
//!
//! Capture, decode and preprocessing run on the *capture thread*; the engine and postprocessing
//! on the *inference thread*. While the model works on frame N the capture thread already
//! prepares frame N+1, so throughput approaches 1 / invoke time. The queue between them is
//! small and drops the oldest frame when full (or waits, for a lossless replay).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};

use crate::classifier::Classifier;
use crate::commands::Control;
use crate::config::Config;
use crate::cputime;
use crate::frame::FrameOrigin;
use crate::preprocess::{InputTensor, Preprocessor};
use crate::publish::payload::{self, LatencyMs, PayloadInput};
use crate::publish::FrameImage;
use crate::queue::{FrameQueue, Pop};
use crate::source::{self, FrameSource, SourceEvent, StopFlag};
use crate::spool::Spool;
use crate::stats::Stats;

/// A frame ready for the engine.
struct Prepared {
    seq: u64,
    captured_at: SystemTime,
    origin: FrameOrigin,
    input: InputTensor,
    frame_jpeg: Option<Vec<u8>>,
    decode: Duration,
    preprocess: Duration,
    queued_at: Instant,
}

/// How the pipeline ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineEnd {
    /// Stopped on request (shutdown or reload).
    Stopped,
    /// A finite source ran out and `exit_when_done` is set: every frame has been handed on.
    SourceDone,
}

/// Where the pipeline's output goes: every result into the spool (the publisher sends it from
/// there), frames to the publisher directly when enabled.
pub struct Outputs {
    pub spool: Arc<Spool>,
    pub frames: mpsc::Sender<FrameImage>,
    pub stats: Arc<Stats>,
    pub control: Arc<Control>,
}

/// Milliseconds since the pipeline started, updated by the inference thread on every turn; the
/// systemd watchdog is fed only while it moves.
#[derive(Debug)]
pub struct Heartbeat {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Heartbeat {
    fn new() -> Self {
        Self { origin: Instant::now(), last_ms: AtomicU64::new(0) }
    }
    fn beat(&self) {
        self.last_ms.store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

pub struct Pipeline {
    stop: StopFlag,
    capture: Option<JoinHandle<()>>,
    inference: Option<JoinHandle<()>>,
    pub heartbeat: Arc<Heartbeat>,
    ended: Option<oneshot::Receiver<PipelineEnd>>,
}

impl Pipeline {
    /// Starts the threads. The classifier is loaded by the caller, so a bad model fails before
    /// anything starts (and a reload keeps the old pipeline when the new model is bad).
    pub fn start(config: &Config, classifier: Classifier, outputs: Outputs) -> Result<Pipeline, source::SourceError> {
        let Outputs { spool, frames, stats, control } = outputs;
        stats.set_model(classifier.info());
        let exit_when_done = config.source.directory.exit_when_done;
        let preprocessor = Preprocessor::new(classifier.input_spec(), config.preprocess.circular_mask);
        let queue = Arc::new(FrameQueue::new(config.pipeline.queue_capacity));
        let stop = StopFlag::default();
        let source_done = Arc::new(AtomicBool::new(false));
        let heartbeat = Arc::new(Heartbeat::new());
        heartbeat.beat();
        let (ended_tx, ended) = oneshot::channel();

        let capture = {
            let (queue, stop, stats, source_done) = (queue.clone(), stop.clone(), stats.clone(), source_done.clone());
            let control = control.clone();
            let publish_frames = config.mqtt.publish_frames;
            let source_config = config.source.clone();
            let (opened_tx, opened_rx) = std::sync::mpsc::sync_channel(1);
            let handle = std::thread::Builder::new()
                .name("capture".into())
                .spawn(move || {
                    let source = match source::open(&source_config) {
                        Ok(source) => {
                            let _ = opened_tx.send(Ok(()));
                            source
                        }
                        Err(e) => {
                            let _ = opened_tx.send(Err(e));
                            return;
                        }
                    };
                    let ctx = CaptureContext { queue: &queue, stop: &stop, stats: &stats, control: &control, publish_frames, exit_when_done, source_done: &source_done };
                    capture_loop(source, preprocessor, ctx);
                    queue.close();
                    stats.add_cpu(|a| a.capture += cputime::this_thread());
                })
                .map_err(|e| source::SourceError::Camera(format!("cannot start capture thread: {e}")))?;
            // The source is opened on its own thread; wait for the verdict so that a missing
            // folder is a start-up error.
            opened_rx.recv().unwrap_or_else(|_| Err(source::SourceError::Camera("capture thread ended".into())))?;
            handle
        };
        let inference = {
            let heartbeat = heartbeat.clone();
            let station_id = config.station.id.clone();
            let publish_frames = config.mqtt.publish_frames;
            std::thread::Builder::new()
                .name("inference".into())
                .spawn(move || {
                    let out = InferenceOutputs { spool: &spool, frames: publish_frames.then_some(&frames), stats: &stats };
                    // The engine's worker threads already exist (or start at the first invoke):
                    // what they use from here on is this pipeline's inference work.
                    let me = cputime::this_thread_id();
                    let workers_before = cputime::library_threads(me);
                    let mut classifier = classifier;
                    let invoke_cpu = inference_loop(&mut classifier, &queue, &out, &heartbeat, &station_id);
                    // Counted before the classifier goes: its engine's worker threads go with it.
                    stats.add_cpu(|a| {
                        a.invoke_caller += invoke_cpu;
                        a.inference_thread += cputime::this_thread();
                        a.engine_workers += cputime::library_threads_since(me, &workers_before);
                    });
                    let end = if source_done.load(Ordering::SeqCst) { PipelineEnd::SourceDone } else { PipelineEnd::Stopped };
                    let _ = ended_tx.send(end);
                })
                .map_err(|e| source::SourceError::Camera(format!("cannot start inference thread: {e}")))?
        };
        Ok(Pipeline { stop, capture: Some(capture), inference: Some(inference), heartbeat, ended: Some(ended) })
    }

    /// A pipeline with nothing running: the placeholder while a reload swaps pipelines.
    pub fn idle() -> Pipeline {
        Pipeline { stop: StopFlag::default(), capture: None, inference: None, heartbeat: Arc::new(Heartbeat::new()), ended: None }
    }

    /// Resolves when the pipeline ends on its own (finite source, publisher gone).
    pub async fn ended(&mut self) -> PipelineEnd {
        match self.ended.as_mut() {
            Some(rx) => {
                let end = rx.await.unwrap_or(PipelineEnd::Stopped);
                self.ended = None;
                end
            }
            None => std::future::pending().await,
        }
    }

    /// Stops taking frames, lets the inference thread finish what is queued, and waits for both
    /// threads.
    pub fn stop_and_join(mut self) {
        self.stop.raise();
        for handle in [self.capture.take(), self.inference.take()].into_iter().flatten() {
            if handle.join().is_err() {
                tracing::error!("a pipeline thread panicked");
            }
        }
    }
}

struct CaptureContext<'a> {
    queue: &'a FrameQueue<Prepared>,
    stop: &'a StopFlag,
    stats: &'a Stats,
    control: &'a Control,
    publish_frames: bool,
    exit_when_done: bool,
    source_done: &'a AtomicBool,
}

fn capture_loop(mut source: Box<dyn FrameSource>, mut preprocessor: Preprocessor, ctx: CaptureContext<'_>) {
    let CaptureContext { queue, stop, stats, control, publish_frames, exit_when_done, source_done } = ctx;
    let lossless = source.lossless();
    loop {
        // Paused: take no frames (a `capture` command lets exactly one through).
        if !control.should_take_frame() {
            if !stop.sleep(Duration::from_millis(50)) {
                break;
            }
            continue;
        }
        let Some(event) = source.next(stop) else { break };
        match event {
            SourceEvent::Frame(frame) => {
                Stats::inc(&stats.captured);
                let started = Instant::now();
                let input = preprocessor.run(&frame.image);
                let preprocess = started.elapsed();
                let frame_jpeg = publish_frames.then(|| downscaled_jpeg(&frame.image)).flatten();
                let prepared = Prepared {
                    seq: frame.seq,
                    captured_at: frame.captured_at,
                    origin: frame.origin,
                    input,
                    frame_jpeg,
                    decode: frame.decode_time,
                    preprocess,
                    queued_at: Instant::now(),
                };
                if lossless {
                    if queue.push_wait(prepared, || stop.is_raised()).is_err() {
                        break;
                    }
                } else if queue.push_drop_oldest(prepared).is_some() {
                    Stats::inc(&stats.dropped);
                }
                stats.queue_depth.store(queue.len(), Ordering::Relaxed);
            }
            SourceEvent::Skipped { name, reason } => {
                Stats::inc(&stats.skipped_corrupt);
                tracing::warn!(input = %name, "skipped: {reason}");
                // A skipped input does not use up a `capture` request.
                if control.is_paused() {
                    control.request_capture();
                }
            }
            SourceEvent::End => {
                if exit_when_done {
                    tracing::info!("source finished; exiting once every result is acknowledged");
                    source_done.store(true, Ordering::SeqCst);
                } else {
                    tracing::info!("source finished; idle until stopped");
                    while stop.sleep(Duration::from_secs(1)) {}
                }
                break;
            }
        }
    }
}

struct InferenceOutputs<'a> {
    spool: &'a Spool,
    frames: Option<&'a mpsc::Sender<FrameImage>>,
    stats: &'a Stats,
}

/// Classifies, spools and logs frames until the queue closes. Returns this thread's CPU time
/// inside the engine, for the CPU account.
fn inference_loop(classifier: &mut Classifier, queue: &FrameQueue<Prepared>, out: &InferenceOutputs<'_>, heartbeat: &Heartbeat, station_id: &str) -> Duration {
    let stats = out.stats;
    let mut invoke_cpu = Duration::ZERO;
    loop {
        heartbeat.beat();
        let item = match queue.pop(Duration::from_millis(200)) {
            Pop::Item(item) => item,
            Pop::Empty => continue,
            Pop::Closed => return invoke_cpu,
        };
        stats.queue_depth.store(queue.len(), Ordering::Relaxed);
        let queue_wait = item.queued_at.elapsed();
        let (classification, _raw, timings) = match classifier.classify(&item.input) {
            Ok(out) => out,
            Err(e) => {
                Stats::inc(&stats.failed);
                tracing::error!(seq = item.seq, source = %item.origin.name, "{e}");
                continue;
            }
        };
        Stats::inc(&stats.classified);
        invoke_cpu += timings.inference_cpu;
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let latency = LatencyMs {
            decode: ms(item.decode),
            preprocess: ms(item.preprocess),
            queue: ms(queue_wait),
            inference: ms(timings.inference),
            postprocess: ms(timings.postprocess),
            total: ms(item.decode + item.preprocess + queue_wait + timings.inference + timings.postprocess),
        };
        let result_id = uuid::Uuid::new_v4().to_string();
        let labels = classifier.labels().clone();
        let body = payload::build(PayloadInput {
            station_id,
            result_id: result_id.clone(),
            seq: item.seq,
            captured_at: item.captured_at,
            origin: &item.origin,
            model: classifier.info(),
            labels: &labels,
            classification: &classification,
            latency,
        });
        let json = match serde_json::to_vec(&body) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!("cannot serialize result: {e}");
                continue;
            }
        };
        stats.record_latency(latency);
        // Into the spool before anything else: from here the result survives a dead broker, a
        // restart and a power cut; the publisher removes it once the broker acknowledged it.
        if let Err(e) = out.spool.append(&json) {
            Stats::inc(&stats.spool_failed);
            tracing::error!(seq = item.seq, "result lost: {e}");
            continue;
        }
        // Logged once spooled: a logged result is a result that will reach the broker.
        let top = &labels.classes[classification.top[0]];
        tracing::info!(
            seq = item.seq,
            source = %item.origin.name,
            top = %top.code,
            p = format!("{:.3}", classification.probabilities[top.index]),
            ms = latency.total,
            result_id = %result_id,
            "classified"
        );
        if let (Some(frames), Some(jpeg)) = (out.frames, item.frame_jpeg) {
            // Frames are best effort (QoS 0): never wait for them.
            let _ = frames.try_send(FrameImage { result_id, jpeg });
        }
    }
}

/// A small JPEG of the frame (at most 320 px wide), for subscribers that show what was seen.
fn downscaled_jpeg(image: &image::RgbImage) -> Option<Vec<u8>> {
    let width = image.width().min(320);
    let height = (u64::from(image.height()) * u64::from(width) / u64::from(image.width().max(1))).max(1) as u32;
    let small = image::imageops::resize(image, width, height, image::imageops::FilterType::Triangle);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80).encode_image(&small).ok()?;
    Some(out)
}

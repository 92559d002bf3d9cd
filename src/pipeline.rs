//! The pipeline threads: source -> checks -> preprocess -> [bounded queue] -> engine ->
//! examination -> recorder (which spools each result for the destinations, and feeds the
//! screen, the log and the counters: `recorder/`).
//!
//! Capture, decode, the per-frame checks and preprocessing run on the *capture thread*; the
//! engine, the examination and the recorder on the *inference thread*. While the model works on
//! frame N the capture thread already prepares frame N+1, so throughput approaches 1 / invoke
//! time. The queue between them is small and drops the oldest frame when full (or waits, for a
//! lossless replay).
//!
//! In `continuous` mode (the synthetic source, batch replays) every frame is classified and
//! spooled as a classification. In `auto` / `manual` (the camera, paced replays) the checks
//! decide which frames are worth the model, the examination turns the classified frames of one
//! lesion into one assessment, and the station state (idle, hold steady, assessing, ...) is
//! recorded on every change.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

use crate::classifier::Classifier;
use crate::commands::Control;
use crate::checks::{FrameChecker, FrameChecks};
use crate::config::{ChecksConfig, Config, ExaminationMode, ExaminationSettings, PreprocessConfig, SourceSettings};
use crate::cputime;
use crate::examination::{assessment, Examination, ModelView, Observed, Step};
use crate::frame::FrameOrigin;
use crate::preprocess::{InputTensor, Preprocessor};
use crate::frame::LatencyMs;
use crate::queue::{FrameQueue, Pop};
use crate::recorder::{Outcome, Recorder};
use crate::report::classification::{self, PayloadInput};
use crate::report::state::{FrameReport, StatePayload};
use crate::source::{self, FrameSource, SourceEvent, StopFlag};
use crate::stats::Stats;
use crate::supervision::{panic_message, Heartbeat};

/// An engine that fails on this many frames in a row is broken (a bad delegate, a corrupted
/// model in memory): the pipeline ends as failed so the daemon exits and systemd restarts it,
/// instead of skipping every frame forever.
const MAX_CONSECUTIVE_ENGINE_FAILURES: u32 = 5;

/// A frame for the inference thread: checked (examination modes) and, when worth it, ready
/// for the engine.
struct Prepared {
    seq: u64,
    /// When it was captured, monotonic (the examination's clock).
    at: Instant,
    captured_at: SystemTime,
    origin: FrameOrigin,
    /// What the per-frame checks found (`None` in continuous mode, which has none).
    checks: Option<FrameChecks>,
    /// The engine's input; `None` when the checks turned the frame away.
    input: Option<InputTensor>,
    frame_jpeg: Option<Vec<u8>>,
    /// The frame as an assessment would file it (examination modes, frames worth the model).
    kept: Option<KeptFrame>,
    decode: Duration,
    preprocess: Duration,
    queued_at: Instant,
}

/// A frame an assessment may file as its judged image: the source's JPEG as delivered, or
/// (a raw camera format, a PNG replay) its pixels, encoded only if it is the one chosen.
#[derive(Clone)]
enum KeptFrame {
    Jpeg(Arc<Vec<u8>>),
    Pixels(Arc<image::RgbImage>),
}

impl KeptFrame {
    /// The bytes to file: the JPEG as is, or the pixels at high quality (JPEG 95: visually
    /// lossless, and what every archive takes).
    fn encoded(&self) -> Option<std::borrow::Cow<'_, [u8]>> {
        match self {
            KeptFrame::Jpeg(bytes) => Some(std::borrow::Cow::Borrowed(bytes)),
            KeptFrame::Pixels(image) => {
                let mut out = Vec::new();
                match image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95).encode_image(image.as_ref()) {
                    Ok(()) => Some(std::borrow::Cow::Owned(out)),
                    Err(e) => {
                        tracing::error!("cannot encode the judged frame: {e}");
                        None
                    }
                }
            }
        }
    }
}

/// How the pipeline ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipelineEnd {
    /// Stopped on request (shutdown or reload).
    Stopped,
    /// A finite source ran out and `exit_when_done` is set: every frame has been handed on.
    SourceDone,
    /// A thread panicked or the engine kept failing: the cause, for the log. The daemon exits
    /// non-zero (after publishing what it can) so that systemd restarts it.
    Failed(String),
}

/// Where the pipeline's output goes: every outcome to the recorder (its one way out), and
/// what the threads share with the daemon.
pub struct Outputs {
    pub recorder: Recorder,
    pub stats: Arc<Stats>,
    pub control: Arc<Control>,
}

/// The parts of the resolved configuration the pipeline runs on (a reload starts a new
/// pipeline with new ones).
pub struct PipelineSettings<'a> {
    pub station_id: &'a str,
    pub source: &'a SourceSettings,
    pub checks: &'a ChecksConfig,
    pub preprocess: &'a PreprocessConfig,
    pub queue_capacity: usize,
    pub examination: &'a ExaminationSettings,
    /// Make a small JPEG of each frame worth the model (`mqtt.publish_frames`: frames may leave
    /// the daemon): thumbnails, and the screen's preview of an assessment.
    pub frame_jpegs: bool,
}

impl<'a> PipelineSettings<'a> {
    pub fn of(config: &'a Config) -> Self {
        PipelineSettings {
            station_id: &config.station.id,
            source: &config.source,
            checks: &config.checks,
            preprocess: &config.preprocess,
            queue_capacity: config.pipeline.queue_capacity,
            examination: &config.examination,
            frame_jpegs: config.mqtt.publish_frames,
        }
    }
}

/// The two threads' heartbeats: each beats on every turn of its loop and while it waits on
/// purpose, so a stale one means a stuck thread.
#[derive(Debug, Clone)]
pub struct Heartbeats {
    pub capture: Arc<Heartbeat>,
    pub inference: Arc<Heartbeat>,
}

pub struct Pipeline {
    stop: StopFlag,
    capture: Option<JoinHandle<()>>,
    inference: Option<JoinHandle<()>>,
    pub heartbeats: Heartbeats,
    ended: Option<oneshot::Receiver<PipelineEnd>>,
}

impl Pipeline {
    /// Starts the threads. The classifier is loaded by the caller, so a bad model fails before
    /// anything starts (and a reload keeps the old pipeline when the new model is bad).
    ///
    /// Supervision: each thread runs its loop under `catch_unwind`. A capture-thread panic is
    /// recorded and closes the queue, so the inference thread classifies (and spools) what is
    /// queued and then reports the failure; an inference-thread panic or a persistently failing
    /// engine raises the stop flag so the capture thread ends too. The inference thread always
    /// sends how the pipeline ended; a dropped sender is read as a failure, never as a stop.
    pub fn start(settings: PipelineSettings<'_>, classifier: Classifier, outputs: Outputs) -> Result<Pipeline, source::SourceError> {
        let Outputs { recorder, stats, control } = outputs;
        let mode = settings.examination.mode;
        tracing::info!(mode = ?mode, "frames: {}", match mode {
            ExaminationMode::Continuous => "every frame classified and published",
            ExaminationMode::Auto => "one assessment per lesion in view",
            ExaminationMode::Manual => "one assessment per capture command",
        });
        stats.set_model(classifier.info());
        let exit_when_done = settings.source.directory.exit_when_done;
        // Frames that fail only the lesion check may be shown to the model (a faint lesion the
        // check missed, `examination`): possible only with an out-of-distribution score.
        let model_vouches = classifier.scores_views() && settings.examination.ask_model_every_secs > 0.0;
        let preprocessor = Preprocessor::new(classifier.input_spec(), settings.preprocess.circular_mask);
        let queue = Arc::new(FrameQueue::new(settings.queue_capacity));
        let heartbeats = Heartbeats { capture: Arc::new(Heartbeat::new()), inference: Arc::new(Heartbeat::new()) };
        let stop = StopFlag::with_heartbeat(heartbeats.capture.clone());
        let source_done = Arc::new(AtomicBool::new(false));
        let capture_failure: Arc<Mutex<Option<String>>> = Arc::default();
        let (ended_tx, ended) = oneshot::channel();

        let capture = {
            let (queue, stop, stats, source_done) = (queue.clone(), stop.clone(), stats.clone(), source_done.clone());
            let capture_failure = capture_failure.clone();
            let control = control.clone();
            // mqtt.publish_frames lets frames leave the daemon: a small JPEG of each frame that
            // passed the checks, for the thumbnails next to per-frame classifications (sent only
            // with those) and for the screen's preview of an assessment (its sharpest frame).
            let publish_frames = settings.frame_jpegs;
            let source_config = settings.source.clone();
            let checker = (mode != ExaminationMode::Continuous).then(|| FrameChecker::new(settings.checks.clone()));
            let prepare_lesionless = model_vouches;
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
                    let ctx = CaptureContext { queue: &queue, stop: &stop, stats: &stats, control: &control, publish_frames, prepare_lesionless, exit_when_done, source_done: &source_done };
                    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| capture_loop(source, checker, preprocessor, ctx)));
                    if let Err(panic) = outcome {
                        let cause = format!("capture thread panicked: {}", panic_message(&*panic));
                        tracing::error!("{cause}; finishing the queued frames, then exiting");
                        *capture_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(cause);
                    }
                    // Always: the inference thread drains what is queued, then ends.
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
            let heartbeat = heartbeats.inference.clone();
            let stop = stop.clone();
            let station_id = settings.station_id.to_string();
            let exam = ExamSetup { config: settings.examination.clone(), model_vouches };
            std::thread::Builder::new()
                .name("inference".into())
                .spawn(move || {
                    let out = InferenceOutputs { recorder: &recorder, stats: &stats, control: &control, heartbeat: &heartbeat, stop: &stop };
                    // The engine's worker threads already exist (or start at the first invoke):
                    // what they use from here on is this pipeline's inference work.
                    let me = cputime::this_thread_id();
                    let workers_before = cputime::library_threads(me);
                    let mut classifier = classifier;
                    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| inference_loop(&mut classifier, &queue, &out, &heartbeat, &station_id, &exam)));
                    let end = match outcome {
                        Ok(Ok(invoke_cpu)) => {
                            // Counted before the classifier goes: its engine's worker threads go
                            // with it.
                            stats.add_cpu(|a| {
                                a.invoke_caller += invoke_cpu;
                                a.inference_thread += cputime::this_thread();
                                a.engine_workers += cputime::library_threads_since(me, &workers_before);
                            });
                            if let Some(cause) = capture_failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
                                PipelineEnd::Failed(cause)
                            } else if source_done.load(Ordering::SeqCst) {
                                PipelineEnd::SourceDone
                            } else {
                                PipelineEnd::Stopped
                            }
                        }
                        Ok(Err(cause)) => PipelineEnd::Failed(cause),
                        Err(panic) => PipelineEnd::Failed(format!("inference thread panicked: {}", panic_message(&*panic))),
                    };
                    if let PipelineEnd::Failed(cause) = &end {
                        tracing::error!("pipeline failed: {cause}");
                        stop.raise();
                    }
                    let _ = ended_tx.send(end);
                })
                .map_err(|e| source::SourceError::Camera(format!("cannot start inference thread: {e}")))?
        };
        Ok(Pipeline { stop, capture: Some(capture), inference: Some(inference), heartbeats, ended: Some(ended) })
    }

    /// A pipeline with nothing running: the placeholder while a reload swaps pipelines.
    pub fn idle() -> Pipeline {
        let heartbeats = Heartbeats { capture: Arc::new(Heartbeat::new()), inference: Arc::new(Heartbeat::new()) };
        Pipeline { stop: StopFlag::default(), capture: None, inference: None, heartbeats, ended: None }
    }

    /// Whether no threads run (a reload failed to restart any pipeline).
    pub fn is_idle(&self) -> bool {
        self.inference.is_none()
    }

    /// The thread that has not beaten for `limit`, if any (never for an idle pipeline).
    pub fn stalled(&self, limit: Duration) -> Option<(&'static str, Duration)> {
        if self.is_idle() {
            return None;
        }
        [("capture thread", &self.heartbeats.capture), ("inference thread", &self.heartbeats.inference)]
            .into_iter()
            .map(|(name, h)| (name, h.age()))
            .find(|(_, age)| *age >= limit)
    }

    /// Resolves when the pipeline ends on its own (finite source, failure).
    pub async fn ended(&mut self) -> PipelineEnd {
        match self.ended.as_mut() {
            Some(rx) => {
                let end = rx.await.unwrap_or_else(|_| PipelineEnd::Failed("the inference thread ended without saying how".into()));
                self.ended = None;
                end
            }
            None => std::future::pending().await,
        }
    }

    /// Stops taking frames, lets the inference thread finish what is queued, and waits for both
    /// threads — at most `limit`: a stuck thread is left behind (the process is exiting or
    /// failing anyway) rather than hanging the shutdown. Returns whether both ended.
    pub fn stop_and_join(mut self, limit: Duration) -> bool {
        self.stop.raise();
        let handles: Vec<JoinHandle<()>> = [self.capture.take(), self.inference.take()].into_iter().flatten().collect();
        let deadline = Instant::now() + limit;
        while handles.iter().any(|h| !h.is_finished()) {
            if Instant::now() >= deadline {
                let stuck: Vec<&str> = handles.iter().filter(|h| !h.is_finished()).filter_map(|h| h.thread().name()).collect();
                tracing::error!("pipeline thread(s) {stuck:?} did not stop within {limit:?}; leaving them");
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for handle in handles {
            if handle.join().is_err() {
                tracing::error!("a pipeline thread panicked");
            }
        }
        true
    }
}

struct CaptureContext<'a> {
    queue: &'a FrameQueue<Prepared>,
    stop: &'a StopFlag,
    stats: &'a Stats,
    control: &'a Control,
    publish_frames: bool,
    /// Also prepare frames that failed only the lesion check, for the model to look at.
    prepare_lesionless: bool,
    exit_when_done: bool,
    source_done: &'a AtomicBool,
}

fn capture_loop(mut source: Box<dyn FrameSource>, mut checker: Option<FrameChecker>, mut preprocessor: Preprocessor, ctx: CaptureContext<'_>) {
    let CaptureContext { queue, stop, stats, control, publish_frames, prepare_lesionless, exit_when_done, source_done } = ctx;
    let lossless = source.lossless();
    let mut delivered = 0u64;
    loop {
        stop.beat();
        // Paused: take no frames (a `capture` command lets exactly one through).
        if !control.should_take_frame() {
            if !stop.sleep(Duration::from_millis(50)) {
                break;
            }
            // Frames resume after a gap: the next one is not "motion" from the last.
            if let Some(c) = checker.as_mut() {
                c.reset_motion();
            }
            continue;
        }
        let Some(event) = source.next(stop) else { break };
        match event {
            SourceEvent::Frame(frame) => {
                Stats::inc(&stats.captured);
                let at = Instant::now();
                // The checks first: a frame they turn away costs no preprocessing, no inference.
                let checks = checker.as_mut().map(|c| c.check(&frame.image));
                let passed = checks.as_ref().is_none_or(FrameChecks::passed);
                if !passed {
                    Stats::inc(&stats.frames_rejected_by_checks);
                }
                // Prepared for the engine: frames that passed, and those the examination may
                // show the model because only the lesion check failed.
                let worth_it = passed || (prepare_lesionless && checks.as_ref().is_some_and(FrameChecks::only_lesion_check_failed));
                let input = worth_it.then(|| preprocessor.run(&frame.image));
                let preprocess = at.elapsed();
                let frame_jpeg = (publish_frames && worth_it).then(|| downscaled_jpeg(&frame.image)).flatten();
                // Examination modes only (checks ran): moved, never copied.
                let kept = (checks.is_some() && worth_it).then(|| match frame.jpeg {
                    Some(jpeg) => KeptFrame::Jpeg(jpeg),
                    None => KeptFrame::Pixels(Arc::new(frame.image)),
                });
                let prepared = Prepared {
                    seq: frame.seq,
                    at,
                    captured_at: frame.captured_at,
                    origin: frame.origin,
                    checks,
                    input,
                    frame_jpeg,
                    kept,
                    decode: frame.decode_time,
                    preprocess,
                    queued_at: Instant::now(),
                };
                if lossless {
                    // Waiting for the engine is legitimate idleness: beat while waiting.
                    let give_up = || {
                        stop.beat();
                        stop.is_raised()
                    };
                    if queue.push_wait(prepared, give_up).is_err() {
                        break;
                    }
                } else if queue.push_drop_preferring(prepared, |p| p.input.is_none()).is_some() {
                    Stats::inc(&stats.dropped);
                }
                stats.queue_depth.store(queue.len(), Ordering::Relaxed);
                delivered += 1;
                crate::fault::after_capture(delivered);
            }
            SourceEvent::Skipped { name, reason, too_large } => {
                if too_large {
                    Stats::inc(&stats.skipped_too_large);
                    tracing::warn!(input = %name, "skipped, too large: {reason}");
                } else {
                    Stats::inc(&stats.skipped_corrupt);
                    tracing::warn!(input = %name, "skipped: {reason}");
                }
                // A skipped input does not use up a `capture` request.
                if control.is_paused() {
                    control.return_capture();
                }
            }
            SourceEvent::ResourceShortage { name, reason } => {
                // Not the input's fault (e.g. no file descriptor left): counted apart from
                // corrupt input; the source waited and reads the same input again.
                Stats::inc(&stats.resource_retries);
                tracing::warn!(input = %name, "cannot read it now, the system is short of a resource: {reason}; retrying");
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
    recorder: &'a Recorder,
    stats: &'a Stats,
    control: &'a Control,
    /// Beaten while a spool write waits for a resource (that wait is not a hang).
    heartbeat: &'a Heartbeat,
    /// Raised at shutdown: a spool write still waiting for a resource then gets a few seconds
    /// more, not its whole budget, so the thread ends within the shutdown's wait and the loss
    /// is counted.
    stop: &'a StopFlag,
}

/// How long a waiting spool write may go on once the pipeline is stopping.
const SPOOL_RETRY_WHEN_STOPPING: Duration = Duration::from_secs(5);

/// Hands an outcome to the recorder. A spool write that fails for want of descriptors, memory
/// or disk space is retried for up to `spool::WRITE_RETRY_FOR` (a few seconds once stopping),
/// beating the heartbeat meanwhile.
fn record(out: &InferenceOutputs<'_>, outcome: Outcome<'_>) {
    let stopping_since: std::cell::Cell<Option<Instant>> = std::cell::Cell::new(None);
    out.recorder.record(outcome, &|wait| {
        if out.stop.is_raised() {
            let since = stopping_since.get().unwrap_or_else(Instant::now);
            stopping_since.set(Some(since));
            if since.elapsed() >= SPOOL_RETRY_WHEN_STOPPING {
                return false;
            }
        }
        let until = Instant::now() + wait;
        while Instant::now() < until {
            out.heartbeat.beat();
            std::thread::sleep(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
        }
        true
    })
}

/// How the inference thread runs examinations.
struct ExamSetup {
    /// `[examination]`, with the mode this source allows.
    config: ExaminationSettings,
    /// The model can vouch for a view the lesion check calls empty.
    model_vouches: bool,
}

/// Classifies frames until the queue closes: every frame in continuous mode; in the
/// examination modes, the frames the examination asks about, recording its assessments and
/// publishing its state. Returns this thread's CPU time inside the engine, for the CPU account;
/// or why the engine is considered broken.
fn inference_loop(classifier: &mut Classifier, queue: &FrameQueue<Prepared>, out: &InferenceOutputs<'_>, heartbeat: &Heartbeat, station_id: &str, setup: &ExamSetup) -> Result<Duration, String> {
    let stats = out.stats;
    let mut engine = EngineRun { invoke_cpu: Duration::ZERO, taken: 0, failures_in_a_row: 0 };
    let mut examination = (setup.config.mode != ExaminationMode::Continuous).then(|| Examination::new(setup.config.clone(), setup.model_vouches));
    if examination.is_none() {
        // Continuous mode has no station state. An empty retained message removes the one a
        // previous examination mode left on the broker (after a reload, or from the last run),
        // so that no screen keeps showing it.
        record(out, Outcome::NoState);
    }
    let record_frames = setup.config.mode == ExaminationMode::Continuous || setup.config.publish_frame_results;
    let mut last_frame_at: Option<Instant> = None;
    let mut last_frame: Option<(FrameChecks, FrameOrigin)> = None;
    // The JPEGs of the last classified frames, made on the capture thread only when
    // mqtt.publish_frames is on: the screen's preview of an assessment is its sharpest frame.
    let mut jpegs: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
    // The last classified frames as an assessment would file them (the sharpest is chosen once
    // the examination ends).
    let mut kept: VecDeque<(u64, KeptFrame)> = VecDeque::new();
    let keep = 2 * setup.config.min_frames.max(1) as usize;
    loop {
        heartbeat.beat();
        let item = match queue.pop(Duration::from_millis(200)) {
            Pop::Item(item) => item,
            Pop::Empty => {
                if let Some(exam) = examination.as_mut() {
                    // No frames (camera gone, replay over): the lesion is gone too.
                    exam.tick(Instant::now(), last_frame_at);
                    publish_state(exam, out, station_id, setup.config.mode, last_frame.as_ref());
                }
                continue;
            }
            Pop::Closed => return Ok(engine.invoke_cpu),
        };
        stats.queue_depth.store(queue.len(), Ordering::Relaxed);
        last_frame_at = Some(item.at);
        let Some(exam) = examination.as_mut() else {
            engine.classify_and_record(classifier, item, out, station_id, true)?;
            continue;
        };
        if out.control.take_examination_request() {
            exam.request_capture(item.at);
        }
        let Some(checks) = item.checks.clone() else { continue };
        let observed = Observed { seq: item.seq, at: item.at, captured_at: item.captured_at, origin: item.origin.clone(), checks, lesion_seen_by_model: false };
        if exam.observe(&observed) == Step::Classify && item.input.is_some() {
            let jpeg = item.frame_jpeg.clone().map(|j| (item.seq, j));
            let frame_kept = item.kept.clone().map(|k| (item.seq, k));
            if let Some(frame) = engine.classify_and_record(classifier, item, out, station_id, record_frames)? {
                exam.classified(&observed, frame);
                if let Some(jpeg) = jpeg {
                    if jpegs.len() == keep {
                        jpegs.pop_front();
                    }
                    jpegs.push_back(jpeg);
                }
                if let Some(frame_kept) = frame_kept {
                    if kept.len() == keep {
                        kept.pop_front();
                    }
                    kept.push_back(frame_kept);
                }
            }
        }
        if let Some(a) = exam.take_assessment() {
            let sharpest = a.frames.iter().max_by(|x, y| a.weight(x).total_cmp(&a.weight(y)));
            let preview = sharpest.and_then(|f| jpegs.iter().find(|(seq, _)| *seq == f.seq)).map(|(_, j)| j.as_slice());
            let image = sharpest.and_then(|f| kept.iter().find(|(seq, _)| *seq == f.seq)).and_then(|(_, k)| k.encoded());
            record_assessment(&a, classifier, out, station_id, setup.config.mode, image.as_deref(), preview);
        }
        last_frame = Some((observed.checks, observed.origin));
        publish_state(exam, out, station_id, setup.config.mode, last_frame.as_ref());
    }
}

/// Records a changed state (the publisher publishes the newest, a few times a second at most).
fn publish_state(exam: &mut Examination, out: &InferenceOutputs<'_>, station_id: &str, mode: ExaminationMode, frame: Option<&(FrameChecks, FrameOrigin)>) {
    let since = exam.state_since();
    let Some(state) = exam.take_state_change() else { return };
    let frame = frame.map(|(checks, source)| FrameReport { source, checks });
    record(out, Outcome::State(StatePayload::new(station_id, mode, state, since, frame)));
}

/// Records an assessment, with its judged (sharpest) frame, and the screen's preview of it
/// when one was made.
fn record_assessment(a: &assessment::Assessment, classifier: &Classifier, out: &InferenceOutputs<'_>, station_id: &str, mode: ExaminationMode, image: Option<&[u8]>, preview: Option<&[u8]>) {
    let labels = classifier.labels().clone();
    let message = assessment::payload(a, station_id, mode, classifier.info(), &labels, classifier.operating_point());
    record(out, Outcome::Assessment { message, image, preview });
}

/// The engine's side of the inference thread: invokes, counts failures, records classifications.
struct EngineRun {
    invoke_cpu: Duration,
    taken: u64,
    failures_in_a_row: u32,
}

impl EngineRun {
    /// Classifies a prepared frame; records its classification when `record_it` is set.
    /// Returns the frame's result, `None` when the engine failed on this frame, or `Err` when
    /// it keeps failing.
    fn classify_and_record(&mut self, classifier: &mut Classifier, item: Prepared, out: &InferenceOutputs<'_>, station_id: &str, record_it: bool) -> Result<Option<ModelView>, String> {
        let stats = out.stats;
        let Some(input) = item.input.as_ref() else { return Ok(None) };
        let queue_wait = item.queued_at.elapsed();
        self.taken += 1;
        let classified = if crate::fault::before_classify(self.taken) {
            Err("injected fault: engine error (test-only)".to_string())
        } else {
            classifier.classify(input).map_err(|e| e.to_string())
        };
        let (classification, raw, timings) = match classified {
            Ok(out) => {
                self.failures_in_a_row = 0;
                out
            }
            Err(e) => {
                Stats::inc(&stats.failed);
                tracing::error!(seq = item.seq, source = %item.origin.name, "{e}");
                self.failures_in_a_row += 1;
                if self.failures_in_a_row >= MAX_CONSECUTIVE_ENGINE_FAILURES {
                    return Err(format!("the engine failed on {} frames in a row (last: {e})", self.failures_in_a_row));
                }
                return Ok(None);
            }
        };
        Stats::inc(&stats.classified);
        self.invoke_cpu += timings.inference_cpu;
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let latency = LatencyMs {
            decode: ms(item.decode),
            preprocess: ms(item.preprocess),
            queue: ms(queue_wait),
            inference: ms(timings.inference),
            postprocess: ms(timings.postprocess),
            total: ms(item.decode + item.preprocess + queue_wait + timings.inference + timings.postprocess),
        };
        stats.record_latency(latency);
        let ood = classifier.out_of_distribution(&raw);
        let frame = ModelView {
            probabilities: classification.probabilities.clone(),
            out_of_distribution: ood.is_some_and(|o| o.out_of_distribution),
            typical: ood.is_some_and(|o| !o.atypical),
        };
        if !record_it {
            return Ok(Some(frame));
        }
        // The frame's own checks (none in continuous mode; a classified frame in an examination
        // passed them) and its out-of-distribution score.
        let abstain = crate::abstain::of_image(item.checks.as_ref(), ood.as_ref());
        let labels = classifier.labels().clone();
        let message = classification::build(PayloadInput {
            station_id,
            result_id: uuid::Uuid::new_v4().to_string(),
            seq: item.seq,
            captured_at: item.captured_at,
            origin: &item.origin,
            model: crate::report::ModelRef::of(classifier.info()),
            labels: &labels,
            classification: &classification,
            referral: if abstain.is_none() { classifier.refer(&classification.probabilities) } else { None },
            abstain,
            latency,
        });
        record(out, Outcome::Classification { message, thumbnail: item.frame_jpeg });
        Ok(Some(frame))
    }
}

/// A small JPEG of the frame (at most `thumbnail::MAX_WIDTH` px wide), for subscribers that show what was seen.
fn downscaled_jpeg(image: &image::RgbImage) -> Option<Vec<u8>> {
    let width = image.width().min(crate::report::thumbnail::MAX_WIDTH);
    let height = (u64::from(image.height()) * u64::from(width) / u64::from(image.width().max(1))).max(1) as u32;
    let small = image::imageops::resize(image, width, height, image::imageops::FilterType::Triangle);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80).encode_image(&small).ok()?;
    Some(out)
}

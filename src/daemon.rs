//! `lesiond run`: wires the stages together and owns the process lifecycle — start-up, systemd
//! readiness and watchdog, supervision of the threads and the publisher task, reloads (SIGHUP or
//! the `reload` command) and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sd_notify::NotifyState;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::sync::mpsc;

use crate::archive;
use crate::classifier::{Classifier, ClassifierError};
use crate::commands::{CommandName, Control};
use crate::config::{Config, ConfigError, ConfigOrigin};
use crate::context::{ContextStore, ContextStoreError};
use crate::report::context::ContextChange;
use crate::pipeline::{Outputs, Pipeline, PipelineEnd, PipelineSettings};
use crate::publish::{self, CommandReply, DaemonRequest, LinkError, Mode, Shared};
use crate::source::SourceError;
use crate::spool::{Spool, SpoolError};
use crate::stats::Stats;
use crate::supervision::panic_message;
use crate::report::DISCLAIMER;
use crate::recorder::{AssessmentFeed, Recorder};
use crate::viewer::{self, About, Feeds};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Model(#[from] ClassifierError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Context(#[from] ContextStoreError),
    #[error("MQTT: {0}")]
    Mqtt(#[from] LinkError),
    #[error(transparent)]
    Viewer(#[from] viewer::ViewerError),
    /// A secret file anyone may write (`fsperm`).
    #[error("{0}")]
    UnsafeFile(String),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// A thread or task failed while running (its cause): exit non-zero so systemd restarts us.
    #[error("{0}")]
    Failed(String),
}

/// What the running pipeline is wired to; kept across reloads.
struct Wiring {
    spool: Arc<Spool>,
    frames: mpsc::Sender<crate::report::thumbnail::Thumbnail>,
    stats: Arc<Stats>,
    control: Arc<Control>,
    /// The station's state, serialized, for the publisher (retained on `state`) and the viewer.
    states: tokio::sync::watch::Sender<Option<Vec<u8>>>,
    /// Assessments for the viewer, and what runs (set again by every start, so a reload that
    /// changes the model shows on the screen).
    assessments: Arc<AssessmentFeed>,
    about: tokio::sync::watch::Sender<Option<About>>,
    /// The examination context in force (the `context` command sets it, assessments carry it).
    contexts: Arc<ContextStore>,
}

impl Wiring {
    fn start(&self, config: &Config, classifier: Classifier) -> Result<Pipeline, SourceError> {
        let recorder = Recorder {
            spool: self.spool.clone(),
            stats: self.stats.clone(),
            // Thumbnails leave the daemon only with mqtt.publish_frames.
            thumbnails: config.mqtt.publish_frames.then(|| self.frames.clone()),
            states: self.states.clone(),
            assessments: self.assessments.clone(),
            contexts: self.contexts.clone(),
            show_patient: config.viewer.show_patient,
        };
        let outputs = Outputs { recorder, stats: self.stats.clone(), control: self.control.clone() };
        let info = classifier.info();
        let about = About {
            station_id: config.station.id.clone(),
            model_id: info.id.clone(),
            model_sha256: info.sha256.clone(),
            mode: config.examination.mode,
            engine: info.engine.clone(),
            previews: config.screen_previews,
            disclaimer: DISCLAIMER,
        };
        self.about.send_replace(Some(about));
        Pipeline::start(PipelineSettings::of(config), classifier, outputs)
    }
}

/// How the main loop ended, and whether the pipeline threads may be stuck.
struct Ending {
    end: PipelineEnd,
    /// A stage made no progress: do not wait long for its thread.
    stalled: bool,
    /// The publisher task has already ended (and must not be awaited again).
    publisher_gone: bool,
}

/// Runs until SIGTERM/SIGINT, or until a finite source is done when `exit_when_done` is set.
/// Returns the run's counters; `Err(DaemonError::Failed)` when a thread or task failed, so that
/// the process exits non-zero and systemd restarts it.
pub async fn run(origin: ConfigOrigin, mut config: Config) -> Result<Arc<Stats>, DaemonError> {
    let entered = std::time::Instant::now();
    // Signals first, so a SIGTERM during a slow start-up is not lost.
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(DaemonError::Signals)?;

    // Old key names still read: said before anything runs, so the operator updates the file.
    for moved in &config.moved_keys {
        tracing::warn!("config: {moved}");
    }
    // Secrets and the config file others may read or change: said before anything runs.
    for finding in crate::fsperm::check(&origin, &config) {
        match finding.severity {
            crate::fsperm::Severity::Warning => tracing::warn!("{}", finding.message),
            crate::fsperm::Severity::Error => return Err(DaemonError::UnsafeFile(finding.message)),
        }
    }
    let classifier = Classifier::load(&config.model)?;
    let info = classifier.info().clone();
    tracing::info!(model = %info.id, sha256 = %info.sha256, temperature = info.temperature, "{}", info.engine);
    tracing::info!(model = %info.id, "{}", info.status);
    tracing::info!(model = %info.id, "{}", info.referral);
    // The destinations that take results from the spool, each through its own delivery cursor.
    // A new one adds its line here and starts its task below.
    let mut destinations = vec![publish::DESTINATION];
    if config.dicom.enabled {
        destinations.push(archive::DESTINATION);
    }
    let spool = Arc::new(Spool::open(&config.spool, &destinations)?);
    // Beside the spool, as private: it names the patient.
    let contexts = Arc::new(ContextStore::open(&config.context.dir, config.context.idle_timeout)?);
    let worklist = archive::worklist_peer(&config.dicom);

    let stats = Arc::new(Stats::default());
    let control = Arc::new(Control::default());
    let (frames_tx, frames_rx) = mpsc::channel(4);
    let (requests_tx, mut requests) = mpsc::channel(4);
    let (states_tx, states_rx) = tokio::sync::watch::channel(None);
    let delivery = spool.delivery(publish::DESTINATION.name).ok_or_else(|| DaemonError::Failed("the MQTT destination has no delivery cursor".into()))?;
    let shared = Shared { stats: stats.clone(), spool: spool.clone(), delivery, control: control.clone(), states: states_rx.clone() };
    // The screen's socket before anything runs: a busy port or an unreadable password file is a
    // start-up error, named, rather than a station that silently has no screen.
    let screen = match config.viewer.enabled {
        true => Some(viewer::bind(&config.viewer).await?),
        false => None,
    };
    let assessments = Arc::new(AssessmentFeed::default());
    let (about_tx, about_rx) = tokio::sync::watch::channel(None);
    let feeds = Feeds { states: states_rx.clone(), assessments: assessments.clone(), about: about_rx, context: contexts.subscribe(), show_patient: config.viewer.show_patient };
    // Task: the publisher (tokio). Threads: capture and inference (std), started by the pipeline.
    let mut publisher = publish::start(&config.mqtt, &config.station.id, shared, frames_rx, requests_tx)?;
    // Task: the imaging archive ([dicom]), reading the spool through its own cursor.
    let mut archive = match spool.delivery(archive::DESTINATION.name) {
        Some(delivery) => Some(archive::start(archive::ArchiveSetup {
            config: config.dicom.clone(),
            labels: classifier.labels().clone(),
            spool: spool.clone(),
            delivery,
            stats: stats.clone(),
        })),
        None => None,
    };
    let wiring = Wiring { spool, frames: frames_tx, stats: stats.clone(), control, states: states_tx, assessments, about: about_tx, contexts };
    let mut pipeline = wiring.start(&config, classifier)?;
    // Not supervised like the pipeline: the viewer logs its own failure and the station goes on
    // classifying and publishing without it.
    if let Some(screen) = screen {
        let addr = screen.local_addr().map(|a| a.to_string()).unwrap_or_else(|| config.viewer.listen.clone());
        tracing::info!(auth = config.viewer.token_file.is_some(), "viewer: station screen on http://{addr}/");
        drop(screen.serve(feeds));
    }

    // READY once the model is loaded and the broker is connected — or after ready_timeout_secs
    // without a broker: the daemon is useful (results are spooled) and must not be killed by
    // systemd while the broker is away.
    let mut connected = publisher.connected.clone();
    let ready_timeout = Duration::from_secs(config.mqtt.ready_timeout_secs);
    let broker_up = tokio::time::timeout(ready_timeout, connected.wait_for(|c| *c)).await.is_ok_and(|r| r.is_ok());
    let status = if broker_up {
        "running".to_string()
    } else {
        format!("running; MQTT broker {}:{} unreachable, retrying (results are spooled)", config.mqtt.host, config.mqtt.port)
    };
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    stats.set_ready_after(entered.elapsed());
    tracing::info!(station = %config.station.id, ready_ms = entered.elapsed().as_millis() as u64, "ready: {status}");

    // Supervision. The loop ends on a signal; on the pipeline's own end (a finished batch, or a
    // failure its threads reported); on the publisher task's end (never expected while
    // running); or on a stall: a thread or task whose heartbeat is older than
    // pipeline.stall_timeout_secs. The systemd watchdog is fed only while capture, inference
    // and the publisher all beat within the watchdog interval.
    let watchdog = sd_notify::watchdog_enabled();
    let check_every = watchdog.map_or(Duration::from_secs(1), |w| (w / 3).min(Duration::from_secs(1)));
    let mut supervise_tick = tokio::time::interval(check_every);

    let mut archive_gone = false;
    let ending = loop {
        tokio::select! {
            signal = signals.next() => match signal {
                Some(SIGHUP) => {
                    if let Err(e) = reload(&origin, &mut config, &mut pipeline, &wiring, watchdog).await {
                        tracing::error!("reload rejected, keeping the running configuration: {e}");
                    }
                }
                Some(sig) => {
                    tracing::info!(signal = sig, "shutting down: finishing frames in flight");
                    break Ending { end: PipelineEnd::Stopped, stalled: false, publisher_gone: false };
                }
                None => break Ending { end: PipelineEnd::Stopped, stalled: false, publisher_gone: false },
            },
            Some(request) = requests.recv() => match request {
                DaemonRequest::Reload { request_id } => {
                    let result = reload(&origin, &mut config, &mut pipeline, &wiring, watchdog).await;
                    if let Err(e) = &result {
                        tracing::error!("reload rejected, keeping the running configuration: {e}");
                    }
                    let reply = CommandReply { name: CommandName::Reload, request_id, result: result.map(|_| None).map_err(|e| e.to_string()) };
                    let _ = publisher.replies.send(reply).await;
                }
                DaemonRequest::Context { request_id, change } => {
                    // Its own task: a worklist query may take seconds, and supervision goes on.
                    let (contexts, worklist, replies) = (wiring.contexts.clone(), worklist.clone(), publisher.replies.clone());
                    tokio::spawn(async move {
                        let result = apply_context(&contexts, worklist.as_ref(), change).await;
                        let _ = replies.send(CommandReply { name: CommandName::Context, request_id, result }).await;
                    });
                }
            },
            end = pipeline.ended() => break Ending { end, stalled: false, publisher_gone: false },
            joined = async { match archive.as_mut() { Some(a) => (&mut a.task).await, None => std::future::pending().await } } => {
                archive_gone = true;
                let cause = match joined {
                    Ok(()) => "the archive task ended unexpectedly".to_string(),
                    Err(e) if e.is_panic() => format!("archive task panicked: {}", panic_message(&*e.into_panic())),
                    Err(e) => format!("archive task failed: {e}"),
                };
                break Ending { end: PipelineEnd::Failed(cause), stalled: false, publisher_gone: false };
            }
            joined = &mut publisher.task => {
                let cause = match joined {
                    Ok(()) => "the publisher task ended unexpectedly".to_string(),
                    Err(e) if e.is_panic() => format!("publisher task panicked: {}", panic_message(&*e.into_panic())),
                    Err(e) => format!("publisher task failed: {e}"),
                };
                break Ending { end: PipelineEnd::Failed(cause), stalled: false, publisher_gone: true };
            }
            _ = supervise_tick.tick() => {
                // Ends a context idle past context.idle_timeout_secs, for the screen too.
                wiring.contexts.end_if_idle();
                if pipeline.is_idle() {
                    break Ending { end: PipelineEnd::Failed("no pipeline is running after a failed reload".into()), stalled: false, publisher_gone: false };
                }
                let limit = Duration::from_secs(config.pipeline.stall_timeout_secs);
                let publisher_age = publisher.heartbeat.age();
                let stuck = pipeline.stalled(limit).or((publisher_age >= limit).then_some(("publisher task", publisher_age)));
                if let Some((who, age)) = stuck {
                    let cause = format!("the {who} made no progress for {:.1} s (pipeline.stall_timeout_secs = {})", age.as_secs_f64(), limit.as_secs());
                    break Ending { end: PipelineEnd::Failed(cause), stalled: true, publisher_gone: false };
                }
                if let Some(limit) = watchdog {
                    match pipeline.stalled(limit).or((publisher_age >= limit).then_some(("publisher task", publisher_age))) {
                        None => notify(&[NotifyState::Watchdog]),
                        Some((who, age)) => tracing::error!("{who} stuck for {age:?}; withholding the watchdog ping"),
                    }
                }
            }
        }
    };

    notify(&[NotifyState::Stopping]);
    let Ending { end, stalled, publisher_gone } = ending;
    if let PipelineEnd::Failed(cause) = &end {
        tracing::error!("failing: {cause}; publishing what can be published, then exiting non-zero");
    }
    // Graceful shutdown, in pipeline order:
    // 1. on a signal or a failure the publisher gets a deadline; a finished batch waits for
    //    every PUBACK;
    // 2. the capture thread stops taking frames, the inference thread classifies the queued
    //    ones and spools their results (a stuck thread is left behind after a short wait);
    // 3. the publisher sends what it can, publishes `offline` and disconnects. Whatever the
    //    broker did not acknowledge stays in the spool for the next start.
    if end != PipelineEnd::SourceDone && !publisher_gone {
        publisher.set_mode(Mode::Stop);
    }
    if let Some(a) = archive.as_ref().filter(|_| !archive_gone && end != PipelineEnd::SourceDone) {
        a.set_mode(archive::ArchiveMode::Stop);
    }
    let join_limit = if stalled { Duration::from_secs(2) } else { Duration::from_secs(30) };
    let _ = tokio::task::spawn_blocking(move || pipeline.stop_and_join(join_limit)).await;
    let mut failure = match &end {
        PipelineEnd::Failed(cause) => Some(cause.clone()),
        _ => None,
    };
    // A stop signal while the publisher drains a finished batch stops the archive too: it has
    // been taken from the stream and will not come again.
    let mut stop_signalled = false;
    if !publisher_gone {
        if end == PipelineEnd::SourceDone {
            publisher.set_mode(Mode::Drain);
        }
        let joined = loop {
            tokio::select! {
                joined = &mut publisher.task => break joined,
                signal = signals.next() => if matches!(signal, Some(SIGTERM) | Some(SIGINT)) {
                    publisher.set_mode(Mode::Stop);
                    stop_signalled = true;
                },
            }
        };
        if let Err(e) = joined {
            let cause = if e.is_panic() { format!("publisher task panicked: {}", panic_message(&*e.into_panic())) } else { format!("publisher task failed: {e}") };
            tracing::error!("{cause}");
            failure.get_or_insert(cause);
        }
    }
    // 4. the archive files what is left (a finished batch: everything, retrying while the
    //    archive is away, until a signal) or ends after the assessment in hand.
    if let Some(mut a) = archive.filter(|_| !archive_gone) {
        if stop_signalled {
            a.set_mode(archive::ArchiveMode::Stop);
        } else if end == PipelineEnd::SourceDone {
            a.set_mode(archive::ArchiveMode::Drain);
        }
        let joined = loop {
            tokio::select! {
                joined = &mut a.task => break joined,
                signal = signals.next() => if matches!(signal, Some(SIGTERM) | Some(SIGINT)) {
                    a.set_mode(archive::ArchiveMode::Stop);
                },
            }
        };
        if let Err(e) = joined {
            let cause = if e.is_panic() { format!("archive task panicked: {}", panic_message(&*e.into_panic())) } else { format!("archive task failed: {e}") };
            tracing::error!("{cause}");
            failure.get_or_insert(cause);
        }
    }
    tracing::info!("stopped: {}", stats.summary());
    // A result that could not be spooled is lost (counted, logged when it happened): the run
    // did not do its job, whatever else went well.
    let lost = Stats::get(&stats.spool_failed);
    if lost > 0 && failure.is_none() {
        failure = Some(format!("{lost} result(s) could not be written to the spool and were lost (results_lost_spool_write)"));
    }
    match failure {
        Some(cause) => Err(DaemonError::Failed(cause)),
        None => Ok(stats),
    }
}

/// Runs blocking work (a model load, joining the old pipeline's threads) on the blocking pool,
/// feeding the systemd watchdog meanwhile: a reload is progress, not a hang.
async fn blocking_feeding_watchdog<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static, watchdog: Option<Duration>) -> Result<T, DaemonError> {
    let mut task = tokio::task::spawn_blocking(work);
    let mut tick = tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |w| w / 3));
    loop {
        tokio::select! {
            done = &mut task => {
                return done.map_err(|e| DaemonError::Failed(if e.is_panic() { format!("reload panicked: {}", panic_message(&*e.into_panic())) } else { e.to_string() }));
            }
            _ = tick.tick(), if watchdog.is_some() => notify(&[NotifyState::Watchdog]),
        }
    }
}

/// Loads and checks the new configuration and its model first; only then swaps the pipeline.
/// A configuration that does not load changes nothing. Only the reloadable part
/// (see [`Config::reloaded`]) is applied; restart-only sections that changed are named and
/// kept as they run, and the stored configuration is the one applied. Returns those sections.
async fn reload(origin: &ConfigOrigin, config: &mut Config, pipeline: &mut Pipeline, wiring: &Wiring, watchdog: Option<Duration>) -> Result<Vec<&'static str>, DaemonError> {
    match NotifyState::monotonic_usec_now() {
        // systemd >= 253 wants the reload timestamp in the same message.
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
    let result = async {
        let (applied, ignored) = config.reloaded(Config::load(origin)?);
        for moved in &applied.moved_keys {
            tracing::warn!("config: {moved}");
        }
        if !ignored.is_empty() {
            tracing::warn!(
                "reload: {} changed, but those take effect only at the next restart; keeping the running values",
                ignored.join(", ")
            );
        }
        let model = applied.model.clone();
        let load = move || {
            crate::fault::before_reload_model_load(); // test-only: a slow load
            Classifier::load(&model)
        };
        let classifier = blocking_feeding_watchdog(load, watchdog).await??;
        // Stop the old pipeline (finishing its frames) before the new one opens the camera.
        let old = std::mem::replace(pipeline, Pipeline::idle());
        blocking_feeding_watchdog(move || old.stop_and_join(Duration::from_secs(30)), watchdog).await?;
        match wiring.start(&applied, classifier) {
            Ok(p) => {
                *pipeline = p;
                *config = applied;
                tracing::info!("configuration reloaded");
                Ok(ignored)
            }
            Err(e) => {
                tracing::error!("the new source failed ({e}); restarting the previous configuration");
                let model = config.model.clone();
                let classifier = blocking_feeding_watchdog(move || Classifier::load(&model), watchdog).await??;
                // If even that fails the pipeline stays idle, and the supervisor exits non-zero.
                *pipeline = wiring.start(config, classifier)?;
                Err(e.into())
            }
        }
    }
    .await;
    notify(&[NotifyState::Ready]);
    result
}

/// Sets or clears the examination context (the `context` command). A context that gives only
/// an accession number is completed from the worklist (`[dicom.worklist]`): exactly one entry,
/// or an error and nothing set. The reply says what was set by its id, never by its contents.
async fn apply_context(contexts: &ContextStore, worklist: Option<&archive::Peer>, change: ContextChange) -> Result<Option<serde_json::Value>, String> {
    let mut fields = match change {
        ContextChange::Clear => {
            contexts.clear();
            tracing::info!("examination context cleared");
            return Ok(None);
        }
        ContextChange::Set(fields) => fields,
    };
    let mut study_instance_uid = None;
    let from_worklist = fields.patient_id.is_none();
    if from_worklist {
        let Some(accession) = fields.accession_number.clone() else { return Err("patient_id: required".into()) };
        let Some(peer) = worklist else {
            return Err("patient_id: required (no worklist is configured to look the accession number up: [dicom.worklist])".into());
        };
        let item = archive::look_up_accession(peer, &accession).await.map_err(|e| e.to_string())?;
        fields.patient_id = Some(item.patient_id);
        fields.patient_name = fields.patient_name.or(item.patient_name);
        fields.birth_date = fields.birth_date.or(item.birth_date);
        fields.sex = fields.sex.or(item.sex);
        study_instance_uid = item.study_instance_uid;
        // What the worklist says is checked like what a command says.
        fields = fields.validated().map_err(|e| format!("the worklist entry: {e}"))?;
    }
    let context_id = uuid::Uuid::new_v4().to_string();
    let context = fields
        .into_context(context_id.clone(), crate::report::rfc3339(std::time::SystemTime::now()), study_instance_uid)
        .ok_or("patient_id: required")?;
    contexts.set(context).map_err(|e| e.to_string())?;
    tracing::info!(context_id = %context_id, from_worklist, "examination context set");
    let reply = crate::report::context::ContextReply { context_id, completed_from_worklist: from_worklist };
    serde_json::to_value(reply).map(Some).map_err(|e| e.to_string())
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!("sd_notify: {e}");
    }
}

//! `lesiond run`: wires the stages together and owns the process lifecycle — start-up, systemd
//! readiness and watchdog, reloads (SIGHUP or the `reload` command) and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sd_notify::NotifyState;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::sync::mpsc;

use crate::classifier::{Classifier, ClassifierError};
use crate::commands::{CommandName, Control};
use crate::config::{Config, ConfigError, ConfigOrigin};
use crate::pipeline::{Outputs, Pipeline, PipelineEnd};
use crate::publish::{self, CommandReply, DaemonRequest, FrameImage, LinkError, Mode, Shared};
use crate::source::SourceError;
use crate::spool::{Spool, SpoolError};
use crate::stats::Stats;

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
    #[error("MQTT: {0}")]
    Mqtt(#[from] LinkError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// What the running pipeline is wired to; kept across reloads.
struct Wiring {
    spool: Arc<Spool>,
    frames: mpsc::Sender<FrameImage>,
    stats: Arc<Stats>,
    control: Arc<Control>,
}

impl Wiring {
    fn start(&self, config: &Config, classifier: Classifier) -> Result<Pipeline, SourceError> {
        let outputs = Outputs {
            spool: self.spool.clone(),
            frames: self.frames.clone(),
            stats: self.stats.clone(),
            control: self.control.clone(),
        };
        Pipeline::start(config, classifier, outputs)
    }
}

/// Runs until SIGTERM/SIGINT, or until a finite source is done when `exit_when_done` is set.
/// Returns the run's counters.
pub async fn run(origin: ConfigOrigin, mut config: Config) -> Result<Arc<Stats>, DaemonError> {
    let entered = std::time::Instant::now();
    // Signals first, so a SIGTERM during a slow start-up is not lost.
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(DaemonError::Signals)?;

    let classifier = Classifier::load(&config.model)?;
    let info = classifier.info().clone();
    tracing::info!(model = %info.id, sha256 = %info.sha256, temperature = info.temperature, "{}", info.engine);
    tracing::info!(model = %info.id, "{}", info.status);
    let spool = Arc::new(Spool::open(&config.spool)?);

    let stats = Arc::new(Stats::default());
    let control = Arc::new(Control::default());
    let (frames_tx, frames_rx) = mpsc::channel(4);
    let (requests_tx, mut requests) = mpsc::channel(4);
    let shared = Shared { stats: stats.clone(), spool: spool.clone(), control: control.clone() };
    let publisher = publish::start(&config, shared, frames_rx, requests_tx)?;
    let wiring = Wiring { spool, frames: frames_tx, stats: stats.clone(), control };
    let mut pipeline = wiring.start(&config, classifier)?;

    // READY once the model is loaded and the broker is connected — or after ready_timeout_secs
    // without a broker: the daemon is useful (results are spooled) and must not be killed by
    // systemd while the broker is away.
    let mut connected = publisher.connected.clone();
    let ready_timeout = Duration::from_secs(config.mqtt.ready_timeout_secs);
    let broker_up = tokio::time::timeout(ready_timeout, connected.wait_for(|c| *c)).await.is_ok();
    let status = if broker_up {
        "running".to_string()
    } else {
        format!("running; MQTT broker {}:{} unreachable, retrying (results are spooled)", config.mqtt.host, config.mqtt.port)
    };
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    stats.set_ready_after(entered.elapsed());
    tracing::info!(station = %config.station.id, ready_ms = entered.elapsed().as_millis() as u64, "ready: {status}");

    // The watchdog is fed only while the inference thread turns over: a stuck engine gets the
    // service restarted by systemd.
    let watchdog = sd_notify::watchdog_enabled();
    let mut watchdog_tick = tokio::time::interval(watchdog.map(|w| w / 3).unwrap_or(Duration::from_secs(3600)));

    let end = loop {
        tokio::select! {
            signal = signals.next() => match signal {
                Some(SIGHUP) => {
                    let result = reload(&origin, &mut config, &mut pipeline, &wiring).await;
                    if let Err(e) = result {
                        tracing::error!("reload rejected, keeping the running configuration: {e}");
                    }
                }
                Some(sig) => {
                    tracing::info!(signal = sig, "shutting down: finishing frames in flight");
                    break PipelineEnd::Stopped;
                }
                None => break PipelineEnd::Stopped,
            },
            Some(DaemonRequest::Reload { request_id }) = requests.recv() => {
                let result = reload(&origin, &mut config, &mut pipeline, &wiring).await;
                if let Err(e) = &result {
                    tracing::error!("reload rejected, keeping the running configuration: {e}");
                }
                let reply = CommandReply { name: CommandName::Reload, request_id, result: result.map_err(|e| e.to_string()) };
                let _ = publisher.replies.send(reply).await;
            }
            end = pipeline.ended() => break end,
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                let limit = watchdog.unwrap_or_default();
                if pipeline.heartbeat.age() < limit {
                    notify(&[NotifyState::Watchdog]);
                } else {
                    tracing::error!("inference thread stuck for {:?}; withholding the watchdog ping", pipeline.heartbeat.age());
                }
            }
        }
    };

    notify(&[NotifyState::Stopping]);
    // Graceful shutdown, in pipeline order:
    // 1. on a signal the publisher gets a deadline; a finished batch waits for every PUBACK;
    // 2. the capture thread stops taking frames, the inference thread classifies the queued
    //    ones and spools their results;
    // 3. the publisher sends what it can, publishes `offline` and disconnects. Whatever the
    //    broker did not acknowledge stays in the spool for the next start.
    if end == PipelineEnd::Stopped {
        publisher.set_mode(Mode::Stop);
    }
    tokio::task::block_in_place(|| pipeline.stop_and_join());
    if end == PipelineEnd::SourceDone {
        publisher.set_mode(Mode::Drain);
        let mut publisher = publisher;
        loop {
            tokio::select! {
                _ = &mut publisher.task => break,
                signal = signals.next() => if matches!(signal, Some(SIGTERM) | Some(SIGINT)) {
                    publisher.set_mode(Mode::Stop);
                },
            }
        }
    } else {
        publisher.join().await;
    }
    tracing::info!("stopped: {}", stats.summary());
    Ok(stats)
}

/// Loads and checks the new configuration and its model first; only then swaps the pipeline.
/// A configuration that does not load changes nothing.
async fn reload(origin: &ConfigOrigin, config: &mut Config, pipeline: &mut Pipeline, wiring: &Wiring) -> Result<(), DaemonError> {
    match NotifyState::monotonic_usec_now() {
        // systemd >= 253 wants the reload timestamp in the same message.
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
    let result = async {
        let new_config = Config::load(origin)?;
        if new_config.mqtt != config.mqtt
            || new_config.station != config.station
            || new_config.log != config.log
            || new_config.spool != config.spool
        {
            tracing::warn!("[mqtt], [station], [spool] and [log] changes take effect at the next restart");
        }
        let classifier = Classifier::load(&new_config.model)?;
        // Stop the old pipeline (finishing its frames) before the new one opens the camera.
        let old = std::mem::replace(pipeline, Pipeline::idle());
        tokio::task::block_in_place(|| old.stop_and_join());
        match wiring.start(&new_config, classifier) {
            Ok(p) => {
                *pipeline = p;
                *config = new_config;
                tracing::info!("configuration reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!("the new source failed ({e}); restarting the previous configuration");
                *pipeline = wiring.start(config, Classifier::load(&config.model)?)?;
                Err(e.into())
            }
        }
    }
    .await;
    notify(&[NotifyState::Ready]);
    result
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!("sd_notify: {e}");
    }
}

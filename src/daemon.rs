//! `lesiond run`: wires the stages together and owns the process lifecycle — start-up, systemd
//! readiness and watchdog, SIGHUP reloads and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sd_notify::NotifyState;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::sync::mpsc;

use crate::classifier::{Classifier, ClassifierError};
use crate::config::{Config, ConfigError, ConfigOrigin};
use crate::pipeline::{Pipeline, PipelineEnd};
use crate::publish::{self, ResultMessage};
use crate::source::SourceError;
use crate::stats::Stats;

/// Results waiting between the inference thread and the publisher.
const RESULTS_CHANNEL: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Model(#[from] ClassifierError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Runs until SIGTERM/SIGINT, or until a finite source is done when `exit_when_done` is set.
pub async fn run(origin: ConfigOrigin, mut config: Config) -> Result<(), DaemonError> {
    // Signals first, so a SIGTERM during a slow start-up is not lost.
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(DaemonError::Signals)?;

    let classifier = Classifier::load(&config.model)?;
    let info = classifier.info().clone();
    tracing::info!(model = %info.id, sha256 = %info.sha256, temperature = info.temperature, "{}", info.engine);

    let stats = Arc::new(Stats::default());
    let (results_tx, results_rx) = mpsc::channel::<ResultMessage>(RESULTS_CHANNEL);
    let publisher = publish::start(&config, stats.clone(), results_rx);
    let mut pipeline = Pipeline::start(&config, classifier, results_tx.clone(), stats.clone())?;

    // READY once the model is loaded and the broker is connected — or after ready_timeout_secs
    // without a broker: the daemon is useful (and must not be killed by systemd) while the
    // broker is away.
    let mut connected = publisher.connected.clone();
    let ready_timeout = Duration::from_secs(config.mqtt.ready_timeout_secs);
    let broker_up = tokio::time::timeout(ready_timeout, connected.wait_for(|c| *c)).await.is_ok();
    let status = if broker_up { "running".to_string() } else { format!("running; MQTT broker {}:{} unreachable, retrying", config.mqtt.host, config.mqtt.port) };
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    tracing::info!(station = %config.station.id, "ready: {status}");

    // The watchdog is fed only while the inference thread turns over: a stuck engine gets the
    // service restarted by systemd.
    let watchdog = sd_notify::watchdog_enabled();
    let mut watchdog_tick = tokio::time::interval(watchdog.map(|w| w / 3).unwrap_or(Duration::from_secs(3600)));

    let end = loop {
        tokio::select! {
            signal = signals.next() => match signal {
                Some(SIGHUP) => {
                    // systemd >= 253 wants the reload timestamp in the same message.
                    match NotifyState::monotonic_usec_now() {
                        Ok(now) => notify(&[NotifyState::Reloading, now]),
                        Err(_) => notify(&[NotifyState::Reloading]),
                    }
                    match reload(&origin, &config) {
                        Ok((new_config, classifier)) => {
                            // Stop the old pipeline (finishing its frames) before the new one opens the camera.
                            tokio::task::block_in_place(|| pipeline.stop_and_join());
                            match Pipeline::start(&new_config, classifier, results_tx.clone(), stats.clone()) {
                                Ok(p) => {
                                    pipeline = p;
                                    config = new_config;
                                    tracing::info!("configuration reloaded");
                                }
                                Err(e) => {
                                    tracing::error!("reload failed, restarting with the previous configuration: {e}");
                                    let classifier = Classifier::load(&config.model)?;
                                    pipeline = Pipeline::start(&config, classifier, results_tx.clone(), stats.clone())?;
                                }
                            }
                        }
                        Err(e) => tracing::error!("reload rejected, keeping the running configuration: {e}"),
                    }
                    notify(&[NotifyState::Ready]);
                }
                Some(sig) => {
                    tracing::info!(signal = sig, "shutting down: finishing frames in flight");
                    break PipelineEnd::Stopped;
                }
                None => break PipelineEnd::Stopped,
            },
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
    // 1. a signal (not a finished batch) gives the publisher a deadline to flush what it has;
    // 2. the capture thread stops taking frames, the inference thread finishes the queued ones;
    // 3. closing the results channel lets the publisher wait for the last acknowledgements,
    //    publish `offline` and disconnect.
    if end != PipelineEnd::SourceDone {
        publisher.request_shutdown();
    }
    tokio::task::block_in_place(|| pipeline.stop_and_join());
    drop(results_tx);
    if end == PipelineEnd::SourceDone {
        // A batch waits for every acknowledgement; a signal meanwhile still cuts it short.
        let mut publisher = publisher;
        loop {
            tokio::select! {
                _ = &mut publisher.task => break,
                signal = signals.next() => if matches!(signal, Some(SIGTERM) | Some(SIGINT)) {
                    publisher.request_shutdown();
                },
            }
        }
    } else {
        publisher.join().await;
    }
    tracing::info!("stopped: {}", stats.summary());
    Ok(())
}

/// Loads and checks the new configuration and its model; nothing running is touched yet.
fn reload(origin: &ConfigOrigin, current: &Config) -> Result<(Config, Classifier), DaemonError> {
    let new_config = Config::load(origin)?;
    if new_config.mqtt != current.mqtt || new_config.station != current.station || new_config.log != current.log {
        tracing::warn!("[mqtt], [station] and [log] changes take effect at the next restart");
    }
    let classifier = Classifier::load(&new_config.model)?;
    Ok((new_config, classifier))
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!("sd_notify: {e}");
    }
}

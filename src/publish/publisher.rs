//! The MQTT publisher task: owns the rumqttc event loop and the [`Outbox`].
//!
//! Everything happens on this one task on purpose: messages are given to the client only while
//! connected and only from here, so when the connection drops we know exactly which messages
//! rumqttc holds, and after a reconnect we know what must be sent again.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, ClientError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::outbox::{Message, MessageKind, Outbox};
use super::{ResultMessage, Topics, STATUS_OFFLINE, STATUS_ONLINE};
use crate::config::Config;
use crate::stats::Stats;

/// How many requests rumqttc may buffer between us and the socket.
const CLIENT_CAPACITY: usize = 64;
/// Results held in memory while the broker is away before the pipeline is slowed down.
const MAX_WAITING: usize = 1000;
/// On SIGTERM: how long to wait for the broker to acknowledge what is in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub struct PublisherHandle {
    /// True while connected to the broker.
    pub connected: watch::Receiver<bool>,
    /// Set to true to finish within [`SHUTDOWN_GRACE`]: publish `offline`, disconnect.
    shutdown: watch::Sender<bool>,
    /// Ends when the publisher has finished.
    pub task: tokio::task::JoinHandle<()>,
}

impl PublisherHandle {
    pub fn request_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits for the publisher to finish.
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!("publisher task failed: {e}");
        }
    }
}

/// Connects (in the background, retrying) and starts publishing what arrives on `results`.
/// When `results` closes, the publisher waits until every result is acknowledged, publishes
/// `offline` and disconnects.
pub fn start(config: &Config, stats: Arc<Stats>, results: mpsc::Receiver<ResultMessage>) -> PublisherHandle {
    let topics = Topics::new(config);
    let mut options = MqttOptions::new(config.client_id(), config.mqtt.host.clone(), config.mqtt.port);
    options.set_keep_alive(Duration::from_secs(config.mqtt.keep_alive_secs));
    options.set_clean_session(true);
    options.set_last_will(LastWill::new(&topics.status, STATUS_OFFLINE, QoS::AtLeastOnce, true));
    let (client, eventloop) = AsyncClient::new(options, CLIENT_CAPACITY);
    let (connected_tx, connected) = watch::channel(false);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let broker = format!("{}:{}", config.mqtt.host, config.mqtt.port);
    let task = tokio::spawn(
        Publisher {
            client,
            eventloop,
            outbox: Outbox::default(),
            topics,
            stats,
            connected: connected_tx,
            broker,
        }
        .run(results, shutdown_rx),
    );
    PublisherHandle { connected, shutdown, task }
}

struct Publisher {
    client: AsyncClient,
    eventloop: EventLoop,
    outbox: Outbox,
    topics: Topics,
    stats: Arc<Stats>,
    connected: watch::Sender<bool>,
    broker: String,
}

impl Publisher {
    fn status(&self, text: &str) -> Message {
        Message {
            kind: MessageKind::Status,
            topic: self.topics.status.clone(),
            payload: text.as_bytes().to_vec(),
            qos: QoS::AtLeastOnce,
            retain: true,
        }
    }

    fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Gives waiting messages to the client while it has room.
    fn submit_waiting(&mut self) {
        if !self.is_connected() {
            return;
        }
        while let Some(m) = self.outbox.next_waiting() {
            match self.client.try_publish(m.topic.clone(), m.qos, m.retain, m.payload.clone()) {
                Ok(()) => {
                    if matches!(m.kind, MessageKind::Result { .. }) {
                        Stats::inc(&self.stats.published);
                    }
                    self.outbox.submitted(m);
                }
                Err(ClientError::TryRequest(_)) | Err(ClientError::Request(_)) => {
                    self.outbox.not_submitted(m);
                    break;
                }
            }
        }
    }

    fn accept(&mut self, r: ResultMessage) {
        if let Some(jpeg) = r.frame_jpeg {
            self.outbox.push(Message {
                kind: MessageKind::Frame,
                topic: self.topics.frame(&r.result_id),
                payload: jpeg,
                qos: QoS::AtMostOnce,
                retain: false,
            });
        }
        self.outbox.push(Message {
            kind: MessageKind::Result { result_id: r.result_id },
            topic: self.topics.classification.clone(),
            payload: r.json,
            qos: QoS::AtLeastOnce,
            retain: false,
        });
    }

    /// Handles one event loop outcome. Returns the time to wait before polling again after an
    /// error.
    fn on_event(&mut self, event: Result<Event, rumqttc::ConnectionError>, backoff: &mut Duration) -> Option<Duration> {
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                tracing::info!(broker = %self.broker, session_present = ack.session_present, "connected to MQTT broker");
                if !ack.session_present {
                    self.outbox.on_session_lost();
                }
                let online = self.status(STATUS_ONLINE);
                self.outbox.push_front(online);
                let _ = self.connected.send(true);
                *backoff = Duration::from_millis(500);
                None
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(Message { kind: MessageKind::Result { .. }, .. }) = self.outbox.on_puback(ack.pkid) {
                    Stats::inc(&self.stats.acknowledged);
                }
                None
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                self.outbox.on_outgoing_publish(pkid);
                None
            }
            Ok(_) => None,
            Err(e) => {
                if self.is_connected() {
                    tracing::warn!(broker = %self.broker, "lost the MQTT broker: {e}; reconnecting");
                } else if *backoff <= Duration::from_millis(500) {
                    tracing::warn!(broker = %self.broker, "cannot reach the MQTT broker: {e}; retrying with backoff");
                } else {
                    tracing::debug!(broker = %self.broker, "MQTT connect failed: {e}");
                }
                let _ = self.connected.send(false);
                let wait = with_jitter(*backoff);
                *backoff = (*backoff * 2).min(MAX_BACKOFF);
                Some(wait)
            }
        }
    }

    async fn run(mut self, mut results: mpsc::Receiver<ResultMessage>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(500);
        let mut retry_at: Option<Instant> = None;
        let mut results_open = true;
        let mut deadline: Option<Instant> = None;
        loop {
            self.submit_waiting();
            if !results_open && self.outbox.unacked_results() == 0 {
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                tracing::warn!(
                    "shutting down with {} result(s) not acknowledged by the broker",
                    self.outbox.unacked_results()
                );
                break;
            }
            // While disconnected, results wait in the channel (slowing the pipeline) instead of
            // piling up here; once shutting down, take everything that is left.
            let take_results = results_open
                && (self.is_connected() || deadline.is_some())
                && self.outbox.waiting_len() < MAX_WAITING;
            tokio::select! {
                event = self.eventloop.poll(), if retry_at.is_none() => {
                    retry_at = self.on_event(event, &mut backoff).map(|wait| Instant::now() + wait);
                }
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    retry_at = None;
                }
                received = results.recv(), if take_results => match received {
                    Some(r) => self.accept(r),
                    None => results_open = false,
                },
                _ = shutdown.changed(), if deadline.is_none() => {
                    deadline = Some(Instant::now() + SHUTDOWN_GRACE);
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {}
            }
        }
        self.go_offline().await;
    }

    /// Publishes the retained `offline` status and disconnects cleanly (no last will then).
    async fn go_offline(&mut self) {
        if !self.is_connected() {
            return;
        }
        let offline = self.status(STATUS_OFFLINE);
        self.outbox.push_front(offline);
        self.submit_waiting();
        let until = Instant::now() + Duration::from_secs(2);
        let mut backoff = Duration::ZERO;
        while self.outbox.has_unacked(&MessageKind::Status) && Instant::now() < until {
            match tokio::time::timeout_at(until, self.eventloop.poll()).await {
                Ok(event) => {
                    if self.on_event(event, &mut backoff).is_some() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        if self.client.try_disconnect().is_ok() {
            let until = Instant::now() + Duration::from_secs(1);
            while let Ok(Ok(event)) = tokio::time::timeout_at(until, self.eventloop.poll()).await {
                if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
        }
        let _ = self.connected.send(false);
        tracing::info!("published offline status and disconnected");
    }
}

/// Adds up to 25% random jitter so a fleet of stations does not reconnect in lockstep.
fn with_jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d + d.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

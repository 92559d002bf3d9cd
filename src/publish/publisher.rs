//! The MQTT publisher task: owns the connection ([`Link`]) and the [`Outbox`], sends spooled
//! results in order, the retained status and stats, and answers commands.
//!
//! Everything happens on this one task on purpose: messages are given to the client only while
//! connected and only from here, so when the connection drops we know exactly what rumqttc
//! held. Results are never held only in memory: they are in the spool until their PUBACK, and
//! after a reconnect the spool is simply read again from its oldest entry.
//!
//! No blocking on the async workers: spool reads run on tokio's blocking pool and arrive as
//! events; an acknowledged entry leaves the spool's index at once and its file is deleted on
//! the blocking pool. The spool's lock is never held across file I/O, so a slow SD card delays
//! neither PUBACK handling nor keep-alives.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::QoS;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::link::{Link, LinkError, LinkEvent, LinkFailure};
use super::state_throttle::StateThrottle;
use super::incoming::{CommandGate, Verdict};
use super::outbox::{Dropped, Message, MessageKind, Outbox};
use super::{Topics, STATUS_OFFLINE, STATUS_ONLINE};
use crate::commands::{self, CommandName, Control};
use crate::report::context::ContextChange;
use crate::config::MqttConfig;
use crate::report::reply::Reply;
use crate::report::status::StatusPayload;
use crate::report::thumbnail::Thumbnail;
use crate::spool::{self, Spool, SpooledResult};
use crate::stats::Stats;
use crate::supervision::Heartbeat;

/// A spool read in progress on the blocking pool, tagged with the session it was started in.
type SpoolRead = (u64, tokio::task::JoinHandle<Vec<SpooledResult>>);

/// Results read from the spool and not yet acknowledged, at most.
const RESULT_WINDOW: usize = 32;
/// On SIGTERM: how long to wait for the broker to acknowledge what is in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the daemon wants from the publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Running,
    /// The pipeline has finished a batch: send everything in the spool, then finish.
    Drain,
    /// Shutting down: finish within [`SHUTDOWN_GRACE`]; what is not acknowledged stays spooled.
    Stop,
}

/// A request the publisher passes to the daemon (it owns the configuration).
#[derive(Debug)]
pub enum DaemonRequest {
    Reload { request_id: Option<String> },
    /// Set or clear the examination context (the daemon owns the context store, and a
    /// worklist lookup must not hold up the publisher).
    Context { request_id: Option<String>, change: ContextChange },
}

/// A reply the daemon passes back for publishing.
#[derive(Debug)]
pub struct CommandReply {
    pub name: CommandName,
    pub request_id: Option<String>,
    /// What the command did (a `context`'s id), or why it failed.
    pub result: Result<Option<serde_json::Value>, String>,
}

pub struct PublisherHandle {
    /// True while connected to the broker.
    pub connected: watch::Receiver<bool>,
    mode: watch::Sender<Mode>,
    /// Ends when the publisher has finished; the daemon watches it (an end it did not ask for
    /// is a failure).
    pub task: tokio::task::JoinHandle<()>,
    /// Beats on every turn of the publisher's loop (at least every second).
    pub heartbeat: Arc<Heartbeat>,
    /// Replies to commands the daemon carried out.
    pub replies: mpsc::Sender<CommandReply>,
}

impl PublisherHandle {
    pub fn set_mode(&self, mode: Mode) {
        let _ = self.mode.send(mode);
    }

    /// Waits for the publisher to finish.
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!("publisher task failed: {e}");
        }
    }
}

/// Everything the publisher shares with the rest of the daemon.
pub struct Shared {
    pub stats: Arc<Stats>,
    pub spool: Arc<Spool>,
    /// This destination's cursor in the spool.
    pub delivery: spool::Delivery,
    pub control: Arc<Control>,
    /// The station's state as the examination last serialized it (retained on `state`).
    pub states: watch::Receiver<Option<Vec<u8>>>,
}


/// Starts the publisher: it connects in the background (retrying with backoff) and publishes
/// what the spool holds and what arrives.
pub fn start(
    mqtt: &MqttConfig,
    station_id: &str,
    shared: Shared,
    frames: mpsc::Receiver<Thumbnail>,
    requests: mpsc::Sender<DaemonRequest>,
) -> Result<PublisherHandle, LinkError> {
    let topics = Topics::new(mqtt, station_id);
    let link = Link::new(mqtt, &mqtt.client_id, &topics.status, STATUS_OFFLINE)?;
    let (connected_tx, connected) = watch::channel(false);
    let (mode, mode_rx) = watch::channel(Mode::Running);
    let (replies, replies_rx) = mpsc::channel(16);
    let stats_every = (mqtt.stats_interval_secs > 0).then(|| Duration::from_secs(mqtt.stats_interval_secs));
    let heartbeat = Arc::new(Heartbeat::new());
    let publisher = Publisher {
        link,
        outbox: Outbox::default(),
        cursor: None,
        reading: None,
        session: 0,
        acked: 0,
        heartbeat: heartbeat.clone(),
        topics,
        station_id: station_id.to_string(),
        shared,
        connected: connected_tx,
        broker: format!("{}:{}", mqtt.host, mqtt.port),
        requests,
        gate: CommandGate::default(),
    };
    let task = tokio::spawn(publisher.run(frames, replies_rx, mode_rx, stats_every));
    Ok(PublisherHandle { connected, mode, task, replies, heartbeat })
}

struct Publisher {
    link: Link,
    outbox: Outbox,
    /// The last spool entry handed to the outbox.
    cursor: Option<u64>,
    /// The spool read in flight, if any.
    reading: Option<SpoolRead>,
    /// Counts broker sessions lost: a read started before the loss is stale.
    session: u64,
    /// Results acknowledged so far (for the test-only fault hook).
    acked: u64,
    heartbeat: Arc<Heartbeat>,
    topics: Topics,
    station_id: String,
    shared: Shared,
    connected: watch::Sender<bool>,
    broker: String,
    requests: mpsc::Sender<DaemonRequest>,
    /// Which incoming messages are commands to obey (see `incoming.rs`).
    gate: CommandGate,
}

impl Publisher {
    fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    fn state(&self) -> StatusPayload<'_> {
        StatusPayload {
            schema_version: crate::report::status::SCHEMA_VERSION,
            station_id: &self.station_id,
            connected: self.is_connected(),
            paused: self.shared.control.is_paused(),
            spool: self.shared.spool.stats(),
            stats: self.shared.stats.snapshot(),
        }
    }

    fn status(&self, text: &str) -> Message {
        Message {
            kind: MessageKind::Status,
            topic: self.topics.status.clone(),
            payload: text.as_bytes().to_vec(),
            qos: QoS::AtLeastOnce,
            retain: true,
        }
    }

    /// Queues a message, counting what the bounded outbox dropped to make room.
    fn enqueue(&mut self, message: Message) {
        let dropped = self.outbox.push(message);
        self.count_dropped(dropped);
    }

    fn count_dropped(&self, Dropped { thumbnails, stats, replies, states }: Dropped) {
        let s = &self.shared.stats;
        s.states_dropped.fetch_add(states, std::sync::atomic::Ordering::Relaxed);
        s.thumbnails_dropped.fetch_add(thumbnails, std::sync::atomic::Ordering::Relaxed);
        s.stats_dropped.fetch_add(stats, std::sync::atomic::Ordering::Relaxed);
        s.replies_dropped.fetch_add(replies, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts reading the next spooled results on the blocking pool (the SD card may be slow),
    /// keeping a bounded window in flight; one read at a time.
    fn fill_from_spool(&mut self) {
        if !self.is_connected() || self.reading.is_some() {
            return;
        }
        let want = RESULT_WINDOW.saturating_sub(self.outbox.unacked_results());
        if want == 0 || !self.shared.spool.has_after(self.shared.delivery, self.cursor) {
            return;
        }
        let (spool, delivery, after) = (self.shared.spool.clone(), self.shared.delivery, self.cursor);
        self.reading = Some((self.session, tokio::task::spawn_blocking(move || spool.read_batch(delivery, after, want))));
    }

    /// A spool read finished: its results go to the outbox, unless the session it was made for
    /// is gone (then the spool is read again from its oldest entry).
    fn on_spool_read(&mut self, session: u64, batch: Vec<SpooledResult>) {
        if session != self.session {
            return;
        }
        for entry in batch {
            self.cursor = Some(entry.number);
            let topic = match entry.kind {
                spool::EntryKind::Classification => self.topics.classification.clone(),
                spool::EntryKind::Assessment => self.topics.assessment.clone(),
            };
            self.enqueue(Message {
                kind: MessageKind::Result { number: entry.number },
                topic,
                payload: entry.json,
                qos: QoS::AtLeastOnce,
                retain: false,
            });
        }
    }

    /// Gives waiting messages to the client while it has room.
    fn submit_waiting(&mut self) {
        if !self.is_connected() {
            return;
        }
        while let Some(m) = self.outbox.next_waiting() {
            match self.link.try_publish(&m.topic, m.qos, m.retain, m.payload.clone()) {
                Ok(()) => {
                    if matches!(m.kind, MessageKind::Result { .. }) {
                        Stats::inc(&self.shared.stats.published);
                    }
                    self.outbox.submitted(m);
                }
                Err(_) => {
                    self.outbox.not_submitted(m);
                    break;
                }
            }
        }
    }

    fn reply<T: Serialize>(&mut self, name: &str, request_id: Option<String>, result: Result<Option<T>, String>) {
        let reply = Reply::new(name, request_id, result);
        match serde_json::to_vec(&reply) {
            Ok(payload) => self.enqueue(Message {
                kind: MessageKind::Reply,
                topic: self.topics.reply(name),
                payload,
                qos: QoS::AtLeastOnce,
                retain: false,
            }),
            Err(e) => tracing::error!("cannot serialize a reply: {e}"),
        }
    }

    fn on_command(&mut self, name: &str, payload: &[u8]) {
        let command = match commands::parse(name, payload) {
            Ok(c) => c,
            Err(refused) => {
                tracing::warn!(command = %name.chars().take(64).collect::<String>(), "refused command: {}", refused.error);
                // The reply topic names the command as received (topic-safe: it came from one).
                self.reply::<()>(name, refused.request_id, Err(refused.error.to_string()));
                return;
            }
        };
        tracing::info!(command = ?command.name, request_id = ?command.request_id, "command");
        let control = self.shared.control.clone();
        let ok = || Ok::<Option<()>, String>(None);
        match command.name {
            CommandName::Pause => {
                control.pause();
                self.reply("pause", command.request_id, ok());
            }
            CommandName::Resume => {
                control.resume();
                self.reply("resume", command.request_id, ok());
            }
            CommandName::Capture => {
                control.request_capture();
                self.reply("capture", command.request_id, ok());
            }
            CommandName::Status => {
                let state = serde_json::to_value(self.state()).map_err(|e| e.to_string());
                self.reply("status", command.request_id, state.map(Some));
            }
            CommandName::Reload => {
                if let Err(e) = self.requests.try_send(DaemonRequest::Reload { request_id: command.request_id.clone() }) {
                    self.reply::<()>("reload", command.request_id, Err(format!("daemon busy: {e}")));
                }
            }
            CommandName::Context => {
                let Some(change) = command.context else { return };
                if let Err(e) = self.requests.try_send(DaemonRequest::Context { request_id: command.request_id.clone(), change }) {
                    self.reply::<()>("context", command.request_id, Err(format!("daemon busy: {e}")));
                }
            }
        }
    }

    /// Handles one event loop outcome. Returns how long to wait before polling again after a
    /// connection error.
    fn on_event(&mut self, event: Result<LinkEvent, LinkFailure>, backoff: &mut Duration) -> Option<Duration> {
        match event {
            Ok(LinkEvent::Connected { session_present }) => {
                tracing::info!(broker = %self.broker, session_present, "connected to MQTT broker");
                if !session_present {
                    // rumqttc dropped what it held: start again from the oldest spooled result.
                    let lost = self.outbox.on_session_lost();
                    self.count_dropped(lost);
                    self.cursor = None;
                    self.session += 1;
                }
                let online = self.status(STATUS_ONLINE);
                self.outbox.push_front(online);
                if self.gate.may_subscribe(std::time::Instant::now()) {
                    let _ = self.link.try_subscribe(&self.topics.commands);
                }
                let _ = self.connected.send(true);
                *backoff = FIRST_BACKOFF;
                None
            }
            Ok(LinkEvent::PubAck(pkid)) => {
                if let Some(Message { kind: MessageKind::Result { number }, .. }) = self.outbox.on_puback(pkid) {
                    // Out of this destination's index now (no I/O); the file work goes on the
                    // blocking pool.
                    if let Some((waited, cleanup)) = self.shared.spool.acknowledge(self.shared.delivery, number) {
                        self.shared.stats.record_publish(waited);
                        let spool = self.shared.spool.clone();
                        tokio::task::spawn_blocking(move || spool.finish(cleanup));
                    }
                    Stats::inc(&self.shared.stats.acknowledged);
                    self.acked += 1;
                    crate::fault::after_ack(self.acked);
                }
                None
            }
            Ok(LinkEvent::Sent(pkid)) => {
                self.outbox.on_outgoing_publish(pkid);
                None
            }
            Ok(LinkEvent::Message { topic, payload, retained }) => {
                match self.gate.on_message(&self.topics.command_prefix, &topic, retained, &payload) {
                    Verdict::Obey(name) => self.on_command(&name, &payload),
                    Verdict::IgnoreRetained { first } => {
                        Stats::inc(&self.shared.stats.commands_ignored_retained);
                        if first {
                            tracing::warn!(
                                topic = %topic.chars().take(128).collect::<String>(),
                                "ignored a retained message on a command topic: commands are never taken from retained messages (delete it: mosquitto_pub -r -n -t <topic>)"
                            );
                        }
                    }
                    Verdict::IgnoreEmpty | Verdict::NotACommand => Stats::inc(&self.shared.stats.incoming_dropped),
                }
                None
            }
            Ok(LinkEvent::Oversized { topic, len }) => {
                Stats::inc(&self.shared.stats.incoming_dropped);
                if self.gate.log_oversized() {
                    tracing::warn!(
                        topic = %topic.chars().take(128).collect::<String>(),
                        "dropped an incoming message of {len} bytes (commands are at most {} bytes)", commands::MAX_PAYLOAD
                    );
                }
                None
            }
            Ok(LinkEvent::Disconnected | LinkEvent::Other) => None,
            Err(LinkFailure { text: e, oversized_incoming }) => {
                if oversized_incoming {
                    Stats::inc(&self.shared.stats.incoming_dropped);
                    let off_for = self.gate.on_oversized_packet(std::time::Instant::now());
                    tracing::error!(
                        broker = %self.broker,
                        "the broker sent a packet over {} bytes, which cost the connection (MQTT 3.1.1 cannot skip it); most likely a retained message on a command topic. Commands are off for {} s so that it is not fetched again at every reconnect; results still go out. Delete that retained message, or use mqtt.protocol = \"v5\" (the broker then drops such messages for us)",
                        super::link::MAX_INCOMING_V311, off_for.as_secs()
                    );
                }
                if self.is_connected() {
                    tracing::warn!(broker = %self.broker, "lost the MQTT broker: {e}; reconnecting");
                } else if *backoff <= FIRST_BACKOFF {
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

    async fn run(
        mut self,
        mut frames: mpsc::Receiver<Thumbnail>,
        mut replies: mpsc::Receiver<CommandReply>,
        mut mode: watch::Receiver<Mode>,
        stats_every: Option<Duration>,
    ) {
        let mut backoff = FIRST_BACKOFF;
        let mut retry_at: Option<Instant> = None;
        let mut deadline: Option<Instant> = None;
        let mut stats_tick = tokio::time::interval(stats_every.unwrap_or(Duration::from_secs(3600)));
        // Wakes the loop every second, so its heartbeat shows it is alive (not at once: see the
        // note on connecting below).
        let mut beat_tick = tokio::time::interval_at(Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
        let spool = self.shared.spool.clone();
        let mut state = StateThrottle::new(self.shared.states.clone());
        loop {
            self.heartbeat.beat();
            if self.is_connected() {
                if let Some(latest) = state.take(Instant::now()) {
                    if let Some(payload) = latest {
                        self.enqueue(Message { kind: MessageKind::State, topic: self.topics.state.clone(), payload, qos: QoS::AtLeastOnce, retain: true });
                    }
                }
            }
            let was_connected = self.is_connected();
            // A connection attempt is under way: see the note on `select!` below.
            let connecting = !was_connected && retry_at.is_none();
            self.fill_from_spool();
            self.submit_waiting();
            let current = *mode.borrow();
            // The last state belongs to the work being finished: a batch run in continuous mode
            // ends seconds after it clears the retained state, and a screen must not keep
            // showing a stale one. While disconnected there is no waiting for it: the next start
            // publishes its own state.
            let state_settled = !self.is_connected() || state.settled(self.outbox.has_unacked(&MessageKind::State));
            // Done with what is ours: results the archive (its own cursor) has yet to file are
            // not the publisher's to wait for.
            let done = spool.pending(self.shared.delivery) == 0 && self.outbox.unacked_results() == 0 && state_settled;
            if current != Mode::Running && done {
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let left = spool.pending(self.shared.delivery);
                tracing::warn!("stopping with {left} result(s) not yet acknowledged; they stay in the spool for the next start");
                break;
            }
            let state_wait = state.wait_until(Instant::now()).filter(|_| self.is_connected());
            // While a connection attempt is under way (`connecting`), only the link is polled,
            // plus what ends the run (a mode change, the shutdown deadline): rumqttc's poll is not
            // cancel-safe before CONNACK, and a poll dropped for another arm drops the half-open
            // connection (the broker then publishes our will, `offline`). Every other arm is
            // guarded by `connected`, `retry_at` (waiting out a backoff, no poll under way) or
            // `!connecting`. Stopping may abandon a half-open connection: we are going away.
            tokio::select! {
                event = self.link.poll(), if retry_at.is_none() => {
                    retry_at = self.on_event(event, &mut backoff).map(|wait| Instant::now() + wait);
                    if !was_connected && self.is_connected() {
                        state.mark_due(); // the broker may have lost it, or missed changes
                    }
                }
                () = state.changed(), if state.watching() && !connecting => {}
                _ = tokio::time::sleep_until(state_wait.unwrap_or_else(Instant::now)), if state_wait.is_some() => {}
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    retry_at = None;
                }
                _ = spool.appended(self.shared.delivery).notified(), if self.is_connected() => {}
                (session, batch) = next_spool_read(&mut self.reading), if self.reading.is_some() && self.is_connected() => {
                    self.reading = None;
                    match batch {
                        Ok(batch) => self.on_spool_read(session, batch),
                        Err(e) => tracing::error!("spool read failed: {e}; retrying"),
                    }
                }
                _ = beat_tick.tick(), if self.is_connected() || retry_at.is_some() => {}
                // Not taken while disconnected: the inference thread counts what it cannot hand over.
                Some(frame) = frames.recv(), if self.is_connected() => {
                    if self.is_connected() {
                        self.enqueue(Message {
                            kind: MessageKind::Frame,
                            topic: self.topics.frame(&frame.result_id),
                            payload: frame.jpeg,
                            qos: QoS::AtMostOnce,
                            retain: false,
                        });
                    } else {
                        Stats::inc(&self.shared.stats.thumbnails_dropped);
                    }
                }
                Some(r) = replies.recv(), if self.is_connected() => {
                    self.reply(r.name.as_str(), r.request_id, r.result);
                }
                _ = stats_tick.tick(), if stats_every.is_some() && self.is_connected() => {
                    match serde_json::to_vec(&self.state()) {
                        Ok(payload) => self.enqueue(Message {
                            kind: MessageKind::Stats,
                            topic: self.topics.stats.clone(),
                            payload,
                            qos: QoS::AtLeastOnce,
                            retain: true,
                        }),
                        Err(e) => tracing::error!("cannot serialize stats: {e}"),
                    }
                }
                changed = mode.changed() => {
                    if changed.is_err() || *mode.borrow() == Mode::Stop {
                        deadline.get_or_insert_with(|| Instant::now() + SHUTDOWN_GRACE);
                    }
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
            match tokio::time::timeout_at(until, self.link.poll()).await {
                Ok(event) => {
                    if self.on_event(event, &mut backoff).is_some() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        if self.link.try_disconnect().is_ok() {
            let until = Instant::now() + Duration::from_secs(1);
            while let Ok(Ok(event)) = tokio::time::timeout_at(until, self.link.poll()).await {
                if matches!(event, LinkEvent::Disconnected) {
                    break;
                }
            }
        }
        let _ = self.connected.send(false);
        tracing::info!("published offline status and disconnected");
    }
}

/// Waits for the spool read in flight (the select arm is disabled when there is none).
async fn next_spool_read(reading: &mut Option<SpoolRead>) -> (u64, Result<Vec<SpooledResult>, tokio::task::JoinError>) {
    match reading.as_mut() {
        Some((session, handle)) => {
            let session = *session;
            (session, handle.await)
        }
        None => std::future::pending().await,
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

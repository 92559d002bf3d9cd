//! Bookkeeping for messages on their way to the broker, so that "published" means acknowledged.
//!
//! rumqttc assigns packet ids itself and reports them as `Outgoing::Publish(pkid)` events in the
//! order the requests were submitted. The outbox mirrors that: `waiting` (not yet given to the
//! client), `queued` (given, no packet id seen yet), `inflight` (sent with a packet id, waiting
//! for PUBACK). When the broker starts a fresh session, rumqttc throws its unacknowledged
//! packets away; the outbox puts them back in front of `waiting` to be sent again.
//!
//! `waiting` is bounded ([`WAITING_LIMIT`]): while the broker is slow or frozen, stats and
//! thumbnails pile up there. A newer stats message supersedes a waiting one; when full,
//! thumbnails go first, then stats, then replies — each drop counted by the caller. Results are
//! never dropped here (they stay in the spool, and the publisher reads at most a window of
//! them), nor is the status.

use std::collections::VecDeque;

use rumqttc::QoS;

#[derive(Debug, Clone, PartialEq)]
pub enum MessageKind {
    /// A spooled result (a classification or an assessment): spool entry `number`, removed
    /// from the spool on PUBACK.
    Result { number: u64 },
    /// The retained online/offline status.
    Status,
    /// The retained counters.
    Stats,
    /// The retained station state (only the newest matters).
    State,
    /// A reply to a command.
    Reply,
    /// A downscaled frame (QoS 0, only when enabled).
    Frame,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: MessageKind,
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
}

/// Messages waiting for the client, at most (results and status excepted: those are bounded by
/// the publisher's result window and by there being one status).
pub const WAITING_LIMIT: usize = 64;

/// What a push dropped, by kind, for the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub thumbnails: u64,
    pub stats: u64,
    pub replies: u64,
    pub states: u64,
}

impl Dropped {
    fn count(&mut self, kind: &MessageKind) {
        match kind {
            MessageKind::Frame => self.thumbnails += 1,
            MessageKind::Stats => self.stats += 1,
            MessageKind::Reply => self.replies += 1,
            MessageKind::State => self.states += 1,
            MessageKind::Result { .. } | MessageKind::Status => {}
        }
    }
}

#[derive(Debug, Default)]
pub struct Outbox {
    waiting: VecDeque<Message>,
    queued: VecDeque<Message>,
    inflight: Vec<(u16, Message)>,
}

impl Outbox {
    /// Queues `message` for the client, keeping `waiting` bounded; returns what was dropped.
    pub fn push(&mut self, message: Message) -> Dropped {
        let mut dropped = Dropped::default();
        if matches!(message.kind, MessageKind::Stats | MessageKind::State) {
            // Retained counters and state: only the newest matters.
            let kind = message.kind.clone();
            let before = self.waiting.len();
            self.waiting.retain(|m| m.kind != kind);
            let superseded = (before - self.waiting.len()) as u64;
            if kind == MessageKind::Stats {
                dropped.stats += superseded;
            } else {
                dropped.states += superseded;
            }
        }
        let droppable = |m: &Message| matches!(m.kind, MessageKind::Frame | MessageKind::Stats | MessageKind::State | MessageKind::Reply);
        if droppable(&message) {
            while self.waiting.len() >= WAITING_LIMIT {
                // The least valuable waiting message of a kind no more valuable than this one.
                let rank = |k: &MessageKind| match k {
                    MessageKind::Frame => 0,
                    MessageKind::Stats => 1,
                    MessageKind::State => 2,
                    MessageKind::Reply => 3,
                    _ => 4,
                };
                let mine = rank(&message.kind);
                let victim = (0..=mine).find_map(|r| self.waiting.iter().position(|m| rank(&m.kind) == r));
                match victim.and_then(|at| self.waiting.remove(at)) {
                    Some(old) => dropped.count(&old.kind),
                    None => {
                        dropped.count(&message.kind);
                        return dropped;
                    }
                }
            }
        }
        self.waiting.push_back(message);
        dropped
    }

    /// Puts `message` ahead of everything waiting (the status after a reconnect).
    pub fn push_front(&mut self, message: Message) {
        self.waiting.push_front(message);
    }

    /// The next message to give to the client.
    pub fn next_waiting(&mut self) -> Option<Message> {
        self.waiting.pop_front()
    }

    /// The client took it.
    pub fn submitted(&mut self, message: Message) {
        self.queued.push_back(message);
    }

    /// The client's channel was full: it goes back to the front.
    pub fn not_submitted(&mut self, message: Message) {
        self.waiting.push_front(message);
    }

    /// rumqttc wrote a PUBLISH with this packet id (0 for QoS 0).
    pub fn on_outgoing_publish(&mut self, pkid: u16) {
        if pkid != 0 && self.inflight.iter().any(|(p, _)| *p == pkid) {
            return; // a retransmission of something already in flight
        }
        if let Some(message) = self.queued.pop_front() {
            if pkid != 0 {
                self.inflight.push((pkid, message));
            }
        }
    }

    /// The broker acknowledged `pkid`; returns the message it belonged to.
    pub fn on_puback(&mut self, pkid: u16) -> Option<Message> {
        let at = self.inflight.iter().position(|(p, _)| *p == pkid)?;
        Some(self.inflight.remove(at).1)
    }

    /// The broker has no session for us (and rumqttc dropped what it held): replies not yet
    /// acknowledged go out again, in order, before anything newer. Results are dropped here
    /// because they are still in the spool and are read from it again; status, stats and frames
    /// are stale and dropped.
    /// Returns the thumbnails and stats so dropped, for the counters.
    pub fn on_session_lost(&mut self) -> Dropped {
        let mut dropped = Dropped::default();
        let mut again = VecDeque::new();
        let all = self.inflight.drain(..).map(|(_, m)| m).chain(self.queued.drain(..)).chain(self.waiting.drain(..));
        for m in all {
            match m.kind {
                MessageKind::Reply => again.push_back(m),
                MessageKind::Frame | MessageKind::Stats | MessageKind::State => dropped.count(&m.kind),
                MessageKind::Result { .. } | MessageKind::Status => {}
            }
        }
        self.waiting = again;
        dropped
    }

    /// Results not yet acknowledged by the broker.
    pub fn unacked_results(&self) -> usize {
        let is_result = |m: &Message| matches!(m.kind, MessageKind::Result { .. });
        self.waiting.iter().filter(|m| is_result(m)).count()
            + self.queued.iter().filter(|m| is_result(m)).count()
            + self.inflight.iter().filter(|(_, m)| is_result(m)).count()
    }

    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether any message at all is still waiting or unacknowledged.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.queued.is_empty() && self.inflight.is_empty()
    }

    /// Whether any message of this kind is still unacknowledged.
    pub fn has_unacked(&self, kind: &MessageKind) -> bool {
        self.waiting.iter().chain(self.queued.iter()).any(|m| &m.kind == kind)
            || self.inflight.iter().any(|(_, m)| &m.kind == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str) -> Message {
        Message {
            kind: MessageKind::Result { number: id.bytes().map(u64::from).sum() },
            topic: "t".into(),
            payload: id.as_bytes().to_vec(),
            qos: QoS::AtLeastOnce,
            retain: false,
        }
    }

    fn reply(id: &str) -> Message {
        Message { kind: MessageKind::Reply, ..result(id) }
    }

    fn submit_all(o: &mut Outbox) {
        while let Some(m) = o.next_waiting() {
            o.submitted(m);
        }
    }

    #[test]
    fn acks_match_packet_ids_in_submission_order() {
        let mut o = Outbox::default();
        o.push(result("a"));
        o.push(result("b"));
        submit_all(&mut o);
        o.on_outgoing_publish(1);
        o.on_outgoing_publish(2);
        o.on_outgoing_publish(1); // retransmission: changes nothing
        assert_eq!(o.unacked_results(), 2);
        assert_eq!(o.on_puback(2), Some(result("b")));
        assert_eq!(o.on_puback(2), None);
        assert_eq!(o.on_puback(1), Some(result("a")));
        assert_eq!(o.unacked_results(), 0);
    }

    #[test]
    fn lost_session_resends_replies_in_order_and_leaves_results_to_the_spool() {
        let mut o = Outbox::default();
        for m in [reply("a"), result("r"), reply("b"), reply("c")] {
            o.push(m);
        }
        submit_all(&mut o);
        o.on_outgoing_publish(1); // a in flight; the rest queued in the client
        o.push(reply("d"));
        o.on_session_lost();
        assert_eq!(o.unacked_results(), 0);
        let order: Vec<Message> = std::iter::from_fn(|| o.next_waiting()).collect();
        assert_eq!(order, vec![reply("a"), reply("b"), reply("c"), reply("d")]);
    }

    fn of(kind: MessageKind) -> Message {
        Message { kind, ..result("x") }
    }

    #[test]
    fn waiting_is_bounded_and_results_are_never_dropped() {
        let mut o = Outbox::default();
        let mut dropped = Dropped::default();
        let mut add = |o: &mut Outbox, m: Message| {
            let d = o.push(m);
            dropped.thumbnails += d.thumbnails;
            dropped.stats += d.stats;
            dropped.replies += d.replies;
        };
        // A frozen broker: nothing leaves, everything keeps coming.
        for i in 0..1000u64 {
            add(&mut o, of(MessageKind::Frame));
            add(&mut o, of(MessageKind::Stats));
            if i % 10 == 0 {
                add(&mut o, of(MessageKind::Reply));
            }
            if i < 30 {
                add(&mut o, Message { kind: MessageKind::Result { number: i }, ..result("r") });
            }
            assert!(o.waiting_len() <= WAITING_LIMIT + 30, "{}", o.waiting_len());
        }
        assert_eq!(o.unacked_results(), 30, "results are never dropped");
        let kinds: Vec<MessageKind> = std::iter::from_fn(|| o.next_waiting()).map(|m| m.kind).collect();
        let kept = |k: MessageKind| kinds.iter().filter(|x| **x == k).count() as u64;
        let (frames, stats, replies) = (kept(MessageKind::Frame), kept(MessageKind::Stats), kept(MessageKind::Reply));
        assert!(stats <= 1, "only the newest stats wait");
        // Every drop is counted.
        assert_eq!(dropped.thumbnails + frames, 1000);
        assert_eq!(dropped.stats + stats, 1000);
        assert_eq!(dropped.replies + replies, 100);
        // Thumbnails go first, then stats, then replies.
        assert!(replies > 0 && dropped.thumbnails > 900);
        if dropped.replies > 0 {
            assert_eq!((frames, stats), (0, 0), "a reply was dropped while less valuable messages waited");
        }
    }

    #[test]
    fn qos0_frames_do_not_take_a_packet_id() {
        let mut o = Outbox::default();
        o.push(Message { kind: MessageKind::Frame, qos: QoS::AtMostOnce, ..result("f") });
        o.push(result("a"));
        submit_all(&mut o);
        o.on_outgoing_publish(0);
        o.on_outgoing_publish(7);
        assert_eq!(o.on_puback(7), Some(result("a")));
    }
}

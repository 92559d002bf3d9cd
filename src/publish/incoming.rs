//! Which incoming MQTT messages the station obeys: an I/O-free gate the publisher consults for
//! every message it receives and every connection it loses to an oversized packet.
//!
//! Rules (docs/security.md, "Broker user"):
//! - Commands are never taken from retained messages. A retained `cmd/pause` would otherwise
//!   pause the station at every start and every reconnect, undoing any `resume`. What the broker
//!   delivers flagged as retained comes from its retained store at subscribe time, not from
//!   someone publishing now, so it is ignored (and logged once per topic). A live publish with
//!   the retain flag still arrives unflagged to a subscriber already there over MQTT 3.1.1 (over
//!   MQTT 5 the station asks for the flag as published, Retain As Published, and ignores it too).
//! - An empty payload is not a command: deleting a retained message is publishing an empty
//!   retained one, which reaches subscribers as an empty message, and must not pause the
//!   station. A command is a JSON object, `{}` at least.
//! - Over MQTT 3.1.1 a packet larger than the client will read costs the connection, and a
//!   retained one comes back at every subscribe: after such a loss the command topics are not
//!   subscribed to for a while (doubling, from 10 minutes up to 6 hours), so one bad retained
//!   message costs one reconnect, not a storm. Results keep flowing meanwhile.

use std::collections::HashSet;
use std::time::{Duration, Instant};

const FIRST_HOLD_OFF: Duration = Duration::from_secs(600);
const MAX_HOLD_OFF: Duration = Duration::from_secs(6 * 3600);
/// Oversized messages are counted each; logged at most this often.
const OVERSIZED_LOG_EVERY: Duration = Duration::from_secs(60);
/// Topics whose ignored retained message was logged (we subscribe to a handful of exact
/// topics; the bound only keeps memory flat whatever arrives).
const RETAINED_LOGGED_MAX: usize = 32;

/// What to do with one incoming message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A live command: carry it out (the name as it follows `cmd/`).
    Obey(String),
    /// A retained delivery on a command topic: ignored. `first`: log it (once per topic).
    IgnoreRetained { first: bool },
    /// An empty message on a command topic (what deleting a retained message looks like): not
    /// a command, dropped without a reply.
    IgnoreEmpty,
    /// Not one of our command topics: dropped.
    NotACommand,
}

#[derive(Debug, Default)]
pub struct CommandGate {
    retained_logged: HashSet<String>,
    /// No command subscription before this (after an oversized packet cost the connection).
    off_until: Option<Instant>,
    hold_off: Option<Duration>,
    oversized_logged_at: Option<Instant>,
}

impl CommandGate {
    pub fn on_message(&mut self, command_prefix: &str, topic: &str, retained: bool, payload: &[u8]) -> Verdict {
        let Some(name) = topic.strip_prefix(command_prefix) else {
            return Verdict::NotACommand;
        };
        if retained {
            let first = self.retained_logged.len() < RETAINED_LOGGED_MAX && self.retained_logged.insert(topic.to_string());
            return Verdict::IgnoreRetained { first };
        }
        if payload.is_empty() {
            return Verdict::IgnoreEmpty;
        }
        Verdict::Obey(name.to_string())
    }

    /// Whether to subscribe to the command topics on this (re)connection.
    pub fn may_subscribe(&self, now: Instant) -> bool {
        self.off_until.is_none_or(|until| now >= until)
    }

    /// An incoming packet too large to read cost the connection: commands off for a while.
    /// Returns for how long.
    pub fn on_oversized_packet(&mut self, now: Instant) -> Duration {
        let hold_off = self.hold_off.map_or(FIRST_HOLD_OFF, |d| (d * 2).min(MAX_HOLD_OFF));
        self.hold_off = Some(hold_off);
        self.off_until = Some(now + hold_off);
        hold_off
    }

    /// Whether an oversized (but readable) message should be logged now.
    pub fn log_oversized(&mut self) -> bool {
        let now = Instant::now();
        if self.oversized_logged_at.is_some_and(|at| now.duration_since(at) < OVERSIZED_LOG_EVERY) {
            return false;
        }
        self.oversized_logged_at = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "lesiond/s1/cmd/";

    #[test]
    fn live_commands_are_obeyed_and_retained_ones_never() {
        let mut gate = CommandGate::default();
        let cmd = b"{}";
        assert_eq!(gate.on_message(PREFIX, "lesiond/s1/cmd/pause", false, cmd), Verdict::Obey("pause".into()));
        assert_eq!(gate.on_message(PREFIX, "lesiond/s1/cmd/pause", true, cmd), Verdict::IgnoreRetained { first: true });
        // Logged once per topic, ignored every time.
        assert_eq!(gate.on_message(PREFIX, "lesiond/s1/cmd/pause", true, cmd), Verdict::IgnoreRetained { first: false });
        assert_eq!(gate.on_message(PREFIX, "lesiond/s1/cmd/resume", true, cmd), Verdict::IgnoreRetained { first: true });
        assert_eq!(gate.on_message(PREFIX, "lesiond/s2/cmd/pause", false, cmd), Verdict::NotACommand);
        assert_eq!(gate.on_message(PREFIX, "lesiond/s1/state", false, cmd), Verdict::NotACommand);
    }

    #[test]
    fn deleting_a_retained_command_is_not_a_command() {
        let mut gate = CommandGate::default();
        assert_eq!(gate.on_message(PREFIX, "lesiond/s1/cmd/pause", false, b""), Verdict::IgnoreEmpty);
        assert_eq!(gate.on_message(PREFIX, "lesiond/s1/cmd/pause", true, b""), Verdict::IgnoreRetained { first: true });
    }

    #[test]
    fn the_log_of_retained_topics_is_bounded() {
        let mut gate = CommandGate::default();
        for i in 0..1000 {
            let _ = gate.on_message(PREFIX, &format!("{PREFIX}{i}"), true, b"{}");
        }
        assert!(gate.retained_logged.len() <= RETAINED_LOGGED_MAX);
        assert_eq!(gate.on_message(PREFIX, &format!("{PREFIX}x"), true, b"{}"), Verdict::IgnoreRetained { first: false });
    }

    #[test]
    fn an_oversized_packet_holds_commands_off_with_a_doubling_wait() {
        let mut gate = CommandGate::default();
        let t0 = Instant::now();
        assert!(gate.may_subscribe(t0));
        assert_eq!(gate.on_oversized_packet(t0), FIRST_HOLD_OFF);
        assert!(!gate.may_subscribe(t0 + Duration::from_secs(1)), "the next reconnect does not fetch it again");
        assert!(gate.may_subscribe(t0 + FIRST_HOLD_OFF));
        let t1 = t0 + FIRST_HOLD_OFF;
        assert_eq!(gate.on_oversized_packet(t1), FIRST_HOLD_OFF * 2);
        for _ in 0..20 {
            gate.on_oversized_packet(t1);
        }
        assert_eq!(gate.hold_off, Some(MAX_HOLD_OFF));
    }

    #[test]
    fn oversized_messages_are_logged_at_most_once_a_minute() {
        let mut gate = CommandGate::default();
        assert!(gate.log_oversized());
        assert!(!gate.log_oversized());
    }
}

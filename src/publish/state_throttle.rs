//! The retained `state` topic's throttle: a state is published on every change, but at most every
//! [`STATE_MIN_INTERVAL`] (the newest wins), again after every reconnect (the broker may have
//! lost it or missed changes), and the publisher knows when the latest one is out (a batch run
//! must not finish before the state it leaves behind is acknowledged).
//!
//! No I/O: the publisher asks it what to send and when, and tells it about reconnects.

use tokio::sync::watch;
use tokio::time::{Duration, Instant};

/// State messages are published on every change, but at most this often (the newest wins).
pub const STATE_MIN_INTERVAL: Duration = Duration::from_millis(200);

pub struct StateThrottle {
    /// The station's state as the examination last serialized it.
    states: watch::Receiver<Option<Vec<u8>>>,
    /// A state is to be published (it changed, or the broker is back).
    due: bool,
    /// When the next one may go.
    next_at: Instant,
    /// False once the daemon dropped its end (it is going away).
    open: bool,
    /// The state last handed to the outbox, to know when the latest one is out.
    enqueued: Option<Vec<u8>>,
}

impl StateThrottle {
    pub fn new(states: watch::Receiver<Option<Vec<u8>>>) -> Self {
        Self { states, due: true, next_at: Instant::now(), open: true, enqueued: None }
    }

    /// After a (re)connect: publish the current state again.
    pub fn mark_due(&mut self) {
        self.due = true;
    }

    /// The state to publish now, if one is due and its interval has passed. `Some(None)`: due,
    /// but the station has no state (nothing to send). Call only while connected.
    pub fn take(&mut self, now: Instant) -> Option<Option<Vec<u8>>> {
        if !self.due || now < self.next_at {
            return None;
        }
        self.due = false;
        self.next_at = now + STATE_MIN_INTERVAL;
        let latest = self.states.borrow_and_update().clone();
        self.enqueued.clone_from(&latest);
        Some(latest)
    }

    /// The latest state has been handed over and acknowledged (`state_unacked`: the outbox still
    /// holds a state message).
    pub fn settled(&self, state_unacked: bool) -> bool {
        !self.due && *self.states.borrow() == self.enqueued && !state_unacked
    }

    /// Whether to wait for the next change (nothing due, the daemon still there).
    pub fn watching(&self) -> bool {
        !self.due && self.open
    }

    /// When a due state may go, if it must still wait.
    pub fn wait_until(&self, now: Instant) -> Option<Instant> {
        (self.due && now < self.next_at).then_some(self.next_at)
    }

    /// Waits for the next change. Cancel-safe (a `select!` arm).
    pub async fn changed(&mut self) {
        match self.states.changed().await {
            Ok(()) => self.due = true,
            Err(_) => self.open = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changes_are_sent_at_most_every_interval_and_the_newest_wins() {
        let (tx, rx) = watch::channel(Some(b"idle".to_vec()));
        let mut t = StateThrottle::new(rx);
        let t0 = Instant::now();
        assert_eq!(t.take(t0), Some(Some(b"idle".to_vec())));
        assert!(t.settled(false));
        assert!(!t.settled(true), "not settled while the outbox holds it");
        tx.send_replace(Some(b"hold".to_vec()));
        tx.send_replace(Some(b"assessing".to_vec()));
        t.changed().await;
        assert!(!t.settled(false));
        assert_eq!(t.take(t0 + Duration::from_millis(50)), None, "within the interval");
        assert_eq!(t.wait_until(t0 + Duration::from_millis(50)), Some(t0 + STATE_MIN_INTERVAL));
        assert_eq!(t.take(t0 + STATE_MIN_INTERVAL), Some(Some(b"assessing".to_vec())), "the newest");
        assert!(t.settled(false));
    }

    #[tokio::test]
    async fn a_reconnect_sends_the_state_again_and_a_closed_channel_stops_watching() {
        let (tx, rx) = watch::channel(None);
        let mut t = StateThrottle::new(rx);
        assert_eq!(t.take(Instant::now()), Some(None));
        assert!(t.watching());
        t.mark_due();
        assert!(!t.watching());
        assert_eq!(t.take(Instant::now() + STATE_MIN_INTERVAL), Some(None));
        drop(tx);
        t.changed().await;
        assert!(!t.watching());
    }
}

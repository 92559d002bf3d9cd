//! The pieces the daemon supervises its threads and tasks with (in the spirit of tokio's
//! mini-redis: every worker reports how it ended, and nothing ends silently).
//!
//! - [`Heartbeat`]: a worker beats while it makes progress or waits on purpose (idle, paused,
//!   backing off); the daemon feeds the systemd watchdog only while every heartbeat is fresh,
//!   and exits non-zero when one goes stale for `pipeline.stall_timeout_secs`.
//! - [`panic_message`]: the text of a caught panic, for the log line that says why we exit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Milliseconds since it was made, updated by its worker; read by the daemon.
#[derive(Debug)]
pub struct Heartbeat {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self::new()
    }
}

impl Heartbeat {
    /// A heartbeat that has just beaten.
    pub fn new() -> Self {
        Self { origin: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    pub fn beat(&self) {
        self.last_ms.store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// The message of a panic payload (`panic!("...")` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_ages_until_it_beats() {
        let h = Heartbeat::new();
        std::thread::sleep(Duration::from_millis(60));
        assert!(h.age() >= Duration::from_millis(50));
        h.beat();
        assert!(h.age() < Duration::from_millis(50));
    }

    #[test]
    fn panic_messages_are_recovered() {
        let p = std::panic::catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(panic_message(&*p), "boom 7");
        let p = std::panic::catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_message(&*p), "static");
    }
}

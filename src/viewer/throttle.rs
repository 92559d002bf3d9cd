//! Wrong passwords counted per client address: after `viewer.max_failed_logins` within a
//! minute the address is refused for `viewer.login_block_secs`, its password not even checked,
//! so guessing goes at a few tries a minute instead of thousands a second. The table holds at
//! most `CAPACITY` addresses: when full, the entry that has been quiet longest (not a blocked
//! one while any other is left) makes room, so memory stays bounded whatever the number of
//! addresses an attacker uses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::gate::client_key;

/// Addresses remembered at once (a few hundred kB at most).
const CAPACITY: usize = 4096;
/// Failures are counted in windows of this length.
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Record {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
    last: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Check the password.
    Ask,
    /// Refuse without checking, for this long yet.
    Refuse(Duration),
}

/// What a wrong password did: the failures in this window, and the block it started, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub failures: u32,
    pub blocked_for: Option<Duration>,
}

pub struct LoginThrottle {
    max_failures: u32,
    block: Duration,
    table: Mutex<HashMap<IpAddr, Record>>,
}

impl LoginThrottle {
    pub fn new(max_failures: u32, block: Duration) -> LoginThrottle {
        LoginThrottle { max_failures: max_failures.max(1), block, table: Mutex::new(HashMap::new()) }
    }

    pub fn verdict(&self, ip: IpAddr, now: Instant) -> Verdict {
        let Ok(table) = self.table.lock() else { return Verdict::Ask };
        match table.get(&client_key(ip)).and_then(|r| r.blocked_until) {
            Some(until) if until > now => Verdict::Refuse(until - now),
            _ => Verdict::Ask,
        }
    }

    pub fn failed(&self, ip: IpAddr, now: Instant) -> Failure {
        let Ok(mut table) = self.table.lock() else { return Failure { failures: 0, blocked_for: None } };
        let key = client_key(ip);
        if !table.contains_key(&key) && table.len() >= CAPACITY {
            make_room(&mut table, now);
        }
        let record = table.entry(key).or_insert(Record { window_start: now, failures: 0, blocked_until: None, last: now });
        if now.duration_since(record.window_start) >= WINDOW || record.blocked_until.is_some_and(|u| u <= now) {
            *record = Record { window_start: now, failures: 0, blocked_until: None, last: now };
        }
        record.failures += 1;
        record.last = now;
        let mut blocked_for = None;
        if record.failures >= self.max_failures {
            record.blocked_until = Some(now + self.block);
            blocked_for = Some(self.block);
        }
        Failure { failures: record.failures, blocked_for }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().map(|t| t.len()).unwrap_or(0)
    }
}

/// Forgets what no longer matters, then, if still full, the quietest entry (a blocked one only
/// when nothing else is left).
fn make_room(table: &mut HashMap<IpAddr, Record>, now: Instant) {
    let live = |r: &Record| r.blocked_until.is_some_and(|u| u > now) || now.duration_since(r.window_start) < WINDOW;
    table.retain(|_, r| live(r));
    if table.len() < CAPACITY {
        return;
    }
    let quietest = table
        .iter()
        .min_by_key(|(_, r)| (r.blocked_until.is_some_and(|u| u > now), r.last))
        .map(|(k, _)| *k);
    if let Some(key) = quietest {
        table.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_its_failures_and_again_asked_after_the_block() {
        let throttle = LoginThrottle::new(3, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let t0 = Instant::now();
        assert_eq!(throttle.failed(a, t0).blocked_for, None);
        assert_eq!(throttle.failed(a, t0).failures, 2);
        assert_eq!(throttle.failed(a, t0).blocked_for, Some(Duration::from_secs(60)));
        assert_eq!(throttle.verdict(a, t0 + Duration::from_secs(10)), Verdict::Refuse(Duration::from_secs(50)));
        assert_eq!(throttle.verdict(b, t0), Verdict::Ask, "only that address");
        assert_eq!(throttle.verdict(a, t0 + Duration::from_secs(61)), Verdict::Ask);
        assert_eq!(throttle.failed(a, t0 + Duration::from_secs(61)).failures, 1, "a new count after the block");
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_add_up() {
        let throttle = LoginThrottle::new(3, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let t0 = Instant::now();
        throttle.failed(a, t0);
        throttle.failed(a, t0 + Duration::from_secs(30));
        assert_eq!(throttle.failed(a, t0 + Duration::from_secs(61)).failures, 1);
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_blocked_addresses() {
        let throttle = LoginThrottle::new(2, Duration::from_secs(600));
        let t0 = Instant::now();
        let blocked: IpAddr = "10.255.255.255".parse().expect("ip");
        throttle.failed(blocked, t0);
        throttle.failed(blocked, t0);
        for i in 0..(CAPACITY as u32 + 500) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0B00_0000 + i));
            throttle.failed(ip, t0 + Duration::from_millis(1 + u64::from(i)));
        }
        assert!(throttle.len() <= CAPACITY);
        assert!(matches!(throttle.verdict(blocked, t0 + Duration::from_secs(100)), Verdict::Refuse(_)), "the blocked one stays");
    }
}

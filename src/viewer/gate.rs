//! Which connections the screen holds: at most `viewer.max_connections`, at most
//! `viewer.max_connections_per_client` from one client address. A connection beyond a cap
//! takes the place of the oldest one of the same scope that is not being answered (a half-open
//! connection, one trickling its request head, an idle keep-alive one): an attacker holding
//! connections open without asking anything cannot keep a real request out. When every
//! connection of that scope is being answered (event streams), the newcomer is closed at once,
//! before any task or buffer exists for it.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

/// One held connection, shared by its task, its socket wrapper and the gate.
#[derive(Debug)]
pub struct Conn {
    /// Answers being produced or written (an event stream is one as long as it runs).
    answering: AtomicUsize,
    /// Milliseconds after the gate's start of the last byte read or written.
    last_io_ms: AtomicU64,
    /// Told when the gate closes this connection for a newcomer.
    pub evicted: Notify,
    epoch: Instant,
}

impl Conn {
    pub fn touch(&self) {
        self.last_io_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Since when nothing moved on the socket.
    pub fn idle_for(&self) -> std::time::Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        std::time::Duration::from_millis(now.saturating_sub(self.last_io_ms.load(Ordering::Relaxed)))
    }

    fn is_answering(&self) -> bool {
        self.answering.load(Ordering::Relaxed) > 0
    }
}

/// Held while an answer is produced and written: the response body owns it (`server.rs`), so
/// a connection counts as answering until its last byte is handed to the socket.
#[derive(Debug)]
pub struct Answering(Arc<Conn>);

impl Answering {
    pub fn start(conn: &Arc<Conn>) -> Answering {
        conn.answering.fetch_add(1, Ordering::Relaxed);
        Answering(conn.clone())
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.answering.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The caps, from `[viewer]`.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub total: usize,
    pub per_client: usize,
}

/// Client addresses as the caps count them: an IPv6 client gets a /64 from its router, so a
/// /64 is one client; an IPv4-mapped address is its IPv4 address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

struct Slot {
    client: IpAddr,
    conn: Arc<Conn>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    /// By admission order: the first evictable one is the oldest.
    open: BTreeMap<u64, Slot>,
    per_client: HashMap<IpAddr, usize>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Slot> {
        let slot = self.open.remove(&id)?;
        if let Some(n) = self.per_client.get_mut(&slot.client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&slot.client);
            }
        }
        Some(slot)
    }

    /// Closes the oldest connection not being answered, of `client` or of anyone.
    fn evict_oldest_idle(&mut self, client: Option<IpAddr>) -> bool {
        let victim = self
            .open
            .iter()
            .find(|(_, s)| client.is_none_or(|c| s.client == c) && !s.conn.is_answering())
            .map(|(id, _)| *id);
        match victim.and_then(|id| self.remove(id)) {
            Some(slot) => {
                slot.conn.evicted.notify_one();
                true
            }
            None => false,
        }
    }
}

pub struct Gate {
    caps: Caps,
    table: Mutex<Table>,
    epoch: Instant,
}

/// What the gate said to a new connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Every connection from this client is being answered.
    ClientFull,
    /// Every connection is being answered.
    Full,
}

/// An admitted connection's place; dropping it frees the place.
pub struct Ticket {
    gate: Arc<Gate>,
    id: u64,
    pub conn: Arc<Conn>,
    /// Whether an idle connection was closed to make room for this one (worth a log line: a
    /// station under a flood of connections).
    pub made_room: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Ok(mut table) = self.gate.table.lock() {
            table.remove(self.id);
        }
    }
}

impl Gate {
    pub fn new(caps: Caps) -> Arc<Gate> {
        Arc::new(Gate { caps, table: Mutex::new(Table::default()), epoch: Instant::now() })
    }

    /// Admits a connection from `ip`, closing an idle one to make room if a cap is reached.
    pub fn admit(self: &Arc<Gate>, ip: IpAddr) -> Result<Ticket, Refusal> {
        let client = client_key(ip);
        // A poisoned lock means a panic while the table was changed: nothing is admitted.
        let mut table = self.table.lock().map_err(|_| Refusal::Full)?;
        let mut made_room = false;
        if table.per_client.get(&client).copied().unwrap_or(0) >= self.caps.per_client {
            if !table.evict_oldest_idle(Some(client)) {
                return Err(Refusal::ClientFull);
            }
            made_room = true;
        }
        if table.open.len() >= self.caps.total {
            if !table.evict_oldest_idle(None) {
                return Err(Refusal::Full);
            }
            made_room = true;
        }
        let id = table.next_id;
        table.next_id += 1;
        let conn = Arc::new(Conn { answering: AtomicUsize::new(0), last_io_ms: AtomicU64::new(0), evicted: Notify::new(), epoch: self.epoch });
        conn.touch();
        table.open.insert(id, Slot { client, conn: conn.clone() });
        *table.per_client.entry(client).or_insert(0) += 1;
        Ok(Ticket { gate: self.clone(), id, conn, made_room })
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.table.lock().map(|t| t.open.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_full_client_loses_its_oldest_idle_connection_or_is_refused() {
        let gate = Gate::new(Caps { total: 4, per_client: 2 });
        let a1 = gate.admit(ip("10.0.0.1")).expect("a1");
        let a2 = gate.admit(ip("10.0.0.1")).expect("a2");
        let _streaming = Answering::start(&a1.conn);
        assert!(!a2.made_room);
        let a3 = gate.admit(ip("10.0.0.1")).expect("a2 idle: it makes room");
        assert!(a3.made_room);
        assert_eq!(gate.open(), 2);
        let _busy = Answering::start(&a3.conn);
        assert_eq!(gate.admit(ip("10.0.0.1")).err(), Some(Refusal::ClientFull), "both answering");
        drop(a2);
        let _b = gate.admit(ip("10.0.0.2")).expect("b");
        let c = gate.admit(ip("10.0.0.3")).expect("c");
        assert_eq!(gate.open(), 4);
        // Full: the oldest idle one anywhere (10.0.0.2's) goes.
        let _d = gate.admit(ip("10.0.0.4")).expect("d");
        assert_eq!(gate.open(), 4);
        let _c_busy = Answering::start(&c.conn);
        let _e = gate.admit(ip("10.0.0.5")).expect("d is idle: it goes");
        let _e_busy = Answering::start(&_e.conn);
        assert_eq!(gate.admit(ip("10.0.0.6")).err(), Some(Refusal::Full), "every one answering");
    }

    #[test]
    fn an_ipv6_64_is_one_client() {
        assert_eq!(client_key(ip("2001:db8:1:2:aaaa::1")), client_key(ip("2001:db8:1:2:bbbb::2")));
        assert_ne!(client_key(ip("2001:db8:1:2::1")), client_key(ip("2001:db8:1:3::1")));
        assert_eq!(client_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }
}

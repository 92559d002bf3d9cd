//! The bounded hand-off between the capture thread and the inference thread.
//!
//! Frames come faster than inference. A camera must never wait for the model, so when the queue
//! is full the *oldest* waiting frame is dropped (the newest is what the clinician is looking
//! at) and the drop is counted. A lossless replay (a directory at fps = 0) waits instead.
//! Either way memory is bounded by the capacity.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

pub struct FrameQueue<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// What `pop` found.
#[derive(Debug, PartialEq)]
pub enum Pop<T> {
    Item(T),
    /// Nothing arrived within the timeout; the queue is still open.
    Empty,
    /// Closed and drained: no more items will come.
    Closed,
}

impl<T> FrameQueue<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State { items: VecDeque::with_capacity(capacity), closed: false }),
            changed: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    // A poisoned lock only means another stage panicked; the queue itself is still consistent.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `item`, dropping the oldest waiting item if full. Returns the dropped one.
    pub fn push_drop_oldest(&self, item: T) -> Option<T> {
        let mut s = self.lock();
        let dropped = if s.items.len() >= self.capacity { s.items.pop_front() } else { None };
        s.items.push_back(item);
        self.changed.notify_all();
        dropped
    }

    /// Like [`FrameQueue::push_drop_oldest`], but when full the oldest *expendable* waiting item
    /// goes first (a frame the checks turned away: the examination only needs its figures),
    /// and only then the oldest of all.
    pub fn push_drop_preferring(&self, item: T, expendable: impl Fn(&T) -> bool) -> Option<T> {
        let mut s = self.lock();
        let dropped = if s.items.len() >= self.capacity {
            match s.items.iter().position(&expendable) {
                Some(at) => s.items.remove(at),
                None => s.items.pop_front(),
            }
        } else {
            None
        };
        s.items.push_back(item);
        self.changed.notify_all();
        dropped
    }

    /// Adds `item`, waiting for room. Gives the item back if `give_up` turns true while waiting.
    pub fn push_wait(&self, item: T, give_up: impl Fn() -> bool) -> Result<(), T> {
        let mut s = self.lock();
        while s.items.len() >= self.capacity {
            if give_up() || s.closed {
                return Err(item);
            }
            s = self.changed.wait_timeout(s, Duration::from_millis(100)).unwrap_or_else(|p| p.into_inner()).0;
        }
        s.items.push_back(item);
        self.changed.notify_all();
        Ok(())
    }

    /// Takes the oldest item, waiting up to `timeout`.
    pub fn pop(&self, timeout: Duration) -> Pop<T> {
        let mut s = self.lock();
        if s.items.is_empty() && !s.closed {
            s = self.changed.wait_timeout(s, timeout).unwrap_or_else(|p| p.into_inner()).0;
        }
        match s.items.pop_front() {
            Some(item) => {
                self.changed.notify_all();
                Pop::Item(item)
            }
            None if s.closed => Pop::Closed,
            None => Pop::Empty,
        }
    }

    /// No more pushes; `pop` drains what is left, then reports `Closed`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_full_queue_drops_an_expendable_item_before_a_good_one() {
        let q = FrameQueue::new(2);
        q.push_drop_preferring(10, |v| *v < 0);
        q.push_drop_preferring(-1, |v| *v < 0);
        assert_eq!(q.push_drop_preferring(11, |v| *v < 0), Some(-1));
        assert_eq!(q.push_drop_preferring(12, |v| *v < 0), Some(10), "none expendable: the oldest");
        assert_eq!(q.pop(Duration::ZERO), Pop::Item(11));
    }

    use super::*;

    #[test]
    fn full_queue_drops_the_oldest() {
        let q = FrameQueue::new(2);
        assert_eq!(q.push_drop_oldest(1), None);
        assert_eq!(q.push_drop_oldest(2), None);
        assert_eq!(q.push_drop_oldest(3), Some(1));
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop(Duration::ZERO), Pop::Item(2));
        assert_eq!(q.pop(Duration::ZERO), Pop::Item(3));
        assert_eq!(q.pop(Duration::ZERO), Pop::Empty);
    }

    #[test]
    fn close_drains_then_reports_closed() {
        let q = FrameQueue::new(4);
        q.push_drop_oldest("a");
        q.close();
        assert_eq!(q.pop(Duration::ZERO), Pop::Item("a"));
        assert_eq!(q.pop(Duration::ZERO), Pop::Closed);
    }

    #[test]
    fn lossless_push_waits_for_room() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let q = std::sync::Arc::new(FrameQueue::new(1));
        q.push_wait(1, || false).expect("room");
        let popping = std::sync::Arc::new(AtomicBool::new(false));
        let (q2, popping2) = (q.clone(), popping.clone());
        let consumer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            popping2.store(true, Ordering::SeqCst);
            q2.pop(Duration::from_secs(1))
        });
        let started = std::time::Instant::now();
        q.push_wait(2, || false).expect("waits, then fits");
        // It returned only once the consumer had started taking the first item: it waited.
        assert!(popping.load(Ordering::SeqCst), "push_wait returned after {:?} without waiting for room", started.elapsed());
        assert_eq!(consumer.join().expect("join"), Pop::Item(1));
        // Never more than the capacity held, nothing lost.
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop(Duration::ZERO), Pop::Item(2));
        // Giving up returns the item instead of blocking forever.
        q.push_wait(3, || false).expect("room");
        assert_eq!(q.push_wait(4, || true), Err(4));
        assert_eq!(q.len(), 1);
    }
}

//! The on-disk spool: every result is written here before it is published, and removed only
//! when the broker has acknowledged it (PUBACK). Results made while the broker is away simply
//! stay; they are sent in order once it is back, after a daemon restart too.
//!
//! One file per result, `<number>.json`, written to a temporary name, flushed and renamed, so a
//! power cut leaves either the whole entry or none (at worst a `.tmp` file, removed at start).
//! A damaged entry is skipped and reported, never fatal. The spool is bounded by size and age:
//! when full, the oldest entries are dropped and counted — never silently.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::config::SpoolConfig;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot use spool directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("cannot write spool entry {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("result of {size} bytes is larger than the whole spool (spool.max_bytes = {max})")]
    TooLarge { size: u64, max: u64 },
}

#[derive(Debug, Clone)]
struct Entry {
    bytes: u64,
    created: SystemTime,
}

#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<u64, Entry>,
    total_bytes: u64,
    next_number: u64,
    /// Entries dropped because the spool was full or they were too old.
    dropped: u64,
    /// Entries found damaged (unreadable, not a result) and removed.
    damaged: u64,
}

/// Counts for `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct SpoolStats {
    pub depth: usize,
    pub bytes: u64,
    pub dropped: u64,
    pub damaged: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    max_age: Duration,
    fsync: bool,
    /// Test-only: extra latency per fsync (`LESIOND_TEST_FAULT=spool-fsync-delay-ms:N`).
    fsync_delay: Option<Duration>,
    state: Mutex<State>,
    /// Woken on every append, so the publisher picks new entries up at once.
    pub appended: tokio::sync::Notify,
}

/// What a spool entry is, and so where it is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A frame's classification (has a `result_id`).
    Classification,
    /// An examination's assessment (has an `assessment_id`).
    Assessment,
}

/// A spooled result, read back for publishing.
#[derive(Debug, Clone, PartialEq)]
pub struct SpooledResult {
    pub number: u64,
    /// The entry's `result_id` or `assessment_id`.
    pub result_id: String,
    pub kind: EntryKind,
    pub json: Vec<u8>,
}

impl Spool {
    /// Opens (creating) the spool directory and indexes what a previous run left.
    pub fn open(config: &SpoolConfig) -> Result<Spool, SpoolError> {
        let dir = config.dir.clone();
        let dir_err = |source| SpoolError::Dir { path: dir.clone(), source };
        fs::create_dir_all(&dir).map_err(dir_err)?;
        let mut state = State::default();
        for entry in fs::read_dir(&dir).map_err(dir_err)? {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                // An entry whose write was cut short (power cut, kill): it was never complete.
                tracing::warn!(file = %path.display(), "removing incomplete spool entry");
                let _ = fs::remove_file(&path);
                state.damaged += 1;
                continue;
            }
            let Some(number) = name.strip_suffix(".json").and_then(|n| n.parse::<u64>().ok()) else {
                continue; // not ours
            };
            match fs::read(&path).ok().and_then(|bytes| parse_entry(&bytes).map(|_| bytes.len() as u64)) {
                Some(bytes) => {
                    let created = entry.metadata().and_then(|m| m.modified()).unwrap_or_else(|_| SystemTime::now());
                    state.total_bytes += bytes;
                    state.entries.insert(number, Entry { bytes, created });
                    state.next_number = state.next_number.max(number + 1);
                }
                None => {
                    tracing::warn!(file = %path.display(), "skipping damaged spool entry (not a complete result)");
                    let _ = fs::remove_file(&path);
                    state.damaged += 1;
                }
            }
        }
        state.next_number = state.next_number.max(1);
        if !state.entries.is_empty() {
            tracing::info!(entries = state.entries.len(), bytes = state.total_bytes, "spool holds results from an earlier run; they are sent first");
        }
        Ok(Spool {
            dir,
            max_bytes: config.max_bytes,
            max_age: Duration::from_secs(config.max_age_hours.saturating_mul(3600)),
            fsync: config.fsync,
            fsync_delay: crate::fault::fsync_delay(),
            state: Mutex::new(state),
            appended: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, number: u64) -> PathBuf {
        self.dir.join(format!("{number:020}.json"))
    }

    /// Writes a result durably. Drops (and counts) the oldest entries if the spool would exceed
    /// its size, and entries older than its age limit.
    ///
    /// The lock is held only to reserve a number and make room; the file is written, fsynced
    /// and renamed without it, so a slow SD card (hundreds of ms per fsync) never blocks the
    /// publisher, which reads and removes entries concurrently. Only the inference thread
    /// appends.
    pub fn append(&self, json: &[u8]) -> Result<u64, SpoolError> {
        let size = json.len() as u64;
        if size > self.max_bytes {
            return Err(SpoolError::TooLarge { size, max: self.max_bytes });
        }
        let (number, evicted) = {
            let mut state = self.lock();
            let mut evicted = self.expire(&mut state);
            while state.total_bytes + size > self.max_bytes {
                let Some((&oldest, _)) = state.entries.iter().next() else { break };
                evicted.extend(self.drop_entry(&mut state, oldest, "the spool is full (spool.max_bytes)"));
            }
            let number = state.next_number;
            state.next_number += 1;
            // Counted now, so the size bound holds while the file is written.
            state.total_bytes += size;
            (number, evicted)
        };
        unlink_all(evicted);
        let path = self.path(number);
        let tmp = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(json)?;
            if self.fsync {
                if let Some(delay) = self.fsync_delay {
                    std::thread::sleep(delay); // test-only: a slow SD card
                }
                f.sync_all()?;
            }
            fs::rename(&tmp, &path)?;
            if self.fsync {
                // Make the rename itself durable.
                fs::File::open(&self.dir)?.sync_all()?;
            }
            Ok(())
        };
        let written = write();
        let mut state = self.lock();
        if let Err(source) = written {
            state.total_bytes -= size;
            drop(state);
            let _ = fs::remove_file(&tmp);
            return Err(SpoolError::Write { path, source });
        }
        state.entries.insert(number, Entry { bytes: size, created: SystemTime::now() });
        drop(state);
        self.appended.notify_one();
        Ok(number)
    }

    /// Drops entries older than the age limit; returns their files, to be removed once the
    /// lock is released.
    fn expire(&self, state: &mut State) -> Vec<PathBuf> {
        if self.max_age.is_zero() {
            return Vec::new();
        }
        let now = SystemTime::now();
        let expired: Vec<u64> = state
            .entries
            .iter()
            .take_while(|(_, e)| now.duration_since(e.created).unwrap_or_default() > self.max_age)
            .map(|(n, _)| *n)
            .collect();
        expired.into_iter().filter_map(|n| self.drop_entry(state, n, "older than spool.max_age_hours")).collect()
    }

    fn drop_entry(&self, state: &mut State, number: u64, why: &str) -> Option<PathBuf> {
        let e = state.entries.remove(&number)?;
        state.total_bytes -= e.bytes;
        state.dropped += 1;
        tracing::warn!(entry = number, "dropped an unpublished result: {why}");
        Some(self.path(number))
    }

    /// The oldest entry after `after` (or the oldest of all), read from disk. Damaged entries on
    /// the way are removed and counted. Blocking file I/O: the publisher calls it off the async
    /// workers (see [`Spool::read_batch`]).
    pub fn next_after(&self, after: Option<u64>) -> Option<SpooledResult> {
        let mut at = after;
        loop {
            let number = {
                let mut state = self.lock();
                let expired = self.expire(&mut state);
                let start = at.map_or(0, |a| a + 1);
                let next = state.entries.range(start..).next().map(|(n, _)| *n);
                drop(state);
                unlink_all(expired);
                next?
            };
            let parsed = fs::read(self.path(number)).ok().and_then(|bytes| parse_entry(&bytes).map(|id| (id, bytes)));
            match parsed {
                Some(((result_id, kind), json)) => return Some(SpooledResult { number, result_id, kind, json }),
                None => {
                    let mut state = self.lock();
                    // Acknowledged (or dropped) meanwhile: not damaged, just gone.
                    if let Some(e) = state.entries.remove(&number) {
                        state.total_bytes -= e.bytes;
                        state.damaged += 1;
                        tracing::warn!(entry = number, "skipping damaged spool entry");
                        drop(state);
                        let _ = fs::remove_file(self.path(number));
                    }
                    at = Some(number);
                }
            }
        }
    }

    /// Up to `max` entries after `after`, oldest first.
    pub fn read_batch(&self, after: Option<u64>, max: usize) -> Vec<SpooledResult> {
        let mut out = Vec::new();
        let mut at = after;
        while out.len() < max {
            let Some(entry) = self.next_after(at) else { break };
            at = Some(entry.number);
            out.push(entry);
        }
        out
    }

    /// Whether the index holds an entry after `after` (no file I/O).
    pub fn has_after(&self, after: Option<u64>) -> bool {
        let start = after.map_or(0, |a| a + 1);
        self.lock().entries.range(start..).next().is_some()
    }

    /// The broker acknowledged entry `number`: forget it and delete its file. Returns how long
    /// it was spooled.
    pub fn remove(&self, number: u64) -> Option<Duration> {
        let (waited, path) = self.forget(number)?;
        unlink(&path);
        Some(waited)
    }

    /// The in-memory half of [`Spool::remove`] (no file I/O): the entry leaves the index at once
    /// and the caller deletes the returned file where blocking is allowed. Returns how long it
    /// was spooled. A crash before the file is deleted sends the result again (at least once).
    pub fn forget(&self, number: u64) -> Option<(Duration, PathBuf)> {
        let mut state = self.lock();
        let e = state.entries.remove(&number)?;
        state.total_bytes -= e.bytes;
        Some((SystemTime::now().duration_since(e.created).unwrap_or_default(), self.path(number)))
    }

    pub fn stats(&self) -> SpoolStats {
        let s = self.lock();
        SpoolStats { depth: s.entries.len(), bytes: s.total_bytes, dropped: s.dropped, damaged: s.damaged }
    }

    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Deletes an acknowledged or dropped entry's file.
pub fn unlink(path: &Path) {
    if let Err(err) = fs::remove_file(path) {
        if err.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(file = %path.display(), "cannot remove spool entry: {err}");
        }
    }
}

fn unlink_all(paths: Vec<PathBuf>) {
    for p in paths {
        unlink(&p);
    }
}

/// A spool entry is a complete JSON classification with a `result_id` or assessment with an
/// `assessment_id`; returns the id and which.
fn parse_entry(bytes: &[u8]) -> Option<(String, EntryKind)> {
    #[derive(serde::Deserialize)]
    struct Head {
        result_id: Option<String>,
        assessment_id: Option<String>,
    }
    let head = serde_json::from_slice::<Head>(bytes).ok()?;
    match (head.result_id, head.assessment_id) {
        (Some(id), None) if !id.is_empty() => Some((id, EntryKind::Classification)),
        (None, Some(id)) if !id.is_empty() => Some((id, EntryKind::Assessment)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, max_bytes: u64) -> SpoolConfig {
        SpoolConfig { dir: dir.to_path_buf(), max_bytes, max_age_hours: 24, fsync: false }
    }

    fn result(id: &str) -> Vec<u8> {
        format!(r#"{{"result_id":"{id}","pad":"{}"}}"#, "x".repeat(60)).into_bytes()
    }

    fn drain(spool: &Spool) -> Vec<String> {
        let mut ids = Vec::new();
        let mut at = None;
        while let Some(r) = spool.next_after(at) {
            at = Some(r.number);
            ids.push(r.result_id);
        }
        ids
    }

    #[test]
    fn assessments_are_spooled_like_classifications_and_read_back_as_assessments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(&config(dir.path(), 1 << 20)).expect("open");
        spool.append(&result("r1")).expect("append");
        spool.append(br#"{"assessment_id":"a1","frames":[]}"#).expect("append");
        spool.append(br#"{"result_id":"x","assessment_id":"y"}"#).expect("append");
        drop(spool);
        // After a restart: both kinds come back, in order, each with its kind; an entry that is
        // both is damaged.
        let spool = Spool::open(&config(dir.path(), 1 << 20)).expect("reopen");
        let a = spool.next_after(None).expect("first");
        let b = spool.next_after(Some(a.number)).expect("second");
        assert_eq!((a.result_id.as_str(), a.kind), ("r1", EntryKind::Classification));
        assert_eq!((b.result_id.as_str(), b.kind), ("a1", EntryKind::Assessment));
        assert!(spool.next_after(Some(b.number)).is_none());
        assert_eq!(spool.stats().damaged, 1);
    }

    #[test]
    fn entries_survive_a_restart_in_order_until_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(&config(dir.path(), 1 << 20)).expect("open");
        let a = spool.append(&result("a")).expect("append");
        spool.append(&result("b")).expect("append");
        spool.remove(a);
        drop(spool);
        let spool = Spool::open(&config(dir.path(), 1 << 20)).expect("reopen");
        spool.append(&result("c")).expect("append");
        assert_eq!(drain(&spool), ["b", "c"]);
        assert_eq!(spool.stats().depth, 2);
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = result("0").len() as u64;
        let spool = Spool::open(&config(dir.path(), one * 3)).expect("open");
        for id in ["1", "2", "3", "4", "5"] {
            spool.append(&result(id)).expect("append");
        }
        assert_eq!(drain(&spool), ["3", "4", "5"]);
        let s = spool.stats();
        assert_eq!((s.depth, s.dropped), (3, 2));
        assert!(matches!(spool.append(&vec![b'x'; (one * 4) as usize]), Err(SpoolError::TooLarge { .. })));
    }

    #[test]
    fn a_slow_fsync_does_not_block_readers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(&SpoolConfig { fsync: true, ..config(dir.path(), 1 << 20) }).expect("open");
        spool.fsync_delay = Some(Duration::from_millis(800));
        let spool = std::sync::Arc::new(spool);
        spool.append(&result("first")).expect("append");
        let writer = {
            let spool = spool.clone();
            std::thread::spawn(move || spool.append(&result("slow")).expect("append"))
        };
        std::thread::sleep(Duration::from_millis(150)); // the writer is inside its fsync now
        let started = std::time::Instant::now();
        let _ = spool.stats();
        let first = spool.next_after(None).expect("the first entry");
        assert!(spool.forget(first.number).is_some());
        let took = started.elapsed();
        assert!(!writer.is_finished(), "the writer was still in its fsync");
        assert!(took < Duration::from_millis(300), "readers waited {took:?} for a writer's fsync");
        writer.join().expect("join");
        assert_eq!(drain(&spool), ["slow"]);
    }

    #[test]
    fn garbage_and_half_written_entries_are_skipped_and_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(&config(dir.path(), 1 << 20)).expect("open");
        spool.append(&result("good")).expect("append");
        drop(spool);
        std::fs::write(dir.path().join("00000000000000000007.json"), b"\x00\xffgarbage{").expect("write");
        std::fs::write(dir.path().join("00000000000000000008.json"), b"").expect("write");
        std::fs::write(dir.path().join("00000000000000000009.json.tmp"), b"{\"result_id\":").expect("write");
        std::fs::write(dir.path().join("README"), b"not an entry").expect("write");
        let spool = Spool::open(&config(dir.path(), 1 << 20)).expect("damage never stops the spool");
        assert_eq!(drain(&spool), ["good"]);
        assert_eq!(spool.stats().damaged, 3);
        // New entries are numbered after everything seen, damaged ones included.
        let n = spool.append(&result("new")).expect("append");
        assert!(n >= 2);
        // An entry damaged after indexing is skipped when read.
        std::fs::write(spool.path(n), b"{").expect("corrupt");
        assert_eq!(drain(&spool), ["good"]);
        assert_eq!(spool.stats().damaged, 4);
    }
}

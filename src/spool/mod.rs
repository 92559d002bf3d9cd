//! The on-disk spool: every result is written here before any destination gets it, and removed
//! only when every destination that takes its kind has acknowledged it (the broker's PUBACK;
//! the archive's C-STORE response). Each destination reads through its own delivery cursor, so
//! one that is down neither blocks nor loses another's results: what it has not acknowledged
//! simply stays, and is sent in order once it is back, after a daemon restart too.
//!
//! One file per result, `<number>.entry`: a header line with the entry's kind (classification
//! or assessment), the payload's length and its SHA-256 (and, for an assessment with its judged
//! frame, the image's length and SHA-256), then the payload (the recorder's bytes; the spool
//! never looks inside them) and the image. With more than one destination, each one's
//! acknowledgements of entries others still wait for are appended to `<destination>.acked`
//! (one entry number a line), read back and compacted at start. It is written
//! to a temporary name, flushed and renamed, so a power cut leaves either the whole entry or
//! none (at worst a `.tmp` file, removed at start). The spool is bounded by size and age: when
//! full, the oldest entries are dropped and counted — never silently.
//!
//! The directory is trusted with patient data, so it is checked, not assumed (docs/security.md,
//! "Files on disk"): it must be a real directory (not a symbolic link) owned by this user and
//! writable by nobody else; it is made 0700 and every entry 0600 whatever the umask. A
//! temporary file is created exclusively and never through a symbolic link (`O_CREAT | O_EXCL |
//! O_NOFOLLOW`): something planted at its name is set aside and the write goes on under
//! another name. An entry whose header or checksum does not hold (truncated, damaged, or a file
//! the daemon did not write) is moved into `rejected/` (0700) and counted, never published.
//!
//! Upgrade from the previous format (plain `<number>.json` files): on the first start of this
//! version in a directory (no `spool-format` file yet), each such file that parses as a
//! classification or an assessment is rewritten as an entry, once; the `spool-format` file then
//! marks the directory as converted, and any `.json` found later is set aside like any other
//! foreign file.
//!
//! The system running short of descriptors, memory or disk space is not damage: a write that
//! fails for that reason is retried with backoff (the result waits in memory, one at a time) for
//! up to [`WRITE_RETRY_FOR`], and a read leaves the entry where it is for the next try.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::config::SpoolConfig;
use crate::fsread;

/// An entry's file: `<number, 20 digits>.entry`.
const ENTRY_EXT: &str = "entry";
/// Marks a directory converted from the plain-JSON format (see the module's comment).
const FORMAT_FILE: &str = "spool-format";
const FORMAT_TEXT: &[u8] = b"lesiond spool 1: <number>.entry = header line (kind, length, sha256) + JSON\n";
/// Where foreign, truncated and damaged files are moved, for someone to look at.
const REJECTED_DIR: &str = "rejected";
/// At most this many files are kept in `rejected/`; beyond, they are deleted (still counted).
const REJECTED_KEEP: u64 = 1000;
/// The first bytes of every entry.
const MAGIC: &str = "LESIOND-SPOOL 1";
/// A result is a few KiB; an assessment a few tens, plus its judged frame (a camera's JPEG:
/// up to a few MiB at 4K). Far above, and bounded so that reading an entry back is bounded too.
pub const MAX_ENTRY_BYTES: u64 = 16 * 1024 * 1024;
/// How long a write that fails for want of descriptors, memory or disk space is retried before
/// the result is given up (and counted as lost). Long enough to outlast a flood that holds every
/// descriptor for a minute (the inference thread waits, frames are dropped and counted
/// meanwhile); the caller's `wait` cuts it short at shutdown (the pipeline gives a stopping
/// write 5 s), so a waiting write never outlives the daemon unnoticed.
pub const WRITE_RETRY_FOR: Duration = Duration::from_secs(120);
const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(1);
/// How many temporary names a write tries when something is in the way.
const TMP_ATTEMPTS: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot use spool directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("refusing spool directory {path}: {reason}")]
    Unsafe { path: PathBuf, reason: String },
    #[error("cannot write spool entry {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("result of {size} bytes is larger than the whole spool (spool.max_bytes = {max})")]
    TooLarge { size: u64, max: u64 },
    #[error("result of {size} bytes is larger than a spool entry may be ({max} bytes)")]
    EntryTooLarge { size: u64, max: u64 },
    #[error("no configured destination takes a {kind}")]
    NoDestination { kind: &'static str },
}

#[derive(Debug, Clone)]
struct Entry {
    bytes: u64,
    created: SystemTime,
    /// The destinations that have not acknowledged it yet, one bit each (by [`Delivery`]).
    pending: u32,
}

/// A destination that takes results from the spool: its name (which also names its file of
/// acknowledgements, so it must stay the same across versions) and the kinds it takes.
#[derive(Debug, Clone, Copy)]
pub struct Destination {
    pub name: &'static str,
    pub kinds: &'static [EntryKind],
}

/// One destination's delivery cursor, from [`Spool::delivery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery(usize);

impl Delivery {
    fn bit(self) -> u32 {
        1 << self.0
    }
}

/// At most this many destinations (one bit each in an entry's `pending`).
const MAX_DESTINATIONS: usize = 16;
/// A file of acknowledgements: one 20-digit number and a newline per entry; bounded, so that
/// reading it back at start is too.
const ACKED_EXT: &str = "acked";
const ACKED_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// What a destination's acknowledgement leaves to do on disk (off the async workers):
/// [`Spool::finish`].
#[derive(Debug)]
pub enum Cleanup {
    /// Every destination has it: delete the entry's file.
    Delete(PathBuf),
    /// Others still wait for it: note this destination's acknowledgement, so a restart does not
    /// send it there again.
    Record { file: PathBuf, number: u64 },
}

#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<u64, Entry>,
    total_bytes: u64,
    next_number: u64,
    /// Entries dropped because the spool was full or they were too old.
    dropped: u64,
    /// Files set aside (foreign, truncated, damaged, in the way) or incomplete and removed.
    damaged: u64,
    /// Reads and writes retried because the system was short of a resource.
    retried: u64,
    /// Files in `rejected/`.
    rejected_files: u64,
}

/// Counts for `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct SpoolStats {
    pub depth: usize,
    pub bytes: u64,
    pub dropped: u64,
    /// Files set aside into `rejected/` (foreign, truncated, damaged) or incomplete and removed.
    pub damaged: u64,
    /// Reads and writes retried because the system was short of descriptors, memory or disk.
    pub retried: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    max_age: Duration,
    fsync: bool,
    /// Test-only: extra latency per fsync (`LESIOND_TEST_FAULT=spool-fsync-delay-ms:N`).
    fsync_delay: Option<Duration>,
    state: Mutex<State>,
    destinations: Vec<Destination>,
    /// One per destination, woken on every append of a kind it takes, so it picks new entries
    /// up at once.
    appended: Vec<tokio::sync::Notify>,
}

/// What a spool entry is, and so where it is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A frame's classification (has a `result_id`).
    Classification,
    /// An examination's assessment (has an `assessment_id`).
    Assessment,
}

impl EntryKind {
    pub fn tag(self) -> &'static str {
        match self {
            EntryKind::Classification => "classification",
            EntryKind::Assessment => "assessment",
        }
    }
    fn from_tag(tag: &str) -> Option<EntryKind> {
        match tag {
            "classification" => Some(EntryKind::Classification),
            "assessment" => Some(EntryKind::Assessment),
            _ => None,
        }
    }
}

/// A spooled result, read back for a destination.
#[derive(Debug, Clone, PartialEq)]
pub struct SpooledResult {
    pub number: u64,
    pub kind: EntryKind,
    pub json: Vec<u8>,
    /// The image kept with it (an assessment's judged frame, as the camera delivered it).
    pub image: Option<Vec<u8>>,
}

/// Why an entry could not be read back.
enum ReadFailure {
    /// Gone (acknowledged and deleted meanwhile).
    Gone,
    /// The system is short of a resource: the entry may be fine; try again later.
    Resource(String),
    /// Not an entry this daemon wrote, or no longer whole: set aside.
    Bad(String),
}

impl Spool {
    /// Opens (creating) the spool directory, checks that nobody else can write there, and
    /// indexes what a previous run left, setting aside what does not check out.
    pub fn open(config: &SpoolConfig, destinations: &[Destination]) -> Result<Spool, SpoolError> {
        assert!(!destinations.is_empty() && destinations.len() <= MAX_DESTINATIONS, "1 to {MAX_DESTINATIONS} destinations");
        let dir = config.dir.clone();
        let wanted_by = |kind: EntryKind| -> u32 {
            destinations.iter().enumerate().filter(|(_, d)| d.kinds.contains(&kind)).map(|(i, _)| 1u32 << i).sum()
        };
        prepare_private_dir(&dir, true)?;
        let dir_err = |source| SpoolError::Dir { path: dir.clone(), source };
        let rejected = dir.join(REJECTED_DIR);
        prepare_private_dir(&rejected, false)?;
        let mut state = State { rejected_files: fs::read_dir(&rejected).map_err(dir_err)?.count() as u64, ..State::default() };
        let upgrading = !matches!(fs::symlink_metadata(dir.join(FORMAT_FILE)), Ok(m) if m.is_file());

        let mut legacy = Vec::new();
        let mut names: Vec<(String, fs::FileType)> = Vec::new();
        for entry in fs::read_dir(&dir).map_err(dir_err)? {
            let entry = entry.map_err(dir_err)?;
            let file_type = entry.file_type().map_err(dir_err)?;
            names.push((entry.file_name().to_string_lossy().into_owned(), file_type));
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, file_type) in names {
            let path = dir.join(&name);
            if name == FORMAT_FILE || name == REJECTED_DIR {
                continue;
            }
            if let Some(dest) = name.strip_suffix(&format!(".{ACKED_EXT}")) {
                if file_type.is_file() && destinations.iter().any(|d| d.name == dest) {
                    continue; // read once every entry is indexed
                }
                if file_type.is_file() && !dest.is_empty() && dest.bytes().all(|b| b.is_ascii_lowercase()) {
                    // A destination no longer configured: its acknowledgements no longer matter.
                    tracing::info!(file = %path.display(), "removing the acknowledgements of a destination no longer configured");
                    let _ = fs::remove_file(&path);
                    continue;
                }
            }
            // New entries are numbered after every name seen, whatever is there: a new entry
            // never lands on something left in the way.
            if let Some(number) = name.get(..20).filter(|d| d.bytes().all(|b| b.is_ascii_digit())).and_then(|d| d.parse::<u64>().ok()) {
                state.next_number = state.next_number.max(number.saturating_add(1));
            }
            if file_type.is_dir() {
                tracing::warn!(dir = %path.display(), "a directory in the spool that is not the spool's; left alone");
                continue;
            }
            if name.ends_with(".tmp") {
                // An entry whose write was cut short (power cut, kill): it was never complete.
                // Removing a planted link removes the link, never its target.
                tracing::warn!(file = %path.display(), "removing incomplete spool entry");
                let _ = fs::remove_file(&path);
                state.damaged += 1;
                continue;
            }
            if let Some(number) = number_of(&name, ENTRY_EXT) {
                match read_entry(&path) {
                    Ok((kind, json, image)) => {
                        let size = (json.len() + image.map_or(0, |i| i.len())) as u64;
                        make_private_file(&path);
                        let created = fs::symlink_metadata(&path).and_then(|m| m.modified()).unwrap_or_else(|_| SystemTime::now());
                        state.next_number = state.next_number.max(number + 1);
                        let pending = wanted_by(kind);
                        if pending == 0 {
                            tracing::warn!(entry = number, kind = kind.tag(), "dropped a spooled result: no configured destination takes its kind");
                            state.dropped += 1;
                            let _ = fs::remove_file(&path);
                            continue;
                        }
                        state.total_bytes += size;
                        state.entries.insert(number, Entry { bytes: size, created, pending });
                    }
                    Err(ReadFailure::Gone) => {}
                    Err(ReadFailure::Resource(e)) => return Err(SpoolError::Dir { path: path.clone(), source: std::io::Error::other(e) }),
                    Err(ReadFailure::Bad(why)) => set_aside(&dir, &mut state, &name, &why),
                }
                continue;
            }
            match number_of(&name, "json") {
                Some(number) if upgrading && file_type.is_file() => legacy.push((number, name)),
                _ => set_aside(&dir, &mut state, &name, "not a spool entry (a file the daemon did not write)"),
            }
        }
        let mut spool = Spool {
            dir: dir.clone(),
            max_bytes: config.max_bytes,
            max_age: Duration::from_secs(config.max_age_hours.saturating_mul(3600)),
            fsync: config.fsync,
            fsync_delay: crate::fault::fsync_delay(),
            state: Mutex::new(State::default()),
            destinations: destinations.to_vec(),
            appended: destinations.iter().map(|_| tokio::sync::Notify::new()).collect(),
        };
        // The previous version's plain JSON entries, once (see the module's comment).
        let mut converted = 0;
        for (number, name) in legacy {
            let path = dir.join(&name);
            let parsed = fsread::read_no_follow(&path, "spool entry", MAX_ENTRY_BYTES).ok().and_then(|json| legacy_kind(&json).map(|kind| (kind, json)));
            match parsed {
                Some((kind, json)) if !state.entries.contains_key(&number) && wanted_by(kind) != 0 => {
                    spool.write_entry(number, &encode(kind, &json, None)).map_err(|source| SpoolError::Write { path: spool.path(number), source })?;
                    let _ = fs::remove_file(&path);
                    let created = SystemTime::now();
                    state.total_bytes += json.len() as u64;
                    state.entries.insert(number, Entry { bytes: json.len() as u64, created, pending: wanted_by(kind) });
                    state.next_number = state.next_number.max(number + 1);
                    converted += 1;
                }
                _ => {
                    tracing::warn!(file = %path.display(), "skipping damaged spool entry (not a complete result)");
                    set_aside(&dir, &mut state, &name, "not a complete result");
                }
            }
        }
        if converted > 0 {
            tracing::info!(entries = converted, "spool: converted the previous version's entries to checksummed ones");
        }
        if upgrading {
            write_format_file(&dir).map_err(dir_err)?;
        }
        state.next_number = state.next_number.max(1);
        spool.apply_acknowledgements(&mut state).map_err(dir_err)?;
        if !state.entries.is_empty() {
            tracing::info!(entries = state.entries.len(), bytes = state.total_bytes, "spool holds results from an earlier run; they are sent first");
        }
        // What the conversion set aside in its way.
        let (damaged, rejected) = { let s = spool.lock(); (s.damaged, s.rejected_files) };
        state.damaged += damaged;
        state.rejected_files += rejected;
        spool.state = Mutex::new(state);
        Ok(spool)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, number: u64) -> PathBuf {
        self.dir.join(format!("{number:020}.{ENTRY_EXT}"))
    }

    fn tmp_path(&self, number: u64, attempt: u32) -> PathBuf {
        match attempt {
            0 => self.dir.join(format!("{number:020}.{ENTRY_EXT}.tmp")),
            n => self.dir.join(format!("{number:020}.{n}.{ENTRY_EXT}.tmp")),
        }
    }

    /// Writes a result durably. Drops (and counts) the oldest entries if the spool would exceed
    /// its size, and entries older than its age limit. A write that fails for want of
    /// descriptors, memory or disk space is retried (plain sleeps between tries; see
    /// [`Spool::append_waiting`]).
    pub fn append(&self, kind: EntryKind, bytes: &[u8]) -> Result<u64, SpoolError> {
        self.append_waiting(kind, bytes, None, &|d| {
            std::thread::sleep(d);
            true
        })
    }

    /// [`Spool::append`], with `wait(d)` between retries of a write that failed for want of a
    /// resource: it waits `d` (the inference thread beats its heartbeat meanwhile) and says
    /// whether to go on. After [`WRITE_RETRY_FOR`] the result is given up: `Err`, for the
    /// caller to count as lost.
    ///
    /// The lock is held only to reserve a number and make room; the file is written, fsynced
    /// and renamed without it, so a slow SD card (hundreds of ms per fsync) never blocks the
    /// publisher, which reads and removes entries concurrently. Only the inference thread
    /// appends.
    pub fn append_waiting(&self, kind: EntryKind, json: &[u8], image: Option<&[u8]>, wait: &dyn Fn(Duration) -> bool) -> Result<u64, SpoolError> {
        let size = (json.len() + image.map_or(0, <[u8]>::len)) as u64;
        if size > MAX_ENTRY_BYTES {
            return Err(SpoolError::EntryTooLarge { size, max: MAX_ENTRY_BYTES });
        }
        if size > self.max_bytes {
            return Err(SpoolError::TooLarge { size, max: self.max_bytes });
        }
        let pending = self.wanted_by(kind);
        if pending == 0 {
            return Err(SpoolError::NoDestination { kind: kind.tag() });
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
        let bytes = encode(kind, json, image);
        let started = Instant::now();
        let mut delay = FIRST_RETRY;
        let written = loop {
            match self.write_entry(number, &bytes) {
                Err(e) if fsread::is_resource_error(&e) => {
                    let tries = {
                        let mut state = self.lock();
                        state.retried += 1;
                        state.retried
                    };
                    if started.elapsed() >= WRITE_RETRY_FOR {
                        break Err(e);
                    }
                    // Logged at the first retry and then every few seconds, not at every try.
                    if delay == FIRST_RETRY || delay == MAX_RETRY && tries % 5 == 0 {
                        tracing::warn!(entry = number, "cannot write a spool entry: {e}; retrying (the system is short of a resource)");
                    }
                    if !wait(delay) {
                        break Err(e);
                    }
                    delay = (delay * 2).min(MAX_RETRY);
                }
                other => break other,
            }
        };
        let mut state = self.lock();
        if let Err(source) = written {
            state.total_bytes -= size;
            return Err(SpoolError::Write { path: self.path(number), source });
        }
        state.entries.insert(number, Entry { bytes: size, created: SystemTime::now(), pending });
        drop(state);
        for (i, notify) in self.appended.iter().enumerate() {
            if pending & (1 << i) != 0 {
                notify.notify_one();
            }
        }
        Ok(number)
    }

    /// Writes entry `number` under a temporary name created exclusively, without following a
    /// link (anything in the way is set aside and the next name tried), then renames it into
    /// place.
    fn write_entry(&self, number: u64, bytes: &[u8]) -> std::io::Result<()> {
        if crate::fault::spool_write_fails(number) {
            return Err(std::io::Error::from_raw_os_error(libc::EIO)); // test-only: a dying SD card
        }
        let path = self.path(number);
        for attempt in 0..TMP_ATTEMPTS {
            let tmp = self.tmp_path(number, attempt);
            let opened = OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&tmp);
            let mut f = match opened {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // Not ours (a temporary name is used once): planted, or left by a kill.
                    let name = tmp.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    let keep = count_aside(&mut self.lock());
                    move_aside(&self.dir, &name, "something was in the way of a new entry", keep);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut write = || -> std::io::Result<()> {
                // The creation mode is masked by the umask; 0600 exactly, whatever it is.
                f.set_permissions(fs::Permissions::from_mode(0o600))?;
                f.write_all(bytes)?;
                if self.fsync {
                    if let Some(delay) = self.fsync_delay {
                        std::thread::sleep(delay); // test-only: a slow SD card
                    }
                    f.sync_all()?;
                }
                // A rename replaces whatever is at `path` (a link too), never writing through it.
                fs::rename(&tmp, &path)?;
                if self.fsync {
                    // Make the rename itself durable.
                    fs::File::open(&self.dir)?.sync_all()?;
                }
                Ok(())
            };
            let result = write();
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            return result;
        }
        Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, format!("every temporary name for entry {number} was taken")))
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

    /// The destinations that take `kind`, one bit each.
    fn wanted_by(&self, kind: EntryKind) -> u32 {
        self.destinations.iter().enumerate().filter(|(_, d)| d.kinds.contains(&kind)).map(|(i, _)| 1u32 << i).sum()
    }

    /// The delivery cursor of the destination called `name` (as given to [`Spool::open`]).
    pub fn delivery(&self, name: &str) -> Option<Delivery> {
        self.destinations.iter().position(|d| d.name == name).map(Delivery)
    }

    /// Woken when an entry for `delivery` is appended.
    pub fn appended(&self, delivery: Delivery) -> &tokio::sync::Notify {
        &self.appended[delivery.0]
    }

    fn acked_file(&self, delivery: Delivery) -> PathBuf {
        self.dir.join(format!("{}.{ACKED_EXT}", self.destinations[delivery.0].name))
    }

    /// At start: each destination's recorded acknowledgements clear its bit; entries every
    /// destination has are deleted; each file is rewritten with only what is still pending
    /// elsewhere (so the files stay small).
    fn apply_acknowledgements(&self, state: &mut State) -> std::io::Result<()> {
        for i in 0..self.destinations.len() {
            let delivery = Delivery(i);
            let path = self.acked_file(delivery);
            let text = match fsread::read_no_follow(&path, "spool acknowledgements", ACKED_MAX_BYTES) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(e) if e.is_not_found() => continue,
                Err(e) => {
                    // Unreadable: its entries are sent to that destination again (at least
                    // once), never lost.
                    tracing::warn!(file = %path.display(), "cannot read the spool's acknowledgements ({}); those results are sent again", e.reason());
                    String::new()
                }
            };
            for number in text.lines().filter_map(|l| l.trim().parse::<u64>().ok()) {
                if let Some(e) = state.entries.get_mut(&number) {
                    e.pending &= !delivery.bit();
                }
            }
        }
        let done: Vec<u64> = state.entries.iter().filter(|(_, e)| e.pending == 0).map(|(n, _)| *n).collect();
        for number in done {
            if let Some(e) = state.entries.remove(&number) {
                state.total_bytes -= e.bytes;
                unlink(&self.path(number));
            }
        }
        for i in 0..self.destinations.len() {
            let delivery = Delivery(i);
            let path = self.acked_file(delivery);
            let kept: String = state
                .entries
                .iter()
                .filter(|(_, e)| e.pending & delivery.bit() == 0)
                .map(|(n, _)| format!("{n:020}\n"))
                .collect();
            if kept.is_empty() {
                if fs::symlink_metadata(&path).is_ok() {
                    fs::remove_file(&path)?;
                }
                continue;
            }
            let tmp = path.with_extension(format!("{ACKED_EXT}.tmp"));
            let _ = fs::remove_file(&tmp);
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&tmp)?;
            f.set_permissions(fs::Permissions::from_mode(0o600))?;
            f.write_all(kept.as_bytes())?;
            if self.fsync {
                f.sync_all()?;
            }
            fs::rename(&tmp, &path)?;
        }
        Ok(())
    }

    /// The oldest entry for `delivery` after `after` (or its oldest of all), read from disk and
    /// checked. Entries that do not check out are set aside and counted. When the system is
    /// short of descriptors or memory, returns `None` after a short pause, leaving the entry
    /// for the next call. Blocking file I/O: destinations call it off the async workers (see
    /// [`Spool::read_batch`]).
    pub fn next_after(&self, delivery: Delivery, after: Option<u64>) -> Option<SpooledResult> {
        let mut at = after;
        loop {
            let number = {
                let mut state = self.lock();
                let expired = self.expire(&mut state);
                let next = Self::next_pending(&state, delivery, at);
                drop(state);
                unlink_all(expired);
                next?
            };
            match read_entry(&self.path(number)) {
                Ok((kind, json, image)) => return Some(SpooledResult { number, kind, json, image }),
                Err(ReadFailure::Resource(e)) => {
                    self.lock().retried += 1;
                    tracing::warn!(entry = number, "cannot read a spool entry: {e}; it stays, retrying");
                    // The destination asks again at once: do not let it spin.
                    std::thread::sleep(Duration::from_millis(100));
                    return None;
                }
                Err(failure) => {
                    let mut state = self.lock();
                    // Acknowledged (or dropped) meanwhile: not damaged, just gone.
                    if let Some(e) = state.entries.remove(&number) {
                        state.total_bytes -= e.bytes;
                        match failure {
                            ReadFailure::Bad(why) => {
                                let keep = count_aside(&mut state);
                                drop(state);
                                move_aside(&self.dir, &format!("{number:020}.{ENTRY_EXT}"), &why, keep);
                            }
                            _ => {
                                state.damaged += 1;
                                tracing::warn!(entry = number, "skipping damaged spool entry (its file is gone)");
                            }
                        }
                    }
                    at = Some(number);
                }
            }
        }
    }

    fn next_pending(state: &State, delivery: Delivery, after: Option<u64>) -> Option<u64> {
        let start = after.map_or(0, |a| a + 1);
        state.entries.range(start..).find(|(_, e)| e.pending & delivery.bit() != 0).map(|(n, _)| *n)
    }

    /// Up to `max` entries for `delivery` after `after`, oldest first.
    pub fn read_batch(&self, delivery: Delivery, after: Option<u64>, max: usize) -> Vec<SpooledResult> {
        let mut out = Vec::new();
        let mut at = after;
        while out.len() < max {
            let Some(entry) = self.next_after(delivery, at) else { break };
            at = Some(entry.number);
            out.push(entry);
        }
        out
    }

    /// Whether the index holds an entry for `delivery` after `after` (no file I/O).
    pub fn has_after(&self, delivery: Delivery, after: Option<u64>) -> bool {
        Self::next_pending(&self.lock(), delivery, after).is_some()
    }

    /// `delivery`'s destination has entry `number`, and does its own on-disk half
    /// ([`Spool::finish`]) at once. Returns how long it was spooled.
    pub fn remove(&self, delivery: Delivery, number: u64) -> Option<Duration> {
        let (waited, cleanup) = self.acknowledge(delivery, number)?;
        self.finish(cleanup);
        Some(waited)
    }

    /// The in-memory half of an acknowledgement (no file I/O): once every destination has the
    /// entry it leaves the index at once, and the caller does the returned [`Cleanup`] where
    /// blocking is allowed. Returns how long it was spooled. A crash before the cleanup sends
    /// the result to that destination again (at least once).
    pub fn acknowledge(&self, delivery: Delivery, number: u64) -> Option<(Duration, Cleanup)> {
        let mut state = self.lock();
        let e = state.entries.get_mut(&number)?;
        if e.pending & delivery.bit() == 0 {
            return None;
        }
        e.pending &= !delivery.bit();
        let waited = SystemTime::now().duration_since(e.created).unwrap_or_default();
        if e.pending != 0 {
            return Some((waited, Cleanup::Record { file: self.acked_file(delivery), number }));
        }
        let bytes = e.bytes;
        state.entries.remove(&number);
        state.total_bytes -= bytes;
        Some((waited, Cleanup::Delete(self.path(number))))
    }

    /// The on-disk half of an acknowledgement (blocking file I/O).
    pub fn finish(&self, cleanup: Cleanup) {
        match cleanup {
            Cleanup::Delete(path) => unlink(&path),
            Cleanup::Record { file, number } => {
                let appended = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&file)
                    .and_then(|mut f| {
                        f.write_all(format!("{number:020}\n").as_bytes())?;
                        if self.fsync {
                            f.sync_data()?;
                        }
                        Ok(())
                    });
                if let Err(e) = appended {
                    // Not lost: that destination gets the result again after a restart.
                    tracing::warn!(file = %file.display(), "cannot note an acknowledgement: {e}");
                }
            }
        }
    }

    /// How many entries `delivery`'s destination has not acknowledged yet.
    pub fn pending(&self, delivery: Delivery) -> usize {
        self.lock().entries.values().filter(|e| e.pending & delivery.bit() != 0).count()
    }

    pub fn stats(&self) -> SpoolStats {
        let s = self.lock();
        SpoolStats { depth: s.entries.len(), bytes: s.total_bytes, dropped: s.dropped, damaged: s.damaged, retried: s.retried }
    }

    /// Every destination has every result.
    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Makes `dir` (the spool, or its `rejected/`) a private directory of this user: created 0700
/// if missing; refused if it is a symbolic link, not a directory, owned by another user, or
/// writable by group or others; made 0700 if others may only read it (the previous version
/// made it 0755).
/// Makes sure `dir` is a private directory of this user's (created 0700 if missing; refused
/// when it is a link, someone else's, or writable by others): used for every directory that
/// holds patient data.
pub fn prepare_private_dir(dir: &Path, create_parents: bool) -> Result<(), SpoolError> {
    let unsafe_dir = |reason: String| SpoolError::Unsafe { path: dir.to_path_buf(), reason };
    let dir_err = |source| SpoolError::Dir { path: dir.to_path_buf(), source };
    match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(unsafe_dir("it is a symbolic link; give the real directory (results must not go where a link points)".into()))
        }
        Ok(m) if !m.is_dir() => return Err(unsafe_dir("it is not a directory".into())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| create_parents && !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(dir_err)?;
            }
            match fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(dir_err(e)),
            }
        }
        Err(e) => return Err(dir_err(e)),
    }
    // Checked on the open directory, not the path: what is checked is what is used.
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .map_err(|e| if e.raw_os_error() == Some(libc::ELOOP) { unsafe_dir("it is a symbolic link".into()) } else { dir_err(e) })?;
    let meta = handle.metadata().map_err(dir_err)?;
    // SAFETY: geteuid cannot fail and has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(unsafe_dir(format!("it is owned by uid {}, not by this user (uid {me}): whoever owns it can read and plant results", meta.uid())));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "it is writable by group or others (mode {mode:04o}): anyone who can write there can plant or remove results; make it private (chmod 700) after checking what is in it"
        )));
    }
    if mode != 0o700 {
        handle.set_permissions(fs::Permissions::from_mode(0o700)).map_err(dir_err)?;
        tracing::warn!(dir = %dir.display(), "directory was mode {mode:04o}; made it 0700 (it holds results and patient data)");
    }
    Ok(())
}

/// Takes away group and other access from an entry left by an earlier version or run.
fn make_private_file(path: &Path) {
    let opened = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path);
    if let Ok(f) = opened {
        if f.metadata().is_ok_and(|m| m.is_file() && m.mode() & 0o077 != 0) {
            let _ = f.set_permissions(fs::Permissions::from_mode(0o600));
        }
    }
}

fn write_format_file(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(FORMAT_FILE);
    match OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&path) {
        Ok(mut f) => f.write_all(FORMAT_TEXT),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Counts a file set aside and says whether `rejected/` has room to keep it.
fn count_aside(state: &mut State) -> bool {
    state.damaged += 1;
    let keep = state.rejected_files < REJECTED_KEEP;
    if keep {
        state.rejected_files += 1;
    }
    keep
}

/// [`count_aside`] and [`move_aside`], for `open` (nothing runs concurrently yet).
fn set_aside(dir: &Path, state: &mut State, name: &str, why: &str) {
    let keep = count_aside(state);
    move_aside(dir, name, why, keep);
}

/// Moves `name` (in `dir`) into `rejected/`, or deletes it when `rejected/` is full. Renaming
/// moves a link itself, never its target. File I/O: never under the spool's lock.
fn move_aside(dir: &Path, name: &str, why: &str, keep: bool) {
    let from = dir.join(name);
    if !keep {
        tracing::warn!(file = %from.display(), "damaged spool entry: {why}; deleted ({REJECTED_KEEP} files are already in {REJECTED_DIR}/)");
        let _ = fs::remove_file(&from);
        return;
    }
    let rejected = dir.join(REJECTED_DIR);
    let mut to = rejected.join(name);
    let mut n = 1;
    while fs::symlink_metadata(&to).is_ok() && n < 1000 {
        to = rejected.join(format!("{name}.{n}"));
        n += 1;
    }
    match fs::rename(&from, &to) {
        Ok(()) => {
            tracing::warn!(file = %from.display(), kept = %to.display(), "damaged spool entry set aside, not published: {why}");
        }
        Err(e) => {
            tracing::warn!(file = %from.display(), "damaged spool entry: {why}; cannot set it aside ({e}), deleting it");
            let _ = fs::remove_file(&from);
        }
    }
}

/// `<20 digits>.<ext>` → the number.
fn number_of(name: &str, ext: &str) -> Option<u64> {
    let digits = name.strip_suffix(ext)?.strip_suffix('.')?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// The checksum covers the kind and the payload, so neither can be changed alone.
fn checksum(kind: EntryKind, json: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(kind.tag().as_bytes());
    h.update(b"\n");
    h.update(json);
    hex::encode(h.finalize())
}

/// `LESIOND-SPOOL 1 <kind> <length> <sha256>\n<payload>`.
/// With an image: `... <sha256> image <length> <sha256>\n<payload><image>`.
fn encode(kind: EntryKind, json: &[u8], image: Option<&[u8]>) -> Vec<u8> {
    let mut header = format!("{MAGIC} {} {} {}", kind.tag(), json.len(), checksum(kind, json));
    if let Some(image) = image {
        header.push_str(&format!(" {IMAGE_TAG} {} {}", image.len(), image_checksum(image)));
    }
    header.push('\n');
    let mut bytes = Vec::with_capacity(header.len() + json.len() + image.map_or(0, <[u8]>::len));
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(json);
    if let Some(image) = image {
        bytes.extend_from_slice(image);
    }
    bytes
}

/// Marks an entry's attached image in its header.
const IMAGE_TAG: &str = "image";

fn image_checksum(image: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(IMAGE_TAG.as_bytes());
    h.update(b"\n");
    h.update(image);
    hex::encode(h.finalize())
}

/// A checked entry: its kind, where its payload is, and where its image is (if it has one).
struct Decoded {
    kind: EntryKind,
    payload: std::ops::Range<usize>,
    image: Option<std::ops::Range<usize>>,
}

/// Checks an entry's header, lengths and checksums and that its payload is the result its
/// header says.
fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    let newline = bytes.iter().take(300).position(|&b| b == b'\n').ok_or("no spool header (a file the daemon did not write)")?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| "no spool header")?;
    let rest = header.strip_prefix(MAGIC).and_then(|r| r.strip_prefix(' ')).ok_or("no spool header (a file the daemon did not write)")?;
    let fields: Vec<&str> = rest.split(' ').collect();
    let (tag, len, sum, image) = match fields[..] {
        [tag, len, sum] => (tag, len, sum, None),
        [tag, len, sum, IMAGE_TAG, image_len, image_sum] => (tag, len, sum, Some((image_len, image_sum))),
        _ => return Err("malformed spool header".into()),
    };
    let kind = EntryKind::from_tag(tag).ok_or("unknown entry kind")?;
    let len: usize = len.parse().map_err(|_| "malformed spool header")?;
    let image_len: usize = match image {
        Some((l, _)) => l.parse().map_err(|_| "malformed spool header")?,
        None => 0,
    };
    let start = newline + 1;
    let body = bytes.len() - start;
    if body != len.saturating_add(image_len) {
        return Err(format!("truncated or extended: {body} bytes after the header, the header says {}", len.saturating_add(image_len)));
    }
    let payload = start..start + len;
    if checksum(kind, &bytes[payload.clone()]) != sum {
        return Err("checksum mismatch (damaged or altered)".into());
    }
    let image = match image {
        Some((_, image_sum)) => {
            let range = payload.end..bytes.len();
            if image_checksum(&bytes[range.clone()]) != image_sum {
                return Err("image checksum mismatch (damaged or altered)".into());
            }
            Some(range)
        }
        None => None,
    };
    Ok(Decoded { kind, payload, image })
}

/// Reads and checks an entry's file (a link is refused, not followed): its kind, payload and
/// image.
fn read_entry(path: &Path) -> Result<(EntryKind, Vec<u8>, Option<Vec<u8>>), ReadFailure> {
    let bytes = match fsread::read_no_follow(path, "spool entry", MAX_ENTRY_BYTES + 400) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Err(ReadFailure::Gone),
        Err(e) if e.is_resource() => return Err(ReadFailure::Resource(e.to_string())),
        Err(e) => return Err(ReadFailure::Bad(e.reason())),
    };
    match decode(&bytes) {
        Ok(d) => Ok((d.kind, bytes[d.payload].to_vec(), d.image.map(|r| bytes[r].to_vec()))),
        Err(why) => Err(ReadFailure::Bad(why)),
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

/// The previous version's plain entries (only read once, to convert them; see the module's
/// comment) were JSON: a classification has a `result_id`, an assessment an `assessment_id`.
fn legacy_kind(bytes: &[u8]) -> Option<EntryKind> {
    #[derive(serde::Deserialize)]
    struct Head {
        result_id: Option<String>,
        assessment_id: Option<String>,
    }
    let head = serde_json::from_slice::<Head>(bytes).ok()?;
    match (head.result_id, head.assessment_id) {
        (Some(id), None) if !id.is_empty() => Some(EntryKind::Classification),
        (None, Some(id)) if !id.is_empty() => Some(EntryKind::Assessment),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

//! The examination context in force (whose lesion, which visit, where on the body), kept on
//! disk so that it survives a restart of the daemon: `context/current.json`, beside the spool
//! (0600 in a 0700 directory checked like the spool's: it holds patient data).
//!
//! A context lasts until replaced or cleared, or until `context.idle_timeout_secs` have passed
//! since it was set or since the last assessment made under it, whichever is later: a station
//! left alone must not file the next patient's lesion under the previous one.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::fsread;
use crate::report::context::ExaminationContext;
use crate::spool;

const FILE: &str = "current.json";
const MAX_FILE_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ContextStoreError {
    #[error("context directory: {0}")]
    Dir(#[from] spool::SpoolError),
    #[error("cannot write the examination context to {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// What is on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Kept {
    context: ExaminationContext,
    /// Seconds since the epoch of when it was set or last used by an assessment.
    last_used: u64,
}

pub struct ContextStore {
    path: PathBuf,
    /// Zero: no timeout.
    idle: Duration,
    kept: Mutex<Option<Kept>>,
    /// The context in force, for the station screen (which shows the lesion and the body site,
    /// or that no patient is selected).
    changes: tokio::sync::watch::Sender<Option<ExaminationContext>>,
}

fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl ContextStore {
    /// Opens (creating) the directory and reads the context a previous run left, if any and
    /// still in force. A file that cannot be read back is set aside with a warning (the
    /// clinician sets the context again), never a reason not to start.
    pub fn open(dir: &Path, idle: Duration) -> Result<ContextStore, ContextStoreError> {
        spool::prepare_private_dir(dir, true)?;
        let path = dir.join(FILE);
        let kept = match fsread::read_no_follow(&path, "examination context", MAX_FILE_BYTES) {
            Ok(bytes) => match serde_json::from_slice::<Kept>(&bytes) {
                Ok(kept) => Some(kept),
                Err(e) => {
                    tracing::warn!(file = %path.display(), "cannot read the examination context left by the last run (not what this version writes: {:?} error at line {}); no context is set", e.classify(), e.line());
                    let _ = fs::rename(&path, path.with_extension("json.unreadable"));
                    None
                }
            },
            Err(e) if e.is_not_found() => None,
            Err(e) => {
                tracing::warn!(file = %path.display(), "cannot read the examination context left by the last run ({}); no context is set", e.reason());
                None
            }
        };
        let (changes, _) = tokio::sync::watch::channel(kept.as_ref().map(|k: &Kept| k.context.clone()));
        let store = ContextStore { path, idle, kept: Mutex::new(kept), changes };
        // Expired while the daemon was down: gone now, file too.
        store.end_if_idle();
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Kept>> {
        self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The context in force now, if any.
    pub fn current(&self) -> Option<ExaminationContext> {
        self.current_at(SystemTime::now())
    }

    fn current_at(&self, now: SystemTime) -> Option<ExaminationContext> {
        self.end_if_idle_at(now);
        self.lock().as_ref().map(|k| k.context.clone())
    }

    /// Ends the context if it has been idle past `context.idle_timeout_secs` (the daemon calls
    /// it every second, so that the screen shows an ended context as ended).
    pub fn end_if_idle(&self) {
        self.end_if_idle_at(SystemTime::now());
    }

    fn end_if_idle_at(&self, now: SystemTime) {
        let mut kept = self.lock();
        let expired = kept.as_ref().is_some_and(|k| !self.idle.is_zero() && epoch_secs(now).saturating_sub(k.last_used) >= self.idle.as_secs());
        if expired {
            *kept = None;
            drop(kept);
            self.changes.send_replace(None);
            tracing::info!("examination context ended: idle for context.idle_timeout_secs ({} s)", self.idle.as_secs());
            self.remove_file();
        }
    }

    /// Replaces the context (written to disk before it is in force: a restart keeps it).
    pub fn set(&self, context: ExaminationContext) -> Result<(), ContextStoreError> {
        let kept = Kept { context, last_used: epoch_secs(SystemTime::now()) };
        self.write(&kept)?;
        self.changes.send_replace(Some(kept.context.clone()));
        *self.lock() = Some(kept);
        Ok(())
    }

    pub fn clear(&self) {
        *self.lock() = None;
        self.changes.send_replace(None);
        self.remove_file();
    }

    /// Follows the context in force (set, cleared, ended by its idle time once
    /// [`ContextStore::end_if_idle`] notices: the daemon looks every second).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<ExaminationContext>> {
        self.changes.subscribe()
    }

    /// An assessment was made under the context: its idle time starts again. Best effort on
    /// disk (a failed write only shortens the context's life after a restart).
    pub fn used(&self) {
        let kept = {
            let mut kept = self.lock();
            let Some(k) = kept.as_mut() else { return };
            k.last_used = epoch_secs(SystemTime::now());
            k.clone()
        };
        if let Err(e) = self.write(&kept) {
            tracing::warn!("{e}");
        }
    }

    fn write(&self, kept: &Kept) -> Result<(), ContextStoreError> {
        let err = |source| ContextStoreError::Write { path: self.path.clone(), source };
        let json = serde_json::to_vec(kept).map_err(|e| err(std::io::Error::other(e)))?;
        let tmp = self.path.with_extension("json.tmp");
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&tmp).map_err(err)?;
        f.set_permissions(fs::Permissions::from_mode(0o600)).map_err(err)?;
        f.write_all(&json).map_err(err)?;
        f.sync_all().map_err(err)?;
        fs::rename(&tmp, &self.path).map_err(err)
    }

    fn remove_file(&self) {
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %self.path.display(), "cannot remove the ended examination context: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn context(id: &str) -> ExaminationContext {
        ExaminationContext {
            context_id: "c-1".into(),
            set_at: "2026-12-05T10:00:00Z".into(),
            patient_id: id.into(),
            patient_name: Some("Doe^Jane".into()),
            birth_date: None,
            sex: None,
            accession_number: None,
            study_instance_uid: None,
            body_site: Some("back".into()),
            body_site_snomed: None,
            lesion_id: Some("L1".into()),
        }
    }

    #[test]
    fn a_context_survives_a_restart_privately_and_clearing_removes_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let at = dir.path().join("context");
        let store = ContextStore::open(&at, Duration::from_secs(1800)).expect("open");
        assert_eq!(store.current(), None);
        store.set(context("P-1")).expect("set");
        assert_eq!(fs::metadata(at.join(FILE)).expect("file").mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&at).expect("dir").mode() & 0o777, 0o700);
        drop(store);
        let store = ContextStore::open(&at, Duration::from_secs(1800)).expect("reopen");
        assert_eq!(store.current().map(|c| c.patient_id), Some("P-1".into()));
        store.clear();
        assert!(!at.join(FILE).exists());
        assert_eq!(ContextStore::open(&at, Duration::from_secs(1800)).expect("reopen").current(), None);
    }

    #[test]
    fn a_context_ends_after_its_idle_time_and_use_renews_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = ContextStore::open(dir.path(), Duration::from_secs(60)).expect("open");
        store.set(context("P-2")).expect("set");
        let now = SystemTime::now();
        assert!(store.current_at(now + Duration::from_secs(59)).is_some());
        store.lock().as_mut().expect("kept").last_used -= 30;
        store.used();
        assert!(store.current_at(now + Duration::from_secs(45)).is_some(), "renewed by use (else 75 s idle)");
        assert!(store.current_at(now + Duration::from_secs(61)).is_none());
        assert!(!dir.path().join(FILE).exists(), "an ended context leaves no file");
    }

    #[test]
    fn an_unreadable_file_is_no_context_not_a_failure() {
        let dir = tempfile::tempdir().expect("tmp");
        ContextStore::open(dir.path(), Duration::ZERO).expect("create");
        fs::write(dir.path().join(FILE), b"{not json").expect("write");
        let store = ContextStore::open(dir.path(), Duration::ZERO).expect("open");
        assert_eq!(store.current(), None);
    }
}

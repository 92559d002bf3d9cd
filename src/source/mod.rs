//! Frame sources: where frames come from. Each runs on its own thread and yields
//! [`SourceEvent`]s; the pipeline turns them into classifications.
//!
//! - [`camera`]: a UVC dermatoscope through nokhwa (V4L2), reopened with backoff when unplugged.
//! - [`directory`]: the image files of a folder, in name order, once or looping.
//! - [`synthetic`]: generated lesion-like frames for a machine with nothing attached.

#[cfg(feature = "camera")]
pub mod camera;
pub mod decode;
pub mod directory;
pub mod synthetic;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{SourceKind, SourceSettings};
use crate::frame::Frame;

/// One step of a source.
#[derive(Debug)]
pub enum SourceEvent {
    Frame(Frame),
    /// An input that could not be decoded, or was refused for its size before decoding
    /// (`too_large`): skipped, logged with its name and counted; the source goes on.
    Skipped { name: String, reason: String, too_large: bool },
    /// The input could not be read because the system is short of a resource (descriptors,
    /// memory): not the input's fault. Counted and logged apart from corrupt input; the source
    /// has already waited a backoff and tries the same input again at the next call.
    ResourceShortage { name: String, reason: String },
    /// The source has nothing more (a directory that does not loop, a bounded synthetic run).
    End,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read source directory {path}: {source}")]
    Directory { path: std::path::PathBuf, source: std::io::Error },
    #[error("camera: {0}")]
    Camera(String),
    #[error("this build has no camera support (built without the `camera` feature)")]
    NoCameraSupport,
}

/// A source of frames. `next` blocks until the next event; it returns early with `None` when
/// `stop` is raised (so shutdown never waits on a slow camera or a long replay interval).
/// Not `Send`: a V4L2 camera handle stays on the thread that opened it, so sources are opened
/// on the capture thread.
pub trait FrameSource {
    fn next(&mut self, stop: &StopFlag) -> Option<SourceEvent>;
    /// Whether frames must never be dropped when inference falls behind (a lossless replay).
    fn lossless(&self) -> bool {
        false
    }
}

/// Raised once to stop a source or the whole pipeline.
///
/// It also carries the capture thread's heartbeat: a source that waits on purpose (a camera
/// being reopened with backoff, a paced replay, a paused pipeline) waits through
/// [`StopFlag::sleep`], which beats, so the watchdog tells a legitimately idle capture thread
/// from a stuck one.
#[derive(Debug, Clone, Default)]
pub struct StopFlag {
    raised: Arc<AtomicBool>,
    heartbeat: Option<Arc<crate::supervision::Heartbeat>>,
}

impl StopFlag {
    /// A stop flag whose sleeps beat `heartbeat`.
    pub fn with_heartbeat(heartbeat: Arc<crate::supervision::Heartbeat>) -> Self {
        Self { raised: Arc::default(), heartbeat: Some(heartbeat) }
    }
    pub fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
    }
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }
    /// Tells the watchdog this thread is alive.
    pub fn beat(&self) {
        if let Some(h) = &self.heartbeat {
            h.beat();
        }
    }
    /// Sleeps up to `d`, in short steps, returning `false` early if the flag is raised.
    pub fn sleep(&self, d: Duration) -> bool {
        let step = Duration::from_millis(50);
        let mut left = d;
        while !left.is_zero() {
            if self.is_raised() {
                return false;
            }
            let s = left.min(step);
            self.beat();
            std::thread::sleep(s);
            left -= s;
        }
        !self.is_raised()
    }
}

/// Opens the source that `config.kind` names.
pub fn open(config: &SourceSettings) -> Result<Box<dyn FrameSource>, SourceError> {
    Ok(match config.kind {
        SourceKind::Directory => Box::new(directory::DirectorySource::open(&config.directory, config.limits)?),
        SourceKind::Synthetic => Box::new(synthetic::SyntheticSource::new(&config.synthetic)),
        #[cfg(feature = "camera")]
        SourceKind::Camera => Box::new(camera::CameraSource::new(&config.camera, config.limits)),
        #[cfg(not(feature = "camera"))]
        SourceKind::Camera => return Err(SourceError::NoCameraSupport),
    })
}

/// Paces a source at `fps` frames per second (0 = unpaced).
#[derive(Debug)]
pub(crate) struct Pacer {
    interval: Option<Duration>,
    next_at: Option<std::time::Instant>,
}

impl Pacer {
    pub(crate) fn new(fps: f64) -> Self {
        let interval = (fps > 0.0).then(|| Duration::from_secs_f64(1.0 / fps));
        Self { interval, next_at: None }
    }

    /// Waits for the next slot; `false` if stopped meanwhile.
    pub(crate) fn wait(&mut self, stop: &StopFlag) -> bool {
        let Some(interval) = self.interval else { return !stop.is_raised() };
        let now = std::time::Instant::now();
        let at = self.next_at.unwrap_or(now);
        if at > now && !stop.sleep(at - now) {
            return false;
        }
        // Never try to catch up a backlog: a late frame starts a new schedule.
        self.next_at = Some(at.max(now) + interval);
        !stop.is_raised()
    }
}

//! A UVC dermatoscope through nokhwa (V4L2).
//!
//! The camera is opened lazily and reopened with exponential backoff whenever it fails (an
//! unplugged USB cable, a reset device): the daemon stays up, logs the state once per change,
//! and carries on when the camera is back.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
    Resolution,
};
use nokhwa::Camera;

use super::decode::DecodeLimits;
use super::{decode, FrameSource, SourceError, SourceEvent, StopFlag};
use crate::config::{CameraConfig, PixelFormat};
use crate::frame::{Frame, FrameOrigin};

const FIRST_BACKOFF: Duration = Duration::from_millis(500);

pub struct CameraSource {
    config: CameraConfig,
    camera: Option<Camera>,
    backoff: Backoff,
    seq: u64,
    /// The last error reported, so an unplugged camera is logged once, not every retry.
    last_error: Option<String>,
    limits: DecodeLimits,
}

/// Exponential backoff between attempts. It is reset only by a frame actually read: a camera
/// that opens but fails every `frame()` backs off like one that does not open, instead of
/// reopening in a hot loop.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Self { next: FIRST_BACKOFF, max: max.max(FIRST_BACKOFF) }
    }
    /// An attempt failed: how long to wait before the next one.
    fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }
    /// A frame was read: the camera works again.
    fn frame_read(&mut self) {
        self.next = FIRST_BACKOFF;
    }
}

impl CameraSource {
    pub fn new(config: &CameraConfig, limits: DecodeLimits) -> Self {
        let backoff = Backoff::new(Duration::from_secs(config.reopen_backoff_max_secs.max(1)));
        Self { config: config.clone(), camera: None, backoff, seq: 0, last_error: None, limits }
    }

    fn report(&mut self, error: String) {
        if self.last_error.as_deref() != Some(error.as_str()) {
            tracing::warn!(device = %self.config.device, "camera unavailable: {error}; retrying with backoff");
            self.last_error = Some(error);
        }
    }
}

/// Opens the configured camera and starts streaming.
pub fn open_camera(config: &CameraConfig) -> Result<Camera, SourceError> {
    let index = resolve_device(&config.device)?;
    let frame_format = match config.format {
        PixelFormat::Mjpeg => FrameFormat::MJPEG,
        PixelFormat::Yuyv => FrameFormat::YUYV,
    };
    let wanted = CameraFormat::new(Resolution::new(config.width, config.height), frame_format, config.fps);
    let requested =
        RequestedFormat::with_formats(RequestedFormatType::Closest(wanted), &[FrameFormat::MJPEG, FrameFormat::YUYV]);
    let mut camera = Camera::new(index, requested).map_err(|e| SourceError::Camera(e.to_string()))?;
    camera.open_stream().map_err(|e| SourceError::Camera(e.to_string()))?;
    let got = camera.camera_format();
    tracing::info!(
        device = %config.device,
        name = %camera.info().human_name(),
        "camera streaming {}x{} {} at {} fps",
        got.resolution().width(),
        got.resolution().height(),
        got.format(),
        got.frame_rate()
    );
    Ok(camera)
}

/// Turns `0`, `/dev/video0`, a `/dev/v4l/by-id/...` link or part of a device name into a V4L2
/// index.
pub fn resolve_device(device: &str) -> Result<CameraIndex, SourceError> {
    let device = device.trim();
    if let Ok(n) = device.parse::<u32>() {
        return Ok(CameraIndex::Index(n));
    }
    if device.starts_with('/') {
        let real = std::fs::canonicalize(Path::new(device))
            .map_err(|e| SourceError::Camera(format!("{device}: {e}")))?;
        let name = real.file_name().and_then(|n| n.to_str()).unwrap_or("");
        return name
            .strip_prefix("video")
            .and_then(|n| n.parse::<u32>().ok())
            .map(CameraIndex::Index)
            .ok_or_else(|| SourceError::Camera(format!("{device} is not a /dev/videoN device")));
    }
    let wanted = device.to_lowercase();
    list_cameras()?
        .into_iter()
        .find(|c| c.name.to_lowercase().contains(&wanted))
        .map(|c| c.index)
        .ok_or_else(|| SourceError::Camera(format!("no video device named like {device:?} (see `lesiond cameras`)")))
}

/// A video device as `lesiond cameras` lists it.
#[derive(Debug, Clone)]
pub struct CameraListing {
    pub index: CameraIndex,
    pub name: String,
    pub description: String,
}

pub fn list_cameras() -> Result<Vec<CameraListing>, SourceError> {
    let found = nokhwa::query(ApiBackend::Video4Linux).map_err(|e| SourceError::Camera(e.to_string()))?;
    Ok(found
        .into_iter()
        .map(|info| CameraListing {
            index: info.index().clone(),
            name: info.human_name(),
            description: info.description().to_string(),
        })
        .collect())
}

impl FrameSource for CameraSource {
    fn next(&mut self, stop: &StopFlag) -> Option<SourceEvent> {
        loop {
            if stop.is_raised() {
                return None;
            }
            let Some(camera) = self.camera.as_mut() else {
                match open_camera(&self.config) {
                    Ok(camera) => {
                        if self.last_error.take().is_some() {
                            tracing::info!(device = %self.config.device, "camera is back");
                        }
                        // Not a reset of the backoff: only a frame read is (see Backoff).
                        self.camera = Some(camera);
                    }
                    Err(e) => {
                        self.report(e.to_string());
                        if !stop.sleep(self.backoff.failed()) {
                            return None;
                        }
                    }
                }
                continue;
            };
            let started = Instant::now();
            let buffer = match camera.frame() {
                Ok(buffer) => buffer,
                Err(e) => {
                    // Dropping the camera closes the stream; the next turn reopens it, after
                    // the same backoff as a failed open.
                    self.camera = None;
                    self.report(format!("lost: {e}"));
                    if !stop.sleep(self.backoff.failed()) {
                        return None;
                    }
                    continue;
                }
            };
            self.backoff.frame_read();
            let captured_at = SystemTime::now();
            let res = buffer.resolution();
            let mut jpeg = None;
            let decoded = match buffer.source_frame_format() {
                FrameFormat::MJPEG => {
                    // Kept as delivered: an assessment files its judged frame as is.
                    jpeg = Some(std::sync::Arc::new(buffer.buffer().to_vec()));
                    decode::decode_jpeg_within(buffer.buffer(), &self.limits)
                }
                FrameFormat::YUYV => decode::yuyv_to_rgb_within(buffer.buffer(), res.width(), res.height(), &self.limits),
                other => {
                    return Some(SourceEvent::Skipped {
                        name: format!("camera {}", self.config.device),
                        reason: format!("unsupported pixel format {other}"),
                        too_large: false,
                    })
                }
            };
            self.seq += 1;
            return Some(match decoded {
                Ok(image) => SourceEvent::Frame(Frame {
                    seq: self.seq,
                    captured_at,
                    origin: FrameOrigin { kind: "camera", name: self.config.device.clone() },
                    image,
                    jpeg,
                    decode_time: started.elapsed(),
                }),
                // Short of memory while decoding: not a corrupt frame. The camera's next frame
                // replaces this one; wait a little first.
                Err(e) if e.is_resource() => {
                    if !stop.sleep(FIRST_BACKOFF) {
                        return None;
                    }
                    SourceEvent::ResourceShortage { name: format!("camera {} frame {}", self.config.device, self.seq), reason: e.to_string() }
                }
                Err(e) => SourceEvent::Skipped {
                    name: format!("camera {} frame {}", self.config.device, self.seq),
                    reason: e.to_string(),
                    too_large: e.is_too_large(),
                },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_by_index_and_path() {
        assert!(matches!(resolve_device("2"), Ok(CameraIndex::Index(2))));
        let err = resolve_device("/dev/does-not-exist").err().expect("fails").to_string();
        assert!(err.contains("/dev/does-not-exist"), "{err}");
    }

    #[test]
    fn unplugged_camera_retries_without_panicking() {
        let config = CameraConfig { device: "97".into(), reopen_backoff_max_secs: 1, ..Default::default() };
        let mut source = CameraSource::new(&config, DecodeLimits::default());
        let stop = StopFlag::default();
        let raiser = stop.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1200));
            raiser.raise();
        });
        // No /dev/video97 here: the source keeps retrying until stopped, then yields None.
        assert!(source.next(&stop).is_none());
        assert!(source.last_error.is_some());
        t.join().expect("join");
    }

    #[test]
    fn a_camera_that_opens_but_fails_every_frame_backs_off() {
        // The sequence CameraSource::next goes through: open ok, frame() fails, open ok, ...
        let mut b = Backoff::new(Duration::from_secs(4));
        let waits: Vec<Duration> = (0..5).map(|_| b.failed()).collect();
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 4000], "grows to the maximum, never zero");
        b.frame_read();
        assert_eq!(b.failed(), FIRST_BACKOFF, "a frame read resets it");
    }
}

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

use super::{decode, FrameSource, SourceError, SourceEvent, StopFlag};
use crate::config::{CameraConfig, PixelFormat};
use crate::frame::{Frame, FrameOrigin};

const FIRST_BACKOFF: Duration = Duration::from_millis(500);

pub struct CameraSource {
    config: CameraConfig,
    camera: Option<Camera>,
    backoff: Duration,
    seq: u64,
    /// The last error reported, so an unplugged camera is logged once, not every retry.
    last_error: Option<String>,
}

impl CameraSource {
    pub fn new(config: &CameraConfig) -> Self {
        Self { config: config.clone(), camera: None, backoff: FIRST_BACKOFF, seq: 0, last_error: None }
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
                        self.camera = Some(camera);
                        self.backoff = FIRST_BACKOFF;
                    }
                    Err(e) => {
                        self.report(e.to_string());
                        if !stop.sleep(self.backoff) {
                            return None;
                        }
                        let max = Duration::from_secs(self.config.reopen_backoff_max_secs.max(1));
                        self.backoff = (self.backoff * 2).min(max);
                    }
                }
                continue;
            };
            let started = Instant::now();
            let buffer = match camera.frame() {
                Ok(buffer) => buffer,
                Err(e) => {
                    // Dropping the camera closes the stream; the next turn reopens it.
                    self.camera = None;
                    self.report(format!("lost: {e}"));
                    continue;
                }
            };
            let captured_at = SystemTime::now();
            let res = buffer.resolution();
            let decoded = match buffer.source_frame_format() {
                FrameFormat::MJPEG => decode::decode_jpeg(buffer.buffer()),
                FrameFormat::YUYV => decode::yuyv_to_rgb(buffer.buffer(), res.width(), res.height()),
                other => {
                    return Some(SourceEvent::Skipped {
                        name: format!("camera {}", self.config.device),
                        reason: format!("unsupported pixel format {other}"),
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
                    decode_time: started.elapsed(),
                }),
                Err(e) => SourceEvent::Skipped {
                    name: format!("camera {} frame {}", self.config.device, self.seq),
                    reason: e.to_string(),
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
        let mut source = CameraSource::new(&config);
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
}

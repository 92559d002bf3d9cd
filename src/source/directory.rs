//! Replays the image files of a folder in name order: for tests, demos and re-processing stored
//! captures. A file that cannot be decoded is skipped and reported; the replay goes on. A file
//! that cannot be read because the system is short of descriptors or memory is not skipped: it
//! is reported as a shortage and read again after a backoff.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::decode::DecodeLimits;
use super::{decode, FrameSource, Pacer, SourceError, SourceEvent, StopFlag};
use crate::config::DirectoryConfig;
use crate::frame::{Frame, FrameOrigin};

const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];
/// Backoff before reading a file again after a resource shortage: short, then doubling.
const FIRST_SHORTAGE_WAIT: Duration = Duration::from_millis(50);
const MAX_SHORTAGE_WAIT: Duration = Duration::from_secs(2);

pub struct DirectorySource {
    dir: PathBuf,
    files: Vec<PathBuf>,
    next_index: usize,
    looping: bool,
    lossless: bool,
    pacer: Pacer,
    seq: u64,
    limits: DecodeLimits,
    /// The wait before the next try after a resource shortage.
    shortage_wait: Duration,
}

impl DirectorySource {
    pub fn open(config: &DirectoryConfig, limits: DecodeLimits) -> Result<Self, SourceError> {
        let files = list_images(&config.path)?;
        Ok(Self {
            dir: config.path.clone(),
            files,
            next_index: 0,
            looping: config.looping,
            lossless: config.fps == 0.0,
            pacer: Pacer::new(config.fps),
            seq: 0,
            limits,
            shortage_wait: FIRST_SHORTAGE_WAIT,
        })
    }

    /// How many files the current pass will replay.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// The folder's image files (by extension, hidden files excluded), sorted by name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let err = |source| SourceError::Directory { path: dir.to_path_buf(), source };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(err)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
            !name.starts_with('.') && IMAGE_EXTENSIONS.contains(&ext.as_str()) && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Why a file gave no frame.
enum ReadFailure {
    /// The file cannot be used (corrupt, empty, not a file) or was refused for its size.
    Skip { reason: String, too_large: bool },
    /// The system is short of descriptors or memory: the file may be fine.
    Resource(String),
}

/// Reads (bounded: a file above the size limit, a FIFO or a device is not read) and decodes one
/// file.
/// A JPEG file's bytes come back with the image: an assessment files its judged frame as is.
fn read_and_decode(path: &Path, limits: &DecodeLimits) -> Result<(image::RgbImage, Option<std::sync::Arc<Vec<u8>>>), ReadFailure> {
    let bytes = crate::fsread::read(path, "image", limits.max_bytes).map_err(|e| {
        if e.is_resource() {
            ReadFailure::Resource(e.reason())
        } else if e.is_too_large() {
            let bytes = match e.problem {
                crate::fsread::Problem::TooLarge { size } => size,
                _ => limits.max_bytes + 1,
            };
            let reason = decode::DecodeError::FileTooLarge { bytes, max: limits.max_bytes }.to_string();
            ReadFailure::Skip { reason, too_large: true }
        } else {
            ReadFailure::Skip { reason: e.reason(), too_large: false }
        }
    })?;
    let image = decode::decode_image_within(&bytes, limits).map_err(|e| {
        if e.is_resource() {
            ReadFailure::Resource(e.to_string())
        } else {
            ReadFailure::Skip { reason: e.to_string(), too_large: e.is_too_large() }
        }
    })?;
    let jpeg = bytes.starts_with(&[0xFF, 0xD8, 0xFF]).then(|| std::sync::Arc::new(bytes));
    Ok((image, jpeg))
}

impl FrameSource for DirectorySource {
    fn next(&mut self, stop: &StopFlag) -> Option<SourceEvent> {
        if self.next_index >= self.files.len() {
            if !self.looping {
                return Some(SourceEvent::End);
            }
            // A new pass sees files added since the last one.
            match list_images(&self.dir) {
                Ok(files) => self.files = files,
                Err(e) => tracing::warn!("{e}; retrying"),
            }
            self.next_index = 0;
            if self.files.is_empty() && !stop.sleep(std::time::Duration::from_secs(1)) {
                return None;
            }
            if self.files.is_empty() {
                return Some(SourceEvent::Skipped {
                    name: self.dir.display().to_string(),
                    reason: "no image files in the folder".into(),
                    too_large: false,
                });
            }
        }
        if !self.pacer.wait(stop) {
            return None;
        }
        let path = self.files[self.next_index].clone();
        self.next_index += 1;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let started = Instant::now();
        let captured_at = SystemTime::now();
        let decoded = read_and_decode(&path, &self.limits);
        Some(match decoded {
            Err(ReadFailure::Resource(reason)) => {
                // The same file again at the next call, after a backoff (which beats: waiting
                // for a descriptor is not a hang).
                self.next_index -= 1;
                let wait = self.shortage_wait;
                self.shortage_wait = (wait * 2).min(MAX_SHORTAGE_WAIT);
                if !stop.sleep(wait) {
                    return None;
                }
                SourceEvent::ResourceShortage { name: path.display().to_string(), reason }
            }
            Ok((image, jpeg)) => {
                self.shortage_wait = FIRST_SHORTAGE_WAIT;
                self.seq += 1;
                SourceEvent::Frame(Frame {
                    seq: self.seq,
                    captured_at,
                    origin: FrameOrigin { kind: "directory", name },
                    image,
                    jpeg,
                    decode_time: started.elapsed(),
                })
            }
            Err(ReadFailure::Skip { reason, too_large }) => {
                self.shortage_wait = FIRST_SHORTAGE_WAIT;
                SourceEvent::Skipped { name: path.display().to_string(), reason, too_large }
            }
        })
    }

    fn lossless(&self) -> bool {
        self.lossless
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path) {
        image::RgbImage::from_pixel(16, 12, image::Rgb([200, 100, 50])).save(path).expect("png");
    }

    #[test]
    fn replays_in_name_order_and_skips_corrupt_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_png(&dir.path().join("b.png"));
        write_png(&dir.path().join("a.png"));
        std::fs::write(dir.path().join("c.jpg"), b"").expect("write");
        std::fs::write(dir.path().join("notes.txt"), b"not an image").expect("write");
        std::fs::write(dir.path().join("d.jpg"), vec![0u8; 5000]).expect("write");
        image::RgbImage::from_pixel(64, 64, image::Rgb([1, 2, 3])).save(dir.path().join("e.png")).expect("png");
        let config = DirectoryConfig { path: dir.path().into(), ..Default::default() };
        let limits = DecodeLimits { max_pixels: 16 * 16, max_bytes: 4096 };
        let mut source = DirectorySource::open(&config, limits).expect("opens");
        let stop = StopFlag::default();
        let mut seen = Vec::new();
        loop {
            match source.next(&stop).expect("not stopped") {
                SourceEvent::Frame(f) => seen.push(format!("{}#{}", f.origin.name, f.seq)),
                SourceEvent::Skipped { name, too_large, .. } => {
                    seen.push(format!("skip{} {}", if too_large { " (too large)" } else { "" }, name.rsplit('/').next().unwrap_or("")))
                }
                SourceEvent::End => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen, ["a.png#1", "b.png#2", "skip c.jpg", "skip (too large) d.jpg", "skip (too large) e.png"]);
        assert!(source.lossless());
    }

    #[test]
    fn a_descriptor_shortage_is_retried_not_taken_for_a_corrupt_file() {
        if !crate::fsread::test_support::in_child("source::directory::tests::a_descriptor_shortage_is_retried_not_taken_for_a_corrupt_file") {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        write_png(&dir.path().join("a.png"));
        write_png(&dir.path().join("b.png"));
        let config = DirectoryConfig { path: dir.path().into(), ..Default::default() };
        let mut source = DirectorySource::open(&config, DecodeLimits::default()).expect("opens");
        let stop = StopFlag::default();
        // No descriptor left while the first file is read; they come back 400 ms later.
        let held = crate::fsread::test_support::exhaust_descriptors();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            drop(held);
        });
        let mut events = Vec::new();
        while let Some(event) = source.next(&stop) {
            // Debug text: a frame's pixels are few here.
            let text = format!("{event:?}");
            let done = !text.starts_with("ResourceShortage");
            events.push(text);
            if done {
                break;
            }
        }
        release.join().expect("join");
        let last = events.last().expect("events");
        assert!(last.starts_with("Frame(") && last.contains("\"a.png\""), "the same file, retried: {events:#?}");
        assert!(events.len() >= 2, "the shortage was reported (counted, logged): {events:#?}");
        assert!(events[0].contains("a.png") && events[0].contains("Too many open files"), "{events:#?}");
    }

    #[test]
    fn missing_folder_is_a_clear_error() {
        let config = DirectoryConfig { path: "/nonexistent/lesiond".into(), ..Default::default() };
        let err = DirectorySource::open(&config, DecodeLimits::default()).err().expect("fails").to_string();
        assert!(err.contains("/nonexistent/lesiond"), "{err}");
    }
}

//! Replays the image files of a folder in name order: for tests, demos and re-processing stored
//! captures. A file that cannot be decoded is skipped and reported; the replay goes on.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use super::decode::DecodeLimits;
use super::{decode, FrameSource, Pacer, SourceError, SourceEvent, StopFlag};
use crate::config::DirectoryConfig;
use crate::frame::{Frame, FrameOrigin};

const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

pub struct DirectorySource {
    dir: PathBuf,
    files: Vec<PathBuf>,
    next_index: usize,
    looping: bool,
    lossless: bool,
    pacer: Pacer,
    seq: u64,
    limits: DecodeLimits,
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

/// Reads and decodes one file; a file above the size limit is not even read. The error says
/// why, and whether the file was refused for its size.
fn read_and_decode(path: &Path, limits: &DecodeLimits) -> Result<image::RgbImage, (String, bool)> {
    let len = std::fs::metadata(path).map_err(|e| (e.to_string(), false))?.len();
    if len > limits.max_bytes {
        let e = decode::DecodeError::FileTooLarge { bytes: len, max: limits.max_bytes };
        return Err((e.to_string(), true));
    }
    let bytes = std::fs::read(path).map_err(|e| (e.to_string(), false))?;
    decode::decode_image_within(&bytes, limits).map_err(|e| (e.to_string(), e.is_too_large()))
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
            Ok(image) => {
                self.seq += 1;
                SourceEvent::Frame(Frame {
                    seq: self.seq,
                    captured_at,
                    origin: FrameOrigin { kind: "directory", name },
                    image,
                    decode_time: started.elapsed(),
                })
            }
            Err((reason, too_large)) => SourceEvent::Skipped { name: path.display().to_string(), reason, too_large },
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
            }
        }
        assert_eq!(seen, ["a.png#1", "b.png#2", "skip c.jpg", "skip (too large) d.jpg", "skip (too large) e.png"]);
        assert!(source.lossless());
    }

    #[test]
    fn missing_folder_is_a_clear_error() {
        let config = DirectoryConfig { path: "/nonexistent/lesiond".into(), ..Default::default() };
        let err = DirectorySource::open(&config, DecodeLimits::default()).err().expect("fails").to_string();
        assert!(err.contains("/nonexistent/lesiond"), "{err}");
    }
}

//! Replays the image files of a folder in name order: for tests, demos and re-processing stored
//! captures. A file that cannot be decoded is skipped and reported; the replay goes on.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

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
}

impl DirectorySource {
    pub fn open(config: &DirectoryConfig) -> Result<Self, SourceError> {
        let files = list_images(&config.path)?;
        Ok(Self {
            dir: config.path.clone(),
            files,
            next_index: 0,
            looping: config.looping,
            lossless: config.fps == 0.0,
            pacer: Pacer::new(config.fps),
            seq: 0,
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
        let decoded = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| decode::decode_image(&bytes).map_err(|e| e.to_string()));
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
            Err(reason) => SourceEvent::Skipped { name: path.display().to_string(), reason },
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
        let config = DirectoryConfig { path: dir.path().into(), ..Default::default() };
        let mut source = DirectorySource::open(&config).expect("opens");
        let stop = StopFlag::default();
        let mut seen = Vec::new();
        loop {
            match source.next(&stop).expect("not stopped") {
                SourceEvent::Frame(f) => seen.push(format!("{}#{}", f.origin.name, f.seq)),
                SourceEvent::Skipped { name, .. } => seen.push(format!("skip {}", name.rsplit('/').next().unwrap_or(""))),
                SourceEvent::End => break,
            }
        }
        assert_eq!(seen, ["a.png#1", "b.png#2", "skip c.jpg"]);
        assert!(source.lossless());
    }

    #[test]
    fn missing_folder_is_a_clear_error() {
        let config = DirectoryConfig { path: "/nonexistent/lesiond".into(), ..Default::default() };
        let err = DirectorySource::open(&config).err().expect("fails").to_string();
        assert!(err.contains("/nonexistent/lesiond"), "{err}");
    }
}

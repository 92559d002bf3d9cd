//! Bounded reading of the files the daemon is given: the configuration, the model and its JSON
//! companions, the password, token and TLS files, images.
//!
//! `std::fs::read` trusts the file: `token_file = /dev/zero` read until the host ran out of
//! memory (24 GB), a 4 GB labels file was read whole before it failed, and a FIFO blocks forever.
//! Here every read opens the path without blocking, `fstat`s the open descriptor (what is read,
//! not what the path named a moment before), refuses anything but a regular file, refuses a file
//! above its limit before reading a byte, and then reads at most `limit + 1` bytes, so a file
//! that grows while it is read is caught too. Every error names the file, what it is for and the
//! limit.
//!
//! A low-level module: it imports nothing from the rest of the crate.

use std::fmt;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The size limits, by kind of file, in one place. Each is far above what the daemon ships or
/// expects and far below what would hurt a 1 GB Raspberry Pi.
pub mod limit {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;

    /// The TOML configuration: the documented production file is about 10 KiB.
    pub const CONFIG: u64 = MIB;
    /// labels.json, calibration.json, operating_point.json: a few KiB each.
    pub const MODEL_JSON: u64 = MIB;
    /// ood.json: 0.9 MB shipped (a 256-d PCA of the features, base64); a model with 1280-wide
    /// features would need about 1.8 MB.
    pub const OOD_JSON: u64 = 8 * MIB;
    /// A password or token file (`mqtt.password_file`, `viewer.token_file`): one line.
    pub const SECRET: u64 = 4 * KIB;
    /// A PEM file (`mqtt.tls.ca_file`, client certificate, client key): a whole public CA
    /// bundle is about 220 KiB.
    pub const PEM: u64 = MIB;
    /// The model file: 2.7 MB int8, 8.9 MB float32 shipped; room for a much larger network.
    pub const MODEL: u64 = 256 * MIB;
    /// An image given to `lesiond classify` / `checks` (the directory source uses
    /// `source.max_frame_bytes` instead): a 4K PNG is about 25 MB.
    pub const IMAGE: u64 = 64 * MIB;
}

/// Why a file was not read.
#[derive(Debug)]
pub enum Problem {
    /// The open, stat or read failed (not found, permission denied, too many open files...).
    Io(io::Error),
    /// Not a regular file: what it is instead ("a directory", "a FIFO", ...).
    NotRegular(&'static str),
    /// Larger than the limit before reading.
    TooLarge { size: u64 },
    /// Grew past the limit while it was read.
    Grew,
    /// Not UTF-8 where text is expected.
    NotUtf8,
}

/// A file that could not be read within its limit. Its message names the file, what it is for
/// and the limit.
#[derive(Debug)]
pub struct ReadError {
    pub path: PathBuf,
    /// What the file is for, e.g. "labels file", "viewer.token_file".
    pub what: &'static str,
    pub limit: u64,
    pub problem: Problem,
}

impl ReadError {
    /// The problem, without the path: for callers whose own message already names the file
    /// (e.g. "cannot read labels file models/labels.json: <reason>").
    pub fn reason(&self) -> String {
        let (what, limit) = (self.what, human(self.limit));
        match &self.problem {
            Problem::Io(e) => e.to_string(),
            Problem::NotRegular(kind) => {
                format!("it is {kind}, not a regular file ({} {what} must be a regular file of at most {limit})", article(what))
            }
            Problem::TooLarge { size } => format!("it is {size} bytes, over the {limit} limit for {} {what}; not read", article(what)),
            Problem::Grew => format!("it grew past the {limit} limit for {} {what} while it was read", article(what)),
            Problem::NotUtf8 => format!("it is not UTF-8 text ({} {what} is text)", article(what)),
        }
    }

    /// Refused for its size (before or while reading).
    pub fn is_too_large(&self) -> bool {
        matches!(self.problem, Problem::TooLarge { .. } | Problem::Grew)
    }

    /// The system ran short of something (descriptors, memory): the file itself may be fine.
    pub fn is_resource(&self) -> bool {
        matches!(&self.problem, Problem::Io(e) if is_resource_error(e))
    }

    /// The path does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(&self.problem, Problem::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            Problem::Io(e) => write!(f, "cannot read {} {}: {e}", self.what, self.path.display()),
            _ => write!(f, "{} {}: {}", self.what, self.path.display(), self.reason()),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.problem {
            Problem::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// For callers whose error type carries an `io::Error` next to the path: the OS error itself
/// (its kind and errno kept), or the reason as `InvalidData`.
impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> io::Error {
        match e.problem {
            Problem::Io(err) => err,
            _ => io::Error::new(io::ErrorKind::InvalidData, e.reason()),
        }
    }
}

/// Whether an I/O error means the system is short of a resource (descriptors, memory, disk
/// space, buffers) rather than that the file is bad: such an error is retried, never taken for
/// corrupt input.
pub fn is_resource_error(e: &io::Error) -> bool {
    if e.kind() == io::ErrorKind::OutOfMemory {
        return true;
    }
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN | libc::ENOBUFS | libc::ENOSPC | libc::EDQUOT)
    )
}

/// Reads a whole regular file of at most `limit` bytes, following symbolic links.
pub fn read(path: &Path, what: &'static str, limit: u64) -> Result<Vec<u8>, ReadError> {
    read_with(path, what, limit, Follow::Yes)
}

/// Like [`read`], but a symbolic link at `path` is refused, not followed (the spool's entries).
pub fn read_no_follow(path: &Path, what: &'static str, limit: u64) -> Result<Vec<u8>, ReadError> {
    read_with(path, what, limit, Follow::No)
}

/// Like [`read`], as UTF-8 text.
pub fn read_to_string(path: &Path, what: &'static str, limit: u64) -> Result<String, ReadError> {
    let bytes = read(path, what, limit)?;
    String::from_utf8(bytes).map_err(|_| error(path, what, limit, Problem::NotUtf8))
}

/// Checks, without reading it, that `path` is a regular file within `limit`, and returns its
/// size: for the model, which the engines load by path. The error says what the path is.
pub fn check_file(path: &Path, what: &'static str, limit: u64) -> Result<u64, ReadError> {
    let (_file, size) = open_regular(path, what, limit, Follow::Yes)?;
    Ok(size)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follow {
    Yes,
    No,
}

fn read_with(path: &Path, what: &'static str, limit: u64, follow: Follow) -> Result<Vec<u8>, ReadError> {
    let (file, size) = open_regular(path, what, limit, follow)?;
    // The size from fstat only sizes the buffer; the read itself stops one byte past the limit.
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| error(path, what, limit, Problem::Io(e)))?;
    if bytes.len() as u64 > limit {
        return Err(error(path, what, limit, Problem::Grew));
    }
    Ok(bytes)
}

/// Opens `path` for reading and checks the open descriptor: a regular file within `limit`.
fn open_regular(path: &Path, what: &'static str, limit: u64, follow: Follow) -> Result<(File, u64), ReadError> {
    let fail = |problem| error(path, what, limit, problem);
    // Looked at before opening, so a device is never even opened (opening some has effects).
    let before = match follow {
        Follow::Yes => std::fs::metadata(path),
        Follow::No => std::fs::symlink_metadata(path),
    }
    .map_err(|e| fail(Problem::Io(e)))?;
    check_metadata(&before, limit).map_err(fail)?;
    // O_NONBLOCK: a path swapped for a FIFO after the look above must not block the open
    // (on a regular file the flag changes nothing). O_NOCTTY: never become a terminal's owner.
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if follow == Follow::No {
        flags |= libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new().read(true).custom_flags(flags).open(path).map_err(|e| {
        if follow == Follow::No && e.raw_os_error() == Some(libc::ELOOP) {
            fail(Problem::NotRegular("a symbolic link"))
        } else {
            fail(Problem::Io(e))
        }
    })?;
    // What counts is the descriptor actually read.
    let meta = file.metadata().map_err(|e| fail(Problem::Io(e)))?;
    let size = check_metadata(&meta, limit).map_err(fail)?;
    Ok((file, size))
}

fn check_metadata(meta: &Metadata, limit: u64) -> Result<u64, Problem> {
    let t = meta.file_type();
    let kind = if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_symlink() {
        Some("a symbolic link")
    } else {
        Some("not a file")
    };
    if let Some(kind) = kind {
        return Err(Problem::NotRegular(kind));
    }
    if meta.len() > limit {
        return Err(Problem::TooLarge { size: meta.len() });
    }
    Ok(meta.len())
}

fn error(path: &Path, what: &'static str, limit: u64, problem: Problem) -> ReadError {
    ReadError { path: path.to_path_buf(), what, limit, problem }
}

/// "1 MiB", "4 KiB", or bytes.
pub fn human(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    const GIB: u64 = 1024 * MIB;
    match bytes {
        b if b >= GIB && b % GIB == 0 => format!("{} GiB", b / GIB),
        b if b >= MIB && b % MIB == 0 => format!("{} MiB", b / MIB),
        b if b >= KIB && b % KIB == 0 => format!("{} KiB", b / KIB),
        b => format!("{b} bytes"),
    }
}

fn article(what: &str) -> &'static str {
    match what.chars().next() {
        Some(c) if "aeiouAEIOU".contains(c) => "an",
        _ => "a",
    }
}

/// For tests that need the process to run short of descriptors: they run in a child process
/// (the same test binary, that one test), so the rest of the suite keeps its descriptors.
#[cfg(test)]
pub(crate) mod test_support {
    use std::fs::File;

    /// In the parent: runs test `name` again in a child process, asserts it passed and returns
    /// `false` (the parent has nothing more to do). In the child: returns `true`.
    pub fn in_child(name: &str) -> bool {
        if std::env::var_os("LESIOND_TEST_CHILD").is_some() {
            return true;
        }
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args([name, "--exact", "--test-threads=1", "--nocapture"])
            .env("LESIOND_TEST_CHILD", "1")
            .output()
            .expect("child test");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("1 passed"), "child test {name} failed:\n{text}");
        false
    }

    /// Lowers the descriptor limit and opens /dev/null until EMFILE: the returned files hold
    /// every descriptor left; dropping some frees them.
    pub fn exhaust_descriptors() -> Vec<File> {
        let limit = libc::rlimit { rlim_cur: 128, rlim_max: 128 };
        // SAFETY: setrlimit reads the struct; this process is a child test on its own.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0, "setrlimit");
        let mut held = Vec::new();
        loop {
            match File::open("/dev/null") {
                Ok(f) => held.push(f),
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return held,
                Err(e) => panic!("unexpected error exhausting descriptors: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_regular_file_within_its_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").expect("write");
        assert_eq!(read(&path, "test file", 5).expect("reads"), b"hello");
        assert_eq!(read_to_string(&path, "test file", 5).expect("reads"), "hello");
        assert_eq!(check_file(&path, "test file", 5).expect("checks"), 5);
    }

    #[test]
    fn a_file_over_its_limit_is_refused_before_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big");
        // Sparse: 8 GiB claimed, nothing written; read whole it would take the host down.
        std::fs::File::create(&path).and_then(|f| f.set_len(8 << 30)).expect("sparse file");
        let started = std::time::Instant::now();
        let err = read(&path, "labels file", limit::MODEL_JSON).expect_err("refused");
        assert!(err.is_too_large());
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()) && text.contains("1 MiB") && text.contains("labels file"), "{text}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "refused from its size, not read");
    }

    #[test]
    fn devices_directories_and_fifos_are_refused_saying_what_they_are() {
        let dir = tempfile::tempdir().expect("tempdir");
        let zero = read(Path::new("/dev/zero"), "viewer.token_file", limit::SECRET).expect_err("refused");
        assert!(zero.to_string().contains("/dev/zero: it is a character device, not a regular file"), "{zero}");
        assert!(zero.to_string().contains("4 KiB"), "{zero}");
        let d = check_file(dir.path(), "model file", limit::MODEL).expect_err("refused").to_string();
        assert!(d.contains("is a directory") && d.contains("256 MiB"), "{d}");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        // No writer: a plain open would block here forever.
        let f = read(&fifo, "model file", limit::MODEL).expect_err("refused").to_string();
        assert!(f.contains("is a FIFO"), "{f}");
        let missing = check_file(&dir.path().join("none"), "model file", limit::MODEL).expect_err("missing");
        assert!(missing.is_not_found(), "{missing}");
    }

    #[test]
    fn a_symbolic_link_is_refused_where_links_are_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        std::fs::write(&target, b"x").expect("write");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert_eq!(read(&link, "test file", 10).expect("followed"), b"x");
        let err = read_no_follow(&link, "spool entry", 10).expect_err("refused").to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
    }

    #[test]
    fn errors_keep_the_os_error_for_callers_with_io_errors() {
        let err = read(Path::new("/nonexistent/lesiond"), "labels file", 10).expect_err("missing");
        assert!(err.to_string().starts_with("cannot read labels file /nonexistent/lesiond"), "{err}");
        let io: io::Error = err.into();
        assert_eq!(io.kind(), io::ErrorKind::NotFound);
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(is_resource_error(&emfile));
        assert!(!is_resource_error(&io::Error::from_raw_os_error(libc::EACCES)));
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(4096), "4 KiB");
        assert_eq!(human(1 << 20), "1 MiB");
        assert_eq!(human(256 << 20), "256 MiB");
        assert_eq!(human(1000), "1000 bytes");
    }
}

//! Shared test harness: a real mosquitto on a free loopback port, a real subscriber
//! (mosquitto_sub), the lesiond binary, generated lesion-like JPEGs for the tests that do not
//! measure the model, and real HAM10000 images from ../shared/data for those that do.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// For the engine agreement tests, built only with a second engine beside TF Lite.
#[cfg(all(feature = "tflite", any(feature = "tract", feature = "ort")))]
pub mod engines;

/// DICOM peers for the archive's tests: Orthanc, dcmtk's worklist server, a throwaway PKI.
pub mod dicom;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The HAM10000 folder: `LESIOND_DATA`, else `../shared/data/ham10000` beside the repository.
/// Only the tests that measure the model (golden, accuracy, engines' agreement) need it;
/// `scripts/test.sh` leaves them out, and names them, when it is absent.
pub fn data_dir() -> PathBuf {
    let dir = std::env::var_os("LESIOND_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/data/ham10000"));
    assert!(
        dir.join("HAM10000_metadata.csv").is_file(),
        "HAM10000 not found at {} (set LESIOND_DATA)",
        dir.display()
    );
    dir
}

/// `n` generated lesion-like JPEGs (lesiond's own synthetic source, seeded by `seed`), named
/// `gen_<seed>_<i>.jpg`: for tests that exercise the daemon, not the model.
pub fn generated_images(folder: &Path, seed: u64, n: usize, width: u32, height: u32) -> Vec<PathBuf> {
    use lesiond::source::{FrameSource, SourceEvent, StopFlag};
    std::fs::create_dir_all(folder).expect("mkdir");
    let config = lesiond::config::SyntheticConfig { fps: 1e6, width, height, seed, count: 0 };
    let mut source = lesiond::source::synthetic::SyntheticSource::new(&config);
    let stop = StopFlag::default();
    (0..n)
        .map(|i| {
            let Some(SourceEvent::Frame(frame)) = source.next(&stop) else { panic!("synthetic frame") };
            let path = folder.join(format!("gen_{seed:03}_{i:05}.jpg"));
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&frame.image).expect("encode");
            std::fs::write(&path, out).expect("write");
            path
        })
        .collect()
}

/// A ~700-byte JPEG whose frame header claims `width` x `height` pixels (a damaged MJPEG frame
/// or a stray file): decoding it for real would need width x height x 3 bytes.
pub fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let img = image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([(x * 16) as u8, (y * 16) as u8, 90]));
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90).encode_image(&img).expect("encode");
    let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).expect("SOF0");
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

/// Held for the whole of each test under `ham10000::`: they keep both cores busy (the model over
/// hundreds of images) or replay a video at camera pace, where a replay that cannot keep up drops
/// frames. When each was its own test binary none of them ran beside another module's; in one
/// binary this keeps it so.
pub fn heavy() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    // A heavy test that failed must not fail the next one too.
    HEAVY.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn find_program(name: &str) -> PathBuf {
    find_installed(name, "install Debian's mosquitto and mosquitto-clients (.ci/run does)")
}

/// A program the tests need, from the usual system folders; a missing one fails the test (CI
/// installs them all) with `install_hint` saying how to get it, rather than skipping it.
pub fn find_installed(name: &str, install_hint: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} not found: {install_hint}");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// A mosquitto broker on 127.0.0.1, killed when dropped.
pub struct Broker {
    pub port: u16,
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// Extra `mosquitto_sub` arguments every client of this broker needs (TLS, credentials).
    pub client_args: Vec<String>,
}

impl Broker {
    pub fn start() -> Broker {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Broker {
        Self::start_with(port, &format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"), vec![])
    }

    /// A broker that keeps sessions across a crash: `autosave_interval 1` writes its database
    /// every second, so a persistent subscriber's subscription survives `kill -9`.
    pub fn start_persistent() -> Broker {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        // mosquitto started as root drops to its own user, which must be able to save here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\n",
            dir.path().display()
        );
        let mut b = Broker { port, child: None, dir, client_args: vec![] };
        b.spawn(&conf);
        b
    }

    /// A broker with the given configuration (written to a file in its own folder).
    pub fn start_with(port: u16, conf_text: &str, client_args: Vec<String>) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Broker { port, child: None, dir, client_args };
        b.spawn(conf_text);
        b
    }

    fn spawn(&mut self, conf_text: &str) {
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(&conf, conf_text).expect("write conf");
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log")).expect("log");
        let child = Command::new(find_program("mosquitto"))
            .arg("-c")
            .arg(&conf)
            .stdout(log.try_clone().expect("clone"))
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        let port = self.port;
        let up = wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(up, "mosquitto did not start on port {port}");
        self.child = Some(child);
    }

    /// The broker's process id (for SIGSTOP / SIGCONT).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the broker runs").id()
    }

    /// Starts the broker again on the same port with the same configuration (and database).
    pub fn restart(&mut self) {
        let conf = std::fs::read_to_string(self.dir.path().join("mosquitto.conf")).expect("conf");
        self.spawn(&conf);
    }

    /// `kill -9`: no clean shutdown, no last save.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-KILL", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    /// The retained message on `topic`, if any.
    pub fn retained(&self, topic: &str) -> Option<String> {
        let out = Command::new(find_program("mosquitto_sub"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", topic, "-C", "1", "-W", "2", "--retained-only"])
            .args(&self.client_args)
            .output()
            .expect("mosquitto_sub");
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!text.is_empty()).then_some(text)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Received {
    pub retained: bool,
    pub topic: String,
    pub payload: String,
    /// When the subscriber read it (on loopback: within a millisecond of the broker's PUBACK
    /// to the publisher).
    pub received_at: std::time::SystemTime,
}

/// A real subscriber on `lesiond/#` at QoS 1, collecting every message.
pub struct Subscriber {
    child: Child,
    pub messages: Arc<Mutex<Vec<Received>>>,
}

impl Subscriber {
    pub fn start(broker: &Broker, topic: &str) -> Subscriber {
        Self::start_with(broker, topic, &[])
    }

    /// A subscriber with a persistent session (`-c`): the broker queues its QoS 1 messages while
    /// it is away, and it reconnects by itself.
    pub fn start_persistent(broker: &Broker, topic: &str, client_id: &str) -> Subscriber {
        Self::start_with(broker, topic, &["-c", "-i", client_id])
    }

    pub fn start_with(broker: &Broker, topic: &str, extra: &[&str]) -> Subscriber {
        let mut child = Command::new(find_program("mosquitto_sub"))
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-t", topic, "-F", "%r\t%t\t%p"])
            .args(&broker.client_args)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub");
        let stdout = child.stdout.take().expect("stdout");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            // Bytes, not `lines()`: a JPEG thumbnail's payload is not UTF-8 and must not end
            // the reader (its stray bytes make lines that match no topic).
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line);
                let mut parts = line.splitn(3, '\t');
                let (Some(r), Some(t), Some(p)) = (parts.next(), parts.next(), parts.next()) else { continue };
                sink.lock().expect("lock").push(Received { retained: r == "1", topic: t.into(), payload: p.into(), received_at: std::time::SystemTime::now() });
            }
        });
        // Give the subscription a moment to reach the broker.
        std::thread::sleep(Duration::from_millis(300));
        Subscriber { child, messages }
    }

    /// Distinct `result_id`s received on classification topics, and how many duplicates.
    pub fn result_ids(&self) -> (std::collections::HashSet<String>, usize) {
        let mut ids = std::collections::HashSet::new();
        let mut dups = 0;
        for m in self.on("/classification") {
            let v: serde_json::Value = serde_json::from_str(&m.payload).expect("JSON");
            if !ids.insert(v["result_id"].as_str().expect("result_id").to_string()) {
                dups += 1;
            }
        }
        (ids, dups)
    }

    pub fn on(&self, topic_suffix: &str) -> Vec<Received> {
        self.messages.lock().expect("lock").iter().filter(|m| m.topic.ends_with(topic_suffix)).cloned().collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `lesiond run`, its output captured to a file.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path, env: &[(&str, &str)], log_dir: &Path) -> Daemon {
        let log = log_dir.join("lesiond.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = lesiond()
            .args(["run", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .stdout(file.try_clone().expect("clone"))
            .stderr(file)
            .spawn()
            .expect("start lesiond");
        Daemon { child, log }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().expect("kill").success();
        assert!(ok, "kill {sig} failed");
    }

    /// Waits for exit; `None` on timeout.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes one message (QoS 1) with mosquitto_pub; returns whether the broker took it.
pub fn publish(broker: &Broker, topic: &str, payload: &str, extra: &[&str]) -> bool {
    Command::new(find_program("mosquitto_pub"))
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-t", topic, "-m", payload])
        .args(&broker.client_args)
        .args(extra)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The `result_id`s a daemon logged as classified (and therefore spooled).
pub fn logged_result_ids(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("classified"))
        .filter_map(|l| l.split("result_id=").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

/// A folder of `n` generated images (200x150, the data set's size); `skip` makes another
/// folder's images differ.
pub fn image_folder(parent: &Path, name: &str, skip: usize, n: usize) -> PathBuf {
    let folder = parent.join(name);
    generated_images(&folder, skip as u64 + 1, n, 200, 150);
    folder
}

/// The results left in a spool folder: `<number>.entry` files (a header line, then the JSON).
pub fn spool_entries(spool: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(spool)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "entry")).collect())
        .unwrap_or_default()
}

/// The `result_id`s of the results left in a spool folder.
pub fn spooled_result_ids(spool: &Path) -> std::collections::HashSet<String> {
    std::fs::read_dir(spool)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".entry"))
                .filter_map(|e| std::fs::read(e.path()).ok())
                .filter_map(|b| b.iter().position(|&c| c == b'\n').map(|at| b[at + 1..].to_vec()))
                .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .filter_map(|v| v["result_id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A number from the daemon's `stopped:` summary line, e.g. `summary_count(log, "peak RSS")`.
pub fn summary_count(log: &str, label: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains("stopped: "))?;
    let rest = line.split(&format!("{label} ")).nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// A systemd notify socket stand-in: records every datagram the daemon sends (`READY=1`,
/// `WATCHDOG=1`, ...) with when it arrived.
pub struct NotifySocket {
    pub path: PathBuf,
    pub received: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().expect("lock").push((Instant::now(), text));
            }
        });
        NotifySocket { path, received }
    }

    /// When each `WATCHDOG=1` arrived.
    pub fn watchdog_pings(&self) -> Vec<Instant> {
        self.received.lock().expect("lock").iter().filter(|(_, t)| t.lines().any(|l| l == "WATCHDOG=1")).map(|(at, _)| *at).collect()
    }
}

/// Validates `value` against `docs/schemas/<name>.schema.json`; panics with every error.
pub fn assert_schema(name: &str, value: &serde_json::Value) {
    let path = repo().join(format!("docs/schemas/{name}.schema.json"));
    let mut schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("schema")).expect("JSON");
    if name == "reply" {
        // Inline the stats schema the reply refers to (no network, no resolver needed).
        let stats: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(repo().join("docs/schemas/stats.schema.json")).expect("stats schema")).expect("JSON");
        schema["properties"]["state"] = stats;
    }
    let validator = jsonschema::validator_for(&schema).expect("valid schema");
    let errors: Vec<String> = validator.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{name} payload does not match its schema: {errors:?}\n{value}");
}

/// The lesiond binary, run from the repository root (where the configs' relative model paths
/// point).
pub fn lesiond() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lesiond"));
    // The station screen on a free port: tests run daemons side by side (and next to a demo on
    // 8080). A test that is about the viewer sets its own LESIOND_VIEWER__* (later wins).
    c.current_dir(repo()).env("NO_COLOR", "1").env_remove("RUST_LOG").env("LESIOND_VIEWER__LISTEN", "127.0.0.1:0");
    c
}

/// Runs the test-data generator, `python -m lesion_training <args> --out <dir> --data <data set>`
/// (numpy + Pillow, `training/requirements-videos.txt`), with the venv `scripts/test.sh` prepares
/// (`LESIOND_PYTHON` overrides it).
pub fn run_generator(args: &[&str], dir: &Path) {
    let python = std::env::var_os("LESIOND_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo().join("target/videos-venv/bin/python"));
    let status = Command::new(&python)
        .current_dir(repo().join("training"))
        .args(["-m", "lesion_training"])
        .args(args)
        .arg("--out")
        .arg(dir)
        .arg("--data")
        .arg(data_dir())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {} (scripts/test.sh makes it; or set LESIOND_PYTHON): {e}", python.display()));
    assert!(status.success(), "python -m lesion_training {} failed", args.join(" "));
}

/// A generated examination video (frames/ + manifest.json): `LESIOND_EXAM_VIDEO`, else
/// `target/exam-video/seed-1` (24 visits of test-split lesions), made once and shared by
/// tests/it/ham10000/examination.rs and tests/it/ham10000/viewer.rs.
pub fn exam_video() -> PathBuf {
    if let Some(dir) = std::env::var_os("LESIOND_EXAM_VIDEO") {
        return PathBuf::from(dir);
    }
    let dir = repo().join("target/exam-video/seed-1");
    if !dir.join("manifest.json").is_file() {
        run_generator(&["videos", "--visits", "24", "--seed", "1"], &dir);
    }
    dir
}

/// The station screen's address, from the daemon's log line `viewer: station screen on http://ADDR/`.
pub fn viewer_addr(log: &str) -> Option<String> {
    let rest = log.split("station screen on http://").nth(1)?;
    Some(rest.split('/').next()?.to_string())
}

/// A config for tests: the given source section, a broker on `port`, the shipped model, a
/// spool in `work`.
pub fn config_text(station: &str, port: u16, source: &str, work: &Path) -> String {
    let spool = work.join("spool");
    format!(
        r#"
[station]
id = "{station}"

{source}

[model]
path = "models/lesion_mnv2_int8.tflite"
labels = "models/labels.json"
calibration = "models/calibration.json"
operating_point = "models/operating_point.json"
ood = "models/ood.json"
threads = 1

[pipeline]
queue_capacity = 2

[mqtt]
host = "127.0.0.1"
port = {port}
keep_alive_secs = 5
ready_timeout_secs = 2

[spool]
dir = "{spool}"
fsync = false

[log]
format = "text"
level = "info"
"#,
        spool = spool.display()
    )
}

pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

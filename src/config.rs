//! Configuration: a TOML file (or the embedded demo default) overlaid with environment variables.
//!
//! Every key can be overridden as `LESIOND_<SECTION>__<KEY>` (nested sections join with `__`,
//! e.g. `LESIOND_SOURCE__DIRECTORY__PATH`). Unknown keys and bad values are errors that name
//! the key, so a typo in `/etc/lesiond/lesiond.toml` stops the service at start instead of being
//! silently ignored.

use std::path::PathBuf;

use serde::Deserialize;

/// The demo configuration compiled into the binary: synthetic frames, a broker on localhost.
pub const DEMO_TOML: &str = include_str!("../config/demo.toml");

const ENV_PREFIX: &str = "LESIOND";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid configuration{origin}: {message}")]
    Invalid { origin: String, message: String },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub station: StationConfig,
    pub source: SourceConfig,
    #[serde(default)]
    pub preprocess: PreprocessConfig,
    pub model: ModelConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    #[serde(default)]
    pub checks: ChecksConfig,
    #[serde(default)]
    pub examination: ExaminationConfig,
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub viewer: ViewerConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationConfig {
    /// Names this station in every MQTT topic: `<prefix>/<id>/...`.
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Camera,
    Directory,
    Synthetic,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub kind: SourceKind,
    #[serde(default)]
    pub camera: CameraConfig,
    #[serde(default)]
    pub directory: DirectoryConfig,
    #[serde(default)]
    pub synthetic: SyntheticConfig,
    /// Frames (files, camera frames) whose header claims more pixels than this are skipped
    /// before decoding, and counted (`frames_skipped_too_large`).
    #[serde(default = "default_max_frame_pixels")]
    pub max_frame_pixels: u64,
    /// Files and camera frames larger than this many bytes are skipped unread, and counted.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: u64,
}

fn default_max_frame_pixels() -> u64 {
    crate::source::decode::DecodeLimits::default().max_pixels
}
fn default_max_frame_bytes() -> u64 {
    crate::source::decode::DecodeLimits::default().max_bytes
}

impl SourceConfig {
    pub fn decode_limits(&self) -> crate::source::decode::DecodeLimits {
        crate::source::decode::DecodeLimits { max_pixels: self.max_frame_pixels, max_bytes: self.max_frame_bytes }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    Mjpeg,
    Yuyv,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraConfig {
    /// A device index (`0`), a path (`/dev/video2`) or part of the device's name.
    pub device: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub format: PixelFormat,
    /// Longest wait between attempts to reopen an unplugged camera.
    pub reopen_backoff_max_secs: u64,
}

impl Default for CameraConfig {
    fn default() -> Self {
        Self {
            device: "0".into(),
            width: 1280,
            height: 960,
            fps: 15,
            format: PixelFormat::Mjpeg,
            reopen_backoff_max_secs: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectoryConfig {
    pub path: PathBuf,
    /// Frames per second to replay at; 0 means as fast as the pipeline takes them, losing none.
    pub fps: f64,
    /// Start again from the first file after the last one.
    #[serde(rename = "loop")]
    pub looping: bool,
    /// After the last file, exit the daemon once every result was acknowledged by the broker.
    pub exit_when_done: bool,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self { path: PathBuf::from("captures"), fps: 0.0, looping: false, exit_when_done: false }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    pub fps: f64,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    /// Number of frames to generate; 0 means no end.
    pub count: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self { fps: 2.0, width: 640, height: 480, seed: 1, count: 0 }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreprocessConfig {
    /// Black out what lies outside the circle of a dermatoscope's lens. The shipped model was
    /// trained without it; enable only with a model trained with it.
    pub circular_mask: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// TensorFlow Lite through tflitec (a `.tflite` model; cargo feature `tflite`).
    Tflite,
    /// tract, pure Rust (the model's `.onnx` export; cargo feature `tract`).
    Tract,
    /// ONNX Runtime, loaded at run time (the `.onnx` exports, e.g. the int8 QDQ one; cargo
    /// feature `ort`). The fastest engine on x86_64 hosts.
    Ort,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default = "default_engine")]
    pub engine: EngineKind,
    pub path: PathBuf,
    pub labels: PathBuf,
    /// JSON file with the temperature fitted on validation; absent means uncalibrated (T = 1).
    #[serde(default)]
    pub calibration: Option<PathBuf>,
    /// JSON file with the refer thresholds chosen for this model file (`models/operating_point.json`);
    /// absent, or made for another model's sha256, means results carry no refer flag.
    #[serde(default)]
    pub operating_point: Option<PathBuf>,
    /// JSON file with the out-of-distribution score fitted for this model file (`models/ood.json`);
    /// absent, made for another model, or a model without its features output, means results
    /// never abstain as out of distribution (`lesiond check` says which).
    #[serde(default)]
    pub ood: Option<PathBuf>,
    #[serde(default = "default_threads")]
    pub threads: u32,
    /// Run the model through TF Lite's XNNPACK delegate. Default: on in aarch64 builds with the
    /// `xnnpack` feature (the Pi's TF Lite 2.20 runs the int8 model with it), off elsewhere (the
    /// x86_64 TF Lite 2.6 library speeds up float32 models only). If the delegate cannot be
    /// applied the engine says so and runs the built-in kernels.
    #[serde(default = "default_xnnpack")]
    pub xnnpack: bool,
    /// `libonnxruntime.so` for the `ort` engine; default `$ORT_DYLIB_PATH`, else the file next
    /// to the executable (scripts/onnxruntime.sh puts one there).
    #[serde(default)]
    pub onnxruntime_library: Option<PathBuf>,
}

fn default_engine() -> EngineKind {
    EngineKind::Tflite
}
fn default_threads() -> u32 {
    2
}
fn default_xnnpack() -> bool {
    cfg!(all(target_arch = "aarch64", feature = "xnnpack"))
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Frames waiting for inference; when full the oldest is dropped (and counted).
    pub queue_capacity: usize,
    /// A pipeline stage (capture, inference) or the publisher that makes no progress for this
    /// long is stuck: the systemd watchdog is no longer fed and the daemon exits non-zero
    /// (after publishing what it can) so that it is restarted.
    pub stall_timeout_secs: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self { queue_capacity: 2, stall_timeout_secs: 60 }
    }
}

/// Thresholds of the per-frame checks (`checks/`). Defaults measured on HAM10000's test split
/// and generated damage (`docs/examination.md`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChecksConfig {
    /// `too_dark` below this 95th percentile of the field's brightest channel (0..1).
    pub too_dark_below: f32,
    /// `too_bright` above this share of clipped pixels in the field.
    pub too_bright_clipped_above: f32,
    /// `glare` above this share of specular highlight in the central field.
    pub glare_above: f32,
    /// `not_skin` above this texture (mean |Laplacian|, 8-bit levels at 160 px): a busy scene.
    pub not_skin_texture_above: f32,
    /// `not_skin` below this median colour saturation: a grey scene.
    pub not_skin_saturation_below: f32,
    /// `not_skin` above this median colour saturation: a vividly coloured scene.
    pub not_skin_saturation_above: f32,
    /// `not_skin` below this share of the field where red is the strongest channel.
    pub not_skin_red_share_below: f32,
    /// `no_lesion` below this luminance difference between skin and candidate lesion (0..1).
    pub lesion_contrast_min: f32,
    /// Below this contrast a candidate must also carry structure: `no_lesion` when the
    /// centre's texture is below `lesion_centre_texture_min` times the field's (the smooth
    /// centre of plain or painted-over skin).
    pub lesion_contrast_clear: f32,
    pub lesion_centre_texture_min: f32,
    /// A faint candidate (contrast from `lesion_contrast_faint_min` up to `lesion_contrast_min`)
    /// is a lesion only when its centre is clearly more textured than the field
    /// (`lesion_centre_texture_faint_min` times it): a light nevus keeps its network, painted-out
    /// skin is smooth there. Below `lesion_contrast_faint_min`: `no_lesion` whatever the texture.
    pub lesion_contrast_faint_min: f32,
    pub lesion_centre_texture_faint_min: f32,
    /// `lesion_off_centre` below this share of the central disc covered by the lesion.
    pub lesion_centre_share_min: f32,
    /// `lesion_off_centre` above this share of the field covered by the candidate (it is then
    /// the background, not a lesion in the middle of it).
    pub lesion_area_max: f32,
    /// `moving` above this displacement between frames, in pixels of a 640-px-wide frame.
    pub motion_max_px: f32,
    /// `out_of_focus` below this absolute focus (mean |Laplacian|, 8-bit levels at 160 px).
    pub focus_min: f32,
    /// `out_of_focus` below this share of the sharpest frame of the current examination.
    pub focus_relative_min: f32,
}

impl Default for ChecksConfig {
    fn default() -> Self {
        Self {
            too_dark_below: 0.62,
            too_bright_clipped_above: 0.4,
            glare_above: 0.2,
            not_skin_texture_above: 16.0,
            not_skin_saturation_below: 0.03,
            not_skin_saturation_above: 0.68,
            not_skin_red_share_below: 0.5,
            lesion_contrast_min: 0.05,
            lesion_contrast_clear: 0.08,
            lesion_centre_texture_min: 1.0,
            lesion_contrast_faint_min: 0.04,
            lesion_centre_texture_faint_min: 1.2,
            lesion_centre_share_min: 0.1,
            lesion_area_max: 0.95,
            motion_max_px: 8.0,
            focus_min: 2.0,
            focus_relative_min: 0.65,
        }
    }
}

/// What the examination does with frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExaminationMode {
    /// One assessment per lesion in view, started by the lesion itself.
    Auto,
    /// One assessment per `cmd/capture`, on the lesion in view.
    Manual,
    /// Every frame classified and published, no checks (research; the behaviour before
    /// examinations).
    Continuous,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExaminationConfig {
    pub mode: ExaminationMode,
    /// Also publish (and spool) the classification of every frame the examination classified.
    pub publish_frame_results: bool,
    /// Frames with a lesion in view, in a row, that start an examination.
    pub enter_frames: u32,
    /// Good frames an assessment needs...
    pub min_frames: u32,
    /// ...spread over at least this long.
    pub min_span_secs: f64,
    /// Good frames closer together than this are not distinct; the later one is not classified.
    pub min_frame_gap_secs: f64,
    /// The examination ends (and the station is idle again) after this long with no lesion in view.
    pub leave_secs: f64,
    /// With a lesion in view this long and still no assessment, an abstaining assessment says why.
    pub timeout_secs: f64,
    /// Usable frames that look this different from the lesion being examined (or just
    /// assessed), three in a row, are another lesion: the scope moved on without leaving the
    /// skin. The difference is that of a coarse colour layout (tremor: ~0.005; another lesion:
    /// 0.06 or more).
    pub scene_change_above: f32,
    /// A frame that fails only the lesion check (a faint lesion looks like plain skin to it) is
    /// shown to the model at most this often; the model vouches for the view when its features
    /// find it typical of a lesion. 0: never (the lesion check alone decides).
    pub ask_model_every_secs: f64,
}

impl Default for ExaminationConfig {
    fn default() -> Self {
        Self {
            mode: ExaminationMode::Auto,
            publish_frame_results: false,
            enter_frames: 3,
            min_frames: 5,
            min_span_secs: 0.5,
            min_frame_gap_secs: 0.06,
            leave_secs: 0.6,
            timeout_secs: 8.0,
            scene_change_above: 0.05,
            ask_model_every_secs: 0.5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    /// Defaults to `lesiond-<station id>`.
    pub client_id: String,
    pub topic_prefix: String,
    pub keep_alive_secs: u64,
    /// How long to wait for the broker before telling systemd we are ready anyway.
    pub ready_timeout_secs: u64,
    /// Publish each classified frame as a JPEG on `<prefix>/<id>/frame` (off: images stay here).
    pub publish_frames: bool,
    /// `v311` (MQTT 3.1.1) or `v5`.
    pub protocol: MqttProtocol,
    /// Seconds between retained `stats` messages; 0 turns them off.
    pub stats_interval_secs: u64,
    pub username: String,
    /// The password, read from this file (preferred: keep it out of the config).
    pub password_file: Option<PathBuf>,
    /// The password itself; use `LESIOND_MQTT__PASSWORD` rather than writing it here.
    pub password: Option<Secret>,
    /// Sending credentials without TLS to a host other than loopback must be asked for.
    pub allow_insecure_credentials: bool,
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MqttProtocol {
    V311,
    V5,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate and key, for brokers that require them.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// A value that is never printed: `Debug` shows `***`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Where results wait for the broker's acknowledgement; survives restarts.
    pub dir: PathBuf,
    /// Size limit; when full the oldest results are dropped (and counted).
    pub max_bytes: u64,
    /// Results older than this are dropped (and counted); 0 = no age limit.
    pub max_age_hours: u64,
    /// fsync every entry (survives power cuts; costs SD-card writes).
    pub fsync: bool,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("/var/lib/lesiond/spool"), max_bytes: 256 * 1024 * 1024, max_age_hours: 24 * 7, fsync: true }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 1883,
            client_id: String::new(),
            topic_prefix: "lesiond".into(),
            keep_alive_secs: 30,
            ready_timeout_secs: 10,
            publish_frames: false,
            protocol: MqttProtocol::V311,
            stats_interval_secs: 30,
            username: String::new(),
            password_file: None,
            password: None,
            allow_insecure_credentials: false,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `lesiond=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

/// The station screen (`src/viewer/`): a read-only page served by the daemon itself.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ViewerConfig {
    pub enabled: bool,
    /// `IP:port`. Loopback by default, so a kiosk browser on the station itself needs no network
    /// exposure; port 0 picks a free port (the log names it).
    pub listen: String,
    /// A file holding the password the page asks for (HTTP Basic, any user name). Required when
    /// `listen` is not a loopback address; read once at start, never logged.
    pub token_file: Option<PathBuf>,
    /// Host names the screen answers to besides the address it was reached on (and `localhost`
    /// on loopback): any other `Host` gets 421, so a page elsewhere cannot rebind a name to it.
    pub allowed_hosts: Vec<String>,
    /// Connections held at once; beyond it an idle one is closed for the newcomer, or the
    /// newcomer is closed at once. Bounds the screen's file descriptors.
    pub max_connections: usize,
    /// Connections held at once from one client address (an IPv6 /64 counts as one).
    pub max_connections_per_client: usize,
    /// Seconds a client has to send a whole request head, from its connect or from the end of
    /// its previous answer (so also how long an idle keep-alive connection is kept).
    pub header_timeout_secs: u64,
    /// Seconds without a byte moving either way before a connection is closed; an event
    /// stream sends a keep-alive well within it.
    pub idle_timeout_secs: u64,
    /// Wrong passwords from one client address within a minute before it is refused (429).
    pub max_failed_logins: u32,
    /// Seconds a client address is refused once it reached `max_failed_logins`.
    pub login_block_secs: u64,
}

impl Default for ViewerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:8080".into(),
            token_file: None,
            allowed_hosts: Vec::new(),
            max_connections: 64,
            max_connections_per_client: 16,
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_failed_logins: 5,
            login_block_secs: 60,
        }
    }
}

impl ViewerConfig {
    /// The listen address; `validate` has checked that it parses.
    pub fn listen_addr(&self) -> Result<std::net::SocketAddr, String> {
        self.listen.parse().map_err(|_| format!("viewer.listen = {:?}: use IP:port, e.g. \"127.0.0.1:8080\"", self.listen))
    }

    /// The connection caps, timeouts and login limit: each must leave the screen usable.
    fn validate_limits(&self) -> Result<(), String> {
        if !(1..=4096).contains(&self.max_connections) {
            return Err(format!("viewer.max_connections = {}: use 1..4096 (each is a file descriptor)", self.max_connections));
        }
        if self.max_connections_per_client < 1 || self.max_connections_per_client > self.max_connections {
            return Err(format!("viewer.max_connections_per_client = {}: use 1..viewer.max_connections", self.max_connections_per_client));
        }
        for (key, secs) in [("header_timeout_secs", self.header_timeout_secs), ("idle_timeout_secs", self.idle_timeout_secs)] {
            if !(1..=3600).contains(&secs) {
                return Err(format!("viewer.{key} = {secs}: use 1..3600"));
            }
        }
        if self.max_failed_logins < 1 {
            return Err("viewer.max_failed_logins must be at least 1".into());
        }
        if !(1..=86400).contains(&self.login_block_secs) {
            return Err(format!("viewer.login_block_secs = {}: use 1..86400", self.login_block_secs));
        }
        for name in &self.allowed_hosts {
            let bad = name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control() || "/@?#".contains(c));
            if bad {
                return Err(format!("viewer.allowed_hosts: {name:?} is not a host name (e.g. \"station-3.clinic.lan\")"));
            }
        }
        Ok(())
    }
}

/// Where the TOML text came from, for error messages and for SIGHUP reloads.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigOrigin {
    Embedded,
    File(PathBuf),
}

impl std::fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigOrigin::Embedded => write!(f, "the embedded demo config"),
            ConfigOrigin::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The part of the configuration a reload (SIGHUP, `cmd/reload`) applies: what the pipeline
/// is built from, rebuilt on every reload.
#[derive(Debug, Clone, PartialEq)]
pub struct Reloadable {
    pub source: SourceConfig,
    pub preprocess: PreprocessConfig,
    pub model: ModelConfig,
    pub pipeline: PipelineConfig,
    pub checks: ChecksConfig,
    pub examination: ExaminationConfig,
}

/// The part only a restart changes: the MQTT connection and its topics (station id, frames
/// publishing included), the spool, logging and the viewer's socket are set up once at start.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartOnly {
    pub station: StationConfig,
    pub mqtt: MqttConfig,
    pub spool: SpoolConfig,
    pub log: LogConfig,
    pub viewer: ViewerConfig,
}

impl Config {
    pub fn split(self) -> (RestartOnly, Reloadable) {
        let Config { station, source, preprocess, model, pipeline, checks, examination, mqtt, spool, log, viewer } = self;
        (RestartOnly { station, mqtt, spool, log, viewer }, Reloadable { source, preprocess, model, pipeline, checks, examination })
    }

    pub fn join(restart: RestartOnly, reload: Reloadable) -> Config {
        let (RestartOnly { station, mqtt, spool, log, viewer }, Reloadable { source, preprocess, model, pipeline, checks, examination }) = (restart, reload);
        Config { station, source, preprocess, model, pipeline, checks, examination, mqtt, spool, log, viewer }
    }

    /// What a reload to `new` applies: `new`'s reloadable part with this configuration's
    /// restart-only part, and the restart-only sections `new` asked to change (kept as they
    /// are until the next restart).
    pub fn reloaded(&self, new: Config) -> (Config, Vec<&'static str>) {
        let (restart, reload) = new.split();
        let mut ignored = Vec::new();
        if restart.station != self.station {
            ignored.push("[station]");
        }
        if restart.mqtt != self.mqtt {
            ignored.push("[mqtt]");
        }
        if restart.spool != self.spool {
            ignored.push("[spool]");
        }
        if restart.log != self.log {
            ignored.push("[log]");
        }
        if restart.viewer != self.viewer {
            ignored.push("[viewer]");
        }
        let (current, _) = self.clone().split();
        (Config::join(current, reload), ignored)
    }

    /// Loads from `origin`, then applies `LESIOND_*` overrides from the process environment.
    pub fn load(origin: &ConfigOrigin) -> Result<Config, ConfigError> {
        let text = match origin {
            ConfigOrigin::Embedded => DEMO_TOML.to_string(),
            ConfigOrigin::File(path) => crate::fsread::read_to_string(path, "config file", crate::fsread::limit::CONFIG)
                .map_err(|e| ConfigError::Read { path: path.clone(), source: e.into() })?,
        };
        Self::from_toml_and_env(&text, origin, std::env::vars())
    }

    /// The pure core of [`Config::load`]: text plus an explicit environment, for tests.
    pub fn from_toml_and_env(
        text: &str,
        origin: &ConfigOrigin,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: format!(" in {origin}"),
            message,
        };
        // Only `LESIOND_<SECTION>__<KEY>` variables are config overrides; other LESIOND_*
        // variables (e.g. the training pipeline's LESIOND_DATA) are not ours to reject.
        let overrides: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| {
                k.strip_prefix(ENV_PREFIX)
                    .and_then(|rest| rest.strip_prefix('_'))
                    .is_some_and(|rest| rest.contains("__"))
            })
            .collect();
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("_")
                    .separator("__")
                    .source(Some(overrides)),
            )
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let config: Config = built.try_deserialize().map_err(|e| invalid(e.to_string()))?;
        config.validate().map_err(invalid)?;
        Ok(config)
    }

    /// Checks the values serde cannot: each message names the key.
    fn validate(&self) -> Result<(), String> {
        let topic_safe = |s: &str| {
            !s.is_empty()
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        };
        if !topic_safe(&self.station.id) {
            return Err(format!(
                "station.id = {:?}: use letters, digits, '-', '_' or '.' (it is part of MQTT topics)",
                self.station.id
            ));
        }
        let prefix_ok = !self.mqtt.topic_prefix.is_empty()
            && self.mqtt.topic_prefix.split('/').all(topic_safe);
        if !prefix_ok {
            return Err(format!(
                "mqtt.topic_prefix = {:?}: use topic levels of letters, digits, '-', '_' or '.'",
                self.mqtt.topic_prefix
            ));
        }
        if self.mqtt.host.trim().is_empty() {
            return Err("mqtt.host is empty".into());
        }
        if self.mqtt.port == 0 {
            return Err("mqtt.port must be 1..65535".into());
        }
        let m = &self.mqtt;
        let has_password = m.password.is_some() || m.password_file.is_some();
        if has_password && m.username.is_empty() {
            return Err("mqtt.password / mqtt.password_file need mqtt.username".into());
        }
        if m.password.is_some() && m.password_file.is_some() {
            return Err("set mqtt.password_file or mqtt.password, not both".into());
        }
        let loopback = m.host == "localhost" || m.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if (has_password || !m.username.is_empty()) && m.tls.is_none() && !loopback && !m.allow_insecure_credentials {
            return Err(format!(
                "mqtt: credentials would travel unencrypted to {}: configure [mqtt.tls] or set mqtt.allow_insecure_credentials = true",
                m.host
            ));
        }
        if let Some(tls) = &m.tls {
            if tls.client_cert.is_some() != tls.client_key.is_some() {
                return Err("mqtt.tls.client_cert and mqtt.tls.client_key go together".into());
            }
        }
        if self.spool.max_bytes < 64 * 1024 {
            return Err("spool.max_bytes must be at least 65536".into());
        }
        if self.mqtt.keep_alive_secs < 5 {
            return Err("mqtt.keep_alive_secs must be at least 5".into());
        }
        if self.pipeline.stall_timeout_secs == 0 {
            return Err("pipeline.stall_timeout_secs must be at least 1".into());
        }
        if self.source.max_frame_pixels < 64 {
            return Err("source.max_frame_pixels must be at least 64".into());
        }
        if self.source.max_frame_bytes < 1024 {
            return Err("source.max_frame_bytes must be at least 1024".into());
        }
        if self.pipeline.queue_capacity == 0 {
            return Err("pipeline.queue_capacity must be at least 1".into());
        }
        if self.model.threads == 0 || self.model.threads > 64 {
            return Err(format!("model.threads = {}: use 1..64", self.model.threads));
        }
        let cam = &self.source.camera;
        if cam.width == 0 || cam.height == 0 || cam.fps == 0 {
            return Err("source.camera.width, height and fps must be positive".into());
        }
        if cam.device.trim().is_empty() {
            return Err("source.camera.device is empty".into());
        }
        let dir = &self.source.directory;
        if !dir.fps.is_finite() || dir.fps < 0.0 {
            return Err(format!("source.directory.fps = {}: use 0 (lossless) or more", dir.fps));
        }
        if crate::logging::parse_filter(&self.log.level).is_err() {
            return Err(format!("log.level = {:?}: use error, warn, info, debug or trace", self.log.level));
        }
        let ex = &self.examination;
        if ex.enter_frames == 0 || ex.min_frames == 0 {
            return Err("examination.enter_frames and examination.min_frames must be at least 1".into());
        }
        for (key, v) in [
            ("min_span_secs", ex.min_span_secs),
            ("min_frame_gap_secs", ex.min_frame_gap_secs),
            ("leave_secs", ex.leave_secs),
            ("timeout_secs", ex.timeout_secs),
            ("ask_model_every_secs", ex.ask_model_every_secs),
        ] {
            if !v.is_finite() || !(0.0..=3600.0).contains(&v) {
                return Err(format!("examination.{key} = {v}: use 0..3600 seconds"));
            }
        }
        if !ex.scene_change_above.is_finite() || ex.scene_change_above <= 0.0 {
            return Err(format!("examination.scene_change_above = {}: must be positive", ex.scene_change_above));
        }
        if ex.timeout_secs <= ex.min_span_secs {
            return Err("examination.timeout_secs must be longer than examination.min_span_secs".into());
        }
        let ch = &self.checks;
        for (key, v) in [
            ("too_dark_below", ch.too_dark_below),
            ("too_bright_clipped_above", ch.too_bright_clipped_above),
            ("glare_above", ch.glare_above),
            ("not_skin_saturation_below", ch.not_skin_saturation_below),
            ("not_skin_saturation_above", ch.not_skin_saturation_above),
            ("not_skin_red_share_below", ch.not_skin_red_share_below),
            ("lesion_contrast_min", ch.lesion_contrast_min),
            ("lesion_contrast_clear", ch.lesion_contrast_clear),
            ("lesion_contrast_faint_min", ch.lesion_contrast_faint_min),
            ("lesion_centre_share_min", ch.lesion_centre_share_min),
            ("lesion_area_max", ch.lesion_area_max),
            ("focus_relative_min", ch.focus_relative_min),
        ] {
            if !v.is_finite() || !(0.0..=1.0).contains(&v) {
                return Err(format!("checks.{key} = {v}: use 0..1"));
            }
        }
        for (key, v) in [
            ("not_skin_texture_above", ch.not_skin_texture_above),
            ("lesion_centre_texture_min", ch.lesion_centre_texture_min),
            ("lesion_centre_texture_faint_min", ch.lesion_centre_texture_faint_min),
            ("motion_max_px", ch.motion_max_px),
            ("focus_min", ch.focus_min),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("checks.{key} = {v}: use 0 or more"));
            }
        }
        let viewer = &self.viewer;
        if viewer.enabled {
            let addr = viewer.listen_addr()?;
            // A page on the clinic network shows examinations: only to someone with the password.
            if !addr.ip().is_loopback() && viewer.token_file.is_none() {
                return Err(format!(
                    "viewer.listen = {:?} is reachable from the network: set viewer.token_file (a file holding the password the screen must give) or listen on 127.0.0.1",
                    viewer.listen
                ));
            }
            viewer.validate_limits()?;
        }
        let syn = &self.source.synthetic;
        if !syn.fps.is_finite() || syn.fps <= 0.0 {
            return Err(format!("source.synthetic.fps = {}: must be positive", syn.fps));
        }
        if syn.width < 16 || syn.height < 16 || syn.width > 8192 || syn.height > 8192 {
            return Err("source.synthetic.width and height must be 16..8192".into());
        }
        Ok(())
    }

    /// The MQTT client id, defaulting to one derived from the station id.
    pub fn client_id(&self) -> String {
        if self.mqtt.client_id.is_empty() {
            format!("lesiond-{}", self.station.id)
        } else {
            self.mqtt.client_id.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml_and_env(
            text,
            &ConfigOrigin::Embedded,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn embedded_demo_config_is_valid() {
        let c = load(DEMO_TOML, &[]).expect("demo config loads");
        assert_eq!(c.source.kind, SourceKind::Synthetic);
    }

    #[test]
    fn production_config_is_valid() {
        let text = include_str!("../config/lesiond.toml");
        let c = load(text, &[]).expect("production config loads");
        assert_eq!(c.source.kind, SourceKind::Camera);
        // The production file spells out the checks and the examination: it must say what the
        // defaults (measured in docs/examination.md) are, not a stale copy of them.
        assert_eq!(c.checks, ChecksConfig::default());
        assert_eq!(c.examination, ExaminationConfig::default());
        assert_eq!(c.viewer, ViewerConfig::default());
    }

    #[test]
    fn a_viewer_on_the_network_needs_a_token_file() {
        let lan = [("LESIOND_VIEWER__LISTEN", "0.0.0.0:8080")];
        let err = load(DEMO_TOML, &lan).unwrap_err().to_string();
        assert!(err.contains("viewer.listen") && err.contains("viewer.token_file"), "{err}");
        let with_token = [lan[0], ("LESIOND_VIEWER__TOKEN_FILE", "/etc/lesiond/viewer-token")];
        assert!(load(DEMO_TOML, &with_token).is_ok());
        assert!(load(DEMO_TOML, &[lan[0], ("LESIOND_VIEWER__ENABLED", "false")]).is_ok(), "a disabled viewer listens nowhere");
        assert!(load(DEMO_TOML, &[("LESIOND_VIEWER__LISTEN", "[::1]:0")]).is_ok(), "IPv6 loopback");
        let err = load(DEMO_TOML, &[("LESIOND_VIEWER__LISTEN", "localhost")]).unwrap_err().to_string();
        assert!(err.contains("viewer.listen"), "{err}");
    }

    #[test]
    fn the_viewer_limits_are_validated() {
        for (key, value) in [
            ("LESIOND_VIEWER__MAX_CONNECTIONS", "0"),
            ("LESIOND_VIEWER__MAX_CONNECTIONS_PER_CLIENT", "65"),
            ("LESIOND_VIEWER__HEADER_TIMEOUT_SECS", "0"),
            ("LESIOND_VIEWER__IDLE_TIMEOUT_SECS", "0"),
            ("LESIOND_VIEWER__MAX_FAILED_LOGINS", "0"),
            ("LESIOND_VIEWER__LOGIN_BLOCK_SECS", "0"),
        ] {
            let err = load(DEMO_TOML, &[(key, value)]).unwrap_err().to_string();
            let name = key.trim_start_matches("LESIOND_VIEWER__").to_lowercase();
            assert!(err.contains(&format!("viewer.{name}")), "{key}={value}: {err}");
        }
        let text = DEMO_TOML.replace("[viewer]\n", "[viewer]\nallowed_hosts = [\"station-3.clinic.lan\"]\n");
        assert!(load(&text, &[]).is_ok_and(|c| c.viewer.allowed_hosts == ["station-3.clinic.lan"]));
        let text = DEMO_TOML.replace("[viewer]\n", "[viewer]\nallowed_hosts = [\"http://x/\"]\n");
        assert!(load(&text, &[]).unwrap_err().to_string().contains("viewer.allowed_hosts"));
    }

    #[test]
    fn env_overrides_nested_keys() {
        let c = load(
            DEMO_TOML,
            &[
                ("LESIOND_MQTT__PORT", "1884"),
                ("LESIOND_SOURCE__DIRECTORY__FPS", "2.5"),
                ("LESIOND_SOURCE__KIND", "directory"),
                ("LESIOND_DATA", "/not/a/config/key"),
            ],
        )
        .expect("overrides load");
        assert_eq!(c.mqtt.port, 1884);
        assert_eq!(c.source.directory.fps, 2.5);
        assert_eq!(c.source.kind, SourceKind::Directory);
    }

    #[test]
    fn unknown_key_is_named() {
        let text = DEMO_TOML.replace("[mqtt]", "[mqtt]\nprot = 1");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn unknown_env_key_is_named() {
        let err = load(DEMO_TOML, &[("LESIOND_MQTT__PROT", "1")]).unwrap_err().to_string();
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = load(DEMO_TOML, &[("LESIOND_MQTT__PORT", "seventy")]).unwrap_err().to_string();
        assert!(err.contains("mqtt.port") || err.contains("port"), "{err}");
        let err = load(DEMO_TOML, &[("LESIOND_PIPELINE__QUEUE_CAPACITY", "0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("pipeline.queue_capacity"), "{err}");
        let err = load(DEMO_TOML, &[("LESIOND_STATION__ID", "a/b")]).unwrap_err().to_string();
        assert!(err.contains("station.id"), "{err}");
    }

    #[test]
    fn broken_toml_is_an_error() {
        assert!(load("[station\nid = ", &[]).is_err());
    }

    #[test]
    fn credentials_need_tls_off_loopback() {
        let remote = DEMO_TOML.replace("host = \"localhost\"", "host = \"10.1.2.3\"\nusername = \"u\"");
        assert!(load(&remote, &[]).unwrap_err().to_string().contains("allow_insecure_credentials"));
        assert!(load(&remote, &[("LESIOND_MQTT__ALLOW_INSECURE_CREDENTIALS", "true")]).is_ok());
        let local = DEMO_TOML.replace("host = \"localhost\"", "host = \"127.0.0.1\"\nusername = \"u\"");
        assert!(load(&local, &[("LESIOND_MQTT__PASSWORD", "pw")]).is_ok());
        // The password is never printed.
        let c = load(&local, &[("LESIOND_MQTT__PASSWORD", "hunter2")]).expect("loads");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn a_reload_applies_only_the_reloadable_part() {
        let running = load(DEMO_TOML, &[]).expect("loads");
        let new = load(
            DEMO_TOML,
            &[("LESIOND_STATION__ID", "renamed"), ("LESIOND_MQTT__PUBLISH_FRAMES", "true"), ("LESIOND_SOURCE__SYNTHETIC__FPS", "9"), ("LESIOND_PIPELINE__QUEUE_CAPACITY", "5")],
        )
        .expect("loads");
        let (applied, ignored) = running.reloaded(new);
        assert_eq!(ignored, ["[station]", "[mqtt]"]);
        assert_eq!(applied.station, running.station, "station.id needs a restart");
        assert_eq!(applied.mqtt, running.mqtt, "mqtt.publish_frames needs a restart");
        assert_eq!(applied.source.synthetic.fps, 9.0);
        assert_eq!(applied.pipeline.queue_capacity, 5);
        let (same, none) = running.reloaded(running.clone());
        assert_eq!((same, none.len()), (running, 0));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        const KEYS: &[&str] = &[
            "LESIOND_STATION__ID", "LESIOND_SOURCE__KIND", "LESIOND_SOURCE__DIRECTORY__FPS",
            "LESIOND_SOURCE__CAMERA__WIDTH", "LESIOND_SOURCE__SYNTHETIC__FPS", "LESIOND_MODEL__THREADS",
            "LESIOND_MQTT__PORT", "LESIOND_MQTT__HOST", "LESIOND_MQTT__PROTOCOL", "LESIOND_PIPELINE__QUEUE_CAPACITY",
            "LESIOND_SPOOL__MAX_BYTES", "LESIOND_LOG__LEVEL", "LESIOND_MQTT__TLS__CA_FILE", "LESIOND_NOPE__X",
        ];

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

            // Arbitrary text as the config file: an error or a config, never a panic.
            #[test]
            fn arbitrary_text_never_panics(text in ".{0,400}") {
                let _ = load(&text, &[]);
            }

            // The demo config with a line of it replaced by garbage.
            #[test]
            fn mutated_demo_config_never_panics(line in 0usize..40, junk in ".{0,60}") {
                let mut lines: Vec<&str> = DEMO_TOML.lines().collect();
                let at = line % lines.len();
                lines[at] = &junk;
                let _ = load(&lines.join("\n"), &[]);
            }

            // Arbitrary values for real keys from the environment: an error naming a key, or a
            // valid config.
            #[test]
            fn arbitrary_env_values_never_panic(picks in proptest::collection::vec((0usize..14, ".{0,30}"), 0..5)) {
                let env: Vec<(String, String)> = picks.iter().map(|(k, v)| (KEYS[*k].to_string(), v.clone())).collect();
                let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                match load(DEMO_TOML, &refs) {
                    Ok(c) => prop_assert!(c.pipeline.queue_capacity >= 1 && c.mqtt.port >= 1),
                    Err(e) => prop_assert!(e.to_string().starts_with("invalid configuration")),
                }
            }
        }
    }
}

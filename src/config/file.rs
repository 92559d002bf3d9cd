//! The configuration as written: the TOML file's sections and keys, with their defaults, as
//! serde reads them (unknown keys are errors). Nothing here is derived or cross-checked; that is
//! [`super::resolve`]'s job, once.

use std::path::PathBuf;

use serde::Deserialize;

use super::DecodeLimits;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
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
    #[serde(default)]
    pub context: super::ContextConfig,
    #[serde(default)]
    pub dicom: super::DicomConfig,
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
    DecodeLimits::default().max_pixels
}
fn default_max_frame_bytes() -> u64 {
    DecodeLimits::default().max_bytes
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
    /// (The relative floor, judged against the examination's sharpest frame, is
    /// `examination.focus_relative_min`; the old `checks.focus_relative_min` is read by
    /// [`super::legacy`].)
    pub focus_min: f32,
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
    /// A frame is out of focus below this share of the sharpest frame of the current
    /// examination (formerly `checks.focus_relative_min`, still read with a warning).
    pub focus_relative_min: f32,
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
            focus_relative_min: 0.65,
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
    /// Show the patient's id and name with the lesion (otherwise only the lesion and the body
    /// site): only where the screen faces nobody but the clinician.
    pub show_patient: bool,
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
            show_patient: false,
        }
    }
}

impl ViewerConfig {
    /// The listen address; `validate` has checked that it parses.
    pub fn listen_addr(&self) -> Result<std::net::SocketAddr, String> {
        self.listen.parse().map_err(|_| format!("viewer.listen = {:?}: use IP:port, e.g. \"127.0.0.1:8080\"", self.listen))
    }
}

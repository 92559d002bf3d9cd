//! The configuration that runs: built once from the written layer, validated, with every value
//! that depends on several keys derived here and nowhere else. Each part goes where it is used:
//! `source` to the capture thread, `checks` to the frame checker, `examination` to the
//! examination, `model` to the classifier, `mqtt` and `station` to the publisher, `spool`,
//! `log` and `viewer` to their modules, `context` and `dicom` to the context store and the
//! archive; the daemon keeps the whole for reloads.

use super::file::{
    ChecksConfig, CameraConfig, DirectoryConfig, ExaminationConfig, ExaminationMode, FileConfig, LogConfig, ModelConfig, MqttConfig,
    PipelineConfig, PreprocessConfig, SourceConfig, SourceKind, SpoolConfig, StationConfig, SyntheticConfig, ViewerConfig,
};
use super::{validate, DicomConfig, Invalid, MovedKey};
use std::path::PathBuf;

/// What a frame may cost before it is decoded: a damaged MJPEG frame or a stray file whose
/// header claims 60000x60000 pixels must be refused from its header, not allocated (that was
/// 18.7 GB). From `source.max_frame_pixels` and `source.max_frame_bytes`; the decoder
/// (`source::decode`) applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Width x height, at most.
    pub max_pixels: u64,
    /// Encoded size (file or frame buffer), at most.
    pub max_bytes: u64,
}

impl Default for DecodeLimits {
    /// 16 MP (4096 x 4096: above the largest dermatoscope camera we support, 4K UHD at 8.3 MP)
    /// and 32 MiB encoded.
    fn default() -> Self {
        Self { max_pixels: 4096 * 4096, max_bytes: 32 * 1024 * 1024 }
    }
}

/// The configuration, resolved: what the daemon and the commands run with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub station: StationConfig,
    pub source: SourceSettings,
    pub preprocess: PreprocessConfig,
    pub model: ModelConfig,
    pub pipeline: PipelineConfig,
    pub checks: ChecksConfig,
    pub examination: ExaminationSettings,
    /// As written, with `client_id` filled in (`lesiond-<station id>` when not set).
    pub mqtt: MqttConfig,
    pub spool: SpoolConfig,
    pub log: LogConfig,
    pub viewer: ViewerConfig,
    /// The examination context's lifetime and its directory (resolved: beside the spool unless
    /// `context.dir` is set).
    pub context: ContextSettings,
    pub dicom: DicomConfig,
    /// The screen shows an assessment's sharpest frame: only where frames leave the daemon
    /// anyway (`mqtt.publish_frames`) and there are assessments (not in continuous mode).
    pub screen_previews: bool,
    /// Old key names that were read (logged at start, printed by `lesiond check`).
    pub moved_keys: Vec<MovedKey>,
}

/// `[context]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextSettings {
    pub dir: PathBuf,
    /// Zero: no timeout.
    pub idle_timeout: std::time::Duration,
}

/// The frame source: which one, its settings, and what a frame may cost to decode.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSettings {
    pub kind: SourceKind,
    pub camera: CameraConfig,
    pub directory: DirectoryConfig,
    pub synthetic: SyntheticConfig,
    pub limits: DecodeLimits,
}

/// What the examination runs with: `[examination]`, with the mode this source allows.
#[derive(Debug, Clone, PartialEq)]
pub struct ExaminationSettings {
    /// What is done with frames: `examination.mode`, except `continuous` for a batch replay (a
    /// directory at `fps = 0`: one classification per file) and for the synthetic source (a new
    /// made-up lesion every frame is no examination). The camera and paced replays (videos) run
    /// examinations as configured.
    pub mode: ExaminationMode,
    pub publish_frame_results: bool,
    pub enter_frames: u32,
    pub min_frames: u32,
    pub min_span_secs: f64,
    pub min_frame_gap_secs: f64,
    pub leave_secs: f64,
    pub timeout_secs: f64,
    pub scene_change_above: f32,
    pub ask_model_every_secs: f64,
    pub focus_relative_min: f32,
}

impl ExaminationSettings {
    fn new(written: ExaminationConfig, source: &SourceConfig) -> ExaminationSettings {
        let batch = source.kind == SourceKind::Directory && source.directory.fps == 0.0;
        let mode = if batch || source.kind == SourceKind::Synthetic { ExaminationMode::Continuous } else { written.mode };
        let ExaminationConfig {
            mode: _,
            publish_frame_results,
            enter_frames,
            min_frames,
            min_span_secs,
            min_frame_gap_secs,
            leave_secs,
            timeout_secs,
            scene_change_above,
            ask_model_every_secs,
            focus_relative_min,
        } = written;
        ExaminationSettings {
            mode,
            publish_frame_results,
            enter_frames,
            min_frames,
            min_span_secs,
            min_frame_gap_secs,
            leave_secs,
            timeout_secs,
            scene_change_above,
            ask_model_every_secs,
            focus_relative_min,
        }
    }
}

impl Default for ExaminationSettings {
    /// The defaults of `[examination]`, as a camera runs them.
    fn default() -> Self {
        let camera = SourceConfig {
            kind: SourceKind::Camera,
            camera: CameraConfig::default(),
            directory: DirectoryConfig::default(),
            synthetic: SyntheticConfig::default(),
            max_frame_pixels: DecodeLimits::default().max_pixels,
            max_frame_bytes: DecodeLimits::default().max_bytes,
        };
        ExaminationSettings::new(ExaminationConfig::default(), &camera)
    }
}

impl Config {
    /// The one way from the written configuration to the running one.
    pub(super) fn resolve(written: FileConfig, moved_keys: Vec<MovedKey>) -> Result<Config, Invalid> {
        validate::validate(&written).map_err(|mut invalid| {
            // A value read under its old name is named as it was written.
            if let Some(m) = moved_keys.iter().find(|m| !m.both_set && m.new == invalid.key) {
                invalid.message = format!("{} (written as {})", invalid.message, m.old);
            }
            invalid
        })?;
        let FileConfig { station, source, preprocess, model, pipeline, checks, examination, mut mqtt, spool, log, viewer, context, dicom } = written;
        if mqtt.client_id.is_empty() {
            mqtt.client_id = format!("lesiond-{}", station.id);
        }
        let examination = ExaminationSettings::new(examination, &source);
        let SourceConfig { kind, camera, directory, synthetic, max_frame_pixels, max_frame_bytes } = source;
        let source = SourceSettings { kind, camera, directory, synthetic, limits: DecodeLimits { max_pixels: max_frame_pixels, max_bytes: max_frame_bytes } };
        let screen_previews = screen_previews(&mqtt, &examination);
        let context = ContextSettings {
            dir: context.dir.unwrap_or_else(|| spool.dir.parent().unwrap_or(std::path::Path::new(".")).join("context")),
            idle_timeout: std::time::Duration::from_secs(context.idle_timeout_secs),
        };
        Ok(Config { station, source, preprocess, model, pipeline, checks, examination, mqtt, spool, log, viewer, context, dicom, screen_previews, moved_keys })
    }

    /// What a reload to `new` applies: `new`'s reloadable part (what the pipeline is built
    /// from: source, preprocess, model, pipeline, checks, examination) with this
    /// configuration's restart-only part (the MQTT connection and its topics, station id and
    /// frames publishing included, the spool, logging and the viewer's socket are set up once
    /// at start), and the restart-only sections `new` asked to change (kept as they are until
    /// the next restart).
    pub fn reloaded(&self, new: Config) -> (Config, Vec<&'static str>) {
        let mut ignored = Vec::new();
        for (section, changed) in [
            ("[station]", new.station != self.station),
            ("[mqtt]", new.mqtt != self.mqtt),
            ("[spool]", new.spool != self.spool),
            ("[log]", new.log != self.log),
            ("[viewer]", new.viewer != self.viewer),
            ("[context]", new.context != self.context),
            ("[dicom]", new.dicom != self.dicom),
        ] {
            if changed {
                ignored.push(section);
            }
        }
        let Config { source, preprocess, model, pipeline, checks, examination, moved_keys, .. } = new;
        let screen_previews = screen_previews(&self.mqtt, &examination);
        let applied = Config { source, preprocess, model, pipeline, checks, examination, screen_previews, moved_keys, ..self.clone() };
        (applied, ignored)
    }
}

fn screen_previews(mqtt: &MqttConfig, examination: &ExaminationSettings) -> bool {
    mqtt.publish_frames && examination.mode != ExaminationMode::Continuous
}

//! The `lesiond` command line. Turns every error into a message a person can act on and an
//! exit status: 0 ok, 1 a runtime failure (model, source, images, a thread or task that failed
//! while running), 2 a bad configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use lesiond::config::{Config, ConfigOrigin};
use lesiond::{cli, daemon, logging};

#[derive(Parser)]
#[command(name = "lesiond", version, about = "Dermatoscope station daemon: skin-lesion classification over MQTT (decision support, not a diagnosis)")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (without --config: the embedded demo configuration).
    Run {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the per-frame checks (exposure, glare, scene, lesion presence, focus) on image
    /// files, each on its own, and print what they measured: one JSON object per image.
    Checks {
        /// The configuration whose [checks] thresholds to use (default: the embedded one).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Classify image files and print the results.
    Classify {
        /// The model file (default: the embedded configuration's): a .tflite for the tflite
        /// engine, the .onnx export for tract.
        #[arg(long)]
        model: Option<PathBuf>,
        /// tflite | tract (default: the embedded configuration's, tflite).
        #[arg(long, value_parser = cli::parse_engine)]
        engine: Option<lesiond::config::EngineKind>,
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Temperature file (default: the configured one, unless --model is given).
        #[arg(long)]
        calibration: Option<PathBuf>,
        #[arg(long)]
        threads: Option<u32>,
        /// TF Lite's XNNPACK delegate, true or false (default: the embedded configuration's,
        /// on in aarch64 builds).
        #[arg(long)]
        xnnpack: Option<bool>,
        /// One JSON object per image.
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Validate a configuration, its model, camera and broker, and say what is wrong.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// List the video devices.
    Cameras,
    /// Measure per-stage latency, throughput, CPU and memory against the bare interpreter
    /// (needs an MQTT broker; see docs/benchmarks.md).
    Bench {
        /// Folder of images (default: $LESIOND_DATA/images or ../shared/data/ham10000/images).
        #[arg(long)]
        images: Option<PathBuf>,
        #[arg(long, default_value_t = 300)]
        frames: usize,
        /// Interpreter thread counts to measure, e.g. 1,2.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<u32>,
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        labels: Option<PathBuf>,
        #[arg(long)]
        calibration: Option<PathBuf>,
        /// TF Lite's XNNPACK delegate, true or false (default: the embedded configuration's, on
        /// in aarch64 builds; needs the `xnnpack` feature).
        #[arg(long)]
        xnnpack: Option<bool>,
        /// The engine for --model (default: the embedded config's, tflite).
        #[arg(long, value_parser = cli::parse_engine)]
        engine: Option<lesiond::config::EngineKind>,
        #[arg(long, default_value = "127.0.0.1")]
        mqtt_host: String,
        /// Frames per second of the camera-paced run that measures latency (0: skip it).
        #[arg(long, default_value_t = 30.0)]
        paced_fps: f64,
        #[arg(long, default_value_t = 1883)]
        mqtt_port: u16,
        /// Run the daemon with its imaging archive destination on (`[dicom]`) toward a DICOM
        /// archive on the MQTT host at this port (called AE title ORTHANC): the frame path
        /// with the archive's task and the kept frames.
        #[arg(long)]
        dicom_port: Option<u16>,
        /// Print JSON rows instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// Why a command failed: the message for the person at the terminal (or the journal), and the
/// exit status.
struct Failure {
    message: String,
    code: ExitCode,
    /// Also log it (`run`: its log goes to the journal, which is where an operator looks).
    log: bool,
}

impl Failure {
    /// A runtime failure: exit status 1.
    fn runtime(message: impl std::fmt::Display) -> Failure {
        Failure { message: message.to_string(), code: ExitCode::FAILURE, log: false }
    }

    /// A bad configuration: exit status 2.
    fn config(message: impl std::fmt::Display) -> Failure {
        Failure { message: message.to_string(), code: ExitCode::from(2), log: false }
    }
}

fn main() -> ExitCode {
    one_malloc_arena();
    let args = Args::parse();
    // The one place that reports a failure.
    match try_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { message, code, log }) => {
            if log {
                tracing::error!("{message}");
            }
            if !message.is_empty() {
                eprintln!("lesiond: {message}");
            }
            code
        }
    }
}

/// glibc gives every thread that allocates its own heap ("arena"); with the capture, inference,
/// runtime and interpreter threads that kept several partly used heaps resident: 73 MB steady
/// RSS with ONNX Runtime at 2 threads against 63 MB with one arena, at the same throughput
/// (docs/benchmarks.md). Our threads allocate little on their hot paths, so one shared arena costs
/// no measurable contention. Must run before any thread starts.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn origin(path: Option<PathBuf>) -> ConfigOrigin {
    path.map_or(ConfigOrigin::Embedded, ConfigOrigin::File)
}

fn load_config(origin: &ConfigOrigin) -> Result<Config, Failure> {
    Config::load(origin).map_err(Failure::config)
}

/// The async runtime of `run` and `bench`: two workers are plenty for the publisher, the screen
/// and the supervisor; the heavy work runs on the pipeline's own threads.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))
}

/// The model options `classify` and `bench` take on the command line, applied once over the
/// embedded configuration's model.
struct ModelOverrides<'a> {
    model: Option<&'a std::path::Path>,
    labels: Option<&'a std::path::Path>,
    calibration: Option<&'a std::path::Path>,
    threads: Option<u32>,
    engine: Option<lesiond::config::EngineKind>,
    xnnpack: Option<bool>,
}

impl ModelOverrides<'_> {
    fn apply(&self, base: &lesiond::config::ModelConfig) -> lesiond::config::ModelConfig {
        let mut model = cli::model_for_classify(base, self.model, self.labels, self.calibration, self.threads);
        if let Some(engine) = self.engine {
            model.engine = engine;
        }
        if let Some(xnnpack) = self.xnnpack {
            model.xnnpack = xnnpack;
        }
        model
    }
}

fn try_main(args: Args) -> Result<(), Failure> {
    match args.command {
        Command::Run { config } => {
            let origin = origin(config);
            let config = load_config(&origin)?;
            logging::init(&config.log, false);
            let runtime = runtime()?;
            let result = runtime.block_on(daemon::run(origin, config));
            // A stuck thread (the reason we may be failing) must not keep the process alive:
            // give blocking work a moment, then exit regardless.
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            result.map(|_| ()).map_err(|e| {
                let failure = match e {
                    daemon::DaemonError::Config(_) => Failure::config(&e),
                    _ => Failure::runtime(&e),
                };
                Failure { log: true, ..failure }
            })
        }
        Command::Classify { model, engine, labels, calibration, threads, xnnpack, json, images } => {
            let base = load_config(&ConfigOrigin::Embedded)?;
            logging::init(&base.log, true);
            let overrides = ModelOverrides { model: model.as_deref(), labels: labels.as_deref(), calibration: calibration.as_deref(), threads, engine, xnnpack };
            match cli::classify(&overrides.apply(&base.model), &base.checks, &images, json).map_err(Failure::runtime)? {
                0 => Ok(()),
                n => Err(Failure::runtime(format!("{n} of {} image(s) could not be classified", images.len()))),
            }
        }
        Command::Checks { config, images } => {
            let config = load_config(&origin(config))?;
            match cli::checks(&config.checks, &images) {
                0 => Ok(()),
                n => Err(Failure::runtime(format!("{n} of {} image(s) could not be read", images.len()))),
            }
        }
        Command::Check { config } => {
            let origin = origin(config);
            let config = load_config(&origin)?;
            println!("checking {origin}");
            let files_ok = cli::check_files(&origin, &config);
            let checked = cli::check(&config);
            let archive_ok = match config.dicom.enabled || config.dicom.worklist.is_some() {
                true => runtime()?.block_on(cli::check_archive(&config)),
                false => true,
            };
            // The checks have printed what is wrong, line by line.
            (checked && files_ok && archive_ok).then_some(()).ok_or_else(|| Failure::runtime(""))
        }
        Command::Bench { images, frames, threads, model, labels, calibration, xnnpack, engine, paced_fps, mqtt_host, mqtt_port, dicom_port, json } => {
            let base = load_config(&ConfigOrigin::Embedded)?;
            logging::init(&lesiond::config::LogConfig { level: "warn".into(), ..base.log.clone() }, true);
            let overrides = ModelOverrides { model: model.as_deref(), labels: labels.as_deref(), calibration: calibration.as_deref(), threads: None, engine, xnnpack };
            let images = images.unwrap_or_else(|| {
                std::env::var_os("LESIOND_DATA")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("../shared/data/ham10000"))
                    .join("images")
            });
            let opts = lesiond::bench::BenchOptions { images, frames, threads, model: overrides.apply(&base.model), mqtt_host, mqtt_port, dicom_port, paced_fps };
            let rows = lesiond::bench::run(&opts, &runtime()?).map_err(Failure::runtime)?;
            if json {
                for r in rows {
                    println!("{}", serde_json::to_string(&r).unwrap_or_default());
                }
            } else {
                println!("model {}, {} frames", opts.model.path.display(), opts.frames);
                for r in &rows {
                    println!("{} threads: {}", r.threads, r.engine);
                }
                print!("{}", lesiond::bench::table(&rows));
            }
            Ok(())
        }
        Command::Cameras => cli::cameras().map_err(Failure::runtime),
    }
}

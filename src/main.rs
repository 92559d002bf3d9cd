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
        /// Print JSON rows instead of the table.
        #[arg(long)]
        json: bool,
    },
}

fn origin(path: Option<PathBuf>) -> ConfigOrigin {
    path.map_or(ConfigOrigin::Embedded, ConfigOrigin::File)
}

fn load_config(origin: &ConfigOrigin) -> Result<Config, ExitCode> {
    Config::load(origin).map_err(|e| {
        eprintln!("lesiond: {e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    one_malloc_arena();
    let args = Args::parse();
    match run(args) {
        Ok(code) | Err(code) => code,
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

fn run(args: Args) -> Result<ExitCode, ExitCode> {
    match args.command {
        Command::Run { config } => {
            let origin = origin(config);
            let config = load_config(&origin)?;
            logging::init(&config.log, false);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| {
                    eprintln!("lesiond: cannot start the async runtime: {e}");
                    ExitCode::FAILURE
                })?;
            let result = runtime.block_on(daemon::run(origin, config));
            // A stuck thread (the reason we may be failing) must not keep the process alive:
            // give blocking work a moment, then exit regardless.
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            match result {
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("lesiond: {e}");
                    Err(match e {
                        daemon::DaemonError::Config(_) => ExitCode::from(2),
                        _ => ExitCode::FAILURE,
                    })
                }
            }
        }
        Command::Classify { model, engine, labels, calibration, threads, xnnpack, json, images } => {
            let base = load_config(&ConfigOrigin::Embedded)?;
            logging::init(&base.log, true);
            let mut model = cli::model_for_classify(&base.model, model.as_deref(), labels.as_deref(), calibration.as_deref(), threads);
            if let Some(engine) = engine {
                model.engine = engine;
            }
            if let Some(xnnpack) = xnnpack {
                model.xnnpack = xnnpack;
            }
            match cli::classify(&model, &base.checks, &images, json) {
                Ok(0) => Ok(ExitCode::SUCCESS),
                Ok(n) => {
                    eprintln!("lesiond: {n} of {} image(s) could not be classified", images.len());
                    Err(ExitCode::FAILURE)
                }
                Err(e) => {
                    eprintln!("lesiond: {e}");
                    Err(ExitCode::FAILURE)
                }
            }
        }
        Command::Checks { config, images } => {
            let config = load_config(&origin(config))?;
            match cli::checks(&config.checks, &images) {
                0 => Ok(ExitCode::SUCCESS),
                n => {
                    eprintln!("lesiond: {n} of {} image(s) could not be read", images.len());
                    Err(ExitCode::FAILURE)
                }
            }
        }
        Command::Check { config } => {
            let origin = origin(config);
            let config = load_config(&origin)?;
            println!("checking {origin}");
            let files_ok = cli::check_files(&origin, &config);
            if cli::check(&config) && files_ok {
                Ok(ExitCode::SUCCESS)
            } else {
                Err(ExitCode::FAILURE)
            }
        }
        Command::Bench { images, frames, threads, model, labels, calibration, xnnpack, engine, paced_fps, mqtt_host, mqtt_port, json } => {
            let base = load_config(&ConfigOrigin::Embedded)?;
            logging::init(&lesiond::config::LogConfig { level: "warn".into(), ..base.log.clone() }, true);
            let mut model = cli::model_for_classify(&base.model, model.as_deref(), labels.as_deref(), calibration.as_deref(), None);
            if let Some(xnnpack) = xnnpack {
                model.xnnpack = xnnpack;
            }
            if let Some(engine) = engine {
                model.engine = engine;
            }
            let images = images.unwrap_or_else(|| {
                std::env::var_os("LESIOND_DATA")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("../shared/data/ham10000"))
                    .join("images")
            });
            let opts = lesiond::bench::BenchOptions { images, frames, threads, model, mqtt_host, mqtt_port, paced_fps };
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| {
                eprintln!("lesiond: cannot start the async runtime: {e}");
                ExitCode::FAILURE
            })?;
            match lesiond::bench::run(&opts, &runtime) {
                Ok(rows) if json => {
                    for r in rows {
                        println!("{}", serde_json::to_string(&r).unwrap_or_default());
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Ok(rows) => {
                    println!("model {}, {} frames", opts.model.path.display(), opts.frames);
                    for r in &rows {
                        println!("{} threads: {}", r.threads, r.engine);
                    }
                    print!("{}", lesiond::bench::table(&rows));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("lesiond: {e}");
                    Err(ExitCode::FAILURE)
                }
            }
        }
        Command::Cameras => cli::cameras().map(|()| ExitCode::SUCCESS).map_err(|e| {
            eprintln!("lesiond: {e}");
            ExitCode::FAILURE
        }),
    }
}


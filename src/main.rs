//! The `lesiond` command line. Turns every error into a message a person can act on and an
//! exit status: 0 ok, 1 a runtime failure (model, source, images), 2 a bad configuration.

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
    /// Classify image files and print the results.
    Classify {
        /// The .tflite model (default: the embedded configuration's).
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Temperature file (default: the configured one, unless --model is given).
        #[arg(long)]
        calibration: Option<PathBuf>,
        #[arg(long)]
        threads: Option<u32>,
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
    let args = Args::parse();
    match run(args) {
        Ok(code) | Err(code) => code,
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
            match runtime.block_on(daemon::run(origin, config)) {
                Ok(()) => Ok(ExitCode::SUCCESS),
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
        Command::Classify { model, labels, calibration, threads, json, images } => {
            let base = load_config(&ConfigOrigin::Embedded)?;
            logging::init(&base.log, true);
            let model = cli::model_for_classify(&base.model, model.as_deref(), labels.as_deref(), calibration.as_deref(), threads);
            match cli::classify(&model, &images, json) {
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
        Command::Check { config } => {
            let origin = origin(config);
            let config = load_config(&origin)?;
            println!("checking {origin}");
            if cli::check(&config) {
                Ok(ExitCode::SUCCESS)
            } else {
                Err(ExitCode::FAILURE)
            }
        }
        Command::Cameras => cli::cameras().map(|()| ExitCode::SUCCESS).map_err(|e| {
            eprintln!("lesiond: {e}");
            ExitCode::FAILURE
        }),
    }
}


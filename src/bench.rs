//! `lesiond bench`: where a frame's time goes, measured against the bare interpreter.
//!
//! For each thread count it measures, in one process, with the same library and model:
//! 1. the bare engine: `invoke` alone on a preprocessed frame (the physical limit), half of the
//!    invokes just before the daemon run and half just after, because this machine's speed
//!    drifts by 10-20 % within minutes (both medians are reported, so the drift shows);
//! 2. the real daemon (`daemon::run`) on a lossless directory replay of real images, publishing
//!    to a real broker, until every result is acknowledged: per-stage latency percentiles,
//!    end-to-end frames/s, CPU time per frame, peak and steady RSS, start-up to ready;
//! 3. the same daemon on a replay paced like a camera (`--paced-fps`, default 30): latency when
//!    frames arrive at a rate the station can keep up with, which is how a camera feeds it. The
//!    lossless run above keeps the queue full on purpose, so its latencies include waiting turns.
//!
//! Numbers are printed, not asserted: see docs/benchmarks.md for the method and the figures.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{Config, ConfigOrigin, ModelConfig};
use crate::cputime;
use crate::engine::{self};
use crate::preprocess::Preprocessor;
use crate::source::{decode, directory};
use crate::stats::{percentiles, Percentiles, StageLatencies};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench: {0}")]
    Setup(String),
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
}

pub struct BenchOptions {
    pub images: PathBuf,
    pub frames: usize,
    pub threads: Vec<u32>,
    pub model: ModelConfig,
    pub mqtt_host: String,
    pub mqtt_port: u16,
    /// `[dicom]` on, toward an archive at this port of the MQTT host.
    pub dicom_port: Option<u16>,
    /// Frames per second of the paced run; 0 skips it.
    pub paced_fps: f64,
}

/// A frame's CPU time in the daemon run, by thread, ms.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuPerFrame {
    /// Inside the engine: the inference thread in the engine call plus the engine's worker threads.
    pub invoke: f64,
    /// The capture thread: read, decode, preprocess.
    pub capture: f64,
    /// The inference thread outside the engine call: postprocess, JSON, spool write.
    pub inference_other: f64,
    /// The rest of the process: the publisher and MQTT client (tokio), the daemon's main loop.
    pub rest: f64,
}

/// The daemon on a camera-paced replay: latency without a backlog.
#[derive(Debug, Clone, Serialize)]
pub struct PacedRun {
    pub fps: f64,
    pub frames: usize,
    /// Frames the daemon dropped because inference was behind (0 when it keeps up).
    pub dropped: u64,
    pub stages_ms: StageLatencies,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub threads: u32,
    /// What ran, as the bare engine reports it (library version, XNNPACK applied or not).
    pub engine: crate::engine::EngineRuntime,
    pub frames: usize,
    /// The bare engine: invoke only (before and after the daemon run, together).
    pub bare_invoke_ms: Percentiles,
    /// Its median just before and just after the daemon run.
    pub bare_p50_before_after_ms: [f64; 2],
    pub bare_cpu_ms_per_invoke: f64,
    /// The bare engine's sustained rate: invokes / their total time (1000 / mean). A sustained
    /// rate, like the daemon's frames/s, so the two compare (1000 / p50 would ignore the slow
    /// invokes the daemon's figure includes: 5-10 % on this machine).
    pub bare_fps: f64,
    /// The out-of-distribution score per frame (features -> score), `None` when the model has
    /// none; and its median over the bare invoke's.
    pub ood_score_ms: Option<Percentiles>,
    pub ood_share_of_invoke: Option<f64>,
    /// The daemon, per stage (publish = spooled to PUBACK).
    pub stages_ms: StageLatencies,
    pub fps: f64,
    /// End-to-end throughput over the bare engine's (`bare_fps`).
    pub fps_over_bare: f64,
    pub cpu_ms_per_frame: f64,
    /// That CPU time by who spent it, measured per thread in the same run.
    pub cpu_ms_per_frame_by: CpuPerFrame,
    /// Share of a frame's CPU time spent outside invoke, both measured in the daemon run.
    pub non_invoke_cpu_share: f64,
    /// The same against the bare engine's CPU per invoke (measured before and after the run).
    pub non_invoke_cpu_share_vs_bare: f64,
    pub peak_rss_mb: f64,
    pub steady_rss_mb: f64,
    pub ready_ms: f64,
    pub paced: Option<PacedRun>,
}

/// A field of /proc/self/status in MB (VmRSS, VmHWM).
fn proc_status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resets VmHWM so each run reports its own peak.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A folder of links to the first `n` images of `images`.
fn frame_folder(images: &Path, n: usize) -> Result<PathBuf, BenchError> {
    let files = directory::list_images(images).map_err(|e| BenchError::Setup(e.to_string()))?;
    if files.len() < n {
        return Err(BenchError::Setup(format!("{} has {} images; {n} needed", images.display(), files.len())));
    }
    let dir = std::env::temp_dir().join(format!("lesiond-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("frames")).map_err(|e| BenchError::Setup(e.to_string()))?;
    for f in &files[..n] {
        let target = std::fs::canonicalize(f).map_err(|e| BenchError::Setup(e.to_string()))?;
        let name = f.file_name().ok_or_else(|| BenchError::Setup("bad file name".into()))?;
        std::os::unix::fs::symlink(target, dir.join("frames").join(name)).map_err(|e| BenchError::Setup(e.to_string()))?;
    }
    Ok(dir)
}

/// The out-of-distribution score on its own (feature vector + logits -> score), timed on the bare
/// engine's last frame: what it adds to every classified frame. `None` without a score file or
/// without the output it reads. (The map statistics it may read are computed inside the
/// engine's `infer`, so they are part of the invoke time.)
fn ood_score_times(model: &ModelConfig, engine: &dyn engine::Engine, logits: &crate::engine::RawOutput, runs: usize) -> Option<Vec<f64>> {
    let scorer = crate::ood::OodScorer::load(model.ood.as_ref()?).ok()?;
    let features = engine.features();
    let logits = crate::postprocess::dequantize(logits);
    scorer.score(features, &logits)?;
    Some(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(scorer.score(std::hint::black_box(features), &logits));
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

/// The bare engine: invoke alone, on one real preprocessed frame.
fn bare_invoke(model: &ModelConfig, first_image: &Path, invokes: usize) -> Result<(Vec<f64>, f64, crate::engine::EngineRuntime), BenchError> {
    let mut engine = engine::open(model)?;
    let bytes = crate::fsread::read(first_image, "image", crate::fsread::limit::IMAGE).map_err(|e| BenchError::Setup(e.to_string()))?;
    let image = decode::decode_image(&bytes).map_err(|e| BenchError::Setup(e.to_string()))?;
    let input = Preprocessor::new(engine.input_spec(), false).run(&image);
    for _ in 0..5 {
        engine.infer(&input)?;
    }
    let mut times = Vec::with_capacity(invokes);
    let cpu0 = cputime::process();
    for _ in 0..invokes {
        let t = Instant::now();
        engine.infer(&input)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let cpu = (cputime::process() - cpu0).as_secs_f64() * 1e3 / invokes as f64;
    Ok((times, cpu, engine.runtime()))
}

/// The out-of-distribution score's time per frame, on one real frame's features.
fn ood_cost(model: &ModelConfig, first_image: &Path) -> Result<Option<Percentiles>, BenchError> {
    let mut engine = engine::open(model)?;
    let bytes = crate::fsread::read(first_image, "image", crate::fsread::limit::IMAGE).map_err(|e| BenchError::Setup(e.to_string()))?;
    let image = decode::decode_image(&bytes).map_err(|e| BenchError::Setup(e.to_string()))?;
    let input = Preprocessor::new(engine.input_spec(), false).run(&image);
    let logits = engine.infer(&input)?;
    Ok(ood_score_times(model, engine.as_ref(), &logits, 500).map(percentiles))
}

/// `fps` 0 is the lossless replay (as fast as the engine goes, nothing dropped); above 0 the
/// directory source paces frames like a camera.
fn daemon_config(opts: &BenchOptions, threads: u32, dir: &Path, fps: f64) -> Result<Config, BenchError> {
    let m = &opts.model;
    let text = format!(
        r#"
[station]
id = "bench"
[source]
kind = "directory"
[source.directory]
path = "{frames}"
fps = {fps:?}
exit_when_done = true
[model]
engine = "{engine}"
path = "{model}"
labels = "{labels}"
{calibration}
threads = {threads}
xnnpack = {xnnpack}
{onnxruntime}
[pipeline]
queue_capacity = 2
# Every frame through the engine: this measures the frame path, not examinations.
[examination]
mode = "continuous"
[mqtt]
host = "{host}"
port = {port}
stats_interval_secs = 0
ready_timeout_secs = 5
[spool]
dir = "{spool}"
fsync = false
[log]
level = "warn"
# The daemon as shipped, screen included, on a free port (a demo may hold 8080).
[viewer]
listen = "127.0.0.1:0"
{dicom}
"#,
        dicom = opts
            .dicom_port
            .map(|port| format!("[dicom]\nenabled = true\nhost = \"{}\"\nport = {port}\npeer_ae_title = \"ORTHANC\"", opts.mqtt_host))
            .unwrap_or_default(),
        frames = dir.join("frames").display(),
        engine = format!("{:?}", m.engine).to_lowercase(),
        model = m.path.display(),
        labels = m.labels.display(),
        calibration = m.calibration.as_ref().map(|c| format!("calibration = \"{}\"", c.display())).unwrap_or_default(),
        xnnpack = m.xnnpack,
        onnxruntime = m
            .onnxruntime_library
            .as_ref()
            .map(|p| format!("onnxruntime_library = \"{}\"", p.display()))
            .unwrap_or_default(),
        host = opts.mqtt_host,
        port = opts.mqtt_port,
        spool = dir.join("spool").display(),
    );
    Config::from_toml_and_env(&text, &ConfigOrigin::Embedded, std::iter::empty()).map_err(|e| BenchError::Setup(e.to_string()))
}

/// Runs the bench for every thread count.
pub fn run(opts: &BenchOptions, runtime: &tokio::runtime::Runtime) -> Result<Vec<BenchRow>, BenchError> {
    let dir = frame_folder(&opts.images, opts.frames)?;
    let first = directory::list_images(&dir.join("frames")).map_err(|e| BenchError::Setup(e.to_string()))?;
    let first = first.first().ok_or_else(|| BenchError::Setup("no frames".into()))?.clone();
    let mut rows = Vec::new();
    for &threads in &opts.threads {
        let model = ModelConfig { threads, ..opts.model.clone() };
        let invokes = opts.frames.clamp(2, 200) / 2;
        let (bare_before, bare_cpu_before, engine) = bare_invoke(&model, &first, invokes)?;

        let config = daemon_config(opts, threads, &dir, 0.0)?;
        let _ = std::fs::remove_dir_all(dir.join("spool"));
        // Sample RSS while the daemon runs; the steady figure is the median of the second half.
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = {
            let sampling = sampling.clone();
            std::thread::Builder::new().name("bench-rss".into()).spawn(move || {
                let mut samples = Vec::new();
                while sampling.load(Ordering::Relaxed) {
                    samples.push(proc_status_mb("VmRSS:"));
                    std::thread::sleep(Duration::from_millis(100));
                }
                samples
            })
            .map_err(|e| BenchError::Setup(format!("cannot start the RSS sampler: {e}")))?
        };
        reset_peak_rss();
        let cpu0 = cputime::process();
        let started = Instant::now();
        let stats = runtime.block_on(crate::daemon::run(ConfigOrigin::Embedded, config))?;
        let wall = started.elapsed();
        let cpu = cputime::process() - cpu0;
        sampling.store(false, Ordering::Relaxed);
        let samples = sampler.join().unwrap_or_default();
        let steady = {
            let mut half: Vec<f64> = samples[samples.len() / 2..].to_vec();
            half.sort_by(f64::total_cmp);
            half.get(half.len() / 2).copied().unwrap_or(0.0)
        };
        let snapshot = stats.snapshot();
        let frames = snapshot.frames_classified as usize;
        let ready_ms = stats.ready_after().map_or(0.0, |d| d.as_secs_f64() * 1e3);
        // Throughput over the processing time: from ready to the last acknowledgement.
        let busy = wall.saturating_sub(Duration::from_secs_f64(ready_ms / 1e3)).as_secs_f64();
        let fps = frames as f64 / busy;
        let cpu_ms_per_frame = cpu.as_secs_f64() * 1e3 / frames.max(1) as f64;
        let by = {
            let a = stats.cpu_account();
            let per_frame = |d: Duration| d.as_secs_f64() * 1e3 / frames.max(1) as f64;
            let invoke = per_frame(a.invoke_caller + a.engine_workers);
            let capture = per_frame(a.capture);
            let inference_other = per_frame(a.inference_thread.saturating_sub(a.invoke_caller));
            CpuPerFrame { invoke, capture, inference_other, rest: (cpu_ms_per_frame - invoke - capture - inference_other).max(0.0) }
        };
        let peak_rss_mb = proc_status_mb("VmHWM:");
        let (bare_after, bare_cpu_after, _) = bare_invoke(&model, &first, invokes)?;
        let bare_p50_before_after_ms = [percentiles(bare_before.clone()).p50, percentiles(bare_after.clone()).p50];
        let all_bare = [bare_before, bare_after].concat();
        let bare_mean = all_bare.iter().sum::<f64>() / all_bare.len().max(1) as f64;
        let bare = percentiles(all_bare);
        let bare_cpu = (bare_cpu_before + bare_cpu_after) / 2.0;
        let bare_fps = 1e3 / bare_mean;
        let ood_score_ms = ood_cost(&model, &first)?;
        let paced = if opts.paced_fps > 0.0 { Some(paced_run(opts, threads, &dir, runtime)?) } else { None };
        rows.push(BenchRow {
            threads,
            engine,
            frames,
            bare_invoke_ms: bare,
            bare_p50_before_after_ms,
            bare_cpu_ms_per_invoke: bare_cpu,
            bare_fps,
            ood_share_of_invoke: ood_score_ms.map(|o| o.p50 / bare.p50),
            ood_score_ms,
            stages_ms: snapshot.latency_ms,
            fps,
            fps_over_bare: fps / bare_fps,
            cpu_ms_per_frame,
            cpu_ms_per_frame_by: by,
            non_invoke_cpu_share: (1.0 - by.invoke / cpu_ms_per_frame).max(0.0),
            non_invoke_cpu_share_vs_bare: (1.0 - bare_cpu / cpu_ms_per_frame).max(0.0),
            peak_rss_mb,
            steady_rss_mb: steady,
            ready_ms,
            paced,
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rows)
}

/// The daemon again, on the same frames paced at `opts.paced_fps`.
fn paced_run(opts: &BenchOptions, threads: u32, dir: &Path, runtime: &tokio::runtime::Runtime) -> Result<PacedRun, BenchError> {
    let config = daemon_config(opts, threads, dir, opts.paced_fps)?;
    let _ = std::fs::remove_dir_all(dir.join("spool"));
    let stats = runtime.block_on(crate::daemon::run(ConfigOrigin::Embedded, config))?;
    let snapshot = stats.snapshot();
    Ok(PacedRun {
        fps: opts.paced_fps,
        frames: snapshot.frames_classified as usize,
        dropped: snapshot.frames_dropped,
        stages_ms: snapshot.latency_ms,
    })
}

/// The table `lesiond bench` prints.
pub fn table(rows: &[BenchRow]) -> String {
    let mut out = String::new();
    let p = |x: Percentiles| format!("{:.2}/{:.2}", x.p50, x.p95);
    out.push_str("threads | bare invoke p50/p95 ms | OOD score p50/p95 ms (of invoke) | decode | preprocess | queue | inference | postprocess | publish | e2e fps | bare fps | e2e/bare | CPU ms/frame | CPU ms/frame: invoke/capture/inference other/rest | non-invoke CPU (vs bare) | peak RSS MB | steady RSS MB | ready ms | paced: fps | paced: total | paced: publish | paced: dropped\n");
    out.push_str("---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---\n");
    for r in rows {
        let s = &r.stages_ms;
        out.push_str(&format!(
            "{} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.3} | {:.2} | {:.2}/{:.2}/{:.2}/{:.2} | {:.1}% ({:.1}%) | {:.1} | {:.1} | {:.0} | {}\n",
            r.threads,
            p(r.bare_invoke_ms),
            match (r.ood_score_ms, r.ood_share_of_invoke) {
                (Some(o), Some(share)) => format!("{} ({:.2}%)", p(o), share * 100.0),
                _ => "-".to_string(),
            },
            p(s.decode),
            p(s.preprocess),
            p(s.queue),
            p(s.inference),
            p(s.postprocess),
            p(s.publish),
            r.fps,
            r.bare_fps,
            r.fps_over_bare,
            r.cpu_ms_per_frame,
            r.cpu_ms_per_frame_by.invoke,
            r.cpu_ms_per_frame_by.capture,
            r.cpu_ms_per_frame_by.inference_other,
            r.cpu_ms_per_frame_by.rest,
            r.non_invoke_cpu_share * 100.0,
            r.non_invoke_cpu_share_vs_bare * 100.0,
            r.peak_rss_mb,
            r.steady_rss_mb,
            r.ready_ms,
            r.paced.as_ref().map_or_else(
                || "- | - | - | -".to_string(),
                |pr| format!("{:.0} | {} | {} | {}", pr.fps, p(pr.stages_ms.total), p(pr.stages_ms.publish), pr.dropped)
            ),
        ));
    }
    out
}

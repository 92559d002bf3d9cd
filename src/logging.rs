//! Logs go to stdout (journald picks them up under systemd), as text or JSON lines.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the configured level.
/// `to_stderr` keeps stdout clean for commands whose output is data (`classify`).
pub fn init(config: &LogConfig, to_stderr: bool) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colours only for a person at a terminal, never into journald or a log file.
    let ansi = if to_stderr { std::io::stderr().is_terminal() } else { std::io::stdout().is_terminal() };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi);
    let result = match (config.format, to_stderr) {
        (LogFormat::Json, false) => builder.json().with_writer(std::io::stdout).try_init(),
        (LogFormat::Json, true) => builder.json().with_writer(std::io::stderr).try_init(),
        (LogFormat::Text, false) => builder.with_writer(std::io::stdout).try_init(),
        (LogFormat::Text, true) => builder.with_writer(std::io::stderr).try_init(),
    };
    // Already installed (tests): keep the first one.
    let _ = result;
}

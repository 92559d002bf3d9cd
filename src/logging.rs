//! Logs go to stdout (journald picks them up under systemd), as text or JSON lines.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Log filters are parsed where the configuration is validated (`log.level`), and here for
/// `RUST_LOG`.
pub use crate::config::parse_log_filter as parse_filter;

/// Installs the global subscriber. `RUST_LOG`, when set and valid, wins over the configured
/// level. `to_stderr` keeps stdout clean for commands whose output is data (`classify`).
pub fn init(config: &LogConfig, to_stderr: bool) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| parse_filter(&v).ok())
        .or_else(|| parse_filter(&config.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_non_ascii_is_an_error_not_a_panic() {
        assert!(parse_filter("info").is_ok());
        assert!(parse_filter("lesiond=debug,rumqttc=warn").is_ok());
        // Found by the config fuzz test: tracing-subscriber panicked on this one.
        assert!(parse_filter("\t\u{25226}<<D|$\u{23a}=4\u{fffd}\u{23a}y").is_err());
        assert!(parse_filter("$\u{23a}=4").is_err());
    }
}

//! Configuration, in two layers (the model is ripgrep's low-level and high-level arguments):
//!
//! - [`file`]: what is written — a TOML file (or the embedded demo default) overlaid with
//!   environment variables, read by serde. Every key can be overridden as
//!   `LESIOND_<SECTION>__<KEY>` (nested sections join with `__`, e.g.
//!   `LESIOND_SOURCE__DIRECTORY__PATH`). Unknown keys are errors that name the key, so a typo in
//!   `/etc/lesiond/lesiond.toml` stops the service at start instead of being silently ignored.
//!   Keys that moved are still read under their old name ([`legacy`]), with a warning.
//! - [`resolve`]: what runs — [`Config`], built once from the written layer by [`load`] /
//!   [`Config::from_toml_and_env`]: validated ([`validate`]: each failure an [`Invalid`] naming
//!   the key), with the values derived from several keys (the examination mode a source allows,
//!   the decode limits, the MQTT client id) computed there once. The rest of the code receives
//!   the parts it needs.
//!
//! This module sits below everything that reads it: it imports nothing from the rest of the
//! crate but `fsread` (to read the file within a size limit).

mod dicom;
mod file;
mod legacy;
mod resolve;
#[cfg(test)]
mod tests;
mod validate;

use std::path::PathBuf;

pub use dicom::*;
pub use file::*;
pub use legacy::MovedKey;
pub use resolve::{Config, ContextSettings, DecodeLimits, ExaminationSettings, SourceSettings};
pub use validate::parse_log_filter;

/// The demo configuration compiled into the binary: synthetic frames, a broker on localhost.
pub const DEMO_TOML: &str = include_str!("../../config/demo.toml");

const ENV_PREFIX: &str = "LESIOND";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The text or a value does not parse, or a key is unknown (the message names it).
    #[error("invalid configuration in {origin}: {message}")]
    Parse { origin: ConfigOrigin, message: String },
    /// A value parses but the station cannot run with it.
    #[error("invalid configuration in {origin}: {invalid}")]
    Invalid { origin: ConfigOrigin, invalid: Invalid },
}

/// A value the station cannot run with: the key to change, and what is wrong with it (the
/// message names the key too, as a person reads it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    /// The dotted key, e.g. `examination.focus_relative_min`.
    pub key: String,
    pub message: String,
}

impl Invalid {
    pub(crate) fn at(key: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid { key: key.into(), message: message.into() }
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

impl Config {
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
        let parse = |message: String| ConfigError::Parse { origin: origin.clone(), message };
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
            .map_err(|e| parse(e.to_string()))?;
        let mut root = config::Source::collect(&built).map_err(|e| parse(e.to_string()))?;
        let moved = legacy::move_old_keys(&mut root).map_err(|invalid| ConfigError::Invalid { origin: origin.clone(), invalid })?;
        let written: FileConfig = serde::Deserialize::deserialize(config::Value::new(None, root)).map_err(|e: config::ConfigError| parse(e.to_string()))?;
        Config::resolve(written, moved).map_err(|invalid| ConfigError::Invalid { origin: origin.clone(), invalid })
    }
}

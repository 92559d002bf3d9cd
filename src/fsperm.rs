//! Who else may read or change the files the daemon trusts: the secrets (MQTT password file,
//! the screen's password file, the TLS client key) and the configuration file. Said at start
//! and by `lesiond check`; never their content.
//!
//! A secret readable or writable by group or others is a warning (someone else can read the
//! credential); writable by anyone is an error (anyone on the machine can replace it: the daemon
//! refuses to start). A configuration file writable by group or others is a warning: whoever can
//! write it chooses the broker, the model and the spool directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigOrigin};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Warning,
    Error,
}

/// One file that others may read or change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub path: PathBuf,
    pub message: String,
}

/// What a file is to the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A credential, named by its key.
    Secret(&'static str),
    Config,
}

/// The files of `config` (and the file it came from) that others may read or change.
pub fn check(origin: &ConfigOrigin, config: &Config) -> Vec<Finding> {
    let mut files: Vec<(&Path, Role)> = Vec::new();
    if let ConfigOrigin::File(path) = origin {
        files.push((path, Role::Config));
    }
    if let Some(p) = &config.mqtt.password_file {
        files.push((p, Role::Secret("mqtt.password_file")));
    }
    if let Some(p) = config.mqtt.tls.as_ref().and_then(|t| t.client_key.as_ref()) {
        files.push((p, Role::Secret("mqtt.tls.client_key")));
    }
    if let Some(p) = &config.viewer.token_file {
        files.push((p, Role::Secret("viewer.token_file")));
    }
    files.into_iter().filter_map(|(path, role)| finding(path, role)).collect()
}

fn finding(path: &Path, role: Role) -> Option<Finding> {
    // A file that cannot be looked at, or is no regular file (/dev/zero), is reported where it
    // is read, with its error.
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    let mode = meta.permissions().mode() & 0o7777;
    let (severity, message) = match role {
        Role::Secret(key) if mode & 0o002 != 0 => (
            Severity::Error,
            format!("{key} {} is writable by anyone (mode {mode:04o}): anyone on this machine can replace the credential; make it 0600, owned by the daemon's user", path.display()),
        ),
        Role::Secret(key) if mode & 0o077 != 0 => (
            Severity::Warning,
            format!("{key} {} is readable or writable by group or others (mode {mode:04o}): make it 0600, owned by the daemon's user", path.display()),
        ),
        Role::Config if mode & 0o022 != 0 => (
            Severity::Warning,
            format!("config file {} is writable by group or others (mode {mode:04o}): whoever can write it chooses the broker, the model and the spool; make it 0644 or 0640", path.display()),
        ),
        _ => return None,
    };
    Some(Finding { severity, path: path.to_path_buf(), message })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_mode(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, "s3cret-value-never-printed").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn secrets_others_can_read_warn_and_world_writable_ones_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::load(&ConfigOrigin::Embedded).expect("the demo config");
        config.viewer.token_file = Some(with_mode(dir.path(), "token", 0o644));
        config.mqtt.password_file = Some(with_mode(dir.path(), "pw", 0o666));
        let origin = ConfigOrigin::File(with_mode(dir.path(), "lesiond.toml", 0o664));
        let found = check(&origin, &config);
        let text: Vec<String> = found.iter().map(|f| format!("{:?} {}", f.severity, f.message)).collect();
        assert_eq!(found.len(), 3, "{text:#?}");
        assert!(text.iter().any(|t| t.starts_with("Warning config file") && t.contains("0664")), "{text:#?}");
        assert!(text.iter().any(|t| t.starts_with("Error mqtt.password_file") && t.contains("writable by anyone")), "{text:#?}");
        assert!(text.iter().any(|t| t.starts_with("Warning viewer.token_file") && t.contains("0644")), "{text:#?}");
        assert!(text.iter().all(|t| !t.contains("s3cret")), "never the content");
        // Private files: nothing to say.
        for f in [&config.viewer.token_file, &config.mqtt.password_file] {
            std::fs::set_permissions(f.as_ref().expect("set"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let origin = ConfigOrigin::File(with_mode(dir.path(), "lesiond.toml", 0o644));
        assert!(check(&origin, &config).is_empty());
    }
}

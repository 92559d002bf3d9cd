//! The viewer's password: required when it listens beyond loopback (`viewer.token_file`).
//!
//! HTTP Basic (any user name, the password from the file): the browser asks once and sends it
//! with every request of the page, the `EventSource` stream included, so the page itself never
//! holds the credential. Without TLS it crosses the network readable: docs/viewer.md says to
//! use it on a trusted network.

use std::path::{Path, PathBuf};

use axum::http::{header, HeaderMap};
use base64::Engine as _;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read viewer.token_file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("viewer.token_file {path} is empty: put the password in it")]
    Empty { path: PathBuf },
}

/// Shorter passwords get a warning at start and in `lesiond check`.
pub const MIN_CHARS: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Missing,
    Wrong,
    Right,
}

/// The password; `Debug` never shows it.
#[derive(Clone)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    /// The file's first line, without surrounding whitespace (editors add a newline).
    pub fn from_file(path: &Path) -> Result<Password, AuthError> {
        let text = crate::fsread::read_to_string(path, "viewer.token_file", crate::fsread::limit::SECRET).map_err(|e| AuthError::Read { path: path.to_path_buf(), source: e.into() })?;
        let password = text.lines().next().unwrap_or("").trim();
        if password.is_empty() {
            return Err(AuthError::Empty { path: path.to_path_buf() });
        }
        Ok(Password(password.to_string()))
    }

    pub fn new(password: &str) -> Password {
        Password(password.to_string())
    }

    /// A warning when the password is short enough to guess: with the login limit
    /// (`throttle.rs`) a few tries a minute per address, still too few characters to stand
    /// long against several addresses.
    pub fn weakness(&self) -> Option<String> {
        let chars = self.0.chars().count();
        (chars < MIN_CHARS).then(|| {
            format!("the viewer password (viewer.token_file) has fewer than {MIN_CHARS} characters: use a longer one, e.g. four random words")
        })
    }

    /// What the request's credentials are worth: none given (a browser's first request, which
    /// the 401 answers), the password, or something else (a guess, counted against the client).
    pub fn judge(&self, headers: &HeaderMap) -> Credential {
        match headers.get(header::AUTHORIZATION) {
            None => Credential::Missing,
            Some(_) if self.admits(headers) => Credential::Right,
            Some(_) => Credential::Wrong,
        }
    }

    /// Whether the request carries the password: `Authorization: Basic` with any user name, or
    /// `Authorization: Bearer <password>` for scripts.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let given = if scheme.eq_ignore_ascii_case("basic") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest.trim()) else { return false };
            let Ok(text) = String::from_utf8(decoded) else { return false };
            match text.split_once(':') {
                Some((_user, password)) => password.to_string(),
                None => return false,
            }
        } else if scheme.eq_ignore_ascii_case("bearer") {
            rest.trim().to_string()
        } else {
            return false;
        };
        same_bytes(given.as_bytes(), self.0.as_bytes())
    }
}

/// Compares in time that depends on the lengths only, so response times do not reveal how much
/// of a guess was right.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).expect("header"));
        h
    }

    #[test]
    fn basic_with_any_user_and_bearer_are_admitted() {
        let p = Password::new("s3cret");
        let basic = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
        assert!(p.admits(&with(&basic("station:s3cret"))));
        assert!(p.admits(&with(&basic(":s3cret"))));
        assert!(p.admits(&with("Bearer s3cret")));
        assert!(!p.admits(&with(&basic("station:s3cre"))));
        assert!(!p.admits(&with(&basic("s3cret"))));
        assert!(!p.admits(&with("Bearer wrong")));
        assert!(!p.admits(&with("Basic !!!notbase64")));
        assert!(!p.admits(&HeaderMap::new()));
        assert!(!format!("{p:?}").contains("s3cret"));
        assert_eq!(p.judge(&HeaderMap::new()), Credential::Missing);
        assert_eq!(p.judge(&with("Bearer wrong")), Credential::Wrong);
        assert_eq!(p.judge(&with("Bearer s3cret")), Credential::Right);
    }

    #[test]
    fn a_short_password_is_warned_about_without_showing_it() {
        let warning = Password::new("s3cret").weakness().expect("6 characters");
        assert!(warning.contains("12") && !warning.contains("s3cret"), "{warning}");
        assert!(Password::new("ééééééééééé").weakness().is_some(), "11 characters, 22 bytes");
        assert!(Password::new("correct-horse-42").weakness().is_none());
    }

    #[test]
    fn the_file_gives_its_first_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "  pw  \n").expect("write");
        assert!(Password::from_file(&path).expect("reads").admits(&with("Bearer pw")));
        std::fs::write(&path, "\n").expect("write");
        assert!(matches!(Password::from_file(&path), Err(AuthError::Empty { .. })));
        assert!(matches!(Password::from_file(&dir.path().join("none")), Err(AuthError::Read { .. })));
    }
}

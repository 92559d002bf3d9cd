//! TEST-ONLY fault injection, so the supervision tests can make a stage panic, hang or fail in
//! the real binary. Never set it in production.
//!
//! `LESIOND_TEST_FAULT=<fault>[:<n>]`, read once at start (no per-frame environment lookups):
//!
//! | fault | what happens |
//! | --- | --- |
//! | `inference-panic:N` | the inference thread panics before classifying frame N |
//! | `inference-hang:N` | the inference thread blocks forever before classifying frame N |
//! | `engine-error:N` | every classification from frame N on fails, as an engine error would |
//! | `capture-panic:N` | the capture thread panics after delivering N frames |
//! | `publisher-panic:N` | the publisher task panics after N PUBACKs of results |
//! | `spool-fsync-delay-ms:N` | every spool fsync takes N ms longer (a slow SD card) |
//! | `spool-write-error:N` | every spool write from entry N on fails with an I/O error (a dying SD card) |
//! | `reload-model-delay-ms:N` | loading the model for a reload takes N ms longer (a big model on an SD card) |
//!
//! Unset (always, in production) every check is a compare against `None`.

use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable; documented as test-only in docs/testing.md.
pub const ENV: &str = "LESIOND_TEST_FAULT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    InferencePanic(u64),
    InferenceHang(u64),
    EngineError(u64),
    CapturePanic(u64),
    PublisherPanic(u64),
    SpoolFsyncDelay(Duration),
    SpoolWriteError(u64),
    ReloadModelDelay(Duration),
}

/// The configured fault, if any (parsed once).
pub fn get() -> Option<Fault> {
    static FAULT: OnceLock<Option<Fault>> = OnceLock::new();
    *FAULT.get_or_init(|| {
        let text = std::env::var(ENV).ok()?;
        let fault = parse(&text);
        match fault {
            Some(f) => tracing::warn!("{ENV} is set: injecting {f:?} (test-only)"),
            None => tracing::warn!("{ENV}={text:?} is not a known fault; ignored"),
        }
        fault
    })
}

fn parse(text: &str) -> Option<Fault> {
    let (name, n) = text.split_once(':').unwrap_or((text, "1"));
    let n: u64 = n.trim().parse().ok()?;
    Some(match name.trim() {
        "inference-panic" => Fault::InferencePanic(n),
        "inference-hang" => Fault::InferenceHang(n),
        "engine-error" => Fault::EngineError(n),
        "capture-panic" => Fault::CapturePanic(n),
        "publisher-panic" => Fault::PublisherPanic(n),
        "spool-fsync-delay-ms" => Fault::SpoolFsyncDelay(Duration::from_millis(n)),
        "spool-write-error" => Fault::SpoolWriteError(n),
        "reload-model-delay-ms" => Fault::ReloadModelDelay(Duration::from_millis(n)),
        _ => return None,
    })
}

/// Before the inference thread classifies its `n`-th frame (1-based): panics or hangs if so
/// configured; returns `true` when the classification must fail as an engine error.
pub fn before_classify(n: u64) -> bool {
    match get() {
        None => false,
        Some(Fault::InferencePanic(at)) if n >= at => panic!("injected fault: inference panic at frame {n}"),
        Some(Fault::InferenceHang(at)) if n >= at => loop {
            std::thread::park();
        },
        Some(Fault::EngineError(at)) => n >= at,
        Some(_) => false,
    }
}

/// After the capture thread delivered its `n`-th frame.
pub fn after_capture(n: u64) {
    if let Some(Fault::CapturePanic(at)) = get() {
        if n >= at {
            panic!("injected fault: capture panic after frame {n}");
        }
    }
}

/// After the publisher saw its `n`-th result acknowledged.
pub fn after_ack(n: u64) {
    if let Some(Fault::PublisherPanic(at)) = get() {
        if n >= at {
            panic!("injected fault: publisher panic after {n} acknowledgements");
        }
    }
}

/// Extra latency for each spool fsync.
pub fn fsync_delay() -> Option<Duration> {
    match get() {
        Some(Fault::SpoolFsyncDelay(d)) => Some(d),
        _ => None,
    }
}

/// Whether writing spool entry `number` must fail (an I/O error, not a resource shortage).
pub fn spool_write_fails(number: u64) -> bool {
    matches!(get(), Some(Fault::SpoolWriteError(at)) if number >= at)
}

/// Before a reload loads its model: sleeps if so configured.
pub fn before_reload_model_load() {
    if let Some(Fault::ReloadModelDelay(d)) = get() {
        std::thread::sleep(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_faults() {
        assert_eq!(parse("inference-panic:3"), Some(Fault::InferencePanic(3)));
        assert_eq!(parse("inference-hang"), Some(Fault::InferenceHang(1)));
        assert_eq!(parse("spool-fsync-delay-ms:250"), Some(Fault::SpoolFsyncDelay(Duration::from_millis(250))));
        assert_eq!(parse("meteor:1"), None);
        assert_eq!(parse("capture-panic:x"), None);
    }
}

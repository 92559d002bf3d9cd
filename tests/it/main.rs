//! The integration tests, one binary: each module was its own test binary, and each of those
//! linked the whole crate again (issue 24). Test names are `module::test`, and
//! `ham10000::module::test` for the tests that need the HAM10000 data set, so that
//! `scripts/test.sh` leaves those out with one `--skip ham10000::` when the data set is absent.
//!   cargo test --locked --test it                         # all of them
//!   cargo test --locked --test it startup_errors::        # one module
//!   cargo test --locked --test it -- --skip ham10000::    # without the data set

mod common;

mod archive;
mod bounds;
mod daemon;
mod reliability;
mod security;
mod startup_errors;
mod supervision;
mod viewer_http;

/// They measure the model on HAM10000 images, or replay a video made from them.
mod ham10000 {
    mod abstain;
    mod accuracy;
    mod archive;
    #[cfg(all(feature = "tract", feature = "tflite"))]
    mod engines_agree;
    mod examination;
    mod golden;
    #[cfg(all(feature = "ort", feature = "tflite"))]
    mod ort_engine;
    mod viewer;
}

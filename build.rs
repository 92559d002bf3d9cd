//! Puts the TensorFlow Lite C library next to the binary and tells the binary to look there, so
//! `target/<profile>/lesiond` runs without LD_LIBRARY_PATH (and an installed `/usr/bin/lesiond`
//! finds it in `/usr/lib/lesiond`).
//!
//! Which library: `TFLITEC_PREBUILT_PATH_<TARGET>` (or `TFLITEC_PREBUILT_PATH`), the one tflitec
//! links against; `.cargo/config.toml` points it at what scripts/tflite-c.sh prepared. It is
//! copied under its own file name, which is its soname (`libtensorflowlite_c.so` for x86_64's
//! TF Lite 2.6, `libLiteRtRuntimeCApi.so` for aarch64's TF Lite 2.20): the name the binary asks
//! the dynamic loader for.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=TFLITEC_PREBUILT_PATH");
    let target = std::env::var("TARGET").unwrap_or_default();
    let target_var = format!("TFLITEC_PREBUILT_PATH_{}", target.to_uppercase().replace('-', "_"));
    println!("cargo:rerun-if-env-changed={target_var}");
    if std::env::var_os("CARGO_FEATURE_TFLITE").is_none() {
        return;
    }
    // $ORIGIN: next to the binary; ..: target/<profile> for test binaries in deps/;
    // ../lib/lesiond: an installed /usr/bin/lesiond.
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN:$ORIGIN/..:$ORIGIN/../lib/lesiond");

    let Some(out_dir) = std::env::var_os("OUT_DIR").map(PathBuf::from) else { return };
    // OUT_DIR = <target dir>/[<triple>/]<profile>/build/lesiond-<hash>/out
    let Some(profile_dir) = out_dir.ancestors().nth(3).map(Path::to_path_buf) else { return };
    let library = std::env::var_os(&target_var).or_else(|| std::env::var_os("TFLITEC_PREBUILT_PATH")).map(PathBuf::from);
    let Some(library) = library.filter(|l| l.is_file()) else {
        println!("cargo:warning=no TF Lite C library to put next to the binary: run scripts/tflite-c.sh {target} (README, TF Lite library)");
        return;
    };
    println!("cargo:rerun-if-changed={}", library.display());
    let Some(name) = library.file_name() else { return };
    let dest = profile_dir.join(name);
    // Replace rather than write into a file a running test binary may have mapped.
    let _ = std::fs::remove_file(&dest);
    if let Err(e) = std::fs::copy(&library, &dest) {
        println!("cargo:warning=cannot copy {} to {}: {e}", library.display(), dest.display());
    }
}

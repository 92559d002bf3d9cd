//! Puts the TensorFlow Lite C library next to the binary and tells the binary to look there, so
//! `target/<profile>/lesiond` runs without LD_LIBRARY_PATH (and an installed binary finds it in
//! `../lib/lesiond`).
//!
//! Which library: `TFLITEC_PREBUILT_PATH_<TARGET>` (or `TFLITEC_PREBUILT_PATH`) when set — a
//! device build's own library — else the x86_64 TF Lite 2.6 library that the tflitec crate ships
//! and unpacks when `DOCS_RS=1` (set in `.cargo/config.toml`). tflitec is also a
//! build-dependency so that its build script has run before this one.

use std::path::{Path, PathBuf};

const LIB: &str = "libtensorflowlite_c.so";

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
    let prebuilt = std::env::var_os(&target_var).or_else(|| std::env::var_os("TFLITEC_PREBUILT_PATH")).map(PathBuf::from);
    let native = std::env::var("HOST").ok().as_deref() == Some(target.as_str());
    let library = prebuilt.or_else(|| if native { shipped_library(&out_dir) } else { None });
    match library {
        Some(lib) => {
            println!("cargo:rerun-if-changed={}", lib.display());
            let dest = profile_dir.join(LIB);
            // The shipped file is read-only; replace it rather than write into it.
            let _ = std::fs::remove_file(&dest);
            if let Err(e) = std::fs::copy(&lib, &dest) {
                println!("cargo:warning=cannot copy {} to {}: {e}", lib.display(), dest.display());
            }
        }
        None => println!(
            "cargo:warning=no {LIB} found to put next to the binary; set {target_var} (see README, TF Lite library)"
        ),
    }
}

/// The library tflitec unpacked: `<build dir>/tflitec-*/out/libtensorflowlite_c.so` (the
/// build-dependency's copy, for a native build only: it is an x86_64 library).
fn shipped_library(out_dir: &Path) -> Option<PathBuf> {
    let build_dir = out_dir.ancestors().nth(2)?;
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(build_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("tflitec-"))
        .map(|e| e.path().join("out").join(LIB))
        .filter(|p| p.is_file())
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

#!/bin/sh
# cargo's rustc wrapper (.cargo/config.toml, build.rustc-wrapper): every rustc call goes through
# unchanged, except that before compiling tflitec's build script it checks that the TF Lite C
# library is where .cargo/config.toml points tflitec (scripts/tflite-c.sh puts it there).
# Why here: tflitec's build script runs before anything of ours (build.rs included) and, without
# the library, fails deep in cargo's output ("Cannot copy file from target/tflite-c/..."). So a
# fresh clone's `cargo build` stops here instead, with one line naming the command to run.
# The line is a rustc JSON diagnostic (cargo asks rustc for those) so that cargo prints it as an
# error and does not add the long rustc command line under it.
# Skipped when TFLITEC_PREBUILT_PATH is set in the environment (a library of one's own), and when
# RUSTC_WRAPPER is (it replaces this one).
if [ "${CARGO_PKG_NAME:-}" = tflitec ] && [ "${CARGO_CRATE_NAME:-}" = build_script_build ] \
   && [ -z "${TFLITEC_PREBUILT_PATH:-}" ]; then
  # The target is not known yet (build scripts are compiled for the host): any one prepared
  # library will do; a missing one for another target is named by tflitec's own message.
  found=
  for library in "${TFLITEC_PREBUILT_PATH_X86_64_UNKNOWN_LINUX_GNU:-}" \
                 "${TFLITEC_PREBUILT_PATH_AARCH64_UNKNOWN_LINUX_GNU:-}"; do
    [ -n "$library" ] && [ -f "$library" ] && found=1
  done
  if [ -z "$found" ]; then
    line='lesiond: run scripts/tflite-c.sh first (it puts the TF Lite C library in target/tflite-c/; README \"TF Lite library\")'
    printf '{"$message_type":"diagnostic","message":"%s","code":null,"level":"error","spans":[],"children":[],"rendered":"error: %s\\n"}\n' "$line" "$line" >&2
    exit 1
  fi
fi
exec "$@"

#!/usr/bin/env bash
# Cross-builds lesiond for a Raspberry Pi on a Debian/Ubuntu x86_64 machine, without a container:
#   scripts/build-arm.sh aarch64   # Pi 4/5, 64-bit Raspberry Pi OS -> target/aarch64-unknown-linux-gnu/release/lesiond
#   scripts/build-arm.sh armv7     # Pi 3/Zero 2, 32-bit Raspberry Pi OS -> target/armv7-unknown-linux-gnueabihf/release/lesiond
# Extra arguments go to cargo. Installs what is missing (Debian's cross gcc, the target's libc and
# kernel headers for nokhwa's bindgen, qemu-user to run the result here) when run as root or with
# passwordless sudo, and the rustup target of the pinned toolchain (rust-toolchain.toml).
#
# Engines:
#   aarch64: tflite + xnnpack (the int8 .tflite on TF Lite 2.20 with the XNNPACK delegate; the
#            library comes from PyPI's ai-edge-litert wheel through scripts/tflite-c.sh and is
#            put next to the binary as libLiteRtRuntimeCApi.so), and tract as a fallback engine.
#   armv7:   tract only (pure Rust, the model's ONNX export): no registry ships a 32-bit ARM
#            TF Lite C library.
# Features can be replaced with LESIOND_FEATURES. The binaries need glibc 2.35+ (Raspberry Pi
# OS bookworm or newer).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  aarch64) target=aarch64-unknown-linux-gnu; gnu=aarch64-linux-gnu; deb=arm64; default_features=camera,tract,tflite,xnnpack ;;
  armv7) target=armv7-unknown-linux-gnueabihf; gnu=arm-linux-gnueabihf; deb=armhf; default_features=camera,tract ;;
  *) echo "usage: scripts/build-arm.sh aarch64|armv7 [cargo args]"; exit 2 ;;
esac
shift

source scripts/deps.sh
lesiond_deps
# libstdc++: the TF Lite library needs it, to link and under qemu.
install_missing "gcc-$gnu" "libc6-dev-$deb-cross" "linux-libc-dev-$deb-cross" "libstdc++6-$deb-cross" qemu-user
if command -v rustup >/dev/null && ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  rustup target add "$target"
fi

lower=${target//-/_}
# C code (ring, mozjpeg) with the cross gcc; bindgen (nokhwa's V4L2 bindings) parses the
# target's kernel and libc headers from the Debian cross sysroot. The linker is set in
# .cargo/config.toml.
export "CC_$lower=$gnu-gcc" "AR_$lower=$gnu-ar"
export "BINDGEN_EXTRA_CLANG_ARGS_$lower=--sysroot=/usr/$gnu -I/usr/$gnu/include"
features=${LESIOND_FEATURES:-$default_features}
if [[ ",$features," == *,tflite,* || ",$features," == *,xnnpack,* ]]; then
  # Headers and library where .cargo/config.toml points tflitec (registry packages only).
  bash scripts/tflite-c.sh "$target"
fi
cargo build --release --locked --target "$target" --no-default-features --features "$features" "$@"
echo "lesiond: built target/$target/release/lesiond ($features); run it here with: $( [ $deb = arm64 ] && echo qemu-aarch64 -cpu cortex-a72 || echo qemu-arm -cpu cortex-a7 ) -L /usr/$gnu target/$target/release/lesiond"

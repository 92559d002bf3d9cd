#!/usr/bin/env bash
# Cross-builds lesiond for a Raspberry Pi on a Debian/Ubuntu x86_64 machine, without a container:
#   scripts/build-arm.sh aarch64   # Pi 4/5, 64-bit Raspberry Pi OS -> target/aarch64-unknown-linux-gnu/release/lesiond
#   scripts/build-arm.sh armv7     # Pi 3/Zero 2, 32-bit Raspberry Pi OS -> target/armv7-unknown-linux-gnueabihf/release/lesiond
# Extra arguments go to cargo. Installs what is missing (Debian's cross gcc, the target's libc and
# kernel headers for nokhwa's bindgen, qemu-user to run the result here) when run as root or with
# passwordless sudo, and the rustup target of the pinned toolchain (rust-toolchain.toml).
#
# Engine: tract (pure Rust, the model's ONNX export), so the binary needs no C library. With
# TFLITEC_PREBUILT_PATH_<TARGET> pointing at a libtensorflowlite_c.so built for the device
# (scripts/build-tflite-c.sh), the TF Lite engine is built in too. Features can be replaced with
# LESIOND_FEATURES (default: camera,tract). The binaries need glibc 2.35+ (Raspberry Pi OS
# bookworm or newer).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  aarch64) target=aarch64-unknown-linux-gnu; gnu=aarch64-linux-gnu; deb=arm64 ;;
  armv7) target=armv7-unknown-linux-gnueabihf; gnu=arm-linux-gnueabihf; deb=armhf ;;
  *) echo "usage: scripts/build-arm.sh aarch64|armv7 [cargo args]"; exit 2 ;;
esac
shift

source scripts/deps.sh
lesiond_deps
install_missing "gcc-$gnu" "libc6-dev-$deb-cross" "linux-libc-dev-$deb-cross" qemu-user
if command -v rustup >/dev/null && ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  rustup target add "$target"
fi

var=$(echo "$target" | tr 'a-z-' 'A-Z_')
lower=${target//-/_}
# C code (ring, mozjpeg) with the cross gcc; bindgen (nokhwa's V4L2 bindings) parses the
# target's kernel and libc headers from the Debian cross sysroot. The linker is set in
# .cargo/config.toml.
export "CC_$lower=$gnu-gcc" "AR_$lower=$gnu-ar"
export "BINDGEN_EXTRA_CLANG_ARGS_$lower=--sysroot=/usr/$gnu -I/usr/$gnu/include"
features=${LESIOND_FEATURES:-camera,tract}
prebuilt_var="TFLITEC_PREBUILT_PATH_$var"
if [ -n "${!prebuilt_var:-}" ]; then
  features="$features,tflite"
  export DOCS_RS=0
  echo "lesiond: TF Lite engine from ${!prebuilt_var}"
fi
cargo build --release --locked --target "$target" --no-default-features --features "$features" "$@"
echo "lesiond: built target/$target/release/lesiond ($features); run it here with: $( [ $deb = arm64 ] && echo qemu-aarch64 -cpu cortex-a72 || echo qemu-arm -cpu cortex-a7 ) -L /usr/$gnu target/$target/release/lesiond"

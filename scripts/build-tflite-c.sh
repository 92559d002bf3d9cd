#!/usr/bin/env bash
# Builds libtensorflowlite_c.so for a Raspberry Pi from a TensorFlow release, with CMake.
# NOT run by CI and cannot run on our CI machines: TensorFlow's CMake build downloads its
# dependencies (abseil, eigen, flatbuffers, XNNPACK, ...) from the internet. Run it on any
# Debian/Ubuntu x86_64 machine with internet access (cross-compiles), or on the Pi itself
# (`native`, slow: about an hour on a Pi 4):
#   scripts/build-tflite-c.sh aarch64 [OUT_DIR]   # Pi 4/5, 64-bit Raspberry Pi OS
#   scripts/build-tflite-c.sh armv7 [OUT_DIR]     # Pi 3/Zero 2, 32-bit Raspberry Pi OS
#   scripts/build-tflite-c.sh native [OUT_DIR]
# Then build lesiond with the TF Lite engine (plus tract) for that target:
#   TFLITEC_PREBUILT_PATH_AARCH64_UNKNOWN_LINUX_GNU=$OUT_DIR/libtensorflowlite_c.so scripts/build-arm.sh aarch64
# and install the library beside the binary as /usr/lib/lesiond/libtensorflowlite_c.so (the
# binary's RUNPATH looks there). The version matches the C headers tflitec 0.5.2 compiles against.
set -euo pipefail
TF_VERSION=${TF_VERSION:-2.9.1}
arch=${1:-}
out=$(realpath -m "${2:-target/tflite-c/$arch}")
jobs=${JOBS:-$(nproc)}
case "$arch" in
  aarch64)
    gnu=aarch64-linux-gnu
    cmake_args=(-DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64
                -DCMAKE_C_COMPILER=$gnu-gcc -DCMAKE_CXX_COMPILER=$gnu-g++) ;;
  armv7)
    gnu=arm-linux-gnueabihf
    flags="-march=armv7-a -mfpu=neon-vfpv4 -funsafe-math-optimizations -mfp16-format=ieee"
    cmake_args=(-DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=armv7
                -DCMAKE_C_COMPILER=$gnu-gcc -DCMAKE_CXX_COMPILER=$gnu-g++
                "-DCMAKE_C_FLAGS=$flags" "-DCMAKE_CXX_FLAGS=$flags") ;;
  native) gnu=""; cmake_args=() ;;
  *) echo "usage: scripts/build-tflite-c.sh aarch64|armv7|native [OUT_DIR]"; exit 2 ;;
esac

pkgs=(cmake make curl ca-certificates python3 git)
[ -n "$gnu" ] && pkgs+=(gcc-$gnu g++-$gnu) || pkgs+=(gcc g++)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "tflite-c: TensorFlow v$TF_VERSION -> $out/libtensorflowlite_c.so ($arch)"
curl -fsSL "https://github.com/tensorflow/tensorflow/archive/refs/tags/v$TF_VERSION.tar.gz" | tar -xz -C "$work"
src="$work/tensorflow-$TF_VERSION"
cmake -S "$src/tensorflow/lite/c" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
  -DTFLITE_ENABLE_XNNPACK=ON "${cmake_args[@]}"
cmake --build "$work/build" -j "$jobs" --target tensorflowlite_c
mkdir -p "$out"
cp "$work/build/libtensorflowlite_c.so" "$out/"
[ -n "$gnu" ] && "$gnu-strip" --strip-unneeded "$out/libtensorflowlite_c.so" || strip --strip-unneeded "$out/libtensorflowlite_c.so"
file "$out/libtensorflowlite_c.so" 2>/dev/null || true
echo "tflite-c: done: $out/libtensorflowlite_c.so"

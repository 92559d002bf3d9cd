#!/usr/bin/env bash
# Installs the system packages lesiond's build and tests need (Debian/Ubuntu), or says in one
# line what to install. Sourced by scripts/demo.sh and scripts/test.sh.
#   libclang-dev clang pkg-config : nokhwa's V4L2 bindings (bindgen)
#   unzip                         : scripts/tflite-c.sh unpacks the TF Lite C library (crate zip, wheel)
#   mosquitto mosquitto-clients   : the MQTT broker and subscriber of the demo and the tests
#   gcc libc6-dev                 : C code in the tree (ring, mozjpeg)
#   nasm (x86_64 only)            : libjpeg-turbo's SIMD JPEG decoder (mozjpeg-sys builds it only
#                                   when nasm is there; without it decoding is ~1.4x slower, same pixels)
lesiond_deps() {
  command -v cargo >/dev/null || { echo "lesiond: install Rust 1.95 (rustup) first: https://rustup.rs"; return 1; }
  local simd=()
  [ "$(uname -m)" = x86_64 ] && simd=(nasm)
  install_missing libclang-dev clang pkg-config unzip mosquitto mosquitto-clients gcc libc6-dev "${simd[@]}" || return 1
  # The host's TF Lite C headers and library, where .cargo/config.toml tells tflitec to look.
  source "$(dirname "${BASH_SOURCE[0]}")/tflite-c.sh"
  tflite_c_prepare
}

# install_missing PACKAGE...: apt-get installs those not installed yet, as root or with
# passwordless sudo; otherwise prints the one line that says what to install and returns 1.
install_missing() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  if command -v apt-get >/dev/null && { [ -z "$sudo" ] || $sudo true 2>/dev/null; }; then
    echo "lesiond: installing ${missing[*]}"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "lesiond: please install: sudo apt-get install ${missing[*]}"
    return 1
  fi
}

#!/usr/bin/env bash
# Installs the system packages lesiond's build and tests need (Debian/Ubuntu), or says in one
# line what to install. Sourced by scripts/demo.sh and scripts/test.sh.
#   libclang-dev clang pkg-config : nokhwa's V4L2 bindings (bindgen)
#   unzip                         : scripts/tflite-c.sh unpacks the TF Lite C library (crate zip, wheel)
#   mosquitto mosquitto-clients   : the MQTT broker and subscriber of the demo and the tests
#   gcc libc6-dev                 : C code in the tree (ring, mozjpeg)
#   orthanc dcmtk dicom3tools     : the imaging archive of the tests and the demo (Orthanc), DCMTK's
#                                   worklist server and dump tools, dicom3tools' dciodvfy
#                                   (the reference validator of what lesiond sends)
#   openssl                       : certificates for the DICOM-over-TLS tests
#   nasm (x86_64 only)            : libjpeg-turbo's SIMD JPEG decoder (mozjpeg-sys builds it only
#                                   when nasm is there; without it decoding is ~1.4x slower, same pixels)
lesiond_deps() {
  command -v cargo >/dev/null || { echo "lesiond: install Rust 1.95 (rustup) first: https://rustup.rs"; return 1; }
  local simd=()
  [ "$(uname -m)" = x86_64 ] && simd=(nasm)
  install_missing libclang-dev clang pkg-config unzip mosquitto mosquitto-clients gcc libc6-dev orthanc dcmtk dicom3tools openssl "${simd[@]}" || return 1
  # The host's TF Lite C headers and library, where .cargo/config.toml tells tflitec to look.
  source "$(dirname "${BASH_SOURCE[0]}")/tflite-c.sh"
  tflite_c_prepare
}

# What the browser test of the station screen needs (tests/it/ham10000/viewer.rs, run by
# scripts/test.sh with the data set), not the demo: Debian's chromium and its chromedriver, driven by selenium from
# PyPI (tests/requirements-browser.txt) in target/browser-venv. Nothing downloads a browser.
lesiond_browser_deps() {
  install_missing chromium chromium-driver python3-venv || return 1
  if [ ! -x target/browser-venv/bin/python ] || ! target/browser-venv/bin/python -c 'import selenium' 2>/dev/null; then
    python3 -m venv target/browser-venv
    target/browser-venv/bin/pip install -q --disable-pip-version-check -r tests/requirements-browser.txt
  fi
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

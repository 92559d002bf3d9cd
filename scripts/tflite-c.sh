#!/usr/bin/env bash
# Puts the TF Lite C headers and library for one target where .cargo/config.toml tells tflitec to
# look (target/tflite-c/<triple>/{include,lib}), from registry packages only, pinned by version
# and sha256. Nothing is downloaded from anywhere else; tflitec's own build would fetch headers
# from GitHub, which this avoids.
#   scripts/tflite-c.sh                       # the host (x86_64)
#   scripts/tflite-c.sh aarch64-unknown-linux-gnu
# Sourced by scripts/deps.sh for the host and by scripts/build-arm.sh for aarch64.
#
# Headers: the crate edgefirst-tflite-sys (Apache-2.0; in Cargo.lock as a never-built
#   dependency, so cargo fetches it and checks its sha256) ships the TF Lite C API headers; we add
#   tensorflow/lite/c/c_api.h (a one-line include) and the XNNPACK delegate header declared for
#   each library (tflite-c/include-<version>/, proven by tflite-c/xnnpack_options_guard.c).
# Libraries:
#   x86_64-unknown-linux-gnu : TF Lite 2.6 libtensorflowlite_c.so, shipped inside the tflitec
#                              crate (build-res/docsrs_res.zip).
#   aarch64-unknown-linux-gnu: TF Lite 2.20 libLiteRtRuntimeCApi.so (TF Lite C API + XNNPACK),
#                              from PyPI's ai-edge-litert 1.4.0 manylinux aarch64 wheel. Its
#                              soname is its file name; the binary needs it by that name.
#   armv7 has no registry-shipped library: those builds use the tract engine.
tflite_c_prepare() (
  set -euo pipefail
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  local target=${1:-$(rustc -vV | sed -n 's/^host: //p')}
  local out=target/tflite-c/$target
  local lib want_sha version
  case "$target" in
    x86_64-unknown-linux-gnu)
      lib=libtensorflowlite_c.so; version=2.6
      want_sha=003736565e81f4de1eaa9e4551791bc3938567338a3f752cd993217050f8fd81 ;;
    aarch64-unknown-linux-gnu)
      lib=libLiteRtRuntimeCApi.so; version=2.20
      want_sha=23781d014a0e0de4f8dd40553e558e5f1248e29b1d135edeb187894588fd8d33 ;;
    *) echo "tflite-c: no registry-shipped TF Lite C library for $target (use the tract engine)"; return 1 ;;
  esac
  if [ -f "$out/lib/$lib" ] && [ -f "$out/include/.complete" ] \
     && echo "$want_sha  $out/lib/$lib" | sha256sum -c --status; then
    return 0
  fi
  echo "lesiond: preparing the TF Lite C library and headers for $target ($out)"
  rm -rf "$out"; mkdir -p "$out/lib" "$out/include"

  # Headers. `cargo metadata` fetches what Cargo.lock names (checksums included) and says where.
  local pkgs
  pkgs=$(cargo metadata --locked --format-version 1 2>/dev/null | python3 -c '
import json, sys, os
m = json.load(sys.stdin)
for p in m["packages"]:
    if (p["name"], p["version"]) in (("edgefirst-tflite-sys", "0.10.3"), ("tflitec", "0.7.0")):
        print(p["name"], os.path.dirname(p["manifest_path"]))')
  local headers tflitec_dir
  headers=$(awk '$1 == "edgefirst-tflite-sys" {print $2}' <<<"$pkgs")
  tflitec_dir=$(awk '$1 == "tflitec" {print $2}' <<<"$pkgs")
  [ -d "$headers/tensorflow" ] && [ -d "$tflitec_dir" ] \
    || { echo "tflite-c: cargo could not fetch edgefirst-tflite-sys 0.10.3 / tflitec 0.7.0"; return 1; }
  cp -r "$headers/tensorflow" "$out/include/"
  cp -r tflite-c/include-common/. "tflite-c/include-$version/." "$out/include/"
  chmod -R u+w "$out/include"

  # Library.
  local tmp
  tmp=$(mktemp -d)
  case "$target" in
    x86_64-unknown-linux-gnu)
      unzip -q -o "$tflitec_dir/build-res/docsrs_res.zip" libtensorflowlite_c.so -d "$tmp" ;;
    aarch64-unknown-linux-gnu)
      local wheel=ai_edge_litert-1.4.0-cp311-cp311-manylinux_2_17_aarch64.whl
      local wheel_sha=131d1c12dedc0c45aa683106d71ea895117c2332b0efb52712965f8b5e63781d
      python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_17_aarch64 \
        --python-version 3.11 --implementation cp ai-edge-litert==1.4.0 -d "$tmp" \
        || { echo "tflite-c: pip could not download ai-edge-litert==1.4.0 (aarch64 wheel) from PyPI"; rm -rf "$tmp"; return 1; }
      echo "$wheel_sha  $tmp/$wheel" | sha256sum -c --status \
        || { echo "tflite-c: $wheel does not have the pinned sha256 $wheel_sha"; rm -rf "$tmp"; return 1; }
      unzip -q -o -j "$tmp/$wheel" "ai_edge_litert/$lib" -d "$tmp" ;;
  esac
  if ! echo "$want_sha  $tmp/$lib" | sha256sum -c --status; then
    echo "tflite-c: $lib for $target does not have the pinned sha256 $want_sha"; rm -rf "$tmp"; return 1
  fi
  mv "$tmp/$lib" "$out/lib/$lib"
  rm -rf "$tmp"
  touch "$out/include/.complete"
)

# Run as a script (not sourced): prepare the target named, or the host.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  tflite_c_prepare "$@"
fi

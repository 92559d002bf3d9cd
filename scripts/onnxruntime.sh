#!/usr/bin/env bash
# The ONNX Runtime library for the `ort` engine, from PyPI's onnxruntime wheel (the only place it
# can come from here): downloads the pinned wheel for the target, checks its sha256, and extracts
# libonnxruntime.so to target/onnxruntime/<arch>/libonnxruntime.so. Prints that path.
#   scripts/onnxruntime.sh [x86_64|aarch64]      (default: this machine's)
# The daemon finds the library through model.onnxruntime_library, $ORT_DYLIB_PATH, or next to
# its executable (copy it there when installing).
set -euo pipefail
cd "$(dirname "$0")/.."
version=1.32.0
arch=${1:-$(uname -m)}
case "$arch" in
  x86_64) sha=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d ;;
  aarch64) sha=2303372a85299b6757b0e11e1cbf13e410ddf7e10c37f4b37e99d1c90e7daf7c ;;
  *) echo "onnxruntime.sh: PyPI's onnxruntime wheel has no $arch build (x86_64 and aarch64 only)" >&2; exit 2 ;;
esac
wheel=onnxruntime-$version-cp311-cp311-manylinux_2_28_$arch.whl
dir=target/onnxruntime/$arch
lib=$dir/libonnxruntime.so
if [ -f "$lib" ]; then echo "$lib"; exit 0; fi
mkdir -p "$dir"
if [ ! -f "$dir/$wheel" ]; then
  python3 -m pip download -q onnxruntime==$version --no-deps --only-binary=:all: \
    --platform manylinux_2_28_$arch --python-version 3.11 -d "$dir" >&2
fi
echo "$sha  $dir/$wheel" | sha256sum -c --quiet - >&2 || { echo "onnxruntime.sh: $wheel does not match its pinned sha256" >&2; exit 1; }
python3 - "$dir/$wheel" "$lib" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2] + ".part", "wb") as out:
    out.write(z.read("onnxruntime/capi/libonnxruntime.so.1.32.0"))
PY
mv "$lib.part" "$lib"
rm -f "$dir/$wheel"
echo "$lib"

#!/usr/bin/env bash
# The test command: installs what is missing, then runs every test — unit, end-to-end against a
# real mosquitto on generated images, supervision and bounds — and the tests that measure the
# model on HAM10000 (golden, accuracy; with features, the engines' agreement) when the data set
# is at ../shared/data/ham10000 or $LESIOND_DATA. Without it those are not run, and named, here
# and in the last line; LESIOND_REQUIRE_DATA=1 (set by .ci/run) makes a missing data set an error.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
lesiond_deps

data="${LESIOND_DATA:-../shared/data/ham10000}"
# tests/<name>.rs that need the data set: they measure the model, or replay a video made from it.
data_tests=(golden accuracy engines_agree ort_engine examination viewer abstain)

if [ -f "$data/HAM10000_metadata.csv" ]; then
  # tests/examination.rs replays a generated examination video, tests/abstain.rs classifies
  # generated scenes (painted-out skin, everyday photos, synthetic): the generator (training/,
  # numpy + Pillow) runs in its own small venv; its everyday photos come from PyPI wheels.
  if [ ! -x target/videos-venv/bin/python ] || ! target/videos-venv/bin/python -c 'import numpy, PIL' 2>/dev/null; then
    python3 -m venv target/videos-venv
    target/videos-venv/bin/pip install -q --disable-pip-version-check -r training/requirements-videos.txt
  fi
  # tests/viewer.rs opens the station screen on that video in headless chromium.
  lesiond_browser_deps
  cargo test --locked "$@"
  echo "lesiond: every test ran, with the data set at $data"
  exit 0
fi
if [ -n "${LESIOND_REQUIRE_DATA:-}" ]; then
  echo "lesiond: LESIOND_REQUIRE_DATA is set but there is no HAM10000 data set at $data (set LESIOND_DATA to its folder)"
  exit 1
fi
skipped=$(printf 'tests/%s.rs ' "${data_tests[@]}")
note="lesiond: NOT RUN, they need the HAM10000 data set, not found at $data (set LESIOND_DATA to its folder): ${skipped% }"
echo "$note"
targets=(--lib --bins)
for f in tests/*.rs; do
  name=$(basename "$f" .rs)
  [[ " ${data_tests[*]} " == *" $name "* ]] || targets+=(--test "$name")
done
cargo test --locked "${targets[@]}" "$@"
echo "lesiond: the other tests passed. $note"

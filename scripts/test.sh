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
# The integration tests are one binary (tests/it/main.rs); those that need the data set (they
# measure the model, or replay a video made from it) are its modules under tests/it/ham10000/,
# named ham10000::<module>::<test>.
data_tests=(tests/it/ham10000/*.rs)

if [ -f "$data/HAM10000_metadata.csv" ]; then
  # ham10000::examination replays a generated examination video, ham10000::abstain classifies
  # generated scenes (painted-out skin, everyday photos, synthetic): the generator (training/,
  # numpy + Pillow) runs in its own small venv; its everyday photos come from PyPI wheels.
  if [ ! -x target/videos-venv/bin/python ] || ! target/videos-venv/bin/python -c 'import numpy, PIL' 2>/dev/null; then
    python3 -m venv target/videos-venv
    target/videos-venv/bin/pip install -q --disable-pip-version-check -r training/requirements-videos.txt
  fi
  # ham10000::viewer opens the station screen on that video in headless chromium.
  lesiond_browser_deps
  cargo test --locked "$@"
  echo "lesiond: every test ran, with the data set at $data"
  exit 0
fi
if [ -n "${LESIOND_REQUIRE_DATA:-}" ]; then
  echo "lesiond: LESIOND_REQUIRE_DATA is set but there is no HAM10000 data set at $data (set LESIOND_DATA to its folder)"
  exit 1
fi
note="lesiond: NOT RUN, they need the HAM10000 data set, not found at $data (set LESIOND_DATA to its folder): ${data_tests[*]}"
echo "$note"
# The caller's arguments before `--` go to cargo, those after it to the test binaries; the skip
# goes with the latter. No test of the library or the binary has ham10000:: in its name.
cargo_args=() harness_args=()
for ((i = 1; i <= $#; i++)); do
  if [ "${!i}" = -- ]; then harness_args=("${@:i+1}"); break; fi
  cargo_args+=("${!i}")
done
cargo test --locked --lib --bins --test it "${cargo_args[@]}" -- --skip ham10000:: "${harness_args[@]}"
echo "lesiond: the other tests passed. $note"

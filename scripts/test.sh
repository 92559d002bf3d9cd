#!/usr/bin/env bash
# The test command: installs what is missing, then runs every test (unit, golden, end-to-end
# against a real mosquitto and real HAM10000 images from ../shared/data/ham10000 or
# $LESIOND_DATA). Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
lesiond_deps
cargo test --locked "$@"

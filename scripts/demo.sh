#!/usr/bin/env bash
# The demo: runs the daemon on its embedded default configuration (synthetic frames, the model
# in models/, MQTT on localhost:1883). Starts a loopback mosquitto if nothing listens on 1883,
# and prints what a subscriber receives. Ctrl-C stops it (the daemon publishes `offline` first).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
lesiond_deps
cargo build --release --locked
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
  PATH="$PATH:/usr/sbin" mosquitto -p 1883 >/dev/null 2>&1 &
  pids+=($!)
  sleep 0.5
fi
mosquitto_sub -h 127.0.0.1 -p 1883 -t 'lesiond/#' -v &
pids+=($!)
./target/release/lesiond run

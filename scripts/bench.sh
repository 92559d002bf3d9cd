#!/usr/bin/env bash
# The benchmark (one command): lesiond against the bare interpreter and against the usual Python
# loop (bench/peer.py), same model, same images, same loopback mosquitto, for 1 and 2 threads.
# Each variant runs twice: as fast as it goes (throughput, CPU, memory) and paced at 30 frames/s
# like a camera (latency). Prints the tables that docs/benchmarks.md records. Not a test: nothing
# is asserted.
#   scripts/bench.sh [frames]     data: $LESIOND_DATA or ../shared/data/ham10000
set -euo pipefail
cd "$(dirname "$0")/.."
frames=${1:-300}
images=${LESIOND_DATA:-../shared/data/ham10000}/images
source scripts/deps.sh
lesiond_deps
cargo build --release --locked --features xnnpack,ort -q
ort_lib=$(bash scripts/onnxruntime.sh)
if [ ! -x .venv-bench/bin/python ]; then
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install -q -r bench/requirements.txt
fi
port=18893   # as in bench/mosquitto.conf
PATH="$PATH:/usr/sbin" mosquitto -c bench/mosquitto.conf >/dev/null 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true' EXIT
sleep 0.5
out=$(mktemp)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for t in 1 2; do
  ./target/release/lesiond bench --json --frames "$frames" --threads "$t" --images "$images" --mqtt-port "$port" \
    | sed 's/^/lesiond-int8\t/' | tee -a "$out"
  ./target/release/lesiond bench --json --frames "$frames" --threads "$t" --images "$images" --mqtt-port "$port" \
    --model models/lesion_mnv2_float.tflite --calibration models/calibration.json --xnnpack true \
    | sed 's/^/lesiond-float-xnnpack\t/' | tee -a "$out"
  ORT_DYLIB_PATH=$ort_lib ./target/release/lesiond bench --json --frames "$frames" --threads "$t" --images "$images" --mqtt-port "$port" \
    --engine ort --model models/lesion_mnv2_int8_qdq.onnx --calibration models/calibration.json \
    | sed 's/^/lesiond-ort-int8\t/' | tee -a "$out"
  .venv-bench/bin/python bench/peer.py --frames "$frames" --threads "$t" --images "$images" --mqtt-port "$port" \
    | sed 's/^/peer-litert-int8\t/' | tee -a "$out"
done
echo
.venv-bench/bin/python bench/compare.py < "$out"

#!/usr/bin/env bash
# Soak benchmark (not a test): streams N frames (default 10,000 distinct HAM10000 images) through
# the release daemon at full speed into a loopback mosquitto, sampling the daemon's RSS and open
# file descriptors every second. Prints the samples and a summary; figures go in docs/soak.md.
#   scripts/soak.sh [N]        data: $LESIOND_DATA or ../shared/data/ham10000
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
data=${LESIOND_DATA:-../shared/data/ham10000}
source scripts/deps.sh
lesiond_deps
cargo build --release --locked -q
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir "$work/frames"
i=0
for f in $(ls "$data/images" | sort); do
  [ "$i" -ge "$n" ] && break
  ln -s "$(realpath "$data/images/$f")" "$work/frames/$f"
  i=$((i + 1))
done
[ "$i" -eq "$n" ] || { echo "only $i images in $data/images"; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18884)
PATH="$PATH:/usr/sbin" mosquitto -p "$port" >/dev/null 2>&1 &
sleep 0.5
mosquitto_sub -p "$port" -t 'lesiond/soak/classification' -q 1 -C "$n" > "$work/received" &
mosquitto_sub -p "$port" -t 'lesiond/soak/stats' -q 1 > "$work/stats" &
LESIOND_STATION__ID=soak LESIOND_MQTT__PORT="$port" LESIOND_MQTT__STATS_INTERVAL_SECS=10 \
LESIOND_SOURCE__KIND=directory LESIOND_SOURCE__DIRECTORY__PATH="$work/frames" \
LESIOND_SOURCE__DIRECTORY__FPS=0 LESIOND_SOURCE__DIRECTORY__EXIT_WHEN_DONE=true \
LESIOND_SPOOL__DIR="$work/spool" LESIOND_LOG__LEVEL=warn LESIOND_VIEWER__LISTEN=127.0.0.1:0 \
  ./target/release/lesiond run > "$work/daemon.log" 2>&1 &
pid=$!
start=$(date +%s)
echo "# t_s rss_kib fds spool_files"
samples="$work/samples"
while kill -0 "$pid" 2>/dev/null; do
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)
  spool=$(ls "$work/spool" 2>/dev/null | wc -l)
  [ -n "$rss" ] && [ "$rss" != 0 ] && echo "$(( $(date +%s) - start )) $rss $fds $spool" | tee -a "$samples"
  sleep 1
done
wait "$pid" && status=0 || status=$?
elapsed=$(( $(date +%s) - start ))
sleep 1
echo
echo "received by a subscriber: $(wc -l < "$work/received") of $n"
echo "exit status $status, $n frames in ${elapsed}s ($(awk -v n="$n" -v t="$elapsed" 'BEGIN {printf "%.1f", n/t}') frames/s)"
awk 'NR > 5 { if (min == "" || $2 < min) min = $2; if ($2 > max) max = $2; if (fmin == "" || $3 < fmin) fmin = $3; if ($3 > fmax) fmax = $3; last = $2; n++ }
     NR == 6 { first = $2 }
     END { printf "after warm-up (%d samples): RSS first %d KiB, min %d, max %d, last %d; open fds min %d, max %d\n", n, first, min, max, last, fmin, fmax }' "$samples"
echo "last stats message: $(tail -1 "$work/stats")"
grep -E "WARN|ERROR" "$work/daemon.log" | head -5 || true

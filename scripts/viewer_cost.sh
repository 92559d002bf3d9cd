#!/usr/bin/env bash
# What the station screen costs the frame path (docs/viewer.md): the daemon replays the first
# FRAMES frames of the examination video at 15 fps (examination mode auto, like a camera) into a
# loopback mosquitto, three ways: viewer off; viewer on, no page open; viewer on with PAGES
# pages open (SSE clients reading every event). Prints, per run, the daemon's CPU time per frame
# (user + system, /usr/bin/time), its peak RSS, frames dropped, assessments, and the per-stage
# latency percentiles of its last `stats` message.
# Usage: scripts/viewer_cost.sh [BINARY]  (default target/debug/lesiond; env FRAMES, PAGES, RUNS,
# LESIOND_EXAM_VIDEO)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/debug/lesiond}"
frames="${FRAMES:-600}"
pages="${PAGES:-3}"
runs="${RUNS:-2}"
video="${LESIOND_EXAM_VIDEO:-target/exam-video/seed-1}"
[ -f "$video/manifest.json" ] || { echo "no video at $video: run tests/it/ham10000/viewer.rs or scripts/demo.sh once (or set LESIOND_EXAM_VIDEO)"; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
mkdir "$work/frames"
python3 - "$video/frames" "$work/frames" "$frames" <<'PY'
import os, sys
src, dst, n = os.path.realpath(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for f in sorted(os.listdir(src))[:n]:
    os.symlink(os.path.join(src, f), os.path.join(dst, f))
PY
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
view=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PATH="$PATH:/usr/sbin" mosquitto -p "$port" >/dev/null 2>&1 &
pids+=($!)
sleep 0.5

one_run() { # name viewer_enabled pages
  local name=$1 enabled=$2 open=$3 spool="$work/spool-$1-$RANDOM"
  local stats="$work/stats-$name.json"
  mosquitto_sub -h 127.0.0.1 -p "$port" -t "lesiond/cost/stats" > "$stats" &
  local sub=$!
  LESIOND_STATION__ID=cost LESIOND_SOURCE__KIND=directory LESIOND_SOURCE__DIRECTORY__PATH="$work/frames" \
  LESIOND_SOURCE__DIRECTORY__FPS=15 LESIOND_SOURCE__DIRECTORY__EXIT_WHEN_DONE=true LESIOND_MQTT__PORT="$port" \
  LESIOND_MQTT__STATS_INTERVAL_SECS=1 LESIOND_SPOOL__DIR="$spool" LESIOND_LOG__LEVEL=warn \
  LESIOND_VIEWER__ENABLED="$enabled" LESIOND_VIEWER__LISTEN="127.0.0.1:$view" \
    /usr/bin/time -f "%U %S %M" -o "$work/time-$name" "$bin" run >/dev/null 2>&1 &
  local daemon=$!
  local readers=()
  if [ "$open" -gt 0 ]; then
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$view") 2>/dev/null && break; sleep 0.1; done
    for i in $(seq "$open"); do curl -sN "http://127.0.0.1:$view/events" > "$work/events-$name-$i" & readers+=($!); done
  fi
  wait "$daemon"
  sleep 1.5
  kill "$sub" "${readers[@]}" 2>/dev/null || true
  python3 - "$name" "$work/time-$name" "$stats" "$frames" "$work" "$open" <<'PY'
import glob, json, sys
name, timefile, statsfile, frames, work, pages = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
user, system, rss = open(timefile).read().split()[-3:]
last = [json.loads(l) for l in open(statsfile) if l.strip()][-1]
lat = last["latency_ms"]
events = sum(open(f, errors="replace").read().count("\nevent: ") + 0 for f in glob.glob(f"{work}/events-{name}-*"))
pct = lambda k: f'{lat[k]["p50"]:.2f}/{lat[k]["p95"]:.2f}' if lat.get(k) else "-"
print(f'{name:<18} cpu/frame {1000 * (float(user) + float(system)) / frames:6.2f} ms  peak RSS {int(rss) // 1024:4d} MB  '
      f'dropped {last["frames_dropped"]}  assessments {last["assessments"]}  events read {events:5d}  '
      f'p50/p95 ms: decode {pct("decode")} preprocess {pct("preprocess")} inference {pct("inference")} total {pct("total")}')
PY
}

echo "lesiond viewer cost: $bin, first $frames frames of $video at 15 fps, $runs runs each"
for r in $(seq "$runs"); do
  one_run "off-$r" false 0
  one_run "on-closed-$r" true 0
  one_run "on-${pages}pages-$r" true "$pages"
done

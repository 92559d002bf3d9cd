#!/usr/bin/env bash
# Attacks 2 and 3 of issue 25 (docs/security.md, "Broker user"), on loopback only: a retained
# message on a command topic, as any broker user with write access to cmd/ could leave it.
#
#   scripts/attacks/mqtt_retained.sh [LESIOND_BINARY] [SECONDS] [v311|v5]
#
# Starts its own mosquitto on a free loopback port, leaves a retained 20 KiB message on
# cmd/status and a retained cmd/pause, runs lesiond (synthetic frames, 10 fps) for SECONDS
# (default 60) and prints: reconnects, online/offline flips, classifications delivered and
# duplicates (a paused station delivers few distinct ones). Bounded in time; loopback only.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${1:-target/debug/lesiond}"
secs="${2:-60}"
protocol="${3:-v311}"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" >"$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
sleep 0.5
head -c 20480 /dev/zero | tr '\0' x >"$work/big"
mosquitto_pub -p "$port" -q 1 -r -t lesiond/attack/cmd/status -f "$work/big"
mosquitto_pub -p "$port" -q 1 -r -t lesiond/attack/cmd/pause -m '{}'
mosquitto_sub -p "$port" -q 1 -v -t lesiond/attack/status -t lesiond/attack/classification -F '%t %p' >"$work/sub.txt" 2>/dev/null &
cat >"$work/c.toml" <<EOF
[station]
id = "attack"
[source]
kind = "synthetic"
[source.synthetic]
fps = 10.0
width = 320
height = 240
[model]
path = "models/lesion_mnv2_int8.tflite"
labels = "models/labels.json"
calibration = "models/calibration.json"
operating_point = "models/operating_point.json"
ood = "models/ood.json"
threads = 1
[mqtt]
host = "127.0.0.1"
port = $port
protocol = "$protocol"
keep_alive_secs = 5
[spool]
dir = "$work/spool"
fsync = false
[log]
format = "text"
level = "info"
[viewer]
enabled = false
EOF
NO_COLOR=1 "$bin" run --config "$work/c.toml" >"$work/lesiond.log" 2>&1 &
pid=$!
sleep "$secs"
kill -TERM "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
sleep 0.5
classified=$(grep -c '^lesiond/attack/classification ' "$work/sub.txt" || true)
distinct=$( (grep '^lesiond/attack/classification ' "$work/sub.txt" || true) | grep -o '"result_id":"[^"]*"' | sort -u | wc -l)
[ "$classified" -gt 0 ] || tail -5 "$work/lesiond.log"
echo "protocol:                  $protocol, $secs s, $bin"
echo "reconnects (log):          $(grep -c 'lost the MQTT broker' "$work/lesiond.log" || true)"
echo "online/offline flips:      $(grep -c '^lesiond/attack/status offline' "$work/sub.txt" || true) offline, $(grep -c '^lesiond/attack/status online' "$work/sub.txt" || true) online"
echo "classifications delivered: $classified ($distinct distinct, $((classified - distinct)) duplicates)"

#!/usr/bin/env bash
# Issue 25, attack 1, measured: the daemon replays a folder losslessly (fps = 0) into a loopback
# mosquitto with 1024 file descriptors (systemd's default soft limit), its screen on loopback
# behind a password, while halfopen.py holds COUNT half-open connections to the screen for HOLD
# seconds. Prints the results the broker got, the daemon's RSS before, during and after, how
# long the page took during the attack, and the daemon's own summary.
#
#   scripts/attacks/viewer_halfopen.sh [LESIOND_BINARY]
#   FRAMES=300 COUNT=1100 HOLD=30 NOFILE=1024 scripts/attacks/viewer_halfopen.sh target/debug/lesiond
#
# Needs mosquitto, mosquitto_sub, curl, python3 and images: IMAGES (a folder of JPEGs), by
# default the data set's (../shared/data/ham10000/images). Everything stays on 127.0.0.1.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=$(realpath "${1:-$repo/target/debug/lesiond}")
frames=${FRAMES:-300}
count=${COUNT:-1100}
hold=${HOLD:-30}
nofile=${NOFILE:-1024}
images=${IMAGES:-$repo/../shared/data/ham10000/images}

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo gone; }

mkdir -p "$work/frames"
# (|| true: head closing the pipe early is not a failure)
{ find "$images" -maxdepth 1 -name '*.jpg' | sort | head -n "$frames" > "$work/frames.txt"; } || true
while read -r f; do ln -s "$f" "$work/frames/"; done < "$work/frames.txt"
echo "frames: $(ls "$work/frames" | wc -l) from $images"

broker_port=$(free_port)
viewer_port=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$broker_port" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
pids+=($!)
sleep 0.5
mosquitto_sub -h 127.0.0.1 -p "$broker_port" -q 1 -t 'lesiond/attack/classification' > "$work/results.txt" 2>/dev/null &
sub=$!
pids+=($sub)

password=attack-test-password-1
echo "$password" > "$work/viewer-token"
chmod 600 "$work/viewer-token"
cat > "$work/lesiond.toml" <<EOF
[station]
id = "attack"

[source]
kind = "directory"

[source.directory]
path = "$work/frames"
fps = 0.0
exit_when_done = false

[model]
path = "models/lesion_mnv2_int8.tflite"
labels = "models/labels.json"
calibration = "models/calibration.json"
operating_point = "models/operating_point.json"
ood = "models/ood.json"
threads = 1

[mqtt]
host = "127.0.0.1"
port = $broker_port
ready_timeout_secs = 2

[spool]
dir = "$work/spool"

[viewer]
listen = "127.0.0.1:$viewer_port"
token_file = "$work/viewer-token"
EOF

cd "$repo"
(ulimit -n "$nofile"; exec "$bin" run --config "$work/lesiond.toml") > "$work/lesiond.log" 2>&1 &
daemon=$!
pids+=($daemon)
for _ in $(seq 1 100); do
    grep -q "station screen on" "$work/lesiond.log" && break
    sleep 0.1
done
echo "daemon $daemon up; RSS before: $(rss_kb "$daemon") kB; descriptors: $(ls /proc/$daemon/fd | wc -l) of $nofile"

(ulimit -n 16384; exec python3 "$repo/scripts/attacks/halfopen.py" 127.0.0.1 "$viewer_port" --count "$count" --hold "$hold") > "$work/attack.log" 2>&1 &
attack=$!
pids+=($attack)
sleep 3
echo "during: RSS $(rss_kb "$daemon") kB; descriptors: $(ls /proc/$daemon/fd 2>/dev/null | wc -l)"
page=$(curl -s -o /dev/null -m 10 -w '%{http_code} in %{time_total} s' -u "x:$password" "http://127.0.0.1:$viewer_port/" || true)
echo "page during the attack: $page"
wait "$attack" || true
sed -n '1p;$p' "$work/attack.log"
sleep 5
echo "after: RSS $(rss_kb "$daemon") kB; descriptors: $(ls /proc/$daemon/fd 2>/dev/null | wc -l)"
page=$(curl -s -o /dev/null -m 10 -w '%{http_code} in %{time_total} s' -u "x:$password" "http://127.0.0.1:$viewer_port/" || true)
echo "page after the attack: $page"
# Let the replay finish and the broker acknowledge, then stop the daemon.
for _ in $(seq 1 120); do
    [ "$(sort -u "$work/results.txt" | wc -l)" -ge "$frames" ] && break
    sleep 0.5
done
kill -TERM "$daemon" 2>/dev/null || true
status=0
wait "$daemon" || status=$?
sleep 1
kill "$sub" 2>/dev/null || true
echo "daemon exit status: $status"
echo "results delivered to the broker: $(wc -l < "$work/results.txt") ($(sort -u "$work/results.txt" | wc -l) distinct) of $frames frames"
echo "left in the spool: $(find "$work/spool" -name '*.json' 2>/dev/null | wc -l)"
grep -o 'stopped: .*' "$work/lesiond.log" | tail -1
echo "log lines mentioning descriptors, spool, refused or evicted connections: $(grep -ciE 'too many open files|spool|refused|make room' "$work/lesiond.log" || true)"
grep -iE 'too many open files|refused|cannot accept|make room' "$work/lesiond.log" | cut -c1-220 | sort | uniq -c | sort -rn | head -5

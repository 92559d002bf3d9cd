#!/usr/bin/env bash
# The demo: runs the daemon on its embedded default configuration (the model in models/, MQTT on
# localhost:1883, the station screen on http://127.0.0.1:8080). Starts a loopback mosquitto if
# nothing listens on 1883, and prints what a subscriber receives. Ctrl-C stops it (the daemon
# publishes `offline` first).
#
# With the HAM10000 data set (../shared/data/ham10000 or $LESIOND_DATA) it replays a generated
# examination video at camera pace, in a loop, so the screen shows whole examinations: hold
# steady, assessing, assessed. Without it the frames are synthetic (one classification each,
# no examinations).
#
# With Debian's `orthanc` installed (an imaging archive; scripts/deps.sh installs it), the demo
# also starts a local Orthanc, sets an examination context (a demo patient, body site and
# lesion: the `context` command) and lets the station file every assessment there as a DICOM
# image and report (docs/integration.md): see them at http://127.0.0.1:8042/app/explorer.html.
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

data="${LESIOND_DATA:-../shared/data/ham10000}"
video=target/exam-video/seed-1
if [ -f "$data/HAM10000_metadata.csv" ]; then
  # The same video tests/it/ham10000/examination.rs replays (training/, numpy + Pillow in their
  # own venv).
  if [ ! -f "$video/manifest.json" ]; then
    if [ ! -x target/videos-venv/bin/python ] || ! target/videos-venv/bin/python -c 'import numpy, PIL' 2>/dev/null; then
      python3 -m venv target/videos-venv
      target/videos-venv/bin/pip install -q --disable-pip-version-check -r training/requirements-videos.txt
    fi
    echo "lesiond demo: generating an examination video from $data into $video (a few minutes, once)"
    data_abs=$(realpath "$data")
    (cd training && ../target/videos-venv/bin/python -m lesion_training videos --visits 24 --seed 1 \
      --out "../$video" --data "$data_abs")
  fi
  export LESIOND_SOURCE__KIND=directory LESIOND_SOURCE__DIRECTORY__PATH="$PWD/$video/frames" \
    LESIOND_SOURCE__DIRECTORY__FPS=15 LESIOND_SOURCE__DIRECTORY__LOOP=true
  echo "lesiond demo: replaying $video at 15 fps (24 lesion visits, looped)"
else
  echo "lesiond demo: no HAM10000 data set at $data: synthetic frames, no examinations (set LESIOND_DATA for the video)"
fi
echo "lesiond demo: the station screen is at http://${LESIOND_VIEWER__LISTEN:-127.0.0.1:8080}/"

orthanc=$(PATH="$PATH:/usr/sbin" command -v Orthanc || true)
if [ -n "$orthanc" ] && ! (exec 3<>/dev/tcp/127.0.0.1/4242) 2>/dev/null; then
  # A throwaway archive under target/: its seven keys, nothing else.
  archive=target/demo-orthanc
  mkdir -p "$archive/storage" "$archive/index"
  cat > "$archive/orthanc.json" <<JSON
{ "Name": "lesiond-demo", "DicomAet": "ORTHANC", "DicomPort": 4242, "HttpPort": 8042,
  "StorageDirectory": "$PWD/$archive/storage", "IndexDirectory": "$PWD/$archive/index",
  "AuthenticationEnabled": false, "UnknownSopClassAccepted": true, "RemoteAccessAllowed": false }
JSON
  "$orthanc" "$archive/orthanc.json" >"$archive/orthanc.log" 2>&1 &
  pids+=($!)
  export LESIOND_DICOM__ENABLED=true LESIOND_DICOM__HOST=127.0.0.1 LESIOND_DICOM__PORT=4242 \
    LESIOND_DICOM__PEER_AE_TITLE=ORTHANC
  # The clinic's software would set this when the patient is called in; here a demo patient,
  # once the daemon is up (commands are not retained, so it must be listening).
  (sleep 4; mosquitto_pub -h 127.0.0.1 -p 1883 -q 1 -t lesiond/demo/cmd/context -m \
    '{"request_id":"demo","patient_id":"DEMO-0001","patient_name":"Demo^Patient","body_site":"left forearm","body_site_snomed":"14975008","lesion_id":"L1"}') &
  pids+=($!)
  echo "lesiond demo: filing assessments in a local Orthanc: http://127.0.0.1:8042/app/explorer.html"
fi

mosquitto_sub -h 127.0.0.1 -p 1883 -t 'lesiond/#' -v &
pids+=($!)
./target/release/lesiond run

#!/usr/bin/env bash
# ARM proof, run by .ci/run: cross-builds lesiond for aarch64 and armv7 (tract engine, camera
# support), runs each binary under qemu-user with the Debian cross sysroot, and packages both.
#   1. `lesiond classify` on real HAM10000 images under qemu: the top classes must equal the
#      x86_64 build's (same engine, same ONNX model), probabilities within 1e-4.
#   2. `lesiond run` under qemu replays images into a mosquitto on the host; a subscriber must
#      receive one classification per image.
#   3. cargo-deb builds a .deb per target; its control data and contents are checked.
# Every qemu run is under `timeout`. Usage: scripts/arm-ci.sh [aarch64] [armv7] (default both).
# Data: $LESIOND_DATA or ../shared/data/ham10000. Outputs are kept in target/arm-ci/.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64 armv7)
data=${LESIOND_DATA:-../shared/data/ham10000}
n_classify=12
n_smoke=6
cargo_deb_version=3.8.0
out=target/arm-ci
mkdir -p "$out"
t0=$(date +%s)
step() { echo "== $(( $(date +%s) - t0 ))s: $*"; }

source scripts/deps.sh
lesiond_deps
command -v python3 >/dev/null || { echo "arm-ci: python3 is needed to compare JSON"; exit 1; }

# The same images everywhere: spread over the data set by name.
mapfile -t all < <(ls "$data/images" | grep '\.jpg$' | sort)
[ ${#all[@]} -ge 100 ] || { echo "arm-ci: HAM10000 images not found in $data/images (set LESIOND_DATA)"; exit 1; }
images=()
stride=$(( ${#all[@]} / n_classify ))
for ((i = 0; i < n_classify; i++)); do images+=("$data/images/${all[$((i * stride))]}"); done
classify_args=(classify --json --engine tract --model models/lesion_mnv2_float.onnx --calibration models/calibration.json)

step "x86_64 reference (tract engine, debug build)"
cargo build --locked --features tract -q
./target/debug/lesiond "${classify_args[@]}" "${images[@]}" > "$out/x86_64.jsonl"
./target/debug/lesiond classify --json "${images[@]}" > "$out/x86_64-tflite-int8.jsonl"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PATH="$PATH:/usr/sbin" mosquitto -p "$port" > "$out/mosquitto.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true' EXIT

for arch in "${targets[@]}"; do
  case "$arch" in
    # The Pi's own cores: qemu's default `max` CPU has 512-bit SVE2, which tract uses and
    # qemu emulates 40x slower than NEON.
    aarch64) target=aarch64-unknown-linux-gnu; gnu=aarch64-linux-gnu; qemu=(qemu-aarch64 -cpu cortex-a72) ;;
    armv7) target=armv7-unknown-linux-gnueabihf; gnu=arm-linux-gnueabihf; qemu=(qemu-arm -cpu cortex-a7) ;;
    *) echo "arm-ci: unknown target $arch"; exit 2 ;;
  esac
  bin=target/$target/release/lesiond
  run_qemu() { timeout "$1" "${qemu[@]}" -L "/usr/$gnu" "$bin" "${@:2}"; }

  step "$arch: build (scripts/build-arm.sh $arch)"
  bash scripts/build-arm.sh "$arch"
  file "$bin" 2>/dev/null || true
  # The newest glibc symbol version the binary needs (Raspberry Pi OS bookworm has 2.36).
  "$gnu-objdump" -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1 | sed "s/^/$arch needs /"

  step "$arch: classify ${#images[@]} images under ${qemu[*]}"
  run_qemu 600 "${classify_args[@]}" "${images[@]}" > "$out/$arch.jsonl"
  python3 - "$out/x86_64.jsonl" "$out/$arch.jsonl" "$out/x86_64-tflite-int8.jsonl" "$arch" <<'PY'
import json, sys
ref, got, int8 = ([json.loads(l) for l in open(p)] for p in sys.argv[1:4])
arch = sys.argv[4]
assert len(ref) == len(got) == len(int8), (len(ref), len(got), len(int8))
worst, bad = 0.0, 0
print(f"{'image':<18} {'x86_64 tract':<14} {arch + ' qemu tract':<20} {'x86_64 tflite-int8':<18}")
for r, g, q in zip(ref, got, int8):
    assert "error" not in g, g
    top_r, top_g = r["top"][0], g["top"][0]
    worst = max(worst, max(abs(r["probabilities"][k] - g["probabilities"][k]) for k in r["probabilities"]))
    bad += top_r["code"] != top_g["code"]
    name = r["image"].rsplit("/", 1)[-1].removesuffix(".jpg")
    print(f"{name:<18} {top_r['code']} {top_r['probability']:.4f}   {top_g['code']} {top_g['probability']:.4f}         {q['top'][0]['code']} {q['top'][0]['probability']:.4f}")
print(f"{arch}: {len(got) - bad}/{len(got)} top classes equal to x86_64, max |dp| {worst:.2e}")
sys.exit(1 if bad or worst > 1e-4 else 0)
PY

  step "$arch: smoke run under ${qemu[*]}: $n_smoke images -> mosquitto on 127.0.0.1:$port"
  work=$(mktemp -d)
  mkdir "$work/frames"
  for f in "${images[@]:0:$n_smoke}"; do ln -s "$(realpath "$f")" "$work/frames/"; done
  station="arm-ci-$arch"
  timeout 600 mosquitto_sub -p "$port" -t "lesiond/$station/classification" -q 1 -C "$n_smoke" > "$work/received" &
  sub=$!
  sleep 0.5
  LESIOND_STATION__ID=$station LESIOND_MQTT__HOST=127.0.0.1 LESIOND_MQTT__PORT=$port \
  LESIOND_MODEL__ENGINE=tract LESIOND_MODEL__PATH=models/lesion_mnv2_float.onnx \
  LESIOND_SOURCE__KIND=directory LESIOND_SOURCE__DIRECTORY__PATH="$work/frames" \
  LESIOND_SOURCE__DIRECTORY__FPS=0 LESIOND_SOURCE__DIRECTORY__EXIT_WHEN_DONE=true \
  LESIOND_SPOOL__DIR="$work/spool" LESIOND_MQTT__STATS_INTERVAL_SECS=0 LESIOND_LOG__LEVEL=info \
    run_qemu 600 run --config config/lesiond.toml > "$out/$arch-run.log" 2>&1 \
    || { echo "arm-ci: $arch daemon failed:"; tail -20 "$out/$arch-run.log"; exit 1; }
  timeout 30 tail --pid="$sub" -f /dev/null || true
  kill "$sub" 2>/dev/null || true
  got=$(grep -c '"result_id"' "$work/received" || true)
  echo "$arch smoke: daemon exited 0; subscriber received $got of $n_smoke classifications"
  cp "$work/received" "$out/$arch-received.jsonl"
  rm -rf "$work"
  [ "$got" -eq "$n_smoke" ] || { tail -20 "$out/$arch-run.log"; exit 1; }

  step "$arch: package (cargo deb --target $target --no-build)"
  if [ "$(cargo deb --version 2>/dev/null | awk '{print $2}')" != "$cargo_deb_version" ]; then
    cargo install cargo-deb --version "$cargo_deb_version" --locked -q
  fi
  deb=$(cargo deb --target "$target" --no-build --output "$out/" 2>&1 | tail -1)
  [ -f "$deb" ] || { echo "arm-ci: cargo deb failed: $deb"; exit 1; }
  echo "$deb ($(du -h "$deb" | cut -f1))"
  dpkg-deb --info "$deb" | tee "$out/$arch-deb-info.txt"
  dpkg-deb --contents "$deb" | tee "$out/$arch-deb-contents.txt"
  want_arch=$(case $arch in aarch64) echo arm64 ;; armv7) echo armhf ;; esac)
  dpkg-deb --field "$deb" Architecture | grep -qx "$want_arch"
  for path in ./usr/bin/lesiond ./usr/share/lesiond/models/lesion_mnv2_float.onnx ./usr/share/lesiond/models/labels.json \
              ./etc/lesiond/lesiond.toml ./etc/default/lesiond ./usr/lib/sysusers.d/lesiond.sysusers.conf; do
    grep -q " $path\$" "$out/$arch-deb-contents.txt" || { echo "arm-ci: $deb lacks $path"; exit 1; }
  done
  grep -Eq " \./(usr/)?lib/systemd/system/lesiond\.service\$" "$out/$arch-deb-contents.txt" \
    || { echo "arm-ci: $deb lacks the systemd unit"; exit 1; }
  ctrl=$(mktemp -d)
  dpkg-deb --control "$deb" "$ctrl"
  grep -qx "/etc/lesiond/lesiond.toml" "$ctrl/conffiles"
  grep -q "systemd-sysusers.* lesiond.sysusers.conf" "$ctrl/postinst"
  # The user exists before the service is enabled and started.
  [ "$(grep -n 'adduser lesiond video' "$ctrl/postinst" | cut -d: -f1 | head -1)" -lt "$(grep -n 'deb-systemd-helper enable' "$ctrl/postinst" | cut -d: -f1 | head -1)" ]
  grep -q "adduser lesiond video" "$ctrl/postinst"
  grep -q "deb-systemd-helper enable lesiond.service\|systemctl.*enable.*lesiond.service" "$ctrl/postinst"
  dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/lib/sysusers.d/lesiond.sysusers.conf | grep -q "^m lesiond video"
  dpkg-deb --fsys-tarfile "$deb" | tar -xO ./etc/default/lesiond | grep -q "^LESIOND_MODEL__ENGINE=tract"
  rm -rf "$ctrl"
  echo "$arch package: ok (arch $want_arch, binary, model, config, unit, sysusers, user in video, service enabled)"
done
step "done"

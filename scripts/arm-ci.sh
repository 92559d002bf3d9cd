#!/usr/bin/env bash
# ARM proof, run by .ci/run: cross-builds lesiond for aarch64 (TF Lite 2.20 + XNNPACK, and tract)
# and armv7 (tract), runs each binary under qemu-user with the Debian cross sysroot, and
# packages both.
#   1. aarch64: the XNNPACK options struct we declare is proven large enough for the library
#      (tflite-c/xnnpack_options_guard.c), then `lesiond classify --engine tflite` with the int8
#      model on 60 test-split HAM10000 images under qemu (cortex-a72): XNNPACK must be applied,
#      the input bytes must equal x86_64's, and the top class must equal x86_64 TF Lite 2.20
#      with XNNPACK (PyPI ai-edge-litert 1.4.0, scripts/tflite_reference.py) on >= 98 % of them.
#      Also printed: agreement with lesiond's x86_64 TF Lite 2.6 (built-in int8 kernels, whose
#      arithmetic differs from XNNPACK's by a few quantization steps; alarm below 90 %), and the
#      largest probability differences.
#   2. `lesiond classify --engine tract` on real images under qemu: the top classes must equal
#      the x86_64 build's (same engine, same ONNX model), probabilities within 1e-4.
#   3. `lesiond run` under qemu (aarch64: TF Lite int8 + XNNPACK; armv7: tract) replays images
#      into a mosquitto on the host; a subscriber must receive one classification per image.
#   4. cargo-deb builds a .deb per target; its control data and contents are checked, and the
#      arm64 package's binary runs from the unpacked package, finding its TF Lite library
#      through its RUNPATH.
# Every qemu run is under `timeout`. Usage: scripts/arm-ci.sh [aarch64] [armv7] (default both).
# Data: $LESIOND_DATA or ../shared/data/ham10000. Outputs are kept in target/arm-ci/.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64 armv7)
data=${LESIOND_DATA:-../shared/data/ham10000}
n_classify=12
n_tflite=${LESIOND_ARM_TFLITE_IMAGES:-60}
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
# Test-split images (training/splits), evenly spread, for the TF Lite comparison.
mapfile -t test_ids < <(awk -F, '$4 == "test" {print $1}' training/splits/ham10000_split.csv | sort)
tflite_images=()
for ((i = 0; i < n_tflite; i++)); do tflite_images+=("$data/images/${test_ids[$((i * ${#test_ids[@]} / n_tflite))]}.jpg"); done
tflite_args=(classify --json --engine tflite --model models/lesion_mnv2_int8.tflite)

step "x86_64 reference (tract engine, debug build)"
cargo build --locked --features tract -q
./target/debug/lesiond "${classify_args[@]}" "${images[@]}" > "$out/x86_64.jsonl"
./target/debug/lesiond classify --json "${images[@]}" > "$out/x86_64-tflite-int8.jsonl"
./target/debug/lesiond "${tflite_args[@]}" "${tflite_images[@]}" > "$out/x86_64-tflite-test.jsonl"
if [[ " ${targets[*]} " == *" aarch64 "* ]]; then
  step "x86_64 reference: TF Lite 2.20 + XNNPACK (PyPI ai-edge-litert 1.4.0, scripts/tflite_reference.py)"
  if [ ! -x "$out/venv/bin/python" ] || ! "$out/venv/bin/python" -c 'import ai_edge_litert, numpy, PIL' 2>/dev/null; then
    python3 -m venv "$out/venv"
    "$out/venv/bin/pip" install -q --disable-pip-version-check -r scripts/tflite-reference-requirements.txt
  fi
  "$out/venv/bin/python" scripts/tflite_reference.py models/lesion_mnv2_int8.tflite "${tflite_images[@]}" \
    > "$out/x86_64-tflite220-xnnpack.jsonl"
fi

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

  if [ "$arch" = aarch64 ]; then
    step "aarch64: the declared XNNPACK options struct against the library (guard bytes, under qemu)"
    tinc=target/tflite-c/$target/include
    tlib=target/tflite-c/$target/lib
    "$gnu-gcc" -O1 -Wall -I "$tinc" tflite-c/xnnpack_options_guard.c -o "$out/xnnpack_options_guard" \
      -L "$tlib" -l:libLiteRtRuntimeCApi.so -Wl,-rpath,"$(realpath "$tlib")"
    timeout 120 "${qemu[@]}" -L "/usr/$gnu" "$out/xnnpack_options_guard"

    step "aarch64: TF Lite int8 + XNNPACK, ${#tflite_images[@]} test-split images under ${qemu[*]}"
    run_qemu 1800 "${tflite_args[@]}" "${tflite_images[@]}" > "$out/aarch64-tflite.jsonl" 2> "$out/aarch64-tflite.stderr" \
      || { cat "$out/aarch64-tflite.stderr"; exit 1; }
    grep '^lesiond: engine' "$out/aarch64-tflite.stderr"
    grep -q '^lesiond: engine tflite, TF Lite 2\.20.*XNNPACK applied' "$out/aarch64-tflite.stderr" \
      || { echo "arm-ci: the aarch64 TF Lite engine did not report XNNPACK applied"; cat "$out/aarch64-tflite.stderr"; exit 1; }
    python3 - "$out/x86_64-tflite220-xnnpack.jsonl" "$out/aarch64-tflite.jsonl" "$out/x86_64-tflite-test.jsonl" models/labels.json <<'PY'
import json, sys
ref, got, old = ([json.loads(l) for l in open(p)] for p in sys.argv[1:4])
codes = [c["code"] for c in sorted(json.load(open(sys.argv[4]))["classes"], key=lambda c: c["index"])]
assert len(ref) == len(got) == len(old) and ref, (len(ref), len(got), len(old))
def raw(r):
    v = r["raw_output"]
    return v["values"] if isinstance(v, dict) else v
def top(values):
    return codes[max(range(len(values)), key=values.__getitem__)]
same = same_old = 0
worst = worst_old = 0.0
steps = steps_old = 0
print(f"{'image':<14} {'x86_64 TF Lite 2.20+XNNPACK':<28} {'aarch64 TF Lite 2.20+XNNPACK':<30} {'x86_64 TF Lite 2.6 (built-in kernels)'}")
for r, g, o in zip(ref, got, old):
    assert "error" not in g, g
    assert r["input_sha256"] == g["input_sha256"] == o["input_sha256"], ("inputs differ", r["image"])
    pg = [g["probabilities"][c] for c in codes]
    po = [o["probabilities"][c] for c in codes]
    dp = max(abs(a - b) for a, b in zip(r["probabilities"], pg))
    dp_old = max(abs(a - b) for a, b in zip(po, pg))
    worst, worst_old = max(worst, dp), max(worst_old, dp_old)
    steps = max(steps, max(abs(a - b) for a, b in zip(raw(r), raw(g))))
    steps_old = max(steps_old, max(abs(a - b) for a, b in zip(raw(o), raw(g))))
    tr, tg, to = top(r["probabilities"]), top(pg), top(po)
    same += tr == tg
    same_old += to == tg
    name = r["image"].rsplit("/", 1)[-1].removesuffix(".jpg")
    mark = ("" if tr == tg else "  <- differs from 2.20 x86_64") + ("" if to == tg else "  <- differs from 2.6")
    print(f"{name:<14} {tr:<5} {max(r['probabilities']):.4f}               {tg:<5} {max(pg):.4f}                  {to:<5} {max(po):.4f}{mark}")
n = len(ref)
print(f"aarch64 TF Lite 2.20 int8 + XNNPACK vs x86_64 TF Lite 2.20 + XNNPACK (ai-edge-litert 1.4.0): "
      f"top class equal on {same}/{n} = {same / n:.1%} (need >= 98%); largest probability difference {worst:.1e}; "
      f"largest quantized-logit difference {steps} step(s)")
print(f"aarch64 TF Lite 2.20 int8 + XNNPACK vs x86_64 lesiond TF Lite 2.6 (built-in int8 kernels): "
      f"top class equal on {same_old}/{n} = {same_old / n:.1%} (alarm below 90%); largest probability difference "
      f"{worst_old:.4f}; largest quantized-logit difference {steps_old} step(s) (XNNPACK's int8 arithmetic, see docs/benchmarks.md)")
sys.exit(0 if same / n >= 0.98 and same_old / n >= 0.90 else 1)
PY
  fi

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
  # aarch64: the production config as shipped (TF Lite int8 + XNNPACK); armv7: tract.
  if [ "$arch" = armv7 ]; then
    export LESIOND_MODEL__ENGINE=tract LESIOND_MODEL__PATH=models/lesion_mnv2_float.onnx
  else
    unset LESIOND_MODEL__ENGINE LESIOND_MODEL__PATH
  fi
  LESIOND_STATION__ID=$station LESIOND_MQTT__HOST=127.0.0.1 LESIOND_MQTT__PORT=$port \
  LESIOND_SOURCE__KIND=directory LESIOND_SOURCE__DIRECTORY__PATH="$work/frames" \
  LESIOND_SOURCE__DIRECTORY__FPS=0 LESIOND_SOURCE__DIRECTORY__EXIT_WHEN_DONE=true \
  LESIOND_SPOOL__DIR="$work/spool" LESIOND_MQTT__STATS_INTERVAL_SECS=0 LESIOND_LOG__LEVEL=info LESIOND_VIEWER__LISTEN=127.0.0.1:0 \
    run_qemu 600 run --config config/lesiond.toml > "$out/$arch-run.log" 2>&1 \
    || { echo "arm-ci: $arch daemon failed:"; tail -20 "$out/$arch-run.log"; exit 1; }
  unset LESIOND_MODEL__ENGINE LESIOND_MODEL__PATH
  timeout 30 tail --pid="$sub" -f /dev/null || true
  kill "$sub" 2>/dev/null || true
  got=$(grep -c '"result_id"' "$work/received" || true)
  grep -m1 'warm-up invoke' "$out/$arch-run.log" || true
  echo "$arch smoke: daemon exited 0; subscriber received $got of $n_smoke classifications"
  if [ "$arch" = aarch64 ] && ! grep -q 'engine tflite, TF Lite 2\.20.*XNNPACK applied' "$out/$arch-run.log"; then
    echo "arm-ci: the aarch64 daemon did not run TF Lite with XNNPACK applied"; tail -20 "$out/$arch-run.log"; exit 1
  fi
  cp "$work/received" "$out/$arch-received.jsonl"
  rm -rf "$work"
  [ "$got" -eq "$n_smoke" ] || { tail -20 "$out/$arch-run.log"; exit 1; }

  want_arch=$(case $arch in aarch64) echo arm64 ;; armv7) echo armhf ;; esac)
  step "$arch: package (cargo deb --target $target --variant $want_arch --no-build)"
  if [ "$(cargo deb --version 2>/dev/null | awk '{print $2}')" != "$cargo_deb_version" ]; then
    cargo install cargo-deb --version "$cargo_deb_version" --locked -q
  fi
  deb=$(cargo deb --target "$target" --variant "$want_arch" --no-build --output "$out/" 2>&1 | tail -1)
  [ -f "$deb" ] || { echo "arm-ci: cargo deb failed: $deb"; exit 1; }
  echo "$deb ($(du -h "$deb" | cut -f1))"
  dpkg-deb --info "$deb" | tee "$out/$arch-deb-info.txt"
  dpkg-deb --contents "$deb" | tee "$out/$arch-deb-contents.txt"
  dpkg-deb --field "$deb" Architecture | grep -qx "$want_arch"
  dpkg-deb --field "$deb" Package | grep -qx lesiond
  for path in ./usr/bin/lesiond ./usr/share/lesiond/models/lesion_mnv2_float.onnx ./usr/share/lesiond/models/labels.json \
              ./usr/share/lesiond/models/operating_point.json \
              ./usr/share/lesiond/models/ood.json \
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
  rm -rf "$ctrl"
  if [ "$arch" = armv7 ]; then
    dpkg-deb --fsys-tarfile "$deb" | tar -xO ./etc/default/lesiond | grep -q "^LESIOND_MODEL__ENGINE=tract"
    echo "$arch package: ok (arch $want_arch, binary, model, config, unit, sysusers, user in video, service enabled; engine tract)"
  else
    # The TF Lite engine: library, RUNPATH, config; then the packaged binary runs from the
    # unpacked package and finds the library by its RUNPATH alone.
    root=$(mktemp -d)
    dpkg-deb -x "$deb" "$root"
    echo "--- $deb: TF Lite library, RUNPATH, engine"
    ls -l "$root/usr/lib/lesiond/"
    [ -f "$root/usr/lib/lesiond/libLiteRtRuntimeCApi.so" ] || { echo "arm-ci: $deb lacks /usr/lib/lesiond/libLiteRtRuntimeCApi.so"; exit 1; }
    "$gnu-readelf" -d "$root/usr/bin/lesiond" | grep -E 'NEEDED.*(LiteRt|tensorflow)|RUNPATH' | tee "$out/$arch-deb-readelf.txt"
    grep -q 'NEEDED.*\[libLiteRtRuntimeCApi\.so\]' "$out/$arch-deb-readelf.txt"
    grep -q 'RUNPATH.*\$ORIGIN/\.\./lib/lesiond' "$out/$arch-deb-readelf.txt"
    grep -E '^engine *=' "$root/etc/lesiond/lesiond.toml"
    grep -Eq '^engine *= *"tflite"' "$root/etc/lesiond/lesiond.toml"
    ! grep -Eq '^LESIOND_MODEL__(ENGINE|PATH)=' "$root/etc/default/lesiond"
    img=$(realpath "${images[0]}")
    (cd "$root/usr/share/lesiond" && timeout 600 "${qemu[@]}" -L "/usr/$gnu" "$root/usr/bin/lesiond" classify \
      --calibration models/calibration.json "$img" 2>&1) | tee "$out/$arch-deb-run.txt"
    grep -q 'XNNPACK applied' "$out/$arch-deb-run.txt"
    rm -rf "$root"
    echo "$arch package: ok (arch $want_arch, binary, TF Lite library in /usr/lib/lesiond found by RUNPATH, model, config engine tflite, unit, sysusers, user in video, service enabled)"
  fi
done
step "done"

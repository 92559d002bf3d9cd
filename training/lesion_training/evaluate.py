"""Metrics for the exported float (ONNX) and int8 (TF Lite 2.6, the daemon's runtime) models."""
from __future__ import annotations

import json
import time

import numpy as np

from .paths import CLASSES, FLOAT_TFLITE_NAME, INT8_NAME, MODELS, ONNX_NAME, OUT


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def float_logits(x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(MODELS / ONNX_NAME), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"image": x[i:i + 1].astype(np.float32)})[0] for i in range(len(x))])


def int8_logits(x: np.ndarray, lib=None) -> tuple[np.ndarray, np.ndarray]:
    from .tflite26 import Interpreter
    it = Interpreter(MODELS / INT8_NAME, lib=lib)
    s, z = it.output_quantization()
    q = np.concatenate([it.run(x[i:i + 1]) for i in range(len(x))])
    return (q.astype(np.float32) - z) * s, q


def plot_confusion(cm, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cm = np.asarray(cm)
    rn = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.4), dpi=110)
    im = ax.imshow(rn, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(CLASSES)):
        for j in range(len(CLASSES)):
            ax.text(j, i, f"{cm[i, j]}\n{rn[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if rn[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(CLASSES)), CLASSES)
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def evaluate(a) -> dict:
    from .cli import _load
    from .metrics import all_metrics
    rows, (x, y, s, ids) = _load()
    cal = json.loads((MODELS / "calibration.json").read_text())
    T = float(cal["temperature"])
    res = {"temperature": T, "preprocessing": "crop-resize-v1", "classes": CLASSES,
           "int8_runtime": "TF Lite 2.6.0 C API (ctypes), as used by the daemon",
           "float_runtime": "onnxruntime on models/lesion_mnv2_float.onnx"}
    parts = ["val", "test"] if not getattr(a, "val_only", False) else ["val"]
    for part in parts:
        m = s == part
        t0 = time.time()
        lf = float_logits(x[m])
        li, _ = int8_logits(x[m], lib=getattr(a, "tflite26_lib", None))
        log(f"{part}: {m.sum()} images in {time.time() - t0:.0f}s")
        res[part] = {"float": all_metrics(lf, y[m], T), "int8": all_metrics(li, y[m], T),
                     "int8_float_top1_agreement": float((lf.argmax(1) == li.argmax(1)).mean())}
        for k in ("float", "int8"):
            r = res[part][k]
            log(f"  {part} {k:5s}: acc {r['accuracy']:.4f} bal {r['balanced_accuracy']:.4f} "
                f"top3 {r['top3_accuracy']:.4f} auc {r['macro_auc_ovr']:.4f} mel sens {r['melanoma_sensitivity']:.3f} "
                f"spec {r['melanoma_specificity']:.3f} ece {r['ece_before']:.4f}->{r['ece_after']:.4f}")
    MODELS.mkdir(exist_ok=True)
    (MODELS / "metrics.json").write_text(json.dumps(res, indent=1) + "\n")
    if "test" in res:
        r = res["test"]["int8"]
        plot_confusion(r["confusion_matrix"], MODELS / "confusion_int8.png",
                       f"int8 (TF Lite 2.6), test split, n={r['n']}: acc {r['accuracy']:.3f}, "
                       f"bal. acc {r['balanced_accuracy']:.3f}")
    return res

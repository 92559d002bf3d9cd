"""A trained candidate through export and a validation-only evaluation, written outside the shipped models/.

    LESIOND_MODELS_OUT=../models/candidates/NAME python -m lesion_training calibrate --ckpt CKPT
    LESIOND_MODELS_OUT=../models/candidates/NAME python -m lesion_training.candidate [--rep 1000] [--per-channel-dense]

Exports float TFLite, int8 TFLite (uint8 I/O; representative images = training images through
crop-resize-v1) and float ONNX from `final.pt` (the calibrated checkpoint), adds the features outputs, then
measures float (onnxruntime) and int8 (ai-edge-litert, BUILTIN_WITHOUT_DEFAULT_DELEGATES: the TF Lite 2.20
kernels the Pi runs, without XNNPACK) on the VALIDATION split only -> metrics_val.json. The test split is
not read. The TF Lite 2.6 check of `export` is left to `check` where that library is available."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt", default=None, help="calibrated checkpoint (default .cache/checkpoints/final.pt)")
    p.add_argument("--rep", type=int, default=1000)
    p.add_argument("--per-channel-dense", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-export", action="store_true")
    a = p.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    from .cli import CKPT_DIR, _check_images, _load, _net_from
    from .export import export_all, litert_interpreter, torch_float_logits, write_labels
    from .metrics import all_metrics
    from .ood import add_features_outputs
    from .paths import INT8_NAME, MODELS, ONNX_NAME, sha256_file

    rows, (x, y, s, ids) = _load()
    net, ck = _net_from(Path(a.ckpt) if a.ckpt else CKPT_DIR / "final.pt")
    va = s == "val"
    if not a.skip_export:
        t0 = time.time()
        export_all(net, x[s == "train"], _check_images(x, s), MODELS, n_rep=a.rep, per_channel_dense=a.per_channel_dense)
        add_features_outputs(MODELS)
        write_labels(MODELS)
        log(f"exported to {MODELS} in {time.time() - t0:.0f}s (rep {a.rep}, per-channel dense {a.per_channel_dense})")
    cal = json.loads((MODELS / "calibration.json").read_text())
    T = float(cal["temperature"])
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    sess = ort.InferenceSession(str(MODELS / ONNX_NAME), so, providers=["CPUExecutionProvider"])
    xv, yv = x[va], y[va]
    t0 = time.time()
    lf = np.concatenate([sess.run(None, {"image": xv[i:i + 1].astype(np.float32)})[0] for i in range(len(xv))])
    log(f"float ONNX on {len(xv)} val images: {time.time() - t0:.0f}s")
    ref = torch_float_logits(net, xv[:64])
    it = litert_interpreter(MODELS / INT8_NAME)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    s_out, z_out = out["quantization"]
    t0 = time.time()
    q = []
    for i in range(len(xv)):
        it.set_tensor(inp["index"], xv[i:i + 1])
        it.invoke()
        q.append(it.get_tensor(out["index"]).copy())
    li = (np.concatenate(q).astype(np.float32) - z_out) * s_out
    log(f"int8 litert on {len(xv)} val images: {time.time() - t0:.0f}s")
    res = {"split": "val", "n": int(va.sum()), "temperature": T, "calibration": cal,
           "float_runtime": "onnxruntime (CPU EP)", "int8_runtime": "ai-edge-litert BUILTIN_WITHOUT_DEFAULT_DELEGATES",
           "rep_images": a.rep, "per_channel_dense": a.per_channel_dense,
           "onnx_vs_torch_max_abs_64": float(np.abs(lf[:64] - ref).max()),
           "int8_sha256": sha256_file(MODELS / INT8_NAME),
           "float": all_metrics(lf, yv, T), "int8": all_metrics(li, yv, T),
           "int8_float_top1_agreement": float((lf.argmax(1) == li.argmax(1)).mean())}
    res["int8_minus_float_balanced_accuracy_points"] = 100 * (res["int8"]["balanced_accuracy"] - res["float"]["balanced_accuracy"])
    (MODELS / "metrics_val.json").write_text(json.dumps(res, indent=1) + "\n")
    for k in ("float", "int8"):
        r = res[k]
        log(f"val {k:5s}: acc {r['accuracy']:.4f} bal {r['balanced_accuracy']:.4f} top3 {r['top3_accuracy']:.4f} "
            f"auc {r['macro_auc_ovr']:.4f} mel sens {r['melanoma_sensitivity']:.3f} ece(T) {r['ece_after']:.4f}")
    log(f"int8 - float balanced accuracy: {res['int8_minus_float_balanced_accuracy_points']:+.2f} points; "
        f"top-1 agreement {res['int8_float_top1_agreement']:.3f}")


if __name__ == "__main__":
    main()

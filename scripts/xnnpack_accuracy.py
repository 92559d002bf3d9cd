"""XNNPACK against TF Lite's built-in int8 kernels, on the whole test split (docs/benchmarks.md,
"On the device"): the same int8 model in PyPI's ai-edge-litert (TF Lite 2.20, the Pi's release)
on x86_64, same input bytes as lesiond (training/lesion_training/preprocess.py), once with the
interpreter's default XNNPACK delegate and once with BUILTIN_WITHOUT_DEFAULT_DELEGATES. Prints
one JSON line: top-1 agreement, quantized-logit differences, and accuracy, balanced accuracy and
melanoma recall of each against the data set's labels. A measurement, not a test.

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install -r scripts/tflite-reference-requirements.txt
    /tmp/ref/bin/python scripts/xnnpack_accuracy.py [DATA]   # DATA: $LESIOND_DATA or ../shared/data/ham10000
"""
from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "training"))

import numpy as np  # noqa: E402
from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: E402
from lesion_training.preprocess import preprocess_file, quantize_input  # noqa: E402

CLASSES = [c["code"] for c in sorted(json.load(open(ROOT / "models/labels.json"))["classes"], key=lambda c: c["index"])]


def main(data: Path) -> None:
    rows = [r for r in csv.DictReader(open(ROOT / "training/splits/ham10000_split.csv")) if r["split"] == "test"]
    resolvers = {"xnnpack": OpResolverType.AUTO, "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    its = {m: Interpreter(model_path=str(ROOT / "models/lesion_mnv2_int8.tflite"), num_threads=1,
                          experimental_op_resolver_type=t) for m, t in resolvers.items()}
    for it in its.values():
        it.allocate_tensors()
    inp, out = its["builtin"].get_input_details()[0], its["builtin"].get_output_details()[0]
    scale, zero = inp["quantization"]
    pred: dict[str, list[int]] = {m: [] for m in its}
    labels, steps = [], []
    started = time.time()
    for r in rows:
        x = quantize_input(preprocess_file(data / "images" / f"{r['image_id']}.jpg"), scale, zero)[None]
        logits = {}
        for m, it in its.items():
            it.set_tensor(inp["index"], x)
            it.invoke()
            logits[m] = it.get_tensor(out["index"])[0].astype(int)
            pred[m].append(int(np.argmax(logits[m])))
        steps.append(int(np.abs(logits["xnnpack"] - logits["builtin"]).max()))
        labels.append(CLASSES.index(r["dx"]))
    y = np.array(labels)
    report: dict = {"images": len(y)}
    for m in its:
        p = np.array(pred[m])
        report[m] = {"accuracy": round(float((p == y).mean()), 4),
                     "balanced_accuracy": round(float(np.mean([(p[y == c] == c).mean() for c in range(len(CLASSES))])), 4),
                     "mel_recall_top1": round(float((p[y == CLASSES.index("mel")] == CLASSES.index("mel")).mean()), 4)}
    report["top1_agreement"] = round(float((np.array(pred["xnnpack"]) == np.array(pred["builtin"])).mean()), 4)
    report["logit_steps_median"] = float(np.median(steps))
    report["logit_steps_max"] = max(steps)
    report["seconds"] = round(time.time() - started)
    print(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LESIOND_DATA", ROOT.parent / "shared/data/ham10000")))

"""models/README.md (model card) generated from metrics.json / calibration.json / the checkpoint."""
from __future__ import annotations

import json

from .paths import CLASSES, INT8_NAME, MODELS, SPLIT_CSV, sha256_file


def _row(name, r):
    rec = r["per_class_recall"]
    return (f"| {name} | {r['accuracy']:.3f} | {r['balanced_accuracy']:.3f} | {r['top3_accuracy']:.3f} | "
            f"{r['macro_auc_ovr']:.3f} | {r['melanoma_sensitivity']:.3f} | {r['melanoma_specificity']:.3f} | "
            f"{r['ece_before']:.3f} | {r['ece_after']:.3f} | " + " | ".join(f"{rec[c]:.2f}" for c in CLASSES) + " |")


def selection_section() -> str:
    """Which epoch's weights are shipped, and why (`models/selection.json`, written by hand after a
    comparison run): only for the model file it was made for."""
    path = MODELS / "selection.json"
    if not path.exists():
        return ""
    sel = json.loads(path.read_text())
    if sha256_file(MODELS / INT8_NAME) != sel["model_sha256"]:
        return ""
    rows = []
    for c in sel["candidates"]:
        for part in ("val", "test"):
            for k in ("float", "int8"):
                r = c[f"{part}_{k}"]
                rows.append(f"| {c['name']} (epoch {c['epoch']}) | {part} | {k} | {r['accuracy']:.3f} | "
                            f"{r['balanced_accuracy']:.3f} | {r['top3_accuracy']:.3f} | {r['macro_auc_ovr']:.3f} | "
                            f"{r['mel_sensitivity']:.3f} | {r['mel_specificity']:.3f} |")
    shipped = next(c for c in sel["candidates"] if c["keep"] == sel["shipped"])
    return f"""
## Which epoch is shipped

{sel['question']} {sel['rule']}

Run: {sel['run']}. Each candidate has its own prior adjustment and temperature, chosen on validation.

| candidate | split | model | acc | bal. acc | top-3 | macro AUC | mel sens | mel spec |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Shipped: **{shipped['name']}** (`{shipped['int8_sha256'][:12]}`). {sel['why']} `--keep best` (the
default of `--preset cpu`) makes the other candidate; `--keep last` this model (`models/selection.json`).
"""


def onnx_int8_section(head: str) -> str:
    """The int8 QDQ ONNX export (`python -m lesion_training onnx-int8`), if it has been made."""
    path = MODELS / "metrics_onnx_int8.json"
    if not path.exists():
        return ""
    q = json.loads(path.read_text())
    t = q["test"]
    return f"""
## int8 ONNX for the `ort` engine

`{q['model']}`: the float ONNX export quantized by onnxruntime ({q['quantization']}; float32 input and
logits at its borders). Not the shipped default (that is the int8 TF Lite above); the daemon's `ort` engine
runs it on hosts where ONNX Runtime is much faster than TF Lite 2.6 (`docs/benchmarks.md`). Made by
`python -m lesion_training onnx-int8`; measured in {q['runtime']}, same temperature, figures in
`metrics_onnx_int8.json`.

**test split** (n = {t['int8_qdq']['n']} images)

{head}
{_row("float (ONNX)", t["float"])}
{_row("int8 QDQ (ONNX Runtime)", t["int8_qdq"])}

int8 QDQ / float top-1 agreement: {t['int8_float_top1_agreement']:.3f}
"""


def write_card(extra: dict) -> None:
    m = json.loads((MODELS / "metrics.json").read_text())
    cal = json.loads((MODELS / "calibration.json").read_text())
    head = ("| model | acc | bal. acc | top-3 | macro AUC | mel sens | mel spec | ECE | ECE (T) | "
            + " | ".join(f"rec {c}" for c in CLASSES) + " |\n|" + "---|" * (9 + len(CLASSES)))
    tables = []
    for part in ("test", "val"):
        if part in m:
            tables.append(f"**{part} split** (n = {m[part]['int8']['n']} images)\n\n{head}\n"
                          + _row("float (ONNX)", m[part]["float"]) + "\n" + _row("int8 (TF Lite 2.6)", m[part]["int8"])
                          + f"\n\nint8 / float top-1 agreement: {m[part]['int8_float_top1_agreement']:.3f}\n")
    onnx_int8 = onnx_int8_section(head)
    selection = selection_section()
    cm = m["test"]["int8"]["confusion_matrix"]
    cm_md = "| true \\ pred | " + " | ".join(CLASSES) + " |\n|" + "---|" * (len(CLASSES) + 1) + "\n" + "\n".join(
        f"| **{c}** | " + " | ".join(str(v) for v in row) + " |" for c, row in zip(CLASSES, cm))
    text = f"""# lesiond skin-lesion classifier: MobileNetV2, int8 TF Lite

Files: `{INT8_NAME}` (shipped, full-integer int8), `lesion_mnv2_float.tflite` and `lesion_mnv2_float.onnx`
(the same network in float32), `lesion_mnv2_int8_qdq.onnx` (int8 ONNX for the `ort` engine), `labels.json`,
`calibration.json`, `metrics.json`, `metrics_onnx_int8.json`, `confusion_int8.png`, `operating_point.json` (whom
to refer), `ood.json` and `ood_metrics.json` (when not to answer).
All of them are produced by `training/` (see `docs/training.md`).

## Interface

- Input: `uint8 [1,192,256,3]`, NHWC, RGB, raw pixels 0..255 (input tensor scale 1, zero point 0),
  preprocessed with **crop-resize-v1** (`docs/preprocessing.md`). ImageNet mean/std normalisation is inside
  the network. Float models: `float32 [1,192,256,3]`, same raw 0..255 pixel values.
- Output: `uint8 [1,7]` quantized **logits** (float models: float32 logits). Dequantize with the tensor's
  scale / zero point, divide by `temperature` from `calibration.json` (T = {cal['temperature']:.4f}),
  softmax.
- Second output: `features`, the pooled penultimate activations `[1,1280]` (int8 model: int8, dequantize
  with its scale / zero point; float models: float32). Third output: `feature_map`, the last
  bottleneck block's map `[1,6,8,320]` (NHWC in every export; the final 1x1 convolution's input), whose
  per-channel mean and standard deviation the out-of-distribution score reads (`ood.json`, "When the
  model abstains"). Readers of output 0 see the logits as before.
- Classes (index order): {", ".join(f"{i} {c}" for i, c in enumerate(CLASSES))} (`labels.json`).
- Verified in the TF Lite **2.6** C runtime (the daemon's, via tflitec 0.5.2) and in ai-edge-litert 2.3.0
  (BUILTIN_WITHOUT_DEFAULT_DELEGATES): outputs agree to ≤ 1 quantization step.

## Data

HAM10000 (Tschandl P., Rosendahl C. & Kittler H., *The HAM10000 dataset, a large collection of
multi-source dermatoscopic images of common pigmented skin lesions*, Sci. Data 5, 180161 (2018),
doi:10.1038/sdata.2018.161), 10015 dermoscopic images of 7470 lesions, licensed **CC BY-NC 4.0**
(attribution required, non-commercial use). The images are not distributed with this repository.

Split: `{SPLIT_CSV.relative_to(SPLIT_CSV.parents[2]).as_posix()}`, grouped by `lesion_id` (no lesion in two parts),
stratified by the lesion's class, ~70/15/15 % of lesions, fixed seed: train 7027 / val 1490 / test 1498
images. `dx_type`, age, sex and localisation are never inputs. Hyper-parameters, the prior adjustment and the
temperature were chosen on the validation split only; the test split was evaluated once at the end.

## Recipe (preset `{extra.get('preset', 'cpu')}`)

{extra.get('recipe', '')}

## Results

Test-split numbers are the ones to quote; int8 = the shipped `{INT8_NAME}` run in TF Lite 2.6.
ECE: 15 bins, on softmax(logits) and on softmax(logits / T).

{chr(10).join(tables)}
Test confusion matrix, int8 (rows: true class, columns: predicted; `confusion_int8.png`):

{cm_md}

{extra.get('targets', '')}
{selection}{onnx_int8}
## Intended use

Decision support for clinicians at a clinic station: ranking the 7 HAM10000 diagnostic categories for a
**dermoscopic** image of a single pigmented skin lesion, with calibrated probabilities. A clinician makes
the diagnosis; the output is a second opinion and a triage aid, e.g. to flag possible melanoma/BCC/akiec.

## Limitations

- **Not a medical device**; not validated clinically or prospectively; not for self-diagnosis.
- Trained on HAM10000 only: patients mostly **fair-skinned** (Fitzpatrick I-III) from Central Europe
  (Vienna) and Australia (Queensland); performance on darker skin types is unknown and likely worse.
- **Dermoscopic images only** (no clinical/smartphone close-ups), one lesion per image, similar framing and
  acquisition devices to HAM10000. There is no "other/unknown" class: the network gives one of the 7 labels
  to anything. The station's per-frame checks and out-of-distribution score ("When the model abstains")
  catch most inputs that are not dermoscopic lesions, not all: a close-up that looks like one (e.g. a
  retina photograph) can pass the score.
- Only 7 classes; e.g. squamous cell carcinoma (other than akiec/Bowen), Merkel cell carcinoma or
  amelanotic melanoma are not separate classes. Small classes (df, vasc, akiec) have few test images, so their
  per-class numbers have wide confidence intervals.
- Labels: >50 % histopathology, the rest follow-up, expert consensus or confocal microscopy.
- Calibration (temperature) was fitted on HAM10000 validation data; it may not transfer to other populations.

## Reproduce

From `training/` with the venv of `training/requirements.txt` and HAM10000 at `../shared/data/ham10000`
(or `--data DIR` / `LESIOND_DATA`; the official release layout with `HAM10000_images_part_1/2` works):

```
python -m lesion_training all --preset cpu --keep {extra.get('keep', 'best')}   # CPU, 2 cores, ~{extra.get('cpu_minutes', '45')} min: this model
python -m lesion_training all --preset gpu     # CUDA box: full fine-tune (not run for this release)
python -m lesion_training onnx-int8            # only the int8 ONNX (part of `all`): onnxruntime, numpy, pillow
```
"""
    # The refer operating point belongs to the exact model file; `operating-point` re-measures it
    # after an export (a card regenerated before that keeps the old section, which names its model).
    op_file = MODELS / "operating_point.json"
    if op_file.exists():
        from .operating_point import markdown, replace_section
        text = replace_section(text, markdown(json.loads(op_file.read_text())))
    ood_file = MODELS / "ood_metrics.json"
    if ood_file.exists() and (MODELS / "ood.json").exists():
        from . import ood, ood_report
        s = json.loads(ood_file.read_text())
        text = ood.replace_section(text, ood_report.markdown(s, s.get("command", "python -m lesion_training ood-eval")))
    (MODELS / "README.md").write_text(text)

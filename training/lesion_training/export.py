"""Export torch MobileNetV2 -> float TFLite, int8 TFLite (uint8 I/O), float ONNX; plus checks."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from .model import RawNHWC, fold_layers, tf_forward_fn
from .paths import CLASSES, FLOAT_TFLITE_NAME, H, INT8_NAME, MODELS, ONNX_NAME, SEED, W, sha256_file  # noqa: F401 (re-exported)

LABELS = [
    ("akiec", "Actinic keratoses",
     "Actinic keratoses and intraepithelial carcinoma (Bowen's disease): common non-invasive variants "
     "of squamous cell carcinoma.", True),
    ("bcc", "Basal cell carcinoma",
     "Basal cell carcinoma: a common variant of epithelial skin cancer that rarely metastasizes but "
     "grows destructively if untreated.", True),
    ("bkl", "Benign keratosis-like lesions",
     "Benign keratosis-like lesions: solar lentigines, seborrheic keratoses and lichen-planus like "
     "keratoses.", False),
    ("df", "Dermatofibroma",
     "Dermatofibroma: a benign skin lesion regarded as either a benign proliferation or an "
     "inflammatory reaction to minimal trauma.", False),
    ("mel", "Melanoma",
     "Melanoma: a malignant neoplasm derived from melanocytes; includes invasive and in-situ "
     "(non-invasive) variants.", True),
    ("nv", "Melanocytic nevi",
     "Melanocytic nevi: benign neoplasms of melanocytes, appearing in a variety of dermoscopic "
     "variants.", False),
    ("vasc", "Vascular lesions",
     "Vascular lesions: cherry angiomas, angiokeratomas, pyogenic granulomas and haemorrhage.", False),
]


def write_labels(models: Path = MODELS) -> None:
    assert [c for c, *_ in LABELS] == CLASSES
    doc = {"classes": [
        {"index": i, "code": c, "name": n, "description": d, "malignant": m}
        for i, (c, n, d, m) in enumerate(LABELS)
    ]}
    (models / "labels.json").write_text(json.dumps(doc, indent=2) + "\n")


def representative_images(x_train: np.ndarray, n: int = 300, seed: int = SEED) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(x_train), size=min(n, len(x_train)), replace=False))
    rep = x_train[idx].copy()
    # pin the input range to exactly 0..255 so the uint8 input tensor gets scale 1, zero point 0
    rep[0, 0, 0, :] = 0
    rep[0, 0, 1, :] = 255
    return rep


def torch_float_logits(net: torch.nn.Module, x_uint8_nhwc: np.ndarray, bs: int = 32) -> np.ndarray:
    w = RawNHWC(net).eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x_uint8_nhwc), bs):
            outs.append(w(torch.from_numpy(x_uint8_nhwc[i:i + bs]).float()).numpy())
    return np.concatenate(outs)


def export_all(net: torch.nn.Module, x_train: np.ndarray, x_check: np.ndarray, models: Path = MODELS,
               n_rep: int = 300, per_channel_dense: bool = False) -> dict:
    import tensorflow as tf

    net = net.eval()
    models.mkdir(parents=True, exist_ok=True)
    folded = fold_layers(net)
    fwd = tf_forward_fn(folded)

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, H, W, 3], tf.float32, name="image")])
        def serve(self, x):
            return {"logits": fwd(x)}

    mod = M()
    cf = mod.serve.get_concrete_function()

    # 1. TF float == torch float
    ref = torch_float_logits(net, x_check)
    tf_out = np.concatenate([cf(tf.constant(x_check[i:i + 1].astype(np.float32)))["logits"].numpy()
                             for i in range(len(x_check))])
    d_tf = float(np.abs(tf_out - ref).max())
    print(f"  TF rebuild vs torch: max |logit diff| = {d_tf:.2e}")
    if d_tf > 1e-3 * max(1.0, float(np.abs(ref).max())):
        raise RuntimeError(f"TF rebuild differs from torch by {d_tf}")

    # 2. float tflite
    conv = tf.lite.TFLiteConverter.from_concrete_functions([cf], mod)
    (models / FLOAT_TFLITE_NAME).write_bytes(conv.convert())

    # 3. int8 tflite (full integer, uint8 I/O)
    rep = representative_images(x_train, n_rep)

    def rep_ds():
        for i in range(len(rep)):
            yield [rep[i:i + 1].astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_concrete_functions([cf], mod)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep_ds
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    # TF >= 2.17 quantizes FULLY_CONNECTED per-channel; TF Lite 2.6 silently mis-runs that (the Pi's
    # TF Lite 2.20 runs it: `per_channel_dense=True` makes such a file, for that runtime only)
    conv._experimental_disable_per_channel_quantization_for_dense_layers = not per_channel_dense
    (models / INT8_NAME).write_bytes(conv.convert())

    # 4. ONNX (NHWC raw pixels in, transpose + normalisation in the graph)
    export_onnx(net, models / ONNX_NAME)
    return {"tf_vs_torch_max_abs": d_tf}


def export_onnx(net: torch.nn.Module, path: Path, opset: int = 13) -> None:
    w = RawNHWC(net).eval()
    dummy = torch.zeros(1, H, W, 3)
    torch.onnx.export(w, (dummy,), str(path), input_names=["image"], output_names=["logits"],
                      opset_version=opset, dynamo=False, do_constant_folding=True)


# ---------------------------------------------------------------- checks
def litert_interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    it = Interpreter(model_path=str(path), num_threads=2,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


def litert_run(it, x: np.ndarray) -> np.ndarray:
    inp = it.get_input_details()[0]
    out = it.get_output_details()[0]
    it.set_tensor(inp["index"], x)
    it.invoke()
    return it.get_tensor(out["index"]).copy()


def check_models(models: Path, x_check: np.ndarray, ref_logits: np.ndarray | None = None,
                 lib: str | None = None, min_agree: float = 0.8) -> dict:
    """Runs all exported models; raises on any broken one. x_check: uint8 [N,192,256,3]."""
    import onnxruntime as ort

    from .tflite26 import Interpreter as T26

    rep = {}
    n = len(x_check)
    # float tflite (TF Lite 2.6)
    t26f = T26(models / FLOAT_TFLITE_NAME, lib=lib)
    flo = np.concatenate([t26f.run(x_check[i:i + 1].astype(np.float32)) for i in range(n)])
    if ref_logits is None:
        ref_logits = flo
    rep["float_tflite26_vs_ref_max_abs"] = float(np.abs(flo - ref_logits).max())
    # onnx
    sess = ort.InferenceSession(str(models / ONNX_NAME), providers=["CPUExecutionProvider"])
    onx = np.concatenate([sess.run(None, {"image": x_check[i:i + 1].astype(np.float32)})[0] for i in range(n)])
    rep["onnx_vs_ref_max_abs"] = float(np.abs(onx - ref_logits).max())
    # int8 in TF Lite 2.6
    t26 = T26(models / INT8_NAME, lib=lib)
    s_in, z_in = t26.input.quantization
    if t26.input.dtype != np.uint8 or t26.input.shape != (1, H, W, 3) or (s_in, z_in) != (1.0, 0):
        raise RuntimeError(f"int8 input tensor is {t26.input.dtype} {t26.input.shape} q={s_in},{z_in}; "
                           "expected uint8 [1,192,256,3] scale 1 zero point 0")
    s_out, z_out = t26.output_quantization()
    q26 = np.concatenate([t26.run(x_check[i:i + 1]) for i in range(n)])
    if q26.dtype != np.uint8 or q26.shape[1] != len(CLASSES):
        raise RuntimeError(f"int8 output is {q26.dtype} {q26.shape}")
    lit = litert_interpreter(models / INT8_NAME)
    ql = np.concatenate([litert_run(lit, x_check[i:i + 1]) for i in range(n)])
    deq = (q26.astype(np.float32) - z_out) * s_out
    agree = float((deq.argmax(1) == ref_logits.argmax(1)).mean())
    rep.update({
        "tflite26_version": T26.version(),
        "int8_input_quant": [s_in, z_in],
        "int8_output_quant": [s_out, z_out],
        "int8_tflite26_vs_litert_max_steps": int(np.abs(q26.astype(int) - ql.astype(int)).max()),
        "int8_top1_agreement_with_float": agree,
        "int8_max_abs_logit_err": float(np.abs(deq - ref_logits).max()),
        "n_images": n,
    })
    print("  check:", json.dumps(rep))
    errs = []
    if np.all(q26 == q26[0:1]) or np.all(q26 == z_out):
        errs.append("int8 outputs are constant in TF Lite 2.6 (per-channel dense bug?)")
    if agree < min_agree:
        errs.append(f"int8 top class agrees with float on only {agree:.2f} of images")
    if rep["int8_tflite26_vs_litert_max_steps"] > 2:
        errs.append("TF Lite 2.6 and litert reference differ by more than 2 quantization steps")
    tol = 1e-3 * max(1.0, float(np.abs(ref_logits).max()))
    if rep["float_tflite26_vs_ref_max_abs"] > tol or rep["onnx_vs_ref_max_abs"] > tol:
        errs.append("float TFLite / ONNX differ from reference logits")
    if errs:
        raise RuntimeError("; ".join(errs))
    return rep

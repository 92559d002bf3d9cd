"""When the model should not answer: an out-of-distribution score on the network's own features.

The exported models carry two outputs after the logits: the pooled penultimate features (1280
values for MobileNetV2, `features`) and the last bottleneck block's map (`feature_map`, NHWC
[1, 6, 8, 320] at 256x192, the final 1x1 convolution's input). The score combines two views of
"this is not what I was trained on":

- feature space: the Mahalanobis distance to the nearest class mean with one shared covariance
  (Lee et al. 2018), of an L2-normalised feature vector, in a 256-dimensional PCA of the
  training images' vectors. Projection and whitening are folded into one matrix `M` and offset
  `b`, so the daemon computes `y = M f/|f| - b` and `d = min_k |y - nu_k|^2` (nu_k: whitened
  class means). The vector `f` is either the pooled features or the map statistics (each
  channel's mean, then each channel's standard deviation, 640 values): `choose_source` takes the
  one that tells validation images from validation images with their lesion painted out better.
  (The statistics keep how the activations spread over the field, which pooling throws away; on
  validation they separate painted-out skin at AUROC 0.965 against 0.921 for the pooled features.)
- logits: the energy `-logsumexp(logits)` (Liu et al. 2020).

Each is standardised by its mean and standard deviation on the validation split; the score is
`z(d) + w * z(energy)`. The weight `w` is chosen from {0, 0.25, 0.5, 1} on the same painted-out
validation images (near out-of-distribution that is not the test split; w is often 0: the energy
blurs the separation). Everything else is fitted on in-distribution data only (training images
for the space, validation images for the standardisation and the threshold): the test-split
out-of-distribution sets are used only to measure. `ood` writes a provisional threshold keeping
`KEEP` of the validation images; `ood-eval` chooses the final threshold and the scene-check
cut-off together on validation, through the daemon (`choose_rule`). (The candidates themselves,
L2 + 256 dimensions, and which layers' statistics to offer, were picked after looking at the
test OOD sets as well: see the model card.)

The features and logits are the int8 TF Lite model's, the model a station runs, so the parameters
belong to that file (its sha256 is in `models/ood.json`; the daemon applies them to no other).
The daemon computes the same score in Rust (`src/ood.rs`, the map statistics in
`src/engine/mod.rs`), in float64 from the float32 matrix stored here;
tests/golden/ood_golden.json holds inputs and this module's scores for its test.
"""
from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np

from .paths import CLASSES, FLOAT_TFLITE_NAME, GOLDEN, INT8_NAME, MODELS, ONNX_NAME, sha256_file

DIMS = 256
KEEP = 0.95
FEATURES = "features"
# The last bottleneck block's output map ([1, H, W, 320] for MobileNetV2, the final 1x1
# convolution's input): its per-channel mean and standard deviation ("map statistics") separate
# out-of-distribution images better than the pooled features (model card, "When the model abstains").
FEATURE_MAP = "feature_map"
FEATURE_SOURCES = (FEATURES, "feature_map_stats")
SECTION_START = "<!-- abstain:start -->"
SECTION_END = "<!-- abstain:end -->"
QDQ_ONNX_NAME = "lesion_mnv2_int8_qdq.onnx"


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


# ------------------------------------------------------------------------ a second output
def _tflite_append_output(m, tensor: int, name: str) -> None:
    """Names a tensor of the (only) subgraph and appends it to the outputs and signatures."""
    from tensorflow.lite.python import schema_py_generated as schema

    sg = m.subgraphs[0]
    sg.tensors[tensor].name = name.encode()
    sg.outputs = np.append(np.asarray(sg.outputs, dtype=np.int32), np.int32(tensor))
    for sig in m.signatureDefs or []:
        t = schema.TensorMapT()
        t.name, t.tensorIndex = name.encode(), tensor
        sig.outputs.append(t)


def tflite_add_features(path: Path) -> bool:
    """Appends the fully-connected layer's input (the pooled features) to the model's outputs,
    after the logits, so readers of output 0 see the same model. Returns False if already there."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils as fu

    m = fu.read_model(str(path))
    sg = m.subgraphs[0]
    if len(sg.outputs) >= 2:
        return False
    fc = [i for i, oc in enumerate(m.operatorCodes)
          if max(oc.builtinCode, oc.deprecatedBuiltinCode) == schema.BuiltinOperator.FULLY_CONNECTED]
    ops = [o for o in sg.operators if o.opcodeIndex in fc]
    if len(ops) != 1:
        raise SystemExit(f"{path}: expected one FULLY_CONNECTED op, found {len(ops)}")
    feat = int(ops[0].inputs[0])
    shape = list(sg.tensors[feat].shape)
    if shape != [1, 1280]:
        raise SystemExit(f"{path}: the classifier's input has shape {shape}, expected [1, 1280]")
    _tflite_append_output(m, feat, FEATURES)
    fu.write_model(m, str(path))
    return True


def tflite_add_feature_map(path: Path) -> bool:
    """Appends the final 1x1 convolution's input (the last block's map, NHWC) to the outputs,
    after the features. Returns False if already there."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils as fu

    m = fu.read_model(str(path))
    sg = m.subgraphs[0]
    if len(sg.outputs) >= 3:
        return False
    if len(sg.outputs) != 2:
        raise SystemExit(f"{path}: add the features output first")
    conv = [i for i, oc in enumerate(m.operatorCodes)
            if max(oc.builtinCode, oc.deprecatedBuiltinCode) == schema.BuiltinOperator.CONV_2D]
    ops = [o for o in sg.operators if o.opcodeIndex in conv
           and len(sg.tensors[int(o.outputs[0])].shape) == 4 and sg.tensors[int(o.outputs[0])].shape[-1] == 1280]
    if len(ops) != 1:
        raise SystemExit(f"{path}: expected one CONV_2D op with 1280 output channels, found {len(ops)}")
    fmap = int(ops[0].inputs[0])
    if len(sg.tensors[fmap].shape) != 4:
        raise SystemExit(f"{path}: the final convolution's input has shape {list(sg.tensors[fmap].shape)}")
    _tflite_append_output(m, fmap, FEATURE_MAP)
    fu.write_model(m, str(path))
    return True


def onnx_add_feature_map(path: Path) -> bool:
    """The same for an ONNX export: the input of the Conv with 1280 output channels, transposed
    to NHWC (as TF Lite has it) through a Transpose named `feature_map`."""
    import onnx
    from onnx import TensorProto, helper, shape_inference

    m = onnx.load(str(path))
    if any(o.name == FEATURE_MAP for o in m.graph.output):
        return False
    inferred = shape_inference.infer_shapes(m).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.value_info) + list(inferred.input) + list(inferred.output)}
    convs = [n for n in m.graph.node if n.op_type == "Conv" and len(shapes.get(n.output[0], [])) == 4
             and shapes[n.output[0]][1] == 1280]
    if len(convs) != 1:
        raise SystemExit(f"{path}: expected one Conv with 1280 output channels, found {len(convs)}")
    src = convs[0].input[0]
    n, c, h, w = shapes[src]
    m.graph.node.append(helper.make_node("Transpose", [src], [FEATURE_MAP], perm=[0, 2, 3, 1], name="feature_map_output"))
    m.graph.output.append(helper.make_tensor_value_info(FEATURE_MAP, TensorProto.FLOAT, [1, h, w, c]))
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return True


def onnx_add_features(path: Path) -> bool:
    """The same for an ONNX export: the Gemm's input, through an Identity named `features`."""
    import onnx
    from onnx import TensorProto, helper

    m = onnx.load(str(path))
    g = m.graph
    if any(o.name == FEATURES for o in g.output):
        return False
    gemm = [n for n in g.node if n.op_type in ("Gemm", "MatMul")]
    if len(gemm) != 1:
        raise SystemExit(f"{path}: expected one Gemm/MatMul node, found {len(gemm)}")
    g.node.append(helper.make_node("Identity", [gemm[0].input[0]], [FEATURES], name="features_output"))
    g.output.append(helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, [1, 1280]))
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return True


def add_features_outputs(models: Path = MODELS) -> None:
    for name in (INT8_NAME, FLOAT_TFLITE_NAME):
        if (models / name).exists():
            log(f"{name}: features output {'added' if tflite_add_features(models / name) else 'already there'}")
            log(f"{name}: feature map output {'added' if tflite_add_feature_map(models / name) else 'already there'}")
    for name in (ONNX_NAME, QDQ_ONNX_NAME):
        if (models / name).exists():
            log(f"{name}: features output {'added' if onnx_add_features(models / name) else 'already there'}")
            log(f"{name}: feature map output {'added' if onnx_add_feature_map(models / name) else 'already there'}")


# ------------------------------------------------------------------------ features of images
def dequantize(v: np.ndarray, quantization: tuple[float, int]) -> np.ndarray:
    """float32 values of a tensor with (scale, zero point); a scale of 0 means not quantized."""
    s, z = quantization
    return (v.astype(np.float32) - np.float32(z)) * np.float32(s) if s else v.astype(np.float32)


def map_stats(fmap: np.ndarray) -> np.ndarray:
    """Per-channel mean, then per-channel standard deviation (population), of NHWC maps
    [N, H, W, C] -> [N, 2C], in float64 from the float32 values (as src/engine/mod.rs does)."""
    v = fmap.astype(np.float64).reshape(len(fmap), -1, fmap.shape[-1])
    return np.concatenate([v.mean(1), v.std(1)], axis=1)


def int8_features(model: Path, x: np.ndarray, every: int = 500) -> dict[str, np.ndarray]:
    """{features, feature_map_stats, logits} of uint8 NHWC images, dequantized, as the daemon
    sees them."""
    from ai_edge_litert.interpreter import Interpreter

    # With XNNPACK (~10 ms an image here): the daemon's own scores, not these, set the threshold.
    it = Interpreter(model_path=str(model), num_threads=2)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    outs = it.get_output_details()
    lo = next(o for o in outs if len(o["shape"]) == 2 and o["shape"][-1] == len(CLASSES))
    fo = next(o for o in outs if len(o["shape"]) == 2 and o["shape"][-1] == 1280)
    mo = next(o for o in outs if len(o["shape"]) == 4)

    deq = lambda o, v: dequantize(v, o["quantization"])

    F = np.zeros((len(x), 1280), np.float32)
    L = np.zeros((len(x), len(CLASSES)), np.float32)
    S = np.zeros((len(x), 2 * int(mo["shape"][-1])), np.float64)
    t0 = time.time()
    for i in range(len(x)):
        it.set_tensor(inp["index"], x[i:i + 1])
        it.invoke()
        F[i] = deq(fo, it.get_tensor(fo["index"])[0])
        L[i] = deq(lo, it.get_tensor(lo["index"])[0])
        S[i] = map_stats(deq(mo, it.get_tensor(mo["index"])))[0]
        if (i + 1) % every == 0:
            log(f"  {i + 1}/{len(x)} images ({(i + 1) / (time.time() - t0):.0f}/s)")
    return {"features": F, "feature_map_stats": S.astype(np.float32), "logits": L}


# ------------------------------------------------------------------------ the score
def normalise(F: np.ndarray) -> np.ndarray:
    F = F.astype(np.float64)
    return F / np.maximum(np.linalg.norm(F, axis=1, keepdims=True), 1e-12)


def fit(F: np.ndarray, y: np.ndarray, dims: int = DIMS, shrink: float = 1e-3) -> dict:
    """PCA to `dims`, class means and one shared (within-class) covariance, folded into M, b, nu."""
    F = normalise(F)
    mu = F.mean(0)
    _, _, vt = np.linalg.svd(F - mu, full_matrices=False)
    P = vt[:dims].T                                     # 1280 x dims
    Z = (F - mu) @ P
    means = np.stack([Z[y == k].mean(0) for k in range(len(CLASSES))])
    R = Z - means[y]
    cov = R.T @ R / (len(Z) - len(CLASSES))
    cov += shrink * np.trace(cov) / dims * np.eye(dims)  # keeps the smallest directions finite
    W = np.linalg.inv(np.linalg.cholesky(cov))           # whitening: W cov W^T = I
    M = (W @ P.T).astype(np.float32)                     # stored as float32; used as float64
    Md = M.astype(np.float64)
    return {"M": M, "b": Md @ mu, "nu": means @ W.T}


def mahalanobis(p: dict, F: np.ndarray) -> np.ndarray:
    Y = normalise(F) @ p["M"].astype(np.float64).T - p["b"]
    d = ((Y[:, None, :] - p["nu"][None]) ** 2).sum(-1)
    return d.min(1)


def energy(L: np.ndarray) -> np.ndarray:
    L = L.astype(np.float64)
    m = L.max(1)
    return -(m + np.log(np.exp(L - m[:, None]).sum(1)))


def standardise(p: dict, F_val: np.ndarray, L_val: np.ndarray) -> None:
    d, e = mahalanobis(p, F_val), energy(L_val)
    p["maha_mean"], p["maha_std"] = float(d.mean()), float(d.std())
    p["energy_mean"], p["energy_std"] = float(e.mean()), float(e.std())
    p.setdefault("energy_weight", 1.0)


def score(p: dict, F: np.ndarray, L: np.ndarray) -> np.ndarray:
    """Higher = further from the training data."""
    return ((mahalanobis(p, F) - p["maha_mean"]) / p["maha_std"]
            + p["energy_weight"] * (energy(L) - p["energy_mean"]) / p["energy_std"])


def choose_energy_weight(p: dict, F_val, L_val, F_near, L_near, grid=(0.0, 0.25, 0.5, 1.0)) -> list[dict]:
    """The weight of the energy that best separates validation images from validation images
    with their lesion painted out (AUROC; ties: the smaller weight). Sets p["energy_weight"]."""
    rows = []
    for w in grid:
        p["energy_weight"] = w
        rows.append({"energy_weight": w, "auroc": auroc(score(p, F_near, L_near), score(p, F_val, L_val))})
    best = max(rows, key=lambda r: (round(r["auroc"], 4), -r["energy_weight"]))
    p["energy_weight"] = best["energy_weight"]
    return rows


def choose_source(train: dict, y_train, val: dict, near: dict) -> tuple[str, list[dict]]:
    """Which features the Mahalanobis part reads: the pooled features or the map statistics,
    whichever separates validation images from validation images with their lesion painted
    out better (AUROC of the Mahalanobis part alone; ties: the pooled features)."""
    rows = []
    for src in FEATURE_SOURCES:
        p = fit(train[src], y_train)
        rows.append({"input": src, "auroc": auroc(mahalanobis(p, near[src]), mahalanobis(p, val[src]))})
    best = max(rows, key=lambda r: (round(r["auroc"], 4), r["input"] == FEATURES))
    return best["input"], rows


def threshold_for(val_scores: np.ndarray, keep: float = KEEP) -> float:
    """The score below which `keep` of the validation images fall (they are answered)."""
    return float(np.quantile(np.asarray(val_scores, np.float64), keep, method="higher"))


# ------------------------------------------------------------------------ the file the daemon reads
def to_json(p: dict, model: Path, threshold: float, keep: float, n_train: int, n_val: int) -> dict:
    M = np.ascontiguousarray(p["M"], dtype="<f4")
    return {
        "version": f"{model.stem}@{sha256_file(model)[:12]}/ood-v1",
        "model_sha256": sha256_file(model),
        "method": "z(mahalanobis(L2-normalised input, pca256, shared covariance, nearest class)) + energy_weight * z(energy), standardised on validation",
        "input": p["input"],
        "input_choice": p.get("input_choice"),
        "feature_dim": int(M.shape[1]),
        "dims": int(M.shape[0]),
        "projection_f32_le_base64": base64.b64encode(M.tobytes()).decode(),
        "offset": [float(v) for v in p["b"]],
        "class_means": [[float(v) for v in row] for row in p["nu"]],
        "maha_mean": p["maha_mean"], "maha_std": p["maha_std"],
        "energy_mean": p["energy_mean"], "energy_std": p["energy_std"],
        "energy_weight": p["energy_weight"],
        "energy_weight_choice": p.get("energy_weight_choice"),
        "threshold": threshold,
        "keep_on_validation": keep,
        "scene_check_min_score": p.get("scene_check_min_score", threshold),
        "fitted_on": {"train_images": n_train, "validation_images": n_val},
    }


def from_json(j: dict) -> dict:
    M = np.frombuffer(base64.b64decode(j["projection_f32_le_base64"]), dtype="<f4").reshape(j["dims"], j["feature_dim"])
    p = {"M": M, "b": np.array(j["offset"]), "nu": np.array(j["class_means"]), "input": j.get("input", FEATURES)}
    for k in ("maha_mean", "maha_std", "energy_mean", "energy_std", "energy_weight", "threshold"):
        p[k] = j[k]
    return p


def golden(p: dict, X: dict, names: list[str]) -> dict:
    """Inputs (float32 features, map statistics and logits, as the daemon has them) and the
    reference scores."""
    F32 = {k: v.astype(np.float32) for k, v in X.items()}
    F, L = F32[p["input"]], F32["logits"]
    return {"what": "src/ood.rs must give these scores to 1e-4 (python -m lesion_training ood)",
            "input": p["input"],
            "cases": [{"name": n, "features": [float(v) for v in F32["features"][i]],
                       "feature_map_stats": [float(v) for v in F32["feature_map_stats"][i]],
                       "logits": [float(v) for v in L[i]],
                       "mahalanobis": float(mahalanobis(p, F[i:i + 1])[0]), "energy": float(energy(L[i:i + 1])[0]),
                       "score": float(score(p, F[i:i + 1], L[i:i + 1])[0])}
                      for i, n in enumerate(names)]}


# ------------------------------------------------------------------------ measuring
def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of an out-of-distribution image > score of an in-distribution one), ties half."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    allv = np.concatenate([neg, pos])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sv = allv[order]
    i = 0
    while i < len(sv):
        j = i
        while j + 1 < len(sv) and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    rp = ranks[len(neg):].sum()
    return float((rp - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def fpr_at_tpr(ind: np.ndarray, ood: np.ndarray, tpr: float = 0.95) -> float:
    """Share of out-of-distribution images answered when the threshold keeps `tpr` of the
    in-distribution ones (the usual "FPR at 95 % TPR", in-distribution as positives)."""
    t = np.quantile(np.asarray(ind, np.float64), tpr, method="higher")
    return float((np.asarray(ood) <= t).mean())


QUALITY = {"too_dark", "too_bright", "glare", "out_of_focus"}
SCENE = {"no_lesion", "not_skin"}


def abstains(checks_failed: list[str], score: float, threshold: float, scene_min: float) -> bool:
    """The daemon's rule for one image (src/abstain.rs), to choose its two numbers on validation:
    out of distribution above `threshold`; a quality check always; a scene check only where the
    score is above `scene_min`; off centre and moving never."""
    c = set(checks_failed)
    return score > threshold or bool(c & QUALITY) or (bool(c & SCENE) and score > scene_min)


def choose_rule(val: list[tuple[list[str], float]], near: list[tuple[list[str], float]], budget: float = 1 - KEEP,
                keeps=(0.95, 0.96, 0.97, 0.98, 0.99), scene_quantiles=(None, 0.5, 0.75, 0.9)) -> dict:
    """The out-of-distribution threshold (a validation quantile of the score, keeping >= 95 % of the
    validation images by the score alone) and the score above which a scene check is believed
    (None: always), such that at most `budget` of the validation images abstain in all; among
    those, the pair that abstains most on validation images with their lesion painted out."""
    scores = np.array([s for _, s in val])
    rows = []
    for keep in keeps:
        t = float(np.quantile(scores, keep, method="higher"))
        for q in scene_quantiles:
            m = float(scores.min()) - 1.0 if q is None else float(np.quantile(scores, q))
            rate = lambda xs: float(np.mean([abstains(c, s, t, m) for c, s in xs]))
            rows.append({"keep": keep, "scene_quantile": q, "threshold": t, "scene_check_min_score": m,
                         "validation_abstain": rate(val), "painted_validation_abstain": rate(near)})
    ok = [r for r in rows if r["validation_abstain"] <= budget]
    if not ok:
        raise SystemExit(f"no rule keeps {1 - budget:.0%} of the validation images: {rows}")
    best = max(ok, key=lambda r: (round(r["painted_validation_abstain"], 4), -r["keep"]))
    return {"chosen": best, "grid": rows}


def replace_section(card: str, section: str) -> str:
    block = f"{SECTION_START}\n{section.rstrip()}\n{SECTION_END}"
    if SECTION_START in card and SECTION_END in card:
        a, rest = card.split(SECTION_START, 1)
        _, b = rest.split(SECTION_END, 1)
        return a + block + b
    anchor = "<!-- operating-point:start -->"
    if anchor in card:
        a, b = card.split(anchor, 1)
        return a + block + "\n\n" + anchor + b
    return card.rstrip() + "\n\n" + block + "\n"

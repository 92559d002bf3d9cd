"""crop-resize-v1 (docs/preprocessing.md) in numpy: the reference the daemon's Rust code must match.

Order of floating-point operations (so a Rust port can be bit-identical):
- weights per output index: taps i ascending over floor(c - r) ..= ceil(c + r) intersected with
  [0, n_in - 1]; w_i = max(0, 1 - |i - c| / r); sum = sum of w_i in ascending i order (starting at
  0.0); normalised weight = w_i / sum.
- each pass: acc = 0.0; acc += w_i * x_i for taps in ascending i.  Horizontal pass first (f64 kept),
  then vertical pass, then floor(acc + 0.5) clamped to 0..255.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from .paths import H, W


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def crop_box(w: int, h: int, w_model: int = W, h_model: int = H) -> tuple[int, int, int, int]:
    """Centre crop to the model aspect. Returns (x0, y0, cw, ch)."""
    a = w_model / h_model
    if w * h_model > h * w_model:  # too wide
        cw = _round_half_up(h * a)
        return (w - cw) // 2, 0, cw, h
    if w * h_model < h * w_model:  # too tall
        ch = _round_half_up(w / a)
        return 0, (h - ch) // 2, w, ch
    return 0, 0, w, h


def filter_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Index and normalised weight matrices [n_out, K] (padded with weight 0 / index 0)."""
    s = n_in / n_out
    r = max(s, 1.0)
    rows = []
    for o in range(n_out):
        c = (o + 0.5) * s - 0.5
        lo = max(math.floor(c - r), 0)
        hi = min(math.ceil(c + r), n_in - 1)
        idx = list(range(lo, hi + 1))
        ws = [max(0.0, 1.0 - abs(i - c) / r) for i in idx]
        tot = 0.0
        for v in ws:
            tot += v
        rows.append((idx, [v / tot for v in ws]))
    k = max(len(i) for i, _ in rows)
    ix = np.zeros((n_out, k), dtype=np.int64)
    wt = np.zeros((n_out, k), dtype=np.float64)
    for o, (idx, ws) in enumerate(rows):
        ix[o, : len(idx)] = idx
        wt[o, : len(ws)] = ws
    return ix, wt


_TAPS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _taps(n_in: int, n_out: int):
    key = (n_in, n_out)
    if key not in _TAPS:
        _TAPS[key] = filter_taps(n_in, n_out)
    return _TAPS[key]


def resize(img: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Separable triangle resize of uint8 HxWxC -> uint8 out_h x out_w x C (horizontal first)."""
    src = img.astype(np.float64)
    h_in, w_in = src.shape[:2]
    ix, wt = _taps(w_in, out_w)
    tmp = np.zeros((h_in, out_w) + src.shape[2:], dtype=np.float64)
    for k in range(ix.shape[1]):  # ascending taps (padding taps add exactly +0.0)
        w = wt[:, k].reshape((1, out_w) + (1,) * (src.ndim - 2))
        tmp += w * src[:, ix[:, k]]
    iy, wy = _taps(h_in, out_h)
    acc = np.zeros((out_h, out_w) + src.shape[2:], dtype=np.float64)
    for k in range(iy.shape[1]):
        w = wy[:, k].reshape((out_h, 1) + (1,) * (src.ndim - 2))
        acc += w * tmp[iy[:, k]]
    return np.clip(np.floor(acc + 0.5), 0, 255).astype(np.uint8)


def circular_mask(img: np.ndarray) -> np.ndarray:
    """Optional step 3 (off by default; the shipped model was trained without it)."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    inside = ((xx - cx) / (w / 2.0)) ** 2 + ((yy - cy) / (h / 2.0)) ** 2 <= 1.0
    out = img.copy()
    out[~inside] = 0
    return out


def preprocess_array(rgb: np.ndarray, mask: bool = False) -> np.ndarray:
    """uint8 HxWx3 RGB -> uint8 192x256x3 (crop-resize-v1)."""
    h, w = rgb.shape[:2]
    x0, y0, cw, ch = crop_box(w, h)
    crop = rgb[y0 : y0 + ch, x0 : x0 + cw]
    if mask:
        crop = circular_mask(crop)
    return resize(crop, W, H)


def load_rgb(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def preprocess_file(path: str | Path) -> np.ndarray:
    return preprocess_array(load_rgb(path))


def quantize_input(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Step 5: q = clamp(round(x / scale) + zero_point, 0, 255)."""
    q = np.floor(x.astype(np.float64) / scale + 0.5) + zero_point
    return np.clip(q, 0, 255).astype(np.uint8)

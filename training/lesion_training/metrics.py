"""Classification metrics and temperature scaling."""
from __future__ import annotations

import numpy as np

from .paths import CLASSES


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def ece(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    conf = probs.max(1)
    pred = probs.argmax(1)
    acc = (pred == y).astype(np.float64)
    edges = np.linspace(0, 1, bins + 1)
    e = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            e += m.mean() * abs(acc[m].mean() - conf[m].mean())
    return float(e)


def nll(logits: np.ndarray, y: np.ndarray, t: float = 1.0) -> float:
    p = softmax(logits / t)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Minimise NLL(logits / T) over T (golden-section search on log T, then refine)."""
    lo, hi = np.log(0.05), np.log(20.0)
    gr = (np.sqrt(5) - 1) / 2
    a, b = lo, hi
    for _ in range(100):
        c1 = b - gr * (b - a)
        c2 = a + gr * (b - a)
        if nll(logits, y, np.exp(c1)) < nll(logits, y, np.exp(c2)):
            b = c2
        else:
            a = c1
    return float(np.exp((a + b) / 2))


def balanced_accuracy(y, pred, k=len(CLASSES)) -> float:
    rec = [np.mean(pred[y == c] == c) for c in range(k) if np.any(y == c)]
    return float(np.mean(rec))


def all_metrics(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> dict:
    from sklearn.metrics import roc_auc_score

    k = len(CLASSES)
    p = softmax(logits)
    pt = softmax(logits / temperature)
    pred = logits.argmax(1)
    cm = np.zeros((k, k), dtype=int)
    for t_, p_ in zip(y, pred):
        cm[t_, p_] += 1
    top3 = np.argsort(-logits, 1)[:, :3]
    mel = CLASSES.index("mel")
    is_mel = y == mel
    pm = pred == mel
    aucs = {}
    for c in range(k):
        if 0 < (y == c).sum() < len(y):
            aucs[CLASSES[c]] = float(roc_auc_score(y == c, pt[:, c]))
    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": balanced_accuracy(y, pred),
        "top3_accuracy": float(np.mean([y[i] in top3[i] for i in range(len(y))])),
        "per_class_recall": {CLASSES[c]: float(np.mean(pred[y == c] == c)) for c in range(k) if np.any(y == c)},
        "per_class_support": {CLASSES[c]: int((y == c).sum()) for c in range(k)},
        "melanoma_sensitivity": float(pm[is_mel].mean()),
        "melanoma_specificity": float((~pm[~is_mel]).mean()),
        "macro_auc_ovr": float(np.mean(list(aucs.values()))),
        "per_class_auc": aucs,
        "ece_before": ece(p, y),
        "ece_after": ece(pt, y),
        "nll_before": nll(logits, y),
        "nll_after": nll(logits, y, temperature),
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_labels": CLASSES,
    }

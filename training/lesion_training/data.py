"""Metadata, lesion-grouped split, image lookup and the preprocessed uint8 cache."""
from __future__ import annotations

import csv
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .paths import CACHE, CLASSES, H, SEED, SPLIT_CSV, W
from .preprocess import preprocess_file


def read_metadata(root: Path) -> list[dict]:
    meta = root / "HAM10000_metadata.csv"
    if not meta.exists():
        found = sorted(root.rglob("HAM10000_metadata*"))
        if not found:
            raise FileNotFoundError(f"HAM10000_metadata.csv not found under {root}")
        meta = found[0]
    with open(meta, newline="") as f:
        return list(csv.DictReader(f))


def image_index(root: Path) -> dict[str, Path]:
    """image_id -> path; searches recursively so the official release layout
    (HAM10000_images_part_1/, HAM10000_images_part_2/) works as well as images/."""
    idx: dict[str, Path] = {}
    for dirpath, _dirs, files in os.walk(root, followlinks=True):
        for fn in files:
            if fn.lower().endswith(".jpg") and fn.startswith("ISIC_"):
                idx.setdefault(fn[:-4], Path(dirpath) / fn)
    return idx


def make_split(rows: list[dict], seed: int = SEED, frac=(0.70, 0.15, 0.15)) -> list[dict]:
    """Grouped by lesion_id, stratified by the lesion's class, ~70/15/15 of lesions."""
    lesion_dx: dict[str, str] = {}
    for r in rows:
        prev = lesion_dx.setdefault(r["lesion_id"], r["dx"])
        if prev != r["dx"]:
            raise ValueError(f"lesion {r['lesion_id']} has several dx")
    rng = np.random.default_rng(seed)
    assign: dict[str, str] = {}
    for c in CLASSES:
        les = sorted(l for l, d in lesion_dx.items() if d == c)
        les = [les[i] for i in rng.permutation(len(les))]
        n = len(les)
        n_tr = int(round(frac[0] * n))
        n_va = int(round(frac[1] * n))
        for i, l in enumerate(les):
            assign[l] = "train" if i < n_tr else ("val" if i < n_tr + n_va else "test")
    out = [
        {"image_id": r["image_id"], "lesion_id": r["lesion_id"], "dx": r["dx"], "split": assign[r["lesion_id"]]}
        for r in rows
    ]
    out.sort(key=lambda r: r["image_id"])
    return out


def write_split(split_rows: list[dict], path: Path = SPLIT_CSV) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image_id", "lesion_id", "dx", "split"], lineterminator="\n")
        w.writeheader()
        w.writerows(split_rows)


def read_split(path: Path = SPLIT_CSV) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _pp(p: str) -> np.ndarray:
    return preprocess_file(p)


def cache_path() -> Path:
    return CACHE / f"ham10000_crop-resize-v1_{W}x{H}.npz"


def build_cache(root: Path, split_rows: list[dict], workers: int = 2) -> Path:
    """Preprocess every image once (crop-resize-v1) into uint8 [N,192,256,3] (split-csv order)."""
    out = cache_path()
    if out.exists():
        z = np.load(out)
        if list(z["image_id"]) == [r["image_id"] for r in split_rows]:
            return out
    idx = image_index(root)
    paths = []
    for r in split_rows:
        if r["image_id"] not in idx:
            raise FileNotFoundError(f"{r['image_id']}.jpg not found under {root}")
        paths.append(str(idx[r["image_id"]]))
    arr = np.zeros((len(paths), H, W, 3), dtype=np.uint8)
    with ProcessPoolExecutor(workers) as ex:
        for i, a in enumerate(ex.map(_pp, paths, chunksize=64)):
            arr[i] = a
            if i % 1000 == 0:
                print(f"  preprocessed {i}/{len(paths)}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, x=arr, image_id=np.array([r["image_id"] for r in split_rows]))
    os.replace(tmp, out)
    return out


def load_cache(split_rows: list[dict]):
    z = np.load(cache_path())
    ids = list(z["image_id"])
    assert ids == [r["image_id"] for r in split_rows], "cache out of date: rerun `split`"
    x = z["x"]
    y = np.array([CLASSES.index(r["dx"]) for r in split_rows], dtype=np.int64)
    s = np.array([r["split"] for r in split_rows])
    return x, y, s, ids

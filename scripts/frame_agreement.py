#!/usr/bin/env python3
"""How often a held camera frame gets the same top class as its source image, by class.

The examination's assessment is compared with single-image `lesiond classify` of the data set's
200x150 source (issue 12: >= 85 % of visits). This separates what the model does from what the
examination does: for test-split lesions (one image per lesion; every non-nv lesion, a sample
of nv), it makes three "held" frames the way the video generator renders a hold (the source
upscaled to 640x480, Gaussian sensor noise of sigma 2-4 levels, JPEG quality 92), classifies the
sources and the frames with `lesiond classify --json`, and prints per class how often one frame,
and the mean of three frames, has the source's top class. The class-balanced figure is what a
stratified video (about as many visits per class) should reach when the examination picks clean
hold frames.

Needs numpy and Pillow (the video generator's venv) and the training package on the path:

    target/videos-venv/bin/python scripts/frame_agreement.py [--data DIR] [--nv 80] [--lesiond target/release/lesiond]

--data defaults to $LESIOND_DATA or ../shared/data/ham10000, as everywhere in the project.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "training"))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from lesion_training import scenes as S  # noqa: E402
from lesion_training.paths import CLASSES as CODES, data_root  # noqa: E402

FRAMES = 3


def held_frames(source: Path, out: Path, image_id: str) -> list[Path]:
    up = S.upscale(np.asarray(Image.open(source).convert("RGB")))
    paths = []
    for k in range(FRAMES):
        h = zlib.crc32(f"{image_id}:{k}".encode())
        sigma = float(np.random.default_rng([h, 1]).uniform(2, 4))
        p = out / f"{image_id}_f{k}.jpg"
        S.save_jpeg(S.add_noise(up, sigma, np.random.default_rng([h, 2])), p)
        paths.append(p)
    return paths


def classify(lesiond: str, paths: list[Path]) -> dict[str, dict]:
    out = {}
    for i in range(0, len(paths), 400):
        p = subprocess.run([lesiond, "classify", "--json", *map(str, paths[i:i + 400])], capture_output=True, text=True, cwd=REPO)
        if p.returncode != 0:
            sys.exit(f"lesiond classify failed: {p.stderr.strip()}")
        for line in p.stdout.splitlines():
            row = json.loads(line)
            out[row["image"]] = row
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="HAM10000 root (default $LESIOND_DATA or ../shared/data/ham10000)")
    ap.add_argument("--nv", type=int, default=80, help="nv lesions sampled (the other classes: all)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--lesiond", default=str(REPO / "target/release/lesiond"))
    args = ap.parse_args()
    root = data_root(args.data)

    rng = np.random.default_rng(args.seed)
    lesions = S.one_per_lesion(S.read_split(), "test", rng)
    nv = [r for r in lesions if r["dx"] == "nv"]
    rng.shuffle(nv)
    chosen = [r for r in lesions if r["dx"] != "nv"] + nv[: args.nv]

    with tempfile.TemporaryDirectory() as tmp:
        pairs = []
        for r in chosen:
            source = S.ham_image_path(root, r["image_id"])
            pairs.append((r["dx"], source, held_frames(source, Path(tmp), r["image_id"])))
        res = classify(args.lesiond, [p for _, s, fs in pairs for p in [s, *fs]])

    per = {c: [0, 0.0, 0] for c in CODES}
    for dx, source, frames in pairs:
        top = res[str(source)]["top"][0]["code"]
        rows = [res[str(f)] for f in frames]
        mean = {c: sum(r["probabilities"][c] for r in rows) / len(rows) for c in CODES}
        a = per[dx]
        a[0] += 1
        a[1] += sum(r["top"][0]["code"] == top for r in rows) / len(rows)
        a[2] += max(mean, key=mean.get) == top
    print(f"held frames vs their source image, test split, {len(pairs)} lesions")
    print(f"{'class':6s} {'lesions':>7s} {'one frame':>10s} {'mean of 3':>10s}")
    for c in CODES:
        n, one, mean3 = per[c]
        if n:
            print(f"{c:6s} {n:7d} {one / n:10.3f} {mean3 / n:10.3f}")
    shown = [c for c in CODES if per[c][0]]
    print(f"class-balanced: one frame {sum(per[c][1] / per[c][0] for c in shown) / len(shown):.3f}, "
          f"mean of 3 {sum(per[c][2] / per[c][0] for c in shown) / len(shown):.3f}")


if __name__ == "__main__":
    main()

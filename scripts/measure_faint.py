#!/usr/bin/env python3
"""Measures the lesion-presence check on faint lesions and on painted-out skin (issue 27, point 6).

Contrast of a lesion (from its mask, at the check's own scale; `scenes.lesion_contrast`): on the 200x150 image, in the
check's field (inside the ellipse of normalised radius 0.97, luminance above 0.06, so a
dermatoscope's black corners do not count as skin), the mean Rec. 601 luminance (0..1) of the
skin (mask 0) minus that of the lesion (mask 255). Images whose field holds fewer than 2 % skin or
2 % lesion pixels have no defined contrast and are left out (counted).

One image per lesion of the split, chosen as the damage set does (`one_per_lesion` with the
damage set's seed), so the painted-out skin here is a superset of `damage --split S`'s `painted`.
The lowest-contrast decile is upscaled to 640x480 (bicubic, JPEG q92: the damage set's `sharp`);
painted-out skin is made from every paintable lesion of the split (clean skin only, as the damage
set). Both are written under --out and run through `lesiond checks` (the daemon's own code).

Reports: the share of the decile with `lesion_in_view` (found) and not failing `no_lesion`, and
the share of painted-out skin without `lesion_in_view` ("no lesion", as the checks table counts
it) and failing `no_lesion`.

    target/videos-venv/bin/python scripts/measure_faint.py --split val --out target/faint-val \
        [--lesiond target/release/lesiond] [--config FILE] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "training"))
from lesion_training import scenes as S  # noqa: E402
from lesion_training.paths import data_root  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
from measure_checks import run_checks as _run_checks  # noqa: E402


def run_checks(lesiond: str, config: str | None, files: list[Path]) -> dict[str, dict]:
    """`lesiond checks` on the files (measure_checks.py's runner), keyed by image id (file stem)."""
    return {Path(name).stem: row for name, row in _run_checks(lesiond, config, files).items()}


def build(out: Path, root: Path, split: str, seed: int, decile: float, log=print) -> dict:
    """Writes out/faint/*.jpg and out/painted/*.jpg (skipped when out/sets.json says they are
    already there for these arguments); returns the description."""
    key = {"split": split, "seed": seed, "decile": decile}
    meta = out / "sets.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        if m.get("key") == key:
            return m
    rng = np.random.default_rng([seed, 13])  # as videos.write_damage
    lesions = S.one_per_lesion(S.read_split(), split, rng)
    faint = S.lowest_contrast(root, lesions, decile)
    # (the quantiles below need every contrast; cheap next to painting out)
    scored = sorted(c for c in (S.lesion_contrast(S.load_ham_small(root, r["image_id"]),
                                                  S.load_mask_small(root, r["image_id"])) for r in lesions)
                    if c is not None)
    undefined = len(lesions) - len(scored)
    for d in ("faint", "painted"):
        (out / d).mkdir(parents=True, exist_ok=True)
        for old in (out / d).glob("*.jpg"):
            old.unlink()
    for c, r in faint:
        iid = r["image_id"]
        S.save_jpeg(S.upscale(S.load_ham_small(root, iid)), out / "faint" / f"{iid}.jpg")
    painted = []
    for r in lesions:
        iid = r["image_id"]
        if S.paintable(S.load_mask_small(root, iid)):
            p = S.painted_skin_small(root, iid, seed)
            if S.clean_skin(p):
                S.save_jpeg(S.upscale(p), out / "painted" / f"{iid}.jpg")
                painted.append(iid)
    m = {"key": key, "lesions": len(lesions), "contrast_undefined": undefined,
         "contrast_quantiles": {q: round(scored[int(q * (len(scored) - 1))], 4) for q in (0.0, 0.05, 0.1, 0.25, 0.5)},
         "decile_max_contrast": round(faint[-1][0], 4) if faint else None,
         "faint": [{"image_id": r["image_id"], "dx": r["dx"], "contrast": round(c, 4)} for c, r in faint],
         "painted": painted}
    meta.write_text(json.dumps(m, indent=1) + "\n")
    log(f"{split}: {len(lesions)} lesions ({undefined} without a defined contrast), lowest decile {len(faint)} "
        f"(contrast <= {m['decile_max_contrast']}), {len(painted)} painted-out -> {out}")
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="val", choices=["train", "val", "test"])
    ap.add_argument("--out", type=Path, required=True, help="where the images go (reused when already made)")
    ap.add_argument("--data", default=None, help="HAM10000 root (default: as the training package finds it)")
    ap.add_argument("--seed", type=int, default=1, help="the damage set's seed (image per lesion, painting)")
    ap.add_argument("--decile", type=float, default=0.1, help="share of lowest-contrast lesions")
    ap.add_argument("--lesiond", default=str(REPO / "target/release/lesiond"))
    ap.add_argument("--config", default=None, help="config whose [checks] to use (default: embedded)")
    ap.add_argument("--json", action="store_true", help="also print every image's figures as JSON")
    a = ap.parse_args()
    root = Path(a.data) if a.data else data_root(None)
    m = build(a.out, root, a.split, a.seed, a.decile)
    faint = run_checks(a.lesiond, a.config, sorted((a.out / "faint").glob("*.jpg")))
    painted = run_checks(a.lesiond, a.config, sorted((a.out / "painted").glob("*.jpg")))
    failed = lambda r: r["checks"]["failed"]
    nf, npn = max(len(faint), 1), max(len(painted), 1)
    res = {
        "split": a.split,
        "decile_images": len(faint),
        "decile_max_contrast": m["decile_max_contrast"],
        "decile_found": sum(r["lesion_in_view"] for r in faint.values()) / nf,
        "decile_not_no_lesion": sum("no_lesion" not in failed(r) for r in faint.values()) / nf,
        "decile_centred": sum(r["lesion_in_view"] and "lesion_off_centre" not in failed(r) for r in faint.values()) / nf,
        "painted_images": len(painted),
        "painted_no_lesion": sum(not r["lesion_in_view"] for r in painted.values()) / npn,
        "painted_fail_no_lesion": sum("no_lesion" in failed(r) for r in painted.values()) / npn,
    }
    ms = sorted(r["ms"] for s in (faint, painted) for r in s.values())
    if ms:
        res["check_ms_p50"] = statistics.median(ms)
        res["check_ms_p95"] = ms[int(0.95 * (len(ms) - 1))]
    for k, v in res.items():
        print(f"{k:28s} {round(v, 4) if isinstance(v, float) else v}")
    first = {}
    for r in faint.values():
        f = failed(r)[0] if failed(r) else "passed"
        first[f] = first.get(f, 0) + 1
    print("decile, first failed check:", dict(sorted(first.items())))
    if a.json:
        c = {f["image_id"]: f["contrast"] for f in m["faint"]}
        dump = {"summary": res,
                "faint": {k: {"contrast": c.get(k), **v} for k, v in faint.items()},
                "painted": painted}
        (a.out / "checks.json").write_text(json.dumps(dump) + "\n")
        print(f"figures -> {a.out / 'checks.json'}")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Measures each per-frame check on its own against generated damage of test-split images.

Input: a damage set made by `python -m lesion_training damage --out DIR` (sharp originals at
640x480, Gaussian blur, exposure changes, painted-out skin, everyday photos, synthetic scenes).
Runs `lesiond checks` (the daemon's own code and thresholds) on every image and prints, per
check, how often it fires. Standard library only.

    python3 scripts/measure_checks.py --damage DIR [--lesiond target/release/lesiond] [--config FILE]
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path


def run_checks(lesiond, config, files):
    out = {}
    for i in range(0, len(files), 200):
        cmd = [lesiond, "checks"] + (["--config", config] if config else []) + [str(f) for f in files[i:i + 200]]
        p = subprocess.run(cmd, capture_output=True, text=True)
        for line in p.stdout.splitlines():
            row = json.loads(line)
            out[Path(row["image"]).name] = row
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--damage", required=True, type=Path)
    ap.add_argument("--lesiond", default="target/release/lesiond")
    ap.add_argument("--config", default=None, help="config whose [checks] to use (default: embedded)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rel_min = 0.65
    if a.config:
        import tomllib
        written = tomllib.loads(Path(a.config).read_text())
        # As lesiond reads it: [examination], else the old [checks] name.
        rel_min = written.get("examination", {}).get("focus_relative_min", written.get("checks", {}).get("focus_relative_min", rel_min))
    sets = {}
    for d in sorted(p for p in a.damage.iterdir() if p.is_dir()):
        files = sorted(d.glob("*.jpg")) + sorted(d.glob("*.png"))
        sets[d.name] = run_checks(a.lesiond, a.config, files)
    failed = lambda r: r["checks"]["failed"]
    sharp = sets["sharp"]
    res = {}
    # Exposure: too_dark / too_bright on the exposure-shifted copies, and on the originals.
    expo = lambda r: any(c in ("too_dark", "too_bright") for c in failed(r))
    for k in ("sharp", "ev-1.0", "ev+1.0", "ev-1.5", "ev+1.5"):
        if k in sets:
            v = list(sets[k].values())
            res[f"exposure_rejects_{k}"] = sum(map(expo, v)) / len(v)
    # Focus, as the examination judges it: below the absolute floor, or below focus_relative_min
    # of the sharpest frame of the examination (here: the sharp original of the same image).
    for k in ("blur4", "blur6", "blur8"):
        if k not in sets:
            continue
        n = rej = rej_abs = 0
        for name, r in sets[k].items():
            s = sharp.get(name)
            if s is None:
                continue
            n += 1
            absolute = "out_of_focus" in failed(r)
            rel = r["checks"]["focus"] < rel_min * max(s["checks"]["focus"], r["checks"]["focus"])
            rej_abs += absolute
            rej += absolute or rel
        res[f"focus_rejects_{k}"] = rej / n
        res[f"focus_rejects_{k}_absolute_floor_only"] = rej_abs / n
    res["focus_accepts_sharp"] = sum("out_of_focus" not in failed(r) for r in sharp.values()) / len(sharp)
    # Lesion presence.
    res["lesion_in_view_sharp"] = sum(r["lesion_in_view"] for r in sharp.values()) / len(sharp)
    for k in ("painted", "photos", "synthetic"):
        if k in sets:
            v = list(sets[k].values())
            res[f"no_lesion_{k}"] = sum(not r["lesion_in_view"] for r in v) / len(v)
    res["usable_sharp"] = sum(not failed(r) for r in sharp.values()) / len(sharp)
    ms = [r["ms"] for s in sets.values() for r in s.values()]
    res["check_ms_p50"] = statistics.median(ms)
    res["check_ms_p95"] = sorted(ms)[int(0.95 * (len(ms) - 1))]
    res["images"] = {k: len(v) for k, v in sets.items()}
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        for k, v in res.items():
            print(f"{k:45s} {v if isinstance(v, dict) else round(v, 4)}")
        print("\nwhy sharp originals were not usable:", dict(sorted(count(sharp).items())))
        for k in ("painted", "photos", "synthetic"):
            if k in sets:
                print(f"{k} seen as lesion:", [n for n, r in sets[k].items() if r["lesion_in_view"]][:12])


def count(s):
    c = {}
    for r in s.values():
        for f in r["checks"]["failed"][:1]:
            c[f] = c.get(f, 0) + 1
    return c


if __name__ == "__main__":
    sys.exit(main())

"""The refer operating point: thresholds on calibrated probabilities above which a lesion is
flagged for referral, chosen on the validation split **by lesion** and measured on the test
split, with bootstrap intervals.

The probabilities are the daemon's own: `lesiond classify --json` on the shipped int8 model (its
engine, preprocessing and calibration), so what is measured is what a station publishes. A
lesion's probabilities are the mean over its images (the examination averages frames the same
way). Test results are also counted per image from the daemon's own `refer` flag, which checks
that Rust applies the thresholds as chosen here.

numpy only (runs in the small videos venv as well as the training one).
"""
from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

import numpy as np

from .paths import CLASSES, REPO

# (rule name, classes whose probabilities are summed, sensitivity to reach on validation lesions)
RULES = [("melanoma", ("mel",), 0.95), ("bcc_akiec", ("bcc", "akiec"), 0.90)]
BENIGN = ("nv", "bkl", "df", "vasc")
BOOTSTRAP = 2000
SECTION_START = "<!-- operating-point:start -->"
SECTION_END = "<!-- operating-point:end -->"


def classify(lesiond: str, images: list[Path], batch: int = 200) -> dict[str, dict]:
    """image_id -> the daemon's JSON line for it."""
    out = {}
    for i in range(0, len(images), batch):
        # From the repository root: the daemon's embedded default config names models/ relative to it.
        p = subprocess.run([lesiond, "classify", "--json", *(str(Path(f).resolve()) for f in images[i:i + batch])],
                           capture_output=True, text=True, check=True, cwd=REPO)
        for line in p.stdout.splitlines():
            row = json.loads(line)
            out[Path(row["image"]).stem] = row
    return out


def read_jsonl(path: Path) -> dict[str, dict]:
    rows = (json.loads(l) for l in path.read_text().splitlines() if l.strip())
    return {Path(r["image"]).stem: r for r in rows}


def split_rows(split_csv: Path, split: str) -> list[dict]:
    with open(split_csv, newline="") as f:
        return [r for r in csv.DictReader(f) if r["split"] == split]


def lesion_table(rows: list[dict], results: dict[str, dict]):
    """(dx per lesion, mean probability matrix lesions x classes in CLASSES order)."""
    by_lesion: dict[str, list] = {}
    dx = {}
    for r in rows:
        res = results.get(r["image_id"])
        if res is None:
            raise SystemExit(f"no result for {r['image_id']}")
        by_lesion.setdefault(r["lesion_id"], []).append([res["probabilities"][c] for c in CLASSES])
        dx[r["lesion_id"]] = r["dx"]
    ids = sorted(by_lesion)
    return np.array([dx[i] for i in ids]), np.array([np.mean(by_lesion[i], 0) for i in ids])


def rule_score(p: np.ndarray, classes) -> np.ndarray:
    """The summed probability of a rule's classes, in float32 and in the rule's class order, as
    the daemon adds and compares them (a float64 score can land on the other side of a float32
    threshold)."""
    p = p.astype(np.float32)
    score = np.zeros(len(p), np.float32)
    for c in classes:
        score = score + p[:, CLASSES.index(c)]
    return score


def choose_threshold(score: np.ndarray, positive: np.ndarray, target: float) -> float:
    """The highest threshold at which `score >= threshold` finds at least `target` of the
    positives: the k-th highest positive score, k = ceil(target * positives)."""
    pos = np.sort(score[positive])[::-1]
    k = max(1, math.ceil(target * len(pos) - 1e-9))
    # A float32 score printed as a float: it reads back as the same float32.
    return float(pos[k - 1])


def fires(p: np.ndarray, thresholds: dict[str, float]) -> dict[str, np.ndarray]:
    return {name: rule_score(p, classes) >= np.float32(thresholds[name]) for name, classes, _ in RULES}


def rates(dx: np.ndarray, fired: dict[str, np.ndarray]) -> dict[str, float]:
    """Sensitivities and specificities of each rule and of the flag (any rule)."""
    refer = np.any(list(fired.values()), 0)
    mel = dx == "mel"
    bcc_akiec = np.isin(dx, ["bcc", "akiec"])
    benign = np.isin(dx, BENIGN)
    mean = lambda m: float(m.mean()) if m.size else float("nan")
    return {
        "melanoma_sensitivity_rule": mean(fired["melanoma"][mel]),
        "bcc_akiec_sensitivity_rule": mean(fired["bcc_akiec"][bcc_akiec]),
        "melanoma_sensitivity": mean(refer[mel]),
        "bcc_akiec_sensitivity": mean(refer[bcc_akiec]),
        "benign_specificity": mean(~refer[benign]),
        "melanoma_rule_benign_specificity": mean(~fired["melanoma"][benign]),
        "referred_share": mean(refer),
    }


def with_intervals(dx: np.ndarray, fired: dict[str, np.ndarray], seed: int = 20181) -> dict:
    """Each rate with a 95 % percentile bootstrap interval (resampling the units: lesions or
    images) and the counts it comes from."""
    point = rates(dx, fired)
    rng = np.random.default_rng(seed)
    n = len(dx)
    samples = {k: [] for k in point}
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, n, n)
        r = rates(dx[i], {k: v[i] for k, v in fired.items()})
        for k, v in r.items():
            samples[k].append(v)
    out = {}
    for k, v in point.items():
        s = np.array(samples[k])
        s = s[~np.isnan(s)]
        lo, hi = (np.percentile(s, [2.5, 97.5]) if s.size else (float("nan"),) * 2)
        out[k] = {"value": round(v, 4), "ci95": [round(float(lo), 4), round(float(hi), 4)]}
    out["n"] = {"units": int(n), "mel": int((dx == "mel").sum()),
                "bcc_akiec": int(np.isin(dx, ["bcc", "akiec"]).sum()), "benign": int(np.isin(dx, BENIGN).sum())}
    return out


def build(val_rows, val_results, test_rows, test_results, model: dict) -> dict:
    vdx, vp = lesion_table(val_rows, val_results)
    thresholds = {}
    for name, classes, target in RULES:
        positive = np.isin(vdx, classes)
        thresholds[name] = choose_threshold(rule_score(vp, classes), positive, target)
    tdx, tp = lesion_table(test_rows, test_results)
    # Per image, from the daemon's own flag (when the results carry it) or the thresholds.
    img_dx = np.array([r["dx"] for r in test_rows])
    img_p = np.array([[test_results[r["image_id"]]["probabilities"][c] for c in CLASSES] for r in test_rows])
    img_fired = fires(img_p, thresholds)
    daemon_agrees = None
    referrals = [test_results[r["image_id"]].get("referral") for r in test_rows]
    abstained = np.array([test_results[r["image_id"]].get("abstain") is not None for r in test_rows])
    flagged = np.array([isinstance(x, dict) for x in referrals])
    if flagged.any() and (flagged | abstained).all():
        # The daemon's own flags are what is counted; the thresholds applied here must agree.
        # An image the daemon abstains on carries no flag (no answer either way): counted by
        # the thresholds, and the number of such images is reported next to the rates.
        ours = np.any(list(img_fired.values()), 0)
        theirs = np.array([x["refer"] if isinstance(x, dict) else o for x, o in zip(referrals, ours)])
        daemon_agrees = int((theirs[flagged] == ours[flagged]).sum())
        img_fired = {name: np.array([name in x["rules_fired"] if isinstance(x, dict) else f
                                     for x, f in zip(referrals, img_fired[name])]) for name, _, _ in RULES}
    version = f"{model['id']}@{model['sha256'][:12]}/refer-v1"
    return {
        "version": version,
        "model": {"id": model["id"], "sha256": model["sha256"]},
        "rules": [{"name": name, "classes": list(classes), "threshold": thresholds[name],
                   "target_sensitivity": target} for name, classes, target in RULES],
        "chosen_on": "validation split, by lesion (mean calibrated probabilities of a lesion's images)",
        "probabilities_from": "lesiond classify --json (the daemon's int8 model, calibration applied)",
        "validation_by_lesion": with_intervals(vdx, fires(vp, thresholds)),
        "test_by_lesion": with_intervals(tdx, fires(tp, thresholds)),
        "test_by_image": with_intervals(img_dx, img_fired),
        "test_by_image_daemon_flag_agrees": daemon_agrees,
        "test_images_flagged_by_daemon": int(flagged.sum()),
        "test_images_abstained": int(abstained.sum()),
        "test_melanoma_images_abstained": int((abstained & (img_dx == "mel")).sum()),
        "test_images": len(test_rows),
    }


def _fmt(r: dict) -> str:
    return f"{r['value']:.3f} ({r['ci95'][0]:.3f}-{r['ci95'][1]:.3f})"


def markdown(op: dict) -> str:
    """The model card's "Operating point" section, in plain words first."""
    th = {r["name"]: r["threshold"] for r in op["rules"]}
    rows = []
    for key, label in [("melanoma_sensitivity", "melanoma lesions referred (any rule)"),
                       ("melanoma_sensitivity_rule", "melanoma lesions referred by the melanoma rule"),
                       ("bcc_akiec_sensitivity", "bcc + akiec lesions referred (any rule)"),
                       ("benign_specificity", "benign lesions (nv, bkl, df, vasc) not referred"),
                       ("melanoma_rule_benign_specificity", "benign lesions not flagged by the melanoma rule"),
                       ("referred_share", "all lesions referred")]:
        rows.append(f"| {label} | {_fmt(op['validation_by_lesion'][key])} | {_fmt(op['test_by_lesion'][key])} "
                    f"| {_fmt(op['test_by_image'][key])} |")
    n = lambda part: op[part]["n"]
    return f"""{SECTION_START}
## Operating point: whom to refer

The station flags a lesion **refer** when the calibrated probability of melanoma is at least
**{th['melanoma']:.4f}**, or when the probabilities of basal cell carcinoma and actinic keratosis
together are at least **{th['bcc_akiec']:.4f}**. These thresholds are low on purpose: the model's
most likely class misses many melanomas (its top class is "mel" for about half of them), but it
still ranks them above most benign lesions. A referral threshold trades missed cancers against
benign lesions sent on; it was set so that, on the validation split, at least 95 % of melanomas
and 90 % of bcc + akiec lesions would be referred. For comparison, dermatologists reading
dermoscopy run at about 87 % sensitivity / 71 % specificity for melanoma (Haenssle et al. 2018).

What it means for a clinic: most lesions that are melanoma are flagged, and so are a good share of
benign ones. **Not flagged does not mean benign**: {100 * (1 - op['test_by_lesion']['melanoma_sensitivity']['value']):.0f} % of the test split's melanomas
were not flagged. The flag is decision support for whom to look at again, never a
diagnosis, and it says nothing when the station abstains.

Chosen on the validation split by lesion ({n('validation_by_lesion')['units']} lesions, {n('validation_by_lesion')['mel']} melanomas), measured
once on the test split ({n('test_by_lesion')['units']} lesions, {n('test_by_lesion')['mel']} melanomas; {op['test_images']} images). 95 % bootstrap
intervals in brackets ({BOOTSTRAP} resamples of lesions or images). Version `{op['version']}`
(`models/operating_point.json`, published with every flag).

| | validation, by lesion | test, by lesion | test, each image on its own |
|---|---|---|---|
{chr(10).join(rows)}

The per-image column counts the daemon's own `refer` flags (`lesiond classify --json`, the rules it
says fired); they agree with the thresholds applied in Python on {op['test_by_image_daemon_flag_agrees']} of the {op.get('test_images_flagged_by_daemon', op['test_images'])} images
the daemon answered. It abstains on {op.get('test_images_abstained', 0)} of the {op['test_images']} test images ({op.get('test_melanoma_images_abstained', 0)} of them melanomas;
"When the model abstains" above): those carry no flag and are counted here by the thresholds
applied to their probabilities.

Reproduce (from `training/`, after `cargo build --release`; numpy is all it needs, so the test
videos' venv will do; about 15 minutes on 2 cores: `lesiond classify --json` on the 1490 validation and
1498 test images):
`../target/videos-venv/bin/python -m lesion_training operating-point`
{SECTION_END}"""


def replace_section(card: str, section: str) -> str:
    if SECTION_START in card and SECTION_END in card:
        head, rest = card.split(SECTION_START, 1)
        return head + section + rest.split(SECTION_END, 1)[1]
    marker = "\n## Intended use"
    if marker in card:
        return card.replace(marker, "\n" + section + "\n" + marker, 1)
    return card.rstrip() + "\n\n" + section + "\n"

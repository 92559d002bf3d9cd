"""Checks of the refer operating point's arithmetic (numpy only).

Run from training/:  python -m unittest discover -s tests -v
"""
import sys
import unittest
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lesion_training import operating_point as OP  # noqa: E402
from lesion_training.paths import CLASSES  # noqa: E402


def result(mel=0.0, bcc=0.0, akiec=0.0):
    p = {c: 0.0 for c in CLASSES}
    p.update(mel=mel, bcc=bcc, akiec=akiec)
    p["nv"] = 1.0 - mel - bcc - akiec
    return {"probabilities": p}


class Threshold(unittest.TestCase):
    def test_highest_threshold_that_reaches_the_target(self):
        score = np.array([0.9, 0.5, 0.3, 0.1, 0.05, 0.2], np.float32)
        positive = np.array([True, True, True, True, False, False])
        # 4 positives, 75 % -> the 3rd highest positive score
        self.assertAlmostEqual(OP.choose_threshold(score, positive, 0.75), 0.3, places=6)
        self.assertAlmostEqual(OP.choose_threshold(score, positive, 0.95), 0.1, places=6)
        t = OP.choose_threshold(score, positive, 0.95)
        self.assertGreaterEqual((score[positive] >= np.float32(t)).mean(), 0.95 - 1e-9)


class ByLesion(unittest.TestCase):
    def test_lesion_probabilities_are_the_mean_of_its_images(self):
        rows = [{"image_id": "a", "lesion_id": "L1", "dx": "mel"}, {"image_id": "b", "lesion_id": "L1", "dx": "mel"},
                {"image_id": "c", "lesion_id": "L2", "dx": "nv"}]
        res = {"a": result(mel=0.2), "b": result(mel=0.0), "c": result(mel=0.05)}
        dx, p = OP.lesion_table(rows, res)
        self.assertEqual(list(dx), ["mel", "nv"])
        self.assertAlmostEqual(p[0, CLASSES.index("mel")], 0.1)

    def test_rates_count_the_flag_on_the_right_lesions(self):
        dx = np.array(["mel", "mel", "bcc", "nv", "nv", "bkl"])
        fired = {"melanoma": np.array([True, False, False, True, False, False]),
                 "bcc_akiec": np.array([False, False, True, False, False, False])}
        r = OP.rates(dx, fired)
        self.assertEqual(r["melanoma_sensitivity"], 0.5)
        self.assertEqual(r["bcc_akiec_sensitivity"], 1.0)
        self.assertAlmostEqual(r["benign_specificity"], 2 / 3)

    def test_the_daemons_flags_are_what_is_counted(self):
        rows = [{"image_id": i, "lesion_id": i, "dx": d, "split": "x"} for i, d in
                [("a", "mel"), ("b", "nv"), ("c", "bcc"), ("d", "nv")]]
        res = {"a": result(mel=0.5), "b": result(mel=0.01), "c": result(bcc=0.6), "d": result(mel=0.6)}
        # A daemon that (wrongly) never refers: the test rates must show it, not the Python ones.
        daemon = {k: dict(v, referral={"refer": False, "rules_fired": [], "operating_point": "x"}) for k, v in res.items()}
        point = OP.build(rows, res, rows, daemon, {"id": "m", "sha256": "0" * 64})
        self.assertEqual(point["test_by_image"]["melanoma_sensitivity"]["value"], 0.0)
        self.assertEqual(point["test_by_image_daemon_flag_agrees"], 1)  # only "b" is not referred either way
        self.assertEqual(point["test_by_lesion"]["melanoma_sensitivity"]["value"], 1.0)


if __name__ == "__main__":
    unittest.main()

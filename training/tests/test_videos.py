"""Cheap checks of the video / damage-set generator (numpy + Pillow only).

Run from training/:  python -m unittest discover -s tests -v
The plan checks need HAM10000 (--data / $LESIOND_DATA / ../shared/data/ham10000) and skip without it.
"""
import json
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lesion_training import scenes as S  # noqa: E402
from lesion_training import videos as V  # noqa: E402
from lesion_training.paths import data_root  # noqa: E402

ROOT = data_root()
HAVE_DATA = (ROOT / "images").is_dir() and (ROOT / "masks").is_dir()


class Ops(unittest.TestCase):
    def test_exposure_is_linear_light(self):
        a = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, 2)
        np.testing.assert_array_equal(S.exposure(a, 0.0), a)
        up = S.exposure(a, 1.0).astype(int)
        self.assertTrue((up >= a).all())
        # sRGB 0.5 (level 128) is linear 0.216; x2 -> 0.432 -> sRGB ~ 0.69 (level ~175)
        self.assertAlmostEqual(int(S.exposure(np.full((1, 1, 3), 128, np.uint8), 1.0)[0, 0, 0]), 175, delta=1)
        # +3 EV: linear >= 1/8 (sRGB level >= ~99) clips to white
        self.assertTrue((S.exposure(a, 3.0)[a >= 100] == 255).all())

    def test_blur_and_motion_blur_keep_shape(self):
        rng = np.random.default_rng(0)
        a = rng.integers(0, 256, (S.H, S.W, 3), dtype=np.uint8)
        for b in (S.gaussian_blur(a, 4), S.gaussian_blur(a, 12, fast=True), S.motion_blur(a, 30, 0.4)):
            self.assertEqual(b.shape, a.shape)
            self.assertEqual(b.dtype, np.uint8)
            self.assertLess(b.astype(float).std(), a.astype(float).std() * 0.5)

    def test_synthetic_scenes(self):
        for k in S.SYNTHETIC_KINDS:
            a = S.synthetic_scene(k, np.random.default_rng(1))
            self.assertEqual(a.shape, (S.H, S.W, 3))


@unittest.skipUnless(HAVE_DATA, f"HAM10000 not at {ROOT}")
class Plans(unittest.TestCase):
    def test_same_seed_same_manifest_and_frames(self):
        p1 = V.make_plan(ROOT, seed=5, visits=3)
        p2 = V.make_plan(ROOT, seed=5, visits=3)
        self.assertEqual(json.dumps(V.manifest(p1)), json.dumps(V.manifest(p2)))
        p3 = V.make_plan(ROOT, seed=6, visits=3)
        self.assertNotEqual(json.dumps(V.manifest(p1)), json.dumps(V.manifest(p3)))
        for i in (0, p1.n // 2, p1.n - 1):
            V._VIEWS.clear()
            a = V.render_frame(p1, p1.frames[i])
            V._VIEWS.clear()
            b = V.render_frame(p2, p2.frames[i])
            np.testing.assert_array_equal(a, b)

    def test_segments_tile_the_video(self):
        m = V.manifest(V.make_plan(ROOT, seed=2, visits=7))
        segs = m["segments"]
        self.assertEqual([s["kind"] for s in segs], ["idle", "visit"] * 7 + ["idle"])
        self.assertEqual(segs[0]["first"], 1)
        self.assertEqual(segs[-1]["last"], m["frames"])
        for a, b in zip(segs, segs[1:]):
            self.assertEqual(b["first"], a["last"] + 1)
        for s in segs:
            if s["kind"] == "visit":
                self.assertEqual(s["approach"][0], s["first"])
                self.assertEqual(s["hold"][0], s["approach"][1] + 1)
                self.assertEqual(s["removal"], [s["hold"][1] + 1, s["last"]])
                self.assertGreaterEqual(s["hold"][1] - s["hold"][0] + 1, int(2.5 * 15) - 1)
        self.assertEqual(len({s["dx"] for s in segs if s["kind"] == "visit"}), 7)

    def test_writes_frames(self):
        with tempfile.TemporaryDirectory() as d:
            m = V.write_video(Path(d), ROOT, seed=3, visits=1, log=lambda *_: None)
            fs = sorted((Path(d) / "frames").glob("f*.jpg"))
            self.assertEqual(len(fs), m["frames"])
            self.assertEqual(fs[0].name, "f000001.jpg")


if __name__ == "__main__":
    unittest.main()

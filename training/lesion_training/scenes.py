"""Shared helpers for the examination-video generator and the damage set (issue 12).

numpy + Pillow only (CI installs just training/requirements-videos.txt for these modules).

Frames are 640x480 RGB like the station's camera. HAM10000 images are 200x150 (4:3 as well) and are
bicubically upscaled, so "sharp" means as sharp as those images allow. All sigma / length / offset
values are in pixels at 640 px width.
"""
from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .paths import CACHE, CLASSES, REPO, SPLIT_CSV, sha256_file

W, H = 640, 480
SRC_W, SRC_H = 200, 150
JPEG_QUALITY = 92

# ------------------------------------------------------------------------------------ HAM10000


def read_split(path: Path = SPLIT_CSV) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def ham_image_path(root: Path, image_id: str) -> Path:
    return Path(root) / "images" / f"{image_id}.jpg"


def ham_mask_path(root: Path, image_id: str) -> Path:
    return Path(root) / "masks" / f"{image_id}_segmentation.png"


def load_ham_small(root: Path, image_id: str) -> np.ndarray:
    """The 200x150 image as uint8 HxWx3."""
    im = Image.open(ham_image_path(root, image_id)).convert("RGB")
    if im.size != (SRC_W, SRC_H):
        im = im.resize((SRC_W, SRC_H), Image.BICUBIC, reducing_gap=None)
    return np.asarray(im)


def load_ham_640(root: Path, image_id: str) -> np.ndarray:
    """A HAM image at the camera's 640x480 (bicubic upscale of the 200x150 file)."""
    return upscale(load_ham_small(root, image_id))


def load_mask_small(root: Path, image_id: str) -> np.ndarray | None:
    p = ham_mask_path(root, image_id)
    if not p.exists():
        return None
    m = Image.open(p).convert("L")
    if m.size != (SRC_W, SRC_H):
        m = m.resize((SRC_W, SRC_H), Image.NEAREST)
    return np.asarray(m) >= 128


def upscale(a: np.ndarray, size=(W, H)) -> np.ndarray:
    return np.asarray(Image.fromarray(a).resize(size, Image.BICUBIC))


def one_per_lesion(rows: list[dict], split: str, rng: np.random.Generator) -> list[dict]:
    """One row per lesion_id of `split`, the image chosen by `rng`; ordered by lesion_id."""
    by = {}
    for r in rows:
        if r["split"] == split:
            by.setdefault(r["lesion_id"], []).append(r)
    out = []
    for lid in sorted(by):
        imgs = sorted(by[lid], key=lambda r: r["image_id"])
        out.append(imgs[int(rng.integers(len(imgs)))])
    return out


def stratified(lesions: list[dict], n: int, rng: np.random.Generator) -> list[dict]:
    """n lesions spread evenly over the 7 classes (round robin in a seeded class order, a seeded
    lesion order within each class), then shuffled."""
    pools = {c: [r for r in lesions if r["dx"] == c] for c in CLASSES}
    for c in CLASSES:
        rng.shuffle(pools[c])
    order = list(CLASSES)
    rng.shuffle(order)
    out, i = [], 0
    while len(out) < n and any(pools.values()):
        c = order[i % len(order)]
        if pools[c]:
            out.append(pools[c].pop())
        i += 1
    rng.shuffle(out)
    return out


# ------------------------------------------------------------------------------ lesion contrast
CONTRAST_FIELD_RADIUS = 0.97  # the lesion check's field (src/checks/lesion.rs)
CONTRAST_BLACK = 0.06
CONTRAST_MIN_SHARE = 0.02


def lesion_contrast(small: np.ndarray, mask: np.ndarray | None) -> float | None:
    """How far a lesion stands out, from its mask, at the lesion check's own scale: in the check's
    field (normalised elliptical radius < 0.97, luminance > 0.06, so a dermatoscope's black corners
    are not skin), the mean Rec. 601 luminance (0..1) of the skin (mask 0) minus that of the lesion
    (mask 255). None when the field holds under 2 % of either (no defined contrast)."""
    if mask is None:
        return None
    y = small.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255.0
    h, w = y.shape
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((xx + 0.5 - w / 2) / (w / 2), (yy + 0.5 - h / 2) / (h / 2))
    field = (r < CONTRAST_FIELD_RADIUS) & (y > CONTRAST_BLACK)
    les, skin = field & mask, field & ~mask
    n = field.sum()
    if n == 0 or les.sum() < CONTRAST_MIN_SHARE * n or skin.sum() < CONTRAST_MIN_SHARE * n:
        return None
    return float(y[skin].mean() - y[les].mean())


def lowest_contrast(root: Path, rows: list[dict], share: float = 0.1) -> list[tuple[float, dict]]:
    """The `share` of `rows` (rounded up) with the lowest `lesion_contrast`, lowest first, as
    (contrast, row); rows without a defined contrast are left out."""
    scored = []
    for r in rows:
        c = lesion_contrast(load_ham_small(root, r["image_id"]), load_mask_small(root, r["image_id"]))
        if c is not None:
            scored.append((c, r))
    scored.sort(key=lambda t: (t[0], t[1]["image_id"]))
    return scored[:int(np.ceil(share * len(scored)))]


# ------------------------------------------------------------------------------- painted-out skin
def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    out = m.copy()
    for _ in range(r):
        d = out.copy()
        d[1:] |= out[:-1]
        d[:-1] |= out[1:]
        d[:, 1:] |= out[:, :-1]
        d[:, :-1] |= out[:, 1:]
        out = d
    return out


def paintable(mask: np.ndarray | None, max_cover: float = 0.35, max_border: float = 0.05) -> bool:
    """A mask the skin can be painted over: lesion <= max_cover of the image and touching at most
    max_border of the 3 px border ring."""
    if mask is None or not mask.any():
        return False
    if mask.mean() > max_cover:
        return False
    ring = np.ones_like(mask)
    ring[3:-3, 3:-3] = False
    return mask[ring].mean() <= max_border


def _harmonic_fill(img: np.ndarray, hole: np.ndarray, iters: int = 60) -> np.ndarray:
    """Fill `hole` of float HxWxC `img` with the harmonic (membrane) interpolation of its boundary:
    coarse-to-fine Jacobi iterations (masked-average pyramid)."""
    h, w = hole.shape
    known = ~hole
    if min(h, w) > 12 and hole.any():
        # half resolution: average of the known pixels of each 2x2 block
        hh, ww = (h + 1) // 2, (w + 1) // 2
        ph, pw = hh * 2 - h, ww * 2 - w
        kp = np.pad(known.astype(np.float32), ((0, ph), (0, pw)))
        ip = np.pad(img * known[..., None], ((0, ph), (0, pw), (0, 0)))
        ks = kp.reshape(hh, 2, ww, 2).sum((1, 3))
        is_ = ip.reshape(hh, 2, ww, 2, -1).sum((1, 3))
        small = is_ / np.maximum(ks, 1e-6)[..., None]
        small_hole = ks < 0.5
        small = _harmonic_fill(small, small_hole, iters)
        up = np.repeat(np.repeat(small, 2, 0), 2, 1)[:h, :w]
        u = np.where(hole[..., None], up, img)
    else:
        mean = img[known].mean(0) if known.any() else np.full(img.shape[-1], 128.0)
        u = np.where(hole[..., None], mean, img)
    for _ in range(iters):
        p = np.pad(u, ((1, 1), (1, 1), (0, 0)), mode="edge")
        avg = (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]) * 0.25
        u = np.where(hole[..., None], avg, u)
    return u


def _box_blur(a: np.ndarray, r: int) -> np.ndarray:
    """Separable box blur with edge replication (float HxWxC)."""
    k = 2 * r + 1
    p = np.pad(a, ((r, r), (0, 0), (0, 0)), mode="edge")
    c = np.cumsum(np.concatenate([np.zeros_like(p[:1]), p], 0), 0)
    a = (c[k:] - c[:-k]) / k
    p = np.pad(a, ((0, 0), (r, r), (0, 0)), mode="edge")
    c = np.cumsum(np.concatenate([np.zeros_like(p[:, :1]), p], 1), 1)
    return (c[:, k:] - c[:, :-k]) / k


def paint_out(small: np.ndarray, mask: np.ndarray, rng: np.random.Generator, dilate: int = 7,
              block: int = 24) -> np.ndarray:
    """Remove the lesion from a 200x150 image: dilate the mask, fill it harmonically from the
    surrounding skin, and add skin texture (the high-pass residual of the skin, copied in
    overlapping feathered blocks from random lesion-free places). Returns uint8 200x150x3."""
    img = small.astype(np.float32)
    hole = _dilate(mask, dilate)
    base = _harmonic_fill(img, hole)
    # skin texture: residual against a smooth version (three box passes ~ Gaussian sigma ~3.5 px at 200 px)
    low = _box_blur(_box_blur(_box_blur(img, 3), 3), 3)
    resid = img - low
    ok = ~_dilate(mask, dilate + 4)
    h, w = mask.shape
    # integral image of `ok` to test candidate source blocks quickly
    ii = np.pad(ok.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    def frac_ok(y, x, b):
        return (ii[y + b, x + b] - ii[y, x + b] - ii[y + b, x] + ii[y, x]) / (b * b)

    acc = np.zeros_like(img)
    wsum = np.zeros((h, w, 1), np.float32)
    win1 = np.sin(np.linspace(0, np.pi, block + 2)[1:-1]).astype(np.float32)
    win = np.outer(win1, win1)[..., None]
    ys, xs = np.nonzero(hole)
    y0, y1 = max(ys.min() - block // 2, 0), min(ys.max() + block // 2, h - block)
    x0, x1 = max(xs.min() - block // 2, 0), min(xs.max() + block // 2, w - block)
    step = block // 2
    for by in range(y0, max(y1, y0) + 1, step):
        for bx in range(x0, max(x1, x0) + 1, step):
            if not hole[by:by + block, bx:bx + block].any():
                continue
            best, bf = None, -1.0
            for _ in range(40):
                sy, sx = int(rng.integers(0, h - block + 1)), int(rng.integers(0, w - block + 1))
                f = frac_ok(sy, sx, block)
                if f > bf:
                    best, bf = (sy, sx), f
                if f >= 0.999:
                    break
            sy, sx = best
            patch = resid[sy:sy + block, sx:sx + block]
            acc[by:by + block, bx:bx + block] += win * patch
            wsum[by:by + block, bx:bx + block] += win * win
    tex = acc / np.sqrt(np.maximum(wsum, 1e-6))
    out = np.where(hole[..., None], base + tex, img)
    # soften the seam: blend over a 2 px band at the hole's edge
    edge = _dilate(hole, 2) & ~_dilate(~hole, 2)
    soft = _box_blur(out, 1)
    out = np.where(edge[..., None], 0.5 * out + 0.5 * soft, out)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def clean_skin(painted: np.ndarray, ratio: float = 0.8) -> bool:
    """True when a painted-out image shows no other spot: inside the central ellipse (away from the
    dermatoscope's dark corners), the smoothed luminance nowhere falls below `ratio` x its median."""
    y = painted.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    y = _box_blur(_box_blur(y[..., None], 3), 3)[..., 0]
    h, w = y.shape
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((yy - h / 2) / (0.45 * h)) ** 2 + ((xx - w / 2) / (0.45 * w)) ** 2 <= 1
    return float(y[inside].min()) >= ratio * float(np.median(y[inside]))


def painted_candidates(root: Path, rows: list[dict]) -> list[dict]:
    """Rows whose mask qualifies for painting out (in the given order)."""
    return [r for r in rows if paintable(load_mask_small(root, r["image_id"]))]


def painted_skin_small(root: Path, image_id: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, int(hashlib.sha256(image_id.encode()).hexdigest()[:8], 16)])
    return paint_out(load_ham_small(root, image_id), load_mask_small(root, image_id), rng)


# ---------------------------------------------------------------------------- everyday photos
# Photos shipped inside PyPI wheels: downloaded with `pip download --no-deps` (never installed),
# checked against these sha256s, and read with zipfile. CPython 3.11 x86_64 manylinux wheels.
PHOTO_WHEELS = {
    "scikit-image": ("0.26.0", "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
                     "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af"),
    "scikit-learn": ("1.9.1", "scikit_learn-1.9.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
                     "52a0703bbc07ad27f560fa63fa68e4c54dd735bfbbf65b4dd3c225dc7547b6df"),
    "matplotlib": ("3.11.2", "matplotlib-3.11.2-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
                   "07d9b9fa60cd4c393692f50d0bb03123242ddf61c99bb0e95e75feb354e7c1a8"),
}
# member paths inside each wheel (photographs only: no charts, logos, masks, tiny or synthetic files)
PHOTO_MEMBERS = {
    "scikit-image": [f"skimage/data/{n}" for n in (
        "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png",
        "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
        "motorcycle_left.png", "page.png", "retina.jpg", "rocket.jpg", "text.png")],
    "scikit-learn": ["sklearn/datasets/images/china.jpg", "sklearn/datasets/images/flower.jpg"],
    "matplotlib": ["matplotlib/mpl-data/sample_data/grace_hopper.jpg"],
}
PHOTO_WHEEL_DIR = CACHE / "photo-wheels"
PHOTOS_DIR = REPO / "target" / "photos"


def fetch_photo_wheels(cache: Path = PHOTO_WHEEL_DIR) -> dict[str, Path]:
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for pkg, (ver, fname, sha) in PHOTO_WHEELS.items():
        p = cache / fname
        if not p.exists():
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
                            "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
                            f"{pkg}=={ver}", "-d", str(cache)], check=True)
        if not p.exists():
            raise SystemExit(f"pip did not fetch {fname} into {cache}")
        got = sha256_file(p)
        if got != sha:
            raise SystemExit(f"sha256 mismatch for {p}: {got} != {sha}")
        out[pkg] = p
    return out


def extract_photos(out_dir: Path = PHOTOS_DIR, cache: Path = PHOTO_WHEEL_DIR, log=print) -> list[Path]:
    """Photos from the pinned wheels into out_dir as <package>_<name>.png (original size, RGB)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wheels = fetch_photo_wheels(cache)
    written = []
    for pkg, members in PHOTO_MEMBERS.items():
        with zipfile.ZipFile(wheels[pkg]) as z:
            for m in members:
                from io import BytesIO
                im = Image.open(BytesIO(z.read(m)))
                im = im.convert("RGB")
                name = f"{pkg}_{Path(m).stem}.png"
                dst = out_dir / name
                im.save(dst, optimize=False)
                written.append(dst)
                log(f"{dst}  {im.size[0]}x{im.size[1]}  from {wheels[pkg].name}:{m}")
    return written


def photo_files(photos_dir: Path = PHOTOS_DIR, log=print) -> list[Path]:
    """The extracted photos (extracting them first when any is missing: a folder left half
    written by an interrupted run must not make a video with fewer scenes). A folder given by
    hand with other photos is used as it is."""
    photos_dir = Path(photos_dir)
    fs = sorted(photos_dir.glob("*.png")) if photos_dir.is_dir() else []
    expected = {f"{pkg}_{Path(m).stem}.png" for pkg, members in PHOTO_MEMBERS.items() for m in members}
    names = {f.name for f in fs}
    if not fs or (names & expected and not expected <= names):
        log(f"photos missing in {photos_dir}: extracting them from the pinned wheels")
        extract_photos(photos_dir, log=log)
        fs = sorted(photos_dir.glob("*.png"))
    return fs


def fit_4x3(im: Image.Image, size=(W, H)) -> np.ndarray:
    """Centre-crop to 4:3 and resize (Lanczos) to size; uint8 RGB."""
    im = im.convert("RGB")
    w, h = im.size
    if w * 3 > h * 4:
        cw, ch = h * 4 // 3, h
    else:
        cw, ch = w, w * 3 // 4
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    im = im.crop((x0, y0, x0 + cw, y0 + ch))
    return np.asarray(im.resize(size, Image.LANCZOS))


def load_photo(path: Path) -> np.ndarray:
    return fit_4x3(Image.open(path))


# -------------------------------------------------------------------------- synthetic non-skin
SYNTHETIC_KINDS = ["flat", "gradient", "noise", "text", "checker", "stripes"]
_WORDS = ("clinic station lesion camera probe battery label patient room window paper table glove "
          "report monday visit scale focus light holder charger network update lotion bottle").split()


def synthetic_scene(kind: str, rng: np.random.Generator, size=(W, H)) -> np.ndarray:
    w, h = size
    col = lambda: rng.integers(0, 256, 3).astype(np.float32)  # noqa: E731
    if kind == "flat":
        return np.broadcast_to(col().astype(np.uint8), (h, w, 3)).copy()
    if kind == "gradient":
        a, b = col(), col()
        ang = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = (xx - w / 2) * np.cos(ang) + (yy - h / 2) * np.sin(ang)
        t = (t - t.min()) / (t.max() - t.min())
        return (a + (b - a) * t[..., None]).astype(np.uint8)
    if kind == "noise":
        # smooth coloured noise at a random scale
        s = int(rng.choice([4, 8, 16, 32]))
        small = rng.integers(0, 256, (h // s + 1, w // s + 1, 3), dtype=np.uint8)
        im = Image.fromarray(small).resize((w + s, h + s), Image.BICUBIC)
        return np.asarray(im)[:h, :w].copy()
    if kind == "text":
        bg = int(rng.integers(225, 256))
        im = Image.new("RGB", size, (bg, bg, max(bg - int(rng.integers(0, 20)), 0)))
        d = ImageDraw.Draw(im)
        fs = int(rng.integers(18, 44))
        try:
            font = ImageFont.load_default(size=fs)
        except TypeError:  # Pillow without FreeType
            font = ImageFont.load_default()
        y = int(rng.integers(5, 30))
        ink = tuple(int(v) for v in rng.integers(0, 80, 3))
        while y < h:
            line = " ".join(rng.choice(_WORDS, int(rng.integers(3, 8))))
            d.text((int(rng.integers(5, 40)), y), line, fill=ink, font=font)
            y += int(fs * rng.uniform(1.3, 1.8))
        return np.asarray(im)
    if kind == "checker":
        s = int(rng.integers(16, 80))
        yy, xx = np.mgrid[0:h, 0:w]
        m = ((yy // s + xx // s) % 2).astype(bool)
        a, b = col(), col()
        return np.where(m[..., None], a, b).astype(np.uint8)
    if kind == "stripes":
        period = rng.uniform(10, 60)
        ang = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(ang) + yy * np.sin(ang)) / period)
        a, b = col(), col()
        return (a + (b - a) * t[..., None]).astype(np.uint8)
    raise ValueError(kind)


# ------------------------------------------------------------------------------------ image ops
_LEVELS = np.arange(256, dtype=np.float64) / 255.0
_LIN = np.where(_LEVELS <= 0.04045, _LEVELS / 12.92, ((_LEVELS + 0.055) / 1.055) ** 2.4)


def _to_srgb(lin: np.ndarray) -> np.ndarray:
    lin = np.clip(lin, 0.0, 1.0)
    return np.where(lin <= 0.0031308, lin * 12.92, 1.055 * np.power(lin, 1 / 2.4) - 0.055)


def gain_lut(gain) -> np.ndarray:
    """uint8 LUT(s) for a linear-light gain: sRGB -> linear, x gain, clip, -> sRGB.
    gain: scalar or per-channel (3,) -> (256,) or (3, 256)."""
    g = np.asarray(gain, dtype=np.float64)
    v = _to_srgb(_LIN[None, :] * g.reshape(-1, 1)) if g.ndim else _to_srgb(_LIN * float(g))
    return np.clip(np.rint(v * 255.0), 0, 255).astype(np.uint8)


def apply_gain(a: np.ndarray, gain) -> np.ndarray:
    lut = gain_lut(gain)
    if lut.ndim == 1:
        return lut[a]
    out = np.empty_like(a)
    for c in range(3):
        out[..., c] = lut[c][a[..., c]]
    return out


def exposure(a: np.ndarray, ev: float) -> np.ndarray:
    """Exposure change by `ev` stops, done in linear light."""
    return apply_gain(a, 2.0 ** ev)


def darken(a: np.ndarray, f: float) -> np.ndarray:
    """Towards black: f=0 unchanged, f=1 black (linear-light gain 1-f)."""
    return apply_gain(a, max(1.0 - f, 0.0))


def gaussian_blur(a: np.ndarray, sigma: float, fast: bool = False) -> np.ndarray:
    """Gaussian blur, sigma in pixels of `a` (Pillow's GaussianBlur radius is the standard deviation).
    fast (videos): from sigma 4 on, blur at half resolution (sigma / 2) and upscale; same look, 3x faster."""
    if sigma <= 0.05:
        return a
    im = Image.fromarray(a)
    if fast and sigma >= 4:
        w, h = im.size
        small = im.resize((w // 2, h // 2), Image.BOX).filter(ImageFilter.GaussianBlur(sigma / 2))
        return np.asarray(small.resize((w, h), Image.BICUBIC))
    return np.asarray(im.filter(ImageFilter.GaussianBlur(sigma)))


def motion_blur(a: np.ndarray, length: float, angle: float) -> np.ndarray:
    """Line kernel of `length` px along `angle` (radians), edge replication."""
    if length < 1.5:
        return a
    n = int(np.ceil(length)) + 1
    dx, dy = np.cos(angle), np.sin(angle)
    ts = np.linspace(-0.5, 0.5, n) * length
    offs = sorted({(int(round(t * dy)), int(round(t * dx))) for t in ts})
    r = int(np.ceil(length / 2)) + 1
    p = np.pad(a, ((r, r), (r, r), (0, 0)), mode="edge")
    h, w = a.shape[:2]
    acc = np.zeros((h, w, 3), np.uint16)  # <= 257 taps * 255 fits
    for oy, ox in offs:
        acc += p[r + oy:r + oy + h, r + ox:r + ox + w]
    return ((acc + len(offs) // 2) // len(offs)).astype(np.uint8)


class NoiseBank:
    """Gaussian sensor noise from a bank of pre-drawn unit fields cropped at random offsets
    (drawing 0.9 M normals per frame was the slowest step of rendering)."""

    def __init__(self, seed: int = 0, n: int = 12, size=(W, H), margin: int = 64):
        rng = np.random.default_rng([seed, 99])
        w, h = size
        self.m = margin
        self.bank = rng.standard_normal((n, h + margin, w + margin, 3), dtype=np.float32)

    def add(self, a: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
        if sigma <= 0:
            return a
        h, w = a.shape[:2]
        k = int(rng.integers(len(self.bank)))
        oy, ox = (int(v) for v in rng.integers(0, self.m + 1, 2))
        out = self.bank[k, oy:oy + h, ox:ox + w] * np.float32(sigma)
        out += a
        np.clip(out, 0, 255, out=out)
        return np.rint(out, out=out).astype(np.uint8)


def add_noise(a: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian sensor noise, sigma in levels of 255."""
    if sigma <= 0:
        return a
    n = rng.standard_normal(a.shape, dtype=np.float32) * sigma
    return np.clip(np.rint(a + n), 0, 255).astype(np.uint8)


def orient(a: np.ndarray, flip: int) -> np.ndarray:
    """0 as is, 1 mirrored, 2 upside down, 3 rotated 180 degrees."""
    if flip == 1:
        a = a[:, ::-1]
    elif flip == 2:
        a = a[::-1]
    elif flip == 3:
        a = a[::-1, ::-1]
    return np.ascontiguousarray(a)


class View:
    """A source prepared for the camera: upscaled to 640x480 (bicubic), oriented, reflect-padded by
    `pad` of its size and rotated by `angle` radians; each frame is then a crop (integer shift: hand
    tremor, pans) or a bilinear affine resample of that smooth upscaled content (zoom, extra
    rotation, drift)."""

    def __init__(self, a: np.ndarray, flip: int = 0, angle: float = 0.0, pad: float = 0.75, size=(W, H)):
        w, h = size
        if a.shape[:2] != (h, w):
            a = upscale(a, size)
        a = orient(a, flip)
        self.px, self.py = int(w * pad), int(h * pad)
        p = np.pad(a, ((self.py, self.py), (self.px, self.px), (0, 0)), mode="symmetric")
        if abs(angle) > 1e-6:
            p = np.asarray(Image.fromarray(p).rotate(np.degrees(angle), Image.BICUBIC))
        self.arr = p
        self.im = None
        self.size = size

    def render(self, dx: float = 0.0, dy: float = 0.0, zoom: float = 1.0, angle: float = 0.0) -> np.ndarray:
        """Content shifted by (+dx, +dy) output px, zoomed about the centre, rotated by `angle`."""
        w, h = self.size
        if abs(zoom - 1) < 1e-6 and abs(angle) < 1e-6:
            ix = int(np.clip(round(dx), -self.px, self.px))
            iy = int(np.clip(round(dy), -self.py, self.py))
            return self.arr[self.py - iy:self.py - iy + h, self.px - ix:self.px - ix + w]
        if self.im is None:
            self.im = Image.fromarray(self.arr)
        s = 1.0 / zoom
        c, si = np.cos(angle), np.sin(angle)
        a, b = s * c, s * si
        d, e = -s * si, s * c
        cx, cy = w / 2 + dx, h / 2 + dy
        c0 = self.px + w / 2 - (a * cx + b * cy)
        f0 = self.py + h / 2 - (d * cx + e * cy)
        out = self.im.transform(self.size, Image.AFFINE, (a, b, c0, d, e, f0), resample=Image.BILINEAR)
        return np.asarray(out)


def save_jpeg(a: np.ndarray, path: Path, quality: int = JPEG_QUALITY):
    Image.fromarray(a).save(path, quality=quality)

"""Batch augmentation of preprocessed uint8 NHWC images (torch, CPU or CUDA)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_batch(x_uint8_nhwc: torch.Tensor, gen: torch.Generator | None = None, strength: float = 1.0,
                  rot_deg: float = 180.0, scale=(0.9, 1.25), jitter: float = 0.15) -> torch.Tensor:
    """Dermoscopy augmentation: flips, rotation (any angle, reflection padding), scale, small shift,
    brightness/contrast/saturation jitter. Returns float NCHW raw 0..255 pixels (rounded to integers,
    like a real uint8 input)."""
    x = x_uint8_nhwc.permute(0, 3, 1, 2).float()
    n, _, h, w = x.shape
    dev = x.device

    def U(lo, hi, size=(n,)):
        return torch.rand(size, generator=gen, device="cpu").to(dev) * (hi - lo) + lo

    ang = U(-rot_deg, rot_deg) * strength * math.pi / 180.0
    sc = torch.exp(U(math.log(scale[0]), math.log(scale[1])))  # >1 zooms in
    flip = torch.where(U(0, 1) < 0.5, -1.0, 1.0)
    tx, ty = U(-0.08, 0.08) * strength, U(-0.08, 0.08) * strength
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    aspect = w / h  # rotate in pixel space, not normalised space
    theta = torch.stack([
        torch.stack([cos * flip, -sin / aspect, tx], 1),
        torch.stack([sin * aspect * flip, cos, ty], 1),
    ], 1)
    if torch.rand(1, generator=gen).item() < 0.5:  # vertical flip for the batch half the time
        theta[:, 1, :2] = -theta[:, 1, :2]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # colour jitter
    j = jitter * strength
    b = U(1 - j, 1 + j).view(n, 1, 1, 1)
    c = U(1 - j, 1 + j).view(n, 1, 1, 1)
    s = U(1 - j, 1 + j).view(n, 1, 1, 1)
    x = x * b
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - m) * c + m
    g = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = (x - g) * s + g
    return x.clamp(0, 255).round()


# ------------------------------------------------------------------ what the station's camera does
# Applied after `augment_batch` (geometry + colour jitter) on float NCHW 0..255 pixels, on whatever device
# the batch is on (the GPU preset runs all of it on the GPU; the CPU preset runs the same code on the CPU).
# Order follows the imaging chain: dermatoscope optics (round vignette, blur) -> exposure and white balance
# -> sensor noise -> resampling to/from the camera's resolution -> JPEG recompression.
CAMERA = dict(p_vignette=0.3, p_blur=0.3, p_exposure=0.5, p_wb=0.5, p_noise=0.4, p_resample=0.3, p_jpeg=0.4,
              blur_sigma=(0.4, 1.6), exposure=0.35, wb=0.12, read_noise=(0.0, 5.0), shot_noise=(0.0, 0.8),
              resample=(0.35, 0.85), jpeg_quality=(30, 90))

_JPEG_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
              14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
              49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_JPEG_CHROMA = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
                47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32


def _dct_matrix(dev) -> torch.Tensor:
    k = torch.arange(8, dtype=torch.float32, device=dev)
    d = torch.cos((2 * k.view(1, 8) + 1) * k.view(8, 1) * math.pi / 16) * math.sqrt(2 / 8)
    d[0] = d[0] / math.sqrt(2)
    return d  # orthonormal DCT-II, rows = frequencies


def _jpeg_table(base, quality: torch.Tensor) -> torch.Tensor:
    q = quality.clamp(1, 100)
    s = torch.where(q < 50, 5000.0 / q, 200.0 - 2 * q)
    t = torch.tensor(base, dtype=torch.float32, device=q.device).view(1, 8, 8)
    return torch.floor((t * s.view(-1, 1, 1) + 50) / 100).clamp(1, 255)  # [n,8,8]


def _jpeg_plane(p: torch.Tensor, table: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """p [n,h,w] (h, w multiples of 8), table [n,8,8]: DCT, quantise, dequantise, inverse DCT."""
    n, h, w = p.shape
    b = (p - 128).view(n, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)  # [n,H8,W8,8,8]
    c = d @ b @ d.T
    t = table.view(n, 1, 1, 8, 8)
    c = torch.round(c / t) * t
    b = d.T @ c @ d
    return b.permute(0, 1, 3, 2, 4).reshape(n, h, w) + 128


def jpeg_recompress(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Baseline JPEG (YCbCr, 4:2:0 chroma, standard tables scaled by `quality` per image) simulated in torch.
    x float NCHW 0..255 with H, W multiples of 16; quality [n]."""
    n, _, h, w = x.shape
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
    d = _dct_matrix(x.device)
    y = _jpeg_plane(y.round(), _jpeg_table(_JPEG_LUMA, quality), d)
    cc = F.avg_pool2d(torch.stack([cb, cr], 1), 2)  # 4:2:0
    tc = _jpeg_table(_JPEG_CHROMA, quality)
    cc = torch.stack([_jpeg_plane(cc[:, i].round(), tc, d) for i in range(2)], 1)
    cc = F.interpolate(cc, size=(h, w), mode="bilinear", align_corners=False)
    cb, cr = cc[:, 0] - 128, cc[:, 1] - 128
    out = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return out.clamp(0, 255)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, k: int = 9) -> torch.Tensor:
    """Per-image Gaussian blur (sigma [n] in pixels), separable, reflection padding."""
    n, c, h, w = x.shape
    t = torch.arange(k, dtype=torch.float32, device=x.device) - k // 2
    ker = torch.exp(-0.5 * (t.view(1, k) / sigma.view(n, 1).clamp_min(1e-3)) ** 2)
    ker = (ker / ker.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [n*c,k]
    y = F.pad(x.reshape(1, n * c, h, w), (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    y = F.conv2d(y, ker.view(n * c, 1, 1, k), groups=n * c)
    y = F.conv2d(y, ker.view(n * c, 1, k, 1), groups=n * c)
    return y.view(n, c, h, w)


def camera_augment(x: torch.Tensor, gen: torch.Generator | None = None, cfg: dict | None = None) -> torch.Tensor:
    """The station camera's degradations on float NCHW 0..255 (H, W multiples of 16). Random numbers come
    from the CPU generator `gen` (reproducible on any device); per-pixel noise from the device's RNG."""
    c = dict(CAMERA, **(cfg or {}))
    n, _, h, w = x.shape
    dev = x.device

    def U(lo, hi, size=(n,)):
        return (torch.rand(size, generator=gen) * (hi - lo) + lo).to(dev)

    def B(p):
        return (torch.rand((n,), generator=gen) < p).to(dev).view(n, 1, 1, 1)

    # dermatoscope's round field of view: soft-edged disc (radius in half-heights; 1 touches top and bottom)
    m = B(c["p_vignette"])
    yy = torch.linspace(-1, 1, h, device=dev).view(1, h, 1)
    xx = torch.linspace(-w / h, w / h, w, device=dev).view(1, 1, w)
    cx, cy, rad, soft = U(-0.1, 0.1), U(-0.1, 0.1), U(0.95, 1.45), U(0.02, 0.15)
    dist = torch.sqrt((xx - cx.view(n, 1, 1)) ** 2 + (yy - cy.view(n, 1, 1)) ** 2)
    disc = torch.sigmoid((rad.view(n, 1, 1) - dist) / soft.view(n, 1, 1)).unsqueeze(1)
    black = U(0, 20).view(n, 1, 1, 1)
    x = torch.where(m, x * disc + black * (1 - disc), x)
    # optical / focus blur
    m = B(c["p_blur"])
    x = torch.where(m, gaussian_blur(x, U(*c["blur_sigma"])), x)
    # exposure and white balance (gains on R and B, G fixed)
    gain = torch.where(B(c["p_exposure"]).view(n), torch.exp(U(-c["exposure"], c["exposure"])), torch.ones(n, device=dev))
    wbm = B(c["p_wb"]).view(n)
    gr = torch.where(wbm, torch.exp(U(-c["wb"], c["wb"])), torch.ones(n, device=dev))
    gb = torch.where(wbm, torch.exp(U(-c["wb"], c["wb"])), torch.ones(n, device=dev))
    x = x * (gain.view(n, 1, 1, 1) * torch.stack([gr, torch.ones_like(gr), gb], 1).view(n, 3, 1, 1))
    x = x.clamp(0, 255)
    # sensor noise: read noise + shot noise (variance proportional to the signal)
    m = B(c["p_noise"])
    rd, sh = U(*c["read_noise"]).view(n, 1, 1, 1), U(*c["shot_noise"]).view(n, 1, 1, 1)
    std = torch.sqrt(rd ** 2 + sh ** 2 * x)
    x = torch.where(m, x + std * torch.randn_like(x), x).clamp(0, 255).round()
    # resampling to a camera's resolution and back (one factor per batch, a random subset of images)
    m = B(c["p_resample"])
    f = float(U(*c["resample"], size=(1,)).item())
    small = F.interpolate(x, size=(max(8, round(h * f)), max(8, round(w * f))), mode="bilinear", antialias=True,
                          align_corners=False)
    x = torch.where(m, F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).round(), x)
    # JPEG recompression
    m = B(c["p_jpeg"])
    x = torch.where(m, jpeg_recompress(x, U(*c["jpeg_quality"])), x)
    return x.clamp(0, 255).round()

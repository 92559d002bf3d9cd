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

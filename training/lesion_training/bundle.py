"""Pack what a full fine-tune needs for a machine reached through a small transfer limit (64 MiB here):
the ImageNet backbone weights without torchvision's 1000-class head (replaced by our 7-class head anyway),
fp32 byte planes xz-compressed (exact; 13.6 MB -> 7.3 MB). `unpack_weights` rebuilds a .pth that
`build_mobilenet_v2(pretrained=True)` loads (the 1000-class head filled with zeros, never used)."""
from __future__ import annotations

import json
import lzma
import sys
from pathlib import Path

import numpy as np


def pack_weights(pth: Path, out: Path) -> None:
    import torch
    sd = torch.load(pth, map_location="cpu", weights_only=True)
    meta, parts = [], []
    for k, v in sd.items():
        if k.startswith("classifier"):
            meta.append([k, str(v.dtype), list(v.shape), "zero"])
            continue
        meta.append([k, str(v.dtype), list(v.shape), "data"])
        parts.append(v.numpy().astype(np.float32 if v.dtype.is_floating_point else np.int64).reshape(-1).view(np.uint8))
    raw = np.concatenate(parts)
    planes = np.ascontiguousarray(raw.reshape(-1, 4).T) if raw.size % 4 == 0 else raw
    blob = lzma.compress(planes.tobytes(), preset=9 | lzma.PRESET_EXTREME)
    head = json.dumps(meta).encode()
    out.write_bytes(len(head).to_bytes(8, "little") + head + blob)


def unpack_weights(src: Path, pth: Path) -> None:
    import torch
    b = src.read_bytes()
    hl = int.from_bytes(b[:8], "little")
    meta = json.loads(b[8:8 + hl])
    raw = np.frombuffer(lzma.decompress(b[8 + hl:]), dtype=np.uint8)
    raw = np.ascontiguousarray(raw.reshape(4, -1).T).ravel()
    sd, off = {}, 0
    for k, dt, shape, kind in meta:
        dtype = getattr(torch, dt.replace("torch.", ""))
        if kind == "zero":
            sd[k] = torch.zeros(shape, dtype=dtype)
            continue
        npdt = np.float32 if dtype.is_floating_point else np.int64
        cnt = int(np.prod(shape)) * np.dtype(npdt).itemsize
        sd[k] = torch.from_numpy(raw[off:off + cnt].view(npdt).reshape(shape).copy()).to(dtype)
        off += cnt
    pth.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, pth)


if __name__ == "__main__":
    {"pack": pack_weights, "unpack": unpack_weights}[sys.argv[1]](Path(sys.argv[2]), Path(sys.argv[3]))

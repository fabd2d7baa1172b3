"""Latent resizing between the two DRC resolutions (frames are resized independently)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_latent(x: torch.Tensor, size: tuple[int, int], method: str) -> torch.Tensor:
    """x [B, C, T, H, W] → [B, C, T, *size] with torch's interpolation `method` (nearest-exact, bilinear, …)."""
    b, c, t, h, w = x.shape
    if (h, w) == tuple(size):
        return x
    flat = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    kw = {"align_corners": False} if method in ("bilinear", "bicubic") else {}
    out = F.interpolate(flat.float(), size=size, mode=method, **kw).to(x.dtype)
    return out.reshape(b, t, c, *size).permute(0, 2, 1, 3, 4)

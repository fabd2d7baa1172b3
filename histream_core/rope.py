"""3-D rotary position embedding (Wan2.1): head_dim split into t/h/w parts (44/42/42 for 128), θ = 10000.

Pairs (x[2j], x[2j+1]) are rotated by angle pos·θ^(-2j/d_axis). Positions are frame/row/column indices; the frame
index may carry an offset (chunked inference) and the spatial axes may use NTK-style scaling: θ_hw = θ·s^(d/(d-2)),
which stretches the low frequencies so a 1080p grid (≈2.3× the 832×480 training grid) stays in the trained range.
"""

from __future__ import annotations

import torch

ROPE_THETA = 10000.0


class Rope3D:
    def __init__(self, axes: tuple[int, int, int], theta: float = ROPE_THETA, ntk_scale: float = 1.0):
        self.axes = axes
        self.theta = theta
        self.ntk_scale = ntk_scale
        self._cache: dict = {}

    def _omega(self, axis: int) -> torch.Tensor:
        d = self.axes[axis]
        theta = self.theta
        if axis > 0 and self.ntk_scale != 1.0:
            theta = theta * self.ntk_scale ** (d / (d - 2))
        return theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)

    def angles(self, frames, height: int, width: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape [len(frames)·height·width, head_dim/2] (float32) for a frame-major token grid."""
        frames = tuple(int(f) for f in frames)
        key = (frames, height, width, str(device))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        f = torch.tensor(frames, dtype=torch.float64)
        parts = []
        for axis, pos in enumerate((f, torch.arange(height, dtype=torch.float64),
                                    torch.arange(width, dtype=torch.float64))):
            parts.append(torch.outer(pos, self._omega(axis)))
        t_ang, h_ang, w_ang = parts
        n_t, n_h, n_w = len(frames), height, width
        ang = torch.cat([
            t_ang[:, None, None, :].expand(n_t, n_h, n_w, -1),
            h_ang[None, :, None, :].expand(n_t, n_h, n_w, -1),
            w_ang[None, None, :, :].expand(n_t, n_h, n_w, -1),
        ], dim=-1).reshape(n_t * n_h * n_w, -1)
        out = (ang.cos().float().to(device), ang.sin().float().to(device))
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[key] = out
        return out


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, S, H, D] by per-token angles cos/sin [S, D/2]; computed in float32, returned in x's dtype."""
    xf = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    out = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)
    return out.flatten(-2).to(x.dtype)

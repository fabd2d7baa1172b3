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

    def _table(self, axis: int, positions) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [len(positions), d_axis/2] in float32, computed in float64 on the CPU (angles reach ~10³ rad)."""
        ang = torch.outer(torch.as_tensor(positions, dtype=torch.float64), self._omega(axis))
        return ang.cos().float(), ang.sin().float()

    def angles(self, frames, height: int, width: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape [len(frames)·height·width, head_dim/2] (float32) for a frame-major token grid."""
        frames = tuple(int(f) for f in frames)
        key = (frames, height, width, str(device))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        spatial_key = ("hw", height, width, str(device))
        if spatial_key not in self._cache:  # row/column tables: per grid size, kept on the device
            self._cache[spatial_key] = tuple(tuple(t.to(device) for t in self._table(axis, range(n)))
                                             for axis, n in ((1, height), (2, width)))
        (h_cos, h_sin), (w_cos, w_sin) = self._cache[spatial_key]
        t_cos, t_sin = (t.to(device) for t in self._table(0, frames))
        n_t = len(frames)

        def grid(t_part, h_part, w_part):
            return torch.cat([t_part[:, None, None, :].expand(n_t, height, width, -1),
                              h_part[None, :, None, :].expand(n_t, height, width, -1),
                              w_part[None, None, :, :].expand(n_t, height, width, -1)], dim=-1).reshape(
                n_t * height * width, -1)

        out = (grid(t_cos, h_cos, w_cos), grid(t_sin, h_sin, w_sin))
        if len(self._cache) > 16:  # a few chunk layouts are live at a time; drop stale ones
            self._cache = {k: v for k, v in self._cache.items() if k[0] == "hw"}
        self._cache[key] = out
        return out


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, S, H, D] by per-token angles cos/sin [S, D/2]; computed in float32, returned in x's dtype."""
    xf = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    out = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)
    return out.flatten(-2).to(x.dtype)

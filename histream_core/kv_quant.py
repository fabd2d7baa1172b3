"""fp8 (e4m3) storage for the KV cache: one float32 scale per token and head, dequantised when attention reads.

Each [head_dim] vector x of a token and head is stored as q = fp8(x / s) with s = max|x| / 448 (e4m3's largest
finite value), so the vector's largest entry lands on 448 and every entry keeps e4m3's 3 mantissa bits relative to
its own magnitude (|x - s·q| ≤ 2^-4·|x| for normal values, ≤ 2^-10·s below e4m3's normal range). The scale costs
4 bytes per head_dim bytes, so a cache takes (head_dim + 4) / (2·head_dim) of its bf16 size (51.6% at head_dim 128).

Dequantising computes in float32 and casts once, so the only error is the rounding to e4m3 itself.
"""

from __future__ import annotations

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max
SCALE_DTYPE = torch.float32


def is_fp8(dtype: torch.dtype) -> bool:
    return dtype == FP8


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] → (fp8 values [..., D], float32 scales [..., 1]); an all-zero vector gets scale 1."""
    xf = x.float()
    amax = xf.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    # the clamp only catches float rounding of amax/scale a hair above 448 (e4m3fn has no inf: it would be NaN)
    return (xf / scale).clamp_(-FP8_MAX, FP8_MAX).to(FP8), scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The float32 product q·s, cast to `dtype`."""
    return (q.float() * scale).to(dtype)


def store(q_buf: torch.Tensor, s_buf: torch.Tensor, x: torch.Tensor) -> None:
    """Quantise x into the views q_buf (fp8) and s_buf (its scales), in place."""
    q, s = quantize(x)
    q_buf.copy_(q)
    s_buf.copy_(s)

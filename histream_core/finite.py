"""Non-finite values caught where they enter, never passed on as a black video minutes later.

Inputs (text contexts, control latents) and weights are checked once when they arrive; every denoising step's x0
is checked with one scalar sync (`isfinite(x0).all()`), so a run that goes non-finite stops at that chunk and step
with the likely causes.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class NonFiniteError(ValueError):
    """A NaN or inf where a finite value is needed; the message names where it entered and the fix."""


def count_non_finite(t: torch.Tensor) -> int:
    if not (t.is_floating_point() or t.is_complex()):
        return 0
    if t.dtype.itemsize == 1:  # float8 storage: isfinite has no kernel for it everywhere; upcast first
        t = t.to(torch.float16)
    return int((~torch.isfinite(t)).sum())


def check_input(t: torch.Tensor, what: str, fix: str) -> torch.Tensor:
    """Raise if `t` holds NaN/inf: "`what` holds N NaN/inf values of M: `fix`"."""
    bad = count_non_finite(t)
    if bad:
        raise NonFiniteError(f"{what} holds {bad} NaN/inf value{'s' if bad > 1 else ''} of {t.numel()}: {fix}")
    return t


def first_non_finite_weight(tensors: Iterable[tuple[str, torch.Tensor]], device=None) -> str | None:
    """The name of the first tensor holding NaN/inf (checked one tensor at a time on `device`), else None."""
    for name, t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type != "meta" and count_non_finite(t.to(device or t.device)):
            return name
    return None


def check_step(x0: torch.Tensor, chunk: int, step: int, resolution: str, compute_dtype: torch.dtype) -> None:
    """After a denoising step: one device→host sync; raise with the chunk, the step and the likely causes."""
    if x0.device.type == "meta" or bool(torch.isfinite(x0).all()):  # meta: shape-only runs (FLOP counting)
        return
    causes = ["NaN/inf weights (re-download the checkpoint; Load HiStream Model checks the file's weights)",
              "a LoRA or merge that produced them (try the run without it)"]
    if compute_dtype == torch.float16:
        causes.insert(0, "fp16 overflow inside the Wan blocks (load the weights as bf16, or fp32 on CPU)")
    raise NonFiniteError(f"the video went non-finite (NaN/inf) at chunk {chunk}, step {step} ({resolution} "
                         f"resolution); likely causes: {'; '.join(causes)}. Nothing was written")

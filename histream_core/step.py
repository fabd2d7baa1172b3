"""One denoising step of the chunk loop, shared by the loop (pipeline.py) and the prompt-switch re-cache
(recache.py): the model's velocity v = ε - x0 (flow matching) at timestep 1000σ, guided when asked, turned into
x0 = x - σ·v. A step at σ = 0 is the cache write: the clean chunk's K/V land in the cache."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cache import KVCache, TextCache
from .guidance import guided_velocity
from .model import CausalWanModel
from .vace import VaceInput


@dataclass
class StepInfo:
    """What the per-step callback sees. kind: "denoise" (counts toward progress), "cache" (a t=0 write) or
    "recache" (a window entry re-encoded at a prompt switch)."""

    kind: str
    chunk: int
    step: int  # index within the chunk's schedule (-1 for cache writes)
    global_step: int  # denoising steps done so far, this one included
    total_steps: int
    stage: str  # "low" | "high"
    sigma: float
    x: torch.Tensor  # the model input at this step
    x0: torch.Tensor | None  # the predicted clean latent (None for cache writes)


def predict_x0(model: CausalWanModel, x: torch.Tensor, sigma: float, text: TextCache, cache: KVCache, start: int,
               device, guidance_scale: float = 1.0, vace: VaceInput | None = None) -> torch.Tensor:
    """x0 predicted from the float32 latent x [B, 16, frames, h, w] at noise level σ; with guidance (scale != 1)
    the same latents run under both prompts as one batch of 2B rows (guidance.py)."""
    guided = guidance_scale != 1.0
    rows = torch.cat([x, x]) if guided else x
    t = torch.full((rows.shape[0],), 1000.0 * sigma, device=device)
    v = model.forward_chunk(rows.to(device, model.compute_dtype), t, text, cache, start, vace)
    v = guided_velocity(v.float(), guidance_scale) if guided else v.float()
    return x - sigma * v

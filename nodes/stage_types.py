"""The typed objects that flow between the HiStream stage nodes (plans only: no tensors, no math).

ComfyUI runs each node once, while Dual-Resolution Caching interleaves the stages per chunk. So, as with ComfyUI's
own SAMPLER/SIGMAS/GUIDER → SamplerCustomAdvanced, each stage node builds a typed description and the last stage
(CachedUpsampleRefine) runs the per-chunk loop over all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CACHE_TYPE = "HISTREAM_CACHE"
STEPS_TYPE = "HISTREAM_STEPS"
LOWRES_TYPE = "HISTREAM_LOWRES"
CATEGORY = "HiStream"


@dataclass
class CachePlan:
    """HISTREAM_CACHE: the temporal stage (the plan only; the loop node allocates the buffers and releases them)."""

    width: int
    height: int
    num_frames: int
    batch_size: int
    chunk_frames: int
    anchor_frames: int
    window_chunks: int
    position_mode: str
    cache_dtype: str = "default"  # histream_core.config.CACHE_DTYPES

    def core_kwargs(self) -> dict:
        return dict(width=self.width, height=self.height, num_frames=self.num_frames, batch_size=self.batch_size,
                    chunk_frames=self.chunk_frames, anchor_frames=self.anchor_frames,
                    window_chunks=self.window_chunks, position_mode=self.position_mode, cache_dtype=self.cache_dtype)


@dataclass(frozen=True)
class StepSpec:
    """HISTREAM_STEPS: the timestep stage, resolved against the model's shift when the loop starts."""

    preset: str
    shift: float
    first_steps: int
    first_low: int
    later_steps: int
    later_low: int
    sigmas: tuple[float, ...] | None = None  # a stock SIGMAS schedule, if connected
    sampler: str = "renoise"  # histream_core.config.SAMPLERS


@dataclass
class LowResStage:
    """HISTREAM_LOWRES: spatial stage 1 together with everything the loop needs from the upstream graph."""

    model: Any  # comfy ModelPatcher
    positive: list
    cache: CachePlan
    steps: StepSpec
    latent: dict
    seed: int
    low_res_scale: float
    negative: list | None = None  # used with cfg != 1
    cfg: float = 1.0  # classifier-free guidance scale; 1 = off

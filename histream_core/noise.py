"""Seeded noise drawn on the CPU (as ComfyUI does), so a seed gives the same video on any device.

Batch item b draws from its own generator seeded with `seed + b`, so a batch of 2 equals two batch-1 runs with
seeds s and s+1. Draws happen in a fixed order per chunk, so a longer video starts like a shorter one.
"""

from __future__ import annotations

import torch


class NoiseSource:
    def __init__(self, seed: int, batch: int = 1):
        self.seed, self.batch = int(seed), int(batch)
        self.generators = [torch.Generator("cpu").manual_seed((self.seed + b) % 2**64) for b in range(self.batch)]

    def __call__(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Standard normal noise of shape [batch, *shape], float32 on the CPU."""
        return torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in self.generators])

"""Shared builders for the core tests: tiny deterministic models, contexts and configs."""

from __future__ import annotations

import torch

from histream_core import CausalWanModel, HiStreamConfig, WanConfig


def tiny_model(preset: str = "micro", seed: int = 0, dtype=torch.float32) -> CausalWanModel:
    torch.manual_seed(seed)
    model = CausalWanModel(WanConfig.preset(preset)).to(dtype).eval()
    with torch.no_grad():  # larger-than-default biases so every path matters numerically
        for p in model.parameters():
            if p.ndim == 1:
                p.normal_(0, 0.1)
    return model


def context(model: CausalWanModel, batch: int = 1, tokens: int = 7, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, tokens, model.config.text_dim, generator=g)


def video_config(preset: str = "histream", width: int = 64, height: int = 64, num_frames: int = 33,
                 **kw) -> HiStreamConfig:
    return HiStreamConfig.preset(preset, width=width, height=height, num_frames=num_frames, **kw)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()

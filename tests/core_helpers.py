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


def reference_self_forcing(cfg: HiStreamConfig, seed: int, velocity, sigmas=None) -> torch.Tensor:
    """Self-Forcing inference written over a full-sequence forward, for checking the cached pipeline: each step's
    input is the clean finished chunks (t = 0) followed by the current noisy chunk, with the pipeline's noise draws
    (renoise sampler). `velocity(seq, t, start, frames)` returns v for the last `frames` frames of `seq` (a window
    is its attention mask). `sigmas(k)` gives chunk k's step list (default: the config's own)."""
    from histream_core import NoiseSource

    noise = NoiseSource(seed, cfg.batch_size)
    done = torch.zeros(cfg.batch_size, 16, 0, *cfg.latent_size)
    for k, (start, frames) in enumerate(cfg.chunks):
        sig = cfg.steps.for_chunk(k).sigmas if sigmas is None else sigmas(k)
        x0, x = None, sig[0] * noise((16, frames, *cfg.latent_size))
        for i, s in enumerate(sig):
            if i > 0:
                x = (1 - s) * x0 + s * noise((16, frames, *cfg.latent_size))
            seq = torch.cat([done, x], dim=2)
            t = torch.cat([torch.zeros(start), torch.full((frames,), 1000.0 * s)])[None].expand(x.shape[0], -1)
            x0 = x - s * velocity(seq, t, start, frames)
        done = torch.cat([done, x0], dim=2)
    return done

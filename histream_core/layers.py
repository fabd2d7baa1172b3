"""Wan2.1 DiT parameter containers with Wan2.1's names (`blocks.N.self_attn.q`, `head.modulation`, …).

These modules hold weights only; the math lives in `model.py`, which runs equally over these or over any other
module tree with the same names (e.g. a ComfyUI-loaded Wan model whose layers cast fp8 weights or apply LoRA).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import WanConfig


class WanAttention(nn.Module):
    def __init__(self, dim: int, qk_norm: bool, eps: float, **kw):
        super().__init__()
        self.q = nn.Linear(dim, dim, **kw)
        self.k = nn.Linear(dim, dim, **kw)
        self.v = nn.Linear(dim, dim, **kw)
        self.o = nn.Linear(dim, dim, **kw)
        self.norm_q = nn.RMSNorm(dim, eps=eps, **kw) if qk_norm else nn.Identity()
        self.norm_k = nn.RMSNorm(dim, eps=eps, **kw) if qk_norm else nn.Identity()


class WanBlock(nn.Module):
    def __init__(self, cfg: WanConfig, **kw):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False, **kw)
        self.self_attn = WanAttention(cfg.dim, cfg.qk_norm, cfg.eps, **kw)
        self.norm3 = nn.LayerNorm(cfg.dim, eps=cfg.eps, **kw) if cfg.cross_attn_norm else nn.Identity()
        self.cross_attn = WanAttention(cfg.dim, cfg.qk_norm, cfg.eps, **kw)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False, **kw)
        self.ffn = nn.Sequential(nn.Linear(cfg.dim, cfg.ffn_dim, **kw), nn.GELU(approximate="tanh"),
                                 nn.Linear(cfg.ffn_dim, cfg.dim, **kw))
        self.modulation = nn.Parameter(torch.empty(1, 6, cfg.dim, **kw))


class WanHead(nn.Module):
    def __init__(self, cfg: WanConfig, **kw):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False, **kw)
        self.head = nn.Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size), **kw)
        self.modulation = nn.Parameter(torch.empty(1, 2, cfg.dim, **kw))


def build_wan_modules(cfg: WanConfig, device=None, dtype=None) -> dict[str, nn.Module]:
    """The top-level Wan2.1 submodules, freshly initialised (random; load a state dict for real weights)."""
    kw = {"device": device, "dtype": dtype}
    mods = {
        "patch_embedding": nn.Conv3d(cfg.in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size, **kw),
        "text_embedding": nn.Sequential(nn.Linear(cfg.text_dim, cfg.dim, **kw), nn.GELU(approximate="tanh"),
                                        nn.Linear(cfg.dim, cfg.dim, **kw)),
        "time_embedding": nn.Sequential(nn.Linear(cfg.freq_dim, cfg.dim, **kw), nn.SiLU(),
                                        nn.Linear(cfg.dim, cfg.dim, **kw)),
        "time_projection": nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, 6 * cfg.dim, **kw)),
        "blocks": nn.ModuleList(WanBlock(cfg, **kw) for _ in range(cfg.num_layers)),
        "head": WanHead(cfg, **kw),
    }
    if device is None or torch.device(device).type != "meta":
        with torch.no_grad():
            for blk in mods["blocks"]:
                blk.modulation.normal_(0, cfg.dim ** -0.5)
            mods["head"].modulation.normal_(0, cfg.dim ** -0.5)
    return mods

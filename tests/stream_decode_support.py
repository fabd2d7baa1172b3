"""A host Wan2.1 VAE with random weights for the streaming-decode tests (built as in bench/bench_decode.py), and
stock VAEDecode as the reference."""

from __future__ import annotations

import torch

from bench.bench_decode import host_vae, random_wan_vae

__all__ = ["host_vae", "random_wan_vae", "stock_vae_decode"]


def stock_vae_decode(vae, raw: torch.Tensor) -> torch.Tensor:
    """Stock ComfyUI `VAEDecode` on a LATENT's samples."""
    import nodes as comfy_nodes  # ComfyUI's nodes.py

    return comfy_nodes.VAEDecode().decode(vae, {"samples": raw})[0]

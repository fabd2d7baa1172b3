"""A host Wan2.1 VAE and a Wan 2.1 TAE with random weights for the streaming-decode tests (built as in
bench/bench_decode.py), stock VAEDecode as the reference, and the sampler node run on a tiny model."""

from __future__ import annotations

import torch
from comfy_test_nodes import fake_wan_text

from bench.bench_decode import host_tae, host_vae, random_tae_state_dict, random_wan_vae

__all__ = ["host_tae", "host_vae", "random_tae_state_dict", "random_wan_vae", "run_node", "stock_vae_decode"]


def stock_vae_decode(vae, raw: torch.Tensor) -> torch.Tensor:
    """Stock ComfyUI `VAEDecode` on a LATENT's samples."""
    import nodes as comfy_nodes  # ComfyUI's nodes.py

    return comfy_nodes.VAEDecode().decode(vae, {"samples": raw})[0]


def run_node(pack, patcher, vae=None, preset="HiStream+", frames=13, batch=1, **options):
    """The four stage nodes at 64×64 into Cached Upsample Refine; `options`: its optional and hidden inputs."""
    m = pack.NODE_CLASS_MAPPINGS
    cache, latent = m["AnchorCacheChunker"]().plan(64, 64, frames, batch, 3, 3, 1, "cache_relative")
    (steps,) = m["SparseStepSampler"]().build(preset, 5.0, 4, 2, 2, 1)
    cond = [[fake_wan_text(1, 8, 1), {}]]
    (low,) = m["LowResDenoise"]().stage(patcher, cond, cache, steps, latent, 7, 0.5)
    latent_out, images = m["CachedUpsampleRefine"]().run(low, "bilinear", "area", 1.0, "clean_pass", vae=vae,
                                                           **options)
    return latent_out, images, cache

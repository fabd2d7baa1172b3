"""A host Wan2.1 VAE with random weights for the streaming-decode tests and benchmark.

ComfyUI's `comfy.sd.VAE` always builds the full-width Wan2.1 VAE (dim 96, 127M parameters) from a state dict. The
tests want the same code paths at a fraction of the cost, so `host_vae(dim=8)` builds the host's own `WanVAE` class
with a small width and puts it inside a host `VAE` wrapper (the wrapper's decode, batching, dtype and
`process_output` are unchanged); `dim=96` is the real architecture loaded through the ordinary state-dict path.
"""

from __future__ import annotations

import logging

import torch

WAN21_DECODER_KEY = "decoder.middle.0.residual.0.gamma"  # the host detects the Wan2.1 VAE by this key


def random_wan_vae(dim: int, seed: int = 0):
    """The host's WanVAE (Wan2.1 layout) with random weights scaled so that activations stay O(1)."""
    from comfy.ldm.wan.vae import WanVAE

    torch.manual_seed(seed)
    vae = WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True])
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith("gamma"):
                p.normal_(1.0, 0.1)
            elif p.ndim == 1:
                p.normal_(0.0, 0.1)
            else:
                p.normal_(0.0, p[0].numel() ** -0.5)
    return vae.eval()


def host_vae(dim: int = 8, seed: int = 0):
    """A `comfy.sd.VAE` around a random Wan2.1 VAE of width `dim` (96 = the real one)."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.sd

    model = random_wan_vae(dim, seed)
    if dim == 96:
        return comfy.sd.VAE(sd=model.state_dict())
    # the wrapper is built for the 96-wide layout (only the detection key given), then gets the narrow model
    logging.disable(logging.WARNING)  # the wrapper lists every key it did not get
    try:
        vae = comfy.sd.VAE(sd={WAN21_DECODER_KEY: torch.ones(384, 1, 1, 1)})
    finally:
        logging.disable(logging.NOTSET)
    vae.first_stage_model = model.to(vae.vae_dtype)
    vae.patcher = comfy.model_patcher.ModelPatcher(vae.first_stage_model, load_device=vae.device,
                                                   offload_device=comfy.model_management.vae_offload_device())
    return vae


def stock_vae_decode(vae, raw: torch.Tensor) -> torch.Tensor:
    """Stock ComfyUI `VAEDecode` on a LATENT's samples."""
    import nodes as comfy_nodes  # ComfyUI's nodes.py

    return comfy_nodes.VAEDecode().decode(vae, {"samples": raw})[0]

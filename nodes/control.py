"""VACE control from the CONDITIONING of stock WanVaceToVideo → the core's VaceControl (glue only).

WanVaceToVideo appends to every conditioning entry `vace_frames` (a list, one per chained node, of raw-VAE latents
[1, 32, T, H, W]: inactive + reactive), `vace_mask` (packed masks [1, 64, T, H, W]) and `vace_strength` (floats).
As the host's WAN21_Vace.extra_conds does, each 16-channel latent group goes through the model's `process_latent_in`,
a missing mask list means all-ones masks and a missing strength list means 1.0 each.
"""

from __future__ import annotations

import logging

import torch

from ..histream_core.memory import vace_cache_bytes
from ..histream_core.vace import MASK_CHANNELS, VaceControl
from .host_model import wan_config_of

log = logging.getLogger("histream")


def vace_control(patcher, positive: list, cfg) -> VaceControl | None:
    """The VACE control carried by the positive CONDITIONING, or None (then the VACE blocks are skipped); checked
    against the video plan `cfg` and the MODEL before anything is loaded."""
    found = [opts for _, opts in positive if opts.get("vace_frames")]
    if not found:
        return None
    opts = found[0]
    if any(len(o["vace_frames"]) != len(opts["vace_frames"]) or
           any(a is not b for a, b in zip(o["vace_frames"], opts["vace_frames"])) for o in found[1:]):
        log.warning("HiStream: conditioning entries carry different VACE controls; using the first entry's")
    if getattr(patcher.model.diffusion_model, "vace_blocks", None) is None:
        raise ValueError("the conditioning carries VACE control (WanVaceToVideo) but the MODEL has no VACE blocks: "
                         "choose a VACE module in Load HiStream Model's vace_model input")
    frames = [f.float() for f in opts["vace_frames"]]
    masks = [torch.ones(f.shape[0], MASK_CHANNELS, *f.shape[2:]) if m is None else m.float()
             for f, m in zip(frames, opts.get("vace_mask") or [None] * len(frames))]
    strengths = [float(s) for s in opts.get("vace_strength") or [1.0] * len(frames)]
    VaceControl(frames, masks, strengths).validate(cfg.batch_size, cfg.latent_frames, cfg.latent_size)
    # raw VAE latents → the model's normalised space, per 16-channel group (as the host's extra_conds does)
    latent_in = patcher.model.process_latent_in
    frames = [torch.cat([latent_in(f[:, i:i + 16]) for i in range(0, f.shape[1], 16)], dim=1) for f in frames]
    control = VaceControl(frames, masks, strengths)
    log.info("HiStream: VACE control, %d control video(s), strength %s", len(frames),
             ", ".join(f"{s:g}" for s in strengths))
    return control


def vace_extra_bytes(patcher, control: VaceControl | None, cfg, bytes_per_elem: int) -> int:
    """Device memory the VACE caches need on top of the main ones (0 without control)."""
    if control is None:
        return 0
    dm = patcher.model.diffusion_model
    return vace_cache_bytes(wan_config_of(dm), cfg, len(dm.vace_blocks), control.entries, bytes_per_elem)

"""Image-to-video, video extension and resume: a clean prefix carried on the MODEL, as core ComfyUI carries it.

Core's ARVideoI2V (comfy_extras/nodes_ar_video.py, v0.21+) clones the MODEL and puts the VAE-encoded start image
(a raw VAE latent, as VAE.encode returns it) at `model_options["transformer_options"]["ar_config"]["initial_latent"]`;
its AR sampler maps it with the model's `process_latent_in`, runs it once at σ = 0 into the KV cache, copies it to
the output's first frames and generates the rest of `length` after it. The nodes here write the same key, so a MODEL
from core's node and one from these nodes are the same thing to the HiStream loop (and to core's own sampler on a
host that has it); the loop reads it in `prefix_of` (histream_core/prefix.py does the rest).
"""

from __future__ import annotations

import logging

import comfy.utils
import torch

from ..histream_core import HiStreamConfig
from ..histream_core.prefix import checked_prefix
from .stage_types import CACHE_TYPE, CATEGORY, CachePlan

log = logging.getLogger("histream")

AR_CONFIG, INITIAL_LATENT = "ar_config", "initial_latent"  # core's keys in transformer_options


def with_initial_latent(model, raw_latent: torch.Tensor):
    """A clone of the MODEL carrying `raw_latent` [B, 16, k, h, w] (the VAE's latent space) as its prefix."""
    m = model.clone()  # clone() deep-copies model_options on both hosts: the input MODEL is left as it was
    options = m.model_options.setdefault("transformer_options", {})
    options.setdefault(AR_CONFIG, {})[INITIAL_LATENT] = raw_latent
    return m


def raw_prefix(patcher) -> torch.Tensor | None:
    """The prefix the MODEL carries (core's ARVideoI2V or the nodes below), in the VAE's latent space, or None (also
    for no MODEL yet: HiStream Sampler checks its plan before SamplerCustomAdvanced hands it the guider's MODEL)."""
    if patcher is None:
        return None
    ar = (patcher.model_options.get("transformer_options") or {}).get(AR_CONFIG) or {}
    return ar.get(INITIAL_LATENT)


def prefix_frames(patcher) -> int:
    raw = raw_prefix(patcher)
    if raw is None:
        return 0
    if not isinstance(raw, torch.Tensor) or raw.ndim != 5:
        shape = tuple(raw.shape) if isinstance(raw, torch.Tensor) else type(raw).__name__
        raise ValueError(f"the MODEL's ar_config initial_latent must be a video latent [batch, 16, frames, h, w], "
                         f"got {shape}: make it with HiStream Start Image or HiStream Video Prefix")
    return int(raw.shape[2])


def prefix_of(patcher, cfg: HiStreamConfig, channels: int = 16) -> torch.Tensor | None:
    """The MODEL's prefix in the model's (normalised) latent space, checked against the plan; None without one."""
    raw = raw_prefix(patcher)
    if raw is None:
        return None
    prefix = checked_prefix(patcher.model.process_latent_in(raw.float().cpu()), cfg, channels)
    log.info("HiStream: a clean prefix of %d latent frame(s) starts the video (the anchor); %d chunk(s) follow it",
             cfg.prefix_frames, cfg.num_chunks)
    return prefix


class HiStreamStartImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "vae": ("VAE", {"tooltip": "The Wan2.1 VAE: encodes the start image into the first latent frame."}),
            "start_image": ("IMAGE", {"tooltip": "The video's first frame (only the first image of a batch is "
                                                 "used). Resized to the chunker's size: bilinear, center crop."}),
            "cache": (CACHE_TYPE, {"tooltip": "From Anchor Cache Chunker: the video's width and height."}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"
    TITLE = "HiStream Start Image"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Image to video: the start image, VAE-encoded, becomes the video's first latent frame, held in "
                   "both KV caches as the anchor (what core's ARVideoI2V does; the chunker's frames count it). "
                   "Connect the MODEL output to Low-Res Denoise.")

    def apply(self, model, vae, start_image, cache: CachePlan):
        # as core's ARVideoI2V: the first image, comfy.utils.common_upscale to the video size (bilinear, center
        # crop) in [B, C, H, W], then vae.encode of its RGB channels
        image = comfy.utils.common_upscale(start_image[:1].movedim(-1, 1), cache.width, cache.height, "bilinear",
                                           "center").movedim(1, -1)
        return (with_initial_latent(model, vae.encode(image[:, :, :, :3])),)


class HiStreamVideoPrefix:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "latent": ("LATENT", {"tooltip": "A video latent to continue: a previous run (SaveLatent → Load Latent) "
                                             "or the finished chunks a stopped run saved (output/histream_partial)."}),
            "frames": ("INT", {"default": 3, "min": 1, "max": 1024, "tooltip": (
                "How many of its last latent frames continue into the new video (3 = one chunk, 12 pixel frames). "
                "They are the new video's first frames and its anchor; older frames are not seen.")}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"
    TITLE = "HiStream Video Prefix"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Video extension and resume: the last latent frames of a LATENT start the new video, held in "
                   "both KV caches as the anchor. The output repeats them first; the chunker's frames count them. "
                   "Not the same as one long run: frames before them are not attended.")

    def apply(self, model, latent, frames):
        samples = latent["samples"]
        if samples.ndim != 5:
            raise ValueError(f"HiStream Video Prefix needs a video latent [batch, 16, frames, h, w], got "
                             f"{tuple(samples.shape)}: load a Wan video latent (SaveLatent of a HiStream run)")
        if frames > samples.shape[2]:
            raise ValueError(f"HiStream Video Prefix: the latent has {samples.shape[2]} latent frames, fewer than "
                             f"the {frames} asked for: lower frames to at most {samples.shape[2]}")
        return (with_initial_latent(model, samples[:, :, -frames:].clone()),)

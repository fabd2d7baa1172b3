"""A clean prefix: latent frames that start the output as given (a start image, or the last frames of an earlier
video or of a stopped run's saved chunks) instead of being generated.

The pipeline writes the prefix once, at σ = 0, into every cache at t = 0 (the full-res latent into the high-res
cache, its downsample into the low-res one), as the first thing each cache holds: the prefix *is* the anchor (RoPE
frame positions 0..k-1, `HiStreamConfig.anchor` = k) and chunking starts after it (`HiStreamConfig.chunks`). It is
copied to the output unchanged. This is how core ComfyUI's AR sampler (`sample_ar_video`, v0.21+) and the official
Self-Forcing pipeline (`initial_latent`) seed their KV cache from a start image; here the same holds at both
resolutions and with a bounded window.

Extension is not one long run: a chunk after the cut attends the prefix (anchor) and the window, never the frames
before the prefix, whose K/V are gone.
"""

from __future__ import annotations

import torch

from .config import HiStreamConfig
from .finite import check_input


def checked_prefix(prefix: torch.Tensor | None, cfg: HiStreamConfig, channels: int) -> torch.Tensor | None:
    """The prefix [1 or B, C, k, h, w] (normalised latent space) checked against the plan, as float32 [B, ...];
    None (no prefix) only when the plan has none."""
    k = cfg.prefix_frames
    if prefix is None:
        if k:
            raise ValueError(f"the plan starts with a prefix of {k} latent frames but none was given: pass "
                             f"prefix_latent, or plan prefix_frames=0")
        return None
    if k == 0:
        raise ValueError("a prefix latent was given but the plan has prefix_frames 0: set prefix_frames to its "
                         "latent frame count")
    if prefix.ndim != 5 or prefix.shape[1] != channels:
        raise ValueError(f"the prefix must be a video latent [batch, {channels}, frames, h, w], got "
                         f"{tuple(prefix.shape)}: encode the start image with the Wan VAE")
    if prefix.shape[2] != k:
        raise ValueError(f"the prefix has {prefix.shape[2]} latent frames but the plan expects {k}: plan "
                         f"prefix_frames={prefix.shape[2]}")
    if tuple(prefix.shape[-2:]) != cfg.latent_size:
        h, w = prefix.shape[-2:]
        raise ValueError(f"the prefix latent is {w}x{h} (a {w * 8}x{h * 8} video) but the video is "
                         f"{cfg.width}x{cfg.height}: set the chunker's width/height to {w * 8}x{h * 8}, or resize "
                         f"the start image to the video's size")
    if prefix.shape[0] not in (1, cfg.batch_size):
        raise ValueError(f"the prefix has batch {prefix.shape[0]} but the video batch is {cfg.batch_size}: use one "
                         f"prefix for every video (batch 1) or one per video")
    prefix = prefix.float()
    if prefix.device.type != "meta":  # meta: FLOP counting
        check_input(prefix, "the prefix latent", "re-encode the start image or reload the latent")
    return prefix.expand(cfg.batch_size, -1, -1, -1, -1)

"""Prompt switches inside the chunk loop: swap the text cache and re-encode the KV-cache window (LongLive-style).

At a switch before chunk k the cross-attention text K/V are replaced, and in every self-attention cache (low-res
and high-res in DRC) the window entries are re-encoded at t = 0 with the new text from their clean latents, oldest
first, each attending the anchor + the already re-encoded entries before it, exactly like the original cache write
but under the new prompt. The anchor (identity) keeps its old-prompt K/V. Everything is written in place, so the
buffers stay the same; only the clean latents of the last few chunks are kept for it (`WindowLatents`).

Where a cache was written from the last denoising step (`cache_update="last_step"`), the re-encoded entries are
clean t = 0 passes all the same.
"""

from __future__ import annotations

import logging
from collections import deque

import torch

from .cache import TextCache
from .step import StepInfo, predict_x0

log = logging.getLogger("histream")


class WindowLatents:
    """The clean latents each cache was (or would have been) written from, for the last chunks that can still
    sit in the window: one deque per resolution name ("low", "high") of (first latent frame, latent
    [B, C, frames, h, w])."""

    def __init__(self, window_chunks: int | None):
        # an entry may be the tail of a chunk split by the anchor, so keep one chunk more than the window
        keep = None if window_chunks is None else window_chunks + 1
        self.kept = {"low": deque(maxlen=keep), "high": deque(maxlen=keep)}

    def keep(self, resolution: str, frame_start: int, clean: torch.Tensor) -> None:
        self.kept[resolution].append((frame_start, clean))

    def frames(self, resolution: str, frame_start: int, frames: int) -> torch.Tensor:
        for start, lat in self.kept[resolution]:
            if start <= frame_start and frame_start + frames <= start + lat.shape[2]:
                return lat[:, :, frame_start - start:frame_start - start + frames]
        raise RuntimeError(f"no kept clean latent covers frames {frame_start}..{frame_start + frames - 1}")


def switch_prompt(pipeline, k: int, context: torch.Tensor, callback=None) -> TextCache:
    """Before chunk k: the new prompt's text cache, with both caches' windows re-encoded under it."""
    text = pipeline.model.text_cache(context.to(pipeline.device))
    rewritten, resolutions = [], pipeline.resolutions()
    for res in resolutions:
        for start, frames in res.cache.rewrite_window():
            rewritten.append(frames)
            clean = pipeline.window_latents.frames(res.name, start, frames)
            # no VACE here: the pipeline refuses prompt switches together with VACE control
            predict_x0(pipeline.model, clean, 0.0, text, res.cache, start, pipeline.device,
                       pipeline.config.guidance_scale)
            if callback:
                callback(StepInfo("recache", k, -1, -1, -1, res.name, 0.0, clean, None))
    log.info("HiStream: new prompt from chunk %d; window re-encoded (%d latent frames over %d caches)", k,
             sum(rewritten), len(resolutions))
    return text

"""Frame-level attention masks for the full-sequence reference forward (True = query frame may attend key frame).

These are the training-time forms that cached chunked inference must reproduce exactly.
"""

from __future__ import annotations

import torch


def chunk_index(num_frames: int, chunk_frames: int) -> torch.Tensor:
    return torch.arange(num_frames) // chunk_frames


def block_causal_mask(num_frames: int, chunk_frames: int) -> torch.Tensor:
    """Each frame sees every frame of its own chunk and of all earlier chunks."""
    c = chunk_index(num_frames, chunk_frames)
    return c[:, None] >= c[None, :]


def anchor_window_mask(num_frames: int, chunk_frames: int, anchor_frames: int, window_chunks: int | None) -> torch.Tensor:
    """What the anchor + sliding-window cache lets a chunk read: the first `anchor_frames` frames, the (non-anchor
    frames of the) `window_chunks` previous chunks, and its own chunk."""
    if window_chunks is None:
        return block_causal_mask(num_frames, chunk_frames)
    c = chunk_index(num_frames, chunk_frames)
    q, k = c[:, None], c[None, :]
    frame = torch.arange(num_frames)[None, :]
    in_window = (k >= q - window_chunks) & (k <= q)
    is_anchor = (frame < anchor_frames) & (k <= q)
    return in_window | is_anchor

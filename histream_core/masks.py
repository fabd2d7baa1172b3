"""Frame-level attention masks for the full-sequence reference forward (True = query frame may attend key frame).

These are the training-time forms that cached chunked inference must reproduce exactly.
"""

from __future__ import annotations

import torch


def chunk_index(num_frames: int, chunk_frames: int, prefix_frames: int = 0) -> torch.Tensor:
    """Each frame's block: chunks of `chunk_frames` are blocks 0, 1, ...; a prefix of k frames before them is one
    block, -1 (the masks compare and subtract blocks only)."""
    f = torch.arange(num_frames)
    return torch.where(f < prefix_frames, -1, (f - prefix_frames) // chunk_frames)


def block_causal_mask(num_frames: int, chunk_frames: int, prefix_frames: int = 0) -> torch.Tensor:
    """Each frame sees every frame of its own chunk and of all earlier chunks (the prefix is one block)."""
    c = chunk_index(num_frames, chunk_frames, prefix_frames)
    return c[:, None] >= c[None, :]


def anchor_window_mask(num_frames: int, chunk_frames: int, anchor_frames: int, window_chunks: int | None,
                       prefix_frames: int = 0) -> torch.Tensor:
    """What the anchor + sliding-window cache lets a chunk read: the first `anchor_frames` frames, the (non-anchor
    frames of the) `window_chunks` previous chunks, and its own chunk. With a prefix, it is block 0 and the
    anchor (pass anchor_frames = prefix_frames, as HiStreamConfig.anchor does)."""
    if window_chunks is None:
        return block_causal_mask(num_frames, chunk_frames, prefix_frames)
    c = chunk_index(num_frames, chunk_frames, prefix_frames)
    q, k = c[:, None], c[None, :]
    frame = torch.arange(num_frames)[None, :]
    in_window = (k >= q - window_chunks) & (k <= q)
    is_anchor = (frame < anchor_frames) & (k <= q)
    return in_window | is_anchor

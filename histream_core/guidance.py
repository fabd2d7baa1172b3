"""Classifier-free guidance for the chunked sampler: positive and negative rows share one batched forward.

With guidance the model runs on 2B rows - the B videos under the positive prompt, then the same B latents under the
negative prompt - and every KV cache holds 2B rows: each half writes its own clean K/V (the negative half's
self-attention sees the frames encoded under the negative prompt, as a separate unguided run would). The step uses
v = v_neg + g (v_pos - v_neg) (Ho & Salimans 2022, in flow-matching form), so g = 1 is the positive prediction.
"""

from __future__ import annotations

import math

import torch

MAX_TOKEN_TILING = 4  # tile a prompt at most this many times to match the other's token count


def paired_context(positive: torch.Tensor, negative: torch.Tensor, batch: int) -> torch.Tensor:
    """[2B, L, D]: positive rows then negative rows (a batch of 1 is expanded to B).

    Prompts of different token counts are tiled to their least common multiple: cross-attention over a key set
    repeated k times gives exactly the same output (every softmax weight is divided by k and summed k times).
    """
    lp, ln = positive.shape[1], negative.shape[1]
    common = math.lcm(lp, ln)
    if common // min(lp, ln) > MAX_TOKEN_TILING:
        raise ValueError(f"the positive prompt has {lp} text tokens and the negative {ln}: guidance batches both, "
                         f"which needs equal counts (or small multiples). Wan's text encode pads every prompt to "
                         f"512 tokens, so shorten the prompt that is longer than 512 tokens")
    pos = positive.repeat(1, common // lp, 1).expand(batch, -1, -1)
    neg = negative.to(positive.dtype).repeat(1, common // ln, 1).expand(batch, -1, -1)
    return torch.cat([pos, neg], dim=0)


def guided_velocity(v: torch.Tensor, scale: float) -> torch.Tensor:
    """[2B, ...] model output (positive rows first) -> the guided [B, ...] velocity."""
    pos, neg = v.chunk(2, dim=0)
    return neg + scale * (pos - neg)

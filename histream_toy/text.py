"""Fixed tiny vocabulary -> deterministic 4096-wide "text encoder" embeddings for the toy model (no downloads)."""

from __future__ import annotations

import torch

from .data import COLORS, DIRECTIONS, SHAPES, SPEEDS

VOCAB = (*COLORS, *SHAPES, "moving", *DIRECTIONS, *SPEEDS)
TEXT_DIM = 4096
POSITION_RMS = 0.5  # position code added to each word vector, so word order matters


def tokenize(text: str) -> list[str]:
    words = text.lower().replace(",", " ").split()
    unknown = [w for w in words if w not in VOCAB]
    if unknown:
        raise ValueError(f"unknown word(s) {unknown}; the toy vocabulary is {list(VOCAB)}")
    return words


def _unit_rms(seed: int) -> torch.Tensor:
    v = torch.randn(TEXT_DIM, generator=torch.Generator().manual_seed(seed))
    return v / v.pow(2).mean().sqrt()


def word_vector(word: str) -> torch.Tensor:
    """The fixed unit-RMS vector of a vocabulary word (seed 1000 + its index)."""
    return _unit_rms(1000 + VOCAB.index(word))


def encode_prompt(text: str, tokens: int = 16) -> torch.Tensor:
    """Prompt -> [1, tokens, 4096]: word vector + position code per word, zeros for padding."""
    words = tokenize(text)
    if len(words) > tokens:
        raise ValueError(f"prompt has {len(words)} words, more than tokens={tokens}")
    out = torch.zeros(1, tokens, TEXT_DIM)
    for i, w in enumerate(words):
        out[0, i] = word_vector(w) + POSITION_RMS * _unit_rms(5000 + i)
    return out

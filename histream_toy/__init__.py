"""The embedded toy model (issue 7): procedural videos, a fixed-vocabulary text embedding and a tiny causal video
autoencoder with Wan's strides, all pure PyTorch (no ComfyUI, no downloads)."""

from .autoencoder import DEFAULT_WEIGHTS, ToyVideoAE, load_toy_ae
from .data import (
                   COLORS,
                   DIRECTIONS,
                   SHAPES,
                   SPEEDS,
                   VideoSpec,
                   centroid_track,
                   detect_color,
                   detect_direction,
                   object_area,
                   parse_prompt,
                   random_spec,
                   render,
)
from .text import VOCAB, encode_prompt

__all__ = ["COLORS", "DEFAULT_WEIGHTS", "DIRECTIONS", "SHAPES", "SPEEDS", "VOCAB", "ToyVideoAE", "VideoSpec",
           "centroid_track", "detect_color", "detect_direction", "encode_prompt", "load_toy_ae", "object_area",
           "parse_prompt", "random_spec", "render"]
